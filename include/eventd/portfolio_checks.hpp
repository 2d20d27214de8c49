// Portfolio checks: every running monitor with portfolio rules is checked every
// checkIntervalMs, from a schedule in Redis that every eventd instance shares. No
// timer per user: a poll timer claims the checks that are due, so the cost follows the
// checks due, not the number of monitors.
//
// The schedule (keys.hpp): 16 shards, each a sorted set eventd:schedule:{s<N>} (member
// userId, score the due time in ms) and a hash eventd:schedclaims:{s<N>} (userId -> the
// due time of the check now claimed). A user's shard is a hash of the userId.
// `eventctl monitor start` adds the user (due now), `stop` removes it.
//
// One check, each step one call touching the keys of one hash tag:
//  1. claim (per shard; the shards of one node in one FCALL): up to claimBatch members
//     due by the server's clock get the score now + leaseMs, and the claims hash keeps
//     their due time. A member whose lease expired (its instance died) is due again and
//     claimed with its ORIGINAL due time: the takeover runs the same check.
//  2. the monitor hash (status, spec, updatedAt) and the latest quote of each symbol of
//     the spec (each under its symbol's tag; reads of one symbol in flight are shared).
//  3. valuation and conditions in C++ (portfolio.hpp).
//  4. the check function under the user's tag (state, outbox, monitor): returns at once
//     if the monitor is stopped or changed since step 2 (its updatedAt), or if this
//     check was applied already (state `check` >= due: a takeover or a slow instance);
//     otherwise edge-triggering and cooldown per rule, the alerts of the rules that
//     fire appended to the user's outbox list (ids "check:<due>:<alertId>"), and the
//     state written. It returns every alert of the outbox, old ones included.
//  5. with redis.minReplicas: WAIT, as the dispatcher does; if it falls short the check
//     is abandoned (published and rescheduled by its takeover after leaseMs).
//  6. the outbox's alerts published with confirms (mandatory), each confirmed one then
//     removed from the list; one that is not stays for the user's next check.
//  7. reschedule (per shard): only if the member's score is still this claim's lease (a
//     compare-and-set, so a slow instance never overwrites a newer claim or a restart),
//     to max(due + interval, now); or removed when the monitor is stopped or has no
//     portfolio rule left.
// A check that fails at a Redis step is abandoned: its claim expires and it runs again,
// as the same check. Alerts are neither lost (they stay in the outbox until confirmed)
// nor doubled (a check is applied once; message ids are deterministic, so a republished
// alert is a duplicate to alert_triggered).
#pragma once

#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "eventd/amqp_connection.hpp"
#include "eventd/config.hpp"
#include "eventd/keys.hpp"
#include "eventd/metrics.hpp"
#include "eventd/portfolio.hpp"
#include "eventd/redis/batch.hpp"
#include "eventd/redis_client.hpp"
#include "eventd/schema_registry.hpp"
#include "eventd/uv_handle.hpp"

namespace eventd {

class PortfolioChecks {
 public:
  // Registers its Redis functions with `redis`: construct before redis.start(). Every
  // reference must outlive this object, and Redis and AMQP callbacks arrive only while
  // it lives (the daemon stops both connections before destroying it).
  PortfolioChecks(uv_loop_t* loop, const Config& config, AmqpConnection& amqp, RedisClient& redis,
                  const SchemaRegistry& schemas, Metrics& metrics);
  ~PortfolioChecks();
  PortfolioChecks(const PortfolioChecks&) = delete;
  PortfolioChecks& operator=(const PortfolioChecks&) = delete;

  // Polls for due checks every portfolio.pollMs while Redis and the broker are up.
  void start();
  // Claims no more checks; those in flight finish, then on_idle runs.
  void stop();
  // Something became reachable: look for due checks now rather than at the next poll.
  void poke();

  std::size_t in_flight() const { return checks_.size(); }
  std::function<void()> on_idle;

 private:
  struct Check;
  using CheckIt = std::list<Check>::iterator;
  struct Shard {
    std::size_t in_flight = 0;
    bool claiming = false;
    bool last_full = false;  // the last claim took all it asked for: more may be due
  };
  struct QuoteRead;
  enum class Outcome { Applied, Duplicate, Stale, Removed, Abandoned };

  static void on_poll(uv_timer_t* handle);
  bool may_claim() const;
  void claim_due();
  void claim(std::size_t shard);
  void on_claimed(std::size_t shard, std::size_t asked, const redisReply* reply);
  void read_monitor(CheckIt check);
  void read_quotes(CheckIt check);
  bool read_quote(const std::string& symbol, std::function<void(bool ok, std::optional<portfolio::Quote>)> done);
  // A quote still in an older eventd's hash (stored_quote.hpp).
  bool read_legacy_quote(const std::string& symbol, const std::shared_ptr<QuoteRead>& read);
  void answer_quote_read(const std::string& symbol, const std::shared_ptr<QuoteRead>& read, bool ok,
                         std::optional<portfolio::Quote> quote);
  void run_function(CheckIt check);
  void on_function(CheckIt check, const redisReply* reply);
  void publish(CheckIt check);
  void reschedule(CheckIt check);
  void abandon(CheckIt check, std::string_view why);
  void finish(CheckIt check, Outcome outcome);

  uv_loop_t* loop_;
  const Config& config_;
  AmqpConnection& amqp_;
  RedisClient& redis_;
  const SchemaRegistry& schemas_;
  Metrics& metrics_;
  std::unique_ptr<redis::Batcher> claim_;
  std::unique_ptr<redis::Batcher> check_;
  std::unique_ptr<redis::Batcher> reschedule_;
  std::string lease_ms_;
  std::string ttl_;
  std::array<Shard, keys::kScheduleShards> shards_{};
  std::list<Check> checks_;
  std::map<std::string, std::shared_ptr<QuoteRead>, std::less<>> quote_reads_;  // by symbol, in flight
  bool started_ = false;
  bool stopping_ = false;
  UvHandle<uv_timer_t> poll_timer_;
};

}  // namespace eventd

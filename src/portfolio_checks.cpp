// Portfolio checks: the shared schedule, claims with a lease, one check (see
// portfolio_checks.hpp).
#include "eventd/portfolio_checks.hpp"

#include <hiredis/hiredis.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "eventd/amqp_message.hpp"
#include "eventd/handlers/function_library.hpp"
#include "eventd/handlers/outbox_lua.hpp"
#include "eventd/handlers/rules_lua.hpp"
#include "eventd/json_parse.hpp"
#include "eventd/log.hpp"
#include "eventd/routing.hpp"
#include "eventd/stored_quote.hpp"

namespace eventd {
namespace {

// The server's clock, in ms: the schedule and the leases of every instance follow the
// clock of the one node that holds the shard, whatever the instances' clocks say.
constexpr const char* kServerTimeLua = R"lua(
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
)lua";

// One shard. K: schedule, claims (tag {s<N>}). A: how many at most, lease ms.
// Returns {now, user, due, lease, user, due, lease, ...}: every member due by now gets
// the score now + lease; the claims hash keeps the due time of the check, so a member
// whose lease expired is claimed again with the due time it was first claimed with.
// Reads first, then writes (see quote_update.cpp).
constexpr const char* kClaimLua = R"lua(
local function claim(K, A, S)
  local now = server_ms()
  local due = redis.call('ZRANGEBYSCORE', K[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(A[1]))
  local out = {now}
  if #due == 0 then return out end
  local lease = now + tonumber(A[2])
  local users = {}
  for i = 1, #due, 2 do users[#users + 1] = due[i] end
  local claimed = redis.call('HMGET', K[2], unpack(users))
  local score = string.format('%d', lease)
  for i, user in ipairs(users) do
    local original = claimed[i] or due[2 * i]
    out[#out + 1] = user
    out[#out + 1] = tonumber(original)
    out[#out + 1] = lease
    redis.call('ZADD', K[1], 'XX', score, user)
    if not claimed[i] then redis.call('HSET', K[2], user, original) end
  end
  return out
end
)lua";

// One finished check. K: schedule, claims. A: user, the claim's lease, the next due
// time ('' to take the user off the schedule). Only while the member's score is still
// this claim's lease (nobody took the check over, no monitor start or stop since):
// next due max(A[3], now), the claim forgotten. Returns 1, or 0 when the claim was lost.
constexpr const char* kRescheduleLua = R"lua(
local function reschedule(K, A, S)
  local score = redis.call('ZSCORE', K[1], A[1])
  if not score or tonumber(score) ~= tonumber(A[2]) then return 0 end
  redis.call('HDEL', K[2], A[1])
  if A[3] == '' then
    redis.call('ZREM', K[1], A[1])
  else
    redis.call('ZADD', K[1], string.format('%d', math.max(tonumber(A[3]), server_ms())), A[1])
  end
  return 1
end
)lua";

// One check of one user. K: portfolio state, portfolio outbox, monitor (tag {<userId>}).
// A: due (the check's id), the monitor's updatedAt the check read, now (ms), the rules
// as JSON [{"id":alertId, "h":1|0 (absent: not evaluable), "c":cooldownSec, "a":alert
// JSON (when h is 1)}]. S: the outbox TTL.
// Returns {code, outbox entries...}: 1 applied, 0 applied before (state `check` >=
// due), 3 the monitor changed since it was read, 4 the monitor is not running; the
// entries ("<message id> <alert JSON>") are every alert not yet confirmed, this
// check's included. The state hash: spec (the updatedAt it belongs to; another resets
// it), check (the last due applied), held:<id> (1|0: the condition at the last check
// that could evaluate it), fired:<id> (when it last fired, ms).
constexpr const char* kCheckLua = R"lua(
local function portfolio_check(K, A, S)
  local pending = redis.call('LRANGE', K[2], 0, -1)
  local monitor = redis.call('HMGET', K[3], 'status', 'updatedAt')
  if monitor[1] ~= 'running' then return prepend(4, pending) end
  if (monitor[2] or '') ~= A[2] then return prepend(3, pending) end
  local rules = cjson.decode(A[4])
  local fields = {'spec', 'check'}
  for _, r in ipairs(rules) do
    local id = string.format('%d', r.id)
    fields[#fields + 1] = 'held:' .. id
    fields[#fields + 1] = 'fired:' .. id
  end
  local before = redis.call('HMGET', K[1], unpack(fields))
  local same_spec = before[1] == A[2]
  if same_spec and before[2] and tonumber(before[2]) >= tonumber(A[1]) then return prepend(0, pending) end
  if not same_spec then before = {} end
  local now = tonumber(A[3])
  local writes = {'spec', A[2], 'check', A[1]}
  local fired = {}
  for i, r in ipairs(rules) do
    if r.h ~= nil then
      local holds = r.h == 1
      if portfolio_fires(before[2 * i + 1] == '1', holds, tonumber(before[2 * i + 2]), now, r.c) then
        fired[#fired + 1] = 'check:' .. A[1] .. ':' .. string.format('%d', r.id) .. ' ' .. r.a
        writes[#writes + 1] = fields[2 * i + 2]
        writes[#writes + 1] = A[3]
      end
      writes[#writes + 1] = fields[2 * i + 1]
      writes[#writes + 1] = holds and '1' or '0'
    end
  end
  if #fired > 0 then
    rpush_all(K[2], fired)
    redis.call('EXPIRE', K[2], S[1])
  end
  if not same_spec then redis.call('DEL', K[1]) end
  redis.call('HSET', K[1], unpack(writes))
  for _, f in ipairs(fired) do pending[#pending + 1] = f end
  return prepend(1, pending)
end
)lua";

constexpr int kApplied = 1, kDuplicate = 0, kStale = 3, kNotRunning = 4;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string_view text(const redisReply* r) {
  return r != nullptr && r->type == REDIS_REPLY_STRING ? std::string_view(r->str, r->len) : std::string_view();
}

bool integer(const redisReply* r, int64_t& out) {
  if (r == nullptr) return false;
  if (r->type == REDIS_REPLY_INTEGER) {
    out = r->integer;
    return true;
  }
  if (r->type != REDIS_REPLY_STRING) return false;
  char* end = nullptr;
  out = std::strtoll(r->str, &end, 10);
  return end != r->str;
}

std::string reply_error(const redisReply* r) {
  if (r == nullptr) return "redis connection lost";
  if (r->type == REDIS_REPLY_ERROR) return "redis: " + std::string(r->str, r->len);
  return "redis: unexpected reply";
}

}  // namespace

struct PortfolioChecks::Check {
  std::size_t shard = 0;
  std::string user;
  int64_t due = 0;
  int64_t lease = 0;
  std::string updated_at;  // as read from the monitor hash
  bool evaluate = false;   // running, valid spec, at least one portfolio rule
  portfolio::Spec spec;
  portfolio::Quotes quotes;
  std::size_t quotes_waiting = 0;
  bool quotes_failed = false;
  bool remove = false;     // take the user off the schedule instead of rescheduling
  int code = kApplied;
  std::vector<std::string> pending;  // outbox entries to publish
  std::size_t publishes_waiting = 0;
  bool publish_failed = false;
};

struct PortfolioChecks::QuoteRead {
  std::vector<std::function<void(bool, std::optional<portfolio::Quote>)>> waiting;
};

PortfolioChecks::PortfolioChecks(uv_loop_t* loop, const Config& config, AmqpConnection& amqp, RedisClient& redis,
                                 const SchemaRegistry& schemas, Metrics& metrics)
    : loop_(loop),
      config_(config),
      amqp_(amqp),
      redis_(redis),
      schemas_(schemas),
      metrics_(metrics),
      claim_(register_function(loop, redis, {"claim", kServerTimeLua, kClaimLua, 2, 2, 0}, keys::kScheduleShards)),
      check_(register_function(loop, redis,
                               {"portfolio_check", std::string(kOutboxLua) + kRulesLua, kCheckLua, 3, 4, 1},
                               config.redis.batch_size)),
      reschedule_(register_function(loop, redis, {"reschedule", kServerTimeLua, kRescheduleLua, 2, 3, 0},
                                    config.redis.batch_size)),
      lease_ms_(std::to_string(config.portfolio.lease_ms)),
      ttl_(std::to_string(config.idempotency_ttl_sec)) {
  check_->set_shared_args({ttl_});
  poll_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
}

PortfolioChecks::~PortfolioChecks() = default;

void PortfolioChecks::start() {
  if (started_ || !poll_timer_.initialised()) return;
  started_ = true;
  const uint64_t every = config_.portfolio.poll_ms;
  uv_timer_start(poll_timer_.get(), on_poll, every, every);
}

void PortfolioChecks::stop() {
  stopping_ = true;
  if (poll_timer_.initialised()) uv_timer_stop(poll_timer_.get());
  if (checks_.empty() && on_idle) on_idle();
}

void PortfolioChecks::poke() { claim_due(); }

void PortfolioChecks::on_poll(uv_timer_t* handle) {
  if (auto* self = owner_of<PortfolioChecks>(handle)) self->claim_due();
}

// Claims only while a check can run to its end: alerts need the broker.
bool PortfolioChecks::may_claim() const {
  return started_ && !stopping_ && redis_.up() && amqp_.state() == AmqpState::Connected;
}

void PortfolioChecks::claim_due() {
  if (!may_claim()) return;
  for (std::size_t shard = 0; shard < shards_.size(); ++shard) claim(shard);
}

void PortfolioChecks::claim(std::size_t shard) {
  Shard& s = shards_[shard];
  const std::size_t batch = config_.portfolio.claim_batch;
  if (!may_claim() || s.claiming || s.in_flight >= batch) return;
  const std::size_t asked = batch - s.in_flight;
  s.claiming = true;
  const bool sent = claim_->add({keys::schedule(shard), keys::schedule_claims(shard)}, {std::to_string(asked), lease_ms_},
                                [this, shard, asked](const redisReply* r) { on_claimed(shard, asked, r); });
  if (!sent) s.claiming = false;
}

void PortfolioChecks::on_claimed(std::size_t shard, std::size_t asked, const redisReply* reply) {
  Shard& s = shards_[shard];
  s.claiming = false;
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
    if (reply != nullptr) log::warn("portfolio checks: claim failed", {{"shard", shard}, {"error", reply_error(reply)}});
    s.last_full = false;
    return;
  }
  const std::size_t claimed = (reply->elements - 1) / 3;
  s.last_full = claimed >= asked;
  for (std::size_t i = 0; i < claimed; ++i) {
    const redisReply* const* e = reply->element + 1 + 3 * i;
    Check check;
    check.shard = shard;
    check.user = std::string(text(e[0]));
    if (check.user.empty() || !integer(e[1], check.due) || !integer(e[2], check.lease)) continue;
    checks_.push_back(std::move(check));
    ++s.in_flight;
    ++metrics_.portfolio.claimed;
    metrics_.portfolio_in_flight = static_cast<int64_t>(checks_.size());
    read_monitor(std::prev(checks_.end()));
  }
}

void PortfolioChecks::read_monitor(CheckIt check) {
  // Plain HMGETs (pipelined by hiredis), not a batched read function: measured, a
  // function call per node costs Redis about a fifth more CPU per check for its Lua
  // wrapper, though it saves round trips (README, "Benchmarks").
  const bool sent = redis_.command({"HMGET", keys::monitor(check->user), "status", "spec", "updatedAt"},
                                   [this, check](const redisReply* r) {
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 3) return abandon(check, reply_error(r));
    const bool running = text(r->element[0]) == "running";
    check->updated_at = std::string(text(r->element[2]));
    if (running) {
      rapidjson::Document spec;
      const std::string_view raw = text(r->element[1]);
      std::optional<std::string> problem;
      if (parse_json(spec, raw) || !spec.IsObject()) problem = "not a JSON object";
      else if (auto p = schemas_.validate("monitor", spec)) problem = p;
      else problem = portfolio::parse_spec(spec, check->spec);
      if (problem) {
        log::warn("portfolio check: the stored monitor spec is invalid; the monitor leaves the schedule",
                  {{"user", check->user}, {"error", *problem}});
      }
      check->evaluate = !problem && !check->spec.rules.empty();
    }
    check->remove = !check->evaluate;
    if (check->evaluate) read_quotes(check);
    else run_function(check);
  });
  if (!sent) abandon(check, "redis unavailable");
}

void PortfolioChecks::read_quotes(CheckIt check) {
  // One count more than reads, dropped after the loop: the check cannot finish (and be
  // erased) while the loop still walks it.
  check->quotes_waiting = check->spec.symbols.size() + 1;
  auto one_done = [this, check] {
    if (--check->quotes_waiting > 0) return;
    if (check->quotes_failed) abandon(check, "a quote could not be read");
    else run_function(check);
  };
  for (const std::string& symbol : check->spec.symbols) {
    const bool sent = read_quote(symbol, [check, symbol, one_done](bool ok, std::optional<portfolio::Quote> q) {
      if (!ok) check->quotes_failed = true;
      else if (q) check->quotes.emplace(symbol, *q);
      one_done();
    });
    if (!sent) {
      check->quotes_failed = true;
      --check->quotes_waiting;
    }
  }
  one_done();
}

bool PortfolioChecks::read_quote(const std::string& symbol,
                                 std::function<void(bool ok, std::optional<portfolio::Quote>)> done) {
  if (auto it = quote_reads_.find(symbol); it != quote_reads_.end()) {
    it->second->waiting.push_back(std::move(done));  // the read in flight answers this one too
    return true;
  }
  auto read = std::make_shared<QuoteRead>();
  read->waiting.push_back(std::move(done));
  quote_reads_.emplace(symbol, read);
  const bool sent = redis_.command({"GET", keys::quote(symbol)}, [this, symbol, read](const redisReply* r) {
    if (r != nullptr && r->type == REDIS_REPLY_ERROR && std::string_view(r->str, r->len).starts_with("WRONGTYPE") &&
        read_legacy_quote(symbol, read)) {
      return;
    }
    std::optional<portfolio::Quote> quote;
    if (r != nullptr && r->type == REDIS_REPLY_STRING) quote = parse_stored_quote({r->str, r->len}).quote;
    answer_quote_read(symbol, read, r != nullptr && r->type != REDIS_REPLY_ERROR, quote);
  });
  if (!sent) {
    quote_reads_.erase(symbol);
    return false;
  }
  return true;
}

bool PortfolioChecks::read_legacy_quote(const std::string& symbol, const std::shared_ptr<QuoteRead>& read) {
  const auto& f = kLegacyQuoteFields;
  return redis_.command({"HMGET", keys::quote(symbol), f[0], f[1], f[2]}, [this, symbol, read](const redisReply* r) {
    const bool ok = r != nullptr && r->type == REDIS_REPLY_ARRAY && r->elements == kLegacyQuoteFields.size();
    std::array<std::optional<std::string_view>, kLegacyQuoteFields.size()> fields;
    for (std::size_t i = 0; ok && i < fields.size(); ++i) {
      if (r->element[i]->type == REDIS_REPLY_STRING) fields[i].emplace(r->element[i]->str, r->element[i]->len);
    }
    answer_quote_read(symbol, read, ok, ok ? parse_legacy_quote(fields).quote : std::nullopt);
  });
}

void PortfolioChecks::answer_quote_read(const std::string& symbol, const std::shared_ptr<QuoteRead>& read, bool ok,
                                        std::optional<portfolio::Quote> quote) {
  if (auto it = quote_reads_.find(symbol); it != quote_reads_.end() && it->second == read) quote_reads_.erase(it);
  for (auto& callback : read->waiting) callback(ok, quote);
}

void PortfolioChecks::run_function(CheckIt check) {
  const int64_t now = wall_ms();
  rapidjson::StringBuffer rules;
  {
    rapidjson::Writer<rapidjson::StringBuffer> w(rules);
    w.StartArray();
    if (check->evaluate) {
      const portfolio::Valuation valuation = portfolio::value(check->spec.positions, check->quotes);
      int64_t started = now;
      if (!check->updated_at.empty()) started = std::strtoll(check->updated_at.c_str(), nullptr, 10);
      for (const portfolio::Rule& rule : check->spec.rules) {
        const portfolio::Finding f = portfolio::evaluate(rule, valuation, check->quotes, now, started);
        w.StartObject();
        w.Key("id");
        w.Int64(rule.alert_id);
        if (f.holds) {
          w.Key("h");
          w.Int(*f.holds ? 1 : 0);
        }
        w.Key("c");
        w.Int64(rule.cooldown_sec);
        if (f.holds && *f.holds) {
          const std::string alert = portfolio::alert_body(check->user, rule, f, valuation, check->quotes, now);
          w.Key("a");
          w.String(alert.data(), static_cast<rapidjson::SizeType>(alert.size()));
        }
        w.EndObject();
      }
    }
    w.EndArray();
  }
  const bool sent = check_->add(
      {keys::portfolio_state(check->user), keys::portfolio_outbox(check->user), keys::monitor(check->user)},
      {std::to_string(check->due), check->updated_at, std::to_string(now),
       std::string(rules.GetString(), rules.GetSize())},
      [this, check](const redisReply* r) { on_function(check, r); });
  if (!sent) abandon(check, "redis unavailable");
}

void PortfolioChecks::on_function(CheckIt check, const redisReply* reply) {
  int64_t code = -1;
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
      !integer(reply->element[0], code)) {
    return abandon(check, reply_error(reply));
  }
  check->code = static_cast<int>(code);
  if (code == kNotRunning) check->remove = true;
  for (std::size_t i = 1; i < reply->elements; ++i) check->pending.emplace_back(text(reply->element[i]));
  if (!redis_.replicas_required()) return publish(check);
  // Inside the reply's callback: waits on the node that applied it.
  redis_.wait_replicated(keys::portfolio_state(check->user), [this, check](bool ok) {
    if (!ok) {
      ++metrics_.replica_waits_failed;
      return abandon(check, "too few replicas confirmed the check's effects");
    }
    publish(check);
  });
}

void PortfolioChecks::publish(CheckIt check) {
  if (check->pending.empty()) return reschedule(check);
  if (amqp_.state() != AmqpState::Connected) {
    ++metrics_.portfolio.publish_failures;
    return reschedule(check);  // the alerts stay in the outbox for the next check
  }
  const uint64_t now_s = static_cast<uint64_t>(wall_ms() / 1000);
  const std::string outbox = keys::portfolio_outbox(check->user);
  // One count more than publishes, dropped after the loop (see read_quotes).
  check->publishes_waiting = check->pending.size() + 1;
  auto settle = [this, check] {
    if (--check->publishes_waiting == 0) reschedule(check);
  };
  for (const std::string& entry : check->pending) {
    const std::size_t space = entry.find(' ');
    const std::string id = entry.substr(0, space);
    std::optional<DerivedRoute> route =
        space == std::string::npos ? std::nullopt : route_derived(config_.topology, std::string_view(entry).substr(space + 1));
    if (!route) {
      // Never written by this eventd: it could never be published. Dropped, and said.
      log::error("portfolio check: an outbox entry cannot be routed; dropped", {{"user", check->user}, {"id", id}});
      redis_.command({"LREM", outbox, "1", entry}, [](const redisReply*) {});
      --check->publishes_waiting;
      continue;
    }
    const bool sent = amqp_.publish(
        route->route.exchange, route->route.routing_key, json_properties(id, route->type, now_s), route->body,
        [this, check, outbox, entry](bool ok, const std::string& why) {
          if (ok) {
            ++metrics_.portfolio.alerts_published;
            // Confirmed: off the outbox. Should this fail, the next check publishes it
            // again, and alert_triggered drops the duplicate (same message id).
            redis_.command({"LREM", outbox, "1", entry}, [](const redisReply*) {});
          } else {
            ++metrics_.portfolio.publish_failures;
            if (!check->publish_failed) {
              log::warn("portfolio alert not confirmed; the next check publishes it again",
                        {{"user", check->user}, {"error", why}});
            }
            check->publish_failed = true;
          }
          if (--check->publishes_waiting == 0) reschedule(check);
        });
    if (!sent) {
      ++metrics_.portfolio.publish_failures;
      check->publish_failed = true;
      --check->publishes_waiting;
    }
  }
  settle();
}

void PortfolioChecks::reschedule(CheckIt check) {
  const std::string next = check->remove ? std::string() : std::to_string(check->due + check->spec.check_interval_ms);
  const bool sent = reschedule_->add(
      {keys::schedule(check->shard), keys::schedule_claims(check->shard)},
      {check->user, std::to_string(check->lease), next}, [this, check](const redisReply* r) {
        int64_t kept = 0;
        if (!integer(r, kept)) return abandon(check, reply_error(r));
        if (kept == 0) log::debug("portfolio check: its claim was taken over or reset", {{"user", check->user}});
        Outcome outcome = Outcome::Applied;
        if (check->remove) outcome = Outcome::Removed;
        else if (check->code == kDuplicate) outcome = Outcome::Duplicate;
        else if (check->code == kStale) outcome = Outcome::Stale;
        finish(check, outcome);
      });
  if (!sent) abandon(check, "redis unavailable");
}

void PortfolioChecks::abandon(CheckIt check, std::string_view why) {
  // Redis went away (or answered with an error) mid-check: nothing is lost, the claim
  // expires after leaseMs and the check runs again, as the same check.
  // A lost connection says so elsewhere; an error reply is worth a warning.
  const log::Level level = why.starts_with("redis: ") ? log::Level::Warn : log::Level::Debug;
  if (log::enabled(level)) {
    log::write(level, "portfolio check abandoned until its lease expires",
               {{"user", check->user}, {"due", check->due}, {"reason", why}});
  }
  finish(check, Outcome::Abandoned);
}

void PortfolioChecks::finish(CheckIt check, Outcome outcome) {
  switch (outcome) {
    case Outcome::Applied: ++metrics_.portfolio.applied; break;
    case Outcome::Duplicate: ++metrics_.portfolio.duplicate; break;
    case Outcome::Stale: ++metrics_.portfolio.stale; break;
    case Outcome::Removed: ++metrics_.portfolio.removed; break;
    case Outcome::Abandoned: ++metrics_.portfolio.abandoned; break;
  }
  const std::size_t shard = check->shard;
  checks_.erase(check);
  metrics_.portfolio_in_flight = static_cast<int64_t>(checks_.size());
  Shard& s = shards_[shard];
  --s.in_flight;
  // A full claim means more may be due: claim again once half the batch is done,
  // rather than at the next poll.
  if (s.last_full && s.in_flight <= config_.portfolio.claim_batch / 2) claim(shard);
  if (stopping_ && checks_.empty() && on_idle) on_idle();
}

}  // namespace eventd

// bench-latency: end-to-end latency of eventd's quote_update path, publish -> effect
// recorded in Redis, at a fixed publish rate (open loop).
//
//   bench-latency --amqp-url URL --redis-host 127.0.0.1 --redis-port 6379 [--redis-db 0]
//                 --rate MSG_PER_S --duration-s S [--warmup-s 1] [--grace-s 30]
//                 [--exchange market.quotes] [--symbol BENCHLAT] [--id-prefix lat-<pid>-]
//
// Method. One process, one monotonic clock, so no clock skew between "sent" and
// "handled":
//  - the publisher thread publishes persistent quote_update messages (the same
//    properties eventctl sets; message_id = <prefix><seq>) to the quotes exchange on
//    a fixed schedule (seq / rate after the start), and takes the time right before
//    each basic.publish;
//  - the subscriber thread has Redis keyspace notifications switched on for string
//    commands (CONFIG SET notify-keyspace-events E$, restored at exit) and SUBSCRIBEs
//    to __keyevent@<db>__:set. eventd's quote_update script writes the idempotency key
//    eventd:idem:{<SYMBOL>}:<message_id> with SET as its last command, so each
//    notification names the message whose effects were just committed; its arrival
//    time is taken right after the read that returned it.
// Latency = arrival - send, for messages sent after the warm-up. Resolution: the
// clock is ns; the error is the subscriber's wake-up delay after Redis writes the
// notification (normally tens of us, more on a loaded machine). Also reported:
// latency from the *scheduled* send time (includes any publisher stall, i.e. corrects
// for coordinated omission), the achieved publish rate and the worst publisher lag.
// The run always ends: after the last publish it waits at most --grace-s for the
// stragglers and reports how many were never seen.
// Prints one JSON object on stdout.
#include <amqp.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "eventd/keys.hpp"
#include "amqp_tools.hpp"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench-latency: %s\n", what.c_str());
  std::exit(1);
}

int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

using bench::wall_ms;

redisContext* redis_connect(const std::string& host, int port) {
  timeval tv{5, 0};
  redisContext* c = redisConnectWithTimeout(host.c_str(), port, tv);
  if (c == nullptr || c->err) die("cannot connect to Redis: " + std::string(c ? c->errstr : "out of memory"));
  return c;
}

std::string redis_string(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data()));
  if (r == nullptr) die("Redis command failed: " + std::string(c->errstr));
  std::string out;
  if (r->type == REDIS_REPLY_ERROR) die("Redis: " + std::string(r->str, r->len));
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) out.assign(r->str, r->len);
  if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
    out.assign(r->element[1]->str, r->element[1]->len);  // CONFIG GET name -> [name, value]
  }
  freeReplyObject(r);
  return out;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return NAN;
  // Nearest rank.
  auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  if (rank < 1) rank = 1;
  if (rank > sorted.size()) rank = sorted.size();
  return sorted[rank - 1];
}

struct Stats {
  std::size_t n = 0;
  double mean = NAN, p50 = NAN, p90 = NAN, p99 = NAN, p999 = NAN, max = NAN;
};

Stats stats_of(std::vector<double> v) {
  Stats s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  s.p50 = percentile(v, 50);
  s.p90 = percentile(v, 90);
  s.p99 = percentile(v, 99);
  s.p999 = percentile(v, 99.9);
  s.max = v.back();
  return s;
}

std::string json_num(double v) {
  if (std::isnan(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

std::string stats_json(const Stats& s) {
  return "{\"n\": " + std::to_string(s.n) + ", \"mean\": " + json_num(s.mean) + ", \"p50\": " + json_num(s.p50) +
         ", \"p90\": " + json_num(s.p90) + ", \"p99\": " + json_num(s.p99) + ", \"p99_9\": " + json_num(s.p999) +
         ", \"max\": " + json_num(s.max) + "}";
}

}  // namespace

int main(int argc, char** argv) {
  std::string amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f";
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
  int redis_db = 0;
  double rate = 0;
  double duration_s = 0;
  double warmup_s = 1;
  double grace_s = 30;
  std::string exchange = "market.quotes";
  std::string symbol = "BENCHLAT";
  std::string prefix = "lat-" + std::to_string(getpid()) + "-" + std::to_string(wall_ms()) + "-";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--amqp-url") amqp_url = value();
    else if (a == "--redis-host") redis_host = value();
    else if (a == "--redis-port") redis_port = std::atoi(value().c_str());
    else if (a == "--redis-db") redis_db = std::atoi(value().c_str());
    else if (a == "--rate") rate = std::strtod(value().c_str(), nullptr);
    else if (a == "--duration-s") duration_s = std::strtod(value().c_str(), nullptr);
    else if (a == "--warmup-s") warmup_s = std::strtod(value().c_str(), nullptr);
    else if (a == "--grace-s") grace_s = std::strtod(value().c_str(), nullptr);
    else if (a == "--exchange") exchange = value();
    else if (a == "--symbol") symbol = value();
    else if (a == "--id-prefix") prefix = value();
    else die("unknown argument " + a + " (see the comment at the top of bench/latency.cpp)");
  }
  if (rate <= 0 || duration_s <= 0) die("--rate and --duration-s are required");
  const auto total = static_cast<std::size_t>((warmup_s + duration_s) * rate);
  if (total == 0) die("nothing to send");

  // Redis: notifications on, subscriber ready before the first publish.
  redisContext* ctl = redis_connect(redis_host, redis_port);
  std::string old_flags = redis_string(ctl, {"CONFIG", "GET", "notify-keyspace-events"});
  redis_string(ctl, {"CONFIG", "SET", "notify-keyspace-events", "E$"});
  redisContext* sub = redis_connect(redis_host, redis_port);
  std::string channel = "__keyevent@" + std::to_string(redis_db) + "__:set";
  {
    auto* r = static_cast<redisReply*>(redisCommand(sub, "SUBSCRIBE %b", channel.data(), channel.size()));
    if (r == nullptr || r->type != REDIS_REPLY_ARRAY) die("SUBSCRIBE failed");
    freeReplyObject(r);
  }
  const std::string key_prefix = eventd::keys::idempotency(eventd::keys::Tag(symbol), prefix, "quote_update", "");

  std::vector<int64_t> sched_ns(total, 0), sent_ns(total, 0), recv_ns(total, 0);
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> seen{0};
  std::size_t foreign = 0;

  std::thread subscriber([&] {
    pollfd pfd{sub->fd, POLLIN, 0};
    while (!stop.load(std::memory_order_relaxed)) {
      int rc = poll(&pfd, 1, 50);
      if (rc < 0) die("poll failed");
      if (rc == 0) continue;
      if (redisBufferRead(sub) != REDIS_OK) die("Redis subscriber read failed: " + std::string(sub->errstr));
      const int64_t now = mono_ns();
      for (;;) {
        void* raw = nullptr;
        if (redisGetReplyFromReader(sub, &raw) != REDIS_OK) die("Redis subscriber protocol error");
        if (raw == nullptr) break;
        auto* r = static_cast<redisReply*>(raw);
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING) {
          std::string_view key(r->element[2]->str, r->element[2]->len);
          if (key.substr(0, key_prefix.size()) == key_prefix) {
            std::string_view num = key.substr(key_prefix.size());
            std::size_t seq = 0;
            bool ok = !num.empty();
            for (char ch : num) {
              if (ch < '0' || ch > '9') { ok = false; break; }
              seq = seq * 10 + static_cast<std::size_t>(ch - '0');
            }
            if (ok && seq < total && recv_ns[seq] == 0) {
              recv_ns[seq] = now;
              seen.fetch_add(1, std::memory_order_relaxed);
            }
          } else {
            ++foreign;
          }
        }
        freeReplyObject(r);
      }
    }
  });

  // AMQP publisher: no confirms (they would pace the publisher by the broker), no
  // mandatory flag; lost messages show up as "not seen".
  amqp_connection_state_t conn = bench::connect(amqp_url, die);

  const double interval_ns = 1e9 / rate;
  const int64_t start = mono_ns() + 20'000'000;  // 20 ms from now
  int64_t max_lag = 0;
  bench::QuoteMessage message;
  for (std::size_t i = 0; i < total; ++i) {
    const int64_t due = start + static_cast<int64_t>(static_cast<double>(i) * interval_ns);
    sched_ns[i] = due;
    int64_t now = mono_ns();
    if (now < due) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
      now = mono_ns();
    }
    max_lag = std::max(max_lag, now - due);
    message.fill(symbol.c_str(), 100.0 + static_cast<double>(i % 1000) / 100.0, static_cast<double>(i % 7) - 3.0,
                 prefix, i);
    sent_ns[i] = mono_ns();
    int rc = message.publish(conn, exchange);
    if (rc != AMQP_STATUS_OK) die(std::string("publish failed: ") + amqp_error_string2(rc));
  }
  const int64_t publish_end = mono_ns();

  // Stragglers: stop when all are in, or when the grace period is over.
  const int64_t grace_end = publish_end + static_cast<int64_t>(grace_s * 1e9);
  while (seen.load() < total && mono_ns() < grace_end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int64_t waited_ns = mono_ns() - publish_end;
  stop = true;
  subscriber.join();

  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  redis_string(ctl, {"CONFIG", "SET", "notify-keyspace-events", old_flags});
  redisFree(sub);
  redisFree(ctl);

  // Statistics over the measured window (after the warm-up), in milliseconds.
  const auto first_measured = static_cast<std::size_t>(warmup_s * rate);
  std::vector<double> lat, lat_sched, lat_tail;
  std::size_t measured = 0, missing = 0;
  const std::size_t tail_from = total - std::max<std::size_t>(1, (total - first_measured) / 10);
  for (std::size_t i = first_measured; i < total; ++i) {
    ++measured;
    if (recv_ns[i] == 0) {
      ++missing;
      continue;
    }
    lat.push_back(static_cast<double>(recv_ns[i] - sent_ns[i]) / 1e6);
    lat_sched.push_back(static_cast<double>(recv_ns[i] - sched_ns[i]) / 1e6);
    if (i >= tail_from) lat_tail.push_back(static_cast<double>(recv_ns[i] - sent_ns[i]) / 1e6);
  }
  const double pub_secs = static_cast<double>(sent_ns[total - 1] - sent_ns[0]) / 1e9;
  const double achieved = pub_secs > 0 ? static_cast<double>(total - 1) / pub_secs : 0;
  Stats s = stats_of(lat), ss = stats_of(lat_sched), st = stats_of(lat_tail);
  std::printf(
      "{\"rate\": %.1f, \"achieved_rate\": %.1f, \"sent\": %zu, \"seen\": %zu, \"measured\": %zu, "
      "\"missing\": %zu, \"warmup_s\": %.3f, \"duration_s\": %.3f, \"max_publisher_lag_ms\": %.3f, "
      "\"waited_after_publish_s\": %.3f, \"foreign_notifications\": %zu, \"latency_ms\": %s, "
      "\"latency_from_schedule_ms\": %s, \"latency_last10pct_ms\": %s}\n",
      rate, achieved, total, seen.load(), measured, missing, warmup_s, duration_s,
      static_cast<double>(max_lag) / 1e6, static_cast<double>(waited_ns) / 1e9, foreign, stats_json(s).c_str(),
      stats_json(ss).c_str(), stats_json(st).c_str());
  return 0;
}

// notification handler: sinks, rate limit, circuit breaker (see notification.hpp).
#include "eventd/handlers/notification.hpp"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <iterator>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/handlers/function_library.hpp"
#include "eventd/handlers/rules_lua.hpp"
#include "eventd/json_member.hpp"
#include "eventd/keys.hpp"
#include "eventd/log.hpp"

namespace eventd {
namespace {

// Token bucket shared by both scripts: returns 0 with a token taken, or the ms to
// wait for one. Time is the caller's wall clock (ms), so instances agree.
constexpr const char* kTakeToken = R"lua(
local function take_token(key, now, per_minute, burst)
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local wait, tokens, ts = bucket_take(tonumber(b[1]), tonumber(b[2]), now, per_minute, burst)
  if wait > 0 then return wait end
  redis.call('HSET', key, 'tokens', exact(tokens), 'ts', exact(ts))
  redis.call('PEXPIRE', key, math.ceil(burst * 60000 / per_minute) + 60000)
  return 0
end
)lua";

// K: idempotency, bucket, stream, all under {<userId>}. A: now, then the stream entry's
// values (messageId, channel, kind, title, body, data, timestamp). S: ttl, per minute,
// burst, maxlen. Returns {1,0} added, {0,0} duplicate, {-1,wait} rate limited.
constexpr const char* kStreamLua = R"lua(
local function notify_stream(K, A, S)
  if redis.call('EXISTS', K[1]) == 1 then return {0, 0} end
  local wait = take_token(K[2], tonumber(A[1]), tonumber(S[2]), tonumber(S[3]))
  if wait > 0 then return {-1, wait} end
  redis.call('XADD', K[3], 'MAXLEN', '~', S[4], '*', 'messageId', A[2], 'channel', A[3], 'kind', A[4],
             'title', A[5], 'body', A[6], 'data', A[7], 'timestamp', A[8])
  redis.call('SET', K[1], '1', 'EX', S[1])
  return {1, 0}
end
)lua";

// K: idempotency, bucket, lease, all under {<userId>}. A: now. S: ttl, per minute,
// burst, lease ms. Returns {1,0} go ahead, {0,0} duplicate, {-1,wait} rate limited,
// {-2,wait} leased.
constexpr const char* kLeaseLua = R"lua(
local function notify_lease(K, A, S)
  if redis.call('EXISTS', K[1]) == 1 then return {0, 0} end
  local held = redis.call('PTTL', K[3])
  if held > 0 then return {-2, held} end
  local wait = take_token(K[2], tonumber(A[1]), tonumber(S[2]), tonumber(S[3]))
  if wait > 0 then return {-1, wait} end
  redis.call('SET', K[3], '1', 'PX', S[4])
  return {1, 0}
end
)lua";

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string field(const rapidjson::Value& v, const char* key) { return std::string(string_member(v, key)); }

std::string json_of(const rapidjson::Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

// Result {code, wait} of both functions.
bool script_pair(const redisReply* r, long long& code, long long& wait) {
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2) return false;
  code = r->element[0]->integer;
  wait = r->element[1]->integer;
  return true;
}

HandlerResult script_failure(const redisReply* r) {
  if (r == nullptr) return HandlerResult::redis_unavailable();
  std::string why = r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : "unexpected function reply";
  return HandlerResult::failed(ProcessingError::transient(ErrorCode::Internal, "redis: " + why));
}

HandlerResult circuit_open(const CircuitBreaker& breaker, std::string_view sink, const std::string& name, int64_t now) {
  uint32_t wait = static_cast<uint32_t>(std::max<int64_t>(breaker.retry_after_ms(now), 1000));
  return HandlerResult::deferred(
      ProcessingError::transient(ErrorCode::DownstreamError, std::string("circuit open: the ") + std::string(sink) +
                                                                 " sink of " + name + " keeps failing"),
      wait);
}

}  // namespace

UnrecordedDeliveries::UnrecordedDeliveries(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

void UnrecordedDeliveries::remember(std::string_view idem_key) {
  if (contains(idem_key)) return;
  if (by_key_.size() >= capacity_) {
    by_key_.erase(oldest_first_.front());
    oldest_first_.pop_front();
  }
  oldest_first_.emplace_back(idem_key);
  by_key_.emplace(oldest_first_.back(), std::prev(oldest_first_.end()));
}

bool UnrecordedDeliveries::contains(std::string_view idem_key) const { return by_key_.find(idem_key) != by_key_.end(); }

void UnrecordedDeliveries::forget(std::string_view idem_key) {
  auto it = by_key_.find(idem_key);
  if (it == by_key_.end()) return;
  oldest_first_.erase(it->second);
  by_key_.erase(it);
}

NotificationHandler::NotificationHandler(uv_loop_t* loop, RedisClient& redis, const Config& config)
    : loop_(loop),
      redis_(redis),
      notify_(config.notify),
      ttl_(std::to_string(config.idempotency_ttl_sec)),
      curl_(loop),
      stream_(register_function(loop, redis, {"notify_stream", std::string(kRulesLua) + kTakeToken, kStreamLua, 3, 8, 4},
                                config.redis.batch_size)),
      lease_(register_function(loop, redis, {"notify_lease", std::string(kRulesLua) + kTakeToken, kLeaseLua, 3, 1, 4},
                               config.redis.batch_size)) {
  stream_->set_shared_args({ttl_, std::to_string(notify_.rate_per_minute), std::to_string(notify_.rate_burst),
                            std::to_string(notify_.stream_length)});
  lease_->set_shared_args({ttl_, std::to_string(notify_.rate_per_minute), std::to_string(notify_.rate_burst),
                           std::to_string(notify_.webhook_timeout_ms + 10000)});
  CircuitBreakerConfig breaker{config.notify.breaker_failures, config.notify.breaker_open_ms, 1};
  for (const char* name : {"push", "email", "discord"}) {
    const ChannelSink* cfg = config.notify.sink_for(name);
    Channel ch;
    ch.kind = cfg->kind;
    ch.breaker = CircuitBreaker(breaker);
    if (cfg->kind == SinkKind::File) {
      ch.sink = std::make_unique<FileSink>(loop, cfg->path);
    } else if (cfg->kind == SinkKind::Webhook) {
      if (cfg->url.empty()) {
        ch.missing = std::string("no webhook url configured for channel ") + name + " (notify.channels." + name +
                     ".url)";
      } else {
        ch.sink = std::make_unique<WebhookSink>(curl_, cfg->url, static_cast<long>(config.notify.webhook_timeout_ms));
      }
    }
    channels_.emplace(name, std::move(ch));
  }
}

std::map<std::string, CircuitState, std::less<>> NotificationHandler::circuit_states(int64_t now_ms) const {
  std::map<std::string, CircuitState, std::less<>> out;
  for (const auto& [name, channel] : channels_) {
    if (channel.kind != SinkKind::Redis) out.emplace(name, channel.breaker.state(now_ms));
  }
  return out;
}

void NotificationHandler::handle(const Message& message, HandlerDone done) {
  const rapidjson::Value& body = message.body;
  const std::string name = field(body, "channel");
  auto it = channels_.find(name);
  if (it == channels_.end()) {
    return done(HandlerResult::failed(
        ProcessingError::permanent(ErrorCode::ValidationError, "/channel: no sink for channel '" + name + "'")));
  }
  Channel& channel = it->second;
  if (!channel.missing.empty()) {
    return done(HandlerResult::failed(ProcessingError::permanent(ErrorCode::DownstreamError, channel.missing)));
  }
  if (channel.kind != SinkKind::Redis) return deliver_external(channel, name, message, std::move(done));

  const std::string user = field(body, "userId");
  auto data = body.FindMember("data");
  std::string data_json = data != body.MemberEnd() ? json_of(data->value) : "{}";
  std::string id(message.delivery.properties.message_id());
  bool sent = stream_->add({std::string(message.idempotency_key), keys::rate_limit(user, name),
                            keys::notifications(user)},
                           {std::to_string(wall_ms()), id, name, field(body, "kind"), field(body, "title"),
                            field(body, "body"), data_json, std::to_string(message.timestamp_ms)},
                          [done](const redisReply* r) {
                            long long code = 0, wait = 0;
                            if (!script_pair(r, code, wait)) return done(script_failure(r));
                            if (code == 0) return done(HandlerResult::duplicate());
                            if (code < 0) {
                              return done(HandlerResult::deferred(
                                  ProcessingError::transient(ErrorCode::RateLimit, "rate limit for this user and channel"),
                                  static_cast<uint32_t>(wait)));
                            }
                            done(HandlerResult::applied());
                          });
  if (!sent) done(HandlerResult::redis_unavailable());
}

void NotificationHandler::deliver_external(Channel& channel, const std::string& name, const Message& message,
                                           HandlerDone done) {
  std::string idem(message.idempotency_key);
  std::string lease = keys::lease(idem);
  // Delivered already, only not recorded: never call the sink again for it.
  if (unrecorded_.contains(idem)) return record_delivery(idem, lease, std::move(done));
  const int64_t now = static_cast<int64_t>(uv_now(loop_));
  // Only a look: a half-open trial slot is taken once the lease script says go.
  if (channel.breaker.retry_after_ms(now) > 0) {
    return done(circuit_open(channel.breaker, channel.sink->kind(), name, now));
  }
  const rapidjson::Value& body = message.body;
  const std::string user = field(body, "userId");
  std::string payload;
  if (channel.kind == SinkKind::Webhook) {
    payload = discord_payload(field(body, "title"), field(body, "body"));
  } else {
    rapidjson::Document line;
    line.CopyFrom(body, line.GetAllocator());
    std::string id(message.delivery.properties.message_id());
    line.RemoveMember("messageId");  // a producer's own field must not make the key appear twice
    line.AddMember("messageId", rapidjson::Value(id.c_str(), line.GetAllocator()), line.GetAllocator());
    payload = json_of(line);
  }
  bool sent = lease_->add(
      {idem, keys::rate_limit(user, name), lease}, {std::to_string(wall_ms())},
      [this, &channel, name, idem, lease, trace = &message.trace, payload = std::move(payload),
       done](const redisReply* r) mutable {
        long long code = 0, wait = 0;
        if (!script_pair(r, code, wait)) return done(script_failure(r));
        if (code == 0) return done(HandlerResult::duplicate());
        if (code == -1) {
          return done(HandlerResult::deferred(
              ProcessingError::transient(ErrorCode::RateLimit, "rate limit for this user and channel"),
              static_cast<uint32_t>(wait)));
        }
        if (code == -2) {
          return done(HandlerResult::deferred(
              ProcessingError::transient(ErrorCode::Internal, "being delivered under another lease"),
              static_cast<uint32_t>(wait)));
        }
        const int64_t at = static_cast<int64_t>(uv_now(loop_));
        if (!channel.breaker.allow(at)) {
          // Another message took the half-open trial meanwhile.
          redis_.command({"DEL", lease}, [](const redisReply*) {});
          return done(circuit_open(channel.breaker, channel.sink->kind(), name, at));
        }
        channel.sink->deliver(std::move(payload), [this, &channel, name, idem, lease, trace, done](SinkResult result) {
          const int64_t at = static_cast<int64_t>(uv_now(loop_));
          if (!result.ok) {
            // A 4xx is this message's fault, not the sink's: it does not open the circuit.
            if (result.retryable) channel.breaker.record_failure(at);
            else channel.breaker.record_success(at);
            redis_.command({"DEL", lease}, [](const redisReply*) {});
            log::warn("notification delivery failed", {{"channel", name}, {"trace_id", trace->trace_id()}, {"error", result.error},
                                                       {"retryable", result.retryable}});
            ProcessingError e{ErrorCode::DownstreamError, result.error, result.retryable};
            return done(HandlerResult::failed(std::move(e)));
          }
          channel.breaker.record_success(at);
          record_delivery(idem, lease, done);
        });
      });
  if (!sent) done(HandlerResult::redis_unavailable());
}

void NotificationHandler::record_delivery(const std::string& idem, const std::string& lease, HandlerDone done) {
  // Until the key is written, a rerun (parked until Redis is back, or retried) only
  // records: the lease it still holds would otherwise defer it until it expires, and
  // then deliver it again.
  unrecorded_.remember(idem);
  bool sent = redis_.command({"SET", idem, "1", "EX", ttl_}, [this, idem, lease, done](const redisReply* reply) {
    if (reply == nullptr) return done(HandlerResult::redis_unavailable());
    if (reply->type == REDIS_REPLY_ERROR) {
      return done(HandlerResult::failed(ProcessingError::transient(
          ErrorCode::Internal, "redis: recording a delivered notification: " + std::string(reply->str, reply->len))));
    }
    unrecorded_.forget(idem);
    redis_.command({"DEL", lease}, [](const redisReply*) {});
    done(HandlerResult::applied());
  });
  if (!sent) done(HandlerResult::redis_unavailable());
}

}  // namespace eventd

// Per-message pipeline: validate, handle, then ack / retry / dead-letter.
#include "eventd/dispatcher.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include <rapidjson/error/en.h>

#include "eventd/amqp_table.hpp"
#include "eventd/json_case.hpp"
#include "eventd/json_parse.hpp"
#include "eventd/keys.hpp"
#include "eventd/log.hpp"
#include "eventd/routing.hpp"
#include "eventd/trace_context.hpp"
#include "eventd/utf8.hpp"

#include <hiredis/hiredis.h>
#include <memory>

namespace eventd {
namespace {

constexpr std::size_t kMaxErrorMessageBytes = 1024;
constexpr uint64_t kRequeueDelayMs = 1000;
constexpr std::string_view kUnknownType = "unknown";

// Headers eventd writes; stripped from the original before writing them again, so
// a replayed or retried message never carries two of one.
constexpr std::string_view kOwnHeaders[] = {
    "x-retry-count",         "x-error-code",        "x-error-message",   "x-failed-at",
    "x-original-exchange",   "x-original-routing-key", "x-original-queue", "x-last-error-code",
    "x-last-error-message",  "x-defer-count",       AmqpConnection::kPublishTag, kTraceIdHeader,
};

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string iso8601_now() {
  int64_t ms = now_ms();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

}  // namespace

bool is_eventd_header(std::string_view key) {
  for (auto k : kOwnHeaders) {
    if (k == key) return true;
  }
  return false;
}

std::string too_deep_headers_message(const std::vector<std::string>& dropped) {
  std::string names;
  for (const auto& name : dropped) names += (names.empty() ? "'" : ", '") + cap_utf8(name, 128) + "'";
  return std::string("AMQP header") + (dropped.size() == 1 ? " " : "s ") + names + " nest" +
         (dropped.size() == 1 ? "s" : "") + " tables deeper than " + std::to_string(kMaxHeaderDepth) + " levels";
}

std::string cap_utf8(std::string_view raw, std::size_t max) {
  const std::string clean = sanitize_utf8(raw);
  std::string_view text = clean;
  if (text.size() <= max) return std::string(text);
  std::size_t cut = max;
  // Step back over continuation bytes (10xxxxxx) so no sequence is split.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return std::string(text.substr(0, cut));
}

namespace {

// What a job knows of its message, and nothing else: a recycled job is reset by
// assigning a fresh one of these (a field added here is reset with the rest).
struct JobState {
  Delivery delivery;
  std::string type{kUnknownType};
  std::string idem_key;
  int64_t timestamp_ms = 0;
  int64_t retry_count = 0;
  uint64_t started_ns = 0;
  TraceContext trace;
  MessageCounters* counters = nullptr;
};

}  // namespace

struct Dispatcher::Job : JobState {
  // Typical bodies parse into this buffer without a malloc; RapidJSON's default
  // allocator would take a 64 KiB block per message (32 MiB at prefetch 500).
  char json_buffer[1024];
  rapidjson::MemoryPoolAllocator<> json_allocator{json_buffer, sizeof json_buffer, 1024};
  rapidjson::Document body{&json_allocator};
  // The body's text parsed in place (parse_json_in_place): body's strings point into it.
  std::string json_text;

  // Back to a fresh job, its memory (the body above all) given back; only the inline
  // buffer, a typical body's worth of json_text and the list node are kept.
  void clear() {
    static_cast<JobState&>(*this) = JobState{};
    body.SetNull();
    json_allocator.Clear();
    constexpr std::size_t kKeptText = 4096;
    if (json_text.capacity() > kKeptText) std::string().swap(json_text);
  }
};

namespace {
constexpr std::size_t kMaxSpareJobs = 512;  // about the default prefetch; ~1.5 KiB each
}  // namespace

Dispatcher::Dispatcher(uv_loop_t* loop, const Config& config, AmqpConnection& amqp, RedisClient& redis,
                       const SchemaRegistry& schemas, Metrics& metrics)
    : loop_(loop),
      config_(config),
      amqp_(amqp),
      redis_(redis),
      schemas_(schemas),
      metrics_(metrics),
      retry_(config.retry) {
  requeue_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  replica_timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
}

Dispatcher::~Dispatcher() = default;

void Dispatcher::register_handler(const std::string& type, std::unique_ptr<Handler> handler) {
  handlers_[type] = std::move(handler);
}

void Dispatcher::on_delivery(Delivery&& delivery) {
  if (spare_jobs_.empty()) {
    jobs_.emplace_back();
  } else {
    jobs_.splice(jobs_.end(), spare_jobs_, spare_jobs_.begin());
  }
  JobIt job = std::prev(jobs_.end());
  job->delivery = std::move(delivery);
  job->started_ns = uv_hrtime();
  metrics_.in_flight = static_cast<int64_t>(jobs_.size());
  const Delivery& d = job->delivery;
  job->trace = trace_of(d.properties.headers());
  table_get_int(d.properties.headers(), "x-retry-count", job->retry_count);
  if (job->retry_count < 0) job->retry_count = 0;

  // Refused before anything walks the headers or parses the body (DESIGN.md, "Security").
  if (const auto& dropped = d.properties.dropped_headers(); !dropped.empty()) {
    job->counters = &metrics_.counters(d.queue, kUnknownType);
    ++job->counters->consumed;
    dead_letter(job, ProcessingError::permanent(ErrorCode::ValidationError,
                                                too_deep_headers_message(dropped) +
                                                    "; not processed, and left out of this dead letter"));
    return;
  }
  if (d.body.size() > config_.limits.max_message_bytes) {
    job->counters = &metrics_.counters(d.queue, kUnknownType);
    ++job->counters->consumed;
    dead_letter(job, ProcessingError::permanent(
                         ErrorCode::ValidationError,
                         "message body is " + std::to_string(d.body.size()) + " bytes; limits.maxMessageBytes is " +
                             std::to_string(config_.limits.max_message_bytes) + " (not parsed)"));
    return;
  }

  rapidjson::Document& doc = job->body;
  if (auto error = parse_json_in_place<rapidjson::kParseValidateEncodingFlag | kParseUniqueKeysFlag>(doc, d.body,
                                                                                                    job->json_text)) {
    job->counters = &metrics_.counters(d.queue, kUnknownType);
    ++job->counters->consumed;
    dead_letter(job, ProcessingError::permanent(ErrorCode::ParseError, "invalid JSON at offset " +
                                                                           std::to_string(error->offset) + ": " +
                                                                           error->what));
    return;
  }
  if (doc.IsObject()) {
    normalise_keys(doc, doc.GetAllocator());
    auto t = doc.FindMember("type");
    if (t != doc.MemberEnd() && t->value.IsString()) job->type.assign(t->value.GetString(), t->value.GetStringLength());
  }
  const bool known_type = schemas_.has(job->type);
  job->counters = &metrics_.counters(d.queue, known_type ? std::string_view(job->type) : kUnknownType);
  ++job->counters->consumed;

  if (!doc.IsObject()) {
    dead_letter(job, ProcessingError::permanent(ErrorCode::ValidationError, "/: expected a JSON object"));
    return;
  }
  if (job->type == kUnknownType && !doc.HasMember("type")) {
    dead_letter(job, ProcessingError::permanent(ErrorCode::ValidationError, "/type: required field missing"));
    return;
  }
  if (!known_type || job->type == "monitor" || job->type == "config") {
    dead_letter(job, ProcessingError::permanent(ErrorCode::UnknownType, "unknown message type '" +
                                                                            cap_utf8(job->type, 128) + "'"));
    return;
  }
  std::string_view prop_type = d.properties.type();
  if (!prop_type.empty() && prop_type != job->type) {
    dead_letter(job, ProcessingError::permanent(ErrorCode::ValidationError,
                                                "AMQP type property '" + std::string(prop_type) +
                                                    "' does not match body type '" + job->type + "'"));
    return;
  }
  if (auto problem = schemas_.validate(job->type, doc)) {
    dead_letter(job, ProcessingError::permanent(ErrorCode::ValidationError, *problem));
    return;
  }
  if (!doc["timestamp"].IsInt64()) {  // the schemas cap it; never trust one check alone
    dead_letter(job, ProcessingError::permanent(ErrorCode::ValidationError, "/timestamp: out of range"));
    return;
  }
  job->timestamp_ms = doc["timestamp"].GetInt64();
  int64_t now = now_ms();
  if (retry_.expired(job->timestamp_ms, now)) {
    dead_letter(job, ProcessingError::permanent(
                         ErrorCode::Expired, "message is " + std::to_string((now - job->timestamp_ms) / 1000) +
                                                 " s old; max age is " +
                                                 std::to_string(config_.retry.max_age_ms / 1000) + " s"));
    return;
  }
  job->idem_key = keys::idempotency(keys::message_tag(job->type, doc), d.properties.message_id(), job->type, d.body);
  start(job);
}

void Dispatcher::start(JobIt job) {
  auto h = handlers_.find(job->type);
  if (h == handlers_.end()) {
    dead_letter(job, ProcessingError::permanent(ErrorCode::Internal,
                                                "no handler for type '" + job->type + "' in this eventd"));
    return;
  }
  Message msg{job->delivery, job->body, job->type, job->idem_key, job->timestamp_ms, job->trace};
  h->second->handle(msg, [this, job](HandlerResult result) { finish(job, std::move(result)); });
}

void Dispatcher::finish(JobIt job, HandlerResult result) {
  switch (result.kind) {
    case HandlerResult::Kind::Applied:
      metrics_.handler_latency(job->type).observe(static_cast<double>(uv_hrtime() - job->started_ns) / 1e9);
      when_replicated(job, [this, job, outbox = std::move(result.outbox)]() mutable {
        if (!outbox.empty()) publish_outbox(job, std::move(outbox));
        else ack(job);
      });
      return;
    case HandlerResult::Kind::Duplicate:
      // Its key may not have reached a replica yet either.
      when_replicated(job, [this, job] {
        ++job->counters->duplicates;
        if (log::enabled(log::Level::Debug)) {  // a trace id may have to be made for the line
          log::debug("duplicate acked", {{"message_id", job->delivery.properties.message_id()},
                                         {"trace_id", job->trace.trace_id()},
                                         {"correlation_id", job->delivery.properties.correlation_id()},
                                         {"type", job->type}, {"queue", job->delivery.queue}});
        }
        ack(job);
      });
      return;
    case HandlerResult::Kind::RedisUnavailable:
      parked_.push_back(job);
      return;
    case HandlerResult::Kind::Deferred: {
      int64_t deferrals = 0;
      table_get_int(job->delivery.properties.headers(), "x-defer-count", deferrals);
      uint32_t delay = retry_.queue_delay_at_least(result.delay_ms);
      if (deferrals >= RetryPolicy::kMaxDeferrals) {
        dead_letter(job, result.error);
      } else {
        retry(job, result.error, delay, true);
      }
      return;
    }
    case HandlerResult::Kind::Failed: {
      metrics_.handler_latency(job->type).observe(static_cast<double>(uv_hrtime() - job->started_ns) / 1e9);
      RetryPolicy::Decision decision = retry_.decide(result.error, static_cast<uint32_t>(job->retry_count));
      if (decision.retry) retry(job, decision.error, decision.delay_ms);
      else dead_letter(job, decision.error);
      return;
    }
  }
}

// The replica check of redis.minReplicas. When it falls short the message waits and
// runs again from the start, using up no attempt: the effects may have died with a
// failed-over master, and only a rerun (deduplicated when they did not) puts them on
// the node that serves the slot now.
template <typename Then>
void Dispatcher::when_replicated(JobIt job, Then&& then) {
  // Without minReplicas (the common case) no callback is stored: nothing allocated.
  if (!redis_.replicas_required()) return then();
  wait_for_replicas(job, std::function<void()>(std::forward<Then>(then)));
}

void Dispatcher::wait_for_replicas(JobIt job, std::function<void()> then) {
  redis_.wait_replicated(job->idem_key, [this, job, then = std::move(then)](bool ok) {
    if (ok) return then();
    ++metrics_.replica_waits_failed;
    parked_.push_back(job);
    if (replica_timer_.initialised() && !uv_is_active(replica_timer_.base())) {
      uv_timer_start(replica_timer_.get(), on_replica_timer, config_.redis.replica_timeout_ms, 0);
    }
  });
}

void Dispatcher::on_replica_timer(uv_timer_t* handle) {
  if (auto* self = owner_of<Dispatcher>(handle)) self->resume_parked();
}

void Dispatcher::ack(JobIt job) {
  if (amqp_.ack(job->delivery.generation, job->delivery.delivery_tag)) ++job->counters->acked;
  release(job);
}

void Dispatcher::publish_outbox(JobIt job, Outbox outbox) {
  struct Progress {
    std::size_t waiting = 0;
    std::string failure;     // first failure: the source goes through the retry policy
    bool abandoned = false;  // the job was released; late callbacks do nothing
  };
  if (amqp_.state() != AmqpState::Connected) {
    release(job);  // the broker has the source back already
    return;
  }
  auto progress = std::make_shared<Progress>();
  progress->waiting = outbox.size();
  // Derived ids carry no tag: a derived message gets the tag of its own type and body.
  const std::string_view source_id = keys::message_id(job->idem_key);
  std::string correlation(job->delivery.properties.correlation_id());
  const uint64_t now_s = static_cast<uint64_t>(now_ms() / 1000);
  // After the last confirm: done, or the source is retried (its outbox is published
  // again next time) and finally dead-lettered like any other failure.
  auto settle = [this, job, progress] {
    if (--progress->waiting > 0) return;
    if (progress->failure.empty()) finish_outbox(job);
    else finish(job, HandlerResult::failed(ProcessingError::transient(ErrorCode::DownstreamError, progress->failure)));
  };

  for (std::size_t i = 0; i < outbox.size(); ++i) {
    std::optional<DerivedRoute> derived = route_derived(config_.topology, outbox[i]);
    if (!derived) {
      if (progress->failure.empty()) progress->failure = "derived message cannot be routed: " + cap_utf8(outbox[i], 200);
      settle();
      continue;
    }
    const bool reply = derived->reply;
    std::string id = std::string(source_id) + ":" + std::to_string(i);
    amqp_basic_properties_t props = json_properties(id, derived->type, now_s, correlation);
    // The source's trace, with eventd's span of it as the parent.
    FieldTable trace;
    trace.add(kTraceparentHeader, job->trace.child_traceparent());
    if (!job->trace.tracestate().empty()) trace.add(kTracestateHeader, job->trace.tracestate());
    props.headers = trace.table();
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    std::string target = derived->route.routing_key;
    bool sent = amqp_.publish(derived->route.exchange, derived->route.routing_key, props, derived->body,
                              [this, job, progress, settle, reply, target](bool ok, const std::string& why) {
                                if (progress->abandoned) return;
                                if (!ok && reply && why.starts_with(AmqpConnection::kUnroutable)) {
                                  // The requester's queue is gone: nobody waits for this reply.
                                  log::warn("reply queue missing; reply dropped",
                                            {{"reply_to", target}, {"message_id", job->delivery.properties.message_id()},
                                             {"trace_id", job->trace.trace_id()}});
                                } else if (!ok && progress->failure.empty()) {
                                  progress->failure = "derived message to '" + target + "' not confirmed: " + why;
                                }
                                if (!ok && amqp_.state() != AmqpState::Connected) {
                                  progress->abandoned = true;  // the broker has the source back
                                  release(job);
                                  return;
                                }
                                settle();
                              });
    if (!sent) {
      // The connection died under this loop: the broker has the source back, and what
      // was already published is a harmless duplicate next time (same message ids).
      if (!progress->abandoned) {
        progress->abandoned = true;
        release(job);
      }
      return;
    }
  }
}

// Every derived message is confirmed: mark the source done, then ack it.
void Dispatcher::finish_outbox(JobIt job) {
  std::string ttl = std::to_string(config_.idempotency_ttl_sec);
  std::string outbox = keys::outbox(job->idem_key);
  bool sent = redis_.command({"SET", job->idem_key, "1", "XX", "EX", ttl}, [this, job, outbox](const redisReply* r) {
    if (r == nullptr || r->type == REDIS_REPLY_ERROR) {
      requeue_later(job);  // redelivered, it publishes its outbox again and tries once more
      return;
    }
    redis_.command({"DEL", outbox}, [](const redisReply*) {});
    ack(job);
  });
  if (!sent) requeue_later(job);
}

void Dispatcher::release(JobIt job) {
  if (spare_jobs_.size() < kMaxSpareJobs) {
    job->clear();
    spare_jobs_.splice(spare_jobs_.end(), jobs_, job);
  } else {
    jobs_.erase(job);
  }
  metrics_.in_flight = static_cast<int64_t>(jobs_.size());
  if (jobs_.empty() && on_idle) on_idle();
}

namespace {

// The original properties with eventd's headers replaced by `extra`'s.
struct Republish {
  amqp_basic_properties_t props;
  FieldTable headers;

  Republish(const Delivery& d, FieldTable&& extra) : props(d.properties.get()), headers(std::move(extra)) {
    if (const amqp_table_t* original = d.properties.headers()) {
      for (int i = 0; i < original->num_entries; ++i) {
        const std::string_view key = as_view(original->entries[i].key);
        if (!is_eventd_header(key) && !headers.contains(key)) headers.add_borrowed(original->entries[i]);
      }
    }
    props._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.delivery_mode = 2;  // dead letters and retries must survive a broker restart
    // A producer's per-message TTL would let the broker drop a dead letter (or a
    // retry) silently; RabbitMQ's own dead-lettering removes it too. Kept as a header.
    if (props._flags & AMQP_BASIC_EXPIRATION_FLAG) {
      if (!headers.contains("x-original-expiration")) headers.add("x-original-expiration", as_view(props.expiration));
      props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
    }
    props.headers = headers.table();
  }
};

// A retry or dead letter names its trace; one whose trace eventd started carries it on,
// so its next run and whatever it derives stay in that trace.
void add_trace(FieldTable& extra, const TraceContext& trace) {
  extra.add(kTraceIdHeader, trace.trace_id());
  if (trace.started()) extra.add(kTraceparentHeader, format_traceparent(trace.trace_id(), new_span_id(), trace.flags()));
}

void origin(const Delivery& d, std::string& exchange, std::string& routing_key) {
  // A message back from a retry queue arrives via the default exchange; its first
  // route travels in the headers.
  if (!table_get_string(d.properties.headers(), "x-original-exchange", exchange)) exchange = d.exchange;
  if (!table_get_string(d.properties.headers(), "x-original-routing-key", routing_key)) routing_key = d.routing_key;
}

}  // namespace

bool Dispatcher::from_current_connection(JobIt job) const {
  return job->delivery.generation == amqp_.generation() && amqp_.state() == AmqpState::Connected;
}

void Dispatcher::retry(JobIt job, const ProcessingError& error, uint32_t delay_ms, bool deferral) {
  if (!from_current_connection(job)) {
    release(job);  // the broker has redelivered it: a copy now would be a duplicate
    return;
  }
  const Delivery& d = job->delivery;
  std::string exchange, routing_key;
  origin(d, exchange, routing_key);
  int64_t deferrals = 0;
  table_get_int(d.properties.headers(), "x-defer-count", deferrals);
  FieldTable extra;
  extra.add_int("x-retry-count", deferral ? job->retry_count : job->retry_count + 1)
      .add("x-original-exchange", exchange)
      .add("x-original-routing-key", routing_key)
      .add("x-original-queue", d.queue)
      .add("x-last-error-code", error_code_name(error.code))
      .add("x-last-error-message", cap_utf8(error.message, kMaxErrorMessageBytes));
  add_trace(extra, job->trace);
  if (deferral || deferrals > 0) extra.add_int("x-defer-count", deferral ? deferrals + 1 : deferrals);
  Republish out(d, std::move(extra));
  log::Level level = deferral ? log::Level::Debug : log::Level::Info;
  if (log::enabled(level)) {
    log::write(level, deferral ? "deferring" : "retrying",
               {{"message_id", d.properties.message_id()}, {"correlation_id", d.properties.correlation_id()},
                {"trace_id", job->trace.trace_id()}, {"type", job->type}, {"queue", d.queue}, {"retry", deferral ? job->retry_count : job->retry_count + 1}, {"delay_ms", delay_ms},
                {"code", error_code_name(error.code)}, {"error", error.message}});
  }
  send_copy(job, retry_queue_name(d.queue, delay_ms), out.props,
            deferral ? &MessageCounters::deferred : &MessageCounters::retried);
}

void Dispatcher::send_copy(JobIt job, const std::string& queue, const amqp_basic_properties_t& props,
                           uint64_t MessageCounters::*counter) {
  bool sent = amqp_.publish("", queue, props, job->delivery.body,
                            [this, job, queue, counter](bool ok, const std::string& why) {
                              if (ok) {
                                ++(job->counters->*counter);
                                ack(job);
                              } else if (why.starts_with(AmqpConnection::kUnroutable) && from_current_connection(job)) {
                                // The retry queue or Q.dlq was deleted: reconnecting declares it
                                // again, and the broker redelivers the original to try once more.
                                log::error("publish to queue failed", {{"queue", queue}, {"error", why}});
                                amqp_.reconnect("queue '" + queue + "' is missing");
                                release(job);
                              } else {
                                log::error("publish to queue failed", {{"queue", queue}, {"error", why}});
                                requeue_later(job);
                              }
                            });
  if (!sent) release(job);  // not connected: the broker redelivers it
}

void Dispatcher::dead_letter(JobIt job, const ProcessingError& error) {
  if (!from_current_connection(job)) {
    release(job);  // the broker has redelivered it: a copy now would be a duplicate
    return;
  }
  const Delivery& d = job->delivery;
  std::string exchange, routing_key;
  origin(d, exchange, routing_key);
  FieldTable extra;
  extra.add("x-error-code", error_code_name(error.code))
      .add("x-error-message", cap_utf8(error.message, kMaxErrorMessageBytes))
      .add_int("x-retry-count", job->retry_count)
      .add("x-original-exchange", exchange)
      .add("x-original-routing-key", routing_key)
      .add("x-original-queue", d.queue)
      .add("x-failed-at", iso8601_now());
  add_trace(extra, job->trace);
  Republish out(d, std::move(extra));
  log::warn("dead-lettering", {{"message_id", d.properties.message_id()},
                               {"correlation_id", d.properties.correlation_id()}, {"trace_id", job->trace.trace_id()},
                               {"type", job->type}, {"queue", d.queue},
                               {"code", error_code_name(error.code)}, {"error", error.message}});
  send_copy(job, dead_letter_queue_name(d.queue), out.props, &MessageCounters::dead_lettered);
}

void Dispatcher::requeue_later(JobIt job) {
  if (!from_current_connection(job)) {
    release(job);  // the connection is gone: the broker has it back already
    return;
  }
  // Rejecting at once would spin on a message the broker keeps refusing to take.
  requeue_.push_back(job);
  if (requeue_.size() == 1) uv_timer_start(requeue_timer_.get(), on_requeue_timer, kRequeueDelayMs, 0);
}

void Dispatcher::on_requeue_timer(uv_timer_t* handle) {
  auto* self = owner_of<Dispatcher>(handle);
  if (self == nullptr) return;
  std::vector<JobIt> due = std::move(self->requeue_);
  self->requeue_.clear();
  for (JobIt job : due) {
    self->amqp_.reject(job->delivery.generation, job->delivery.delivery_tag, true);
    self->release(job);
  }
}

void Dispatcher::resume_parked() {
  std::vector<JobIt> parked = std::move(parked_);
  parked_.clear();
  for (JobIt job : parked) {
    if (job->delivery.generation != amqp_.generation()) release(job);
    else start(job);
  }
}

void Dispatcher::on_amqp_lost() {
  std::vector<JobIt> parked = std::move(parked_);
  parked_.clear();
  for (JobIt job : parked) release(job);
  std::vector<JobIt> requeue = std::move(requeue_);
  requeue_.clear();
  for (JobIt job : requeue) release(job);
}

}  // namespace eventd

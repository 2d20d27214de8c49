// bench-ceiling: the throughput ceiling for eventd's consume path. A bare
// rabbitmq-c consumer that drains N messages already sitting in a queue with the
// same prefetch as eventd (basic.qos 500 on one channel, manual acks), acking each
// message and doing nothing else. scripts/bench compares eventd's drain with this.
//
//   bench-ceiling --url amqp://guest:guest@127.0.0.1:5672/%2f --queue eventd.quotes
//                 --count N [--prefetch 500] [--ack-every K] [--timeout-s 120]
//
// --ack-every 1 (default) acks every delivery by itself, as eventd does; K > 1 acks
// with multiple=1 on every K-th delivery (and the last), the cheaper variant.
// The clock runs from the first delivery to the last ack written to the socket, so
// connection set-up is excluded (scripts/bench times eventd the same way: first to
// last effect). Prints one JSON object on stdout; exit 0 only if N were drained.
//
// --mark-redis-port P --mark-symbol SYM: the latency reference. For each delivery,
// before its ack, SET the key eventd would write last for it (its idempotency key under
// {SYM}) on the Redis at 127.0.0.1:P (the SETs of the deliveries read together are
// pipelined, and acked with one multiple-ack once answered): bench-latency, which times
// those SETs, then measures the broker and one Redis write per message, without eventd.
#include <amqp.h>
#include <hiredis/hiredis.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "eventd/keys.hpp"
#include "amqp_tools.hpp"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench-ceiling: %s\n", what.c_str());
  std::exit(1);
}

void check_rpc(amqp_connection_state_t conn, const char* what) {
  amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) die(std::string(what) + ": " + amqp_error_string2(r.library_error));
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
    auto* m = static_cast<amqp_channel_close_t*>(r.reply.decoded);
    die(std::string(what) + ": channel closed: " + std::to_string(m->reply_code) + " " +
        std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len));
  }
  if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
    auto* m = static_cast<amqp_connection_close_t*>(r.reply.decoded);
    die(std::string(what) + ": connection closed: " + std::to_string(m->reply_code) + " " +
        std::string(static_cast<char*>(m->reply_text.bytes), m->reply_text.len));
  }
  die(std::string(what) + ": failed");
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url = "amqp://guest:guest@127.0.0.1:5672/%2f";
  std::string queue = "eventd.quotes";
  unsigned long long count = 0;
  unsigned prefetch = 500;
  unsigned ack_every = 1;
  double timeout_s = 120;
  int mark_port = 0;
  std::string mark_symbol;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--url") url = value();
    else if (a == "--queue") queue = value();
    else if (a == "--count") count = std::strtoull(value().c_str(), nullptr, 10);
    else if (a == "--prefetch") prefetch = static_cast<unsigned>(std::strtoul(value().c_str(), nullptr, 10));
    else if (a == "--ack-every") ack_every = static_cast<unsigned>(std::strtoul(value().c_str(), nullptr, 10));
    else if (a == "--timeout-s") timeout_s = std::strtod(value().c_str(), nullptr);
    else if (a == "--mark-redis-port") mark_port = std::atoi(value().c_str());
    else if (a == "--mark-symbol") mark_symbol = value();
    else die("unknown argument " + a + " (see the comment at the top of bench/ceiling.cpp)");
  }
  if (count == 0) die("--count N is required");
  if (prefetch == 0 || prefetch > 65535) die("--prefetch must be 1..65535");
  if (ack_every == 0 || ack_every > prefetch) die("--ack-every must be 1..prefetch");

  if ((mark_port != 0) != !mark_symbol.empty()) die("--mark-redis-port and --mark-symbol go together");
  redisContext* mark = nullptr;
  if (mark_port != 0) {
    mark = redisConnect("127.0.0.1", mark_port);
    if (mark == nullptr || mark->err) die("cannot connect to Redis for --mark-redis-port");
  }
  const eventd::keys::Tag mark_tag(mark_symbol);

  amqp_connection_state_t conn = bench::connect(url, die);
  amqp_basic_qos(conn, 1, 0, static_cast<uint16_t>(prefetch), 0);
  check_rpc(conn, "basic.qos");
  amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_cstring_bytes("bench-ceiling"), 0, 0, 0,
                     amqp_empty_table);
  check_rpc(conn, "basic.consume");

  unsigned long long received = 0;
  uint64_t last_tag = 0;
  unsigned unacked = 0;
  Clock::time_point first{}, last{};
  double cpu_first = 0;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
  while (received < count) {
    amqp_maybe_release_buffers(conn);
    amqp_envelope_t env;
    timeval tv{1, 0};
    amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) {
      if (Clock::now() > deadline) break;
      continue;
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        // A method other than basic.deliver (e.g. basic.cancel): read and stop.
        amqp_frame_t frame;
        if (amqp_simple_wait_frame(conn, &frame) == AMQP_STATUS_OK && frame.frame_type == AMQP_FRAME_METHOD &&
            frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
          die("the broker cancelled the consumer");
        }
        continue;
      }
      die("consume failed");
    }
    if (received == 0) {
      first = Clock::now();
      cpu_first = cpu_seconds();
    }
    ++received;
    last_tag = env.delivery_tag;
    if (mark != nullptr) {
      // Pipelined: the SETs of every delivery already read go out together, and their
      // acks (one multiple-ack) once Redis has answered them all.
      const amqp_basic_properties_t& p = env.message.properties;
      if (!(p._flags & AMQP_BASIC_MESSAGE_ID_FLAG)) die("--mark-redis-port: a message without message_id");
      const std::string id(static_cast<const char*>(p.message_id.bytes), p.message_id.len);
      const std::string key = eventd::keys::idempotency(mark_tag, id, "quote_update", "");
      if (redisAppendCommand(mark, "SET %b 1 EX 3600", key.data(), key.size()) != REDIS_OK) die("--mark-redis-port: SET failed");
      amqp_destroy_envelope(&env);
      ++unacked;
      if ((amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn)) && received < count) {
        last = Clock::now();
        continue;
      }
      for (; unacked > 0; --unacked) {
        void* reply = nullptr;
        if (redisGetReply(mark, &reply) != REDIS_OK || reply == nullptr ||
            static_cast<redisReply*>(reply)->type == REDIS_REPLY_ERROR) {
          die("--mark-redis-port: SET failed");
        }
        freeReplyObject(reply);
      }
      if (amqp_basic_ack(conn, 1, last_tag, 1) != AMQP_STATUS_OK) die("basic.ack failed");
      last = Clock::now();
      continue;
    }
    amqp_destroy_envelope(&env);
    if (++unacked >= ack_every || received == count) {
      if (amqp_basic_ack(conn, 1, last_tag, ack_every > 1 ? 1 : 0) != AMQP_STATUS_OK) die("basic.ack failed");
      unacked = 0;
    }
    last = Clock::now();
  }
  double cpu = cpu_seconds() - cpu_first;
  // A quorum queue can lose acks that are still in flight when the channel closes
  // (they come back as ready messages); let them settle first, off the clock.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  if (mark != nullptr) redisFree(mark);

  double secs = received > 1 ? std::chrono::duration<double>(last - first).count() : 0.0;
  // N messages over the span from the first to the last: N-1 intervals.
  double rate = secs > 0 ? static_cast<double>(received - 1) / secs : 0.0;
  std::printf(
      "{\"received\": %llu, \"count\": %llu, \"seconds\": %.6f, \"msgs_per_s\": %.1f, \"prefetch\": %u, "
      "\"ack_every\": %u, \"client_cpu_s\": %.3f}\n",
      received, count, secs, rate, prefetch, ack_every, cpu);
  if (received < count) {
    std::fprintf(stderr, "bench-ceiling: timed out after %llu of %llu messages\n", received, count);
    return 1;
  }
  return 0;
}

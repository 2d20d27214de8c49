// bench-fill: pre-fills a queue with N quote_update messages spread round-robin over S
// symbols (SYM000, SYM001, ...), with publisher confirms, for scripts/bench's drain
// over many symbols: one publisher interleaves the symbols message by message, where
// one `eventctl publish` per symbol would need S processes at once.
//
//   bench-fill --url amqp://guest:guest@127.0.0.1:5672/%2f --count N --symbols S
//              [--exchange market.quotes] [--id-prefix fill-<pid>-]
//
// The messages carry the properties eventctl sets (content type, persistent, message
// id, type, timestamp). Prints one JSON object on stdout; exit 0 only when the broker
// confirmed all N.
#include <amqp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "amqp_tools.hpp"

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench-fill: %s\n", what.c_str());
  std::exit(1);
}

// Confirms by delivery tag (1-based); `upto`: every tag up to it is confirmed.
struct Confirms {
  std::vector<bool> acked;
  uint64_t upto = 0;
  void ack(uint64_t tag, bool multiple) {
    if (multiple) {
      for (uint64_t t = upto + 1; t <= tag && t < acked.size(); ++t) acked[t] = true;
    } else if (tag < acked.size()) {
      acked[tag] = true;
    }
    while (upto + 1 < acked.size() && acked[upto + 1]) ++upto;
  }
};

// Reads what the broker sent, waiting up to `wait_ms` for the first frame.
void read_confirms(amqp_connection_state_t conn, Confirms& confirms, int wait_ms) {
  for (;;) {
    amqp_frame_t frame;
    timeval tv{wait_ms / 1000, (wait_ms % 1000) * 1000};
    int rc = amqp_simple_wait_frame_noblock(conn, &frame, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) return;
    if (rc != AMQP_STATUS_OK) die(std::string("read failed: ") + amqp_error_string2(rc));
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
      auto* m = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
      confirms.ack(m->delivery_tag, m->multiple != 0);
    } else if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
      die("the broker refused (nack) a message");
    } else if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
               frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
      die("the broker closed the channel or connection");
    }
    wait_ms = 0;  // only the first read waits
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string url = "amqp://guest:guest@127.0.0.1:5672/%2f";
  std::string exchange = "market.quotes";
  std::string prefix = "fill-" + std::to_string(getpid()) + "-" + std::to_string(bench::wall_ms()) + "-";
  long long count = 0;
  int symbols = 0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--url") url = value();
    else if (a == "--count") count = std::atoll(value().c_str());
    else if (a == "--symbols") symbols = std::atoi(value().c_str());
    else if (a == "--exchange") exchange = value();
    else if (a == "--id-prefix") prefix = value();
    else die("unknown argument " + a + " (see the comment at the top of bench/fill.cpp)");
  }
  if (count <= 0 || symbols <= 0 || symbols > 1000) die("--count N and --symbols S (1..1000) are required");

  amqp_connection_state_t conn = bench::connect(url, die);
  amqp_confirm_select(conn, 1);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("confirm.select failed");

  const auto started = std::chrono::steady_clock::now();
  Confirms confirms;
  confirms.acked.assign(static_cast<std::size_t>(count) + 1, false);
  bench::QuoteMessage message;
  char symbol[16];
  for (long long i = 0; i < count; ++i) {
    const int s = static_cast<int>(i % symbols);
    std::snprintf(symbol, sizeof symbol, "SYM%03d", s);
    message.fill(symbol, 10.0 + s * 0.25, static_cast<double>(s % 7) - 3.0, prefix, static_cast<unsigned long long>(i));
    int rc = message.publish(conn, exchange);
    if (rc != AMQP_STATUS_OK) die(std::string("publish failed: ") + amqp_error_string2(rc));
    // Read the confirms as they come, so the broker never blocks writing them; and
    // keep at most 20,000 unconfirmed.
    if (i % 500 == 499) read_confirms(conn, confirms, 0);
    while (static_cast<uint64_t>(i + 1) - confirms.upto > 20000) read_confirms(conn, confirms, 100);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (confirms.upto < static_cast<uint64_t>(count)) {
    if (std::chrono::steady_clock::now() > deadline) die("confirms missing after 60 s");
    read_confirms(conn, confirms, 100);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  std::printf("{\"published\": %lld, \"symbols\": %d, \"seconds\": %.6f, \"msgs_per_s\": %.1f}\n", count, symbols, secs,
              static_cast<double>(count) / secs);
  return 0;
}

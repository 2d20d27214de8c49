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
#include <amqp_tcp_socket.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench-fill: %s\n", what.c_str());
  std::exit(1);
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
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
  std::string prefix = "fill-" + std::to_string(getpid()) + "-" + std::to_string(wall_ms()) + "-";
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

  std::vector<char> url_buf(url.begin(), url.end());
  url_buf.push_back('\0');
  amqp_connection_info info{};
  if (amqp_parse_url(url_buf.data(), &info) != AMQP_STATUS_OK) die("cannot parse --url");
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* sock = amqp_tcp_socket_new(conn);
  if (sock == nullptr || amqp_socket_open(sock, info.host, info.port) != AMQP_STATUS_OK) die("cannot connect to RabbitMQ");
  if (amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password).reply_type !=
      AMQP_RESPONSE_NORMAL) {
    die("AMQP login failed");
  }
  amqp_channel_open(conn, 1);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("channel.open failed");
  amqp_confirm_select(conn, 1);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("confirm.select failed");

  const auto started = std::chrono::steady_clock::now();
  Confirms confirms;
  confirms.acked.assign(static_cast<std::size_t>(count) + 1, false);
  char body[256];
  char id[128];
  char symbol[16];
  for (long long i = 0; i < count; ++i) {
    const int s = static_cast<int>(i % symbols);
    std::snprintf(symbol, sizeof symbol, "SYM%03d", s);
    int blen = std::snprintf(body, sizeof body,
                             "{\"type\":\"quote_update\",\"timestamp\":%" PRId64
                             ",\"symbol\":\"%s\",\"price\":%.2f,\"change\":%.2f}",
                             wall_ms(), symbol, 10.0 + s * 0.25, static_cast<double>(s % 7) - 3.0);
    int ilen = std::snprintf(id, sizeof id, "%s%lld", prefix.c_str(), i);
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                   AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = 2;
    props.message_id = amqp_bytes_t{static_cast<size_t>(ilen), id};
    props.type = amqp_cstring_bytes("quote_update");
    props.timestamp = static_cast<uint64_t>(wall_ms() / 1000);
    int rc = amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange.c_str()), amqp_empty_bytes, 0, 0, &props,
                                amqp_bytes_t{static_cast<size_t>(blen), body});
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

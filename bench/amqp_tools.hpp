// What the bench's AMQP tools share (bench-ceiling, bench-latency, bench-fill): a
// connection as eventd opens it (URL, frame_max 131072, no heartbeats for a short run,
// channel 1) and the quote_update message eventctl would publish.
#pragma once

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace bench {

inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Connected, logged in, channel 1 open; `die` (which does not return) otherwise.
template <typename Die>
amqp_connection_state_t connect(const std::string& url, Die die) {
  std::vector<char> url_buf(url.begin(), url.end());
  url_buf.push_back('\0');
  amqp_connection_info info{};
  if (amqp_parse_url(url_buf.data(), &info) != AMQP_STATUS_OK) die("cannot parse the AMQP URL " + url);
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* sock = amqp_tcp_socket_new(conn);
  if (sock == nullptr) die("cannot create a socket");
  if (int rc = amqp_socket_open(sock, info.host, info.port); rc != AMQP_STATUS_OK) {
    die(std::string("cannot connect to RabbitMQ: ") + amqp_error_string2(rc));
  }
  if (amqp_login(conn, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user, info.password).reply_type !=
      AMQP_RESPONSE_NORMAL) {
    die("AMQP login failed");
  }
  amqp_channel_open(conn, 1);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) die("channel.open failed");
  return conn;
}

// One quote_update with eventctl's properties (content type, persistent, message id,
// type, timestamp); body and id live in this object, valid until the next fill().
class QuoteMessage {
 public:
  void fill(const char* symbol, double price, double change, const std::string& id_prefix, unsigned long long seq) {
    body_len_ = std::snprintf(body_, sizeof body_,
                              "{\"type\":\"quote_update\",\"timestamp\":%" PRId64
                              ",\"symbol\":\"%s\",\"price\":%.2f,\"change\":%.2f}",
                              wall_ms(), symbol, price, change);
    id_len_ = std::snprintf(id_, sizeof id_, "%s%llu", id_prefix.c_str(), seq);
    props_ = amqp_basic_properties_t{};
    props_._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                    AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    props_.content_type = amqp_cstring_bytes("application/json");
    props_.delivery_mode = 2;
    props_.message_id = amqp_bytes_t{static_cast<size_t>(id_len_), id_};
    props_.type = amqp_cstring_bytes("quote_update");
    props_.timestamp = static_cast<uint64_t>(wall_ms() / 1000);
  }
  // To `exchange` with an empty routing key (the bench binds the quotes queue with one).
  int publish(amqp_connection_state_t conn, const std::string& exchange) const {
    return amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange.c_str()), amqp_empty_bytes, 0, 0, &props_,
                              amqp_bytes_t{static_cast<size_t>(body_len_), const_cast<char*>(body_)});
  }

 private:
  char body_[256];
  char id_[128];
  int body_len_ = 0;
  int id_len_ = 0;
  amqp_basic_properties_t props_{};
};

}  // namespace bench

// HTTP endpoint on the loop (see http_server.hpp).
#include "eventd/http_server.hpp"

#include <http_parser.h>

#include <algorithm>

namespace eventd {
namespace {

constexpr std::size_t kMaxRequestBytes = 8192;
constexpr uint64_t kRequestTimeoutMs = 5000;

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

}  // namespace

struct HttpServer::Connection {
  HttpServer* server = nullptr;
  UvHandle<uv_tcp_t> tcp;
  UvHandle<uv_timer_t> timer;
  http_parser parser{};
  std::string url;
  std::size_t received = 0;
  bool responded = false;
  std::string out;  // kept alive until the write completes
  uv_write_t write_req{};
  char buffer[2048];

  void respond(const Response& r);
};

HttpServer::HttpServer(uv_loop_t* loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {}

HttpServer::~HttpServer() { close(); }

int HttpServer::listen(const std::string& host, uint16_t port) {
  sockaddr_storage addr{};
  int rc = host.find(':') != std::string::npos
               ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr))
               : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) return rc;
  rc = listener_.init(this, [this](uv_tcp_t* t) { return uv_tcp_init(loop_, t); });
  if (rc != 0) return rc;
  rc = uv_tcp_bind(listener_.get(), reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_.get()), 64, on_connection);
  if (rc != 0) listener_.close();
  return rc;
}

void HttpServer::close() {
  listener_.close();
  connections_.clear();  // each Connection's handles close themselves
}

void HttpServer::drop(Connection* c) {
  connections_.remove_if([c](const std::unique_ptr<Connection>& p) { return p.get() == c; });
}

void HttpServer::Connection::respond(const Response& r) {
  if (responded) return;
  responded = true;
  out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason(r.status) + "\r\nContent-Type: " + r.content_type +
        "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n" + r.body;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp.get()));
  uv_buf_t buf = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
  write_req.data = this;
  int rc = uv_write(&write_req, reinterpret_cast<uv_stream_t*>(tcp.get()), &buf, 1, [](uv_write_t* req, int) {
    auto* c = static_cast<Connection*>(req->data);
    c->server->drop(c);  // closes the socket after the response is out
  });
  if (rc != 0) {
    // We may be inside http_parser_execute on this connection: drop on the next tick.
    uv_timer_start(timer.get(), [](uv_timer_t* t) {
      auto* conn = owner_of<Connection>(t);
      if (conn != nullptr) conn->server->drop(conn);
    }, 0, 0);
  }
}

void HttpServer::on_connection(uv_stream_t* listener, int status) {
  auto* self = owner_of<HttpServer>(listener);
  if (self == nullptr || status < 0) return;
  auto conn = std::make_unique<Connection>();
  Connection* c = conn.get();
  c->server = self;
  uv_loop_t* loop = self->loop_;
  if (c->tcp.init(c, [loop](uv_tcp_t* t) { return uv_tcp_init(loop, t); }) != 0) return;
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(c->tcp.get())) != 0) return;
  c->timer.init(c, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  uv_timer_start(c->timer.get(), [](uv_timer_t* t) {
    auto* conn = owner_of<Connection>(t);
    if (conn != nullptr) conn->server->drop(conn);
  }, kRequestTimeoutMs, 0);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  self->connections_.push_back(std::move(conn));

  uv_read_start(
      reinterpret_cast<uv_stream_t*>(c->tcp.get()),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* conn = owner_of<Connection>(h);
        *buf = uv_buf_init(conn->buffer, sizeof conn->buffer);
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* conn = owner_of<Connection>(stream);
        if (conn == nullptr || conn->responded) return;
        if (nread < 0) {
          conn->server->drop(conn);
          return;
        }
        static const http_parser_settings settings = [] {
          http_parser_settings s{};
          s.on_url = [](http_parser* p, const char* at, size_t len) {
            static_cast<Connection*>(p->data)->url.append(at, len);
            return 0;
          };
          s.on_message_complete = [](http_parser* p) {
            auto* c = static_cast<Connection*>(p->data);
            std::string_view url = c->url;
            std::string_view path = url.substr(0, std::min(url.find('?'), url.size()));
            c->respond(c->server->handler_(http_method_str(static_cast<http_method>(p->method)), path));
            return 1;  // one request per connection
          };
          return s;
        }();
        conn->received += static_cast<std::size_t>(nread);
        if (conn->received > kMaxRequestBytes) {
          conn->respond({400, "text/plain; charset=utf-8", "request too large\n"});
          return;
        }
        http_parser_execute(&conn->parser, &settings, buf->base, static_cast<size_t>(nread));
        if (!conn->responded && HTTP_PARSER_ERRNO(&conn->parser) != HPE_OK) {
          conn->respond({400, "text/plain; charset=utf-8", "bad request\n"});
        }
      });
}

}  // namespace eventd

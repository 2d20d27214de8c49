// A small HTTP/1.1 server on the libuv loop for /metrics, /healthz and /readyz.
// Requests are parsed by Debian's http-parser; each response closes the connection
// (Prometheus and curl are fine with that). Requests over 8 KiB or taking over 5 s
// are cut off so a stuck client cannot hold a connection.
#pragma once

#include <uv.h>

#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>

#include "eventd/uv_handle.hpp"

namespace eventd {

class HttpServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
  };
  // Runs on the loop for each complete request.
  using Handler = std::function<Response(std::string_view method, std::string_view path)>;

  HttpServer(uv_loop_t* loop, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens; returns 0 or a libuv error code (e.g. UV_EADDRINUSE).
  int listen(const std::string& host, uint16_t port);
  // Stops listening and closes open connections.
  void close();

 private:
  struct Connection;
  static void on_connection(uv_stream_t* server, int status);
  void drop(Connection* c);

  uv_loop_t* loop_;
  Handler handler_;
  UvHandle<uv_tcp_t> listener_;
  std::list<std::unique_ptr<Connection>> connections_;
};

}  // namespace eventd

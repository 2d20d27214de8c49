// Notification sinks with effects outside Redis, both non-blocking on the loop:
// FileSink appends JSON lines and fsyncs them on libuv's threadpool, one batch at a
// time; WebhookSink
// POSTs with libcurl's multi-socket interface driven by uv_poll and a uv_timer.
// (The redis sink is a Lua script in the notification handler.)
#pragma once

#include <curl/curl.h>
#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "eventd/uv_handle.hpp"

namespace eventd {

struct SinkResult {
  bool ok = true;
  bool retryable = false;  // for a failure: worth trying again later
  std::string error;
};
// Called exactly once, on the loop.
using SinkDone = std::function<void(SinkResult)>;

class Sink {
 public:
  virtual ~Sink() = default;
  virtual std::string_view kind() const = 0;
  // `payload` is what the sink writes or sends (one JSON document).
  virtual void deliver(std::string payload, SinkDone done) = 0;
};

class FileSink : public Sink {
 public:
  // Creates the parent directory and opens `path` for appending (start-up only);
  // if that fails, every delivery fails retryably with the reason.
  FileSink(uv_loop_t* loop, std::string path);
  ~FileSink() override;  // a batch still on the threadpool finishes, its callbacks are not called
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;
  std::string_view kind() const override { return "file"; }
  // Succeeds once the whole line is written and fsynced. A failed write leaves no
  // part of the line behind (the file is cut back), so a retry appends it whole.
  void deliver(std::string payload, SinkDone done) override;
  const std::string& open_error() const { return open_error_; }

 private:
  struct Spool;  // the descriptor and the lines waiting for the next batch
  struct Batch;  // lines being written and fsynced on the threadpool
  static void write_next(const std::shared_ptr<Spool>& spool);

  std::shared_ptr<Spool> spool_;  // shared with a batch in flight
  std::string open_error_;
};

// Appends `data` to `fd` whole: retries short writes; if it cannot, cuts the file
// back to its length before, so no partial line stays. Then fsyncs. Blocking (for the
// threadpool); returns the error, empty on success. Only one writer at a time.
std::string append_whole(int fd, std::string_view data);

// libcurl multi handle on the loop. Requests run concurrently; each completion
// callback runs once.
class CurlMulti {
 public:
  explicit CurlMulti(uv_loop_t* loop);
  ~CurlMulti();
  CurlMulti(const CurlMulti&) = delete;
  CurlMulti& operator=(const CurlMulti&) = delete;

  struct Response {
    CURLcode code = CURLE_OK;
    long status = 0;
    std::string error;
  };
  using Done = std::function<void(const Response&)>;
  // POSTs `body` as application/json to `url` within `timeout_ms`.
  void post_json(const std::string& url, std::string body, long timeout_ms, Done done);

 private:
  struct Request;
  struct Socket;
  static int on_socket(CURL* easy, curl_socket_t s, int action, void* userp, void* socketp);
  static int on_timer_change(CURLM* multi, long timeout_ms, void* userp);
  void collect();

  uv_loop_t* loop_;
  CURLM* multi_;
  UvHandle<uv_timer_t> timer_;
  std::map<curl_socket_t, std::unique_ptr<Socket>> sockets_;
  std::map<CURL*, std::unique_ptr<Request>> requests_;
};

class WebhookSink : public Sink {
 public:
  WebhookSink(CurlMulti& curl, std::string url, long timeout_ms);
  std::string_view kind() const override { return "webhook"; }
  // 2xx: delivered. 429, 5xx, timeouts and connection errors: retryable. Other 4xx: not.
  void deliver(std::string payload, SinkDone done) override;

 private:
  CurlMulti& curl_;
  std::string url_;
  long timeout_ms_;
};

// The Discord-compatible webhook body for a notification:
// {"username":"eventd","content":"**<title>**\n<body>"}.
std::string discord_payload(std::string_view title, std::string_view body);

}  // namespace eventd

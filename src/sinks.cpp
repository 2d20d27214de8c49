// File and webhook sinks, and libcurl's multi interface on the loop (see sinks.hpp).
#include "eventd/sinks.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/log.hpp"
#include "eventd/utf8.hpp"

namespace eventd {

// --- FileSink ---------------------------------------------------------------------

FileSink::FileSink(uv_loop_t* loop, std::string path) : loop_(loop), path_(std::move(path)) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    open_error_ = "cannot open " + path_ + ": " + std::strerror(errno);
    log::error("file sink unavailable", {{"path", path_}, {"error", open_error_}});
  }
}

FileSink::~FileSink() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

struct WriteOp {
  uv_fs_t req{};
  std::string line;
  SinkDone done;
  int fd = -1;
  std::string path;
};

void finish_write(std::unique_ptr<WriteOp> op, SinkResult result) {
  SinkDone done = std::move(op->done);
  op.reset();
  done(std::move(result));
}

}  // namespace

void FileSink::deliver(std::string payload, SinkDone done) {
  if (fd_ < 0) {
    done({false, true, open_error_});
    return;
  }
  auto op = std::make_unique<WriteOp>();
  op->line = std::move(payload);
  op->line.push_back('\n');
  op->done = std::move(done);
  op->fd = fd_;
  op->path = path_;
  op->req.data = op.get();
  uv_buf_t buf = uv_buf_init(op->line.data(), static_cast<unsigned>(op->line.size()));
  // One write(2) per line on an O_APPEND descriptor: lines never interleave.
  int rc = uv_fs_write(loop_, &op->req, fd_, &buf, 1, -1, [](uv_fs_t* req) {
    std::unique_ptr<WriteOp> op(static_cast<WriteOp*>(req->data));
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    if (n < 0 || static_cast<std::size_t>(n) != op->line.size()) {
      std::string why = n < 0 ? uv_strerror(static_cast<int>(n)) : "short write";
      return finish_write(std::move(op), {false, true, "write to " + op->path + " failed: " + why});
    }
    // The line is on disk before the message is acked.
    WriteOp* raw = op.release();
    int rc2 = uv_fs_fsync(req->loop, &raw->req, raw->fd, [](uv_fs_t* r) {
      std::unique_ptr<WriteOp> op(static_cast<WriteOp*>(r->data));
      ssize_t result = r->result;
      uv_fs_req_cleanup(r);
      if (result < 0) {
        return finish_write(std::move(op), {false, true, "fsync of " + op->path + " failed: " +
                                                             uv_strerror(static_cast<int>(result))});
      }
      finish_write(std::move(op), {true, false, {}});
    });
    if (rc2 != 0) {
      std::unique_ptr<WriteOp> back(raw);
      finish_write(std::move(back), {false, true, std::string("fsync not started: ") + uv_strerror(rc2)});
    }
  });
  if (rc != 0) {
    finish_write(std::move(op), {false, true, std::string("write not started: ") + uv_strerror(rc)});
    return;
  }
  (void)op.release();  // owned by the request until its callback
}

// --- CurlMulti ---------------------------------------------------------------------

struct CurlMulti::Request {
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::string body;
  char error[CURL_ERROR_SIZE] = {0};
  Done done;
  ~Request() {
    if (easy != nullptr) curl_easy_cleanup(easy);
    if (headers != nullptr) curl_slist_free_all(headers);
  }
};

struct CurlMulti::Socket {
  CurlMulti* owner = nullptr;
  curl_socket_t fd = CURL_SOCKET_BAD;
  UvHandle<uv_poll_t> poll;
};

CurlMulti::CurlMulti(uv_loop_t* loop) : loop_(loop), multi_(curl_multi_init()) {
  timer_.init(this, [loop](uv_timer_t* t) { return uv_timer_init(loop, t); });
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, on_timer_change);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
}

CurlMulti::~CurlMulti() {
  for (auto& [easy, req] : requests_) curl_multi_remove_handle(multi_, easy);
  requests_.clear();
  curl_multi_cleanup(multi_);
  sockets_.clear();  // closes the poll handles
}

int CurlMulti::on_timer_change(CURLM*, long timeout_ms, void* userp) {
  auto* self = static_cast<CurlMulti*>(userp);
  if (timeout_ms < 0) {
    uv_timer_stop(self->timer_.get());
    return 0;
  }
  // libcurl must not be re-entered from here: act from the timer callback.
  uv_timer_start(self->timer_.get(), [](uv_timer_t* t) {
    auto* me = owner_of<CurlMulti>(t);
    if (me == nullptr) return;
    int running = 0;
    curl_multi_socket_action(me->multi_, CURL_SOCKET_TIMEOUT, 0, &running);
    me->collect();
  }, static_cast<uint64_t>(timeout_ms), 0);
  return 0;
}

int CurlMulti::on_socket(CURL*, curl_socket_t s, int action, void* userp, void*) {
  auto* self = static_cast<CurlMulti*>(userp);
  if (action == CURL_POLL_REMOVE) {
    self->sockets_.erase(s);  // closes its poll handle
    return 0;
  }
  auto it = self->sockets_.find(s);
  if (it == self->sockets_.end()) {
    auto sock = std::make_unique<Socket>();
    sock->owner = self;
    sock->fd = s;
    uv_loop_t* loop = self->loop_;
    if (sock->poll.init(sock.get(), [loop, s](uv_poll_t* p) { return uv_poll_init_socket(loop, p, s); }) != 0) {
      return -1;
    }
    it = self->sockets_.emplace(s, std::move(sock)).first;
  }
  int events = 0;
  if (action == CURL_POLL_IN || action == CURL_POLL_INOUT) events |= UV_READABLE;
  if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(it->second->poll.get(), events, [](uv_poll_t* h, int status, int ev) {
    auto* sock = owner_of<Socket>(h);
    if (sock == nullptr) return;
    CurlMulti* me = sock->owner;  // `sock` may be erased by the socket action below
    curl_socket_t fd = sock->fd;
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (ev & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (ev & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running = 0;
    curl_multi_socket_action(me->multi_, fd, flags, &running);
    me->collect();
  });
  return 0;
}

void CurlMulti::collect() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    CURLcode code = msg->data.result;
    auto it = requests_.find(easy);
    if (it == requests_.end()) continue;
    std::unique_ptr<Request> req = std::move(it->second);
    requests_.erase(it);
    curl_multi_remove_handle(multi_, easy);
    Response r;
    r.code = code;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r.status);
    r.error = req->error[0] ? req->error : curl_easy_strerror(code);
    Done done = std::move(req->done);
    req.reset();
    done(r);
  }
}

void CurlMulti::post_json(const std::string& url, std::string body, long timeout_ms, Done done) {
  auto req = std::make_unique<Request>();
  req->easy = curl_easy_init();
  req->body = std::move(body);
  req->done = std::move(done);
  if (req->easy == nullptr) {
    Response r;
    r.code = CURLE_FAILED_INIT;
    r.error = "cannot create a curl handle";
    req->done(r);
    return;
  }
  req->headers = curl_slist_append(nullptr, "Content-Type: application/json");
  req->headers = curl_slist_append(req->headers, "User-Agent: eventd/" EVENTD_VERSION);
  CURL* e = req->easy;
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body.data());
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req->body.size()));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  // Discard the response body.
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, +[](char*, size_t size, size_t n, void*) { return size * n; });
  CURL* key = e;
  requests_.emplace(key, std::move(req));
  if (curl_multi_add_handle(multi_, e) != CURLM_OK) {
    auto it = requests_.find(key);
    std::unique_ptr<Request> failed = std::move(it->second);
    requests_.erase(it);
    Response r;
    r.code = CURLE_FAILED_INIT;
    r.error = "cannot start the request";
    failed->done(r);
  }
}

// --- WebhookSink ------------------------------------------------------------------

WebhookSink::WebhookSink(CurlMulti& curl, std::string url, long timeout_ms)
    : curl_(curl), url_(std::move(url)), timeout_ms_(timeout_ms) {}

void WebhookSink::deliver(std::string payload, SinkDone done) {
  curl_.post_json(url_, std::move(payload), timeout_ms_, [done = std::move(done), url = url_](const CurlMulti::Response& r) {
    if (r.code != CURLE_OK) {
      done({false, true, "POST " + url + ": " + r.error});
      return;
    }
    if (r.status >= 200 && r.status < 300) {
      done({true, false, {}});
      return;
    }
    bool retryable = r.status == 429 || r.status >= 500 || r.status == 408;
    done({false, retryable, "POST " + url + ": HTTP " + std::to_string(r.status)});
  });
}

std::string discord_payload(std::string_view title, std::string_view body) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  // Discord's limit is 2000 characters (not bytes); never split one.
  std::string content = truncate_utf8_chars(sanitize_utf8("**" + std::string(title) + "**\n" + std::string(body)), 2000);
  w.StartObject();
  w.Key("username");
  w.String("eventd");
  w.Key("content");
  w.String(content.data(), static_cast<rapidjson::SizeType>(content.size()));
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace eventd

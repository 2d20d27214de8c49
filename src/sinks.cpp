// File and webhook sinks, and libcurl's multi interface on the loop (see sinks.hpp).
#include "eventd/sinks.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>
#include <vector>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/log.hpp"
#include "eventd/utf8.hpp"

namespace eventd {

// --- FileSink ---------------------------------------------------------------------

struct FileSink::Spool {
  uv_loop_t* loop = nullptr;
  std::string path;
  int fd = -1;
  bool writing = false;    // a batch is on the threadpool
  bool sink_gone = false;  // the FileSink was destroyed: call nobody back
  std::string queued;      // lines for the next batch
  std::vector<SinkDone> waiting;
  ~Spool() {
    if (fd >= 0) ::close(fd);
  }
};

struct FileSink::Batch {
  uv_work_t req{};
  std::shared_ptr<Spool> spool;
  std::string data;
  std::vector<SinkDone> dones;
  std::string error;  // set on the threadpool; empty: written and fsynced
};

namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

}  // namespace

std::string append_whole(int fd, std::string_view data) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "fstat: " + errno_text(errno);
  const off_t before = st.st_size;
  std::string error;
  std::size_t written = 0;
  while (written < data.size() && error.empty()) {
    ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n > 0) written += static_cast<std::size_t>(n);
    else if (n < 0 && errno == EINTR) continue;
    else error = "write: " + (n < 0 ? errno_text(errno) : std::string("no progress"));
  }
  if (error.empty() && ::fsync(fd) != 0) error = "fsync: " + errno_text(errno);
  // A retry appends the lines whole: what made it into the file must not stay.
  if (!error.empty() && written > 0 && ::ftruncate(fd, before) != 0) {
    error += "; cutting back the partial line: " + errno_text(errno);
  }
  return error;
}

FileSink::FileSink(uv_loop_t* loop, std::string path) : spool_(std::make_shared<Spool>()) {
  spool_->loop = loop;
  spool_->path = std::move(path);
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(spool_->path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  spool_->fd = ::open(spool_->path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (spool_->fd < 0) {
    open_error_ = "cannot open " + spool_->path + ": " + std::strerror(errno);
    log::error("file sink unavailable", {{"path", spool_->path}, {"error", open_error_}});
  }
}

FileSink::~FileSink() { spool_->sink_gone = true; }

void FileSink::deliver(std::string payload, SinkDone done) {
  if (spool_->fd < 0) {
    done({false, true, open_error_});
    return;
  }
  spool_->queued += payload;
  spool_->queued.push_back('\n');
  spool_->waiting.push_back(std::move(done));
  if (!spool_->writing) write_next(spool_);
}

// One batch at a time: a failed batch can be cut back without touching another's
// lines, and the lines that waited meanwhile share one fsync.
void FileSink::write_next(const std::shared_ptr<Spool>& spool) {
  if (spool->writing || spool->sink_gone || spool->waiting.empty()) return;
  auto batch = std::make_unique<Batch>();
  batch->spool = spool;
  batch->data = std::exchange(spool->queued, {});
  batch->dones = std::exchange(spool->waiting, {});
  batch->req.data = batch.get();
  int rc = uv_queue_work(
      spool->loop, &batch->req,
      [](uv_work_t* req) {
        auto* b = static_cast<Batch*>(req->data);
        b->error = append_whole(b->spool->fd, b->data);
      },
      [](uv_work_t* req, int status) {
        std::unique_ptr<Batch> b(static_cast<Batch*>(req->data));
        std::shared_ptr<Spool> spool = b->spool;
        spool->writing = false;
        if (status != 0 && b->error.empty()) b->error = std::string("cancelled: ") + uv_strerror(status);
        if (spool->sink_gone) return;
        SinkResult result{b->error.empty(), !b->error.empty(), {}};
        if (!result.ok) result.error = "append to " + spool->path + " failed: " + b->error;
        for (SinkDone& done : b->dones) done(result);
        write_next(spool);  // the lines queued meanwhile
      });
  if (rc != 0) {
    SinkResult failed{false, true, std::string("write not started: ") + uv_strerror(rc)};
    for (SinkDone& done : batch->dones) done(failed);
    return;
  }
  spool->writing = true;
  (void)batch.release();  // owned by the request until its after-work callback
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

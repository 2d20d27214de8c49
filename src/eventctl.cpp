// eventctl: the operator CLI. Blocking AMQP (AmqpSession) is fine here: no loop.
// Exit codes: 0 done, 1 the broker or Redis said no or could not be reached,
// 2 bad usage or invalid input (nothing was sent).
#include "eventd/eventctl.hpp"

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <uuid/uuid.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>
#include <thread>

#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "eventd/amqp_session.hpp"
#include "eventd/amqp_table.hpp"
#include "eventd/credentials.hpp"
#include "eventd/dispatcher.hpp"
#include "eventd/eventctl_usage.hpp"
#include "eventd/json_case.hpp"
#include "eventd/json_parse.hpp"
#include "eventd/keys.hpp"
#include "eventd/portfolio.hpp"
#include "eventd/redis/blocking_client.hpp"
#include "eventd/progress.hpp"
#include "eventd/retry_policy.hpp"
#include "eventd/routing.hpp"
#include "eventd/schema_registry.hpp"
#include "eventd/stored_quote.hpp"
#include "eventd/text.hpp"
#include "eventd/topology.hpp"
#include "eventd/utf8.hpp"

namespace eventd {
namespace {

// One clear line, a distinct exit code.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;

  bool has(const std::string& k) const { return options.count(k) > 0; }
  std::string get(const std::string& k, std::string fallback = {}) const {
    auto it = options.find(k);
    return it == options.end() ? fallback : it->second;
  }
};

Args parse_args(const std::vector<std::string>& argv, const std::vector<std::string>& valued,
                const std::vector<std::string>& flags) {
  Args a;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& s = argv[i];
    if (s.size() > 2 && s.starts_with("--")) {
      std::string key = s.substr(2);
      std::string value;
      if (auto eq = key.find('='); eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (std::find(valued.begin(), valued.end(), key) != valued.end()) {
        if (i + 1 >= argv.size()) throw UsageError("--" + key + " needs a value");
        value = argv[++i];
      } else if (std::find(flags.begin(), flags.end(), key) == flags.end()) {
        throw UsageError("unknown option --" + key);
      }
      a.options[key] = value;
    } else {
      a.positional.push_back(s);
    }
  }
  return a;
}

uint64_t parse_count(const std::string& name, const std::string& text, uint64_t min, uint64_t max) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || text[0] == '-' || v < min || v > max) {
    throw UsageError("--" + name + " must be a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", got '" + text + "'");
  }
  return v;
}

std::string read_input(const std::string& source) {
  if (source == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  if (source.starts_with("@")) {
    const std::string path = source.substr(1);
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) throw UsageError("cannot read " + path + ": " + std::strerror(errno));
    std::string text;
    char buffer[65536];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) text.append(buffer, n);
    // A directory opens but fails on the first read (EISDIR).
    if (std::ferror(file.get())) throw UsageError("cannot read " + path + ": " + std::strerror(errno));
    return text;
  }
  return source;
}

std::string new_message_id() {
  uuid_t id;
  uuid_generate_random(id);
  char text[37];
  uuid_unparse_lower(id, text);
  return text;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Config load_cli_config_quietly(const std::string& path) {
  if (!path.empty()) return load_config(path);
  if (const char* env = std::getenv("EVENTD_CONFIG"); env != nullptr && *env != '\0') return load_config(env);
  std::ifstream probe("/etc/eventd/eventd.jsonc");
  if (probe) return load_config("/etc/eventd/eventd.jsonc");
  return parse_config("{}", "built-in defaults", [](const char* name) -> const char* { return std::getenv(name); });
}

// The config, its warnings (a world-readable file with a password) on stderr.
Config load_cli_config(const std::string& path) {
  Config config = load_cli_config_quietly(path);
  for (const auto& warning : config.warnings) std::fprintf(stderr, "eventctl: warning: %s\n", warning.c_str());
  return config;
}

// A session on the first broker node that answers, in config order (any node of a
// cluster serves the vhost). When none does, one line with each node's reason.
std::unique_ptr<AmqpSession> open_session(const Config& config) {
  SessionOptions options;
  options.heartbeat_sec = 0;
  options.connect_timeout_ms = config.amqp.connect_timeout_ms;
  options.connection_name = "eventctl";
  options.tls = config.amqp.tls;
  const auto& nodes = config.amqp.endpoints;
  if (nodes.size() == 1) return std::make_unique<AmqpSession>(nodes.front(), options);
  std::string reasons;
  for (const auto& node : nodes) {
    try {
      return std::make_unique<AmqpSession>(node, options);
    } catch (const AmqpError& e) {
      reasons += (reasons.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  throw AmqpError("none of the " + std::to_string(nodes.size()) + " RabbitMQ nodes answered: " + reasons);
}

// Parses, normalises and validates a message body of `type`; fills in `type` and
// `timestamp` when absent. Returns the camelCase JSON to send.
// Input over limits.maxMessageBytes is refused before it is parsed.
void check_size(const Config& config, const char* what, std::size_t bytes) {
  if (bytes <= config.limits.max_message_bytes) return;
  throw UsageError(std::string(what) + " is " + std::to_string(bytes) + " bytes; limits.maxMessageBytes is " +
                   std::to_string(config.limits.max_message_bytes));
}

std::string prepare_body(const Config& config, const SchemaRegistry& schemas, const std::string& type,
                         const std::string& text, rapidjson::Document& doc) {
  check_size(config, "the message", text.size());
  if (auto error = parse_json<rapidjson::kParseValidateEncodingFlag | kParseUniqueKeysFlag>(doc, text)) {
    throw UsageError("invalid JSON at offset " + std::to_string(error->offset) + ": " + error->what);
  }
  if (!doc.IsObject()) throw UsageError("the message must be a JSON object");
  normalise_keys(doc, doc.GetAllocator());
  auto t = doc.FindMember("type");
  if (t == doc.MemberEnd()) {
    doc.AddMember("type", rapidjson::Value(type.c_str(), doc.GetAllocator()), doc.GetAllocator());
  } else if (!t->value.IsString() || type != t->value.GetString()) {
    throw UsageError("/type: the body says a different type than the command line ('" + type + "')");
  }
  if (!doc.HasMember("timestamp")) {
    doc.AddMember("timestamp", rapidjson::Value(static_cast<int64_t>(now_ms())), doc.GetAllocator());
  }
  if (auto problem = schemas.validate(type, doc)) throw UsageError("invalid " + type + ": " + *problem);
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  doc.Accept(w);
  // What is sent (camelCase, type and timestamp filled in) is what eventd measures.
  check_size(config, "the message", buf.GetSize());
  return std::string(buf.GetString(), buf.GetSize());
}

int cmd_publish(const Config& config, const std::vector<std::string>& argv) {
  Args a = parse_args(argv, {"count", "rate", "message-id", "correlation-id", "reply-to"}, {});
  if (a.positional.empty()) throw UsageError("publish needs a TYPE (" + [] {
    std::string s;
    for (const auto& t : SchemaRegistry::message_types()) s += (s.empty() ? "" : ", ") + t;
    return s;
  }() + ")");
  if (a.positional.size() > 2) throw UsageError("publish takes TYPE and one JSON argument");
  const std::string type = a.positional[0];
  SchemaRegistry schemas;
  const auto& types = SchemaRegistry::message_types();
  if (std::find(types.begin(), types.end(), type) == types.end()) {
    std::string known;
    for (const auto& t : types) known += (known.empty() ? "" : ", ") + t;
    throw UsageError("unknown message type '" + type + "' (known: " + known + ")");
  }
  uint64_t count = a.has("count") ? parse_count("count", a.get("count"), 1, 100000000) : 1;
  uint64_t rate = a.has("rate") ? parse_count("rate", a.get("rate"), 1, 10000000) : 0;
  std::string text = read_input(a.positional.size() > 1 ? a.positional[1] : "-");

  rapidjson::Document doc;
  std::string body = prepare_body(config, schemas, type, text, doc);
  std::optional<Route> route = route_for(config.topology, type, doc);
  if (!route) throw UsageError("cannot route " + type + ": the body lacks the field its routing key needs");

  std::string fixed_id = a.get("message-id");
  std::string correlation = a.get("correlation-id");
  if (correlation.empty()) {
    auto c = doc.FindMember("correlationId");
    if (c != doc.MemberEnd() && c->value.IsString()) correlation = c->value.GetString();
  }
  std::string reply_to = a.get("reply-to");

  auto session = open_session(config);
  session->confirm_select();

  const auto started = std::chrono::steady_clock::now();
  AmqpSession::ConfirmTally tally;
  uint64_t last_seq = 0;
  std::string last_id;
  constexpr uint64_t kWindow = 512;  // unconfirmed publishes in flight before we wait
  Progress progress("publish", count);
  for (uint64_t i = 0; i < count; ++i) {
    if (rate > 0) {
      auto due = started + std::chrono::microseconds(i * 1000000 / rate);
      std::this_thread::sleep_until(due);
    }
    std::string id = fixed_id.empty() ? new_message_id() : fixed_id;
    amqp_basic_properties_t props =
        json_properties(id, type, static_cast<uint64_t>(now_ms() / 1000), correlation, reply_to);
    last_seq = session->publish(route->exchange, route->routing_key, props, body, true);
    last_id = id;
    if (last_seq % kWindow == 0) {
      auto t = session->wait_confirms(last_seq);
      tally.acked += t.acked;
      tally.nacked += t.nacked;
      tally.returned += t.returned;
    }
    if (count > 1) progress.update(i + 1);
  }
  auto t = session->wait_confirms(last_seq);
  tally.acked += t.acked;
  tally.nacked += t.nacked;
  tally.returned += t.returned;
  session->close();
  progress.clear();

  if (tally.returned > 0) {
    std::fprintf(stderr,
                 "eventctl: %llu of %llu message(s) unroutable: no queue is bound to exchange '%s' for routing key "
                 "'%s' (is eventd's topology applied? try: eventctl topology apply)\n",
                 static_cast<unsigned long long>(tally.returned), static_cast<unsigned long long>(count),
                 route->exchange.c_str(), route->routing_key.c_str());
    return 1;
  }
  if (tally.nacked > 0) {
    std::fprintf(stderr, "eventctl: the broker refused %llu of %llu message(s)\n",
                 static_cast<unsigned long long>(tally.nacked), static_cast<unsigned long long>(count));
    return 1;
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (count == 1) {
    std::printf("published %s message_id=%s exchange=%s routing_key=%s\n", type.c_str(), last_id.c_str(),
                route->exchange.c_str(), route->routing_key.c_str());
  } else {
    std::printf("published %llu %s messages to exchange=%s routing_key=%s in %.2f s (%.0f msg/s)\n",
                static_cast<unsigned long long>(count), type.c_str(), route->exchange.c_str(),
                route->routing_key.c_str(), secs, secs > 0 ? static_cast<double>(count) / secs : 0.0);
  }
  return 0;
}

int verify_topology(const Config& config, const Topology& topology);
std::string to_json(const rapidjson::Value& v);

int cmd_topology(const Config& config, const std::vector<std::string>& argv) {
  Args a = parse_args(argv, {}, {});
  if (a.positional.size() != 1 || (a.positional[0] != "apply" && a.positional[0] != "verify")) {
    throw UsageError("topology needs 'apply' or 'verify'");
  }
  Topology topology = build_topology(config);
  auto session = open_session(config);
  if (a.positional[0] == "apply") {
    const std::vector<KeptArgument> kept = declare_topology(*session, topology);
    session->close();
    for (const auto& line : describe(kept)) std::printf("note: %s\n", line.c_str());
    std::printf("topology applied: %zu exchanges, %zu queues, %zu bindings\n", topology.exchanges.size(),
                topology.queues.size(), topology.bindings.size());
    return 0;
  }
  session->close();
  return verify_topology(config, topology);
}

// --- topology verify through the management API ------------------------------------

// GET on the management API; the body, or nullopt with `error` set.
std::optional<std::string> management_get(const Config& config, const std::string& path, long& status,
                                          std::string& error) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    error = "cannot create a curl handle";
    return std::nullopt;
  }
  std::string url = config.amqp.management_url + path;
  std::string body;
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  // The URL's own user when it names one (curl reads it from there; CURLOPT_USERPWD would
  // override it), else the AMQP login's.
  std::string user = config.amqp.endpoint().user + ":" + config.amqp.endpoint().password;
  if (!has_userinfo(config.amqp.management_url)) curl_easy_setopt(curl.get(), CURLOPT_USERPWD, user.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(config.amqp.connect_timeout_ms));
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  // An https management API behind the same private CA as the amqps listeners.
  if (url.starts_with("https://") && !config.amqp.tls.ca_file.empty())
    curl_easy_setopt(curl.get(), CURLOPT_CAINFO, config.amqp.tls.ca_file.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, +[](char* p, size_t size, size_t n, void* out) {
    static_cast<std::string*>(out)->append(p, size * n);
    return size * n;
  });
  CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) {
    error = std::string(curl_easy_strerror(rc));
    return std::nullopt;
  }
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  return body;
}

std::string escape(const std::string& s) {
  std::unique_ptr<char, decltype(&curl_free)> e(curl_easy_escape(nullptr, s.c_str(), static_cast<int>(s.size())),
                                                curl_free);
  return e ? std::string(e.get()) : s;
}

std::string argument_text(const rapidjson::Value& v) {
  if (v.IsString()) return v.GetString();
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  return to_json(v);
}

// Names each missing or different exchange, queue and binding on stderr; 0 when all
// match, 1 otherwise.
int verify_topology(const Config& config, const Topology& topology) {
  const bool own_user = has_userinfo(config.amqp.management_url);
  if (config.amqp.endpoint().external && !own_user) {
    // The management API takes no client certificate: it needs a user and password.
    throw ConfigError("topology verify reads the management API, which does not log in with the client certificate "
                      "(SASL EXTERNAL): give its user in amqp.managementUrl or EVENTD_MANAGEMENT_URL "
                      "(http://user:password@host:15672)");
  }
  const std::string api_user = own_user ? "of amqp.managementUrl" : "'" + config.amqp.endpoint().user + "'";
  const std::string vhost = escape(config.amqp.endpoint().vhost);
  int problems = 0;
  auto report = [&problems](const std::string& line) {
    std::fprintf(stderr, "%s\n", line.c_str());
    ++problems;
  };
  // Differs, but apply cannot change it and eventd works with it: said, not counted.
  std::vector<KeptArgument> kept;
  auto fetch = [&](const std::string& path, rapidjson::Document& doc) -> bool {
    long status = 0;
    std::string error;
    auto body = management_get(config, path, status, error);
    if (!body) {
      throw AmqpError("cannot reach the RabbitMQ management API at " + without_userinfo(config.amqp.management_url) +
                      ": " + error +
                      " (set amqp.managementUrl or EVENTD_MANAGEMENT_URL)");
    }
    if (status == 401) throw AmqpError("the management API refused the user " + api_user + " (401)");
    if (status == 404) return false;
    if (status != 200) throw AmqpError("management API answered HTTP " + std::to_string(status) + " for " + path);
    return !parse_json(doc, *body);
  };

  for (const auto& ex : topology.exchanges) {
    rapidjson::Document d;
    if (!fetch("/api/exchanges/" + vhost + "/" + escape(ex.name), d)) {
      report("missing exchange '" + ex.name + "' (" + ex.type + ")");
    } else if (d.HasMember("type") && d["type"].IsString() && ex.type != d["type"].GetString()) {
      report("exchange '" + ex.name + "' is " + d["type"].GetString() + ", expected " + ex.type);
    }
  }
  for (const auto& q : topology.queues) {
    rapidjson::Document d;
    if (!fetch("/api/queues/" + vhost + "/" + escape(q.name), d)) {
      report("missing queue '" + q.name + "'");
      continue;
    }
    const rapidjson::Value* args = d.HasMember("arguments") && d["arguments"].IsObject() ? &d["arguments"] : nullptr;
    bool kept_classic = false;  // then no quorum-only argument is expected either
    for (const auto& a : q.arguments) {
      if (kept_classic && a.key == kQuorumInitialGroupSize) continue;
      std::string want = std::holds_alternative<std::string>(a.value) ? std::get<std::string>(a.value)
                                                                      : std::to_string(std::get<int64_t>(a.value));
      auto m = args != nullptr ? args->FindMember(a.key.c_str()) : rapidjson::Value::ConstMemberIterator();
      const bool absent = args == nullptr || m == args->MemberEnd();
      std::string have = absent ? "none" : argument_text(m->value);
      // RabbitMQ reports a classic queue declared without x-queue-type as "classic" in "type".
      if (absent && a.key == kQueueType && d.HasMember("type") && d["type"].IsString()) have = d["type"].GetString();
      if (have == want) continue;
      if (keepable(q, a.key, have)) {
        kept.push_back({q.name, a.key, have, want});
        kept_classic = kept_classic || a.key == kQueueType;
      } else if (have == "none") {
        report("queue '" + q.name + "' lacks argument " + a.key + " = " + want);
      } else {
        report("queue '" + q.name + "' has " + a.key + " = " + have + ", expected " + want);
      }
    }
  }
  for (const auto& b : topology.bindings) {
    rapidjson::Document d;
    bool found = false;
    if (fetch("/api/bindings/" + vhost + "/e/" + escape(b.exchange) + "/q/" + escape(b.queue), d) && d.IsArray()) {
      for (const auto& x : d.GetArray()) {
        if (x.HasMember("routing_key") && x["routing_key"].IsString() && b.routing_key == x["routing_key"].GetString()) {
          found = true;
        }
      }
    }
    if (!found) {
      report("missing binding: queue '" + b.queue + "' to exchange '" + b.exchange + "' with key '" + b.routing_key +
             "'");
    }
  }
  for (const auto& line : describe(kept)) std::printf("note: %s\n", line.c_str());
  if (problems > 0) {
    std::fprintf(stderr, "topology verify: %d problem(s) (eventctl topology apply declares what is missing; a queue "
                         "with other arguments must be deleted first)\n", problems);
    return 1;
  }
  std::printf("topology ok: %zu exchanges, %zu queues, %zu bindings\n", topology.exchanges.size(),
              topology.queues.size(), topology.bindings.size());
  return 0;
}

// The DLQ named on the command line: "eventd.quotes.dlq", or the work queue
// "eventd.quotes" meaning its dead-letter queue.
const QueueSpec& resolve_dlq(const Topology& topology, const std::string& name) {
  for (const std::string& candidate : {name, dead_letter_queue_name(name)}) {
    const QueueSpec* q = topology.find_queue(candidate);
    if (q != nullptr && q->role == QueueSpec::Role::DeadLetter) return *q;
  }
  std::string known;
  for (const auto& q : topology.queues) {
    if (q.role == QueueSpec::Role::DeadLetter) known += (known.empty() ? "" : ", ") + q.name;
  }
  throw UsageError("'" + name + "' is not a dead-letter queue of this config (" + known + ")");
}

std::string message_json(const AmqpSession::GotMessage& m) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto str = [&w](std::string_view v) { w.String(v.data(), static_cast<rapidjson::SizeType>(v.size())); };
  const amqp_basic_properties_t& p = m.properties.get();
  w.StartObject();
  w.Key("messageId");
  str(sanitize_utf8(m.properties.message_id()));
  w.Key("type");
  str(sanitize_utf8(m.properties.type()));
  if (!m.properties.correlation_id().empty()) {
    w.Key("correlationId");
    str(sanitize_utf8(m.properties.correlation_id()));
  }
  if (p._flags & AMQP_BASIC_TIMESTAMP_FLAG) {
    w.Key("timestamp");
    w.Uint64(p.timestamp);
  }
  w.Key("headers");
  std::string headers = table_to_json(m.properties.headers());
  w.RawValue(headers.data(), headers.size(), rapidjson::kObjectType);
  if (!m.properties.dropped_headers().empty()) {
    // Nested deeper than kMaxHeaderDepth: not read, shown or replayed.
    w.Key("droppedHeaders");
    w.StartArray();
    for (const auto& name : m.properties.dropped_headers()) str(name);
    w.EndArray();
  }
  if (valid_utf8(m.body)) {
    w.Key("body");
    str(m.body);
  } else {
    w.Key("bodyBase64");  // not text: shown losslessly
    str(base64(m.body));
  }
  w.EndObject();
  return std::string(buf.GetString(), buf.GetSize());
}

// Where a dead letter goes back to: the route eventd recorded, or for a message the
// broker dead-lettered itself (delivery limit), its work queue via the default exchange.
Route replay_route(const AmqpSession::GotMessage& m, const QueueSpec& dlq) {
  Route r;
  const amqp_table_t* h = m.properties.headers();
  if (table_get_string(h, "x-original-exchange", r.exchange) &&
      table_get_string(h, "x-original-routing-key", r.routing_key)) {
    return r;
  }
  return Route{"", dlq.work_queue};
}

// Gives back the messages looked at but not acked and waits (bounded) until the queue
// shows them again: a quorum queue requeues asynchronously, and an operator running
// `dlq list` right after `dlq show` must not see dead letters missing.
void return_and_settle(AmqpSession& session, const std::string& queue, uint64_t last_tag, uint32_t expected_depth) {
  if (last_tag == 0) return;
  session.return_upto(last_tag);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    auto depth = session.queue_depth(queue);
    if (!depth || *depth >= expected_depth) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

int cmd_dlq(const Config& config, const std::vector<std::string>& argv) {
  Args a = parse_args(argv, {"count", "id"}, {"all"});
  const std::string sub = a.positional.empty() ? "" : a.positional[0];
  Topology topology = build_topology(config);
  if (sub == "list") {
    auto session = open_session(config);
    std::printf("%-40s %s\n", "queue", "messages");
    for (const auto& q : topology.queues) {
      if (q.role != QueueSpec::Role::DeadLetter) continue;
      auto depth = session->queue_depth(q.name);
      if (depth) std::printf("%-40s %u\n", q.name.c_str(), *depth);
      else std::printf("%-40s %s\n", q.name.c_str(), "missing");
    }
    session->close();
    return 0;
  }
  if (sub != "show" && sub != "replay" && sub != "purge") {
    throw UsageError("dlq needs list, show QUEUE, replay QUEUE or purge QUEUE");
  }
  if (a.positional.size() != 2) throw UsageError("dlq " + sub + " needs one QUEUE");
  const QueueSpec& dlq = resolve_dlq(topology, a.positional[1]);
  auto session = open_session(config);

  if (sub == "purge") {
    uint32_t n = session->purge(dlq.name);
    session->close();
    std::printf("purged %u message(s) from %s\n", n, dlq.name.c_str());
    return 0;
  }

  auto depth = session->queue_depth(dlq.name);
  if (!depth) throw AmqpError("queue '" + dlq.name + "' does not exist (eventctl topology apply declares it)");
  if (sub == "show") {
    uint64_t count = a.has("count") ? parse_count("count", a.get("count"), 1, 1000000) : 10;
    uint64_t limit = std::min<uint64_t>(count, *depth);
    std::vector<uint64_t> tags;
    for (uint64_t i = 0; i < limit; ++i) {
      auto m = session->get(dlq.name);
      if (!m) break;
      std::printf("%s\n", message_json(*m).c_str());
      tags.push_back(m->delivery_tag);
    }
    std::fflush(stdout);
    return_and_settle(*session, dlq.name, tags.empty() ? 0 : tags.back(), *depth);
    session->close();
    if (tags.empty()) std::fprintf(stderr, "%s is empty\n", dlq.name.c_str());
    return 0;
  }

  // replay: republish each to its original route with the retry count reset, wait for
  // the broker's confirm, and only then ack the dead letter: a crash in between leaves
  // a copy in both places (replayed again later and deduplicated by eventd), never none.
  int modes = (a.has("count") ? 1 : 0) + (a.has("all") ? 1 : 0) + (a.has("id") ? 1 : 0);
  if (modes != 1) throw UsageError("dlq replay needs one of --count N, --all, --id MESSAGE_ID");
  uint64_t want = a.has("count") ? parse_count("count", a.get("count"), 1, 100000000) : *depth;
  const std::string only_id = a.get("id");
  session->confirm_select();
  uint64_t replayed = 0;
  uint64_t seen = 0;
  uint64_t last_skipped = 0;
  uint64_t refused = 0;
  Progress progress("replay", only_id.empty() ? std::min<uint64_t>(want, *depth) : *depth);
  while (replayed < want && seen < *depth) {
    auto m = session->get(dlq.name);
    if (!m) break;
    ++seen;
    if (!only_id.empty() && m->properties.message_id() != only_id) {
      last_skipped = m->delivery_tag;  // given back below
      progress.update(seen);
      continue;
    }
    if (!m->properties.dropped_headers().empty()) {
      // Replayed without them it would be another message; with them, eventd refuses it.
      last_skipped = m->delivery_tag;
      ++refused;
      progress.before_stdout();
      std::fprintf(stderr, "eventctl: not replayed: message_id=%s: %s; it stays in %s\n",
                   sanitize_utf8(m->properties.message_id()).c_str(),
                   too_deep_headers_message(m->properties.dropped_headers()).c_str(), dlq.name.c_str());
      progress.update(seen);
      continue;
    }
    Route route = replay_route(*m, dlq);
    FieldTable headers;
    if (const amqp_table_t* h = m->properties.headers()) {
      for (int i = 0; i < h->num_entries; ++i) {
        std::string_view key = as_view(h->entries[i].key);
        if (!is_eventd_header(key) && key != "x-death" && !key.starts_with("x-first-death") &&
            !key.starts_with("x-last-death") && key != "x-delivery-count") {
          headers.add_borrowed(h->entries[i]);
        }
      }
    }
    amqp_basic_properties_t props = m->properties.get();
    props.headers = headers.table();
    props._flags |= AMQP_BASIC_HEADERS_FLAG;
    session->publish_confirmed(route.exchange, route.routing_key, props, m->body);
    session->ack(m->delivery_tag);
    ++replayed;
    progress.before_stdout();
    std::printf("replayed message_id=%s to exchange=%s routing_key=%s\n",
                std::string(m->properties.message_id()).c_str(),
                route.exchange.empty() ? "(default)" : route.exchange.c_str(), route.routing_key.c_str());
    progress.update(only_id.empty() ? replayed : seen);
  }
  progress.clear();
  return_and_settle(*session, dlq.name, last_skipped, static_cast<uint32_t>(*depth - replayed));
  session->close();
  if (!only_id.empty() && replayed == 0 && refused == 0) {
    std::fprintf(stderr, "eventctl: no message with message_id '%s' in %s\n", only_id.c_str(), dlq.name.c_str());
    return 1;
  }
  std::printf("replayed %llu message(s) from %s\n", static_cast<unsigned long long>(replayed), dlq.name.c_str());
  return refused > 0 ? 1 : 0;
}

// --- monitor: per-user monitor state in Redis ------------------------------------

// Blocking Redis for the CLI (no loop here): standalone or cluster.
using BlockingRedis = redis::BlockingClient;

// One user's rules under one symbol, replaced: the rules the symbol's rule owners list
// for the user leave the specs, every condition's index and the rule state; the new
// ones come in (their cooldowns start fresh) and the owners entry lists them. Keys of
// {<SYMBOL>} only, so the call goes to one slot; running it again leaves the same state,
// which is what lets a rerun of `monitor start` or `stop` repair a half-done one.
// It keeps the stored quote's mark (keys::kQuoteHasRules, stored_quote.hpp) in step
// with the specs: eventd evaluates a symbol's rules only while the quote is marked.
// KEYS: rule specs, the rule index of each condition (keys::kConditions order), rule
// state, rule owners, quote. ARGV: userId, the new alertIds as a JSON array ('' for none), then
// per rule: alertId, condition (1-based in kConditions), threshold (exact),
// "<cooldownSec> <alert fields JSON>" (see quote_update.cpp).
// Reads and decides first, then writes: a key of another type fails the run before
// anything is written (but the conversion of an older eventd's quote hash).
constexpr const char* kSymbolRulesScript = R"lua(
local want = {'hash', 'zset', 'zset', 'zset', 'zset', 'hash', 'hash'}
for i = 1, #want do
  local key = KEYS[i]
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want[i] then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want[i])
  end
end
local ts, price, change, marked = read_quote(KEYS[8])
local user = ARGV[1]
local members = {}
local owned = redis.call('HGET', KEYS[7], user)
if owned then
  for _, id in ipairs(cjson.decode(owned)) do members[#members + 1] = user .. ':' .. string.format('%d', id) end
end
for i = 3, #ARGV, 4 do members[#members + 1] = user .. ':' .. ARGV[i] end
for _, member in ipairs(members) do
  redis.call('HDEL', KEYS[1], member)
  for k = 2, 5 do redis.call('ZREM', KEYS[k], member) end
  redis.call('HDEL', KEYS[6], member)
end
for i = 3, #ARGV, 4 do
  local member = user .. ':' .. ARGV[i]
  redis.call('HSET', KEYS[1], member, ARGV[i + 3])
  redis.call('ZADD', KEYS[1 + tonumber(ARGV[i + 1])], ARGV[i + 2], member)
end
if ARGV[2] == '' then redis.call('HDEL', KEYS[7], user) else redis.call('HSET', KEYS[7], user, ARGV[2]) end
local has_rules = redis.call('EXISTS', KEYS[1]) == 1
if has_rules ~= marked then
  local value = quote_value(ts, price, change, has_rules)
  if value then redis.call('SET', KEYS[8], value) else redis.call('DEL', KEYS[8]) end
end
return (#ARGV - 2) / 4
)lua";

// Marks a monitor stopped, keeping its spec. KEYS: the monitor hash. ARGV: now.
// Returns 0 when there is no monitor (nothing written).
constexpr const char* kMonitorStoppedScript = R"lua(
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'stopped', 'updatedAt', ARGV[1])
return 1
)lua";

// The user's portfolio checks (portfolio_checks.hpp), in the user's schedule shard.
// KEYS: schedule, claims. ARGV: userId, due time (ms).
// Start: due at once. A check of the old spec in flight is forgotten (its claim too):
// it sees the monitor changed and evaluates nothing, and its reschedule finds the new
// due time and gives up. Its alerts, if it recorded any, stay in the user's outbox for
// the next check.
constexpr const char* kScheduleStartScript = R"lua(
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
)lua";
// Stop, or a spec without portfolio rules: off the schedule; but a check claimed now
// keeps its place (an instance that died mid-check leaves alerts that its takeover
// publishes): it sees the monitor stopped and takes the user off itself.
constexpr const char* kScheduleStopScript = R"lua(
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
)lua";

void schedule_checks(BlockingRedis& redis, const std::string& user, bool checked, const std::string& due) {
  const std::size_t shard = keys::schedule_shard(user);
  redis.run({"EVAL", checked ? kScheduleStartScript : kScheduleStopScript, "2", keys::schedule(shard),
             keys::schedule_claims(shard), user, due});
}

// A user's rules under one symbol, as kSymbolRulesScript takes them.
struct SymbolRules {
  std::string alert_ids;          // JSON array
  std::vector<std::string> args;  // alertId, condition, threshold, rule; per rule
};

void replace_symbol_rules(BlockingRedis& redis, const std::string& user, const std::string& symbol,
                          const SymbolRules* rules) {
  static const std::string script = stored_quote_lua() + kSymbolRulesScript;
  std::vector<std::string> cmd{"EVAL", script, "8", keys::rules(symbol)};
  for (auto& index : keys::rule_indexes(symbol)) cmd.push_back(std::move(index));
  cmd.push_back(keys::rule_state(symbol));
  cmd.push_back(keys::rule_owners(symbol));
  cmd.push_back(keys::quote(symbol));
  cmd.push_back(user);
  cmd.push_back(rules != nullptr ? rules->alert_ids : "");
  if (rules != nullptr) cmd.insert(cmd.end(), rules->args.begin(), rules->args.end());
  redis.run(cmd);
}

std::set<std::string> string_set(const redisReply& reply) {
  std::set<std::string> out;
  for (std::size_t i = 0; i < reply.elements; ++i) out.emplace(reply.element[i]->str, reply.element[i]->len);
  return out;
}

// A failure between the first write and the last leaves the command half done; every
// step can be run again, so running the command again finishes it.
[[noreturn]] void half_done(const std::string& command, const std::string& user, const std::exception& e) {
  throw std::runtime_error(std::string(e.what()) + " (monitor " + command + " for " + user +
                           " may be half done: run it again to finish it)");
}

std::string to_json(const rapidjson::Value& v) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  v.Accept(w);
  return std::string(buf.GetString(), buf.GetSize());
}

// `monitor status`: the positions valued at the latest quotes, the portfolio rules as
// a check would find them now, their state and the schedule (README, "Portfolio
// monitors"). A figure that cannot be computed (no quote yet, no cost basis) is null.
rapidjson::Value portfolio_status(BlockingRedis& redis, const std::string& user, const portfolio::Spec& spec,
                                  const std::string& updated_at, rapidjson::Document::AllocatorType& al) {
  using rapidjson::Value;
  const int64_t now = now_ms();
  portfolio::Quotes quotes;
  for (const auto& symbol : spec.symbols) {
    auto q = redis.run({"EVAL", read_quote_script(), "1", keys::quote(symbol)});
    if (q->type == REDIS_REPLY_STRING) {
      if (auto stored = parse_stored_quote({q->str, q->len}); stored.quote) quotes.emplace(symbol, *stored.quote);
    }
  }
  const portfolio::Valuation v = portfolio::value(spec.positions, quotes);
  auto num = [](const std::optional<double>& x) { return x ? Value(*x) : Value(rapidjson::kNullType); };
  auto str = [&al](std::string_view x) { return Value(x.data(), static_cast<rapidjson::SizeType>(x.size()), al); };
  Value out(rapidjson::kObjectType);
  out.AddMember("asOf", Value(static_cast<int64_t>(now)), al);
  Value positions(rapidjson::kArrayType);
  for (const auto& p : v.positions) {
    Value o(rapidjson::kObjectType);
    o.AddMember("symbol", str(p.position.symbol), al);
    o.AddMember("quantity", Value(p.position.quantity), al);
    if (p.position.cost_basis) o.AddMember("costBasis", Value(*p.position.cost_basis), al);
    o.AddMember("quoted", Value(p.quote.has_value()), al);
    o.AddMember("price", num(p.quote ? std::optional<double>(p.quote->price) : std::nullopt), al);
    o.AddMember("change", num(p.quote ? std::optional<double>(p.quote->change) : std::nullopt), al);
    if (p.quote) {
      o.AddMember("quoteTime", Value(static_cast<int64_t>(p.quote->timestamp_ms)), al);
      o.AddMember("quoteAgeSec", Value(static_cast<double>(std::max<int64_t>(now - p.quote->timestamp_ms, 0)) / 1000), al);
    } else {
      o.AddMember("quoteTime", Value(rapidjson::kNullType), al);
      o.AddMember("quoteAgeSec", Value(rapidjson::kNullType), al);
    }
    o.AddMember("marketValue", num(p.market_value), al);
    o.AddMember("dayChange", num(p.day_change), al);
    if (p.position.cost_basis) {
      o.AddMember("unrealizedPnl", num(p.pnl), al);
      o.AddMember("unrealizedPnlPct", num(p.pnl_pct), al);
    }
    positions.PushBack(o, al);
  }
  out.AddMember("positions", positions, al);
  Value totals(rapidjson::kObjectType);
  totals.AddMember("marketValue", num(v.market_value), al);
  totals.AddMember("dayChange", num(v.day_change), al);
  totals.AddMember("dayChangePct", num(v.day_change_pct), al);
  totals.AddMember("unrealizedPnl", num(v.pnl), al);
  totals.AddMember("unrealizedPnlPct", num(v.pnl_pct), al);
  out.AddMember("totals", totals, al);
  Value unquoted(rapidjson::kArrayType);
  for (const auto& symbol : v.unquoted) unquoted.PushBack(str(symbol), al);
  out.AddMember("unquoted", unquoted, al);

  // The rules' state is the current spec's only (a check resets it for a new one).
  auto state = redis.run({"HGETALL", keys::portfolio_state(user)});
  std::map<std::string, std::string, std::less<>> fields;
  for (std::size_t i = 0; i + 1 < state->elements; i += 2) {
    fields.emplace(std::string(state->element[i]->str, state->element[i]->len),
                   std::string(state->element[i + 1]->str, state->element[i + 1]->len));
  }
  const bool current = fields.count("spec") > 0 && fields["spec"] == updated_at;
  auto field = [&](const std::string& name) -> const std::string* {
    auto it = fields.find(name);
    return current && it != fields.end() ? &it->second : nullptr;
  };
  const int64_t started = updated_at.empty() ? now : std::strtoll(updated_at.c_str(), nullptr, 10);
  Value rules(rapidjson::kArrayType);
  for (const auto& rule : spec.rules) {
    const portfolio::Finding f = portfolio::evaluate(rule, v, quotes, now, started);
    Value o(rapidjson::kObjectType);
    o.AddMember("alertId", Value(static_cast<int64_t>(rule.alert_id)), al);
    o.AddMember("condition", str(portfolio::condition_name(rule.condition)), al);
    if (!rule.symbol.empty()) o.AddMember("symbol", str(rule.symbol), al);
    o.AddMember("threshold", Value(rule.threshold), al);
    o.AddMember("holdsNow", f.holds ? Value(*f.holds) : Value(rapidjson::kNullType), al);
    o.AddMember("currentValue", f.holds ? Value(f.current_value) : Value(rapidjson::kNullType), al);
    if (!f.holds) o.AddMember("notEvaluated", str(f.why), al);
    const std::string id = std::to_string(rule.alert_id);
    const std::string* held = field("held:" + id);
    o.AddMember("heldAtLastCheck", held ? Value(*held == "1") : Value(rapidjson::kNullType), al);
    const std::string* fired = field("fired:" + id);
    o.AddMember("lastFiredAt", fired ? Value(static_cast<int64_t>(std::strtoll(fired->c_str(), nullptr, 10)))
                                     : Value(rapidjson::kNullType), al);
    rules.PushBack(o, al);
  }
  out.AddMember("rules", rules, al);

  const std::size_t shard = keys::schedule_shard(user);
  auto score = redis.run({"ZSCORE", keys::schedule(shard), user});
  auto claimed = redis.run({"HGET", keys::schedule_claims(shard), user});
  auto pending = redis.run({"LLEN", keys::portfolio_outbox(user)});
  Value schedule(rapidjson::kObjectType);
  const bool in_progress = claimed->type == REDIS_REPLY_STRING;
  if (score->type == REDIS_REPLY_STRING && !in_progress) {
    schedule.AddMember("nextCheckAt", Value(static_cast<int64_t>(std::strtod(score->str, nullptr))), al);
  } else {
    schedule.AddMember("nextCheckAt", Value(rapidjson::kNullType), al);
  }
  schedule.AddMember("checkInProgress", Value(in_progress), al);
  const std::string* last = field("check");
  schedule.AddMember("lastCheckDue", last ? Value(static_cast<int64_t>(std::strtoll(last->c_str(), nullptr, 10)))
                                          : Value(rapidjson::kNullType), al);
  schedule.AddMember("alertsUnconfirmed", Value(static_cast<int64_t>(pending->integer)), al);
  out.AddMember("schedule", schedule, al);
  return out;
}

void check_user(const std::string& user) {
  if (user.empty() || user.size() > 200 || user.find_first_of(" \t\r\n:") != std::string::npos) {
    throw UsageError("invalid USER '" + user + "': 1-200 characters, no spaces or ':'");
  }
}

int cmd_monitor(const Config& config, const std::vector<std::string>& argv) {
  Args a = parse_args(argv, {}, {});
  const std::string sub = a.positional.empty() ? "" : a.positional[0];
  if (sub == "list") {
    if (a.positional.size() != 1) throw UsageError("monitor list takes no arguments");
    BlockingRedis redis(config.redis);
    auto users = redis.run({"SMEMBERS", keys::monitors()});
    std::vector<std::string> names;
    for (std::size_t i = 0; i < users->elements; ++i) names.emplace_back(users->element[i]->str, users->element[i]->len);
    std::sort(names.begin(), names.end());
    for (const auto& u : names) {
      auto st = redis.run({"HMGET", keys::monitor(u), "status", "spec"});
      std::string status = st->element[0]->type == REDIS_REPLY_STRING ? st->element[0]->str : "missing";
      std::size_t rules = 0;
      if (st->element[1]->type == REDIS_REPLY_STRING) {
        rapidjson::Document spec;
        const bool parsed = !parse_json(spec, std::string_view(st->element[1]->str, st->element[1]->len));
        if (parsed && spec.IsObject() && spec.HasMember("rules") && spec["rules"].IsArray()) rules = spec["rules"].Size();
      }
      std::printf("%s\t%s\t%zu rule(s)\n", u.c_str(), status.c_str(), rules);
    }
    return 0;
  }
  if (sub != "start" && sub != "stop" && sub != "status") {
    throw UsageError("monitor needs start USER SPEC, stop USER, status USER or list");
  }
  if (a.positional.size() < 2) throw UsageError("monitor " + sub + " needs a USER");
  const std::string user = a.positional[1];
  check_user(user);
  const std::string now = std::to_string(now_ms());

  if (sub == "start") {
    if (a.positional.size() > 3) throw UsageError("monitor start takes USER and one SPEC");
    std::string text = read_input(a.positional.size() == 3 ? a.positional[2] : "-");
    check_size(config, "SPEC", text.size());
    rapidjson::Document spec;
    if (auto error = parse_json<rapidjson::kParseValidateEncodingFlag | kParseUniqueKeysFlag>(spec, text)) {
      throw UsageError("invalid JSON in SPEC at offset " + std::to_string(error->offset) + ": " + error->what);
    }
    if (!spec.IsObject()) throw UsageError("SPEC must be a JSON object");
    normalise_keys(spec, spec.GetAllocator());
    SchemaRegistry schemas;
    if (auto problem = schemas.validate("monitor", spec)) throw UsageError("invalid monitor spec: " + *problem);
    portfolio::Spec checks;
    if (auto problem = portfolio::parse_spec(spec, checks)) throw UsageError("invalid monitor spec: " + *problem);
    std::map<std::string, SymbolRules> by_symbol;
    std::vector<int64_t> seen;
    const auto& rules = spec["rules"];
    for (rapidjson::SizeType i = 0; i < rules.Size(); ++i) {
      const auto& r = rules[i];
      int64_t id = r["alertId"].GetInt64();
      if (std::find(seen.begin(), seen.end(), id) != seen.end()) {
        throw UsageError("invalid monitor spec: /rules/" + std::to_string(i) + "/alertId: " + std::to_string(id) +
                         " is used by an earlier rule; alert ids must be unique");
      }
      seen.push_back(id);
      const std::string_view condition(r["condition"].GetString(), r["condition"].GetStringLength());
      if (portfolio::parse_condition(condition)) continue;  // evaluated by the checks, not per quote
      // The fields the quote script puts into alert_triggered as they are: exact.
      rapidjson::Document rule(rapidjson::kObjectType);
      auto& al = rule.GetAllocator();
      rule.AddMember("userId", rapidjson::Value(user.c_str(), al), al);
      rule.AddMember("alertId", rapidjson::Value(id), al);
      rule.AddMember("condition", rapidjson::Value(r["condition"], al), al);
      rule.AddMember("threshold", rapidjson::Value(r["threshold"], al), al);
      char score[32];
      std::snprintf(score, sizeof score, "%.17g", r["threshold"].GetDouble());
      const auto c = std::find(keys::kConditions.begin(), keys::kConditions.end(), condition);
      SymbolRules& s = by_symbol[r["symbol"].GetString()];
      s.alert_ids += (s.alert_ids.empty() ? "[" : ",") + std::to_string(id);
      s.args.push_back(std::to_string(id));
      s.args.push_back(std::to_string(c - keys::kConditions.begin() + 1));
      s.args.push_back(score);
      s.args.push_back(std::to_string(r.HasMember("cooldownSec") ? r["cooldownSec"].GetInt64() : 0) + " " +
                       to_json(rule));
    }
    for (auto& [symbol, s] : by_symbol) s.alert_ids += "]";
    const std::string check_interval =
        std::to_string(spec.HasMember("checkIntervalMs") ? spec["checkIntervalMs"].GetInt64() : 60000);

    // Each call touches the keys of one hash tag. The symbols go into the user's
    // monitorsyms before anything is indexed under them, so that whatever a failure
    // leaves indexed is found by the next start or stop.
    BlockingRedis redis(config.redis);
    const std::string symbols_key = keys::monitor_symbols(user);
    try {
      if (!by_symbol.empty()) {
        std::vector<std::string> sadd{"SADD", symbols_key};
        for (const auto& [symbol, s] : by_symbol) sadd.push_back(symbol);
        redis.run(sadd);
      }
      std::set<std::string> symbols = string_set(*redis.run({"SMEMBERS", symbols_key}));
      for (const auto& [symbol, s] : by_symbol) symbols.insert(symbol);
      for (const auto& symbol : symbols) {
        auto it = by_symbol.find(symbol);
        replace_symbol_rules(redis, user, symbol, it == by_symbol.end() ? nullptr : &it->second);
      }
      redis.run({"HSET", keys::monitor(user), "status", "running", "spec", to_json(spec), "channels",
                 to_json(spec["channels"]), "checkIntervalMs", check_interval, "updatedAt", now});
      redis.run({"SADD", keys::monitors(), user});
      schedule_checks(redis, user, !checks.rules.empty(), now);
      std::vector<std::string> srem{"SREM", symbols_key};
      for (const auto& symbol : symbols) {
        if (!by_symbol.count(symbol)) srem.push_back(symbol);
      }
      if (srem.size() > 2) redis.run(srem);
    } catch (const std::exception& e) {
      half_done("start", user, e);
    }
    if (checks.rules.empty()) {
      std::printf("monitor for %s running: %u rule(s)\n", user.c_str(), rules.Size());
    } else {
      std::printf("monitor for %s running: %u rule(s), %zu of them portfolio rules checked every %lld ms\n",
                  user.c_str(), rules.Size(), checks.rules.size(), static_cast<long long>(checks.check_interval_ms));
    }
    return 0;
  }
  if (a.positional.size() != 2) throw UsageError("monitor " + sub + " takes only USER");
  BlockingRedis redis(config.redis);
  if (sub == "stop") {
    // Rules first, then the status, then the symbols list: a rerun finds what is left.
    long long stopped = 0;
    try {
      const std::string symbols_key = keys::monitor_symbols(user);
      for (const auto& symbol : string_set(*redis.run({"SMEMBERS", symbols_key}))) {
        replace_symbol_rules(redis, user, symbol, nullptr);
      }
      stopped = redis.run({"EVAL", kMonitorStoppedScript, "1", keys::monitor(user), now})->integer;
      if (stopped != 0) {
        schedule_checks(redis, user, false, now);
        redis.run({"DEL", keys::portfolio_state(user)});
      }
      redis.run({"DEL", symbols_key});
    } catch (const std::exception& e) {
      half_done("stop", user, e);
    }
    if (stopped == 0) {
      std::fprintf(stderr, "eventctl: no monitor for user '%s'\n", user.c_str());
      return 1;
    }
    std::printf("monitor for %s stopped\n", user.c_str());
    return 0;
  }
  auto r = redis.run({"HGETALL", keys::monitor(user)});
  if (r->elements == 0) {
    std::fprintf(stderr, "eventctl: no monitor for user '%s'\n", user.c_str());
    return 1;
  }
  rapidjson::Document out(rapidjson::kObjectType);
  auto& al = out.GetAllocator();
  out.AddMember("userId", rapidjson::Value(user.c_str(), al), al);
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    std::string key(r->element[i]->str, r->element[i]->len);
    std::string value(r->element[i + 1]->str, r->element[i + 1]->len);
    if (key == "spec" || key == "channels") {
      rapidjson::Document parsed(&al);
      if (!parse_json(parsed, value)) out.AddMember(rapidjson::Value(key.c_str(), al), rapidjson::Value(parsed, al), al);
    } else if (key == "checkIntervalMs" || key == "updatedAt") {
      out.AddMember(rapidjson::Value(key.c_str(), al), rapidjson::Value(static_cast<int64_t>(std::strtoll(value.c_str(), nullptr, 10))), al);
    } else {
      out.AddMember(rapidjson::Value(key.c_str(), al), rapidjson::Value(value.c_str(), al), al);
    }
  }
  // Valued only for a spec eventctl would accept (one written by hand may be anything).
  auto spec = out.FindMember("spec");
  portfolio::Spec checks;
  if (spec != out.MemberEnd() && spec->value.IsObject() && !SchemaRegistry().validate("monitor", spec->value) &&
      !portfolio::parse_spec(spec->value, checks)) {
    std::string updated_at;
    if (auto u = out.FindMember("updatedAt"); u != out.MemberEnd()) updated_at = std::to_string(u->value.GetInt64());
    rapidjson::Value p = portfolio_status(redis, user, checks, updated_at, al);
    out.AddMember("portfolio", p, al);
  }
  std::printf("%s\n", to_json(out).c_str());
  return 0;
}

}  // namespace

int eventctl_main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string config_path;
  if (!args.empty() && (args[0] == "--config" || args[0].starts_with("--config="))) {
    const bool separate = args[0] == "--config";
    if (separate && args.size() >= 2) config_path = args[1];
    else if (!separate) config_path = args[0].substr(9);
    if (config_path.empty()) {
      std::fprintf(stderr, "eventctl: --config needs a FILE\n");
      return 2;
    }
    args.erase(args.begin(), args.begin() + (separate ? 2 : 1));
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(usage::full_help().c_str(), args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "--version") {
    std::printf("eventctl %s\n", EVENTD_VERSION);
    return 0;
  }
  const std::string command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (std::find(rest.begin(), rest.end(), "--help") != rest.end()) {
    if (const usage::CommandHelp* help = usage::find_command(command)) {
      std::fputs(usage::command_help(*help).c_str(), stdout);
      return 0;
    }
  }
  try {
    Config config = load_cli_config(config_path);
    if (command == "publish") return cmd_publish(config, rest);
    if (command == "topology") return cmd_topology(config, rest);
    if (command == "dlq") return cmd_dlq(config, rest);
    if (command == "monitor") return cmd_monitor(config, rest);
    throw UsageError("unknown command '" + command + "' (see eventctl --help)");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "eventctl: %s\n", e.what());
    return 2;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "eventctl: %s\n", e.what());
    return 2;
  } catch (const AmqpError& e) {
    std::fprintf(stderr, "eventctl: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eventctl: %s\n", e.what());
    return 1;
  }
}

}  // namespace eventd

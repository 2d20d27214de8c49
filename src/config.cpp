// Config file parsing: JSON with comments -> schema validation -> plain structs,
// then environment overrides and URL parsing. Every error is one ConfigError line.
#include "eventd/config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include <sys/stat.h>

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/pointer.h>

#include "eventd/credentials.hpp"
#include "eventd/json_parse.hpp"
#include "eventd/json_pointer.hpp"
#include "eventd/schema_registry.hpp"

namespace eventd {

namespace {

using rapidjson::Value;

[[noreturn]] void fail(const std::string& source, const std::string& pointer, const std::string& what) {
  throw ConfigError(source + ": " + pointer + ": " + what);
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += '?';  // keep messages on one line
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// RFC 3986 percent-decoding; `what` names the URL part in the message (never its
// value: it may be a password).
std::string percent_decode(std::string_view s, const std::string& what) {
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) throw ConfigError("invalid percent-encoding in the " + what);
    const int hi = hex(s[i + 1]), lo = hex(s[i + 2]);
    if (hi < 0 || lo < 0) throw ConfigError("invalid percent-encoding in the " + what);
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

// The pieces of scheme://[userinfo@]host[:port][/path], split but not decoded.
struct UrlParts {
  std::string scheme;  // lower case
  std::string_view userinfo;
  bool has_userinfo = false;
  std::string host;
  std::optional<int> port;
  std::string_view path;  // after the authority, "/" included; may be empty
};

UrlParts split_url(std::string_view url, const std::string& kind, const std::string& expected_scheme) {
  UrlParts parts;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos)
    throw ConfigError("missing scheme in the " + kind + " URL; expected " + expected_scheme +
                      "://host:port/...");
  parts.scheme = lower(url.substr(0, scheme_end));
  std::string_view rest = url.substr(scheme_end + 3);

  if (rest.find_first_of("?#") != std::string_view::npos)
    throw ConfigError("query parameters and fragments are not supported in the " + kind +
                      " URL; set the options in the config file");

  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  parts.path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);

  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    parts.has_userinfo = true;
    parts.userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
  }

  std::string_view host, port;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw ConfigError("unterminated \"[\" in the " + kind + " URL host");
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw ConfigError("unexpected text after \"]\" in the " + kind + " URL host");
      has_port = true;
      port = after.substr(1);
    }
  } else {
    const auto colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      has_port = true;
      port = authority.substr(colon + 1);
      if (port.find(':') != std::string_view::npos)
        throw ConfigError("IPv6 addresses in the " + kind + " URL must be in brackets, e.g. [::1]");
    }
  }
  if (host.empty()) throw ConfigError("missing host in the " + kind + " URL");
  parts.host = percent_decode(host, kind + " URL host");
  if (has_port) {
    if (!all_digits(port) || port.size() > 5 || std::stoi(std::string(port)) < 1 ||
        std::stoi(std::string(port)) > 65535)
      throw ConfigError("invalid port " + quoted(port) + " in the " + kind + " URL; expected 1..65535");
    parts.port = std::stoi(std::string(port));
  }
  return parts;
}

// host:port of http.listen; IPv6 hosts in brackets (returned without them).
// `where` names the value in errors: "<file>: /http/listen" or "EVENTD_HTTP_LISTEN".
std::pair<std::string, uint16_t> parse_listen(std::string_view s, const std::string& where) {
  const auto fail = [&where](const std::string& what) { throw ConfigError(where + ": " + what); };
  const std::string shape = "expected \"host:port\", e.g. \"127.0.0.1:9464\" or \"[::1]:9464\", got " + quoted(s);
  std::string_view host, port;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') fail(shape);
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos) fail(shape);
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      fail("IPv6 addresses must be in brackets, e.g. \"[::1]:9464\", got " + quoted(s));
  }
  if (host.empty()) fail(shape);
  if (!all_digits(port) || port.size() > 5 || std::stoi(std::string(port)) < 1 ||
      std::stoi(std::string(port)) > 65535)
    fail("invalid port " + quoted(port) + "; expected 1..65535");
  return {std::string(host), static_cast<uint16_t>(std::stoi(std::string(port)))};
}

// RapidJSON keeps duplicate keys and lookups find the first: a second "prefetch"
// would be silently ignored, so it is an error.
void check_duplicate_keys(const Value& v, const std::string& pointer, const std::string& source) {
  if (v.IsArray()) {
    for (rapidjson::SizeType i = 0; i < v.Size(); ++i)
      check_duplicate_keys(v[i], pointer + "/" + std::to_string(i), source);
  } else if (v.IsObject()) {
    std::set<std::string_view> seen;
    for (const auto& m : v.GetObject()) {
      const std::string_view key(m.name.GetString(), m.name.GetStringLength());
      const std::string child = pointer + "/" + json_pointer_token(key);
      if (!seen.insert(key).second) fail(source, child, "duplicate key");
      check_duplicate_keys(m.value, child, source);
    }
  }
}

const SchemaRegistry& registry() {
  static const SchemaRegistry r;
  return r;
}

const Value* find(const Value& root, const char* pointer) { return rapidjson::Pointer(pointer).Get(root); }

std::string string_at(const Value& root, const char* pointer, std::string fallback) {
  const Value* v = find(root, pointer);
  return v ? std::string(v->GetString(), v->GetStringLength()) : fallback;
}

template <typename T>
T uint_at(const Value& root, const char* pointer, T fallback) {
  const Value* v = find(root, pointer);
  return v ? static_cast<T>(v->GetUint64()) : fallback;
}

std::string parse_error_message(std::string_view text, const JsonParseError& error, const std::string& source) {
  const std::size_t offset = std::min(error.offset, text.size());
  std::size_t line = 1, line_start = 0;
  for (std::size_t i = 0; i < offset; ++i)
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  std::string what = error.what;
  if (!what.empty() && what.back() == '.') what.pop_back();
  return source + ": invalid JSON at line " + std::to_string(line) + " column " +
         std::to_string(offset - line_start + 1) + ": " + what;
}

bool reserved_name(std::string_view name) { return name.substr(0, 4) == "amq."; }

void check_exchange(const ExchangeConfig& e, const std::string& pointer, const std::string& source) {
  if (reserved_name(e.name))
    fail(source, pointer + "/name", "names starting with \"amq.\" are reserved by RabbitMQ, got " + quoted(e.name));
}

void parse_queues(const Value& doc, Config& cfg) {
  const std::string& source = cfg.source;
  auto& topo = cfg.topology;
  const Value* queues = find(doc, "/topology/queues");
  if (!queues) {
    topo.queues = default_queues(topo);
    return;
  }
  std::map<std::string, std::string, std::less<>> names;  // name -> pointer of first use
  for (rapidjson::SizeType i = 0; i < queues->Size(); ++i) {
    const Value& q = (*queues)[i];
    const std::string ptr = "/topology/queues/" + std::to_string(i);
    QueueConfig qc;
    qc.name = q["name"].GetString();
    qc.exchange = q["exchange"].GetString();
    if (const auto it = q.FindMember("bindingKey"); it != q.MemberEnd()) qc.binding_key = it->value.GetString();
    if (const auto it = q.FindMember("type"); it != q.MemberEnd())
      qc.type = std::string_view(it->value.GetString()) == "classic" ? QueueType::Classic : QueueType::Quorum;

    if (qc.exchange != topo.quotes_exchange.name && qc.exchange != topo.events_exchange.name)
      fail(source, ptr + "/exchange",
           quoted(qc.exchange) + " is not a configured exchange (" + topo.quotes_exchange.name + ", " +
               topo.events_exchange.name + ")");
    if (reserved_name(qc.name))
      fail(source, ptr + "/name", "names starting with \"amq.\" are reserved by RabbitMQ, got " + quoted(qc.name));
    const std::string_view n = qc.name;
    const auto retry = n.rfind(".retry.");
    if ((n.size() >= 4 && n.substr(n.size() - 4) == ".dlq") ||
        (retry != std::string_view::npos && all_digits(n.substr(retry + 7))))
      fail(source, ptr + "/name",
           "names ending in \".dlq\" or \".retry.<ms>\" are reserved for eventd's dead-letter and retry queues, got " +
               quoted(qc.name));
    if (const auto [it, inserted] = names.emplace(qc.name, ptr + "/name"); !inserted)
      fail(source, ptr + "/name", "duplicate queue name " + quoted(qc.name) + " (first at " + it->second + ")");
    topo.queues.push_back(std::move(qc));
  }
}

}  // namespace

std::vector<QueueConfig> default_queues(const TopologyConfig& topology) {
  const std::string& quotes = topology.quotes_exchange.name;
  const std::string& events = topology.events_exchange.name;
  // A fanout exchange ignores binding keys; a topic one needs "#" to see every symbol.
  const std::string quotes_key = topology.quotes_exchange.type == "topic" ? "#" : "";
  std::vector<QueueConfig> queues{
      {"eventd.quotes", quotes, quotes_key, QueueType::Quorum},
      {"eventd.analysis", events, "analysis.request.#", QueueType::Quorum},
      {"eventd.analysis-results", events, "analysis.complete.#", QueueType::Quorum},
      {"eventd.alerts", events, "alert.triggered.#", QueueType::Quorum},
  };
  for (const char* channel : {"discord", "email", "push"})
    queues.push_back({std::string("eventd.notify.") + channel, events,
                      std::string("notification.") + channel + ".#", QueueType::Quorum});
  return queues;
}

AmqpEndpoint parse_amqp_url(const std::string& url) {
  const std::string kind = "AMQP";
  const auto scheme_end = url.find("://");
  if (scheme_end != std::string::npos) {
    const std::string scheme = lower(std::string_view(url).substr(0, scheme_end));
    if (scheme != "amqp" && scheme != "amqps")
      throw ConfigError("unsupported scheme " + quoted(scheme) + " in the AMQP URL; expected amqp:// or amqps://");
  }
  const UrlParts parts = split_url(url, kind, "amqp");

  AmqpEndpoint ep;
  ep.tls = parts.scheme == "amqps";
  ep.host = parts.host;
  ep.port = parts.port.value_or(ep.tls ? 5671 : 5672);
  if (parts.has_userinfo) {
    const auto colon = parts.userinfo.find(':');
    ep.user = percent_decode(parts.userinfo.substr(0, colon), "AMQP URL user");
    if (colon != std::string_view::npos) {
      ep.password = percent_decode(parts.userinfo.substr(colon + 1), "AMQP URL password");
      ep.has_password = true;
    }
  }
  if (parts.path.size() > 1) {
    const std::string_view raw = parts.path.substr(1);
    if (raw.find('/') != std::string_view::npos)
      throw ConfigError("the vhost in the AMQP URL must be percent-encoded (\"/\" is %2F), got " + quoted(raw));
    ep.vhost = percent_decode(raw, "AMQP URL vhost");
  }
  return ep;
}

namespace {

// unix://[[user:]password@]/path/redis.sock[?db=N]
RedisEndpoint parse_redis_unix_url(const std::string& url) {
  std::string_view rest = std::string_view(url).substr(url.find("://") + 3);
  RedisEndpoint ep;
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) throw ConfigError("missing socket path in the Redis URL; expected unix:///path/redis.sock");
  if (slash > 0) {
    std::string_view userinfo = rest.substr(0, slash);
    if (!userinfo.ends_with('@'))
      throw ConfigError("a unix:// Redis URL has no host; expected unix:///path/redis.sock, got " + quoted(rest));
    userinfo.remove_suffix(1);
    const auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) {
      ep.password = percent_decode(userinfo, "Redis URL password");
    } else {
      ep.user = percent_decode(userinfo.substr(0, colon), "Redis URL user");
      ep.password = percent_decode(userinfo.substr(colon + 1), "Redis URL password");
    }
  }
  std::string_view path = rest.substr(slash);
  std::string_view query;
  if (const auto q = path.find('?'); q != std::string_view::npos) {
    query = path.substr(q + 1);
    path = path.substr(0, q);
  }
  if (path.size() < 2) throw ConfigError("missing socket path in the Redis URL; expected unix:///path/redis.sock");
  ep.nodes = {RedisNodeAddress::unix_socket(percent_decode(path, "Redis URL socket path"))};
  if (!query.empty()) {
    if (!query.starts_with("db="))
      throw ConfigError("unsupported parameter " + quoted(query) + " in the Redis URL; only db=N");
    const std::string_view db = query.substr(3);
    if (db.empty() || !all_digits(db) || db.size() > 9)
      throw ConfigError("invalid database " + quoted(db) + " in the Redis URL; expected an integer >= 0");
    ep.db = std::stoi(std::string(db));
  }
  return ep;
}

}  // namespace

std::vector<AmqpEndpoint> parse_amqp_urls(const std::string& urls) {
  std::vector<std::string_view> parts;
  for (std::string_view rest = urls;;) {
    const auto comma = rest.find(',');
    std::string_view part = rest.substr(0, comma);
    while (!part.empty() && std::isspace(static_cast<unsigned char>(part.front()))) part.remove_prefix(1);
    while (!part.empty() && std::isspace(static_cast<unsigned char>(part.back()))) part.remove_suffix(1);
    parts.push_back(part);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  const std::size_t n = parts.size();
  // With one URI, messages stay as they were; with several they say which one.
  const auto at = [n](std::size_t i) { return "URI " + std::to_string(i + 1) + " of " + std::to_string(n); };
  // Shape first: a comma inside a password splits its URI, and parsing the first
  // half would quote a piece of the password as a "port".
  for (std::size_t i = 0; i < n; ++i) {
    if (parts[i].empty()) {
      throw ConfigError(n == 1 ? std::string("empty AMQP URL")
                               : at(i) + " is empty (one amqp:// URI per node, separated by commas)");
    }
    if (n > 1 && parts[i].find("://") == std::string_view::npos) {
      throw ConfigError(at(i) + ": missing scheme in the AMQP URL; expected amqp://host:port/... (percent-encode "
                                "a comma inside a URI as %2C)");
    }
  }
  std::vector<AmqpEndpoint> endpoints;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string_view part = parts[i];
    AmqpEndpoint ep;
    try {
      ep = parse_amqp_url(std::string(part));
    } catch (const ConfigError& e) {
      throw ConfigError(n == 1 ? std::string(e.what()) : at(i) + ": " + e.what());
    }
    for (std::size_t j = 0; j < endpoints.size(); ++j) {
      if (lower(endpoints[j].host) == lower(ep.host) && endpoints[j].port == ep.port)
        throw ConfigError(at(i) + ": names the same node as URI " + std::to_string(j + 1) + " (" + ep.node() + ")");
    }
    if (!endpoints.empty() && ep.vhost != endpoints.front().vhost)
      throw ConfigError(at(i) + ": vhost " + quoted(ep.vhost) + " differs from URI 1's " +
                        quoted(endpoints.front().vhost) + "; the nodes of one cluster share the vhost");
    endpoints.push_back(std::move(ep));
  }
  return endpoints;
}

RedisEndpoint parse_redis_url(const std::string& url) {
  const std::string kind = "Redis";
  const auto scheme_end = url.find("://");
  if (scheme_end != std::string::npos) {
    const std::string scheme = lower(std::string_view(url).substr(0, scheme_end));
    if (scheme == "rediss")
      throw ConfigError("rediss:// (TLS) is not supported: Debian 12's hiredis has no TLS; use a local Redis "
                        "behind unix:///path/redis.sock (file permissions), or redis:// with an ACL user "
                        "(redis://user:password@host:port) on a trusted network");
    if (scheme == "unix") return parse_redis_unix_url(url);
    if (scheme != "redis")
      throw ConfigError("unsupported scheme " + quoted(scheme) + " in the Redis URL; expected redis:// or unix://");
  }
  // The authority may list several host:port (cluster seeds): split them off, and
  // parse the URL with the first, then each of the others on its own.
  std::vector<std::string> hosts;
  std::string first = url;
  if (scheme_end != std::string::npos) {
    const std::size_t start = scheme_end + 3;
    const std::size_t end = std::min(url.find_first_of("/?#", start), url.size());
    const std::size_t at = url.rfind('@', end == 0 ? 0 : end - 1);
    const std::size_t hosts_start = at != std::string::npos && at >= start ? at + 1 : start;
    std::string_view list = std::string_view(url).substr(hosts_start, end - hosts_start);
    std::size_t pos = 0;
    while (true) {
      const std::size_t comma = list.find(',', pos);
      std::string_view one = list.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
      while (!one.empty() && one.front() == ' ') one.remove_prefix(1);
      while (!one.empty() && one.back() == ' ') one.remove_suffix(1);
      if (one.empty() && list.find(',') != std::string_view::npos)
        throw ConfigError("empty host in the Redis URL's node list (node " + std::to_string(hosts.size() + 1) + ")");
      hosts.emplace_back(one);
      if (comma == std::string_view::npos) break;
      pos = comma + 1;
    }
    first = url.substr(0, hosts_start) + hosts.front() + url.substr(end);
  }
  const UrlParts parts = split_url(first, kind, "redis");

  RedisEndpoint ep;
  ep.nodes.clear();
  ep.nodes.push_back({parts.host, parts.port.value_or(6379)});
  for (std::size_t i = 1; i < hosts.size(); ++i) {
    const UrlParts node = split_url("redis://" + hosts[i], kind + " (node " + std::to_string(i + 1) + ")", "redis");
    ep.nodes.push_back({node.host, node.port.value_or(6379)});
  }
  if (parts.has_userinfo) {
    // As redis-cli: "user:password@" or "password@" (":password@": default user).
    const auto colon = parts.userinfo.find(':');
    if (colon == std::string_view::npos) {
      ep.password = percent_decode(parts.userinfo, "Redis URL password");
    } else {
      ep.user = percent_decode(parts.userinfo.substr(0, colon), "Redis URL user");
      ep.password = percent_decode(parts.userinfo.substr(colon + 1), "Redis URL password");
    }
  }
  if (parts.path.size() > 1) {
    const std::string_view db = parts.path.substr(1);
    if (!all_digits(db) || db.size() > 9)
      throw ConfigError("invalid database " + quoted(db) + " in the Redis URL; expected an integer >= 0");
    ep.db = std::stoi(std::string(db));
  }
  if (ep.nodes.size() > 1 && ep.db != 0)
    throw ConfigError("several Redis nodes are the seeds of a Redis Cluster, which has only database 0; got /" +
                      std::to_string(ep.db));
  return ep;
}

std::string RedisNodeAddress::text() const {
  if (!unix_path.empty()) return "unix:" + unix_path;
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

namespace {

// ---------------------------------------------------------------- amqp.tls and credentials

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

void check_readable(const std::string& path, const std::string& source, const std::string& pointer) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) fail(source, pointer, "cannot read " + quoted(path) + ": " + std::strerror(errno));
}

void parse_amqp_tls(const Value& doc, Config& cfg) {
  AmqpTlsConfig& tls = cfg.amqp.tls;
  tls.ca_file = string_at(doc, "/amqp/tls/caFile", "");
  tls.cert_file = string_at(doc, "/amqp/tls/certFile", "");
  tls.key_file = string_at(doc, "/amqp/tls/keyFile", "");
  if (const Value* v = find(doc, "/amqp/tls/verifyPeer")) tls.verify_peer = v->GetBool();
  if (tls.cert_file.empty() && !tls.key_file.empty())
    fail(cfg.source, "/amqp/tls/keyFile", "needs /amqp/tls/certFile, the client certificate it belongs to");
  if (!tls.cert_file.empty() && tls.key_file.empty())
    fail(cfg.source, "/amqp/tls/certFile", "needs /amqp/tls/keyFile, the certificate's private key");
  for (auto [value, pointer] : {std::pair<const std::string*, const char*>{&tls.ca_file, "/amqp/tls/caFile"},
                                {&tls.cert_file, "/amqp/tls/certFile"},
                                {&tls.key_file, "/amqp/tls/keyFile"}}) {
    if (!value->empty()) check_readable(*value, cfg.source, pointer);
  }
}

// The passwords of credentials.hpp replace the URLs' (every node's); then an amqps
// node with a client certificate and no password logs in with SASL EXTERNAL.
void apply_credentials(const Value& doc, Config& cfg, const char* credentials_directory) {
  CredentialsConfig& cr = cfg.credentials;
  cr.amqp_password_file = string_at(doc, "/credentials/amqpPasswordFile", "");
  cr.redis_password_file = string_at(doc, "/credentials/redisPasswordFile", "");
  if (const auto src = choose_secret_file(credentials_directory, kAmqpPasswordCredential, cr.amqp_password_file,
                                          cfg.source + ": /credentials/amqpPasswordFile", &file_exists)) {
    const std::string password = read_secret(*src);
    for (auto& ep : cfg.amqp.endpoints) {
      ep.password = password;
      ep.has_password = true;
    }
    cr.amqp_password_from = src->where;
  } else {
    const bool any = std::any_of(cfg.amqp.endpoints.begin(), cfg.amqp.endpoints.end(),
                                 [](const AmqpEndpoint& ep) { return ep.has_password; });
    cr.amqp_password_from = any ? "url" : "none";
  }
  if (const auto src = choose_secret_file(credentials_directory, kRedisPasswordCredential, cr.redis_password_file,
                                          cfg.source + ": /credentials/redisPasswordFile", &file_exists)) {
    cfg.redis.endpoint.password = read_secret(*src);
    cr.redis_password_from = src->where;
  } else {
    cr.redis_password_from = cfg.redis.endpoint.password.empty() ? "none" : "url";
  }
  for (auto& ep : cfg.amqp.endpoints) ep.external = ep.tls && !cfg.amqp.tls.cert_file.empty() && !ep.has_password;

  // Which of the file's own values hold a password (the environment's do not count).
  const auto holds = [&](const char* pointer, UrlKind kind) {
    const Value* v = find(doc, pointer);
    if (v != nullptr && url_holds_password({v->GetString(), v->GetStringLength()}, kind))
      cfg.passwords_in_file.emplace_back(pointer);
  };
  holds("/amqp/url", UrlKind::Amqp);
  holds("/amqp/managementUrl", UrlKind::Amqp);
  holds("/redis/url", UrlKind::Redis);
}

}  // namespace

Config parse_config(std::string_view text, const std::string& source, const char* (*getenv_fn)(const char*)) {
  rapidjson::Document doc;
  if (auto error = parse_json<rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag |
                              rapidjson::kParseValidateEncodingFlag>(doc, text)) {
    throw ConfigError(parse_error_message(text, *error, source));
  }
  check_duplicate_keys(doc, "", source);
  // A schema error may quote the value: never a URL's password.
  if (auto error = registry().validate("config", doc)) throw ConfigError(source + ": " + scrub_userinfo(*error));

  Config cfg;
  cfg.source = source;

  cfg.amqp.url = string_at(doc, "/amqp/url", cfg.amqp.url);
  cfg.amqp.prefetch = uint_at(doc, "/amqp/prefetch", cfg.amqp.prefetch);
  cfg.amqp.heartbeat_sec = uint_at(doc, "/amqp/heartbeatSec", cfg.amqp.heartbeat_sec);
  cfg.amqp.connect_timeout_ms = uint_at(doc, "/amqp/connectTimeoutMs", cfg.amqp.connect_timeout_ms);
  cfg.redis.url = string_at(doc, "/redis/url", cfg.redis.url);
  cfg.redis.connect_timeout_ms = uint_at(doc, "/redis/connectTimeoutMs", cfg.redis.connect_timeout_ms);
  cfg.redis.min_replicas = uint_at(doc, "/redis/minReplicas", cfg.redis.min_replicas);
  cfg.redis.batch_size = uint_at(doc, "/redis/batchSize", cfg.redis.batch_size);
  cfg.redis.replica_timeout_ms = uint_at(doc, "/redis/replicaTimeoutMs", cfg.redis.replica_timeout_ms);
  // A WAIT holds its connection: past connectTimeoutMs the PING behind it counts as a hung Redis.
  if (cfg.redis.min_replicas > 0 && cfg.redis.replica_timeout_ms >= cfg.redis.connect_timeout_ms)
    fail(source, "/redis/replicaTimeoutMs",
         "must be < /redis/connectTimeoutMs (" + std::to_string(cfg.redis.connect_timeout_ms) + "), got " +
             std::to_string(cfg.redis.replica_timeout_ms));

  auto& topo = cfg.topology;
  topo.quotes_exchange.name = string_at(doc, "/topology/exchanges/quotes/name", topo.quotes_exchange.name);
  topo.quotes_exchange.type = string_at(doc, "/topology/exchanges/quotes/type", topo.quotes_exchange.type);
  topo.events_exchange.name = string_at(doc, "/topology/exchanges/events/name", topo.events_exchange.name);
  topo.events_exchange.type = string_at(doc, "/topology/exchanges/events/type", topo.events_exchange.type);
  check_exchange(topo.quotes_exchange, "/topology/exchanges/quotes", source);
  check_exchange(topo.events_exchange, "/topology/exchanges/events", source);
  if (topo.quotes_exchange.name == topo.events_exchange.name)
    fail(source, "/topology/exchanges/events/name",
         "must differ from the quotes exchange name, got " + quoted(topo.events_exchange.name));
  topo.delivery_limit = uint_at(doc, "/topology/deliveryLimit", topo.delivery_limit);
  if (find(doc, "/topology/quorumInitialGroupSize"))
    topo.quorum_initial_group_size = uint_at(doc, "/topology/quorumInitialGroupSize", uint32_t{0});
  parse_queues(doc, cfg);

  auto& retry = cfg.retry;
  retry.initial_delay_ms = uint_at(doc, "/retry/initialDelayMs", retry.initial_delay_ms);
  retry.max_delay_ms = uint_at(doc, "/retry/maxDelayMs", retry.max_delay_ms);
  retry.multiplier = uint_at(doc, "/retry/multiplier", retry.multiplier);
  retry.max_attempts = uint_at(doc, "/retry/maxAttempts", retry.max_attempts);
  retry.max_age_ms = uint_at(doc, "/retry/maxAgeMs", retry.max_age_ms);
  if (retry.max_delay_ms < retry.initial_delay_ms) {
    if (find(doc, "/retry/maxDelayMs"))
      fail(source, "/retry/maxDelayMs",
           "must be >= /retry/initialDelayMs (" + std::to_string(retry.initial_delay_ms) + "), got " +
               std::to_string(retry.max_delay_ms));
    fail(source, "/retry/initialDelayMs",
         "must be <= /retry/maxDelayMs (" + std::to_string(retry.max_delay_ms) + "), got " +
             std::to_string(retry.initial_delay_ms));
  }

  cfg.idempotency_ttl_sec = uint_at(doc, "/idempotency/ttlSec", cfg.idempotency_ttl_sec);
  cfg.quote_history_length = uint_at(doc, "/quotes/historyLength", cfg.quote_history_length);
  cfg.portfolio.poll_ms = uint_at(doc, "/portfolio/pollMs", cfg.portfolio.poll_ms);
  cfg.portfolio.lease_ms = uint_at(doc, "/portfolio/leaseMs", cfg.portfolio.lease_ms);
  cfg.portfolio.claim_batch = uint_at(doc, "/portfolio/claimBatch", cfg.portfolio.claim_batch);
  if (const Value* v = find(doc, "/http/enabled")) cfg.http.enabled = v->GetBool();
  if (const Value* v = find(doc, "/http/listen")) {
    auto [host, port] = parse_listen({v->GetString(), v->GetStringLength()}, source + ": /http/listen");
    cfg.http.host = std::move(host);
    cfg.http.port = port;
  }
  for (auto [name, sink] : {std::pair<const char*, ChannelSink*>{"push", &cfg.notify.push},
                            {"email", &cfg.notify.email},
                            {"discord", &cfg.notify.discord}}) {
    const std::string base = std::string("/notify/channels/") + name;
    if (!find(doc, base.c_str())) continue;
    const std::string kind = string_at(doc, (base + "/sink").c_str(), "");
    sink->kind = kind == "webhook" ? SinkKind::Webhook : kind == "file" ? SinkKind::File : SinkKind::Redis;
    sink->url = string_at(doc, (base + "/url").c_str(), "");
    sink->path = string_at(doc, (base + "/path").c_str(), sink->kind == SinkKind::File ? sink->path : "");
    if (sink->kind == SinkKind::File && sink->path.empty()) {
      sink->path = std::string("/var/lib/eventd/spool/") + name + ".jsonl";
    }
    if (sink->kind == SinkKind::Webhook && sink->url.empty()) fail(source, base + "/url", "a webhook sink needs a url");
    if (sink->kind != SinkKind::Webhook && find(doc, (base + "/url").c_str())) fail(source, base + "/url", "only webhook sinks take a url");
    if (sink->kind != SinkKind::File && find(doc, (base + "/path").c_str())) fail(source, base + "/path", "only file sinks take a path");
  }
  cfg.notify.rate_per_minute = uint_at(doc, "/notify/rateLimit/perMinute", cfg.notify.rate_per_minute);
  cfg.notify.rate_burst = uint_at(doc, "/notify/rateLimit/burst", cfg.notify.rate_burst);
  cfg.notify.breaker_failures = uint_at(doc, "/notify/circuitBreaker/failureThreshold", cfg.notify.breaker_failures);
  cfg.notify.breaker_open_ms = uint_at(doc, "/notify/circuitBreaker/openTimeoutMs", cfg.notify.breaker_open_ms);
  cfg.notify.webhook_timeout_ms = uint_at(doc, "/notify/webhookTimeoutMs", cfg.notify.webhook_timeout_ms);
  cfg.notify.stream_length = uint_at(doc, "/notify/streamLength", cfg.notify.stream_length);
  cfg.log_level = string_at(doc, "/log/level", cfg.log_level);
  cfg.shutdown_drain_ms = uint_at(doc, "/shutdown/drainTimeoutMs", cfg.shutdown_drain_ms);
  cfg.limits.max_message_bytes = uint_at(doc, "/limits/maxMessageBytes", cfg.limits.max_message_bytes);

  // The environment wins over the file; an empty variable counts as unset.
  const auto env = [&](const char* name) -> const char* {
    const char* value = getenv_fn ? getenv_fn(name) : nullptr;
    return value && *value ? value : nullptr;
  };
  const auto endpoint = [&](const char* var, const char* pointer, std::string& url, auto parse) {
    std::string where = source + ": " + pointer;
    if (const char* value = env(var)) {
      url = value;
      where = var;
    }
    try {
      return parse(url);
    } catch (const ConfigError& e) {
      throw ConfigError(where + ": " + e.what());
    }
  };
  cfg.amqp.endpoints = endpoint("EVENTD_AMQP_URL", "/amqp/url", cfg.amqp.url, parse_amqp_urls);
  cfg.redis.endpoint = endpoint("EVENTD_REDIS_URL", "/redis/url", cfg.redis.url, parse_redis_url);
  parse_amqp_tls(doc, cfg);
  apply_credentials(doc, cfg, env("CREDENTIALS_DIRECTORY"));
  // Several instances on one host: each its own port (a unit's Environment=).
  if (const char* value = env("EVENTD_HTTP_LISTEN")) {
    auto [host, port] = parse_listen(value, "EVENTD_HTTP_LISTEN");
    cfg.http.host = std::move(host);
    cfg.http.port = port;
  }
  cfg.amqp.management_url = string_at(doc, "/amqp/managementUrl", "");
  if (const char* value = env("EVENTD_MANAGEMENT_URL")) {
    std::string_view v(value);
    if (!v.starts_with("http://") && !v.starts_with("https://")) {
      // Not quoted: the value may hold a password.
      throw ConfigError("EVENTD_MANAGEMENT_URL: expected an http:// or https:// URL");
    }
    cfg.amqp.management_url = value;
  }
  if (cfg.amqp.management_url.empty()) {
    const std::string& h = cfg.amqp.endpoint().host;
    cfg.amqp.management_url = "http://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":15672";
  }
  while (cfg.amqp.management_url.ends_with('/')) cfg.amqp.management_url.pop_back();
  return cfg;
}

Config load_config(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw ConfigError(path + ": cannot read: " + std::strerror(errno));
  std::string text;
  char buffer[65536];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) text.append(buffer, n);
  if (std::ferror(file.get())) throw ConfigError(path + ": cannot read: " + std::strerror(errno));
  Config cfg = parse_config(text, path, [](const char* name) -> const char* { return std::getenv(name); });
  struct stat st {};
  if (::fstat(fileno(file.get()), &st) == 0 && S_ISREG(st.st_mode)) {
    if (auto warning = world_readable_warning(path, st.st_mode, cfg.passwords_in_file))
      cfg.warnings.push_back(std::move(*warning));
  }
  return cfg;
}

}  // namespace eventd

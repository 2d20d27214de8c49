// The daemon's and eventctl's configuration: parsed, validated and defaulted in one
// place into plain structs. No other module reads a JSON document of the config.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace eventd {

// Thrown for any invalid configuration. what() is one line that names the offending
// field as a JSON pointer and says what was expected, e.g.
//   "eventd.jsonc: /amqp/prefetch: must be >= 1, got 0"
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class QueueType { Quorum, Classic };

// amqp://user:password@host:port/vhost (vhost percent-decoded; "%2f" is "/"), or
// amqps://... for TLS (port 5671 by default).
struct AmqpEndpoint {
  bool tls = false;  // amqps://
  std::string host = "127.0.0.1";
  int port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  // The URI had "user:password@", or a credential replaced the password. Without one,
  // an amqps node with a client certificate logs in with SASL EXTERNAL.
  bool has_password = false;
  // SASL EXTERNAL: RabbitMQ takes the user from the client certificate (set by
  // parse_config from the above and amqp.tls; `user` is sent as the identity).
  bool external = false;
  std::string vhost = "/";

  // "host:port" ("[::1]:5672"): how logs, metrics and errors name the node. Never
  // the credentials.
  std::string node() const {
    return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }
};

// host:port of one Redis node, or the path of its unix socket.
struct RedisNodeAddress {
  RedisNodeAddress() = default;
  RedisNodeAddress(std::string h, int p) : host(std::move(h)), port(p) {}
  static RedisNodeAddress unix_socket(std::string path) {
    RedisNodeAddress a("", 0);
    a.unix_path = std::move(path);
    return a;
  }

  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_path;     // set: connect to this socket, host and port unused
  std::string text() const;  // "host:port" (IPv6 hosts in brackets) or "unix:<path>"
  bool operator==(const RedisNodeAddress&) const = default;
};

// redis://[[user:]password@]host:port[,host:port...][/db] (as redis-cli: "secret@" is a
// password, "user:secret@" an ACL user and password; user and password
// percent-decoded). Several nodes are the seeds of one Redis Cluster.
// unix:///path/redis.sock[?db=N] (also with user:password@ before the path's "/").
struct RedisEndpoint {
  std::vector<RedisNodeAddress> nodes{RedisNodeAddress{}};
  int db = 0;
  std::string password;
  std::string user;  // empty: AUTH <password> as the default user
};

// TLS for amqps:// nodes (rabbitmq-c's OpenSSL socket); unused by amqp:// ones.
struct AmqpTlsConfig {
  std::string ca_file;    // PEM CA certificates to verify the broker with; empty: the system's
  std::string cert_file;  // client certificate (PEM, may hold the chain), with key_file
  std::string key_file;   // its private key (PEM, unencrypted)
  // The broker's certificate chain and host name (or IP address) are checked; false
  // only for tests against throw-away certificates.
  bool verify_peer = true;
};

struct AmqpConfig {
  // One amqp:// or amqps:// URI, or several separated by commas: the nodes of one
  // cluster, in the order given; all on the same vhost.
  std::string url = "amqp://guest:guest@127.0.0.1:5672/%2f";
  std::vector<AmqpEndpoint> endpoints{AmqpEndpoint{}};  // never empty
  // The first node: the one eventctl tries first and the management API's default host.
  const AmqpEndpoint& endpoint() const { return endpoints.front(); }
  uint16_t prefetch = 500;
  uint16_t heartbeat_sec = 30;
  uint32_t connect_timeout_ms = 5000;
  std::string management_url;  // empty in the file: http://<host>:15672
  AmqpTlsConfig tls;
};

struct RedisConfig {
  std::string url = "redis://127.0.0.1:6379/0";
  RedisEndpoint endpoint;
  uint32_t connect_timeout_ms = 5000;
  // A message is acked only once WAIT says this many replicas of its node have its
  // effects (0: no WAIT). replica_timeout_ms is WAIT's timeout.
  uint32_t min_replicas = 0;
  uint32_t replica_timeout_ms = 1000;
  // At most this many messages of one type go to one Redis node in one call.
  uint32_t batch_size = 100;
};

struct ExchangeConfig {
  std::string name;
  std::string type;  // "fanout" | "topic" | "direct"
};

// A work queue: bound to `exchange` with `binding_key`, consumed by eventd. Its
// dead-letter queue is `name + ".dlq"` and its retry queues `name + ".retry." + ms`.
struct QueueConfig {
  std::string name;
  std::string exchange;
  std::string binding_key;
  QueueType type = QueueType::Quorum;
};

struct TopologyConfig {
  ExchangeConfig quotes_exchange{"market.quotes", "fanout"};
  ExchangeConfig events_exchange{"events", "topic"};
  // Defaults (when the config names none): eventd.quotes, eventd.analysis,
  // eventd.analysis-results, eventd.alerts and eventd.notify.<channel> for
  // discord, email and push, bound as in DESIGN.md.
  std::vector<QueueConfig> queues;
  // x-delivery-limit on quorum queues: the broker's backstop for a message that
  // crashes eventd over and over. Above retry.max_attempts on purpose.
  uint32_t delivery_limit = 20;
  // x-quorum-initial-group-size on quorum queues (work queues and their .dlq): how
  // many nodes a new queue is replicated to. Absent: the broker's default.
  std::optional<uint32_t> quorum_initial_group_size;
};

struct RetryConfig {
  uint32_t initial_delay_ms = 1000;
  uint32_t max_delay_ms = 60000;
  uint32_t multiplier = 2;
  uint32_t max_attempts = 5;          // handler runs, the first included
  uint64_t max_age_ms = 3600000;      // older than this (body timestamp) -> EXPIRED
};

struct HttpConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 9464;
  bool enabled = true;
};

enum class SinkKind { Webhook, File, Redis };

struct ChannelSink {
  SinkKind kind = SinkKind::Redis;
  std::string url;   // webhook
  std::string path;  // file
};

struct NotifyConfig {
  ChannelSink push{SinkKind::Redis, {}, {}};
  ChannelSink email{SinkKind::File, {}, "/var/lib/eventd/spool/email.jsonl"};
  ChannelSink discord{SinkKind::Webhook, {}, {}};
  uint32_t rate_per_minute = 30;
  uint32_t rate_burst = 10;
  uint32_t breaker_failures = 5;
  uint32_t breaker_open_ms = 30000;
  uint32_t webhook_timeout_ms = 5000;
  uint32_t stream_length = 1000;

  const ChannelSink* sink_for(std::string_view channel) const {
    if (channel == "push") return &push;
    if (channel == "email") return &email;
    if (channel == "discord") return &discord;
    return nullptr;
  }
};

// Passwords kept out of the URLs: files named here, or systemd credentials
// ($CREDENTIALS_DIRECTORY/amqp-password, redis-password), which win over these. A
// password from either replaces the URL's for every node (see credentials.hpp).
struct CredentialsConfig {
  std::string amqp_password_file;   // /credentials/amqpPasswordFile
  std::string redis_password_file;  // /credentials/redisPasswordFile
  // Where each password came from, for the start-up log (never the password):
  // "url", "none", "$CREDENTIALS_DIRECTORY/amqp-password" or the file's path.
  std::string amqp_password_from = "url";
  std::string redis_password_from = "none";
};

// Bounds on what producers and operators send (DESIGN.md, "Security").
struct LimitsConfig {
  // A message body larger than this is dead-lettered (VALIDATION_ERROR) without being
  // parsed; eventctl refuses to publish one, or a monitor spec this large.
  uint32_t max_message_bytes = 1048576;
};

// Portfolio checks (portfolio_checks.hpp): every instance looks for due checks every
// poll_ms and claims at most claim_batch per schedule shard at a time; a claimed check
// not finished within lease_ms (its instance died or hangs) is taken over.
struct PortfolioConfig {
  uint32_t poll_ms = 250;
  uint32_t lease_ms = 10000;
  uint32_t claim_batch = 100;
};

struct Config {
  AmqpConfig amqp;
  RedisConfig redis;
  TopologyConfig topology;
  RetryConfig retry;
  HttpConfig http;
  NotifyConfig notify;
  LimitsConfig limits;
  PortfolioConfig portfolio;
  std::string log_level = "info";          // debug | info | warn | error
  uint32_t idempotency_ttl_sec = 86400;
  uint32_t quote_history_length = 1000;
  uint32_t shutdown_drain_ms = 10000;
  std::string source;                      // file the config came from, for messages
  CredentialsConfig credentials;
  // JSON pointers of the file's values that hold a password (e.g. "/amqp/url"), and
  // what load_config found worth a warning line (a world-readable file with them).
  std::vector<std::string> passwords_in_file;
  std::vector<std::string> warnings;
};

// Reads FILE (JSON with comments), validates it against schemas/config.schema.json,
// fills defaults, then applies EVENTD_AMQP_URL / EVENTD_REDIS_URL from the
// environment and the passwords of credentials.hpp. Warns (Config::warnings) when
// the file is readable by every user and holds a password. Throws ConfigError with a
// one-line message, which never holds a password.
Config load_config(const std::string& path);

// The same from text; `source` names it in messages. `env` is consulted for the URL
// overrides and $CREDENTIALS_DIRECTORY (nullptr: none), so tests need not touch the
// process environment.
Config parse_config(std::string_view text, const std::string& source,
                    const char* (*getenv_fn)(const char*) = nullptr);

// Throw ConfigError("<what>: ...") when the URL is malformed.
AmqpEndpoint parse_amqp_url(const std::string& url);
// One URI or several separated by commas (whitespace around them ignored): one
// endpoint each, in order. A bad one is named by position ("URI 2 of 3: ..."); an
// empty element, a node listed twice or a vhost other than the first URI's is an error.
std::vector<AmqpEndpoint> parse_amqp_urls(const std::string& urls);
RedisEndpoint parse_redis_url(const std::string& url);

// The default queue set of DESIGN.md for the given exchanges.
std::vector<QueueConfig> default_queues(const TopologyConfig& topology);

}  // namespace eventd

// Tests for src/credentials.cpp and how parse_config/load_config use it: which file a
// password comes from, reading it, amqp.tls, SASL EXTERNAL, and the warning for a
// world-readable config that holds a password.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "eventd/config.hpp"
#include "eventd/credentials.hpp"

namespace {

namespace fs = std::filesystem;
using eventd::ConfigError;
using eventd::UrlKind;

// A directory of its own, removed afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "eventd-cred-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& content, unsigned mode = 0600) const {
    const fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << content;
    ::chmod(p.c_str(), mode);
    return p.string();
  }
};

std::map<std::string, std::string> g_env;
const char* fake_getenv(const char* name) {
  const auto it = g_env.find(name);
  return it == g_env.end() ? nullptr : it->second.c_str();
}
struct EnvGuard {
  EnvGuard() { g_env.clear(); }
  ~EnvGuard() { g_env.clear(); }
};

eventd::Config parse(const std::string& text) { return eventd::parse_config(text, "test.jsonc", &fake_getenv); }

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

bool always(const std::string&) { return true; }
bool never(const std::string&) { return false; }

std::string read_error(const eventd::SecretSource& s) {
  try {
    eventd::read_secret(s);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("credentials: which file a password comes from") {
  using eventd::choose_secret_file;
  SUBCASE("the systemd credential wins when it exists") {
    auto s = choose_secret_file("/run/credentials/eventd.service", "amqp-password", "/etc/eventd/pw", "f: /p", &always);
    REQUIRE(s);
    CHECK(s->path == "/run/credentials/eventd.service/amqp-password");
    CHECK(s->where == "$CREDENTIALS_DIRECTORY/amqp-password");
    s = choose_secret_file("/run/creds/", "redis-password", "", "f: /p", &always);
    REQUIRE(s);
    CHECK(s->path == "/run/creds/redis-password");
  }
  SUBCASE("a credential directory without that file: the configured file") {
    auto s = choose_secret_file("/run/creds", "amqp-password", "/etc/eventd/pw", "f: /credentials/x", &never);
    REQUIRE(s);
    CHECK(s->path == "/etc/eventd/pw");
    CHECK(s->where == "f: /credentials/x (/etc/eventd/pw)");
  }
  SUBCASE("no directory (unset or empty): the configured file, or none") {
    CHECK(choose_secret_file(nullptr, "amqp-password", "/a", "p", &always)->path == "/a");
    CHECK(choose_secret_file("", "amqp-password", "/a", "p", &always)->path == "/a");
    CHECK_FALSE(choose_secret_file(nullptr, "amqp-password", "", "p", &always));
    CHECK_FALSE(choose_secret_file("/run/creds", "amqp-password", "", "p", &never));
  }
}

TEST_CASE("credentials: reading a password file") {
  TempDir dir;
  const auto src = [&](const std::string& content) {
    return eventd::SecretSource{dir.write("pw", content), "$CREDENTIALS_DIRECTORY/amqp-password"};
  };
  CHECK(eventd::read_secret(src("s3cret")) == "s3cret");
  CHECK(eventd::read_secret(src("s3cret\n")) == "s3cret");
  CHECK(eventd::read_secret(src("s3cret\r\n")) == "s3cret");
  CHECK(eventd::read_secret(src(" spaced out ")) == " spaced out ");
  CHECK(read_error(src("")) == "$CREDENTIALS_DIRECTORY/amqp-password: the password file is empty");
  CHECK(read_error(src("\n")) == "$CREDENTIALS_DIRECTORY/amqp-password: the password file is empty");
  const std::string two_lines = read_error(src("EVENTD_AMQP_URL=x\nsecret\n"));
  CHECK(two_lines == "$CREDENTIALS_DIRECTORY/amqp-password: more than one line; expected a file holding only "
                     "the password");
  CHECK(two_lines.find("secret\n") == std::string::npos);
  CHECK(read_error(src(std::string("a\0b", 3))) == "$CREDENTIALS_DIRECTORY/amqp-password: holds a NUL byte");
  CHECK(read_error(src(std::string(5000, 'x'))).find("longer than 4096 bytes") != std::string::npos);
  CHECK(read_error({(dir.path / "missing").string(), "f: /credentials/amqpPasswordFile (x)"}) ==
        "f: /credentials/amqpPasswordFile (x): cannot read: No such file or directory");
}

TEST_CASE("credentials: does a URL hold a password") {
  using eventd::url_holds_password;
  CHECK(url_holds_password("amqp://u:p@mq/", UrlKind::Amqp));
  CHECK(url_holds_password("amqps://u:p@mq", UrlKind::Amqp));
  CHECK_FALSE(url_holds_password("amqp://u@mq/", UrlKind::Amqp));
  CHECK_FALSE(url_holds_password("amqp://u:@mq/", UrlKind::Amqp));
  CHECK_FALSE(url_holds_password("amqp://mq/", UrlKind::Amqp));
  CHECK_FALSE(url_holds_password("amqp://guest:guest@127.0.0.1:5672/%2f", UrlKind::Amqp));  // the default
  CHECK(url_holds_password("amqp://guest:other@127.0.0.1/", UrlKind::Amqp));
  CHECK_FALSE(url_holds_password("amqp://mq/a@b", UrlKind::Amqp));  // in the vhost, not the userinfo
  CHECK(url_holds_password("amqp://mq1/,amqp://u:p@mq2/", UrlKind::Amqp));
  CHECK(url_holds_password("http://u:p@mgmt:15672", UrlKind::Amqp));
  CHECK(url_holds_password("redis://pw@cache:6379/0", UrlKind::Redis));
  CHECK(url_holds_password("redis://:pw@cache/0", UrlKind::Redis));
  CHECK(url_holds_password("redis://user:pw@h1:1,h2:2/0", UrlKind::Redis));
  CHECK(url_holds_password("unix://pw@/run/redis.sock", UrlKind::Redis));
  CHECK_FALSE(url_holds_password("unix:///run/redis.sock", UrlKind::Redis));
  CHECK_FALSE(url_holds_password("redis://h1:1,h2:2/0", UrlKind::Redis));
  CHECK_FALSE(url_holds_password("redis://user:@cache/0", UrlKind::Redis));
}

TEST_CASE("credentials: URLs in messages lose their userinfo") {
  CHECK(eventd::without_userinfo("http://u:pw@mgmt:15672/api") == "http://mgmt:15672/api");
  CHECK(eventd::without_userinfo("https://u:p@w@mgmt") == "https://mgmt");
  CHECK(eventd::without_userinfo("http://mgmt:15672/a@b") == "http://mgmt:15672/a@b");
  CHECK(eventd::without_userinfo("no scheme") == "no scheme");
}

TEST_CASE("credentials: whether a URL has userinfo") {
  CHECK(eventd::has_userinfo("http://u:pw@mgmt:15672"));
  CHECK(eventd::has_userinfo("https://u@mgmt"));
  CHECK_FALSE(eventd::has_userinfo("http://mgmt:15672/a@b"));
  CHECK_FALSE(eventd::has_userinfo("http://127.0.0.1:15672"));
}

TEST_CASE("credentials: messages that quote URLs lose their userinfo") {
  using eventd::scrub_userinfo;
  CHECK(scrub_userinfo(R"(/amqp/managementUrl: must match ^https?://, got "ftp://u:pw@m:1/x")") ==
        R"(/amqp/managementUrl: must match ^https?://, got "ftp://m:1/x")");
  CHECK(scrub_userinfo("a amqp://u:p@h1/%2f, amqp://u:p@h2 b") == "a amqp://h1/%2f, amqp://h2 b");
  CHECK(scrub_userinfo("no URL here: user@host") == "no URL here: user@host");
  CHECK(scrub_userinfo("http://h/path@x") == "http://h/path@x");
}

TEST_CASE("config: a schema error never quotes a URL's password") {
  std::string message;
  try {
    eventd::parse_config(R"({"amqp": {"managementUrl": "ftp://admin:Hunter2@mgmt/"}})", "t.jsonc");
  } catch (const ConfigError& e) {
    message = e.what();
  }
  CHECK(message == R"(t.jsonc: /amqp/managementUrl: must match ^https?://, got "ftp://mgmt/")");
}

TEST_CASE("credentials: the warning for a world-readable config with a password") {
  using eventd::world_readable_warning;
  CHECK_FALSE(world_readable_warning("/etc/eventd/eventd.jsonc", 0100640, {"/amqp/url"}));
  CHECK_FALSE(world_readable_warning("/etc/eventd/eventd.jsonc", 0100644, {}));
  const auto w = world_readable_warning("/etc/eventd/eventd.jsonc", 0100644, {"/amqp/url", "/redis/url"});
  REQUIRE(w);
  CHECK(w->starts_with("/etc/eventd/eventd.jsonc is readable by every user and holds a password (/amqp/url, "
                       "/redis/url): chmod 640 /etc/eventd/eventd.jsonc"));
  CHECK(w->find("credential") != std::string::npos);
  CHECK(world_readable_warning("x", 0100604, {"/redis/url"}));
}

TEST_CASE("credentials: passwords from files and systemd credentials replace the URLs'") {
  EnvGuard env;
  TempDir dir;
  SUBCASE("credentials.amqpPasswordFile: every node, and PLAIN") {
    const std::string pw = dir.write("amqp", "from-file\n");
    const auto c = parse(R"({"amqp": {"url": "amqp://eventd:old@n1/%2f,amqp://eventd@n2/%2f"},
                              "credentials": {"amqpPasswordFile": ")" + pw + R"("}})");
    REQUIRE(c.amqp.endpoints.size() == 2);
    for (const auto& ep : c.amqp.endpoints) {
      CHECK(ep.password == "from-file");
      CHECK(ep.has_password);
      CHECK(ep.user == "eventd");
    }
    CHECK(c.credentials.amqp_password_from == "test.jsonc: /credentials/amqpPasswordFile (" + pw + ")");
    CHECK(c.credentials.redis_password_from == "none");
  }
  SUBCASE("$CREDENTIALS_DIRECTORY wins over the file and the environment's URL") {
    dir.write("amqp-password", "from-systemd\n");
    dir.write("redis-password", "redis-from-systemd");
    const std::string other = dir.write("other", "from-file");
    g_env["CREDENTIALS_DIRECTORY"] = dir.path.string();
    g_env["EVENTD_AMQP_URL"] = "amqp://u:env-pw@mq/%2f";
    g_env["EVENTD_REDIS_URL"] = "redis://app:url-pw@cache:6379/0";
    const auto c = parse(R"({"credentials": {"amqpPasswordFile": ")" + other + R"("}})");
    CHECK(c.amqp.endpoint().password == "from-systemd");
    CHECK(c.amqp.endpoint().user == "u");
    CHECK(c.redis.endpoint.password == "redis-from-systemd");
    CHECK(c.redis.endpoint.user == "app");
    CHECK(c.credentials.amqp_password_from == "$CREDENTIALS_DIRECTORY/amqp-password");
    CHECK(c.credentials.redis_password_from == "$CREDENTIALS_DIRECTORY/redis-password");
  }
  SUBCASE("a credential directory without eventd's files changes nothing") {
    g_env["CREDENTIALS_DIRECTORY"] = dir.path.string();
    const auto c = parse(R"({"amqp": {"url": "amqp://u:p@mq/"}, "redis": {"url": "redis://pw@cache/0"}})");
    CHECK(c.amqp.endpoint().password == "p");
    CHECK(c.redis.endpoint.password == "pw");
    CHECK(c.credentials.amqp_password_from == "url");
    CHECK(c.credentials.redis_password_from == "url");
  }
  SUBCASE("an unreadable or empty password file is an error naming it, not its content") {
    CHECK(error_of(R"({"credentials": {"redisPasswordFile": "/nonexistent/pw"}})") ==
          "test.jsonc: /credentials/redisPasswordFile (/nonexistent/pw): cannot read: No such file or directory");
    const std::string empty = dir.write("empty", "");
    CHECK(error_of(R"({"credentials": {"amqpPasswordFile": ")" + empty + R"("}})") ==
          "test.jsonc: /credentials/amqpPasswordFile (" + empty + "): the password file is empty");
    CHECK(error_of(R"({"credentials": {"passwordFile": "x"}})") ==
          "test.jsonc: /credentials/passwordFile: unknown key; expected one of amqpPasswordFile, redisPasswordFile");
  }
}

TEST_CASE("config: amqp.tls and SASL EXTERNAL") {
  EnvGuard env;
  TempDir dir;
  const std::string ca = dir.write("ca.pem", "x");
  const std::string cert = dir.write("client.pem", "x");
  const std::string key = dir.write("client.key", "x");
  SUBCASE("defaults: verify against the system CAs, no client certificate") {
    const auto c = parse(R"({"amqp": {"url": "amqps://u:p@mq/"}})");
    CHECK(c.amqp.tls.verify_peer);
    CHECK(c.amqp.tls.ca_file.empty());
    CHECK(c.amqp.tls.cert_file.empty());
    CHECK(c.amqp.endpoint().tls);
    CHECK_FALSE(c.amqp.endpoint().external);
  }
  SUBCASE("a client certificate and no password: EXTERNAL, on the amqps nodes only") {
    const auto c = parse(R"({"amqp": {"url": "amqps://mq1/,amqps://eventd@mq2/,amqps://u:p@mq3/,amqp://mq4/",
                                      "tls": {"caFile": ")" + ca + R"(", "certFile": ")" + cert +
                         R"(", "keyFile": ")" + key + R"(", "verifyPeer": false}}})");
    REQUIRE(c.amqp.endpoints.size() == 4);
    CHECK(c.amqp.tls.ca_file == ca);
    CHECK(c.amqp.tls.cert_file == cert);
    CHECK(c.amqp.tls.key_file == key);
    CHECK_FALSE(c.amqp.tls.verify_peer);
    CHECK(c.amqp.endpoints[0].external);
    CHECK(c.amqp.endpoints[1].external);
    CHECK(c.amqp.endpoints[1].user == "eventd");
    CHECK_FALSE(c.amqp.endpoints[2].external);  // a password: PLAIN
    CHECK_FALSE(c.amqp.endpoints[3].external);  // no TLS, no certificate
    CHECK(c.credentials.amqp_password_from == "url");
  }
  SUBCASE("a password credential turns EXTERNAL into PLAIN") {
    const std::string pw = dir.write("pw", "secret");
    const auto c = parse(R"({"amqp": {"url": "amqps://eventd@mq/", "tls": {"certFile": ")" + cert +
                         R"(", "keyFile": ")" + key + R"("}}, "credentials": {"amqpPasswordFile": ")" + pw + R"("}})");
    CHECK_FALSE(c.amqp.endpoint().external);
    CHECK(c.amqp.endpoint().password == "secret");
  }
  SUBCASE("certFile and keyFile go together; every file must be readable") {
    CHECK(error_of(R"({"amqp": {"tls": {"certFile": ")" + cert + R"("}}})") ==
          "test.jsonc: /amqp/tls/certFile: needs /amqp/tls/keyFile, the certificate's private key");
    CHECK(error_of(R"({"amqp": {"tls": {"keyFile": ")" + key + R"("}}})") ==
          "test.jsonc: /amqp/tls/keyFile: needs /amqp/tls/certFile, the client certificate it belongs to");
    CHECK(error_of(R"({"amqp": {"tls": {"caFile": "/nonexistent/ca.pem"}}})") ==
          R"(test.jsonc: /amqp/tls/caFile: cannot read "/nonexistent/ca.pem": No such file or directory)");
    CHECK(error_of(R"({"amqp": {"tls": {"verifyPeer": "no"}}})") ==
          "test.jsonc: /amqp/tls/verifyPeer: expected boolean, got string");
  }
}

TEST_CASE("config: load_config warns about a world-readable file with a password") {
  TempDir dir;
  const std::string with_password = R"({"amqp": {"url": "amqp://eventd:hunter2@mq/%2f"}})";
  SUBCASE("0644 with a password in a URL: one warning naming the file and the fix") {
    const std::string path = dir.write("open.jsonc", with_password, 0644);
    const auto c = eventd::load_config(path);
    REQUIRE(c.warnings.size() == 1);
    CHECK(c.warnings[0].starts_with(path + " is readable by every user and holds a password (/amqp/url): chmod 640 " +
                                    path));
    CHECK(c.warnings[0].find("hunter2") == std::string::npos);
  }
  SUBCASE("0640 with a password, or 0644 without one: nothing to say") {
    CHECK(eventd::load_config(dir.write("closed.jsonc", with_password, 0640)).warnings.empty());
    CHECK(eventd::load_config(dir.write("plain.jsonc", R"({"amqp": {"url": "amqp://mq/"}})", 0644)).warnings.empty());
  }
}

// Password sources and the config-permission check (see credentials.hpp).
#include "eventd/credentials.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "eventd/config.hpp"

namespace eventd {

namespace {

constexpr std::size_t kMaxSecretBytes = 4096;

}  // namespace

std::optional<SecretSource> choose_secret_file(const char* credentials_directory, std::string_view name,
                                               const std::string& configured, const std::string& pointer,
                                               bool (*exists)(const std::string& path)) {
  if (credentials_directory != nullptr && *credentials_directory != '\0') {
    std::string dir = credentials_directory;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    SecretSource s{dir + "/" + std::string(name), "$CREDENTIALS_DIRECTORY/" + std::string(name)};
    if (exists != nullptr && exists(s.path)) return s;
  }
  if (!configured.empty()) return SecretSource{configured, pointer + " (" + configured + ")"};
  return std::nullopt;
}

std::string read_secret(const SecretSource& source) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(source.path.c_str(), "rb"), &std::fclose);
  if (!file) throw ConfigError(source.where + ": cannot read: " + std::strerror(errno));
  std::string text;
  char buffer[1024];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file.get())) > 0) {
    text.append(buffer, n);
    if (text.size() > kMaxSecretBytes + 2) break;
  }
  if (std::ferror(file.get())) throw ConfigError(source.where + ": cannot read: " + std::strerror(errno));
  if (text.ends_with("\r\n")) {
    text.resize(text.size() - 2);
  } else if (text.ends_with('\n')) {
    text.pop_back();
  }
  if (text.empty()) throw ConfigError(source.where + ": the password file is empty");
  if (text.size() > kMaxSecretBytes)
    throw ConfigError(source.where + ": longer than " + std::to_string(kMaxSecretBytes) +
                      " bytes; expected a file holding only the password");
  if (text.find_first_of("\r\n") != std::string::npos)
    throw ConfigError(source.where + ": more than one line; expected a file holding only the password");
  if (text.find('\0') != std::string::npos) throw ConfigError(source.where + ": holds a NUL byte");
  return text;
}

bool url_holds_password(std::string_view urls, UrlKind kind) {
  // Each comma-separated piece that has a scheme is one URL (a Redis URL's further
  // host:port seeds have none and carry no userinfo).
  for (std::size_t start = 0; start <= urls.size();) {
    std::size_t comma = urls.find(',', start);
    if (comma == std::string_view::npos) comma = urls.size();
    std::string_view part = urls.substr(start, comma - start);
    start = comma + 1;
    const auto scheme_end = part.find("://");
    if (scheme_end == std::string_view::npos) continue;
    std::string_view rest = part.substr(scheme_end + 3);
    // unix:///path has no authority; unix://pw@/path has userinfo before the "/".
    const auto at = rest.substr(0, rest.find('/')).rfind('@');
    if (at == std::string_view::npos) continue;
    std::string_view userinfo = rest.substr(0, at);
    // RabbitMQ's built-in guest:guest (loopback only) is public knowledge, and the
    // shipped config, readable by the unit's DynamicUser, spells it out.
    if (kind == UrlKind::Amqp && userinfo == "guest:guest") continue;
    const auto colon = userinfo.find(':');
    if (colon != std::string_view::npos) {
      if (colon + 1 < userinfo.size()) return true;
    } else if (kind == UrlKind::Redis && !userinfo.empty()) {
      return true;
    }
  }
  return false;
}

bool has_userinfo(std::string_view url) { return without_userinfo(url).size() != url.size(); }

std::string without_userinfo(std::string_view url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return std::string(url);
  const std::size_t start = scheme_end + 3;
  const std::size_t end = std::min(url.find('/', start), url.size());
  const auto at = url.substr(start, end - start).rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return std::string(url.substr(0, start)) + std::string(url.substr(start + at + 1));
}

std::string scrub_userinfo(std::string_view text) {
  std::string out;
  std::size_t pos = 0;
  while (true) {
    const auto scheme_end = text.find("://", pos);
    if (scheme_end == std::string_view::npos) break;
    const std::size_t start = scheme_end + 3;
    const std::size_t end = std::min(text.find_first_of("/ \"'?#,", start), text.size());
    const auto at = text.substr(start, end - start).rfind('@');
    out.append(text.substr(pos, start - pos));
    pos = at == std::string_view::npos ? start : start + at + 1;
  }
  out.append(text.substr(pos));
  return out;
}

std::optional<std::string> world_readable_warning(const std::string& path, unsigned mode,
                                                  const std::vector<std::string>& pointers) {
  if ((mode & 004u) == 0 || pointers.empty()) return std::nullopt;
  std::string where;
  for (const auto& p : pointers) where += (where.empty() ? "" : ", ") + p;
  return path + " is readable by every user and holds a password (" + where + "): chmod 640 " + path +
         " (owner and group only), or take the password out of the URL into a credential: "
         "credentials.amqpPasswordFile / redisPasswordFile, or LoadCredential=amqp-password / redis-password "
         "in the systemd unit";
}

}  // namespace eventd

// Passwords from outside the config's URLs: systemd credentials (LoadCredential=,
// read from $CREDENTIALS_DIRECTORY) and files named in the config; and the check that
// a config file holding a password is not readable by everyone. The choices are
// pure; read_secret is the one reader. Nothing here puts a secret in a message.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace eventd {

// File names in $CREDENTIALS_DIRECTORY (the credential IDs of LoadCredential=).
inline constexpr std::string_view kAmqpPasswordCredential = "amqp-password";
inline constexpr std::string_view kRedisPasswordCredential = "redis-password";

struct SecretSource {
  std::string path;   // the file to read
  std::string where;  // how messages name it, e.g. "$CREDENTIALS_DIRECTORY/amqp-password"
};

// Which file holds a password: the systemd credential `name` when
// `credentials_directory` (the variable's value; null or empty: none) has it, else
// `configured` (a path from the config, named by `pointer` in messages), else none.
// `exists` is asked about the credential's file only.
std::optional<SecretSource> choose_secret_file(const char* credentials_directory, std::string_view name,
                                               const std::string& configured, const std::string& pointer,
                                               bool (*exists)(const std::string& path));

// The file's content less one trailing line break ("\n" or "\r\n"). Throws
// ConfigError naming source.where and the reason (unreadable, empty, more than one
// line, a NUL byte), never the content.
std::string read_secret(const SecretSource& source);

enum class UrlKind { Amqp, Redis };
// Whether a URL (or a comma-separated list of them) carries a password in its
// userinfo: "user:password@" for both kinds, also a bare "password@" for Redis (as
// redis-cli reads it). Malformed text counts as long as it has such userinfo.
// RabbitMQ's default "guest:guest" is no secret and does not count.
bool url_holds_password(std::string_view urls, UrlKind kind);

// Whether the URL has userinfo ("http://u:pw@host/", "http://u@host/").
bool has_userinfo(std::string_view url);

// The URL without its userinfo ("http://u:pw@host:15672/x" -> "http://host:15672/x"),
// for messages.
std::string without_userinfo(std::string_view url);

// `text` with the userinfo of every URL in it removed, e.g. a schema error that
// quotes a value: "got \"ftp://u:pw@host/\"" -> "got \"ftp://host/\"".
std::string scrub_userinfo(std::string_view text);

// The warning for a config file whose mode lets every user read it (mode & 004)
// while it holds passwords at `pointers`; nullopt when there is nothing to say.
std::optional<std::string> world_readable_warning(const std::string& path, unsigned mode,
                                                  const std::vector<std::string>& pointers);

}  // namespace eventd

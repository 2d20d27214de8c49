// The Redis protocol's request encoding (RESP: an array of bulk strings), written
// into a caller's buffer: hiredis' own formatter builds each command with a printf-like
// sds call per argument, which cost eventd more than the rest of a quote's request
// building together. Pure functions, no I/O.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace eventd::redis {

// Appends `*<count>\r\n` and then `$<length>\r\n<bytes>\r\n` for each argument: the
// bytes hiredis' redisFormatCommandArgv writes for the same arguments.
void append_command(std::string& out, std::span<const std::string_view> args);

// The parts of one command, for commands written piece by piece: the array header for
// `count` arguments, then each argument.
void append_array_header(std::string& out, std::size_t count);
void append_bulk(std::string& out, std::string_view arg);

}  // namespace eventd::redis

// UTF-8 checks for text that reaches logs, headers and JSON output: producers can
// send any bytes, and one invalid byte must not make a log line or a header unreadable.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace eventd {

bool valid_utf8(std::string_view text);
// Invalid sequences become U+FFFD; valid text is returned unchanged.
std::string sanitize_utf8(std::string_view text);
// At most `max_chars` code points, never splitting one (input assumed valid).
std::string truncate_utf8_chars(std::string_view text, std::size_t max_chars);
// Standard base64 (RFC 4648) for bytes that are not text.
std::string base64(std::string_view bytes);

}  // namespace eventd

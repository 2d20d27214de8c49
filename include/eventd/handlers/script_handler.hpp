// What the handlers whose effects are one Redis function share: the function
// registered as a library and called in batches (function_library.hpp), the
// idempotency TTL, and the notification every such handler may derive for each
// channel of the user's monitor.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/handlers/function_library.hpp"
#include "eventd/redis_client.hpp"

namespace eventd {

class ScriptHandler : public Handler {
 protected:
  // Registers `function` with `redis`; construct before redis.start().
  ScriptHandler(uv_loop_t* loop, RedisClient& redis, const Config& config, const FunctionSpec& function);

  RedisClient& redis_;
  std::unique_ptr<redis::Batcher> batch_;
  std::string ttl_;  // the first shared argument of every outbox function
};

// Lua: notify_channels(monitor_key, head) -> one notification per channel listed in the
// monitor hash, each `head` .. "<channel>"}. Reads only: call it before any write.
inline constexpr const char* kNotifyChannelsLua = R"lua(
local function notify_channels(monitor_key, head)
  local out = {}
  local channels = redis.call('HGET', monitor_key, 'channels')
  if channels then
    for _, channel in ipairs(cjson.decode(channels)) do out[#out + 1] = head .. cjson.encode(channel) .. '}' end
  end
  return out
end
)lua";

struct NotificationText {
  int64_t timestamp_ms = 0;
  std::string_view user;
  std::string_view kind;   // "alert", "analysis"
  std::string_view title;
  std::string_view body;
  std::string_view correlation_id;            // omitted when empty
  std::string_view data_json;                 // a JSON object embedded as it is; omitted when empty
};
// The notification JSON up to its channel value ({..., "channel":), for notify_channels:
// written here once, exactly, rather than re-encoded by Lua's cjson.
std::string notification_head(const NotificationText& n);

}  // namespace eventd

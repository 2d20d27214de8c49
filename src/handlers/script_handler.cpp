// Shared by the script handlers (see script_handler.hpp).
#include "eventd/handlers/script_handler.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>


namespace eventd {

ScriptHandler::ScriptHandler(uv_loop_t* loop, RedisClient& redis, const Config& config, const FunctionSpec& function)
    : redis_(redis),
      batch_(register_function(loop, redis, function, config.redis.batch_size)),
      ttl_(std::to_string(config.idempotency_ttl_sec)) {}

std::string notification_head(const NotificationText& n) {
  rapidjson::StringBuffer buf;
  rapidjson::Writer<rapidjson::StringBuffer> w(buf);
  auto str = [&w](std::string_view v) { w.String(v.data(), static_cast<rapidjson::SizeType>(v.size())); };
  w.StartObject();
  w.Key("type");
  w.String("notification");
  w.Key("timestamp");
  w.Int64(n.timestamp_ms);
  w.Key("userId");
  str(n.user);
  w.Key("kind");
  str(n.kind);
  w.Key("title");
  str(n.title);
  w.Key("body");
  str(n.body);
  if (!n.correlation_id.empty()) {
    w.Key("correlationId");
    str(n.correlation_id);
  }
  if (!n.data_json.empty()) {
    w.Key("data");
    w.RawValue(n.data_json.data(), n.data_json.size(), rapidjson::kObjectType);
  }
  w.Key("channel");
  w.Null();  // a placeholder, cut off below: the Writer needs a value to stay valid
  w.EndObject();
  std::string head(buf.GetString(), buf.GetSize());
  head.resize(head.size() - std::string_view("null}").size());
  return head;
}

}  // namespace eventd

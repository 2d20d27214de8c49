// analysis_request: technical analysis of a symbol's stored price history, published
// as analysis_complete to analysis.complete.<userId> and, for request-reply, to the
// request's reply_to queue with its correlation_id. analysis_complete: the latest
// analysis per user and symbol is stored and the user notified.
#pragma once

#include <string>
#include <string_view>

#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/indicators.hpp"
#include "eventd/handlers/script_handler.hpp"
#include "eventd/redis_client.hpp"

namespace eventd {

// The analysis_complete body (JSON) for a request and its result.
std::string analysis_complete_json(const rapidjson::Value& request, const Analysis& analysis,
                                   std::string_view workflow_id, int64_t now_ms);

class AnalysisRequestHandler : public ScriptHandler {
 public:
  AnalysisRequestHandler(uv_loop_t* loop, RedisClient& redis, const Config& config);
  void handle(const Message& message, HandlerDone done) override;

 private:
  std::string newest_;  // LRANGE start of the newest historyLength prices

};

class AnalysisCompleteHandler : public ScriptHandler {
 public:
  AnalysisCompleteHandler(uv_loop_t* loop, RedisClient& redis, const Config& config);
  void handle(const Message& message, HandlerDone done) override;

};

}  // namespace eventd

// quote_update: latest quote per symbol (stored_quote.hpp) and a capped price history,
// written together with the idempotency key by a Redis function, batched: a cheap one
// for symbols without rules, one that also evaluates the symbol's alert rules for the
// others (quote_update.cpp). Its keys: keys.hpp, all under {<SYMBOL>}.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "eventd/config.hpp"
#include "eventd/handler.hpp"
#include "eventd/handlers/script_handler.hpp"
#include "eventd/redis/call_layout.hpp"
#include "eventd/redis_client.hpp"

namespace eventd {

// The history is trimmed back to quotes.historyLength once it is this long: between
// the two it holds a few more prices than asked for, and a push costs no LTRIM.
uint32_t history_trim_at(uint32_t history_length);

// One quote as the cheap function's batch item (call_layout.hpp), the one spelling of
// what that function is sent: keys idempotency, quote, history; the price; the change
// and timestamp as the run's arguments, made only if the quote leads its run; ranked by
// timestamp, so the newest leads.
struct UnwatchedQuoteItem {
  std::vector<std::string> keys;
  std::vector<std::string> args;
  redis::RunArgs run_args;
  int64_t rank;
};
UnwatchedQuoteItem unwatched_quote_item(std::string idempotency_key, std::string_view symbol, double price,
                                        double change, int64_t timestamp);

class QuoteUpdateHandler : public ScriptHandler {
 public:
  // Registers its function with `redis`; construct before redis.start().
  QuoteUpdateHandler(uv_loop_t* loop, RedisClient& redis, const Config& config);
  void handle(const Message& message, HandlerDone done) override;
  // The cheap function's Lua, answer codes spelled in (public for its unit test).
  static const std::string& unwatched_lua();

 private:
  static constexpr std::size_t kMaxWatched = 65536;
  struct StringHash {  // lookups by string_view, without a std::string per quote
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  static const std::string& watched_lua();
  // `symbol`: the body's, a view into it.
  void send_watched(const rapidjson::Value& body, std::string_view symbol, std::string_view idempotency,
                    int64_t timestamp, HandlerDone done);
  void remember_watched(std::string_view symbol);

  std::unique_ptr<redis::Batcher> unwatched_;  // quotes of symbols without rules
  // Symbols whose quotes found rules lately: theirs skip the cheap function.
  std::unordered_set<std::string, StringHash, std::equal_to<>> watched_;
};

// Maps a message's result from a handler's function (1 applied, 0 duplicate, {1|2,
// derived...}) or its failure.
HandlerResult script_result(const redisReply* reply);

}  // namespace eventd

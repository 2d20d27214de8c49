// The KEYS and ARGV of one function call over a batch of items (batch.hpp): the one
// place that spells the layout the Lua side reads.
//
// Plain: KEYS are the items' keys one after another; ARGV is the item count, the
// shared arguments, then the items' arguments one after another.
//
// With group keys (the last `group_keys` of each item's keys, e.g. a symbol's quote
// and history keys): items whose group keys are equal form a run, in the order their
// first item came and each run keeping its items' order, and a run's group keys are
// sent once. A run also has a lead, its item of the highest rank (of equal ranks the
// last; e.g. a symbol's newest quote), whose run arguments are sent once for the run
// (the other items' are not sent). KEYS are each item's own keys (the others), in call
// order, then each run's group keys. ARGV is the item count, the shared arguments, the
// run count R, then per run its length, its lead's place in it (from 1) and the lead's
// run arguments, then the items' arguments in call order. Redis parses, and the
// function copies into Lua, four strings fewer per quote of a busy symbol.
//
// Results come back in call order: result i belongs to items[order[i]].
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace eventd::redis {

// A run's arguments, made only for its lead: most quotes of a busy symbol lead no run,
// and formatting their arguments would be work thrown away.
using RunArgs = std::function<std::vector<std::string>()>;

struct CallItem {
  std::span<const std::string> keys;
  std::span<const std::string> args;
  const RunArgs* run_args = nullptr;  // with group keys: called if the item leads its run
  int64_t rank = 0;                   // with group keys: the highest leads its run
};

class CallLayout {
 public:
  CallLayout(std::span<const CallItem> items, std::span<const std::string> shared_args, std::size_t group_keys);
  // keys and args view into the items, the shared arguments and this object.
  CallLayout(const CallLayout&) = delete;
  CallLayout& operator=(const CallLayout&) = delete;

  const std::vector<std::string_view>& keys() const { return keys_; }
  const std::vector<std::string_view>& args() const { return args_; }
  const std::vector<std::size_t>& order() const { return order_; }

 private:
  std::vector<std::size_t> order_;
  std::vector<std::string> numbers_;  // the count, run lengths and leads, which args_ views
  std::vector<std::vector<std::string>> run_args_;  // the leads' run arguments, which args_ views
  std::vector<std::string_view> keys_;
  std::vector<std::string_view> args_;
};

}  // namespace eventd::redis

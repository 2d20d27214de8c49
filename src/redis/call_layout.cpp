// A batch's function call, laid out (see call_layout.hpp).
#include "eventd/redis/call_layout.hpp"

#include <algorithm>

namespace eventd::redis {
namespace {

bool same_group(const CallItem& a, const CallItem& b, std::size_t group_keys) {
  return std::equal(a.keys.end() - static_cast<std::ptrdiff_t>(group_keys), a.keys.end(),
                    b.keys.end() - static_cast<std::ptrdiff_t>(group_keys));
}

struct Run {
  std::size_t first;   // its first item
  std::size_t length;  // items
  std::size_t lead;    // the item of the highest rank, the last of equals
  std::size_t lead_place = 0;  // the lead's place in the run, from 1
};

}  // namespace

CallLayout::CallLayout(std::span<const CallItem> items, std::span<const std::string> shared_args,
                       std::size_t group_keys) {
  std::size_t key_count = 0, arg_count = 0;
  for (const CallItem& item : items) {
    key_count += item.keys.size();
    arg_count += item.args.size();
  }
  order_.reserve(items.size());
  std::vector<Run> runs;
  if (group_keys == 0) {
    for (std::size_t i = 0; i < items.size(); ++i) order_.push_back(i);
  } else {
    // Each item's run, by a search of the runs so far: a batch holds a few symbols, and
    // at most redis.batchSize items.
    std::vector<std::size_t> run_of(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      std::size_t r = 0;
      while (r < runs.size() && !same_group(items[runs[r].first], items[i], group_keys)) ++r;
      if (r == runs.size()) runs.push_back({i, 0, i});
      Run& run = runs[r];
      if (items[i].rank >= items[run.lead].rank) run.lead = i;
      run_of[i] = r;
      ++run.length;
    }
    std::vector<std::size_t> start(runs.size());  // each run's first place in the call
    for (std::size_t r = 0, at = 0; r < runs.size(); at += runs[r].length, ++r) start[r] = at;
    std::vector<std::size_t> next = start;  // where each run's next item goes
    order_.resize(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::size_t r = run_of[i], at = next[r]++;
      order_[at] = i;
      if (i == runs[r].lead) runs[r].lead_place = at - start[r] + 1;
    }
  }

  // The leads' run arguments, made now: args_ views them, and counts them first.
  run_args_.reserve(runs.size());
  for (const Run& run : runs) {
    const RunArgs* make = items[run.lead].run_args;
    run_args_.push_back(make != nullptr && *make ? (*make)() : std::vector<std::string>{});
    arg_count += run_args_.back().size();
  }

  // Reserved up front: args_ views these strings, which must not move.
  numbers_.reserve(2 + 2 * runs.size());
  numbers_.push_back(std::to_string(items.size()));
  keys_.reserve(key_count);
  args_.reserve(2 + shared_args.size() + 2 * runs.size() + arg_count);
  args_.push_back(numbers_.back());
  args_.insert(args_.end(), shared_args.begin(), shared_args.end());
  if (group_keys != 0) {
    numbers_.push_back(std::to_string(runs.size()));
    args_.push_back(numbers_.back());
    for (std::size_t r = 0; r < runs.size(); ++r) {
      numbers_.push_back(std::to_string(runs[r].length));
      args_.push_back(numbers_.back());
      numbers_.push_back(std::to_string(runs[r].lead_place));
      args_.push_back(numbers_.back());
      args_.insert(args_.end(), run_args_[r].begin(), run_args_[r].end());
    }
  }
  for (std::size_t i : order_) {
    const CallItem& item = items[i];
    keys_.insert(keys_.end(), item.keys.begin(), item.keys.end() - static_cast<std::ptrdiff_t>(group_keys));
    args_.insert(args_.end(), item.args.begin(), item.args.end());
  }
  for (const Run& run : runs) {
    const CallItem& item = items[run.first];
    keys_.insert(keys_.end(), item.keys.end() - static_cast<std::ptrdiff_t>(group_keys), item.keys.end());
  }
}

}  // namespace eventd::redis

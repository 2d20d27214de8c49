// A batch's function call, laid out (see call_layout.hpp).
#include "eventd/redis/call_layout.hpp"

#include <algorithm>

namespace eventd::redis {
namespace {

bool same_group(const CallItem& a, const CallItem& b, std::size_t group_keys) {
  return std::equal(a.keys.end() - static_cast<std::ptrdiff_t>(group_keys), a.keys.end(),
                    b.keys.end() - static_cast<std::ptrdiff_t>(group_keys));
}

}  // namespace

CallLayout::CallLayout(std::span<const CallItem> items, std::span<const std::string> shared_args,
                       std::size_t group_keys) {
  std::size_t key_count = 0, arg_count = 0;
  for (const CallItem& item : items) {
    key_count += item.keys.size();
    arg_count += item.args.size();
  }
  order_.reserve(items.size());
  std::vector<std::size_t> run_first, run_length;  // per run: its first item, its length
  if (group_keys == 0) {
    for (std::size_t i = 0; i < items.size(); ++i) order_.push_back(i);
  } else {
    // Each item's run, by a search of the runs so far: a batch holds a few symbols, and
    // at most redis.batchSize items.
    std::vector<std::size_t> run_of(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      std::size_t r = 0;
      while (r < run_first.size() && !same_group(items[run_first[r]], items[i], group_keys)) ++r;
      if (r == run_first.size()) {
        run_first.push_back(i);
        run_length.push_back(0);
      }
      run_of[i] = r;
      ++run_length[r];
    }
    std::vector<std::size_t> next(run_first.size());  // where each run's next item goes
    for (std::size_t r = 0, at = 0; r < run_first.size(); at += run_length[r], ++r) next[r] = at;
    order_.resize(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) order_[next[run_of[i]]++] = i;
  }

  // Reserved up front: args_ views these strings, which must not move.
  numbers_.reserve(2 + run_length.size());
  numbers_.push_back(std::to_string(items.size()));
  keys_.reserve(key_count);
  args_.reserve(2 + shared_args.size() + run_length.size() + arg_count);
  args_.push_back(numbers_.back());
  args_.insert(args_.end(), shared_args.begin(), shared_args.end());
  if (group_keys != 0) {
    numbers_.push_back(std::to_string(run_length.size()));
    args_.push_back(numbers_.back());
    for (std::size_t length : run_length) {
      numbers_.push_back(std::to_string(length));
      args_.push_back(numbers_.back());
    }
  }
  for (std::size_t i : order_) {
    const CallItem& item = items[i];
    keys_.insert(keys_.end(), item.keys.begin(), item.keys.end() - static_cast<std::ptrdiff_t>(group_keys));
    args_.insert(args_.end(), item.args.begin(), item.args.end());
  }
  for (std::size_t first : run_first) {
    const CallItem& item = items[first];
    keys_.insert(keys_.end(), item.keys.end() - static_cast<std::ptrdiff_t>(group_keys), item.keys.end());
  }
}

}  // namespace eventd::redis

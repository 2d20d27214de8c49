// The KEYS and ARGV of a batch's function call (redis/call_layout.hpp).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "eventd/redis/call_layout.hpp"

using eventd::redis::CallItem;
using eventd::redis::CallLayout;
using eventd::redis::RunArgs;

namespace {

using Views = std::vector<std::string_view>;

struct Batch {
  std::vector<std::vector<std::string>> keys, args;
  std::vector<CallItem> items() const {
    std::vector<CallItem> out;
    for (std::size_t i = 0; i < keys.size(); ++i) out.push_back({keys[i], args[i]});
    return out;
  }
};

}  // namespace

TEST_CASE("call layout: plain, the items' keys and arguments one after another") {
  const Batch b{{{"a1", "a2"}, {"b1", "b2"}}, {{"x"}, {"y"}}};
  const std::vector<std::string> shared{"60"};
  const auto items = b.items();
  const CallLayout call(items, shared, 0);
  CHECK(call.keys() == Views{"a1", "a2", "b1", "b2"});
  CHECK(call.args() == Views{"2", "60", "x", "y"});
  CHECK(call.order() == std::vector<std::size_t>{0, 1});
}

TEST_CASE("call layout: group keys once per run, runs in order of first appearance, each in its items' order") {
  // idem, quote, history as the quote handler gives them.
  const Batch b{{{"i1", "qA", "hA"}, {"i2", "qB", "hB"}, {"i3", "qA", "hA"}, {"i4", "qA", "hB"}, {"i5", "qB", "hB"}},
                {{"1", "t1"}, {"2", "t2"}, {"3", "t3"}, {"4", "t4"}, {"5", "t5"}}};
  const std::vector<std::string> shared{"60", "3"};
  const auto items = b.items();
  const CallLayout call(items, shared, 2);
  // Runs: (qA, hA): 1, 3; (qB, hB): 2, 5; (qA, hB), equal in one key only: 4. Of equal
  // ranks the last leads: per run its length and its lead's place.
  CHECK(call.order() == std::vector<std::size_t>{0, 2, 1, 4, 3});
  CHECK(call.keys() == Views{"i1", "i3", "i2", "i5", "i4", "qA", "hA", "qB", "hB", "qA", "hB"});
  CHECK(call.args() == Views{"5", "60", "3", "3", "2", "2", "2", "2", "1", "1", "1", "t1", "3", "t3", "2", "t2", "5",
                             "t5", "4", "t4"});
}

TEST_CASE("call layout: a run's lead is its item of the highest rank, and only its run arguments are made and go") {
  const Batch b{{{"i1", "q"}, {"i2", "q"}, {"i3", "q"}, {"i4", "r"}}, {{"p1"}, {"p2"}, {"p3"}, {"p4"}}};
  const std::vector<std::vector<std::string>> run_args{{"c1", "999"}, {"c2", "1000"}, {"c3", "1000"}, {"c4", "5"}};
  const std::vector<int64_t> ranks{999, 1000, 1000, 5};
  std::vector<int> made(run_args.size(), 0);  // how often each item's run arguments were made
  std::vector<RunArgs> makers;
  for (std::size_t i = 0; i < run_args.size(); ++i) {
    makers.emplace_back([&, i] {
      ++made[i];
      return run_args[i];
    });
  }
  std::vector<CallItem> items = b.items();
  for (std::size_t i = 0; i < items.size(); ++i) {
    items[i].run_args = &makers[i];
    items[i].rank = ranks[i];
  }
  const CallLayout call(items, {}, 1);
  // Run q: i1, i2, i3, led by i3 (1000, the later of the two); run r: i4.
  CHECK(call.keys() == Views{"i1", "i2", "i3", "i4", "q", "r"});
  CHECK(call.args() == Views{"4", "2", "3", "3", "c3", "1000", "1", "1", "c4", "5", "p1", "p2", "p3", "p4"});
  CHECK(made == std::vector<int>{0, 0, 1, 1});

  items[0].rank = 2000;  // now the first leads
  const CallLayout again(items, {}, 1);
  CHECK(again.args() == Views{"4", "2", "3", "1", "c1", "999", "1", "1", "c4", "5", "p1", "p2", "p3", "p4"});
  CHECK(made == std::vector<int>{1, 0, 1, 2});
}

TEST_CASE("call layout: a lead without run arguments sends none") {
  const Batch b{{{"i1", "q"}, {"i2", "q"}}, {{"p1"}, {"p2"}}};
  const RunArgs empty;
  std::vector<CallItem> items = b.items();
  items[1].run_args = &empty;  // set but empty; items[0] has none at all
  const CallLayout call(items, {}, 1);
  CHECK(call.args() == Views{"2", "1", "2", "2", "p1", "p2"});
}

TEST_CASE("call layout: one item, and an item whose keys are all group keys but one") {
  const Batch b{{{"i1", "q", "h"}}, {{"p", "c", "t"}}};
  const std::vector<std::string> shared;
  const auto items = b.items();
  const CallLayout call(items, shared, 2);
  CHECK(call.keys() == Views{"i1", "q", "h"});
  CHECK(call.args() == Views{"1", "1", "1", "1", "p", "c", "t"});
  CHECK(call.order() == std::vector<std::size_t>{0});
}

// Tests for include/eventd/node_rotation.hpp: which broker node next, and the wait.
#include <doctest/doctest.h>

#include <set>
#include <vector>

#include "eventd/node_rotation.hpp"

using eventd::Backoff;
using eventd::NodeRotation;

namespace {

bool hop(uint32_t ms) { return ms >= NodeRotation::kHopMs * 8 / 10 && ms <= NodeRotation::kHopMs * 12 / 10; }

}  // namespace

TEST_CASE("node_rotation: starts at a random node, each node sometimes") {
  std::set<std::size_t> starts;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const NodeRotation r(3, seed);
    CHECK(r.current() < 3);
    starts.insert(r.current());
  }
  CHECK(starts.size() == 3);
  CHECK(NodeRotation(1, 7).current() == 0);
}

TEST_CASE("node_rotation: after a failure the next node in turn, wrapping around") {
  NodeRotation r(3, 11);
  const std::size_t start = r.current();
  std::vector<std::size_t> order;
  for (int i = 0; i < 7; ++i) order.push_back(r.failed().node);
  CHECK(order == std::vector<std::size_t>{(start + 1) % 3, (start + 2) % 3, start, (start + 1) % 3,
                                          (start + 2) % 3, start, (start + 1) % 3});
  CHECK(r.current() == order.back());
  CHECK(r.failures() == 7);
}

TEST_CASE("node_rotation: a short hop within a round, the backoff once every node failed in a row") {
  NodeRotation r(3, 5, Backoff(250, 30000, 9));
  SUBCASE("rounds: hop, hop, backoff; the backoff grows per round and caps") {
    CHECK(hop(r.failed().delay_ms));
    CHECK(hop(r.failed().delay_ms));
    const uint32_t first = r.failed().delay_ms;  // every node failed once
    CHECK(first >= 200);
    CHECK(first <= 300);
    CHECK(hop(r.failed().delay_ms));
    CHECK(hop(r.failed().delay_ms));
    const uint32_t second = r.failed().delay_ms;
    CHECK(second >= 400);
    CHECK(second <= 600);
    uint32_t last = 0;
    for (int i = 0; i < 60; ++i) last = r.failed().delay_ms;  // 20 rounds
    CHECK(last >= 24000);
    CHECK(last <= 36000);
  }
  SUBCASE("a success starts a new round with the shortest waits") {
    for (int i = 0; i < 6; ++i) r.failed();
    r.succeeded();
    CHECK(r.failures() == 0);
    const std::size_t lost = r.current();
    const auto next = r.failed();  // the connection is lost: another node, at once
    CHECK(next.node == (lost + 1) % 3);
    CHECK(hop(next.delay_ms));
    r.failed();
    const uint32_t backoff = r.failed().delay_ms;
    CHECK(backoff >= 200);
    CHECK(backoff <= 300);
  }
  SUBCASE("never spins: every wait is at least the hop") {
    for (int i = 0; i < 100; ++i) CHECK(r.failed().delay_ms >= NodeRotation::kHopMs * 8 / 10);
  }
}

TEST_CASE("node_rotation: one node is the plain backoff") {
  NodeRotation r(1, 3, Backoff(250, 1000, 4));
  for (int i = 0; i < 3; ++i) CHECK(r.failed().node == 0);
  const uint32_t fourth = r.failed().delay_ms;  // 250, 500, 1000, then capped
  CHECK(fourth >= 800);
  CHECK(fourth <= 1200);
  r.succeeded();
  const uint32_t again = r.failed().delay_ms;
  CHECK(again >= 200);
  CHECK(again <= 300);
}

TEST_CASE("node_rotation: two nodes alternate, backing off after each pair") {
  NodeRotation r(2, 1, Backoff(250, 30000, 2));
  const std::size_t start = r.current();
  const auto a = r.failed();
  CHECK(a.node == 1 - start);
  CHECK(hop(a.delay_ms));
  const auto b = r.failed();
  CHECK(b.node == start);
  CHECK(b.delay_ms >= 200);
  CHECK(b.delay_ms <= 300);
}

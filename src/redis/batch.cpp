// Per-node batches of one Redis function (see batch.hpp).
#include "eventd/redis/batch.hpp"

#include <hiredis/hiredis.h>

#include <string_view>

namespace eventd::redis {
namespace {

bool is_redirect(const redisReply* r) {
  if (r == nullptr || r->type != REDIS_REPLY_ERROR) return false;
  std::string_view e(r->str, r->len);
  return e.starts_with("MOVED ") || e.starts_with("ASK ") || e.starts_with("TRYAGAIN") || e.starts_with("CROSSSLOT");
}

}  // namespace

Batcher::Batcher(uv_loop_t* loop, RedisClient& redis, std::string function, std::size_t max_items,
                 std::size_t group_keys)
    : redis_(redis), function_(std::move(function)), max_items_(max_items == 0 ? 1 : max_items), group_keys_(group_keys) {
  check_.init(this, [loop](uv_check_t* c) { return uv_check_init(loop, c); });
}

bool Batcher::add(Strings key_list, Strings arg_list, Callback done, RunArgs run_args, int64_t rank) {
  std::vector<std::string> keys = std::move(key_list).take();
  std::vector<std::string> args = std::move(arg_list).take();
  if (keys.empty()) return false;
  // A cluster refuses (CROSSSLOT) a call whose declared keys span slots, even on one
  // node: there a batch holds the messages of one slot.
  const auto [node, slot] = redis_.home_of(keys.front());
  if (node == nullptr) return false;
  const Group group{node, slot};
  Items& items = waiting_[group];
  items.push_back({std::move(keys), std::move(args), std::move(done), std::move(run_args), rank});
  if (items.size() >= max_items_) {
    Items full = std::move(items);
    waiting_.erase(group);
    send(group, std::move(full));
  } else if (in_flight(group) < kMaxInFlight && check_.initialised()) {
    uv_check_start(check_.get(), on_check);
  }  // else it goes when one of the group's calls answers
  return true;
}

void Batcher::on_check(uv_check_t* handle) {
  auto* self = owner_of<Batcher>(handle);
  if (self == nullptr) return;
  uv_check_stop(handle);
  self->flush();
}

unsigned Batcher::in_flight(const Group& group) const {
  const auto it = in_flight_.find(group);
  return it == in_flight_.end() ? 0 : it->second;
}

void Batcher::answered(const Group& group) {
  const auto it = in_flight_.find(group);
  if (it != in_flight_.end() && --it->second == 0) in_flight_.erase(it);
}

void Batcher::flush() {
  std::vector<std::pair<Group, Items>> ready;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (in_flight(it->first) < kMaxInFlight) {
      ready.emplace_back(it->first, std::move(it->second));
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
  for (auto& [group, items] : ready) send(group, std::move(items));
}

void Batcher::send(Group group, Items items) {
  auto batch = std::make_shared<Items>(std::move(items));
  std::vector<CallItem> call_items;
  call_items.reserve(batch->size());
  for (const Item& item : *batch) call_items.push_back({item.keys, item.args, &item.run_args, item.rank});
  CallLayout call(call_items, shared_args_, group_keys_);
  ++calls_;
  const bool alone = batch->size() == 1;
  ++in_flight_[group];
  bool sent = redis_.fcall(
      function_, call.keys(), call.args(),
      [this, batch, group, order = call.order()](const redisReply* r) {
        // Answered: the group's waiting batch may go, at the end of this loop pass.
        answered(group);
        if (waiting_.count(group) != 0 && check_.initialised()) uv_check_start(check_.get(), on_check);
        if (r != nullptr && r->type == REDIS_REPLY_ARRAY && r->elements == batch->size()) {
          for (std::size_t i = 0; i < order.size(); ++i) (*batch)[order[i]].done(r->element[i]);
          return;
        }
        if (batch->size() > 1 && is_redirect(r)) {
          // The slots of this batch are no longer on one node: each item on its own.
          for (Item& item : *batch) {
            auto one = std::make_shared<Item>(std::move(item));
            if (!send_alone(one)) one->done(nullptr);
          }
          return;
        }
        for (Item& item : *batch) item.done(r != nullptr && r->type == REDIS_REPLY_ARRAY ? nullptr : r);
      },
      /*follow_redirects=*/alone);
  if (!sent) {
    answered(group);
    for (Item& item : *batch) item.done(nullptr);
  }
}

bool Batcher::send_alone(std::shared_ptr<Item> item) {
  const CallItem one{item->keys, item->args, &item->run_args, item->rank};
  CallLayout call({&one, 1}, shared_args_, group_keys_);
  ++calls_;
  return redis_.fcall(function_, call.keys(), call.args(), [item](const redisReply* r) {
    if (r != nullptr && r->type == REDIS_REPLY_ARRAY && r->elements == 1) return item->done(r->element[0]);
    item->done(r != nullptr && r->type == REDIS_REPLY_ARRAY ? nullptr : r);
  });
}

}  // namespace eventd::redis

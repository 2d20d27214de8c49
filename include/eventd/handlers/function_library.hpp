// A handler's Redis function: its Lua registered as a Functions library (loaded once
// per node connection, not sent on every call) and called through a Batcher, so the
// messages of one loop pass that live on one node cost one FCALL.
//
// The handler's Lua defines `local function <name>(K, A, S)` for ONE message: K its
// keys, A its arguments, S the arguments shared by the batch (e.g. the TTL); K and A
// are reused for the next message, so the function must not keep them; S is the
// call's own table, where a function may keep what it derives from it. The
// library wraps it: each message runs in a pcall of its own, so an error is that
// message's result (an error element) and the others go on. Flagged
// allow-cross-slot-keys, for a standalone Redis, where a batch holds the keys of many
// slots (a Redis Cluster refuses declared keys of several slots whatever the flag: there
// the Batcher keeps a batch to one slot).
//
// A hot function may instead take the whole call (`whole_batch`): `<name>(keys, args)`
// with the Batcher's layout (args[1] the count, then the shared arguments, then each
// message's), returning one result per message. It saves the wrapper's pcall and
// copies, and must then never raise (an error would fail every message of the call):
// it runs its commands with redis.pcall and answers an error as that message's result.
//
// Either kind may take keys shared by runs of messages once per run (`group_keys`,
// call_layout.hpp), with the run arguments of each run's lead: the Batcher then puts
// the messages of a run next to each other, and the results are mapped back. A
// per-message function then finds its own keys first in K and its run's group keys
// after them, and in A its own arguments, then its run's (`run_args` of them, which
// every message must make).
#pragma once

#include <uv.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "eventd/redis/batch.hpp"
#include "eventd/redis_client.hpp"

namespace eventd {

struct FunctionSpec {
  std::string_view name;     // Lua identifier of the per-message function
  std::string prelude;       // Lua the function uses (local helpers)
  std::string_view body;     // defines local function <name>(K, A, S)
  std::size_t keys;          // per message, group keys included
  std::size_t args;          // per message, run arguments not included
  std::size_t shared;        // per call
  bool whole_batch = false;  // <name>(keys, args) runs the whole call itself (above)
  std::size_t group_keys = 0;  // the last keys, sent once per run
  std::size_t run_args = 0;    // per-message functions with group keys: A's last, per run
};

// The library's Lua (without its "#!lua" line; "@lib" stands for its name).
std::string function_library_code(const FunctionSpec& spec);

// Registers the library with `redis` (before redis.start()) and returns a Batcher for
// its function, sending at most `batch_size` messages per call.
std::unique_ptr<redis::Batcher> register_function(uv_loop_t* loop, RedisClient& redis, const FunctionSpec& spec,
                                                  std::size_t batch_size);

}  // namespace eventd

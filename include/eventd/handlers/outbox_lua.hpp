// Lua shared by every handler script that derives messages (see Outbox in handler.hpp).
// Prepended to a script: KEYS[1] is the idempotency key and ARGV[1] its TTL.
#pragma once

namespace eventd {

// already_seen(outbox): nil for a new message; 0 for one done before; {2, outbox...}
//   for one whose derived messages were never confirmed (publish them again).
// settle(outbox, out): records `out` as the outbox with the key "pending" and returns
//   {1, out...}; with nothing derived, marks the message done and returns 1.
//   Called last: Redis does not roll a script back when a command fails, so the key
//   must be written only after every effect. Scripts therefore read and decide first
//   and write after, starting with the write that can still fail (a key of another
//   type), so that a failed run has written nothing.
inline constexpr const char* kOutboxLua = R"lua(
-- Lua 5.1's unpack() fails from about 8,000 values: lists that can grow go through these.
local function prepend(head, list)
  local out = {head}
  for i = 1, #list do out[i + 1] = list[i] end
  return out
end
local function rpush_all(key, list)
  for i = 1, #list, 1000 do
    redis.call('RPUSH', key, unpack(list, i, math.min(i + 999, #list)))
  end
end
local function already_seen(outbox)
  local state = redis.call('GET', KEYS[1])
  if state == 'pending' then return prepend(2, redis.call('LRANGE', outbox, 0, -1)) end
  if state then return 0 end
  return nil
end
local function settle(outbox, out)
  if #out > 0 then
    redis.call('DEL', outbox)
    rpush_all(outbox, out)
    redis.call('EXPIRE', outbox, ARGV[1])
    redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[1])
    return prepend(1, out)
  end
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
  return 1
end
)lua";

}  // namespace eventd

// Lua shared by every handler function that derives messages (see Outbox in handler.hpp).
// Defined once per Redis Functions library, not on every call.
#pragma once

namespace eventd {

// already_seen(idem, outbox): nil for a new message; 0 for one done before; {2, outbox...}
//   for one whose derived messages were never confirmed (publish them again). One GET
//   for the common case.
// settle(idem, outbox, ttl, out): records `out` as the outbox with the key "pending" and
//   returns {1, out...}; with nothing derived, marks the message done and returns 1.
//   Called last: Redis does not roll a function back when a command fails, so the key
//   must be written only after every effect. Functions therefore read and decide first
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
local function already_seen(idem, outbox)
  local state = redis.call('GET', idem)
  if state == 'pending' then return prepend(2, redis.call('LRANGE', outbox, 0, -1)) end
  if state then return 0 end
  return nil
end
local function settle(idem, outbox, ttl, out)
  if #out > 0 then
    redis.call('DEL', outbox)
    rpush_all(outbox, out)
    redis.call('EXPIRE', outbox, ttl)
    redis.call('SET', idem, 'pending', 'EX', ttl)
    return prepend(1, out)
  end
  redis.call('SET', idem, '1', 'EX', ttl)
  return 1
end
)lua";

}  // namespace eventd

// Lua shared by every handler script that derives messages (see Outbox in handler.hpp).
// Prepended to a script: KEYS[1] is the idempotency key and ARGV[1] its TTL.
#pragma once

namespace eventd {

// already_seen(outbox): nil for a new message; 0 for one done before; {2, outbox...}
//   for one whose derived messages were never confirmed (publish them again).
// settle(outbox, out): records `out` as the outbox with the key "pending" and returns
//   {1, out...}; with nothing derived, marks the message done and returns 1.
//   Called last: Redis does not roll a script back when a command fails, so the key
//   must be written only after every effect.
inline constexpr const char* kOutboxLua = R"lua(
local function already_seen(outbox)
  local state = redis.call('GET', KEYS[1])
  if state == 'pending' then return {2, unpack(redis.call('LRANGE', outbox, 0, -1))} end
  if state then return 0 end
  return nil
end
local function settle(outbox, out)
  if #out > 0 then
    redis.call('DEL', outbox)
    redis.call('RPUSH', outbox, unpack(out))
    redis.call('EXPIRE', outbox, ARGV[1])
    redis.call('SET', KEYS[1], 'pending', 'EX', ARGV[1])
    return {1, unpack(out)}
  end
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
  return 1
end
)lua";

}  // namespace eventd

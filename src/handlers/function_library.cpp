// Handler functions as Redis Functions libraries (see function_library.hpp).
#include "eventd/handlers/function_library.hpp"

namespace eventd {

std::string function_library_code(const FunctionSpec& spec) {
  const std::string name(spec.name);
  std::string code(spec.prelude);
  code += spec.body;
  if (!spec.whole_batch) {
    // A redis.call error reaches pcall as a table with `err`; a Lua error as a string.
    code += R"lua(
local function run_one(one, k, a, shared)
  local ok, result = pcall(one, k, a, shared)
  if not ok then return {err = type(result) == 'table' and result.err or tostring(result)} end
  if result == nil then return false end
  return result
end
)lua";
  }
  std::string callback = name;
  if (!spec.whole_batch && spec.group_keys == 0) {
    code += R"lua(
local function batched(one, nkeys, nargs, nshared)
  return function(keys, args)
    local n = tonumber(args[1])
    local shared = {}
    for i = 1, nshared do shared[i] = args[1 + i] end
    local out = {}
    -- One K and one A for all items (every slot is overwritten): no tables per item.
    -- The per-message functions must not keep them past their return.
    local k, a = {}, {}
    for i = 0, n - 1 do
      for j = 1, nkeys do k[j] = keys[i * nkeys + j] end
      for j = 1, nargs do a[j] = args[1 + nshared + i * nargs + j] end
      out[i + 1] = run_one(one, k, a, shared)
    end
    return out
  end
end
)lua";
    callback = "batched(" + name + ", " + std::to_string(spec.keys) + ", " + std::to_string(spec.args) + ", " +
               std::to_string(spec.shared) + ")";
  } else if (!spec.whole_batch) {
    // The call layout with group keys (call_layout.hpp): K is the message's own keys,
    // then its run's group keys; A its own arguments, then its run's.
    code += R"lua(
local function batched_runs(one, nown, ngroup, nargs, nshared, nrun)
  return function(keys, args)
    local n = tonumber(args[1])
    local shared = {}
    for i = 1, nshared do shared[i] = args[1 + i] end
    local runs = tonumber(args[2 + nshared])
    local base = 2 + nshared + runs * (2 + nrun)  -- the messages' arguments follow the runs'
    local out = {}
    local k, a = {}, {}
    local m = 0
    for r = 1, runs do
      local at = 2 + nshared + (r - 1) * (2 + nrun)  -- args[at + 1]: the run's length
      for j = 1, ngroup do k[nown + j] = keys[n * nown + (r - 1) * ngroup + j] end
      for j = 1, nrun do a[nargs + j] = args[at + 2 + j] end
      for _ = 1, tonumber(args[at + 1]) do
        for j = 1, nown do k[j] = keys[m * nown + j] end
        for j = 1, nargs do a[j] = args[base + m * nargs + j] end
        m = m + 1
        out[m] = run_one(one, k, a, shared)
      end
    end
    return out
  end
end
)lua";
    callback = "batched_runs(" + name + ", " + std::to_string(spec.keys - spec.group_keys) + ", " +
               std::to_string(spec.group_keys) + ", " + std::to_string(spec.args) + ", " + std::to_string(spec.shared) +
               ", " + std::to_string(spec.run_args) + ")";
  }
  code += "redis.register_function{function_name='@lib_" + name + "', callback=" + callback +
          ", flags={'allow-cross-slot-keys'}}\n";
  return code;
}

std::unique_ptr<redis::Batcher> register_function(uv_loop_t* loop, RedisClient& redis, const FunctionSpec& spec,
                                                  std::size_t batch_size) {
  const std::string library = redis.add_library(function_library_code(spec));
  return std::make_unique<redis::Batcher>(loop, redis, library + "_" + std::string(spec.name), batch_size,
                                          spec.group_keys);
}

}  // namespace eventd

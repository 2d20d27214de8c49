// Handler functions as Redis Functions libraries (see function_library.hpp).
#include "eventd/handlers/function_library.hpp"

namespace eventd {

std::string function_library_code(const FunctionSpec& spec) {
  const std::string name(spec.name);
  std::string code(spec.prelude);
  code += spec.body;
  // A redis.call error reaches pcall as a table with `err`; a Lua error as a string.
  if (!spec.whole_batch) code += R"lua(
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
      local ok, result = pcall(one, k, a, shared)
      if not ok then
        result = {err = type(result) == 'table' and result.err or tostring(result)}
      elseif result == nil then
        result = false
      end
      out[i + 1] = result
    end
    return out
  end
end
)lua";
  const std::string callback = spec.whole_batch ? name
                                                : "batched(" + name + ", " + std::to_string(spec.keys) + ", " +
                                                      std::to_string(spec.args) + ", " + std::to_string(spec.shared) +
                                                      ")";
  code += "redis.register_function{function_name='@lib_" + name + "', callback=" + callback +
          ", flags={'allow-cross-slot-keys'}}\n";
  return code;
}

std::unique_ptr<redis::Batcher> register_function(uv_loop_t* loop, RedisClient& redis, const FunctionSpec& spec,
                                                  std::size_t batch_size) {
  const std::string library = redis.add_library(function_library_code(spec));
  return std::make_unique<redis::Batcher>(loop, redis, library + "_" + std::string(spec.name), batch_size,
                                          spec.whole_batch ? spec.group_keys : 0);
}

}  // namespace eventd

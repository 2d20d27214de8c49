// A Lua 5.1 state (the interpreter Redis embeds) holding the table one chunk returns:
// the unit tests of eventd's Lua call its functions by name through it.
#pragma once

#include <doctest/doctest.h>

#include <lua.hpp>

#include <memory>
#include <string>

namespace eventd::test {

class LuaChunk {
 public:
  // `chunk` ends with `return {name = function, ...}`.
  LuaChunk(const std::string& chunk, const char* chunk_name) : L_(luaL_newstate()) {
    REQUIRE(L_ != nullptr);
    luaL_openlibs(L());
    REQUIRE(luaL_loadbuffer(L(), chunk.data(), chunk.size(), chunk_name) == 0);
    if (lua_pcall(L(), 0, 1, 0) != 0) FAIL(lua_tostring(L(), -1));
    lib_ = luaL_ref(L(), LUA_REGISTRYINDEX);
  }

 protected:
  lua_State* L() { return L_.get(); }
  // The returned table's field `name` onto the stack.
  void push(const char* name) {
    lua_rawgeti(L(), LUA_REGISTRYINDEX, lib_);
    lua_getfield(L(), -1, name);
    lua_remove(L(), -2);
  }
  // Calls what push() put there; a Lua error fails the test with its message.
  void call(int args, int results) {
    if (lua_pcall(L(), args, results, 0) != 0) FAIL(lua_tostring(L(), -1));
  }

 private:
  struct Close {
    void operator()(lua_State* L) const { lua_close(L); }
  };
  std::unique_ptr<lua_State, Close> L_;
  int lib_ = LUA_NOREF;
};

}  // namespace eventd::test

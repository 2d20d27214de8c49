// RAII over libuv handles: the handle memory is owned here and released only in
// uv_close's callback, as libuv requires. Non-copyable, non-movable (libuv keeps
// the handle's address).
#pragma once

#include <uv.h>

#include <memory>
#include <utility>

namespace eventd {

template <typename T>
class UvHandle {
 public:
  UvHandle() : handle_(std::make_unique<T>()) {}
  ~UvHandle() { close(); }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  // Runs `init(T*)` (e.g. a lambda calling uv_timer_init); returns its uv error code.
  // `data` is stored in handle->data for the static trampolines.
  template <typename Init>
  int init(void* data, Init&& init_fn) {
    if (!handle_) handle_ = std::make_unique<T>();
    int rc = std::forward<Init>(init_fn)(handle_.get());
    initialised_ = rc == 0;
    if (initialised_) handle_->data = data;
    return rc;
  }

  bool initialised() const { return initialised_ && handle_ != nullptr; }
  T* get() const { return handle_.get(); }
  uv_handle_t* base() const { return reinterpret_cast<uv_handle_t*>(handle_.get()); }

  // Closes the handle; its memory is freed in the close callback. Safe to call twice;
  // a later init() allocates a fresh handle.
  void close() {
    if (!handle_) return;
    if (!initialised_) {
      handle_.reset();
      return;
    }
    initialised_ = false;
    T* raw = handle_.release();
    raw->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(raw),
             [](uv_handle_t* h) { std::unique_ptr<T> owned(reinterpret_cast<T*>(h)); });
  }

 private:
  std::unique_ptr<T> handle_;
  bool initialised_ = false;
};

// Recovers the owner stored by UvHandle::init from a handle in a callback; nullptr
// once the handle is closing.
template <typename Owner, typename H>
Owner* owner_of(H* handle) {
  return static_cast<Owner*>(handle->data);
}

}  // namespace eventd

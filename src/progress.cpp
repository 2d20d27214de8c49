// Progress line on a terminal's stderr (see progress.hpp).
#include "eventd/progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <utility>

namespace eventd {

Progress::Progress(std::string label, uint64_t total)
    : label_(std::move(label)),
      total_(total),
      enabled_(isatty(STDERR_FILENO) == 1),
      stdout_tty_(isatty(STDOUT_FILENO) == 1) {}

Progress::~Progress() { clear(); }

void Progress::update(uint64_t done) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  drawn_ = true;
  const auto d = static_cast<unsigned long long>(done);
  if (total_ > 0) {
    std::fprintf(stderr, "\r\033[K%s: %llu/%llu (%.0f%%)", label_.c_str(), d, static_cast<unsigned long long>(total_),
                 100.0 * static_cast<double>(done) / static_cast<double>(total_));
  } else {
    std::fprintf(stderr, "\r\033[K%s: %llu", label_.c_str(), d);
  }
  std::fflush(stderr);
}

void Progress::clear() {
  if (!drawn_) return;
  drawn_ = false;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

void Progress::before_stdout() {
  if (stdout_tty_) clear();
}

}  // namespace eventd

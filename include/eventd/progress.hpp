// Progress of a long eventctl operation: one line on stderr, redrawn in place, only
// when stderr is a terminal; nothing at all when it is a pipe or a file.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace eventd {

class Progress {
 public:
  // `total` 0: not known. Draws nothing unless stderr is a terminal.
  Progress(std::string label, uint64_t total);
  ~Progress();  // erases the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` of `total` so far; redraws at most every 100 ms (and at once the first time).
  void update(uint64_t done);
  // Erases the line; the next update() draws it again.
  void clear();
  // Call before writing a line to stdout: erases the line if stdout is a terminal too.
  void before_stdout();

 private:
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool stdout_tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point last_{};
};

}  // namespace eventd

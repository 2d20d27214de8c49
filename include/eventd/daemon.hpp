// The daemon: wires config, Redis, AMQP, dispatcher and handlers onto one libuv
// loop; handles SIGTERM/SIGINT (drain, then close) and talks to systemd.
#pragma once

#include <string_view>

#include "eventd/config.hpp"

namespace eventd {

// Runs until a signal ends it; returns the process exit code (0 after a clean drain).
// `allocator` names the malloc in use, for the start-up log line.
int run_daemon(const Config& config, std::string_view allocator = "system");

}  // namespace eventd

// The daemon: wires config, Redis, AMQP, dispatcher and handlers onto one libuv
// loop; handles SIGTERM/SIGINT (drain, then close) and talks to systemd.
#pragma once

#include "eventd/config.hpp"

namespace eventd {

// Runs until a signal ends it; returns the process exit code (0 after a clean drain).
int run_daemon(const Config& config);

}  // namespace eventd

// eventd: the daemon's command line. Everything else lives in the library.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "eventd/config.hpp"
#include "eventd/daemon.hpp"
#include "eventd/log.hpp"

#ifdef EVENTD_MIMALLOC
#include <mimalloc.h>
#endif

namespace {

// The malloc this process runs on, for the start-up log line.
// mimalloc, linked into the executable (meson option allocator), replaces the C
// library's for every library too; checked on a real allocation, in case a link order
// or an LD_PRELOAD put another one first.
std::string allocator_in_use() {
#ifdef EVENTD_MIMALLOC
  void* probe = std::malloc(64);
  const bool ours = mi_is_in_heap_region(probe);
  std::free(probe);
  const int v = mi_version();  // e.g. 209 for 2.0.9
  std::string name = "mimalloc " + std::to_string(v / 100) + "." + std::to_string(v / 10 % 10) + "." +
                     std::to_string(v % 10);
  return ours ? name : "system (" + name + " linked but not in use)";
#else
  return "system";
#endif
}

constexpr const char* kUsage =
    "usage: eventd [--config FILE]       run in the foreground (JSON-lines logs on stderr)\n"
    "       eventd --check-config FILE   validate FILE and exit (0 valid, 2 invalid)\n"
    "       eventd --version\n"
    "FILE defaults to $EVENTD_CONFIG, then /etc/eventd/eventd.jsonc.\n"
    "EVENTD_AMQP_URL and EVENTD_REDIS_URL override the URLs in FILE.\n";

std::string default_config_path() {
  if (const char* env = std::getenv("EVENTD_CONFIG"); env != nullptr && *env != '\0') return env;
  return "/etc/eventd/eventd.jsonc";
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--version") {
      std::printf("eventd %s\n", EVENTD_VERSION);
      return 0;
    }
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--config" || arg == "--check-config") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "eventd: %s needs a FILE (see eventd --help)\n", arg.c_str());
        return 2;
      }
      check_only = check_only || arg == "--check-config";
      config_path = argv[++i];
      continue;
    }
    std::fprintf(stderr, "eventd: unknown argument '%s' (see eventd --help)\n", arg.c_str());
    return 2;
  }
  if (config_path.empty()) config_path = default_config_path();

  eventd::Config config;
  try {
    config = eventd::load_config(config_path);
  } catch (const eventd::ConfigError& e) {
    std::fprintf(stderr, "eventd: %s\n", e.what());
    return 2;
  }
  if (check_only) {
    for (const auto& warning : config.warnings) std::fprintf(stderr, "eventd: warning: %s\n", warning.c_str());
    std::printf("%s: ok\n", config_path.c_str());
    return 0;
  }
  eventd::log::set_level(config.log_level);
  for (const auto& warning : config.warnings) eventd::log::warn("config warning", {{"warning", warning}});
  return eventd::run_daemon(config, allocator_in_use());
}

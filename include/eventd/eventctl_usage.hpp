// eventctl's synopsis and help text: the one source of `eventctl --help`,
// `eventctl COMMAND --help` and the SYNOPSIS of man/eventctl.1 (an integration test
// fails when the man page's lines differ from these).
#pragma once

#include <string>
#include <string_view>

namespace eventd::usage {

struct CommandHelp {
  std::string_view command;   // the word after the global options
  std::string_view synopsis;  // its SYNOPSIS lines, each ending in '\n'
  std::string_view details;   // what it does and its options, each line ending in '\n'
};

inline constexpr CommandHelp kCommands[] = {
    {"publish",
     "eventctl [--config FILE] publish TYPE [JSON|@FILE|-] [--count N]\n"
     "                                 [--rate MSG_PER_S] [--message-id ID]\n"
     "                                 [--correlation-id ID] [--reply-to QUEUE]\n",
     "  publish TYPE      validate one message and publish it with publisher confirms;\n"
     "                    TYPE: quote_update, analysis_request, analysis_complete,\n"
     "                    alert_triggered, notification; the body is JSON, @FILE or -\n"
     "                    (standard input, the default)\n"
     "    --count N       publish it N times, each with its own message id\n"
     "    --rate R        at most R messages a second\n"
     "    --message-id ID, --correlation-id ID, --reply-to QUEUE   AMQP properties\n"},
    {"topology",
     "eventctl [--config FILE] topology apply|verify\n",
     "  topology apply    declare exchanges, queues and bindings (idempotent)\n"
     "  topology verify   compare them with the broker's (management API); each\n"
     "                    difference is one line on stderr, exit code 1\n"},
    {"dlq",
     "eventctl [--config FILE] dlq list\n"
     "eventctl [--config FILE] dlq show QUEUE [--count N]\n"
     "eventctl [--config FILE] dlq replay QUEUE --count N|--all|--id ID\n"
     "eventctl [--config FILE] dlq purge QUEUE\n",
     "  dlq list          every dead-letter queue with its depth\n"
     "  dlq show          print N (default 10) dead letters as JSON lines, leaving them\n"
     "                    in place\n"
     "  dlq replay        republish N, all, or the one with message id ID to the original\n"
     "                    exchange and routing key, retry count reset; each is confirmed\n"
     "                    before its dead letter is acked\n"
     "  dlq purge         delete every dead letter in QUEUE\n"
     "                    QUEUE: a dead-letter queue (eventd.quotes.dlq) or its work\n"
     "                    queue (eventd.quotes)\n"},
    {"monitor",
     "eventctl [--config FILE] monitor start USER SPEC\n"
     "eventctl [--config FILE] monitor stop USER\n"
     "eventctl [--config FILE] monitor status USER\n"
     "eventctl [--config FILE] monitor list\n",
     "  monitor start     start (or replace) USER's monitor; SPEC is JSON, @FILE or -\n"
     "  monitor stop      stop it (its rules and checks stop; the spec is kept)\n"
     "  monitor status    the monitor as JSON, its positions valued at the latest quotes\n"
     "  monitor list      every user with a monitor, its status and rule count\n"},
};

// The SYNOPSIS lines that belong to no command.
inline constexpr std::string_view kGeneralSynopsis =
    "eventctl [COMMAND] --help\n"
    "eventctl --version\n";

inline constexpr std::string_view kFooter =
    "FILE defaults to $EVENTD_CONFIG, then /etc/eventd/eventd.jsonc if present, else the\n"
    "built-in defaults; EVENTD_AMQP_URL, EVENTD_REDIS_URL and EVENTD_MANAGEMENT_URL\n"
    "override the config. Exit codes: 0 done, 1 the broker or Redis refused or could not\n"
    "be reached, 2 bad usage or input (nothing sent). See eventctl(1).\n";

inline const CommandHelp* find_command(std::string_view command) {
  for (const auto& c : kCommands) {
    if (c.command == command) return &c;
  }
  return nullptr;
}

// "usage: " before the first synopsis line, its width in spaces before the others.
inline std::string usage_lines(std::string_view synopsis, bool first) {
  std::string out;
  for (std::size_t start = 0; start < synopsis.size();) {
    std::size_t end = synopsis.find('\n', start);
    if (end == std::string_view::npos) end = synopsis.size() - 1;
    out += first ? "usage: " : "       ";
    out += synopsis.substr(start, end + 1 - start);
    first = false;
    start = end + 1;
  }
  return out;
}

// `eventctl --help`: every synopsis line, then every command's details.
inline std::string full_help() {
  std::string out;
  for (const auto& c : kCommands) out += usage_lines(c.synopsis, out.empty());
  out += usage_lines(kGeneralSynopsis, false);
  out += "\ncommands:\n";
  for (const auto& c : kCommands) out += c.details;
  out += '\n';
  out += kFooter;
  return out;
}

// `eventctl COMMAND --help`.
inline std::string command_help(const CommandHelp& c) {
  std::string out = usage_lines(c.synopsis, true);
  out += '\n';
  out += c.details;
  out += '\n';
  out += kFooter;
  return out;
}

}  // namespace eventd::usage

// Tests for the pure parts of src/handlers/notification.cpp and the file sink's append.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "eventd/handlers/notification.hpp"
#include "eventd/sinks.hpp"

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A temp file, removed at the end of the test.
struct TempFile {
  std::string path;
  TempFile() {
    char name[] = "/tmp/eventd-unit-XXXXXX";
    int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    path = name;
  }
  ~TempFile() { std::filesystem::remove(path); }
};

}  // namespace

TEST_CASE("notification: unrecorded deliveries are remembered until recorded, oldest dropped first") {
  eventd::UnrecordedDeliveries unrecorded(2);
  CHECK_FALSE(unrecorded.contains("eventd:idem:a"));
  unrecorded.remember("eventd:idem:a");
  unrecorded.remember("eventd:idem:a");  // a second failure of the same recording
  CHECK(unrecorded.size() == 1);
  CHECK(unrecorded.contains("eventd:idem:a"));

  SUBCASE("recorded: forgotten") {
    unrecorded.forget("eventd:idem:a");
    CHECK_FALSE(unrecorded.contains("eventd:idem:a"));
    CHECK(unrecorded.size() == 0);
    unrecorded.forget("eventd:idem:a");  // twice is harmless
  }
  SUBCASE("bounded: past the capacity the oldest goes") {
    unrecorded.remember("eventd:idem:b");
    unrecorded.remember("eventd:idem:c");
    CHECK(unrecorded.size() == 2);
    CHECK_FALSE(unrecorded.contains("eventd:idem:a"));
    CHECK(unrecorded.contains("eventd:idem:b"));
    CHECK(unrecorded.contains("eventd:idem:c"));
  }
}

TEST_CASE("file sink: a line is appended whole or not at all") {
  TempFile file;
  int fd = ::open(file.path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  REQUIRE(fd >= 0);
  CHECK(eventd::append_whole(fd, "{\"n\":1}\n").empty());
  CHECK(read_all(file.path) == "{\"n\":1}\n");

  SUBCASE("a write cut short (file size limit) leaves no partial line behind") {
    // The limit lets 5 bytes of the next line in: write(2) returns short, then EFBIG.
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit limited = saved;
    limited.rlim_cur = 8 + 5;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
    std::string error = eventd::append_whole(fd, "{\"n\":2,\"long\":true}\n");
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
    CHECK_FALSE(error.empty());
    CHECK(read_all(file.path) == "{\"n\":1}\n");
    // The retry appends the whole line after the previous one.
    CHECK(eventd::append_whole(fd, "{\"n\":2,\"long\":true}\n").empty());
    CHECK(read_all(file.path) == "{\"n\":1}\n{\"n\":2,\"long\":true}\n");
  }
  ::close(fd);
}

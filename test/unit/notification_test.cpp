// Tests for the pure parts of src/handlers/notification.cpp.
#include <doctest/doctest.h>

#include "eventd/handlers/notification.hpp"

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

// Redis Cluster key slots: CRC16 (XMODEM) of the key's hash tag, modulo 16384, as
// in the Redis Cluster specification. Pure functions, no I/O.
#pragma once

#include <cstdint>
#include <string_view>

namespace eventd::redis {

inline constexpr uint16_t kSlotCount = 16384;

// The part of `key` Redis hashes: the text between the first '{' and the next '}'
// when that is not empty, else the whole key.
std::string_view hash_tag(std::string_view key);

// CRC16-CCITT (XMODEM: poly 0x1021, init 0), the checksum the spec names.
uint16_t crc16(std::string_view data);

// The cluster slot of `key`: crc16(hash_tag(key)) % 16384.
uint16_t key_slot(std::string_view key);

}  // namespace eventd::redis

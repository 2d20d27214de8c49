// Owning builder for AMQP field tables (queue arguments, client properties,
// message headers). rabbitmq-c's amqp_table_t only borrows memory; this keeps it.
#pragma once

#include <amqp.h>

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace eventd {

class FieldTable {
 public:
  FieldTable() = default;
  FieldTable(const FieldTable&) = delete;
  FieldTable& operator=(const FieldTable&) = delete;
  FieldTable(FieldTable&&) = default;
  FieldTable& operator=(FieldTable&&) = default;

  FieldTable& add(std::string_view key, std::string_view value);
  FieldTable& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  FieldTable& add_int(std::string_view key, int64_t value);
  FieldTable& add_bool(std::string_view key, bool value);
  FieldTable& add_table(std::string_view key, FieldTable&& nested);
  // Borrows `entry` as is: its memory must outlive every use of table().
  FieldTable& add_borrowed(const amqp_table_entry_t& entry);

  bool contains(std::string_view key) const;
  bool empty() const { return entries_.empty(); }

  // Valid until the next add or the end of *this.
  amqp_table_t table();

 private:
  amqp_bytes_t keep(std::string_view s);
  std::deque<std::string> strings_;
  std::deque<FieldTable> nested_;
  std::vector<amqp_table_entry_t> entries_;
};

amqp_bytes_t as_bytes(std::string_view s);
std::string_view as_view(amqp_bytes_t b);

// Reads a header as an integer (any AMQP integer type, or a decimal string); nullopt
// when absent or not a number.
bool table_get_int(const amqp_table_t* table, std::string_view key, int64_t& out);
// Appends `table` as a JSON object (strings, numbers, booleans, nested tables and
// arrays such as x-death; byte arrays as strings; timestamps as integers).
std::string table_to_json(const amqp_table_t* table);

bool table_get_string(const amqp_table_t* table, std::string_view key, std::string& out);

}  // namespace eventd

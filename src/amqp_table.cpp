// FieldTable and header accessors (see amqp_table.hpp).
#include "eventd/amqp_table.hpp"
#include "eventd/utf8.hpp"

#include <charconv>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

namespace eventd {

amqp_bytes_t as_bytes(std::string_view s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());  // rabbitmq-c never writes through it
  return b;
}

std::string_view as_view(amqp_bytes_t b) {
  return b.len == 0 ? std::string_view() : std::string_view(static_cast<const char*>(b.bytes), b.len);
}

amqp_bytes_t FieldTable::keep(std::string_view s) { return as_bytes(strings_.emplace_back(s)); }

FieldTable& FieldTable::add(std::string_view key, std::string_view value) {
  amqp_table_entry_t e{};
  e.key = keep(key);
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = keep(value);
  entries_.push_back(e);
  return *this;
}

FieldTable& FieldTable::add_int(std::string_view key, int64_t value) {
  amqp_table_entry_t e{};
  e.key = keep(key);
  e.value.kind = AMQP_FIELD_KIND_I64;
  e.value.value.i64 = value;
  entries_.push_back(e);
  return *this;
}

FieldTable& FieldTable::add_bool(std::string_view key, bool value) {
  amqp_table_entry_t e{};
  e.key = keep(key);
  e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
  e.value.value.boolean = value ? 1 : 0;
  entries_.push_back(e);
  return *this;
}

FieldTable& FieldTable::add_table(std::string_view key, FieldTable&& nested) {
  amqp_table_entry_t e{};
  e.key = keep(key);
  e.value.kind = AMQP_FIELD_KIND_TABLE;
  FieldTable& kept = nested_.emplace_back(std::move(nested));
  e.value.value.table = kept.table();
  entries_.push_back(e);
  return *this;
}

FieldTable& FieldTable::add_borrowed(const amqp_table_entry_t& entry) {
  entries_.push_back(entry);
  return *this;
}

bool FieldTable::contains(std::string_view key) const {
  for (const auto& e : entries_) {
    if (as_view(e.key) == key) return true;
  }
  return false;
}

amqp_table_t FieldTable::table() {
  amqp_table_t t;
  t.num_entries = static_cast<int>(entries_.size());
  t.entries = entries_.empty() ? nullptr : entries_.data();
  return t;
}

static const amqp_field_value_t* find(const amqp_table_t* table, std::string_view key) {
  if (table == nullptr) return nullptr;
  for (int i = 0; i < table->num_entries; ++i) {
    if (as_view(table->entries[i].key) == key) return &table->entries[i].value;
  }
  return nullptr;
}

bool table_get_int(const amqp_table_t* table, std::string_view key, int64_t& out) {
  const amqp_field_value_t* v = find(table, key);
  if (v == nullptr) return false;
  switch (v->kind) {
    case AMQP_FIELD_KIND_I8: out = v->value.i8; return true;
    case AMQP_FIELD_KIND_U8: out = v->value.u8; return true;
    case AMQP_FIELD_KIND_I16: out = v->value.i16; return true;
    case AMQP_FIELD_KIND_U16: out = v->value.u16; return true;
    case AMQP_FIELD_KIND_I32: out = v->value.i32; return true;
    case AMQP_FIELD_KIND_U32: out = v->value.u32; return true;
    case AMQP_FIELD_KIND_I64: out = v->value.i64; return true;
    case AMQP_FIELD_KIND_U64: out = static_cast<int64_t>(v->value.u64); return true;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
      std::string_view s = as_view(v->value.bytes);
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
      return ec == std::errc() && p == s.data() + s.size();
    }
    default: return false;
  }
}

bool table_get_string(const amqp_table_t* table, std::string_view key, std::string& out) {
  const amqp_field_value_t* v = find(table, key);
  if (v == nullptr || (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES)) return false;
  out.assign(as_view(v->value.bytes));
  return true;
}

namespace {

using JsonWriter = rapidjson::Writer<rapidjson::StringBuffer>;
void write_table(JsonWriter& w, const amqp_table_t& t);

void write_value(JsonWriter& w, const amqp_field_value_t& v) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_BOOLEAN: w.Bool(v.value.boolean != 0); break;
    case AMQP_FIELD_KIND_I8: w.Int(v.value.i8); break;
    case AMQP_FIELD_KIND_U8: w.Uint(v.value.u8); break;
    case AMQP_FIELD_KIND_I16: w.Int(v.value.i16); break;
    case AMQP_FIELD_KIND_U16: w.Uint(v.value.u16); break;
    case AMQP_FIELD_KIND_I32: w.Int(v.value.i32); break;
    case AMQP_FIELD_KIND_U32: w.Uint(v.value.u32); break;
    case AMQP_FIELD_KIND_I64: w.Int64(v.value.i64); break;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: w.Uint64(v.value.u64); break;
    case AMQP_FIELD_KIND_F32: w.Double(v.value.f32); break;
    case AMQP_FIELD_KIND_F64: w.Double(v.value.f64); break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
      std::string s = sanitize_utf8(as_view(v.value.bytes));
      w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
      break;
    }
    case AMQP_FIELD_KIND_TABLE: write_table(w, v.value.table); break;
    case AMQP_FIELD_KIND_ARRAY:
      w.StartArray();
      for (int i = 0; i < v.value.array.num_entries; ++i) write_value(w, v.value.array.entries[i]);
      w.EndArray();
      break;
    default: w.Null(); break;
  }
}

void write_table(JsonWriter& w, const amqp_table_t& t) {
  w.StartObject();
  for (int i = 0; i < t.num_entries; ++i) {
    std::string k = sanitize_utf8(as_view(t.entries[i].key));
    w.Key(k.data(), static_cast<rapidjson::SizeType>(k.size()));
    write_value(w, t.entries[i].value);
  }
  w.EndObject();
}

}  // namespace

std::string table_to_json(const amqp_table_t* table) {
  rapidjson::StringBuffer buf;
  JsonWriter w(buf);
  if (table == nullptr) {
    w.StartObject();
    w.EndObject();
  } else {
    write_table(w, *table);
  }
  return std::string(buf.GetString(), buf.GetSize());
}

}  // namespace eventd

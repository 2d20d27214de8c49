// OwnedProperties: deep copies in a rabbitmq-c pool (see amqp_message.hpp).
#include "eventd/amqp_message.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

#include "eventd/amqp_table.hpp"
#include "eventd/utf8.hpp"

namespace eventd {

unsigned header_depth(const amqp_field_value_t& value, unsigned limit) {
  if (limit == 0) return value.kind == AMQP_FIELD_KIND_TABLE || value.kind == AMQP_FIELD_KIND_ARRAY ? 1 : 0;
  unsigned deepest = 0;
  if (value.kind == AMQP_FIELD_KIND_TABLE) {
    for (int i = 0; i < value.value.table.num_entries && deepest < limit; ++i)
      deepest = std::max(deepest, header_depth(value.value.table.entries[i].value, limit - 1));
    return 1 + deepest;
  }
  if (value.kind == AMQP_FIELD_KIND_ARRAY) {
    for (int i = 0; i < value.value.array.num_entries && deepest < limit; ++i)
      deepest = std::max(deepest, header_depth(value.value.array.entries[i], limit - 1));
    return 1 + deepest;
  }
  return 0;
}

namespace {

void dup(amqp_pool_t* pool, amqp_bytes_t& b) {
  if (b.len == 0) {
    b.bytes = nullptr;
    return;
  }
  amqp_bytes_t out;
  amqp_pool_alloc_bytes(pool, b.len, &out);
  if (out.bytes == nullptr) {
    b.len = 0;
    return;
  }
  std::memcpy(out.bytes, b.bytes, b.len);
  b = out;
}

// Each string field the flags say is there.
template <typename Each>
void for_each_string(amqp_basic_properties_t& p, Each&& each) {
  const amqp_flags_t f = p._flags;
  if (f & AMQP_BASIC_CONTENT_TYPE_FLAG) each(p.content_type);
  if (f & AMQP_BASIC_CONTENT_ENCODING_FLAG) each(p.content_encoding);
  if (f & AMQP_BASIC_CORRELATION_ID_FLAG) each(p.correlation_id);
  if (f & AMQP_BASIC_REPLY_TO_FLAG) each(p.reply_to);
  if (f & AMQP_BASIC_EXPIRATION_FLAG) each(p.expiration);
  if (f & AMQP_BASIC_MESSAGE_ID_FLAG) each(p.message_id);
  if (f & AMQP_BASIC_TYPE_FLAG) each(p.type);
  if (f & AMQP_BASIC_USER_ID_FLAG) each(p.user_id);
  if (f & AMQP_BASIC_APP_ID_FLAG) each(p.app_id);
  if (f & AMQP_BASIC_CLUSTER_ID_FLAG) each(p.cluster_id);
}

}  // namespace

OwnedProperties::OwnedProperties() { std::memset(&pool_, 0, sizeof pool_); }

OwnedProperties::OwnedProperties(const amqp_basic_properties_t& source) : props_(source) {
  const amqp_flags_t f = source._flags;
  if (!(f & AMQP_BASIC_HEADERS_FLAG)) {
    std::memset(&pool_, 0, sizeof pool_);
    // Without headers (the common case) the strings go into one buffer of their own:
    // a rabbitmq-c pool costs two allocations and its bookkeeping per message.
    std::size_t total = 0;
    for_each_string(props_, [&](amqp_bytes_t& b) { total += b.len; });
    if (total > 0) strings_ = std::make_unique_for_overwrite<char[]>(total);
    char* at = strings_.get();
    for_each_string(props_, [&](amqp_bytes_t& b) {
      if (b.len == 0) {
        b.bytes = nullptr;
        return;
      }
      std::memcpy(at, b.bytes, b.len);
      b.bytes = at;
      at += b.len;
    });
    return;
  }
  init_amqp_pool(&pool_, 512);
  pool_owned_ = true;
  for_each_string(props_, [&](amqp_bytes_t& b) { dup(&pool_, b); });
  {
    // Checked before anything recurses through them (the clone below, a republish,
    // table_to_json); the headers table itself is level 1.
    std::vector<amqp_table_entry_t> kept;
    for (int i = 0; i < source.headers.num_entries; ++i) {
      const amqp_table_entry_t& e = source.headers.entries[i];
      if (1 + header_depth(e.value, kMaxHeaderDepth - 1) > kMaxHeaderDepth) {
        dropped_headers_.push_back(sanitize_utf8(as_view(e.key)));
      } else {
        kept.push_back(e);
      }
    }
    amqp_table_t allowed = source.headers;
    if (!dropped_headers_.empty()) {
      allowed.num_entries = static_cast<int>(kept.size());
      allowed.entries = kept.empty() ? nullptr : kept.data();
    }
    amqp_table_t copy;
    if (amqp_table_clone(&allowed, &copy, &pool_) == AMQP_STATUS_OK) {
      props_.headers = copy;
    } else {
      props_._flags &= ~AMQP_BASIC_HEADERS_FLAG;
      props_.headers = amqp_empty_table;
    }
  }
}

OwnedProperties::~OwnedProperties() {
  if (pool_owned_) empty_amqp_pool(&pool_);
}

OwnedProperties::OwnedProperties(OwnedProperties&& other) noexcept
    : pool_(other.pool_),
      pool_owned_(other.pool_owned_),
      strings_(std::move(other.strings_)),  // the heap block moves: props_ still points into it
      props_(other.props_),
      dropped_headers_(std::move(other.dropped_headers_)) {
  other.pool_owned_ = false;
  other.props_ = amqp_basic_properties_t{};
}

OwnedProperties& OwnedProperties::operator=(OwnedProperties&& other) noexcept {
  if (this != &other) {
    if (pool_owned_) empty_amqp_pool(&pool_);
    pool_ = other.pool_;
    pool_owned_ = other.pool_owned_;
    strings_ = std::move(other.strings_);
    props_ = other.props_;
    dropped_headers_ = std::move(other.dropped_headers_);
    other.pool_owned_ = false;
    other.props_ = amqp_basic_properties_t{};
  }
  return *this;
}

amqp_basic_properties_t json_properties(std::string_view message_id, std::string_view type, uint64_t timestamp_s,
                                        std::string_view correlation_id, std::string_view reply_to) {
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                 AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
  props.content_type = as_bytes("application/json");
  props.delivery_mode = 2;
  props.message_id = as_bytes(message_id);
  props.type = as_bytes(type);
  props.timestamp = timestamp_s;
  if (!correlation_id.empty()) {
    props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
    props.correlation_id = as_bytes(correlation_id);
  }
  if (!reply_to.empty()) {
    props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
    props.reply_to = as_bytes(reply_to);
  }
  return props;
}

static std::string_view field(const amqp_basic_properties_t& p, amqp_flags_t flag, amqp_bytes_t b) {
  return (p._flags & flag) ? as_view(b) : std::string_view();
}

std::string_view OwnedProperties::message_id() const {
  return field(props_, AMQP_BASIC_MESSAGE_ID_FLAG, props_.message_id);
}
std::string_view OwnedProperties::type() const { return field(props_, AMQP_BASIC_TYPE_FLAG, props_.type); }
std::string_view OwnedProperties::correlation_id() const {
  return field(props_, AMQP_BASIC_CORRELATION_ID_FLAG, props_.correlation_id);
}
std::string_view OwnedProperties::reply_to() const {
  return field(props_, AMQP_BASIC_REPLY_TO_FLAG, props_.reply_to);
}
const amqp_table_t* OwnedProperties::headers() const {
  return (props_._flags & AMQP_BASIC_HEADERS_FLAG) ? &props_.headers : nullptr;
}

}  // namespace eventd

// The error model of DESIGN.md: {code, message, retryable}.
#pragma once

#include <string>
#include <string_view>

namespace eventd {

enum class ErrorCode {
  ParseError,
  ValidationError,
  UnknownType,
  NotFound,
  RateLimit,
  DownstreamError,
  Expired,
  MaxAttempts,
  Internal,
};

std::string_view error_code_name(ErrorCode code);  // "PARSE_ERROR", ...

struct ProcessingError {
  ErrorCode code = ErrorCode::Internal;
  std::string message;
  bool retryable = false;

  static ProcessingError permanent(ErrorCode c, std::string m) { return {c, std::move(m), false}; }
  static ProcessingError transient(ErrorCode c, std::string m) { return {c, std::move(m), true}; }
};

}  // namespace eventd

// Key normalisation: producers may send snake_case keys; eventd works in camelCase.
#pragma once

#include <string>
#include <string_view>

#include <rapidjson/document.h>

namespace eventd {

// "user_id" -> "userId", "analysis_type" -> "analysisType", "userId" -> "userId",
// "_private" and "trailing_" keep their leading/trailing underscores.
std::string snake_to_camel(std::string_view key);

// Renames every snake_case key of `obj` (top level and nested objects, arrays of
// objects included) to camelCase in place. When both forms exist the camelCase one
// wins and the snake_case one is dropped. Values are untouched.
void normalise_keys(rapidjson::Value& obj, rapidjson::Document::AllocatorType& alloc);

}  // namespace eventd

#include "consistency/meta_values.h"

#include <charconv>

#include <fmt/format.h>

namespace onebox {

std::string JoinList(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& item : items) {
    if (!out.empty()) out.push_back(',');
    out += item;
  }
  return out;
}

std::vector<std::string> SplitList(std::string_view joined) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < joined.size();) {
    size_t comma = std::min(joined.find(',', pos), joined.size());
    if (comma > pos) out.emplace_back(joined.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

Result<uint64_t> ParseDecimal(std::string_view value, std::string_view what) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size())
    return Status::Corruption(fmt::format("stored {} '{}' is not a decimal number", what, value));
  return n;
}

}  // namespace onebox

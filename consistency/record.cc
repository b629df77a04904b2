#include "consistency/record.h"

#include <fmt/format.h>

#include "consistency/bytes.h"

namespace onebox {

namespace {
constexpr uint8_t kFormat = 1;
constexpr uint8_t kFlagTombstone = 1;

Status CheckHeader(std::string_view bytes) {
  if (bytes.size() < kRecordHeaderBytes)
    return Status::Corruption(fmt::format("record of {} bytes is shorter than its header", bytes.size()));
  if (static_cast<uint8_t>(bytes[0]) != kFormat)
    return Status::Corruption(fmt::format("unknown record format {}", static_cast<uint8_t>(bytes[0])));
  if (static_cast<uint8_t>(bytes[1]) & ~kFlagTombstone)
    return Status::Corruption(fmt::format("unknown record flags {:#x}", static_cast<uint8_t>(bytes[1])));
  return Status::Ok();
}
}  // namespace

std::string EncodeRecord(const Record& r) {
  std::string out;
  out.reserve(kRecordHeaderBytes + r.value.size());
  out.push_back(static_cast<char>(kFormat));
  out.push_back(static_cast<char>(r.tombstone ? kFlagTombstone : 0));
  AppendBE64(out, r.version.hlc);
  AppendBE64(out, r.version.node);
  out.append(r.value);
  return out;
}

Result<Version> DecodeVersion(std::string_view bytes) {
  if (Status s = CheckHeader(bytes); !s.ok()) return s;
  return Version{ReadBE64(bytes.substr(2)), ReadBE64(bytes.substr(10))};
}

Result<Record> DecodeRecord(std::string_view bytes, bool with_value) {
  Result<Version> v = DecodeVersion(bytes);
  if (!v.ok()) return v.status();
  Record r;
  r.version = *v;
  r.tombstone = static_cast<uint8_t>(bytes[1]) & kFlagTombstone;
  if (r.tombstone && bytes.size() != kRecordHeaderBytes)
    return Status::Corruption("tombstone record carries a value");
  if (with_value) r.value.assign(bytes.substr(kRecordHeaderBytes));
  return r;
}

}  // namespace onebox

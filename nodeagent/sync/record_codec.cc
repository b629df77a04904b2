#include "nodeagent/sync/record_codec.h"

#include <fmt/format.h>

#include "naming/ns_key.h"

namespace onebox {

v1::LogRecord ToLogRecord(Cf space, std::string_view key, std::string encoded_record, uint64_t seq) {
  v1::LogRecord r;
  r.set_seq(seq);
  r.set_family(kCfNames[static_cast<size_t>(space)]);
  r.set_key(std::string(key));
  r.set_record(std::move(encoded_record));
  return r;
}

v1::LogRecord ToLogRecord(Cf space, std::string_view key, const Record& record, uint64_t seq) {
  return ToLogRecord(space, key, EncodeRecord(record), seq);
}

v1::LogRecord ToLogRecord(const LogEntry& entry) { return ToLogRecord(entry.space, entry.key, entry.record, entry.seq); }

Result<RemoteRecord> FromLogRecord(const v1::LogRecord& wire) {
  Cf space = VersionedCfNamed(wire.family());
  if (space == Cf::kCount) return Status::InvalidArgument(fmt::format("unknown family '{}'", wire.family()));
  if (space == Cf::kNs && !IsValidNsKey(wire.key()))
    return Status::InvalidArgument(fmt::format("'{}' is not a path below the view root", wire.key()));
  Result<Record> record = DecodeRecord(wire.record());
  if (!record.ok()) return record.status();
  return RemoteRecord{space, wire.key(), std::move(record).value()};
}

}  // namespace onebox

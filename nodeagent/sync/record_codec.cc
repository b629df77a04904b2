#include "nodeagent/sync/record_codec.h"

#include <sys/stat.h>

#include <fmt/format.h>

#include "naming/ns_key.h"
#include "nodeagent/view/file_xattrs.h"
#include "onebox/v1/namespace.pb.h"

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

Status CheckPeerRecord(Cf space, std::string_view key, const Record& record, const PeerRecordRules& rules) {
  if (space != Cf::kNs || record.tombstone) return Status::Ok();
  v1::Inode inode;
  if (!inode.ParseFromString(record.value)) return Status::Ok();
  for (const v1::Xattr& x : inode.xattrs()) {
    // The agent's own marks are its own: a peer that sends one is wrong.
    if (!IsReplicatedXattr(x.name()))
      return Status::InvalidArgument(fmt::format("/{} carries extended attribute '{}', which no node replicates", key,
                                                 x.name()));
    // File capabilities grant root's rights as a set-user-ID root file does.
    if (x.name() == kCapabilityXattr && !rules.accept_root_setid)
      return Status::PermissionDenied(fmt::format(
          "/{} would carry file capabilities (security.capability); records that grant root's rights are made on "
          "their own node only (--accept-root-setid-from-peers takes them)",
          key));
  }
  if (rules.accept_root_setid || inode.type() != v1::FILE_TYPE_REGULAR) return Status::Ok();
  bool setuid = (inode.mode() & S_ISUID) != 0;
  bool setgid = (inode.mode() & S_ISGID) != 0;
  // Owned by root and set-ID at all, or set-group-ID to group root.
  if (!((setuid || setgid) && inode.uid() == 0) && !(setgid && inode.gid() == 0)) return Status::Ok();
  return Status::PermissionDenied(fmt::format(
      "/{} would be a set-{}-ID file of root (mode {:o}, uid {}, gid {}); records that grant root's rights are "
      "made on their own node only (--accept-root-setid-from-peers takes them)",
      key, setuid ? "user" : "group", inode.mode(), inode.uid(), inode.gid()));
}

Result<RemoteRecord> FromLogRecord(const v1::LogRecord& wire, const PeerRecordRules& rules) {
  Cf space = VersionedCfNamed(wire.family());
  if (space == Cf::kCount) return Status::InvalidArgument(fmt::format("unknown family '{}'", wire.family()));
  if (space == Cf::kNs && !IsValidNsKey(wire.key()))
    return Status::InvalidArgument(fmt::format("'{}' is not a path below the view root", wire.key()));
  Result<Record> record = DecodeRecord(wire.record());
  if (!record.ok()) return record.status();
  if (Status s = CheckPeerRecord(space, wire.key(), *record, rules); !s.ok()) return s;
  return RemoteRecord{space, wire.key(), std::move(record).value()};
}

}  // namespace onebox

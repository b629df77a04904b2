// A view entry's extended attributes as the namespace records them
// (Inode.xattrs): read when the recorder records a regular file or a
// directory, compared with the record, and given to the entry the
// materializer places, so that setxattr on one node is getxattr's answer on
// every other, resolved by version as content is. Replicated: user.*, the
// ACLs (system.posix_acl_access and _default), trusted.* (root's own) and
// security.capability (which peers' records carry only with
// --accept-root-setid-from-peers: sync/record_codec.cc); never the agent's
// own marks (user.onebox.*), nor a security module's labels and keys
// (security.selinux, .ima, .evm: each node's own). Symlinks keep none
// (Linux refuses user.* on them). An entry's attributes are reached through
// /proc/self/fd/N, so an O_PATH descriptor serves.
#pragma once

#include <optional>
#include <string_view>

#include "onebox/v1/namespace.pb.h"
#include "proto/state_page.h"

namespace onebox {

constexpr const char* kCapabilityXattr = "security.capability";
// At most this many bytes of names and values per entry; the rest are left
// out of the record (with a warning), so that a record stays well under the
// store's 1 MiB and a replication batch under gRPC's message size.
constexpr size_t kMaxRecordedXattrBytes = 64 * 1024;

inline bool IsReplicatedXattr(std::string_view name) {
  if (name.starts_with(kAgentMarkPrefix)) return false;
  return name.starts_with("user.") || name.starts_with("trusted.") || name == kCapabilityXattr ||
         name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

// Calls each(name) for the names of a listxattr list ('\0' after each),
// until one call returns true; whether one did.
template <class Each>
bool AnyXattrName(std::string_view list, Each&& each) {
  for (size_t at = 0; at < list.size();) {
    size_t end = list.find('\0', at);
    if (end == std::string_view::npos) end = list.size();
    if (each(list.substr(at, end - at))) return true;
    at = end + 1;
  }
  return false;
}

// The attribute inode records under name, or nullptr.
const v1::Xattr* FindXattr(const v1::Inode& inode, std::string_view name);

// Replaces inode's xattrs with fd's (none for a symlink). What this agent
// cannot read (a file it may not read, when not root; trusted.*, which only
// root sees) keeps held's value, the entry's record so far, when given: an
// agent's lack of rights is no removal. listed: fd's names as a listxattr
// just gave them (FileMarks::Names, view_ledger.h), so as not to list twice.
void ReadXattrs(int fd, v1::Inode* inode, const v1::Inode* held = nullptr,
                std::optional<std::string_view> listed = std::nullopt);

// Whether a and b record the same extended attributes.
bool SameXattrs(const v1::Inode& a, const v1::Inode& b);

// Whether fd shows inode's extended attributes, as far as this agent can
// see them (listed: as ReadXattrs).
bool ShowsXattrs(int fd, const v1::Inode& inode, std::optional<std::string_view> listed = std::nullopt);

// Makes fd's extended attributes inode's: sets those that differ, removes
// those inode does not have (fresh: fd was just made and has none). Names
// this agent may not set (trusted.* and security.capability when not root)
// are left as they are.
void ApplyXattrs(int fd, const v1::Inode& inode, bool fresh = false);

}  // namespace onebox

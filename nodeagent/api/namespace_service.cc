#include "nodeagent/api/namespace_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include "naming/ns_key.h"
#include "nodeagent/api/acting_as.h"
#include "nodeagent/api/agent_info.h"
#include "nodeagent/view/view_fs.h"

#include "nodeagent/api/unary.h"

namespace onebox {

namespace {

// The inode a live ns record holds, as the API shows it: without its chunk
// digests, which would tell anyone a file's content that its mode hides
// (a guessed secret's SHA-256); Corruption when it does not parse.
Status ParseInode(std::string_view key, const Record& rec, v1::Inode* inode) {
  if (!inode->ParseFromString(rec.value)) return Status::Corruption(fmt::format("damaged inode for /{}", key));
  inode->clear_chunks();
  return Status::Ok();
}

// For listings: one damaged record must not hide the others. It is listed
// with what parsed of its inode, and logged.
void ParseListedInode(std::string_view key, const Record& rec, v1::Inode* inode) {
  if (Status s = ParseInode(key, rec, inode); !s.ok()) spdlog::error("namespace: {}", s.message());
  inode->clear_chunks();  // what did parse, too
}

}  // namespace

grpc::ServerUnaryReactor* NamespaceService::Stat(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Namespace_Stat, v1::StatRequest, v1::StatResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::StatRequest& q, v1::StatResponse* r) -> Status {
        Result<std::string> key = NsKeyOfPath(q.path());
        if (!key.ok()) return key.status();
        Result<Record> rec = store_.Get(*key, Cf::kNs);
        if (!rec.ok()) return rec.status().code() == Code::kNotFound ? Status::Ok() : rec.status();
        if (Status s = ParseInode(*key, *rec, r->mutable_inode()); !s.ok()) return s;
        r->set_found(true);
        *r->mutable_version() = ToProto(rec->version);
        return Status::Ok();
      });
}

grpc::ServerUnaryReactor* NamespaceService::Versions(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                     grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Namespace_Versions, v1::VersionsRequest, v1::VersionsResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::VersionsRequest& q, v1::VersionsResponse* r) { return DoVersions(q, r); });
}

Status NamespaceService::DoVersions(const v1::VersionsRequest& q, v1::VersionsResponse* r) {
  Result<std::string> key = NsKeyOfPath(q.path());
  if (!key.ok()) return key.status();
  Result<Record> current = store_.GetWithTombstone(*key, Cf::kNs);
  if (current.ok()) {
    v1::FileVersion* v = r->add_versions();
    *v->mutable_version() = ToProto(current->version);
    v->set_current(true);
    v->set_deleted(current->tombstone);
    if (!current->tombstone) ParseListedInode(*key, *current, v->mutable_inode());
  } else if (current.status().code() != Code::kNotFound) {
    return current.status();
  }
  Result<std::vector<Record>> history = store_.History(*key);
  if (!history.ok()) return history.status();
  for (const Record& rec : *history) {
    if (current.ok() && rec.version == current->version) continue;
    v1::FileVersion* v = r->add_versions();
    *v->mutable_version() = ToProto(rec.version);
    ParseListedInode(*key, rec, v->mutable_inode());
  }
  return Status::Ok();
}

grpc::ServerUnaryReactor* NamespaceService::Restore(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Namespace_Restore, v1::RestoreRequest, v1::RestoreResponse>(
      ctx, in, out, gate_, &pool_,
      [this](const Caller& caller, const v1::RestoreRequest& q, v1::RestoreResponse* r) { return DoRestore(caller, q, r); });
}

void NamespaceService::AddLocalCalls(LocalCalls& calls) {
  calls.Add<api_method::Namespace_Restore, v1::RestoreRequest, v1::RestoreResponse>(
      [this](const Caller& caller, const v1::RestoreRequest& q, v1::RestoreResponse* r) { return DoRestore(caller, q, r); });
}

namespace {

bool SameType(const struct stat& st, v1::FileType type) {
  switch (type) {
    case v1::FILE_TYPE_REGULAR: return S_ISREG(st.st_mode);
    case v1::FILE_TYPE_DIRECTORY: return S_ISDIR(st.st_mode);
    case v1::FILE_TYPE_SYMLINK: return S_ISLNK(st.st_mode);
    default: return !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode);
  }
}

// chown's and chmod's rules for the version's owner, group and mode: the
// owner stays the caller, and a group (or a set-group-ID bit) only one the
// caller is in.
Status MayPutBackMetadata(const Caller& caller, const std::string& what, const v1::Inode& want, const v1::Inode* now) {
  bool group_changes = now == nullptr || now->gid() != want.gid() || (want.mode() & S_ISGID) != 0;
  if (want.uid() == caller.uid && (!group_changes || caller.InGroup(want.gid()))) return Status::Ok();
  return Status::PermissionDenied(fmt::format(
      "{}: that version is owned by uid {} gid {} (mode {:o}); you may put back only a version of your own, "
      "of a group of yours",
      what, want.uid(), want.gid(), want.mode()));
}

}  // namespace

// The rule of namespace_service.h. A user restores only an entry of their own
// (as only the owner may chmod it; a version's content may be one its mode or
// a directory once kept from others), reached with the caller's search
// rights from the view's root down, no symlink followed; writing it needs
// what a shell would need: the file's write permission for content, the
// directory's for an entry replaced or made.
Status NamespaceService::MayRestore(const Caller& caller, const std::string& key, const Record& version) {
  if (caller.uid == 0) return Status::Ok();  // root may write anything (a file whose directory is gone, too)
  v1::Inode want;
  if (Status s = ParseInode(key, version, &want); !s.ok()) return s;
  Result<Record> now_rec = store_.Get(key, Cf::kNs);
  v1::Inode now;
  bool exists = now_rec.ok() && ParseInode(key, *now_rec, &now).ok();
  int root_fd = open(view_root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) return Status::IOError(fmt::format("open the view {}: {}", view_root_, strerror(errno)));
  Status may = MayChangeEntry(caller, root_fd, key, exists ? &now : nullptr, want);
  close(root_fd);
  return may;
}

Status NamespaceService::MayChangeEntry(const Caller& caller, int root_fd, const std::string& key,
                                        const v1::Inode* now, const v1::Inode& want) {
  Result<ActingAs> as = ActingAs::Take(caller);
  if (!as.ok()) return as.status();
  size_t slash = key.rfind('/');
  std::string parent_key = slash == std::string::npos ? "" : key.substr(0, slash);
  std::string name = key.substr(slash == std::string::npos ? 0 : slash + 1);
  std::string what = "/" + key;
  // Opened as the caller: the walk needs the caller's search right on every directory.
  int parent = OpenBeneath(root_fd, parent_key, O_PATH | O_DIRECTORY);
  if (parent < 0) {
    int err = errno;
    return err == EACCES ? Status::PermissionDenied(fmt::format("{}: permission denied", what))
                         : Status::NotFound(fmt::format("{}: its directory is gone; restore that first", what));
  }
  Status may = MayChangeEntryIn(*as, caller, parent, name, what, now, want);
  close(parent);
  return may;
}

Status NamespaceService::MayChangeEntryIn(const ActingAs& as, const Caller& caller, int parent, const std::string& name,
                                          const std::string& what, const v1::Inode* now, const v1::Inode& want) {
  struct stat entry{};
  bool in_view = fstatat(parent, name.c_str(), &entry, AT_SYMLINK_NOFOLLOW) == 0;
  if (!in_view && errno == EACCES)  // no search right on its directory
    return Status::PermissionDenied(fmt::format("{}: permission denied", what));
  // Fifos, sockets and devices of other nodes are never made here: their record is all there is.
  if (now != nullptr && now->type() != v1::FILE_TYPE_OTHER && !(in_view && SameType(entry, now->type())))
    return Status::Unavailable(fmt::format("{}: the view has not caught up with its record yet; try again", what));
  uid_t owner = in_view ? entry.st_uid : now != nullptr ? now->uid() : caller.uid;
  if (owner != caller.uid)
    return Status::PermissionDenied(
        fmt::format("{}: only its owner (uid {}) or root restores it, as only they may chmod it", what, owner));
  if (Status s = MayPutBackMetadata(caller, what, want, now); !s.ok()) return s;
  bool stays = now != nullptr && now->type() == want.type();
  if (stays && want.type() == v1::FILE_TYPE_REGULAR) return as.MayAccess(parent, name, W_OK, what);  // its content
  if (stays && want.type() == v1::FILE_TYPE_DIRECTORY) return Status::Ok();  // its metadata: the owner's chmod
  return as.MayAccess(parent, "", W_OK | X_OK, "the directory of " + what);  // an entry replaced or made
}

Status NamespaceService::DoRestore(const Caller& caller, const v1::RestoreRequest& q, v1::RestoreResponse* r) {
  Result<std::string> key = NsKeyOfPath(q.path());
  if (!key.ok()) return key.status();
  Result<uint64_t> node = ParseNodeId(q.version().node_id());
  if (!node.ok()) return node.status();
  Version want{q.version().hlc(), *node};
  Result<std::vector<Record>> history = store_.History(*key);
  if (!history.ok()) return history.status();
  for (const Record& rec : *history) {
    if (rec.version != want) continue;
    if (Status may = MayRestore(caller, *key, rec); !may.ok()) return may;
    Result<Version> v = store_.Put(*key, rec.value, /*sync=*/true, Cf::kNs);
    if (!v.ok()) return v.status();
    *r->mutable_version() = ToProto(*v);
    if (on_restored_) on_restored_(*key);
    return Status::Ok();
  }
  return Status::NotFound(
      fmt::format("{} has no earlier version {}@{} here", q.path(), q.version().hlc(), q.version().node_id()));
}

grpc::ServerUnaryReactor* NamespaceService::List(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Namespace_List, v1::ListRequest, v1::ListResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::ListRequest& q, v1::ListResponse* r) { return DoList(q, r); });
}

Status NamespaceService::DoList(const v1::ListRequest& q, v1::ListResponse* r) {
  Result<std::string> key = NsKeyOfPath(q.path());
  if (!key.ok()) return key.status();
  size_t limit = q.limit() == 0 ? 1000 : q.limit();
  if (limit > StoreLimits::kMaxScanLimit)
    return Status::InvalidArgument(fmt::format("limit {} exceeds the maximum of {}", limit, StoreLimits::kMaxScanLimit));
  std::string prefix = *key + "/";
  std::string after = q.start_after().empty() ? "" : prefix + q.start_after();
  // Keys below grandchildren sort between children: skip them while paging.
  for (;;) {
    Result<ScanPage> page = store_.Scan(prefix, after, StoreLimits::kMaxScanLimit, false, Cf::kNs);
    if (!page.ok()) return page.status();
    for (Entry& e : page->entries) {
      std::string_view name = std::string_view(e.key).substr(prefix.size());
      if (name.find('/') != std::string_view::npos) continue;
      if (static_cast<size_t>(r->entries_size()) == limit) {
        r->set_more(true);
        return Status::Ok();
      }
      v1::DirEntry* d = r->add_entries();
      d->set_name(std::string(name));
      ParseListedInode(e.key, e.record, d->mutable_inode());
      *d->mutable_version() = ToProto(e.record.version);
    }
    if (!page->more) return Status::Ok();
    after = page->entries.back().key;
  }
}

}  // namespace onebox

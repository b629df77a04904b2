#include "nodeagent/api/namespace_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include "naming/ns_key.h"
#include "nodeagent/api/acting_as.h"
#include "nodeagent/api/agent_info.h"
#include <spdlog/spdlog.h>

#include "nodeagent/api/unary.h"

namespace onebox {

namespace {

// The inode a live ns record holds; Corruption when it does not parse.
Status ParseInode(std::string_view key, const Record& rec, v1::Inode* inode) {
  if (inode->ParseFromString(rec.value)) return Status::Ok();
  return Status::Corruption(fmt::format("damaged inode for /{}", key));
}

// For listings: one damaged record must not hide the others. It is listed
// with what parsed of its inode, and logged.
void ParseListedInode(std::string_view key, const Record& rec, v1::Inode* inode) {
  if (Status s = ParseInode(key, rec, inode); !s.ok()) spdlog::error("namespace: {}", s.message());
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

// The rule of namespace_service.h, decided by the kernel where it can be:
// the access checks run with the caller's rights.
Status NamespaceService::MayRestore(const Caller& caller, const std::string& key, const Record& version) {
  v1::Inode want;
  if (Status s = ParseInode(key, version, &want); !s.ok()) return s;
  Result<Record> now_rec = store_.Get(key, Cf::kNs);
  v1::Inode now;
  bool exists = now_rec.ok() && ParseInode(key, *now_rec, &now).ok();
  Result<ActingAs> as = ActingAs::Take(caller);
  if (!as.ok()) return as.status();
  std::string path = view_root_ + "/" + key;
  std::string what = "/" + key;
  if (exists && now.type() == v1::FILE_TYPE_REGULAR && want.type() == v1::FILE_TYPE_REGULAR) {
    if (Status s = as->MayAccess(path, W_OK, what.c_str()); !s.ok()) return s;
  } else {
    std::string parent = path.substr(0, path.rfind('/'));
    std::string parent_what = "the directory of " + what;
    if (Status s = as->MayAccess(parent, W_OK | X_OK, parent_what.c_str()); !s.ok()) return s;
    // A sticky directory (/tmp's kind): only the entry's or the directory's owner replaces an entry.
    struct stat dir{};
    if (exists && caller.uid != 0 && now.uid() != caller.uid && stat(parent.c_str(), &dir) == 0 &&
        (dir.st_mode & S_ISVTX) != 0 && dir.st_uid != caller.uid)
      return Status::PermissionDenied(fmt::format("{}: another user's entry in a sticky directory", what));
  }
  if (caller.uid == 0) return Status::Ok();
  bool same_metadata = exists && now.type() == want.type() && now.uid() == want.uid() && now.gid() == want.gid() &&
                       now.mode() == want.mode();
  if (same_metadata || (want.uid() == caller.uid && caller.InGroup(want.gid()))) return Status::Ok();
  return Status::PermissionDenied(fmt::format(
      "{}: that version is owned by uid {} gid {} with mode {:o}; only its owner (in its group) or root may put "
      "back other owners or modes than the file has now",
      what, want.uid(), want.gid(), want.mode()));
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

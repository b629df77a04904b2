#include "nodeagent/view/file_xattrs.h"

#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/view/file_look.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {

// The kernel's bound for a list of names and for one value.
constexpr size_t kKernelMax = 64 * 1024;

// Only root reads and sets these; other agents never see them.
bool RootsOnly(std::string_view name) { return name.starts_with("trusted.") || name == kCapabilityXattr; }

bool Keeps(const v1::Inode& inode) {
  return inode.type() == v1::FILE_TYPE_REGULAR || inode.type() == v1::FILE_TYPE_DIRECTORY;
}

// A list or a value: in a small buffer first, a larger one when it is larger.
template <class Call>
ssize_t ReadGrowing(std::string* buf, Call call) {
  if (buf->size() < 256) buf->resize(256);
  for (;;) {
    ssize_t n = call(buf->data(), buf->size());
    if (n >= 0 || errno != ERANGE || buf->size() >= kKernelMax) return n;
    ssize_t need = call(nullptr, 0);
    if (need < 0) return need;
    buf->resize(std::min(kKernelMax, std::max(buf->size() * 2, static_cast<size_t>(need))));
  }
}

// The replicated names fd has (from listed when given), sorted; nullopt
// when the list cannot be read.
std::optional<std::vector<std::string>> ReplicatedNames(const std::string& proc,
                                                        std::optional<std::string_view> listed) {
  std::string read;
  if (!listed) {
    ssize_t n = ReadGrowing(&read, [&](char* b, size_t size) { return listxattr(proc.c_str(), b, size); });
    if (n < 0) {
      if (errno == ENOTSUP) return std::vector<std::string>();
      return std::nullopt;
    }
    listed = std::string_view(read.data(), static_cast<size_t>(n));
  }
  std::vector<std::string> names;
  AnyXattrName(*listed, [&](std::string_view name) {
    if (IsReplicatedXattr(name)) names.emplace_back(name);
    return false;
  });
  std::sort(names.begin(), names.end());
  return names;
}

void Sort(v1::Inode* inode) {
  std::sort(inode->mutable_xattrs()->begin(), inode->mutable_xattrs()->end(),
            [](const v1::Xattr& a, const v1::Xattr& b) { return a.name() < b.name(); });
}

}  // namespace

const v1::Xattr* FindXattr(const v1::Inode& inode, std::string_view name) {
  for (const v1::Xattr& x : inode.xattrs())
    if (x.name() == name) return &x;
  return nullptr;
}

void ReadXattrs(int fd, v1::Inode* inode, const v1::Inode* held, std::optional<std::string_view> listed) {
  inode->clear_xattrs();
  if (!Keeps(*inode)) return;
  const std::string proc = ProcPath(fd);
  auto keep_held = [&](std::string_view name) {
    if (held == nullptr) return;
    if (const v1::Xattr* was = FindXattr(*held, name); was != nullptr && FindXattr(*inode, name) == nullptr)
      *inode->add_xattrs() = *was;
  };
  std::optional<std::vector<std::string>> names = ReplicatedNames(proc, listed);
  if (!names) {  // not ours to list: as recorded
    if (held != nullptr) *inode->mutable_xattrs() = held->xattrs();
    return;
  }
  std::string value;
  size_t bytes = 0;
  for (const std::string& name : *names) {
    ssize_t n = ReadGrowing(&value, [&](char* b, size_t size) { return getxattr(proc.c_str(), name.c_str(), b, size); });
    if (n < 0) {
      if (errno == EACCES || errno == EPERM) keep_held(name);  // gone meanwhile (ENODATA): gone
      continue;
    }
    bytes += name.size() + static_cast<size_t>(n);
    if (bytes > kMaxRecordedXattrBytes) {
      spdlog::warn("view: the extended attributes of a file pass {} bytes; {} and those after it are not recorded",
                   kMaxRecordedXattrBytes, name);
      break;
    }
    v1::Xattr* x = inode->add_xattrs();
    x->set_name(name);
    x->set_value(value.data(), static_cast<size_t>(n));
  }
  if (AgentUid() != 0 && held != nullptr)  // what only root sees stays as recorded
    for (const v1::Xattr& x : held->xattrs())
      if (RootsOnly(x.name())) keep_held(x.name());
  Sort(inode);
}

bool SameXattrs(const v1::Inode& a, const v1::Inode& b) {
  return a.xattrs_size() == b.xattrs_size() &&
         std::equal(a.xattrs().begin(), a.xattrs().end(), b.xattrs().begin(), [](const v1::Xattr& x, const v1::Xattr& y) {
           return x.name() == y.name() && x.value() == y.value();
         });
}

bool ShowsXattrs(int fd, const v1::Inode& inode, std::optional<std::string_view> listed) {
  if (!Keeps(inode)) return true;
  v1::Inode shown;
  shown.set_type(inode.type());
  ReadXattrs(fd, &shown, &inode, listed);  // (what this agent cannot see counts as shown)
  return SameXattrs(shown, inode);
}

void ApplyXattrs(int fd, const v1::Inode& inode, bool fresh) {
  if (!Keeps(inode) || (fresh && inode.xattrs_size() == 0)) return;
  const std::string proc = ProcPath(fd);
  v1::Inode shown;
  shown.set_type(inode.type());
  if (!fresh) {
    ReadXattrs(fd, &shown);
    if (SameXattrs(shown, inode)) return;
  }
  const bool may_set_roots = AgentUid() == 0;
  for (const v1::Xattr& had : shown.xattrs())
    if (FindXattr(inode, had.name()) == nullptr && (may_set_roots || !RootsOnly(had.name())))
      (void)removexattr(proc.c_str(), had.name().c_str());
  for (const v1::Xattr& x : inode.xattrs()) {
    if (!IsReplicatedXattr(x.name()) || x.value().size() > kKernelMax || (!may_set_roots && RootsOnly(x.name())))
      continue;
    const v1::Xattr* had = FindXattr(shown, x.name());
    if (had == nullptr || had->value() != x.value())
      (void)setxattr(proc.c_str(), x.name().c_str(), x.value().data(), x.value().size(), 0);
  }
}

}  // namespace onebox

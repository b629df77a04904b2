#include "nodeagent/view/file_xattrs.h"

#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "proto/state_page.h"

namespace onebox {

namespace {

// The kernel's own bounds: 64 KiB for a list of names and for a value.
constexpr size_t kMaxXattrBytes = 64 * 1024;

std::string ProcPath(int fd) { return fmt::format("/proc/self/fd/{}", fd); }

// The names fd has that are a program's (not the agent's marks), sorted; empty on any error.
std::vector<std::string> ProgramNames(const std::string& proc) {
  std::vector<std::string> names;
  std::string list(1024, '\0');
  ssize_t n = listxattr(proc.c_str(), list.data(), list.size());
  if (n < 0 && errno == ERANGE) {
    list.resize(kMaxXattrBytes);
    n = listxattr(proc.c_str(), list.data(), list.size());
  }
  for (size_t at = 0; n > 0 && at < static_cast<size_t>(n);) {
    size_t end = list.find('\0', at);
    if (end == std::string::npos || end > static_cast<size_t>(n)) end = static_cast<size_t>(n);
    std::string_view name(list.data() + at, end - at);
    if (!name.empty() && !name.starts_with(kAgentMarkPrefix)) names.emplace_back(name);
    at = end + 1;
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool Reads(std::string_view name) {
  // Recorded and replicated; others (a security module's own labels are
  // security.* too, and follow) as the kernel lets the agent read them.
  return name.starts_with("user.") || name.starts_with("trusted.") || name.starts_with("security.") ||
         name == "system.posix_acl_access" || name == "system.posix_acl_default";
}

bool Keeps(const v1::Inode& inode) {
  return inode.type() == v1::FILE_TYPE_REGULAR || inode.type() == v1::FILE_TYPE_DIRECTORY;
}

}  // namespace

void ReadXattrs(int fd, v1::Inode* inode) {
  inode->clear_xattrs();
  if (!Keeps(*inode)) return;
  const std::string proc = ProcPath(fd);
  std::string value(kMaxXattrBytes, '\0');
  for (const std::string& name : ProgramNames(proc)) {
    if (!Reads(name)) continue;
    ssize_t n = getxattr(proc.c_str(), name.c_str(), value.data(), value.size());
    if (n < 0) continue;  // gone meanwhile, or not the agent's to read
    v1::Xattr* x = inode->add_xattrs();
    x->set_name(name);
    x->set_value(value.data(), static_cast<size_t>(n));
  }
}

bool SameXattrs(const v1::Inode& a, const v1::Inode& b) {
  return a.xattrs_size() == b.xattrs_size() &&
         std::equal(a.xattrs().begin(), a.xattrs().end(), b.xattrs().begin(), [](const v1::Xattr& x, const v1::Xattr& y) {
           return x.name() == y.name() && x.value() == y.value();
         });
}

bool ShowsXattrs(int fd, const v1::Inode& inode) {
  if (!Keeps(inode)) return true;
  v1::Inode shown;
  shown.set_type(inode.type());
  ReadXattrs(fd, &shown);
  return SameXattrs(shown, inode);
}

void ApplyXattrs(int fd, const v1::Inode& inode) {
  if (!Keeps(inode)) return;
  const std::string proc = ProcPath(fd);
  v1::Inode shown;
  shown.set_type(inode.type());
  ReadXattrs(fd, &shown);
  if (SameXattrs(shown, inode)) return;
  for (const v1::Xattr& had : shown.xattrs()) {
    bool kept = std::any_of(inode.xattrs().begin(), inode.xattrs().end(),
                            [&](const v1::Xattr& x) { return x.name() == had.name(); });
    if (!kept) (void)removexattr(proc.c_str(), had.name().c_str());
  }
  for (const v1::Xattr& x : inode.xattrs()) {
    if (x.name().starts_with(kAgentMarkPrefix) || x.value().size() > kMaxXattrBytes) continue;  // a peer's mistake
    bool same = std::any_of(shown.xattrs().begin(), shown.xattrs().end(), [&](const v1::Xattr& had) {
      return had.name() == x.name() && had.value() == x.value();
    });
    if (!same) (void)setxattr(proc.c_str(), x.name().c_str(), x.value().data(), x.value().size(), 0);
  }
}

}  // namespace onebox

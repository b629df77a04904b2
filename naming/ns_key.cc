#include "naming/ns_key.h"

#include <fmt/format.h>

#include "naming/cluster_path.h"

namespace onebox {

std::string NsKey(std::string_view normalized_abs_path) {
  return std::string(normalized_abs_path.substr(normalized_abs_path.empty() ? 0 : 1));
}

Result<std::string> NsKeyOfPath(std::string_view path) {
  char norm[kMaxPathBytes];
  size_t n = NormalizePath(path, norm, sizeof norm);
  if (n <= 1) return Status::InvalidArgument(fmt::format("'{}' is not an absolute cluster path", path));
  return NsKey(std::string_view(norm, n));
}

bool IsValidNsKey(std::string_view key) {
  if (key.empty() || key.front() == '/' || IsAgentEntry(key)) return false;
  for (size_t pos = 0; pos <= key.size();) {
    size_t slash = std::min(key.find('/', pos), key.size());
    std::string_view comp = key.substr(pos, slash - pos);
    if (comp.empty() || comp == "." || comp == "..") return false;
    pos = slash + 1;
  }
  return true;
}

std::string ParentKey(std::string_view key) {
  size_t slash = key.rfind('/');
  return slash == std::string_view::npos ? "" : std::string(key.substr(0, slash));
}

std::string_view BaseName(std::string_view key) { return key.substr(key.rfind('/') + 1); }

std::string KeyPrefixBelow(std::string_view dir) { return dir.empty() ? std::string() : std::string(dir) + "/"; }

bool IsKeyBelow(std::string_view key, std::string_view dir) {
  return key != dir && key.starts_with(KeyPrefixBelow(dir));
}

KeyRange KeyRangeBelow(std::string_view dir) { return {std::string(dir) + '/', std::string(dir) + '0'}; }

std::string JoinKey(std::string_view dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  std::string out;
  out.reserve(dir.size() + 1 + name.size());
  out.append(dir).push_back('/');
  out.append(name);
  return out;
}

}  // namespace onebox

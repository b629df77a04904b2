#include "naming/cluster_path.h"

#include <cstring>

namespace onebox {

namespace {

// Appends the components of `path` to out[0..*len), resolving "." and ".."
// lexically. out holds a normalized absolute path ("/" or "/a/b"). A
// component that does not fit, and every one after it, is only counted
// (*beyond): a later ".." takes one of those back first, so a path that
// passes through a longer one on its way ("/d/deep/../..") still fits.
void AppendComponents(std::string_view path, char* out, size_t* len, size_t cap, size_t* beyond) {
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t start = i;
    while (i < path.size() && path[i] != '/') ++i;
    std::string_view comp = path.substr(start, i - start);
    if (comp.empty() || comp == ".") continue;
    if (comp == "..") {
      if (*beyond > 0) {
        --*beyond;
        continue;
      }
      while (*len > 1 && out[*len - 1] != '/') --*len;  // drop the last component
      if (*len > 1) --*len;                                // and its slash
      continue;
    }
    size_t need = (*len > 1 ? 1 : 0) + comp.size();
    if (*beyond > 0 || *len + need + 1 > cap) {
      ++*beyond;
      continue;
    }
    if (*len > 1) out[(*len)++] = '/';
    memcpy(out + *len, comp.data(), comp.size());
    *len += comp.size();
  }
}

}  // namespace

size_t NormalizePath(std::string_view path, char* out, size_t cap) {
  return JoinPath(path, "", out, cap);
}

size_t JoinPath(std::string_view dir, std::string_view rel, char* out, size_t cap) {
  if (dir.empty() || dir[0] != '/' || cap < 2) return 0;
  size_t len = 1, beyond = 0;
  out[0] = '/';
  AppendComponents(dir, out, &len, cap, &beyond);
  AppendComponents(rel, out, &len, cap, &beyond);
  if (beyond > 0) return 0;  // the result does not fit
  out[len] = '\0';
  return len;
}

bool ClusterRoot::Set(std::string_view root) {
  char buf[kMaxPathBytes];
  size_t n = NormalizePath(root, buf, sizeof buf);
  if (n <= 1) return false;  // not absolute, too long, or "/"
  memcpy(root_, buf, n + 1);
  len_ = n;
  return true;
}

bool ClusterRoot::Relative(std::string_view abs_path, char* out, size_t cap) const {
  if (!MaybeCluster(abs_path)) {
    // "/a/../cluster/x" normalizes into the cluster without the raw prefix.
    if (abs_path.find("/.") == std::string_view::npos && abs_path.find("//") == std::string_view::npos) return false;
  }
  char norm[kMaxPathBytes];
  size_t n = NormalizePath(abs_path, norm, sizeof norm);
  if (!Holds(std::string_view(norm, n))) return false;
  size_t rel = n == len_ ? 0 : n - len_ - 1;
  if (rel + 1 > cap) return false;
  memcpy(out, norm + n - rel, rel);
  out[rel] = '\0';
  return true;
}

}  // namespace onebox

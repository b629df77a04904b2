// Fuzzes the path normalizer the shim runs on every interposed call
// (naming/cluster_path.h), with any bytes as a path, and as a directory and
// a relative path (split at the first NUL). Every answer must be what the
// header promises: it fits, is absolute, has no empty, "." or ".."
// component, normalizes to itself, and the cluster root's Relative agrees
// with a plain prefix test on it.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "naming/cluster_path.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using onebox::fuzz::Require;

using onebox::kMaxPathBytes;

void CheckNormal(const char* p, size_t n, size_t cap) {
  Require(n < cap && p[n] == '\0' && strlen(p) == n);
  Require(p[0] == '/');
  std::string_view s(p, n);
  Require(n == 1 || s.back() != '/');
  for (size_t i = 1; i <= n;) {
    size_t end = s.find('/', i);
    if (end == std::string_view::npos) end = n;
    std::string_view part = s.substr(i, end - i);
    Require(n == 1 || !part.empty());
    Require(part != "." && part != "..");
    i = end + 1;
  }
  char again[kMaxPathBytes];
  Require(onebox::NormalizePath(s, again, sizeof again) == n && memcmp(again, p, n) == 0);
  // Relative under a root: exactly when the path is the root or below it.
  static onebox::ClusterRoot root = [] {
    onebox::ClusterRoot r;
    r.Set("/cluster");
    return r;
  }();
  char rel[kMaxPathBytes];
  const bool below = s == "/cluster" || s.substr(0, 9) == "/cluster/";
  Require(root.Relative(s, rel, sizeof rel) == below);
  if (below) Require(std::string_view(rel) == (s == "/cluster" ? std::string_view("") : s.substr(9)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The shim hands it C strings: the bytes up to the first NUL, and after it
  // (up to the next) a relative path for JoinPath.
  std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t nul = in.find('\0');
  const std::string_view path = in.substr(0, nul);
  char out[kMaxPathBytes];
  const size_t whole = onebox::NormalizePath(path, out, sizeof out);
  if (whole != 0) CheckNormal(out, whole, sizeof out);
  // A small buffer: the same answer when it fits (whatever the path passes
  // through on the way), else 0, never an overrun.
  char small[16];
  const size_t n = onebox::NormalizePath(path, small, sizeof small);
  Require(n == (whole != 0 && whole < sizeof small ? whole : 0));
  if (n != 0) Require(memcmp(small, out, n + 1) == 0);
  if (nul == std::string_view::npos) return 0;
  std::string_view rel = in.substr(nul + 1);
  rel = rel.substr(0, rel.find('\0'));
  // JoinPath's contract: an absolute directory and a relative path.
  if (!path.empty() && path[0] == '/' && (rel.empty() || rel[0] != '/')) {
    size_t joined = onebox::JoinPath(path, rel, out, sizeof out);
    if (joined != 0) CheckNormal(out, joined, sizeof out);
    // The same as normalizing dir/rel as one path.
    static char both[2 * kMaxPathBytes + 2], again[kMaxPathBytes];
    if (path.size() + 1 + rel.size() < sizeof both) {
      memcpy(both, path.data(), path.size());
      both[path.size()] = '/';
      memcpy(both + path.size() + 1, rel.data(), rel.size());
      size_t whole_join = onebox::NormalizePath(std::string_view(both, path.size() + 1 + rel.size()), again, sizeof again);
      Require(whole_join == joined && (joined == 0 || memcmp(again, out, joined) == 0));
    }
  }
  return 0;
}

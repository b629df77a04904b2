// Which paths name the cluster namespace, and where in it. Pure string work on
// caller buffers (no syscalls, no allocation), so the shim can run it inside
// any interposed call, even from a signal handler: a path outside the cluster
// costs one prefix compare.
//
// Normalization is lexical, as for the root check of `realpath -s`: "//" and
// "." collapse, ".." removes the previous component and stops at "/".
#pragma once

#include <cstddef>
#include <string_view>

namespace onebox {

constexpr size_t kMaxPathBytes = 4096;  // PATH_MAX, with the terminating NUL

// Writes the lexical normal form of the absolute path `path` to out (NUL
// terminated). Returns its length, or 0 when path is not absolute or the
// result does not fit in cap (the result: a longer path on the way, as
// "/a/<more than cap>/..", does not matter).
size_t NormalizePath(std::string_view path, char* out, size_t cap);

// Normal form of dir + "/" + rel (rel relative, dir absolute), as above.
size_t JoinPath(std::string_view dir, std::string_view rel, char* out, size_t cap);

class ClusterRoot {
 public:
  // root is normalized; it must be absolute and not "/". Returns false if not.
  bool Set(std::string_view root);
  std::string_view root() const { return {root_, len_}; }

  // Prefix test on the raw path: false means certainly not in the cluster.
  bool MaybeCluster(std::string_view abs_path) const {
    return abs_path.size() >= len_ && abs_path.compare(0, len_, root()) == 0;
  }
  // The path, as written, is the root or below it ("/cluster", "/cluster/a";
  // not "/clusterx").
  bool Holds(std::string_view abs_path) const {
    return MaybeCluster(abs_path) && (abs_path.size() == len_ || abs_path[len_] == '/');
  }
  // If the normalized absolute path is the root or below it, writes the part
  // below the root ("" for the root itself, "a/b" for ROOT/a/b) to out and
  // returns true.
  bool Relative(std::string_view abs_path, char* out, size_t cap) const;

 private:
  char root_[kMaxPathBytes] = "/cluster";
  size_t len_ = 8;
};

}  // namespace onebox

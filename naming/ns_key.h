// Namespace keys: how the store, the view and peers name a cluster path. The
// key of the normalized absolute path "/cluster/a/b" is "cluster/a/b": the
// path below the view root. The view root's own entries whose names start
// with ".onebox-" are the agent's (the view marker, the staging directory,
// sync markers) and never name a cluster path.
#pragma once

#include <string>
#include <string_view>

#include "consistency/status.h"

namespace onebox {

constexpr std::string_view kAgentEntryPrefix = ".onebox-";

// The key of a normalized absolute path: the path without its leading "/".
std::string NsKey(std::string_view normalized_abs_path);
// The key of any absolute path (normalized here, as the shim does);
// InvalidArgument for a relative path, "/" or a path too long.
Result<std::string> NsKeyOfPath(std::string_view path);
// A key that may name a cluster entry (what a peer or a client may send):
// relative, no empty, "." or ".." component, and not one of the agent's own
// entries in the view root.
bool IsValidNsKey(std::string_view key);
// The key of key's directory ("" for a top-level key).
std::string ParentKey(std::string_view key);
// The last component of key.
std::string_view BaseName(std::string_view key);
// dir/name; just name when dir is "" (the view root).
std::string JoinKey(std::string_view dir, std::string_view name);
// What every key strictly below dir starts with: "dir/", and "" below the
// view root (whose own key "" is not below it).
std::string KeyPrefixBelow(std::string_view dir);
// Whether key is strictly below dir.
bool IsKeyBelow(std::string_view key, std::string_view dir);
// The bounds [first, last) of the keys strictly below dir in byte order,
// "dir/" up to "dir0" ('0' follows '/'), so that the entries of a set
// ordered by key below dir are one range: siblings such as "dir-x" and
// "dir.c" sort between "dir" and "dir/". Below "" the range holds the keys
// that start with "/", which no key does (unlike KeyPrefixBelow: the view
// root's entry is taken alone).
struct KeyRange {
  std::string first, last;
};
KeyRange KeyRangeBelow(std::string_view dir);
// Whether name, an entry of the view root, is one of the agent's own.
inline bool IsAgentEntry(std::string_view name) { return name.substr(0, kAgentEntryPrefix.size()) == kAgentEntryPrefix; }

}  // namespace onebox

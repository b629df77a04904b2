// The RocksDB column families of an agent's store, declared once.
// X(enumerator, name on disk, versioned, what it holds). Versioned families
// hold LWW records (consistency/record.h); the others hold raw bytes.
#pragma once

#include <cstddef>
#include <string_view>

#define ONEBOX_COLUMN_FAMILIES(X)                                                              \
  X(kKv, "kv", true, "user key-value records of the Store service")                           \
  X(kNs, "ns", true, "the namespace: one onebox.v1.Inode per path below the view root")        \
  X(kChunks, "chunks", false, "file content, content-addressed: SHA-256 digest -> bytes")     \
  X(kLog, "log", false, "replication log of local writes: seq (BE64) -> [family][key len][key][record]") \
  X(kMeta, "meta", false, "node-local values and the persisted HLC high-water mark")            \
  X(kHistory, "history", false, "ns versions replaced or beaten here: path \\0 hlc node (BE) -> record") \
  X(kPorts, "ports", true, "the cluster's ports: tcp/PORT -> onebox.v1.ClusterPort (nodeagent/sockets/port_table.h)")

namespace onebox {

enum class Cf : size_t {
#define ONEBOX_CF_ENUM(e, name, versioned, what) e,
  ONEBOX_COLUMN_FAMILIES(ONEBOX_CF_ENUM)
#undef ONEBOX_CF_ENUM
  kCount
};

inline constexpr const char* kCfNames[] = {
#define ONEBOX_CF_NAME(e, name, versioned, what) name,
    ONEBOX_COLUMN_FAMILIES(ONEBOX_CF_NAME)
#undef ONEBOX_CF_NAME
};

inline constexpr bool kCfVersioned[] = {
#define ONEBOX_CF_VERSIONED(e, name, versioned, what) versioned,
    ONEBOX_COLUMN_FAMILIES(ONEBOX_CF_VERSIONED)
#undef ONEBOX_CF_VERSIONED
};

// The versioned family called name on the wire ("kv", "ns"); Cf::kCount if none is.
inline Cf VersionedCfNamed(std::string_view name) {
  for (size_t i = 0; i < static_cast<size_t>(Cf::kCount); ++i)
    if (name == kCfNames[i] && kCfVersioned[i]) return static_cast<Cf>(i);
  return Cf::kCount;
}

}  // namespace onebox

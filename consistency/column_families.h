// The RocksDB column families of an agent's store, declared once.
// X(enumerator, name on disk, what it holds)
#pragma once

#include <cstddef>

#define ONEBOX_COLUMN_FAMILIES(X)                                              \
  X(kKv, "kv", "user key-value records of the Store service (LWW records)")   \
  X(kMeta, "meta", "node identity and the persisted HLC high-water mark")

namespace onebox {

enum class Cf : size_t {
#define ONEBOX_CF_ENUM(e, name, what) e,
  ONEBOX_COLUMN_FAMILIES(ONEBOX_CF_ENUM)
#undef ONEBOX_CF_ENUM
  kCount
};

inline constexpr const char* kCfNames[] = {
#define ONEBOX_CF_NAME(e, name, what) name,
    ONEBOX_COLUMN_FAMILIES(ONEBOX_CF_NAME)
#undef ONEBOX_CF_NAME
};

}  // namespace onebox

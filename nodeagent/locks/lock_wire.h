// Locks as the Peer calls carry them (proto/onebox/v1/peer.proto) and as
// locks/lock_ranges.h keeps them: one conversion each way.
#pragma once

#include <string>

#include "nodeagent/locks/lock_ranges.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

// A file's locks as homes and nodes key them: flock's apart from fcntl's.
inline std::string LockFileKey(const std::string& path, bool flock) { return (flock ? "f/" : "c/") + path; }

inline LockOwner OwnerOf(const v1::LockOwner& o) { return LockOwner{o.node_id(), o.key(), o.pid()}; }

inline void ToWire(const LockOwner& o, v1::LockOwner* out) {
  out->set_node_id(o.node_id);
  out->set_key(o.key);
  out->set_pid(o.pid);
}

// A type outside 0..2 is taken for an unlock (never a lock nobody asked for).
inline LockType TypeOf(int32_t type) {
  return type == 0 ? LockType::kRead : type == 1 ? LockType::kWrite : LockType::kUnlock;
}

inline LockSpan SpanOf(const v1::LockSpan& s) {
  return s.end() <= s.start() ? LockSpan{s.start(), s.start()} : LockSpan{s.start(), s.end()};
}

inline void ToWire(LockType type, const LockSpan& span, v1::LockSpan* out) {
  out->set_type(static_cast<int32_t>(type));
  out->set_start(span.start);
  out->set_end(span.end);
}

}  // namespace onebox

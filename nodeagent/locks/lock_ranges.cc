#include "nodeagent/locks/lock_ranges.h"

#include <algorithm>

namespace onebox {

std::optional<HeldLock> FileLocks::Conflict(const LockOwner& owner, LockType type, const LockSpan& span) const {
  if (type == LockType::kUnlock) return std::nullopt;
  for (const HeldLock& h : held_) {
    if (h.owner == owner || !h.span.Overlaps(span)) continue;
    if (type == LockType::kWrite || h.type == LockType::kWrite) return h;
  }
  return std::nullopt;
}

void FileLocks::Apply(const LockOwner& owner, LockType type, const LockSpan& span) {
  std::vector<HeldLock> kept;
  LockSpan merged = span;
  for (HeldLock& h : held_) {
    if (!(h.owner == owner)) {
      kept.push_back(std::move(h));
      continue;
    }
    // Adjacent locks of the same type merge, as the kernel's do.
    const bool touches = h.span.start <= merged.end && merged.start <= h.span.end;
    if (type != LockType::kUnlock && h.type == type && touches) {
      merged.start = std::min(merged.start, h.span.start);
      merged.end = std::max(merged.end, h.span.end);
      continue;
    }
    if (!h.span.Overlaps(span)) {
      kept.push_back(std::move(h));
      continue;
    }
    // Cut back what span covers: what is left before it and after it stays.
    if (h.span.start < span.start) kept.push_back({h.owner, h.type, {h.span.start, span.start}});
    if (span.end < h.span.end) kept.push_back({h.owner, h.type, {span.end, h.span.end}});
  }
  if (type != LockType::kUnlock) kept.push_back({owner, type, merged});
  std::sort(kept.begin(), kept.end(), [](const HeldLock& a, const HeldLock& b) {
    if (a.owner.node_id != b.owner.node_id) return a.owner.node_id < b.owner.node_id;
    if (a.owner.key != b.owner.key) return a.owner.key < b.owner.key;
    return a.span.start < b.span.start;
  });
  held_ = std::move(kept);
}

void FileLocks::Release(const LockOwner& owner) {
  std::erase_if(held_, [&](const HeldLock& h) { return h.owner == owner; });
}

void FileLocks::ReleaseNode(const std::string& node_id) {
  std::erase_if(held_, [&](const HeldLock& h) { return h.owner.node_id == node_id; });
}

std::vector<HeldLock> FileLocks::Of(const LockOwner& owner) const {
  std::vector<HeldLock> out;
  for (const HeldLock& h : held_)
    if (h.owner == owner) out.push_back(h);
  return out;
}

}  // namespace onebox

// What a shim sees in the create slots (proto/state_page.h), for the unit
// tests of the slots and of the directory leases that install them.
#pragma once

#include <cstdint>
#include <string_view>

#include "proto/state_page.h"

namespace onebox {

// The slot's seq for dir, or 0 (none); *at: the slot.
inline uint64_t SlotSeen(const CreateSlots& slots, std::string_view dir, unsigned* at = nullptr) {
  unsigned slot = 0;
  const uint64_t seq = CreateSlotBegin(&slots, dir, &slot);
  if (at != nullptr) *at = slot;
  return seq;
}

}  // namespace onebox

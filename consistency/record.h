// Versioned records: what the store keeps under every key. A record carries the
// HLC timestamp and origin node of the write that made it; of two versions the
// larger (hlc, node) wins (last-writer-wins). Deletes are records too
// (tombstones), so a delete and a put resolve by version like two puts.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "consistency/hlc.h"
#include "consistency/status.h"

namespace onebox {

struct Version {
  HlcTimestamp hlc = 0;
  uint64_t node = 0;
  auto operator<=>(const Version&) const = default;
};

// The one order of versions, used by the store, anti-entropy, quorum reads
// and the view alike: the later timestamp wins, and of two equal timestamps
// (two nodes writing in the same millisecond) the higher node id. So every
// node picks the same winner of any set of versions.
constexpr bool Newer(const Version& a, const Version& b) { return a > b; }

struct Record {
  Version version;
  bool tombstone = false;
  std::string value;
  bool operator==(const Record&) const = default;
};

// Wire layout: [format 1][flags 1][hlc 8 BE][node 8 BE][value ...].
constexpr size_t kRecordHeaderBytes = 18;
std::string EncodeRecord(const Record& r);
// with_value false leaves value empty (version and tombstone flag only).
Result<Record> DecodeRecord(std::string_view bytes, bool with_value = true);
// Just the version, without copying the value.
Result<Version> DecodeVersion(std::string_view bytes);

}  // namespace onebox

// The one codec between the store's records and the Peer service's
// LogRecord: replication batches, fsync's pushes, anti-entropy pages. What a
// peer sends is checked here before anything applies it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "consistency/store.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

// A record as the store encodes it (consistency/record.h), with its family and key.
v1::LogRecord ToLogRecord(Cf space, std::string_view key, std::string encoded_record, uint64_t seq = 0);
v1::LogRecord ToLogRecord(Cf space, std::string_view key, const Record& record, uint64_t seq = 0);
// A local write from the replication log, with its sequence number.
v1::LogRecord ToLogRecord(const LogEntry& entry);

// A record a peer sent: InvalidArgument for a family that is not a versioned
// one or an ns key that names no cluster entry (naming/ns_key.h),
// Corruption for a record that does not decode.
Result<RemoteRecord> FromLogRecord(const v1::LogRecord& wire);

}  // namespace onebox

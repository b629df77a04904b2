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

// What a peer may send. A peer proved it belongs (the join token), but a
// record from it still must not grant privilege on this node: unless
// accepted here, a namespace record of a regular file that is set-user-ID
// or set-group-ID and owned by root, or set-group-ID to group root, is refused. (Device nodes, fifos and
// sockets travel as records but are never made in a view: view_materializer.)
struct PeerRecordRules {
  bool accept_root_setid = false;
};

// PermissionDenied for a record rules refuse (see above).
Status CheckPeerRecord(Cf space, std::string_view key, const Record& record, const PeerRecordRules& rules);

// A record a peer sent: InvalidArgument for a family that is not a versioned
// one or an ns key that names no cluster entry (naming/ns_key.h),
// Corruption for a record that does not decode, PermissionDenied for one
// rules refuse.
Result<RemoteRecord> FromLogRecord(const v1::LogRecord& wire, const PeerRecordRules& rules);

}  // namespace onebox

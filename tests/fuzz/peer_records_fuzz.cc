// Fuzzes what a peer's replication batch becomes here (nodeagent/sync/
// record_codec.h): any bytes as a Peer/Replicate request, each of its
// records decoded as the replicator and anti-entropy decode them, under
// both rules. A record is taken or refused with a Status, never a crash;
// one taken names a versioned family, and its encoding decodes to it again.
#include <cstdint>

#include <google/protobuf/stubs/logging.h>
#include <cstdlib>

#include "consistency/column_families.h"
#include "consistency/record.h"
#include "nodeagent/sync/record_codec.h"
#include "onebox/v1/peer.pb.h"
#include "tests/fuzz/fuzz_util.h"

using onebox::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onebox::v1::ReplicateRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  for (const onebox::v1::LogRecord& wire : req.records()) {
    for (bool accept_root_setid : {false, true}) {
      onebox::Result<onebox::RemoteRecord> taken = onebox::FromLogRecord(wire, {.accept_root_setid = accept_root_setid});
      if (!taken.ok()) continue;
      Require(onebox::kCfVersioned[static_cast<size_t>(taken->space)]);
      // What it would send on: the same family, key and record.
      onebox::v1::LogRecord again = onebox::ToLogRecord(taken->space, taken->key, taken->record, wire.seq());
      Require(again.family() == wire.family() && again.key() == wire.key());
      onebox::Result<onebox::RemoteRecord> twice = onebox::FromLogRecord(again, {.accept_root_setid = accept_root_setid});
      Require(twice.ok() && twice->space == taken->space && twice->key == taken->key && twice->record == taken->record);
    }
  }
  return 0;
}

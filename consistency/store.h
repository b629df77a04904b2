// The versioned store of one agent, on RocksDB. Local writes are stamped with a
// fresh HLC timestamp and the node id; records from peers are applied with
// last-writer-wins on (hlc, node), so any order of the same updates yields the
// same state. Deletes write tombstones. Multi-key changes go in one WriteBatch;
// every batch also raises the persisted HLC high-water mark (a max merge), which
// keeps the clock monotone across restarts.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "consistency/column_families.h"
#include "consistency/hlc.h"
#include "consistency/record.h"
#include "consistency/status.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace onebox {

// Limits on what the store accepts; the API and docs quote these.
struct StoreLimits {
  static constexpr size_t kMaxKeyBytes = 4096;
  static constexpr size_t kMaxValueBytes = 1 << 20;  // 1 MiB
  static constexpr size_t kDefaultScanLimit = 100;
  static constexpr size_t kMaxScanLimit = 10000;
  // A scan page stops early (more = true) once its keys and values pass this,
  // so a page always fits gRPC's default 4 MiB message limit.
  static constexpr size_t kMaxScanPageBytes = 2 << 20;
};

// File content is cut into chunks of this size, the last one shorter: chunk
// i of a file starts at i * kChunkBytes. Chunks are stored by their SHA-256.
constexpr size_t kChunkBytes = 1 << 20;

struct StoreOptions {
  std::string path;
  uint64_t node_id = 0;  // stamps local writes; must not be 0
  HybridLogicalClock::WallClock wall = hlc::SystemWallMillis;
  uint64_t max_clock_offset_ms = 500;
};

struct Mutation {
  std::string key;
  bool tombstone = false;
  std::string value;
  Cf space = Cf::kKv;  // a versioned family
};

struct Entry {
  std::string key;
  Record record;
};

struct ScanPage {
  std::vector<Entry> entries;
  bool more = false;  // more live keys with the prefix follow the last entry
};

// A local write as the replication log keeps it.
struct LogEntry {
  uint64_t seq = 0;
  Cf space = Cf::kKv;
  std::string key;
  Record record;
};

// A record made elsewhere, as replication brings it.
struct RemoteRecord {
  Cf space = Cf::kKv;
  std::string key;
  Record record;
};

struct StoreStats {
  uint64_t estimated_keys = 0;
  uint64_t sst_bytes = 0;
  uint64_t memtable_bytes = 0;
  uint64_t blob_bytes = 0;  // values kept apart in blob files (file content)
};

class Store {
 public:
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Versioned families (kv, ns): every call names its family, kv by default.
  Result<Version> Put(std::string_view key, std::string_view value, bool sync, Cf space = Cf::kKv);
  // Writes a tombstone (even where no value is held: a peer may hold one).
  // *existed, if given, says whether a live value was there.
  Result<Version> Delete(std::string_view key, bool sync, bool* existed = nullptr, Cf space = Cf::kKv);
  // Puts and deletes applied atomically: one WriteBatch, one version for all.
  Result<Version> Write(const std::vector<Mutation>& mutations, bool sync);

  // The live record under key; NotFound when absent or deleted.
  Result<Record> Get(std::string_view key, Cf space = Cf::kKv);
  // The record under key, tombstones included; NotFound only when absent.
  Result<Record> GetWithTombstone(std::string_view key, Cf space = Cf::kKv) { return ReadRecord(key, space); }
  // Live records whose key starts with prefix, in key order, after start_after.
  // limit 0 means StoreLimits::kDefaultScanLimit.
  Result<ScanPage> Scan(std::string_view prefix, std::string_view start_after, size_t limit, bool keys_only,
                        Cf space = Cf::kKv);

  // Apply a record made elsewhere: it is kept when its version beats the one
  // held (or nothing is held). Returns whether it was kept. Raises the clock;
  // Unavailable when the record's timestamp is too far ahead of the wall clock.
  Result<bool> Apply(std::string_view key, const Record& record, bool sync, Cf space = Cf::kKv);
  // The namespace's history: every live ns record that a newer one replaced
  // here, and every ns record that arrived and lost, is kept (the newest
  // kHistoryPerPath per path), so no version a node ever held is silently
  // dropped. Node-local: each node keeps what it saw.
  static constexpr size_t kHistoryPerPath = 16;
  // The kept versions of key, newest first.
  Result<std::vector<Record>> History(std::string_view key);
  // Apply for many records in one WriteBatch (one commit, one WAL write):
  // what replication and anti-entropy use. Says, per record, whether it won.
  Result<std::vector<bool>> ApplyBatch(const std::vector<RemoteRecord>& records, bool sync);
  // A digest of every record of the versioned families (key, version,
  // tombstone flag, value): equal on two nodes exactly when they hold the same
  // records. SHA-256 over the records in key order, hex; O(records) per call.
  Result<std::string> Digest(uint64_t* records = nullptr);
  // Every record of a versioned family, tombstones included, in key order.
  Status ForEachRecord(const std::function<void(std::string_view key, const Record&)>& fn, Cf space = Cf::kKv);

  // The replication log: every local write of a versioned family, in order.
  // Entries after `after`, at most `limit`.
  Result<std::vector<LogEntry>> ReadLog(uint64_t after, size_t limit);
  uint64_t LastLogSeq() const { return log_committed_.load(); }  // the last committed entry
  // The last committed entry once every write already visible here is in
  // the log: a group's records are readable a moment before LastLogSeq()
  // counts them (its commit runs without the log's lock), so a caller that
  // read a record and then sends the log up to LastLogSeq() could miss it.
  uint64_t LastLogSeqOfVisibleWrites();
  // Called after every commit that added entries to the log (under the
  // log's lock: it must be quick and must not write here). The replicator
  // wakes its pushers with it instead of polling.
  void set_log_observer(std::function<void()> observer) {
    std::lock_guard lock(log_mu_);
    log_observer_ = std::move(observer);
  }
  // Called when a chunk put without the WAL finds none waiting for a flush
  // before it (under the chunks' lock: quick, and not writing here). The
  // replicator's loop, which flushes them, wakes by it.
  void set_chunks_observer(std::function<void()> observer) {
    std::lock_guard lock(chunks_mark_mu_);
    chunks_observer_ = std::move(observer);
  }
  // The oldest entry still held (LastLogSeq() + 1 when none is).
  uint64_t FirstLogSeq() const { return log_first_.load(); }
  // Drops the entries up to and including upto (every peer has them, or they
  // are past the retention; anti-entropy repairs a peer that missed them).
  Status TruncateLog(uint64_t upto);

  // Anti-entropy: the records of the versioned families fall into kBuckets
  // buckets by a stable hash of (family, key). Two nodes whose bucket digests
  // agree hold the same records in that bucket.
  static constexpr size_t kBuckets = 256;
  static size_t BucketOf(Cf space, std::string_view key);
  // SHA-256 of each bucket's records (family, key, encoded record, in order).
  // A scan of every record, made again only after a write: an idle store
  // answers from the last one.
  Result<std::vector<std::string>> BucketDigests();
  // SHA-256 over the bucket digests: one value for the whole state, which
  // membership's heartbeats carry (anti-entropy asks no peer whose value is
  // ours). RootIfCurrent computes nothing and never waits: empty when the
  // last digests predate a write, or a scan is under way.
  Result<std::string> BucketDigestsRoot();
  std::string BucketDigestsRootIfCurrent();
  // How many writes of records so far: unchanged between two looks, nothing
  // was written or applied here meanwhile.
  uint64_t commits() const { return commits_.load(); }
  // The namespace keys (Cf::kNs) given a live record here since the last
  // take, written or applied (not the key-value or ports families', not a
  // tombstone, nor a loser kept in the history alone): the view audit's
  // list of what to look at (view/view_audit.h). Kept from KeepNsWritten on
  // (max_bytes 0: not kept); once the keys kept would take more than
  // max_bytes (each its bytes and kNsWrittenBytesPerKey, about a set node's),
  // none is kept until the next take, which says so (overflowed: look at
  // everything).
  struct NsWritten {
    std::set<std::string, std::less<>> keys;
    bool overflowed = false;
  };
  static constexpr size_t kNsWrittenBytes = 16 << 20;
  static constexpr size_t kNsWrittenBytesPerKey = 80;
  void KeepNsWritten(size_t max_bytes = kNsWrittenBytes);
  NsWritten TakeNsWritten();
  // The records of one bucket after (after_space, after_key), in family then
  // key order, until about max_bytes; *more says whether others follow.
  Status ReadBucket(size_t bucket, Cf after_space, std::string_view after_key, size_t max_bytes,
                    const std::function<void(Cf, std::string_view key, std::string_view encoded)>& fn, bool* more);

  // Content chunks, addressed by their digest: immutable, so written without
  // versions. A chunk skips the write-ahead log (it would write and
  // checksum every byte once more) unless a synced write will name it while
  // it is small: it is durable once the chunks family is flushed. GetChunk
  // does not verify RocksDB's checksums: callers check the bytes against
  // the digest.
  enum class ChunkDurability {
    // Durable by the synced write that names it (fsync's record, a quorum
    // push): under 64 KiB through the WAL, else flushed by every synced
    // write that follows (FlushChunks).
    kBySyncedWrite,
    // Durable by the next flush of the family; a crash before it may lose
    // it, as the chunk mark tells the next start (the view or a peer gives
    // it back): a closed file's content, replication's pushes. Synced
    // writes do not wait for it.
    kEventually,
  };
  Status PutChunk(std::string_view digest, std::string_view bytes,
                  ChunkDurability durability = ChunkDurability::kBySyncedWrite);
  Result<std::string> GetChunk(std::string_view digest);
  bool HasChunk(std::string_view digest);  // reads the chunk (a blob) to tell
  // False only when the chunk is surely not here (a bloom filter; no blob read).
  bool MayHaveChunk(std::string_view digest);
  // Makes every chunk put so far durable (a no-op when none waits).
  Status FlushChunks();
  // FlushChunks once no chunk has been put without the WAL for `quiet`, or
  // the oldest unflushed one is max_age old: bounds how long a crash may
  // lose a closed file's chunks, and clears the mark that makes the next
  // start look for lost ones (also when nothing is left to flush).
  Status FlushChunksIfQuiet(std::chrono::milliseconds quiet, std::chrono::milliseconds max_age);
  // FlushChunksIfQuiet has work to come: chunks wait in the memtable, or
  // the mark of possibly lost ones is still written.
  bool ChunksAwaitFlush();
  // For chunks a record will name before they are put (the recorder stores
  // some after recording): the mark of possibly lost chunks stays while any
  // hold is taken. Take it before the record is written.
  Status HoldChunkMark();
  void ReleaseChunkMark();
  // The last run ended before its chunks were flushed (a crash): records may
  // name chunks this store no longer holds. Stays true for this run.
  bool ChunksMayBeLost() const { return chunks_may_be_lost_; }

  // Small named values of the node itself (meta family).
  Result<std::string> GetMeta(std::string_view key);
  Status PutMeta(std::string_view key, std::string_view value, bool sync);

  HybridLogicalClock& clock() { return clock_; }
  uint64_t node_id() const { return node_id_; }
  // RocksDB's figures for one column family (the Store service's keys by default).
  StoreStats Stats(Cf family = Cf::kKv);

  static Status ValidateKey(std::string_view key);
  static Status ValidateValue(std::string_view value);

 private:
  Store(const StoreOptions& options);
  rocksdb::ColumnFamilyHandle* cf(Cf c) const { return handles_[static_cast<size_t>(c)]; }
  std::mutex& StripeFor(std::string_view key);
  // Adds the HLC high-water mark to batch and commits it.
  Status Commit(rocksdb::WriteBatch& batch, HlcTimestamp hlc, bool sync);
  Result<Record> ReadRecord(std::string_view key, Cf space);  // tombstones included
  static Status CheckVersioned(Cf space);

  HybridLogicalClock clock_;
  uint64_t node_id_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* default_cf_ = nullptr;
  std::array<std::mutex, 64> stripes_;
  std::mutex chunks_mark_mu_;   // the fields below and the mark in the meta family
  std::mutex chunks_flush_mu_;  // one FlushChunks at a time
  bool chunks_unflushed_ = false;     // WAL-less chunks may wait in the memtable
  // WAL-less kBySyncedWrite puts done, and how many of them a finished flush
  // holds: a synced write flushes unless every one put before it is held
  // (a flush still under way does not count until it has finished).
  uint64_t synced_puts_ = 0;
  uint64_t synced_puts_flushed_ = 0;
  std::chrono::steady_clock::time_point first_walless_put_, last_walless_put_;  // of the unflushed ones
  bool chunks_mark_written_ = false;  // the mark is in the meta family
  int chunk_mark_holds_ = 0;
  int chunk_puts_in_flight_ = 0;  // WAL-less puts begun, not yet done
  // Before a synced write takes its locks: the kBySyncedWrite chunks put so
  // far are durable first, so a synced record never names a chunk a crash
  // can lose.
  Status FlushChunksIfSynced(bool sync);
  bool chunks_may_be_lost_ = false;
  Status WriteChunkMark();  // under chunks_mark_mu_
  std::mutex log_mu_;  // log sequence numbers are taken and committed in order
  // The writes staged for the next commit (store.cc: CommitGroup); under log_mu_.
  struct OpenGroup {
    std::unique_ptr<rocksdb::WriteBatch> batch;  // made when the first write is staged
    HlcTimestamp hlc = 0;
    bool sync = false;
    uint64_t generation = 1;
    uint64_t last_seq = 0;          // its last log entry
    std::shared_ptr<Status> result;  // its commit's, for every writer in it
  };
  OpenGroup group_;
  bool committing_ = false;              // a group's commit is under way (log_mu_ released)
  uint64_t committed_generation_ = 0;    // every group up to this one is committed
  std::condition_variable group_committed_;
  rocksdb::WriteBatch& OpenBatch();  // group_'s, under log_mu_
  // After a write staged its entries in OpenBatch() (log_lock held): waits
  // until its group is committed, committing it when nobody else is.
  Status CommitGroup(std::unique_lock<std::mutex>& log_lock, HlcTimestamp hlc, bool sync);
  std::atomic<uint64_t> commits_{0};  // raised after every write of records (Commit)
  void NoteNsWritten(std::string_view key);  // (for TakeNsWritten; ns_written_mu_ is taken last of all)
  std::mutex ns_written_mu_;
  size_t ns_written_max_bytes_ = 0;  // 0: none kept
  size_t ns_written_bytes_ = 0;      // the keys' in ns_written_
  NsWritten ns_written_;
  std::mutex digests_mu_;             // the last bucket digests, and the commits_ they were read at
  uint64_t digests_at_ = UINT64_MAX;
  std::vector<std::string> digests_;
  std::string digests_root_;
  std::atomic<uint64_t> log_seq_{0};        // the last entry numbered (staged or committed)
  std::atomic<uint64_t> log_committed_{0};  // the last entry committed
  std::function<void()> log_observer_;
  std::function<void()> chunks_observer_;  // with chunks_mark_mu_
  std::atomic<uint64_t> log_first_{1};
  Status AppendLog(rocksdb::WriteBatch& batch, Cf space, std::string_view key, const std::string& encoded);
  // Adds record (of ns key) to the history in batch, trimming the oldest;
  // edits carries what the same batch already added and removed.
  struct HistoryEdits {
    std::map<std::string, std::set<std::string>> added, deleted;
  };
  void KeepInHistory(rocksdb::WriteBatch& batch, std::string_view key, const Record& record,
                     HistoryEdits* edits = nullptr);
};

}  // namespace onebox

#include "consistency/store.h"

#include "consistency/bytes.h"
#include "consistency/digest.h"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/merge_operator.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/cache.h>
#include <rocksdb/write_batch.h>

namespace onebox {

namespace {

constexpr std::string_view kHlcMetaKey = "hlc";
// Present while chunks written without the WAL may not be flushed yet: after a
// crash, records may name chunks the store lost (Store::ChunksMayBeLost).
constexpr std::string_view kChunksUnflushedKey = "chunks-unflushed";
// kBySyncedWrite chunks at least this big skip the WAL (a synced write flushes
// them); smaller ones are cheaper to log than to flush at every fsync.
constexpr size_t kWalLessChunkBytes = 64 << 10;

// Keeps the larger of two 8-byte big-endian values: the order in which
// concurrent batches commit their HLC marks does not matter.
class MaxMergeOperator : public rocksdb::AssociativeMergeOperator {
 public:
  bool Merge(const rocksdb::Slice&, const rocksdb::Slice* existing, const rocksdb::Slice& value,
             std::string* new_value, rocksdb::Logger*) const override {
    if (existing == nullptr || existing->compare(value) < 0) {
      new_value->assign(value.data(), value.size());
    } else {
      new_value->assign(existing->data(), existing->size());
    }
    return true;
  }
  const char* Name() const override { return "onebox.MaxMergeOperator"; }
};

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  if (s.IsNotFound()) return Status::NotFound(fmt::format("{}: {}", what, s.ToString()));
  if (s.IsCorruption()) return Status::Corruption(fmt::format("{}: {}", what, s.ToString()));
  return Status::IOError(fmt::format("{}: {}", what, s.ToString()));
}

// The smallest key greater than every key starting with prefix ("" if none).
std::string PrefixUpperBound(std::string_view prefix) {
  std::string bound(prefix);
  while (!bound.empty() && static_cast<uint8_t>(bound.back()) == 0xff) bound.pop_back();
  if (!bound.empty()) bound.back() = static_cast<char>(static_cast<uint8_t>(bound.back()) + 1);
  return bound;
}

}  // namespace

Status Store::ValidateKey(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("key must not be empty");
  if (key.size() > StoreLimits::kMaxKeyBytes)
    return Status::InvalidArgument(
        fmt::format("key of {} bytes exceeds the limit of {} bytes", key.size(), StoreLimits::kMaxKeyBytes));
  return Status::Ok();
}

Status Store::ValidateValue(std::string_view value) {
  if (value.size() > StoreLimits::kMaxValueBytes)
    return Status::InvalidArgument(fmt::format("value of {} bytes exceeds the limit of {} bytes", value.size(),
                                               StoreLimits::kMaxValueBytes));
  return Status::Ok();
}

Store::Store(const StoreOptions& options)
    : clock_(options.wall, options.max_clock_offset_ms), node_id_(options.node_id) {}

Store::~Store() {
  if (!db_) return;
  (void)FlushChunks();
  for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
  if (default_cf_) db_->DestroyColumnFamilyHandle(default_cf_);
  db_->Close();
}

namespace {

// Whether path (or, while it is not made yet, the nearest directory above it) is on tmpfs.
bool OnTmpfs(std::string path) {
  struct statfs fs;
  while (statfs(path.c_str(), &fs) != 0) {
    if (errno != ENOENT || path == "." || path == "/") return false;
    const size_t slash = path.find_last_of('/');
    path = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  }
  return fs.f_type == TMPFS_MAGIC;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  if (options.node_id == 0) return Status::InvalidArgument("store needs a non-zero node id");
  std::unique_ptr<Store> store(new Store(options));

  // Small memory footprint: agents run many to a machine in tests and benches.
  static std::shared_ptr<rocksdb::Cache> block_cache = rocksdb::NewLRUCache(16 << 20);
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = block_cache;
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size = 8 << 20;
  cf_options.max_write_buffer_number = 2;
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  db_options.keep_log_file_num = 3;
  // RocksDB preallocates each write-ahead log file by 1.1 times the biggest
  // write buffer (18 MiB, the chunks'), though the log gets a few hundred
  // bytes a record (chunks skip it). On tmpfs (tests, memory-backed volumes)
  // fallocate takes and zeroes that much memory at once: a tenth of the
  // recorder's CPU in a burst there. Elsewhere it reserves extents, cheaply.
  db_options.allow_fallocate = !OnTmpfs(options.path);

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, cf_options);
  for (size_t i = 0; i < static_cast<size_t>(Cf::kCount); ++i) {
    rocksdb::ColumnFamilyOptions o = cf_options;
    if (static_cast<Cf>(i) == Cf::kMeta) o.merge_operator = std::make_shared<MaxMergeOperator>();
    if (static_cast<Cf>(i) == Cf::kChunks) {
      // Chunks (up to 1 MiB each) go to blob files: compaction moves only
      // their keys, not the bytes again and again.
      o.enable_blob_files = true;
      o.min_blob_size = 4096;
      // A bloom filter answers MayHaveChunk without reading a blob.
      rocksdb::BlockBasedTableOptions chunk_table = table;
      chunk_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
      o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(chunk_table));
      o.write_buffer_size = 16 << 20;  // chunks stay in the memtable until a flush: bounded
    }
    descriptors.emplace_back(kCfNames[i], o);
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, descriptors, &handles, &raw);
  if (!s.ok()) return FromRocks(s, fmt::format("open store at {}", options.path));
  store->db_.reset(raw);
  store->default_cf_ = handles[0];
  store->handles_.assign(handles.begin() + 1, handles.end());

  // The log continues after its last entry.
  {
    std::unique_ptr<rocksdb::Iterator> it(store->db_->NewIterator(rocksdb::ReadOptions(), store->cf(Cf::kLog)));
    it->SeekToLast();
    if (it->Valid()) store->log_seq_ = ReadBE64(std::string_view(it->key().data(), it->key().size()));
    store->log_committed_ = store->log_seq_.load();
    it->SeekToFirst();
    store->log_first_ = it->Valid() ? ReadBE64(std::string_view(it->key().data(), it->key().size()))
                                    : store->log_seq_.load() + 1;
  }
  // Chunks may have been lost with the memtable (a crash): flush them (and
  // clear the mark) once the caller has repaired what it can.
  {
    std::string unflushed;
    if (store->db_->Get(rocksdb::ReadOptions(), store->cf(Cf::kMeta), kChunksUnflushedKey, &unflushed).ok())
      store->chunks_may_be_lost_ = store->chunks_mark_written_ = store->chunks_unflushed_ = true;
  }
  // Monotone across restarts: never issue a timestamp at or below one we wrote.
  std::string mark;
  s = store->db_->Get(rocksdb::ReadOptions(), store->cf(Cf::kMeta), kHlcMetaKey, &mark);
  if (s.ok()) {
    store->clock_.Observe(ReadBE64(mark));
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read persisted clock");
  }
  return store;
}

std::mutex& Store::StripeFor(std::string_view key) {
  return stripes_[std::hash<std::string_view>{}(key) % stripes_.size()];
}

Status Store::Commit(rocksdb::WriteBatch& batch, HlcTimestamp hlc, bool sync) {
  rocksdb::Status s = batch.Merge(cf(Cf::kMeta), kHlcMetaKey, BE64(hlc));
  if (s.ok()) {
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    s = db_->Write(wo, &batch);
  }
  ++commits_;  // after the write: a digest read before this one is read again
  return FromRocks(s, "write");
}

Status Store::CheckVersioned(Cf space) {
  if (static_cast<size_t>(space) >= static_cast<size_t>(Cf::kCount) || !kCfVersioned[static_cast<size_t>(space)])
    return Status::InvalidArgument("not a versioned column family");
  return Status::Ok();
}

Status Store::AppendLog(rocksdb::WriteBatch& batch, Cf space, std::string_view key, const std::string& encoded) {
  std::string entry;
  entry.push_back(static_cast<char>(space));
  entry += BE64(key.size());
  entry.append(key);
  entry += encoded;
  return FromRocks(batch.Put(cf(Cf::kLog), BE64(++log_seq_), entry), "log");
}

Result<std::vector<LogEntry>> Store::ReadLog(uint64_t after, size_t limit) {
  std::vector<LogEntry> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(Cf::kLog)));
  for (it->Seek(BE64(after + 1)); it->Valid() && out.size() < limit; it->Next()) {
    std::string_view v(it->value().data(), it->value().size());
    if (v.size() < 9) return Status::Corruption("short log entry");
    LogEntry e;
    e.seq = ReadBE64(std::string_view(it->key().data(), it->key().size()));
    e.space = static_cast<Cf>(static_cast<uint8_t>(v[0]));
    uint64_t klen = ReadBE64(v.substr(1, 8));
    if (v.size() < 9 + klen) return Status::Corruption("short log entry");
    e.key.assign(v.substr(9, klen));
    Result<Record> r = DecodeRecord(v.substr(9 + klen));
    if (!r.ok()) return r.status();
    e.record = std::move(r).value();
    out.push_back(std::move(e));
  }
  if (!it->status().ok()) return FromRocks(it->status(), "read log");
  return out;
}

Result<Record> Store::ReadRecord(std::string_view key, Cf space) {
  std::string bytes;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(space), key, &bytes);
  if (s.IsNotFound()) return Status::NotFound(fmt::format("key '{}' not found", key));
  if (!s.ok()) return FromRocks(s, "read");
  return DecodeRecord(bytes);
}

Result<Version> Store::Put(std::string_view key, std::string_view value, bool sync, Cf space) {
  return Write({Mutation{std::string(key), false, std::string(value), space}}, sync);
}

Result<Version> Store::Delete(std::string_view key, bool sync, bool* existed, Cf space) {
  if (Status s = ValidateKey(key); !s.ok()) return s;
  if (Status s = CheckVersioned(space); !s.ok()) return s;
  if (Status f = FlushChunksIfSynced(sync); !f.ok()) return f;
  std::lock_guard lock(StripeFor(key));
  Result<Record> old = ReadRecord(key, space);
  if (!old.ok() && old.status().code() != Code::kNotFound) return old.status();
  if (existed) *existed = old.ok() && !old->tombstone;
  Record tomb{{clock_.Now(), node_id_}, true, {}};
  std::string encoded = EncodeRecord(tomb);
  std::unique_lock log_lock(log_mu_);
  rocksdb::WriteBatch& batch = OpenBatch();
  batch.SetSavePoint();
  const uint64_t seq_before = log_seq_.load();
  if (space == Cf::kNs && old.ok() && !old->tombstone) KeepInHistory(batch, key, *old);  // rm keeps it reachable
  Status st = FromRocks(batch.Put(cf(space), key, encoded), "delete");
  if (st.ok()) st = AppendLog(batch, space, key, encoded);
  if (!st.ok()) {
    (void)batch.RollbackToSavePoint();
    log_seq_ = seq_before;  // no hole in the numbering
    return st;
  }
  (void)batch.PopSavePoint();
  if (st = CommitGroup(log_lock, tomb.version.hlc, sync); !st.ok()) return st;
  return tomb.version;
}

// Writes that add to the log are staged, in log order, into the open group's
// batch; the first of them to find no commit under way commits the whole
// group as one RocksDB write (synced if any of its writes asked for it) with
// log_mu_ released, so that writers staging meanwhile form the next group:
// concurrent synced writes share one fsync, as etcd's raft log batches its
// appends, and each write is seen only once its group is committed (durable,
// when synced). Groups commit one after the other: log order = commit order.
rocksdb::WriteBatch& Store::OpenBatch() {
  if (!group_.batch) {
    group_.batch = std::make_unique<rocksdb::WriteBatch>();
    group_.result = std::make_shared<Status>();
  }
  return *group_.batch;
}

Status Store::CommitGroup(std::unique_lock<std::mutex>& log_lock, HlcTimestamp hlc, bool sync) {
  group_.hlc = std::max(group_.hlc, hlc);
  group_.sync = group_.sync || sync;
  group_.last_seq = log_seq_.load();
  const uint64_t mine = group_.generation;
  std::shared_ptr<Status> result = group_.result;  // the group's, whoever commits it
  while (committed_generation_ < mine) {
    if (committing_) {
      group_committed_.wait(log_lock);
      continue;
    }
    committing_ = true;
    OpenGroup group = std::move(group_);
    group_ = OpenGroup{};
    group_.generation = group.generation + 1;
    log_lock.unlock();
    Status s = Commit(*group.batch, group.hlc, group.sync);
    log_lock.lock();
    committing_ = false;
    committed_generation_ = group.generation;
    *group.result = s;
    if (s.ok()) {
      log_committed_.store(group.last_seq);
      if (log_observer_) log_observer_();
    }
    group_committed_.notify_all();
  }
  return *result;
}

uint64_t Store::LastLogSeqOfVisibleWrites() {
  std::unique_lock log_lock(log_mu_);
  // Only the group being committed can be visible and uncounted: staged
  // writes are not in the store yet.
  if (committing_) {
    const uint64_t being_committed = group_.generation - 1;
    group_committed_.wait(log_lock, [&] { return committed_generation_ >= being_committed; });
  }
  return log_committed_.load();
}

Result<Version> Store::Write(const std::vector<Mutation>& mutations, bool sync) {
  if (mutations.empty()) return Status::InvalidArgument("empty write");
  for (const Mutation& m : mutations) {
    if (Status s = ValidateKey(m.key); !s.ok()) return s;
    if (Status s = ValidateValue(m.value); !s.ok()) return s;
    if (m.tombstone && !m.value.empty()) return Status::InvalidArgument("a delete carries no value");
    if (Status s = CheckVersioned(m.space); !s.ok()) return s;
  }
  if (Status f = FlushChunksIfSynced(sync); !f.ok()) return f;
  // Lock every stripe involved, in address order, so that the version taken
  // under the locks is larger than that of any write these keys saw before.
  std::set<std::mutex*> stripes;
  for (const Mutation& m : mutations) stripes.insert(&StripeFor(m.key));
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(stripes.size());
  for (std::mutex* m : stripes) locks.emplace_back(*m);
  Version version{clock_.Now(), node_id_};
  Status st;
  std::unique_lock log_lock(log_mu_);  // log order = commit order
  rocksdb::WriteBatch& batch = OpenBatch();
  batch.SetSavePoint();
  const uint64_t seq_before = log_seq_.load();
  HistoryEdits edits;
  for (const Mutation& m : mutations) {
    if (m.space == Cf::kNs)  // what this write replaces stays reachable
      if (Result<Record> held = ReadRecord(m.key, m.space); held.ok() && !held->tombstone)
        KeepInHistory(batch, m.key, *held, &edits);
    std::string encoded = EncodeRecord(Record{version, m.tombstone, m.value});
    rocksdb::Status s = batch.Put(cf(m.space), m.key, encoded);
    if (!s.ok()) {
      st = FromRocks(s, "write");
      break;
    }
    if (st = AppendLog(batch, m.space, m.key, encoded); !st.ok()) break;
  }
  if (!st.ok()) {
    (void)batch.RollbackToSavePoint();
    log_seq_ = seq_before;  // no hole in the numbering
    return st;
  }
  (void)batch.PopSavePoint();
  if (st = CommitGroup(log_lock, version.hlc, sync); !st.ok()) return st;
  if (log_lock.owns_lock()) log_lock.unlock();
  locks.clear();
  for (const Mutation& m : mutations)
    if (m.space == Cf::kNs && !m.tombstone) NoteNsWritten(m.key);
  return version;
}

void Store::KeepNsWritten(size_t max_bytes) {
  std::lock_guard lock(ns_written_mu_);
  ns_written_max_bytes_ = max_bytes;
  if (max_bytes == 0) {
    ns_written_ = NsWritten{};
    ns_written_bytes_ = 0;
  }
}

Store::NsWritten Store::TakeNsWritten() {
  std::lock_guard lock(ns_written_mu_);
  NsWritten taken = std::move(ns_written_);
  ns_written_ = NsWritten{};
  ns_written_bytes_ = 0;
  return taken;
}

void Store::NoteNsWritten(std::string_view key) {
  std::lock_guard lock(ns_written_mu_);
  if (ns_written_max_bytes_ == 0 || ns_written_.overflowed) return;
  if (ns_written_.keys.count(key) > 0) return;  // (std::set<std::string, std::less<>>)
  const size_t cost = key.size() + kNsWrittenBytesPerKey;
  if (ns_written_bytes_ + cost > ns_written_max_bytes_) {
    ns_written_.keys.clear();
    ns_written_bytes_ = 0;
    ns_written_.overflowed = true;
    return;
  }
  ns_written_.keys.emplace(key);
  ns_written_bytes_ += cost;
}

Result<Record> Store::Get(std::string_view key, Cf space) {
  if (Status s = ValidateKey(key); !s.ok()) return s;
  if (Status s = CheckVersioned(space); !s.ok()) return s;
  Result<Record> r = ReadRecord(key, space);
  if (r.ok() && r->tombstone) return Status::NotFound(fmt::format("key '{}' not found", key));
  return r;
}

Result<ScanPage> Store::Scan(std::string_view prefix, std::string_view start_after, size_t limit, bool keys_only,
                             Cf space) {
  if (Status s = CheckVersioned(space); !s.ok()) return s;
  if (limit == 0) limit = StoreLimits::kDefaultScanLimit;
  if (limit > StoreLimits::kMaxScanLimit)
    return Status::InvalidArgument(
        fmt::format("scan limit {} exceeds the maximum of {}", limit, StoreLimits::kMaxScanLimit));
  if (prefix.size() > StoreLimits::kMaxKeyBytes || start_after.size() > StoreLimits::kMaxKeyBytes)
    return Status::InvalidArgument(fmt::format("prefix and start_after are at most {} bytes", StoreLimits::kMaxKeyBytes));

  std::string upper = PrefixUpperBound(prefix);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions ro;
  if (!upper.empty()) ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf(space)));

  std::string_view seek = prefix;
  if (!start_after.empty() && start_after > prefix) seek = start_after;
  ScanPage page;
  size_t page_bytes = 0;
  for (it->Seek(rocksdb::Slice(seek.data(), seek.size())); it->Valid(); it->Next()) {
    std::string_view k(it->key().data(), it->key().size());
    if (!start_after.empty() && k <= start_after) continue;
    std::string_view v(it->value().data(), it->value().size());
    Result<Record> rec = DecodeRecord(v, /*with_value=*/!keys_only);
    if (!rec.ok()) return rec.status();
    if (rec->tombstone) continue;
    size_t entry_bytes = k.size() + rec->value.size();
    if (page.entries.size() == limit ||
        (!page.entries.empty() && page_bytes + entry_bytes > StoreLimits::kMaxScanPageBytes)) {
      page.more = true;
      break;
    }
    page_bytes += entry_bytes;
    page.entries.push_back(Entry{std::string(k), std::move(rec).value()});
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scan");
  return page;
}

Result<bool> Store::Apply(std::string_view key, const Record& record, bool sync, Cf space) {
  if (Status s = ValidateKey(key); !s.ok()) return s;
  if (Status s = CheckVersioned(space); !s.ok()) return s;
  if (Status s = ValidateValue(record.value); !s.ok()) return s;
  if (record.tombstone && !record.value.empty()) return Status::InvalidArgument("a tombstone carries no value");
  if (record.version.node == 0) return Status::InvalidArgument("record has no origin node");
  if (Status f = FlushChunksIfSynced(sync); !f.ok()) return f;
  // HLC receive rule: the local clock moves past the record's timestamp. A
  // record stamped too far ahead of our wall clock is refused for now; the
  // sender retries, and it is accepted once our clock has caught up.
  if (Result<HlcTimestamp> t = clock_.Update(record.version.hlc); !t.ok())
    return Status::Unavailable(t.status().message());
  std::unique_lock lock(StripeFor(key));
  std::string bytes;
  rocksdb::WriteBatch batch;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(space), key, &bytes);
  if (s.ok()) {
    Result<Record> held = DecodeRecord(bytes);
    if (!held.ok()) return held.status();
    if (!Newer(record.version, held->version)) {
      // It lost: kept all the same, never silently dropped.
      if (space == Cf::kNs && !record.tombstone && held->version != record.version) {
        KeepInHistory(batch, key, record);
        if (Status st = FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "history"); !st.ok()) return st;
      }
      return false;
    }
    if (space == Cf::kNs && !held->tombstone) KeepInHistory(batch, key, *held);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "read");
  }
  s = batch.Put(cf(space), key, EncodeRecord(record));
  if (!s.ok()) return FromRocks(s, "apply");
  if (Status st = Commit(batch, record.version.hlc, sync); !st.ok()) return st;
  lock.unlock();
  if (space == Cf::kNs && !record.tombstone) NoteNsWritten(key);
  return true;
}

Result<std::vector<bool>> Store::ApplyBatch(const std::vector<RemoteRecord>& records, bool sync) {
  HlcTimestamp highest = 0;
  for (const RemoteRecord& r : records) {
    if (Status s = ValidateKey(r.key); !s.ok()) return s;
    if (Status s = CheckVersioned(r.space); !s.ok()) return s;
    if (Status s = ValidateValue(r.record.value); !s.ok()) return s;
    if (r.record.tombstone && !r.record.value.empty()) return Status::InvalidArgument("a tombstone carries no value");
    if (r.record.version.node == 0) return Status::InvalidArgument("record has no origin node");
    highest = std::max(highest, r.record.version.hlc);
  }
  if (Result<HlcTimestamp> t = clock_.Update(highest); !t.ok()) return Status::Unavailable(t.status().message());
  // Synced: the chunks put before it are durable, and so is the WAL, even
  // when nothing here is new (the records came unsynced first): the caller
  // counts this node as holding them durably.
  if (Status f = FlushChunksIfSynced(sync); !f.ok()) return f;
  // Every stripe involved, in address order (as Write takes them), held until
  // the batch is committed: no newer version can slip in between.
  std::set<std::mutex*> stripes;
  for (const RemoteRecord& r : records) stripes.insert(&StripeFor(r.key));
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(stripes.size());
  for (std::mutex* m : stripes) locks.emplace_back(*m);
  std::vector<bool> won(records.size(), false);
  // Within the batch, a key's later record competes with its earlier one.
  std::map<std::pair<Cf, std::string_view>, const Record*> pending;
  rocksdb::WriteBatch batch;
  HistoryEdits edits;
  for (size_t i = 0; i < records.size(); ++i) {
    const RemoteRecord& r = records[i];
    auto held_it = pending.find({r.space, r.key});
    std::optional<Record> held;
    if (held_it != pending.end()) {
      held = *held_it->second;
    } else {
      std::string bytes;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(r.space), r.key, &bytes);
      if (s.ok()) {
        Result<Record> v = DecodeRecord(bytes);
        if (!v.ok()) return v.status();
        held = std::move(v).value();
      } else if (!s.IsNotFound()) {
        return FromRocks(s, "read");
      }
    }
    if (held && !Newer(r.record.version, held->version)) {
      // It lost: kept all the same, never silently dropped.
      if (r.space == Cf::kNs && !r.record.tombstone && held->version != r.record.version)
        KeepInHistory(batch, r.key, r.record, &edits);
      continue;
    }
    if (held && r.space == Cf::kNs && !held->tombstone) KeepInHistory(batch, r.key, *held, &edits);
    if (rocksdb::Status s = batch.Put(cf(r.space), r.key, EncodeRecord(r.record)); !s.ok()) return FromRocks(s, "apply");
    pending[{r.space, r.key}] = &r.record;
    won[i] = true;
  }
  if (batch.Count() > 0) {
    if (Status st = Commit(batch, highest, sync); !st.ok()) return st;
    locks.clear();
    for (size_t i = 0; i < records.size(); ++i)
      if (won[i] && records[i].space == Cf::kNs && !records[i].record.tombstone) NoteNsWritten(records[i].key);
  } else if (sync) {
    if (Status w = FromRocks(db_->SyncWAL(), "sync the WAL"); !w.ok()) return w;
  }
  return won;
}

namespace {
std::string HistoryKey(std::string_view key, const Version& v) {
  std::string k(key);
  k.push_back('\0');
  k += BE64(v.hlc);
  k += BE64(v.node);
  return k;
}
}  // namespace

void Store::KeepInHistory(rocksdb::WriteBatch& batch, std::string_view key, const Record& record,
                          HistoryEdits* edits) {
  HistoryEdits local;
  if (edits == nullptr) edits = &local;
  std::string hkey = HistoryKey(key, record.version);
  std::string prefix(key);
  prefix.push_back('\0');
  // What the path's history holds with this batch's edits (a batch may
  // replace one path several times), in version order.
  std::set<std::string> held;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(Cf::kHistory)));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) held.insert(it->key().ToString());
  for (const std::string& k : edits->added[std::string(key)]) held.insert(k);
  for (const std::string& k : edits->deleted[std::string(key)]) held.erase(k);
  if (held.count(hkey)) return;  // kept already (a replayed record)
  held.insert(hkey);
  edits->added[std::string(key)].insert(hkey);
  batch.Put(cf(Cf::kHistory), hkey, EncodeRecord(record));
  // The oldest beyond kHistoryPerPath go: the newest stay, whatever came last.
  while (held.size() > kHistoryPerPath) {
    batch.Delete(cf(Cf::kHistory), *held.begin());
    edits->added[std::string(key)].erase(*held.begin());
    edits->deleted[std::string(key)].insert(*held.begin());
    held.erase(held.begin());
  }
}

Result<std::vector<Record>> Store::History(std::string_view key) {
  if (Status s = ValidateKey(key); !s.ok()) return s;
  std::string prefix(key);
  prefix.push_back('\0');
  std::vector<Record> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(Cf::kHistory)));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    Result<Record> r = DecodeRecord(std::string_view(it->value().data(), it->value().size()));
    if (!r.ok()) return r.status();
    out.push_back(std::move(r).value());
  }
  if (!it->status().ok()) return FromRocks(it->status(), "history");
  std::reverse(out.begin(), out.end());  // newest first
  return out;
}

Result<std::string> Store::Digest(uint64_t* records) {
  Sha256OfParts digest;
  uint64_t count = 0;
  Status st;
  for (size_t i = 0; i < static_cast<size_t>(Cf::kCount) && st.ok(); ++i) {
    if (!kCfVersioned[i]) continue;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(static_cast<Cf>(i))));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      // family, key and the encoded record (version, tombstone flag, value)
      digest.Add(kCfNames[i]);
      digest.Add(std::string_view(it->key().data(), it->key().size()));
      digest.Add(std::string_view(it->value().data(), it->value().size()));
      ++count;
    }
    st = FromRocks(it->status(), "digest");
  }
  std::string raw = digest.Finish();
  if (!st.ok()) return st;
  if (records) *records = count;
  return HexOf(raw);
}

size_t Store::BucketOf(Cf space, std::string_view key) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: the same on every node and build
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ULL;
  };
  mix(static_cast<unsigned char>(space));
  for (char c : key) mix(static_cast<unsigned char>(c));
  return static_cast<size_t>(h % kBuckets);
}

Result<std::vector<std::string>> Store::BucketDigests() {
  std::lock_guard lock(digests_mu_);
  // Read before the scan: a write that lands during it raises commits_
  // after, and the next call scans again.
  const uint64_t at = commits_.load();
  if (at == digests_at_) return digests_;
  std::vector<Sha256OfParts> digests(kBuckets);
  Status st;
  for (size_t i = 0; i < static_cast<size_t>(Cf::kCount) && st.ok(); ++i) {
    if (!kCfVersioned[i]) continue;
    Cf space = static_cast<Cf>(i);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(space)));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view key(it->key().data(), it->key().size());
      Sha256OfParts& digest = digests[BucketOf(space, key)];
      digest.Add(kCfNames[i]);
      digest.Add(key);
      digest.Add(std::string_view(it->value().data(), it->value().size()));
    }
    st = FromRocks(it->status(), "bucket digests");
  }
  std::vector<std::string> out;
  for (Sha256OfParts& digest : digests) out.push_back(digest.Finish());
  if (!st.ok()) return st;
  Sha256OfParts root;
  for (const std::string& d : out) root.Add(d);
  digests_ = out;
  digests_root_ = root.Finish();
  digests_at_ = at;
  return out;
}

Result<std::string> Store::BucketDigestsRoot() {
  if (Result<std::vector<std::string>> digests = BucketDigests(); !digests.ok()) return digests.status();
  std::lock_guard lock(digests_mu_);
  return digests_root_;
}

std::string Store::BucketDigestsRootIfCurrent() {
  // Never waits for a scan under way (the heartbeat that asks goes now).
  std::unique_lock lock(digests_mu_, std::try_to_lock);
  return lock.owns_lock() && digests_at_ == commits_.load() ? digests_root_ : std::string();
}

Status Store::ReadBucket(size_t bucket, Cf after_space, std::string_view after_key, size_t max_bytes,
                         const std::function<void(Cf, std::string_view, std::string_view)>& fn, bool* more) {
  *more = false;
  size_t bytes = 0;
  for (size_t i = static_cast<size_t>(after_space); i < static_cast<size_t>(Cf::kCount); ++i) {
    if (!kCfVersioned[i]) continue;
    Cf space = static_cast<Cf>(i);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(space)));
    if (space == after_space && !after_key.empty()) {
      it->Seek(rocksdb::Slice(after_key.data(), after_key.size()));
      if (it->Valid() && it->key().ToStringView() == after_key) it->Next();
    } else {
      it->SeekToFirst();
    }
    for (; it->Valid(); it->Next()) {
      std::string_view key(it->key().data(), it->key().size());
      if (BucketOf(space, key) != bucket) continue;
      if (bytes >= max_bytes) {
        *more = true;
        return Status::Ok();
      }
      std::string_view value(it->value().data(), it->value().size());
      fn(space, key, value);
      bytes += key.size() + value.size();
    }
    if (Status s = FromRocks(it->status(), "read bucket"); !s.ok()) return s;
  }
  return Status::Ok();
}

Status Store::TruncateLog(uint64_t upto) {
  // The last entry always stays: after a restart the log goes on from it, and
  // peers' acknowledged positions keep their meaning.
  const uint64_t last = log_committed_.load();  // (entries staged for a commit under way are not in it yet)
  upto = std::min(upto, last - (last > 0 ? 1 : 0));
  if (upto < log_first_.load()) return Status::Ok();
  std::string begin = BE64(0), end = BE64(upto + 1);
  Status s = FromRocks(db_->DeleteRange(rocksdb::WriteOptions(), cf(Cf::kLog), begin, end), "truncate log");
  if (s.ok()) log_first_.store(upto + 1);
  return s;
}

Status Store::ForEachRecord(const std::function<void(std::string_view, const Record&)>& fn, Cf space) {
  if (Status s = CheckVersioned(space); !s.ok()) return s;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf(space)));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    Result<Record> rec = DecodeRecord(std::string_view(it->value().data(), it->value().size()));
    if (!rec.ok()) return rec.status();
    fn(std::string_view(it->key().data(), it->key().size()), *rec);
  }
  return FromRocks(it->status(), "iterate");
}

Status Store::PutChunk(std::string_view digest, std::string_view bytes, ChunkDurability durability) {
  rocksdb::WriteOptions wo;
  const bool eventually = durability == ChunkDurability::kEventually;
  if (eventually || bytes.size() >= kWalLessChunkBytes) {
    // The mark goes to the WAL before the chunk is written, so before any
    // record that names it.
    {
      std::lock_guard lock(chunks_mark_mu_);
      if (Status s = WriteChunkMark(); !s.ok()) return s;
      ++chunk_puts_in_flight_;  // the mark stays until this put is flushed
    }
    wo.disableWAL = true;
    Status s = FromRocks(db_->Put(wo, cf(Cf::kChunks), digest, bytes), "put chunk");
    std::lock_guard lock(chunks_mark_mu_);
    --chunk_puts_in_flight_;
    const auto now = std::chrono::steady_clock::now();
    const bool first = !chunks_unflushed_;
    if (first) first_walless_put_ = now;
    chunks_unflushed_ = true;  // after the put: a flush that began before it leaves the flag
    last_walless_put_ = now;
    if (first && chunks_observer_) chunks_observer_();
    if (!eventually) ++synced_puts_;  // after the put: a flush that began before it does not count it
    return s;
  }
  return FromRocks(db_->Put(wo, cf(Cf::kChunks), digest, bytes), "put chunk");
}

Status Store::FlushChunksIfSynced(bool sync) {
  if (!sync) return Status::Ok();
  {
    std::lock_guard lock(chunks_mark_mu_);
    if (synced_puts_flushed_ >= synced_puts_) return Status::Ok();  // every one a synced write may name is flushed
  }
  return FlushChunks();  // (waits for a flush under way first; it may hold them)
}

Status Store::WriteChunkMark() {
  if (chunks_mark_written_) return Status::Ok();
  if (Status s = PutMeta(kChunksUnflushedKey, "1", /*sync=*/false); !s.ok()) return s;
  chunks_mark_written_ = true;
  return Status::Ok();
}

Status Store::HoldChunkMark() {
  std::lock_guard lock(chunks_mark_mu_);
  ++chunk_mark_holds_;  // taken even when the mark cannot be written: every hold is released
  return WriteChunkMark();
}

void Store::ReleaseChunkMark() {
  std::lock_guard lock(chunks_mark_mu_);
  if (chunk_mark_holds_ > 0) --chunk_mark_holds_;
}

Status Store::FlushChunksIfQuiet(std::chrono::milliseconds quiet, std::chrono::milliseconds max_age) {
  {
    std::lock_guard lock(chunks_mark_mu_);
    const auto now = std::chrono::steady_clock::now();
    if (chunks_unflushed_ && now - last_walless_put_ < quiet && now - first_walless_put_ < max_age)
      return Status::Ok();
  }
  return FlushChunks();  // (nothing to flush: it clears a mark left behind, or returns)
}

bool Store::ChunksAwaitFlush() {
  std::lock_guard lock(chunks_mark_mu_);
  return chunks_unflushed_ || chunks_mark_written_;
}

Status Store::FlushChunks() {
  std::lock_guard flush_lock(chunks_flush_mu_);
  bool flush;
  uint64_t covers = 0;  // the kBySyncedWrite puts this flush holds once done
  {
    std::lock_guard lock(chunks_mark_mu_);
    if (!chunks_unflushed_ && !(chunks_mark_written_ && chunk_mark_holds_ == 0)) return Status::Ok();
    flush = chunks_unflushed_;
    chunks_unflushed_ = false;  // a chunk put from now on is for the next flush
    covers = synced_puts_;
  }
  if (flush) {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    if (rocksdb::Status s = db_->Flush(fo, cf(Cf::kChunks)); !s.ok()) {
      std::lock_guard lock(chunks_mark_mu_);
      chunks_unflushed_ = true;
      return FromRocks(s, "flush chunks");
    }
  }
  std::lock_guard lock(chunks_mark_mu_);
  synced_puts_flushed_ = std::max(synced_puts_flushed_, covers);
  // Newer chunks not flushed yet, or chunks still to be put: the mark stays.
  if (chunks_unflushed_ || chunk_mark_holds_ > 0 || chunk_puts_in_flight_ > 0 || !chunks_mark_written_)
    return Status::Ok();
  chunks_mark_written_ = false;
  return FromRocks(db_->Delete(rocksdb::WriteOptions(), cf(Cf::kMeta), kChunksUnflushedKey), "clear chunk mark");
}

// Chunk reads skip RocksDB's checksums: every reader checks the bytes against
// their digest (SHA-256) anyway, and this build's CRC32C is the software one.
bool Store::HasChunk(std::string_view digest) {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = false;
  rocksdb::PinnableSlice bytes;
  return db_->Get(ro, cf(Cf::kChunks), digest, &bytes).ok();
}

bool Store::MayHaveChunk(std::string_view digest) {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = false;
  std::string ignored;
  return db_->KeyMayExist(ro, cf(Cf::kChunks), digest, &ignored);
}

Result<std::string> Store::GetChunk(std::string_view digest) {
  rocksdb::ReadOptions ro;
  ro.verify_checksums = false;
  std::string bytes;
  rocksdb::Status s = db_->Get(ro, cf(Cf::kChunks), digest, &bytes);
  if (!s.ok()) return FromRocks(s, "chunk");
  return bytes;
}

Result<std::string> Store::GetMeta(std::string_view key) {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kMeta), key, &value);
  if (!s.ok()) return FromRocks(s, fmt::format("meta '{}'", key));
  return value;
}

Status Store::PutMeta(std::string_view key, std::string_view value, bool sync) {
  if (key == kHlcMetaKey) return Status::InvalidArgument("meta key 'hlc' is reserved for the clock");
  rocksdb::WriteOptions wo;
  wo.sync = sync;
  return FromRocks(db_->Put(wo, cf(Cf::kMeta), key, value), "put meta");
}

StoreStats Store::Stats(Cf family) {
  StoreStats st;
  db_->GetIntProperty(cf(family), "rocksdb.estimate-num-keys", &st.estimated_keys);
  db_->GetIntProperty(cf(family), "rocksdb.total-sst-files-size", &st.sst_bytes);
  db_->GetIntProperty(cf(family), "rocksdb.cur-size-all-mem-tables", &st.memtable_bytes);
  db_->GetIntProperty(cf(family), "rocksdb.total-blob-file-size", &st.blob_bytes);
  return st;
}

}  // namespace onebox

// The RocksDB store: reads and writes, scans, limits, persistence, clock
// monotonicity across restarts, atomic batches, and last-writer-wins merging
// that converges whatever the order of updates.
#include "consistency/store.h"

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "consistency/crc32c.h"
#include "tests/test_util.h"

namespace onebox {
namespace {

using onebox::testing::TempDir;

std::unique_ptr<Store> OpenStore(const std::string& path, uint64_t node = 1,
                                 HybridLogicalClock::WallClock wall = hlc::SystemWallMillis) {
  Result<std::unique_ptr<Store>> s = Store::Open({.path = path, .node_id = node, .wall = wall});
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::map<std::string, Record> Dump(Store& s) {
  std::map<std::string, Record> all;
  EXPECT_TRUE(s.ForEachRecord([&](std::string_view k, const Record& r) { all[std::string(k)] = r; }).ok());
  return all;
}

// RocksDB's CRC32C (consistency/crc32c.h): the library's calls bind to
// ours, which runs the crc32 instruction where the CPU has it and gives the
// library's own values (and RFC 3720's), whatever the length and alignment,
// so files written by either implementation read back with the other.
TEST(Crc32c, RocksDbsCallsBindToOursWhichGivesTheLibrarysValues) {
  using Extend = uint32_t (*)(uint32_t crc, const char* buf, size_t size);
  constexpr const char* kName = "_ZN7rocksdb6crc32c6ExtendEjPKcm";
  auto bound = reinterpret_cast<Extend>(dlsym(RTLD_DEFAULT, kName));
  auto library = reinterpret_cast<Extend>(dlsym(RTLD_NEXT, kName));
  ASSERT_NE(bound, nullptr);
  ASSERT_NE(library, nullptr);
  Dl_info bound_in{}, library_in{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(bound), &bound_in), 0);
  ASSERT_NE(dladdr(reinterpret_cast<void*>(library), &library_in), 0);
  EXPECT_EQ(std::string(bound_in.dli_fname).find("librocksdb"), std::string::npos) << bound_in.dli_fname;
  EXPECT_NE(std::string(library_in.dli_fname).find("librocksdb"), std::string::npos) << library_in.dli_fname;
  if (__builtin_cpu_supports("sse4.2")) {
    EXPECT_TRUE(Crc32cInHardware());
  }
  // The library's own calls come here (not only a lookup by name): a
  // store's write-ahead log record is checksummed through the override.
  {
    TempDir dir;
    auto store = OpenStore(dir.path(), 7);
    ASSERT_NE(store, nullptr);
    const uint64_t before = Crc32cCalls();
    ASSERT_TRUE(store->Put("a", "one", /*sync=*/false).ok());
    EXPECT_GT(Crc32cCalls(), before)
        << "RocksDB computed its CRC32C elsewhere (linked statically, or bound within itself)";
  }
  auto crc = [&](Extend f, const std::string& s) { return f(0, s.data(), s.size()); };
  auto bytes = [](int from, int step) {
    std::string s;
    for (int i = 0; i < 32; ++i) s.push_back(static_cast<char>(from + i * step));
    return s;
  };
  EXPECT_EQ(crc(bound, "123456789"), 0xe3069283u);
  EXPECT_EQ(crc(bound, std::string(32, '\0')), 0x8a9136aau);
  EXPECT_EQ(crc(bound, std::string(32, '\xff')), 0x62a8ab43u);
  EXPECT_EQ(crc(bound, bytes(0, 1)), 0x46dd794eu);
  EXPECT_EQ(crc(bound, bytes(31, -1)), 0x113fdb5cu);
  std::mt19937 random(7);
  std::string data(5000, '\0');
  for (char& c : data) c = static_cast<char>(random());
  for (size_t offset : {0, 1, 3, 7}) {
    for (size_t size : {0, 1, 7, 8, 9, 63, 64, 65, 1000, 4993}) {
      const char* p = data.data() + offset;
      const uint32_t want = library(0, p, size);
      EXPECT_EQ(bound(0, p, size), want) << offset << " " << size;
      const size_t half = size / 3;
      EXPECT_EQ(bound(bound(0, p, half), p + half, size - half), want) << "continued, " << offset << " " << size;
      EXPECT_EQ(bound(0x12345678u, p, size), library(0x12345678u, p, size));
    }
  }
}

// On tmpfs (tests, memory-backed volumes) the store's write-ahead log takes
// the memory its records need, not the 18 MiB RocksDB would preallocate for
// each log file at once.
TEST(Store, OnTmpfsItsLogTakesOnlyTheMemoryItsRecordsNeed) {
  struct statfs fs;
  ASSERT_EQ(statfs("/dev/shm", &fs), 0);
  ASSERT_EQ(fs.f_type, static_cast<decltype(fs.f_type)>(TMPFS_MAGIC)) << "/dev/shm is tmpfs on Linux";
  TempDir dir("/dev/shm");
  auto s = OpenStore(dir / "store", 7);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(s->Put(fmt::format("k{}", i), std::string(300, 'v'), false).ok());
  uint64_t log_bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "store")) {
    struct stat st;
    if (entry.path().extension() == ".log" && stat(entry.path().c_str(), &st) == 0)
      log_bytes += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  EXPECT_GT(log_bytes, 0u);
  EXPECT_LT(log_bytes, 1u << 20);
}

TEST(Store, PutGetDelete) {
  TempDir dir;
  auto s = OpenStore(dir.path(), 7);
  Result<Version> v1 = s->Put("a", "one", false);
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->node, 7u);
  Result<Record> got = s->Get("a");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "one");
  EXPECT_EQ(got->version, *v1);

  Result<Version> v2 = s->Put("a", "two", true);
  ASSERT_TRUE(v2.ok());
  EXPECT_GT(*v2, *v1);
  EXPECT_EQ(s->Get("a")->value, "two");

  bool existed = false;
  Result<Version> v3 = s->Delete("a", false, &existed);
  ASSERT_TRUE(v3.ok());
  EXPECT_TRUE(existed);
  EXPECT_GT(*v3, *v2);
  EXPECT_EQ(s->Get("a").status().code(), Code::kNotFound);
  // The tombstone is a record with the delete's version.
  auto all = Dump(*s);
  ASSERT_EQ(all.count("a"), 1u);
  EXPECT_TRUE(all["a"].tombstone);
  EXPECT_EQ(all["a"].version, *v3);

  ASSERT_TRUE(s->Delete("never", false, &existed).ok());
  EXPECT_FALSE(existed);
}

// The store lists the namespace keys given a live record here, and only
// those, once asked to: the view audit looks at them (view/view_audit.h).
TEST(Store, TheNamespaceKeysGivenALiveRecordAreListedUntilTaken) {
  TempDir dir;
  auto s = OpenStore(dir.path(), 7);
  ASSERT_TRUE(s->Put("cluster/before", "v", false, Cf::kNs).ok());
  s->KeepNsWritten();
  EXPECT_TRUE(s->TakeNsWritten().keys.empty()) << "listed before it was asked to keep them";
  ASSERT_TRUE(s->Put("kv-key", "v", false).ok());  // the key-value family
  ASSERT_TRUE(s->Put("cluster/f", "v", false, Cf::kPorts).ok());
  ASSERT_TRUE(s->Put("cluster/f", "v", false, Cf::kNs).ok());
  ASSERT_TRUE(s->Delete("cluster/f", false, nullptr, Cf::kNs).ok());  // a tombstone: nothing to look at
  ASSERT_TRUE(
      s->Write({{"cluster/w1", false, "a", Cf::kNs}, {"kv-2", false, "b", Cf::kKv}, {"cluster/w2", true, "", Cf::kNs}},
               false)
          .ok());
  ASSERT_TRUE(s->Write({{"kv-3", false, "c", Cf::kKv}}, false).ok());
  const HlcTimestamp t = s->clock().Now();
  ASSERT_TRUE(s->Apply("cluster/g", Record{{t + 10, 9}, false, "peer's"}, false, Cf::kNs).value());
  // A loser, kept in the history only: no record changed.
  EXPECT_FALSE(s->Apply("cluster/g", Record{{t + 5, 8}, false, "older"}, false, Cf::kNs).value());
  Result<std::vector<bool>> won = s->ApplyBatch({{Cf::kNs, "cluster/g", Record{{t + 6, 8}, false, "older too"}},
                                                 {Cf::kKv, "kv-key", Record{{t + 20, 9}, false, "newer"}},
                                                 {Cf::kNs, "cluster/h", Record{{t + 30, 9}, false, "new"}},
                                                 {Cf::kNs, "cluster/i", Record{{t + 30, 9}, true, ""}}},
                                                false);
  ASSERT_TRUE(won.ok());
  EXPECT_EQ(*won, (std::vector<bool>{false, true, true, true}));
  // A record delivered again (anti-entropy, a replayed batch): no change.
  EXPECT_FALSE(s->Apply("cluster/h", Record{{t + 30, 9}, false, "new"}, false, Cf::kNs).value());
  Store::NsWritten taken = s->TakeNsWritten();
  EXPECT_FALSE(taken.overflowed);
  EXPECT_EQ(taken.keys, (std::set<std::string, std::less<>>{"cluster/f", "cluster/w1", "cluster/g", "cluster/h"}));
  EXPECT_TRUE(s->TakeNsWritten().keys.empty()) << "listed again after the take";
  // A key written again is listed once, and counts once against the bound
  // (room for two of these keys); past it none is listed, and the take says
  // so; then listing goes on.
  s->KeepNsWritten(2 * (std::string("cluster/x").size() + Store::kNsWrittenBytesPerKey));
  for (const char* key : {"cluster/x", "cluster/x", "cluster/y"}) ASSERT_TRUE(s->Put(key, "v", false, Cf::kNs).ok());
  taken = s->TakeNsWritten();
  EXPECT_FALSE(taken.overflowed);
  EXPECT_EQ(taken.keys, (std::set<std::string, std::less<>>{"cluster/x", "cluster/y"}));
  for (const char* key : {"cluster/x", "cluster/y", "cluster/z"}) ASSERT_TRUE(s->Put(key, "v", false, Cf::kNs).ok());
  taken = s->TakeNsWritten();
  EXPECT_TRUE(taken.overflowed);
  EXPECT_TRUE(taken.keys.empty());
  ASSERT_TRUE(s->Put("cluster/after", "v", false, Cf::kNs).ok());
  taken = s->TakeNsWritten();
  EXPECT_FALSE(taken.overflowed);
  EXPECT_EQ(taken.keys, (std::set<std::string, std::less<>>{"cluster/after"}));
  // Not kept once told so.
  s->KeepNsWritten(0);
  ASSERT_TRUE(s->Put("cluster/off", "v", false, Cf::kNs).ok());
  EXPECT_TRUE(s->TakeNsWritten().keys.empty());
}

TEST(Store, EnforcesDocumentedLimits) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  EXPECT_EQ(s->Put("", "v", false).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Get("").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Delete("", false).status().code(), Code::kInvalidArgument);
  std::string max_key(StoreLimits::kMaxKeyBytes, 'k');
  EXPECT_TRUE(s->Put(max_key, "v", false).ok());
  EXPECT_EQ(s->Put(max_key + "k", "v", false).status().code(), Code::kInvalidArgument);
  std::string max_value(StoreLimits::kMaxValueBytes, 'v');
  EXPECT_TRUE(s->Put("big", max_value, false).ok());
  Result<Version> too_big = s->Put("big", max_value + "v", false);
  EXPECT_EQ(too_big.status().code(), Code::kInvalidArgument);
  EXPECT_NE(too_big.status().message().find("exceeds the limit"), std::string::npos);
  EXPECT_EQ(s->Get("big")->value.size(), max_value.size());  // the refused write changed nothing
  EXPECT_EQ(s->Scan("", "", StoreLimits::kMaxScanLimit + 1, false).status().code(), Code::kInvalidArgument);
}

TEST(Store, ScansByPrefixInPagesAndSkipsTombstones) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  for (int i = 0; i < 25; ++i) ASSERT_TRUE(s->Put(fmt::format("user/{:03}", i), std::to_string(i), false).ok());
  ASSERT_TRUE(s->Put("user", "not under the prefix user/", false).ok());
  ASSERT_TRUE(s->Put("userz", "nor this", false).ok());
  ASSERT_TRUE(s->Put("other/1", "x", false).ok());
  ASSERT_TRUE(s->Delete("user/005", false).ok());

  std::vector<std::string> keys;
  std::string after;
  int pages = 0;
  for (;;) {
    Result<ScanPage> page = s->Scan("user/", after, 10, false);
    ASSERT_TRUE(page.ok());
    ++pages;
    for (auto& e : page->entries) keys.push_back(e.key);
    if (!page->more) break;
    after = page->entries.back().key;
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(keys.size(), 24u);
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "user/005"), 0);
  EXPECT_EQ(keys.front(), "user/000");
  EXPECT_EQ(keys.back(), "user/024");

  Result<ScanPage> keys_only = s->Scan("other/", "", 0, true);
  ASSERT_TRUE(keys_only.ok());
  ASSERT_EQ(keys_only->entries.size(), 1u);
  EXPECT_EQ(keys_only->entries[0].record.value, "");
  EXPECT_FALSE(keys_only->more);

  // A prefix ending in 0xff bytes has an upper bound too.
  std::string ff = "p\xff\xff";
  ASSERT_TRUE(s->Put(ff + "a", "1", false).ok());
  ASSERT_TRUE(s->Put("q", "2", false).ok());
  Result<ScanPage> high = s->Scan(ff, "", 0, false);
  ASSERT_TRUE(high.ok());
  ASSERT_EQ(high->entries.size(), 1u);
  EXPECT_EQ(high->entries[0].key, ff + "a");
}

TEST(Store, ScanPagesStayUnderTheByteBudget) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  std::string mib(StoreLimits::kMaxValueBytes, 'v');
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(s->Put(fmt::format("big/{}", i), mib, false).ok());
  std::string after;
  size_t total = 0;
  for (;;) {
    Result<ScanPage> page = s->Scan("big/", after, 100, false);
    ASSERT_TRUE(page.ok());
    ASSERT_FALSE(page->entries.empty());
    size_t bytes = 0;
    for (auto& e : page->entries) bytes += e.key.size() + e.record.value.size();
    EXPECT_LE(bytes, StoreLimits::kMaxScanPageBytes);
    total += page->entries.size();
    if (!page->more) break;
    after = page->entries.back().key;
  }
  EXPECT_EQ(total, 5u);
}

TEST(Store, DataAndClockSurviveReopen) {
  TempDir dir;
  uint64_t wall_ms = 1'800'000'000'000;
  auto wall = [&wall_ms] { return wall_ms; };
  Version last;
  {
    auto s = OpenStore(dir.path(), 3, wall);
    for (int i = 0; i < 100; ++i) last = s->Put(fmt::format("k{}", i), "v", i % 10 == 0).value();
  }
  wall_ms -= 3'600'000;  // the machine comes back with its clock an hour behind
  auto s = OpenStore(dir.path(), 3, wall);
  EXPECT_EQ(s->Get("k42")->value, "v");
  Result<Version> next = s->Put("k0", "after restart", false);
  ASSERT_TRUE(next.ok());
  EXPECT_GT(next->hlc, last.hlc) << "HLC went backwards across a restart";
  EXPECT_EQ(s->Get("k0")->value, "after restart");
}

TEST(Store, MultiKeyWriteIsOneAtomicVersion) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  ASSERT_TRUE(s->Put("old", "x", false).ok());
  Result<Version> v = s->Write({{"a", false, "1"}, {"b", false, "2"}, {"old", true, ""}}, true);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(s->Get("a")->version, *v);
  EXPECT_EQ(s->Get("b")->version, *v);
  EXPECT_EQ(s->Get("old").status().code(), Code::kNotFound);
  // One bad mutation refuses the whole batch.
  Result<Version> bad = s->Write({{"c", false, "3"}, {"", false, "4"}}, false);
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Get("c").status().code(), Code::kNotFound);
}

TEST(Store, ApplyKeepsTheLargerVersionAndRaisesTheClock) {
  TempDir dir;
  auto s = OpenStore(dir.path(), 1);
  HlcTimestamp future = s->clock().Now() + hlc::Pack(100, 0);  // 100 ms ahead: within the offset
  EXPECT_TRUE(*s->Apply("k", Record{{future, 9}, false, "remote"}, false));
  EXPECT_FALSE(*s->Apply("k", Record{{future - 1, 9}, false, "older"}, false));
  EXPECT_FALSE(*s->Apply("k", Record{{future, 9}, false, "remote"}, false));  // same version: no-op
  EXPECT_TRUE(*s->Apply("k", Record{{future, 10}, true, ""}, false));         // tie on hlc: node breaks it
  EXPECT_EQ(s->Get("k").status().code(), Code::kNotFound);
  // A local write after seeing the remote one must win over it.
  Result<Version> local = s->Put("k", "local", false);
  ASSERT_TRUE(local.ok());
  EXPECT_GT(local->hlc, future);
  EXPECT_EQ(s->Get("k")->value, "local");
  EXPECT_EQ(s->Apply("k", Record{{1, 0}, false, "x"}, false).status().code(), Code::kInvalidArgument);
}

TEST(Store, ApplyBatchKeepsTheLargerVersionWithinTheBatchAndAgainstWhatIsHeld) {
  TempDir dir;
  auto s = OpenStore(dir.path(), 1);
  HlcTimestamp t = s->clock().Now();
  ASSERT_TRUE(*s->Apply("held", Record{{t + 50, 9}, false, "newer"}, false));
  Result<std::vector<bool>> won = s->ApplyBatch({{Cf::kKv, "k", Record{{t + 10, 9}, false, "first"}},
                                                 {Cf::kKv, "k", Record{{t + 5, 8}, false, "older, later in the batch"}},
                                                 {Cf::kKv, "k", Record{{t + 20, 7}, false, "newest"}},
                                                 {Cf::kKv, "held", Record{{t + 40, 9}, false, "older"}},
                                                 {Cf::kNs, "k", Record{{t + 1, 9}, true, ""}}},
                                                false);
  ASSERT_TRUE(won.ok()) << won.status().ToString();
  EXPECT_EQ(*won, (std::vector<bool>{true, false, true, false, true}));
  EXPECT_EQ(s->Get("k")->value, "newest");
  EXPECT_EQ(s->Get("held")->value, "newer");
  EXPECT_EQ(s->Get("k", Cf::kNs).status().code(), Code::kNotFound);  // a tombstone in the other family
  EXPECT_GT(s->clock().Last(), t + 40);
  EXPECT_EQ(s->ApplyBatch({{Cf::kChunks, "x", Record{{t, 9}, false, "v"}}}, false).status().code(),
            Code::kInvalidArgument);
}

TEST(Store, HistoryKeepsReplacedAndLosingVersionsTheNewestSixteen) {
  TempDir dir;
  auto s = OpenStore(dir.path(), 1);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(s->Put("cluster/f", "v" + std::to_string(i), false, Cf::kNs).ok());
  ASSERT_TRUE(s->Delete("cluster/f", false, nullptr, Cf::kNs).ok());  // rm keeps the last one reachable
  Result<std::vector<Record>> h = s->History("cluster/f");
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), Store::kHistoryPerPath);
  EXPECT_EQ(h->front().value, "v19");  // newest first
  EXPECT_EQ(h->back().value, "v4");
  // A version that arrives and loses is kept too, if it is among the newest.
  HlcTimestamp t = s->clock().Last();
  ASSERT_TRUE(*s->Apply("cluster/g", Record{{t + 100, 9}, false, "winner"}, false, Cf::kNs));
  EXPECT_FALSE(*s->Apply("cluster/g", Record{{t + 50, 8}, false, "loser"}, false, Cf::kNs));
  EXPECT_EQ(s->History("cluster/g")->front().value, "loser");
  EXPECT_FALSE(*s->Apply("cluster/g", Record{{t + 50, 8}, false, "loser"}, false, Cf::kNs));  // a replay
  EXPECT_EQ(s->History("cluster/g")->size(), 1u);
  // One batch replacing a path many times keeps no more than the limit.
  std::vector<RemoteRecord> batch;
  for (int i = 1; i <= 30; ++i) batch.push_back({Cf::kNs, "cluster/h", Record{{t + 200 + i, 9}, false, std::to_string(i)}});
  ASSERT_TRUE(s->ApplyBatch(batch, false).ok());
  EXPECT_EQ(s->Get("cluster/h", Cf::kNs)->value, "30");
  EXPECT_EQ(s->History("cluster/h")->size(), Store::kHistoryPerPath);
  EXPECT_EQ(s->History("cluster/h")->front().value, "29");
  EXPECT_TRUE(s->History("cluster/x")->empty());
  // kv keys keep no history.
  ASSERT_TRUE(s->Put("k", "1", false).ok());
  ASSERT_TRUE(s->Put("k", "2", false).ok());
  EXPECT_TRUE(s->History("k")->empty());
}

TEST(Store, LogTruncationKeepsTheLastEntryAcrossRestarts) {
  TempDir dir;
  {
    auto s = OpenStore(dir.path(), 5);
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(s->Put("k" + std::to_string(i), "v", false).ok());
    ASSERT_TRUE(s->TruncateLog(100).ok());  // asks for everything: the last entry stays
    EXPECT_EQ(s->FirstLogSeq(), 10u);
    EXPECT_EQ(s->ReadLog(0, 100)->size(), 1u);
  }
  auto s = OpenStore(dir.path(), 5);
  EXPECT_EQ(s->FirstLogSeq(), 10u);
  ASSERT_TRUE(s->Put("after", "v", false).ok());
  EXPECT_EQ(s->LastLogSeq(), 11u) << "sequence numbers go on after a truncation and a restart";
}

TEST(Store, BucketDigestsDifferOnlyWhereRecordsDiffer) {
  TempDir d1, d2;
  auto a = OpenStore(d1.path(), 1);
  auto b = OpenStore(d2.path(), 2);
  HlcTimestamp t = a->clock().Now();
  for (int i = 0; i < 300; ++i) {
    Record r{{t + static_cast<uint64_t>(i), 7}, false, "v"};
    ASSERT_TRUE(*a->Apply("key" + std::to_string(i), r, false));
    ASSERT_TRUE(*b->Apply("key" + std::to_string(i), r, false));
  }
  EXPECT_EQ(*a->BucketDigests(), *b->BucketDigests());
  ASSERT_TRUE(*a->Apply("key7", Record{{t + 1000, 7}, false, "changed"}, false));
  auto da = *a->BucketDigests(), db = *b->BucketDigests();
  size_t differ = 0;
  for (size_t i = 0; i < da.size(); ++i) differ += da[i] != db[i];
  EXPECT_EQ(differ, 1u);
  EXPECT_NE(da[Store::BucketOf(Cf::kKv, "key7")], db[Store::BucketOf(Cf::kKv, "key7")]);
  // The bucket's records, paged: everything in it, and nothing else.
  size_t seen = 0;
  bool more = true;
  Cf after_space = Cf::kKv;
  std::string after;
  while (more) {
    ASSERT_TRUE(a->ReadBucket(Store::BucketOf(Cf::kKv, "key7"), after_space, after, 1,
                              [&](Cf space, std::string_view key, std::string_view) {
                                EXPECT_EQ(Store::BucketOf(space, key), Store::BucketOf(Cf::kKv, "key7"));
                                after_space = space;
                                after = std::string(key);
                                ++seen;
                              },
                              &more)
                    .ok());
  }
  EXPECT_GE(seen, 1u);
}

TEST(Store, ApplyRefusesRecordsFromTooFarInTheFutureUntilTheClockCatchesUp) {
  TempDir dir;
  uint64_t wall_ms = 1'800'000'000'000;
  auto s = OpenStore(dir.path(), 1, [&wall_ms] { return wall_ms; });
  Record ahead{{hlc::Pack(wall_ms + 10'000, 0), 9}, false, "from a fast clock"};
  Result<bool> r = s->Apply("k", ahead, false);
  EXPECT_EQ(r.status().code(), Code::kUnavailable);
  EXPECT_EQ(s->Get("k").status().code(), Code::kNotFound);
  EXPECT_LT(s->clock().Now(), ahead.version.hlc) << "a refused record must not drag the clock forward";
  wall_ms += 9'600;  // within 500 ms of the record now
  r = s->Apply("k", ahead, false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(*r);
  EXPECT_EQ(s->Get("k")->value, "from a fast clock");
}

// Any order of the same set of updates yields the same state: the maximum
// version of each key, tombstones included.
TEST(Store, LastWriterWinsConvergesUnderRandomOrders) {
  std::mt19937_64 rng(20261121);
  struct Update {
    std::string key;
    Record record;
  };
  std::vector<Update> updates;
  std::map<std::string, Record> expected;
  for (int i = 0; i < 600; ++i) {
    Update u;
    u.key = fmt::format("key{}", rng() % 40);
    // Few distinct timestamps and nodes, so that ties on hlc are common.
    u.record.version = Version{hlc::Pack(1'700'000'000'000 + rng() % 8, rng() % 4), 1 + rng() % 3};
    u.record.tombstone = rng() % 5 == 0;
    if (!u.record.tombstone) u.record.value = fmt::format("v{}-{}", u.record.version.hlc, u.record.version.node);
    auto it = expected.find(u.key);
    if (it == expected.end() || it->second.version < u.record.version) expected[u.key] = u.record;
    updates.push_back(u);
  }
  std::set<std::string> digests;
  for (int round = 0; round < 8; ++round) {
    std::shuffle(updates.begin(), updates.end(), rng);
    TempDir dir;
    auto s = OpenStore(dir.path(), 100 + round);
    if (round % 2 == 0) {
      for (const Update& u : updates) ASSERT_TRUE(s->Apply(u.key, u.record, false).ok());
    } else {  // concurrently, from two threads
      std::thread t1([&] {
        for (size_t i = 0; i < updates.size(); i += 2) (void)s->Apply(updates[i].key, updates[i].record, false);
      });
      std::thread t2([&] {
        for (size_t i = 1; i < updates.size(); i += 2) (void)s->Apply(updates[i].key, updates[i].record, false);
      });
      t1.join();
      t2.join();
    }
    EXPECT_EQ(Dump(*s), expected) << "round " << round;
    Result<std::string> digest = s->Digest();
    ASSERT_TRUE(digest.ok());
    digests.insert(*digest);
  }
  EXPECT_EQ(digests.size(), 1u) << "the same records must give the same digest, whatever the order";
}

TEST(Store, BucketDigestsAreReadAgainAfterAWriteOnly) {
  TempDir dir;
  auto s = OpenStore(dir.path(), 7);
  EXPECT_EQ(s->BucketDigestsRootIfCurrent(), "") << "nothing read yet";
  const std::string empty = s->BucketDigestsRoot().value();
  EXPECT_EQ(s->BucketDigestsRootIfCurrent(), empty);
  ASSERT_TRUE(s->Put("k", "v", false).ok());
  EXPECT_EQ(s->BucketDigestsRootIfCurrent(), "") << "a write since";
  const std::string one = s->BucketDigestsRoot().value();
  EXPECT_NE(one, empty);
  EXPECT_EQ(s->BucketDigestsRootIfCurrent(), one);
  ASSERT_TRUE(s->Delete("k", false).ok());
  const std::string deleted = s->BucketDigestsRoot().value();
  EXPECT_NE(deleted, one);
  TempDir peer_dir;
  auto peer = OpenStore(peer_dir.path(), 8);  // a record from another node, applied here
  ASSERT_TRUE(peer->Put("other", "x", false).ok());
  ASSERT_TRUE(s->Apply("other", peer->Get("other").value(), false).ok());
  EXPECT_EQ(s->BucketDigestsRootIfCurrent(), "");
  EXPECT_NE(s->BucketDigestsRoot().value(), deleted);
  const std::vector<std::string> digests = s->BucketDigests().value();
  EXPECT_EQ(s->BucketDigests().value(), digests);
}

TEST(Store, DigestChangesWithAnyRecord) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  uint64_t n = 0;
  std::string empty = *s->Digest(&n);
  EXPECT_EQ(n, 0u);
  ASSERT_TRUE(s->Put("k", "v", false).ok());
  std::string one = *s->Digest(&n);
  EXPECT_EQ(n, 1u);
  EXPECT_NE(one, empty);
  ASSERT_TRUE(s->Put("k", "v", false).ok());  // same value, newer version: a different record
  EXPECT_NE(*s->Digest(), one);
  std::string before_ns = *s->Digest();
  ASSERT_TRUE(s->Put("k", "v", false, Cf::kNs).ok());
  EXPECT_NE(*s->Digest(), before_ns);
  std::string before_delete = *s->Digest();
  ASSERT_TRUE(s->Delete("k", false).ok());
  EXPECT_NE(*s->Digest(&n), before_delete);
  EXPECT_EQ(n, 2u);  // the tombstone is a record
}

TEST(Store, ConcurrentLocalWritesKeepTheLastVersion) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  std::vector<std::thread> threads;
  std::vector<Version> maxes(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) maxes[t] = std::max(maxes[t], s->Put("hot", fmt::format("{}-{}", t, i), false).value());
    });
  }
  for (auto& th : threads) th.join();
  Version top = *std::max_element(maxes.begin(), maxes.end());
  EXPECT_EQ(s->Get("hot")->version, top);
}

// Concurrent writers share commits (synced ones one fsync: store.cc,
// CommitGroup), yet a reader of the log never sees a later entry before an
// earlier one (a pusher that did would acknowledge past a missing entry),
// and every write is there, with its value, once it returned.
TEST(Store, GroupCommitsKeepLogOrderAndLoseNoWrite) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  constexpr int kThreads = 8, kEach = 300;
  std::atomic<bool> done{false};
  std::atomic<int> gaps{0}, reads{0};
  std::thread reader([&] {
    while (!done) {
      Result<std::vector<LogEntry>> log = s->ReadLog(0, 1u << 20);
      if (!log.ok()) continue;
      for (size_t i = 1; i < log->size(); ++i)
        if ((*log)[i].seq != (*log)[i - 1].seq + 1) ++gaps;
      ++reads;
    }
  });
  std::vector<std::thread> writers;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t)
    writers.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string key = fmt::format("k{}-{}", t, i);
        bool sync = i % 4 == 0;
        bool deleted = i % 7 != 3 || s->Delete(fmt::format("k{}-{}", t, i - 1), sync).ok();
        Result<Version> put = s->Put(key, "v", sync);
        Result<Record> got = s->Get(key);  // seen as soon as it returned
        if (!deleted || !put.ok() || !got.ok() || got->value != "v") ++failed;
      }
    });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(gaps.load(), 0) << "a later log entry was visible before an earlier one";
  Result<std::vector<LogEntry>> log = s->ReadLog(0, 1u << 20);
  ASSERT_TRUE(log.ok());
  int deletes = kThreads * (kEach / 7 + (kEach % 7 > 3 ? 1 : 0));
  EXPECT_EQ(log->size(), static_cast<size_t>(kThreads * kEach + deletes));
  EXPECT_EQ(log->back().seq, s->LastLogSeq());
  // Each writer's puts are in the log in the order it made them.
  std::map<std::string, uint64_t> seq_of;
  for (const LogEntry& e : *log)
    if (!e.record.tombstone) seq_of[e.key] = e.seq;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 1; i < kEach; ++i)
      ASSERT_LT(seq_of[fmt::format("k{}-{}", t, i - 1)], seq_of[fmt::format("k{}-{}", t, i)]) << t << " " << i;
}

TEST(Store, FamiliesAreSeparateAndOnlyVersionedOnesTakeRecords) {
  TempDir dir;
  auto s = OpenStore(dir.path());
  ASSERT_TRUE(s->Put("same", "kv value", false).ok());
  ASSERT_TRUE(s->Put("same", "ns value", false, Cf::kNs).ok());
  EXPECT_EQ(s->Get("same")->value, "kv value");
  EXPECT_EQ(s->Get("same", Cf::kNs)->value, "ns value");
  ASSERT_TRUE(s->Delete("same", false, nullptr, Cf::kNs).ok());
  EXPECT_EQ(s->Get("same", Cf::kNs).status().code(), Code::kNotFound);
  EXPECT_EQ(s->Get("same")->value, "kv value");
  // A batch may span versioned families, atomically.
  Result<Version> v = s->Write({{"a", false, "1", Cf::kKv}, {"dir/a", false, "2", Cf::kNs}}, false);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(s->Get("dir/a", Cf::kNs)->version, *v);
  EXPECT_EQ(s->Put("x", "y", false, Cf::kChunks).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(s->Get("x", Cf::kMeta).status().code(), Code::kInvalidArgument);
  ASSERT_TRUE(s->PutChunk("digest", "bytes").ok());
  EXPECT_EQ(*s->GetChunk("digest"), "bytes");
  EXPECT_EQ(s->GetChunk("other").status().code(), Code::kNotFound);
}

// Big chunks and closed files' chunks skip the WAL: a crash may lose them,
// but never one a synced write was to name (a big kBySyncedWrite chunk put
// before it), and the next open says that some may be lost.
TEST(Store, ChunksLostInACrashAreOnlyThoseNoSyncedWriteWasToName) {
  // The crash runs in a fresh process (gtest re-executes this test up to the
  // EXPECT_EXIT): a forked copy of this one would lack RocksDB's threads. It
  // finds the store through the environment.
  constexpr const char* kDirVar = "ONEBOX_TEST_CRASHED_STORE";
  std::optional<TempDir> own;
  std::string dir = getenv(kDirVar) ? getenv(kDirVar) : own.emplace().path();
  setenv(kDirVar, dir.c_str(), 1);
  const std::string big1(1 << 20, 'a'), big2(1 << 20, 'b'), big3(1 << 20, 'd'), small(100, 'c');
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto crash = [&] {
    auto s = OpenStore(dir);
    // Each step one statement: the first failure exits 1.
    auto step = [](bool ok) {
      if (!ok) _exit(1);
    };
    step(s->PutChunk("big1", big1).ok());
    step(s->PutChunk("small", small).ok());
    step(s->Put("k", "v", true).ok());
    // A synced apply of a record already held (it came unsynced first)
    // still makes the chunks put before it durable.
    Record remote{{s->clock().Now(), 9}, false, "r"};
    step(s->ApplyBatch({{Cf::kKv, "remote", remote}}, false).ok());
    step(s->PutChunk("big3", big3).ok());
    step(s->ApplyBatch({{Cf::kKv, "remote", remote}}, true).ok());
    // A closed file's chunk (kEventually) skips the WAL, and a synced write
    // does not wait for it to be flushed.
    step(s->PutChunk("closed", "a closed file's chunk", Store::ChunkDurability::kEventually).ok());
    step(s->Put("k3", "v3", true).ok());
    step(s->PutChunk("big2", big2).ok());
    step(s->Put("k2", "v2", false).ok());
    step(s->PutChunk("small2", "put after the last synced write").ok());
    _exit(0);  // without closing the store: nothing flushed at exit
  };
  EXPECT_EXIT(crash(), ::testing::ExitedWithCode(0), "");
  unsetenv(kDirVar);
  {
    auto s = OpenStore(dir);
    EXPECT_TRUE(s->ChunksMayBeLost());
    EXPECT_EQ(*s->GetChunk("big1"), big1);    // flushed before the synced write
    EXPECT_EQ(*s->GetChunk("big3"), big3);    // flushed before the synced apply
    EXPECT_EQ(*s->GetChunk("small"), small);  // small chunks go through the WAL
    EXPECT_EQ(*s->GetChunk("small2"), "put after the last synced write");  // with no synced write after it
    EXPECT_FALSE(s->HasChunk("big2"));        // lost with the memtable
    EXPECT_FALSE(s->HasChunk("closed"));      // lost too: the synced write after it did not flush it
    EXPECT_EQ(s->Get("k2")->value, "v2");     // records are in the WAL
    EXPECT_EQ(s->Get("k3")->value, "v3");
    ASSERT_TRUE(s->PutChunk("big2", big2).ok());
  }
  // A clean close flushes them and clears the mark.
  auto s = OpenStore(dir);
  EXPECT_FALSE(s->ChunksMayBeLost());
  EXPECT_EQ(*s->GetChunk("big2"), big2);
}

// Closed files' chunks wait in the memtable only until writes pause, or
// until the oldest is old enough: then they are flushed (FlushChunksIfQuiet),
// and a crash no longer loses them.
TEST(Store, ChunksWithoutTheWalAreFlushedOnceWritesPause) {
  constexpr const char* kDirVar = "ONEBOX_TEST_PAUSED_STORE";
  std::optional<TempDir> own;
  std::string dir = getenv(kDirVar) ? getenv(kDirVar) : own.emplace().path();
  setenv(kDirVar, dir.c_str(), 1);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto crash = [&] {
    auto s = OpenStore(dir);
    auto step = [](bool ok) {
      if (!ok) _exit(1);
    };
    step(s->PutChunk("early", "put before the pause", Store::ChunkDurability::kEventually).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    step(s->FlushChunksIfQuiet(std::chrono::milliseconds(20), std::chrono::hours(1)).ok());  // paused: flushed
    step(s->PutChunk("aged", "put under steady writes", Store::ChunkDurability::kEventually).ok());
    step(s->FlushChunksIfQuiet(std::chrono::seconds(10), std::chrono::milliseconds(0)).ok());  // old enough: flushed
    step(s->PutChunk("late", "put just now", Store::ChunkDurability::kEventually).ok());
    step(s->FlushChunksIfQuiet(std::chrono::seconds(10), std::chrono::hours(1)).ok());  // not paused: left
    _exit(0);
  };
  EXPECT_EXIT(crash(), ::testing::ExitedWithCode(0), "");
  unsetenv(kDirVar);
  auto s = OpenStore(dir);
  EXPECT_TRUE(s->ChunksMayBeLost());
  EXPECT_EQ(*s->GetChunk("early"), "put before the pause");
  EXPECT_EQ(*s->GetChunk("aged"), "put under steady writes");
  EXPECT_FALSE(s->HasChunk("late"));
}

TEST(Store, LogsLocalWritesInOrderAcrossRestarts) {
  TempDir dir;
  {
    auto s = OpenStore(dir.path(), 5);
    ASSERT_TRUE(s->Put("a", "1", false).ok());
    ASSERT_TRUE(s->Write({{"b", false, "2", Cf::kKv}, {"n/x", false, "3", Cf::kNs}}, false).ok());
    ASSERT_TRUE(s->Delete("a", false).ok());
    // Records from elsewhere are not this node's writes: not logged.
    ASSERT_TRUE(s->Apply("remote", Record{{s->clock().Now(), 9}, false, "r"}, false).ok());
    EXPECT_EQ(s->LastLogSeq(), 4u);
  }
  auto s = OpenStore(dir.path(), 5);
  EXPECT_EQ(s->LastLogSeq(), 4u);
  ASSERT_TRUE(s->Put("c", "4", false).ok());
  Result<std::vector<LogEntry>> log = s->ReadLog(0, 100);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 5u);
  std::vector<std::string> keys;
  for (const LogEntry& e : *log) keys.push_back(e.key);
  EXPECT_EQ(keys, (std::vector<std::string>{"a", "b", "n/x", "a", "c"}));
  EXPECT_EQ((*log)[2].space, Cf::kNs);
  EXPECT_TRUE((*log)[3].record.tombstone);
  EXPECT_EQ((*log)[4].seq, 5u);
  EXPECT_EQ(s->ReadLog(3, 1)->front().key, "a");  // after seq 3, one entry
}

TEST(Store, RefusesZeroNodeIdAndUnwritablePath) {
  EXPECT_EQ(Store::Open({.path = "/tmp/x", .node_id = 0}).status().code(), Code::kInvalidArgument);
  EXPECT_FALSE(Store::Open({.path = "/proc/onebox-cannot-be-here", .node_id = 1}).ok());
}

}  // namespace
}  // namespace onebox

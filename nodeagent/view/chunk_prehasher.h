// Hashes a big file's chunks while a program is still writing it. The recorder
// reports every file created in the view (inotify IN_CREATE); a thread of its
// own looks at each every 20 to 30 ms while it grows (less and less often
// while it does not: a name no program writes gets no close) until its close, reads
// each whole chunk that has appeared since, hashes it (SHA-256),
// and keeps its digest with a fast check of its bytes (XXH3-128, keyed with a
// secret of this agent). When the last writer closes the file, the recorder
// reads it once more and takes a chunk's digest as is when its check still
// matches: chunks rewritten meanwhile are hashed again. So a close costs a
// read at memory speed instead of SHA-256 per chunk.
//
// The chunks taken so are stored after the record (Keep), on the same
// thread, from the file, each only if its check still matches: storing costs
// as much CPU as hashing here (RocksDB's blob files are checksummed with a
// software CRC32C). Until then Pending serves them from the file. A synced
// record (fsync) stores its chunks before it is written.
//
// A path it hears of only at its creation, with content already (a hard link
// whose first name went) is handed back to the recorder (TakeIdle, when
// idle_fd() is readable) once it has not changed for 100 ms (0.5 s from
// kMinBytes): no close will
// say it is done. Nothing here calls the recorder: it asks.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <unordered_map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/view/file_look.h"

namespace onebox {

class ChunkPrehasher {
 public:
  // Files are read below root_fd (the view).
  ChunkPrehasher(int root_fd, Store& store);
  ~ChunkPrehasher();
  void Stop();

  // Path (below the view root) was created, or written: follow it until Take.
  // One not seen growing for a minute is forgotten (at its next look, 70 s at most).
  void Written(const std::string& path);
  // Path was created with content and no writer may close it: hand it back
  // (TakeIdle) once it stays unchanged, unless a close comes first (Take).
  void RecordWhenIdle(const std::string& path);
  // Readable (an eventfd) while paths wait in TakeIdle.
  int idle_fd() const { return idle_fd_; }
  // The paths that stayed unchanged since RecordWhenIdle: to be recorded now.
  std::vector<std::string> TakeIdle();

  // A chunk hashed ahead: its digest and the check of its bytes.
  struct Ahead {
    std::string digest;
    uint64_t check_low = 0, check_high = 0;
  };
  // What was hashed ahead for the file now at path (inode ino), by chunk
  // index from 0, and forgets the path. Waits for a chunk being hashed.
  std::vector<Ahead> Take(const std::string& path, ino_t ino);
  // How many chunks of path are hashed ahead so far, and how many looks at
  // files the thread took in all (for tests).
  size_t AheadOf(const std::string& path);
  uint64_t looks() const { return looks_.load(); }
  // The digest and check of bytes.
  Ahead Hash(const char* bytes, size_t n) const;
  // Whether bytes are what `ahead` was hashed from (with this agent's key).
  bool Matches(const Ahead& ahead, const char* bytes, size_t n) const;

  // The recorder recorded path (inode ino) naming these chunks (index,
  // ahead) without storing them, under a hold of the store's chunk mark:
  // stores them from the file, then releases the hold. A chunk whose bytes
  // changed meanwhile is not stored (that version's content is gone here; the
  // newer version gets recorded).
  void Keep(const std::string& path, ino_t ino, std::vector<std::pair<size_t, Ahead>> chunks);
  // The bytes of a chunk waiting to be kept, read from its file, if they still match.
  std::optional<std::string> Pending(const std::string& digest);

  // Files smaller than this are not hashed ahead: their close is cheap.
  static constexpr uint64_t kMinBytes = 4 << 20;

 private:
  struct Growing {
    ino_t ino = 0;
    std::vector<Ahead> ahead;
    int64_t next_look_ns = 0;   // steady clock; a file taken within kTick of its creation is never looked at
    int64_t look_every_ns = 0;  // doubled at each look that finds it unchanged
    int64_t last_event_ns = 0;  // its creation, or the last time it was seen growing
    off_t last_size = -1;
    bool record_when_idle = false;
    std::optional<FileLook> seen;  // for record_when_idle: what the last look found
    int64_t unchanged_since_ns = 0;
  };
  // Follows path from now (its first look a tick away), waking the thread if
  // it sleeps past that.
  Growing& FollowLocked(const std::string& path);
  // When the first file followed is due for a look (INT64_MAX: none).
  int64_t NextLookLocked() const;
  void Loop();
  struct KeepJob {
    std::string path;
    ino_t ino = 0;
    std::vector<std::pair<size_t, Ahead>> chunks;
  };
  void StoreChunks(const KeepJob& job);
  struct PendingChunk {
    std::string path;
    ino_t ino = 0;
    size_t index = 0;
    Ahead ahead;
  };
  // Reads chunk `index` of the file at path if it is still inode ino and matches.
  std::optional<std::string> ReadMatching(const std::string& path, ino_t ino, size_t index, const Ahead& ahead);
  // One round over path: hashes up to a few new chunks (*progress set if
  // any); returns whether to record it now.
  bool Round(const std::string& path, bool* progress);

  int root_fd_;
  int idle_fd_;
  Store& store_;
  unsigned char secret_[192];  // XXH3's custom secret: checks nobody outside the agent can predict
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Growing> growing_;
  std::deque<KeepJob> keep_;
  std::vector<std::string> idle_;  // for TakeIdle
  // By digest; one digest may wait in several files (a copy, a rename).
  std::unordered_multimap<std::string, PendingChunk> pending_;
  int64_t wake_at_ns_ = 0;  // while the thread sleeps: when it wakes (INT64_MAX: when told)
  std::atomic<uint64_t> looks_{0};
  std::string busy_;    // the path whose chunk the thread is hashing now
  std::string taking_;  // the path Take waits for
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace onebox

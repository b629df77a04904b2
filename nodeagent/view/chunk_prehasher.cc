#include "nodeagent/view/chunk_prehasher.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include "consistency/digest.h"
#include "nodeagent/daemon/thread_name.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {
// RecordWhenIdle: unchanged this long. A small file (git's object under its
// final name) goes to the peers soon; a big one waits longer, since handing
// it back ends its hashing ahead, and a writer that merely paused would
// have it hashed whole twice.
constexpr int64_t kIdleNs = 100'000'000;
constexpr int64_t kIdleBigNs = 500'000'000;  // from kMinBytes
constexpr int64_t kForgetNs = 60'000'000'000;   // not seen growing for this long: forget the file
constexpr auto kTick = std::chrono::milliseconds(20);
constexpr int64_t kTickNs = std::chrono::nanoseconds(kTick).count();
// A file found unchanged is looked at again after twice as long as the last
// time, up to this: a name nothing writes (a hard link, git's object linked
// from its temporary file, a file held open and idle) costs about 15 looks in
// its minute here instead of one every tick (3,000). Growing again, it is
// looked at every tick.
constexpr int64_t kLookEveryAtMostNs = 10'000'000'000;
// The thread wakes this long after the first file due, so that files made
// together are looked at in one wake.
constexpr int64_t kWakeLateNs = kTickNs / 2;
constexpr size_t kChunksPerRound = 8;  // then the next file gets its turn

int64_t IdleNs(const struct stat& st) {
  return static_cast<uint64_t>(st.st_size) < ChunkPrehasher::kMinBytes ? kIdleNs : kIdleBigNs;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

ChunkPrehasher::ChunkPrehasher(int root_fd, Store& store)
    : root_fd_(root_fd), idle_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), store_(store) {
  if (idle_fd_ < 0) std::abort();  // an eventfd fails only without memory or descriptors at start
  for (size_t got = 0; got < sizeof secret_;) {
    ssize_t n = getrandom(secret_ + got, sizeof secret_ - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) std::abort();  // the kernel always has randomness for getrandom after boot
    got += static_cast<size_t>(n);
  }
  thread_ = std::thread([this] { Loop(); });
  NameThread(thread_, "onebox-prehash");
}

ChunkPrehasher::~ChunkPrehasher() {
  Stop();
  close(idle_fd_);
}

void ChunkPrehasher::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ChunkPrehasher::Written(const std::string& path) {
  std::lock_guard lock(mu_);
  FollowLocked(path);
}

void ChunkPrehasher::RecordWhenIdle(const std::string& path) {
  std::lock_guard lock(mu_);
  FollowLocked(path).record_when_idle = true;
}

ChunkPrehasher::Growing& ChunkPrehasher::FollowLocked(const std::string& path) {
  Growing& g = growing_[path];
  const int64_t now = NowNs();
  g.last_event_ns = now;
  // Most files are closed within moments of their creation: not worth a look before a tick.
  g.look_every_ns = kTickNs;
  g.next_look_ns = now + kTickNs;
  if (g.next_look_ns + kWakeLateNs < wake_at_ns_) cv_.notify_all();  // (else one wake takes both)
  return g;
}

int64_t ChunkPrehasher::NextLookLocked() const {
  int64_t next = INT64_MAX;
  for (const auto& [path, g] : growing_)
    if (path != taking_) next = std::min(next, g.next_look_ns);  // (one being taken leaves at once)
  return next;
}

std::vector<std::string> ChunkPrehasher::TakeIdle() {
  uint64_t count;
  [[maybe_unused]] ssize_t n = read(idle_fd_, &count, sizeof count);  // EAGAIN: nothing waited
  std::lock_guard lock(mu_);
  return std::exchange(idle_, {});
}

void ChunkPrehasher::Keep(const std::string& path, ino_t ino, std::vector<std::pair<size_t, Ahead>> chunks) {
  std::lock_guard lock(mu_);
  for (const auto& [index, ahead] : chunks) pending_.emplace(ahead.digest, PendingChunk{path, ino, index, ahead});
  keep_.push_back(KeepJob{path, ino, std::move(chunks)});
  cv_.notify_all();
}

size_t ChunkPrehasher::AheadOf(const std::string& path) {
  std::lock_guard lock(mu_);
  auto it = growing_.find(path);
  return it == growing_.end() ? 0 : it->second.ahead.size();
}

std::optional<std::string> ChunkPrehasher::Pending(const std::string& digest) {
  std::vector<PendingChunk> sources;
  {
    std::lock_guard lock(mu_);
    auto [from, to] = pending_.equal_range(digest);
    for (auto it = from; it != to; ++it) sources.push_back(it->second);
  }
  for (const PendingChunk& p : sources)
    if (std::optional<std::string> bytes = ReadMatching(p.path, p.ino, p.index, p.ahead)) return bytes;
  return std::nullopt;
}

std::optional<std::string> ChunkPrehasher::ReadMatching(const std::string& path, ino_t ino, size_t index,
                                                        const Ahead& ahead) {
  int fd = OpenBeneath(root_fd_, path, O_RDONLY | O_NONBLOCK);
  if (fd < 0) return std::nullopt;
  struct stat st;
  std::string bytes;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_ino == ino) {
    bytes.resize(kChunkBytes);
    bytes.resize(ReadFullAt(fd, bytes.data(), kChunkBytes, index * kChunkBytes));
  }
  close(fd);
  if (bytes.size() != kChunkBytes || !Matches(ahead, bytes.data(), bytes.size())) return std::nullopt;
  return bytes;
}

void ChunkPrehasher::StoreChunks(const KeepJob& job) {
  size_t gone = 0;
  for (const auto& [index, ahead] : job.chunks) {
    std::optional<std::string> bytes = ReadMatching(job.path, job.ino, index, ahead);
    // (a close's content: fsync's RecordNow stores its own chunks, durably)
    if (!bytes || !store_.PutChunk(ahead.digest, *bytes, Store::ChunkDurability::kEventually).ok()) ++gone;
    std::lock_guard lock(mu_);
    auto [from, to] = pending_.equal_range(ahead.digest);
    for (auto it = from; it != to; ++it)
      if (it->second.path == job.path && it->second.ino == job.ino && it->second.index == index) {
        pending_.erase(it);
        break;
      }
  }
  store_.ReleaseChunkMark();
  if (gone > 0)
    spdlog::debug(
        "{} of the {} chunks of /{} as recorded were gone (renamed, removed) or changed before they were stored: "
        "that version's content is not kept here",
        gone, job.chunks.size(), job.path);
}

std::vector<ChunkPrehasher::Ahead> ChunkPrehasher::Take(const std::string& path, ino_t ino) {
  std::unique_lock lock(mu_);
  taking_ = path;  // the thread stops hashing it after the chunk at hand
  cv_.wait(lock, [&] { return busy_ != path; });
  taking_.clear();
  auto it = growing_.find(path);
  if (it == growing_.end()) return {};
  std::vector<Ahead> ahead = it->second.ino == ino ? std::move(it->second.ahead) : std::vector<Ahead>{};
  growing_.erase(it);
  return ahead;
}

ChunkPrehasher::Ahead ChunkPrehasher::Hash(const char* bytes, size_t n) const {
  Ahead a;
  a.digest = Sha256(std::string_view(bytes, n));
  XXH128_hash_t h = XXH3_128bits_withSecret(bytes, n, secret_, sizeof secret_);
  a.check_low = h.low64;
  a.check_high = h.high64;
  return a;
}

bool ChunkPrehasher::Matches(const Ahead& ahead, const char* bytes, size_t n) const {
  XXH128_hash_t h = XXH3_128bits_withSecret(bytes, n, secret_, sizeof secret_);
  return h.low64 == ahead.check_low && h.high64 == ahead.check_high;
}

void ChunkPrehasher::Loop() {
  std::unique_lock lock(mu_);
  bool progress = false;
  for (;;) {
    // Recorded chunks first (all of them before a stop).
    while (!keep_.empty()) {
      KeepJob job = std::move(keep_.front());
      keep_.pop_front();
      lock.unlock();
      StoreChunks(job);
      lock.lock();
    }
    if (stop_) break;
    if (!progress) {
      // Nothing new last round: sleep until a file is due for a look, and
      // a little past (or until one comes that is due before).
      const int64_t next = NextLookLocked();
      wake_at_ns_ = next == INT64_MAX ? INT64_MAX : next + kWakeLateNs;
      if (wake_at_ns_ == INT64_MAX) cv_.wait(lock);
      else cv_.wait_for(lock, std::chrono::nanoseconds(std::max<int64_t>(0, wake_at_ns_ - NowNs())));
      wake_at_ns_ = 0;
    }
    if (stop_ || !keep_.empty()) continue;
    progress = false;
    const int64_t now = NowNs();
    std::vector<std::string> paths;
    for (auto& [path, g] : growing_)
      if (g.next_look_ns <= now) paths.push_back(path);
    for (const std::string& path : paths) {
      if (stop_ || !keep_.empty()) break;
      auto it = growing_.find(path);
      if (it == growing_.end() || path == taking_) continue;  // taken, or being taken
      busy_ = path;
      lock.unlock();
      bool record = Round(path, &progress);
      lock.lock();
      busy_.clear();
      cv_.notify_all();
      if (record) {
        spdlog::debug("prehash: /{} unchanged for a while: handing it to the recorder", path);
        growing_.erase(path);
        idle_.push_back(path);
        uint64_t one = 1;
        [[maybe_unused]] ssize_t n = write(idle_fd_, &one, sizeof one);  // an eventfd write cannot fail here
      }
    }
  }
}

bool ChunkPrehasher::Round(const std::string& path, bool* progress) {
  int fd = OpenBeneath(root_fd_, path, O_RDONLY | O_NONBLOCK);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0) close(fd);
    std::lock_guard lock(mu_);
    auto it = growing_.find(path);
    // Gone or not a file: the recorder hears of it; nothing to hash or wait for.
    bool record = it != growing_.end() && it->second.record_when_idle && fd >= 0;
    if (!record && it != growing_.end()) growing_.erase(it);
    return record;
  }
  size_t next;
  {
    std::lock_guard lock(mu_);
    auto it = growing_.find(path);
    if (it == growing_.end()) {
      close(fd);
      return false;
    }
    Growing& g = it->second;
    const int64_t now = NowNs();
    ++looks_;
    bool changed = st.st_size != g.last_size || g.ino != st.st_ino;
    if (g.ino != st.st_ino) {
      g.ino = st.st_ino;
      g.ahead.clear();
    }
    if (changed) {  // still growing: not forgotten
      g.last_size = st.st_size;
      g.last_event_ns = now;
    } else if (!g.record_when_idle && now - g.last_event_ns > kForgetNs) {
      growing_.erase(it);
      close(fd);
      return false;
    }
    if (g.record_when_idle) {
      FileLook look = FileLook::Of(st);
      if (!g.seen || !g.seen->SameContent(look)) {
        g.seen = look;
        g.unchanged_since_ns = now;
        changed = true;
      } else if (now - g.unchanged_since_ns >= IdleNs(st)) {
        close(fd);
        return true;
      }
    }
    g.look_every_ns = changed ? kTickNs : std::min(2 * g.look_every_ns, kLookEveryAtMostNs);
    g.next_look_ns = now + g.look_every_ns;
    // One to hand back is looked at again when it would have been unchanged long enough.
    if (g.record_when_idle) g.next_look_ns = std::min(g.next_look_ns, g.unchanged_since_ns + IdleNs(st));
    next = g.ahead.size();
  }
  uint64_t whole = static_cast<uint64_t>(st.st_size) / kChunkBytes;
  if (static_cast<uint64_t>(st.st_size) < kMinBytes) whole = 0;
  std::vector<char> buf;
  for (size_t i = next; i < whole && i < next + kChunksPerRound; ++i) {
    if (buf.empty()) buf.resize(kChunkBytes);
    size_t have = ReadFullAt(fd, buf.data(), kChunkBytes, i * kChunkBytes);
    if (have < kChunkBytes) break;  // truncated meanwhile
    Ahead a = Hash(buf.data(), have);
    std::lock_guard lock(mu_);
    auto it = growing_.find(path);
    if (it == growing_.end() || it->second.ino != st.st_ino || it->second.ahead.size() != i) break;
    it->second.ahead.push_back(std::move(a));
    it->second.next_look_ns = 0;  // more may be whole already: looked at again at once
    it->second.look_every_ns = kTickNs;
    *progress = true;
    if (taking_ == path) break;
  }
  close(fd);
  return false;
}

}  // namespace onebox

#include "nodeagent/view/view_ledger.h"

#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include "consistency/digest.h"
#include "naming/cluster_path.h"
#include "naming/ns_key.h"
#include "nodeagent/view/file_xattrs.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {

// The names strictly below path in a map or set ordered by name (KeyRangeBelow).
template <typename Ordered>
auto Below(Ordered& names, const std::string& path) {
  const KeyRange below = KeyRangeBelow(path);
  return std::pair(names.lower_bound(below.first), names.lower_bound(below.last));
}

// Erases path and every name below it; how many.
template <typename Ordered>
size_t EraseTree(Ordered& names, const std::string& path) {
  const size_t before = names.size();
  auto [first, last] = Below(names, path);
  names.erase(first, last);
  names.erase(path);
  return before - names.size();
}

// Every file the materializer places carries its path, inode number, size,
// mtime and version as placed. A file that still matches was changed by nobody since,
// whatever its ctime says: after a restart (the in-memory ledger is gone) it
// is still ours, never a program's change to record, and a newer record may
// replace it. A program that rewrites it in place changes its mtime; one that
// replaces it changes its inode; one that moves or links it shows it under
// another path.
constexpr const char* kPlacedXattr = "user.onebox.placed";

std::string PlacedMarkPrefix(const struct stat& st) {
  return fmt::format("{}:{}:{}:", st.st_ino, st.st_size, MtimeNs(st));
}

std::string PlacedMark(const std::string& path, const struct stat& st, const Version& version) {
  return fmt::format("{}{}:{}:{}", PlacedMarkPrefix(st), version.hlc, version.node, path);
}


// A stub's mark names its content (size and chunks). A small description
// (a file of up to a few chunks: nearly every stub) is in the mark itself:
// kInlineStubPrefix, a tag (HMAC-SHA256 of the description under the
// store's stub mark key, its first kStubMarkTagBytes) and the description,
// so that placing a stub writes nothing to the store, and a program cannot
// make up a mark for a file of its own (it can copy the mark of a stub it
// may read, which gains it nothing it could not read anyway). A bigger one is
// kept in the store's meta family under its hash, which the mark carries
// (32 bytes: never an inline mark's length).
constexpr std::string_view kInlineStubPrefix = "content:";
constexpr size_t kStubMarkTagBytes = 16;
constexpr size_t kMaxInlineStubMark = 256;
constexpr size_t kStubIdBytes = 32;
constexpr std::string_view kStubMarkKeyMetaKey = "stub-mark-key";
constexpr size_t kStubMarkKeyBytes = 32;
std::string StubMetaKey(std::string_view id) { return "stub/" + HexOf(id); }

}  // namespace

int SetMark(int fd, const char* name, const std::string& value) {
  return static_cast<int>(syscall(SYS_fsetxattr, fd, name, value.data(), value.size(), 0));
}

void FileMarks::List() {
  if (listed_) return;
  listed_ = true;
  char names[256];
  ssize_t n = listxattr(ProcPath(fd_).c_str(), names, sizeof names);
  // Trusted only when it answers: too many to list here (ERANGE), or a
  // file system that lists nothing but reads attributes, and each mark
  // is asked for, as if not listed.
  if (n < 0) return;
  names_.emplace(names, static_cast<size_t>(n));
  auto has = [&](std::string_view mark) {
    return AnyXattrName(*names_, [&](std::string_view name) { return name == mark; });
  };
  may_have_[kStub] = has(kStubXattr);
  may_have_[kPlaced] = has(kPlacedXattr);
}

std::optional<std::string_view> FileMarks::Names() {
  List();
  if (!names_) return std::nullopt;
  return std::string_view(*names_);
}

const std::string& FileMarks::Read(std::optional<std::string>& mark, Which which) {
  if (mark) return *mark;
  mark.emplace();
  const std::string proc = ProcPath(fd_);
  List();
  if (!may_have_[which]) {
    absent_[which] = true;
    return *mark;
  }
  char buf[kMaxPathBytes + 96];
  ssize_t n = getxattr(proc.c_str(), which == kStub ? kStubXattr : kPlacedXattr, buf, sizeof buf);
  if (n > 0) mark->assign(buf, static_cast<size_t>(n));
  else if (n < 0 && errno == ENODATA) absent_[which] = true;
  return *mark;
}

void ViewLedger::Placed(const std::string& path, const struct stat& st, const Version& version, bool in_place,
                        bool partial) {
  last_placed_ns_.store(CoarseMonotonicNs(), std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  LeaveLocked(path, {FileLook::Of(st), /*by_materializer=*/true, version, in_place, partial});
  removed_.erase(path);
}

void ViewLedger::LeaveLocked(const std::string& path, LeftAs left) {
  auto [it, added] = left_.try_emplace(path, left);
  if (!added) {
    if (it->second.look.ino == left.look.ino) {
      it->second = left;
      return;
    }
    ForgetLeftLocked(it);
    left_.emplace(path, left);
  }
  if (left.look.ino != 0) names_of_ino_.emplace(left.look.ino, path);
}

void ViewLedger::ForgetLeftLocked(LeftMap::iterator it) {
  auto [first, last] = names_of_ino_.equal_range(it->second.look.ino);
  for (auto name = first; name != last; ++name)
    if (name->second == it->first) {
      names_of_ino_.erase(name);
      break;
    }
  left_.erase(it);
}

std::vector<std::string> ViewLedger::NamesLastSeenAs(ino_t ino) {
  std::lock_guard lock(mu_);
  std::vector<std::string> names;
  auto [first, last] = names_of_ino_.equal_range(ino);
  for (auto it = first; it != last; ++it) names.push_back(it->second);
  return names;
}

void ViewLedger::Relooked(const std::string& path, int fd, const struct stat& st) {
  std::lock_guard lock(mu_);
  auto it = left_.find(path);
  if (it == left_.end()) return;
  FileLook& was = it->second.look;
  const FileLook now = FileLook::Of(st);
  // Changed otherwise too (attributes included): a program's, for the recorder.
  if (!was.SameButCtime(now) || !XattrsAsShown(path, fd, it->second.shown)) {
    spdlog::debug("ledger: /{} changed otherwise too: not relooked", path);
    return;
  }
  was.ctime_ns = now.ctime_ns;
  was.nlink = now.nlink;
}

void ViewLedger::NotPlaced(const std::string& path) {
  std::lock_guard lock(mu_);
  if (auto it = left_.find(path); it != left_.end()) ForgetLeftLocked(it);
  removed_.erase(path);  // it showed a version, and a program's change
}

void ViewLedger::MarkPlacement(int fd, const std::string& path, const Version& version) {
  struct stat st;
  if (fstat(fd, &st) != 0) return;
  std::string mark = PlacedMark(path, st, version);
  // Without extended attributes the mark is missing: after a restart such a
  // file is taken for a program's (recorded again, as the same content).
  (void)SetMark(fd, kPlacedXattr, mark);
}

Result<std::string> ViewLedger::StubMark(const v1::Inode& inode) {
  v1::Inode content;
  content.set_size(inode.size());
  *content.mutable_chunks() = inode.chunks();
  const std::string description = content.SerializeAsString();
  const size_t inline_size = kInlineStubPrefix.size() + kStubMarkTagBytes + description.size();
  if (inline_size <= kMaxInlineStubMark && inline_size != kStubIdBytes) {
    const std::string key = StubMarkKey();
    const std::string tag = key.empty() ? std::string() : HmacSha256(key, description);
    if (tag.size() >= kStubMarkTagBytes)
      return std::string(kInlineStubPrefix) + tag.substr(0, kStubMarkTagBytes) + description;
  }
  std::string id = Sha256(description);
  if (Status s = store_.PutMeta(StubMetaKey(id), description, false); !s.ok()) return s;
  return id;
}

bool ViewLedger::SetStub(const std::string& path, bool stub) {
  std::lock_guard lock(mu_);
  return SetStubLocked(path, stub);
}

bool ViewLedger::ForgetStub(const std::string& path) { return SetStub(path, false); }

bool ViewLedger::MayHoldStubs() {
  std::lock_guard lock(mu_);
  return !stubs_.empty();
}

void ViewLedger::HoldStubCount() {
  std::lock_guard lock(mu_);
  if (stub_holds_++ == 0) stub_count_floor_ = stubs_.size();
}

void ViewLedger::ReleaseStubCount() {
  std::lock_guard lock(mu_);
  if (--stub_holds_ > 0) return;
  stub_count_floor_ = 0;
  PublishStubsLocked();
}

bool ViewLedger::SetStubLocked(const std::string& path, bool stub) {
  if (!(stub ? stubs_.insert(path).second : stubs_.erase(path) > 0)) return false;
  PublishStubsLocked();
  return true;
}

void ViewLedger::PublishStubsLocked() {
  // (A stub counted during a hold raises the floor too: a move in the same
  // round may take it off before the walk counts it again.)
  if (stub_holds_ > 0) stub_count_floor_ = std::max(stub_count_floor_, stubs_.size());
  page_.stubs.store(std::max(stubs_.size(), stub_count_floor_));
}

void ViewLedger::Placeholder(const std::string& path, int fd, const struct stat& st) {
  MadeAs made{FileLook::Of(st), {}};
  made.xattrs.set_type(v1::FILE_TYPE_DIRECTORY);
  ReadXattrs(fd, &made.xattrs);
  std::lock_guard lock(mu_);
  placeholders_[path] = std::move(made);
  removed_.erase(path);  // the name shows a directory again
}

void ViewLedger::PlaceholderFilled(const std::string& path) {
  std::lock_guard lock(mu_);
  placeholders_.erase(path);
}

namespace {
// Far longer than the recorder's usual lag behind the view, short enough
// that a removal announced without an event hides little.
constexpr auto kOurRemovalLapse = std::chrono::seconds(30);
}  // namespace

void ViewLedger::RemovingOurs(const std::string& path) {
  std::lock_guard lock(mu_);
  OurRemovals& r = our_removals_[path];
  ++r.count;
  r.last = std::chrono::steady_clock::now();
}

bool ViewLedger::TakeOurRemoval(const std::string& path) {
  std::lock_guard lock(mu_);
  auto it = our_removals_.find(path);
  if (it == our_removals_.end()) return false;
  if (std::chrono::steady_clock::now() - it->second.last > kOurRemovalLapse) {
    our_removals_.erase(it);
    return false;
  }
  if (--it->second.count == 0) our_removals_.erase(it);
  return true;
}

void ViewLedger::RemovedOurs(const std::string& path, const Version& tombstone) {
  std::lock_guard lock(mu_);
  // (Its entries' removals, each for its own tombstone before it, stay noted.)
  GoneLocked(path, /*removals_too=*/false);
  const auto now = std::chrono::steady_clock::now();
  // A name removed and never shown again is kept at least as long as a
  // removal announced waits for its event (the recorder's lag is far
  // shorter); swept when the map doubled since the last sweep.
  if (removed_.size() >= removed_sweep_at_) {
    std::erase_if(removed_, [&](const auto& kv) { return now - kv.second.when > kOurRemovalLapse; });
    removed_sweep_at_ = std::max(kRemovedSweepAt, 2 * removed_.size());
  }
  removed_[path] = {tombstone, now};
}

void ViewLedger::ForgetOurRemovals() {
  std::lock_guard lock(mu_);
  our_removals_.clear();
}

void ViewLedger::Recorded(const std::string& path, const struct stat& st, const Version& version) {
  std::lock_guard lock(mu_);
  LeaveLocked(path, {FileLook::Of(st), /*by_materializer=*/false, version});
  removed_.erase(path);
}

void ViewLedger::RecordedButChanged(const std::string& path, const Version& version) {
  std::lock_guard lock(mu_);
  LeaveLocked(path, {FileLook{}, /*by_materializer=*/false, version});  // (no file has inode 0)
  removed_.erase(path);
}

void ViewLedger::Gone(const std::string& path) {
  std::lock_guard lock(mu_);
  GoneLocked(path, /*removals_too=*/true);
}

void ViewLedger::GoneLocked(const std::string& path, bool removals_too) {
  // The path and everything below it (a directory moved or removed).
  auto [first, last] = Below(left_, path);
  while (first != last) ForgetLeftLocked(first++);
  if (auto it = left_.find(path); it != left_.end()) ForgetLeftLocked(it);
  EraseTree(placeholders_, path);
  if (removals_too) EraseTree(removed_, path);
  if (EraseTree(stubs_, path) > 0) PublishStubsLocked();
}

bool ViewLedger::IsOurs(const std::string& path, FileMarks& marks, const struct stat& st, bool content_changed,
                        bool attributes_changed) {
  const FileLook now = FileLook::Of(st);
  bool changed_since_seen = false;
  {
    std::lock_guard lock(mu_);
    auto it = left_.find(path);
    if (it != left_.end()) {
      const LeftAs& left = it->second;
      if (UnchangedSince(path, left, now, marks.fd(), attributes_changed) && (left.by_materializer || !content_changed))
        return true;
      // A directory's ctime moves with its entries: what we set is what
      // counts (its owner, mode and extended attributes).
      if (S_ISDIR(st.st_mode) && left.look.SameDirectory(now) && XattrsAsShown(path, marks.fd(), left.shown))
        return true;
      // Changed by a program since this run saw it (what it shows stays
      // known: ContentShown). The placement mark cannot say otherwise: a
      // rewrite that sets size and mtime back (cp -p) keeps it.
      changed_since_seen = true;
    }
    if (auto made = placeholders_.find(path); S_ISDIR(st.st_mode) && made != placeholders_.end()) {
      // No one's while it is as made: its record will come, and the
      // materializer puts that in place (PlaceholderFilled). A peer's record
      // already here is on its way: recorded now, the placeholder (no
      // attributes, mode 0755) would become this node's newer version of
      // the peer's directory. A program's chmod, chown or setxattr on it
      // meanwhile is a change of its own, and recorded.
      if (made->second.look.SameDirectory(now) && ShowsXattrs(marks.fd(), made->second.xattrs, marks.Names()))
        return true;
      placeholders_.erase(made);
    }
  }
  if (!S_ISREG(st.st_mode) || marks.Stub().empty()) {
    // (Not counted off for a mark the agent may not read: that is no proof of none.)
    if (!S_ISREG(st.st_mode) || marks.NoStubMark()) SetStub(path, false);
    // Placed by us and unchanged since, by its mark, when this run has not
    // seen it yet (a restart): no program wrote it. If the store now holds a
    // newer version, its own materialization replaces it.
    return !changed_since_seen && PlacedAndUntouched(path, marks, st);
  }
  // A stub (ours from before a restart, or one a program moved, linked or
  // touched): unchanged when it matches its record.
  SetStub(path, true);
  Result<Record> rec = store_.Get(path, Cf::kNs);
  v1::Inode inode;
  return rec.ok() && inode.ParseFromString(rec->value) && inode.type() == v1::FILE_TYPE_REGULAR &&
         ShowsVersion(st, inode) && ShowsMetadata(st, inode) && ShowsXattrs(marks.fd(), inode, marks.Names());
}

bool ViewLedger::PlacedAndUnchanged(const std::string& path, const struct stat& st) {
  std::lock_guard lock(mu_);
  auto it = left_.find(path);
  return it != left_.end() && it->second.by_materializer && it->second.look.Unchanged(FileLook::Of(st));
}

bool ViewLedger::WrittenInPlaceByUs(const std::string& path, const struct stat& st) {
  std::lock_guard lock(mu_);
  auto it = left_.find(path);
  return it != left_.end() && it->second.by_materializer && it->second.in_place &&
         it->second.look.Unchanged(FileLook::Of(st));
}

bool ViewLedger::LastWrittenInPlace(const std::string& path, const Version& version) {
  std::lock_guard lock(mu_);
  auto it = left_.find(path);
  return it != left_.end() && it->second.by_materializer && it->second.in_place && !it->second.partial &&
         it->second.shown == version;
}

bool ViewLedger::UnchangedSince(const std::string& path, const LeftAs& left, const FileLook& now, int fd,
                                bool attributes_changed) {
  if (!left.look.Unchanged(now)) return false;
  // A file of several names: its ctime did not count, and an attribute set
  // moves only that. After an attribute event, the ctime cannot tell either
  // (see IsOurs).
  const bool ctime_tells = !left.look.Linked(now) || left.look.ctime_ns == now.ctime_ns;
  return (ctime_tells && !attributes_changed) || XattrsAsShown(path, fd, left.shown);
}

bool ViewLedger::XattrsAsShown(const std::string& path, int fd, const Version& shown) {
  std::optional<v1::Inode> inode = InodeOfVersion(path, shown);
  return !inode || fd < 0 || ShowsXattrs(fd, *inode);
}

bool ViewLedger::AsTheStoreSawIt(const std::string& path, int fd, const struct stat& st) {
  {
    std::lock_guard lock(mu_);
    auto it = left_.find(path);
    if (it != left_.end() && UnchangedSince(path, it->second, FileLook::Of(st), fd)) return true;
    // A directory whose entries came and went (the materializer's removals
    // among them): the directory itself is as it was, attributes included.
    if (it != left_.end() && S_ISDIR(st.st_mode) && it->second.look.SameDirectory(FileLook::Of(st)) &&
        XattrsAsShown(path, fd, it->second.shown))
      return true;
    if (S_ISREG(st.st_mode) && stubs_.count(path)) return true;
    if (it != left_.end()) {  // changed since this run saw it: a program's change
      const FileLook& was = it->second.look;
      const FileLook now = FileLook::Of(st);
      spdlog::debug("ledger: /{} left as ino {} size {} mtime {} ctime {} mode {:o} nlink {}, now ino {} size {} mtime "
                    "{} ctime {} mode {:o} nlink {}",
                    path, was.ino, was.size, was.mtime_ns, was.ctime_ns, was.mode, was.nlink, now.ino, now.size,
                    now.mtime_ns, now.ctime_ns, now.mode, now.nlink);
      return false;
    }
  }
  // Placed by us before a restart, and nobody changed it since, by its mark.
  FileMarks marks(fd);
  return PlacedBy(marks, st, path).placed || LinkedAndUntouched(path, marks, st);
}

std::optional<Version> ViewLedger::LastShown(const std::string& path) {
  std::lock_guard lock(mu_);
  auto it = left_.find(path);
  if (it == left_.end() || it->second.look.ino == 0 || it->second.partial) return std::nullopt;
  return it->second.shown;
}

bool ViewLedger::SeenInView(const std::string& path) {
  std::lock_guard lock(mu_);
  return left_.count(path) > 0 || stubs_.count(path) > 0;
}

std::optional<Version> ViewLedger::UntouchedSinceRecorded(const std::string& path, const struct stat& st) {
  std::lock_guard lock(mu_);
  auto it = left_.find(path);
  if (it == left_.end() || it->second.by_materializer || !it->second.look.Unchanged(FileLook::Of(st))) return std::nullopt;
  return it->second.shown;
}

bool ViewLedger::ShowedOlderVersion(const std::string& path, const Version& version) {
  std::lock_guard lock(mu_);
  if (auto it = left_.find(path); it != left_.end()) return Newer(version, it->second.shown);
  auto removed = removed_.find(path);
  return removed != removed_.end() && Newer(version, removed->second.tombstone);
}

std::optional<v1::Inode> ViewLedger::StubContent(FileMarks& marks) {
  const std::string& mark = marks.Stub();
  v1::Inode content;
  if (mark.size() != kStubIdBytes) {
    const size_t described_at = kInlineStubPrefix.size() + kStubMarkTagBytes;
    if (!mark.starts_with(kInlineStubPrefix) || mark.size() < described_at) return std::nullopt;
    const std::string key = StubMarkKey();
    if (key.empty()) return std::nullopt;
    const std::string_view description = std::string_view(mark).substr(described_at);
    const std::string tag = HmacSha256(key, description);
    if (tag.size() < kStubMarkTagBytes ||
        CRYPTO_memcmp(tag.data(), mark.data() + kInlineStubPrefix.size(), kStubMarkTagBytes) != 0 ||
        !content.ParseFromArray(description.data(), static_cast<int>(description.size())))
      return std::nullopt;
    return content;
  }
  Result<std::string> held = store_.GetMeta(StubMetaKey(mark));
  if (!held.ok() || !content.ParseFromString(*held)) return std::nullopt;
  return content;
}

Status ViewLedger::PrepareStubMarks() {
  std::lock_guard lock(stub_mark_key_mu_);
  return LoadStubMarkKeyLocked();
}

std::string ViewLedger::StubMarkKey() {
  std::lock_guard lock(stub_mark_key_mu_);
  if (stub_mark_key_.empty()) {
    if (Status s = LoadStubMarkKeyLocked(); !s.ok()) spdlog::error("view ledger: the stub mark key: {}", s.message());
  }
  return stub_mark_key_;
}

Status ViewLedger::LoadStubMarkKeyLocked() {
  if (!stub_mark_key_.empty()) return Status::Ok();
  if (Result<std::string> kept = store_.GetMeta(kStubMarkKeyMetaKey); kept.ok()) {
    if (kept->size() != kStubMarkKeyBytes)
      return Status::Corruption(
          fmt::format("the stub mark key in the store is {} bytes, not {}", kept->size(), kStubMarkKeyBytes));
    stub_mark_key_ = *kept;
    return Status::Ok();
  } else if (kept.status().code() != Code::kNotFound) {
    return kept.status();
  }
  std::string key(kStubMarkKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1)
    return Status::IOError("no random bytes for a stub mark key");
  // Synced: a stub marked with a key a crash lost would be no stub after it.
  if (Status s = store_.PutMeta(kStubMarkKeyMetaKey, key, /*sync=*/true); !s.ok()) return s;
  stub_mark_key_ = std::move(key);
  return Status::Ok();
}

bool ViewLedger::IsStub(int fd) { return getxattr(ProcPath(fd).c_str(), kStubXattr, nullptr, 0) >= 0; }

ViewLedger::Placement ViewLedger::PlacedBy(FileMarks& marks, const struct stat& st, const std::string& path) {
  if (!S_ISREG(st.st_mode) || marks.fd() < 0) return {};
  std::string_view mark = marks.Placement();
  if (mark.empty()) return {};
  // INODE:SIZE:MTIME:HLC:NODE:PATH (INODE:SIZE:MTIME:PATH before 0.1.1), the
  // first three as the file is now.
  std::string prefix = PlacedMarkPrefix(st);
  if (mark.substr(0, prefix.size()) != prefix) return {};
  mark.remove_prefix(prefix.size());
  if (mark == path) return {.placed = true, .version = std::nullopt};
  Version v;
  auto number = [&mark](uint64_t* out) {
    auto [end, ec] = std::from_chars(mark.data(), mark.data() + mark.size(), *out);
    if (ec != std::errc() || end == mark.data() + mark.size() || *end != ':') return false;
    mark.remove_prefix(static_cast<size_t>(end - mark.data()) + 1);
    return true;
  };
  if (!number(&v.hlc) || !number(&v.node) || mark != path) return {};
  return {.placed = true, .version = v};
}

std::optional<v1::Inode> ViewLedger::InodeOfVersion(const std::string& key, const Version& version) {
  v1::Inode inode;
  if (Result<Record> rec = store_.Get(key, Cf::kNs); rec.ok() && rec->version == version)
    return inode.ParseFromString(rec->value) ? std::optional(inode) : std::nullopt;
  Result<std::vector<Record>> history = store_.History(key);
  if (!history.ok()) return std::nullopt;
  for (const Record& old : *history)
    if (old.version == version && !old.tombstone && inode.ParseFromString(old.value)) return inode;
  return std::nullopt;
}

bool ViewLedger::LinkedAndUntouched(const std::string& path, FileMarks& marks, const struct stat& st) {
  // The mark names one of the file's names (the one placed whole); the
  // others were placed as links of it: their own records, of a link group,
  // are what the file shows.
  if (!S_ISREG(st.st_mode) || st.st_nlink < 2 || marks.fd() < 0) return false;
  const std::string prefix = PlacedMarkPrefix(st);
  if (marks.Placement().compare(0, prefix.size(), prefix) != 0) return false;
  Result<Record> rec = store_.Get(path, Cf::kNs);
  v1::Inode inode;
  return rec.ok() && inode.ParseFromString(rec->value) && !inode.link_group().empty() && ShowsVersion(st, inode) &&
         ShowsMetadata(st, inode) && ShowsXattrs(marks.fd(), inode, marks.Names());
}

bool ViewLedger::PlacedAndUntouched(const std::string& path, FileMarks& marks, const struct stat& st) {
  Placement placement = PlacedBy(marks, st, path);
  if (!placement.placed) return LinkedAndUntouched(path, marks, st);
  if (!placement.version) {
    // An older agent's mark: the current record is the version it shows
    // when the file looks like it (those marks were taken so), else unknown.
    Result<Record> rec = store_.Get(path, Cf::kNs);
    v1::Inode inode;
    if (!rec.ok() || !inode.ParseFromString(rec->value) || !ShowsVersion(st, inode)) return true;
    if (!ShowsMetadata(st, inode)) return false;
    std::string mark = PlacedMark(path, st, rec->version);
    // Renewed, or asked again at the next look: nothing depends on it now.
    (void)setxattr(ProcPath(marks.fd()).c_str(), kPlacedXattr, mark.data(), mark.size(), 0);
    return true;
  }
  // A chmod or chown changes nothing the mark names: the placed version's
  // mode and owner tell (a version no longer kept: the content tells alone).
  std::optional<v1::Inode> placed = InodeOfVersion(path, *placement.version);
  return !placed || ShowsMetadata(st, *placed);
}

std::optional<Version> ViewLedger::ContentShown(const std::string& path, FileMarks& marks, const struct stat& st) {
  {
    std::lock_guard lock(mu_);
    auto it = left_.find(path);
    if (it != left_.end() && !it->second.partial && it->second.look.SameContent(FileLook::Of(st)))
      return it->second.shown;
  }
  return PlacedBy(marks, st, path).version;
}

}  // namespace onebox

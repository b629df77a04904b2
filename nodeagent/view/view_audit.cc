#include "nodeagent/view/view_audit.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "consistency/digest.h"
#include "naming/node_identity.h"
#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/view/file_xattrs.h"
#include "nodeagent/view/view_fs.h"

namespace onebox {

namespace {

// The name of a file's content: its size and chunk digests.
std::string ContentName(uint64_t size, const google::protobuf::RepeatedPtrField<std::string>& chunks) {
  Sha256OfParts name;
  name.Add(std::to_string(size));
  for (const std::string& c : chunks) name.Add(c);
  return name.Finish();
}

std::string VersionText(const Version& v) { return fmt::format("{}@{}", v.hlc, NodeIdHex(v.node)); }

}  // namespace

ViewAudit::ViewAudit(Store& store, ViewLedger& ledger, const std::string& view_root, RepairFn repair)
    : store_(store),
      ledger_(ledger),
      root_fd_(open(view_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)),
      repair_(std::move(repair)) {}

ViewAudit::~ViewAudit() {
  Stop();
  if (root_fd_ >= 0) close(root_fd_);
}

void ViewAudit::Start(std::chrono::milliseconds period) {
  store_.KeepNsWritten();
  listing_ = true;
  rounds_thread_.Start("onebox-audit", period, [this] { Round(); });
}

void ViewAudit::Stop() {
  rounds_thread_.Stop();
  // Once: an agent stops the audit before it lets go of the store, and
  // again (then with no store to ask) as it goes.
  if (listing_.exchange(false)) store_.KeepNsWritten(0);
}

void ViewAudit::Note(const std::string& key) {
  std::lock_guard lock(noted_mu_);
  noted_.insert(key);
}

void ViewAudit::Round() {
  FollowsCatchUp follows;  // no program waits on a round: it waits for the ledger behind the placing thread unhurried
  ++rounds_;
  // Every record at the first round (anything may have happened while the
  // agent was down), and again only when the store kept too many written
  // keys to list; else what was written or noted since the last round.
  Store::NsWritten written = store_.TakeNsWritten();
  if (written.overflowed) whole_due_ = true;
  if (whole_due_) {
    std::set<std::string> noted;  // looked at by the whole check
    {
      std::lock_guard lock(noted_mu_);
      noted.swap(noted_);
    }
    Result<Report> report = Check(/*repair=*/true);
    if (!report.ok()) {
      std::lock_guard lock(noted_mu_);
      noted_.merge(noted);
      spdlog::debug("view audit: {}", report.status().message());
      return;  // (tried again at the next round)
    }
    whole_due_ = false;
    ++whole_rounds_;
    return;
  }
  {
    std::lock_guard lock(noted_mu_);
    noted_.merge(written.keys);
  }
  Result<Report> report = CheckNoted();
  if (!report.ok()) spdlog::debug("view audit: {}", report.status().message());
}

Result<ViewAudit::Report> ViewAudit::Check(bool repair) {
  std::lock_guard lock(check_mu_);
  if (root_fd_ < 0) return Status::IOError("the view cannot be opened");
  Report report;
  Sha256OfParts digest;
  std::map<std::string, Version> stale;
  Status s = store_.ForEachRecord(
      [&](std::string_view key, const Record& rec) {
        v1::Inode inode;
        if (rec.tombstone || !inode.ParseFromString(rec.value) || inode.type() == v1::FILE_TYPE_OTHER) return;
        ++report.entries;
        std::string k(key);
        const Shows shows = Look(k, rec, inode, digest, stale);
        if (repair && shows == Shows::kOther) Unsettle(k, rec.version);  // (its placement may be under way)
      },
      Cf::kNs);
  if (!s.ok()) return s;
  report.digest = HexOf(digest.Finish());
  report.stale = stale.size();
  RepairStale(std::move(stale), repair);
  return report;
}

Result<ViewAudit::Report> ViewAudit::CheckNoted() {
  std::set<std::string> keys;
  {
    std::lock_guard lock(noted_mu_);
    keys.swap(noted_);
  }
  std::lock_guard lock(check_mu_);
  if (root_fd_ < 0) return Status::IOError("the view cannot be opened");
  for (const auto& [key, shown] : stale_) keys.insert(key);
  ++checks_noted_;
  for (auto it = unsettled_.begin(); it != unsettled_.end(); ++it)
    if (it->second.next_check <= checks_noted_) keys.insert(it->first);
  Report report;
  Sha256OfParts unused;
  std::map<std::string, Version> stale;
  for (const std::string& key : keys) {
    Result<Record> rec = store_.Get(key, Cf::kNs);
    v1::Inode inode;
    if (!rec.ok() && rec.status().code() != Code::kNotFound) {
      Unsettle(key, std::nullopt);  // (a read that failed)
      continue;
    }
    if (!rec.ok() || !inode.ParseFromString(rec->value) || inode.type() == v1::FILE_TYPE_OTHER) {
      unsettled_.erase(key);
      continue;
    }
    // Put in place or recorded at this version by this run, with a look
    // that matched: the look would find it showing that version. (Changed
    // by a program since: the recorder's to record, then looked at here.)
    if (ledger_.LastShown(key) == rec->version) {
      unsettled_.erase(key);
      continue;
    }
    ++report.entries;
    // A file found neither showing that version nor stale (absent, its
    // placement under way or failed; changed by a program, not recorded
    // yet): looked at again until it is one or the other.
    if (Look(key, *rec, inode, unused, stale) == Shows::kOther) Unsettle(key, rec->version);
    else unsettled_.erase(key);
  }
  looked_ += report.entries;
  report.stale = stale.size();
  if (unsettled_dropped_ > 0) {
    spdlog::warn("view audit: {} more files not in place as the store has them than it follows ({}): not looked at "
                 "again unless written again",
                 unsettled_dropped_, kUnsettledKept);
    unsettled_dropped_ = 0;
  }
  RepairStale(std::move(stale), /*repair=*/true);
  return report;
}

void ViewAudit::Unsettle(const std::string& key, const std::optional<Version>& version) {
  auto [it, added] = unsettled_.try_emplace(key);
  if (added && unsettled_.size() > kUnsettledKept) {
    unsettled_.erase(it);
    ++unsettled_dropped_;
    return;
  }
  if (version && it->second.version != version) it->second = Unsettled{.version = version};  // a new version: anew
  if (++it->second.looks >= kLooksWhileUnsettled) {
    unsettled_.erase(it);
    return;
  }
  it->second.next_check = checks_noted_ + (uint64_t{1} << (it->second.looks - 1));
}

ViewAudit::Shows ViewAudit::Look(const std::string& key, const Record& rec, const v1::Inode& inode,
                                 Sha256OfParts& digest, std::map<std::string, Version>& stale) {
  digest.Add(key);
  int fd = OpenBeneath(root_fd_, key, O_PATH);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (fd >= 0) close(fd);
    digest.Add("absent");
    return inode.type() == v1::FILE_TYPE_REGULAR ? Shows::kOther : Shows::kNotJudged;
  }
  Shows shows = Shows::kNotJudged;
  // Without root the agent places no setuid or setgid bits: neither counts.
  const bool as_root = AgentUid() == 0;
  digest.Add(fmt::format("{:o}", st.st_mode & (as_root ? S_IFMT | 07777 : S_IFMT | 01777)));
  if (as_root) digest.Add(fmt::format("{}:{}", st.st_uid, st.st_gid));
  if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) digest.Add(fmt::format("{}:{}", st.st_size, MtimeNs(st)));
  FileMarks marks(fd);
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) {
    v1::Inode shown_xattrs;
    shown_xattrs.set_type(S_ISDIR(st.st_mode) ? v1::FILE_TYPE_DIRECTORY : v1::FILE_TYPE_REGULAR);
    // (What this agent cannot see counts as recorded.)
    ReadXattrs(fd, &shown_xattrs, &inode, marks.Names());
    for (const v1::Xattr& x : shown_xattrs.xattrs()) {
      digest.Add(x.name());
      digest.Add(x.value());
    }
  }
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = readlinkat(fd, "", target, sizeof target);
    digest.Add(std::string_view(target, n > 0 ? static_cast<size_t>(n) : 0));
  }
  if (S_ISREG(st.st_mode)) {
    std::optional<Version> shown;
    digest.Add(ContentOf(key, marks, st, rec, inode, &shown));
    if (shown && *shown != rec.version && Newer(rec.version, *shown)) {
      stale[key] = *shown;
      shows = Shows::kOlder;
    } else if (inode.type() == v1::FILE_TYPE_REGULAR) {
      shows = shown == rec.version ? Shows::kCurrent : Shows::kOther;
    }
  } else if (inode.type() == v1::FILE_TYPE_REGULAR) {
    shows = Shows::kOther;  // something else in its place
  }
  close(fd);
  return shows;
}

void ViewAudit::RepairStale(std::map<std::string, Version> stale, bool repair) {
  if (!repair) return;  // "twice in a row" counts the repairing checks only
  for (const auto& [key, shown] : stale) {
    auto before = stale_.find(key);
    if (before == stale_.end() || before->second != shown) continue;  // once is not yet twice
    spdlog::info("view audit: /{} shows version {}, older than the store's current one: putting that in place",
                 key, VersionText(shown));
    ++repaired_;
    repair_(key);
  }
  stale_ = std::move(stale);
}

std::string ViewAudit::ContentOf(const std::string& key, FileMarks& marks, const struct stat& st, const Record& rec,
                                 const v1::Inode& inode, std::optional<Version>* shown) {
  *shown = ledger_.ContentShown(key, marks, st);
  if (std::optional<v1::Inode> stub = ledger_.StubContent(marks))
    return ContentName(stub->size(), stub->chunks());  // what an open of it reads, once hydrated
  if (*shown) {
    std::string name = ChunksOfVersion(key, **shown, rec, inode);
    if (!name.empty()) return name;
  }
  // Written since the agent last recorded or placed it, and not recorded
  // yet (being written, or the recorder behind): its look, this node's own,
  // until the recorder takes it. (Reading it here would double the writer's I/O.)
  return fmt::format("unrecorded {}:{}:{}:{}", st.st_ino, st.st_size, MtimeNs(st), Ns(st.st_ctim));
}

std::string ViewAudit::ChunksOfVersion(const std::string& key, const Version& version, const Record& rec,
                                       const v1::Inode& inode) {
  if (version == rec.version) return ContentName(inode.size(), inode.chunks());
  Result<std::vector<Record>> history = store_.History(key);
  if (!history.ok()) return "";
  for (const Record& old : *history) {
    v1::Inode was;
    if (old.version == version && !old.tombstone && was.ParseFromString(old.value))
      return ContentName(was.size(), was.chunks());
  }
  return "";  // not kept any more: the bytes tell
}

}  // namespace onebox

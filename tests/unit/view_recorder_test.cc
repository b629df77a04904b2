// The view recorder under bursts: which inotify events a close in the same
// read makes unneeded (CoveredByAClose), and that a burst of files made,
// written, closed, stamped and chmod'ed as tar does is recorded exactly as
// the files end up, whatever the recorder skipped; and that a removal read
// after the name was made again does not undo the new file's record.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "consistency/digest.h"
#include "nodeagent/view/file_xattrs.h"
#include "nodeagent/view/view_ledger.h"
#include "nodeagent/view/view_recorder.h"
#include "nodeagent/view/watched_dirs.h"
#include "tests/unit/in_process_cluster.h"

namespace onebox::testing {
namespace {

// inotify events as one read returns them, laid out in a buffer.
class Events {
 public:
  Events& Add(int wd, uint32_t mask, const std::string& name) {
    size_t len = name.empty() ? 0 : (name.size() + 1 + 7) / 8 * 8;  // NUL-padded as the kernel does
    std::vector<char> ev(sizeof(inotify_event) + len, 0);
    auto* e = reinterpret_cast<inotify_event*>(ev.data());
    e->wd = wd;
    e->mask = mask;
    e->len = static_cast<uint32_t>(len);
    memcpy(ev.data() + sizeof(inotify_event), name.data(), name.size());
    storage_.push_back(std::move(ev));
    return *this;
  }
  std::vector<bool> Covered() const {
    std::vector<const inotify_event*> events;
    for (const auto& ev : storage_) events.push_back(reinterpret_cast<const inotify_event*>(ev.data()));
    return CoveredByAClose(events);
  }

 private:
  std::vector<std::vector<char>> storage_;
};

TEST(ViewRecorderEvents, ACreateOrStampBesideACloseOfTheSameFileIsCoveredByIt) {
  // tar: create, close, stamp; the stamp before the close as well (fchmod, then close).
  EXPECT_EQ(Events()
                .Add(1, IN_CREATE, "a")
                .Add(1, IN_ATTRIB, "a")
                .Add(1, IN_CLOSE_WRITE, "a")
                .Add(1, IN_ATTRIB, "a")
                .Covered(),
            (std::vector<bool>{true, true, false, true}));
  // No close in the read: each event counts. Another directory's "a" is another file.
  EXPECT_EQ(Events().Add(1, IN_CREATE, "a").Add(1, IN_ATTRIB, "a").Add(2, IN_CLOSE_WRITE, "a").Covered(),
            (std::vector<bool>{false, false, false}));
  // A removal or a move ends the file the close was of: what comes after is
  // another file's (or nothing's), and the removal itself is never skipped.
  EXPECT_EQ(Events()
                .Add(1, IN_CREATE, "a")
                .Add(1, IN_CLOSE_WRITE, "a")
                .Add(1, IN_DELETE, "a")
                .Add(1, IN_CREATE, "a")
                .Add(1, IN_ATTRIB, "a")
                .Covered(),
            (std::vector<bool>{true, false, false, false, false}));
  EXPECT_EQ(Events()
                .Add(1, IN_CLOSE_WRITE, "a")
                .Add(1, IN_MOVED_FROM, "a")
                .Add(1, IN_MOVED_TO, "a")
                .Add(1, IN_ATTRIB, "a")
                .Covered(),
            (std::vector<bool>{false, false, false, false}));
  // Directories are never covered (their creation watches them).
  EXPECT_EQ(Events().Add(1, IN_CREATE | IN_ISDIR, "d").Add(1, IN_CLOSE_WRITE, "d").Covered(),
            (std::vector<bool>{false, false}));
}

TEST(WatchedDirs, ATreeTakesItsDirectoriesAndNoSiblingAndAWatchAddedAgainIsUnderItsNewPath) {
  WatchedDirs watched;
  watched.Add(1, "");
  watched.Add(2, "a");
  watched.Add(3, "a/b");
  watched.Add(4, "a/b/c");
  watched.Add(5, "a/b-x");
  watched.Add(6, "a/b.c");
  watched.Add(7, "a/b0");
  watched.Add(8, "a/bc");
  watched.Add(9, "a/b/c/d");
  watched.Add(9, "a/moved");  // the same directory, watched again after a move out of the tree
  watched.Add(10, "a/b");     // another directory made under the name, watched before the old one's IN_IGNORED
  std::vector<int> taken = watched.TakeTree("a/b");
  std::sort(taken.begin(), taken.end());
  EXPECT_EQ(taken, (std::vector<int>{3, 4, 10}));
  for (int wd : {3, 4, 10}) EXPECT_EQ(watched.Find(wd), nullptr) << wd;
  for (int wd : {1, 2, 5, 6, 7, 8}) EXPECT_NE(watched.Find(wd), nullptr) << wd;
  ASSERT_NE(watched.Find(9), nullptr);
  EXPECT_EQ(*watched.Find(9), "a/moved");
  watched.Forget(9);
  EXPECT_EQ(watched.Find(9), nullptr);
  EXPECT_TRUE(watched.TakeTree("a/moved").empty());
  EXPECT_EQ(watched.size(), 6u);
  // The view root, "", as before: no path below it starts with "/", so only its own watch.
  EXPECT_EQ(watched.TakeTree("").size(), 1u);
}

// One node's ledger over its store, and a directory for the files it is told of.
class ViewLedgerTest : public ::testing::Test {
 protected:
  InProcessCluster cluster_{1};
  TempDir dir_;
  StatePage page_{};
  ViewLedger ledger_{*cluster_.node(0).store, page_};
};
using ViewLedgerTree = ViewLedgerTest;
using ViewLedgerRemovals = ViewLedgerTest;

TEST_F(ViewLedgerTree, AGoneDirectoryTakesEveryNameBelowItAndNoSiblingThatSharesItsPrefix) {
  struct stat st;
  ASSERT_EQ(stat(dir_.path().c_str(), &st), 0);
  const Version v{100, 0x2c9d};
  const std::vector<std::string> below = {"cluster/a/b", "cluster/a/b/c", "cluster/a/b/d", "cluster/a/b/d/e"};
  // Siblings that sort between "a/b" and "a/b/", or right after the tree.
  const std::vector<std::string> beside = {"cluster/a", "cluster/a/b-x", "cluster/a/b.c", "cluster/a/b0",
                                           "cluster/a/bc", "cluster/a/a"};
  for (const std::string& p : below) ledger_.Placed(p, st, v);
  for (const std::string& p : beside) ledger_.Placed(p, st, v);
  ledger_.SetStub("cluster/a/b/d/e", true);
  ledger_.SetStub("cluster/a/b0", true);
  ASSERT_EQ(page_.stubs.load(), 2u);
  ledger_.Gone("cluster/a/b");
  for (const std::string& p : below) EXPECT_FALSE(ledger_.SeenInView(p)) << p;
  for (const std::string& p : beside) EXPECT_TRUE(ledger_.SeenInView(p)) << p;
  EXPECT_EQ(page_.stubs.load(), 1u);
  EXPECT_EQ(ledger_.NamesLastSeenAs(st.st_ino).size(), beside.size());
}

TEST_F(ViewLedgerTree, TheNamesOfAnInodeAreThoseLastSeenWithIt) {
  ASSERT_EQ(close(open((dir_ / "f").c_str(), O_WRONLY | O_CREAT, 0644)), 0);
  ASSERT_EQ(link((dir_ / "f").c_str(), (dir_ / "g").c_str()), 0);
  ASSERT_EQ(close(open((dir_ / "other").c_str(), O_WRONLY | O_CREAT, 0644)), 0);
  struct stat linked, other;
  ASSERT_EQ(stat((dir_ / "f").c_str(), &linked), 0);
  ASSERT_EQ(stat((dir_ / "other").c_str(), &other), 0);
  const Version v{100, 0x2c9d};
  auto names = [&](ino_t ino) {
    std::vector<std::string> n = ledger_.NamesLastSeenAs(ino);
    std::sort(n.begin(), n.end());
    return n;
  };
  ledger_.Placed("cluster/f", linked, v);
  ledger_.Recorded("cluster/g", linked, v);
  ledger_.Placed("cluster/h", linked, v);
  ledger_.Placed("cluster/h", linked, Version{200, 0x2c9d});  // again, same file: one name
  EXPECT_EQ(names(linked.st_ino), (std::vector<std::string>{"cluster/f", "cluster/g", "cluster/h"}));
  ledger_.Placed("cluster/h", other, v);  // the name now shows another file
  ledger_.NotPlaced("cluster/g");
  EXPECT_EQ(names(linked.st_ino), (std::vector<std::string>{"cluster/f"}));
  EXPECT_EQ(names(other.st_ino), (std::vector<std::string>{"cluster/h"}));
  ledger_.RecordedButChanged("cluster/h", v);  // its look unknown: no inode
  ledger_.Gone("cluster/f");
  EXPECT_TRUE(names(linked.st_ino).empty());
  EXPECT_TRUE(names(other.st_ino).empty());
  EXPECT_TRUE(ledger_.SeenInView("cluster/h"));
}

// What the ledger tells the view audit a name shows: the version of its
// last whole placement or recording; nothing for a recording the file
// changed under, or a write in place cut short (a mix, placed again: not
// taken for the version already written in place).
TEST_F(ViewLedgerTree, ANameShowsTheVersionOfItsLastWholePlacementOrRecording) {
  ASSERT_EQ(close(open((dir_ / "f").c_str(), O_WRONLY | O_CREAT, 0644)), 0);
  struct stat st;
  ASSERT_EQ(stat((dir_ / "f").c_str(), &st), 0);
  const Version v{100, 0x2c9d}, w{200, 0x2c9d};
  EXPECT_EQ(ledger_.LastShown("cluster/f"), std::nullopt);
  ledger_.Placed("cluster/f", st, v);
  EXPECT_EQ(ledger_.LastShown("cluster/f"), v);
  ledger_.Recorded("cluster/f", st, w);
  EXPECT_EQ(ledger_.LastShown("cluster/f"), w);
  ledger_.RecordedButChanged("cluster/f", v);
  EXPECT_EQ(ledger_.LastShown("cluster/f"), std::nullopt);
  ledger_.Placed("cluster/f", st, w, /*in_place=*/true);
  EXPECT_EQ(ledger_.LastShown("cluster/f"), w);
  EXPECT_TRUE(ledger_.LastWrittenInPlace("cluster/f", w));
  ledger_.Placed("cluster/f", st, v, /*in_place=*/true, /*partial=*/true);
  EXPECT_EQ(ledger_.LastShown("cluster/f"), std::nullopt);
  EXPECT_FALSE(ledger_.LastWrittenInPlace("cluster/f", v)) << "a write cut short would not be made again";
  EXPECT_TRUE(ledger_.WrittenInPlaceByUs("cluster/f", st)) << "the mix taken for a program's write";
  int fd = open((dir_ / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  FileMarks marks(fd);
  EXPECT_EQ(ledger_.ContentShown("cluster/f", marks, st), std::nullopt);
  close(fd);
  ledger_.NotPlaced("cluster/f");
  EXPECT_EQ(ledger_.LastShown("cluster/f"), std::nullopt);
}

// A stub's mark names its content: a file of a few chunks (nearly every
// stub) by the description itself, sealed with a key of the node's store,
// so that placing it writes nothing to the store; a big one by an id whose
// description the store keeps. A mark a program wrote, or one sealed by
// another node's store, names nothing.
TEST_F(ViewLedgerTree, AStubsMarkNamesItsContentSmallOnesWithoutAWriteToTheStore) {
  Store& store = *cluster_.node(0).store;
  InProcessCluster other_node{1};
  StatePage other_page{};
  ViewLedger other_ledger{*other_node.node(0).store, other_page};
  auto content_of = [](int chunks) {
    v1::Inode inode;
    inode.set_type(v1::FILE_TYPE_REGULAR);
    inode.set_mode(0644);
    inode.set_mtime_ns(1234);
    inode.set_size(static_cast<uint64_t>(chunks) * (1 << 20) - 7);
    for (int i = 0; i < chunks; ++i) inode.add_chunks(Sha256("chunk " + std::to_string(i)));
    return inode;
  };
  auto described = [](const v1::Inode& inode) {
    v1::Inode d;
    d.set_size(inode.size());
    *d.mutable_chunks() = inode.chunks();
    return d.SerializeAsString();
  };
  auto stub_with_mark = [&](const std::string& name, const std::string& mark) {
    const std::string path = dir_ / name;
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(SetMark(fd, kStubXattr, mark), 0) << strerror(errno);
    return fd;
  };
  for (int chunks : {1, 6, 7, 300}) {
    SCOPED_TRACE(fmt::format("{} chunks", chunks));
    const v1::Inode inode = content_of(chunks);
    Result<std::string> mark = ledger_.StubMark(inode);
    ASSERT_TRUE(mark.ok());
    const bool kept_in_store = store.GetMeta("stub/" + HexOf(Sha256(described(inode)))).ok();
    EXPECT_EQ(kept_in_store, chunks > 6) << "up to six chunks the mark holds the description";
    const int fd = stub_with_mark(fmt::format("stub{}", chunks), *mark);
    ASSERT_GE(fd, 0);
    FileMarks marks(fd), other_marks(fd);
    std::optional<v1::Inode> back = ledger_.StubContent(marks);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->SerializeAsString(), described(inode));
    EXPECT_FALSE(other_ledger.StubContent(other_marks).has_value()) << "another node's store made it";
    {
      // The agent started again: a new ledger over the same store reads it.
      StatePage page_again{};
      ViewLedger again{store, page_again};
      ASSERT_TRUE(again.PrepareStubMarks().ok());
      FileMarks marks_again(fd);
      std::optional<v1::Inode> after_restart = again.StubContent(marks_again);
      ASSERT_TRUE(after_restart.has_value());
      EXPECT_EQ(after_restart->SerializeAsString(), described(inode));
    }
    close(fd);
  }
  // A key that is not one (a damaged store): the agent is told, and does not start.
  {
    InProcessCluster damaged{1};
    ASSERT_TRUE(damaged.node(0).store->PutMeta("stub-mark-key", "short", true).ok());
    StatePage damaged_page{};
    ViewLedger damaged_ledger{*damaged.node(0).store, damaged_page};
    Status prepared = damaged_ledger.PrepareStubMarks();
    EXPECT_EQ(prepared.code(), Code::kCorruption) << prepared.ToString();
  }
  // Marks that name nothing: no content. The last two are what a program
  // could write: a description with no tag, or with a tag of its own.
  const std::string one_chunk = described(content_of(1));
  for (const std::string& bad : {std::string("x"), std::string("content:\xff\xff"), std::string(32, 'z'),
                                 "content:" + one_chunk, "content:" + std::string(16, '\0') + one_chunk}) {
    const int fd = stub_with_mark("bad", bad);
    ASSERT_GE(fd, 0);
    FileMarks marks(fd);
    EXPECT_FALSE(ledger_.StubContent(marks).has_value()) << HexOf(bad);
    close(fd);
  }
}

// What the ledger answers the recorder about a name the materializer
// removed for a peer's tombstone: a version newer than the tombstone was
// never shown here (a look at the name that finds it gone, read late, must
// not remove the peer's newer file: it once did, in ViewConvergenceTest).
TEST_F(ViewLedgerRemovals, ANameTheMaterializerRemovedShowedNoVersionNewerThanItsTombstone) {
  const std::string path = "cluster/r";
  ASSERT_EQ(close(open((dir_ / "r").c_str(), O_WRONLY | O_CREAT, 0644)), 0);
  struct stat st;
  ASSERT_EQ(stat((dir_ / "r").c_str(), &st), 0);
  constexpr uint64_t kPeer = 0x2c9d;
  const Version placed{100, kPeer}, tombstone{200, kPeer}, made_again{300, kPeer};
  ledger_.Placed(path, st, placed);
  EXPECT_TRUE(ledger_.ShowedOlderVersion(path, tombstone));
  ledger_.RemovedOurs(path, tombstone);
  EXPECT_FALSE(ledger_.SeenInView(path));
  EXPECT_TRUE(ledger_.ShowedOlderVersion(path, made_again)) << "the peer's file made again was never shown here";
  EXPECT_FALSE(ledger_.ShowedOlderVersion(path, Version{150, kPeer}));
  // Its directory removed after it (the materializer's removals go up).
  ledger_.RemovedOurs("cluster", Version{250, kPeer});
  EXPECT_TRUE(ledger_.ShowedOlderVersion(path, made_again)) << "forgotten with its directory's removal";
  // Shown again (placed or recorded), the name's own look decides; gone
  // by the recorder's own removal, nothing is known of it.
  ledger_.Placed(path, st, made_again);
  EXPECT_FALSE(ledger_.ShowedOlderVersion(path, made_again));
  // Removed, made again by the peer, and changed by a program as soon as it
  // was put in place (NotPlaced, not Placed): the name showed that version,
  // and a removal now is a program's, which the recorder records.
  ledger_.RemovedOurs(path, Version{350, kPeer});
  ledger_.NotPlaced(path);
  EXPECT_FALSE(ledger_.ShowedOlderVersion(path, Version{360, kPeer}));
  ledger_.RemovedOurs(path, Version{400, kPeer});
  ledger_.Gone(path);
  EXPECT_FALSE(ledger_.ShowedOlderVersion(path, Version{500, kPeer}));
  // A directory removed, and made again as a placeholder for an entry of
  // the peer's that came before the directory's own record.
  const std::string d = "cluster/d";
  ASSERT_EQ(mkdir((dir_ / "d").c_str(), 0755), 0);
  int fd = open((dir_ / "d").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fstat(fd, &st), 0);
  ledger_.RemovedOurs(d, Version{600, kPeer});
  ledger_.Placeholder(d, fd, st);
  close(fd);
  EXPECT_FALSE(ledger_.ShowedOlderVersion(d, Version{700, kPeer})) << "a placeholder shows the name again";
}

// A recorder on one node's store, over a view with an empty /cluster/burst.
class ViewRecorderBurst : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(view + "/cluster/burst");
    page.magic = StatePage::kMagic;
    Result<std::unique_ptr<ViewRecorder>> started = ViewRecorder::Start(view, store, ledger);
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    recorder = std::move(started).value();
  }
  void TearDown() override {
    if (recorder) recorder->Stop();
  }

  InProcessCluster cluster{1};
  Store& store = *cluster.node(0).store;
  TempDir dir;
  const std::string view = dir / "view";
  StatePage page{};
  ViewLedger ledger{store, page};
  std::unique_ptr<ViewRecorder> recorder;

  // Writes bytes to the file at key (made, or emptied first), and closes it.
  void WriteFile(const std::string& key, const std::string& bytes) {
    int fd = open((view + "/" + key).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ASSERT_EQ(close(fd), 0);
  }
  // No tombstone of key was written after log position after, and its record holds bytes.
  void ExpectRecordedSince(const std::string& key, uint64_t after, const std::string& bytes) {
    Result<std::vector<LogEntry>> since = store.ReadLog(after, 1000);
    ASSERT_TRUE(since.ok());
    for (const LogEntry& e : *since) EXPECT_FALSE(e.key == key && e.record.tombstone) << "tombstone at seq " << e.seq;
    ExpectRecorded(key, bytes);
  }
  void ExpectRecorded(const std::string& key, const std::string& bytes) {
    Result<Record> rec = store.Get(key, Cf::kNs);
    ASSERT_TRUE(rec.ok()) << rec.status().ToString();
    v1::Inode inode;
    ASSERT_TRUE(inode.ParseFromString(rec->value));
    ASSERT_EQ(inode.chunks_size(), 1);
    EXPECT_EQ(inode.chunks(0), Sha256(bytes));
  }
};

TEST_F(ViewRecorderBurst, ABurstIsRecordedAsTheFilesEndUp) {
  // As tar -x does, as fast as it goes: the recorder falls behind and reads many at once.
  constexpr int kFiles = 400;
  for (int i = 0; i < kFiles; ++i) {
    std::string path = fmt::format("{}/cluster/burst/f{}", view, i);
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    std::string bytes(100 + i, static_cast<char>('a' + i % 26));
    ASSERT_EQ(write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ASSERT_EQ(fchmod(fd, 0640), 0);
    ASSERT_EQ(close(fd), 0);
    timespec times[2] = {{1'000'000 + i, 0}, {1'000'000 + i, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
    if (i % 2 == 0) {
      ASSERT_EQ(chmod(path.c_str(), 0644), 0);
    }
  }
  ASSERT_TRUE(recorder->Sync().ok());
  for (int i = 0; i < kFiles; ++i) {
    std::string key = fmt::format("cluster/burst/f{}", i);
    Result<Record> rec = store.Get(key, Cf::kNs);
    ASSERT_TRUE(rec.ok()) << key;
    v1::Inode inode;
    ASSERT_TRUE(inode.ParseFromString(rec->value));
    std::string bytes(100 + i, static_cast<char>('a' + i % 26));
    EXPECT_EQ(inode.size(), bytes.size()) << key;
    ASSERT_EQ(inode.chunks_size(), 1) << key;
    EXPECT_EQ(inode.chunks(0), Sha256(bytes)) << key;
    EXPECT_EQ(inode.mode(), i % 2 == 0 ? 0644u : 0640u) << key;
    EXPECT_EQ(inode.mtime_ns(), (1'000'000 + i) * 1'000'000'000LL) << key;
  }
  // (How many events a close covered depends on how far behind the recorder was.)
  RecordProperty("covered_events", std::to_string(recorder->covered_events()));
}

// A file of two names, its times set through one name, and that name
// renamed over (another file takes it) before the recorder looks: the
// change was the first file's, and its other name records it.
TEST_F(ViewRecorderBurst, AChangeThroughANameRenamedOverSinceReachesTheFilesOtherName) {
  WriteFile("cluster/burst/f", "two names\n");
  ASSERT_EQ(link((view + "/cluster/burst/f").c_str(), (view + "/cluster/burst/g").c_str()), 0);
  WriteFile("cluster/burst/other", "another file\n");
  ASSERT_TRUE(recorder->Sync().ok());
  {
    // (The recorder looks at f only after both: under the view's lock, which it takes for each look.)
    std::lock_guard view_lock(ledger.view_mutex());
    timespec times[2] = {{1'700'000'000, 0}, {1'700'000'000, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, (view + "/cluster/burst/f").c_str(), times, 0), 0);
    ASSERT_EQ(rename((view + "/cluster/burst/other").c_str(), (view + "/cluster/burst/f").c_str()), 0);
  }
  ASSERT_TRUE(recorder->Sync().ok());
  Result<Record> g = store.Get("cluster/burst/g", Cf::kNs);
  ASSERT_TRUE(g.ok());
  v1::Inode inode;
  ASSERT_TRUE(inode.ParseFromString(g->value));
  EXPECT_EQ(inode.mtime_ns(), 1'700'000'000'000'000'000LL) << "g's record misses the change made through f";
  ExpectRecorded("cluster/burst/g", "two names\n");
  ExpectRecorded("cluster/burst/f", "another file\n");
}

TEST_F(ViewRecorderBurst, AStubAProgramRewroteIsNoStubAnyMoreWhateverTheRecorderSkipped) {
  // A stub, as the materializer leaves one (its content elsewhere).
  const std::string stub = view + "/cluster/s";
  ASSERT_EQ(close(open(stub.c_str(), O_WRONLY | O_CREAT, 0644)), 0);
  ASSERT_EQ(truncate(stub.c_str(), 5), 0);
  ASSERT_EQ(setxattr(stub.c_str(), kStubXattr, "x", 1, 0), 0);
  ledger.SetStub("cluster/s", true);
  ASSERT_EQ(page.stubs.load(), 1u);
  ASSERT_TRUE(recorder->Sync().ok());
  // A burst first, so that the recorder is behind and reads what follows
  // in one go: the shim's removal of the mark (IN_ATTRIB), then the close.
  for (int i = 0; i < 300; ++i) {
    std::string path = fmt::format("{}/cluster/burst/f{}", view, i);
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "burst\n", 6), 6);
    ASSERT_EQ(close(fd), 0);
  }
  int fd = open(stub.c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(fremovexattr(fd, kStubXattr), 0);
  ASSERT_EQ(write(fd, "mine\n", 5), 5);
  ASSERT_EQ(close(fd), 0);
  ASSERT_TRUE(recorder->Sync().ok());
  EXPECT_EQ(page.stubs.load(), 0u) << "a stub count left up: the materializer would take the file for untouched";
  Result<Record> rec = store.Get("cluster/s", Cf::kNs);
  ASSERT_TRUE(rec.ok());
  v1::Inode inode;
  ASSERT_TRUE(inode.ParseFromString(rec->value));
  ASSERT_EQ(inode.chunks_size(), 1);
  EXPECT_EQ(inode.chunks(0), Sha256("mine\n"));
}

TEST_F(ViewRecorderBurst, AFileMadeAgainBeforeItsRemovalIsReadKeepsWhatItsFsyncRecorded) {
  // SQLite's rollback journal: removed at one commit, made and fsync'ed at
  // the next, before the recorder reads the removal.
  const std::string key = "cluster/burst/app.db-journal";
  const std::string path = view + "/" + key;
  WriteFile(key, "first commit\n");
  ASSERT_TRUE(recorder->RecordNow(key).ok());
  ASSERT_TRUE(recorder->Sync().ok());
  uint64_t fsynced = 0;
  {
    // Held, the recorder's mutex keeps its loop from handling the removal
    // until the new file's fsync has recorded it.
    std::lock_guard hold(ledger.view_mutex());
    ASSERT_EQ(unlink(path.c_str()), 0);
    WriteFile(key, "second commit\n");
    ASSERT_TRUE(recorder->RecordNow(key).ok());
    fsynced = store.LastLogSeq();
  }
  ASSERT_TRUE(recorder->Sync().ok());
  // What the fsync recorded was never tombstoned (peers would have removed
  // the file, and a Publish reading it back would fail), and it stays.
  ExpectRecordedSince(key, fsynced, "second commit\n");

  // Made again and not recorded yet (still open for writing, as a log
  // reopened after a rotation): the removal goes through, and peers do not
  // read the removed file's bytes under the name.
  int fd = -1;
  {
    std::lock_guard hold(ledger.view_mutex());
    ASSERT_EQ(unlink(path.c_str()), 0);
    fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "third\n", 6), 6);
  }
  ASSERT_TRUE(recorder->Sync().ok());
  if (Result<Record> now = store.Get(key, Cf::kNs); now.ok()) {  // recorded meanwhile (unchanged for 100 ms)
    v1::Inode seen;
    ASSERT_TRUE(seen.ParseFromString(now->value));
    ASSERT_EQ(seen.chunks_size(), 1);
    EXPECT_EQ(seen.chunks(0), Sha256("third\n")) << "the removed file's record outlived its removal";
  }
  ASSERT_EQ(close(fd), 0);
  ASSERT_TRUE(recorder->Sync().ok());
  ExpectRecorded(key, "third\n");
}

TEST_F(ViewRecorderBurst, ADirectoryMadeAgainBeforeItsRemovalIsReadKeepsWhatWasFsyncedInIt) {
  // rm -rf out; mkdir out; a file written and fsync'ed there, all before
  // the recorder reads the directory's removal.
  const std::string dir_key = "cluster/burst/out", key = dir_key + "/f";
  const std::string dir_path = view + "/" + dir_key;
  ASSERT_EQ(mkdir(dir_path.c_str(), 0755), 0);
  WriteFile(key, "before\n");
  ASSERT_TRUE(recorder->Sync().ok());
  uint64_t fsynced = 0;
  {
    std::lock_guard hold(ledger.view_mutex());
    ASSERT_EQ(unlink((view + "/" + key).c_str()), 0);
    ASSERT_EQ(rmdir(dir_path.c_str()), 0);
    ASSERT_EQ(mkdir(dir_path.c_str(), 0755), 0);
    WriteFile(key, "after\n");
    ASSERT_TRUE(recorder->RecordNow(key).ok());
    fsynced = store.LastLogSeq();
  }
  ASSERT_TRUE(recorder->Sync().ok());
  ExpectRecordedSince(key, fsynced, "after\n");
  EXPECT_TRUE(store.Get(dir_key, Cf::kNs).ok()) << "the directory made again is recorded";
}

// A look lists an entry's extended attribute names once: the marks' listing
// serves ReadXattrs, which reads the same attributes from it as from a
// listing of its own, the agent's marks left out; names too many for the
// marks' buffer are listed by ReadXattrs itself.
TEST(FileMarksListing, ReadXattrsReadsTheSameFromTheMarksListingAsFromItsOwn) {
  TempDir dir;
  const std::string path = dir / "f";
  ASSERT_TRUE(std::ofstream(path) << "x");
  const int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string proc = fmt::format("/proc/self/fd/{}", fd);
  ASSERT_EQ(setxattr(proc.c_str(), "user.a", "1", 1, 0), 0) << strerror(errno);
  ASSERT_EQ(setxattr(proc.c_str(), "user.b", "22", 2, 0), 0);
  {
    const int writable = open(path.c_str(), O_RDWR | O_CLOEXEC);  // (the marks are set through a real descriptor)
    ASSERT_GE(writable, 0);
    ViewLedger::MarkPlacement(writable, "f", Version{42, 7});  // the agent's own mark: not replicated
    close(writable);
  }
  auto read = [&](std::optional<std::string_view> listed) {
    v1::Inode inode;
    inode.set_type(v1::FILE_TYPE_REGULAR);
    ReadXattrs(fd, &inode, nullptr, listed);
    std::string all;
    for (const v1::Xattr& x : inode.xattrs()) all += x.name() + "=" + x.value() + ";";
    return all;
  };
  {
    FileMarks marks(fd);
    ASSERT_TRUE(marks.Names().has_value());
    EXPECT_EQ(read(marks.Names()), "user.a=1;user.b=22;");
    EXPECT_FALSE(marks.Placement().empty());  // the same listing told the mark is there
  }
  EXPECT_EQ(read(std::nullopt), "user.a=1;user.b=22;");
  // The listing given is the one read (not listed again): a listing of
  // user.a alone reads user.a alone, and an empty one none.
  EXPECT_EQ(read(std::string_view("user.a\0", 7)), "user.a=1;");
  EXPECT_EQ(read(std::string_view()), "");
  // More names than the marks' buffer holds: no listing from them, all read.
  for (int i = 0; i < 20; ++i)
    ASSERT_EQ(setxattr(proc.c_str(), fmt::format("user.long-name-to-fill-the-list-{:02}", i).c_str(), "v", 1, 0), 0);
  FileMarks marks(fd);
  EXPECT_FALSE(marks.Names().has_value());
  v1::Inode inode;
  inode.set_type(v1::FILE_TYPE_REGULAR);
  ReadXattrs(fd, &inode, nullptr, marks.Names());
  EXPECT_EQ(inode.xattrs_size(), 22);
  EXPECT_FALSE(marks.Placement().empty());  // asked for by name when not listed
  close(fd);
}

}  // namespace
}  // namespace onebox::testing

// A node's view and a peer's version that ties with its own: equal HLC
// timestamps, a higher node id, and a file of the same size and mtime (two
// programs writing in the same moment). The store keeps the peer's version
// (consistency/record.h, Newer); the view must show its bytes too, at once
// and after a restart that found the loser still in place.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "consistency/digest.h"
#include "nodeagent/view/file_look.h"
#include "nodeagent/view/view_audit.h"
#include "nodeagent/view/view_ledger.h"
#include "nodeagent/view/view_materializer.h"
#include "nodeagent/view/view_recorder.h"
#include "tests/test_util.h"
#include "tests/unit/in_process_cluster.h"
#include "tests/unit/view_parts.h"

namespace onebox::testing {
namespace {

using namespace std::chrono_literals;

class ViewTieTest : public ::testing::Test {
 protected:
  void SetUp() override {
    view_ = dir_ / "view";
    std::filesystem::create_directories(view_ + "/cluster");
  }
  // Writes the local file, has it recorded, and returns its record.
  Record WriteHere(ViewParts& parts, const std::string& bytes) {
    std::ofstream(view_ + "/cluster/r6") << bytes;
    EXPECT_TRUE(parts.recorder->Sync().ok());
    Result<Record> rec = node().store->Get("cluster/r6", Cf::kNs);
    EXPECT_TRUE(rec.ok());
    return rec.ok() ? *rec : Record{};
  }
  // The peer's version: the same timestamp, a higher node id, the same size
  // and mtime, other bytes (their chunk stored here, as a holder has it).
  Record PeersTie(const Record& ours, const std::string& bytes) {
    v1::Inode inode;
    EXPECT_TRUE(inode.ParseFromString(ours.value));
    EXPECT_EQ(inode.size(), bytes.size());
    inode.clear_chunks();
    inode.add_chunks(Sha256(bytes));
    EXPECT_TRUE(node().store->PutChunk(Sha256(bytes), bytes).ok());
    Record theirs{Version{ours.version.hlc, ours.version.node + 1}, false, inode.SerializeAsString()};
    EXPECT_TRUE(Newer(theirs.version, ours.version));
    return theirs;
  }
  // A file version made on node `from`, now, with these bytes (their chunk stored here) and mtime.
  Record PeerFile(uint64_t from, const std::string& bytes, int64_t mtime_ns) {
    v1::Inode inode;
    inode.set_type(v1::FILE_TYPE_REGULAR);
    inode.set_mode(0644);
    inode.set_uid(getuid());
    inode.set_gid(getgid());
    inode.set_size(bytes.size());
    inode.set_mtime_ns(mtime_ns);
    inode.add_chunks(Sha256(bytes));
    EXPECT_TRUE(node().store->PutChunk(Sha256(bytes), bytes).ok());
    return Record{Version{node().store->clock().Now(), from}, false, inode.SerializeAsString()};
  }
  // A peer's record of cluster/r6 arrives, wins, and the materializer has done with it.
  void ArriveAndPlace(ViewParts& parts, const Record& rec) {
    ASSERT_TRUE(node().store->Apply("cluster/r6", rec, false, Cf::kNs).value());
    parts.materializer->Enqueue("cluster/r6");
    parts.materializer->Drain();
  }
  // Ours written, then, while the agent was down, the peer's tie came
  // (applied, never placed), and the file's ctime moved past the record's
  // time (its times set to what they were): at start nothing tells a
  // program's change from none. Returns the peer's record.
  Record TieArrivedWhileDown() {
    Record ours;
    {
      ViewParts parts(node(), view_);
      ours = WriteHere(parts, "from-a-6\n");
    }
    Record theirs = PeersTie(ours, "from-c-6\n");
    EXPECT_TRUE(node().store->Apply("cluster/r6", theirs, false, Cf::kNs).value());
    struct stat st;
    EXPECT_EQ(stat((view_ + "/cluster/r6").c_str(), &st), 0);
    timespec times[2] = {st.st_atim, st.st_mtim};
    EXPECT_EQ(utimensat(AT_FDCWD, (view_ + "/cluster/r6").c_str(), times, 0), 0);
    return theirs;
  }
  InProcessNode& node() { return cluster_.node(0); }

  InProcessCluster cluster_{1};
  TempDir dir_;
  std::string view_;
};

TEST_F(ViewTieTest, APeersVersionThatTiesOnTheTimestampAndWinsIsWhatTheViewShows) {
  ViewParts parts(node(), view_);
  Record ours = WriteHere(parts, "from-a-6\n");
  Record theirs = PeersTie(ours, "from-c-6\n");
  ArriveAndPlace(parts, theirs);
  EXPECT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c-6\n");
  // The loser is kept in the history, and the recorder records nothing new.
  ASSERT_TRUE(parts.recorder->Sync().ok());
  EXPECT_EQ(node().store->Get("cluster/r6", Cf::kNs)->version, theirs.version);
  Result<std::vector<Record>> history = node().store->History("cluster/r6");
  ASSERT_TRUE(history.ok());
  EXPECT_TRUE(std::any_of(history->begin(), history->end(), [&](const Record& r) { return r.version == ours.version; }));
}

TEST_F(ViewTieTest, ALoserStillInPlaceAfterARestartIsFoundAndReplaced) {
  Record theirs = TieArrivedWhileDown();
  ViewParts parts(node(), view_);
  parts.materializer->Drain();
  ASSERT_TRUE(parts.recorder->Sync().ok());
  // The start kept the file; the recorder's scan found it unchanged and an
  // older version (nothing recorded anew); the audit sees it stale and, at
  // its second look, hands it to the materializer.
  EXPECT_EQ(ReadFile(view_ + "/cluster/r6"), "from-a-6\n");
  EXPECT_EQ(node().store->Get("cluster/r6", Cf::kNs)->version, theirs.version);
  Result<ViewAudit::Report> first = parts.audit->Check(true);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->stale, 1u);
  EXPECT_EQ(parts.audit->repaired(), 0u);  // once is not yet twice
  ASSERT_TRUE(parts.audit->Check(true).ok());
  EXPECT_EQ(parts.audit->repaired(), 1u);
  parts.materializer->Drain();
  EXPECT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c-6\n");
  Result<ViewAudit::Report> after = parts.audit->Check(true);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->stale, 0u);
}

TEST_F(ViewTieTest, TheAuditsRoundsLookAtTheNotedKeysAndAtTheStaleOnesOnly) {
  Record theirs = TieArrivedWhileDown();
  ViewParts parts(node(), view_);
  parts.materializer->Drain();
  ASSERT_TRUE(parts.recorder->Sync().ok());
  ASSERT_EQ(ReadFile(view_ + "/cluster/r6"), "from-a-6\n");
  // Nothing noted: the round looks at nothing (the whole check finds it).
  Result<ViewAudit::Report> unnoted = parts.audit->CheckNoted();
  ASSERT_TRUE(unnoted.ok());
  EXPECT_EQ(unnoted->entries, 0u);
  EXPECT_EQ(unnoted->stale, 0u);
  // Noted (as a peer's winning record is): stale once, then, looked at again
  // as stale without a new note, repaired.
  parts.audit->Note("cluster/r6");
  Result<ViewAudit::Report> first = parts.audit->CheckNoted();
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->entries, 1u);
  EXPECT_EQ(first->stale, 1u);
  EXPECT_EQ(parts.audit->repaired(), 0u);
  Result<ViewAudit::Report> second = parts.audit->CheckNoted();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->entries, 1u);
  EXPECT_EQ(parts.audit->repaired(), 1u);
  parts.materializer->Drain();
  EXPECT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c-6\n");
  EXPECT_EQ(node().store->Get("cluster/r6", Cf::kNs)->version, theirs.version);
  // Stale at the second look, and now put in place as the store has it: no look, and then nothing.
  Result<ViewAudit::Report> third = parts.audit->CheckNoted();
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->entries, 0u);
  EXPECT_EQ(third->stale, 0u);
  Result<ViewAudit::Report> fourth = parts.audit->CheckNoted();
  ASSERT_TRUE(fourth.ok());
  EXPECT_EQ(fourth->entries, 0u);
}

TEST_F(ViewTieTest, TheViewDigestTellsWhatTheViewShows) {
  ViewParts parts(node(), view_);
  Record ours = WriteHere(parts, "from-a-6\n");
  Result<ViewAudit::Report> a = parts.audit->Check(false);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->entries, 2u);  // cluster, cluster/r6
  Record theirs = PeersTie(ours, "from-c-6\n");
  ASSERT_TRUE(node().store->Apply("cluster/r6", theirs, false, Cf::kNs).value());
  // Until the view follows, its digest is what it shows: the same bytes.
  Result<ViewAudit::Report> lagging = parts.audit->Check(false);
  ASSERT_TRUE(lagging.ok());
  EXPECT_EQ(lagging->digest, a->digest);
  EXPECT_EQ(lagging->stale, 1u);  // and an older version than the store's
  parts.materializer->Enqueue("cluster/r6");
  parts.materializer->Drain();
  Result<ViewAudit::Report> b = parts.audit->Check(false);
  ASSERT_TRUE(b.ok());
  EXPECT_NE(b->digest, a->digest);
  EXPECT_EQ(b->stale, 0u);
  // A program's change the recorder has not taken yet shows in the digest at once.
  std::ofstream(view_ + "/cluster/r6") << "changed!\n";
  Result<ViewAudit::Report> c = parts.audit->Check(false);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->digest, b->digest);
}

TEST_F(ViewTieTest, AChmodOfAPlacedFileIsRecordedAsAChange) {
  ViewParts parts(node(), view_);
  Record ours = WriteHere(parts, "from-a-6\n");
  Record theirs = PeersTie(ours, "from-c-6\n");
  ArriveAndPlace(parts, theirs);
  ASSERT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c-6\n");
  // Placed, then chmod'ed: the content is as placed, the mode is a program's change.
  ASSERT_EQ(chmod((view_ + "/cluster/r6").c_str(), 0600), 0);
  ASSERT_TRUE(parts.recorder->Sync().ok());
  Result<Record> now = node().store->Get("cluster/r6", Cf::kNs);
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(Newer(now->version, theirs.version));
  v1::Inode inode;
  ASSERT_TRUE(inode.ParseFromString(now->value));
  EXPECT_EQ(inode.mode(), 0600u);
  EXPECT_EQ(inode.chunks(0), Sha256("from-c-6\n"));
}

TEST_F(ViewTieTest, AFileSetBackToAnotherNodesOlderVersionIsAChangeOfItsOwn) {
  // Two peers' versions, placed one after the other; while the agent is
  // down a program puts the older one's bytes back, times and all (cp -p
  // from a backup). At the restart that is a change of this node's,
  // recorded, not a stale file to repair (only this node's own losers are).
  const int64_t then = int64_t{1'600'000'000} * 1'000'000'000;
  Record older = PeerFile(0x2000, "older!!!\n", then);
  Record newer = PeerFile(0x3000, "from-c-6\n", then + 5'000'000'000);  // the same size
  {
    ViewParts parts(node(), view_);
    for (const Record& rec : {older, newer}) ArriveAndPlace(parts, rec);
    ASSERT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c-6\n");
  }
  std::ofstream(view_ + "/cluster/r6", std::ios::trunc) << "older!!!\n";
  timespec times[2] = {Ts(then), Ts(then)};
  ASSERT_EQ(utimensat(AT_FDCWD, (view_ + "/cluster/r6").c_str(), times, 0), 0);
  ViewParts parts(node(), view_);
  ASSERT_TRUE(parts.recorder->Sync().ok());
  Result<Record> now = node().store->Get("cluster/r6", Cf::kNs);
  ASSERT_TRUE(now.ok());
  EXPECT_TRUE(Newer(now->version, newer.version)) << "the restore was not recorded";
  ASSERT_TRUE(parts.audit->Check(true).ok());
  ASSERT_TRUE(parts.audit->Check(true).ok());
  EXPECT_EQ(parts.audit->repaired(), 0u);
  EXPECT_EQ(ReadFile(view_ + "/cluster/r6"), "older!!!\n");
}


// The audit's whole check of every record runs at its first round only:
// then a round looks at what was written since (the store lists it), unless
// the ledger saw it put in place or recorded at that version. Heartbeats,
// which move the store's clock, and writes of other families cost nothing.
// (The rounds are run here, one at a time; the audit's thread would run its
// first in an hour.)
TEST_F(ViewTieTest, AfterItsFirstRoundTheAuditLooksOnlyAtWhatWasWrittenAndNotShownAsWritten) {
  ViewParts parts(node(), view_);
  WriteHere(parts, "one\n");
  parts.audit->Start(/*period=*/1h);
  parts.audit->Round();
  EXPECT_EQ(parts.audit->whole_rounds(), 1u);
  // Heartbeats and writes that change no namespace record: nothing looked at.
  for (int beat = 0; beat < 30; ++beat) {
    node().store->clock().Now();
    if (beat % 10 == 0) {  // the key-value API's, a port's
      EXPECT_TRUE(node().store->Put("app/counter", std::to_string(beat), false, Cf::kKv).ok());
      EXPECT_TRUE(node().store->Put("tcp/8080", "a", false, Cf::kPorts).ok());
    }
    parts.audit->Round();
  }
  EXPECT_EQ(parts.audit->looked(), 0u);
  // A program's write, recorded; a peer's newer version, put in place: each
  // shows the store's current version by the ledger, and is not looked at.
  Record ours = WriteHere(parts, "two!\n");
  parts.audit->Round();
  ArriveAndPlace(parts, PeerFile(ours.version.node + 1, "from-b\n", 1'000'000'000));
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), 0u);
  EXPECT_EQ(parts.audit->whole_rounds(), 1u);
  // A peer's version that the store holds and nobody put in place (as if a
  // path forgot to): looked at, found stale at two rounds in a row, put in place.
  Record lost = PeerFile(ours.version.node + 2, "from-c!\n", 2'000'000'000);
  ASSERT_TRUE(node().store->Apply("cluster/r6", lost, false, Cf::kNs).value());
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), 1u);
  EXPECT_EQ(parts.audit->repaired(), 0u);
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), 2u);
  EXPECT_EQ(parts.audit->repaired(), 1u);
  parts.materializer->Drain();
  EXPECT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c!\n");
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), 2u) << "looked at again once in place";
  EXPECT_EQ(parts.audit->whole_rounds(), 1u);
  // More keys written between two rounds than the store keeps: a whole check.
  node().store->KeepNsWritten(1);
  ASSERT_TRUE(node().store->Put("cluster/x1", "not an inode", false, Cf::kNs).ok());
  ASSERT_TRUE(node().store->Put("cluster/x2", "not an inode", false, Cf::kNs).ok());
  parts.audit->Round();
  EXPECT_EQ(parts.audit->whole_rounds(), 2u);
  parts.audit->Round();
  EXPECT_EQ(parts.audit->whole_rounds(), 2u);
}

// A file a round finds neither showing the store's version nor stale (not
// there yet: its placement under way) is looked at again at the next
// rounds, with nothing written or noted: once an older version shows (the
// newer one's placement failed), it is found stale and put in place.
TEST_F(ViewTieTest, AFileNotInPlaceYetWhenLookedAtIsLookedAtAgainUntilItSettles) {
  ViewParts parts(node(), view_);
  parts.audit->Start(/*period=*/1h);
  parts.audit->Round();  // the first, whole check
  parts.recorder->Stop();  // (the file below is written as the materializer would)
  Record older = PeerFile(0x77, "older\n", 1'000'000'000);
  Record newer = PeerFile(0x77, "newer!\n", 2'000'000'000);
  ASSERT_TRUE(node().store->Apply("cluster/r7", newer, false, Cf::kNs).value());
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), 1u);
  EXPECT_EQ(parts.audit->repaired(), 0u);
  // The older version's placement, under way at that look, done.
  std::ofstream(view_ + "/cluster/r7") << "older\n";
  struct timespec times[2] = {{1, 0}, {1, 0}};
  ASSERT_EQ(utimensat(AT_FDCWD, (view_ + "/cluster/r7").c_str(), times, 0), 0);
  struct stat st;
  ASSERT_EQ(stat((view_ + "/cluster/r7").c_str(), &st), 0);
  parts.ledger->Placed("cluster/r7", st, older.version);
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), 2u) << "not looked at again";
  parts.audit->Round();
  EXPECT_EQ(parts.audit->repaired(), 1u);
  parts.materializer->Drain();
  EXPECT_EQ(ReadFile(view_ + "/cluster/r7"), "newer!\n");
  // Settled: no more looks.
  const uint64_t looked = parts.audit->looked();
  parts.audit->Round();
  EXPECT_EQ(parts.audit->looked(), looked);
}

// A file that never comes into the view (its placement failing) is looked
// at again 1, 2, 4, 8 and 16 rounds after the look before, and then let
// go: six looks in all, not one a round.
TEST_F(ViewTieTest, AFileThatNeverComesIntoTheViewIsLookedAtSixTimesThenLetGo) {
  ViewParts parts(node(), view_);
  parts.audit->Start(/*period=*/1h);
  parts.audit->Round();  // the first, whole check
  ASSERT_TRUE(node().store->Apply("cluster/r8", PeerFile(0x78, "never placed\n", 1'000'000'000), false, Cf::kNs)
                  .value());
  std::vector<uint64_t> looked_at;  // the rounds that looked
  for (uint64_t round = 1; round <= 64; ++round) {
    const uint64_t before = parts.audit->looked();
    parts.audit->Round();
    if (parts.audit->looked() > before) looked_at.push_back(round);
  }
  EXPECT_EQ(looked_at, (std::vector<uint64_t>{1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(parts.audit->repaired(), 0u);
  // A newer version written meanwhile is looked at anew, six times.
  ASSERT_TRUE(node().store->Apply("cluster/r9", PeerFile(0x78, "never placed\n", 1'000'000'000), false, Cf::kNs)
                  .value());
  looked_at.clear();
  for (uint64_t round = 1; round <= 64; ++round) {
    if (round == 6) {
      ASSERT_TRUE(node().store->Apply("cluster/r9", PeerFile(0x78, "newer, never placed\n", 2'000'000'000), false,
                                      Cf::kNs)
                      .value());
    }
    const uint64_t before = parts.audit->looked();
    parts.audit->Round();
    if (parts.audit->looked() > before) looked_at.push_back(round);
  }
  EXPECT_EQ(looked_at, (std::vector<uint64_t>{1, 2, 4, 6, 7, 9, 13, 21, 37}));
}

// What the materializer put in place as the store holds it needs no look
// at the audit's next round; a key whose view does not show the store's
// current version keeps its look.
TEST_F(ViewTieTest, TheAuditLooksOnlyAtWhatWasNotPutInPlaceAsTheStoreHasIt) {
  ViewParts parts(node(), view_);
  Record ours = WriteHere(parts, "from-a-6\n");
  Record theirs = PeersTie(ours, "from-c-6\n");
  parts.audit->Note("cluster/r6");  // (as the store lists a peer's record that won, for the audit's rounds)
  ArriveAndPlace(parts, theirs);
  ASSERT_EQ(ReadFile(view_ + "/cluster/r6"), "from-c-6\n");
  Result<ViewAudit::Report> placed = parts.audit->CheckNoted();
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(placed->entries, 0u) << "looked at what was put in place as the store has it";
  // A newer version the store holds and the materializer has not put in place yet: looked at.
  ASSERT_TRUE(node().store->Apply("cluster/r6", PeerFile(ours.version.node + 3, "from-e-6\n", 900'000'000), false,
                                  Cf::kNs)
                  .value());
  parts.audit->Note("cluster/r6");
  Result<ViewAudit::Report> newer = parts.audit->CheckNoted();
  ASSERT_TRUE(newer.ok());
  EXPECT_EQ(newer->entries, 1u);
  parts.materializer->Enqueue("cluster/r6");
  parts.materializer->Drain();
  ASSERT_EQ(ReadFile(view_ + "/cluster/r6"), "from-e-6\n");
  // A peer's newer version that the materializer does not put in place (the
  // file changed here since the store last saw it, not recorded yet: the
  // recorder is stopped): the look stays.
  parts.recorder->Stop();
  std::ofstream(view_ + "/cluster/r6", std::ios::trunc) << "changed here, not recorded\n";
  parts.audit->Note("cluster/r6");
  ArriveAndPlace(parts, PeerFile(ours.version.node + 2, "from-d-6\n", 1'000'000'000));
  ASSERT_EQ(ReadFile(view_ + "/cluster/r6"), "changed here, not recorded\n");
  Result<ViewAudit::Report> kept = parts.audit->CheckNoted();
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->entries, 1u) << "a key the materializer left as it was lost its look";
}

}  // namespace
}  // namespace onebox::testing

// The distributed core in one process (tests/unit/in_process_cluster.h):
// membership, directory leases, quorum writes, anti-entropy and content transfer,
// stepped by hand on a fake clock. No sleeps: a "peer that never answers" is
// a silenced node, and time passes when the test says so.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "consistency/digest.h"
#include "nodeagent/peer/beat_seal.h"
#include "nodeagent/peer/beat_socket.h"
#include "nodeagent/peer/node_load.h"
#include "nodeagent/peer/quorum.h"
#include "nodeagent/sync/checked_chunks.h"
#include "nodeagent/sync/create_slots.h"
#include "tests/unit/create_slot_seen.h"
#include "nodeagent/sync/tree_repair.h"
#include "onebox/v1/namespace.pb.h"
#include "tests/test_util.h"
#include "tests/unit/in_process_cluster.h"

namespace onebox::testing {
namespace {

using namespace std::chrono_literals;

v1::NodeState StateSeenBy(InProcessNode& observer, const InProcessNode& member) {
  for (const v1::Node& n : observer.members->Nodes())
    if (n.node_id() == member.id()) return n.state();
  return v1::NODE_STATE_UNSPECIFIED;
}

TEST(QuorumTest, EachRuleIsAMajorityOfWhatItCounts) {
  EXPECT_EQ(Majority(1), 1u);
  EXPECT_EQ(Majority(2), 2u);
  EXPECT_EQ(Majority(3), 2u);
  EXPECT_EQ(Majority(4), 3u);
  EXPECT_EQ(Majority(5), 3u);
  // fsync: a majority of the replicas (2 of 2 by default), never more than the members known.
  EXPECT_EQ(PublishAcksNeeded(2, 0, 1), 0u);
  EXPECT_EQ(PublishAcksNeeded(2, 0, 3), 1u);
  EXPECT_EQ(PublishAcksNeeded(3, 0, 5), 1u);
  EXPECT_EQ(PublishAcksNeeded(5, 0, 5), 2u);
  EXPECT_EQ(PublishAcksNeeded(2, 3, 5), 2u);   // --write-quorum 3: this node and two others
  EXPECT_EQ(PublishAcksNeeded(2, 4, 2), 1u);   // capped at the members known
  // Store levels, of the known members.
  EXPECT_EQ(OthersNeeded(Agreement::kThisNode, 5), 0u);
  EXPECT_EQ(OthersNeeded(Agreement::kMajority, 1), 0u);
  EXPECT_EQ(OthersNeeded(Agreement::kMajority, 2), 1u);
  EXPECT_EQ(OthersNeeded(Agreement::kMajority, 3), 1u);
  EXPECT_EQ(OthersNeeded(Agreement::kMajority, 4), 2u);
  EXPECT_EQ(OthersNeeded(Agreement::kAll, 4), 3u);
  // Claims, of the live members.
  EXPECT_EQ(LeaseVotesNeeded(1), 1u);
  EXPECT_EQ(LeaseVotesNeeded(2), 2u);
  EXPECT_EQ(LeaseVotesNeeded(3), 2u);
}

TEST(MembershipCoreTest, AMemberThatFallsSilentGoesSuspectThenDeadAsTimePasses) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& c = cluster.node(2);
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_ALIVE);
  // Indexes are cluster-unique once gossip has settled.
  std::set<uint32_t> indexes;
  for (size_t i = 0; i < cluster.size(); ++i) indexes.insert(cluster.node(i).members->index());
  EXPECT_EQ(indexes, (std::set<uint32_t>{1, 2, 3}));

  cluster.Silence(2);
  auto round = [&] {  // a and b keep gossiping; c says nothing
    cluster.node(0).members->GossipRound();
    cluster.node(1).members->GossipRound();
  };
  cluster.clock().Advance(1900ms);
  round();
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_ALIVE);  // not yet 2 s without a heartbeat
  cluster.clock().Advance(200ms);
  round();
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_SUSPECT);
  EXPECT_EQ(a.members->AliveOthers().size(), 1u);
  EXPECT_EQ(StateSeenBy(a, cluster.node(1)), v1::NODE_STATE_ALIVE);
  cluster.clock().Advance(8s);
  round();
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_DEAD);
  EXPECT_EQ(a.members->KnownCount(), 3u);  // the dead stay known

  cluster.Silence(2, false);  // back: its next heartbeat makes it alive again
  c.members->GossipRound();
  EXPECT_EQ(StateSeenBy(cluster.node(0), c), v1::NODE_STATE_ALIVE);
}

// A node that published no heartbeat for half the time a member takes to be
// declared dead (its agent stopped, a paused VM) goes on as a new
// incarnation: the others may have declared it dead and moved its files'
// lock homes meanwhile. The nodes that kept gossiping, and a node silent
// for less, keep theirs.
TEST(MembershipCoreTest, ANodeSilentLongEnoughToBeDeclaredDeadGoesOnAsANewIncarnation) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& c = cluster.node(2);
  const uint64_t a_was = a.members->incarnation();
  auto silence_c_for = [&](std::chrono::milliseconds silence) {
    cluster.Silence(2);
    for (auto passed = 0ms; passed < silence; passed += 500ms) {  // a and b gossip every round; c says nothing
      cluster.clock().Advance(500ms);
      cluster.node(0).members->GossipRound();
      cluster.node(1).members->GossipRound();
    }
    cluster.Silence(2, false);
  };
  auto seen_by_a = [&] {
    for (const v1::Node& n : a.members->Nodes())
      if (n.node_id() == c.id()) return n.incarnation();
    return uint64_t{0};
  };
  uint64_t c_was = c.members->incarnation();
  silence_c_for(4500ms);
  c.members->GossipRound();
  EXPECT_EQ(c.members->incarnation(), c_was);

  silence_c_for(11s);
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_DEAD);
  c.members->GossipRound();
  EXPECT_NE(c.members->incarnation(), c_was);
  EXPECT_EQ(seen_by_a(), c.members->incarnation()) << "its first heartbeat after the silence is the new incarnation's";
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_ALIVE);
  EXPECT_EQ(a.members->incarnation(), a_was);

  // Cut off (nobody answers it, nobody calls it): one new incarnation for
  // the silence, not one per round after it.
  for (size_t i = 0; i < cluster.size(); ++i) cluster.Silence(i);
  cluster.clock().Advance(6s);
  c.members->GossipRound();
  const uint64_t cut_off = c.members->incarnation();
  EXPECT_NE(cut_off, seen_by_a());
  cluster.clock().Advance(6s);
  c.members->GossipRound();
  EXPECT_EQ(c.members->incarnation(), cut_off);
}

TEST(BeatSealTest, ABeatOpensOnlyWithItsSendersKeyAndUnchanged) {
  const std::string key = NewBeatKey(), other = NewBeatKey();
  ASSERT_EQ(key.size(), kBeatKeyBytes);
  ASSERT_NE(key, other);
  const std::string sealed = SealBeat("00000000000010a2", key, "the table");
  EXPECT_EQ(BeatSender(sealed), "00000000000010a2");
  EXPECT_EQ(OpenBeat(sealed, key), "the table");
  EXPECT_EQ(OpenBeat(sealed, other), std::nullopt);
  EXPECT_EQ(OpenBeat(sealed, ""), std::nullopt);
  for (size_t i = 0; i < sealed.size(); ++i) {  // any byte changed: the sender's id, the payload, the tag
    std::string changed = sealed;
    changed[i] ^= 0x20;
    EXPECT_EQ(OpenBeat(changed, key), std::nullopt) << "byte " << i;
  }
  EXPECT_EQ(OpenBeat(sealed.substr(0, sealed.size() - 1), key), std::nullopt);
  EXPECT_EQ(BeatSender("obeat1 short"), std::nullopt);
  EXPECT_EQ(BeatSender(std::string(200, 'x')), std::nullopt);
}

// Sealing keeps a ready HMAC per key (beat_seal.cc): the tags must stay
// HMAC-SHA256 under the right key, through many keys (past the number kept
// ready, so they are let go and made again) and back and forth between them.
TEST(BeatSealTest, TheTagIsHmacSha256UnderTheKeyGivenWhateverKeysCameBefore) {
  auto reference = [](const std::string& key, std::string_view sealed) {
    unsigned char tag[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(sealed.data()),
         sealed.size(), tag, &len);
    return std::string(reinterpret_cast<const char*>(tag), len);
  };
  std::vector<std::string> keys;
  for (int i = 0; i < 600; ++i) keys.push_back(NewBeatKey());
  for (size_t round = 0; round < 2; ++round) {
    for (size_t i = 0; i < keys.size(); ++i) {
      const std::string& key = keys[(i * 7 + round) % keys.size()];
      const std::string sealed = SealBeat("00000000000010a2", key, fmt::format("beat {} of round {}", i, round));
      ASSERT_GT(sealed.size(), 32u);
      const std::string_view body = std::string_view(sealed).substr(0, sealed.size() - 32);
      ASSERT_EQ(sealed.substr(sealed.size() - 32), reference(key, body)) << "key " << i << ", round " << round;
      EXPECT_EQ(OpenBeat(sealed, key), fmt::format("beat {} of round {}", i, round));
      EXPECT_EQ(OpenBeat(sealed, keys[(i * 7 + round + 1) % keys.size()]), std::nullopt);
    }
  }
}

TEST(NodeLoadTest, MemoryIsWhatProcMeminfoSays) {
  // The reference: every line of /proc/meminfo, read as a stream.
  std::map<std::string, uint64_t> kib;
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  uint64_t value = 0;
  while (meminfo >> key >> value) {
    std::getline(meminfo, unit);
    kib[key] = value;
  }
  ASSERT_TRUE(kib.contains("MemTotal:") && kib.contains("MemAvailable:"));
  const v1::NodeLoad load = ReadLoad();
  EXPECT_EQ(load.mem_total_bytes(), kib["MemTotal:"] * 1024);
  // Read up to 5 s apart (ReadLoad keeps a reading that long): what is available moves a little meanwhile.
  const double available = static_cast<double>(kib["MemAvailable:"]) * 1024;
  EXPECT_NEAR(static_cast<double>(load.mem_available_bytes()), available, std::max(available * 0.1, 256.0 * (1 << 20)));
  EXPECT_GE(load.cpus(), 1u);
}

TEST(BeatSocketTest, ADatagramSentToAMembersAddressReachesItsHandler) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> got;
  Result<std::unique_ptr<BeatSocket>> b = BeatSocket::Open("127.0.0.1", 0, [&](std::string_view d) {
    std::lock_guard lock(mu);
    got.emplace_back(d);
    cv.notify_all();
  });
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_NE((*b)->port(), 0);
  Result<std::unique_ptr<BeatSocket>> a = BeatSocket::Open("127.0.0.1", 0, [](std::string_view) {});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE((*a)->SendTo(fmt::format("127.0.0.1:{}", (*b)->port()), "one"));
  EXPECT_TRUE((*a)->SendTo(fmt::format("localhost:{}", (*b)->port()), "two"));  // a name, resolved
  EXPECT_FALSE((*a)->SendTo("no-such-host.invalid:7070", "lost"));
  EXPECT_FALSE((*a)->SendTo("[::1]:7070", "lost"));  // another family than the socket's
  EXPECT_FALSE((*a)->SendTo("not an address", "lost"));
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return got.size() == 2; })) << got.size() << " datagrams arrived";
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two"}));
}

// Nodes that hear each other say their tables in heartbeat datagrams, not in
// Gossip calls (a gRPC call each, most of an idle agent's CPU): a call goes
// to each member every 20 rounds, to keep the keys and tables whole. With
// five nodes too: each member gets every round's beat, and echoes it.
TEST(MembershipCoreTest, MembersThatHearEachOtherGossipByHeartbeatsWithACallEveryTwentyRounds) {
  for (size_t nodes : {3, 5}) {
    InProcessCluster cluster(nodes);
    ASSERT_TRUE(cluster.Join());
    auto sum = [&](int (InProcessCluster::*count)(size_t)) {
      int n = 0;
      for (size_t i = 0; i < cluster.size(); ++i) n += (cluster.*count)(i);
      return n;
    };
    const int calls_before = sum(&InProcessCluster::gossip_calls_to), beats_before = sum(&InProcessCluster::beats_to);
    constexpr int kRounds = 60;
    for (int r = 0; r < kRounds; ++r) {
      cluster.clock().Advance(500ms);
      for (size_t i = 0; i < cluster.size(); ++i) cluster.node(i).members->GossipRound();
      for (size_t i = 0; i < cluster.size(); ++i) {
        ASSERT_EQ(cluster.node(i).members->AliveOthers().size(), nodes - 1) << cluster.node(i).name << " in round " << r;
        ASSERT_TRUE(cluster.node(i).members->HeardByMajorityWithin(1500ms)) << cluster.node(i).name << " in round " << r;
      }
    }
    const int calls = sum(&InProcessCluster::gossip_calls_to) - calls_before;
    const int beats = sum(&InProcessCluster::beats_to) - beats_before;
    const int pairs = static_cast<int>(nodes * (nodes - 1));  // each node tells each other one every round
    EXPECT_GE(calls, pairs * (kRounds / 20 - 1)) << nodes << " nodes";
    EXPECT_LE(calls, pairs * (kRounds / 20 + 1)) << nodes << " nodes";
    EXPECT_EQ(calls + beats, pairs * kRounds) << nodes << " nodes";
  }
}

// Anyone who reaches the UDP port can send a datagram: one not sealed with
// the member's own key does not keep it alive once it falls silent, and
// makes the receiver ask the member by a call (as after its restart with a
// new key).
TEST(MembershipCoreTest, AForgedHeartbeatKeepsNoSilentMemberAliveAndTheMemberIsAskedByACall) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& c = cluster.node(2);
  cluster.GossipRounds(4);  // past the calls of the join
  uint64_t forged_heartbeat = UINT64_MAX / 2;
  auto forged = [&] {
    v1::Beat beat;
    v1::Member* m = beat.mutable_from();
    m->set_node_id(c.id());
    m->set_name(c.name);
    m->set_address(c.address);
    m->set_heartbeat(++forged_heartbeat);
    return SealBeat(c.id(), NewBeatKey(), beat.SerializeAsString());
  };
  const int calls_to_c = cluster.gossip_calls_to(2);
  a.members->OnBeat(forged());
  cluster.clock().Advance(500ms);
  a.members->GossipRound();
  EXPECT_EQ(cluster.gossip_calls_to(2), calls_to_c + 1) << "a asks c, whose beat did not open, by a call";
  // c's answer tells a its key again (the same one): a beats c again.
  const int beats_to_c = cluster.beats_to(2);
  cluster.GossipRounds(3);
  EXPECT_EQ(cluster.gossip_calls_to(2), calls_to_c + 1);
  EXPECT_EQ(cluster.beats_to(2), beats_to_c + 2 * 3) << "a's and b's beats to c, every round";

  cluster.Silence(2);
  for (auto passed = 0ms; passed < 11s; passed += 500ms) {
    cluster.clock().Advance(500ms);
    a.members->OnBeat(forged());
    a.members->GossipRound();
    cluster.node(1).members->GossipRound();
  }
  EXPECT_EQ(StateSeenBy(a, c), v1::NODE_STATE_DEAD);
  for (const v1::Node& n : a.members->Nodes()) EXPECT_NE(n.name(), "") << "a forged entry was merged";
}

// A beat key belongs to one life of an agent (Member.beat_key_since): a key
// of an older life, relayed late by another member with a newer heartbeat,
// does not replace the newer one; and a beat counts once, only at the
// member it was sealed for.
TEST(MembershipCoreTest, AKeyOfAnOlderLifeNeverReplacesANewerOneAndABeatCountsOnceWhereItWasSent) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  const std::string z = "0000000000002000";  // a third agent, restarted: its new key, then its old one relayed
  const std::string old_key = NewBeatKey(), new_key = NewBeatKey();
  auto entry = [&](uint64_t heartbeat, const std::string& key, uint64_t since) {
    v1::Member m;
    m.set_node_id(z);
    m.set_name("z");
    m.set_address("inproc:z");
    m.set_heartbeat(heartbeat);
    m.set_beat_key(key);
    m.set_beat_key_since(since);
    return m;
  };
  v1::GossipResponse ignored;
  v1::GossipRequest from_z;
  *from_z.mutable_from() = entry(100, new_key, 50);
  a.members->OnGossip(from_z, &ignored);
  v1::GossipRequest relayed;  // b relays z's entry of a later heartbeat with the old life's key
  relayed.mutable_from()->set_node_id(b.id());
  *relayed.add_members() = entry(200, old_key, 10);
  a.members->OnGossip(relayed, &ignored);

  uint64_t heartbeat = 300;
  auto beat_of_z = [&](const std::string& key, const std::string& to) {
    v1::Beat beat;
    *beat.mutable_from() = entry(++heartbeat, "", 0);
    beat.set_to(to);
    return SealBeat(z, key, beat.SerializeAsString());
  };
  auto taken = [&] { return a.members->counts().beats_taken; };
  const uint64_t before = taken();
  const std::string with_new = beat_of_z(new_key, a.id());
  a.members->OnBeat(with_new);
  EXPECT_EQ(taken(), before + 1) << "the newer life's key still opens z's beats";
  a.members->OnBeat(with_new);
  EXPECT_EQ(taken(), before + 1) << "a replayed beat";
  a.members->OnBeat(beat_of_z(new_key, b.id()));
  EXPECT_EQ(taken(), before + 1) << "a beat sealed for b, given to a";
  const uint64_t unopened = a.members->counts().beats_unopened;
  a.members->OnBeat(beat_of_z(old_key, a.id()));
  EXPECT_EQ(taken(), before + 1) << "the older life's key";
  EXPECT_EQ(a.members->counts().beats_unopened, unopened + 1);
  a.members->OnBeat(beat_of_z(new_key, a.id()));
  EXPECT_EQ(taken(), before + 2);
}

// A seed named otherwise than the member that answers there (a host name,
// a Service): once it answered, it counts as that member (not as one more
// member not heard of, which would raise every majority), and it gets no
// call of its own every round. On the node it reaches itself, it counts as
// no member once that node knows others.
TEST(MembershipCoreTest, ASeedNamedOtherwiseCountsAsTheMemberThatAnswersThere) {
  InProcessCluster cluster(3, /*seed_name=*/"service:seeds");
  ASSERT_TRUE(cluster.Join());
  for (size_t i = 0; i < cluster.size(); ++i) {
    EXPECT_EQ(cluster.node(i).members->KnownCount(), 3u) << cluster.node(i).name;
    EXPECT_EQ(cluster.node(i).members->UnheardSeeds(), 0u) << cluster.node(i).name;
  }
  const int calls = cluster.calls_to_address("service:seeds", "Gossip");
  cluster.GossipRounds(10);
  EXPECT_EQ(cluster.calls_to_address("service:seeds", "Gossip"), calls);
}

// UDP filtered on the way to b (calls get through): a, whose heartbeats b
// stops echoing, tells b by calls instead, so that b never sees a suspect.
// (b, whose echoes came in a's beats, then hears them only in a's calls,
// and calls a at times too.)
TEST(MembershipCoreTest, AMemberThatStopsEchoingHeartbeatsIsToldByCallsInstead) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  cluster.DropBeats(1);
  const int calls_to_b = cluster.gossip_calls_to(1);
  constexpr int kRounds = 60;
  for (int r = 0; r < kRounds; ++r) {
    cluster.clock().Advance(500ms);
    a.members->GossipRound();
    b.members->GossipRound();
    ASSERT_EQ(StateSeenBy(b, a), v1::NODE_STATE_ALIVE) << "round " << r;
    ASSERT_EQ(StateSeenBy(a, b), v1::NODE_STATE_ALIVE) << "round " << r;
  }
  EXPECT_GE(cluster.gossip_calls_to(1) - calls_to_b, kRounds * 3 / 4);
}

TEST(MembershipCoreTest, ASeedNotHeardFromCountsAsAMemberAndKeepsTheLog) {
  // b and c were told to join a, which never answered: neither is a
  // cluster of one (fsync's quorum, QUORUM and ALL count a), and b's log
  // keeps what a will want once it answers.
  InProcessCluster cluster(3);
  cluster.Silence(0);
  InProcessNode& b = cluster.node(1);
  b.members->GossipRound();
  b.members->GossipRound();
  EXPECT_EQ(b.members->UnheardSeeds(), 1u);
  EXPECT_EQ(b.members->KnownCount(), 2u);
  EXPECT_EQ(PublishAcksNeeded(2, 0, b.members->KnownCount()), 1u);
  ASSERT_TRUE(b.store->Put("k", "v", false).ok());
  uint64_t first = b.store->FirstLogSeq();
  b.replicator->TruncateLog();
  EXPECT_EQ(b.store->FirstLogSeq(), first);
  // Once a answers it is a member like any other.
  cluster.Silence(0, false);
  b.members->GossipRound();
  EXPECT_EQ(b.members->UnheardSeeds(), 0u);
  EXPECT_EQ(b.members->KnownCount(), 2u);  // a (c is not known to b yet: a tells it next round)
}

// Right after its start a node counts the seeds it has not heard from as
// live (a lease needs their votes too, and its shims claim across the
// cluster), until it hears from them or a member would be declared dead.
TEST(MembershipCoreTest, ASeedNotHeardSinceTheStartCountsAsLiveUntilHeardOrAsLongAsDeathTakes) {
  InProcessCluster cluster(3);
  cluster.Silence(0);
  InProcessNode& b = cluster.node(1);
  EXPECT_EQ(b.members->UnheardSinceStart(), 1u) << "before any round";
  b.members->GossipRound();
  size_t unheard = 0;
  EXPECT_TRUE(b.members->AliveOthersAndUnheard(&unheard).empty());
  EXPECT_EQ(unheard, 1u);
  cluster.Silence(0, false);
  b.members->GossipRound();
  EXPECT_EQ(b.members->UnheardSinceStart(), 0u) << "a answered";
  // c's seed never answers; once death would have come, it counts no more.
  InProcessNode& c = cluster.node(2);
  cluster.Silence(0);
  cluster.Silence(1);
  c.members->GossipRound();
  EXPECT_EQ(c.members->UnheardSinceStart(), 1u);
  cluster.clock().Advance(std::chrono::seconds(11));
  EXPECT_EQ(c.members->UnheardSinceStart(), 0u);
}

TEST(ReplicationCoreTest, ANodeThatNeverHadAnotherMemberKeepsItsLogForTheFirstToJoin) {
  InProcessCluster cluster(1);
  InProcessNode& a = cluster.node(0);
  a.members->GossipRound();
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(a.store->Put("k/" + std::to_string(i), "v", false).ok());
  const uint64_t first = a.store->FirstLogSeq();
  a.replicator->TruncateLog();
  EXPECT_EQ(a.store->FirstLogSeq(), first) << "alone, a keeps its log (up to its retention)";
}

// A live entry whose parent's record is not here at all (it has not come
// yet: a newcomer repaired by anti-entropy gets records in no order) leaves
// the parent to its own record; a parent removed here is made live again.
TEST(TreeRepairCoreTest, AParentNotHereYetIsLeftToItsRecordAndARemovedOneIsMadeLiveAgain) {
  InProcessCluster cluster(1);
  Store& store = *cluster.node(0).store;
  TreeRepair repair(store, {});
  v1::Inode dir;
  dir.set_type(v1::FILE_TYPE_DIRECTORY);
  dir.set_mode(0755);
  ASSERT_TRUE(store.Put("cluster/pub/dir", dir.SerializeAsString(), false, Cf::kNs).ok());
  EXPECT_EQ(repair.Check("cluster/pub/dir"), 0u);
  EXPECT_EQ(store.GetWithTombstone("cluster/pub", Cf::kNs).status().code(), Code::kNotFound)
      << "made up here, /cluster/pub would win over its real record (its mode, its owner)";
  ASSERT_TRUE(store.Delete("cluster/pub", false, nullptr, Cf::kNs).ok());
  EXPECT_EQ(repair.Check("cluster/pub/dir"), 1u);
  EXPECT_TRUE(store.Get("cluster/pub", Cf::kNs).ok());
}

// A round of checks (records noted, as the replicator notes a peer's): a
// burst of entries below removed directories revives each directory once,
// and a live directory's own dead ancestors are revived too, however many
// of the round's entries share them.
TEST(TreeRepairCoreTest, ARoundRevivesEachRemovedAncestorOnceForAllTheEntriesBelowIt) {
  InProcessCluster cluster(1);
  Store& store = *cluster.node(0).store;
  std::vector<std::string> repaired;
  std::mutex repaired_mu;
  TreeRepair repair(
      store,
      [&](const std::string& key) {
        std::lock_guard lock(repaired_mu);
        repaired.push_back(key);
      },
      std::chrono::milliseconds(0), cluster.clock());
  v1::Inode dir;
  dir.set_type(v1::FILE_TYPE_DIRECTORY);
  dir.set_mode(0755);
  v1::Inode file;
  file.set_type(v1::FILE_TYPE_REGULAR);
  file.set_mode(0644);
  for (const char* d : {"cluster/a", "cluster/a/b", "cluster/a/b/c"})
    ASSERT_TRUE(store.Put(d, dir.SerializeAsString(), false, Cf::kNs).ok());
  std::vector<std::string> entries;
  for (int i = 0; i < 50; ++i) entries.push_back("cluster/a/b/c/f" + std::to_string(i));
  entries.push_back("cluster/a/g");
  for (const std::string& e : entries) ASSERT_TRUE(store.Put(e, file.SerializeAsString(), false, Cf::kNs).ok());
  // a and a/b removed (by a node that never saw the entries); a/b/c stays live.
  ASSERT_TRUE(store.Delete("cluster/a/b", false, nullptr, Cf::kNs).ok());
  ASSERT_TRUE(store.Delete("cluster/a", false, nullptr, Cf::kNs).ok());
  repair.Start();
  for (const std::string& e : entries) repair.Note(e, std::chrono::milliseconds(0));  // (not a/b/c itself)
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (repair.repaired() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a second round, if one were to come
  EXPECT_EQ(repair.repaired(), 2u);
  // A later round knows nothing of this one's: a/b removed again is revived again.
  ASSERT_TRUE(store.Delete("cluster/a/b", false, nullptr, Cf::kNs).ok());
  repair.Note("cluster/a/b/c/f0", std::chrono::milliseconds(0));
  const auto again = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (repair.repaired() < 3 && std::chrono::steady_clock::now() < again)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  repair.Stop();
  EXPECT_EQ(repair.repaired(), 3u);
  {
    std::lock_guard lock(repaired_mu);
    std::sort(repaired.begin(), repaired.end());
    EXPECT_EQ(repaired, (std::vector<std::string>{"cluster/a", "cluster/a/b", "cluster/a/b"}));
  }
  for (const char* d : {"cluster/a", "cluster/a/b", "cluster/a/b/c"}) {
    Result<Record> rec = store.Get(d, Cf::kNs);
    ASSERT_TRUE(rec.ok()) << d;
    v1::Inode got;
    ASSERT_TRUE(got.ParseFromString(rec->value));
    EXPECT_EQ(got.type(), v1::FILE_TYPE_DIRECTORY) << d;
  }
  for (const std::string& e : entries) EXPECT_TRUE(store.Get(e, Cf::kNs).ok()) << e;
}

// What a node's recorder does once a program made key: its live record.
void Made(InProcessNode& node, const std::string& key) {
  ASSERT_TRUE(node.store->Put(key, "inode", false, Cf::kNs).ok());
}

TEST(DirLeasesCoreTest, TheHolderDecidesAloneAndTheLeaseMovesWithEverythingMadeUnderIt) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  ASSERT_TRUE(a.leases->Create("cluster/d/x").ok());
  Made(a, "cluster/d/x");
  // Under its lease a decides alone: with both others silent it still creates.
  cluster.Silence(1);
  cluster.Silence(2);
  ASSERT_TRUE(a.leases->Create("cluster/d/p").ok());  // granted; the program has not made it yet
  cluster.Silence(1, false);
  cluster.Silence(2, false);
  EXPECT_EQ(a.leases->won(), 1u);
  // b's create recalls the lease: a hands its records of d's entries over
  // first (nothing was pushed here), and names p as being made.
  EXPECT_FALSE(b.store->Get("cluster/d/x", Cf::kNs).ok());
  EXPECT_EQ(b.leases->Create("cluster/d/x").code(), Code::kAlreadyExists);
  EXPECT_TRUE(b.store->Get("cluster/d/x", Cf::kNs).ok());
  EXPECT_EQ(a.leases->recalled(), 1u);
  EXPECT_EQ(b.leases->won(), 1u);
  EXPECT_EQ(b.leases->Create("cluster/d/p").code(), Code::kAlreadyExists);
  EXPECT_TRUE(b.leases->Create("cluster/d/new").ok());
  // Other directories are not b's: a still holds none of them either, and
  // wins one with a vote.
  EXPECT_TRUE(a.leases->Create("cluster/e/y").ok());
  EXPECT_EQ(a.leases->won(), 2u);
  // A pending name that never shows up is free again after a while (b's
  // lease ran out meanwhile: it wins d again).
  cluster.clock().Advance(DirLeases::kPendingHold + 1s);
  ASSERT_TRUE(cluster.Join());  // gossip, or the others would be suspect by now
  EXPECT_TRUE(b.leases->Create("cluster/d/p").ok());
  EXPECT_EQ(b.leases->won(), 2u);
  // So is a name removed where it was made, once its removal is known.
  ASSERT_TRUE(a.store->Delete("cluster/d/x", false, nullptr, Cf::kNs).ok());
  EXPECT_TRUE(a.leases->Create("cluster/d/x").ok());  // recalls from b; a's own tombstone
  EXPECT_EQ(b.leases->recalled(), 1u);
}

TEST(DirLeasesCoreTest, CreateAtOnceDecidesOnlyUnderALeaseHeldHereAndNotDueForRenewal) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/x").has_value()) << "no lease yet: a vote, on the pool";
  ASSERT_TRUE(a.leases->Create("cluster/d/x").ok());
  Made(a, "cluster/d/x");
  // Under the lease, with nobody answering: decided at once, both ways.
  cluster.Silence(1);
  cluster.Silence(2);
  std::optional<Status> y = a.leases->CreateAtOnce("cluster/d/y");
  ASSERT_TRUE(y.has_value());
  EXPECT_TRUE(y->ok());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/e/y").has_value()) << "another directory";
  cluster.Silence(1, false);
  cluster.Silence(2, false);
  // b takes d over (and learns that y is being made); a decides nothing there at once any more.
  EXPECT_TRUE(b.leases->Create("cluster/d/z").ok());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/w").has_value());
  std::optional<Status> y_on_b = b.leases->CreateAtOnce("cluster/d/y");
  ASSERT_TRUE(y_on_b.has_value());
  EXPECT_EQ(y_on_b->code(), Code::kAlreadyExists);
  // Half the term on: due for renewal, which needs the others.
  cluster.clock().Advance(DirLeases::kTerm / 2 + 1ms);
  EXPECT_FALSE(b.leases->CreateAtOnce("cluster/d/v").has_value());
  EXPECT_EQ(b.leases->CreateAtOnce("no-such-key/../x").value_or(Status::Ok()).code(), Code::kInvalidArgument);
}

TEST(DirLeasesCoreTest, ANameGrantedHereAndHandedOnIsNotRefusedHereWhenItsProgramAsksAgain) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  // a grants k; the program's answer is lost (its link timed out), so it asks again.
  ASSERT_TRUE(a.leases->Create("cluster/d/k").ok());
  // Meanwhile b takes d over and is told k is being made: b refuses it.
  ASSERT_TRUE(b.leases->Create("cluster/d/z").ok());
  EXPECT_EQ(b.leases->Create("cluster/d/k").code(), Code::kAlreadyExists);
  // The second ask brings the lease back to a with b's pending names, k among
  // them: a's own grant, which it does not take as made elsewhere.
  Status again = a.leases->Create("cluster/d/k");
  EXPECT_TRUE(again.ok()) << again.ToString();
  // A name b granted is refused on a as before.
  ASSERT_TRUE(b.leases->Create("cluster/d/m").ok());
  EXPECT_EQ(a.leases->Create("cluster/d/m").code(), Code::kAlreadyExists);
}

TEST(DirLeasesCoreTest, ConcurrentCreatorsOfOneNameNeverBothWin) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  // The creators' backoffs must not move time (and let leases lapse, or
  // members go suspect) while they race.
  cluster.clock().freeze();
  int decided = 0;
  for (int round = 0; round < 30; ++round) {
    // Every few rounds a new directory; otherwise the lease is where the last round left it.
    std::string key = fmt::format("cluster/race-{}/name-{}", round / 5, round);
    std::atomic<int> won{0};
    std::vector<std::thread> creators;
    for (size_t i = 0; i < 3; ++i)
      creators.emplace_back([&, i] {
        if (!cluster.node(i).leases->Create(key).ok()) return;
        ++won;
        Made(cluster.node(i), key);
      });
    for (auto& t : creators) t.join();
    EXPECT_LE(won.load(), 1) << key;
    decided += won.load();
  }
  EXPECT_GT(decided, 20);  // the race is not won by refusing everyone
}

TEST(DirLeasesCoreTest, ACutOffHolderKeepsItsDirectoryForItsTermThenTheOthersDecide) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  ASSERT_TRUE(a.leases->Create("cluster/d/x").ok());
  auto won_at = cluster.clock().Elapsed();
  cluster.Silence(0);  // a is cut off: it answers nobody
  // Within its term a goes on deciding in d alone.
  cluster.clock().Advance(1s);
  EXPECT_TRUE(a.leases->Create("cluster/d/y").ok());
  // b waits (on the fake clock) until c's grant to a ran out, then wins.
  Status s = b.leases->Create("cluster/d/z");
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto waited = cluster.clock().Elapsed() - won_at;
  EXPECT_GE(waited, std::chrono::nanoseconds(DirLeases::kTerm));
  EXPECT_LT(waited, std::chrono::nanoseconds(DirLeases::kTerm + 1s));
  // a takes its own lease for over by then: it would have to win d again.
  EXPECT_EQ(a.leases->won(), 1u);
}

TEST(DirLeasesCoreTest, ARenewalThatFailsLeavesTheVotesOfTheRunningLeaseInPlace) {
  InProcessCluster cluster(5);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  cluster.Silence(3);
  cluster.Silence(4);
  ASSERT_TRUE(a.leases->Create("cluster/d/x").ok());  // a, b and c: 3 of 5
  // Past half the term a renews, and only b answers: 2 of 5, lost. The
  // lease still runs, so a goes on deciding; b's vote for it must stand.
  cluster.clock().Advance(DirLeases::kTerm / 2 + 100ms);
  ASSERT_TRUE(cluster.Join());
  cluster.Silence(2);
  EXPECT_TRUE(a.leases->Create("cluster/d/y").ok());
  v1::DirLeaseRequest ask;
  ask.set_dir("cluster/d");
  ask.set_node_id(cluster.node(3).id());
  ask.set_lease_id(42);
  v1::DirLeaseResponse vote;
  ASSERT_TRUE(b.leases->OnLease(ask, &vote).ok());
  EXPECT_FALSE(vote.granted());
  EXPECT_EQ(vote.holder(), a.id());
}

TEST(DirLeasesCoreTest, APeerThatNeverAnswersCostsAVoteNotTheLease) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  cluster.Silence(2);  // alive as far as gossip knows, but never answers
  auto before = cluster.clock().Elapsed();
  EXPECT_TRUE(cluster.node(0).leases->Create("cluster/x").ok());  // a and b: 2 of 3, at once
  EXPECT_EQ(cluster.clock().Elapsed(), before);
  // With b silent too, a alone is 1 of 3: no lease while the others count
  // as alive. Once they are suspect (no gossip from them for 2 s), a is the
  // only live member and decides alone: the rule under a partition.
  cluster.Silence(1);
  Status s = cluster.node(0).leases->Create("cluster/y/z");
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(cluster.clock().Elapsed() - before, std::chrono::nanoseconds(MembershipOptions{}.suspect_after));
  EXPECT_EQ(StateSeenBy(cluster.node(0), cluster.node(1)), v1::NODE_STATE_SUSPECT);
}

// A create the node can decide with no message: asserted decided, and its answer.
Status AtOnce(InProcessNode& node, const std::string& key, bool directory = false) {
  std::optional<Status> s = node.leases->CreateAtOnce(key, directory);
  return s.has_value() ? *s : Status::Unavailable("not decidable at once");
}

// The holder's shims decide the creates in a directory it holds the lease
// on, in a slot the agent installs when it decides a create there, until a
// recall: the slot ends before the holder hands what it made over, so that
// a name a shim made under it goes with the handover.
TEST(DirLeasesCoreTest, TheHoldersShimsDecideInASlotThatARecallEndsFirst) {
  auto page = std::make_unique<CreateSlots>();  // (outlive the cluster, whose leases point at them)
  onebox::testing::TempDir view;
  CreateSlotTable table(*page, view.path());
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  bool settled = true;
  a.leases->set_create_slots(&table, [&] { return settled; });
  ASSERT_TRUE(a.leases->Create("cluster/d/x").ok());
  unsigned at = 0;
  const uint64_t seq = SlotSeen(*page, "cluster/d", &at);
  ASSERT_NE(seq, 0u) << "a holds d's lease: its shims decide there";
  EXPECT_LE(page->slots[at].until_ns.load(),
            BootTimeNs() + std::chrono::duration_cast<std::chrono::nanoseconds>(DirLeases::kTerm / 2).count())
      << "a slot runs out before the lease's renewal is due";
  EXPECT_EQ(a.leases->decided(), 1u);
  // A shim makes y under the slot (here: its record, as a's recorder makes it).
  ASSERT_TRUE(CreateSlotStill(page.get(), at, seq));
  Made(a, "cluster/d/y");
  // b's create recalls the lease: the slot ends, and y goes with the handover.
  EXPECT_EQ(b.leases->Create("cluster/d/y").code(), Code::kAlreadyExists);
  EXPECT_FALSE(CreateSlotStill(page.get(), at, seq));
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/w").has_value());
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  // While the view has a peer's change still to put in place, the agent
  // decides, and installs no slot; once it is in place, it does.
  settled = false;
  ASSERT_TRUE(a.leases->Create("cluster/e/x").ok());
  EXPECT_EQ(SlotSeen(*page, "cluster/e"), 0u);
  settled = true;
  ASSERT_TRUE(AtOnce(a, "cluster/e/y").ok());
  EXPECT_NE(SlotSeen(*page, "cluster/e"), 0u);
  // A directory made under a covering lease gets a slot at its mkdir (tar
  // makes a directory, then its files).
  ASSERT_TRUE(a.leases->Create("cluster/c/sub", /*directory=*/true).ok());
  EXPECT_NE(SlotSeen(*page, "cluster/c/sub"), 0u);
  // Due for renewal: the agent renews at its next decision there, and the
  // slot runs on from then (its end is on the real clock: later by the time
  // this test took since).
  unsigned e_at = 0;
  ASSERT_NE(SlotSeen(*page, "cluster/e", &e_at), 0u);
  const int64_t before_renewal = page->slots[e_at].until_ns.load();
  cluster.clock().Advance(DirLeases::kTerm / 2 + 1ms);
  ASSERT_TRUE(cluster.Join());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/e/z").has_value()) << "due for renewal";
  ASSERT_TRUE(a.leases->Create("cluster/e/z").ok());
  EXPECT_NE(SlotSeen(*page, "cluster/e"), 0u);
  EXPECT_GT(page->slots[e_at].until_ns.load(), before_renewal);
}

// Names the old holder was making when it gave the lease up (pending, with
// no record yet) keep the new holder's shims from deciding there: only the
// agent knows of them.
TEST(DirLeasesCoreTest, NoSlotWhileANameTheOldHolderWasMakingIsOnItsWay) {
  auto page = std::make_unique<CreateSlots>();
  onebox::testing::TempDir view;
  CreateSlotTable table(*page, view.path());
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  b.leases->set_create_slots(&table, [] { return true; });
  ASSERT_TRUE(a.leases->Create("cluster/d/k").ok());  // granted; its program has not made it yet
  ASSERT_TRUE(b.leases->Create("cluster/d/z").ok());  // b takes d over, told k is being made
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  EXPECT_EQ(AtOnce(b, "cluster/d/k").code(), Code::kAlreadyExists);
  ASSERT_TRUE(AtOnce(b, "cluster/d/m").ok());
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  // k's record comes (written into b's store here, as its replication
  // would): still none while k is pending (its record may not be in the
  // view's queue yet), and one at b's first decision after.
  ASSERT_TRUE(b.store->Put("cluster/d/k", "inode", false, Cf::kNs).ok());
  ASSERT_TRUE(AtOnce(b, "cluster/d/n").ok());
  EXPECT_EQ(SlotSeen(*page, "cluster/d"), 0u);
  cluster.clock().Advance(DirLeases::kPendingHold + 1ms);
  ASSERT_TRUE(cluster.Join());
  ASSERT_TRUE(b.leases->Create("cluster/d/o").ok());
  EXPECT_NE(SlotSeen(*page, "cluster/d"), 0u);
}

// node makes dir under a lease on its parent (covering, when it can be),
// then a file f in it, decided at once.
void MakeCoveredWithAFile(InProcessNode& node, const std::string& dir) {
  ASSERT_TRUE(node.leases->Create(dir, /*directory=*/true).ok());
  Made(node, dir);
  ASSERT_TRUE(AtOnce(node, dir + "/f").ok());
  Made(node, dir + "/f");
}

TEST(DirLeasesCoreTest, ADirectoryMadeUnderACoveringLeaseIsDecidedInWithNoVoteOfItsOwn) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  ASSERT_TRUE(a.leases->Create("cluster/d/sub", /*directory=*/true).ok());  // wins d, as covering
  Made(a, "cluster/d/sub");
  // With both others silent, a decides in sub, and in a directory it makes
  // in sub, alone and at once: what tar -x does, mkdir then files.
  cluster.Silence(1);
  cluster.Silence(2);
  EXPECT_TRUE(AtOnce(a, "cluster/d/sub/f").ok());
  EXPECT_TRUE(AtOnce(a, "cluster/d/sub/deeper", /*directory=*/true).ok());
  Made(a, "cluster/d/sub/deeper");
  EXPECT_TRUE(AtOnce(a, "cluster/d/sub/deeper/g").ok());
  EXPECT_EQ(a.leases->won(), 1u);
  // A file's name covers nothing, nor does a directory made elsewhere.
  EXPECT_TRUE(AtOnce(a, "cluster/d/file").ok());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/file/x").has_value());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/theirs/x").has_value());
  // The cover lasts as the lease does: due for renewal, a vote again.
  cluster.clock().Advance(DirLeases::kTerm / 2 + 1ms);
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/sub/h").has_value());
}

TEST(DirLeasesCoreTest, ACreateInACoveredDirectoryElsewhereTakesItOutOfTheCoverWithWhatWasMadeThere) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  MakeCoveredWithAFile(a, "cluster/d/sub");
  if (HasFatalFailure()) return;
  ASSERT_TRUE(AtOnce(a, "cluster/d/sub/p").ok());  // granted; its program has not made it yet
  // b's create in sub: refused by the members under a's cover, it recalls
  // sub from a, which hands over f's record and names p as being made.
  EXPECT_FALSE(b.store->Get("cluster/d/sub/f", Cf::kNs).ok());
  EXPECT_EQ(b.leases->Create("cluster/d/sub/f").code(), Code::kAlreadyExists);
  EXPECT_TRUE(b.store->Get("cluster/d/sub/f", Cf::kNs).ok());
  EXPECT_EQ(b.leases->Create("cluster/d/sub/p").code(), Code::kAlreadyExists);
  EXPECT_TRUE(b.leases->Create("cluster/d/sub/g").ok());
  EXPECT_TRUE(AtOnce(b, "cluster/d/sub/g2").ok()) << "b holds sub now";
  // sub is out of a's cover for good; a still holds d itself.
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/sub/h").has_value());
  EXPECT_TRUE(AtOnce(a, "cluster/d/y").ok());
  // b keeps sub through its renewals, under a's cover of d.
  cluster.clock().Advance(DirLeases::kTerm / 2 + 1ms);
  ASSERT_TRUE(cluster.Join());
  EXPECT_TRUE(b.leases->Create("cluster/d/sub/after-renewal").ok());
  EXPECT_EQ(b.leases->won(), 1u);
  // a's next create in sub moves it back by a recall, as for any lease.
  EXPECT_TRUE(a.leases->Create("cluster/d/sub/h").ok());
  EXPECT_EQ(b.leases->recalled(), 1u);
  EXPECT_EQ(a.leases->Create("cluster/d/sub/g").code(), Code::kAlreadyExists);
}

TEST(DirLeasesCoreTest, ALeaseCoversNothingBelowWhereAnotherNodeHeldALeaseLately) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  ASSERT_TRUE(b.leases->Create("cluster/d/old/x").ok());  // b holds d/old
  ASSERT_TRUE(a.leases->Create("cluster/d/new", /*directory=*/true).ok());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/new/f").has_value()) << "d was not won as covering";
  EXPECT_TRUE(a.leases->Create("cluster/d/new/f").ok());  // its own vote
  EXPECT_EQ(a.leases->won(), 2u);
}

TEST(DirLeasesCoreTest, ACoveredDirectorysNextHolderFetchesWhatTheCoveringHolderMadeThere) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  MakeCoveredWithAFile(a, "cluster/d/sub");
  if (HasFatalFailure()) return;
  // a's lease runs out unused: nobody refuses b, whose votes name a as
  // having covered d lately, so b fetches d/sub's entries from a first.
  cluster.clock().Advance(DirLeases::kTerm + 1s);
  ASSERT_TRUE(cluster.Join());
  EXPECT_FALSE(b.store->Get("cluster/d/sub/f", Cf::kNs).ok());
  EXPECT_EQ(b.leases->Create("cluster/d/sub/f").code(), Code::kAlreadyExists);
}

// A tree made under a cover, then worked in after the cover ran out (a
// compile after an extract): winning the top directory again covers what
// was made under it, with no vote each, and the cover holds toward others.
TEST(DirLeasesCoreTest, ACoverThatRanOutIsWonBackWithTheDirectoriesMadeUnderIt) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  MakeCoveredWithAFile(a, "cluster/d/sub");
  if (HasFatalFailure()) return;
  ASSERT_TRUE(AtOnce(a, "cluster/d/sub/deeper", /*directory=*/true).ok());
  Made(a, "cluster/d/sub/deeper");
  cluster.clock().Advance(DirLeases::kTerm + 1s);
  ASSERT_TRUE(cluster.Join());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/sub/g").has_value()) << "the cover ran out";
  ASSERT_TRUE(a.leases->Create("cluster/d/sub/g").ok());
  EXPECT_EQ(a.leases->won(), 2u) << "d twice, nothing below it";
  EXPECT_TRUE(AtOnce(a, "cluster/d/sub/deeper/h").ok());
  // b's create in sub is refused under the cover: it recalls sub from a, which hands f over.
  EXPECT_EQ(b.leases->Create("cluster/d/sub/f").code(), Code::kAlreadyExists);
  EXPECT_EQ(a.leases->recalled(), 0u) << "sub was covered, not held";
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/sub/h").has_value()) << "sub moved to b";
}

// a (node 0) makes d/sub under a cover of d; the cover runs out while a is
// cut off, and b (node 1) creates key (no recall reaches a); once b's lease
// ran out too, a creates in d again, winning d back.
void CoverRunsOutWhileAnotherCreates(InProcessCluster& cluster, const std::string& key) {
  InProcessNode& a = cluster.node(0);
  MakeCoveredWithAFile(a, "cluster/d/sub");
  if (::testing::Test::HasFatalFailure()) return;
  cluster.clock().Advance(DirLeases::kTerm + 1s);
  cluster.Silence(0);
  Status s = cluster.node(1).leases->Create(key);
  ASSERT_TRUE(s.ok()) << s.ToString();
  cluster.Silence(0, false);
  cluster.clock().Advance(DirLeases::kTerm + 1s);
  ASSERT_TRUE(cluster.Join());
  ASSERT_TRUE(a.leases->Create("cluster/d/x").ok());
}

// Not so when another node held the top directory since: b took d.
TEST(DirLeasesCoreTest, ACoverThatRanOutStaysOutWhereAnotherNodeHeldItsDirectorySince) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  CoverRunsOutWhileAnotherCreates(cluster, "cluster/d/bf");
  if (HasFatalFailure()) return;
  EXPECT_FALSE(cluster.node(0).leases->CreateAtOnce("cluster/d/sub/g").has_value()) << "sub is not covered again";
}

// Nor when another node held a directory below it since (b took d/sub
// itself): the lease won back covers nothing.
TEST(DirLeasesCoreTest, ACoverThatRanOutStaysOutWhereAnotherNodeHeldADirectoryBelowSince) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  CoverRunsOutWhileAnotherCreates(cluster, "cluster/d/sub/bx");
  if (HasFatalFailure()) return;
  InProcessNode& a = cluster.node(0);
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/sub/g").has_value()) << "sub is not covered again";
  ASSERT_TRUE(AtOnce(a, "cluster/d/new", /*directory=*/true).ok());
  Made(a, "cluster/d/new");
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/d/new/f").has_value()) << "d was not won as covering";
}

TEST(DirLeasesCoreTest, ACutOffCoveringHolderKeepsItsCoveredDirectoriesForItsTerm) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  ASSERT_TRUE(a.leases->Create("cluster/d/sub", /*directory=*/true).ok());
  auto won_at = cluster.clock().Elapsed();
  Made(a, "cluster/d/sub");
  cluster.Silence(0);  // a is cut off
  cluster.clock().Advance(1s);
  EXPECT_TRUE(AtOnce(a, "cluster/d/sub/y").ok());
  // b's create in sub waits for a's cover to run out, as for d itself.
  Status s = b.leases->Create("cluster/d/sub/z");
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_GE(cluster.clock().Elapsed() - won_at, std::chrono::nanoseconds(DirLeases::kTerm));
}

TEST(DirLeasesCoreTest, ARecalledCoveredDirectoryTakesEverythingCoveredBelowItOutOfTheCover) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  ASSERT_TRUE(a.leases->Create("cluster/p/d", /*directory=*/true).ok());
  Made(a, "cluster/p/d");
  ASSERT_TRUE(AtOnce(a, "cluster/p/d/s", /*directory=*/true).ok());
  Made(a, "cluster/p/d/s");
  ASSERT_TRUE(AtOnce(a, "cluster/p/d/s/x").ok());
  // b takes d: s below it is out of a's cover too (b may cover it now).
  ASSERT_TRUE(b.leases->Create("cluster/p/d/f").ok());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/p/d/s/y").has_value());
  EXPECT_EQ(b.leases->Create("cluster/p/d/s/x").code(), Code::kAlreadyExists) << "handed over with d";
}

TEST(DirLeasesCoreTest, ADirectoryHeldByItsCoveringHolderMovesWithOneAskOverBothLeases) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  ASSERT_TRUE(a.leases->Create("cluster/p/x").ok());    // p, as covering
  ASSERT_TRUE(a.leases->Create("cluster/p/b/y").ok());  // b, not made here: its own lease, below a's cover
  Made(a, "cluster/p/b/y");
  EXPECT_EQ(a.leases->won(), 2u);
  // b's create there recalls b from a once: a gives up its lease on b and
  // takes b out of its cover of p, and b asks again over both.
  EXPECT_EQ(b.leases->Create("cluster/p/b/y").code(), Code::kAlreadyExists);
  EXPECT_TRUE(b.leases->Create("cluster/p/b/z").ok());
  EXPECT_EQ(b.leases->won(), 1u);
  EXPECT_EQ(a.leases->recalled(), 1u);
  // Covers at two levels: a covers p, and n below it (not made here) with
  // a covering lease of its own, under which it makes m. c's create in m
  // goes over both covers at once.
  InProcessNode& c = cluster.node(2);
  ASSERT_TRUE(a.leases->Create("cluster/p/n/m", /*directory=*/true).ok());
  EXPECT_EQ(a.leases->won(), 3u);
  Made(a, "cluster/p/n/m");
  EXPECT_TRUE(AtOnce(a, "cluster/p/n/m/k").ok());
  Made(a, "cluster/p/n/m/k");
  EXPECT_EQ(c.leases->Create("cluster/p/n/m/k").code(), Code::kAlreadyExists);
  EXPECT_TRUE(c.leases->Create("cluster/p/n/m/j").ok());
  EXPECT_FALSE(a.leases->CreateAtOnce("cluster/p/n/m/i").has_value());
}

TEST(DirLeasesCoreTest, ConcurrentCreatorsInCoveredDirectoriesNeverBothWin) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  cluster.clock().freeze();
  int decided = 0, covered = 0;
  for (int round = 0; round < 30; ++round) {
    // Node round % 3 makes a directory below a new one it wins (as
    // covering), then all three create one name in it, or in one made two
    // rounds before by another node.
    InProcessNode& maker = cluster.node(round % 3);
    std::string dir = fmt::format("cluster/t{}/d", round);
    if (maker.leases->Create(dir, /*directory=*/true).ok()) Made(maker, dir);
    if (maker.leases->CreateAtOnce(dir + "/probe").has_value()) ++covered;
    std::string key = fmt::format("cluster/t{}/d/name-{}", round % 4 == 3 ? round - 2 : round, round);
    std::atomic<int> won{0};
    std::vector<std::thread> creators;
    for (size_t i = 0; i < 3; ++i)
      creators.emplace_back([&, i] {
        std::optional<Status> now = cluster.node(i).leases->CreateAtOnce(key);
        if (!(now.has_value() ? *now : cluster.node(i).leases->Create(key)).ok()) return;
        ++won;
        Made(cluster.node(i), key);
      });
    for (auto& t : creators) t.join();
    EXPECT_LE(won.load(), 1) << key;
    decided += won.load();
  }
  EXPECT_GT(decided, 20);
  EXPECT_EQ(covered, 30) << "each maker decides in its new directory at once";
}

TEST(QuorumWriteCoreTest, AQuorumWriteSucceedsWithAMajorityAndFailsWithout) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  size_t quorum = OthersNeeded(Agreement::kMajority, a.members->KnownCount());
  ASSERT_EQ(quorum, 1u);
  cluster.Silence(2);
  ASSERT_TRUE(a.store->Put("k1", "v1", false).ok());
  EXPECT_TRUE(a.replicator->ReplicateKey(Cf::kKv, "k1", quorum, true).ok());
  Result<Record> on_b = cluster.node(1).store->Get("k1");
  ASSERT_TRUE(on_b.ok());
  EXPECT_EQ(on_b->value, "v1");
  // ALL needs c too.
  Status all = a.replicator->ReplicateKey(Cf::kKv, "k1", OthersNeeded(Agreement::kAll, 3), true);
  EXPECT_EQ(all.code(), Code::kUnavailable);
  EXPECT_NE(all.message().find("held by 2 of the 3"), std::string::npos) << all.message();
  // Without a majority: a alone.
  cluster.Silence(1);
  ASSERT_TRUE(a.store->Put("k2", "v2", false).ok());
  Status lone = a.replicator->ReplicateKey(Cf::kKv, "k2", quorum, true);
  EXPECT_EQ(lone.code(), Code::kUnavailable);
  EXPECT_FALSE(cluster.node(1).store->Get("k2").ok());
  // A quorum read sees the newest of a majority, and keeps it.
  cluster.Silence(1, false);
  ASSERT_TRUE(cluster.node(1).store->Put("k3", "from-b", false).ok());
  Result<Record> read = a.replicator->ReadQuorum(Cf::kKv, "k3", quorum);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  EXPECT_EQ(read->value, "from-b");
  EXPECT_EQ(a.store->Get("k3")->value, "from-b");
}

TEST(QuorumWriteCoreTest, FsyncsPublishReachesTheWriteQuorumHoldersFirst) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  v1::Inode dir, file;
  dir.set_type(v1::FILE_TYPE_DIRECTORY);
  file.set_type(v1::FILE_TYPE_REGULAR);
  std::string content = "published bytes";
  ASSERT_TRUE(a.store->PutChunk(Sha256(content), content).ok());
  file.set_size(content.size());
  file.add_chunks(Sha256(content));
  ASSERT_TRUE(a.store->Put("cluster/d", dir.SerializeAsString(), false, Cf::kNs).ok());
  ASSERT_TRUE(a.store->Put("cluster/d/f", file.SerializeAsString(), false, Cf::kNs).ok());
  size_t acks = PublishAcksNeeded(2, 0, a.members->KnownCount());
  ASSERT_TRUE(a.replicator->ReplicateNow("cluster/d/f", acks).ok());
  // One other node has the record, its directory, and the content.
  std::string holder = a.content->Holders("cluster/d/f").at(0).node_id;
  for (size_t i = 1; i < 3; ++i) {
    InProcessNode& n = cluster.node(i);
    if (n.id() != holder) continue;
    EXPECT_TRUE(n.store->Get("cluster/d/f", Cf::kNs).ok());
    EXPECT_TRUE(n.store->Get("cluster/d", Cf::kNs).ok());
    EXPECT_EQ(n.store->GetChunk(Sha256(content)).value(), content);
  }
  cluster.Silence(1);
  cluster.Silence(2);
  Status alone = a.replicator->ReplicateNow("cluster/d/f", acks);
  EXPECT_EQ(alone.code(), Code::kUnavailable) << alone.ToString();
}

TEST(AntiEntropyCoreTest, ARoundRepairsWhatThePusherMissed) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  // Written on a; no pusher runs here, so b never heard of them.
  ASSERT_TRUE(a.store->Put("app/color", "blue", false).ok());
  ASSERT_TRUE(a.store->Put("cluster/f", "inode", false, Cf::kNs).ok());
  ASSERT_TRUE(a.store->Delete("app/gone", false).ok());
  ASSERT_NE(a.store->Digest().value(), b.store->Digest().value());
  Result<uint64_t> repaired = b.anti_entropy->RoundWith(a.peer());
  ASSERT_TRUE(repaired.ok()) << repaired.status().ToString();
  EXPECT_EQ(*repaired, 3u);
  EXPECT_EQ(a.store->Digest().value(), b.store->Digest().value());
  EXPECT_EQ(b.store->Get("app/color")->value, "blue");
  EXPECT_EQ(b.store->Get("app/color")->version, a.store->Get("app/color")->version);
  {
    std::lock_guard lock(b.applied_mu);
    EXPECT_EQ(b.applied.size(), 3u);  // each record that won is handed on (to the view, for ns)
  }
  // Nothing left to repair; and a silent peer makes the round fail, not hang.
  EXPECT_EQ(b.anti_entropy->RoundWith(a.peer()).value(), 0u);
  cluster.Silence(0);
  EXPECT_EQ(b.anti_entropy->RoundWith(a.peer()).status().code(), Code::kUnavailable);
}

// An idle cluster's anti-entropy asks nothing: a peer whose heartbeat
// carried a store digest equal to this node's is not asked; one whose store
// changed since its digest was read is, and what it holds is repaired.
TEST(AntiEntropyCoreTest, ARoundAsksNoPeerWhoseHeartbeatSaysItsStoreIsOurs) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  auto gossip = [&] { cluster.GossipRounds(4); };  // past the calls of the join: heartbeats
  ASSERT_TRUE(a.store->Put("app/color", "blue", false).ok());
  ASSERT_EQ(b.anti_entropy->RoundWith(a.peer()).value(), 1u);
  gossip();
  ASSERT_FALSE(b.members->StoreDigestOf(a.id()).empty()) << "a's heartbeats carry its store's digest";
  const int asked = cluster.calls_to(0, "BucketDigests");
  b.anti_entropy->Round();
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked) << "a holds what b does: not asked";

  ASSERT_TRUE(a.store->Put("app/size", "large", false).ok());  // no pusher here: b does not have it
  gossip();
  b.anti_entropy->Round();
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked + 1);
  EXPECT_EQ(b.store->Get("app/size")->value, "large");
  EXPECT_EQ(a.store->Digest().value(), b.store->Digest().value());
  gossip();
  b.anti_entropy->Round();
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked + 1);
}

// A busy node's anti-entropy waits: while records are written here (a
// burst the log is carrying) a round would scan both stores and read whole
// buckets; it asks once a round's period passed without a write here, or
// once the busy rounds' interval passed.
TEST(AntiEntropyCoreTest, ARoundWaitsWhileThisNodesStoreIsBeingWritten) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  constexpr auto kBusyEvery = std::chrono::seconds(3);
  b.anti_entropy->set_busy_rounds_every(kBusyEvery);
  auto gossip = [&] { cluster.GossipRounds(4); };
  gossip();
  b.anti_entropy->Round();  // the first: looks (the stores agree)
  const int asked = cluster.calls_to(0, "BucketDigests");
  ASSERT_TRUE(a.store->Put("app/theirs", "a's", false).ok());  // no pusher here: b does not have it
  ASSERT_TRUE(b.store->Put("app/mine", "b's", false).ok());
  gossip();
  b.anti_entropy->Round();
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked) << "b's store was written since its last round";
  EXPECT_FALSE(b.store->Get("app/theirs").ok());
  gossip();
  b.anti_entropy->Round();  // nothing written here since
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked + 1);
  EXPECT_EQ(b.store->Get("app/theirs")->value, "a's");
  // Written here at every round: one round in every interval.
  ASSERT_TRUE(a.store->Put("app/later", "a's", false).ok());
  ASSERT_TRUE(b.store->Put("app/mine", "b's again", false).ok());
  gossip();
  b.anti_entropy->Round();
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked + 1);
  std::this_thread::sleep_for(kBusyEvery + std::chrono::milliseconds(100));
  ASSERT_TRUE(b.store->Put("app/mine", "b's third", false).ok());
  gossip();
  b.anti_entropy->Round();
  EXPECT_EQ(cluster.calls_to(0, "BucketDigests"), asked + 2);
  EXPECT_EQ(b.store->Get("app/later")->value, "a's");
}

// An idle node's replication loop and pushers rest (no rounds, no looks
// every second), and go back to work at once for what needs them: chunks
// put without the WAL are flushed within the loop's quiet time (not at its
// next look, 10 s on), and a write is pushed to the peer.
TEST(ReplicationCoreTest, ARestingReplicationLoopWakesForChunksToFlushAndAWriteToPush) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  InProcessNode& a = cluster.node(0);
  InProcessNode& b = cluster.node(1);
  a.replicator->Start();
  b.replicator->Start();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // the first rounds are over: both rest
  ASSERT_FALSE(b.store->ChunksAwaitFlush());
  ASSERT_TRUE(b.store->PutChunk("rested", "put while the loop rests", Store::ChunkDurability::kEventually).ok());
  EXPECT_TRUE(b.store->ChunksAwaitFlush());
  EXPECT_TRUE(WaitUntil([&] { return !b.store->ChunksAwaitFlush(); }, std::chrono::seconds(5),
                        "b's loop flushed the chunk after the quiet time"));
  ASSERT_TRUE(a.store->Put("app/rested", "pushed", false).ok());
  EXPECT_TRUE(WaitUntil([&] { return b.store->Get("app/rested").ok(); }, std::chrono::seconds(2),
                        "a's pusher woke for the write and b has it"));
  // Before the cluster goes: no stream between parts being torn down.
  a.replicator->Stop();
  b.replicator->Stop();
}

TEST(ContentCoreTest, ChunksComeFromAHolderCheckedAgainstTheirDigest) {
  InProcessCluster cluster(3);
  ASSERT_TRUE(cluster.Join());
  std::string bytes(3 << 20, 'x');
  bytes[12345] = 'y';
  std::vector<std::string> digests;
  for (size_t off = 0; off < bytes.size(); off += kChunkBytes) {
    std::string chunk = bytes.substr(off, kChunkBytes);
    digests.push_back(Sha256(chunk));
    ASSERT_TRUE(cluster.node(0).store->PutChunk(digests.back(), chunk).ok());
  }
  std::string got(bytes.size(), '\0');
  std::mutex mu;
  Status fetched = cluster.node(2).content->Fetch(digests, {cluster.node(0).id()}, false,
                                                  [&](size_t index, const std::string& chunk) {
                                                    std::lock_guard lock(mu);
                                                    got.replace(index * kChunkBytes, chunk.size(), chunk);
                                                    return Status::Ok();
                                                  });
  ASSERT_TRUE(fetched.ok()) << fetched.ToString();
  EXPECT_EQ(got, bytes);
  cluster.Silence(0);
  Status none = cluster.node(2).content->Fetch(digests, {cluster.node(0).id()}, false,
                                               [](size_t, const std::string&) { return Status::Ok(); });
  EXPECT_EQ(none.code(), Code::kUnavailable);
}

// A replication batch stores the content it carries before its records; a
// chunk that does not match its digest is left out and holds up no record.
TEST(ContentCoreTest, ABatchStoresTheContentItCarriesAndABadChunkHoldsUpNoRecord) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  Store& from = *cluster.node(0).store;
  v1::ReplicateRequest req;
  req.set_from_node_id(cluster.node(0).id());
  *req.add_records() = ToLogRecord(Cf::kKv, "carried", Record{{from.clock().Now(), from.node_id()}, false, "v"}, 1);
  const std::string good = "a chunk as its writer holds it", bad_digest = Sha256("what the writer hashed");
  v1::Chunk* c = req.add_chunks();
  c->set_digest(Sha256(good));
  c->set_data(good);
  c = req.add_chunks();
  c->set_digest(bad_digest);
  c->set_data("bytes that changed since");
  v1::ReplicateResponse resp;
  ASSERT_TRUE(cluster.node(1).replicator->OnReplicate(req, &resp).ok());
  EXPECT_EQ(resp.applied(), 1u);
  EXPECT_EQ(resp.acked_seq(), 1u);
  Store& to = *cluster.node(1).store;
  EXPECT_EQ(*to.GetChunk(Sha256(good)), good);
  EXPECT_FALSE(to.HasChunk(bad_digest));
  EXPECT_EQ(to.Get("carried")->value, "v");
}

// Bytes the local store gives back that do not match their digest (a store
// damaged on disk) never reach the sink: the chunk comes from a holder. A
// chunk a peer pushed moments ago was checked as it came, and is taken as
// stored the first time it is read back (the placement that follows), once.
TEST(ContentCoreTest, AChunkDamagedInTheLocalStoreIsFetchedAgainOnceItsArrivalCheckIsUsed) {
  InProcessCluster cluster(2);
  ASSERT_TRUE(cluster.Join());
  ContentTransfer& b = *cluster.node(1).content;
  const std::string good = "a chunk as its writer holds it", damaged = "a chunk as a bad disk gives it back";
  const std::string digest = Sha256(good);
  ASSERT_TRUE(cluster.node(0).store->PutChunk(digest, good).ok());
  v1::PushChunksRequest push;
  push.set_from_node_id(cluster.node(0).id());
  v1::Chunk* c = push.add_chunks();
  c->set_digest(digest);
  c->set_data(good);
  v1::PushChunksResponse pushed;
  ASSERT_TRUE(b.OnPushChunks(push, &pushed).ok());
  ASSERT_EQ(pushed.stored(), 1u);
  auto fetch = [&](bool local_only) {
    std::string got;
    Status s = b.Fetch({digest}, {cluster.node(0).id()}, local_only, [&](size_t, const std::string& bytes) {
      got = bytes;
      return Status::Ok();
    });
    return s.ok() ? got : "(" + s.ToString() + ")";
  };
  EXPECT_EQ(fetch(/*local_only=*/true), good);  // the read that follows the push: as stored, not hashed again
  EXPECT_EQ(b.arrival_checks_taken(), 1u);
  // Damaged in the store since (an overwrite of the key stands in for the disk).
  ASSERT_TRUE(cluster.node(1).store->PutChunk(digest, damaged).ok());
  EXPECT_EQ(fetch(/*local_only=*/false), good) << "the damaged bytes reached the sink";
  ASSERT_TRUE(cluster.node(1).store->PutChunk(digest, damaged).ok());
  EXPECT_EQ(fetch(/*local_only=*/true).rfind("(", 0), 0u) << "a damaged chunk and no peer asked: no bytes";
  EXPECT_EQ(b.arrival_checks_taken(), 1u);  // once
}

// The arrival checks are remembered for a window, each taken once, and at
// most so many of them, the oldest let go first.
TEST(ContentCoreTest, ArrivalChecksAreTakenOnceWithinTheirWindowAndBounded) {
  CheckedChunks checked(std::chrono::seconds(1), /*max=*/3);
  checked.Checked("a");
  EXPECT_TRUE(checked.Take("a"));
  EXPECT_FALSE(checked.Take("a"));  // once
  EXPECT_FALSE(checked.Take("never"));
  for (const char* d : {"b", "c", "d", "e"}) checked.Checked(d);
  EXPECT_EQ(checked.size(), 3u);
  EXPECT_FALSE(checked.Take("b"));  // the oldest, let go for the fourth
  EXPECT_TRUE(checked.Take("c"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_FALSE(checked.Take("d"));  // past the window
  EXPECT_EQ(checked.size(), 0u);
  checked.Checked("f");
  checked.Checked("f");  // again: still one, taken once
  EXPECT_TRUE(checked.Take("f"));
  EXPECT_FALSE(checked.Take("f"));
  EXPECT_EQ(checked.taken(), 3u);  // a, c, f
}

}  // namespace
}  // namespace onebox::testing

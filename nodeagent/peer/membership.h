// Cluster membership by gossip (Scuttlebutt-style heartbeats). Every round
// (500 ms) an agent raises its own heartbeat (an HLC timestamp, so it also
// rises across restarts) and sends its member table to every member alive
// (beyond 16, three at random), to three members not alive at random (to
// find them when they come back) and to its seeds not heard of yet; each
// side keeps, per member, the entry with the highest heartbeat. A member whose heartbeat has not risen for 2 s is suspect, for
// 10 s dead (dead members stay listed).
//
// The table goes as a heartbeat datagram (a v1::Beat over UDP, sealed with
// this agent's beat key: peer/beat_seal.h, peer/beat_socket.h) to a member
// whose key this node holds and that showed, within the last 1.25 s, that it
// hears this node (its beats echo the heartbeat it last heard from this node
// itself); as a Gossip call (gRPC, both tables and the beat keys, both ways)
// otherwise: to a seed not heard of yet (one named by a host name counts,
// once it answered, as the member that answered), a member whose key is
// unknown, at the next round a member whose beat did not open with the key
// held (it restarted with a new one) or whose beat says it knows fewer
// members (beats go one way; a call's answer brings the whole table back),
// a member whose echo lapsed (twice within 20 rounds: UDP cut or filtered,
// then calls for 20 rounds), and every 20 rounds to each member anyway. An
// idle agent's gossip is then packets, not gRPC calls. A beat counts only at
// the member it was sealed for, and only when newer than its sender's last.
//
// Each node picks a cluster-unique index
// (the smallest positive integer no known member holds), keeps it in its store,
// and gives it up only on a conflict with a member of lower node id, which can
// happen only before the two have heard of each other. The members' addresses
// are kept in the store: a restarted node asks them too until one answers, so
// it finds the cluster even when its seeds are down.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "consistency/store.h"
#include "naming/node_identity.h"
#include "nodeagent/peer/clock.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/peer/periodic.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

struct MembershipOptions {
  std::chrono::milliseconds round{500};
  std::chrono::milliseconds suspect_after{2000};
  std::chrono::milliseconds dead_after{10000};
  // Every member alive gets each round's table, up to this many; beyond,
  // fanout of them at random; and fanout members not alive, at random, and
  // the seeds not heard of.
  size_t everyone_up_to = 16;
  int fanout = 3;
};

class Membership {
 public:
  // Peers are reached through network; time is read from clock.
  Membership(Store& store, PeerNetwork& network, NodeIdentity self, std::string address,
             std::vector<std::string> seeds, MembershipOptions options = {}, Clock& clock = SteadyClock());
  ~Membership();
  // Gossips every options.round on a thread of its own, until Stop.
  void Start();
  void Stop();
  // One round: raise our heartbeat, choose our index when it is time, send
  // our table to the seeds and a few members, and merge their answers.
  void GossipRound();

  // Heartbeat datagrams can flow: their socket is open and hands them to
  // OnBeat. Until then this node tells no beat key and sends no beat (the
  // others gossip with it by calls).
  void EnableBeats();
  // The Gossip RPC: merge what a peer says, answer with our table.
  void OnGossip(const v1::GossipRequest& req, v1::GossipResponse* resp);
  // A heartbeat datagram from a member: merged if it opens with that
  // member's beat key; anything else is dropped (and a member whose beat
  // did not open gets a Gossip call next).
  void OnBeat(std::string_view datagram);
  // Every member we know, ourselves included, with its state now.
  std::vector<v1::Node> Nodes();
  // Every other member now alive.
  std::vector<PeerAddress> AliveOthers();
  // Whether this node sees a majority of the members it knows alive (itself included).
  bool SeesMajority();
  // Whether a majority of the members (this node included) answered this
  // node's own gossip within window: they hear it (AliveOthers says only
  // that this node hears them, which a one-way cut keeps true).
  bool HeardByMajorityWithin(std::chrono::milliseconds window);
  // The other member node_id, if it is alive now.
  std::optional<PeerAddress> AliveOther(const std::string& node_id);
  // Whether node_id is a member declared dead (a member suspected, or one
  // not heard of at all, is not).
  bool Dead(const std::string& node_id);
  // Dead, or not heard of at all although this node has gossiped for longer
  // than a member takes to be declared dead (a node gone for good before
  // this one started: its data dir wiped, or it left the cluster).
  bool Gone(const std::string& node_id);
  // How long node_id's heartbeat has not risen here; nullopt for a member
  // not heard of at all.
  std::optional<std::chrono::milliseconds> SilentFor(const std::string& node_id);
  // Members we know of in any state, ourselves included: at least as many
  // as were known before a restart, and every seed not heard from yet counts
  // as one (a node told to join a cluster is not a cluster of one because
  // its seeds have not answered yet).
  size_t KnownCount();
  // Seeds (other than ourselves) no member we know of answers at.
  size_t UnheardSeeds();
  // Right after the start, the members this node knew of before it (its
  // seeds, and the members of before a restart) that it has not heard of
  // yet: they may well be alive, so a lease needs their votes too and the
  // shims claim across the cluster (a restarted agent decides nothing
  // alone while it has not looked). 0 once each was heard of, or once this
  // node has gossiped for longer than a member takes to be declared dead.
  size_t UnheardSinceStart();
  // AliveOthers, and UnheardSinceStart at the same moment (a member heard
  // of in between would be in neither).
  std::vector<PeerAddress> AliveOthersAndUnheard(size_t* unheard);
  uint32_t index() const { return index_.load(); }
  // What this node's gossip has sent and taken so far (the agent's metrics).
  struct Counts {
    uint64_t calls = 0;           // Gossip calls made
    uint64_t beats_sent = 0;
    uint64_t beats_taken = 0;     // opened with their sender's key and merged
    uint64_t beats_unopened = 0;  // from a member, not sealed with the key held for it
  };
  Counts counts() const;
  // This agent's incarnation (Member.incarnation): its start, and again
  // whenever it went on after publishing no heartbeat for half the time the
  // others wait before declaring a member dead (SIGSTOP, a suspended
  // machine): they may have, and moved its files' lock homes meanwhile, so
  // it comes back as a restarted node does (its lock home forgets its old
  // tables). A VM paused by its host is not seen: its clocks stop with it.
  uint64_t incarnation() const { return incarnation_.load(); }
  // Called after every gossip round with the number of other members alive.
  void set_alive_observer(std::function<void(size_t)> fn) { alive_observer_ = std::move(fn); }
  // Called after each call of a round and at its end: the gossip thread
  // moves on (a round with many silent targets takes 0.5 s for each; a
  // restarted node asks every address it ever knew); before Start.
  void set_progress_observer(std::function<void()> fn) { progress_observer_ = std::move(fn); }
  // Adds to this node's load as gossip carries it (the placed jobs it runs); before Start.
  void set_load_extra(std::function<void(v1::NodeLoad*)> fn) { load_extra_ = std::move(fn); }
  // What this node's beats say of its store (Beat.store_digest; empty: nothing); before Start.
  void set_store_digest(std::function<std::string()> fn) { store_digest_ = std::move(fn); }
  // The store digest node_id's last beat carried, if that beat came within
  // the last 2 s; empty otherwise.
  std::string StoreDigestOf(const std::string& node_id);
  void set_address(const std::string& address);

 private:
  struct Known {
    v1::Member member;        // without its beat key (StripKey)
    Clock::time_point heard;  // when its heartbeat last rose
    std::string beat_key;     // its beats' (empty: not told yet)
    uint64_t key_since = 0;   // the start of the agent's life that made it (Member.beat_key_since)
    bool key_failed = false;  // a beat did not open with it: ask by a call
    uint64_t last_beat = 0;   // the heartbeat of its last beat taken: older ones are replays
    uint64_t direct_heartbeat = 0;  // the highest heard from it directly (its beat, call or answer): our echo to it
    int lapsed_round = 0;     // when its echoes last lapsed
    // The last time it showed that it heard our heartbeat (an answer to our
    // call, or a heartbeat of ours it echoed: when we sent that one).
    std::optional<Clock::time_point> heard_us_at;
    int calls_until_round = 0;  // it stopped echoing: Gossip calls, not beats, before this round
    int call_due_round = 0;     // from this round on, a Gossip call is due
    bool needs_table = false;   // it knows fewer members than we do: a call at the next round
    std::string store_digest;   // its last beat's
    Clock::time_point store_digest_at;
  };
  // A round's message to one target: a beat, or a Gossip call.
  struct Target {
    std::string address;
    std::optional<std::string> beat;  // the sealed datagram
  };
  // The round's messages and whom they go to (under mu_).
  std::vector<Target> PrepareRoundLocked(v1::GossipRequest* req);
  // Whether the member at address gets this round's table as a beat.
  bool ByBeatLocked(Known& k, Clock::time_point now);
  std::string SealedBeatLocked(const v1::Member& self, const Known& to, const std::string& store_digest);
  void MergeLocked(const v1::Member& m);
  // k heard our heartbeat hb (echoed back in its beat).
  void NoteEchoLocked(Known& k, uint64_t hb);
  // m with its beat key, as Gossip calls carry it; and our own entry so.
  v1::Member WithKey(const v1::Member& m, const Known& k) const;
  v1::Member SelfWithKeyLocked(v1::Member self) const;
  // from (a member) spoke to us itself: what we echo back to it.
  void NoteDirectLocked(const v1::Member& from);
  // A seed answered, as itself or as the member it named in its answer.
  bool SeedHeardLocked(const std::string& seed) const;
  v1::Member SelfLocked();
  // SelfLocked, for a heartbeat that goes out (a round's request, an answer).
  v1::Member PublishedSelfLocked();
  void ChooseIndexLocked();
  // Keeps the members' addresses in the store when they changed (for rejoin).
  void SaveKnownLocked();
  v1::NodeState StateOf(const Known& k, Clock::time_point now) const;
  size_t UnheardSeedsLocked() const;
  size_t UnheardSinceStartLocked() const;
  std::vector<PeerAddress> AliveOthersLocked();

  Store& store_;
  PeerNetwork& network_;
  Clock& clock_;
  NodeIdentity self_;
  const std::string self_hex_;  // NodeIdHex(self_.node_id), made once: every beat names it
  std::string address_;
  std::vector<std::string> seeds_;
  std::function<void(size_t)> alive_observer_;
  std::function<void()> progress_observer_;
  std::function<void(v1::NodeLoad*)> load_extra_;
  std::function<std::string()> store_digest_;
  size_t known_before_ = 0;  // other members known before a restart (persisted)
  std::vector<std::string> rejoin_;  // members known before a restart
  std::string saved_known_;          // under mu_
  MembershipOptions options_;
  std::atomic<uint32_t> index_{0};
  std::atomic<uint64_t> calls_{0}, beats_sent_{0}, beats_taken_{0}, beats_unopened_{0};
  Clock::time_point started_;  // when this object was made
  std::optional<Clock::time_point> gossip_started_;  // Start()
  std::atomic<uint64_t> incarnation_;  // on the store's clock (Member.incarnation)
  // Our last heartbeat sent, on clock_'s Now and NowCountingSuspend (under mu_).
  std::optional<Clock::time_point> published_;
  Clock::time_point published_boot_;
  std::deque<std::pair<uint64_t, Clock::time_point>> published_beats_;  // our last heartbeats, and when (under mu_)
  const uint64_t started_hlc_;  // this agent's start: its beat key's since
  const std::string beat_key_;  // this agent's (peer/beat_seal.h); empty: no beats
  bool beats_enabled_ = false;  // EnableBeats (under mu_)
  std::map<std::string, std::string> seed_members_;  // a seed address -> the member that answered there (under mu_)
  bool heard_since_new_incarnation_ = true;  // a member answered, or called, since (under mu_)
  int rounds_ = 0;

  std::mutex mu_;
  std::map<std::string, Known> members_;  // by node id (hex), not ourselves
  std::mt19937 rng_{std::random_device{}()};  // under mu_
  PeriodicThread rounds_thread_;
};

}  // namespace onebox

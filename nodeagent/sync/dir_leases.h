// Exclusive creation across nodes (O_CREAT|O_EXCL and mkdir of a new name
// succeed on one node only), decided by directory leases, as CephFS
// capabilities and NFSv4 directory delegations do: the node that holds the
// lease on a directory decides the exclusive creates in it alone, with no
// message, and the lease moves (one recall, one vote round) when another
// node creates there.
//
// A lease is won with a vote of the live members (Peer/DirLease): a
// majority of them, this node included, must grant it and none may refuse.
// A member refuses while it granted the directory to another node less than
// kTerm ago; the asker then recalls the lease from that node
// (Peer/RecallDirLease) and asks again, over the lease given up. A recalled
// holder gives the lease up, lets its recorder catch up with the view, sends
// the asker its records of the directory's entries that the asker has not
// acknowledged, after recording the entries it made there that were not
// recorded yet; it names the creates it granted in the last few seconds that
// are still unrecorded, and only then answers. The winner of a new lease
// also fetches the same from every other node the voters granted the
// directory to in the last kRemember (each member remembers them; two
// majorities share a member) before it decides anything there; one of them
// that is alive and does not hand over fails the win (tried again until the
// wait ends). So the new holder knows every name made under the
// directory's earlier leases by the nodes it can reach.
//
// A lease is also asked for as a covering lease, and granted as one by a
// member that granted no directory below it to another node in the last
// kRemember (a renewal keeps its cover): then the directories the holder
// makes below it (mkdir, decided under the lease) are covered by it, and
// the holder decides the creates in them too with no vote of their own
// (tar and make make a directory, then files in it at once). A member
// refuses a lease on a directory below one it granted as covering to
// another node (any directory below: members do not know which ones the
// holder made), unless it granted the asker that directory itself
// already, or granted it over that cover before: the asker recalls it from
// the covering holder, which takes it and everything below it out of its
// covers for good (carved: never covered again while a cover of this
// node's is above it) and hands over what it made there, and asks again
// over every lease given up. Members remember covering holders as earlier
// holders of every directory below for kRemember, so that a later winner
// of one of them fetches what the covering holder made there. A cover that
// ran out takes back the directories it made when its holder wins the
// directory again as covering within kRemember and no voter names another
// node as a holder of it or of a cover above it since.
//
// A holder counts its term from before it asked and takes the lease as over
// kMargin early; members count theirs from when they granted it: a member
// never grants a directory to another node while its holder still takes its
// lease for valid (a renewal that fails leaves the votes in place). A
// holder renews a lease it uses once half of the term has passed.
//
// Known limits: votes live in memory, so a member that restarts forgets
// whom it granted a directory to; a holder that does not answer a vote
// within 0.5 s counts as not voting. Either can let another node win a
// lease that still runs while the holder's own majority shrank (with a
// covering lease, on any directory below it). A record past the log's
// retention reaches the next holder only by anti-entropy.
//
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/peer/clock.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/sync/create_slots.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

class DirLeases {
 public:
  static constexpr auto kTerm = std::chrono::seconds(5);
  // A holder takes its lease as over this much before its term ends.
  static constexpr auto kMargin = std::chrono::milliseconds(250);
  // A name an old holder granted is taken as made for this long at most.
  static constexpr auto kPendingHold = std::chrono::seconds(5);
  // How long members remember whom they granted a directory to: a record
  // older than this is taken to have reached every live node.
  static constexpr auto kRemember = std::chrono::seconds(60);

  // What a recall needs from the rest of the agent.
  struct Handover {
    // Returns once every change made to the view so far is recorded (ViewRecorder::Sync).
    std::function<Status()> record_view;
    // Records the entries of dir in the view that the store holds no live
    // record of (ViewRecorder::RecordUnrecorded); returns those it could not.
    std::function<std::vector<std::string>(const std::string& dir)> record_unrecorded;
    // Sends a peer this node's records of dir's entries it has not acknowledged (Replicator::SendEntriesOf).
    std::function<Status(const PeerAddress& peer, const std::string& dir)> send_entries;
  };
  // Terms, pauses between rounds and pending holds are timed by clock.
  DirLeases(Store& store, Membership& members, PeerNetwork& network, std::string self_id, Handover handover,
            Clock& clock = SteadyClock());

  // May this node create key (an ns key) exclusively? Ok: yes, and no other
  // node will while this node holds the lease. AlreadyExists: it exists
  // elsewhere. Unavailable: the directory's lease could not be had (too few
  // members answered, or its holder is gone and its term has not run out
  // within the wait). InvalidArgument for a key that names no entry.
  // directory: a mkdir (a directory made under a covering lease is covered by it).
  Status Create(const std::string& key, bool directory = false);
  // Create's answer when this node can give it without a message (it holds
  // the directory's lease or a covering one, not due for renewal); nullopt
  // when it cannot. Never blocks on the network: the shim's socket thread
  // asks it first.
  std::optional<Status> CreateAtOnce(const std::string& key, bool directory = false);

  // Lets this node's shims decide the creates in a directory whose lease
  // is held here (sync/create_slots.h): a slot is installed when a create
  // there is decided here and view_settled says nothing a peer changed is
  // still on its way into the view; it runs out before the lease's renewal
  // is due, and a recall ends it before anything else.
  void set_create_slots(CreateSlotTable* slots, std::function<bool()> view_settled);

  // The Peer calls, as this node answers them.
  Status OnLease(const v1::DirLeaseRequest& req, v1::DirLeaseResponse* resp);
  Status OnRecall(const v1::RecallDirLeaseRequest& req, v1::RecallDirLeaseResponse* resp);

  // Counters for status and tests.
  uint64_t won() const;       // leases won (renewals not counted)
  uint64_t recalled() const;  // leases this node gave up on another's recall
  uint64_t decided() const;   // creates decided here (not those the shims decided in a slot)

 private:
  struct Granted {  // a create this node granted
    std::string key;
    Clock::time_point when;
    HlcTimestamp after;  // its record will be newer than this
  };
  struct Held {
    uint64_t lease_id;
    Clock::time_point until;        // taken as over from here (kMargin before the members' grants end)
    Clock::time_point renew_after;  // half the term: a use from here renews it
    std::deque<Granted> recent;     // creates granted in the last moment (in covered directories too)
    bool covers = false;            // won as a covering lease
  };
  struct Covered {  // a directory this node made under a covering lease
    std::string by;  // the covering lease's directory
    uint64_t lease_id = 0;  // the covering lease; 0 once taken out of the cover
    Clock::time_point last_used;
  };
  struct Votes {  // this node's votes on one directory
    std::string holder;  // the current grant (until `until`)
    uint64_t lease_id = 0;
    Clock::time_point until;
    bool covers = false;  // the current grant is a covering lease
    std::set<uint64_t> out_of_cover;  // covering leases above it granted over (their holders gave it up)
    std::map<std::string, Clock::time_point> holders;   // every node granted it lately: when
    std::map<std::string, Clock::time_point> covering;  // those granted it as covering lately: when
  };
  struct Pending {  // a name another node granted just before it gave the lease up
    Clock::time_point until;
    HlcTimestamp since;
    std::string granted_by;  // passed on with it
  };
  struct Round {
    bool won = false;
    bool covers = false;  // every vote granted it as covering
    std::string holder;  // a member refused: who holds it, and which lease
    uint64_t holder_lease_id = 0;
    std::set<std::string> previous;  // other nodes granted it lately
    std::string why;                 // for people
  };

  // Makes sure this node holds a valid lease on dir (winning, renewing or
  // recalling it). Takes and returns with mu_ locked.
  Status Hold(const std::string& dir, std::unique_lock<std::mutex>& lock);
  // One vote round, over given_up (leases their holders gave up for it;
  // replaces: the last one on dir itself). On a loss the votes given are
  // taken back, unless it renewed a lease still running.
  Round Ask(const std::string& dir, uint64_t lease_id, uint64_t replaces, const std::set<uint64_t>& given_up,
            bool renewal);
  // This node's vote (mu_ held); cover: asked as a covering lease.
  v1::DirLeaseResponse Cast(const std::string& dir, const std::string& node, uint64_t lease_id,
                            const std::set<uint64_t>& given_up, bool cover);
  // Whether this node granted a directory below dir to another node than
  // node that still holds it (mu_ held).
  bool GrantedBelow(const std::string& dir, const std::string& node, Clock::time_point now) const;
  // The directory whose lease decides the creates in dir here: dir, unless
  // dir is covered by a covering lease this node holds (mu_ held).
  std::string LeaseDirOf(const std::string& dir) const;
  // The covering leases this node holds on directories above dir (mu_ held).
  std::vector<uint64_t> CoversAbove(const std::string& dir) const;
  // Asks node to give dir up if it holds it and to hand over what it made
  // there; takes the names it says are pending, and adds the leases it gave
  // up (its own on dir, its covers above dir) to *given_up; *own: its own
  // on dir (0: none).
  Status Recall(const std::string& dir, const std::string& node, std::set<uint64_t>* given_up = nullptr,
                uint64_t* own = nullptr);
  // Forgets votes, leases and pending names too old to matter (mu_ held).
  void Sweep();
  // Is key made (or being made) by another node, as far as this node knows? (mu_ held)
  bool MadeElsewhere(const std::string& key);
  // The decision under the lease held on lease_dir, valid at now (mu_ held).
  Status Decide(const std::string& key, bool directory, const std::string& lease_dir, Held& held,
                Clock::time_point now);
  // A slot for dir, decided in under held, if the shims may decide there (mu_ held).
  void OfferSlot(const std::string& dir, const Held& held, Clock::time_point now);
  // Whether a name another node was making in dir may still be on its way (mu_ held).
  bool PendingIn(const std::string& dir);

  Store& store_;
  Membership& members_;
  PeerNetwork& network_;
  std::string self_;
  Handover handover_;
  Clock& clock_;
  mutable std::mutex mu_;
  std::condition_variable settled_;  // an acquisition ended
  std::set<std::string> acquiring_;  // dirs a thread is winning or renewing a lease on
  std::map<std::string, Held> held_;
  std::map<std::string, Covered> covered_;
  // Directories recalled from this node lately, never covered while they
  // are here (another node may hold them over a covering lease of ours).
  std::map<std::string, Clock::time_point> carved_;
  std::map<std::string, Votes> votes_;
  std::map<std::string, Pending> pending_;
  Clock::time_point last_sweep_{};
  uint64_t won_ = 0;
  uint64_t recalled_ = 0;
  uint64_t decided_ = 0;
  CreateSlotTable* slots_ = nullptr;
  std::function<bool()> view_settled_;
};

}  // namespace onebox

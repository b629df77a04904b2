// Anti-entropy: every few seconds an agent compares its records with one live
// peer, bucket by bucket (Store::BucketDigests), pulls the records of the
// buckets that differ and applies them with last-writer-wins. A peer whose
// last heartbeat carried a store digest equal to this node's is not asked
// (Membership::StoreDigestOf): an idle cluster's rounds cost no call. Nor
// does a busy one's: while records are written or applied here (a burst the
// replication log is carrying), a round would make both sides scan their
// whole store for its digests and read whole buckets the log is about to
// make equal, so rounds wait until a round's period passed without a write
// here, or the busy interval (10 s) since the last. The peer does the same with
// others, so every pair converges even where pushes missed something (a
// replication log truncated while a node was away).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "consistency/store.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/peer/periodic.h"
#include "nodeagent/sync/record_codec.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

class AntiEntropy {
 public:
  using AppliedFn = std::function<void(Cf, const std::string&)>;
  // on_round_end(ns keys) runs after each round, finished or cut short, with
  // the ns keys whose records won in it: buckets arrive in hash order, so a
  // directory's tombstone may come before its entries'; only at the end of a
  // round is a tree worth checking (TreeRepair).
  using RoundEndFn = std::function<void(const std::vector<std::string>&)>;
  AntiEntropy(Store& store, Membership& members, PeerNetwork& network, AppliedFn on_applied,
              RoundEndFn on_round_end = {}, std::chrono::milliseconds period = std::chrono::seconds(2));
  ~AntiEntropy();
  // Every period, a round with a live peer picked at random, until Stop.
  // What records from peers may be (sync/record_codec.h); before Start.
  void set_peer_record_rules(PeerRecordRules rules) { rules_ = rules; }
  void Start();
  void Stop();
  // One round with peer: compares bucket digests, pulls and applies the
  // records of every bucket that differs. Returns how many records won here.
  Result<uint64_t> RoundWith(const PeerAddress& peer);

  // The BucketDigests and ReadBucket calls, as this node answers them.
  Status OnBucketDigests(const v1::BucketDigestsRequest& req, v1::BucketDigestsResponse* resp);
  Status OnReadBucket(const v1::ReadBucketRequest& req, v1::ReadBucketResponse* resp);

  uint64_t repaired() const { return repaired_; }
  // One round (the loop's) with a live peer picked at random among those
  // whose last heartbeat did not say their store is this node's; none when
  // this node's store was written since the last call and a round was made
  // within busy_every (below).
  void Round();
  // How often rounds are made while this node's store is being written;
  // before Start (tests).
  void set_busy_rounds_every(std::chrono::milliseconds every) { busy_every_ = every; }

 private:
  // RoundWith's work; *ns_won collects the ns keys whose records won, also
  // when the round is cut short.
  Result<uint64_t> Compare(PeerLink& peer, const std::string& node_id, std::vector<std::string>* ns_won);
  // Applies one page of a bucket; returns how many records won.
  Result<uint64_t> ApplyPage(const v1::ReadBucketResponse& page, std::vector<std::string>* ns_won);

  Store& store_;
  Membership& members_;
  PeerNetwork& network_;
  AppliedFn on_applied_;
  PeerRecordRules rules_;
  // A record the rules refuse comes again every round its bucket differs:
  // it is logged once (a warning), then at debug level.
  void NoteRefused(const std::string& key, const Status& why);
  static constexpr size_t kMaxRefusedLogged = 4096;
  std::mutex refused_mu_;
  std::set<std::string> refused_logged_;
  RoundEndFn on_round_end_;
  std::chrono::milliseconds period_;
  std::atomic<uint64_t> repaired_{0};
  Cancellation stopped_;  // every call to a peer takes it: Stop cuts the one under way short
  std::mt19937 rng_{std::random_device{}()};  // the round thread's
  std::chrono::milliseconds busy_every_ = std::chrono::seconds(10);
  uint64_t commits_seen_ = 0;  // the round thread's: the store's commits() after the last Round
  // The round thread's: the last round made, or look at the digests.
  std::optional<std::chrono::steady_clock::time_point> last_round_;
  PeriodicThread rounds_thread_;
};

}  // namespace onebox

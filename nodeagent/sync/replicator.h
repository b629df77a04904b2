// Replication of the store between agents (the push half). Every local write
// of a versioned family is in the store's replication log (same WriteBatch).
// A pusher thread per member (from the first time it is alive; it waits out
// the member's absences) streams it the log entries after the last
// one it acknowledged (kept in the store, so a restart resumes where it
// stopped) over Peer/ReplicateStream: batches of up to 1000 entries, at most
// kWindow of them unanswered, each answered once applied, so a slow peer
// slows its pusher down and nothing queues without bound. A stream stays open
// while there is traffic and closes after a quiet while. A watchdog cancels a
// stream that makes no progress for 2 s (a hung or cut-off peer), so a
// pusher never blocks for long; a slow or gone peer holds up nobody else.
// The receiver applies with last-writer-wins (Store::Apply), so order,
// duplicates and replays are harmless. A member that was down or unreachable
// catches up when it is alive again; one away past the log's retention is
// repaired by anti-entropy. A batch carries the content of its new files to
// the members that should hold a copy (ContentTransfer::Holders; up to 2 MiB
// in the batch, the rest just before it), so they can put whole files in
// their views.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "consistency/store.h"
#include "nodeagent/peer/clock.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/sync/record_codec.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

class Replicator {
 public:
  // on_applied(family, key) runs for every peer record that won here.
  using AppliedFn = std::function<void(Cf, const std::string&)>;
  // The log keeps what some known member has not acknowledged, at most
  // log_retain entries; a member that misses more is repaired by anti-entropy.
  // Stuck streams, quiet streams and log truncation are timed by clock.
  Replicator(Store& store, Membership& members, ContentTransfer& content, PeerNetwork& network, uint64_t self_node_id,
             AppliedFn on_applied, uint64_t log_retain = 1'000'000, Clock& clock = SteadyClock());
  ~Replicator();
  // What records from peers may be (sync/record_codec.h); before Start.
  void set_peer_record_rules(PeerRecordRules rules) { rules_ = rules; }
  void Start();
  void Stop();
  // Membership saw the live set change: a member alive now gets its pusher
  // now, not at the loop's next round.
  void PeersChanged();
  // fsync(): sends path's current record (and its content) to other live
  // members, holders first, until `acks` of them have applied it with a
  // synced write. Unavailable, saying how far it got, when too few answer;
  // IOError when path has no live record any more.
  Status ReplicateNow(const std::string& path, size_t acks);
  // A directory lease's handover (sync/dir_leases.h): sends peer this
  // node's log entries of dir's own entries that it has not acknowledged
  // (what its pusher has on the way or still to send), and returns once the
  // peer applied them.
  Status SendEntriesOf(const PeerAddress& peer, const std::string& dir);
  // Returns once member node_id has applied this node's log up to seq (as
  // its pusher's acknowledgements say); Unavailable after timeout.
  // The exit of a placed job waits so for its home (process/run_executor.h).
  Status WaitApplied(const std::string& node_id, uint64_t seq, std::chrono::milliseconds timeout);
  // The Replicate call (and each batch of a ReplicateStream): apply a peer's
  // batch; the answer says how many won and the batch's last sequence number.
  // A stream's batches come in log order (in_order): they also move how far
  // this node has applied the sender's log (AppliedFrom).
  Status OnReplicate(const v1::ReplicateRequest& req, v1::ReplicateResponse* resp, bool in_order = false);
  // Returns once this node has applied node_id's log up to seq (its stream's
  // batches so far); Unavailable after timeout. A lock granted here after
  // node_id released it waits so for what node_id wrote (locks/node_locks.h).
  Status WaitAppliedFrom(const std::string& node_id, uint64_t seq, std::chrono::milliseconds timeout);

  // Store API levels. A write at QUORUM or ALL: sends key's record (family
  // space, tombstone included) to the other live members, all at once, until
  // `acks` of them applied it (synced if sync). Unavailable, saying how far it
  // got, when too few answer within 2 s.
  Status ReplicateKey(Cf space, const std::string& key, size_t acks, bool sync);
  // A read at QUORUM: asks the other live members for key's record until
  // `answers` of them replied, and returns the newest of theirs and this
  // node's (NotFound when none holds one), keeping it here if it is newer.
  // Unavailable when too few reply within 2 s.
  Result<Record> ReadQuorum(Cf space, const std::string& key, size_t answers);
  // The ReadRecord call.
  Status OnReadRecord(const v1::ReadRecordRequest& req, v1::ReadRecordResponse* resp);
  // For status: how far each other member known (dead ones too) is behind
  // this node's log.
  std::vector<v1::ReplicationLag> Lags();
  // Drops the log entries every member known (dead ones too) has, and in
  // any case all but the newest log_retain; while a seed has not been heard
  // from (a member whose id is not known yet), only the latter; while this
  // node never had another member, all but the newest 100,000. The loop
  // does it every second while it works.
  void TruncateLog();

 private:
  void Loop();
  uint64_t Acked(const std::string& node_id);
  struct Pusher {
    std::thread thread;
    std::mutex stream_mu;
    Cancellation* stream = nullptr;         // of the open stream, if any (with stream_mu)
    std::atomic<int64_t> blocked_since{0};  // steady ms when a stream call began; 0: none under way
  };
  // Streams node_id the entries it lacks until it has them all and the
  // stream has been quiet a while, or the stream fails.
  void StreamTo(const std::string& node_id, const std::string& address, Pusher* self);
  // A peer whose position is older than the log's first entry is moved to it
  // (anti-entropy repairs what it missed).
  void SkipPastRetention(const std::string& node_id, uint64_t* sent);
  // The peer applied the log up to seq: kept here and in the store.
  void KeepAcked(const std::string& node_id, uint64_t seq);
  // The log entries after `after` as one batch, their new content pushed first.
  bool NextBatch(const std::string& node_id, const std::string& address, uint64_t after, v1::ReplicateRequest* req);
  // Cancels the streams that have made no progress for too long, or whose
  // peer is gone, or all of them when stopping.
  void Watchdog();
  void PusherLoop(const std::string& node_id, Pusher* self);
  bool StreamsOpen();  // a pusher streams or waits on its peer; the loop thread only
  // There may be work for the loop (chunks to flush, a stream to time, new
  // members): a resting loop goes to a round at once, a loop at work at its
  // next round (within kRound), or at once with at_once.
  void WakeLoop(bool at_once = false);
  uint64_t Logged();
  uint64_t PeersSeen();

  // The other live members, holders of path's content first.
  std::vector<PeerAddress> HoldersFirst(const std::string& path);
  // The records fsync sends: path's directories that this node holds, then path's own.
  v1::ReplicateRequest PublishBatch(const std::string& path, const Record& record);

  Store& store_;
  Membership& members_;
  ContentTransfer& content_;
  PeerNetwork& network_;
  Clock& clock_;
  AppliedFn on_applied_;
  PeerRecordRules rules_;
  uint64_t log_retain_;
  Clock::time_point last_truncate_{};
  std::string self_;
  std::map<std::string, std::unique_ptr<Pusher>> pushers_;  // by peer; the loop thread only
  std::condition_variable push_cv_;                          // with mu_: new entries to push (logged_ moved)
  std::mutex acked_mu_;
  std::condition_variable acked_cv_;       // with acked_mu_: a position moved
  bool waits_end_ = false;                 // with acked_mu_: stopping
  std::map<std::string, uint64_t> acked_;  // pushers, one thread per peer at a time
  std::map<std::string, uint64_t> applied_from_;  // with acked_mu_: peers' logs applied here, by their streams
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool loop_woken_ = false;     // WakeLoop() since the loop last looked
  bool loop_resting_ = false;   // the loop waits for a commit or a change (no work left)
  uint64_t peers_changes_ = 0;  // PeersChanged() calls: pushers waiting for their member look again
  bool stopped_ = false;  // Stop() ran
  uint64_t logged_ = 0;  // commits that added to the log (Store::set_log_observer); with mu_
  std::thread thread_;
};

}  // namespace onebox

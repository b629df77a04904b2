// Replication of the store between agents (the push half). Every local write
// of a versioned family is in the store's replication log (same WriteBatch).
// A pusher sends each member now alive the log entries after the last one it
// acknowledged (kept in the store, so a restart resumes where it stopped), in
// batches of up to 1000, looking for new entries every 5 ms (a thread per
// live peer, so a slow one holds up nobody else); the receiver applies them with
// last-writer-wins (Store::Apply), so order, duplicates and replays are
// harmless. A member that was down or unreachable catches up when it is alive
// again. Before a batch, the content of its new files goes to the members that
// should hold a copy (ContentTransfer::Holders), so they can put whole files
// in their views. Not yet: anti-entropy for what pushes cannot repair (a log
// entry lost to a crash before its sync), log truncation.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/content.h"
#include "nodeagent/membership.h"
#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {

class Replicator {
 public:
  // on_applied(family, key) runs for every peer record that won here.
  using AppliedFn = std::function<void(Cf, const std::string&)>;
  // The log keeps what some known member has not acknowledged, at most
  // log_retain entries; a member that misses more is repaired by anti-entropy.
  Replicator(Store& store, Membership& members, ContentTransfer& content, uint64_t self_node_id, AppliedFn on_applied,
             uint64_t log_retain = 1'000'000);
  ~Replicator();
  void Start();
  void Stop();
  // fsync(): sends path's current record (and its content) to other live
  // members, holders first, until `acks` of them have applied it with a
  // synced write. Unavailable, saying how far it got, when too few answer.
  Status ReplicateNow(const std::string& path, size_t acks);
  // The Replicate RPC: apply a peer's batch.
  grpc::Status OnReplicate(const v1::ReplicateRequest& req, v1::ReplicateResponse* resp);

 private:
  void Loop();
  uint64_t Acked(const std::string& node_id);
  void PushTo(const std::string& node_id, const std::string& address);
  struct Pusher {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void PusherLoop(const std::string& node_id, Pusher* self);
  void TruncateLog();

  Store& store_;
  Membership& members_;
  ContentTransfer& content_;
  AppliedFn on_applied_;
  uint64_t log_retain_;
  std::chrono::steady_clock::time_point last_truncate_{};
  std::string self_;
  std::map<std::string, std::unique_ptr<Pusher>> pushers_;  // by peer; the loop thread only
  uint64_t announced_ = 0;                                   // the loop thread only
  std::condition_variable push_cv_;                          // with mu_: new entries to push
  std::mutex acked_mu_;
  std::map<std::string, uint64_t> acked_;  // pushers, one thread per peer at a time
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace onebox

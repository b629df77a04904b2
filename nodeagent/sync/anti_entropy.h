// Anti-entropy: every few seconds an agent compares its records with one live
// peer, bucket by bucket (Store::BucketDigests), pulls the records of the
// buckets that differ and applies them with last-writer-wins. The peer does
// the same with others, so every pair converges even where pushes missed
// something (a replication log truncated while a node was away).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/peer/membership.h"
#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {

class AntiEntropy {
 public:
  using AppliedFn = std::function<void(Cf, const std::string&)>;
  // on_round_end(ns keys) runs after each round, finished or cut short, with
  // the ns keys whose records won in it: buckets arrive in hash order, so a
  // directory's tombstone may come before its entries'; only at the end of a
  // round is a tree worth checking (TreeRepair).
  using RoundEndFn = std::function<void(const std::vector<std::string>&)>;
  AntiEntropy(Store& store, Membership& members, ContentTransfer& content, AppliedFn on_applied,
              RoundEndFn on_round_end = {}, std::chrono::milliseconds period = std::chrono::seconds(2));
  ~AntiEntropy();
  void Start();
  void Stop();

  grpc::Status OnBucketDigests(const v1::BucketDigestsRequest& req, v1::BucketDigestsResponse* resp);
  grpc::Status OnReadBucket(const v1::ReadBucketRequest& req, v1::ReadBucketResponse* resp);

  uint64_t repaired() const { return repaired_; }

 private:
  void Loop();
  // One comparison with the peer at address; returns the records it repaired.
  Result<uint64_t> RoundWith(const std::string& node_id, const std::string& address,
                             std::vector<std::string>* ns_won);
  // Around each call to the peer: Stop cancels the one under way. Begin is
  // false once stopping.
  bool Begin(grpc::ClientContext* ctx);
  void End();

  Store& store_;
  Membership& members_;
  ContentTransfer& content_;
  AppliedFn on_applied_;
  RoundEndFn on_round_end_;
  std::chrono::milliseconds period_;
  std::atomic<uint64_t> repaired_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  grpc::ClientContext* call_ = nullptr;  // with mu_: the call to a peer under way
  std::thread thread_;
};

}  // namespace onebox

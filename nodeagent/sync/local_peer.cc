#include "nodeagent/sync/local_peer.h"

#include <deque>

#include "nodeagent/locks/node_locks.h"

namespace onebox {

namespace {

class LocalReplicateStream final : public ReplicateStream {
 public:
  LocalReplicateStream(Replicator& replicator, Cancellation* cancellation)
      : replicator_(replicator), cancellation_(cancellation) {}
  bool Write(const v1::ReplicateRequest& batch) override {
    if (!Open()) return false;
    v1::ReplicateResponse answer;
    status_ = replicator_.OnReplicate(batch, &answer, /*in_order=*/true);
    if (status_.ok()) answers_.push_back(std::move(answer));
    return status_.ok();
  }
  bool Read(v1::ReplicateResponse* answer) override {
    if (!Open() || answers_.empty()) return false;
    *answer = std::move(answers_.front());
    answers_.pop_front();
    return true;
  }
  bool WritesDone() override { return Open(); }
  Status Finish() override {
    if (!status_.ok()) return status_;
    return Open() ? Status::Ok() : Status::Unavailable("cancelled");
  }

 private:
  bool Open() const { return status_.ok() && (cancellation_ == nullptr || !cancellation_->cancelled()); }
  Replicator& replicator_;
  Cancellation* cancellation_;
  Status status_;
  std::deque<v1::ReplicateResponse> answers_;
};

}  // namespace

std::unique_ptr<ReplicateStream> LocalPeer::OpenReplicateStream(Cancellation* cancellation) {
  return std::make_unique<LocalReplicateStream>(replicator_, cancellation);
}

Status LocalPeer::ReturnLockLease(const v1::ReturnLockLeaseRequest& req, v1::LockResponse* resp, const CallOptions&) {
  if (node_locks_ == nullptr) return Status::Unimplemented("this node keeps no locks");
  return node_locks_->OnReturnLease(req, resp);
}

}  // namespace onebox

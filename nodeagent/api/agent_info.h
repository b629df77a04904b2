// What the agent's services report about the node they run on, and how a
// record's version is shown to clients.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "consistency/record.h"
#include "naming/node_identity.h"
#include "onebox/v1/cluster.pb.h"
#include "onebox/v1/store.pb.h"

namespace onebox {

struct AgentInfo {
  NodeIdentity identity;
  std::string data_dir;
  std::string socket_path;
  std::chrono::steady_clock::time_point started;
  std::function<uint64_t()> chunks_hashed_ahead;  // set once the recorder runs
  // The view's digest and repairs (view/view_audit.h); set once the view runs.
  std::function<Result<std::string>()> view_digest;
  std::function<uint64_t()> view_repairs;
  // Set once the cluster parts exist.
  std::function<std::vector<v1::ReplicationLag>()> replication_lag;
  struct LeaseCounts {
    uint64_t won = 0, recalled = 0, decided = 0;  // DirLeases' counters
  };
  std::function<LeaseCounts()> leases;
  std::function<void(v1::StatusResponse*)> jobs;           // placement at exec: jobs_* of the status
  std::function<std::vector<v1::ClusterPort>()> ports;     // the live cluster ports (sockets/port_table.h)

  // The gRPC address is known only once gRPC has bound (port 0 picks one),
  // after the services may already answer: hence the lock.
  std::string grpc_address() const {
    std::lock_guard lock(mu_);
    return grpc_address_;
  }
  void set_grpc_address(std::string a) {
    std::lock_guard lock(mu_);
    grpc_address_ = std::move(a);
  }

 private:
  mutable std::mutex mu_;
  std::string grpc_address_;
};

inline v1::Version ToProto(const Version& v) {
  v1::Version p;
  p.set_hlc(v.hlc);
  p.set_node_id(NodeIdHex(v.node));
  return p;
}

}  // namespace onebox

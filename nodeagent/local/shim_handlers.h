// The agent's answers to the shim: one handler per request kind of the list
// in local/shim_requests.h, each doing its work through the part that owns
// it (the recorder, the materializer, the symlink guard, the directory leases, the
// replicator). A handler returns a Status; its errno (api/status_codes.h)
// becomes the errno of the intercepted call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "consistency/status.h"
#include "nodeagent/api/agent_info.h"
#include "nodeagent/api/local_calls.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/local/shim_requests.h"
#include "nodeagent/local/shim_server.h"
#include "nodeagent/locks/node_locks.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/process/cluster_processes.h"
#include "nodeagent/process/placement.h"
#include "nodeagent/process/run_relay.h"
#include "nodeagent/sockets/port_relay.h"
#include "nodeagent/sockets/port_table.h"
#include "nodeagent/sync/dir_leases.h"
#include "nodeagent/sync/replicator.h"
#include "nodeagent/view/detached_view.h"
#include "nodeagent/view/symlink_guard.h"
#include "nodeagent/view/view_materializer.h"
#include "nodeagent/view/view_recorder.h"

namespace onebox {

class ShimHandlers {
 public:
  struct Parts {
    const AgentInfo& info;
    ViewRecorder& recorder;
    ViewMaterializer& materializer;
    SymlinkGuard& guard;
    DirLeases& leases;
    Replicator& replicator;
    Membership& members;
    const LocalCalls& local_calls;  // kCall's methods
    ClusterProcesses& processes;    // where a run goes
    RunRelays& runs;
    Placement& placement;  // where an exec ONEBOX_PLACE places goes
    PortTable& ports;      // bind() of a cluster port
    PortRelay& relay;      // connect() to another node's port
    NodeLocks& locks;      // flock, fcntl locks, lockf
    std::string front;     // the `onebox` binary (the stand-in), for the shim to exec
    int state_page_fd;  // sent with Hello's answer; never closed here
    DetachedView& detached_view;  // the view as a descriptor, for other mount namespaces
    size_t replication_factor;
    size_t write_quorum;  // 0: a majority of the replicas (peer/quorum.h)
  };
  explicit ShimHandlers(Parts parts) : parts_(parts) {}

  // ShimServer's handler and close handler.
  void Serve(ShimCall& call, const v1::ShimRequest& req, v1::ShimResponse* resp);
  void ConnectionClosed(uint64_t connection);
  // Returns once every answer under way is sent: before the parts go.
  void Drain();

 private:
  // What a handler knows of its caller. call: the request's own, for inline
  // handlers (to attach a descriptor or defer); nullptr on the pool.
  struct Origin {
    PeerCred peer;
    uint64_t connection;
    ShimCall* call;
  };
#define ONEBOX_SHIM_HANDLER(op, handler, runs, what) \
  Status handler(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp);
  ONEBOX_SHIM_REQUESTS(ONEBOX_SHIM_HANDLER)
#undef ONEBOX_SHIM_HANDLER
  Status ClusterCwd(v1::RunStart* start) const;
  // Claim's part that may take a vote or a recall (on the pool), and its answer.
  Status ClaimByVote(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp);
  static Status Claimed(Status s, v1::ShimResponse* resp);
  // The caller the kernel named on the socket, as the API's gate takes it.
  static onebox::Caller CallerOf(const Origin& origin);
  using Handler = Status (ShimHandlers::*)(const Origin&, const v1::ShimRequest&, v1::ShimResponse*);
  // kind names the request in the metrics (its handler's name).
  void Run(ShimRuns runs, Handler handler, const char* kind, ShimCall& call, const v1::ShimRequest& req,
           v1::ShimResponse* resp);

  Parts parts_;
  WorkPool work_{4, "onebox-shim"};
  WorkPool announce_work_{1, "onebox-announce"};  // symlink announcements in the first 400 ms
  WorkPool calls_work_{4, "onebox-calls"};        // kCalls: the CLI's writes
};

}  // namespace onebox

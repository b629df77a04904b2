// The cluster's process table and signals across nodes. Process/List asks
// every live node for its processes at once (Peer/ListProcesses; this node
// scans its own /proc, process/proc_table.h) and merges their answers; a node
// that does not answer within the deadline is named, not waited for.
// Process/Signal routes a gpid to its node by the index in it
// (proto/gpid.h): this node's are signalled here, another's through
// Peer/SignalProcess with the caller's credentials, and that node applies
// the kernel's rule for them (process/signal_as.h). A gpid whose node is
// unknown or dead names no process: NotFound (ESRCH).
#pragma once

#include <string>

#include "consistency/status.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "nodeagent/process/proc_table.h"
#include "nodeagent/process/run_executor.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

class ClusterProcesses {
 public:
  ClusterProcesses(Membership& members, PeerNetwork& network, std::string node_name, ProcSource source = {})
      : members_(members), network_(network), node_name_(std::move(node_name)), source_(std::move(source)) {}

  // Process/List: the table of every live node, or of req.node (a name or
  // an index: NotFound when no member has it, Unavailable when it is dead).
  Status List(const v1::ListProcessesRequest& req, v1::ListProcessesResponse* resp);
  // Process/Signal for a caller of this node, whose credentials the kernel gave.
  Status Signal(const v1::CallerCredentials& caller, const v1::SignalRequest& req);

  // The member named wanted (a name or an index; "": this node), alive:
  // NotFound when no member has it, Unavailable when it is dead.
  Result<v1::Node> LiveNode(const std::string& wanted);
  // The runs this node is running, whose homes ps shows.
  void set_runs(const RunExecutor& runs) { runs_ = &runs; }

  // Peer/ListProcesses: this node's processes.
  Status OnListProcesses(const v1::ListProcessesRequest& req, v1::ListProcessesResponse* resp);
  // Peer/SignalProcess: a caller of another node signals one of ours.
  Status OnSignalProcess(const v1::PeerSignalRequest& req);

 private:
  // The other member that has index, alive; NotFound when none does.
  Result<v1::Node> NodeWithIndex(uint32_t index);
  // Signals a process of this node (pid local, negative for a group).
  Status SignalHere(const v1::CallerCredentials& caller, int64_t pid, const v1::SignalRequest& req);

  Membership& members_;
  PeerNetwork& network_;
  const std::string node_name_;
  const ProcSource source_;
  const RunExecutor* runs_ = nullptr;
};

}  // namespace onebox

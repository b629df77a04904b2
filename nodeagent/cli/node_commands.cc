#include <iostream>

#include <fmt/format.h>

#include "consistency/hlc.h"
#include "nodeagent/api/node_state.h"
#include "nodeagent/cli/commands.h"
#include "onebox/v1/cluster.grpc.pb.h"

namespace onebox {

int CmdStatus(const ClientOptions& o) {
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::StatusResponse r;
  grpc::Status s = v1::Cluster::Stub(c.channel()).Status(c.Context().get(), v1::StatusRequest(), &r);
  if (!s.ok()) return Fail(c.RpcError(s));
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  const v1::Node& n = r.node();
  std::cout << fmt::format("node       {} ({})\n", n.name(), n.node_id())
            << fmt::format("state      {}\n", NodeStateName(n.state()))
            << fmt::format("address    {}\n", n.address())
            << fmt::format("socket     {}\n", r.socket_path())
            << fmt::format("data dir   {}\n", r.data_dir())
            << fmt::format("version    {}\n", r.version())
            << fmt::format("uptime     {}s\n", r.uptime_seconds())
            << fmt::format("clock      {}\n", hlc::Format(r.hlc()))
            << fmt::format("keys       ~{}\n", r.store().estimated_keys())
            << fmt::format("digest     {} ({} records)\n", r.state_digest().substr(0, 16), r.records())
            << fmt::format("view       {} ({} repaired)\n", r.view_digest().substr(0, 16), r.view_repairs())
            << fmt::format("hashed     {} chunks while their files were written\n", r.chunks_hashed_ahead())
            << fmt::format("load       {:.2f} on {} cpus{}, {} MiB of {} MiB free\n", n.load().loadavg_1m(),
                           n.load().cpus(),
                           n.load().cpu_quota() > 0 ? fmt::format(" ({:.2f} by its cgroup's quota)", n.load().cpu_quota())
                                                    : "",
                           n.load().mem_available_bytes() >> 20, n.load().mem_total_bytes() >> 20)
            << fmt::format("leases     {} won, {} given up to other nodes; {} exclusive creates decided by the agent\n",
                           r.leases_won(), r.leases_recalled(), r.creates_decided())
            << fmt::format("jobs       {} placed out ({} running), {} taken in ({} running)\n", r.jobs_placed_out(),
                           r.jobs_out_now(), r.jobs_taken_in(), r.jobs_in_now());
  for (const v1::ReplicationLag& lag : r.replication())
    std::cout << fmt::format("lag        {}: {} entries behind{}\n", lag.name().empty() ? lag.node_id() : lag.name(),
                             lag.entries_behind(),
                             lag.entries_behind() == 0 ? "" : fmt::format(", oldest {} ms", lag.lag_ms()));
  return kExitOk;
}

int CmdNodes(const ClientOptions& o) {
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::ListNodesResponse r;
  grpc::Status s = v1::Cluster::Stub(c.channel()).ListNodes(c.Context().get(), v1::ListNodesRequest(), &r);
  if (!s.ok()) return Fail(c.RpcError(s));
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  std::cout << fmt::format("{:<5} {:<20} {:<16} {:<8} {:<22} {}\n", "INDEX", "NAME", "NODE ID", "STATE", "ADDRESS",
                           "LOAD");
  for (const v1::Node& n : r.nodes()) {
    std::cout << fmt::format("{:<5} {:<20} {:<16} {:<8} {:<22} {:.2f}{}\n", n.index(), n.name(), n.node_id(),
                             NodeStateName(n.state()), n.address(), n.load().loadavg_1m(),
                             n.self() ? "  (this node)" : "");
  }
  return kExitOk;
}

}  // namespace onebox

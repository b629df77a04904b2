// onebox ports: the cluster's ports (Cluster/ListPorts), a TCP port a
// program bound on one node and every node reaches (nodeagent/sockets/).
#include <pwd.h>

#include <iostream>

#include <fmt/format.h>

#include "nodeagent/cli/commands.h"
#include "onebox/v1/cluster.grpc.pb.h"

namespace onebox {

int CmdPorts(const ClientOptions& o) {
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::ListPortsResponse r;
  grpc::Status s = v1::Cluster::Stub(c.channel()).ListPorts(c.Context().get(), v1::ListPortsRequest(), &r);
  if (!s.ok()) return Fail(c.RpcError(s));
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  std::cout << fmt::format("{:<6} {:<12} {:>10} {:<10} {:<8} {}\n", "PORT", "NODE", "GPID", "USER", "SINCE", "PATH");
  for (const v1::ClusterPort& p : r.ports()) {
    struct passwd pw, *found = nullptr;
    char buf[1024];
    std::string user = getpwuid_r(p.uid(), &pw, buf, sizeof buf, &found) == 0 && found != nullptr
                           ? std::string(found->pw_name)
                           : std::to_string(p.uid());
    // A Unix socket under the cluster root: its path, and no port.
    std::cout << fmt::format("{:<6} {:<12} {:>10} {:<10} {:<8} {}\n", p.path().empty() ? std::to_string(p.port()) : "-",
                             p.node(), p.gpid(), user, StartText(p.since_unix_ms()),
                             p.path().empty() ? "" : "/" + p.path());
  }
  return kExitOk;
}

}  // namespace onebox

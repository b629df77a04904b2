// `onebox ca init` and `onebox cert issue`: the cluster CA and its
// certificates (tls/cluster_ca.h), for agents (--cacert, --cert, --key)
// and for operators' clients.
#include <iostream>

#include "nodeagent/cli/commands.h"
#include "nodeagent/tls/cluster_ca.h"

namespace onebox {

int CmdCaInit(const std::string& dir, const std::string& cluster_name, int days) {
  if (Status s = InitClusterCa(dir, cluster_name, days); !s.ok()) return Fail(s);
  std::cout << "made the cluster CA in " << dir << ": " << kCaCertFile << " goes to every node and client (--cacert), "
            << kCaKeyFile << " signs certificates: keep it off the nodes\n";
  return kExitOk;
}

int CmdCertIssue(const CertRequest& request) {
  Result<std::string> cert = IssueCert(request);
  if (!cert.ok()) return Fail(cert.status());
  std::cout << "issued " << *cert << " and its key " << request.out_dir << "/" << request.name << ".key ("
            << TlsRoleName(request.role) << " certificate, " << request.days << " days)\n";
  return kExitOk;
}

}  // namespace onebox

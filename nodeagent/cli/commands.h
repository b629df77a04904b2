// The CLI's commands, by group: node (status, nodes), kv (get, put, del,
// scan), file (versions, restore), process (ps, kill), exec, TLS (ca init, cert issue). Each returns the process's exit
// code (client.h). cli/cli.h parses argv into these.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nodeagent/cli/client.h"
#include "nodeagent/tls/cluster_ca.h"

namespace onebox {

// node_commands.cc
int CmdStatus(const ClientOptions& c);
int CmdNodes(const ClientOptions& c);
// The cluster's ports (Cluster/ListPorts): port, node, owner gpid, user, since.
int CmdPorts(const ClientOptions& c);

// kv_commands.cc
struct KvPutOptions {
  std::string key;
  std::string value;
  bool from_stdin = false;
  bool sync = false;
  std::string level = "one";
};
struct KvScanOptions {
  std::string prefix;
  uint32_t limit = 100;  // 0: every key
  bool keys_only = false;
};
// level: "local" or "quorum".
int CmdKvGet(const ClientOptions& c, const std::string& key, const std::string& level = "local");
int CmdKvPut(const ClientOptions& c, const KvPutOptions& o);
int CmdKvDel(const ClientOptions& c, const std::string& key, bool sync, const std::string& level);
int CmdKvScan(const ClientOptions& c, const KvScanOptions& o);

// file_commands.cc: the versions of a cluster path this node holds, and putting one back.
int CmdVersions(const ClientOptions& c, const std::string& path);
int CmdRestore(const ClientOptions& c, const std::string& path, const std::string& version);

// process_commands.cc: the cluster's process table, and signals to any of its processes.
struct PsOptions {
  std::string node;  // a name or an index; empty: every live node
  std::string user;  // a name or a uid; empty: every user
  bool all = false;  // every process, not only those under onebox
};
int CmdPs(const ClientOptions& c, const PsOptions& o);
// args as kill(1) takes them: [-s SIGNAL | -SIGNAL] GPID...
int CmdKill(const ClientOptions& c, const std::vector<std::string>& args);
// A start time (Unix ms) as ps shows it: "14:03:12" today, "Nov30" before.
std::string StartText(int64_t ms);

// exec_command.cc: runs argv under the shim (LD_PRELOAD, ONEBOX_SOCKET set);
// returns only on failure (127).
// place: ONEBOX_PLACE for CMD and its children ("": as inherited).
int CmdExec(const std::string& socket, const std::string& place, const std::vector<std::string>& argv);

// tls_commands.cc: the cluster CA (`ca init`) and its certificates (`cert issue`).
int CmdCaInit(const std::string& dir, const std::string& cluster_name, int days);
int CmdCertIssue(const CertRequest& request);

}  // namespace onebox

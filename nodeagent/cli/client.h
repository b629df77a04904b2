// The `onebox` client commands (status, nodes, versions, restore, kv ...): gRPC calls to an agent,
// reached by --agent HOST:PORT or through the shim socket (--socket PATH, which
// tells the agent's gRPC address). Output is human-readable, or the response's
// protobuf JSON with -o json. Exit codes: 0 ok, 1 error, 2 usage.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace onebox {

struct ClientOptions {
  std::string agent;   // HOST:PORT; empty when socket is set
  std::string socket;  // shim socket to ask for the agent's address
  bool json = false;
  double timeout_seconds = 5;
};

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

int CmdStatus(const ClientOptions& c);
int CmdNodes(const ClientOptions& c);
// The versions of a cluster path this node holds, and putting one back.
int CmdVersions(const ClientOptions& c, const std::string& path);
int CmdRestore(const ClientOptions& c, const std::string& path, const std::string& version);
// level: "local" or "quorum".
int CmdKvGet(const ClientOptions& c, const std::string& key, const std::string& level = "local");
int CmdKvPut(const ClientOptions& c, const KvPutOptions& o);
int CmdKvDel(const ClientOptions& c, const std::string& key, bool sync, const std::string& level);
int CmdKvScan(const ClientOptions& c, const KvScanOptions& o);
// Runs argv under the shim (LD_PRELOAD, ONEBOX_SOCKET set); returns only on failure (127).
int CmdExec(const std::string& socket, const std::vector<std::string>& argv);

}  // namespace onebox

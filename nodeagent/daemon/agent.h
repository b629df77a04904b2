// `onebox agent`: the node agent daemon. Owns the data dir (exclusive lock,
// node identity, RocksDB store), serves gRPC (onebox.v1 services, health,
// reflection) and the shim's Unix socket, and shuts down cleanly on SIGTERM or
// SIGINT.
#pragma once

#include <string>
#include <vector>

#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/tls/tls_identity.h"
#include "proto/shim_frame.h"

namespace onebox {

struct AgentOptions {
  std::string name;
  std::string data_dir = "/var/lib/onebox";
  std::string listen = "127.0.0.1:7070";
  std::string socket = kDefaultAgentSocket;
  std::string log_level = "info";
  std::vector<std::string> join;  // seed agents HOST:PORT to gossip with
  // Nodes that keep a copy of each file's content (the writer and RF-1 others).
  int replication_factor = 2;
  // Nodes on which fsync() makes a version durable before it returns; 0: a
  // majority of the file's replicas (2 of 2 by default). Never more than the
  // members known.
  int write_quorum = 0;
  // Replication log entries kept once every member has them or beyond which a
  // member that was away is repaired by anti-entropy instead.
  uint64_t log_retain = 1'000'000;
  // The cluster's join token (api/access.h): read from this file; peers'
  // calls must carry it, and this agent's carry it.
  std::string join_token_file;
  // Without a join token: --join allowed, and peer calls from anyone taken.
  bool insecure = false;
  // Take set-user-ID and set-group-ID files of root from peers (sync/record_codec.h).
  bool accept_root_setid_from_peers = false;
  // Placement at exec (process/placement.h): at most this many placed jobs
  // per CPU on a node.
  double place_jobs_per_cpu = 1.0;
  // Peers' entries queued from which placing them runs below this node's
  // programs until the queue is empty (daemon/catch_up.h); 1: whenever any waits.
  uint64_t catch_up_backlog = kCatchUpBacklog;
  // --cacert, --cert, --key: mutual TLS with peers and clients (tls/tls_identity.h).
  TlsFiles tls;
  // HOST:PORT where GET /metrics answers in Prometheus' text format; empty: none.
  std::string metrics;
};

// Runs until SIGTERM/SIGINT. Returns the process exit code: 0 after a clean
// shutdown, 1 when the agent cannot start (the reason logged in one line).
int RunAgent(const AgentOptions& options);

}  // namespace onebox

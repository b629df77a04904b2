#include "nodeagent/cli/cli.h"

#include <cstdlib>
#include <iostream>

namespace onebox {

namespace {
std::string EnvOr(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : fallback;
}
}  // namespace

Cli::Cli(CLI::App& app) {
  client_.agent = EnvOr("ONEBOX_AGENT", "localhost:7070");
  agent_opt_ = app.add_option("--agent", client_.agent, "agent gRPC address HOST:PORT (env ONEBOX_AGENT)")
                        ->capture_default_str();
  auto* socket_opt = app.add_option(
      "--socket", client_.socket,
      "reach the agent through its Unix socket PATH (env ONEBOX_SOCKET; kv put, kv del and restore always do)");
  agent_opt_->excludes(socket_opt);
  app.add_option("-o,--output", output_, "output format")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  app.add_option("--timeout", client_.timeout_seconds, "seconds to wait for the agent")
      ->check(CLI::Range(0.001, 86400.0))
      ->capture_default_str();
  AddNodeAndFileCommands(app);
  AddKvCommands(app);
  AddProcessCommands(app);
  AddTlsCommands(app);
  // grpcurl's names. The agent has options of these names too (its own files).
  app.add_option("--cacert", client_.tls.ca, "TLS to the agent: the cluster CA's certificate (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--cert", client_.tls.cert, "TLS to the agent: this client's certificate (PEM; admin for kv put over gRPC)")
      ->check(CLI::ExistingFile);
  app.add_option("--key", client_.tls.key, "TLS to the agent: that certificate's private key (PEM)")->check(CLI::ExistingFile);
}

void Cli::AddNodeAndFileCommands(CLI::App& app) {
  status_ = app.add_subcommand("status", "show the status of the agent");
  nodes_ = app.add_subcommand("nodes", "list the nodes of the cluster");
  ports_ = app.add_subcommand("ports", "list the cluster's ports: a TCP port a program bound on one node, reachable from all");
  versions_ = app.add_subcommand("versions", "list the versions of a cluster file this node holds");
  versions_->add_option("PATH", path_, "cluster path, e.g. /cluster/a/b")->required();
  restore_ = app.add_subcommand("restore", "make an earlier version of a cluster file current again");
  restore_->add_option("PATH", path_, "cluster path")->required();
  restore_->add_option("VERSION", version_, "HLC@NODE_ID, as `onebox versions` prints it")->required();
  exec_ = app.add_subcommand("exec", "run CMD under the shim, so that /cluster works in it");
  exec_->add_option("--place", exec_place_,
                    "place its compiles over the cluster (ONEBOX_PLACE: auto, off, or NODE[,NODE...])");
  exec_->add_option("CMD", exec_argv_, "command and its arguments (after --)")->required();
}

void Cli::AddKvCommands(CLI::App& app) {
  auto* kv = app.add_subcommand("kv", "read and write the cluster key-value store");
  kv->require_subcommand(1);
  kv_get_ = kv->add_subcommand("get", "print the value of KEY (exit 1 when absent)");
  kv_get_->add_option("KEY", key_, "key")->required();
  kv_get_->add_option("--level", read_level_, "read level")
      ->check(CLI::IsMember({"local", "quorum"}))
      ->capture_default_str();

  kv_put_ = kv->add_subcommand("put", "set KEY to VALUE (or to standard input with --stdin)");
  kv_put_->add_option("KEY", put_.key, "key")->required();
  put_value_ = kv_put_->add_option("VALUE", put_.value, "value");
  auto* put_stdin = kv_put_->add_flag("--stdin", put_.from_stdin, "read the value from standard input");
  put_value_->excludes(put_stdin);
  kv_put_->add_flag("--sync", put_.sync, "sync the write-ahead log before answering");
  kv_put_->add_option("--level", put_.level, "write level")
      ->check(CLI::IsMember({"one", "quorum", "all"}))
      ->capture_default_str();

  kv_del_ = kv->add_subcommand("del", "delete KEY");
  kv_del_->add_option("KEY", key_, "key")->required();
  kv_del_->add_flag("--sync", sync_, "sync the write-ahead log before answering");
  kv_del_->add_option("--level", level_, "write level")
      ->check(CLI::IsMember({"one", "quorum", "all"}))
      ->capture_default_str();

  kv_scan_ = kv->add_subcommand("scan", "list keys starting with PREFIX, in key order");
  kv_scan_->add_option("PREFIX", scan_.prefix, "key prefix (empty: every key)");
  kv_scan_->add_option("--limit", scan_.limit, "at most this many keys (0: all)")->capture_default_str();
  kv_scan_->add_flag("--keys-only", scan_.keys_only, "print keys without values");
}

void Cli::AddProcessCommands(CLI::App& app) {
  ps_ = app.add_subcommand("ps", "list the processes of every live node (those under onebox; --all: every one)");
  ps_->add_option("--node", ps_options_.node, "only this node (a name or an index)");
  ps_->add_option("--user", ps_options_.user, "only this user's (a name or a uid)");
  ps_->add_flag("--all", ps_options_.all, "every process, not only those under onebox");
  kill_ = app.add_subcommand("kill", "send a signal to processes of any node: kill [-s SIGNAL | -SIGNAL] GPID...");
  // -9, -TERM and negative group ids are kill(1)'s, not options: the words are parsed by CmdKill.
  kill_->prefix_command()->allow_extras()->fallthrough(false);
  // Served by the front (nodeagent/standin/), which hands every other command here; listed for --help.
  run_ = app.add_subcommand("run", "run CMD on a node of the cluster, as a local child (onebox run --help)");
  run_->prefix_command()->allow_extras()->fallthrough(false);
}

void Cli::AddTlsCommands(CLI::App& app) {
  auto* ca = app.add_subcommand("ca", "the cluster's certificate authority, for mutual TLS (docs/operations.md)");
  ca->require_subcommand(1);
  ca_init_ = ca->add_subcommand("init", "make a new cluster CA in DIR: ca.pem (for every node and client) and ca.key");
  ca_init_->add_option("DIR", ca_dir_, "directory (made when missing)")->required();
  ca_init_->add_option("--cluster", cluster_name_, "the cluster's name, in the CA's name")->capture_default_str();
  ca_init_->add_option("--days", ca_days_, "days the CA is valid")->check(CLI::Range(1, 36500))->capture_default_str();
  auto* cert = app.add_subcommand("cert", "certificates of the cluster CA");
  cert->require_subcommand(1);
  cert_issue_ = cert->add_subcommand("issue", "issue NAME.pem and NAME.key: a node's (default) or an admin's (--admin)");
  cert_issue_->add_option("--ca", cert_.ca_dir, "the CA's directory (onebox ca init)")->required()->check(CLI::ExistingDirectory);
  cert_issue_->add_option("NAME", cert_.name, "the node's name (or the operator's, with --admin)")->required();
  cert_issue_->add_flag("--admin", cert_admin_, "an admin's client certificate: may call mutating methods over gRPC");
  cert_issue_->add_option("--san", cert_.extra_names,
                          "another name or IP address for clients that check the host they dial (repeat)");
  cert_issue_->add_option("--out", cert_.out_dir, "where to write them")->check(CLI::ExistingDirectory)->capture_default_str();
  cert_issue_->add_option("--days", cert_.days, "days it is valid")->check(CLI::Range(1, 36500))->capture_default_str();
}

std::optional<int> Cli::Run() {
  client_.agent_given = agent_opt_->count() > 0;
  if (!client_.socket.empty()) client_.agent.clear();
  client_.json = output_ == "json";
  // The shim's socket: --socket, else $ONEBOX_SOCKET as it is, else the default.
  if (*ca_init_) return CmdCaInit(ca_dir_, cluster_name_, ca_days_);
  if (*cert_issue_) {
    cert_.role = cert_admin_ ? TlsRole::kAdmin : TlsRole::kNode;
    return CmdCertIssue(cert_);
  }
  if (*exec_) return CmdExec(client_.socket, exec_place_, exec_argv_);
  if (*ps_) return CmdPs(client_, ps_options_);
  if (*kill_) return CmdKill(client_, kill_->remaining());
  if (*status_) return CmdStatus(client_);
  if (*nodes_) return CmdNodes(client_);
  if (*ports_) return CmdPorts(client_);
  if (*versions_) return CmdVersions(client_, path_);
  if (*restore_) return CmdRestore(client_, path_, version_);
  if (*kv_get_) return CmdKvGet(client_, key_, read_level_);
  if (*kv_put_) {
    if (put_.value.empty() && !put_.from_stdin && put_value_->count() == 0) {
      std::cerr << "onebox: kv put needs a VALUE or --stdin\n";
      return kExitUsage;
    }
    return CmdKvPut(client_, put_);
  }
  if (*kv_del_) return CmdKvDel(client_, key_, sync_, level_);
  if (*kv_scan_) return CmdKvScan(client_, scan_);
  return std::nullopt;
}

}  // namespace onebox

// `onebox`: the node agent (`onebox agent ...`) and the CLI, one binary.
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/agent.h"
#include "nodeagent/cli/client.h"

namespace {

constexpr int kExitUsage = 2;

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "node";
  std::string h(buf);
  return h.substr(0, h.find('.'));
}

std::string EnvOr(const char* name, std::string fallback) {
  const char* v = std::getenv(name);
  return (v && *v) ? v : fallback;
}

void SetupLogging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("onebox");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

// CLI11 2.1 reads config files for the root app only, so the agent applies its
// own: keys at the top level or in an [agent] section, named like the flags.
// A flag given on the command line wins; an unknown key is an error.
std::string ApplyAgentConfig(CLI::App* agent, const std::string& path) {
  try {
    for (const CLI::ConfigItem& item : CLI::ConfigTOML().from_file(path)) {
      if (item.name == "++" || item.name == "--") continue;  // section open/close markers
      if (!(item.parents.empty() || (item.parents.size() == 1 && item.parents[0] == "agent")))
        return "unknown section [" + item.parents[0] + "] (want [agent] or none)";
      CLI::Option* opt = agent->get_option_no_throw("--" + item.name);
      if (opt == nullptr || item.name == "config") return "unknown key '" + item.name + "'";
      if (opt->count() > 0) continue;
      opt->add_result(item.inputs);
      opt->run_callback();
    }
  } catch (const CLI::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"onebox: a cluster of Linux machines that looks like one machine"};
  app.require_subcommand(1);
  app.fallthrough();  // `onebox kv get K --agent H:P` works as well as `onebox --agent H:P kv get K`
  app.set_version_flag("--version", ONEBOX_VERSION);

  onebox::ClientOptions client;
  client.agent = EnvOr("ONEBOX_AGENT", "localhost:7070");
  std::string output = "text";
  auto* agent_opt = app.add_option("--agent", client.agent, "agent gRPC address HOST:PORT (env ONEBOX_AGENT)")
                        ->capture_default_str();
  auto* socket_opt = app.add_option("--socket", client.socket, "reach the agent through its shim socket PATH");
  agent_opt->excludes(socket_opt);
  app.add_option("-o,--output", output, "output format")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  app.add_option("--timeout", client.timeout_seconds, "seconds to wait for the agent")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  // onebox agent
  onebox::AgentOptions agent;
  agent.name = Hostname();
  auto* cmd_agent = app.add_subcommand("agent", "run the node agent (until SIGTERM or SIGINT)");
  cmd_agent->add_option("--name", agent.name, "node name, kept in the data dir")->capture_default_str();
  cmd_agent->add_option("--data-dir", agent.data_dir, "where the store and node identity live")->capture_default_str();
  cmd_agent->add_option("--listen", agent.listen, "gRPC address HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  cmd_agent->add_option("--socket", agent.socket, "Unix socket for the shim")->capture_default_str();
  cmd_agent->add_option("--join", agent.join, "seed agents HOST:PORT[,HOST:PORT...] to join")->delimiter(',');
  cmd_agent->add_option("--replication-factor", agent.replication_factor,
                        "nodes that keep a copy of each file's content (the writer included)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  cmd_agent->add_option("--write-quorum", agent.write_quorum,
                        "nodes on which fsync() makes a file durable before it returns (0: a majority of the replicas)")
      ->check(CLI::Range(0, 16))
      ->capture_default_str();
  cmd_agent->add_option("--log-retain", agent.log_retain,
                        "replication log entries kept for members that are away (beyond: anti-entropy repairs them)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  cmd_agent->add_option("--log-level", agent.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  std::string agent_config;
  cmd_agent->add_option("--config", agent_config, "read these options from a TOML file (flags given win)")
      ->check(CLI::ExistingFile);

  // onebox status / nodes
  auto* cmd_status = app.add_subcommand("status", "show the status of the agent");
  auto* cmd_nodes = app.add_subcommand("nodes", "list the nodes of the cluster");

  // onebox versions PATH / restore PATH VERSION
  std::string vpath, vversion;
  auto* cmd_versions = app.add_subcommand("versions", "list the versions of a cluster file this node holds");
  cmd_versions->add_option("PATH", vpath, "cluster path, e.g. /cluster/a/b")->required();
  auto* cmd_restore = app.add_subcommand("restore", "make an earlier version of a cluster file current again");
  cmd_restore->add_option("PATH", vpath, "cluster path")->required();
  cmd_restore->add_option("VERSION", vversion, "HLC@NODE_ID, as `onebox versions` prints it")->required();

  // onebox exec -- CMD...
  std::vector<std::string> exec_argv;
  auto* cmd_exec = app.add_subcommand("exec", "run CMD under the shim, so that /cluster works in it");
  cmd_exec->add_option("CMD", exec_argv, "command and its arguments (after --)")->required();

  // onebox kv ...
  auto* cmd_kv = app.add_subcommand("kv", "read and write the cluster key-value store");
  cmd_kv->require_subcommand(1);
  std::string key, level = "one";
  bool sync = false;
  auto* kv_get = cmd_kv->add_subcommand("get", "print the value of KEY (exit 1 when absent)");
  kv_get->add_option("KEY", key, "key")->required();
  std::string read_level = "local";
  kv_get->add_option("--level", read_level, "read level")
      ->check(CLI::IsMember({"local", "quorum"}))
      ->capture_default_str();

  onebox::KvPutOptions put;
  auto* kv_put = cmd_kv->add_subcommand("put", "set KEY to VALUE (or to standard input with --stdin)");
  kv_put->add_option("KEY", put.key, "key")->required();
  auto* put_value = kv_put->add_option("VALUE", put.value, "value");
  auto* put_stdin = kv_put->add_flag("--stdin", put.from_stdin, "read the value from standard input");
  put_value->excludes(put_stdin);
  kv_put->add_flag("--sync", put.sync, "sync the write-ahead log before answering");
  kv_put->add_option("--level", put.level, "write level")
      ->check(CLI::IsMember({"one", "quorum", "all"}))
      ->capture_default_str();

  auto* kv_del = cmd_kv->add_subcommand("del", "delete KEY");
  kv_del->add_option("KEY", key, "key")->required();
  kv_del->add_flag("--sync", sync, "sync the write-ahead log before answering");
  kv_del->add_option("--level", level, "write level")
      ->check(CLI::IsMember({"one", "quorum", "all"}))
      ->capture_default_str();

  onebox::KvScanOptions scan;
  auto* kv_scan = cmd_kv->add_subcommand("scan", "list keys starting with PREFIX, in key order");
  kv_scan->add_option("PREFIX", scan.prefix, "key prefix (empty: every key)");
  kv_scan->add_option("--limit", scan.limit, "at most this many keys (0: all)")->capture_default_str();
  kv_scan->add_flag("--keys-only", scan.keys_only, "print keys without values");

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (!client.socket.empty()) client.agent.clear();
  client.json = output == "json";

  if (*cmd_agent) {
    if (!agent_config.empty()) {
      if (std::string err = ApplyAgentConfig(cmd_agent, agent_config); !err.empty()) {
        std::cerr << "onebox: config " << agent_config << ": " << err << "\n";
        return kExitUsage;
      }
    }
    SetupLogging(agent.log_level);
    return onebox::RunAgent(agent);
  }
  if (*cmd_exec) {
    // The shim's socket: --socket, else $ONEBOX_SOCKET as it is, else the default.
    return onebox::CmdExec(client.socket, exec_argv);
  }
  if (*cmd_status) return onebox::CmdStatus(client);
  if (*cmd_nodes) return onebox::CmdNodes(client);
  if (*cmd_versions) return onebox::CmdVersions(client, vpath);
  if (*cmd_restore) return onebox::CmdRestore(client, vpath, vversion);
  if (*kv_get) return onebox::CmdKvGet(client, key, read_level);
  if (*kv_put) {
    if (put.value.empty() && !put.from_stdin && put_value->count() == 0) {
      std::cerr << "onebox: kv put needs a VALUE or --stdin\n";
      return kExitUsage;
    }
    return onebox::CmdKvPut(client, put);
  }
  if (*kv_del) return onebox::CmdKvDel(client, key, sync, level);
  if (*kv_scan) return onebox::CmdKvScan(client, scan);
  return kExitUsage;
}

#include "nodeagent/daemon/agent_command.h"

#include <unistd.h>

#include <iostream>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace onebox {

namespace {

constexpr int kExitUsage = 2;

std::string Hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "node";
  std::string h(buf);
  return h.substr(0, h.find('.'));
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
Status ApplyAgentConfig(CLI::App* agent, const std::string& path) {
  try {
    for (const CLI::ConfigItem& item : CLI::ConfigTOML().from_file(path)) {
      if (item.name == "++" || item.name == "--") continue;  // section open/close markers
      if (!(item.parents.empty() || (item.parents.size() == 1 && item.parents[0] == "agent")))
        return Status::InvalidArgument(fmt::format("unknown section [{}] (want [agent] or none)", item.parents[0]));
      CLI::Option* opt = agent->get_option_no_throw("--" + item.name);
      if (opt == nullptr || item.name == "config")
        return Status::InvalidArgument(fmt::format("unknown key '{}'", item.name));
      if (opt->count() > 0) continue;
      opt->add_result(item.inputs);
      opt->run_callback();
    }
  } catch (const CLI::Error& e) {  // CLI11 reports bad files and values by exception
    return Status::InvalidArgument(e.what());
  }
  return Status::Ok();
}

}  // namespace

AgentCommand::AgentCommand(CLI::App& app) {
  options_.name = Hostname();
  command_ = app.add_subcommand("agent", "run the node agent (until SIGTERM or SIGINT)");
  command_->add_option("--name", options_.name, "node name, kept in the data dir")->capture_default_str();
  command_->add_option("--data-dir", options_.data_dir, "where the store and node identity live")->capture_default_str();
  command_->add_option("--listen", options_.listen, "gRPC address HOST:PORT (port 0 picks a free one)")
      ->capture_default_str();
  command_->add_option("--socket", options_.socket, "Unix socket for the shim")->capture_default_str();
  command_->add_option("--join", options_.join, "seed agents HOST:PORT[,HOST:PORT...] to join")->delimiter(',');
  command_->add_option("--replication-factor", options_.replication_factor,
                       "nodes that keep a copy of each file's content (the writer included)")
      ->check(CLI::Range(1, 16))
      ->capture_default_str();
  command_->add_option("--write-quorum", options_.write_quorum,
                       "nodes on which fsync() makes a file durable before it returns (0: a majority of the replicas)")
      ->check(CLI::Range(0, 16))
      ->capture_default_str();
  command_->add_option("--place-jobs-per-cpu", options_.place_jobs_per_cpu,
                       "placement at exec (ONEBOX_PLACE): at most this many placed jobs per CPU on a node")
      ->check(CLI::Range(0.1, 64.0))
      ->capture_default_str();
  command_->add_option("--catch-up-backlog", options_.catch_up_backlog,
                       "peers' entries queued from which placing them runs below this node's programs, until none "
                       "is (1: whenever any is)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  command_->add_option("--log-retain", options_.log_retain,
                       "replication log entries kept for members that are away (beyond: anti-entropy repairs them)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  command_->add_option("--join-token-file", options_.join_token_file,
                       "the cluster's join token (first line); every agent of the cluster has the same")
      ->check(CLI::ExistingFile);
  command_->add_option("--cacert", options_.tls.ca, "mutual TLS: the cluster CA's certificate (onebox ca init)")
      ->check(CLI::ExistingFile);
  command_->add_option("--cert", options_.tls.cert, "mutual TLS: this node's certificate (onebox cert issue)")
      ->check(CLI::ExistingFile);
  command_->add_option("--key", options_.tls.key, "mutual TLS: that certificate's private key (mode 0600)")
      ->check(CLI::ExistingFile);
  command_->add_flag("--insecure", options_.insecure,
                     "without TLS or a join token: listen beyond loopback, join, and take peer calls from whoever "
                     "reaches the port");
  command_->add_flag("--accept-root-setid-from-peers", options_.accept_root_setid_from_peers,
                     "place set-user-ID and set-group-ID files of root that peers send (refused by default)");
  command_->add_option("--metrics", options_.metrics,
                       "serve Prometheus metrics at http://HOST:PORT/metrics (read-only; off when not given)");
  command_->add_option("--log-level", options_.log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  command_->add_option("--config", config_, "read these options from a TOML file (flags given win)")
      ->check(CLI::ExistingFile);
}

int AgentCommand::Run() {
  if (!config_.empty()) {
    if (Status s = ApplyAgentConfig(command_, config_); !s.ok()) {
      std::cerr << "onebox: config " << config_ << ": " << s.message() << "\n";
      return kExitUsage;
    }
  }
  SetupLogging(options_.log_level);
  return RunAgent(options_);
}

}  // namespace onebox

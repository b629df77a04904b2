// `onebox agent`: its flags (CLI11), the TOML config file they may come from
// (--config; flags given win), and logging; then RunAgent.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "consistency/status.h"
#include "nodeagent/daemon/agent.h"

namespace onebox {

class AgentCommand {
 public:
  // Adds the `agent` subcommand to app.
  explicit AgentCommand(CLI::App& app);
  // After app parsed argv: whether `agent` was given.
  bool chosen() const { return command_->parsed(); }
  // Applies the config file, sets up logging and runs the agent; returns the
  // process exit code (2 for a bad config file).
  int Run();

 private:
  CLI::App* command_;
  AgentOptions options_;
  std::string config_;
};

}  // namespace onebox

// The `onebox` command line other than `agent`: the global options (--agent,
// --socket, -o, --timeout) and the client commands' flags, on a CLI11 app
// that main.cc shares with daemon/agent_command.h.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "nodeagent/cli/commands.h"

namespace onebox {

class Cli {
 public:
  // Adds the global options and the client commands to app.
  explicit Cli(CLI::App& app);
  // After app parsed argv: runs the client command given, if one was.
  std::optional<int> Run();
  // `run` is the front's (nodeagent/standin/): main hands it back.
  bool run_chosen() const { return run_ != nullptr && run_->parsed(); }

 private:
  void AddNodeAndFileCommands(CLI::App& app);
  void AddKvCommands(CLI::App& app);
  void AddProcessCommands(CLI::App& app);
  void AddTlsCommands(CLI::App& app);

  ClientOptions client_;
  std::string output_ = "text";
  CLI::Option* agent_opt_ = nullptr;
  CLI::App* status_ = nullptr;
  CLI::App* nodes_ = nullptr;
  CLI::App* ports_ = nullptr;
  CLI::App* versions_ = nullptr;
  CLI::App* restore_ = nullptr;
  CLI::App* exec_ = nullptr;
  CLI::App* ps_ = nullptr;
  CLI::App* kill_ = nullptr;
  CLI::App* run_ = nullptr;
  CLI::App* kv_get_ = nullptr;
  CLI::App* kv_put_ = nullptr;
  CLI::App* kv_del_ = nullptr;
  CLI::App* kv_scan_ = nullptr;
  CLI::App* ca_init_ = nullptr;
  CLI::App* cert_issue_ = nullptr;
  std::string ca_dir_, cluster_name_ = "onebox";
  int ca_days_ = 3650;
  bool cert_admin_ = false;
  CertRequest cert_;
  CLI::Option* put_value_ = nullptr;
  std::string path_, version_, key_, read_level_ = "local", level_ = "one";
  bool sync_ = false;
  std::vector<std::string> exec_argv_;
  std::string exec_place_;  // exec --place
  KvPutOptions put_;
  KvScanOptions scan_;
  PsOptions ps_options_;
};

}  // namespace onebox

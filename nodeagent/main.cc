// `onebox-core`: the node agent (`onebox agent ...`, daemon/agent_command.h)
// and the CLI (cli/cli.h), one binary; the `onebox` front
// (nodeagent/standin/) execs it for every command but `run`, which it
// serves itself (and gets back from here if it lands here).
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "nodeagent/cli/cli.h"
#include "nodeagent/daemon/agent_command.h"
#include "nodeagent/local/shim_library.h"
#include "nodeagent/standin/standin.h"

// `run` is the front's (nodeagent/standin/standin.h): the `onebox` beside us.
int HandRunBack(char** argv) {
  if (getenv(onebox::kHandedBack) != nullptr) {
    std::cerr << "onebox-core: `run` came back from the front: the onebox beside onebox-core is not the front\n";
    return 2;
  }
  std::string front = onebox::BesideThisBinary("onebox");
  if (front.empty()) {
    std::cerr << "onebox-core: cannot find this binary (/proc/self/exe), nor the onebox front beside it\n";
    return 127;
  }
  setenv(onebox::kHandedBack, "1", 1);
  execv(front.c_str(), argv);
  std::cerr << "onebox-core: cannot run " << front << ": " << strerror(errno) << "\n";
  return 127;
}

int main(int argc, char** argv) {
  CLI::App app{"onebox: a cluster of Linux machines that looks like one machine"};
  app.require_subcommand(1);
  app.fallthrough();  // `onebox kv get K --agent H:P` works as well as `onebox --agent H:P kv get K`
  app.set_version_flag("--version", ONEBOX_VERSION);
  onebox::AgentCommand agent(app);  // first: `agent` heads the list of commands
  onebox::Cli cli(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return onebox::kExitUsage;
  }
  if (agent.chosen()) return agent.Run();
  if (cli.run_chosen()) return HandRunBack(argv);
  return cli.Run().value_or(onebox::kExitUsage);
}

// `onebox`: the node agent (`onebox agent ...`, daemon/agent_command.h) and
// the CLI (cli/cli.h), one binary. argv goes to one or the other.
#include <CLI/CLI.hpp>

#include "nodeagent/cli/cli.h"
#include "nodeagent/daemon/agent_command.h"

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
  return cli.Run().value_or(onebox::kExitUsage);
}

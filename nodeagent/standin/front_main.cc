// `onebox`: `run` is served here (standin.h); everything else goes on to
// onebox-core, the CLI and the agent, by exec.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "nodeagent/local/shim_library.h"
#include "nodeagent/standin/standin.h"

namespace {

// The global options that take a value (nodeagent/cli/cli.h): the command is
// the first word that is neither one of them, nor its value, nor an option.
bool TakesValue(const std::string& option) {
  for (const char* o : {"--agent", "--socket", "-o", "--output", "--timeout"})
    if (option == o) return true;
  return false;
}

std::string CommandOf(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--" || a == "-h" || a == "--help" || a == "--version") return "";  // onebox-core's to answer
    if (a.empty() || a[0] != '-') return a;
    if (TakesValue(a)) ++i;  // "--socket PATH"; "--socket=PATH" is one word
  }
  return "";
}

int Run(int argc, char** argv) {
  onebox::RunOptions o;
  CLI::App app{"onebox run: CMD on a node of the cluster, as a local child"};
  app.add_option("--socket", o.socket, "the agent's Unix socket (env ONEBOX_SOCKET)");
  app.add_option("--timeout", o.timeout_seconds, "seconds to wait for the agent")->check(CLI::Range(0.001, 86400.0));
  std::string unused_agent, output;
  app.add_option("--agent", unused_agent, "(not used by run: it always goes through the socket)");
  app.add_option("-o,--output", output, "(not used by run)");
  CLI::App* run = app.add_subcommand("run", "run CMD on a node of the cluster, as a local child (its stdio, signals, exit)");
  run->fallthrough();
  run->add_option("--node", o.node, "the node (a name or an index; default: this one)");
  run->add_option("--cwd", o.cwd, "working directory there (a /cluster path; default: the current one)");
  auto* tty = run->add_flag("-t", o.tty, "give the program a pseudo-terminal (the default when stdin and stdout are one)");
  run->add_flag("-T", o.no_tty, "no pseudo-terminal")->excludes(tty);
  run->add_flag("--placed", o.placed, "an exec placement sent here (ONEBOX_PLACE): no terminal, stdin only for \"-\"")
      ->excludes(tty);
  auto* place = run->add_option("--place", o.place, "choose the node as ONEBOX_PLACE does (auto, or NODE[,NODE...])");
  run->add_option("--program", o.program, "with --place: the program's absolute path here")->needs(place);
  place->excludes("--node")->excludes(tty);
  run->add_option("CMD", o.argv, "command and its arguments (after --)")->required();
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return onebox::RunStandIn(o);
}

}  // namespace

int main(int argc, char** argv) {
  if (CommandOf(argc, argv) == "run") return Run(argc, argv);
  // onebox-core hands `run` back with this set: never hand it on again.
  if (getenv(onebox::kHandedBack) != nullptr) {
    std::cerr << "onebox: onebox-core took this for `run` and this front did not; run `onebox run --help`\n";
    return 2;
  }
  std::string core = onebox::BesideThisBinary("onebox-core");
  if (core.empty()) {
    std::cerr << "onebox: cannot find this binary (/proc/self/exe), nor onebox-core beside it\n";
    return 127;
  }
  execv(core.c_str(), argv);
  std::cerr << "onebox: cannot run " << core << ": " << strerror(errno) << "\n";
  return 127;
}

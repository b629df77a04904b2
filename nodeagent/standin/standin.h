// The `onebox` front: the one binary users and scripts call. It serves
// `onebox run` itself (the stand-in: run_command.cc), linking neither gRPC
// nor the full protobuf runtime, so that a remote start pays no more than a
// small program's start here; every other command, `agent` included, it
// hands to onebox-core next to it (exec: the same pid).
#pragma once

#include <string>
#include <vector>

namespace onebox {

// Set by onebox-core when it hands `run` back to the front, so that the two
// never hand a command to each other twice.
constexpr const char* kHandedBack = "ONEBOX_RUN_HANDED_BACK";

struct RunOptions {
  std::string socket;          // --socket; "" -> $ONEBOX_SOCKET, else the default
  double timeout_seconds = 5;  // --timeout: to reach the agent
  std::string node;            // a name or an index; empty: this node
  std::string cwd;             // a cluster path; empty: the current directory, which must be one
  bool tty = false;            // -t; the default when stdin and stdout are terminals
  bool no_tty = false;         // -T
  // --placed: an exec that ONEBOX_PLACE sent to node (preload/exec_place.cc).
  // No terminal, and standard input is relayed only when an argument is "-"
  // (a compiler reads it only then; make's jobs must not take its input).
  bool placed = false;
  // --place POLICY --program PATH: the stand-in of an exec ONEBOX_PLACE
  // placed (preload/exec_place.h). It asks its agent for the node: this
  // one, and it becomes the program (exec); another, and it runs there as
  // with --node NODE --placed. Either way with ONEBOX_PLACE=off.
  std::string place;
  std::string program;
  std::vector<std::string> argv;
};

// Runs o.argv on its node as a local child would run; returns the exit code
// (or dies by the program's signal).
int RunStandIn(const RunOptions& o);

}  // namespace onebox

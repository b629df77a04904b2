// What a run's start (v1::RunStart, the first message of Peer/Run) becomes
// on the target before anything is forked: checked (a program, a cluster
// working directory, the caller's ids, never (uid_t)-1, which setresuid
// reads as "unchanged"), and made into what the child needs (argv, the
// environment with this node's shim, the candidates a PATH search tries,
// the messages it may print), because the agent has threads and the child
// may only make system calls until it execs. The start comes from another
// node (tests/fuzz/run_start_fuzz.cc fuzzes it).
#pragma once

#include <sys/resource.h>
#include <sys/types.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "consistency/status.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

// Where a run's program runs on this node.
struct RunPlace {
  std::string view_path;  // the agent's view (DataDir::view_path): "/cluster/a" is view_path + "/cluster/a"
  std::string socket;     // the agent's socket, for the program's shim
  std::string shim;       // libonebox.so; empty: the program runs without it
  // Exit-to-wait (docs/consistency.md). settle_peers returns once what this
  // node's programs wrote under the cluster so far is applied on every other
  // live member: run after a program of another home exited, before its
  // exit is sent (the home's relay then waits for its own view:
  // process/run_relay.h). settle_view returns once what this node applied
  // so far is in its view: run before a program starts, so that it reads
  // what the steps before it wrote wherever they ran.
  std::function<Status()> settle_peers;
  std::function<void()> settle_view;
  // The descriptor limit programs start with: the agent's own soft limit
  // before it raised it for the port relay (0: as the agent's).
  rlim_t files_soft_limit = 0;
  // Who the agent runs as: root switches to the caller's ids, another user
  // runs only its own user's programs.
  uid_t agent_uid = geteuid();
  gid_t agent_gid = getegid();
};

// Everything the child needs, made before fork.
struct Launch {
  std::vector<std::string> argv_text, env_text, candidates;
  std::vector<char*> argv, env;
  std::string cwd;  // real: in the view
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  bool switch_ids = false;
  bool agents_ids = false;  // the caller's uid and gid are the agent's: the child changes no id
  mode_t umask = 022;
  rlim_t files_soft_limit = 0;
  std::string no_cwd, cwd_denied, not_found, cannot_run, no_ids;
};

// The start checked and made into a Launch for this node (named node in
// messages), or why not: InvalidArgument, PermissionDenied (an agent that is
// not root runs its own user's programs only), NotFound (a placed program
// this node lacks).
Result<Launch> PrepareLaunch(const v1::RunStart& start, const RunPlace& place, const std::string& node);

}  // namespace onebox

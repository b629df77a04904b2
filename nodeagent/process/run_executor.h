// The target's side of `onebox run` (Peer/Run): starts the program as its
// caller (uid, gid and groups as the caller's node named them; never more:
// an agent that is not root runs only its own user's), with the caller's
// environment, umask and cluster working directory, under the shim of this
// node, in a session of its own. Its stdin, stdout and stderr are pipes
// relayed over the stream: output is read only as fast as the stream takes
// it (gRPC's flow control), input written only as fast as the program reads
// it, so neither side's memory grows. Signals come as for any process
// (Peer/SignalProcess, to the gpid the run answers with). When the stream ends before the process does (the stand-in or its
// node is gone), its process group is killed: no orphans.
#pragma once

#include <sys/resource.h>

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "consistency/status.h"
#include "nodeagent/process/run_launch.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

// The stream a run talks through, from the target's side.
class RunPeerStream {
 public:
  virtual ~RunPeerStream() = default;
  virtual bool Read(v1::RunInput* in) = 0;           // false: ended or broken
  virtual bool Write(const v1::RunOutput& out) = 0;  // blocks while the far side is behind
  virtual bool Cancelled() = 0;                      // the far side is gone
};


class RunExecutor {
 public:
  // index and name: this node's (gpids of the runs started here).
  RunExecutor(RunPlace place, std::string node_name, std::function<uint32_t()> node_index)
      : place_(std::move(place)), node_name_(std::move(node_name)), node_index_(std::move(node_index)) {}

  // Serves one run to its end: reads the start, answers started (or an
  // error: stderr and an exit code, as a shell gives them), relays until
  // the process has exited and its output is drained, and writes the exit.
  Status Serve(RunPeerStream& stream);

  // The home of each run this node is running, by local pid (for ps).
  struct Home {
    std::string node;
    int64_t gpid = 0;
  };
  std::map<pid_t, Home> Homes() const;
  // Placed jobs (RunStart.placed) run here since start, and running now.
  uint64_t taken_in() const { return taken_in_.load(); }
  uint32_t in_now() const { return in_now_.load(); }

 private:
  const RunPlace place_;
  const std::string node_name_;
  const std::function<uint32_t()> node_index_;
  mutable std::mutex mu_;
  std::map<pid_t, Home> homes_;
  std::atomic<uint64_t> taken_in_{0};
  std::atomic<uint32_t> in_now_{0};
};

}  // namespace onebox

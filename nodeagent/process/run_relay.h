// The home's side of `onebox run`: the stand-in's connection to this agent's
// socket, taken over from the shim server once it asked for a run, relayed
// to and from Peer/Run on the target node, each run on a thread of its own.
// The stand-in is answered when the process runs there (the answer carries
// its gpid), or with why it could not start. Then standard input goes one
// way and output and the exit the other, each only as fast as the far side
// takes it. The stand-in's end (it exited, or was killed) cancels the stream,
// and the target kills the process; the target's end without an exit (its
// node died or was cut off) is told to the stand-in as an exit with an error.
// Exit-to-wait (docs/consistency.md), with the target's part
// (process/run_executor.h): before a run starts on another node, what this
// node wrote so far is applied there (settle_target); its exit comes once
// what the program wrote is applied on every live member, and the relay then
// waits for this node's view to show it (settle_view: the materializer's
// Drain) before the stand-in hears of the exit, so the caller's next step
// reads the program's output here.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "nodeagent/peer/grpc_peers.h"
#include "nodeagent/process/run_executor.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

class RunRelays {
 public:
  // A run on this node itself goes straight to local (no gRPC round trip
  // to our own port); any other, to its node's agent.
  using SettleTarget = std::function<Status(const std::string& node_id)>;
  RunRelays(GrpcPeerNetwork& network, RunExecutor& local, SettleTarget settle_target = {},
            std::function<void()> settle_view = {})
      : network_(network),
        local_(local),
        settle_target_(std::move(settle_target)),
        settle_view_(std::move(settle_view)) {}
  ~RunRelays() { Stop(); }

  // Relays start's run to the agent at address, or to this node's executor
  // when here (node: its name, for messages). fd: the stand-in's connection,
  // now this relay's; request_id: the id the stand-in's request had, for its answer.
  void Start(int fd, uint64_t request_id, v1::RunStart start, std::string address, std::string node,
             std::string node_id, bool here);
  // Ends every run under way (their stand-ins see the node lost) and waits for them.
  void Stop();

 private:
  struct Relay {
    Cancellation cancellation;
    int fd = -1;
    bool done = false;
    std::thread thread;
  };
  void Serve(Relay& relay, uint64_t request_id, const v1::RunStart& start, std::unique_ptr<RunCall> call,
             const std::string& node, bool here);
  void ReapDone();  // under mu_

  GrpcPeerNetwork& network_;
  RunExecutor& local_;
  const SettleTarget settle_target_;
  const std::function<void()> settle_view_;
  std::mutex mu_;
  bool stopped_ = false;
  std::list<Relay> relays_;
};

}  // namespace onebox

// Placement at exec (ONEBOX_PLACE): the node on which an exec of a placed
// program (a compiler, by default) should run, chosen when the shim asks
// just before the exec (preload/exec_place.cc). Local first and load-aware:
// a node's load is the placed jobs running on it, per CPU (its CPUs as
// gossip reports them): those placed from here, followed here at once, or
// the node's own count of all it runs, from any home, as gossip last
// carried it (every 500 ms), whichever is more; a job stays here unless another
// node carries at least half a job per CPU less, and no node takes more
// than jobs_per_cpu jobs per CPU (when every node is full, the job stays
// here: make's -j bounds them). A node is a candidate only when the program,
// and a script's interpreter, has the same SHA-256 there as here
// (Peer/ProgramDigest, cached for a minute): a node with another compiler
// version is never used. A job is the asking process, followed by a pidfd
// until it ends: the program itself when it stays here, its stand-in
// (`onebox run --placed`) when it goes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "consistency/status.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/peer/peer_link.h"
#include "onebox/v1/peer.pb.h"

namespace onebox {

// "<sha256 hex>" of the program at path, and ":<sha256 hex>" of its
// interpreter when it is a script; "" when it is no regular file that can
// be read.
std::string ProgramDigestOf(const std::string& path);

class Placement {
 public:
  // taken_in_now: the jobs other homes placed here that run now (the executor's).
  Placement(Membership& members, PeerNetwork& network, double jobs_per_cpu, std::function<uint32_t()> taken_in_now = {})
      : members_(members), network_(network), jobs_per_cpu_(jobs_per_cpu), taken_in_now_(std::move(taken_in_now)) {}
  ~Placement();

  // The node for pid's exec of program (an absolute path here) under policy
  // ("auto", or node names separated by commas): its name, or "" for this
  // node. pid is counted as a job on that node until it ends.
  // InvalidArgument for a policy that names no node.
  Result<std::string> Choose(pid_t pid, const std::string& program, const std::string& policy);

  // pid's job runs here without a choice (it wants make's jobserver): it is
  // counted here until it ends.
  void CountHere(pid_t pid);

  // pid's job did not start on the node chosen and runs here instead: it is
  // counted here, and that node is not chosen for kAvoidAfterFailure.
  void KeptHere(pid_t pid);

  // Peer/ProgramDigest: the program's digest on this node.
  Status OnProgramDigest(const v1::ProgramDigestRequest& req, v1::ProgramDigestResponse* resp);

  // Since start: jobs sent to other nodes; and how many of those run now.
  uint64_t placed_out();
  uint32_t out_now();

 private:
  struct Job {
    int pidfd;
    pid_t pid;
    std::string node_id;  // "" for this node
  };
  struct Candidate {
    v1::Node node;
    size_t running = 0;
  };
  std::string LocalDigest(const std::string& path);
  // "" when the node has no such program or does not answer.
  std::string PeerDigest(const v1::Node& node, const std::string& path);
  // The live nodes policy allows, this node first if it is one of them.
  Result<std::vector<Candidate>> CandidatesFor(const std::string& policy);
  void ReapLocked();  // forgets the jobs that ended
  // pid's job, followed by pidfd, counted on node_id ("": here), in place of any it had.
  void CountLocked(pid_t pid, int pidfd, const std::string& node_id);
  size_t RunningLocked(const std::string& node_id);

  Membership& members_;
  PeerNetwork& network_;
  const double jobs_per_cpu_;
  const std::function<uint32_t()> taken_in_now_;

  std::mutex mu_;
  std::vector<Job> jobs_;
  uint64_t placed_out_ = 0;
  struct Known {
    std::string digest;
    std::chrono::steady_clock::time_point at;
  };
  std::map<std::pair<std::string, std::string>, Known> peer_digests_;  // (node id, path)
  struct Local {
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
    std::string digest;
  };
  std::map<std::string, Local> local_digests_;  // by path
  std::map<std::string, std::chrono::steady_clock::time_point> avoid_until_;  // by node id: a start failed there
};

}  // namespace onebox

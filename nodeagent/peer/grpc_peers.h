// The peer links of a running agent: gRPC channels to the other agents, one
// per address, kept and shared by every part that talks to peers. The
// channel credentials are chosen here and nowhere else (mutual TLS plugs in
// here). A channel takes messages up to 8 MiB, and a peer that comes back
// (after a crash or a partition) is tried again within a second, not after
// gRPC's default backoff of up to two minutes.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "nodeagent/peer/peer_link.h"

namespace onebox {

class GrpcPeerNetwork final : public PeerNetwork {
 public:
  PeerLink& To(const std::string& address) override;

 private:
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<PeerLink>> links_;
};

}  // namespace onebox

// The agent's gRPC links to its peers (nodeagent/peer/grpc_peers.h), against
// a Peer server in this process on loopback that notes the connection each
// call came over.
#include "nodeagent/peer/grpc_peers.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "onebox/v1/peer.grpc.pb.h"

namespace onebox {
namespace {

// Answers Gossip, noting the caller's address and port: its connection.
class ConnectionsSeen final : public v1::Peer::Service {
 public:
  grpc::Status Gossip(grpc::ServerContext* ctx, const v1::GossipRequest*, v1::GossipResponse*) override {
    std::lock_guard lock(mu_);
    callers_.push_back(ctx->peer());
    return grpc::Status::OK;
  }
  std::vector<std::string> callers() {
    std::lock_guard lock(mu_);
    return callers_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> callers_;
};

TEST(PeerLinks, CallsAfterConnectNowGoOverANewConnection) {
  ConnectionsSeen service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);

  GrpcPeerNetwork network;
  PeerLink& link = network.To(fmt::format("127.0.0.1:{}", port));
  auto gossip = [&] {
    v1::GossipResponse resp;
    return link.Gossip(v1::GossipRequest(), &resp, {.timeout = std::chrono::seconds(5)}).ok();
  };
  ASSERT_TRUE(gossip());
  ASSERT_TRUE(gossip());
  link.ConnectNow();  // the peer came back after a silence
  ASSERT_TRUE(gossip());
  ASSERT_TRUE(gossip());
  // A second network's link to the same address has connections of its own
  // (gRPC's shared pool of connections would hand it this one).
  GrpcPeerNetwork other;
  v1::GossipResponse resp;
  ASSERT_TRUE(other.To(fmt::format("127.0.0.1:{}", port)).Gossip(v1::GossipRequest(), &resp, {}).ok());

  std::vector<std::string> callers = service.callers();
  ASSERT_EQ(callers.size(), 5u);
  EXPECT_EQ(callers[0], callers[1]) << "one connection while nothing happened";
  EXPECT_NE(callers[2], callers[1]) << "the call after ConnectNow went over the old connection";
  EXPECT_EQ(callers[3], callers[2]) << "one new connection, kept";
  EXPECT_NE(callers[4], callers[3]);
  EXPECT_NE(callers[4], callers[0]);
  server->Shutdown();
}

}  // namespace
}  // namespace onebox

#include "nodeagent/api/cluster_service.h"

#include <spdlog/spdlog.h>

#include "nodeagent/api/unary.h"
#include "nodeagent/peer/node_load.h"

namespace onebox {

namespace {

v1::Node SelfNode(const AgentInfo& info) {
  v1::Node n;
  n.set_name(info.identity.name);
  n.set_node_id(NodeIdHex(info.identity.node_id));
  n.set_address(info.grpc_address());
  n.set_state(v1::NODE_STATE_ALIVE);
  *n.mutable_load() = ReadLoad();
  n.set_self(true);
  return n;
}

}  // namespace

grpc::ServerUnaryReactor* ClusterService::Status(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                 grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Cluster_Status, v1::StatusRequest, v1::StatusResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::StatusRequest&, v1::StatusResponse* r) -> onebox::Status {
        *r->mutable_node() = SelfNode(info_);
        r->mutable_node()->set_index(members_.index());
        r->set_version(ONEBOX_VERSION);
        r->set_uptime_seconds(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - info_.started).count()));
        r->set_hlc(store_.clock().Last());  // a reading: issues no timestamp
        StoreStats st = store_.Stats();
        r->mutable_store()->set_estimated_keys(st.estimated_keys);
        r->mutable_store()->set_sst_bytes(st.sst_bytes);
        r->mutable_store()->set_memtable_bytes(st.memtable_bytes);
        r->set_data_dir(info_.data_dir);
        r->set_socket_path(info_.socket_path);
        uint64_t records = 0;
        Result<std::string> digest = store_.Digest(&records);
        if (!digest.ok()) return digest.status();
        r->set_state_digest(*digest);
        r->set_records(records);
        if (info_.chunks_hashed_ahead) r->set_chunks_hashed_ahead(info_.chunks_hashed_ahead());
        if (info_.view_digest) {
          // The rest of the status stands without it: an empty digest says it could not be made.
          Result<std::string> view = info_.view_digest();
          if (view.ok()) r->set_view_digest(*view);
          else spdlog::warn("status: no view digest: {}", view.status().message());
        }
        if (info_.view_repairs) r->set_view_repairs(info_.view_repairs());
        if (info_.replication_lag)
          for (v1::ReplicationLag& lag : info_.replication_lag()) *r->add_replication() = std::move(lag);
        if (info_.leases) {
          auto [won, recalled, decided] = info_.leases();
          r->set_leases_won(won);
          r->set_leases_recalled(recalled);
          r->set_creates_decided(decided);
        }
        if (info_.jobs) info_.jobs(r);
        return onebox::Status::Ok();
      });
}

grpc::ServerUnaryReactor* ClusterService::ListNodes(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Cluster_ListNodes, v1::ListNodesRequest, v1::ListNodesResponse>(
      ctx, in, out, gate_, nullptr, [this](const v1::ListNodesRequest&, v1::ListNodesResponse* r) {
        for (v1::Node& n : members_.Nodes()) *r->add_nodes() = std::move(n);
        return onebox::Status::Ok();
      });
}

grpc::ServerUnaryReactor* ClusterService::ListPorts(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                                    grpc::ByteBuffer* out) {
  return ServeUnary<api_method::Cluster_ListPorts, v1::ListPortsRequest, v1::ListPortsResponse>(
      ctx, in, out, gate_, &pool_, [this](const v1::ListPortsRequest&, v1::ListPortsResponse* r) {
        if (info_.ports)
          for (v1::ClusterPort& p : info_.ports()) *r->add_ports() = std::move(p);
        return onebox::Status::Ok();
      });
}

}  // namespace onebox

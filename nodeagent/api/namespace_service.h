// onebox.v1.Namespace: the namespace as this node recorded it (the ns
// family), by cluster path: Stat, List, the versions a path has had here
// (Versions) and putting one back (Restore).
#pragma once

#include <functional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/daemon/work_pool.h"
#include "onebox/v1/namespace.grpc.pb.h"

namespace onebox {

class NamespaceService final
    : public v1::Namespace::WithRawCallbackMethod_Stat<v1::Namespace::WithRawCallbackMethod_List<
          v1::Namespace::WithRawCallbackMethod_Versions<v1::Namespace::WithRawCallbackMethod_Restore<
              v1::Namespace::Service>>>> {
 public:
  // on_restored(key) puts a restored version in the view.
  NamespaceService(Store& store, std::function<void(const std::string&)> on_restored = {})
      : store_(store), on_restored_(std::move(on_restored)), pool_(2, "onebox-ns") {}
  grpc::ServerUnaryReactor* Stat(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* List(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                 grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Versions(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out) override;
  grpc::ServerUnaryReactor* Restore(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                    grpc::ByteBuffer* out) override;

 private:
  Status DoList(const v1::ListRequest& q, v1::ListResponse* r);
  Status DoVersions(const v1::VersionsRequest& q, v1::VersionsResponse* r);
  Status DoRestore(const v1::RestoreRequest& q, v1::RestoreResponse* r);

  Store& store_;
  std::function<void(const std::string&)> on_restored_;
  WorkPool pool_;
};

}  // namespace onebox

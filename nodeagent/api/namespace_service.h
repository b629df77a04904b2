// onebox.v1.Namespace: the namespace as this node recorded it (the ns
// family), by cluster path: Stat, List, the versions a path has had here
// (Versions) and putting one back (Restore). Restore acts as its caller
// (api/access.h), so it comes over the agent's Unix socket: a user restores
// an entry of their own only, with a version of their own (of a group of
// theirs), and needs what a shell would need to write it: the file's write
// permission for its content, the directory's to replace or make an entry.
// Root restores anything.
#pragma once

#include <functional>
#include <string>

#include <grpcpp/grpcpp.h>

#include "consistency/store.h"
#include "nodeagent/api/access.h"
#include "nodeagent/api/acting_as.h"
#include "nodeagent/api/local_calls.h"
#include "nodeagent/daemon/work_pool.h"
#include "onebox/v1/namespace.grpc.pb.h"

namespace onebox {

class NamespaceService final
    : public v1::Namespace::WithRawCallbackMethod_Stat<v1::Namespace::WithRawCallbackMethod_List<
          v1::Namespace::WithRawCallbackMethod_Versions<v1::Namespace::WithRawCallbackMethod_Restore<
              v1::Namespace::Service>>>> {
 public:
  // view_root: where this node's programs see the namespace; on_restored(key)
  // puts a restored version there.
  NamespaceService(const AccessGate& gate, Store& store, std::string view_root,
                   std::function<void(const std::string&)> on_restored = {})
      : gate_(gate), store_(store), view_root_(std::move(view_root)), on_restored_(std::move(on_restored)),
        pool_(2, "onebox-ns") {}
  // Serves Restore on the agent's socket too.
  void AddLocalCalls(LocalCalls& calls);
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
  Status DoRestore(const Caller& caller, const v1::RestoreRequest& q, v1::RestoreResponse* r);
  Status MayRestore(const Caller& caller, const std::string& key, const Record& version);
  // The rule's steps with the caller's rights (now: the store's current record, if any).
  Status MayChangeEntry(const Caller& caller, int root_fd, const std::string& key, const v1::Inode* now,
                        const v1::Inode& want);
  static Status MayChangeEntryIn(const ActingAs& as, const Caller& caller, int parent, const std::string& name,
                                 const std::string& what, const v1::Inode* now, const v1::Inode& want);

  const AccessGate& gate_;
  Store& store_;
  const std::string view_root_;
  std::function<void(const std::string&)> on_restored_;
  WorkPool pool_;
};

}  // namespace onebox

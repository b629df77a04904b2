#include "nodeagent/daemon/agent.h"
#include "naming/ns_key.h"

#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "grpc/health/v1/health.pb.h"
#include "nodeagent/api/services.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/sync/anti_entropy.h"
#include "nodeagent/sync/claims.h"
#include "nodeagent/sync/replicator.h"
#include "nodeagent/sync/tree_repair.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/daemon/state_page_owner.h"
#include "nodeagent/view/view_materializer.h"
#include "nodeagent/daemon/work_pool.h"
#include "nodeagent/local/shim_server.h"
#include "nodeagent/view/symlink_guard.h"
#include "nodeagent/view/view_recorder.h"
#include "naming/cluster_path.h"

namespace onebox {

namespace {

// Holds DATA_DIR/agent.lock (flock) for the agent's lifetime; the file names
// the holder's pid for the message a second agent prints.
class DataDirLock {
 public:
  static Result<DataDirLock> Acquire(const std::string& dir) {
    std::string path = dir + "/agent.lock";
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return Status::IOError(fmt::format("open {}: {}", path, strerror(errno)));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      char buf[32] = {0};
      ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
      close(fd);
      std::string holder = n > 0 ? fmt::format(" (pid {})", std::string(buf, static_cast<size_t>(n))) : "";
      return Status::FailedPrecondition(fmt::format("data dir {} is in use by another agent{}", dir, holder));
    }
    std::string pid = std::to_string(getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
      close(fd);
      return Status::IOError(fmt::format("write {}: {}", path, strerror(errno)));
    }
    return DataDirLock(fd);
  }
  DataDirLock(DataDirLock&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  ~DataDirLock() {
    if (fd_ >= 0) close(fd_);
  }

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

// Splits HOST:PORT ([V6]:PORT too).
Result<std::pair<std::string, int>> SplitHostPort(const std::string& addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == addr.size())
    return Status::InvalidArgument(fmt::format("listen address '{}' is not HOST:PORT", addr));
  std::string host = addr.substr(0, colon);
  if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = 0;
  for (char c : addr.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return Status::InvalidArgument(fmt::format("bad port in '{}'", addr));
    port = port * 10 + (c - '0');
  }
  if (port > 65535) return Status::InvalidArgument(fmt::format("bad port in '{}'", addr));
  return std::make_pair(host, port);
}

// gRPC reports a failed bind only as "could not start"; try the bind first so
// that a taken port gets its real reason.
Status CheckCanListen(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res);
  if (rc != 0) return Status::InvalidArgument(fmt::format("cannot resolve listen host '{}': {}", host, gai_strerror(rc)));
  Status result;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      result = Status::Unavailable(fmt::format("cannot listen on {}:{}: {}", host, port, strerror(errno)));
    }
    close(fd);
    if (!result.ok()) break;
  }
  freeaddrinfo(res);
  return result;
}

// In-flight calls get this long to finish at shutdown; idle clients (which in
// gRPC 1.51 poll their connections only every few seconds) are not waited for.
constexpr auto kDrainTimeout = std::chrono::seconds(1);

int Fail(const Status& s) {
  spdlog::error("{}", s.message());
  return 1;
}

}  // namespace

int RunAgent(const AgentOptions& opt) {
  // Block the shutdown signals before any thread starts (RocksDB and gRPC start
  // their own); the main thread takes them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Content moves in 1 MiB buffers (chunks, gRPC messages). glibc would map
  // each one afresh (mmap above its threshold) and unmap it when freed, so
  // every chunk cost 256 page faults and zeroed pages: keep them in the heap,
  // and keep a little freed heap for the next ones.
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);

  if (Status s = ValidateNodeName(opt.name); !s.ok()) return Fail(s);
  Result<std::pair<std::string, int>> hostport = SplitHostPort(opt.listen);
  if (!hostport.ok()) return Fail(hostport.status());
  if (Status s = CheckCanListen(hostport->first, hostport->second); !s.ok()) return Fail(s);

  std::error_code ec;
  std::filesystem::create_directories(opt.data_dir, ec);
  if (ec) return Fail(Status::IOError(fmt::format("cannot create data dir {}: {}", opt.data_dir, ec.message())));
  std::string data_dir = std::filesystem::canonical(opt.data_dir, ec).string();
  if (ec) return Fail(Status::IOError(fmt::format("data dir {}: {}", opt.data_dir, ec.message())));

  Result<DataDirLock> lock = DataDirLock::Acquire(data_dir);
  if (!lock.ok()) return Fail(lock.status());
  Result<NodeIdentity> identity = LoadOrCreateIdentity(data_dir, opt.name);
  if (!identity.ok()) return Fail(identity.status());

  std::filesystem::create_directories(data_dir + "/store", ec);
  chmod((data_dir + "/store").c_str(), 0700);
  Result<std::unique_ptr<Store>> store = Store::Open({.path = data_dir + "/store", .node_id = identity->node_id});
  if (!store.ok()) return Fail(store.status());

  // The view: the directory programs under the shim see as "/".
  std::string view_root = data_dir + "/view";
  if (mkdir(view_root.c_str(), 0755) != 0 && errno != EEXIST)
    return Fail(Status::IOError(fmt::format("cannot create {}: {}", view_root, strerror(errno))));
  chmod(data_dir.c_str(), 0755);  // programs of every user reach the view through it

  AgentInfo info;
  info.identity = *identity;
  info.data_dir = data_dir;
  info.socket_path = opt.socket;
  info.started = std::chrono::steady_clock::now();
  info.set_grpc_address(opt.listen);
  Result<StatePageOwner*> state_page = StatePageOwner::Create();
  if (!state_page.ok()) return Fail(state_page.status());
  // After the store is ours, so after any agent before us on it is gone.
  SymlinkGuard symlink_guard((*state_page)->page(), view_root);
  Membership members(**store, *identity, opt.listen, opt.join);
  ContentTransfer content(**store, members, NodeIdHex(identity->node_id), opt.replication_factor);
  // Peers' changes go into the view first, then the recorder follows it.
  ViewMaterializer materializer(**store, content, (*state_page)->page(), &symlink_guard);
  if (Status s = materializer.Start(view_root); !s.ok()) return Fail(s);
  Result<std::unique_ptr<ViewRecorder>> recorder =
      ViewRecorder::Start(view_root, **store, &materializer, &symlink_guard);
  if (!recorder.ok()) return Fail(recorder.status());
  content.SetPendingSource([r = recorder->get()](const std::string& digest) { return r->PendingChunk(digest); });
  info.chunks_hashed_ahead = [r = recorder->get()] { return r->hashed_ahead(); };

  ClusterService cluster(info, **store, members);
  TreeRepair tree_repair(**store, [&materializer](const std::string& key) { materializer.Enqueue(key); });
  auto on_applied = [&materializer, &tree_repair](Cf space, const std::string& key) {
    if (space != Cf::kNs) return;
    materializer.Enqueue(key);
    tree_repair.Note(key);
  };
  auto replicator =
      std::make_unique<Replicator>(**store, members, content, identity->node_id, on_applied, opt.log_retain);
  AntiEntropy anti_entropy(
      **store, members, content,
      [&materializer](Cf space, const std::string& key) {
        if (space == Cf::kNs) materializer.Enqueue(key);
      },
      [&tree_repair](const std::vector<std::string>& keys) {
        for (const std::string& key : keys) tree_repair.Note(key, std::chrono::seconds(5));
      });
  Claims claims(**store, members, content, NodeIdHex(identity->node_id));
  PeerService peer(members, *replicator, content, anti_entropy, claims);
  members.set_alive_observer([page = &(*state_page)->page()](size_t alive) { page->peers_alive.store(alive); });
  auto store_service = std::make_unique<StoreService>(**store, *replicator, members);
  auto namespace_service =
      std::make_unique<NamespaceService>(**store, [&materializer](const std::string& key) { materializer.Enqueue(key); });

  // Force-link the health descriptors so reflection clients can describe and
  // call grpc.health.v1.Health, which gRPC's built-in service implements.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(opt.listen, grpc::InsecureServerCredentials(), &bound_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port must fail, not be shared
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.RegisterService(&cluster);
  builder.RegisterService(store_service.get());
  builder.RegisterService(namespace_service.get());
  builder.RegisterService(&peer);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) return Fail(Status::Unavailable(fmt::format("cannot listen on {}", opt.listen)));
  if (hostport->second == 0) {
    const std::string& host = hostport->first;
    info.set_grpc_address(host.find(':') == std::string::npos ? fmt::format("{}:{}", host, bound_port)
                                                              : fmt::format("[{}]:{}", host, bound_port));
  }

  // fsync's Publish and open's Hydrate may take long: they are answered from here.
  WorkPool shim_work(4, "onebox-shim");
  WorkPool announce_work(1, "onebox-announce");  // symlink announcements in the first 400 ms
  int state_page_fd = (*state_page)->fd();
  Result<std::unique_ptr<ShimServer>> shim = ShimServer::Start(
      opt.socket, [&](ShimCall& call, const v1::ShimRequest& req, v1::ShimResponse* resp) {
        const PeerCred& peer = call.peer;
        switch (req.op_case()) {
          case v1::ShimRequest::kPing: {
            v1::PingResponse* p = resp->mutable_ping();
            p->set_node_name(info.identity.name);
            p->set_node_id(NodeIdHex(info.identity.node_id));
            p->set_grpc_address(info.grpc_address());
            p->set_peer_pid(peer.pid);
            p->set_peer_uid(peer.uid);
            p->set_peer_gid(peer.gid);
            break;
          }
          case v1::ShimRequest::kHello: {
            ClusterRoot root;
            // The agent's own entries in the view root (".onebox-*") are no cluster root.
            if (!root.Set(req.hello().root()) || IsAgentEntry(std::string_view(req.hello().root()).substr(1))) {
              resp->set_err(EINVAL);
              resp->set_message(fmt::format("cluster root '{}' must be an absolute path other than /",
                                            req.hello().root()));
              break;
            }
            Result<std::string> view = (*recorder)->EnsureRoot(std::string(root.root()));
            if (!view.ok()) {
              resp->set_err(EIO);
              resp->set_message(view.status().message());
              break;
            }
            resp->mutable_hello()->set_view_root(*view);
            resp->mutable_hello()->set_node_name(info.identity.name);
            resp->mutable_hello()->set_state_page(true);
            call.attach_fd = state_page_fd;
            spdlog::debug("shim hello from pid {} ({}) for root {}", peer.pid, req.hello().program(), root.root());
            break;
          }
          case v1::ShimRequest::kPublish:
            shim_work.Submit([&, path = req.publish().path(), reply = call.Defer()]() mutable {
              v1::ShimResponse r;
              Result<uint64_t> size = (*recorder)->RecordNow(path);
              // Durable here; now on the write quorum (of the members known, dead ones included).
              size_t replicas = std::min<size_t>(static_cast<size_t>(opt.replication_factor), members.KnownCount());
              size_t quorum = opt.write_quorum > 0 ? static_cast<size_t>(opt.write_quorum) : replicas / 2 + 1;
              quorum = std::min(quorum, members.KnownCount());
              if (size.ok() && quorum > 1)
                if (Status s = replicator->ReplicateNow(path, quorum - 1); !s.ok()) size = s;
              if (size.ok()) {
                r.mutable_publish()->set_size(*size);
              } else {
                r.set_err(size.status().code() == Code::kInvalidArgument ? EINVAL : EIO);
                r.set_message(size.status().message());
              }
              reply.Send(std::move(r));
            });
            break;
          case v1::ShimRequest::kClaim:
            shim_work.Submit([&claims, path = req.claim().path(), reply = call.Defer()]() mutable {
              v1::ShimResponse r;
              Status s = claims.Acquire(path);
              if (s.ok()) {
                r.mutable_claim();
              } else {
                r.set_err(s.code() == Code::kAlreadyExists ? EEXIST : s.code() == Code::kInvalidArgument ? EINVAL : EIO);
                r.set_message(s.message());
                spdlog::debug("claim: {}", s.message());
              }
              reply.Send(std::move(r));
            });
            break;
          case v1::ShimRequest::kHydrate:
            shim_work.Submit([&materializer, path = req.hydrate().path(), reply = call.Defer()]() mutable {
              v1::ShimResponse r;
              Result<uint64_t> size = materializer.Hydrate(path);
              if (size.ok()) {
                r.mutable_hydrate()->set_size(*size);
              } else {
                r.set_err(size.status().code() == Code::kNotFound ? ENOENT : EIO);
                r.set_message(size.status().message());
              }
              reply.Send(std::move(r));
            });
            break;
          case v1::ShimRequest::kAnnounceSymlink: {
            auto announce = [&symlink_guard, pid = peer.pid, conn = call.connection()](v1::ShimResponse* r) {
              Result<uint64_t> token = symlink_guard.Announce(pid, conn);
              if (token.ok()) {
                r->mutable_announce_symlink()->set_token(*token);
              } else {
                r->set_err(EIO);
                r->set_message(token.status().message());
              }
            };
            if (symlink_guard.ready()) {
              announce(resp);
              break;
            }
            // Waits out the start delay, on a thread of its own: behind a
            // Publish or Hydrate it could outlast the shim's 2 s wait.
            announce_work.Submit([announce, &symlink_guard, conn = call.connection(),
                                  reply = call.Defer()]() mutable {
              v1::ShimResponse r;
              announce(&r);
              // The shim gave up and closed before we took the intent: nobody will release it.
              if (!reply.Connected()) symlink_guard.ConnectionClosed(conn);
              reply.Send(std::move(r));
            });
            break;
          }
          case v1::ShimRequest::kSymlinkMade:
            if (symlink_guard.Release(req.symlink_made().token(), peer.pid)) {
              resp->mutable_symlink_made();
            } else {
              resp->set_err(EINVAL);
              resp->set_message("no such symlink announcement from this process");
            }
            break;
          default:
            resp->set_err(ENOSYS);
            resp->set_message("unknown shim request");
        }
      },
      // A shim that exec'd, or whose thread was cancelled, between its
      // announcement and SymlinkMade closed the connection without a word.
      [&symlink_guard](uint64_t connection) { symlink_guard.ConnectionClosed(connection); });
  if (!shim.ok()) {
    server->Shutdown();
    return Fail(shim.status());
  }

  members.set_address(info.grpc_address());
  members.Start();
  replicator->Start();
  anti_entropy.Start();
  tree_repair.Start();
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  for (const char* svc : {"onebox.v1.Cluster", "onebox.v1.Store", "onebox.v1.Namespace", "onebox.v1.Peer"})
    health->SetServingStatus(svc, true);
  health->SetServingStatus(true);
  spdlog::info("agent {} (node {}) serving gRPC on {} and the shim on {}; data dir {}", info.identity.name,
               NodeIdHex(info.identity.node_id), info.grpc_address(), opt.socket, data_dir);

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  health->SetServingStatus(false);
  anti_entropy.Stop();
  replicator->Stop();
  tree_repair.Stop();
  members.Stop();
  (*shim)->Stop();    // no new requests; answers still due are dropped
  shim_work.Drain();  // before the recorder, materializer and store they use go
  announce_work.Drain();
  server->Shutdown(std::chrono::system_clock::now() + kDrainTimeout);
  server->Wait();
  server.reset();         // before the services it references
  store_service.reset();  // drains its worker pool: no store work is left
  namespace_service.reset();
  (*recorder)->Stop();
  materializer.Stop();
  store->reset();         // closes RocksDB: memtables are in the WAL, nothing is lost
  spdlog::info("agent {} stopped", info.identity.name);
  return 0;
}

}  // namespace onebox

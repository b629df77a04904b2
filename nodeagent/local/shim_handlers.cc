#include "nodeagent/local/shim_handlers.h"

#include <unistd.h>

#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/cluster_path.h"
#include "naming/ns_key.h"
#include "nodeagent/api/status_codes.h"
#include "nodeagent/local/shim_requests.h"
#include "nodeagent/metrics/metrics.h"
#include "nodeagent/peer/quorum.h"
#include "nodeagent/process/signal_as.h"
#include "nodeagent/api/process_service.h"
#include "proto/gpid.h"
#include "onebox/v1/process.pb.h"

namespace onebox {

namespace {

// How long an exclusive create waits for its directory to be put in place
// (ClaimByVote): with the lease's own wait (up to 6 s), within the shim's
// 10 s for an answer.
constexpr auto kAwaitDirectory = std::chrono::milliseconds(3000);

// A failed handler's Status, as the shim reads it.
void Answer(const Status& s, v1::ShimResponse* resp) {
  if (s.ok()) return;
  resp->clear_op();
  resp->set_err(ToErrno(s));
  resp->set_message(s.message());
}

// Answer, and the request counted by kind and result: its errno's name,
// or "later" when the answer is given later (by other code, which does
// not count it).
void AnswerCounted(const char* kind, const Status& s, v1::ShimResponse* resp, bool later = false) {
  Answer(s, resp);
  const char* result = later ? "later" : resp->err() == 0 ? "ok" : strerrorname_np(resp->err());
  metrics::counts().shim_requests.Add(metrics::Labels({{"kind", kind}, {"result", result ? result : "error"}}));
}

}  // namespace

void ShimHandlers::Serve(ShimCall& call, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  switch (req.op_case()) {
#define ONEBOX_SHIM_CASE(op, handler, runs, what) \
  case v1::ShimRequest::op: return Run(ShimRuns::runs, &ShimHandlers::handler, #handler, call, req, resp);
    ONEBOX_SHIM_REQUESTS(ONEBOX_SHIM_CASE)
#undef ONEBOX_SHIM_CASE
    default: Answer(Status::Unimplemented("unknown shim request"), resp);
  }
}

void ShimHandlers::Run(ShimRuns runs, Handler handler, const char* kind, ShimCall& call, const v1::ShimRequest& req,
                       v1::ShimResponse* resp) {
  if (runs == ShimRuns::kInline) {
    Status done = (this->*handler)(Origin{call.peer, call.connection(), &call}, req, resp);
    AnswerCounted(kind, done, resp, call.answered_later());
    return;
  }
  WorkPool& pool = runs == ShimRuns::kCalls ? calls_work_ : work_;
  pool.Submit([this, handler, kind, req, origin = Origin{call.peer, call.connection(), nullptr},
                reply = call.Defer()]() mutable {
    v1::ShimResponse r;
    AnswerCounted(kind, (this->*handler)(origin, req, &r), &r);
    reply.Send(std::move(r));
  });
}

void ShimHandlers::ConnectionClosed(uint64_t connection) {
  // A shim that exec'd, or whose thread was cancelled, between its
  // announcement and SymlinkMade closed the connection without a word.
  parts_.guard.ConnectionClosed(connection);
  parts_.detached_view.ConnectionClosed(connection);
  parts_.locks.ConnectionClosed(connection);
}

void ShimHandlers::Drain() {
  work_.Drain();
  announce_work_.Drain();
  calls_work_.Drain();
}

Status ShimHandlers::Ping(const Origin& origin, const v1::ShimRequest&, v1::ShimResponse* resp) {
  v1::PingResponse* p = resp->mutable_ping();
  p->set_node_name(parts_.info.identity.name);
  p->set_node_id(NodeIdHex(parts_.info.identity.node_id));
  p->set_grpc_address(parts_.info.grpc_address());
  p->set_peer_pid(origin.peer.pid);
  p->set_peer_uid(origin.peer.uid);
  p->set_peer_gid(origin.peer.gid);
  return Status::Ok();
}

Status ShimHandlers::Hello(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const std::string& asked = req.hello().root();
  ClusterRoot root;
  // The agent's own entries in the view root (".onebox-*") are no cluster
  // root, however the path is written ("//.onebox-x", "/a/../.onebox-x"):
  // checked once normalized.
  if (!root.Set(asked) || IsAgentEntry(root.root().substr(1)))
    return Status::InvalidArgument(fmt::format(
        "cluster root '{}' must be an absolute path other than / and outside the agent's own /.onebox-*", asked));
  Result<std::string> view = parts_.recorder.EnsureRoot(std::string(root.root()));
  if (!view.ok()) return view.status();
  resp->mutable_hello()->set_view_root(*view);
  resp->mutable_hello()->set_node_name(parts_.info.identity.name);
  resp->mutable_hello()->set_state_page(true);
  resp->mutable_hello()->set_front(parts_.front);
  resp->mutable_hello()->set_view_dev(parts_.detached_view.dev());
  resp->mutable_hello()->set_view_ino(parts_.detached_view.ino());
  origin.call->attach_fd = parts_.state_page_fd;
  parts_.guard.PageMapped(origin.connection);
  spdlog::debug("shim hello from pid {} ({}) for root {}", origin.peer.pid, req.hello().program(), root.root());
  return Status::Ok();
}

Status ShimHandlers::Publish(const Origin&, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const std::string& path = req.publish().path();
  Result<uint64_t> size = parts_.recorder.RecordNow(path);
  if (!size.ok()) {
    spdlog::warn("fsync of {}: not recorded: {}", path, size.status().message());
    return size.status();
  }
  // Durable here; now on the write quorum (of the members known, dead ones included).
  size_t acks = PublishAcksNeeded(parts_.replication_factor, parts_.write_quorum, parts_.members.KnownCount());
  if (Status s = parts_.replicator.ReplicateNow(path, acks); !s.ok()) {
    spdlog::warn("fsync of {}: not on {} nodes: {}", path, acks, s.message());
    return s;
  }
  resp->mutable_publish()->set_size(*size);
  return Status::Ok();
}

Status ShimHandlers::Hydrate(const Origin&, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const auto started = std::chrono::steady_clock::now();
  Result<uint64_t> size = parts_.materializer.Hydrate(req.hydrate().path());
  metrics::counts().hydration_results.Add(metrics::Labels({{"result", size.ok() ? "ok" : "failed"}}));
  if (size.ok())
    metrics::counts().hydration_seconds.Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  if (!size.ok()) return size.status();
  resp->mutable_hydrate()->set_size(*size);
  return Status::Ok();
}

Status ShimHandlers::Claim(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  // Under a lease this node holds (a program creating file after file in
  // one directory), decided here at once, with no hand-off to the pool.
  if (std::optional<Status> now = parts_.leases.CreateAtOnce(req.claim().path(), req.claim().directory()))
    return Claimed(*now, resp);
  if (req.claim().at_once()) {  // on a program's shared link, which must not wait for a vote
    resp->mutable_claim()->set_ask_alone(true);
    return Status::Ok();
  }
  // Otherwise a vote or a recall: on the pool, as a kPool request is.
  Run(ShimRuns::kPool, &ShimHandlers::ClaimByVote, "ClaimByVote", *origin.call, req, resp);
  return Status::Ok();  // (the answer given now is dropped: the deferred one counts)
}

Status ShimHandlers::ClaimByVote(const Origin&, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  // The shim makes the name in the view next: a directory another node made
  // moments ago must be in place by then (waited for up to kAwaitDirectory,
  // within the shim's 10 s), and no vote is held for a name in a directory
  // the cluster has not got (git tries objects/xx/NAME before it makes
  // objects/xx). (A create decided at once, in Claim, is in a directory
  // whose lease was won through here, when the directory was in place.)
  const std::string& path = req.claim().path();
  if (IsValidNsKey(path) && !parts_.materializer.AwaitDirectory(ParentKey(path), kAwaitDirectory))
    return Claimed(Status::NotFound(fmt::format("/{}: no such directory here", ParentKey(path))), resp);
  return Claimed(parts_.leases.Create(path, req.claim().directory()), resp);
}

Status ShimHandlers::Claimed(Status s, v1::ShimResponse* resp) {
  if (!s.ok()) {
    spdlog::debug("claim: {}", s.message());
    return s;
  }
  resp->mutable_claim();
  return Status::Ok();
}

Status ShimHandlers::AnnounceSymlink(const Origin& origin, const v1::ShimRequest&, v1::ShimResponse* resp) {
  SymlinkGuard& guard = parts_.guard;
  auto announce = [&guard, pid = origin.peer.pid, conn = origin.connection](v1::ShimResponse* r) -> Status {
    Result<uint64_t> token = guard.Announce(pid, conn);
    if (!token.ok()) return token.status();
    r->mutable_announce_symlink()->set_token(*token);
    return Status::Ok();
  };
  if (guard.ready()) return announce(resp);
  // Waits out the start delay, on a thread of its own: behind a Publish or
  // Hydrate it could outlast the shim's 2 s wait.
  announce_work_.Submit([announce, &guard, conn = origin.connection, reply = origin.call->Defer()]() mutable {
    v1::ShimResponse r;
    Answer(announce(&r), &r);
    // The shim gave up and closed before we took the intent: nobody will release it.
    if (!reply.Connected()) guard.ConnectionClosed(conn);
    reply.Send(std::move(r));
  });
  return Status::Ok();  // (the answer given now is dropped: the deferred one counts)
}

Status ShimHandlers::SymlinkMade(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  if (!parts_.guard.Release(req.symlink_made().token(), origin.peer.pid))
    return Status::InvalidArgument("no such symlink announcement from this process");
  resp->mutable_symlink_made();
  return Status::Ok();
}

onebox::Caller ShimHandlers::CallerOf(const Origin& origin) {
  onebox::Caller caller;
  caller.local = true;
  caller.pid = origin.peer.pid;
  caller.uid = origin.peer.uid;
  caller.gid = origin.peer.gid;
  caller.groups = origin.peer.groups;
  caller.source = fmt::format("pid {} uid {}", origin.peer.pid, origin.peer.uid);
  return caller;
}

Status ShimHandlers::Call(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  v1::LocalCallResponse* answer = resp->mutable_call();
  Status done =
      parts_.local_calls.Call(CallerOf(origin), req.call().method(), req.call().request(), answer->mutable_response());
  if (!done.ok()) {
    grpc::Status as_grpc = ToGrpc(done);
    answer->clear_response();
    answer->set_code(as_grpc.error_code());
    answer->set_message(as_grpc.error_message());
  }
  return Status::Ok();  // the call's own status is in its answer, as gRPC would give it
}

Status ShimHandlers::Signal(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const v1::ShimSignalRequest& asked = req.signal();
  v1::SignalRequest q;
  q.set_gpid(asked.gpid());
  q.set_signal(asked.signal());
  if (asked.has_value()) q.set_value(asked.value());
  std::string unused;
  Status done = parts_.local_calls.Call(CallerOf(origin), api_method::Process_Signal::kName, q.SerializeAsString(), &unused);
  resp->mutable_signal();
  if (!done.ok()) {  // kill's own errno values, not a file call's (Answer's)
    resp->set_err(SignalErrno(done));
    resp->set_message(done.message());
  }
  return Status::Ok();
}

// The run's working directory as a cluster path: as given (--cwd, or the
// current directory of a stand-in under the shim), or the stand-in's real
// directory in this node's view. Anything else means nothing on another node.
Status ShimHandlers::ClusterCwd(v1::RunStart* start) const {
  const std::string view = parts_.info.data_dir + "/view";
  std::string cwd = start->cwd();
  if (cwd.rfind(view + "/", 0) == 0) cwd = cwd.substr(view.size());
  std::string root = "/cluster";
  for (const std::string& e : start->env())
    if (e.rfind("ONEBOX_ROOT=", 0) == 0 && e.size() > 12) root = e.substr(12);
  if (cwd != root && cwd.rfind(root + "/", 0) != 0)
    return Status::InvalidArgument(fmt::format(
        "the working directory {} is not under {}, so it means nothing on another node: run from a directory "
        "under {}, or give --cwd",
        start->cwd(), root, root));
  start->set_cwd(cwd);
  return Status::Ok();
}

Status ShimHandlers::StartRun(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  v1::RunStart start;
  if (!start.ParseFromString(req.run().start()) || start.argv().empty())
    return Status::InvalidArgument("a run needs a program: onebox run [--node NODE] -- CMD ARGS...");
  if (Status cwd = ClusterCwd(&start); !cwd.ok()) return cwd;
  if (parts_.members.index() == 0) return Status::Unavailable("this node has no index yet: try again in a moment");
  Result<v1::Node> target = parts_.processes.LiveNode(start.node());
  if (!target.ok()) return target.status();
  // Who runs it is who the kernel says is asking, never what the request says.
  *start.mutable_caller() = CredentialsOf(CallerOf(origin));
  start.mutable_caller()->set_node(parts_.info.identity.name);
  start.set_home_node(parts_.info.identity.name);
  start.set_home_gpid(gpid::Make(parts_.members.index(), origin.peer.pid));
  int fd = origin.call->TakeConnection();
  if (fd < 0) return Status::Unavailable(fmt::format("run: no descriptor for the stream: {}", strerror(errno)));
  spdlog::info("run for pid {} uid {} on node {}: {}", origin.peer.pid, origin.peer.uid, target->name(), start.argv(0));
  parts_.runs.Start(fd, req.id(), std::move(start), target->address(), target->name(), target->node_id(),
                    target->self());
  resp->mutable_run();  // not sent: the relay answers on the connection it took
  return Status::Ok();
}

Status ShimHandlers::Place(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const v1::ShimPlaceRequest& asked = req.place();
  if (asked.kept_here() || asked.here()) {
    if (asked.kept_here()) parts_.placement.KeptHere(origin.peer.pid);
    if (asked.here()) parts_.placement.CountHere(origin.peer.pid);
    resp->mutable_place();
    return Status::Ok();
  }
  if (asked.program().empty() || asked.program()[0] != '/')
    return Status::InvalidArgument(fmt::format("place: program '{}' is no absolute path", asked.program()));
  Result<std::string> node = parts_.placement.Choose(origin.peer.pid, asked.program(), asked.policy());
  if (!node.ok()) return node.status();
  resp->mutable_place()->set_node(*node);
  return Status::Ok();
}

Status ShimHandlers::Lock(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  resp->mutable_lock();
  parts_.locks.Serve(origin.peer.pid, origin.peer.uid, origin.connection, req.lock(), origin.call->Defer());
  return Status::Ok();
}

Status ShimHandlers::BindPort(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const v1::ShimBindPortRequest& asked = req.bind_port();
  resp->mutable_bind_port();
  const PortTable::Binding binding{
      .port = asked.port(), .ipv6 = asked.ipv6(), .path = asked.path(), .socket_inode = asked.socket_inode()};
  if (binding.path.empty() ? (asked.port() == 0 || asked.port() > 65535)
                           : (asked.port() != 0 || !IsValidNsKey(binding.path)))
    return Status::InvalidArgument(fmt::format("bind: port {} or path '{}' is no cluster socket", asked.port(), asked.path()));
  if (asked.release()) {
    parts_.ports.Release(binding, origin.peer.pid, origin.peer.uid);
    return Status::Ok();
  }
  Status claimed = parts_.ports.Claim(binding, origin.peer.pid, origin.peer.uid);
  if (!claimed.ok()) {  // bind's own errno values, not a file call's
    // Held elsewhere: as natively. No majority (a partition's minority side):
    // the port cannot be had now.
    resp->set_err(claimed.code() == Code::kAlreadyExists      ? EADDRINUSE
                  : claimed.code() == Code::kPermissionDenied ? EACCES
                  : claimed.code() == Code::kInvalidArgument  ? EINVAL
                                                              : EADDRNOTAVAIL);
    resp->set_message(claimed.message());
  }
  return Status::Ok();
}

namespace {

// The answer on a connection taken from the shim server (fd, closed here):
// with link attached, or (link negative) with its errno. Sent without
// waiting: a shim's fresh connection always has room for it (one that
// does not, a client that never reads, gets nothing). True when the link went.
bool AnswerWithLink(int fd, v1::ShimResponse answer, int link) {
  if (link < 0) answer.set_err(-link);
  const bool sent = SendShimAnswer(fd, answer, link < 0 ? -1 : link, 0);
  close(fd);
  return sent && link >= 0;
}

}  // namespace

Status ShimHandlers::DialPort(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const uint32_t port = req.dial_port().port();
  if (port == 0 || port > 65535) return Status::InvalidArgument(fmt::format("connect: port {} is no cluster port", port));
  int fd = origin.call->TakeConnection();
  if (fd < 0) return Status::Unavailable(fmt::format("connect: no descriptor for the answer: {}", strerror(errno)));
  resp->mutable_dial_port();  // not sent: the answer goes with the link, from the relay's dial pool
  parts_.relay.Dial(port, [fd, id = req.id()](int link) {
    v1::ShimResponse answer;
    answer.set_id(id);
    answer.mutable_dial_port();
    AnswerWithLink(fd, std::move(answer), link);
    if (link >= 0) close(link);
  });
  return Status::Ok();
}

Status ShimHandlers::TakeLink(const Origin& origin, const v1::ShimRequest& req, v1::ShimResponse* resp) {
  const v1::ShimTakeLinkRequest& asked = req.take_link();
  if (asked.port() == 0 || asked.port() > 65535 || asked.agent_port() == 0 || asked.agent_port() > 65535 || asked.fd() < 0)
    return Status::InvalidArgument("accept: no connection named");
  // The answer goes from the relay, now or once the connection is ready,
  // with the link (or an errno) on the caller's connection, taken here.
  int fd = origin.call->TakeConnection();
  if (fd < 0) return Status::Unavailable(fmt::format("accept: no descriptor for the answer: {}", strerror(errno)));
  resp->mutable_take_link();  // not sent
  parts_.relay.TakeHandedOver(
      static_cast<uint16_t>(asked.port()), static_cast<uint16_t>(asked.agent_port()),
      {origin.peer.pid, asked.fd(), [fd, id = req.id()](int link) {
         v1::ShimResponse answer;
         answer.set_id(id);
         answer.mutable_take_link();
         return AnswerWithLink(fd, std::move(answer), link);
       }});
  return Status::Ok();
}

Status ShimHandlers::View(const Origin& origin, const v1::ShimRequest&, v1::ShimResponse* resp) {
  Result<int> fd = parts_.detached_view.Make(origin.connection);
  if (!fd.ok()) return fd.status();
  resp->mutable_view();
  origin.call->attach_fd = *fd;
  origin.call->attach_owned = true;
  spdlog::debug("the view handed to pid {} (another mount namespace)", origin.peer.pid);
  return Status::Ok();
}

}  // namespace onebox

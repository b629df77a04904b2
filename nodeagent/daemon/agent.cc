#include "nodeagent/daemon/agent.h"

#include <malloc.h>
#include <signal.h>
#include <sys/resource.h>

#include <csignal>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include "consistency/crc32c.h"
#include "grpc/health/v1/health.pb.h"
#include "nodeagent/api/access.h"
#include "nodeagent/api/cluster_service.h"
#include "nodeagent/api/local_calls.h"
#include "nodeagent/api/namespace_service.h"
#include "nodeagent/api/node_state.h"
#include "nodeagent/api/peer_service.h"
#include "nodeagent/api/process_service.h"
#include "nodeagent/api/store_service.h"
#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/daemon/data_dir.h"
#include "nodeagent/daemon/listen_address.h"
#include "nodeagent/daemon/service_manager.h"
#include "nodeagent/daemon/state_page_owner.h"
#include "nodeagent/view/detached_view.h"
#include "nodeagent/local/shim_handlers.h"
#include "nodeagent/metrics/metrics.h"
#include "nodeagent/metrics/metrics_server.h"
#include "nodeagent/process/placement.h"
#include "nodeagent/sockets/link_request.h"
#include "nodeagent/sockets/port_relay.h"
#include "nodeagent/sockets/port_table.h"
#include "nodeagent/local/shim_library.h"
#include "nodeagent/local/shim_server.h"
#include "nodeagent/peer/beat_socket.h"
#include "nodeagent/peer/grpc_peers.h"
#include "nodeagent/peer/membership.h"
#include "nodeagent/locks/lock_home.h"
#include "nodeagent/locks/node_locks.h"
#include "nodeagent/sync/anti_entropy.h"
#include "nodeagent/sync/create_slots.h"
#include "nodeagent/sync/dir_leases.h"
#include "nodeagent/sync/content_transfer.h"
#include "nodeagent/sync/local_peer.h"
#include "nodeagent/sync/replicator.h"
#include "nodeagent/sync/tree_repair.h"
#include "nodeagent/view/symlink_guard.h"
#include "nodeagent/view/view_audit.h"
#include "nodeagent/view/view_ledger.h"
#include "nodeagent/view/view_materializer.h"
#include "nodeagent/view/view_recorder.h"

namespace onebox {

namespace {

// In-flight calls get this long to finish at shutdown; idle clients (which in
// gRPC 1.51 poll their connections only every few seconds) are not waited for.
constexpr auto kDrainTimeout = std::chrono::seconds(1);
// How long a remote program's exit waits for its home to apply what it wrote.
constexpr auto kExitToWaitTimeout = std::chrono::milliseconds(10'000);
// The server's keepalive pings (time between, and wait for the answer).
constexpr int kServerKeepaliveMs = 2000;
// The descriptor limit the agent started with, which the programs it starts get back.
rlim_t files_soft_limit_at_start = 0;

// Every part of a running agent, in the order they are made; Stop takes
// them down in the order that lets each finish what it owes the others.
class Agent {
 public:
  static Result<std::unique_ptr<Agent>> Start(const AgentOptions& options, const ListenAddress& listen,
                                              const std::string& join_token, std::optional<TlsMaterial> tls);
  void Stop();
  // After Stop, nothing; after a start that failed past the view's parts,
  // their threads end before the parts they call into go (the audit's
  // rounds, the recorder's notes, the materializer's placements).
  ~Agent() {
    // The recorder may wait behind the placing thread: both end at the agent's priority.
    HurryCatchUp stopping(CatchUpWait::kStop);
    if (audit_) audit_->Stop();
    if (recorder_) recorder_->Stop();
    if (materializer_) materializer_->Stop();
  }
  // Where gRPC is served (the port the kernel picked for port 0).
  std::string grpc_address() const { return info_.grpc_address(); }
  // One scrape of --metrics: the counts (metrics/metrics.h) and the gauges read from the parts now.
  std::string RenderMetrics();

 private:
  Agent(const AgentOptions& options, DataDir data_dir, const std::string& join_token, std::optional<TlsMaterial> tls)
      : opt_(options),
        data_dir_(std::move(data_dir)),
        join_token_(join_token),
        tls_(std::move(tls)),
        gate_(join_token, options.insecure, tls_.has_value()),
        network_(join_token, tls_ ? ChannelCredentials(*tls_) : nullptr) {}
  Status OpenStore();
  Status StartView();      // the materializer, then the recorder following it
  void MakeClusterParts();  // membership, content, replication, anti-entropy, directory leases
  // A record that the view may not show yet won in the store (a peer's, a
  // restore): the materializer puts it in place, and the audit looks at it.
  void PutInPlace(const std::string& key);
  Status StartGrpc(const ListenAddress& listen);
  void StartBeats(const ListenAddress& listen);  // after StartGrpc: its port number
  Status StartPorts(const ListenAddress& listen);  // the port relay, on the gRPC host
  Status StartShimSocket();
  void StartLoops();

  const AgentOptions opt_;
  DataDir data_dir_;
  const std::string join_token_;
  const std::optional<TlsMaterial> tls_;  // none: plaintext gRPC (loopback, or --insecure)
  std::unique_ptr<Store> store_;
  AgentInfo info_;
  AccessGate gate_;
  LocalCalls local_calls_{gate_};
  StatePageOwner* state_page_ = nullptr;  // lives as long as the process
  std::unique_ptr<SymlinkGuard> guard_;
  std::unique_ptr<DetachedView> detached_view_;  // for programs in other mount namespaces
  std::unique_ptr<ViewLedger> ledger_;
  GrpcPeerNetwork network_;
  std::unique_ptr<Membership> members_;
  std::unique_ptr<BeatSocket> beats_;  // membership's heartbeats; stopped before it goes
  std::unique_ptr<ContentTransfer> content_;
  LockedPaths locked_paths_;  // outlives the materializer, which asks it
  std::unique_ptr<ViewMaterializer> materializer_;
  std::unique_ptr<CreateSlotTable> create_slots_;  // outlives what calls PutInPlace and leases_
  std::unique_ptr<ViewRecorder> recorder_;
  std::unique_ptr<ViewAudit> audit_;
  std::unique_ptr<TreeRepair> tree_repair_;
  std::unique_ptr<Replicator> replicator_;
  std::unique_ptr<AntiEntropy> anti_entropy_;
  std::unique_ptr<DirLeases> leases_;
  std::unique_ptr<ClusterProcesses> processes_;
  std::unique_ptr<RunExecutor> run_executor_;
  std::unique_ptr<RunRelays> run_relays_;
  std::unique_ptr<Placement> placement_;
  std::unique_ptr<PortTable> ports_;
  std::unique_ptr<TlsLinks> tls_links_;  // with TLS: the relay's links (outlives the relay)
  std::unique_ptr<PortRelay> port_relay_;
  std::unique_ptr<LockHome> lock_home_;
  std::unique_ptr<LockLeaseSlots> lease_slots_;  // outlives node_locks_
  std::unique_ptr<NodeLocks> node_locks_;
  std::unique_ptr<LocalPeer> local_peer_;
  std::unique_ptr<ClusterService> cluster_service_;
  std::unique_ptr<StoreService> store_service_;
  std::unique_ptr<NamespaceService> namespace_service_;
  std::unique_ptr<ProcessService> process_service_;
  std::unique_ptr<PeerService> peer_service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ShimHandlers> shim_handlers_;
  std::unique_ptr<ShimServer> shim_;
  std::unique_ptr<MetricsServer> metrics_;
};

Result<std::unique_ptr<Agent>> Agent::Start(const AgentOptions& options, const ListenAddress& listen,
                                            const std::string& join_token, std::optional<TlsMaterial> tls) {
  Result<DataDir> data_dir = DataDir::Open(options.data_dir, options.name);
  if (!data_dir.ok()) return data_dir.status();
  std::unique_ptr<Agent> agent(new Agent(options, std::move(data_dir).value(), join_token, std::move(tls)));
  if (Status s = agent->OpenStore(); !s.ok()) return s;
  if (Status s = agent->StartView(); !s.ok()) return s;
  agent->MakeClusterParts();
  // Before gRPC and the shim socket: an address that cannot be taken stops
  // the start before anything serves. (A scrape reads parts made, not all started yet.)
  if (!options.metrics.empty()) {
    Result<std::unique_ptr<MetricsServer>> metrics =
        MetricsServer::Start(options.metrics, [a = agent.get()] { return a->RenderMetrics(); });
    if (!metrics.ok()) return metrics.status();
    agent->metrics_ = std::move(metrics).value();
    spdlog::info("metrics at http://{}/metrics", agent->metrics_->address());
  }
  if (Status s = agent->StartPorts(listen); !s.ok()) return s;  // before peers' records can come
  if (Status s = agent->StartGrpc(listen); !s.ok()) return s;
  agent->StartBeats(listen);
  if (Status s = agent->StartShimSocket(); !s.ok()) {
    agent->server_->Shutdown();
    return s;
  }
  agent->StartLoops();
  return agent;
}

std::string Agent::RenderMetrics() {
  metrics::Exposition e;
  metrics::Counts& c = metrics::counts();
  e.Gauge("onebox_info", "this agent: its node and version", 1,
          metrics::Labels({{"node", info_.identity.name}, {"version", ONEBOX_VERSION}}));
  e.Gauge("onebox_uptime_seconds", "since the agent started",
          std::chrono::duration<double>(std::chrono::steady_clock::now() - info_.started).count());
  std::map<std::string, int> by_state{{"alive", 0}, {"suspect", 0}, {"dead", 0}};
  std::vector<v1::Node> nodes = members_->Nodes();
  for (const v1::Node& n : nodes) ++by_state[NodeStateName(n.state())];
  for (const auto& [state, count] : by_state)
    e.Gauge("onebox_members", "members this node knows, itself included, by state", count,
            metrics::Labels({{"state", state}}));
  for (const v1::Node& n : nodes)
    e.Gauge("onebox_member_state", "each member's state as this node sees it (1 for its state)", 1,
            metrics::Labels({{"node", n.name()}, {"state", NodeStateName(n.state())}}));
  const std::vector<v1::ReplicationLag> lags = info_.replication_lag();
  for (const v1::ReplicationLag& lag : lags)
    e.Gauge("onebox_replication_entries_behind", "entries of this node's log a member has not acknowledged",
            static_cast<double>(lag.entries_behind()), metrics::Labels({{"peer", lag.name()}}));
  for (const v1::ReplicationLag& lag : lags)
    e.Gauge("onebox_replication_lag_seconds", "age of the oldest entry a member has not acknowledged",
            static_cast<double>(lag.lag_ms()) / 1000, metrics::Labels({{"peer", lag.name()}}));
  std::vector<std::pair<std::string, StoreStats>> families;
  for (size_t i = 0; i < static_cast<size_t>(Cf::kCount); ++i)
    families.emplace_back(metrics::Labels({{"family", kCfNames[i]}}), store_->Stats(static_cast<Cf>(i)));
  for (const auto& [labels, st] : families)
    e.Gauge("onebox_store_sst_bytes", "RocksDB's table files, by column family", static_cast<double>(st.sst_bytes),
            labels);
  for (const auto& [labels, st] : families)
    e.Gauge("onebox_store_blob_bytes", "RocksDB's blob files (file content), by column family",
            static_cast<double>(st.blob_bytes), labels);
  for (const auto& [labels, st] : families)
    e.Gauge("onebox_store_memtable_bytes", "RocksDB's memtables, by column family",
            static_cast<double>(st.memtable_bytes), labels);
  for (const auto& [labels, st] : families)
    e.Gauge("onebox_store_estimated_keys", "RocksDB's estimate of its keys, by column family",
            static_cast<double>(st.estimated_keys), labels);
  v1::StatusResponse jobs;
  info_.jobs(&jobs);
  e.Counter("onebox_jobs_placed_out_total", "programs this node's processes started on other nodes",
            static_cast<double>(jobs.jobs_placed_out()));
  e.Counter("onebox_jobs_taken_in_total", "programs this node ran for other nodes", static_cast<double>(jobs.jobs_taken_in()));
  e.Gauge("onebox_jobs_out_now", "placed programs running on other nodes now", jobs.jobs_out_now());
  e.Gauge("onebox_jobs_in_now", "programs run here for other nodes now", jobs.jobs_in_now());
  auto [won, recalled, decided] = info_.leases();
  e.Counter("onebox_dir_leases_won_total", "directory leases (exclusive creates) this node won", static_cast<double>(won));
  e.Counter("onebox_dir_leases_recalled_total", "directory leases this node gave up to another's recall",
            static_cast<double>(recalled));
  e.Counter("onebox_exclusive_creates_decided_total",
            "exclusive creates and mkdirs the agent decided (not those its shims decided in a create slot)",
            static_cast<double>(decided));
  e.Counter("onebox_view_repairs_total", "files the view audit found behind the store and repaired",
            static_cast<double>(info_.view_repairs()));
  e.Gauge("onebox_catch_up_lowered",
          "1 where placing peers' files runs below the agent's priority while it is behind (CAP_SYS_NICE)",
          CatchUpLowered() ? 1 : 0);
  e.Gauge("onebox_catch_up_behind", "catch-up threads behind now (a backlog: lowered unless hurried)",
          CatchUpThreadsBehind());
  e.Counter("onebox_catch_up_hurries_total", "times something waited on the lowered placing thread and raised it",
            static_cast<double>(CatchUpHurries()));
  for (size_t i = 0; i < kCatchUpWaitNames.size(); ++i) {
    const auto wait = static_cast<CatchUpWait>(i);
    if (wait == CatchUpWait::kStop) continue;  // (the shutdown's come after the metrics stopped)
    e.Counter("onebox_catch_up_waits_total",
              "hurries of catch-up work while it is behind, by what waited, nested ones too (0 where nothing is "
              "lowered)",
              static_cast<double>(CatchUpWaits(wait)), metrics::Labels({{"wait", kCatchUpWaitNames[i]}}));
  }
  const Membership::Counts gossip = members_->counts();
  for (auto [kind, n] : {std::pair{"call", gossip.calls}, {"beat_sent", gossip.beats_sent},
                         {"beat_taken", gossip.beats_taken}, {"beat_unopened", gossip.beats_unopened}})
    e.Counter("onebox_gossip_total", "membership's messages: Gossip calls made, heartbeat datagrams sent, taken, "
              "and dropped for a seal that did not open", static_cast<double>(n), metrics::Labels({{"kind", kind}}));
  e.Add(c.grpc_requests);
  e.Add(c.shim_requests);
  e.Add(c.content_bytes);
  e.Add(c.hydration_results);
  e.Add(c.hydration_seconds);
  e.Add(c.port_connections);
  return e.text();
}

Status Agent::OpenStore() {
  const NodeIdentity& identity = data_dir_.identity();
  Result<std::unique_ptr<Store>> store = Store::Open({.path = data_dir_.store_path(), .node_id = identity.node_id});
  if (!store.ok()) return store.status();
  store_ = std::move(store).value();
  if (!Crc32cInHardware()) spdlog::info("RocksDB's CRC32C runs in software on this CPU (no SSE4.2): flushes cost more");
  info_.identity = identity;
  info_.data_dir = data_dir_.path();
  info_.socket_path = opt_.socket;
  info_.started = std::chrono::steady_clock::now();
  info_.set_grpc_address(opt_.listen);
  Result<StatePageOwner*> page = StatePageOwner::Create();
  if (!page.ok()) return page.status();
  state_page_ = *page;
  return Status::Ok();
}

Status Agent::StartView() {
  const std::string view_root = data_dir_.view_path();
  // After the store is ours, so after any agent before us on it is gone.
  guard_ = std::make_unique<SymlinkGuard>(state_page_->page(), view_root);
  members_ = std::make_unique<Membership>(*store_, network_, data_dir_.identity(), opt_.listen, opt_.join);
  content_ = std::make_unique<ContentTransfer>(*store_, *members_, network_, NodeIdHex(info_.identity.node_id),
                                               opt_.replication_factor);
  // Peers' changes go into the view first, then the recorder follows it; the
  // ledger knows which changes were whose.
  ledger_ = std::make_unique<ViewLedger>(*store_, state_page_->page());
  if (Status s = ledger_->PrepareStubMarks(); !s.ok())
    return Status(s.code(), fmt::format("the key of the stubs' marks: {}", s.message()));
  materializer_ = std::make_unique<ViewMaterializer>(*store_, *content_, *ledger_, guard_.get());
  materializer_->set_backlog(opt_.catch_up_backlog);
  // A file programs lock is overwritten in place: their open descriptors
  // (a database's) see what other nodes wrote.
  materializer_->set_in_place([l = &locked_paths_](const std::string& path) { return l->Contains(path); });
  audit_ = std::make_unique<ViewAudit>(*store_, *ledger_, view_root,
                                       [m = materializer_.get()](const std::string& key) { m->Enqueue(key); });
  if (Status s = materializer_->Start(view_root); !s.ok()) return s;
  Result<std::unique_ptr<ViewRecorder>> recorder = ViewRecorder::Start(
      view_root, *store_, *ledger_, guard_.get(), [m = materializer_.get()] { m->Drain(); },
      [a = audit_.get()](const std::string& key) { a->Note(key); });
  if (!recorder.ok()) return recorder.status();
  recorder_ = std::move(recorder).value();
  detached_view_ = std::make_unique<DetachedView>(view_root);
  content_->SetPendingSource([r = recorder_.get()](const std::string& digest) { return r->PendingChunk(digest); });
  info_.chunks_hashed_ahead = [r = recorder_.get()] { return r->hashed_ahead(); };
  info_.view_digest = [a = audit_.get()]() -> Result<std::string> {
    Result<ViewAudit::Report> report = a->Check(/*repair=*/false);
    if (!report.ok()) return report.status();
    return report->digest;
  };
  info_.view_repairs = [a = audit_.get()] { return a->repaired(); };
  return Status::Ok();
}

void Agent::PutInPlace(const std::string& key) {
  materializer_->Enqueue(key);  // (the store listed the key for the audit when the record won here)
  // After the enqueue: a slot installed after a look at the queue that came
  // before it is ended here (sync/create_slots.h, peer_changes).
  if (create_slots_) create_slots_->PeerChanged(key);
}

void Agent::MakeClusterParts() {
  ports_ = std::make_unique<PortTable>(
      *store_, *members_, network_,
      PortTable::Self{.node_id = NodeIdHex(info_.identity.node_id),
                      .name = info_.identity.name,
                      .index = [m = members_.get()] { return m->index(); }});
  auto peer_changed = [this](const std::string& key) { PutInPlace(key); };
  tree_repair_ = std::make_unique<TreeRepair>(*store_, peer_changed);
  TreeRepair& tree_repair = *tree_repair_;
  auto on_applied = [peer_changed, &tree_repair, ports = ports_.get()](Cf space, const std::string& key) {
    if (space == Cf::kPorts) ports->PeerChanged(key);
    if (space != Cf::kNs) return;
    peer_changed(key);
    tree_repair.Note(key);
  };
  replicator_ = std::make_unique<Replicator>(*store_, *members_, *content_, network_, info_.identity.node_id,
                                             on_applied, opt_.log_retain);
  anti_entropy_ = std::make_unique<AntiEntropy>(
      *store_, *members_, network_,
      [peer_changed, ports = ports_.get()](Cf space, const std::string& key) {
        if (space == Cf::kNs) peer_changed(key);
        if (space == Cf::kPorts) ports->PeerChanged(key);
      },
      [&tree_repair](const std::vector<std::string>& keys) {
        for (const std::string& key : keys) tree_repair.Note(key, std::chrono::seconds(5));
      });
  replicator_->set_peer_record_rules({.accept_root_setid = opt_.accept_root_setid_from_peers});
  anti_entropy_->set_peer_record_rules({.accept_root_setid = opt_.accept_root_setid_from_peers});
  DirLeases::Handover handover{
      .record_view = [r = recorder_.get()] { return r->Sync(); },
      .record_unrecorded = [r = recorder_.get()](const std::string& dir) { return r->RecordUnrecorded(dir); },
      .send_entries = [r = replicator_.get()](const PeerAddress& peer, const std::string& dir) {
        return r->SendEntriesOf(peer, dir);
      },
  };
  leases_ = std::make_unique<DirLeases>(*store_, *members_, network_, NodeIdHex(info_.identity.node_id), handover);
  info_.replication_lag = [r = replicator_.get()] { return r->Lags(); };
  create_slots_ = std::make_unique<CreateSlotTable>(state_page_->create_slots(), data_dir_.view_path());
  leases_->set_create_slots(create_slots_.get(), [m = materializer_.get()] { return m->Settled(); });
  info_.leases = [l = leases_.get()] {
    return AgentInfo::LeaseCounts{.won = l->won(), .recalled = l->recalled(), .decided = l->decided()};
  };
  processes_ = std::make_unique<ClusterProcesses>(*members_, network_, info_.identity.name);
  // Exit-to-wait (docs/consistency.md): what this node's programs wrote so
  // far is recorded, then applied on the members named (all live others
  // when none is), within kExitToWaitTimeout.
  auto applied_on = [this](std::optional<std::string> only) -> Status {
    if (Status recorded = recorder_->Sync(); !recorded.ok()) return recorded;
    const uint64_t seq = store_->LastLogSeqOfVisibleWrites();
    const auto deadline = std::chrono::steady_clock::now() + kExitToWaitTimeout;
    for (const PeerAddress& peer : members_->AliveOthers()) {
      if (only && peer.node_id != *only) continue;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (Status s = replicator_->WaitApplied(peer.node_id, seq, std::max(left, std::chrono::milliseconds(0)));
          !s.ok())
        return s;
    }
    return Status::Ok();
  };
  auto drain_view = [m = materializer_.get()] { m->Drain(); };
  run_executor_ = std::make_unique<RunExecutor>(
      RunPlace{.view_path = data_dir_.view_path(),
               .socket = opt_.socket,
               .shim = FindShimLibrary(),
               .settle_peers = [applied_on] { return applied_on(std::nullopt); },
               .settle_view = drain_view,
               .files_soft_limit = files_soft_limit_at_start},
      info_.identity.name, [m = members_.get()] { return m->index(); });
  processes_->set_runs(*run_executor_);
  run_relays_ = std::make_unique<RunRelays>(
      network_, *run_executor_, [applied_on](const std::string& node_id) { return applied_on(node_id); }, drain_view);
  placement_ = std::make_unique<Placement>(*members_, network_, opt_.place_jobs_per_cpu,
                                           [r = run_executor_.get()] { return r->in_now(); });
  members_->set_load_extra([r = run_executor_.get()](v1::NodeLoad* load) { load->set_placed_jobs(r->in_now()); });
  members_->set_store_digest([s = store_.get()] { return s->BucketDigestsRootIfCurrent(); });
  info_.jobs = [p = placement_.get(), r = run_executor_.get()](v1::StatusResponse* s) {
    s->set_jobs_placed_out(p->placed_out());
    s->set_jobs_out_now(p->out_now());
    s->set_jobs_taken_in(r->taken_in());
    s->set_jobs_in_now(r->in_now());
  };
  lock_home_ = std::make_unique<LockHome>(
      NodeIdHex(info_.identity.node_id),
      LockHome::Members{.not_dead =
                            [m = members_.get()] {
                              std::vector<std::string> ids;
                              for (const v1::Node& n : m->Nodes())
                                if (n.state() != v1::NODE_STATE_DEAD) ids.push_back(n.node_id());
                              return ids;
                            },
                        .majority = [m = members_.get()] { return m->SeesMajority(); },
                        .incarnation = [m = members_.get()] { return m->incarnation(); }});
  // Release-to-acquire (docs/consistency.md): a release records the view
  // first; a grant after another node's release waits for its log.
  lease_slots_ = std::make_unique<LockLeaseSlots>(
      state_page_->lock_leases(), LockLeaseSlots::Hooks{.may_trust = [this] { return node_locks_->MayTrustLeases(); },
                                                        .lapsed = [this] { node_locks_->LeasesLapsed(); }});
  node_locks_ = std::make_unique<NodeLocks>(NodeLocks::Parts{
      .self_id = NodeIdHex(info_.identity.node_id),
      .self_index = [m = members_.get()] { return m->index(); },
      .view_path = data_dir_.view_path(),
      .locked = locked_paths_,
      .home = *lock_home_,
      .members = *members_,
      .network = network_,
      .record_view = [this]() -> Result<uint64_t> {
        if (Status recorded = recorder_->Sync(); !recorded.ok()) return recorded;
        return store_->LastLogSeqOfVisibleWrites();
      },
      .record_file = [r = recorder_.get()](const std::string& path) { return r->RecordIfWritten(path); },
      .applied_from = [r = replicator_.get()](const std::string& node_id, uint64_t seq,
                                              std::chrono::milliseconds timeout) {
        return r->WaitAppliedFrom(node_id, seq, timeout);
      },
      .settle_view = drain_view,
      .lease_slots = lease_slots_.get(),
  });
  local_peer_ = std::make_unique<LocalPeer>(*members_, *replicator_, *content_, *anti_entropy_, *leases_, *processes_,
                                            placement_.get(), ports_.get(), lock_home_.get(),
                                            node_locks_.get());
  // The gossip loop moves on: the watchdog's proof of life.
  members_->set_progress_observer([] { service_manager::Alive(); });
  // The shims' count of other members alive: those not heard of since the
  // start count too (Membership::UnheardSinceStart), from before the shim
  // socket serves: a restarted agent's programs claim their exclusive
  // creates across the cluster before gossip has found the others again.
  state_page_->page().peers_alive.store(members_->UnheardSinceStart());
  members_->set_alive_observer([this, page = &state_page_->page(), r = replicator_.get(), dead_before = size_t{0},
                                 not_dead_before = std::string(), alive_before = std::string(),
                                 alive_count_before = size_t{0}](size_t alive) mutable {
    page->peers_alive.store(alive + members_->UnheardSinceStart());
    if (std::exchange(alive_count_before, alive) != alive) {
      node_locks_->AliveChanged();  // a lease ends where no majority is seen
      lock_home_->MembersChanged();  // a majority lost is a grace when it is back
    }
    // A node declared dead lets go of its ports now, not at the table's next look.
    size_t dead = 0;
    std::string not_dead, alive_ids;
    for (const v1::Node& n : members_->Nodes()) {
      dead += n.state() == v1::NODE_STATE_DEAD;
      if (n.state() != v1::NODE_STATE_DEAD) not_dead += fmt::format("{}.{},", n.node_id(), n.incarnation());
      if (n.state() == v1::NODE_STATE_ALIVE && !n.self()) alive_ids += n.node_id() + ",";
    }
    // A member alive now that was not (even where the count stayed): its pusher starts.
    if (std::exchange(alive_before, alive_ids) != alive_ids) r->PeersChanged();
    if (std::exchange(dead_before, dead) != dead) ports_->Notify();
    // Locks: a dead member's end, and homes that moved (or restarted) are reclaimed.
    if (std::exchange(not_dead_before, not_dead) != not_dead) {
      lock_home_->MembersChanged();
      node_locks_->MembersChanged();
    }
  });
}

Status Agent::StartGrpc(const ListenAddress& listen) {
  if (std::vector<std::string> unclassified = UnclassifiedMethods(); !unclassified.empty())
    return Status::FailedPrecondition(fmt::format(
        "methods without an access class in nodeagent/api/access.h: {}", fmt::join(unclassified, ", ")));
  cluster_service_ = std::make_unique<ClusterService>(gate_, info_, *store_, *members_);
  store_service_ = std::make_unique<StoreService>(gate_, *store_, *replicator_, *members_);
  namespace_service_ = std::make_unique<NamespaceService>(
      gate_, *store_, data_dir_.view_path(), [this](const std::string& key) { PutInPlace(key); });
  process_service_ = std::make_unique<ProcessService>(gate_, *processes_);
  peer_service_ = std::make_unique<PeerService>(gate_, *local_peer_, *run_executor_);
  store_service_->AddLocalCalls(local_calls_);
  namespace_service_->AddLocalCalls(local_calls_);
  process_service_->AddLocalCalls(local_calls_);
  // Force-link the health descriptors so reflection clients can describe and
  // call grpc.health.v1.Health, which gRPC's built-in service implements.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(opt_.listen, tls_ ? ServerCredentials(*tls_) : grpc::InsecureServerCredentials(), &bound_port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a taken port must fail, not be shared
  builder.SetMaxReceiveMessageSize(8 << 20);
  // Peers' keepalive pings (peer/grpc_peers.h) are welcome, even between
  // calls (no strikes).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, kPeerKeepaliveMs / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // And this side pings too, while calls are under way (an idle agent
  // sends no pings): a caller cut off under a long call (a run's stream,
  // whose program must not outlive its stand-in's node) is found gone
  // within about 4 s, and its call cancelled.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kServerKeepaliveMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kServerKeepaliveMs);
  builder.RegisterService(cluster_service_.get());
  builder.RegisterService(store_service_.get());
  builder.RegisterService(namespace_service_.get());
  builder.RegisterService(process_service_.get());
  builder.RegisterService(peer_service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || bound_port == 0) return Status::Unavailable(fmt::format("cannot listen on {}", opt_.listen));
  if (listen.port == 0) info_.set_grpc_address(listen.WithPort(bound_port));
  return Status::Ok();
}

void Agent::StartBeats(const ListenAddress& listen) {
  Result<ListenAddress> bound = ParseListenAddress(info_.grpc_address());
  Result<std::unique_ptr<BeatSocket>> beats =
      bound.ok() ? BeatSocket::Open(listen.host, bound->port, [m = members_.get()](std::string_view d) { m->OnBeat(d); })
                 : Result<std::unique_ptr<BeatSocket>>(bound.status());
  if (!beats.ok()) {  // gossip still works, by calls alone
    spdlog::warn("{}: membership gossips by gRPC calls only", beats.status().message());
    return;
  }
  beats_ = std::move(beats).value();
  network_.set_beats(beats_.get());
  members_->EnableBeats();
}

Status Agent::StartPorts(const ListenAddress& listen) {
  if (tls_) {  // links between agents over TLS; programs then get none of their own (no direct links)
    Result<std::unique_ptr<TlsLinks>> links = TlsLinks::Make(*tls_, kLinkHandshakeMs);
    if (!links.ok()) return links.status();
    tls_links_ = std::move(links).value();
  }
  Result<std::unique_ptr<PortRelay>> relay =
      PortRelay::Start(*ports_, gate_, join_token_, listen.host, data_dir_.view_path(),
                       tls_links_ ? nullptr : &state_page_->port_maps(), tls_links_.get());
  if (!relay.ok()) return relay.status();
  port_relay_ = std::move(relay).value();
  ports_->set_relay_address(port_relay_->address());
  ports_->set_on_change([r = port_relay_.get()] { r->Reconcile(); },
                        [r = port_relay_.get()] { return r->HoldsNothing(); });
  info_.ports = [t = ports_.get()] { return t->Live(); };
  return Status::Ok();
}

Status Agent::StartShimSocket() {
  shim_handlers_ = std::make_unique<ShimHandlers>(ShimHandlers::Parts{
      .info = info_,
      .recorder = *recorder_,
      .materializer = *materializer_,
      .guard = *guard_,
      .leases = *leases_,
      .replicator = *replicator_,
      .members = *members_,
      .local_calls = local_calls_,
      .processes = *processes_,
      .runs = *run_relays_,
      .placement = *placement_,
      .ports = *ports_,
      .relay = *port_relay_,
      .locks = *node_locks_,
      .front = BesideThisBinary("onebox"),
      .state_page_fd = state_page_->fd(),
      .detached_view = *detached_view_,
      .replication_factor = static_cast<size_t>(opt_.replication_factor),
      .write_quorum = static_cast<size_t>(opt_.write_quorum),
  });
  ShimHandlers* handlers = shim_handlers_.get();
  Result<std::unique_ptr<ShimServer>> shim = ShimServer::Start(
      opt_.socket,
      [handlers](ShimCall& call, const v1::ShimRequest& req, v1::ShimResponse* resp) { handlers->Serve(call, req, resp); },
      [handlers](uint64_t connection) { handlers->ConnectionClosed(connection); });
  if (!shim.ok()) return shim.status();
  shim_ = std::move(shim).value();
  return Status::Ok();
}

void Agent::StartLoops() {
  members_->set_address(info_.grpc_address());
  members_->Start();
  replicator_->Start();
  anti_entropy_->Start();
  tree_repair_->Start();
  audit_->Start();
  ports_->Start();
  node_locks_->Start();
  port_relay_->Reconcile();  // the ports other nodes held before a restart
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  for (const std::string& service : ApiServices()) health->SetServingStatus(service, true);
  health->SetServingStatus(true);
  spdlog::info("agent {} (node {}) serving gRPC on {} and the shim on {}; data dir {}", info_.identity.name,
               NodeIdHex(info_.identity.node_id), info_.grpc_address(), opt_.socket, data_dir_.path());
  if (tls_) spdlog::info("TLS: peers must show a node certificate of the cluster CA; clients an admin one to change anything");
  else if (gate_.has_token()) spdlog::info("peers: calls must carry the cluster's join token");
  else if (opt_.insecure)
    spdlog::warn("--insecure and no join token: any program that reaches {} can act as a peer", info_.grpc_address());
  else spdlog::info("no join token (--join-token-file): this agent answers no peer and joins no one");
}

void Agent::Stop() {
  create_slots_->EndAll();  // every exclusive create asks the agent, while it still answers
  metrics_.reset();  // no scrape reads the parts below as they stop
  server_->GetHealthCheckService()->SetServingStatus(false);
  anti_entropy_->Stop();
  replicator_->Stop();
  tree_repair_->Stop();
  audit_->Stop();
  members_->Stop();
  network_.set_beats(nullptr);
  beats_.reset();
  ports_->Stop();            // no more changes for the relay
  shim_->Stop();             // no new requests; answers still due are dropped
  lock_home_->Stop();        // awaits answer at once
  node_locks_->Stop();       // waits end: their programs get ENOLCK
  run_relays_->Stop();       // the runs this node is home to: their stand-ins see the node lost
  shim_handlers_->Drain();   // before the recorder, materializer and store they use go
  server_->Shutdown(std::chrono::system_clock::now() + kDrainTimeout);
  server_->Wait();
  server_.reset();           // before the services it references
  store_service_.reset();    // drains its worker pool: no store work is left
  namespace_service_.reset();
  process_service_.reset();
  port_relay_.reset();       // after the last peer record (PeerChanged): resets the connections it relays
  {
    // The recorder may wait behind the placing thread: both end at the agent's priority.
    HurryCatchUp stopping(CatchUpWait::kStop);
    recorder_->Stop();
    materializer_->Stop();
  }
  store_.reset();  // closes RocksDB: memtables are in the WAL, nothing is lost
  spdlog::info("agent {} stopped", info_.identity.name);
}

// Blocks the shutdown signals before any thread starts (RocksDB and gRPC
// start their own); the main thread takes them with sigwait.
sigset_t BlockStopSignals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return stop_signals;
}

int Fail(const Status& s) {
  spdlog::error("{}", s.message());
  return 1;
}

// The join token, or why the agent cannot start: without one (or TLS), it
// joins no one and answers no peer unless --insecure says so.
Result<std::string> JoinToken(const AgentOptions& opt, bool tls) {
  if (!opt.join_token_file.empty()) return ReadJoinTokenFile(opt.join_token_file);
  if (!opt.join.empty() && !opt.insecure && !tls)
    return Status::InvalidArgument(
        "--join needs TLS (--cacert, --cert, --key) or the cluster's join token (--join-token-file FILE, the same on "
        "every agent; make one with `openssl rand -hex 32`), or --insecure to join without either");
  return std::string();
}

// The agent's TLS files, loaded and checked; none without --cacert. Without
// TLS it listens only on loopback unless --insecure: peers' calls and the
// join token would cross the network in the clear.
Result<std::optional<TlsMaterial>> AgentTls(const AgentOptions& opt, const ListenAddress& listen) {
  if (opt.tls.any()) {
    Result<TlsMaterial> tls = LoadTls(opt.tls, /*need_cert=*/true);
    if (!tls.ok()) return tls.status();
    return std::optional<TlsMaterial>(std::move(tls).value());
  }
  if (!opt.insecure && !OnlyLoopback(listen.host))
    return Status::InvalidArgument(fmt::format(
        "refusing to listen on {} without TLS: peers' calls would cross the network in the clear; give --cacert, "
        "--cert and --key (docs/operations.md, Mutual TLS), or --insecure on a network only the cluster reaches",
        listen.host));
  return std::optional<TlsMaterial>();
}

}  // namespace

int RunAgent(const AgentOptions& opt) {
  sigset_t stop_signals = BlockStopSignals();
  // Content moves in 1 MiB buffers (chunks, gRPC messages). glibc would map
  // each one afresh (mmap above its threshold) and unmap it when freed, so
  // every chunk cost 256 page faults and zeroed pages: keep them in the heap,
  // and keep a little freed heap for the next ones.
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  // Each relayed connection holds six descriptors (sockets/splice_relay.h):
  // the soft limit (1024 by default) is raised to the hard one.
  if (rlimit files{}; getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files_soft_limit_at_start = files.rlim_cur;
    files.rlim_cur = files.rlim_max;
    setrlimit(RLIMIT_NOFILE, &files);
  }

  if (Status s = ValidateNodeName(opt.name); !s.ok()) return Fail(s);
  Result<ListenAddress> listen = ParseListenAddress(opt.listen);
  if (!listen.ok()) return Fail(listen.status());
  Result<std::optional<TlsMaterial>> tls = AgentTls(opt, *listen);
  if (!tls.ok()) return Fail(tls.status());
  // Gossip tells the others this address, and the port relay's records
  // carry its host: they would dial 0.0.0.0, that is, themselves.
  if (IsAnyAddress(listen->host))
    return Fail(Status::InvalidArgument(fmt::format(
        "--listen {}: the other agents reach this one at the address it listens on, and cannot dial {}; give this "
        "node's own address (say 10.0.0.5:{})",
        opt.listen, listen->host, listen->port)));
  if (Status s = CheckCanListen(*listen); !s.ok()) return Fail(s);
  Result<std::string> join_token = JoinToken(opt, tls->has_value());
  if (!join_token.ok()) return Fail(join_token.status());
  Result<std::unique_ptr<Agent>> agent = Agent::Start(opt, *listen, *join_token, std::move(tls).value());
  if (!agent.ok()) return Fail(agent.status());
  service_manager::Ready(fmt::format("serving node {} on {}, shim socket {}", opt.name, (*agent)->grpc_address(),
                                     opt.socket));

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0) {
  }
  spdlog::info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  service_manager::Stopping();
  (*agent)->Stop();
  return 0;
}

}  // namespace onebox

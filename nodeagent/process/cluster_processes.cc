#include "nodeagent/process/cluster_processes.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <optional>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/peer/fan_out.h"
#include "nodeagent/process/signal_as.h"
#include "proto/gpid.h"

namespace onebox {

namespace {

constexpr std::chrono::milliseconds kPeerDeadline{3000};

bool Names(const v1::Node& n, const std::string& wanted) {
  if (n.name() == wanted) return true;
  char* end = nullptr;
  unsigned long index = std::strtoul(wanted.c_str(), &end, 10);
  return !wanted.empty() && *end == '\0' && index == n.index();
}

}  // namespace

Status ClusterProcesses::OnListProcesses(const v1::ListProcessesRequest& req, v1::ListProcessesResponse* resp) {
  ProcScanOptions options;
  options.all = req.all();
  if (req.has_uid()) options.uid = req.uid();
  std::vector<v1::ProcessInfo> scanned = ScanProcesses(options, members_.index(), node_name_, source_);
  // After the scan: every run it saw is in the homes by then (process/run_executor.h).
  std::map<pid_t, RunExecutor::Home> homes;
  if (runs_ != nullptr) homes = runs_->Homes();
  for (v1::ProcessInfo& p : scanned) {
    if (auto home = homes.find(p.pid()); home != homes.end()) {
      p.set_home_node(home->second.node);
      p.set_home_gpid(home->second.gpid);
    }
    *resp->add_processes() = std::move(p);
  }
  return Status::Ok();
}

Result<v1::Node> ClusterProcesses::LiveNode(const std::string& wanted) {
  for (v1::Node& n : members_.Nodes()) {
    if (wanted.empty() ? !n.self() : !Names(n, wanted)) continue;
    if (n.state() == v1::NODE_STATE_DEAD) return Status::Unavailable(fmt::format("node {} is dead", n.name()));
    return std::move(n);
  }
  return Status::NotFound(fmt::format("no node is named {}", wanted));
}

Status ClusterProcesses::List(const v1::ListProcessesRequest& req, v1::ListProcessesResponse* resp) {
  std::vector<v1::Node> asked;
  for (v1::Node& n : members_.Nodes()) {
    if (!req.node().empty() && !Names(n, req.node())) continue;
    if (n.state() == v1::NODE_STATE_DEAD) {
      if (!req.node().empty()) return Status::Unavailable(fmt::format("node {} is dead", n.name()));
      continue;
    }
    asked.push_back(std::move(n));
  }
  if (asked.empty()) return Status::NotFound(fmt::format("no node is named {}", req.node()));

  v1::ListProcessesRequest theirs = req;
  theirs.clear_node();
  std::mutex mu;
  FanOutResult asked_all = FanOut(
      asked.size(), asked.size(),
      [&](size_t i, Cancellation& cancellation) -> Status {
        v1::ListProcessesResponse answer;
        Status st = asked[i].self() ? OnListProcesses(theirs, &answer)
                                    : network_.To(asked[i].address())
                                          .ListProcesses(theirs, &answer,
                                                         {.timeout = kPeerDeadline, .cancellation = &cancellation});
        if (!st.ok()) {
          std::lock_guard lock(mu);
          resp->add_unanswered(fmt::format("{}: {}", asked[i].name(), st.message()));
          return st;
        }
        std::lock_guard lock(mu);
        for (v1::ProcessInfo& p : *answer.mutable_processes()) *resp->add_processes() = std::move(p);
        return Status::Ok();
      },
      [&](size_t i) { return asked[i].name(); });
  (void)asked_all;  // who did not answer is in resp->unanswered
  std::sort(resp->mutable_processes()->begin(), resp->mutable_processes()->end(),
            [](const v1::ProcessInfo& a, const v1::ProcessInfo& b) { return a.gpid() < b.gpid(); });
  return Status::Ok();
}

Result<v1::Node> ClusterProcesses::NodeWithIndex(uint32_t index) {
  for (v1::Node& n : members_.Nodes()) {
    if (n.index() != index || n.self()) continue;
    if (n.state() == v1::NODE_STATE_DEAD) return Status::NotFound(fmt::format("node {} (index {}) is dead", n.name(), index));
    return std::move(n);
  }
  return Status::NotFound(fmt::format("no node has index {}", index));
}

Status ClusterProcesses::SignalHere(const v1::CallerCredentials& caller, int64_t pid, const v1::SignalRequest& req) {
  std::optional<int64_t> value;
  if (req.has_value()) value = req.value();
  return SignalAs(caller, static_cast<pid_t>(pid), req.signal(), value);
}

Status ClusterProcesses::Signal(const v1::CallerCredentials& caller, const v1::SignalRequest& req) {
  const int64_t target = std::llabs(req.gpid());
  const int64_t sign = req.gpid() < 0 ? -1 : 1;
  if (target == 0 || req.gpid() == -1)
    return Status::InvalidArgument("pids 0 and -1 name no one process or group: signal them with kill(1) itself");
  if (members_.index() == 0) return Status::Unavailable("this node has no index yet: gpids mean nothing here");
  if (!gpid::IsGlobal(target) || gpid::NodeIndex(target) == members_.index())
    return SignalHere(caller, sign * gpid::LocalPid(target), req);
  Result<v1::Node> node = NodeWithIndex(gpid::NodeIndex(target));
  if (!node.ok()) return Status::NotFound(fmt::format("gpid {}: {}", target, node.status().message()));
  v1::PeerSignalRequest forwarded;
  *forwarded.mutable_signal() = req;
  *forwarded.mutable_caller() = caller;
  forwarded.mutable_caller()->set_node(node_name_);
  v1::SignalResponse answer;
  Status st = network_.To(node->address()).SignalProcess(forwarded, &answer, {.timeout = kPeerDeadline});
  if (st.code() == Code::kUnavailable)
    return Status::Unavailable(fmt::format("gpid {}: node {} did not answer: {}", target, node->name(), st.message()));
  return st;
}

Status ClusterProcesses::OnSignalProcess(const v1::PeerSignalRequest& req) {
  const int64_t target = std::llabs(req.signal().gpid());
  if (!gpid::IsGlobal(target) || gpid::NodeIndex(target) != members_.index())
    return Status::NotFound(fmt::format("gpid {} is not one of node {}'s", target, node_name_));
  if (!req.has_caller() || req.caller().uid() == static_cast<uint32_t>(-1))
    return Status::InvalidArgument("a signal from a peer names its caller");
  const int64_t pid = (req.signal().gpid() < 0 ? -1 : 1) * gpid::LocalPid(target);
  Status st = SignalHere(req.caller(), pid, req.signal());
  spdlog::info("signal {} to pid {} for uid {} (pid {} of node {}): {}", req.signal().signal(), pid,
               req.caller().uid(), req.caller().pid(), req.caller().node(), st.ok() ? "sent" : st.message());
  return st;
}

}  // namespace onebox

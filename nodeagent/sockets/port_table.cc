#include "nodeagent/sockets/port_table.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "nodeagent/peer/quorum.h"
#include "proto/gpid.h"

namespace onebox {

namespace {

// Whether /proc/net/FILE has a listening socket on port. Each line:
// "sl local_address rem_address st ...", local_address HEX_IP:HEX_PORT,
// st 0A for LISTEN.
bool ListeningIn(const char* file, uint32_t port) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    char local[64];
    unsigned st = 0;
    if (std::sscanf(line.c_str(), " %*s %63s %*s %x", local, &st) != 2) continue;
    const char* colon = std::strrchr(local, ':');
    if (colon != nullptr && st == 0x0A && std::strtoul(colon + 1, nullptr, 16) == port) return true;
  }
  return false;
}

bool InodeOpenIn(pid_t pid, uint64_t inode) {
  const std::string dir = fmt::format("/proc/{}/fd", pid);
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return false;
  const std::string want = fmt::format("socket:[{}]", inode);
  bool found = false;
  while (dirent* e = readdir(d)) {
    char target[64];
    ssize_t n = readlinkat(dirfd(d), e->d_name, target, sizeof target);
    if (n > 0 && std::string_view(target, static_cast<size_t>(n)) == want) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

}  // namespace

bool PortStillBound(uint32_t port, uint64_t socket_inode, pid_t pid) {
  return ListeningIn("/proc/net/tcp", port) || ListeningIn("/proc/net/tcp6", port) ||
         (pid > 0 && InodeOpenIn(pid, socket_inode));
}

PortTable::PortTable(Store& store, Membership& members, PeerNetwork& network, Self self)
    : store_(store), members_(members), network_(network), self_(std::move(self)) {}

PortTable::~PortTable() { Stop(); }

std::string PortTable::Key(uint32_t port) { return fmt::format("tcp/{:05}", port); }

void PortTable::Start() {
  watch_.Start("onebox-ports", std::chrono::duration_cast<std::chrono::milliseconds>(kWatchPeriod), [this] {
    Watch();
    Notify();  // a member may have died or come back
  });
}

void PortTable::Stop() { watch_.Stop(); }

void PortTable::PeerChanged(const std::string& key) {
  if (Result<Record> rec = store_.GetWithTombstone(key, Cf::kPorts); rec.ok()) {
    std::lock_guard lock(mu_);
    auto grant = grants_.find(key);
    if (grant != grants_.end() && grant->second.node_id == NodeIdHex(rec->version.node)) grants_.erase(grant);
  }
  Notify();
}

void PortTable::Notify() {
  if (on_change_) on_change_();
}

std::optional<v1::ClusterPort> PortTable::Holder(const std::string& key) {
  Result<Record> rec = store_.Get(key, Cf::kPorts);
  v1::ClusterPort port;
  if (!rec.ok() || !port.ParseFromString(rec->value)) return std::nullopt;
  if (port.node_id() == self_.node_id) {
    if (!PortStillBound(port.port(), port.socket_inode(), port.pid())) return std::nullopt;
  } else if (members_.Dead(port.node_id())) {
    return std::nullopt;
  }
  return port;
}

v1::ClaimPortResponse PortTable::CastLocked(const std::string& key, const std::string& node_id, bool withdraw) {
  v1::ClaimPortResponse vote;
  auto now = std::chrono::steady_clock::now();
  auto grant = grants_.find(key);
  if (withdraw) {
    if (grant != grants_.end() && grant->second.node_id == node_id) grants_.erase(grant);
    return vote;
  }
  if (std::optional<v1::ClusterPort> holder = Holder(key); holder && holder->node_id() != node_id) {
    vote.set_held(true);
    vote.set_holder(holder->node_id());
    return vote;
  }
  if (grant != grants_.end() && grant->second.node_id != node_id && grant->second.until > now) {
    vote.set_holder(grant->second.node_id);
    return vote;
  }
  grants_[key] = {node_id, now + kGrantHold};
  vote.set_granted(true);
  return vote;
}

Status PortTable::OnClaimPort(const v1::ClaimPortRequest& req, v1::ClaimPortResponse* resp) {
  if (req.key().rfind("tcp/", 0) != 0 || req.node_id().empty())
    return Status::InvalidArgument(fmt::format("claim port: bad key '{}' or node", req.key()));
  std::lock_guard lock(mu_);
  *resp = CastLocked(req.key(), req.node_id(), req.withdraw());
  return Status::Ok();
}

bool PortTable::Round(const std::string& key, bool* held, std::string* why) {
  std::vector<PeerAddress> others = members_.AliveOthers();
  size_t granted = 0;
  {
    std::lock_guard lock(mu_);
    v1::ClaimPortResponse own = CastLocked(key, self_.node_id, false);
    if (own.granted()) ++granted;
    if (own.held()) *held = true;
  }
  v1::ClaimPortRequest req;
  req.set_key(key);
  req.set_node_id(self_.node_id);
  std::mutex answers_mu;
  std::vector<std::thread> calls;
  for (const PeerAddress& peer : others)
    calls.emplace_back([&, peer] {
      v1::ClaimPortResponse vote;
      Status s = network_.To(peer.address).ClaimPort(req, &vote, {.timeout = std::chrono::milliseconds(1000)});
      std::lock_guard lock(answers_mu);
      if (!s.ok()) *why += fmt::format("; {}: {}", peer.node_id, s.message());
      else if (vote.granted()) ++granted;
      else if (vote.held()) *held = true;
      else *why += fmt::format("; {} granted it to {} a moment ago", peer.node_id, vote.holder());
    });
  for (std::thread& t : calls) t.join();
  return !*held && granted >= Majority(others.size() + 1);
}

void PortTable::Withdraw(const std::string& key) {
  {
    std::lock_guard lock(mu_);
    CastLocked(key, self_.node_id, true);
  }
  v1::ClaimPortRequest req;
  req.set_key(key);
  req.set_node_id(self_.node_id);
  req.set_withdraw(true);
  for (const PeerAddress& peer : members_.AliveOthers()) {
    v1::ClaimPortResponse unused;
    (void)network_.To(peer.address).ClaimPort(req, &unused, {.timeout = std::chrono::milliseconds(500)});
  }
}

Status PortTable::Claim(uint32_t port, bool ipv6, uint64_t socket_inode, pid_t pid, uid_t uid) {
  const std::string key = Key(port);
  std::lock_guard claim(claim_mu_);
  // A port this node's program still holds: the kernel decides (SO_REUSEPORT
  // shares it, anything else fails with EADDRINUSE as natively).
  if (std::optional<v1::ClusterPort> holder = Holder(key); holder && holder->node_id() == self_.node_id)
    return Status::Ok();
  std::mt19937 rng(std::random_device{}());
  const auto deadline = std::chrono::steady_clock::now() + kClaimWait;
  std::string why;
  for (;;) {
    bool held = false;
    if (Round(key, &held, &why)) break;
    Withdraw(key);
    if (held) return Status::AlreadyExists(fmt::format("port {} is held by a program on another node", port));
    if (std::chrono::steady_clock::now() >= deadline)
      return Status::Unavailable(fmt::format("port {}: no majority of the live nodes granted it{}", port, why));
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 200)(rng)));
  }
  v1::ClusterPort record;
  record.set_port(port);
  record.set_node(self_.name);
  record.set_node_id(self_.node_id);
  record.set_gpid(gpid::Make(self_.index(), pid));
  record.set_uid(uid);
  record.set_since_unix_ms(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  record.set_connect_host(ipv6 ? "::1" : "127.0.0.1");
  record.set_relay(relay_address_);
  record.set_socket_inode(socket_inode);
  record.set_pid(pid);
  Result<Version> put = store_.Put(key, record.SerializeAsString(), /*sync=*/false, Cf::kPorts);
  if (!put.ok()) return put.status();
  {
    std::lock_guard lock(mu_);
    grants_.erase(key);  // spent: the record speaks now
  }
  spdlog::debug("port {} claimed for pid {} (uid {})", port, pid, uid);
  Notify();
  return Status::Ok();
}

void PortTable::Release(uint32_t port, uint64_t socket_inode, uid_t uid) {
  const std::string key = Key(port);
  Result<Record> rec = store_.Get(key, Cf::kPorts);
  v1::ClusterPort held;
  if (!rec.ok() || !held.ParseFromString(rec->value) || held.node_id() != self_.node_id ||
      held.socket_inode() != socket_inode || held.uid() != uid)
    return;
  (void)store_.Delete(key, /*sync=*/false, nullptr, Cf::kPorts);
  Notify();
}

void PortTable::Watch() {
  Result<ScanPage> page = store_.Scan("tcp/", "", StoreLimits::kMaxScanLimit, /*keys_only=*/true, Cf::kPorts);
  if (!page.ok()) return;
  for (const Entry& e : page->entries) {
    std::lock_guard claim(claim_mu_);  // read again under it: a claim may have just replaced the record
    Result<Record> rec = store_.Get(e.key, Cf::kPorts);
    v1::ClusterPort port;
    if (!rec.ok() || !port.ParseFromString(rec->value) || port.node_id() != self_.node_id) continue;
    if (PortStillBound(port.port(), port.socket_inode(), port.pid())) continue;
    spdlog::debug("port {} let go (pid {})", port.port(), port.pid());
    (void)store_.Delete(e.key, /*sync=*/false, nullptr, Cf::kPorts);
  }
}

std::vector<v1::ClusterPort> PortTable::Live() {
  std::vector<v1::ClusterPort> live;
  std::string after;
  for (;;) {
    Result<ScanPage> page = store_.Scan("tcp/", after, StoreLimits::kMaxScanLimit, false, Cf::kPorts);
    if (!page.ok()) break;
    for (const Entry& e : page->entries) {
      v1::ClusterPort port;
      if (!port.ParseFromString(e.record.value)) continue;
      // This node's own are checked by Watch each second; reading /proc
      // for every port here would cost as much on every change.
      if (port.node_id() == self_.node_id || !members_.Dead(port.node_id())) live.push_back(std::move(port));
    }
    if (!page->more || page->entries.empty()) break;
    after = page->entries.back().key;
  }
  return live;
}

std::optional<v1::ClusterPort> PortTable::OwnedHere(uint32_t port) {
  Result<Record> rec = store_.Get(Key(port), Cf::kPorts);
  v1::ClusterPort held;
  if (!rec.ok() || !held.ParseFromString(rec->value) || held.node_id() != self_.node_id) return std::nullopt;
  return held;
}

}  // namespace onebox

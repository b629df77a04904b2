#include "nodeagent/sockets/port_table.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "naming/node_identity.h"
#include "nodeagent/peer/quorum.h"
#include "proto/gpid.h"

namespace onebox {

namespace {

// Listening sockets of this node's network namespace, (port, inode). TCP
// from /proc/net/tcp and tcp6, each line "sl local_address rem_address st
// tx_queue:rx_queue tr:when retrnsmt uid timeout inode ...", local_address
// HEX_IP:HEX_PORT, st 0A for LISTEN. Unix sockets as (0, inode), from
// /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path", Flags
// with __SO_ACCEPTCON (0x10000) when listening.
using Listening = std::set<std::pair<uint32_t, uint64_t>>;
Listening ListeningSockets() {
  Listening out;
  {
    std::ifstream in("/proc/net/unix");
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      unsigned long flags = 0;
      unsigned long long inode = 0;
      if (std::sscanf(line.c_str(), " %*s %*s %*s %lx %*s %*s %llu", &flags, &inode) == 2 && (flags & 0x10000))
        out.emplace(0, inode);
    }
  }
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      char local[64];
      unsigned st = 0;
      unsigned long long inode = 0;
      if (std::sscanf(line.c_str(), " %*s %63s %*s %x %*s %*s %*s %*s %*s %llu", local, &st, &inode) != 3) continue;
      const char* colon = std::strrchr(local, ':');
      if (colon != nullptr && st == 0x0A)
        out.emplace(static_cast<uint32_t>(std::strtoul(colon + 1, nullptr, 16)), inode);
    }
  }
  return out;
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

// Whether this node's record still holds its port: one of its sockets
// listens (a forked server's too), or the first binder still has its
// socket open (bound, not listening yet). A socket of another program that
// listens on the port does not count: the relay never reaches it.
bool StillBound(const v1::ClusterPort& port, const Listening& listening) {
  for (uint64_t inode : port.socket_inodes())
    if (listening.count({port.port(), inode})) return true;
  return port.pid() > 0 && port.socket_inodes_size() > 0 && InodeOpenIn(port.pid(), port.socket_inodes(0));
}

}  // namespace

uint32_t UnprivilegedPortStart() {
  std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
  uint32_t start = 1024;
  in >> start;
  return start;
}

PortTable::PortTable(Store& store, Membership& members, PeerNetwork& network, Self self)
    : store_(store), members_(members), network_(network), self_(std::move(self)) {}

PortTable::~PortTable() { Stop(); }

PortTable::KeyLock::KeyLock(PortTable& t, std::string key) : t_(t), key_(std::move(key)) {
  std::unique_lock lock(t_.keys_mu_);
  t_.keys_cv_.wait(lock, [&] { return !t_.busy_keys_.count(key_); });
  t_.busy_keys_.insert(key_);
}

PortTable::KeyLock::~KeyLock() {
  {
    std::lock_guard lock(t_.keys_mu_);
    t_.busy_keys_.erase(key_);
  }
  t_.keys_cv_.notify_all();
}

bool PortTable::ListensNow(const v1::ClusterPort& port) {
  {
    std::lock_guard lock(mu_);
    for (uint64_t inode : port.socket_inodes())
      if (listening_.count(inode)) return true;
  }
  const Listening now = ListeningSockets();  // a miss: look again (a server that just started)
  for (uint64_t inode : port.socket_inodes())
    if (now.count({port.port(), inode})) {
      std::lock_guard lock(mu_);
      listening_.insert(inode);
      return true;
    }
  return false;
}

std::string PortTable::Key(uint32_t port) { return fmt::format("tcp/{:05}", port); }

void PortTable::Start() {
  // With no record in the table and nothing relayed there is nothing to
  // watch and no owner whose death matters: the thread sleeps until a
  // record is written.
  watch_.Start(
      "onebox-ports", std::chrono::duration_cast<std::chrono::milliseconds>(kWatchPeriod),
      [this] {
        Watch();
        Notify();  // a member may have died or come back
      },
      [this] { return AtRest(); });
}

void PortTable::Stop() { watch_.Stop(); }

bool PortTable::AtRest() {
  if (on_change_at_rest_ && !on_change_at_rest_()) return false;
  Result<ScanPage> page = store_.Scan("", "", 1, /*keys_only=*/true, Cf::kPorts);
  return page.ok() && page->entries.empty();
}

void PortTable::PeerChanged(const std::string& key) {
  watch_.Wake();
  if (Result<Record> rec = store_.Get(key, Cf::kPorts); rec.ok()) {
    v1::ClusterPort port;
    std::lock_guard lock(mu_);
    auto grant = grants_.find(key);
    if (grant != grants_.end() && port.ParseFromString(rec->value) && port.claim_id() == grant->second.claim_id)
      grants_.erase(grant);  // spent: the claimant's record speaks now
  }
  Notify();
}

bool PortTable::OwnerCutOff(const std::string& node_id) {
  if (members_.Gone(node_id)) return true;
  std::optional<std::chrono::milliseconds> silent = members_.SilentFor(node_id);
  return silent && *silent >= kCutOffAfter;
}

void PortTable::Notify() {
  if (on_change_) on_change_();
}

std::optional<v1::ClusterPort> PortTable::Holder(const std::string& key) {
  Result<Record> rec = store_.Get(key, Cf::kPorts);
  v1::ClusterPort port;
  if (!rec.ok() || !port.ParseFromString(rec->value)) return std::nullopt;
  if (port.node_id() == self_.node_id) {
    if (!StillBound(port, ListeningSockets())) return std::nullopt;
  } else if (members_.Gone(port.node_id())) {
    return std::nullopt;
  }
  return port;
}

v1::ClaimPortResponse PortTable::CastLocked(const v1::ClaimPortRequest& req) {
  v1::ClaimPortResponse vote;
  auto now = std::chrono::steady_clock::now();
  auto grant = grants_.find(req.key());
  if (req.withdraw()) {
    if (grant != grants_.end() && grant->second.claim_id == req.claim_id()) grants_.erase(grant);
    return vote;
  }
  if (std::optional<v1::ClusterPort> holder = Holder(req.key()); holder && holder->node_id() != req.node_id()) {
    vote.set_held(true);
    vote.set_holder(holder->node_id());
    return vote;
  }
  if (grant != grants_.end() && grant->second.claim_id != req.claim_id() && grant->second.until > now) {
    vote.set_holder(grant->second.node_id);
    return vote;
  }
  grants_[req.key()] = {req.node_id(), req.claim_id(), now + kGrantHold};
  vote.set_granted(true);
  return vote;
}

Status PortTable::OnClaimPort(const v1::ClaimPortRequest& req, v1::ClaimPortResponse* resp) {
  if ((req.key().rfind("tcp/", 0) != 0 && req.key().rfind("unix/", 0) != 0) || req.node_id().empty() ||
      req.claim_id() == 0)
    return Status::InvalidArgument(fmt::format("claim port: bad key '{}', node or claim", req.key()));
  std::lock_guard lock(mu_);
  *resp = CastLocked(req);
  return Status::Ok();
}

size_t PortTable::VotesNeeded() {
  // Every member not declared dead counts (a suspected one that does not
  // answer counts as a refusal), and so does every seed not heard from: a
  // node that has just joined is not a cluster of one.
  size_t members = 1 + members_.UnheardSeeds();
  for (const v1::Node& n : members_.Nodes()) members += !n.self() && n.state() != v1::NODE_STATE_DEAD;
  return Majority(members);
}

bool PortTable::Round(const v1::ClaimPortRequest& req, bool* held, std::string* why) {
  const size_t needed = VotesNeeded();
  size_t granted = 0;
  {
    std::lock_guard lock(mu_);
    v1::ClaimPortResponse own = CastLocked(req);
    if (own.granted()) ++granted;
    if (own.held()) *held = true;
  }
  std::mutex answers_mu;
  ForEachAliveOther([&](const PeerAddress& peer) {
    v1::ClaimPortResponse vote;
    Status s = network_.To(peer.address).ClaimPort(req, &vote, {.timeout = std::chrono::milliseconds(1000)});
    std::lock_guard lock(answers_mu);
    if (!s.ok()) *why += fmt::format("; {}: {}", peer.node_id, s.message());
    else if (vote.granted()) ++granted;
    else if (vote.held()) *held = true;
    else *why += fmt::format("; {} granted it to {} a moment ago", peer.node_id, vote.holder());
  });
  return !*held && granted >= needed;
}

void PortTable::ForEachAliveOther(const std::function<void(const PeerAddress&)>& call) {
  std::vector<std::thread> calls;
  for (const PeerAddress& peer : members_.AliveOthers()) calls.emplace_back([&call, peer] { call(peer); });
  for (std::thread& t : calls) t.join();
}

void PortTable::Withdraw(v1::ClaimPortRequest req) {
  req.set_withdraw(true);
  {
    std::lock_guard lock(mu_);
    CastLocked(req);
  }
  ForEachAliveOther([&](const PeerAddress& peer) {
    v1::ClaimPortResponse unused;
    (void)network_.To(peer.address).ClaimPort(req, &unused, {.timeout = std::chrono::milliseconds(500)});
  });
}

Status PortTable::Claim(const Binding& b, pid_t pid, uid_t uid) {
  const uint32_t port = b.port;
  const uint64_t socket_inode = b.socket_inode;
  if (b.path.empty() && port < UnprivilegedPortStart() && uid != 0)  // as the kernel would answer, before any vote
    return Status::PermissionDenied(fmt::format("port {} is below {}: root's", port, UnprivilegedPortStart()));
  const std::string key = b.key();
  const std::string what = b.path.empty() ? fmt::format("port {}", port) : "/" + b.path;
  if (!InodeOpenIn(pid, socket_inode))
    return Status::InvalidArgument(fmt::format("{}: socket {} is not the caller's", what, socket_inode));
  KeyLock claim(*this, key);
  // A port this node's program still holds: the kernel decides (SO_REUSEPORT
  // shares it, a second bind of one program on IPv4 and IPv6 too, anything
  // else fails with EADDRINUSE as natively); the new socket holds it too.
  if (std::optional<v1::ClusterPort> holder = Holder(key); holder && holder->node_id() == self_.node_id) {
    if (std::find(holder->socket_inodes().begin(), holder->socket_inodes().end(), socket_inode) ==
        holder->socket_inodes().end()) {
      holder->add_socket_inodes(socket_inode);
      if (Result<Version> put = store_.Put(key, holder->SerializeAsString(), /*sync=*/false, Cf::kPorts); !put.ok())
        return put.status();
    }
    return Status::Ok();
  }
  std::mt19937_64 rng(std::random_device{}());
  v1::ClaimPortRequest req;
  req.set_key(key);
  req.set_node_id(self_.node_id);
  const auto deadline = std::chrono::steady_clock::now() + kClaimWait;
  std::string why;
  for (;;) {
    // Each round its own id: a late withdrawal of a lost round never takes
    // back a grant of a later one.
    req.set_claim_id(rng() | 1);
    bool held = false;
    if (Round(req, &held, &why)) break;
    Withdraw(req);
    if (held) return Status::AlreadyExists(fmt::format("{} is held by a program on another node", what));
    if (std::chrono::steady_clock::now() >= deadline)
      return Status::Unavailable(fmt::format("{}: no majority of the nodes granted it{}", what, why));
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
  if (b.path.empty()) record.set_connect_host(b.ipv6 ? "::1" : "127.0.0.1");
  record.set_path(b.path);
  record.set_relay(relay_address_);
  record.add_socket_inodes(socket_inode);
  record.set_pid(pid);
  record.set_claim_id(req.claim_id());
  Result<Version> put = store_.Put(key, record.SerializeAsString(), /*sync=*/false, Cf::kPorts);
  if (!put.ok()) return put.status();
  watch_.Wake();
  {
    std::lock_guard lock(mu_);
    grants_.erase(key);  // spent: the record speaks now
  }
  spdlog::debug("{} claimed for pid {} (uid {})", what, pid, uid);
  Notify();
  return Status::Ok();
}

void PortTable::Release(const Binding& b, pid_t pid, uid_t uid) {
  const std::string key = b.key();
  const uint64_t socket_inode = b.socket_inode;
  // Only the caller's own socket, and not while it listens (a second bind()
  // of a listening socket fails with EINVAL: its record stays).
  if (!InodeOpenIn(pid, socket_inode) || ListeningSockets().count({b.port, socket_inode})) return;
  KeyLock claim(*this, key);
  Result<Record> rec = store_.Get(key, Cf::kPorts);
  v1::ClusterPort held;
  if (!rec.ok() || !held.ParseFromString(rec->value) || held.node_id() != self_.node_id) return;
  auto inodes = held.mutable_socket_inodes();
  auto it = std::find(inodes->begin(), inodes->end(), socket_inode);
  // The first socket is the owner's: only its user (or root) gives it back.
  // A later one may be another user's, whose bind the kernel refused.
  if (it == inodes->end() || (it == inodes->begin() && uid != held.uid() && uid != 0)) return;
  inodes->erase(it);
  if (inodes->empty()) (void)store_.Delete(key, /*sync=*/false, nullptr, Cf::kPorts);
  else (void)store_.Put(key, held.SerializeAsString(), /*sync=*/false, Cf::kPorts);
  Notify();
}

void PortTable::Watch() {
  // Read once per pass, and only when this node holds a port: an idle
  // agent reads no /proc table.
  std::optional<Listening> listening;
  std::set<uint64_t> seen;
  std::string after;
  for (;;) {
    Result<ScanPage> page = store_.Scan("", after, StoreLimits::kMaxScanLimit, /*keys_only=*/true, Cf::kPorts);
    if (!page.ok() || page->entries.empty()) break;
    for (const Entry& e : page->entries) {
      KeyLock claim(*this, e.key);  // read again under it: a claim may have just replaced the record
      Result<Record> rec = store_.Get(e.key, Cf::kPorts);
      v1::ClusterPort port;
      if (!rec.ok() || !port.ParseFromString(rec->value) || port.node_id() != self_.node_id) continue;
      if (port.relay() != relay_address_) {  // written before this agent's restart: the relay moved
        port.set_relay(relay_address_);
        (void)store_.Put(e.key, port.SerializeAsString(), /*sync=*/false, Cf::kPorts);
      }
      if (!listening) listening = ListeningSockets();
      for (uint64_t inode : port.socket_inodes())
        if (listening->count({port.port(), inode})) seen.insert(inode);
      if (StillBound(port, *listening)) continue;
      listening = ListeningSockets();  // the first look may be seconds old (a claim held the key)
      if (StillBound(port, *listening)) continue;
      spdlog::debug("{} {} let go (pid {})", e.key, port.port(), port.pid());
      (void)store_.Delete(e.key, /*sync=*/false, nullptr, Cf::kPorts);
    }
    if (!page->more) break;
    after = page->entries.back().key;
  }
  std::lock_guard lock(mu_);
  listening_ = std::move(seen);
}

std::vector<v1::ClusterPort> PortTable::Live() {
  std::vector<v1::ClusterPort> live;
  std::string after;
  for (;;) {
    Result<ScanPage> page = store_.Scan("", after, StoreLimits::kMaxScanLimit, false, Cf::kPorts);
    if (!page.ok()) break;
    for (const Entry& e : page->entries) {
      v1::ClusterPort port;
      if (!port.ParseFromString(e.record.value)) continue;
      // This node's own are checked by Watch each second; reading /proc
      // for every port here would cost as much on every change.
      if (port.node_id() == self_.node_id || !members_.Gone(port.node_id())) live.push_back(std::move(port));
    }
    if (!page->more || page->entries.empty()) break;
    after = page->entries.back().key;
  }
  return live;
}

std::optional<v1::ClusterPort> PortTable::OwnedHere(const std::string& key) {
  Result<Record> rec = store_.Get(key, Cf::kPorts);
  v1::ClusterPort held;
  if (!rec.ok() || !held.ParseFromString(rec->value) || held.node_id() != self_.node_id) return std::nullopt;
  return held;
}

}  // namespace onebox

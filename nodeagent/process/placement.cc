#include "nodeagent/process/placement.h"

#include <fcntl.h>
#include <poll.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "consistency/digest.h"
#include "consistency/meta_values.h"

namespace onebox {

namespace {

constexpr std::chrono::seconds kPeerDigestKept{60};
constexpr std::chrono::seconds kPeerSilenceKept{10};  // a peer that did not answer is asked again after this
constexpr off_t kMaxProgramBytes = off_t{256} << 20;
constexpr size_t kMaxDigestsKept = 1024;  // per cache; all forgotten beyond it
constexpr std::chrono::seconds kAvoidAfterFailure{10};  // a node that did not start a job
constexpr std::chrono::milliseconds kPeerDeadline{2000};
// "Clearly less loaded": by at least this many jobs per CPU.
constexpr double kClearlyLess = 0.5;

// SHA-256 (hex) of the program at path, and its first line in *first; ""
// when it is no program. Any local user may name the path (the agent reads
// it as root): only an executable regular file of at most kMaxProgramBytes,
// not in /proc or /sys, is opened for reading at all (never a FIFO or a device).
std::string HashFile(const std::string& path, std::string* first) {
  int named = open(path.c_str(), O_PATH | O_CLOEXEC);
  if (named < 0) return "";
  struct stat st;
  struct statfs fs;
  const bool program = fstat(named, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0 &&
                       st.st_size <= kMaxProgramBytes && fstatfs(named, &fs) == 0 &&
                       fs.f_type != PROC_SUPER_MAGIC && fs.f_type != SYSFS_MAGIC;
  int fd = program ? open(fmt::format("/proc/self/fd/{}", named).c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
                   : -1;
  close(named);
  if (fd < 0) return "";
  Sha256OfParts hash;
  std::string buf(1 << 16, '\0');
  bool read_all = true, at_start = true;
  off_t read_bytes = 0;
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) read_all = false;
    if (n <= 0) break;
    if ((read_bytes += n) > kMaxProgramBytes) {  // grew past the cap since its stat
      read_all = false;
      break;
    }
    if (at_start && first != nullptr) {
      std::string_view head(buf.data(), static_cast<size_t>(n));
      *first = std::string(head.substr(0, head.find('\n')));
    }
    at_start = false;
    hash.Add(std::string_view(buf.data(), static_cast<size_t>(n)));
  }
  close(fd);
  return read_all ? HexOf(hash.Finish()) : "";
}

// A script's interpreter ("#!/bin/sh -e" -> "/bin/sh"); "" for none.
std::string InterpreterOf(const std::string& first_line) {
  if (first_line.rfind("#!", 0) != 0) return "";
  size_t start = first_line.find_first_not_of(" \t", 2);
  if (start == std::string::npos) return "";
  size_t end = first_line.find_first_of(" \t\r", start);
  return first_line.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

bool Alive(const v1::Node& n) { return n.self() || n.state() == v1::NODE_STATE_ALIVE; }

// What the node may use: its cgroup's quota when it has one (0.6 of a CPU
// counts as 0.6), else its CPUs.
double Cpus(const v1::Node& n) {
  const double cpus = std::max<uint32_t>(1, n.load().cpus());
  const double quota = n.load().cpu_quota();
  return quota > 0 && quota < cpus ? quota : cpus;
}

}  // namespace

std::string ProgramDigestOf(const std::string& path) {
  if (path.empty() || path[0] != '/') return "";
  std::string first;
  std::string digest = HashFile(path, &first);
  if (digest.empty()) return "";
  if (std::string interpreter = InterpreterOf(first); !interpreter.empty()) {
    std::string theirs = HashFile(interpreter, nullptr);
    if (theirs.empty()) return "";
    digest += ":" + theirs;
  }
  return digest;
}

Placement::~Placement() {
  for (const Job& j : jobs_) close(j.pidfd);
}

std::string Placement::LocalDigest(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return "";
  const int64_t mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  {
    std::lock_guard lock(mu_);
    auto it = local_digests_.find(path);
    if (it != local_digests_.end() && it->second.dev == st.st_dev && it->second.ino == st.st_ino &&
        it->second.size == st.st_size && it->second.mtime_ns == mtime_ns)
      return it->second.digest;
  }
  std::string digest = ProgramDigestOf(path);
  std::lock_guard lock(mu_);
  if (local_digests_.size() >= kMaxDigestsKept) local_digests_.clear();
  local_digests_[path] = Local{st.st_dev, st.st_ino, st.st_size, mtime_ns, digest};
  return digest;
}

std::string Placement::PeerDigest(const v1::Node& node, const std::string& path) {
  const auto key = std::pair{node.node_id(), path};
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(mu_);
    auto it = peer_digests_.find(key);
    if (it != peer_digests_.end() && now - it->second.at < kPeerDigestKept) return it->second.digest;
  }
  v1::ProgramDigestRequest req;
  req.set_path(path);
  v1::ProgramDigestResponse resp;
  Status st = network_.To(node.address()).ProgramDigest(req, &resp, {.timeout = kPeerDeadline});
  std::lock_guard lock(mu_);
  if (peer_digests_.size() >= kMaxDigestsKept) peer_digests_.clear();
  if (!st.ok()) {
    spdlog::debug("placement: node {} did not say what {} is there: {}", node.name(), path, st.message());
    peer_digests_[key] = Known{"", now - kPeerDigestKept + kPeerSilenceKept};  // asked again in a while
    return "";
  }
  peer_digests_[key] = Known{resp.sha256(), now};
  return resp.sha256();
}

Status Placement::OnProgramDigest(const v1::ProgramDigestRequest& req, v1::ProgramDigestResponse* resp) {
  if (req.path().empty() || req.path()[0] != '/')
    return Status::InvalidArgument(fmt::format("program '{}' is no absolute path", req.path()));
  resp->set_sha256(LocalDigest(req.path()));
  return Status::Ok();
}

Result<std::vector<Placement::Candidate>> Placement::CandidatesFor(const std::string& policy) {
  std::vector<v1::Node> nodes = members_.Nodes();
  std::vector<Candidate> out;
  if (policy == "auto") {
    for (v1::Node& n : nodes)
      if (Alive(n)) out.push_back({std::move(n)});
  } else {
    const std::vector<std::string> names = SplitList(policy);
    if (names.empty()) return Status::InvalidArgument(fmt::format("ONEBOX_PLACE='{}' names no node", policy));
    for (const std::string& name : names)
      for (v1::Node& n : nodes)
        if (n.name() == name && Alive(n)) out.push_back({n});
  }
  std::stable_partition(out.begin(), out.end(), [](const Candidate& c) { return c.node.self(); });
  return out;
}

void Placement::ReapLocked() {
  std::vector<pollfd> fds;
  for (const Job& j : jobs_) fds.push_back({j.pidfd, POLLIN, 0});
  if (fds.empty() || poll(fds.data(), fds.size(), 0) <= 0) return;
  size_t kept = 0;
  for (size_t i = 0; i < jobs_.size(); ++i) {
    if (fds[i].revents != 0) {
      close(jobs_[i].pidfd);
      continue;
    }
    jobs_[kept++] = std::move(jobs_[i]);
  }
  jobs_.resize(kept);
}

size_t Placement::RunningLocked(const std::string& node_id) {
  return static_cast<size_t>(std::count_if(jobs_.begin(), jobs_.end(), [&](const Job& j) { return j.node_id == node_id; }));
}

Result<std::string> Placement::Choose(pid_t pid, const std::string& program, const std::string& policy) {
  // The job, followed from now on (before any wait: its pid stays its own).
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  Result<std::vector<Candidate>> candidates = CandidatesFor(policy);
  if (!candidates.ok()) {
    if (pidfd >= 0) close(pidfd);
    return candidates.status();
  }
  const std::string here_digest = LocalDigest(program);
  if (here_digest.empty()) {  // exec says what is wrong with it, here
    if (pidfd >= 0) close(pidfd);
    return std::string();
  }
  // The same program on each other candidate: asked outside the lock.
  std::vector<Candidate> same;
  for (Candidate& c : *candidates)
    if (c.node.self() || PeerDigest(c.node, program) == here_digest) same.push_back(std::move(c));
  std::lock_guard lock(mu_);
  ReapLocked();
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(same, [&](const Candidate& c) {
    auto it = avoid_until_.find(c.node.node_id());
    return !c.node.self() && it != avoid_until_.end() && now < it->second;
  });
  auto load = [](const Candidate& c) { return static_cast<double>(c.running) / Cpus(c.node); };
  // A node takes jobs_per_cpu per CPU it may use, rounded up: at least one.
  auto full = [&](const Candidate& c) {
    return static_cast<double>(c.running) >= std::max(1.0, std::ceil(jobs_per_cpu_ * Cpus(c.node) - 1e-9));
  };
  const Candidate* here = nullptr;
  const Candidate* best = nullptr;  // the least loaded that is not full
  for (Candidate& c : same) {
    c.running = RunningLocked(c.node.self() ? "" : c.node.node_id());
    // Other homes' jobs: here, the executor's count; there, what gossip carried.
    if (c.node.self() && taken_in_now_) c.running += taken_in_now_();
    if (!c.node.self()) c.running = std::max<size_t>(c.running, c.node.load().placed_jobs());
    if (c.node.self()) here = &c;
    if (!full(c) && (best == nullptr || load(c) < load(*best))) best = &c;
  }
  std::string chosen;  // "": here
  if (here == nullptr) {
    // Only other nodes named: the least loaded, full or not.
    if (best == nullptr)
      for (const Candidate& c : same)
        if (best == nullptr || load(c) < load(*best)) best = &c;
    if (best != nullptr) chosen = best->node.name();
  } else if (best != nullptr && best != here && (full(*here) || load(*here) - load(*best) >= kClearlyLess)) {
    // Here unless another is clearly less loaded, or here is full.
    chosen = best->node.name();
  }
  const std::string chosen_id = chosen.empty() ? "" : best->node.node_id();
  CountLocked(pid, pidfd, chosen_id);
  if (!chosen.empty()) ++placed_out_;
  spdlog::debug("placement: {} for pid {} on {} ({} of {} nodes run the same program)", program, pid,
                chosen.empty() ? "this node" : chosen, same.size(), candidates->size());
  return chosen;
}

void Placement::CountLocked(pid_t pid, int pidfd, const std::string& node_id) {
  // One job per process: a process that asks again (it may be a stand-in
  // whose start failed) is counted where it goes now.
  std::erase_if(jobs_, [&](const Job& j) {
    if (j.pid != pid) return false;
    close(j.pidfd);
    return true;
  });
  if (pidfd >= 0) jobs_.push_back({pidfd, pid, node_id});
}

void Placement::CountHere(pid_t pid) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  std::lock_guard lock(mu_);
  ReapLocked();
  CountLocked(pid, pidfd, "");
}

void Placement::KeptHere(pid_t pid) {
  std::lock_guard lock(mu_);
  for (Job& j : jobs_) {
    if (j.pid != pid || j.node_id.empty()) continue;
    avoid_until_[j.node_id] = std::chrono::steady_clock::now() + kAvoidAfterFailure;
    spdlog::info("placement: node {} did not start pid {}'s job; not choosing it for {} s", j.node_id, pid,
                 kAvoidAfterFailure.count());
    j.node_id.clear();
    if (placed_out_ > 0) --placed_out_;
  }
}

uint64_t Placement::placed_out() {
  std::lock_guard lock(mu_);
  return placed_out_;
}

uint32_t Placement::out_now() {
  std::lock_guard lock(mu_);
  ReapLocked();
  return static_cast<uint32_t>(std::count_if(jobs_.begin(), jobs_.end(), [](const Job& j) { return !j.node_id.empty(); }));
}

}  // namespace onebox

#include "nodeagent/sockets/splice_relay.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/thread_name.h"

namespace onebox {

void CloseWithReset(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

void NoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// One direction: bytes read from `from` wait in the pipe for `to`.
struct Flow {
  int pipe_r = -1, pipe_w = -1;
  size_t capacity = 0;
  size_t held = 0;         // bytes in the pipe
  bool pipe_full = false;  // the last read found no room (the pipe counts pages, not bytes)
  bool ended = false;      // `from` said end of file
  bool shut = false;       // and `to` was told (SHUT_WR)
};

// sock[i] is read by flow[i] and written by flow[1 - i].
struct SpliceRelay::Pair {
  std::string tag;
  bool reset = false;  // asked for by Reset (under mu_)
  int sock[2] = {-1, -1};
  Flow flow[2];
  // The epoll events each socket is registered for; 0: not registered (a
  // socket with nothing to do is taken out: EPOLLHUP cannot be masked, and
  // a half-closed socket would report it at every wait).
  uint32_t watched[2] = {0, 0};
  // What epoll last said of each socket, until a splice finds otherwise:
  // a socket is read or written only when it may have data or room, so a
  // small message costs a splice in and a splice out, not also the calls
  // that would find nothing (EAGAIN).
  bool readable[2] = {true, true};
  bool writable[2] = {true, true};
};

Result<std::unique_ptr<SpliceRelay>> SpliceRelay::Start() {
  std::unique_ptr<SpliceRelay> relay(new SpliceRelay());
  relay->epoll_ = epoll_create1(EPOLL_CLOEXEC);
  relay->wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (relay->epoll_ < 0 || relay->wake_ < 0) return Status::Unavailable(fmt::format("relay: {}", strerror(errno)));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake fd
  epoll_ctl(relay->epoll_, EPOLL_CTL_ADD, relay->wake_, &ev);
  relay->thread_ = std::thread([r = relay.get()] { r->Loop(); });
  NameThread(relay->thread_, "onebox-relay");
  return relay;
}

SpliceRelay::~SpliceRelay() {
  stopping_ = true;
  uint64_t one = 1;
  if (wake_ >= 0) (void)!write(wake_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  for (auto& [ptr, pair] : pairs_) Close(*pair, /*reset=*/true);
  if (epoll_ >= 0) close(epoll_);
  if (wake_ >= 0) close(wake_);
}

Status SpliceRelay::Add(int a, int b, std::string tag) {
  auto pair = std::make_unique<Pair>();
  pair->tag = std::move(tag);
  pair->sock[0] = a;
  pair->sock[1] = b;
  for (Flow& f : pair->flow) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      Status s = Status::Unavailable(fmt::format("relay: pipe: {}", strerror(errno)));
      Close(*pair, /*reset=*/true);
      return s;
    }
    f.pipe_r = fds[0];
    f.pipe_w = fds[1];
    fcntl(f.pipe_w, F_SETPIPE_SZ, kPipeBytes);  // a smaller pipe (the limit) still works
    int size = fcntl(f.pipe_w, F_GETPIPE_SZ);
    f.capacity = size > 0 ? static_cast<size_t>(size) : 65536;
  }
  for (int fd : pair->sock) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  Pair* p = pair.get();
  // Registered for reading at first; the loop's thread adjusts from there.
  // Under mu_ until both are registered: the loop finds the pair only then.
  std::lock_guard lock(mu_);
  for (int i = 0; i < 2; ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = reinterpret_cast<uintptr_t>(p) | static_cast<uintptr_t>(i);  // Pair is 8-aligned
    p->watched[i] = ev.events;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, p->sock[i], &ev);
  }
  pairs_[p] = std::move(pair);
  ++open_;
  ++total_;
  return Status::Ok();
}

void SpliceRelay::Reset(const std::string& tag) {
  {
    std::lock_guard lock(mu_);
    for (auto& [ptr, pair] : pairs_) pair->reset = pair->reset || pair->tag == tag;
  }
  uint64_t one = 1;
  (void)!write(wake_, &one, sizeof one);
}

std::set<std::string> SpliceRelay::Tags() {
  std::set<std::string> tags;
  std::lock_guard lock(mu_);
  for (const auto& [ptr, pair] : pairs_)
    if (!pair->tag.empty() && !pair->reset) tags.insert(pair->tag);
  return tags;
}

void SpliceRelay::Loop() {
  epoll_event events[64];
  while (!stopping_) {
    int n = epoll_wait(epoll_, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("relay: epoll_wait: {}", strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      if (events[i].data.ptr == nullptr) {  // woken: to stop, or to reset pairs
        uint64_t count;
        (void)!read(wake_, &count, sizeof count);
        std::lock_guard lock(mu_);
        for (auto it = pairs_.begin(); it != pairs_.end();) {
          if (!it->second->reset) {
            ++it;
            continue;
          }
          Close(*it->second, /*reset=*/true);
          it = pairs_.erase(it);
          --open_;
        }
        continue;
      }
      Pair* p = reinterpret_cast<Pair*>(events[i].data.u64 & ~uintptr_t{1});
      std::unique_lock lock(mu_);
      auto it = pairs_.find(p);
      if (it == pairs_.end()) continue;  // closed by an earlier event of this batch
      lock.unlock();
      int err = 0;
      socklen_t len = sizeof err;
      const int side = static_cast<int>(events[i].data.u64 & 1);
      const int sock = p->sock[side];
      if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) p->readable[side] = true;
      if (events[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) p->writable[side] = true;
      if ((events[i].events & EPOLLERR) && getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0)
        Close(*p, /*reset=*/true);  // reset while this side had nothing to read or write
      if (p->sock[0] < 0 || Pump(*p)) {
        lock.lock();
        pairs_.erase(p);
        --open_;
      } else {
        Watch(*p);
      }
    }
  }
}

bool SpliceRelay::Pump(Pair& p) {
  for (bool moved = true; moved;) {
    moved = false;
    for (int i = 0; i < 2; ++i) {
      Flow& f = p.flow[i];
      const int from = p.sock[i], to = p.sock[1 - i];
      if (p.readable[i] && !f.ended && !f.pipe_full && f.held < f.capacity) {
        const size_t room = f.capacity - f.held;
        ssize_t n = splice(from, nullptr, f.pipe_w, nullptr, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          f.held += static_cast<size_t>(n);
          moved = true;
          if (static_cast<size_t>(n) < room) p.readable[i] = false;  // drained, most likely: epoll says when not
        } else if (n == 0) {
          f.ended = true;
          moved = true;
        } else if (errno == EAGAIN) {
          // No data, or no room in the pipe: with bytes held, take it for
          // no room until some leave (else the level-triggered wait spins).
          p.readable[i] = false;
          f.pipe_full = f.held > 0;
        } else if (errno != EINTR) {
          Close(p, /*reset=*/true);  // reset (or any error) on one side: reset the other
          return true;
        }
      }
      if (f.held > 0 && p.writable[1 - i]) {
        ssize_t n = splice(f.pipe_r, nullptr, to, nullptr, f.held, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          f.held -= static_cast<size_t>(n);
          if (f.pipe_full) p.readable[i] = true;  // room again: read what waited
          f.pipe_full = false;
          moved = true;
          if (f.held > 0) p.writable[1 - i] = false;  // its buffer is full: epoll says when not
        } else if (n < 0 && errno == EAGAIN) {
          p.writable[1 - i] = false;
        } else if (n < 0 && errno != EINTR) {
          Close(p, /*reset=*/true);  // the reader is gone (EPIPE, ECONNRESET)
          return true;
        }
      }
      if (f.ended && f.held == 0 && !f.shut) {
        shutdown(to, SHUT_WR);
        f.shut = true;
      }
    }
  }
  if (p.flow[0].shut && p.flow[1].shut) {
    Close(p, /*reset=*/false);
    return true;
  }
  return false;
}

void SpliceRelay::Watch(Pair& p) {
  for (int i = 0; i < 2; ++i) {
    const Flow& in = p.flow[i];       // read from sock[i]
    const Flow& out = p.flow[1 - i];  // written to sock[i]
    uint32_t want = 0;
    if (!in.ended && !in.pipe_full && in.held < in.capacity) want |= EPOLLIN | EPOLLRDHUP;
    if (out.held > 0) want |= EPOLLOUT;
    if (want == p.watched[i]) continue;
    epoll_event ev{};
    ev.events = want;
    ev.data.u64 = reinterpret_cast<uintptr_t>(&p) | static_cast<uintptr_t>(i);
    const int op = want == 0 ? EPOLL_CTL_DEL : p.watched[i] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    epoll_ctl(epoll_, op, p.sock[i], &ev);
    p.watched[i] = want;
  }
}

void SpliceRelay::Close(Pair& p, bool reset) {
  for (int& fd : p.sock) {
    if (fd < 0) continue;
    if (epoll_ >= 0) epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);  // (ENOENT when taken out: harmless)
    if (reset) CloseWithReset(fd);
    else close(fd);
    fd = -1;
  }
  for (Flow& f : p.flow) {
    if (f.pipe_r >= 0) close(f.pipe_r);
    if (f.pipe_w >= 0) close(f.pipe_w);
    f.pipe_r = f.pipe_w = -1;
  }
}

}  // namespace onebox

// The agent's local endpoint for the shim: a Unix stream socket (mode 0666, so
// programs of every local user can reach it) on which each message is a
// protobuf (onebox.v1.ShimRequest / ShimResponse) after a 4-byte little-endian
// length. The kernel's SO_PEERCRED tells who is on each connection; handlers
// get it with every request. One epoll thread serves all connections; a
// request that may take long (fsync's Publish, a hydration) is answered later
// from another thread (ShimCall::Defer), and its connection waits meanwhile.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "consistency/status.h"
#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"

namespace onebox {

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary, at connect time (SO_PEERGROUPS)
};

// A connection whose unread answers exceed this is not read from until the
// client catches up (back-pressure: a client that never reads costs at most this).
constexpr size_t kMaxShimPendingOutBytes = 1 << 20;

class ShimServer;

// An answer to be given later, from any thread, exactly once.
class ShimReply {
 public:
  void Send(v1::ShimResponse resp);
  // Whether the caller's connection is still open (it may have closed while
  // the answer was being prepared).
  bool Connected() const;

 private:
  friend class ShimServer;
  friend struct ShimCall;
  ShimServer* server_ = nullptr;
  int fd_ = -1;
  uint64_t serial_ = 0;  // of the connection: a reused fd number is not it
  uint64_t id_ = 0;
};

// What a handler may do besides filling the response.
struct ShimCall {
  const PeerCred& peer;
  int attach_fd = -1;  // send this descriptor with the answer (SCM_RIGHTS); not closed
  bool attach_owned = false;  // unless this says it was made for this answer: closed once queued
  // Answer later: the response given now is dropped, the connection reads no
  // more requests until reply.Send().
  ShimReply Defer();
  // The connection the request came on (unique for the server's lifetime).
  uint64_t connection() const { return serial_; }
  // Takes the connection out of the server (a run's stream: process/run_relay.h):
  // a descriptor of it (close-on-exec, still non-blocking), which is the
  // caller's to close; the server answers nothing and forgets it. -1 with
  // errno when no descriptor is left.
  int TakeConnection();
  uint64_t request_id() const { return id_; }
  // Whether the answer is not the one given now (deferred, or the connection taken).
  bool answered_later() const { return deferred_ || taken_; }

 private:
  friend class ShimServer;
  ShimCall(const PeerCred& p, ShimServer* s, int fd, uint64_t serial, uint64_t id)
      : peer(p), server_(s), fd_(fd), serial_(serial), id_(id) {}
  ShimServer* server_;
  int fd_;
  uint64_t serial_;
  uint64_t id_;
  bool deferred_ = false;
  bool taken_ = false;
};

// Sends resp, framed, on a connection taken from the server
// (ShimCall::TakeConnection), with attach_fd (SCM_RIGHTS) unless it is -1;
// waits at most timeout_ms at a time for room. False when it could not.
bool SendShimAnswer(int fd, const v1::ShimResponse& resp, int attach_fd, int timeout_ms);

class ShimServer {
 public:
  using Handler = std::function<void(ShimCall&, const v1::ShimRequest&, v1::ShimResponse*)>;
  // Told, on the server's thread, of each connection that is gone (by ShimCall::connection()).
  using CloseHandler = std::function<void(uint64_t connection)>;

  // Binds PATH (refusing one a live agent answers on, replacing a stale one)
  // and starts serving.
  static Result<std::unique_ptr<ShimServer>> Start(const std::string& path, Handler handler,
                                                   CloseHandler on_close = nullptr);
  ~ShimServer();  // stops, closes every connection, removes the socket file
  void Stop();

 private:
  struct Connection {
    int fd = -1;
    uint64_t serial = 0;
    bool waiting = false;   // a deferred answer is due: serve nothing else meanwhile
    PeerCred peer;
    std::string in;         // bytes received, from in_pos on not yet parsed
    size_t in_pos = 0;
    std::string out;        // answers, from out_pos on not yet sent
    size_t out_pos = 0;
    bool peer_closed = false;  // EOF seen: answer what came, then close
    uint32_t armed = 0;        // the events epoll watches for it (Rearm changes them only when they change)
    size_t pending_out() const { return out.size() - out_pos; }
  };
  ShimServer(std::string path, ino_t inode, int listen_fd, int wake_fd, Handler handler, CloseHandler on_close);
  bool Connected(uint64_t serial);
  void Loop();
  // The loop's steps (loop thread only).
  void Watch(int fd, uint32_t events, int op);
  void AcceptAll();
  void TakeDelivered();                       // answers given from other threads
  void OnEvent(int fd, uint32_t events);      // a client connection's
  bool Rearm(Connection& c);                  // false: done with it
  void Drop(int fd);
  void Forget(uint64_t serial);               // gone from the live set, then the close handler
  // Reads what the socket has (bounded per call) and answers whole frames.
  // Returns false when the connection must be closed now.
  bool OnReadable(Connection& c);
  bool Serve(Connection& c);
  bool Flush(Connection& c);
  // Adds a framed response to c's output; with attach_fd, sends it at once
  // with the descriptor when nothing else is queued (else without it: false).
  bool Queue(Connection& c, const v1::ShimResponse& resp, int attach_fd);
  friend class ShimReply;
  void Deliver(int fd, uint64_t serial, v1::ShimResponse resp);  // any thread

  std::string path_;
  ino_t inode_;  // of our socket file: Stop() removes the path only if it is still ours
  int listen_fd_;
  int wake_fd_;
  Handler handler_;
  CloseHandler on_close_;
  std::mutex live_mu_;
  std::unordered_set<uint64_t> live_;  // serials of the open connections
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  // The loop thread's own.
  int epoll_fd_ = -1;
  std::unordered_map<int, Connection> conns_;
  bool accept_paused_ = false;  // out of fds: stop accepting for a moment instead of spinning
  uint64_t next_serial_ = 1;
  struct Delivered {
    int fd;
    uint64_t serial;
    v1::ShimResponse resp;
  };
  std::mutex delivered_mu_;
  std::vector<Delivered> delivered_;
};

}  // namespace onebox

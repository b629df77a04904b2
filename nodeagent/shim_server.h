// The agent's local endpoint for the shim: a Unix stream socket (mode 0666, so
// programs of every local user can reach it) on which each message is a
// protobuf (onebox.v1.ShimRequest / ShimResponse) after a 4-byte little-endian
// length. The kernel's SO_PEERCRED tells who is on each connection; handlers
// get it with every request. One epoll thread serves all connections.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "consistency/status.h"
#include "onebox/v1/shim.pb.h"

namespace onebox {

struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

constexpr uint32_t kMaxShimFrameBytes = 16 << 20;
// A connection whose unread answers exceed this is not read from until the
// client catches up (back-pressure: a client that never reads costs at most this).
constexpr size_t kMaxShimPendingOutBytes = 1 << 20;

class ShimServer {
 public:
  using Handler = std::function<void(const PeerCred&, const v1::ShimRequest&, v1::ShimResponse*)>;

  // Binds PATH (refusing one a live agent answers on, replacing a stale one)
  // and starts serving.
  static Result<std::unique_ptr<ShimServer>> Start(const std::string& path, Handler handler);
  ~ShimServer();  // stops, closes every connection, removes the socket file
  void Stop();

 private:
  struct Connection;
  ShimServer(std::string path, ino_t inode, int listen_fd, int wake_fd, Handler handler);
  void Loop();
  // Reads what the socket has (bounded per call) and answers whole frames.
  // Returns false when the connection must be closed now.
  bool OnReadable(Connection& c);
  bool Serve(Connection& c);
  bool Flush(Connection& c);

  std::string path_;
  ino_t inode_;  // of our socket file: Stop() removes the path only if it is still ours
  int listen_fd_;
  int wake_fd_;
  Handler handler_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace onebox

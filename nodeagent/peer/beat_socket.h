// The UDP socket membership's heartbeats travel on (peer/membership.h): bound
// to the agent's gRPC host and the same port number, a thread that hands
// every datagram that arrives to a handler, and sends to a member by its
// gRPC address (HOST:PORT). A heartbeat is a packet sent and forgotten,
// where a Gossip call costs both agents a gRPC call's machinery (about 1.5 ms
// of CPU here, most of an idle agent's); what it says is checked by
// peer/beat_seal.h, not by this socket.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <sys/socket.h>

#include "consistency/status.h"

namespace onebox {

class BeatSocket {
 public:
  using Handler = std::function<void(std::string_view datagram)>;
  // Binds host:port (UDP; port 0: the kernel picks, port() says which) and
  // starts the thread that calls on_datagram.
  static Result<std::unique_ptr<BeatSocket>> Open(const std::string& host, int port, Handler on_datagram);
  ~BeatSocket();  // stops the thread: no handler runs after it
  // Sends without waiting; false when it could not be sent (an address of
  // another family, one that does not resolve, a full buffer).
  bool SendTo(const std::string& address, std::string_view datagram);
  int port() const { return port_; }

 private:
  BeatSocket(int fd, int family, int port, Handler on_datagram);
  void Receive();
  // address's socket address: names are resolved again after a while.
  bool Resolve(const std::string& address, sockaddr_storage* to, socklen_t* len);

  const int fd_;
  std::atomic<bool> stopping_{false};  // the destructor's: the thread returns at its next recv
  const int family_;   // the socket's: members' names are looked up in it
  const int port_;
  Handler on_datagram_;
  struct Resolved {
    sockaddr_storage addr;
    socklen_t len;
    std::chrono::steady_clock::time_point at;
  };
  std::mutex mu_;
  std::map<std::string, Resolved> resolved_;  // under mu_
  std::thread thread_;
};

}  // namespace onebox

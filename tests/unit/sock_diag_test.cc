// sock_diag (nodeagent/sockets/sock_diag.h) on real TCP connections over
// loopback: the abort of a dead node's links (the connections to one
// listener's address end with ECONNABORTED for whoever holds them, and a
// connection to another address is left alone; needs CAP_NET_ADMIN, which
// the tests have as agents do: without it the call must say so rather than
// claim to have ended anything), and the socket of one connection found by
// its addresses.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "nodeagent/sockets/sock_diag.h"

namespace onebox::testing {
namespace {

struct Listener {
  int fd = -1;
  sockaddr_in addr{};
  Listener() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(listen(fd, 8), 0);
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  }
  ~Listener() { close(fd); }
  int Connect() const {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(connect(c, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    return c;
  }
};

TEST(SockDiagTest, AbortsEveryConnectionToTheAddressAndNoOther) {
  Listener dead, alive;
  int to_dead[2] = {dead.Connect(), dead.Connect()};
  int to_alive = alive.Connect();
  Result<size_t> aborted = AbortConnectionsTo(reinterpret_cast<const sockaddr&>(dead.addr));
  if (geteuid() != 0) {
    EXPECT_FALSE(aborted.ok()) << "without CAP_NET_ADMIN nothing can be aborted";
  } else {
    ASSERT_TRUE(aborted.ok()) << aborted.status().message();
    EXPECT_EQ(*aborted, 2u);
    for (int fd : to_dead) {
      char byte;
      errno = 0;
      EXPECT_EQ(recv(fd, &byte, 1, MSG_DONTWAIT), -1);
      EXPECT_EQ(errno, ECONNABORTED);
    }
    char byte = 'x';
    EXPECT_EQ(send(to_alive, &byte, 1, MSG_NOSIGNAL), 1) << "the other connection lives on";
  }
  for (int fd : to_dead) close(fd);
  close(to_alive);
}

TEST(SockDiagTest, FindsTheSocketOfOneConnectionByItsAddresses) {
  Listener listener;
  int client = listener.Connect();
  int server = accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(server, 0);
  sockaddr_storage self{}, peer{};
  socklen_t self_len = sizeof self, peer_len = sizeof peer;
  ASSERT_EQ(getsockname(server, reinterpret_cast<sockaddr*>(&self), &self_len), 0);
  ASSERT_EQ(getpeername(server, reinterpret_cast<sockaddr*>(&peer), &peer_len), 0);
  struct stat st;
  ASSERT_EQ(fstat(server, &st), 0);
  EXPECT_EQ(TcpSocketInode(self, peer), st.st_ino) << "the server's end";
  ASSERT_EQ(fstat(client, &st), 0);
  EXPECT_EQ(TcpSocketInode(peer, self), st.st_ino) << "the client's end";
  reinterpret_cast<sockaddr_in&>(peer).sin_port = htons(1);  // no such connection
  EXPECT_EQ(TcpSocketInode(self, peer), 0u);
  close(server);
  close(client);
}

}  // namespace
}  // namespace onebox::testing

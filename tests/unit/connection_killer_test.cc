// The abort of a dead node's links (nodeagent/sockets/connection_killer.h),
// on real TCP connections over loopback: the connections to one listener's
// address end with ECONNABORTED for whoever holds them, and a connection to
// another address is left alone. Needs CAP_NET_ADMIN (the tests run as
// root, as agents do); without it the call must say so rather than claim
// to have ended anything.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "nodeagent/sockets/connection_killer.h"

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

TEST(ConnectionKillerTest, AbortsEveryConnectionToTheAddressAndNoOther) {
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

}  // namespace
}  // namespace onebox::testing

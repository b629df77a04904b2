// Who may take a link the agent hands to a server (nodeagent/sockets/
// handover.h): only the process holding the other end of the agent's own
// loopback connection. A socket made with the very same addresses in a
// network namespace of one's own (any user can make one) is not it, nor is
// another socket of the right process. Needs root (a network namespace),
// as the tests have.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "nodeagent/sockets/handover.h"

namespace onebox::testing {
namespace {

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

uint16_t PortOf(int fd, bool peer) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  (peer ? getpeername : getsockname)(fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

// A connection over loopback from a socket bound to from_port (0: any) to
// a listener on server_port (0: any): {the client's end, the server's end}.
std::pair<int, int> Connection(uint16_t from_port, uint16_t server_port) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in at = Loopback(server_port);
  if (bind(listener, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 || listen(listener, 1) != 0) return {-1, -1};
  at = Loopback(PortOf(listener, false));
  int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in from = Loopback(from_port);
  if (bind(client, reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
      connect(client, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0)
    return {-1, -1};
  int server = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener);
  return {client, server};
}

TEST(HandoverTest, OnlyTheHolderOfTheOtherEndMayTakeTheLink) {
  auto [agent_end, server_end] = Connection(0, 0);
  ASSERT_GE(server_end, 0);
  EXPECT_TRUE(HoldsOtherEnd(getpid(), server_end, agent_end));
  EXPECT_FALSE(HoldsOtherEnd(getpid(), agent_end, agent_end)) << "the agent's own end is not the server's";
  auto [other_client, other_server] = Connection(0, 0);
  EXPECT_FALSE(HoldsOtherEnd(getpid(), other_server, agent_end)) << "another connection's server end";

  // The same four addresses, made in a network namespace of its own by
  // another process, which then claims it.
  const uint16_t agent_port = PortOf(agent_end, false), server_port = PortOf(agent_end, true);
  int ready[2], done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  pid_t child = fork();
  if (child == 0) {
    int fd = -1;
    if (unshare(CLONE_NEWNET) == 0) {
      int s = socket(AF_INET, SOCK_DGRAM, 0);
      ifreq lo{};
      std::strcpy(lo.ifr_name, "lo");
      lo.ifr_flags = IFF_UP;
      ioctl(s, SIOCSIFFLAGS, &lo);
      fd = Connection(agent_port, server_port).second;
    }
    (void)!write(ready[1], &fd, sizeof fd);
    char c;
    (void)!read(done[0], &c, 1);
    _exit(0);
  }
  int twin = -1;
  ASSERT_EQ(read(ready[0], &twin, sizeof twin), static_cast<ssize_t>(sizeof twin));
  ASSERT_GE(twin, 0) << "the child could not make the same connection in a namespace of its own";
  EXPECT_FALSE(HoldsOtherEnd(child, twin, agent_end)) << "a socket with the same addresses in another namespace";
  (void)!write(done[1], "x", 1);
  waitpid(child, nullptr, 0);
  for (int fd : {agent_end, server_end, other_client, other_server, ready[0], ready[1], done[0], done[1]}) close(fd);
}

}  // namespace
}  // namespace onebox::testing

// The byte mover of cluster ports (nodeagent/sockets/splice_relay.h), on
// real TCP connections over loopback: a "program" end of each connection
// is the test's, the other end is given to the relay, which joins two such
// connections as the agents join a client's and a server's.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "nodeagent/sockets/splice_relay.h"
#include "tests/test_util.h"

namespace onebox::testing {
namespace {

using namespace std::chrono_literals;

// A connected TCP pair over loopback: {the program's end, the relay's end}.
std::pair<int, int> TcpPair() {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  EXPECT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), len), 0);
  EXPECT_EQ(listen(listener, 1), 0);
  getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  int program = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(connect(program, reinterpret_cast<sockaddr*>(&addr), len), 0);
  int relay_end = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener);
  return {program, relay_end};
}

// Two programs joined by the relay: a (client) and b (server).
struct Joined {
  int a = -1, b = -1;
};
Joined Join(SpliceRelay& relay, const std::string& tag = "") {
  auto [a, a_relay] = TcpPair();
  auto [b, b_relay] = TcpPair();
  EXPECT_TRUE(relay.Add(a_relay, b_relay, tag).ok());
  return {a, b};
}

std::string ReadToEnd(int fd, int* err = nullptr) {
  std::string got;
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (err) *err = n < 0 ? errno : 0;
    return got;
  }
}

bool WriteAll(int fd, const std::string& data) {
  for (size_t done = 0; done < data.size();) {
    ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

std::string Pattern(size_t bytes) {
  std::string s(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) s[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  return s;
}

TEST(SpliceRelayTest, BytesGoBothWaysAndEachEndOfFileIsAHalfClose) {
  auto relay = SpliceRelay::Start();
  ASSERT_TRUE(relay.ok());
  Joined j = Join(**relay);
  const std::string request = Pattern(8 << 20);
  std::string received;
  std::thread server([&] { received = ReadToEnd(j.b); });
  ASSERT_TRUE(WriteAll(j.a, request));
  ASSERT_EQ(shutdown(j.a, SHUT_WR), 0);
  server.join();
  EXPECT_TRUE(received == request) << received.size() << " of " << request.size() << " bytes, or other bytes";
  // The other way still works after the half-close, and its end comes too.
  ASSERT_TRUE(WriteAll(j.b, "the answer"));
  ASSERT_EQ(shutdown(j.b, SHUT_WR), 0);
  int err = -1;
  EXPECT_EQ(ReadToEnd(j.a, &err), "the answer");
  EXPECT_EQ(err, 0);
  EXPECT_TRUE(WaitUntil([&] { return (*relay)->open() == 0; }, 5s, "the pair is closed once both ways ended"));
  close(j.a);
  close(j.b);
}

TEST(SpliceRelayTest, AResetOnOneSideResetsTheOther) {
  auto relay = SpliceRelay::Start();
  ASSERT_TRUE(relay.ok());
  Joined j = Join(**relay);
  ASSERT_TRUE(WriteAll(j.a, "hello"));
  char buf[5];
  ASSERT_EQ(read(j.b, buf, 5), 5);
  linger l{1, 0};
  setsockopt(j.b, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(j.b);
  int err = 0;
  ReadToEnd(j.a, &err);
  EXPECT_EQ(err, ECONNRESET);
  EXPECT_TRUE(WaitUntil([&] { return (*relay)->open() == 0; }, 5s, "the pair is gone"));
  close(j.a);
}

TEST(SpliceRelayTest, AReaderThatDoesNotReadHoldsBackOnlyItsOwnConnection) {
  auto relay = SpliceRelay::Start();
  ASSERT_TRUE(relay.ok());
  Joined stuck = Join(**relay);
  Joined busy = Join(**relay);
  // The stuck pair's writer fills what the kernel and the relay hold, then
  // waits: a bounded amount, not everything it has.
  fcntl(stuck.a, F_SETFL, O_NONBLOCK);
  const std::string block(1 << 16, 'x');
  size_t written = 0;
  for (auto until = std::chrono::steady_clock::now() + 2s; std::chrono::steady_clock::now() < until;) {
    ssize_t n = write(stuck.a, block.data(), block.size());
    if (n > 0) written += static_cast<size_t>(n);
    else std::this_thread::sleep_for(10ms);
  }
  EXPECT_LT(written, size_t{64} << 20) << "the relay buffered without bound";
  // Meanwhile another connection moves its bytes.
  const std::string data = Pattern(16 << 20);
  std::string received;
  std::thread server([&] { received = ReadToEnd(busy.b); });
  ASSERT_TRUE(WriteAll(busy.a, data));
  shutdown(busy.a, SHUT_WR);
  server.join();
  EXPECT_EQ(received.size(), data.size());
  // And the stuck one gets all it was sent once its reader reads.
  shutdown(stuck.a, SHUT_WR);
  EXPECT_EQ(ReadToEnd(stuck.b).size(), written);
  for (int fd : {stuck.a, stuck.b, busy.a, busy.b}) close(fd);
}

TEST(SpliceRelayTest, ResetOfATagResetsItsPairsOnly) {
  auto relay = SpliceRelay::Start();
  ASSERT_TRUE(relay.ok());
  Joined gone = Join(**relay, "node-a");
  Joined kept = Join(**relay, "node-b");
  (*relay)->Reset("node-a");
  int err = 0;
  ReadToEnd(gone.a, &err);
  EXPECT_EQ(err, ECONNRESET);
  ASSERT_TRUE(WriteAll(kept.a, "still here"));
  shutdown(kept.a, SHUT_WR);
  EXPECT_EQ(ReadToEnd(kept.b), "still here");
  for (int fd : {gone.a, gone.b, kept.a, kept.b}) close(fd);
}

}  // namespace
}  // namespace onebox::testing

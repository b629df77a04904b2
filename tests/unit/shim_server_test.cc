// The agent's shim socket server under awkward clients: half-closes, floods of
// tiny frames, clients that never read, oversized and malformed frames,
// answers given later from another thread, a descriptor sent with an answer.
#include "nodeagent/local/shim_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "tests/test_util.h"

namespace onebox {
namespace {

using onebox::testing::TempDir;

int Connect(const std::string& path) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << strerror(errno);
  return fd;
}

std::string Frame(uint64_t id) {
  v1::ShimRequest req;
  req.set_id(id);
  req.mutable_ping()->set_client("t");
  std::string body = req.SerializeAsString();
  std::string frame;
  AppendShimFrameHeader(frame, static_cast<uint32_t>(body.size()));
  return frame + body;
}

// Reads `count` answers; returns the ids seen, in order.
std::vector<uint64_t> ReadAnswers(int fd, size_t count) {
  std::vector<uint64_t> ids;
  std::string in;
  char buf[65536];
  while (ids.size() < count) {
    uint32_t len = 0;
    while (PeekShimFrame(in, &len) == ShimFrameIn::kWhole) {
      v1::ShimResponse resp;
      EXPECT_TRUE(resp.ParseFromArray(in.data() + kShimFrameHeaderBytes, static_cast<int>(len)));
      ids.push_back(resp.id());
      in.erase(0, kShimFrameHeaderBytes + len);
    }
    if (ids.size() >= count) break;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  return ids;
}

constexpr uint64_t kLater = 1'000'000'000;

class ShimServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_ / "agent.sock";
    // Ids from kLater on are answered 50 ms later by another thread; id 7 comes with a descriptor.
    auto s = ShimServer::Start(path_, [this](ShimCall& call, const v1::ShimRequest& req, v1::ShimResponse* resp) {
      resp->mutable_ping()->set_peer_pid(call.peer.pid);
      if (req.id() == 7) call.attach_fd = attach_fd_;
      if (req.id() >= kLater) {
        std::thread([reply = call.Defer()]() mutable {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          reply.Send(v1::ShimResponse());
        }).detach();
      }
    });
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(s).value();
  }
  TempDir dir_;
  std::string path_;
  int attach_fd_ = -1;
  std::unique_ptr<ShimServer> server_;
};

TEST_F(ShimServerTest, AnswersAClientThatHalfClosed) {
  int fd = Connect(path_);
  std::string req = Frame(1) + Frame(2);
  ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadAnswers(fd, 2), (std::vector<uint64_t>{1, 2}));
  char c;
  EXPECT_EQ(recv(fd, &c, 1, 0), 0) << "the server closes once it has answered";
  close(fd);
}

TEST_F(ShimServerTest, AnAnswerGivenLaterKeepsItsPlaceEvenAfterAHalfClose) {
  int fd = Connect(path_);
  std::string req = Frame(kLater) + Frame(2) + Frame(kLater + 1) + Frame(3);
  ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadAnswers(fd, 4), (std::vector<uint64_t>{kLater, 2, kLater + 1, 3}));
  char c;
  EXPECT_EQ(recv(fd, &c, 1, 0), 0) << "the server closes once it has answered";
  close(fd);
  // A client that leaves before its answer is ready costs nothing; others are served.
  fd = Connect(path_);
  std::string later = Frame(kLater + 2);
  ASSERT_EQ(send(fd, later.data(), later.size(), 0), static_cast<ssize_t>(later.size()));
  close(fd);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  fd = Connect(path_);
  std::string ping = Frame(4);
  ASSERT_EQ(send(fd, ping.data(), ping.size(), 0), static_cast<ssize_t>(ping.size()));
  EXPECT_EQ(ReadAnswers(fd, 1), std::vector<uint64_t>{4});
  close(fd);
}

TEST_F(ShimServerTest, SendsADescriptorWithAnAnswer) {
  int pipefd[2];
  ASSERT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
  attach_fd_ = pipefd[1];
  int fd = Connect(path_);
  std::string req = Frame(7);
  ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  char buf[512];
  iovec iov{buf, sizeof buf};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ASSERT_GT(recvmsg(fd, &msg, MSG_CMSG_CLOEXEC), 0);
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(cm, nullptr) << "no descriptor came with the answer";
  ASSERT_EQ(cm->cmsg_type, SCM_RIGHTS);
  int got;
  memcpy(&got, CMSG_DATA(cm), sizeof got);
  ASSERT_EQ(write(got, "x", 1), 1) << "the descriptor is the pipe's write end";
  char x;
  EXPECT_EQ(read(pipefd[0], &x, 1), 1);
  close(got);
  close(pipefd[0]);
  close(pipefd[1]);
  close(fd);
}

TEST_F(ShimServerTest, AnswersAFloodOfTinyFramesInOrder) {
  constexpr size_t kFrames = 200000;  // quadratic buffer handling would take minutes here
  int fd = Connect(path_);
  std::thread writer([&] {
    std::string batch;
    for (size_t i = 0; i < kFrames; ++i) {
      batch += Frame(i);
      if (batch.size() > 65536 || i + 1 == kFrames) {
        ASSERT_EQ(send(fd, batch.data(), batch.size(), MSG_NOSIGNAL), static_cast<ssize_t>(batch.size()));
        batch.clear();
      }
    }
  });
  std::vector<uint64_t> ids = ReadAnswers(fd, kFrames);
  writer.join();
  ASSERT_EQ(ids.size(), kFrames);
  for (size_t i = 0; i < kFrames; ++i) ASSERT_EQ(ids[i], i);
  close(fd);
}

TEST_F(ShimServerTest, AClientThatNeverReadsIsThrottledAndOthersAreServed) {
  int greedy = Connect(path_);
  fcntl(greedy, F_SETFL, O_NONBLOCK);
  std::string batch;
  for (int i = 0; i < 4096; ++i) batch += Frame(i);
  // Keep sending without reading: the server must stop reading from us, so our
  // sends eventually hit a full socket buffer instead of growing its memory.
  size_t sent = 0, off = 0;  // off: where the next send resumes inside batch (frames must stay whole)
  bool blocked = false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  int eagain_in_a_row = 0;
  while (std::chrono::steady_clock::now() < deadline && !blocked) {
    ssize_t n = send(greedy, batch.data() + off, batch.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
      blocked = ++eagain_in_a_row >= 10;  // full for half a second: the server stopped reading
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    ASSERT_GT(n, 0) << strerror(errno);
    eagain_in_a_row = 0;
    sent += static_cast<size_t>(n);
    off = (off + static_cast<size_t>(n)) % batch.size();
  }
  EXPECT_TRUE(blocked) << "server kept reading after " << sent << " bytes of unread answers";
  EXPECT_LT(sent, size_t{64} << 20);
  int other = Connect(path_);
  std::string ping = Frame(99);
  ASSERT_EQ(send(other, ping.data(), ping.size(), 0), static_cast<ssize_t>(ping.size()));
  EXPECT_EQ(ReadAnswers(other, 1), std::vector<uint64_t>{99});
  close(other);
  close(greedy);
}

TEST_F(ShimServerTest, ClosesOnOversizedOrMalformedFrames) {
  for (std::string bad : {std::string("\xff\xff\xff\x7f", 4), std::string("\x03\x00\x00\x00\xff\xff\xff", 7)}) {
    int fd = Connect(path_);
    ASSERT_EQ(send(fd, bad.data(), bad.size(), 0), static_cast<ssize_t>(bad.size()));
    char c;
    EXPECT_EQ(recv(fd, &c, 1, 0), 0) << "connection should be closed";
    close(fd);
  }
  int fd = Connect(path_);  // and the server still serves
  std::string ping = Frame(5);
  ASSERT_EQ(send(fd, ping.data(), ping.size(), 0), static_cast<ssize_t>(ping.size()));
  EXPECT_EQ(ReadAnswers(fd, 1), std::vector<uint64_t>{5});
  close(fd);
}

TEST_F(ShimServerTest, StopLeavesAnotherServersSocketAlone) {
  unlink(path_.c_str());  // someone removed our socket and another agent took the path
  auto other = ShimServer::Start(path_, [](ShimCall&, const v1::ShimRequest&, v1::ShimResponse*) {});
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  server_->Stop();
  struct stat st;
  EXPECT_EQ(lstat(path_.c_str(), &st), 0) << "Stop() removed a socket that was not its own";
  (*other)->Stop();
  EXPECT_NE(lstat(path_.c_str(), &st), 0);
}

}  // namespace
}  // namespace onebox

// Fuzzes the agent's side of the shim protocol (nodeagent/local/shim_server.h):
// any bytes, as a program would send them, on a connection to a real
// ShimServer whose handler answers every request, some later from another
// thread (ShimCall::Defer). The server must answer only with whole frames
// that parse, at most one per request it took, close what it cannot read,
// and go on serving the next connection.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

#include <google/protobuf/stubs/logging.h>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>

#include "nodeagent/local/shim_server.h"
#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"

namespace {

// Protobuf logs every string field that is not UTF-8: thousands of lines a second here.
[[maybe_unused]] const bool kQuiet = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

void Require(bool holds) {
  if (!holds) abort();
}

struct Served {
  std::string path;
  std::unique_ptr<onebox::ShimServer> server;
};

Served& Server() {
  static Served* s = [] {
    auto* served = new Served();
    char dir[] = "/tmp/onebox-fuzz-XXXXXX";
    Require(mkdtemp(dir) != nullptr);
    served->path = std::string(dir) + "/shim.sock";
    auto started = onebox::ShimServer::Start(
        served->path, [](onebox::ShimCall& call, const onebox::v1::ShimRequest& req, onebox::v1::ShimResponse* resp) {
          resp->set_err(static_cast<int>(req.op_case()));
          if (req.id() % 4 == 1) {  // answered later, from another thread
            std::thread([reply = call.Defer(), answer = *resp]() mutable { reply.Send(std::move(answer)); }).detach();
          }
        });
    Require(started.ok());
    served->server = std::move(started).value();
    return served;
  }();
  return *s;
}

// Sends bytes (in pieces of `piece` bytes), closes its sending side, and
// reads until the server closes; the answers' count, or -1 for bytes that
// are no whole frames of ShimResponse.
int Exchange(const std::string& bytes, size_t piece) {
  int fd = onebox::ConnectShimSocket(Server().path, 2.0);
  Require(fd >= 0);
  for (size_t at = 0; at < bytes.size(); at += piece) {
    size_t n = std::min(piece, bytes.size() - at);
    if (send(fd, bytes.data() + at, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) break;  // closed on us: fine
  }
  shutdown(fd, SHUT_WR);
  std::string got;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    Require(poll(&p, 1, 5000) == 1);  // the server never leaves a closed client hanging
    char buf[65536];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0) break;
    got.append(buf, static_cast<size_t>(r));
  }
  close(fd);
  int answers = 0;
  std::string_view rest(got);
  while (!rest.empty()) {
    uint32_t len = 0;
    if (onebox::PeekShimFrame(rest, &len) != onebox::ShimFrameIn::kWhole) return -1;
    onebox::v1::ShimResponse resp;
    if (!resp.ParseFromArray(rest.data() + onebox::kShimFrameHeaderBytes, static_cast<int>(len))) return -1;
    rest.remove_prefix(onebox::kShimFrameHeaderBytes + len);
    ++answers;
  }
  return answers;
}

// The most requests the server can have taken from bytes: its whole frames.
int FramesIn(std::string_view bytes) {
  int frames = 0;
  uint32_t len = 0;
  while (onebox::PeekShimFrame(bytes, &len) == onebox::ShimFrameIn::kWhole) {
    bytes.remove_prefix(onebox::kShimFrameHeaderBytes + len);
    ++frames;
  }
  return frames;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 16)) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const size_t piece = size == 0 ? 1 : 1 + data[0] % 64;  // frames split across reads too
  int answers = Exchange(bytes, piece);
  Require(answers >= 0 && answers <= FramesIn(bytes));
  // And the server still serves: one well-formed request, one answer.
  onebox::v1::ShimRequest ping;
  ping.set_id(2);
  ping.mutable_hello();
  std::string frame;
  onebox::AppendShimFrameHeader(frame, static_cast<uint32_t>(ping.ByteSizeLong()));
  frame += ping.SerializeAsString();
  Require(Exchange(frame, frame.size()) == 1);
  return 0;
}

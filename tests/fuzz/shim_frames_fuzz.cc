// Fuzzes the agent's side of the shim protocol (nodeagent/local/shim_server.h):
// any bytes, as a program would send them, on a connection to a real
// ShimServer whose handler answers every request, some later from another
// thread (ShimCall::Defer). The server must answer, in order, the requests
// it could read (each answer naming its request: id, and the handler's
// mark of its kind), close at the first it cannot read, and go on serving
// the next connection.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include <google/protobuf/stubs/logging.h>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "nodeagent/local/shim_server.h"
#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using onebox::fuzz::Require;

// Protobuf logs every string field that is not UTF-8: thousands of lines a second here.
[[maybe_unused]] const bool kQuiet = [] {
  google::protobuf::SetLogHandler(nullptr);
  spdlog::set_level(spdlog::level::off);  // the server logs each malformed frame
  return true;
}();

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
    static std::string made_dir = dir;
    atexit([] {
      unlink((made_dir + "/shim.sock").c_str());
      rmdir(made_dir.c_str());
    });
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

using Mark = std::pair<uint64_t, int>;  // a request's id, and its kind (the handler's err)

// Sends bytes (in pieces of `piece` bytes), closes its sending side, and
// reads until the server closes: the answers' marks. Bytes that are no
// whole frames of ShimResponse fail.
std::vector<Mark> Exchange(const std::string& bytes, size_t piece) {
  int fd = onebox::ConnectShimSocket(Server().path, 2.0);
  Require(fd >= 0);
  for (size_t at = 0; at < bytes.size(); at += piece) {
    size_t n = std::min(piece, bytes.size() - at);
    ssize_t sent;
    do sent = send(fd, bytes.data() + at, n, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);  // libFuzzer's timer (-timeout) interrupts calls every second
    if (sent != static_cast<ssize_t>(n)) break;  // closed on us: fine
  }
  shutdown(fd, SHUT_WR);
  std::string got;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int ready = poll(&p, 1, 5000);
    if (ready < 0 && errno == EINTR) continue;
    Require(ready == 1);  // the server never leaves a closed client hanging
    char buf[65536];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got.append(buf, static_cast<size_t>(r));
  }
  close(fd);
  std::vector<Mark> answers;
  std::string_view rest(got);
  while (!rest.empty()) {
    uint32_t len = 0;
    // A cut-off last answer: the server closed mid-way through sending what it had queued.
    if (onebox::PeekShimFrame(rest, &len) != onebox::ShimFrameIn::kWhole) break;
    onebox::v1::ShimResponse resp;
    Require(resp.ParseFromArray(rest.data() + onebox::kShimFrameHeaderBytes, static_cast<int>(len)));
    rest.remove_prefix(onebox::kShimFrameHeaderBytes + len);
    answers.emplace_back(resp.id(), resp.err());
  }
  return answers;
}

// The requests the server can read from bytes, in order: whole frames, up
// to the first it must refuse (too long, or no ShimRequest).
std::vector<Mark> Readable(std::string_view bytes) {
  std::vector<Mark> marks;
  uint32_t len = 0;
  while (onebox::PeekShimFrame(bytes, &len) == onebox::ShimFrameIn::kWhole && len <= onebox::kMaxShimFrameBytes) {
    onebox::v1::ShimRequest req;
    if (!req.ParseFromArray(bytes.data() + onebox::kShimFrameHeaderBytes, static_cast<int>(len))) break;
    marks.emplace_back(req.id(), static_cast<int>(req.op_case()));
    bytes.remove_prefix(onebox::kShimFrameHeaderBytes + len);
  }
  return marks;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1 << 16)) return 0;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const size_t piece = size == 0 ? 1 : 1 + data[0] % 64;  // frames split across reads too
  // Answers in order, each to its request, none to what came after the
  // first unreadable one (the server may close before answering them all:
  // answers queued when it meets a bad frame are dropped with the connection).
  const std::vector<Mark> answers = Exchange(bytes, piece), readable = Readable(bytes);
  Require(answers.size() <= readable.size());
  for (size_t i = 0; i < answers.size(); ++i) Require(answers[i] == readable[i]);
  // And the server still serves: two well-formed requests, one answered
  // at once and one later, two answers.
  std::string frames;
  for (uint64_t id : {2, 1}) {
    onebox::v1::ShimRequest hello;
    hello.set_id(id);
    hello.mutable_hello();
    onebox::AppendShimFrameHeader(frames, static_cast<uint32_t>(hello.ByteSizeLong()));
    frames += hello.SerializeAsString();
  }
  Require(Exchange(frames, frames.size()) == Readable(frames));
  return 0;
}

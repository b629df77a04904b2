// The framing of the shim protocol (proto/onebox/v1/shim.proto), written
// once: on the agent's Unix socket every message is its protobuf bytes after
// their length, 4 bytes little-endian. The shim (protobuf-c), the agent, the
// CLI and the tests all frame with these. Header-only; the frame functions
// allocate nothing but the caller's string, so the shim may use them in any
// interposed call. The blocking client helpers at the end are for the CLI
// and the tests (the shim has its own, which also takes passed descriptors).
#pragma once

#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace onebox {

// Where the agent listens unless told otherwise (`onebox agent --socket`),
// and so where the CLI and the shim look.
#define ONEBOX_DEFAULT_AGENT_SOCKET "/run/onebox/agent.sock"
constexpr const char* kDefaultAgentSocket = ONEBOX_DEFAULT_AGENT_SOCKET;

// The socket a command that acts as its caller uses: the one given
// (--socket), else $ONEBOX_SOCKET, else the default.
inline std::string AgentSocketPath(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* env = getenv("ONEBOX_SOCKET"); env != nullptr && *env != '\0') return env;
  return kDefaultAgentSocket;
}

constexpr size_t kShimFrameHeaderBytes = 4;
// The agent closes a connection that sends a bigger frame.
constexpr uint32_t kMaxShimFrameBytes = 16 << 20;

inline void EncodeShimFrameHeader(uint32_t body_bytes, char out[kShimFrameHeaderBytes]) {
  for (size_t i = 0; i < kShimFrameHeaderBytes; ++i) out[i] = static_cast<char>((body_bytes >> (8 * i)) & 0xff);
}

inline uint32_t DecodeShimFrameHeader(const char in[kShimFrameHeaderBytes]) {
  uint32_t len = 0;
  for (size_t i = kShimFrameHeaderBytes; i-- > 0;) len = (len << 8) | static_cast<uint8_t>(in[i]);
  return len;
}

// Appends the header of a frame whose body is body_bytes long; the body follows.
inline void AppendShimFrameHeader(std::string& out, uint32_t body_bytes) {
  char header[kShimFrameHeaderBytes];
  EncodeShimFrameHeader(body_bytes, header);
  out.append(header, kShimFrameHeaderBytes);
}

// Whether buf holds a header (then *body_bytes is the body's length), and
// whether it holds the whole frame.
enum class ShimFrameIn { kNoHeader, kPartial, kWhole };
inline ShimFrameIn PeekShimFrame(std::string_view buf, uint32_t* body_bytes) {
  if (buf.size() < kShimFrameHeaderBytes) return ShimFrameIn::kNoHeader;
  *body_bytes = DecodeShimFrameHeader(buf.data());
  return buf.size() - kShimFrameHeaderBytes >= *body_bytes ? ShimFrameIn::kWhole : ShimFrameIn::kPartial;
}

// --- Blocking client helpers (CLI, tests) ---

// A connected Unix stream socket to path, whose reads and writes give up
// after timeout_seconds; -1 with errno set (ENAMETOOLONG for a path too long).
inline int ConnectShimSocket(const std::string& path, double timeout_seconds) {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{static_cast<time_t>(timeout_seconds),
             static_cast<suseconds_t>((timeout_seconds - static_cast<double>(static_cast<time_t>(timeout_seconds))) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

// Sends body as one frame; false when the socket failed.
inline bool SendShimFrame(int fd, std::string_view body) {
  std::string frame;
  frame.reserve(kShimFrameHeaderBytes + body.size());
  AppendShimFrameHeader(frame, static_cast<uint32_t>(body.size()));
  frame.append(body);
  for (size_t off = 0; off < frame.size();) {
    ssize_t n = send(fd, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

// Reads one frame's body; false when the socket closed, failed or timed out
// first, or the frame is longer than max_body.
inline bool RecvShimFrame(int fd, std::string* body, uint32_t max_body = kMaxShimFrameBytes) {
  char header[kShimFrameHeaderBytes];
  auto read_exactly = [fd](char* buf, size_t n) {
    for (size_t got = 0; got < n;) {
      ssize_t r = recv(fd, buf + got, n - got, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      got += static_cast<size_t>(r);
    }
    return true;
  };
  if (!read_exactly(header, sizeof header)) return false;
  uint32_t len = DecodeShimFrameHeader(header);
  if (len > max_body) return false;
  body->resize(len);
  return read_exactly(body->data(), len);
}

}  // namespace onebox

// The head of a port relay link (sockets/port_relay.h), written once for
// both ends: the owner's challenge, then the dialer's magic, its proof and
// what it asks for. What it asks for is the port (2 bytes, big-endian), or
// 0 for a Unix socket, then the connecting program's uid and gid (4 bytes
// each) and the socket's path below the view root (2 bytes of length, the
// path). The owner parses it from bytes another machine sent: a path is
// taken only when it is relative, normalized (no "", "." or ".."
// component, no "//") and free of NUL bytes, so that it can only name a
// file below the view (which OpenBeneath checks again).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace onebox {

constexpr char kLinkMagic[4] = {'O', 'B', 'R', '3'};
constexpr size_t kLinkChallengeBytes = 16;
constexpr size_t kLinkProofBytes = 32;  // HMAC-SHA256
constexpr size_t kLinkMaxPathBytes = 4095;
// The shortest head a dialer sends: magic, proof and a TCP port.
constexpr size_t kLinkHeadBytes = sizeof kLinkMagic + kLinkProofBytes + 2;
// A link's handshakes (TLS's, and the head and answer), and the owner's
// connect, must each come within this.
constexpr int kLinkHandshakeMs = 2000;

struct LinkRequest {
  uint32_t port = 0;  // 0: a Unix socket at path
  uint32_t uid = 0, gid = 0;
  std::string path;
  std::string proof;   // kLinkProofBytes
  std::string wanted;  // the bytes after the proof, which the proof covers
};

// What a dialer asks for, as its bytes go after the proof: port, or 0 with
// uid, gid and path.
std::string EncodeWanted(uint32_t port, uint32_t uid, uint32_t gid, const std::string& path);
// What a link's proof covers: the owner's challenge and what is asked for.
std::string ProofInput(std::string_view challenge, std::string_view wanted);

// Reads the dialer's part (magic, proof, what it asks for) through
// read_full, which gives exactly n bytes or false. False when the bytes are
// not a request: another magic, too short, a port above 65535, or a path
// that is not one (above).
bool ReadLinkRequest(const std::function<bool(void* buf, size_t n)>& read_full, LinkRequest* request);

// How long the head is, from its first `have` bytes: kLinkHeadBytes while
// they cannot tell (and for a TCP port's), the ids' end while a Unix
// socket's path length is not there yet, then that head's whole length
// (which may exceed what ReadLinkRequest takes: it refuses such a head).
size_t LinkHeadBytesFrom(const uint8_t* first, size_t have);

// A path a link may name: relative, normalized, without NUL, at most
// kLinkMaxPathBytes.
bool LinkPathValid(std::string_view path);

}  // namespace onebox

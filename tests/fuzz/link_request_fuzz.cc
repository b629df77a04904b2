// Fuzzes the head of a port relay link as the owner's agent reads it from
// another machine (nodeagent/sockets/link_request.h): any bytes. A head is
// taken or refused, never a crash; one taken is a head a dialer could have
// sent, byte for byte, and a Unix socket's path in it can only name a file
// below the view (relative and lexically normal, checked here by
// std::filesystem, independently of the parser's own check).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "nodeagent/sockets/link_request.h"
#include "tests/fuzz/fuzz_util.h"

using onebox::fuzz::Require;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using onebox::LinkRequest;
  size_t at = 0;
  auto read_full = [&](void* buf, size_t n) {
    if (size - at < n) return false;
    std::memcpy(buf, data + at, n);
    at += n;
    return true;
  };
  LinkRequest r;
  // The relay's look before a worker reads (port_relay.cc): never shorter than the shortest head.
  const size_t told = onebox::LinkHeadBytesFrom(data, size);
  Require(told >= onebox::kLinkHeadBytes);
  if (!onebox::ReadLinkRequest(read_full, &r)) return 0;
  Require(told == at);  // a head taken is as long as the look said
  const size_t head = sizeof onebox::kLinkMagic + onebox::kLinkProofBytes;
  Require(std::memcmp(data, onebox::kLinkMagic, sizeof onebox::kLinkMagic) == 0);
  Require(r.proof.size() == onebox::kLinkProofBytes && std::memcmp(r.proof.data(), data + 4, r.proof.size()) == 0);
  Require(r.wanted == onebox::EncodeWanted(r.port, r.uid, r.gid, r.path));
  Require(at == head + r.wanted.size() && std::memcmp(data + head, r.wanted.data(), r.wanted.size()) == 0);
  Require(r.port <= 0xffff);
  if (r.port != 0) {
    Require(r.path.empty());
  } else {
    Require(!r.path.empty() && r.path.find('\0') == std::string::npos && r.path[0] != '/');
    const std::string normal = std::filesystem::path(r.path).lexically_normal().string();
    Require(normal == r.path && normal != ".." && normal.rfind("../", 0) != 0);
  }
  return 0;
}

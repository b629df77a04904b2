#include "nodeagent/sockets/link_request.h"

#include <cstring>

namespace onebox {

namespace {

void Put32(std::string* out, uint32_t v) {
  for (int shift : {24, 16, 8, 0}) *out += static_cast<char>(v >> shift);
}

uint32_t Get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 | static_cast<uint32_t>(p[2]) << 8 | p[3];
}

}  // namespace

std::string EncodeWanted(uint32_t port, uint32_t uid, uint32_t gid, const std::string& path) {
  std::string wanted{static_cast<char>(port >> 8), static_cast<char>(port & 0xff)};
  if (port == 0) {
    Put32(&wanted, uid);
    Put32(&wanted, gid);
    wanted += static_cast<char>(path.size() >> 8);
    wanted += static_cast<char>(path.size() & 0xff);
    wanted += path;
  }
  return wanted;
}

std::string ProofInput(std::string_view challenge, std::string_view wanted) {
  std::string input = "onebox port relay ";
  input += challenge;
  input += wanted;
  return input;
}

bool LinkPathValid(std::string_view path) {
  if (path.empty() || path.size() > kLinkMaxPathBytes || path.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;  // also a leading or doubled '/'
    start = end + 1;
  }
  return true;
}

size_t LinkHeadBytesFrom(const uint8_t* first, size_t have) {
  constexpr size_t kIdsEnd = kLinkHeadBytes + 10;  // uid, gid, the path's length
  if (have < kLinkHeadBytes || (first[kLinkHeadBytes - 2] | first[kLinkHeadBytes - 1]) != 0) return kLinkHeadBytes;
  if (have < kIdsEnd) return kIdsEnd;
  return kIdsEnd + static_cast<size_t>(first[kIdsEnd - 2] << 8 | first[kIdsEnd - 1]);
}

bool ReadLinkRequest(const std::function<bool(void*, size_t)>& read_full, LinkRequest* r) {
  uint8_t head[sizeof kLinkMagic + kLinkProofBytes + 2];
  if (!read_full(head, sizeof head) || std::memcmp(head, kLinkMagic, sizeof kLinkMagic) != 0) return false;
  r->proof.assign(reinterpret_cast<const char*>(head + sizeof kLinkMagic), kLinkProofBytes);
  const uint8_t* asked = head + sizeof kLinkMagic + kLinkProofBytes;
  r->port = static_cast<uint32_t>(asked[0] << 8 | asked[1]);
  r->uid = r->gid = 0;
  r->path.clear();
  if (r->port != 0) {
    r->wanted = EncodeWanted(r->port, 0, 0, "");
    return true;
  }
  uint8_t ids_len[10];
  if (!read_full(ids_len, sizeof ids_len)) return false;
  r->uid = Get32(ids_len);
  r->gid = Get32(ids_len + 4);
  r->path.resize(static_cast<size_t>(ids_len[8] << 8 | ids_len[9]));
  if (r->path.empty() || r->path.size() > kLinkMaxPathBytes || !read_full(r->path.data(), r->path.size()) ||
      !LinkPathValid(r->path))
    return false;
  r->wanted = EncodeWanted(0, r->uid, r->gid, r->path);
  return true;
}

}  // namespace onebox

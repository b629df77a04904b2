// Fixed-width big-endian integers, written once: store keys that sort by
// number (log sequence numbers, history versions), record headers and digest
// framing all use them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace onebox {

inline void AppendBE64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

inline std::string BE64(uint64_t v) {
  std::string out;
  out.reserve(8);
  AppendBE64(out, v);
  return out;
}

// The number in the first (at most) 8 bytes of s, big-endian.
inline uint64_t ReadBE64(std::string_view s) {
  uint64_t v = 0;
  for (char c : s.substr(0, 8)) v = (v << 8) | static_cast<uint8_t>(c);
  return v;
}

}  // namespace onebox

// What every fuzz harness in tests/fuzz/ shares: Require, an invariant whose
// failure aborts (libFuzzer and the corpus runner both report an abort as
// a crash), and, for the harnesses that parse protobuf, a quiet protobuf.
#pragma once

#include <cstdlib>

namespace onebox::fuzz {

inline void Require(bool holds) {
  if (!holds) abort();
}

}  // namespace onebox::fuzz

// Protobuf logs every string field that is not UTF-8: thousands of lines a
// second under a fuzzer. Include after <google/protobuf/stubs/logging.h> to
// silence it (one definition per harness: each is a program of its own).
#ifdef GOOGLE_PROTOBUF_STUBS_LOGGING_H_
namespace onebox::fuzz {
[[maybe_unused]] inline const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();
}  // namespace onebox::fuzz
#endif

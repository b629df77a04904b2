// Test helpers shared by unit and integration tests: temp dirs that clean up.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

namespace onebox::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/onebox-test-XXXXXX";
    char* made = mkdtemp(tmpl.data());
    if (made == nullptr) abort();
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace onebox::testing

// The shim's inlined glance at a path (preload/native_path.h): it may leave a
// path to the slow path, but it never calls a path native that the exact rule
// would not; away from a page end it decides every absolute path as the exact
// rule does (for roots of up to 8 bytes); and it never reads into the next
// page, whatever the path's length and alignment.
#include "preload/native_path.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace onebox::shim {
constinit HotPath hot_path{"/cluster"};  // the shim's own is in preload/cluster_paths.cc
}  // namespace onebox::shim

namespace onebox::shim {
namespace {

// The rule SurelyNative applies to an absolute path: not under the root's
// prefix, and nothing like "/." or "//" in it (it could normalize elsewhere).
bool ExactlyNative(std::string_view path, std::string_view root) {
  if (path.empty() || path[0] != '/') return false;  // relative: for the slow path, which knows the cwd
  if (path.substr(0, root.size()) == root) return false;
  for (size_t i = 0; i + 1 < path.size(); ++i)
    if (path[i] == '/' && (path[i + 1] == '/' || path[i + 1] == '.')) return false;
  return true;
}

// Paths that stress the prefix test and the scan at every block boundary.
std::vector<std::string> Paths() {
  std::vector<std::string> paths = {"", "/", "//", "/.", "/cluster", "/cluster/", "/cluster/a", "/clusterx/a",
                                    "/clu", "/cluste", "/clusteR", "/c", "/etc/hostname", "relative/x", "./x",
                                    "/./cluster/a", "//cluster/a", "/a/../cluster/a", "/.hidden", "/a/.hidden",
                                    "/usr/lib/x86_64-linux-gnu/libc.so.6"};
  for (size_t at = 1; at < 70; ++at) {  // one "/." or "//" (or none) at every offset
    for (const char* pair : {"/.", "//", "/x"}) {
      std::string p = "/" + std::string(at, 'a');
      p.replace(at - 1, 2, pair);
      p[0] = '/';
      paths.push_back(p + "/tail");
      paths.push_back(p);
    }
  }
  std::mt19937 rng(12345);
  const char alphabet[] = "/./.aclusterx";
  for (int i = 0; i < 4000; ++i) {
    std::string p = "/";
    size_t len = rng() % 72;
    for (size_t j = 0; j < len; ++j) p += alphabet[rng() % (sizeof alphabet - 1)];
    paths.push_back(p);
  }
  return paths;
}

class NativeAtAGlanceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two readable pages, then one that is not: a read past the end of a path
    // placed at the end of the second page would fault.
    mem_ = static_cast<char*>(mmap(nullptr, 3 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ASSERT_NE(mem_, MAP_FAILED);
    ASSERT_EQ(mprotect(mem_ + 2 * kPage, kPage, PROT_NONE), 0);
  }
  void TearDown() override {
    munmap(mem_, 3 * kPage);
    hot_path.SetRoot("/cluster");
  }
  // Puts path at mem_ + at (NUL included) and glances at it there.
  bool GlanceAt(const std::string& path, size_t at) {
    for (size_t i = at; i < at + 96 && i < 2 * kPage; ++i) mem_[i] = "//./"[i % 4];  // what follows the NUL
    memcpy(mem_ + at, path.c_str(), path.size() + 1);
    // The glance decides only on a page this thread found readable (as a
    // slow-path call on the same buffer leaves it).
    EXPECT_TRUE(MayReadPage(mem_ + at));
    return NativeAtAGlance(mem_ + at);
  }
  void Check(std::string_view root, bool decides_all) {
    hot_path.SetRoot(root);
    for (const std::string& p : Paths()) {
      bool exact = ExactlyNative(p, root);
      for (size_t align = 0; align < 16; ++align) {  // in the middle of a page: every alignment
        bool glance = GlanceAt(p, kPage / 2 + align);
        EXPECT_FALSE(glance && !exact) << "\"" << p << "\" called native, root " << root;
        if (decides_all) {
          EXPECT_EQ(glance, exact) << "\"" << p << "\" at alignment " << align << ", root " << root;
        }
      }
      for (size_t before_end = 0; before_end < 40; ++before_end) {  // ending near the unreadable page
        size_t size = p.size() + 1;
        if (size + before_end > 2 * kPage) continue;
        bool glance = GlanceAt(p, 2 * kPage - size - before_end);
        EXPECT_FALSE(glance && !exact) << "\"" << p << "\" called native near a page end, root " << root;
      }
    }
  }

  static constexpr size_t kPage = 4096;
  char* mem_ = nullptr;
};

TEST_F(NativeAtAGlanceTest, AgreesWithTheExactRuleAwayFromPageEnds) { Check("/cluster", true); }

TEST_F(NativeAtAGlanceTest, ShortRootsAreComparedWhole) {
  Check("/c", true);
  Check("/clu/x", true);
}

TEST_F(NativeAtAGlanceTest, LongRootsLeaveTheirFirstEightBytesToTheSlowPath) {
  Check("/clusterroot/sub", false);
  hot_path.SetRoot("/clusterroot/sub");
  EXPECT_FALSE(GlanceAt("/clusterXX/a", kPage / 2));  // the first 8 bytes match: not decided here
  EXPECT_TRUE(GlanceAt("/clustex/a", kPage / 2));
}

TEST_F(NativeAtAGlanceTest, NullAndTheFirstPageAreLeftToTheSlowPath) {
  EXPECT_FALSE(NativeAtAGlance(nullptr));
  EXPECT_FALSE(NativeAtAGlance(reinterpret_cast<const char*>(16)));
}

// pjdfstest passes paths at 0xdeadc0de: the shim must not read them (the
// kernel answers EFAULT), and must read every mapped one, new mappings too.
TEST(MayReadTest, MappedMemoryIsReadableAndUnmappedIsNot) {
  static const char in_rodata[] = "/etc/passwd";
  std::string on_heap = "/etc/passwd";
  char on_stack[] = "/etc/passwd";
  EXPECT_TRUE(MayRead(in_rodata));
  EXPECT_TRUE(MayRead(on_heap.c_str()));
  EXPECT_TRUE(MayRead(on_stack));
  EXPECT_FALSE(MayRead(nullptr));
  // The first page, on a thread that has found no page readable yet.
  bool small_readable = true;
  std::thread([&] { small_readable = MayReadPage(reinterpret_cast<const char*>(16)); }).join();
  EXPECT_FALSE(small_readable);
  EXPECT_FALSE(MayRead(reinterpret_cast<const char*>(0xdeadc0deUL)));
  EXPECT_FALSE(NativeAtAGlance(reinterpret_cast<const char*>(0xdeadc0deUL)));
  // A mapping made after the ranges were read: found by reading them again.
  void* fresh = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(fresh, MAP_FAILED);
  memcpy(fresh, "/etc/passwd", 12);
  EXPECT_TRUE(MayReadPage(static_cast<const char*>(fresh)));
  EXPECT_TRUE(NativeAtAGlance(static_cast<const char*>(fresh)));
  // A page mapped without read permission is not readable either.
  void* closed = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(closed, MAP_FAILED);
  EXPECT_FALSE(MayRead(closed));
  munmap(fresh, 4096);
  munmap(closed, 4096);
}

// A mapped file whose path makes its /proc/self/maps line longer than the
// shim's read buffer: that mapping and the ones listed after it are still
// readable (the rest of the long line was once parsed as lines of its own).
TEST(MayReadTest, AMappingWithAPathLongerThanAPageAndThoseAfterItAreReadable) {
  char base[] = "/tmp/onebox-mayread-XXXXXX";
  ASSERT_NE(mkdtemp(base), nullptr);
  // Made one directory at a time from the last one's fd: the whole path is
  // longer than a path a call may name (PATH_MAX).
  const std::string part(200, 'd');
  std::vector<int> dirs{open(base, O_PATH | O_DIRECTORY | O_CLOEXEC)};
  for (size_t length = sizeof base; length < 4300; length += part.size() + 1) {
    ASSERT_EQ(mkdirat(dirs.back(), part.c_str(), 0700), 0) << strerror(errno);
    dirs.push_back(openat(dirs.back(), part.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_GE(dirs.back(), 0);
  }
  int fd = openat(dirs.back(), "file", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(ftruncate(fd, 4096), 0);
  void* long_named = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(long_named, MAP_FAILED);
  close(fd);
  // Below it (mmap goes down): listed after it.
  void* after = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(after, MAP_FAILED);
  EXPECT_TRUE(MayRead(long_named));
  EXPECT_TRUE(MayRead(after));
  EXPECT_FALSE(MayRead(reinterpret_cast<const char*>(0xdeadc0deUL)));
  munmap(long_named, 4096);
  munmap(after, 4096);
  unlinkat(dirs.back(), "file", 0);
  for (size_t i = dirs.size() - 1; i > 0; --i) {
    unlinkat(dirs[i - 1], part.c_str(), AT_REMOVEDIR);
    close(dirs[i]);
  }
  close(dirs[0]);
  rmdir(base);
}

}  // namespace
}  // namespace onebox::shim

// ChunkPrehasher: chunks of a growing file are hashed ahead; what a close
// takes matches the file's bytes only through the check; Keep stores a
// chunk only while the file still holds the bytes it was hashed from.
#include "nodeagent/view/chunk_prehasher.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "consistency/digest.h"
#include "tests/test_util.h"

namespace onebox {
namespace {

using onebox::testing::Observed;
using onebox::testing::TempDir;
using onebox::testing::WaitUntil;
using namespace std::chrono_literals;

class PrehasherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mkdir((dir_.path() + "/view").c_str(), 0755), 0);
    root_fd_ = open((dir_.path() + "/view").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(root_fd_, 0);
    Result<std::unique_ptr<Store>> s = Store::Open({.path = dir_.path() + "/store", .node_id = 1});
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    prehasher_ = std::make_unique<ChunkPrehasher>(root_fd_, *store_);
  }
  void TearDown() override {
    prehasher_.reset();
    store_.reset();
    if (root_fd_ >= 0) close(root_fd_);
  }
  std::string Path(const std::string& name) { return dir_.path() + "/view/" + name; }
  static std::string Bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::string b(n, '\0');
    for (char& c : b) c = static_cast<char>(rng());
    return b;
  }

  TempDir dir_;
  int root_fd_ = -1;
  std::unique_ptr<Store> store_;
  std::unique_ptr<ChunkPrehasher> prehasher_;
  std::vector<std::string> recorded_;  // what TakeIdle handed back

  // Takes what the prehasher hands back, as the recorder does when idle_fd() is readable.
  void TakeIdle() {
    pollfd p{prehasher_->idle_fd(), POLLIN, 0};
    if (poll(&p, 1, 0) == 1)
      for (std::string& path : prehasher_->TakeIdle()) recorded_.push_back(std::move(path));
  }
};

TEST_F(PrehasherTest, ChunksOfAGrowingFileAreHashedAheadAndCheckedAgainstTheBytesAtTheClose) {
  const std::string content = Bytes(6 * kChunkBytes, 1);
  int fd = open(Path("f").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  prehasher_->Written("f");
  // The thread hashes the whole chunks it finds.
  ASSERT_TRUE(WaitUntil([&] { return Observed(prehasher_->AheadOf("f") == 6, prehasher_->AheadOf("f")); }, 10s,
                        "6 chunks of f hashed ahead", 10ms));
  std::vector<ChunkPrehasher::Ahead> ahead = prehasher_->Take("f", st.st_ino);
  ASSERT_EQ(ahead.size(), 6u);
  for (size_t i = 0; i < ahead.size(); ++i) {
    std::string_view chunk(content.data() + i * kChunkBytes, kChunkBytes);
    EXPECT_EQ(ahead[i].digest, Sha256(chunk)) << i;
    EXPECT_TRUE(prehasher_->Matches(ahead[i], chunk.data(), chunk.size())) << i;
  }
  // One byte changed, and the check says so.
  std::string changed(content.data() + 2 * kChunkBytes, kChunkBytes);
  changed[12345] ^= 1;
  EXPECT_FALSE(prehasher_->Matches(ahead[2], changed.data(), changed.size()));
  // Another inode at the path: nothing hashed ahead is handed out for it.
  prehasher_->Written("f");
  ASSERT_TRUE(WaitUntil([&] { return Observed(prehasher_->AheadOf("f") == 6, prehasher_->AheadOf("f")); }, 10s,
                        "6 chunks of the new f hashed ahead", 10ms));
  EXPECT_TRUE(prehasher_->Take("f", st.st_ino + 1).empty());
  close(fd);
}

TEST_F(PrehasherTest, KeepStoresOnlyTheChunksTheFileStillHolds) {
  const std::string content = Bytes(4 * kChunkBytes, 2);
  int fd = open(Path("g").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  struct stat st;
  ASSERT_EQ(fstat(fd, &st), 0);
  std::vector<std::pair<size_t, ChunkPrehasher::Ahead>> chunks;
  for (size_t i = 0; i < 4; ++i)
    chunks.emplace_back(i, prehasher_->Hash(content.data() + i * kChunkBytes, kChunkBytes));
  // Chunk 1 is rewritten after the record and before the chunks are stored.
  ASSERT_EQ(pwrite(fd, "x", 1, static_cast<off_t>(kChunkBytes + 7)), 1);
  ASSERT_TRUE(store_->HoldChunkMark().ok());
  prehasher_->Keep("g", st.st_ino, chunks);
  ASSERT_TRUE(WaitUntil([&] { return store_->HasChunk(chunks[3].second.digest); }, 10s, "the store holds chunk 3",
                        10ms));
  ASSERT_TRUE(WaitUntil([&] { return !prehasher_->Pending(chunks[0].second.digest).has_value(); }, 10s,
                        "chunk 0 is no longer pending", 10ms));
  for (size_t i : {0u, 2u, 3u})
    EXPECT_EQ(*store_->GetChunk(chunks[i].second.digest), content.substr(i * kChunkBytes, kChunkBytes)) << i;
  EXPECT_FALSE(store_->HasChunk(chunks[1].second.digest));  // the file no longer holds those bytes
  EXPECT_FALSE(prehasher_->Pending(chunks[1].second.digest).has_value());
  close(fd);
}

TEST_F(PrehasherTest, AFileTakenWithinATickOfItsCreationIsNeverLookedAt) {
  // Most files: made, written and closed at once (the recorder takes them at
  // the close). Those this thread was slow to take may have had a look.
  int slow = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string name = "quick" + std::to_string(i);
    int fd = open(Path(name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "abc", 3), 3);
    struct stat st;
    ASSERT_EQ(fstat(fd, &st), 0);
    const auto made = std::chrono::steady_clock::now();
    prehasher_->Written(name);
    std::this_thread::sleep_for(3ms);  // the close's event, read a moment later
    EXPECT_TRUE(prehasher_->Take(name, st.st_ino).empty());
    if (std::chrono::steady_clock::now() - made > 15ms) ++slow;
    close(fd);
  }
  EXPECT_LE(prehasher_->looks(), static_cast<uint64_t>(slow));
}

TEST_F(PrehasherTest, AFileThatStopsGrowingIsLookedAtLessAndLessOftenUntilItGrowsAgain) {
  // A name no program writes (a hard link's): no close will take it.
  int fd = open(Path("still").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  prehasher_->Written("still");
  std::this_thread::sleep_for(1500ms);
  // Every 20 ms that would be 75 looks; backing off, about 7.
  EXPECT_GE(prehasher_->looks(), 3u);
  EXPECT_LE(prehasher_->looks(), 12u);
  // It grows big after all: its chunks are hashed ahead, within the longest wait.
  const std::string content = Bytes(5 * kChunkBytes, 3);
  ASSERT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ASSERT_TRUE(WaitUntil([&] { return Observed(prehasher_->AheadOf("still") == 5, prehasher_->AheadOf("still")); },
                        10s, "5 chunks of still hashed ahead", 10ms));
  close(fd);
}

TEST_F(PrehasherTest, AFileWithNoCloseToWaitForIsRecordedOnceItStopsChanging) {
  int fd = open(Path("h").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "abc", 3), 3);
  prehasher_->RecordWhenIdle("h");
  // It keeps changing: not yet.
  for (int i = 0; i < 8; ++i) {
    std::this_thread::sleep_for(30ms);
    ASSERT_EQ(write(fd, "d", 1), 1);
  }
  TakeIdle();
  EXPECT_TRUE(recorded_.empty());
  close(fd);
  ASSERT_TRUE(WaitUntil(
      [&] {
        TakeIdle();
        return Observed(recorded_ == std::vector<std::string>{"h"}, recorded_);
      },
      10s, "h is handed back, and only h", 10ms));
}

}  // namespace
}  // namespace onebox

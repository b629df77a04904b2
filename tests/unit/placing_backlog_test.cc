// The placing thread (view/view_materializer.h) falls behind once its
// backlog is queued, and runs below the programs then (daemon/catch_up.h);
// it keeps up again once it finds its queue empty, and entries that come
// one at a time never put it behind. Where lowering is not possible
// (CanRaiseNiceBack), no thread counts as behind at all.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "nodeagent/daemon/catch_up.h"
#include "nodeagent/view/view_ledger.h"
#include "nodeagent/view/view_materializer.h"
#include "tests/test_util.h"
#include "tests/unit/in_process_cluster.h"

namespace onebox::testing {
namespace {

using namespace std::chrono_literals;

class PlacingBacklogTest : public ::testing::Test {
 protected:
  void Start(uint64_t backlog) {
    std::filesystem::create_directories(dir_ / "view");
    page_.magic = StatePage::kMagic;
    ledger_ = std::make_unique<ViewLedger>(*cluster_.node(0).store, page_);
    materializer_ = std::make_unique<ViewMaterializer>(*cluster_.node(0).store, *cluster_.node(0).content, *ledger_);
    materializer_->set_backlog(backlog);
    ASSERT_TRUE(materializer_->Start(dir_ / "view").ok());
  }
  void TearDown() override {
    if (materializer_) materializer_->Stop();
  }
  // n keys the store has no record of (each placed as a removal, a quick
  // look), queued at once.
  void Burst(int n, const std::string& prefix) {
    for (int i = 0; i < n; ++i) materializer_->Enqueue(fmt::format("{}/{}", prefix, i));
  }
  // Whether the placing thread is seen behind while what is queued is placed.
  bool SeenBehindUntilDrained() {
    bool seen = false;
    while (!materializer_->Settled()) seen |= CatchUpThreadsBehind() > 0;
    return seen;
  }

  InProcessCluster cluster_{1};
  TempDir dir_;
  StatePage page_{};
  std::unique_ptr<ViewLedger> ledger_;
  std::unique_ptr<ViewMaterializer> materializer_;
};

TEST_F(PlacingBacklogTest, ABurstPutsThePlacingThreadBehindUntilItsQueueIsEmptyAndATrickleNever) {
  Start(100);
  if (HasFatalFailure()) return;
  const bool lowered = CanRaiseNiceBack();
  EXPECT_TRUE(WaitUntil([] { return CatchUpThreadsBehind() == 0; }, 5s, "keeping up at start, nothing queued"));
  // One at a time: never 100 queued.
  for (int i = 0; i < 300; ++i) {
    materializer_->Enqueue(fmt::format("trickle/{}", i));
    EXPECT_FALSE(SeenBehindUntilDrained()) << i;
  }
  // 20,000 at once: behind (where lowering is possible), then keeping up again.
  Burst(20000, "burst");
  EXPECT_EQ(SeenBehindUntilDrained(), lowered);
  EXPECT_TRUE(WaitUntil([] { return CatchUpThreadsBehind() == 0; }, 5s, "keeping up once the queue is empty"));
}

TEST_F(PlacingBacklogTest, ABacklogNoBurstReachesNeverPutsItBehind) {
  Start(uint64_t{1} << 40);
  if (HasFatalFailure()) return;
  EXPECT_TRUE(WaitUntil([] { return CatchUpThreadsBehind() == 0; }, 5s, "keeping up at start"));
  Burst(20000, "burst");
  EXPECT_FALSE(SeenBehindUntilDrained());
}

}  // namespace
}  // namespace onebox::testing

// The CPU quota an agent reads from its cgroups (nodeagent/peer/cpu_quota.h),
// on hierarchies laid out in a temp dir as the kernel lays out v1 and v2.
#include "nodeagent/peer/cpu_quota.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/test_util.h"

namespace onebox {
namespace {

void Write(const std::filesystem::path& file, const std::string& text) {
  std::filesystem::create_directories(file.parent_path());
  std::ofstream(file) << text << "\n";
}

TEST(CpuQuotaTest, AV2QuotaIsTheSmallestOfTheCgroupAndItsAncestors) {
  testing::TempDir dir;
  const std::filesystem::path root = dir / "cg";
  Write(root / "cgroup.controllers", "cpu memory");
  Write(root / "cpu.max", "max 100000");  // (the root has none; this must not count)
  Write(root / "pods/cpu.max", "150000 100000");
  Write(root / "pods/a/cpu.max", "max 100000");
  Write(root / "pods/a/b/cpu.max", "60000 100000");
  EXPECT_DOUBLE_EQ(CgroupCpuQuota(root, "/pods/a/b", true).value_or(-1), 0.6);
  EXPECT_DOUBLE_EQ(CgroupCpuQuota(root, "/pods/a", true).value_or(-1), 1.5);  // the parent's
  EXPECT_FALSE(CgroupCpuQuota(root, "/", true).has_value());
  EXPECT_FALSE(CgroupCpuQuota(root, "/elsewhere", true).has_value());

  Write(root / "pods/a..b/cpu.max", "30000 100000");  // ".." inside a name is a name
  EXPECT_DOUBLE_EQ(CgroupCpuQuota(root, "/pods/a..b", true).value_or(-1), 0.3);
  Write(dir / "self-cgroup", "0::/pods/a/b");
  EXPECT_DOUBLE_EQ(OwnCpuQuota(root, dir / "self-cgroup").value_or(-1), 0.6);
}

TEST(CpuQuotaTest, AV1QuotaIsReadFromTheCpuHierarchyWhateverItsNameAndV2BesideItCounts) {
  testing::TempDir dir;
  const std::filesystem::path root = dir / "cg";
  Write(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1");
  Write(root / "cpu,cpuacct/cpu.cfs_period_us", "100000");
  Write(root / "cpu,cpuacct/bench/n1/cpu.cfs_quota_us", "45000");
  Write(root / "cpu,cpuacct/bench/n1/cpu.cfs_period_us", "50000");
  Write(root / "memory/bench/n1/memory.limit_in_bytes", "1000");
  Write(dir / "self-cgroup", "4:memory:/bench/n1\n2:cpu,cpuacct:/bench/n1\n0::/\n");
  EXPECT_DOUBLE_EQ(OwnCpuQuota(root, dir / "self-cgroup").value_or(-1), 0.9);

  // A v2 hierarchy mounted beside v1 ones (unified/) with a smaller quota.
  Write(root / "unified/cgroup.controllers", "");
  Write(root / "unified/job/cpu.max", "20000 100000");
  Write(dir / "self-cgroup", "2:cpu,cpuacct:/bench/n1\n0::/job\n");
  EXPECT_DOUBLE_EQ(OwnCpuQuota(root, dir / "self-cgroup").value_or(-1), 0.2);

  // No quota anywhere, or files that say nothing sensible: none.
  Write(dir / "self-cgroup", "2:cpu,cpuacct:/\n0::/\n");
  EXPECT_FALSE(OwnCpuQuota(root, dir / "self-cgroup").has_value());
  Write(root / "cpu,cpuacct/bad/cpu.cfs_quota_us", "lots");
  Write(root / "cpu,cpuacct/bad/cpu.cfs_period_us", "0");
  EXPECT_FALSE(CgroupCpuQuota(root / "cpu,cpuacct", "/bad", false).has_value());
  EXPECT_FALSE(OwnCpuQuota(root, dir / "no-such-file").has_value());
}

}  // namespace
}  // namespace onebox

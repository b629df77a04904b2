// Lexical path classification: what is a cluster path, and which one.
#include "naming/cluster_path.h"
#include "naming/ns_key.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace onebox {
namespace {

std::string Norm(std::string_view p) {
  char buf[kMaxPathBytes];
  size_t n = NormalizePath(p, buf, sizeof buf);
  return n ? std::string(buf, n) : "<invalid>";
}

std::optional<std::string> Rel(const ClusterRoot& root, std::string_view p) {
  char buf[kMaxPathBytes];
  if (!root.Relative(p, buf, sizeof buf)) return std::nullopt;
  return std::string(buf);
}

TEST(ClusterPath, NormalizesLexically) {
  EXPECT_EQ(Norm("/"), "/");
  EXPECT_EQ(Norm("//"), "/");
  EXPECT_EQ(Norm("/a//b/./c/"), "/a/b/c");
  EXPECT_EQ(Norm("/a/b/../c"), "/a/c");
  EXPECT_EQ(Norm("/../.."), "/");
  EXPECT_EQ(Norm("/a/.."), "/");
  EXPECT_EQ(Norm("/a/..b/.c"), "/a/..b/.c");
  EXPECT_EQ(Norm("relative"), "<invalid>");
  EXPECT_EQ(Norm(""), "<invalid>");
  char tiny[4];
  EXPECT_EQ(NormalizePath("/abcd", tiny, sizeof tiny), 0u);
  EXPECT_EQ(NormalizePath("/ab", tiny, sizeof tiny), 3u);
}

TEST(ClusterPath, JoinsRelativeToADirectory) {
  char buf[kMaxPathBytes];
  ASSERT_GT(JoinPath("/cluster/src", "../lib/./x.c", buf, sizeof buf), 0u);
  EXPECT_STREQ(buf, "/cluster/lib/x.c");
  ASSERT_GT(JoinPath("/", "a", buf, sizeof buf), 0u);
  EXPECT_STREQ(buf, "/a");
  ASSERT_GT(JoinPath("/cluster", "", buf, sizeof buf), 0u);
  EXPECT_STREQ(buf, "/cluster");
}

// What fits is the result: a path may pass through a longer one on its way
// (a deep cwd, then ".." out of it), as the kernel allows. Found by the
// cluster_path fuzz harness's invariants (tests/fuzz/).
TEST(ClusterPath, AResultThatFitsIsGivenWhateverThePathPassesThrough) {
  char tiny[16];
  EXPECT_EQ(NormalizePath("/aaaaaaaaaaaaaaaaaaaa/..", tiny, sizeof tiny), 1u);
  EXPECT_EQ(NormalizePath("/b/aaaaaaaaaaaaaaaaaaaa/x/../../c", tiny, sizeof tiny), 4u);
  EXPECT_STREQ(tiny, "/b/c");
  EXPECT_EQ(NormalizePath("/b/aaaaaaaaaaaaaaaaaaaa/x/../c", tiny, sizeof tiny), 0u) << "still too long";
  char buf[kMaxPathBytes];
  const std::string dir = "/" + std::string(3000, 'd');
  std::string rel;
  for (int i = 0; i < 10; ++i) rel += std::string(200, 'r') + "/";
  for (int i = 0; i < 10; ++i) rel += "../";
  rel += "x";
  ASSERT_EQ(JoinPath(dir, rel, buf, sizeof buf), dir.size() + 2);
  EXPECT_EQ(std::string(buf), dir + "/x");
}

TEST(ClusterPath, ClassifiesUnderTheDefaultRoot) {
  ClusterRoot root;
  EXPECT_EQ(root.root(), "/cluster");
  EXPECT_EQ(Rel(root, "/cluster"), "");
  EXPECT_EQ(Rel(root, "/cluster/"), "");
  EXPECT_EQ(Rel(root, "/cluster/a/b"), "a/b");
  EXPECT_EQ(Rel(root, "//cluster//a/./b/"), "a/b");
  EXPECT_EQ(Rel(root, "/tmp/../cluster/x"), "x");
  EXPECT_EQ(Rel(root, "/cluster/a/../../etc/passwd"), std::nullopt);  // leaves the cluster
  EXPECT_EQ(Rel(root, "/cluster/.."), std::nullopt);
  EXPECT_EQ(Rel(root, "/clusterfoo"), std::nullopt);
  EXPECT_EQ(Rel(root, "/cluste"), std::nullopt);
  EXPECT_EQ(Rel(root, "/etc/passwd"), std::nullopt);
  EXPECT_FALSE(root.MaybeCluster("/etc/passwd"));
  EXPECT_TRUE(root.MaybeCluster("/cluster/x"));
}

TEST(ClusterPath, ConfigurableRoot) {
  ClusterRoot root;
  EXPECT_FALSE(root.Set("/"));
  EXPECT_FALSE(root.Set("relative"));
  EXPECT_FALSE(root.Set(""));
  ASSERT_TRUE(root.Set("/mnt//onebox/"));
  EXPECT_EQ(root.root(), "/mnt/onebox");
  EXPECT_EQ(Rel(root, "/mnt/onebox/f"), "f");
  EXPECT_EQ(Rel(root, "/cluster/f"), std::nullopt);
  EXPECT_EQ(Rel(root, "/mnt/oneboxes"), std::nullopt);
}

TEST(NsKeyTest, KeysBelowADirectoryAreThoseUnderItNotItselfNorANamesake) {
  EXPECT_TRUE(IsKeyBelow("cluster/d/x", "cluster/d"));
  EXPECT_TRUE(IsKeyBelow("cluster/d/x/y", "cluster/d"));
  EXPECT_FALSE(IsKeyBelow("cluster/d", "cluster/d"));
  EXPECT_FALSE(IsKeyBelow("cluster/d-x", "cluster/d"));
  EXPECT_FALSE(IsKeyBelow("cluster/dx/y", "cluster/d"));
  EXPECT_TRUE(IsKeyBelow("cluster", "")) << "everything is below the view root";
  EXPECT_FALSE(IsKeyBelow("", ""));
  EXPECT_EQ(KeyPrefixBelow("cluster/d"), "cluster/d/");
  EXPECT_EQ(KeyPrefixBelow(""), "");
}

}  // namespace
}  // namespace onebox

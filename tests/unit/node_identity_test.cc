// Node identity: created once, kept across restarts, refused for another name.
#include "naming/node_identity.h"

#include <gtest/gtest.h>

#include <fstream>

#include "tests/test_util.h"

namespace onebox {
namespace {

using onebox::testing::TempDir;

TEST(NodeIdentity, CreatedOnceThenKept) {
  TempDir dir;
  Result<NodeIdentity> first = LoadOrCreateIdentity(dir.path(), "node-a");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_NE(first->node_id, 0u);
  Result<NodeIdentity> again = LoadOrCreateIdentity(dir.path(), "node-a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->node_id, first->node_id);
  TempDir other;
  EXPECT_NE(LoadOrCreateIdentity(other.path(), "node-a")->node_id, first->node_id);
}

TEST(NodeIdentity, RefusesAnotherNameOnTheSameDataDir) {
  TempDir dir;
  ASSERT_TRUE(LoadOrCreateIdentity(dir.path(), "a").ok());
  Result<NodeIdentity> b = LoadOrCreateIdentity(dir.path(), "b");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), Code::kFailedPrecondition);
  EXPECT_NE(b.status().message().find("belongs to node 'a'"), std::string::npos);
}

TEST(NodeIdentity, RefusesDamagedFileAndBadNames) {
  TempDir dir;
  std::ofstream(dir / "node.json") << "{not json";
  EXPECT_EQ(LoadOrCreateIdentity(dir.path(), "a").status().code(), Code::kCorruption);
  EXPECT_FALSE(ValidateNodeName("").ok());
  EXPECT_FALSE(ValidateNodeName("-x").ok());
  EXPECT_FALSE(ValidateNodeName("a b").ok());
  EXPECT_FALSE(ValidateNodeName(std::string(64, 'a')).ok());
  EXPECT_TRUE(ValidateNodeName("node-1.rack_2").ok());
}

TEST(NodeIdentity, HexRoundTrip) {
  EXPECT_EQ(NodeIdHex(0xabcULL), "0000000000000abc");
  EXPECT_EQ(*ParseNodeId("0000000000000abc"), 0xabcULL);
  EXPECT_FALSE(ParseNodeId("xyz").ok());
  EXPECT_FALSE(ParseNodeId("0000000000000000").ok());
  EXPECT_FALSE(ParseNodeId("0000000000000ABC").ok());
}

}  // namespace
}  // namespace onebox

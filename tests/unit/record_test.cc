// Record codec: round trips, and refusal of damaged bytes.
#include "consistency/record.h"

#include <gtest/gtest.h>

namespace onebox {
namespace {

TEST(Record, RoundTripsValuesAndTombstones) {
  Record put{{hlc::Pack(1'700'000'000'000, 2), 0xdeadbeefcafef00dULL}, false, std::string("v\0al", 4)};
  Result<Record> back = DecodeRecord(EncodeRecord(put));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, put);

  Record tomb{{42, 7}, true, ""};
  back = DecodeRecord(EncodeRecord(tomb));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, tomb);
  EXPECT_EQ(DecodeVersion(EncodeRecord(tomb))->node, 7u);
}

TEST(Record, VersionsOrderByHlcThenNode) {
  EXPECT_LT((Version{1, 9}), (Version{2, 1}));
  EXPECT_LT((Version{2, 1}), (Version{2, 3}));
  EXPECT_EQ((Version{2, 3}), (Version{2, 3}));
}

TEST(Record, RefusesDamagedBytes) {
  std::string good = EncodeRecord(Record{{1, 2}, false, "x"});
  EXPECT_EQ(DecodeRecord(good.substr(0, 10)).status().code(), Code::kCorruption);
  std::string bad_format = good;
  bad_format[0] = 9;
  EXPECT_EQ(DecodeRecord(bad_format).status().code(), Code::kCorruption);
  std::string bad_flags = good;
  bad_flags[1] = 0x40;
  EXPECT_EQ(DecodeRecord(bad_flags).status().code(), Code::kCorruption);
  std::string tomb_with_value = EncodeRecord(Record{{1, 2}, true, ""}) + "junk";
  EXPECT_EQ(DecodeRecord(tomb_with_value).status().code(), Code::kCorruption);
}

}  // namespace
}  // namespace onebox

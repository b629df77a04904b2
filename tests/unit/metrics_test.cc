// The text the agent's --metrics serves (nodeagent/metrics/metrics.h):
// label values escaped, counts by labels, histograms cumulative with +Inf.
#include "nodeagent/metrics/metrics.h"

#include <gtest/gtest.h>

namespace onebox::metrics {
namespace {

TEST(MetricsTextTest, LabelValuesAreEscapedAsPrometheusReadsThem) {
  EXPECT_EQ(Labels({{"path", R"(a"b\c)"}, {"n", "x\ny"}}), R"({path="a\"b\\c",n="x\ny"})");
  EXPECT_EQ(Labels({}), "{}");
}

TEST(MetricsTextTest, ACounterFamilyPrintsOneHeadAndASampleForEachLabelSet) {
  CounterFamily f("onebox_things_total", "things done");
  f.Add(Labels({{"kind", "b"}}), 2);
  f.Add(Labels({{"kind", "a"}}));
  f.Add(Labels({{"kind", "b"}}));
  Exposition e;
  e.Add(f);
  EXPECT_EQ(e.text(),
            "# HELP onebox_things_total things done\n"
            "# TYPE onebox_things_total counter\n"
            "onebox_things_total{kind=\"a\"} 1\n"
            "onebox_things_total{kind=\"b\"} 3\n");
}

TEST(MetricsTextTest, AHistogramCountsEachObservationInEveryBucketFromItsOwnUp) {
  Histogram h("onebox_wait_seconds", "waits", {0.01, 0.1, 1});
  for (double s : {0.005, 0.01, 0.05, 2.0}) h.Observe(s);
  Exposition e;
  e.Add(h);
  EXPECT_EQ(e.text(),
            "# HELP onebox_wait_seconds waits\n"
            "# TYPE onebox_wait_seconds histogram\n"
            "onebox_wait_seconds_bucket{le=\"0.01\"} 2\n"
            "onebox_wait_seconds_bucket{le=\"0.1\"} 3\n"
            "onebox_wait_seconds_bucket{le=\"1\"} 3\n"
            "onebox_wait_seconds_bucket{le=\"+Inf\"} 4\n"
            "onebox_wait_seconds_sum 2.065\n"
            "onebox_wait_seconds_count 4\n");
}

TEST(MetricsTextTest, GaugesOfOneNameShareOneHead) {
  Exposition e;
  e.Gauge("onebox_lag", "lag", 1.5, Labels({{"peer", "a"}}));
  e.Gauge("onebox_lag", "lag", 0, Labels({{"peer", "b"}}));
  e.Counter("onebox_done_total", "done", 7);
  EXPECT_EQ(e.text(),
            "# HELP onebox_lag lag\n# TYPE onebox_lag gauge\n"
            "onebox_lag{peer=\"a\"} 1.5\nonebox_lag{peer=\"b\"} 0\n"
            "# HELP onebox_done_total done\n# TYPE onebox_done_total counter\nonebox_done_total 7\n");
}

}  // namespace
}  // namespace onebox::metrics

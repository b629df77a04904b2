#include "nodeagent/metrics/metrics.h"

#include <cmath>

#include <fmt/format.h>

namespace onebox::metrics {

std::string Labels(std::initializer_list<std::pair<std::string_view, std::string_view>> pairs) {
  std::string out = "{";
  for (const auto& [key, value] : pairs) {
    if (out.size() > 1) out += ',';
    out.append(key);
    out += "=\"";
    for (char c : value) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += c;
    }
    out += '"';
  }
  return out + "}";
}

void CounterFamily::Add(const std::string& labels, uint64_t n) {
  std::lock_guard lock(mu_);
  values_[labels] += n;
}

std::map<std::string, uint64_t> CounterFamily::Values() const {
  std::lock_guard lock(mu_);
  return values_;
}

Histogram::Histogram(std::string name, std::string help, std::vector<double> bounds)
    : name_(std::move(name)), help_(std::move(help)), bounds_(std::move(bounds)), buckets_(bounds_.size() + 1) {}

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < bounds_.size() && seconds > bounds_[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(std::llround(std::max(seconds, 0.0) * 1e6)), std::memory_order_relaxed);
}

std::vector<uint64_t> Histogram::Buckets() const {
  std::vector<uint64_t> out;
  for (const auto& b : buckets_) out.push_back(b.load(std::memory_order_relaxed));
  return out;
}

Counts& counts() {
  static Counts* c = new Counts();  // never destroyed: threads may count while the agent exits
  return *c;
}

void Exposition::Head(std::string_view name, std::string_view help, std::string_view type) {
  if (name == last_name_) return;
  last_name_ = name;
  std::string escaped;  // the format's escapes in HELP: backslash and newline
  for (char c : help) escaped += c == '\\' ? "\\\\" : c == '\n' ? "\\n" : std::string(1, c);
  text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escaped, name, type);
}

void Exposition::Sample(std::string_view name, const std::string& labels, double value) {
  text_ += fmt::format("{}{} {}\n", name, labels, value);
}

void Exposition::Gauge(std::string_view name, std::string_view help, double value, const std::string& labels) {
  Head(name, help, "gauge");
  Sample(name, labels, value);
}

void Exposition::Counter(std::string_view name, std::string_view help, double value, const std::string& labels) {
  Head(name, help, "counter");
  Sample(name, labels, value);
}

void Exposition::Add(const CounterFamily& family) {
  Head(family.name(), family.help(), "counter");
  for (const auto& [labels, value] : family.Values()) Sample(family.name(), labels, static_cast<double>(value));
}

void Exposition::Add(const Histogram& h) {
  Head(h.name(), h.help(), "histogram");
  std::vector<uint64_t> buckets = h.Buckets();
  uint64_t cumulative = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    cumulative += buckets[i];
    const std::string le = i < h.bounds().size() ? fmt::format("{}", h.bounds()[i]) : "+Inf";
    Sample(h.name() + "_bucket", Labels({{"le", le}}), static_cast<double>(cumulative));
  }
  Sample(h.name() + "_sum", "", h.sum());
  Sample(h.name() + "_count", "", static_cast<double>(cumulative));
}

}  // namespace onebox::metrics

// The agent's metrics, for Prometheus (text format 0.0.4): the counts the
// parts bump as they work (Counts, one per process, each declared once
// below), and an Exposition that prints them together with the gauges read
// at each scrape from the parts' own state (the figures `onebox status`
// shows). metrics_server.h serves it over HTTP with --metrics.
//
// Written here, not taken from a library: Debian 12 packages no Prometheus
// client for C++ (prometheus-cpp is not in it), and the text format is a
// few lines of printing.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace onebox::metrics {

// `{key="value",...}` with the value escaped as the format wants.
std::string Labels(std::initializer_list<std::pair<std::string_view, std::string_view>> pairs);

// Rising counts told apart by their labels (as Labels renders them).
class CounterFamily {
 public:
  CounterFamily(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}
  void Add(const std::string& labels, uint64_t n = 1);
  std::map<std::string, uint64_t> Values() const;
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }

 private:
  std::string name_, help_;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t> values_;
};

// How long something took, in buckets of seconds.
class Histogram {
 public:
  Histogram(std::string name, std::string help, std::vector<double> bounds);
  void Observe(double seconds);
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<double>& bounds() const { return bounds_; }
  // Per bucket (not cumulative; the last one is above every bound), the sum and the count.
  std::vector<uint64_t> Buckets() const;
  double sum() const { return static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6; }

 private:
  std::string name_, help_;
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> buckets_;
  std::atomic<uint64_t> sum_us_{0};
};

// Every count the agent keeps as it works.
struct Counts {
  CounterFamily grpc_requests{"onebox_grpc_requests_total", "gRPC calls answered, by method and status code"};
  CounterFamily shim_requests{"onebox_shim_requests_total", "requests from programs' shims, by kind and result (ok or the errno's name)"};
  CounterFamily content_bytes{"onebox_content_bytes_total",
                              "file content moved between nodes by this agent: pushed to peers, received from their pushes, "
                              "fetched from them, served to their fetches"};
  CounterFamily hydration_results{"onebox_hydrations_total",
                                  "files whose content this node brought from others when a program opened them, by result"};
  Histogram hydration_seconds{"onebox_hydration_seconds", "time to bring a file's content from other nodes",
                              {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30}};
  CounterFamily port_connections{"onebox_port_connections_total",
                                 "connections to other nodes' ports: relayed by this agent, or handed to programs "
                                 "as their own links (direct, and handed over to servers here)"};
};
Counts& counts();

// One scrape's text: the counts above and the gauges added to it.
class Exposition {
 public:
  // A value read now; samples of one name must follow one another.
  void Gauge(std::string_view name, std::string_view help, double value, const std::string& labels = "");
  // A count kept elsewhere (since the agent started).
  void Counter(std::string_view name, std::string_view help, double value, const std::string& labels = "");
  void Add(const CounterFamily& family);
  void Add(const Histogram& histogram);
  const std::string& text() const { return text_; }

 private:
  void Head(std::string_view name, std::string_view help, std::string_view type);
  void Sample(std::string_view name, const std::string& labels, double value);
  std::string text_;
  std::string last_name_;
};

}  // namespace onebox::metrics

// `--metrics HOST:PORT`: serves GET /metrics (Prometheus' text format) over
// HTTP, with libmicrohttpd's own thread; every other path is 404. What it
// prints comes from render, called once per scrape.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "consistency/status.h"

struct MHD_Daemon;

namespace onebox {

class MetricsServer {
 public:
  // Listens on address (HOST:PORT, as --listen; port 0 picks one).
  static Result<std::unique_ptr<MetricsServer>> Start(const std::string& address, std::function<std::string()> render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  // HOST:PORT it listens on (the port the kernel picked for 0).
  const std::string& address() const { return address_; }
  const std::function<std::string()>& render() const { return render_; }

 private:
  MetricsServer() = default;
  MHD_Daemon* daemon_ = nullptr;  // owns the listening socket
  std::string address_;
  std::function<std::string()> render_;
};

}  // namespace onebox

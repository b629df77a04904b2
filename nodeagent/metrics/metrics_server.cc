#include "nodeagent/metrics/metrics_server.h"

#include <microhttpd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include <fmt/format.h>

#include "nodeagent/daemon/listen_address.h"

namespace onebox {
namespace {

MHD_Result Answer(void* cls, MHD_Connection* connection, const char* url, const char* method, const char*,
                  const char*, size_t*, void**) {
  const auto* server = static_cast<const MetricsServer*>(cls);
  const bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  std::string body;
  unsigned int code = MHD_HTTP_OK;
  const char* type = "text/plain; version=0.0.4; charset=utf-8";
  if (!get) {
    code = MHD_HTTP_METHOD_NOT_ALLOWED;
    body = "only GET\n";
    type = "text/plain";
  } else if (strcmp(url, "/metrics") != 0) {
    code = MHD_HTTP_NOT_FOUND;
    body = "not found: the metrics are at /metrics\n";
    type = "text/plain";
  } else {
    try {
      body = server->render()();
    } catch (const std::exception& e) {  // never through libmicrohttpd's C frames
      code = MHD_HTTP_INTERNAL_SERVER_ERROR;
      body = std::string("cannot render the metrics: ") + e.what() + "\n";
      type = "text/plain";
    }
  }
  MHD_Response* response = MHD_create_response_from_buffer(body.size(), body.data(), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_Result queued = MHD_queue_response(connection, code, response);
  MHD_destroy_response(response);
  return queued;
}

}  // namespace

Result<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                            std::function<std::string()> render) {
  Result<ListenAddress> where = ParseListenAddress(address);
  if (!where.ok()) return Status::InvalidArgument(fmt::format("--metrics: {}", where.status().message()));
  // The socket is made here (libmicrohttpd takes it): a taken port gets its
  // real reason, and a port 0 its number.
  const int fd = ListenTcp(where->host, static_cast<uint32_t>(where->port), /*v6_only=*/false);
  if (fd < 0) return Status::Unavailable(fmt::format("--metrics {}: cannot listen: {}", address, strerror(-fd)));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const int bound_port = PortOf(ss);
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->address_ = where->WithPort(bound_port);
  server->render_ = std::move(render);
  // Its own thread, with epoll (MHD_USE_AUTO): select() would refuse every
  // descriptor above 1024, and the agent holds more (relayed connections,
  // RocksDB's files). A few scrapers at once, each at most 10 s idle.
  server->daemon_ = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, nullptr, nullptr, &Answer,
                                     server.get(), MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                                     MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_END);
  // (No close on failure: libmicrohttpd has closed the socket it was given.)
  if (server->daemon_ == nullptr)
    return Status::Unavailable(fmt::format("--metrics {}: the HTTP server did not start", address));
  return server;
}

MetricsServer::~MetricsServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);  // closes the listening socket it was given
}

}  // namespace onebox

#include "nodeagent/metrics/metrics_server.h"

#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
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
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(where->port);
  if (int e = getaddrinfo(where->host.c_str(), port.c_str(), &hints, &found); e != 0 || found == nullptr)
    return Status::InvalidArgument(fmt::format("--metrics {}: {}", address, gai_strerror(e)));
  // The socket is made here (libmicrohttpd takes it): a taken port gets its
  // real reason, and a port 0 its number.
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool bound = fd >= 0 && bind(fd, found->ai_addr, found->ai_addrlen) == 0 && listen(fd, 64) == 0;
  const int err = errno;
  freeaddrinfo(found);
  if (!bound) {
    if (fd >= 0) close(fd);
    return Status::Unavailable(fmt::format("--metrics {}: cannot listen: {}", address, strerror(err)));
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  const int bound_port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                        : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
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

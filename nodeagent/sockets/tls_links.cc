#include "nodeagent/sockets/tls_links.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <system_error>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <openssl/err.h>
#include <spdlog/spdlog.h>

#include "nodeagent/daemon/listen_address.h"
#include "nodeagent/sockets/splice_relay.h"
#include "nodeagent/tls/openssl_util.h"

namespace onebox {

namespace {

constexpr size_t kBufferBytes = 64 << 10;

void NonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// An SSL_CTX for one side: TLS 1.3 only (both ends are agents), this node's
// certificate and key, the cluster CA the only one trusted, and a
// certificate required of the other side.
Result<SSL_CTX*> MakeContext(const TlsMaterial& tls, bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return Status::IOError(OpenSslError("TLS context"));
  Result<std::vector<X509Ptr>> chain = ParseCerts(tls.cert_pem, "the node certificate");  // leaf, intermediates
  Result<EvpKeyPtr> key = ParseKey(tls.key_pem, "its key");
  Result<std::vector<X509Ptr>> cas = ParseCerts(tls.ca_pem, "the CA certificate");  // a bundle, as gRPC takes it
  bool ok = chain.ok() && key.ok() && cas.ok() && SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 &&
            SSL_CTX_use_certificate(ctx, chain->front().get()) == 1 && SSL_CTX_use_PrivateKey(ctx, key->get()) == 1;
  for (size_t i = 1; ok && i < chain->size(); ++i) ok = SSL_CTX_add1_chain_cert(ctx, (*chain)[i].get()) == 1;
  for (size_t i = 0; ok && i < cas->size(); ++i) ok = X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), (*cas)[i].get()) == 1;
  if (server) SSL_CTX_set_num_tickets(ctx, 0);  // links are not resumed
  if (!ok) {
    SSL_CTX_free(ctx);
    return Status::InvalidArgument(OpenSslError("TLS context for the port relay's links"));
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return ctx;
}


// The handshake, whole within deadline_ms (a peer that sends a byte now
// and then cannot hold this thread longer); tcp is non-blocking.
int Handshake(SSL* ssl, int tcp, bool server, int deadline_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  if (server) SSL_set_accept_state(ssl);
  else SSL_set_connect_state(ssl);
  for (;;) {
    const int done = SSL_do_handshake(ssl);
    if (done == 1) return 1;
    const int e = SSL_get_error(ssl, done);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return -1;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{tcp, static_cast<short>(e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), 0};
    if (left.count() <= 0) return 0;  // 0: too slow
    int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready != 1) return 0;
  }
}

}  // namespace

Result<std::unique_ptr<TlsLinks>> TlsLinks::Make(const TlsMaterial& tls, int handshake_ms) {
  std::unique_ptr<TlsLinks> links(new TlsLinks());
  links->handshake_ms_ = handshake_ms;
  Result<SSL_CTX*> client = MakeContext(tls, false);
  if (!client.ok()) return client.status();
  links->client_ = *client;
  Result<SSL_CTX*> server = MakeContext(tls, true);
  if (!server.ok()) return server.status();
  links->server_ = *server;
  links->stop_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (links->stop_ < 0) return Status::IOError(fmt::format("eventfd: {}", strerror(errno)));
  return links;
}

TlsLinks::~TlsLinks() {
  if (stop_ >= 0) {
    uint64_t one = 1;
    (void)!write(stop_, &one, sizeof one);
    std::unique_lock lock(mu_);
    none_left_.wait(lock, [&] { return pumps_ == 0; });
    close(stop_);
  }
  SSL_CTX_free(client_);
  SSL_CTX_free(server_);
}

int TlsLinks::Open(int tcp, bool server) {
  SSL* ssl = SSL_new(server ? server_ : client_);
  if (ssl == nullptr || SSL_set_fd(ssl, tcp) != 1) {
    SSL_free(ssl);
    CloseWithReset(tcp);
    return -ENOMEM;
  }
  NonBlocking(tcp);
  const int done = Handshake(ssl, tcp, server, handshake_ms_);
  X509* peer = done == 1 ? SSL_get0_peer_certificate(ssl) : nullptr;
  if (done != 1 || peer == nullptr || RoleOfCertificate(peer) != TlsRole::kNode) {
    spdlog::warn("port relay: a link {} refused: {}", server ? "from another agent" : "to another agent",
                 done < 0    ? OpenSslError("TLS handshake")
                 : done == 0 ? fmt::format("no TLS handshake within {} ms", handshake_ms_)
                             : "its certificate is not a node's of this cluster's CA");
    ERR_clear_error();
    SSL_free(ssl);
    CloseWithReset(tcp);
    return -EACCES;
  }
  int pump = -1;
  const int relay_end = LocalPair(&pump);
  if (relay_end < 0) {
    SSL_free(ssl);
    CloseWithReset(tcp);
    return relay_end;
  }
  NonBlocking(pump);
  {
    std::lock_guard lock(mu_);
    ++pumps_;
  }
  try {
    std::thread([this, ssl, tcp, pump] {
      Pump(ssl, tcp, pump);
      std::lock_guard lock(mu_);
      if (--pumps_ == 0) none_left_.notify_all();
    }).detach();
  } catch (const std::system_error& e) {  // no thread to be had: no link
    std::lock_guard lock(mu_);
    if (--pumps_ == 0) none_left_.notify_all();
    SSL_free(ssl);
    CloseWithReset(tcp);
    CloseWithReset(pump);
    CloseWithReset(relay_end);
    return -EAGAIN;
  }
  return relay_end;
}

int TlsLinks::LocalPair(int* pump) {
  // A listener of its own for each pair, on a port the kernel picks, gone
  // once the pair is made: another local program would have to find it in
  // that instant, and what it connects is taken for nothing.
  int listener = ListenTcp("127.0.0.1", 0);
  if (listener < 0) return listener;
  sockaddr_in at{}, self{};
  socklen_t len = sizeof at;
  int mine = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = mine < 0 || getsockname(listener, reinterpret_cast<sockaddr*>(&at), &len) != 0 ? errno : 0;
  if (err == 0 && connect(mine, reinterpret_cast<sockaddr*>(&at), sizeof at) != 0 && errno != EINPROGRESS) err = errno;
  len = sizeof self;
  if (err == 0 && getsockname(mine, reinterpret_cast<sockaddr*>(&self), &len) != 0) err = errno;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  int other = -1;
  while (err == 0 && other < 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd ready{listener, POLLIN, 0};
    if (left.count() <= 0 || poll(&ready, 1, static_cast<int>(left.count())) != 1) {
      err = ETIMEDOUT;
      break;
    }
    sockaddr_in peer{};
    socklen_t peer_len = sizeof peer;
    int conn = accept4(listener, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC);
    if (conn < 0) continue;
    if (peer.sin_port == self.sin_port && peer.sin_addr.s_addr == self.sin_addr.s_addr) other = conn;
    else CloseWithReset(conn);  // not ours
  }
  close(listener);
  if (err != 0) {
    if (mine >= 0) close(mine);
    return -err;
  }
  fcntl(mine, F_SETFL, fcntl(mine, F_GETFL) & ~O_NONBLOCK);  // the relay's end blocks, as a dialed link does
  NoDelay(mine);
  NoDelay(other);
  *pump = other;
  return mine;
}

// Moves bytes both ways until both directions ended, or either side failed
// (then both are closed at once), or the links stop.
void TlsLinks::Pump(SSL* ssl, int tcp, int plain) {
  std::string to_tls, to_plain;  // read, not yet written on
  bool plain_ended = false, close_sent = false;   // plain -> TLS
  bool tls_ended = false, plain_shut = false;     // TLS -> plain
  bool failed = false;
  bool hung_up[2] = {false, false};  // plain, tcp: poll said POLLHUP
  char buf[kBufferBytes];
  while (!failed && !(close_sent && plain_shut)) {
    bool tls_wants_read = false, tls_wants_write = false;
    for (bool moved = true; moved && !failed;) {
      moved = false;
      if (to_tls.empty() && !plain_ended) {
        ssize_t n = read(plain, buf, sizeof buf);
        if (n > 0) to_tls.assign(buf, static_cast<size_t>(n)), moved = true;
        else if (n == 0) plain_ended = moved = true;
        else if (errno != EAGAIN && errno != EINTR) failed = true;
      }
      if (!to_tls.empty()) {
        int n = SSL_write(ssl, to_tls.data(), static_cast<int>(to_tls.size()));
        if (n > 0) {
          to_tls.erase(0, static_cast<size_t>(n));
          moved = true;
        } else {
          int e = SSL_get_error(ssl, n);
          if (e == SSL_ERROR_WANT_READ) tls_wants_read = true;
          else if (e == SSL_ERROR_WANT_WRITE) tls_wants_write = true;
          else failed = true;
        }
      }
      if (plain_ended && to_tls.empty() && !close_sent) {
        int n = SSL_shutdown(ssl);  // close_notify: a half-close; this side reads on
        if (n >= 0) close_sent = moved = true;
        else if (SSL_get_error(ssl, n) == SSL_ERROR_WANT_WRITE) tls_wants_write = true;
        else failed = true;
      }
      if (to_plain.empty() && !tls_ended) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n > 0) {
          to_plain.assign(buf, static_cast<size_t>(n));
          moved = true;
        } else {
          int e = SSL_get_error(ssl, n);
          if (e == SSL_ERROR_ZERO_RETURN) tls_ended = moved = true;
          else if (e == SSL_ERROR_WANT_READ) tls_wants_read = true;
          else if (e == SSL_ERROR_WANT_WRITE) tls_wants_write = true;
          else failed = true;  // the other agent reset the link, or it broke
        }
      }
      if (!to_plain.empty()) {
        ssize_t n = write(plain, to_plain.data(), to_plain.size());
        if (n > 0) to_plain.erase(0, static_cast<size_t>(n)), moved = true;
        else if (errno != EAGAIN && errno != EINTR) failed = true;
      }
      if (tls_ended && to_plain.empty() && !plain_shut) {
        shutdown(plain, SHUT_WR);
        plain_shut = moved = true;
      }
    }
    if (failed || (close_sent && plain_shut)) break;
    pollfd fds[3] = {{plain, 0, 0}, {tcp, 0, 0}, {stop_, POLLIN, 0}};
    if (to_tls.empty() && !plain_ended) fds[0].events |= POLLIN;
    if (!to_plain.empty()) fds[0].events |= POLLOUT;
    if (tls_wants_read) fds[1].events |= POLLIN;
    if (tls_wants_write) fds[1].events |= POLLOUT;
    // A side nothing is asked of stays watched: an error (a reset) is
    // reported whatever was asked, and seen at once, even half-closed and
    // idle. One that hung up is watched again only for a read, which then
    // says what is left (data, an end of file): poll would report the
    // hang-up again and again.
    for (int i = 0; i < 2; ++i)
      if (hung_up[i] && !(fds[i].events & POLLIN)) fds[i].fd = -1;
    if (poll(fds, 3, -1) < 0 && errno != EINTR) failed = true;
    if (fds[2].revents != 0) failed = true;  // the agent stops
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents & POLLERR) failed = true;
      if (fds[i].revents & POLLHUP) {
        hung_up[i] = true;
        if (fds[i].events & POLLOUT) failed = true;  // nothing more can be written there
      }
    }
  }
  SSL_free(ssl);
  if (failed) {
    CloseWithReset(tcp);
    CloseWithReset(plain);
  } else {
    close(tcp);
    close(plain);
  }
}

}  // namespace onebox

// The port relay's links between agents over mutual TLS (tls/tls_identity.h),
// when the agent has TLS. A link's TCP connection does the TLS handshake
// (TLS 1.3; each side shows its node certificate of the cluster's CA, and
// the other checks it), and the relay is handed back a local TCP socket
// whose bytes are the link's, decrypted: one end of a loopback connection
// the agent makes to a listener of its own, the other end held by a pump
// thread that moves the bytes between it and the TLS connection, both
// ways. So the relay's own handshake and splice(2) relaying run on it
// unchanged, and no byte crosses the network in the clear.
//
// An end of file travels as TLS's close_notify (a half-close: the other
// direction goes on); a reset on either side as a reset of the TCP link
// (no close_notify), which the other pump passes on as a reset. Programs
// never hold a link themselves (the relay hands none to them:
// sockets/port_relay.h), since only agents hold the keys. Why a loopback
// connection and not a socketpair: a Unix socket cannot carry a reset.
// Its listener is the pair's own, gone once the pair is made.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>

#include <openssl/ssl.h>

#include "consistency/status.h"
#include "nodeagent/tls/tls_identity.h"

namespace onebox {

class TlsLinks {
 public:
  // handshake_ms: the whole handshake's deadline.
  static Result<std::unique_ptr<TlsLinks>> Make(const TlsMaterial& tls, int handshake_ms);
  ~TlsLinks();  // ends every link's pump (their sockets are closed)
  TlsLinks(const TlsLinks&) = delete;
  TlsLinks& operator=(const TlsLinks&) = delete;

  // tcp: a connected socket to another agent's relay (the dialer's side:
  // Connect; the listener's: Accept), taken over. Does the handshake within
  // the deadline and checks the other side's node certificate; returns the
  // local socket the relay uses as the link from then on (blocking), or
  // -errno (EACCES: no handshake, or a certificate that is not a node's of
  // this CA; tcp is closed).
  int Connect(int tcp) { return Open(tcp, /*server=*/false); }
  int Accept(int tcp) { return Open(tcp, /*server=*/true); }

 private:
  TlsLinks() = default;
  int Open(int tcp, bool server);
  // A loopback TCP connection: the relay's end (returned) and the pump's
  // (*pump); -errno when none.
  int LocalPair(int* pump);
  void Pump(SSL* ssl, int tcp, int plain);

  SSL_CTX* client_ = nullptr;
  SSL_CTX* server_ = nullptr;
  int handshake_ms_ = 2000;
  int stop_ = -1;  // eventfd: readable once the pumps must end
  std::mutex mu_;
  std::condition_variable none_left_;
  size_t pumps_ = 0;  // guarded by mu_
};

}  // namespace onebox

// Mutual TLS between agents, and between operators' clients and agents:
// the PEM files an agent or a client is given (--cacert, --cert, --key, as
// grpcurl names them), checked when loaded, and the gRPC credentials made
// from them. Every agent-to-agent gRPC connection then needs a certificate
// signed by the cluster's CA on both sides; the public port answers clients
// without one (health, reflection, read-only methods), and a client's
// certificate, when it shows one, must be the CA's too.
//
// Identity is by role, not by address: peers dial addresses that change (a
// pod's, a DHCP lease's), so a server is checked for the role name every
// node certificate carries (node.onebox), never for the host dialed; a
// caller's role is read from its certificate's names the same way
// (RoleOfCaller). Issue certificates with tls/cluster_ca.h.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <openssl/types.h>

#include "consistency/status.h"

namespace onebox {

enum class TlsRole { kNone, kNode, kAdmin };

std::string_view TlsRoleName(TlsRole role);  // "node", "admin", "none"
// The subject alternative name (DNS) that certificates of a role carry.
constexpr std::string_view kNodeRoleName = "node.onebox";
constexpr std::string_view kAdminRoleName = "admin.onebox";

struct TlsFiles {
  std::string ca;    // the cluster CA's certificate (PEM)
  std::string cert;  // this side's certificate (PEM), signed by that CA
  std::string key;   // its private key (PEM)
  bool any() const { return !ca.empty() || !cert.empty() || !key.empty(); }
};

// The loaded, checked PEM texts.
struct TlsMaterial {
  std::string ca_pem;
  std::string cert_pem;  // empty for a client without a certificate
  std::string key_pem;
  TlsRole role = TlsRole::kNone;  // the certificate's
};

// Reads and checks the files: the certificate is signed by the CA and in
// its validity period, the key is the certificate's, and the key file is
// readable by its owner alone. need_cert: an agent's (cert and key
// required, and of the node role); a client may give only the CA.
Result<TlsMaterial> LoadTls(const TlsFiles& files, bool need_cert);

// An agent's server side: TLS always; a client certificate asked for and,
// when shown, verified against the CA (a client without one is anonymous).
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsMaterial& tls);
// A client's side: the server must show a node certificate of the CA; this
// side shows its own when it has one. Set the channel's arguments with
// SetTlsChannelArgs too (the role name the server is checked for).
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsMaterial& tls);
void SetTlsChannelArgs(grpc::ChannelArguments* args);

// The role a certificate's names give it (its DNS alternative names).
TlsRole RoleOfCertificate(X509* cert);
// The role a gRPC caller's verified certificate names; kNone without one.
TlsRole RoleOfCaller(const grpc::AuthContext& auth);

}  // namespace onebox

// The cluster's certificate authority, made and used by the CLI
// (`onebox ca init DIR`, `onebox cert issue --ca DIR NAME`), with OpenSSL.
// A cluster CA signs two kinds of certificate, told apart by a name every
// certificate of the kind carries (tls/tls_identity.h, TlsRole):
//
//   node   an agent of the cluster: serves gRPC and the port relay, and
//          calls its peers (subject alternative name node.onebox);
//   admin  an operator's client (the CLI, grpcurl): may call the mutating
//          methods over gRPC (subject alternative name admin.onebox).
//
// Keys are ECDSA P-256, written unencrypted in files only their owner
// reads (0600); a file that exists is never overwritten.
#pragma once

#include <string>
#include <vector>

#include "consistency/status.h"
#include "nodeagent/tls/tls_identity.h"

namespace onebox {

// The files of a CA directory.
constexpr const char* kCaCertFile = "ca.pem";
constexpr const char* kCaKeyFile = "ca.key";

// Makes DIR (0700 when it does not exist) with a new CA in it: ca.pem (the
// certificate every agent and client trusts) and ca.key (which signs; keep
// it off the nodes). Refused when either file exists.
Status InitClusterCa(const std::string& dir, const std::string& cluster_name, int days);

struct CertRequest {
  std::string ca_dir;
  std::string name;  // the certificate's common name: a node's name, an operator's
  TlsRole role = TlsRole::kNode;
  // More subject alternative names: IP addresses and DNS names (for clients
  // such as grpcurl that check the server's name against the address they dial).
  std::vector<std::string> extra_names;
  std::string out_dir = ".";  // NAME.pem and NAME.key are written here
  int days = 825;
};

// Issues a certificate signed by the CA in ca_dir; returns the path of the
// certificate written (the key beside it, NAME.key).
Result<std::string> IssueCert(const CertRequest& request);

}  // namespace onebox

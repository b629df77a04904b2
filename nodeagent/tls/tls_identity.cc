#include "nodeagent/tls/tls_identity.h"

#include <grpc/grpc_security_constants.h>

#include <mutex>
#include <unordered_map>

#include <fmt/format.h>
#include <openssl/x509v3.h>

#include "nodeagent/tls/openssl_util.h"

namespace onebox {

TlsRole RoleOfCertificate(X509* cert) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  TlsRole role = TlsRole::kNone;
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type != GEN_DNS) continue;
    std::string_view dns(reinterpret_cast<const char*>(ASN1_STRING_get0_data(name->d.dNSName)),
                         static_cast<size_t>(ASN1_STRING_length(name->d.dNSName)));
    if (dns == kNodeRoleName) role = TlsRole::kNode;
    else if (dns == kAdminRoleName && role == TlsRole::kNone) role = TlsRole::kAdmin;
  }
  GENERAL_NAMES_free(names);
  return role;
}

namespace {

// Signed by one of the CAs (through the chain's intermediates), and valid now.
Status VerifiedBy(X509* cert, const std::vector<X509Ptr>& chain, const std::vector<X509Ptr>& cas,
                  const std::string& cert_path, const std::string& ca_path) {
  std::unique_ptr<X509_STORE, OpenSslDeleter<X509_STORE, X509_STORE_free>> store(X509_STORE_new());
  std::unique_ptr<X509_STORE_CTX, OpenSslDeleter<X509_STORE_CTX, X509_STORE_CTX_free>> ctx(X509_STORE_CTX_new());
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> untrusted(sk_X509_new_null(),
                                                                      [](STACK_OF(X509)* s) { sk_X509_free(s); });
  for (const X509Ptr& ca : cas) X509_STORE_add_cert(store.get(), ca.get());
  for (size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted.get(), chain[i].get());
  X509_STORE_CTX_init(ctx.get(), store.get(), cert, untrusted.get());
  if (X509_verify_cert(ctx.get()) == 1) return Status::Ok();
  return Status::InvalidArgument(fmt::format("{} is not a certificate of the CA {}: {}", cert_path, ca_path,
                                             X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
}

}  // namespace

std::string_view TlsRoleName(TlsRole role) {
  switch (role) {
    case TlsRole::kNode: return "node";
    case TlsRole::kAdmin: return "admin";
    case TlsRole::kNone: return "none";
  }
  return "?";
}

Result<TlsMaterial> LoadTls(const TlsFiles& files, bool need_cert) {
  if (files.ca.empty()) return Status::InvalidArgument("TLS needs the cluster CA's certificate (--cacert FILE)");
  if (files.cert.empty() != files.key.empty())
    return Status::InvalidArgument("--cert and --key go together: a certificate and its private key");
  if (need_cert && files.cert.empty())
    return Status::InvalidArgument(
        "an agent with TLS needs its node certificate and key (--cert FILE --key FILE; make them with `onebox cert "
        "issue --ca DIR NAME`)");
  TlsMaterial tls;
  Result<std::string> ca_pem = ReadTextFile(files.ca);
  if (!ca_pem.ok()) return ca_pem.status();
  Result<std::vector<X509Ptr>> cas = ParseCerts(*ca_pem, files.ca);
  if (!cas.ok()) return cas.status();
  tls.ca_pem = std::move(ca_pem).value();
  if (files.cert.empty()) return tls;

  Result<std::string> key_pem = ReadKeyText(files.key);  // checks the file's mode
  if (!key_pem.ok()) return key_pem.status();
  Result<EvpKeyPtr> key = ParseKey(*key_pem, files.key);
  if (!key.ok()) return key.status();
  Result<std::string> cert_pem = ReadTextFile(files.cert);
  if (!cert_pem.ok()) return cert_pem.status();
  Result<std::vector<X509Ptr>> chain = ParseCerts(*cert_pem, files.cert);  // the leaf, then intermediates
  if (!chain.ok()) return chain.status();
  X509* cert = chain->front().get();
  if (X509_check_private_key(cert, key->get()) != 1)
    return Status::InvalidArgument(OpenSslError(fmt::format("{} is not the key of {}", files.key, files.cert)));
  if (Status s = VerifiedBy(cert, *chain, *cas, files.cert, files.ca); !s.ok()) return s;
  tls.role = RoleOfCertificate(cert);
  if (need_cert && tls.role != TlsRole::kNode)
    return Status::InvalidArgument(fmt::format(
        "{} is not a node certificate (it is the {} role's): an agent needs one made by `onebox cert issue --ca DIR "
        "NAME` without --admin",
        files.cert, TlsRoleName(tls.role)));
  tls.cert_pem = std::move(cert_pem).value();
  tls.key_pem = std::move(key_pem).value();
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const TlsMaterial& tls) {
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls.ca_pem;
  options.pem_key_cert_pairs.push_back({tls.key_pem, tls.cert_pem});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const TlsMaterial& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_pem;
  options.pem_private_key = tls.key_pem;
  options.pem_cert_chain = tls.cert_pem;
  return grpc::SslCredentials(options);
}

void SetTlsChannelArgs(grpc::ChannelArguments* args) { args->SetSslTargetNameOverride(std::string(kNodeRoleName)); }

TlsRole RoleOfCaller(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) return TlsRole::kNone;
  std::vector<grpc::string_ref> pem = auth.FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (pem.empty()) return TlsRole::kNone;
  // Read as RoleOfCertificate reads it (its DNS names only), once per
  // certificate: a peer's calls come on a connection that keeps it.
  static std::mutex mu;
  static std::unordered_map<std::string, TlsRole> known;
  std::string text(pem[0].data(), pem[0].size());
  std::lock_guard lock(mu);
  auto it = known.find(text);
  if (it == known.end()) {
    Result<X509Ptr> cert = ParseCert(text, "a caller's certificate");
    if (known.size() >= 1024) known.clear();  // a bound: certificates are few, callers may be many
    it = known.emplace(std::move(text), cert.ok() ? RoleOfCertificate(cert->get()) : TlsRole::kNone).first;
  }
  return it->second;
}

}  // namespace onebox

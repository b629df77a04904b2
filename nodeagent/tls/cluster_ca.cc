#include "nodeagent/tls/cluster_ca.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "nodeagent/tls/openssl_util.h"

namespace onebox {

namespace {

Result<EvpKeyPtr> NewKey() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  if (key == nullptr) return Status::IOError(OpenSslError("making a P-256 key"));
  return EvpKeyPtr(key);
}

// A file of its owner's alone, made new: never over one that exists.
Status WriteNewFile(const std::string& path, const std::string& text, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return Status::InvalidArgument(errno == EEXIST ? fmt::format("{} exists already: not overwritten", path)
                                                   : fmt::format("{}: {}", path, strerror(errno)));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      close(fd);
      unlink(path.c_str());
      return Status::IOError(fmt::format("{}: {}", path, strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  int err = fsync(fd) != 0 ? errno : 0;
  if (close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    unlink(path.c_str());
    return Status::IOError(fmt::format("{}: {}", path, strerror(err)));
  }
  return Status::Ok();
}

Result<std::string> KeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return Status::IOError(OpenSslError("writing a key"));
  return BioText(bio.get());
}

Result<std::string> CertPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(bio.get(), cert) != 1) return Status::IOError(OpenSslError("writing a certificate"));
  return BioText(bio.get());
}

// Writes key and certificate as new files (the key first: a certificate
// without its key would be useless; a key alone is made again).
Status WriteKeyAndCert(EVP_PKEY* key, X509* cert, const std::string& key_path, const std::string& cert_path) {
  Result<std::string> key_pem = KeyPem(key);
  Result<std::string> cert_pem = CertPem(cert);
  if (!key_pem.ok()) return key_pem.status();
  if (!cert_pem.ok()) return cert_pem.status();
  if (Status s = WriteNewFile(key_path, *key_pem, 0600); !s.ok()) return s;
  return WriteNewFile(cert_path, *cert_pem, 0644);
}

// One v3 extension, in openssl.cnf's words ("critical,CA:TRUE").
Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return Status::InvalidArgument(OpenSslError(fmt::format("extension {}", value)));
  int ok = X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  return ok == 1 ? Status::Ok() : Status::IOError(OpenSslError("adding an extension"));
}

// A certificate for key, named by subject fields, valid from a minute ago
// (clocks of a cluster differ a little) for days, with a random serial.
Result<X509Ptr> NewCert(EVP_PKEY* key, const std::string& common_name, const std::string& unit, int days) {
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);  // v3
  BnPtr serial(BN_new());
  BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -60);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(days) * 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  auto add = [&](const char* field, const std::string& value) {
    return X509_NAME_add_entry_by_txt(subject, field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0) == 1;
  };
  if (!add("O", "onebox") || !add("OU", unit) || !add("CN", common_name))
    return Status::InvalidArgument(OpenSslError(fmt::format("the name '{}'", common_name)));
  return cert;
}

Status Sign(X509* cert, EVP_PKEY* key) {
  return X509_sign(cert, key, EVP_sha256()) > 0 ? Status::Ok() : Status::IOError(OpenSslError("signing"));
}

// "10.0.0.7" -> "IP:10.0.0.7", "db1.example" -> "DNS:db1.example"; an
// error for anything but an IP address or a host name (letters, digits, '-'
// and '.': no wildcard, no comma that would add a name of its own) and for
// a name under .onebox, the roles' (clients match names ignoring case and
// a final dot, and take wildcards: none may pass for a role's name).
Result<std::string> AltName(const std::string& name) {
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1) return "IP:" + name;
  bool host = !name.empty() && name.size() <= 253 && name.front() != '.' && name.front() != '-';
  for (char c : name) host = host && (isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.');
  if (!host)
    return Status::InvalidArgument(fmt::format("--san '{}': an IP address or a host name (letters, digits, '-', '.')", name));
  std::string lower;
  for (char c : name) lower += static_cast<char>(tolower(static_cast<unsigned char>(c)));
  while (!lower.empty() && lower.back() == '.') lower.pop_back();
  if (lower == "onebox" || (lower.size() > 7 && lower.compare(lower.size() - 7, 7, ".onebox") == 0))
    return Status::InvalidArgument(fmt::format(
        "--san '{}': names under .onebox are the roles' (node.onebox, admin.onebox); give the role with --admin or "
        "without it",
        name));
  return "DNS:" + name;
}

bool NameFitsAFile(const std::string& name) {
  if (name.empty() || name.size() > 64 || name == "." || name == ".." || name == "ca") return false;
  for (char c : name)
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

}  // namespace

Status InitClusterCa(const std::string& dir, const std::string& cluster_name, int days) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec) && mkdir(dir.c_str(), 0700) != 0)
    return Status::IOError(fmt::format("{}: {}", dir, strerror(errno)));
  const std::string cert_path = fmt::format("{}/{}", dir, kCaCertFile);
  const std::string key_path = fmt::format("{}/{}", dir, kCaKeyFile);
  for (const std::string& path : {cert_path, key_path})
    if (std::filesystem::exists(path, ec))
      return Status::InvalidArgument(fmt::format("{} exists already: a CA is made once (its certificates depend on it)", path));
  Result<EvpKeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  Result<X509Ptr> cert = NewCert(key->get(), fmt::format("onebox cluster CA {}", cluster_name), "ca", days);
  if (!cert.ok()) return cert.status();
  X509_set_issuer_name(cert->get(), X509_get_subject_name(cert->get()));
  for (auto [nid, value] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                            std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                            std::pair{NID_subject_key_identifier, "hash"}})
    if (Status s = AddExtension(cert->get(), cert->get(), nid, value); !s.ok()) return s;
  if (Status s = Sign(cert->get(), key->get()); !s.ok()) return s;
  return WriteKeyAndCert(key->get(), cert->get(), key_path, cert_path);
}

Result<std::string> IssueCert(const CertRequest& r) {
  if (!NameFitsAFile(r.name))
    return Status::InvalidArgument(fmt::format(
        "certificate name '{}': 1 to 64 letters, digits, '-', '_' or '.' (it names the files NAME.pem and NAME.key)",
        r.name));
  if (r.role == TlsRole::kNone) return Status::InvalidArgument("a certificate needs a role: node or admin");
  std::string alt_names = fmt::format("DNS:{}", r.role == TlsRole::kNode ? kNodeRoleName : kAdminRoleName);
  for (const std::string& name : r.extra_names) {
    Result<std::string> alt = AltName(name);
    if (!alt.ok()) return alt.status();
    alt_names += "," + *alt;
  }
  Result<X509Ptr> ca_cert = ReadCertFile(fmt::format("{}/{}", r.ca_dir, kCaCertFile));
  if (!ca_cert.ok()) return ca_cert.status();
  Result<EvpKeyPtr> ca_key = ReadKeyFile(fmt::format("{}/{}", r.ca_dir, kCaKeyFile));
  if (!ca_key.ok()) return ca_key.status();
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1)
    return Status::InvalidArgument(fmt::format("{}: {} is not the key of {}", r.ca_dir, kCaKeyFile, kCaCertFile));

  Result<EvpKeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  Result<X509Ptr> cert = NewCert(key->get(), r.name, std::string(TlsRoleName(r.role)), r.days);
  if (!cert.ok()) return cert.status();
  X509_set_issuer_name(cert->get(), X509_get_subject_name(ca_cert->get()));
  // An admin's is a client's only: it can never serve as a node does.
  const std::string usage = r.role == TlsRole::kNode ? "serverAuth,clientAuth" : "clientAuth";
  for (auto [nid, value] : {std::pair{NID_basic_constraints, std::string("critical,CA:FALSE")},
                            std::pair{NID_key_usage, std::string("critical,digitalSignature")},
                            std::pair{NID_ext_key_usage, usage},
                            std::pair{NID_subject_key_identifier, std::string("hash")},
                            std::pair{NID_authority_key_identifier, std::string("keyid")},
                            std::pair{NID_subject_alt_name, alt_names}})
    if (Status s = AddExtension(cert->get(), ca_cert->get(), nid, value); !s.ok()) return s;
  if (Status s = Sign(cert->get(), ca_key->get()); !s.ok()) return s;

  const std::string cert_path = fmt::format("{}/{}.pem", r.out_dir, r.name);
  const std::string key_path = fmt::format("{}/{}.key", r.out_dir, r.name);
  std::error_code ec;
  if (std::filesystem::exists(cert_path, ec))
    return Status::InvalidArgument(fmt::format("{} exists already: not overwritten", cert_path));
  if (Status s = WriteKeyAndCert(key->get(), cert->get(), key_path, cert_path); !s.ok()) return s;
  return cert_path;
}

}  // namespace onebox

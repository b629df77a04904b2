#include "nodeagent/tls/openssl_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>

namespace onebox {

std::string OpenSslError(const std::string& what) {
  std::string text = what;
  const char* sep = ": ";
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    text += sep;
    text += buf;
    sep = "; ";
  }
  return text;
}

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<size_t>(n)) : std::string();
}

Result<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument(fmt::format("{}: {}", path, strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Result<X509Ptr> ParseCert(const std::string& pem, const std::string& where) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
  if (cert == nullptr) return Status::InvalidArgument(OpenSslError(fmt::format("{}: not a PEM certificate", where)));
  return X509Ptr(cert);
}

Result<std::vector<X509Ptr>> ParseCerts(const std::string& pem, const std::string& where) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) certs.emplace_back(cert);
  // The end of the text reads as "no start line"; anything else is a block that is not a certificate.
  const unsigned long last = ERR_peek_last_error();
  const bool at_end = ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
  if (!at_end && last != 0)
    return Status::InvalidArgument(OpenSslError(fmt::format("{}: a block that is not a PEM certificate", where)));
  ERR_clear_error();
  if (certs.empty()) return Status::InvalidArgument(fmt::format("{}: not a PEM certificate", where));
  return certs;
}

Result<EvpKeyPtr> ParseKey(const std::string& pem, const std::string& where) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr);
  if (key == nullptr)
    return Status::InvalidArgument(OpenSslError(fmt::format("{}: not an unencrypted PEM private key", where)));
  return EvpKeyPtr(key);
}

Result<X509Ptr> ReadCertFile(const std::string& path) {
  Result<std::string> pem = ReadTextFile(path);
  if (!pem.ok()) return pem.status();
  return ParseCert(*pem, path);
}

Result<std::string> ReadKeyText(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::InvalidArgument(fmt::format("{}: {}", path, strerror(errno)));
  struct stat st{};  // of the file read (not of whatever the path names later)
  std::string text;
  int err = fstat(fd, &st) != 0 ? errno : 0;
  if (err == 0 && (st.st_mode & 077) != 0) {
    close(fd);
    return Status::InvalidArgument(
        fmt::format("{} is readable by others (mode {:o}): a private key must be its owner's alone (chmod 600)", path,
                    st.st_mode & 0777));
  }
  char buf[4096];
  for (ssize_t n; err == 0 && (n = read(fd, buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno != EINTR) err = errno;
      continue;
    }
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (err != 0) return Status::InvalidArgument(fmt::format("{}: {}", path, strerror(err)));
  return text;
}

Result<EvpKeyPtr> ReadKeyFile(const std::string& path) {
  Result<std::string> pem = ReadKeyText(path);
  if (!pem.ok()) return pem.status();
  return ParseKey(*pem, path);
}

}  // namespace onebox

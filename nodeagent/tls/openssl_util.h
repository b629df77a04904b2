// What tls/ shares about OpenSSL: owning pointers for its objects, its
// error queue as one line of text, and reading PEM files into objects.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "consistency/status.h"

namespace onebox {

template <class T, void (*Free)(T*)>
struct OpenSslDeleter {
  void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, OpenSslDeleter<X509, X509_free>>;
using EvpKeyPtr = std::unique_ptr<EVP_PKEY, OpenSslDeleter<EVP_PKEY, EVP_PKEY_free>>;
using BnPtr = std::unique_ptr<BIGNUM, OpenSslDeleter<BIGNUM, BN_free>>;
using BioPtr = std::unique_ptr<BIO, OpenSslDeleter<BIO, BIO_free_all>>;

// "what: " and OpenSSL's queued reasons (the queue is emptied).
std::string OpenSslError(const std::string& what);
// What a memory BIO holds.
std::string BioText(BIO* bio);
// A whole file; an error names the path.
Result<std::string> ReadTextFile(const std::string& path);

// The first certificate of a PEM text.
Result<X509Ptr> ParseCert(const std::string& pem, const std::string& where);
// Every certificate of a PEM text, in order (a bundle, or a leaf and its chain); at least one.
Result<std::vector<X509Ptr>> ParseCerts(const std::string& pem, const std::string& where);
// An unencrypted private key (an encrypted one is refused, never asked for on a terminal).
Result<EvpKeyPtr> ParseKey(const std::string& pem, const std::string& where);
Result<X509Ptr> ReadCertFile(const std::string& path);
// A private key's file, its text: the file must be its owner's alone (no group or other bits).
Result<std::string> ReadKeyText(const std::string& path);
Result<EvpKeyPtr> ReadKeyFile(const std::string& path);

}  // namespace onebox

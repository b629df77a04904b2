#include "nodeagent/api/access.h"

#include "consistency/digest.h"
#include "onebox/v1/cluster.pb.h"
#include "onebox/v1/namespace.pb.h"
#include "onebox/v1/peer.pb.h"
#include "onebox/v1/process.pb.h"
#include "onebox/v1/store.pb.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

namespace onebox {

namespace {

// Sources whose refused peer calls are remembered (and so logged once); past
// this many the memory is cleared, so a flood of sources costs at most this
// much and refusals are never silenced for good.
constexpr size_t kMaxRefusedSources = 1024;

// "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7": a host is logged once, whatever port it calls from.
std::string HostOf(const std::string& grpc_peer) {
  size_t colon = grpc_peer.rfind(':');
  size_t first = grpc_peer.find(':');
  return colon == std::string::npos || colon == first ? grpc_peer : grpc_peer.substr(0, colon);
}

}  // namespace

const std::vector<ApiMethod> kApiMethods = {
#define ONEBOX_API_METHOD_ROW(service, method, cls, why) \
  {api_method::service##_##method::kName, MethodClass::cls, why},
    ONEBOX_API_METHODS(ONEBOX_API_METHOD_ROW)
#undef ONEBOX_API_METHOD_ROW
};

std::vector<std::string> ApiServices() {
  std::vector<std::string> names;
  // A message of each file names the file (and links its descriptors in).
  for (const google::protobuf::FileDescriptor* file :
       {v1::StatusRequest::descriptor()->file(), v1::GetRequest::descriptor()->file(),
        v1::StatRequest::descriptor()->file(), v1::GossipRequest::descriptor()->file(),
        v1::ListProcessesRequest::descriptor()->file()})
    for (int i = 0; i < file->service_count(); ++i) names.push_back(file->service(i)->full_name());
  return names;
}

std::vector<std::string> UnclassifiedMethods() {
  std::vector<std::string> missing;
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const std::string& name : ApiServices()) {
    const google::protobuf::ServiceDescriptor* service = pool->FindServiceByName(name);
    for (int i = 0; service != nullptr && i < service->method_count(); ++i) {
      std::string method = fmt::format("/{}/{}", name, service->method(i)->name());
      bool listed = std::any_of(kApiMethods.begin(), kApiMethods.end(),
                                [&](const ApiMethod& m) { return m.name == method; });
      if (!listed) missing.push_back(method);
    }
  }
  return missing;
}

std::string_view MethodClassName(MethodClass c) {
  switch (c) {
    case MethodClass::kReadOnly: return "read-only";
    case MethodClass::kCallerActing: return "caller-acting";
    case MethodClass::kAdmin: return "admin";
    case MethodClass::kPeer: return "peer";
  }
  return "?";
}

bool Caller::IsAdmin() const { return (local && (uid == 0 || uid == geteuid())) || tls_role == TlsRole::kAdmin; }

bool Caller::InGroup(gid_t g) const { return g == gid || std::find(groups.begin(), groups.end(), g) != groups.end(); }

Caller AccessGate::OfGrpc(const grpc::ServerContextBase& ctx) const {
  Caller caller;
  if (tls_) {
    caller.tls_role = RoleOfCaller(*ctx.auth_context());
    caller.proven_peer = caller.tls_role == TlsRole::kNode;
    if (caller.tls_role == TlsRole::kAdmin) {  // acts as the agent's own user
      caller.uid = geteuid();
      caller.gid = getegid();
    }
  } else if (token_.empty()) {
    caller.proven_peer = insecure_;
  } else {
    const auto& metadata = ctx.client_metadata();
    auto it = metadata.find(kJoinTokenHeader);
    caller.proven_peer = it != metadata.end() && TokenMatches(std::string_view(it->second.data(), it->second.size()));
  }
  // Named for the log of a refusal only: a proven peer's calls (replication's) are never refused.
  if (!caller.proven_peer) caller.source = ctx.peer();
  return caller;
}

std::string JoinProof(std::string_view token, std::string_view challenge) { return HmacSha256(token, challenge); }

bool AccessGate::PeerProofAccepted(std::string_view challenge, std::string_view proof) const {
  if (token_.empty()) return insecure_;
  const std::string want = JoinProof(token_, challenge);
  return proof.size() == want.size() && CRYPTO_memcmp(proof.data(), want.data(), want.size()) == 0;
}

bool AccessGate::TokenMatches(std::string_view offered) const {
  // The length is no secret (it is the config's); the bytes are compared in constant time.
  return offered.size() == token_.size() && CRYPTO_memcmp(offered.data(), token_.data(), token_.size()) == 0;
}

Status AccessGate::Admit(MethodClass c, std::string_view method, const Caller& caller) const {
  switch (c) {
    case MethodClass::kReadOnly: return Status::Ok();
    case MethodClass::kCallerActing:
      if (caller.Identified()) return Status::Ok();
      return Status::PermissionDenied(fmt::format(
          "{} acts as its caller, and this gRPC caller is anonymous: call it over the agent's Unix socket "
          "(`onebox --socket PATH ...` does), or over TLS with an admin certificate of the cluster's CA; see "
          "docs/operations.md",
          method));
    case MethodClass::kAdmin:
      if (caller.IsAdmin()) return Status::Ok();
      return Status::PermissionDenied(fmt::format(
          "{} is for root or the agent's own user, over the agent's Unix socket, or an admin certificate", method));
    case MethodClass::kPeer: {
      if (caller.proven_peer) return Status::Ok();
      std::string_view why =
          tls_ ? (caller.tls_role == TlsRole::kNone ? "the caller showed no certificate of this cluster's CA"
                                                    : "the caller's certificate is not a node's (an admin's calls no peer methods)")
          : token_.empty() ? "this agent has no join token (--join-token-file), and peer calls "
                             "without one are refused unless --insecure"
                           : "the call did not carry this cluster's join token";
      LogRefusedPeer(caller, method, why);
      return Status::Unauthenticated(fmt::format("{} is for the cluster's agents: {}", method, why));
    }
  }
  return Status::PermissionDenied(fmt::format("{} has no access class", method));
}

void AccessGate::LogRefusedPeer(const Caller& caller, std::string_view method, std::string_view why) const {
  std::string host = HostOf(caller.source);
  {
    std::lock_guard lock(mu_);
    if (refused_sources_.size() >= kMaxRefusedSources) refused_sources_.clear();
    if (!refused_sources_.insert(host).second) return;
  }
  spdlog::warn("refused a peer call ({}) from {}: {} (logged once per source)", method, host, why);
}

Result<std::string> ReadJoinTokenFile(const std::string& path) {
  struct stat st{};
  if (stat(path.c_str(), &st) != 0)
    return Status::InvalidArgument(fmt::format("join token file {}: {}", path, strerror(errno)));
  if ((st.st_mode & 077) != 0 || st.st_uid != geteuid())
    return Status::InvalidArgument(fmt::format(
        "join token file {} must belong to the agent's user and be readable by it alone (chmod 600): a token is a "
        "secret",
        path));
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line))
    return Status::InvalidArgument(fmt::format("join token file {} cannot be read or is empty", path));
  const char* space = " \t\r\n";
  size_t begin = line.find_first_not_of(space);
  size_t end = line.find_last_not_of(space);
  std::string token = begin == std::string::npos ? "" : line.substr(begin, end - begin + 1);
  bool printable = std::all_of(token.begin(), token.end(), [](char c) { return c >= 0x21 && c <= 0x7e; });
  if (!printable)  // it travels as gRPC metadata, which carries printable ASCII only
    return Status::InvalidArgument(
        fmt::format("join token in {} must be printable ASCII without spaces (hex or base64, say)", path));
  if (token.size() < kMinJoinTokenBytes)
    return Status::InvalidArgument(fmt::format(
        "join token in {} is {} bytes; it needs at least {} (make one with `openssl rand -hex 32`)", path,
        token.size(), kMinJoinTokenBytes));
  return token;
}

}  // namespace onebox

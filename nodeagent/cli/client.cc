#include "nodeagent/cli/client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <iterator>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "consistency/hlc.h"
#include "onebox/v1/cluster.grpc.pb.h"
#include "onebox/v1/namespace.grpc.pb.h"
#include "onebox/v1/shim.pb.h"
#include "onebox/v1/store.grpc.pb.h"
#include "proto/shim_frame.h"

namespace onebox {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;

int Error(const std::string& msg) {
  std::cerr << "onebox: " << msg << "\n";
  return kExitError;
}

// One request/response over the shim socket, to learn the agent's gRPC address.
Result<std::string> AskSocketForAgent(const std::string& path, double timeout) {
  int fd = ConnectShimSocket(path, timeout);
  if (fd < 0) {
    if (errno == ENAMETOOLONG) return Status::InvalidArgument("socket path too long: " + path);
    return Status::Unavailable(
        fmt::format("cannot reach agent socket {}: {} (is `onebox agent` running?)", path, strerror(errno)));
  }
  v1::ShimRequest req;
  req.set_id(1);
  req.mutable_ping()->set_client("onebox-cli");
  std::string answer;
  bool ok = SendShimFrame(fd, req.SerializeAsString()) && RecvShimFrame(fd, &answer);
  close(fd);
  v1::ShimResponse resp;
  if (!ok || !resp.ParseFromString(answer) || !resp.has_ping())
    return Status::Unavailable(fmt::format("agent socket {} gave no valid answer", path));
  return resp.ping().grpc_address();
}

class Client {
 public:
  explicit Client(const ClientOptions& o) : o_(o) {}

  // Resolves the agent address; false (with the message printed) when it cannot.
  bool Connect() {
    std::string addr = o_.agent;
    if (!o_.socket.empty()) {
      Result<std::string> asked = AskSocketForAgent(o_.socket, o_.timeout_seconds);
      if (!asked.ok()) {
        Error(asked.status().message());
        return false;
      }
      addr = std::move(*asked);
    }
    addr_ = addr;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(16 << 20);
    channel_ = grpc::CreateCustomChannel(addr, grpc::InsecureChannelCredentials(), args);
    return true;
  }
  std::unique_ptr<grpc::ClientContext> Context() {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(o_.timeout_seconds * 1000)));
    return ctx;
  }
  int RpcError(const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
      return Error(fmt::format("cannot reach agent at {}: {} (is `onebox agent` running?)", addr_, s.error_message()));
    return Error(s.error_message());
  }
  // Prints msg as protobuf JSON (the shape grpcurl prints).
  void PrintJson(const google::protobuf::Message& msg) {
    std::string out;
    google::protobuf::util::JsonPrintOptions opts;
    opts.add_whitespace = true;
    opts.always_print_primitive_fields = true;
    opts.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(msg, &out, opts);
    std::cout << out;
  }
  v1::Cluster::Stub Cluster() { return v1::Cluster::Stub(channel_); }
  v1::Store::Stub Store() { return v1::Store::Stub(channel_); }
  v1::Namespace::Stub Namespace() { return v1::Namespace::Stub(channel_); }
  bool json() const { return o_.json; }

 private:
  const ClientOptions& o_;
  std::string addr_;
  std::shared_ptr<grpc::Channel> channel_;
};

const char* StateName(v1::NodeState s) {
  switch (s) {
    case v1::NODE_STATE_ALIVE: return "alive";
    case v1::NODE_STATE_SUSPECT: return "suspect";
    case v1::NODE_STATE_DEAD: return "dead";
    default: return "unknown";
  }
}

// Keys are protobuf strings: UTF-8 (RFC 3629: no overlongs, surrogates or values past U+10FFFF).
bool IsUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 0x2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n;
  }
  return true;
}

// Checks a key or prefix before it is sent; prints why and returns false if bad.
bool CheckKeyText(std::string_view what, const std::string& key) {
  if (IsUtf8(key)) return true;
  Error(fmt::format("{} must be valid UTF-8", what));
  return false;
}

Result<v1::WriteLevel> ParseWriteLevel(const std::string& s) {
  if (s == "one") return v1::WRITE_LEVEL_ONE;
  if (s == "quorum") return v1::WRITE_LEVEL_QUORUM;
  if (s == "all") return v1::WRITE_LEVEL_ALL;
  return Status::InvalidArgument("level must be one, quorum or all");
}

}  // namespace

int CmdStatus(const ClientOptions& o) {
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::StatusResponse r;
  grpc::Status s = c.Cluster().Status(c.Context().get(), v1::StatusRequest(), &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  const v1::Node& n = r.node();
  std::cout << fmt::format("node       {} ({})\n", n.name(), n.node_id())
            << fmt::format("state      {}\n", StateName(n.state()))
            << fmt::format("address    {}\n", n.address())
            << fmt::format("socket     {}\n", r.socket_path())
            << fmt::format("data dir   {}\n", r.data_dir())
            << fmt::format("version    {}\n", r.version())
            << fmt::format("uptime     {}s\n", r.uptime_seconds())
            << fmt::format("clock      {}\n", hlc::Format(r.hlc()))
            << fmt::format("keys       ~{}\n", r.store().estimated_keys())
            << fmt::format("digest     {} ({} records)\n", r.state_digest().substr(0, 16), r.records())
            << fmt::format("hashed     {} chunks while their files were written\n", r.chunks_hashed_ahead())
            << fmt::format("load       {:.2f} on {} cpus, {} MiB of {} MiB free\n", n.load().loadavg_1m(),
                           n.load().cpus(), n.load().mem_available_bytes() >> 20, n.load().mem_total_bytes() >> 20);
  return kExitOk;
}

int CmdNodes(const ClientOptions& o) {
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::ListNodesResponse r;
  grpc::Status s = c.Cluster().ListNodes(c.Context().get(), v1::ListNodesRequest(), &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  std::cout << fmt::format("{:<5} {:<20} {:<16} {:<8} {:<22} {}\n", "INDEX", "NAME", "NODE ID", "STATE", "ADDRESS",
                           "LOAD");
  for (const v1::Node& n : r.nodes()) {
    std::cout << fmt::format("{:<5} {:<20} {:<16} {:<8} {:<22} {:.2f}{}\n", n.index(), n.name(), n.node_id(),
                             StateName(n.state()), n.address(), n.load().loadavg_1m(),
                             n.self() ? "  (this node)" : "");
  }
  return kExitOk;
}

int CmdVersions(const ClientOptions& o, const std::string& path) {
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::VersionsRequest q;
  q.set_path(path);
  v1::VersionsResponse r;
  grpc::Status s = c.Namespace().Versions(c.Context().get(), q, &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) {
    c.PrintJson(r);
    return r.versions_size() > 0 ? kExitOk : kExitError;
  }
  if (r.versions_size() == 0) return Error(fmt::format("{}: no versions here", path));
  std::cout << fmt::format("{:<36} {:<23} {:>12}  {}\n", "VERSION", "WRITTEN", "SIZE", "");
  for (const v1::FileVersion& v : r.versions()) {
    std::string id = fmt::format("{}@{}", v.version().hlc(), v.version().node_id());
    std::string size = v.deleted() ? "-" : std::to_string(v.inode().size());
    std::cout << fmt::format("{:<36} {:<23} {:>12}  {}\n", id, hlc::Format(v.version().hlc()), size,
                             v.current() ? (v.deleted() ? "current (deleted)" : "current") : "");
  }
  return kExitOk;
}

int CmdRestore(const ClientOptions& o, const std::string& path, const std::string& version) {
  size_t at = version.find('@');
  v1::RestoreRequest q;
  q.set_path(path);
  try {
    if (at == std::string::npos) throw std::invalid_argument("no @");
    q.mutable_version()->set_hlc(std::stoull(version.substr(0, at)));
    q.mutable_version()->set_node_id(version.substr(at + 1));
  } catch (const std::exception&) {
    return Error(fmt::format("version '{}' is not HLC@NODE_ID (as `onebox versions` prints it)", version));
  }
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::RestoreResponse r;
  grpc::Status s = c.Namespace().Restore(c.Context().get(), q, &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  std::cout << fmt::format("{}: version {} is current again, as {}@{}\n", path, version, r.version().hlc(),
                           r.version().node_id());
  return kExitOk;
}

int CmdKvGet(const ClientOptions& o, const std::string& key, const std::string& level) {
  if (!CheckKeyText("key", key)) return kExitError;
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::GetRequest q;
  q.set_key(key);
  q.set_level(level == "quorum" ? v1::READ_LEVEL_QUORUM : v1::READ_LEVEL_LOCAL);
  v1::GetResponse r;
  grpc::Status s = c.Store().Get(c.Context().get(), q, &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) {
    c.PrintJson(r);
    return r.found() ? kExitOk : kExitError;
  }
  if (!r.found()) return Error(fmt::format("key '{}' not found", key));
  std::cout << r.value() << "\n";
  return kExitOk;
}

int CmdKvPut(const ClientOptions& o, const KvPutOptions& p) {
  Result<v1::WriteLevel> level = ParseWriteLevel(p.level);
  if (!level.ok()) return Error(level.status().message());
  if (!CheckKeyText("key", p.key)) return kExitError;
  v1::PutRequest q;
  q.set_key(p.key);
  if (p.from_stdin) {
    q.set_value(std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()));
  } else {
    q.set_value(p.value);
  }
  q.set_level(*level);
  q.set_sync(p.sync);
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::PutResponse r;
  grpc::Status s = c.Store().Put(c.Context().get(), q, &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) c.PrintJson(r);
  else std::cout << fmt::format("OK {} @ {}\n", p.key, hlc::Format(r.version().hlc()));
  return kExitOk;
}

int CmdKvDel(const ClientOptions& o, const std::string& key, bool sync, const std::string& level_name) {
  Result<v1::WriteLevel> level = ParseWriteLevel(level_name);
  if (!level.ok()) return Error(level.status().message());
  if (!CheckKeyText("key", key)) return kExitError;
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::DeleteRequest q;
  q.set_key(key);
  q.set_sync(sync);
  q.set_level(*level);
  v1::DeleteResponse r;
  grpc::Status s = c.Store().Delete(c.Context().get(), q, &r);
  if (!s.ok()) return c.RpcError(s);
  if (c.json()) c.PrintJson(r);
  else std::cout << (r.existed() ? "deleted " : "not present (tombstone written) ") << key << "\n";
  return kExitOk;
}

int CmdKvScan(const ClientOptions& o, const KvScanOptions& so) {
  if (!CheckKeyText("prefix", so.prefix)) return kExitError;
  Client c(o);
  if (!c.Connect()) return kExitError;
  v1::ScanResponse all;
  std::string start_after;
  // Page through the agent's answers until `limit` entries (0: all) are in.
  for (;;) {
    v1::ScanRequest q;
    q.set_prefix(so.prefix);
    q.set_start_after(start_after);
    q.set_keys_only(so.keys_only);
    uint32_t want = so.limit == 0 ? 1000 : std::min<uint32_t>(1000, so.limit - all.entries_size());
    q.set_limit(want);
    v1::ScanResponse r;
    grpc::Status s = c.Store().Scan(c.Context().get(), q, &r);
    if (!s.ok()) return c.RpcError(s);
    for (auto& e : *r.mutable_entries()) *all.add_entries() = std::move(e);
    bool full = so.limit != 0 && static_cast<uint32_t>(all.entries_size()) >= so.limit;
    if (!r.more() || full) {
      all.set_more(r.more());
      break;
    }
    start_after = all.entries(all.entries_size() - 1).key();
  }
  if (c.json()) {
    c.PrintJson(all);
    return kExitOk;
  }
  for (const v1::Entry& e : all.entries()) {
    if (so.keys_only) std::cout << e.key() << "\n";
    else std::cout << e.key() << "\t" << e.value() << "\n";
  }
  if (all.more()) std::cerr << fmt::format("onebox: more keys follow (raise --limit, or --limit 0 for all)\n");
  return kExitOk;
}

namespace {
// libonebox.so: $ONEBOX_SHIM, else next to this binary (build/bin -> build/lib,
// /usr/local/bin -> /usr/local/lib), else the system library directories.
std::string FindShim() {
  if (const char* s = std::getenv("ONEBOX_SHIM"); s != nullptr && *s != '\0') return s;
  std::vector<std::string> candidates;
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/../lib/libonebox.so");
  }
  candidates.push_back("/usr/local/lib/libonebox.so");
  candidates.push_back("/usr/lib/libonebox.so");
  for (const std::string& c : candidates) {
    char real[4096];
    if (realpath(c.c_str(), real) != nullptr && access(real, R_OK) == 0) return real;
  }
  return "";
}
}  // namespace

int CmdExec(const std::string& socket, const std::vector<std::string>& argv) {
  std::string shim = FindShim();
  if (shim.empty()) {
    std::cerr << "onebox: cannot find libonebox.so (set ONEBOX_SHIM to its path)\n";
    return 127;
  }
  const char* preload = std::getenv("LD_PRELOAD");
  std::string value = shim;
  if (preload != nullptr && *preload != '\0' && std::string_view(preload).find(shim) == std::string_view::npos)
    value = shim + " " + preload;
  setenv("LD_PRELOAD", value.c_str(), 1);
  if (!socket.empty()) setenv("ONEBOX_SOCKET", socket.c_str(), 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  std::cerr << fmt::format("onebox: cannot run {}: {}\n", argv[0], strerror(errno));
  return 127;
}

}  // namespace onebox

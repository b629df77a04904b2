#include <charconv>
#include <iostream>

#include <fmt/format.h>

#include "consistency/hlc.h"
#include "nodeagent/api/access.h"
#include "nodeagent/cli/commands.h"
#include "onebox/v1/namespace.grpc.pb.h"

namespace onebox {

namespace {
// HLC@NODE_ID, as `onebox versions` prints it.
Result<v1::Version> ParseVersion(const std::string& text) {
  size_t at = text.find('@');
  uint64_t hlc = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + (at == std::string::npos ? 0 : at), hlc);
  if (at == std::string::npos || at == 0 || ec != std::errc() || end != text.data() + at || at + 1 == text.size())
    return Status::InvalidArgument(fmt::format("version '{}' is not HLC@NODE_ID (as `onebox versions` prints it)", text));
  v1::Version v;
  v.set_hlc(hlc);
  v.set_node_id(text.substr(at + 1));
  return v;
}
}  // namespace

int CmdVersions(const ClientOptions& o, const std::string& path) {
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::VersionsRequest q;
  q.set_path(path);
  v1::VersionsResponse r;
  grpc::Status s = v1::Namespace::Stub(c.channel()).Versions(c.Context().get(), q, &r);
  if (!s.ok()) return Fail(c.RpcError(s));
  if (c.json()) {
    c.PrintJson(r);
    return r.versions_size() > 0 ? kExitOk : kExitError;
  }
  if (r.versions_size() == 0) return Fail(Status::NotFound(fmt::format("{}: no versions here", path)));
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
  Result<v1::Version> want = ParseVersion(version);
  if (!want.ok()) return Fail(want.status());
  v1::RestoreRequest q;
  q.set_path(path);
  *q.mutable_version() = *want;
  Client c(o);
  v1::RestoreResponse r;
  if (Status s = c.CallAsCaller(std::string(api_method::Namespace_Restore::kName), q, &r); !s.ok()) return Fail(s);
  if (c.json()) {
    c.PrintJson(r);
    return kExitOk;
  }
  std::cout << fmt::format("{}: version {} is current again, as {}@{}\n", path, version, r.version().hlc(),
                           r.version().node_id());
  return kExitOk;
}

}  // namespace onebox

#include "naming/node_identity.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace onebox {

uint64_t NewNodeId() {
  uint64_t id = 0;
  while (id == 0) {
    if (getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) id = 0;
  }
  return id;
}

std::string NodeIdHex(uint64_t id) { return fmt::format("{:016x}", id); }

Result<uint64_t> ParseNodeId(std::string_view hex) {
  if (hex.size() != 16) return Status::InvalidArgument(fmt::format("node id '{}' is not 16 hex digits", hex));
  uint64_t v = 0;
  for (char c : hex) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return Status::InvalidArgument(fmt::format("node id '{}' is not 16 hex digits", hex));
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  if (v == 0) return Status::InvalidArgument("node id must not be zero");
  return v;
}

Status ValidateNodeName(std::string_view name) {
  auto ok_char = [](char c) { return isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; };
  if (name.empty() || name.size() > 63 || !isalnum(static_cast<unsigned char>(name[0])))
    return Status::InvalidArgument(
        fmt::format("node name '{}' must be 1 to 63 characters and start with a letter or digit", name));
  for (char c : name)
    if (!ok_char(c))
      return Status::InvalidArgument(fmt::format("node name '{}' may hold only letters, digits, '.', '_' and '-'", name));
  return Status::Ok();
}

namespace {

Status WriteFileAtomically(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(fmt::format("create {}: {}", tmp, strerror(errno)));
  bool ok = write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && fsync(fd) == 0;
  int err = errno;
  close(fd);
  if (!ok || rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    unlink(tmp.c_str());
    return Status::IOError(fmt::format("write {}: {}", path, strerror(err)));
  }
  // The rename is durable only once the directory is: sync it too.
  std::string dir = path.substr(0, path.rfind('/') + 1);
  int dfd = open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync(dfd) != 0) {
    err = errno;
    if (dfd >= 0) close(dfd);
    return Status::IOError(fmt::format("sync {}: {}", dir, strerror(err)));
  }
  close(dfd);
  return Status::Ok();
}

}  // namespace

Result<NodeIdentity> LoadOrCreateIdentity(const std::string& data_dir, const std::string& name) {
  if (Status s = ValidateNodeName(name); !s.ok()) return s;
  std::string path = data_dir + "/node.json";
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return Status::IOError(fmt::format("stat {}: {}", path, strerror(errno)));
    NodeIdentity id{name, NewNodeId()};
    nlohmann::json j{{"name", id.name}, {"node_id", NodeIdHex(id.node_id)}};
    if (Status s = WriteFileAtomically(path, j.dump(2) + "\n"); !s.ok()) return s;
    return id;
  }
  std::ifstream in(path);
  if (!in) return Status::IOError(fmt::format("cannot read {}", path));
  std::stringstream buf;
  buf << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string() ||
      !j.contains("node_id") || !j["node_id"].is_string())
    return Status::Corruption(fmt::format("{} is not a node identity file (want {{\"name\", \"node_id\"}})", path));
  NodeIdentity id;
  id.name = j["name"].get<std::string>();
  Result<uint64_t> node_id = ParseNodeId(j["node_id"].get<std::string>());
  if (!node_id.ok()) return Status::Corruption(fmt::format("{}: {}", path, node_id.status().message()));
  id.node_id = *node_id;
  if (id.name != name)
    return Status::FailedPrecondition(fmt::format(
        "data dir {} belongs to node '{}', not '{}': start with --name {} or use another --data-dir", data_dir,
        id.name, name, id.name));
  return id;
}

}  // namespace onebox

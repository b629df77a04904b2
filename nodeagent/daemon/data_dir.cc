#include "nodeagent/daemon/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace onebox {

namespace {

// DATA_DIR/agent.lock, locked, naming us; the fd holds the lock.
Result<int> Lock(const std::string& dir) {
  std::string path = dir + "/agent.lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(fmt::format("open {}: {}", path, strerror(errno)));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    std::string holder = n > 0 ? fmt::format(" (pid {})", std::string(buf, static_cast<size_t>(n))) : "";
    return Status::FailedPrecondition(fmt::format("data dir {} is in use by another agent{}", dir, holder));
  }
  std::string pid = std::to_string(getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    close(fd);
    return Status::IOError(fmt::format("write {}: {}", path, strerror(errno)));
  }
  return fd;
}

}  // namespace

Result<DataDir> DataDir::Open(const std::string& path, const std::string& node_name) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::IOError(fmt::format("cannot create data dir {}: {}", path, ec.message()));
  std::string canonical = std::filesystem::canonical(path, ec).string();
  if (ec) return Status::IOError(fmt::format("data dir {}: {}", path, ec.message()));
  Result<int> lock = Lock(canonical);
  if (!lock.ok()) return lock.status();
  DataDir dir(canonical, *lock);
  Result<NodeIdentity> identity = LoadOrCreateIdentity(canonical, node_name);
  if (!identity.ok()) return identity.status();
  dir.identity_ = std::move(identity).value();
  std::filesystem::create_directories(dir.store_path(), ec);
  if (ec) return Status::IOError(fmt::format("cannot create {}: {}", dir.store_path(), ec.message()));
  if (mkdir(dir.view_path().c_str(), 0755) != 0 && errno != EEXIST)
    return Status::IOError(fmt::format("cannot create {}: {}", dir.view_path(), strerror(errno)));
  // The store is the agent's alone; programs of every user reach the view
  // through the data dir. One the agent may not chmod (it is not the
  // owner) is used as it is.
  for (auto [dir_path, mode] : {std::pair{dir.store_path(), 0700}, std::pair{canonical, 0755}})
    if (chmod(dir_path.c_str(), static_cast<mode_t>(mode)) != 0)
      spdlog::warn("cannot chmod {} to {:o}: {}", dir_path, mode, strerror(errno));
  return dir;
}

DataDir::DataDir(DataDir&& other) noexcept
    : path_(std::move(other.path_)), lock_fd_(std::exchange(other.lock_fd_, -1)), identity_(std::move(other.identity_)) {}

DataDir::~DataDir() {
  if (lock_fd_ >= 0) close(lock_fd_);
}

}  // namespace onebox

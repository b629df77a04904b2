// The agent's data dir, made if missing and held for the agent's lifetime
// (DATA_DIR/agent.lock, flock; the file names the holder's pid for the
// message a second agent prints), with the node's identity (node.json), the
// store's directory (mode 0700) and the view: the directory programs under
// the shim see as "/".
#pragma once

#include <string>

#include "consistency/status.h"
#include "naming/node_identity.h"

namespace onebox {

class DataDir {
 public:
  // Fails (one line says why) when the dir cannot be made, another agent
  // holds it, or it was made for another node name.
  static Result<DataDir> Open(const std::string& path, const std::string& node_name);
  DataDir(DataDir&& other) noexcept;
  DataDir& operator=(DataDir&&) = delete;
  ~DataDir();

  const std::string& path() const { return path_; }  // canonical
  const NodeIdentity& identity() const { return identity_; }
  std::string store_path() const { return path_ + "/store"; }
  std::string view_path() const { return path_ + "/view"; }

 private:
  DataDir(std::string path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}
  std::string path_;
  int lock_fd_;
  NodeIdentity identity_;
};

}  // namespace onebox

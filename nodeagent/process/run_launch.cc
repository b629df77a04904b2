#include "nodeagent/process/run_launch.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "nodeagent/process/proc_table.h"

namespace onebox {

namespace {



std::string EnvValue(const google::protobuf::RepeatedPtrField<std::string>& env, const std::string& name) {
  for (const std::string& e : env)
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=')
      return e.substr(name.size() + 1);
  return "";
}

// A cluster path as it is written on every node: absolute, no "." or "..".
bool IsPlainAbsolute(const std::string& path) {
  if (path.empty() || path[0] != '/') return false;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part == "." || part == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace

Result<Launch> PrepareLaunch(const v1::RunStart& start, const RunPlace& place, const std::string& node) {
  if (start.argv().empty() || start.argv(0).empty()) return Status::InvalidArgument("run: no program to run");
  // Every string becomes a C string for the child: a NUL inside would cut it
  // there ("/..\0x" is a cwd of ".." to chdir).
  auto has_nul = [](const std::string& text) { return text.find('\0') != std::string::npos; };
  bool nul = has_nul(start.cwd()) || has_nul(start.program());
  for (const std::string& a : start.argv()) nul = nul || has_nul(a);
  for (const std::string& e : start.env()) nul = nul || has_nul(e);
  if (nul) return Status::InvalidArgument("run: a NUL byte inside the program, an argument, the environment or the cwd");
  if (!IsPlainAbsolute(start.cwd()) || start.cwd() == "/")
    return Status::InvalidArgument(fmt::format("run: working directory '{}' is no cluster path", start.cwd()));
  if (!start.has_caller()) return Status::InvalidArgument("run: the start names no caller");
  Launch l;
  const v1::CallerCredentials& who = start.caller();
  // (uid_t)-1 is "unchanged" to setresuid: the program would keep root's ids.
  constexpr uint32_t kUnset = static_cast<uint32_t>(-1);
  if (who.uid() == kUnset || who.gid() == kUnset) return Status::InvalidArgument("run: the caller's ids are not valid");
  for (uint32_t g : who.groups())
    if (g == kUnset) return Status::InvalidArgument("run: the caller's groups are not valid");
  l.uid = who.uid();
  l.gid = who.gid();
  for (uint32_t g : who.groups()) l.groups.push_back(g);
  l.agents_ids = who.uid() == place.agent_uid && who.gid() == place.agent_gid;
  if (place.agent_uid == 0) {
    l.switch_ids = true;
  } else if (who.uid() != place.agent_uid) {
    return Status::PermissionDenied(fmt::format(
        "node {}'s agent runs as uid {}, not root, and runs programs for that user only", node, place.agent_uid));
  }
  l.umask = static_cast<mode_t>(start.umask() & 0777);
  l.files_soft_limit = place.files_soft_limit;
  l.cwd = place.view_path + start.cwd();
  for (const std::string& a : start.argv()) l.argv_text.push_back(a);
  for (const std::string& e : start.env()) {
    if (e.rfind("LD_PRELOAD=", 0) == 0 || e.rfind("ONEBOX_SOCKET=", 0) == 0 || e.rfind("PWD=", 0) == 0) continue;
    l.env_text.push_back(e);
  }
  if (!place.shim.empty()) {
    std::string preload = EnvValue(start.env(), "LD_PRELOAD");
    // The caller's other preloads stay; its node's shim is this node's.
    std::string kept;
    for (const std::string& lib : PreloadLibraries(preload))
      if (!IsShimLibrary(lib)) kept += " " + lib;
    l.env_text.push_back("LD_PRELOAD=" + place.shim + kept);
    l.env_text.push_back("ONEBOX_SOCKET=" + place.socket);
  }
  l.env_text.push_back("PWD=" + start.cwd());
  const std::string& program = start.program().empty() ? start.argv(0) : start.program();
  if (!start.program().empty() && start.program()[0] != '/')
    return Status::InvalidArgument(fmt::format("run: program '{}' is no absolute path", start.program()));
  // A placed job that cannot run here is refused before it starts: its
  // stand-in then runs it at home (the fork's exec would only exit 127).
  if (start.placed() && !start.program().empty() && access(start.program().c_str(), X_OK) != 0)
    return Status::NotFound(fmt::format("run: {}: {} on node {}", start.program(), strerror(errno), node));
  if (program.find('/') != std::string::npos) {
    l.candidates.push_back(program);
  } else {
    std::string path = EnvValue(start.env(), "PATH");
    if (path.empty()) path = "/usr/local/bin:/usr/bin:/bin";
    for (size_t i = 0; i <= path.size();) {
      size_t end = path.find(':', i);
      if (end == std::string::npos) end = path.size();
      std::string dir = path.substr(i, end - i);
      l.candidates.push_back((dir.empty() ? "." : dir) + "/" + program);
      i = end + 1;
    }
  }
  for (std::string& a : l.argv_text) l.argv.push_back(a.data());
  l.argv.push_back(nullptr);
  for (std::string& e : l.env_text) l.env.push_back(e.data());
  l.env.push_back(nullptr);
  l.no_cwd = fmt::format("onebox run: {}: no such directory on node {}\n", start.cwd(), node);
  l.cwd_denied = fmt::format("onebox run: {}: cannot enter it on node {} (permission denied)\n", start.cwd(), node);
  l.not_found = fmt::format("onebox run: {}: command not found on node {}\n", program, node);
  l.cannot_run = fmt::format("onebox run: {}: cannot run it on node {} (permission denied)\n", program, node);
  l.no_ids = fmt::format("onebox run: cannot take uid {} on node {}\n", l.uid, node);
  return l;
}

}  // namespace onebox

// Fuzzes the process relay's start as a target node reads it from another
// node (nodeagent/process/run_launch.h): any bytes as the first message of
// a Peer/Run stream. A start is refused with a Status or made into what
// the child runs, never a crash; one taken runs as a real user (no id is
// (uid_t)-1, which setresuid reads as "keep root's"), in a working
// directory inside the view, with this node's shim and socket and no
// preload or socket of the caller's node.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "nodeagent/process/run_launch.h"
#include "onebox/v1/process.pb.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using onebox::fuzz::Require;

size_t CountPrefixed(const std::vector<std::string>& env, const std::string& prefix) {
  size_t n = 0;
  for (const std::string& e : env) n += e.rfind(prefix, 0) == 0;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  onebox::v1::RunInput first;
  if (!first.ParseFromArray(data, static_cast<int>(size)) || !first.has_start()) return 0;
  onebox::RunPlace place;
  place.view_path = "/var/lib/onebox/view";
  place.socket = "/run/onebox/agent.sock";
  place.shim = "/usr/local/lib/libonebox.so";
  place.agent_uid = 0;  // an agent as root, whoever runs the fuzzer: every start goes the whole way
  place.agent_gid = 0;
  onebox::Result<onebox::Launch> launch = onebox::PrepareLaunch(first.start(), place, "n1");
  if (!launch.ok()) return 0;
  const onebox::Launch& l = *launch;
  // What the child execs: every pointer into the texts, each list ended by NULL.
  Require(!l.argv_text.empty() && l.argv.size() == l.argv_text.size() + 1 && l.argv.back() == nullptr);
  for (size_t i = 0; i < l.argv_text.size(); ++i)
    Require(l.argv[i] == l.argv_text[i].data() && strlen(l.argv[i]) == l.argv_text[i].size());
  Require(l.env.size() == l.env_text.size() + 1 && l.env.back() == nullptr);
  for (size_t i = 0; i < l.env_text.size(); ++i) Require(l.env[i] == l.env_text[i].data());
  Require(!l.candidates.empty());
  // This node's shim and socket, once each, and the working directory the start named.
  Require(CountPrefixed(l.env_text, "LD_PRELOAD=") == 1 && CountPrefixed(l.env_text, "ONEBOX_SOCKET=") == 1);
  Require(CountPrefixed(l.env_text, "LD_PRELOAD=" + place.shim) == 1);
  for (const std::string& e : l.env_text)
    if (e.rfind("ONEBOX_SOCKET=", 0) == 0) Require(e == "ONEBOX_SOCKET=" + place.socket);
  Require(CountPrefixed(l.env_text, "PWD=") == 1);
  // A real user: never (uid_t)-1 or (gid_t)-1.
  Require(l.uid != static_cast<uid_t>(-1) && l.gid != static_cast<gid_t>(-1));
  for (gid_t g : l.groups) Require(g != static_cast<gid_t>(-1));
  Require((l.umask & ~0777) == 0);
  // Inside the view, whatever the start said: lexically below view_path.
  const std::string normal = std::filesystem::path(l.cwd.c_str()).lexically_normal().string();  // as chdir reads it
  Require(normal.rfind(place.view_path + "/", 0) == 0);
  return 0;
}

// onebox ps and onebox kill: the cluster's process table, and signals to
// any of its processes (proto/onebox/v1/process.proto).
#include <pwd.h>
#include <signal.h>
#include <string.h>

#include <cctype>
#include <cstdlib>
#include <ctime>
#include <iostream>

#include <fmt/format.h>

#include "nodeagent/api/access.h"
#include "nodeagent/cli/commands.h"
#include "onebox/v1/process.grpc.pb.h"

namespace onebox {

namespace {

Result<uint32_t> ParseUser(const std::string& user) {
  char* end = nullptr;
  unsigned long uid = std::strtoul(user.c_str(), &end, 10);
  if (!user.empty() && *end == '\0') return static_cast<uint32_t>(uid);
  struct passwd pw, *found = nullptr;
  char buf[1024];
  if (getpwnam_r(user.c_str(), &pw, buf, sizeof(buf), &found) == 0 && found != nullptr) return found->pw_uid;
  return Status::InvalidArgument(fmt::format("no user named {} on this node", user));
}


std::string CpuText(uint64_t ms) { return fmt::format("{}:{:02}", ms / 60000, (ms / 1000) % 60); }

// The command line on one line: control characters show as '?', as ps(1) shows them.
std::string CommandText(const v1::ProcessInfo& p) {
  if (p.argv().empty()) return "[" + p.command() + "]";
  std::string s;
  for (const std::string& a : p.argv()) s += (s.empty() ? "" : " ") + a;
  for (char& ch : s)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = '?';
  return s;
}

}  // namespace

std::string StartText(int64_t ms) {
  time_t at = static_cast<time_t>(ms / 1000), now = time(nullptr);
  struct tm t, today;
  localtime_r(&at, &t);
  localtime_r(&now, &today);
  char buf[32];
  strftime(buf, sizeof(buf), t.tm_yday == today.tm_yday && t.tm_year == today.tm_year ? "%H:%M:%S" : "%b%d", &t);
  return buf;
}

int CmdPs(const ClientOptions& o, const PsOptions& ps) {
  v1::ListProcessesRequest q;
  q.set_node(ps.node);
  q.set_all(ps.all);
  if (!ps.user.empty()) {
    Result<uint32_t> uid = ParseUser(ps.user);
    if (!uid.ok()) return Fail(uid.status());
    q.set_uid(*uid);
  }
  Client c(o);
  if (Status s = c.Connect(); !s.ok()) return Fail(s);
  v1::ListProcessesResponse r;
  grpc::Status s = v1::Process::Stub(c.channel()).List(c.Context().get(), q, &r);
  if (!s.ok()) return Fail(c.RpcError(s));
  if (c.json()) {
    c.PrintJson(r);
  } else {
    std::cout << fmt::format("{:>10} {:<12} {:>7} {:>10} {:<10} {} {:>8} {:>7} {}\n", "GPID", "NODE", "PID", "PGPID",
                             "USER", "S", "START", "TIME", "COMMAND");
    for (const v1::ProcessInfo& p : r.processes()) {
      std::string user = p.user().empty() ? std::to_string(p.uid()) : p.user();
      std::cout << fmt::format("{:>10} {:<12} {:>7} {:>10} {:<10} {} {:>8} {:>7} {}\n", p.gpid(), p.node(), p.pid(),
                               p.parent_gpid(), user, p.state(), StartText(p.start_time_ms()),
                               CpuText(p.cpu_time_ms()), CommandText(p));
    }
  }
  for (const std::string& why : r.unanswered()) std::cerr << "onebox: node did not answer: " << why << "\n";
  return r.unanswered().empty() ? kExitOk : kExitError;
}

Result<int> ParseSignal(const std::string& text) {
  char* end = nullptr;
  long n = std::strtol(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0') {
    if (n >= 0 && n < NSIG) return static_cast<int>(n);
  } else {
    std::string name;
    for (char ch : text) name += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (name.rfind("SIG", 0) == 0) name = name.substr(3);
    for (int sig = 1; sig < NSIG; ++sig) {
      const char* abbrev = sigabbrev_np(sig);
      if (abbrev != nullptr && name == abbrev) return sig;
    }
  }
  return Status::InvalidArgument(fmt::format("{}: not a signal (a number, or a name such as TERM or SIGKILL)", text));
}

int CmdKill(const ClientOptions& o, const std::vector<std::string>& args) {
  int sig = SIGTERM;
  std::vector<int64_t> targets;
  bool options_done = false, signal_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    Result<int> parsed = 0;
    if (!options_done && a == "--") {
      options_done = true;
      continue;
    } else if (!options_done && !signal_given && (a == "-s" || a == "-n")) {
      if (i + 1 == args.size()) return Fail(Status::InvalidArgument(a + " needs a signal"));
      parsed = ParseSignal(args[++i]);
    } else if (!options_done && !signal_given && targets.empty() && a.size() > 1 && a[0] == '-') {
      parsed = ParseSignal(a.substr(1));
    } else {
      char* end = nullptr;
      long long gpid = std::strtoll(a.c_str(), &end, 10);
      if (a.empty() || *end != '\0' || gpid == 0)
        return Fail(Status::InvalidArgument(fmt::format("{}: not a process id (a gpid, as onebox ps shows it)", a)));
      targets.push_back(gpid);
      continue;
    }
    if (!parsed.ok()) return Fail(parsed.status());
    sig = *parsed;
    signal_given = true;  // from here on, -N is a process group
  }
  if (targets.empty())
    return Fail(Status::InvalidArgument("usage: onebox kill [-s SIGNAL | -SIGNAL] GPID... (negative: a process group)"));
  Client c(o);
  int code = kExitOk;
  for (int64_t gpid : targets) {
    v1::SignalRequest q;
    q.set_gpid(gpid);
    q.set_signal(sig);
    v1::SignalResponse r;
    if (Status s = c.CallAsCaller(std::string(api_method::Process_Signal::kName), q, &r); !s.ok()) {
      std::cerr << fmt::format("onebox: kill {}: {}\n", gpid, s.message());
      code = kExitError;
    }
  }
  return code;
}

}  // namespace onebox

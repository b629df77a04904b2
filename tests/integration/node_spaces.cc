#include "tests/integration/node_spaces.h"

#include <unistd.h>

#include <atomic>

#include <fmt/format.h>

#include "tests/integration/harness.h"

namespace onebox::testing {

std::string IpTool() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"})
    if (access(p, X_OK) == 0) return p;
  return "";
}

Network::Network(int nodes) : ip_(IpTool()) {
  int pid = getpid();
  // The pid tells test processes apart, the count the Networks of one process:
  // the kernel removes a deleted namespace's veth pair a moment later, so the
  // next Network must not take the same names. ("ob99999-99v1" has 12
  // characters; an interface name may have 15.)
  static std::atomic<int> made{0};
  tag_ = fmt::format("ob{}-{}", pid % 100000, made++);
  subnet_ = fmt::format("10.251.{}", pid % 250);
  if (ip_.empty()) {
    error_ = "no ip(8) (iproute2)";
    return;
  }
  if (!Ip({"link", "add", tag_, "type", "bridge"})) return;
  made_bridge_ = true;  // removed at the end whatever fails next
  if (!Ip({"addr", "add", subnet_ + ".254/24", "dev", tag_}) || !Ip({"link", "set", tag_, "up"})) return;
  for (int i = 1; i <= nodes; ++i) {
    std::string ns = Ns(i), veth = Veth(i);
    if (!Ip({"netns", "add", ns})) return;
    namespaces_.push_back(ns);
    if (!Ip({"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns}) ||
        !Ip({"link", "set", veth, "master", tag_, "up"}) ||
        !Ip({"netns", "exec", ns, ip_, "addr", "add", Address(i) + "/24", "dev", "eth0"}) ||
        !Ip({"netns", "exec", ns, ip_, "link", "set", "eth0", "up"}) ||
        !Ip({"netns", "exec", ns, ip_, "link", "set", "lo", "up"}))
      return;
  }
  ok_ = true;
}

Network::~Network() {
  for (const std::string& ns : namespaces_) Ip({"netns", "del", ns});  // takes its veth pair along
  if (made_bridge_) Ip({"link", "del", tag_});
}

std::string Network::Ns(int i) const { return fmt::format("{}n{}", tag_, i); }
std::string Network::Veth(int i) const { return fmt::format("{}v{}", tag_, i); }
std::string Network::Address(int i) const { return fmt::format("{}.{}", subnet_, i); }

bool Network::Ip(std::vector<std::string> args) {
  args.insert(args.begin(), ip_);
  RunResult r = RunCommand(args);
  if (r.exit_code != 0 && error_.empty()) {
    error_ = "ip";
    for (size_t i = 1; i < args.size(); ++i) error_ += " " + args[i];
    error_ += ": " + r.err;
  }
  return r.exit_code == 0;
}

}  // namespace onebox::testing

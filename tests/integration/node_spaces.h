// Test nodes that share one kernel but not its namespaces: a Network (a
// bridge, and one network namespace per node behind it, on a private /24).
// Everything made here is removed by the names or pids it was made with.
#pragma once

#include <string>
#include <vector>

namespace onebox::testing {

// The path of ip(8) (iproute2); "" if there is none.
std::string IpTool();

// A bridge and N namespaces behind it, removed (by the names made here) at the end.
class Network {
 public:
  explicit Network(int nodes);
  ~Network();
  Network(const Network&) = delete;
  Network& operator=(const Network&) = delete;

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  std::string Ns(int i) const;
  std::string Veth(int i) const;
  std::string Address(int i) const;
  std::vector<std::string> Inside(int i) const { return {ip_, "netns", "exec", Ns(i)}; }
  // Cuts node i off (its link on the bridge goes down), or heals it.
  bool SetLink(int i, bool up) { return Ip({"link", "set", Veth(i), up ? "up" : "down"}); }

 private:
  bool Ip(std::vector<std::string> args);
  std::string ip_, tag_, subnet_, error_;
  bool ok_ = false, made_bridge_ = false;
  std::vector<std::string> namespaces_;
};

}  // namespace onebox::testing

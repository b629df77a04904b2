// The agent's --listen address: parsed (HOST:PORT, [V6]:PORT), and tried
// before gRPC binds it, because gRPC reports a failed bind only as "could
// not start": a taken port gets its real reason.
#pragma once

#include <string>

#include "consistency/status.h"

namespace onebox {

struct ListenAddress {
  std::string host;  // without the brackets of an IPv6 literal
  int port = 0;      // 0: the kernel picks one
  // HOST:PORT as gRPC and peers write it, with another port (the one bound).
  std::string WithPort(int bound_port) const;
};

Result<ListenAddress> ParseListenAddress(const std::string& addr);
// Binds every address host resolves to, and lets go again.
Status CheckCanListen(const ListenAddress& address);

}  // namespace onebox

#include "nodeagent/api/local_calls.h"

#include <fmt/format.h>

namespace onebox {

Status LocalCalls::Call(const Caller& caller, std::string_view method, const std::string& request,
                        std::string* response) const {
  auto it = methods_.find(method);
  if (it == methods_.end())
    return Status::NotFound(fmt::format("{} is not served on the agent's socket (read-only methods are on gRPC)", method));
  if (Status admitted = gate_.Admit(it->second.method_class, method, caller); !admitted.ok()) return admitted;
  return it->second.handler(caller, request, response);
}

}  // namespace onebox

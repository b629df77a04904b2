// The methods a local user calls over the agent's Unix socket (the shim
// request kCall, local/shim_requests.h), where the kernel names the caller:
// the caller-acting and admin ones of api/access.h's list. They are served
// by the same handlers as over gRPC, admitted by the same gate, with the
// caller the socket named (and no anonymous gRPC caller passes their gate).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "consistency/status.h"
#include "nodeagent/api/access.h"

namespace onebox {

class LocalCalls {
 public:
  using Handler = std::function<Status(const Caller&, const std::string& request, std::string* response)>;

  explicit LocalCalls(const AccessGate& gate) : gate_(gate) {}

  // Serves Method (a tag of api/access.h) with fn(caller, request, &response).
  template <class Method, class Req, class Resp, class Fn>
  void Add(Fn fn) {
    static_assert(Method::kClass == MethodClass::kCallerActing || Method::kClass == MethodClass::kAdmin,
                  "the socket serves methods that act as their caller; read-only ones are on gRPC");
    methods_[std::string(Method::kName)] = {
        Method::kClass, [fn = std::move(fn)](const Caller& caller, const std::string& in, std::string* out) -> Status {
          Req req;
          if (!req.ParseFromString(in))
            return Status::InvalidArgument(
                "malformed request: the bytes sent are not a valid " + Req::descriptor()->full_name());
          Resp resp;
          if (Status s = fn(caller, req, &resp); !s.ok()) return s;
          resp.SerializeToString(out);
          return Status::Ok();
        }};
  }

  // Admits caller to method and runs it. NotFound for a method not served
  // on the socket.
  Status Call(const Caller& caller, std::string_view method, const std::string& request, std::string* response) const;

 private:
  struct Entry {
    MethodClass method_class;
    Handler handler;
  };
  const AccessGate& gate_;
  std::map<std::string, Entry, std::less<>> methods_;
};

}  // namespace onebox

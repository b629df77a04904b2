#include "nodeagent/process/run_relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/process/signal_as.h"
#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"

namespace onebox {

namespace {

// ShimResponse is a lite message, RunOutput a full one: both serialize so.
template <class Message>
bool SendMessage(int fd, const Message& m) {
  return SendShimFrame(fd, m.SerializeAsString());
}

}  // namespace

void RunRelays::Start(int fd, uint64_t request_id, v1::RunStart start, std::string address, std::string node) {
  // The shim server's connections do not block; the relay's threads do.
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  timeval none{};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none);
  std::lock_guard lock(mu_);
  if (stopped_) {
    close(fd);
    return;
  }
  ReapDone();
  Relay& relay = relays_.emplace_back();
  relay.fd = fd;
  relay.thread = std::thread([this, &relay, request_id, start = std::move(start), address = std::move(address),
                              node = std::move(node)] {
    Serve(relay, request_id, start, address, node);
    shutdown(relay.fd, SHUT_RDWR);
    close(relay.fd);
    std::lock_guard lock(mu_);
    relay.done = true;
  });
}

void RunRelays::Serve(Relay& relay, uint64_t request_id, const v1::RunStart& start, const std::string& address,
                      const std::string& node) {
  const int fd = relay.fd;
  std::unique_ptr<RunCall> call = network_.OpenRun(address, &relay.cancellation);
  v1::RunInput first;
  *first.mutable_start() = start;
  v1::RunOutput out;
  v1::ShimResponse answer;
  answer.set_id(request_id);
  if (!call->Write(first) || !call->Read(&out) || !out.has_started()) {
    Status why = call->Finish();
    if (why.ok() || why.code() == Code::kUnavailable)
      why = Status::Unavailable(fmt::format("node {} did not start the run{}{}", node, why.ok() ? "" : ": ",
                                            why.message()));
    answer.set_err(why.code() == Code::kUnavailable ? EHOSTUNREACH : SignalErrno(why));
    answer.set_message(why.message());
    SendMessage(fd, answer);
    return;
  }
  answer.mutable_run()->set_started(out.started().SerializeAsString());
  if (!SendMessage(fd, answer)) {
    relay.cancellation.Cancel();
    (void)call->Finish();  // the stand-in is gone: nobody to tell
    return;
  }
  // The stand-in's input, on a thread of its own; its end ends the run.
  std::thread input([&] {
    std::string frame;
    v1::RunInput in;
    while (RecvShimFrame(fd, &frame) && in.ParseFromString(frame) && !in.has_start())
      if (!call->Write(in)) break;
    relay.cancellation.Cancel();
  });
  bool exited = false;
  while (!exited && call->Read(&out)) {
    exited = out.has_exit();
    if (!SendMessage(fd, out)) break;
  }
  relay.cancellation.Cancel();
  Status st = call->Finish();
  if (!exited) {
    v1::RunOutput lost;
    lost.mutable_exit()->set_error(fmt::format("lost node {} during the run{}{}", node, st.ok() ? "" : ": ",
                                               st.message()));
    SendMessage(fd, lost);
  }
  shutdown(fd, SHUT_RDWR);  // ends the input thread's read
  input.join();
}

void RunRelays::ReapDone() {
  for (auto it = relays_.begin(); it != relays_.end();) {
    if (!it->done) {
      ++it;
      continue;
    }
    it->thread.join();
    it = relays_.erase(it);
  }
}

void RunRelays::Stop() {
  {
    std::lock_guard lock(mu_);
    stopped_ = true;
    for (Relay& r : relays_) r.cancellation.Cancel();
  }
  // The threads take mu_ as they end: join without it.
  for (Relay& r : relays_) r.thread.join();
  relays_.clear();
}

}  // namespace onebox

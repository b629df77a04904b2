#include "nodeagent/process/run_relay.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "nodeagent/api/status_codes.h"
#include "onebox/v1/shim.pb.h"
#include "proto/shim_frame.h"

namespace onebox {

namespace {

// ShimResponse is a lite message, RunOutput a full one: both serialize so.
template <class Message>
bool SendMessage(int fd, const Message& m) {
  return SendShimFrame(fd, m.SerializeAsString());
}

// A run on this node: the executor on a thread of its own, joined to the
// relay by two bounded queues (a few messages each way: back-pressure as
// gRPC's flow control gives it). Cancel ends both sides at once.
class LocalRunCall final : public RunCall, private RunPeerStream {
 public:
  LocalRunCall(RunExecutor& executor, Cancellation* cancellation) {
    ticket_ = cancellation->Attach([this] { Close(); });
    if (ticket_ == 0) closed_ = true;
    executor_thread_ = std::thread([this, &executor] {
      Status s = executor.Serve(*this);
      std::lock_guard lock(mu_);
      served_ = s;
      done_ = true;
      cv_.notify_all();
    });
    cancellation_ = cancellation;
  }
  ~LocalRunCall() override {
    Close();
    executor_thread_.join();
    if (ticket_ != 0) cancellation_->Detach(ticket_);
  }
  // The relay's side.
  bool Write(const v1::RunInput& in) override { return Push(inputs_, in); }
  bool Read(v1::RunOutput* out) override { return Pop(outputs_, out, /*until_done=*/true); }
  Status Finish() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_ || closed_; });
    if (!done_) return Status::Unavailable("cancelled");
    return served_;
  }

 private:
  static constexpr size_t kQueued = 8;
  // The executor's side.
  bool Read(v1::RunInput* in) override { return Pop(inputs_, in, /*until_done=*/false); }
  bool Write(const v1::RunOutput& out) override { return Push(outputs_, out); }
  bool Cancelled() override {
    std::lock_guard lock(mu_);
    return closed_;
  }

  template <class M>
  bool Push(std::deque<M>& q, const M& m) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ || q.size() < kQueued; });
    if (closed_) return false;
    q.push_back(m);
    cv_.notify_all();
    return true;
  }
  // Outputs are read until the executor is done and they are drained; inputs until closed.
  template <class M>
  bool Pop(std::deque<M>& q, M* m, bool until_done) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !q.empty() || (until_done && done_); });
    if (closed_ || q.empty()) return false;
    *m = std::move(q.front());
    q.pop_front();
    cv_.notify_all();
    return true;
  }
  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::RunInput> inputs_;
  std::deque<v1::RunOutput> outputs_;
  bool closed_ = false, done_ = false;
  Status served_;
  Cancellation* cancellation_ = nullptr;
  uint64_t ticket_ = 0;
  std::thread executor_thread_;
};

}  // namespace

void RunRelays::Start(int fd, uint64_t request_id, v1::RunStart start, std::string address, std::string node,
                      std::string node_id, bool here) {
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
                              node = std::move(node), node_id = std::move(node_id), here] {
    if (!here && settle_target_)
      if (Status settled = settle_target_(node_id); !settled.ok())
        spdlog::warn("run on node {}: what this node wrote may not be there yet: {}", node, settled.message());
    std::unique_ptr<RunCall> call;
    if (here) call = std::make_unique<LocalRunCall>(local_, &relay.cancellation);
    else call = network_.OpenRun(address, &relay.cancellation);
    Serve(relay, request_id, start, std::move(call), node, here);
    std::lock_guard lock(mu_);  // Stop() shuts the fd down under it
    close(relay.fd);
    relay.fd = -1;
    relay.done = true;
  });
}

void RunRelays::Serve(Relay& relay, uint64_t request_id, const v1::RunStart& start, std::unique_ptr<RunCall> call,
                      const std::string& node, bool here) {
  const int fd = relay.fd;
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
    answer.set_err(why.code() == Code::kUnavailable ? EHOSTUNREACH : ToErrno(why));  // the stand-in: 255, or 1
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
    if (exited && !here && settle_view_) settle_view_();
    if (!SendMessage(fd, out)) break;
  }
  relay.cancellation.Cancel();
  shutdown(fd, SHUT_RD);  // ends the input thread's read: no Write after this
  input.join();
  Status st = call->Finish();
  if (!exited) {
    v1::RunOutput lost;
    lost.mutable_exit()->set_error(fmt::format("lost node {} during the run{}{}", node, st.ok() ? "" : ": ",
                                               st.message()));
    SendMessage(fd, lost);
  }
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
    for (Relay& r : relays_) {
      r.cancellation.Cancel();
      if (r.fd >= 0) shutdown(r.fd, SHUT_RDWR);  // a stand-in that does not read blocks no write
    }
  }
  // The threads take mu_ as they end: join without it.
  for (Relay& r : relays_) r.thread.join();
  relays_.clear();
}

}  // namespace onebox

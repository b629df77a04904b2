// What a user would pick instead of onebox, run by the benchmarks side by
// side with it, each on loopback with its state in the bench's temp dir and
// stopped by its pid (or unmounted): a sshd (for ssh), sshfs mounts through
// it, and a one-member etcd. Each
// installs its Debian package with apt-get when it is missing, and says why
// when it cannot start, so that a bench prints that row as missing and goes on.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace onebox::bench {

// The last `bytes` of a file (a daemon's log, for a failure message).
std::string Tail(const std::string& path, size_t bytes = 2000);
// A TCP port on 127.0.0.1 nobody listens on now.
int FreeLoopbackPort();
// waitpid, then the exit code (-1 if not reaped).
int Reap(pid_t pid);
// binary exists, or apt-get installs package; false, with why, when it cannot.
bool InstallIfMissing(const std::string& binary, const std::string& package, std::string* why);
// argv started in the background (our environment with env added), its
// standard error and output appended to log; it gets SIGTERM when the bench
// dies. own_group: in a process group of its own, so that a ^C reaches the
// bench and not it (a daemon the bench's undos still need: UndoOnSignal).
// Returns the pid, or -1.
pid_t StartDaemon(const std::vector<std::string>& argv, const std::string& log,
                  const std::map<std::string, std::string>& env = {}, bool own_group = false);
// SIGTERM, then reaped.
void StopDaemon(pid_t* pid);

// What a bench stopped by SIGINT, SIGTERM or SIGHUP must still undo (its
// destructors do not run then): mounts, a GlusterFS volume, which outlive
// it. Each command is registered before the thing it undoes is made, and
// run by the signal handler (_Fork, execve and waitpid, which a handler may
// call; a second signal meanwhile, on any thread, waits for the first's),
// the last registered first; then the bench dies of the signal. Its daemons
// go with it (StartDaemon). Called from one thread (the bench's main one).
// Returns a handle for UndoneAlready, -1 when the list is full or the
// program is not found.
int UndoOnSignal(const std::vector<std::string>& argv);
// The destructor undid it: the handler leaves it alone.
void UndoneAlready(int handle);

// A sshd of the bench's own on 127.0.0.1: host and client keys, config and
// pid file in dir.
class LoopbackSshd {
 public:
  explicit LoopbackSshd(std::string dir) : dir_(std::move(dir)) {}
  ~LoopbackSshd() { StopDaemon(&pid_); }
  // Installs openssh-server if need be, starts sshd, and waits until `ssh
  // true` works. False, with why, if it cannot.
  bool Start(std::string* why);
  // ssh root@127.0.0.1 with the bench's key, then remote.
  std::vector<std::string> Ssh(const std::vector<std::string>& remote) const;
  int port() const { return port_; }
  const std::string& client_key() const { return client_key_; }
  // Key exchange and cipher, as `ssh -v` names them.
  const std::string& algorithms() const { return algorithms_; }

 private:
  std::string dir_, client_key_, algorithms_;
  int port_ = -1;
  pid_t pid_ = -1;
};

// An sshfs mount (Debian's sshfs, FUSE 3, its defaults: attribute and
// directory caches of 20 s) of remote_dir through sshd, at mount_point.
class SshfsMount {
 public:
  SshfsMount(const LoopbackSshd& sshd, std::string remote_dir, std::string mount_point)
      : sshd_(sshd), remote_(std::move(remote_dir)), at_(std::move(mount_point)) {}
  ~SshfsMount();  // fusermount3 -u
  // Installs sshfs if need be and mounts. False, with why, if it cannot.
  bool Mount(std::string* why);
  const std::string& path() const { return at_; }

 private:
  const LoopbackSshd& sshd_;
  std::string remote_, at_;
  bool mounted_ = false;
  int undo_ = -1;
};

// GlusterFS (Debian's glusterfs-server) as a user of one machine would set
// it up: glusterd, one volume of two bricks that replicate each other
// (replica 2) on 127.0.0.2 (its CLI refuses 127.0.0.1 and localhost), the
// bricks in dir, and FUSE mounts of it. glusterd keeps its state where the
// package puts it (/var/lib/glusterd); the bench deletes its volume and
// stops the glusterd it started, and refuses to run beside one it did not.
class GlusterVolume {
 public:
  explicit GlusterVolume(std::string dir);
  ~GlusterVolume();
  bool Start(std::string* why);
  bool Mount(const std::string& at, std::string* why);

 private:
  std::string dir_, name_;
  pid_t glusterd_ = -1;
  bool created_ = false;
  std::vector<std::string> mounts_;
  std::vector<int> undos_;
};

// etcd (Debian's etcd-server), one member, on two loopback ports, its data in dir.
class EtcdMember {
 public:
  explicit EtcdMember(std::string dir) : dir_(std::move(dir)) {}
  ~EtcdMember() { StopDaemon(&pid_); }
  // Installs etcd-server if need be, starts it, and waits until it answers.
  bool Start(std::string* why);
  pid_t pid() const { return pid_; }
  std::string endpoint() const;  // 127.0.0.1:PORT, for clients
  const std::string& version() const { return version_; }

 private:
  std::string dir_, version_;
  int client_port_ = -1;
  pid_t pid_ = -1;
};

}  // namespace onebox::bench

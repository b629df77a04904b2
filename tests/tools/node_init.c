// PID 1 of a test node's pid namespace (tests/integration/node_spaces.h): it
// holds the node's namespaces open and reaps every process that ends up its
// child (orphans of the node are reparented to it), forever. On SIGTERM it
// exits, and the kernel then kills everything left in the namespace: that is
// the node's cleanup. It says "ready" on stdout once running (its /proc is
// mounted by then), then closes stdout.
#define _GNU_SOURCE  // __WALL
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void OnTerm(int sig) {
  (void)sig;
  stop_requested = 1;
}

// Only there so that SIGCHLD ends sigsuspend (its default is to discard it).
static void OnChild(int sig) { (void)sig; }

int main(void) {
  // A pid namespace's init gets only the signals it has a handler for (and
  // SIGKILL or SIGSTOP from outside): SIGTERM needs one to stop it at all.
  sigset_t handled, waiting;
  sigemptyset(&handled);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGCHLD);
  // Blocked outside sigsuspend, so a signal between the checks below and the
  // wait is not lost.
  sigprocmask(SIG_BLOCK, &handled, &waiting);
  sigdelset(&waiting, SIGTERM);
  sigdelset(&waiting, SIGCHLD);
  struct sigaction sa = {0};
  sa.sa_handler = OnTerm;
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = OnChild;
  sigaction(SIGCHLD, &sa, NULL);

  static const char kReady[] = "ready\n";
  if (write(1, kReady, sizeof kReady - 1) != (ssize_t)(sizeof kReady - 1)) return 1;
  close(1);

  for (;;) {
    while (waitpid(-1, NULL, WNOHANG | __WALL) > 0) {
    }
    if (stop_requested) return 0;
    sigsuspend(&waiting);
  }
}

// A program whose first cluster call happens in a vfork child (exec of a
// program stored in DIR), then works in DIR itself: run natively and under
// the shim by tests/integration/shim_test.cc. Usage: vfork_probe DIR
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  char prog[4096], file[4096];
  snprintf(prog, sizeof prog, "%s/prog.sh", argv[1]);
  snprintf(file, sizeof file, "%s/prog.sh", argv[1]);
  fflush(stdout);
  pid_t pid = vfork();
  if (pid == 0) {
    execl(prog, "prog.sh", (char*)NULL);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  printf("child exit %d\n", WEXITSTATUS(status));
  struct stat st;
  for (int i = 0; i < 3; ++i) {
    int r = stat(file, &st);
    printf("stat %d errno %d\n", r, r ? errno : 0);
  }
  return 0;
}

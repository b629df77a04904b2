// The shim's cost on native calls (bench P1), measured in one process: blocks
// of calls through libc's own functions (dlsym on libc.so.6) alternate with
// blocks through the ordinary calls, which a preloaded libonebox.so
// interposes. Both run in the same process, on the same core, moments apart,
// so the load of the machine weighs on both alike (shim_bench's separate
// runs swing by more than 1% on a busy VM). Without a preloaded library the
// ratio reads 1.00 (within 0.3%).
//
//   LD_PRELOAD=build/lib/libonebox.so build/bin/native_ab [WHAT [PATH [ROUNDS [BLOCK]]]]
//
// WHAT: p1 (open, stat, close of PATH; the default), open, stat or close
// (only that one interposed, the others libc's), write (64 bytes to
// /dev/null). PATH defaults to /etc/hostname, ROUNDS to 2000, BLOCK to 500.
// Prints the median over the rounds of interposed time / libc time.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double Now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static int Compare(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  const char* what = argc > 1 ? argv[1] : "p1";
  const char* path = argc > 2 ? argv[2] : "/etc/hostname";
  int rounds = argc > 3 ? atoi(argv[3]) : 2000, block = argc > 4 ? atoi(argv[4]) : 500;
  int (*lib_open)(const char*, int, ...) = NULL;
  int (*lib_stat)(const char*, struct stat*) = NULL;
  int (*lib_close)(int) = NULL;
  ssize_t (*lib_write)(int, const void*, size_t) = NULL;
  void* libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
  if (libc != NULL) {
    lib_open = (int (*)(const char*, int, ...))dlsym(libc, "open");
    lib_stat = (int (*)(const char*, struct stat*))dlsym(libc, "stat");
    lib_close = (int (*)(int))dlsym(libc, "close");
    lib_write = (ssize_t(*)(int, const void*, size_t))dlsym(libc, "write");
  }
  if (!lib_open || !lib_stat || !lib_close || !lib_write || rounds < 1 || block < 1) {
    fprintf(stderr, "usage: native_ab [p1|open|stat|close|write [PATH [ROUNDS [BLOCK]]]] (needs libc.so.6)\n");
    return 2;
  }
  // The interposed side: the ordinary calls for what is measured, libc's for the rest.
  int (*my_open)(const char*, int, ...) = lib_open;
  int (*my_stat)(const char*, struct stat*) = lib_stat;
  int (*my_close)(int) = lib_close;
  int writes = strcmp(what, "write") == 0;
  if (strcmp(what, "p1") == 0 || strcmp(what, "open") == 0) my_open = open;
  if (strcmp(what, "p1") == 0 || strcmp(what, "stat") == 0) my_stat = stat;
  if (strcmp(what, "p1") == 0 || strcmp(what, "close") == 0) my_close = close;
  int null_fd = open("/dev/null", O_WRONLY);
  char buf[64] = {0};
  struct stat st;
  double* ratio = malloc(sizeof(double) * rounds);
  double best[2] = {1e300, 1e300};
  for (int r = 0; r < rounds; ++r) {
    double t[2];
    for (int k = 0; k < 2; ++k) {
      int mine = (k + r) % 2;  // which side goes first alternates too
      double t0 = Now();
      if (writes) {
        for (int i = 0; i < block; ++i)
          if ((mine ? write(null_fd, buf, sizeof buf) : lib_write(null_fd, buf, sizeof buf)) != sizeof buf) return 1;
      } else if (mine) {
        for (int i = 0; i < block; ++i) {
          int fd = my_open(path, O_RDONLY);
          if (fd < 0 || my_stat(path, &st) != 0) return 1;
          my_close(fd);
        }
      } else {
        for (int i = 0; i < block; ++i) {
          int fd = lib_open(path, O_RDONLY);
          if (fd < 0 || lib_stat(path, &st) != 0) return 1;
          lib_close(fd);
        }
      }
      t[mine] = Now() - t0;
      if (t[mine] < best[mine]) best[mine] = t[mine];
    }
    ratio[r] = t[1] / t[0];
  }
  qsort(ratio, rounds, sizeof(double), Compare);
  printf("%s: interposed / libc time, median of %d rounds of %d: %.4f (best blocks: %.1f ns vs %.1f ns per iteration)\n",
         what, rounds, block, ratio[rounds / 2], best[1] / block * 1e9, best[0] / block * 1e9);
  return 0;
}

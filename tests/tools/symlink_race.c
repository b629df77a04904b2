// Run under libonebox.so: stats paths through symlinks that another thread
// makes and removes all the while, and reports any answer that describes a
// file outside the cluster (the shim's symlink-free fast path must never
// follow a symlink it did not know of).
//
//   symlink_race CLUSTER_DIR OUTSIDE_DIR SECONDS
//
// CLUSTER_DIR (made here) gets in/f and, in turns, the symlinks abs ->
// OUTSIDE_DIR, up -> ../../(...)/OUTSIDE_DIR (climbing out of the view) and
// rel -> in. OUTSIDE_DIR/f must exist (a native file). Prints
// "stats N inside N missing N leaks N cycles N" and exits 0.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static char dir[4096], outside[4096];
static struct stat outside_st, inside_st;
static atomic_int stop;
static atomic_long stats, inside, missing, leaks, cycles;

static double Now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void Check(const char* path, int rc, const struct stat* st, int err) {
  atomic_fetch_add(&stats, 1);
  if (rc != 0) {
    if (err != ENOENT) {
      fprintf(stderr, "%s: unexpected errno %d (%s)\n", path, err, strerror(err));
      atomic_fetch_add(&leaks, 1);
    }
    atomic_fetch_add(&missing, 1);
  } else if (st->st_ino == outside_st.st_ino && st->st_dev == outside_st.st_dev) {
    fprintf(stderr, "%s: LEAK: the metadata of %s/f\n", path, outside);
    atomic_fetch_add(&leaks, 1);
  } else if (st->st_ino == inside_st.st_ino && st->st_dev == inside_st.st_dev) {
    atomic_fetch_add(&inside, 1);
  } else {
    fprintf(stderr, "%s: some other file (ino %lu)\n", path, (unsigned long)st->st_ino);
    atomic_fetch_add(&leaks, 1);
  }
}

static void* Statter(void* arg) {
  long id = (long)arg;
  const char* names[] = {"abs/f", "up/f", "rel/f"};
  char path[3][8192];
  for (int i = 0; i < 3; ++i) snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);
  for (unsigned long n = 0; !atomic_load(&stop); ++n) {
    const char* p = path[(n + id) % 3];
    struct stat st;
    int rc;
    switch ((n / 3 + id) % 4) {
      case 0: rc = stat(p, &st); break;
      case 1: rc = lstat(p, &st); break;
      case 2: {
        struct statx stx;
        rc = statx(AT_FDCWD, p, 0, STATX_INO, &stx);
        st.st_ino = stx.stx_ino;
        st.st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
        break;
      }
      default:
        // Nothing in the view answers to abs/f or up/f: access must not find them.
        rc = access(p, F_OK);
        if (rc == 0 && (n + id) % 3 != 2) {
          fprintf(stderr, "%s: LEAK: access found it\n", p);
          atomic_fetch_add(&leaks, 1);
        }
        if (rc == 0) st = inside_st;
    }
    Check(p, rc, &st, errno);
  }
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: symlink_race CLUSTER_DIR OUTSIDE_DIR SECONDS\n");
    return 2;
  }
  snprintf(dir, sizeof dir, "%s", argv[1]);
  snprintf(outside, sizeof outside, "%s", argv[2]);
  double seconds = atof(argv[3]);
  char path[8192], target[8192];
  snprintf(path, sizeof path, "%s/f", outside);
  if (stat(path, &outside_st) != 0) return perror(path), 1;
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) return perror(dir), 1;
  snprintf(path, sizeof path, "%s/in", dir);
  if (mkdir(path, 0755) != 0 && errno != EEXIST) return perror(path), 1;
  snprintf(path, sizeof path, "%s/in/f", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || write(fd, "inside\n", 7) != 7 || close(fd) != 0 || stat(path, &inside_st) != 0) return perror(path), 1;

  pthread_t threads[2];
  for (long i = 0; i < 2; ++i) pthread_create(&threads[i], NULL, Statter, (void*)i);
  // Climbs far above the view root, then down to OUTSIDE_DIR.
  char up[8192] = "";
  for (int i = 0; i < 40; ++i) strcat(up, "../");
  strcat(up, outside[0] == '/' ? outside + 1 : outside);
  const char* targets[][2] = {{"abs", outside}, {"up", up}, {"rel", "in"}};
  double end = Now() + seconds;
  while (Now() < end) {
    for (int i = 0; i < 3; ++i) {
      snprintf(path, sizeof path, "%s/%s", dir, targets[i][0]);
      snprintf(target, sizeof target, "%s", targets[i][1]);
      if (symlink(target, path) != 0) return perror(path), 1;
      usleep(200);  // the statters go through it meanwhile
      if (unlink(path) != 0) return perror(path), 1;
      // Let the agent find the view symlink-free again, so the next one is
      // made while the fast path is on.
      usleep(15000);
    }
    atomic_fetch_add(&cycles, 1);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 2; ++i) pthread_join(threads[i], NULL);
  printf("stats %ld inside %ld missing %ld leaks %ld cycles %ld\n", atomic_load(&stats), atomic_load(&inside),
         atomic_load(&missing), atomic_load(&leaks), atomic_load(&cycles));
  return 0;
}

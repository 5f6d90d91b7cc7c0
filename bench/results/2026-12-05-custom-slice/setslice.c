#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <dirent.h>
#include <string.h>
struct sched_attr { uint32_t size, sched_policy; uint64_t sched_flags; int32_t sched_nice; uint32_t sched_priority; uint64_t sched_runtime, sched_deadline, sched_period; uint32_t util_min, util_max; };
int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "setslice PID runtime_ns\n"); return 2; }
  char path[64]; snprintf(path, sizeof path, "/proc/%s/task", argv[1]);
  DIR *d = opendir(path); if (!d) { perror(path); return 1; }
  struct dirent *e; uint64_t rt = strtoull(argv[2], 0, 10);
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int tid = atoi(e->d_name);
    struct sched_attr a; memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, tid, &a, sizeof a, 0)) { perror("getattr"); continue; }
    uint64_t before = a.sched_runtime;
    a.size = sizeof a; a.sched_runtime = rt; a.sched_flags = 0;
    if (syscall(SYS_sched_setattr, tid, &a, 0)) { perror("setattr"); continue; }
    struct sched_attr b; memset(&b, 0, sizeof b);
    syscall(SYS_sched_getattr, tid, &b, sizeof b, 0);
    printf("tid %d policy %u runtime %lu -> %lu\n", tid, b.sched_policy, before, b.sched_runtime);
  }
  return 0;
}

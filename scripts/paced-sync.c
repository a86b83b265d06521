// How a log written at a steady pace and synced by group commit behaves on this disk, by the way
// it is written and synced (BENCHMARKS.md, "Session 11: the sync-flush tail"): 20 KiB appended
// every 1 ms to a preallocated file, by a writer thread, while a syncer thread syncs up to the
// newest written byte whenever there is something new (the broker's flusher). The file is
// preallocated with fallocate (unwritten extents: the first sync of each block converts its
// extent, a journal commit) or written with zeros and synced first ("zeroed": the extents are
// written and a sync has only data to write); appends go through a shared map (memcpy) or
// pwrite; the sync is msync(MS_SYNC) of the range or fdatasync.
//
//   cc -O2 -pthread -o paced-sync scripts/paced-sync.c
//   ./paced-sync FILE fallocated|zeroed|zeroed-dropped map|pwrite msync|fdatasync SECONDS
//
// Prints one line: per append, the time to copy it in (p99 / p99.9 / max, microseconds) and the
// writer thread's minor and major faults; per sync, its duration (p50 / p99 / p99.9); per
// append, the time from its start to the end of the sync covering it (p50 / p99 / p99.9), the
// number that the sync-flush target of issue 14 is about.
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (20 * 1024)
#define PAGE 4096

static int fd;
static char *map;
static int use_map, use_msync;
static long chunks;
static _Atomic long written; // chunks fully written
static _Atomic long synced;  // chunks covered by a finished sync
static _Atomic int done;
static double *append_start, *durable_at, *copy_us, *sync_us;
static long syncs;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double pct(double *v, long n, double p) {
  return v[(long)(n * p) < n ? (long)(n * p) : n - 1];
}

static void *syncer(void *arg) {
  (void)arg;
  long from = 0;
  while (1) {
    long to = atomic_load(&written);
    if (to == from) {
      if (atomic_load(&done)) break;
      // The broker's flusher sleeps on a condvar; a short sleep keeps this simple.
      struct timespec t = {0, 20000};
      nanosleep(&t, NULL);
      continue;
    }
    double began = now();
    if (use_msync) {
      long start = from * CHUNK / PAGE * PAGE;
      if (msync(map + start, to * CHUNK - start, MS_SYNC)) { perror("msync"); exit(1); }
    } else if (fdatasync(fd)) {
      perror("fdatasync");
      exit(1);
    }
    double ended = now();
    sync_us[syncs++] = (ended - began) * 1e6;
    for (long i = from; i < to; i++) durable_at[i] = ended;
    atomic_store(&synced, to);
    from = to;
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s FILE fallocated|zeroed|zeroed-dropped map|pwrite msync|fdatasync SECONDS\n", argv[0]);
    return 2;
  }
  int zeroed = strncmp(argv[2], "zeroed", 6) == 0;
  int drop = strcmp(argv[2], "zeroed-dropped") == 0;
  use_map = strcmp(argv[3], "map") == 0;
  use_msync = strcmp(argv[4], "msync") == 0;
  chunks = atol(argv[5]) * 1000;
  if (use_msync && !use_map) { fprintf(stderr, "msync needs map\n"); return 2; }
  long size = (chunks + 1) * CHUNK;
  fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) { perror("open"); return 1; }
  if (posix_fallocate(fd, 0, size)) { perror("fallocate"); return 1; }
  if (zeroed) {
    char *zeros = calloc(1, 1 << 20);
    for (long at = 0; at < size; at += 1 << 20) pwrite(fd, zeros, 1 << 20, at);
    free(zeros);
  }
  fsync(fd);
  // zeroed-dropped: the zeros' pages leave the page cache and are read again below, as a
  // segment zeroed by one process and opened by another would be.
  if (drop) posix_fadvise(fd, 0, size, POSIX_FADV_DONTNEED);
  // The pages in the page cache first, as the broker's preparer does ahead of the writer.
  readahead(fd, 0, size);
  char *scratch = malloc(1 << 20);
  for (long at = 0; at < size; at += 1 << 20) pread(fd, scratch, 1 << 20, at);
  free(scratch);
  map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) { perror("mmap"); return 1; }
  append_start = calloc(chunks, sizeof(double));
  durable_at = calloc(chunks, sizeof(double));
  copy_us = calloc(chunks, sizeof(double));
  sync_us = calloc(chunks, sizeof(double));
  char block[CHUNK];
  memset(block, 1, sizeof block);

  pthread_t thread;
  pthread_create(&thread, NULL, syncer, NULL);
  struct rusage before, after;
  getrusage(RUSAGE_THREAD, &before);
  double start = now();
  for (long i = 0; i < chunks; i++) {
    double due = start + i / 1000.0;
    while (now() < due) {
      double wait = due - now();
      if (wait > 50e-6) {
        struct timespec t = {0, (long)((wait - 50e-6) * 1e9)};
        nanosleep(&t, NULL);
      }
    }
    double began = now();
    append_start[i] = began;
    if (use_map) {
      memcpy(map + i * CHUNK, block, CHUNK);
    } else if (pwrite(fd, block, CHUNK, i * CHUNK) != CHUNK) {
      perror("pwrite");
      return 1;
    }
    copy_us[i] = (now() - began) * 1e6;
    atomic_store(&written, i + 1);
  }
  getrusage(RUSAGE_THREAD, &after);
  atomic_store(&done, 1);
  pthread_join(thread, NULL);

  double *latency = calloc(chunks, sizeof(double));
  for (long i = 0; i < chunks; i++) latency[i] = (durable_at[i] - append_start[i]) * 1e6;
  qsort(copy_us, chunks, sizeof(double), cmp);
  qsort(sync_us, syncs, sizeof(double), cmp);
  qsort(latency, chunks, sizeof(double), cmp);
  printf("%s %s %s: copy p99 %.0f p99.9 %.0f max %.0f us, faults minor %ld major %ld; "
         "%ld syncs p50 %.0f p99 %.0f p99.9 %.0f us; durable p50 %.0f p99 %.0f p99.9 %.0f us\n",
         argv[2], argv[3], argv[4], pct(copy_us, chunks, 0.99), pct(copy_us, chunks, 0.999),
         copy_us[chunks - 1], after.ru_minflt - before.ru_minflt, after.ru_majflt - before.ru_majflt,
         syncs, pct(sync_us, syncs, 0.5), pct(sync_us, syncs, 0.99), pct(sync_us, syncs, 0.999),
         pct(latency, chunks, 0.5), pct(latency, chunks, 0.99), pct(latency, chunks, 0.999));
  munmap(map, size);
  close(fd);
  unlink(argv[1]);
  return 0;
}

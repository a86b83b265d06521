// What bringing a fresh segment's pages into the page cache ahead of a writer costs, by the way
// it is done (BENCHMARKS.md, "Session 13: the preparer's read-ahead"): a new file of MIB MiB,
// fallocated (unwritten extents, as the broker's segments) and mapped shared, has its pages
// brought in by 256 KiB chunks in order, as the preparer's read-ahead thread does; then a writer
// copies 1 KiB records through the map into it (the broker's appends), leaving its last 40 MiB;
// then 500 appends of 20 KiB each msynced (sync flush) go into those.
//
//   cc -O2 -o read-ahead-cost scripts/read-ahead-cost.c
//   ./read-ahead-cost FILE MODE MIB
//
// MODE: open-pread (open the file for each chunk and pread it into a buffer: the preparer up to
// session 12), open-splice (open for each chunk and splice it through a pipe into /dev/null: no
// copy), keep-pread and keep-splice (the same through one descriptor kept open), readahead-mincore
// (readahead(2) through a kept descriptor, then mincore and a pread of any page left out),
// madvise-mincore (MADV_WILLNEED on the map, then the same).
//
// Prints one line: the CPU time of bringing the pages in (and s/GiB), pages left out and read
// again, pages not in memory after; the writer's CPU time and faults; the bytes the disk wrote
// during the 500 synced appends (/sys/block/DEV/stat, DEV from $DISK, vda by default: other
// processes' writes count too) and the time per append and msync; the kB of the file mapped by
// 2 MiB entries (FilePmdMapped). A descriptor's read-ahead state grows its pages: kept open,
// pread and splice make 2 MiB pages, which a write through the map dirties whole.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)
#define PAGE 4096

static double cpu(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static long disk_written(void) {
  char path[128];
  const char *disk = getenv("DISK") ? getenv("DISK") : "vda";
  snprintf(path, sizeof path, "/sys/block/%s/stat", disk);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  long x[7] = {0};
  for (int i = 0; i < 7; i++)
    if (fscanf(f, "%ld", &x[i]) != 1) break;
  fclose(f);
  return x[6] * 512;
}

static int splice_chunk(int file, long off, int pipe_r, int pipe_w, int null) {
  loff_t at = off;
  long left = CHUNK;
  while (left > 0) {
    ssize_t n = splice(file, &at, pipe_w, NULL, left, 0);
    if (n < 0) { perror("splice"); return -1; }
    if (n == 0) break;
    left -= n;
    while (n > 0) {
      ssize_t m = splice(pipe_r, NULL, null, NULL, n, 0);
      if (m <= 0) { perror("splice to /dev/null"); return -1; }
      n -= m;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s FILE MODE MIB\n", argv[0]);
    return 2;
  }
  const char *path = argv[1], *mode = argv[2];
  long mib = atol(argv[3]), len = mib << 20;
  if (mib < 64) { fprintf(stderr, "MIB: at least 64\n"); return 2; }
  unlink(path);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, len) || posix_fallocate(fd, 0, len) || fsync(fd)) {
    perror(path);
    return 1;
  }
  char *map = mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int kept = open(path, O_RDONLY);
  int pipefd[2];
  if (map == MAP_FAILED || kept < 0 || pipe(pipefd)) { perror("setup"); return 1; }
  fcntl(pipefd[1], F_SETPIPE_SZ, CHUNK);
  int null = open("/dev/null", O_WRONLY);
  static char scratch[CHUNK];
  unsigned char resident[CHUNK / PAGE];
  long left_out = 0, probes = 0;

  double c0 = cpu();
  for (long off = 0; off < len; off += CHUNK) {
    int check = 0;
    if (!strcmp(mode, "open-pread") || !strcmp(mode, "open-splice")) {
      int f = open(path, O_RDONLY);
      int bad = mode[5] == 'p' ? pread(f, scratch, CHUNK, off) < 0
                               : splice_chunk(f, off, pipefd[0], pipefd[1], null) < 0;
      close(f);
      if (bad) return 1;
    } else if (!strcmp(mode, "open-probe")) {
      int f = open(path, O_RDONLY), reads = 0;
      for (;;) {
        mincore(map + off, CHUNK, resident);
        int i = 0;
        while (i < CHUNK / PAGE && (resident[i] & 1)) i++;
        if (i == CHUNK / PAGE) break;
        if (pread(f, scratch, PAGE, off + (long)i * PAGE) < 0) { perror("pread"); return 1; }
        reads++;
      }
      probes += reads;
      close(f);
    } else if (!strcmp(mode, "keep-pread")) {
      if (pread(kept, scratch, CHUNK, off) < 0) { perror("pread"); return 1; }
    } else if (!strcmp(mode, "keep-splice")) {
      if (splice_chunk(kept, off, pipefd[0], pipefd[1], null)) return 1;
    } else if (!strcmp(mode, "readahead-mincore")) {
      readahead(kept, off, CHUNK);
      check = 1;
    } else if (!strcmp(mode, "madvise-mincore")) {
      madvise(map + off, CHUNK, MADV_WILLNEED);
      check = 1;
    } else {
      fprintf(stderr, "unknown mode %s\n", mode);
      return 2;
    }
    if (check) {
      mincore(map + off, CHUNK, resident);
      for (int i = 0; i < CHUNK / PAGE; i++)
        if (!(resident[i] & 1)) {
          left_out++;
          if (pread(kept, scratch, PAGE, off + (long)i * PAGE) < 0) { perror("pread"); return 1; }
        }
    }
  }
  double c1 = cpu();
  if (probes) fprintf(stderr, "%ld one-page reads\n", probes);
  unsigned char *all = malloc(len / PAGE);
  mincore(map, len, all);
  long absent = 0;
  for (long i = 0; i < len / PAGE; i++) absent += !(all[i] & 1);

  char record[1024];
  memset(record, 7, sizeof record);
  long synced_from = len - (40L << 20);
  struct rusage r0, r1;
  getrusage(RUSAGE_THREAD, &r0);
  double w0 = cpu();
  for (long off = 0; off + 1024 <= synced_from; off += 1024) memcpy(map + off, record, 1024);
  double w1 = cpu();
  getrusage(RUSAGE_THREAD, &r1);

  long d0 = disk_written();
  double s0 = now();
  for (long i = 0; i < 500; i++) {
    long off = synced_from + i * 20480, page = off / PAGE * PAGE;
    memset(map + off, 7, 20480);
    msync(map + page, off + 20480 - page, MS_SYNC);
  }
  double s1 = now();
  long d1 = disk_written();

  char line[256];
  long pmd = 0;
  FILE *rollup = fopen("/proc/self/smaps_rollup", "r");
  while (rollup && fgets(line, sizeof line, rollup)) sscanf(line, "FilePmdMapped: %ld", &pmd);
  if (rollup) fclose(rollup);
  printf("%-18s %ld MiB: ahead cpu %.3f s (%.2f s/GiB), left out %ld, absent %ld | writer cpu %.3f s"
         " (%.2f s/GiB), minflt %ld, majflt %ld | 500 x 20 KiB msynced: %.1f MB written, %.0f us"
         " each | PMD-mapped %ld kB\n",
         mode, mib, c1 - c0, (c1 - c0) * 1024 / mib, left_out, absent, w1 - w0,
         (w1 - w0) * 1024 / mib, r1.ru_minflt - r0.ru_minflt, r1.ru_majflt - r0.ru_majflt,
         (d1 - d0) / 1e6, (s1 - s0) * 1e6 / 500, pmd);
  munmap(map, len);
  unlink(path);
  return 0;
}

// read-ahead-windows: how bringing a fresh fallocated file's pages into the page cache by 256 KiB
// chunks (in order, as smq's preparer does) behaves per system call, which folio sizes it leaves,
// and what msync of small appends then writes. A research tool, not part of the broker
// (BENCHMARKS.md, "Session 15: the kernel's read-ahead windows").
//
//   cc -O2 -o read-ahead-windows scripts/read-ahead-windows.c
//   ./read-ahead-windows FILE MODE MIB        (root: uses a tracefs instance and /proc/kpageflags)
//
// MODE (each is applied to every 256 KiB chunk, chunks in order, then MADV_POPULATE_WRITE of
// the chunk through a shared map, as the broker does; POPULATE=0 leaves that out):
//   today         open per chunk, one 256 KiB pread, close (smq's MappedFile::read_ahead)
//   random64      open per chunk, POSIX_FADV_RANDOM, PIECE KiB preads (set PIECE=64)
//   keep          one descriptor kept open, 256 KiB preads
//   pwrite        open per chunk, pwrite zeros in PIECE KiB pieces (16 by default) to pieces
//                 mincore says are absent.  DESTRUCTIVE if a writer has written there already.
//   willneed      open per chunk, POSIX_FADV_WILLNEED of the chunk
//   popread       MADV_POPULATE_READ of the chunk (the map's fault read-around)
//   hugepage      MADV_HUGEPAGE on the map, then MADV_POPULATE_READ of the chunk
//   chain         not by chunks: chains of the kernel's own async read-ahead kept small.  Each
//                 chain: a fresh descriptor reads the last KiB before the frontier (sets
//                 prev_pos) and one page at it (initial window: 4 pages, order 0, marker on the
//                 2nd); then STEPS (3) times a fresh descriptor reads only the newest marker
//                 page (async window, order 2, 16 / ~70 / ~280 pages); holes the kernel leaves
//                 are read through a POSIX_FADV_RANDOM descriptor (exact, order 0, no marker);
//                 the last window's marker folio is dropped (POSIX_FADV_DONTNEED) and read again
//                 through a POSIX_FADV_RANDOM descriptor, so that no marker is left for a fault
//                 of the map to hit; then the chain's range is populated.
// Env: CHUNK_KB (256), PIECE (KiB, for pwrite/random64), POPULATE (1), WRITER (1).
//
// Prints per kind of system call: count, p50, p99, max (us, clock_gettime MONOTONIC around the
// call); folio orders added to the page cache for this inode (tracepoint
// filemap:mm_filemap_add_to_page_cache in tracefs instance "rares", filtered by inode); the
// readahead windows (readahead:page_cache_ra_order / ra_unbounded); a census of the folios in the
// file's page cache at the end from /proc/self/pagemap + /proc/kpageflags (compound head/tail
// bits); the pages ext4 wrote (ext4:ext4_writepages_result pages_written, this inode) and
// the bytes /dev/vda wrote during 500 appends of 20 KiB each msynced.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

#define PAGE 4096L
#define TR "/sys/kernel/tracing/instances/rares/"

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

// Per-kind latency records.
#define KINDS 12
static const char *kind_name[KINDS];
static double *lat[KINDS];
static long nlat[KINDS], caplat[KINDS];
static int kind(const char *name) {
  for (int i = 0; i < KINDS; i++) {
    if (kind_name[i] && !strcmp(kind_name[i], name)) return i;
    if (!kind_name[i]) { kind_name[i] = name; return i; }
  }
  abort();
}
static void rec(int k, double us) {
  if (nlat[k] == caplat[k]) {
    caplat[k] = caplat[k] ? caplat[k] * 2 : 4096;
    lat[k] = realloc(lat[k], caplat[k] * sizeof(double));
  }
  lat[k][nlat[k]++] = us;
}
static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double cpu_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
// CPU=1: record the thread's CPU time spent in the call instead of the wall time (on a busy
// machine the wall time includes waiting for the CPU after the call).
static int use_cpu;
#define TIMED(name, expr)                       \
  ({                                            \
    static int k_ = -1;                         \
    if (k_ < 0) k_ = kind(name);                \
    double t0_ = use_cpu ? cpu_us() : now_us(); \
    long r_ = (long)(expr);                     \
    rec(k_, (use_cpu ? cpu_us() : now_us()) - t0_); \
    r_;                                         \
  })

static void wr(const char *file, const char *s) {
  char p[256];
  snprintf(p, sizeof p, TR "%s", file);
  int f = open(p, O_WRONLY | O_TRUNC);
  if (f < 0 || write(f, s, strlen(s)) < 0) { perror(p); }
  if (f >= 0) close(f);
}

static long disk_written(void) {
  FILE *f = fopen("/sys/block/vda/stat", "r");
  if (!f) return 0;
  long x[7] = {0};
  for (int i = 0; i < 7; i++)
    if (fscanf(f, "%ld", &x[i]) != 1) break;
  fclose(f);
  return x[6] * 512;
}

static char *buf;

int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: %s FILE MODE MIB\n", argv[0]); return 2; }
  const char *path = argv[1], *mode = argv[2];
  long mib = atol(argv[3]), len = mib << 20;
  long chunk = (getenv("CHUNK_KB") ? atol(getenv("CHUNK_KB")) : 256) * 1024;
  long piece = (getenv("PIECE") ? atol(getenv("PIECE")) : 16) * 1024;
  int populate = getenv("POPULATE") ? atoi(getenv("POPULATE")) : 1;
  int writer = getenv("WRITER") ? atoi(getenv("WRITER")) : 0;
  use_cpu = getenv("CPU") && atoi(getenv("CPU"));
  buf = aligned_alloc(PAGE, 4 << 20);
  memset(buf, 0, 4 << 20);

  unlink(path);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, len) || posix_fallocate(fd, 0, len) || fsync(fd)) {
    perror(path);
    return 1;
  }
  struct stat st;
  fstat(fd, &st);
  char *map = mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) { perror("mmap"); return 1; }
  if (!strcmp(mode, "hugepage")) madvise(map, len, MADV_HUGEPAGE);

  // Tracing: this inode only.
  char filt[128];
  mkdir("/sys/kernel/tracing/instances/rares", 0755);  // ours; removed at the end
  wr("tracing_on", "0");
  wr("buffer_size_kb", "65536");
  wr("trace", "");
  snprintf(filt, sizeof filt, "i_ino == %lu", (unsigned long)st.st_ino);
  wr("events/filemap/mm_filemap_add_to_page_cache/filter", filt);
  wr("events/filemap/mm_filemap_add_to_page_cache/enable", "1");
  const char *raev[] = {"page_cache_sync_ra", "page_cache_async_ra", "page_cache_ra_order",
                        "page_cache_ra_unbounded"};
  for (int i = 0; i < 4; i++) {
    char p[128];
    snprintf(p, sizeof p, "events/readahead/%s/filter", raev[i]);
    wr(p, filt);
    snprintf(p, sizeof p, "events/readahead/%s/enable", raev[i]);
    wr(p, "1");
  }
  snprintf(filt, sizeof filt, "ino == %lu", (unsigned long)st.st_ino);
  wr("events/ext4/ext4_writepages_result/filter", filt);
  wr("events/ext4/ext4_writepages_result/enable", "1");
  wr("tracing_on", "1");

  unsigned char *vec = malloc(len / PAGE);
  int kept = open(path, O_RDONLY);
  double t_start = now_us(), c_start = cpu_us();
  if (!strncmp(mode, "chain", 5)) {
    // Chains of async read-ahead windows started from a 4-page seed, each step a fresh
    // descriptor reading only the marker page; the last window's marker folio dropped and read
    // again through a POSIX_FADV_RANDOM descriptor (exact pages, no marker); holes filled the
    // same way.  STEPS (3) windows per chain.
    long steps = getenv("STEPS") ? atol(getenv("STEPS")) : 3, npages = len / PAGE, front = 0;
    while (front < npages) {
      long a = front;
      int f = open(path, O_RDONLY);
      if (a > 0) TIMED("prevpos", pread(f, buf, 1024, a * PAGE - 1024));  // sets prev_pos
      TIMED("seed", pread(f, buf, PAGE, a * PAGE));                    // seed: [a, a+4) order 0
      close(f);
      long marker = a + 1;
      front = a;
      for (long k = 0; k <= steps; k++) {
        // find the frontier and holes: pages [front, ...) — the window just made
        long lim = front + 640 < npages ? front + 640 : npages;  // windows here are at most ~300 pages
        mincore(map + front * PAGE, (lim - front) * PAGE, vec);
        long p = 0, first_in = -1;
        while (front + p < lim && !(vec[p] & 1)) p++;  // holes before the window
        if (front + p < lim) first_in = front + p;
        for (long h = 0; h < p && first_in >= 0; h++) {  // exact refill of each hole
          int r = open(path, O_RDONLY);
          posix_fadvise(r, 0, 0, POSIX_FADV_RANDOM);
          TIMED("holefill", pread(r, buf, PAGE, (front + h) * PAGE));
          close(r);
        }
        while (front + p < lim && (vec[p] & 1)) p++;  // the window
        long win_start = first_in;
        front = front + p;
        if (k == steps || front >= npages) {
          // neutralize the marker at the first folio of the last window
          if (win_start >= 0 && k > 0) {
            long o = __builtin_ctzl(win_start | 4);  // order of its first folio (<= 2)
            long n = 1L << (o > 2 ? 2 : o);
            int r = open(path, O_RDONLY);
            TIMED("dontneed", posix_fadvise(r, win_start * PAGE, n * PAGE, POSIX_FADV_DONTNEED));
            posix_fadvise(r, 0, 0, POSIX_FADV_RANDOM);
            TIMED("refill", pread(r, buf, n * PAGE, win_start * PAGE));
            close(r);
          }
          break;
        }
        if (k > 0) marker = win_start;
        f = open(path, O_RDONLY);
        if (k == 0) TIMED("step1", pread(f, buf, PAGE, marker * PAGE));
        else if (k == 1) TIMED("step2", pread(f, buf, PAGE, marker * PAGE));
        else TIMED("step3+", pread(f, buf, PAGE, marker * PAGE));
        close(f);
      }
      if (populate)
        for (long o = a * PAGE; o < front * PAGE; o += chunk) {
          long l = front * PAGE - o < chunk ? front * PAGE - o : chunk;
          TIMED("populate", madvise(map + o, l, MADV_POPULATE_WRITE));
        }
    }
  }
  for (long off = 0; off < len && strncmp(mode, "chain", 5); off += chunk) {
    if (!strcmp(mode, "today")) {
      int f = TIMED("open", open(path, O_RDONLY));
      TIMED("pread", pread(f, buf, chunk, off));
      close(f);
    } else if (!strcmp(mode, "random64")) {
      int f = open(path, O_RDONLY);
      posix_fadvise(f, 0, 0, POSIX_FADV_RANDOM);
      for (long o = off; o < off + chunk; o += piece) TIMED("pread", pread(f, buf, piece, o));
      close(f);
    } else if (!strcmp(mode, "keep")) {
      TIMED("pread", pread(kept, buf, chunk, off));
    } else if (!strcmp(mode, "pwrite")) {
      int f = open(path, O_WRONLY);
      mincore(map + off, chunk, vec);
      for (long o = off; o < off + chunk; o += piece) {
        int absent = 0;
        for (long p = o; p < o + piece; p += PAGE) absent |= !(vec[(p - off) / PAGE] & 1);
        if (absent) TIMED("pwrite", pwrite(f, buf, piece, o));
      }
      close(f);
    } else if (!strcmp(mode, "willneed")) {
      int f = open(path, O_RDONLY);
      TIMED("fadvise", posix_fadvise(f, off, chunk, POSIX_FADV_WILLNEED));
      close(f);
    } else if (!strcmp(mode, "hugepage") || !strcmp(mode, "popread")) {
      TIMED("popread", madvise(map + off, chunk, MADV_POPULATE_READ));
    } else if (!strcmp(mode, "chase")) {
      int f = open(path, O_RDONLY);
      TIMED("pread", pread(f, buf, PAGE, off));
      close(f);
    } else {
      fprintf(stderr, "unknown mode %s\n", mode);
      return 2;
    }
    if (populate) TIMED("populate", madvise(map + off, chunk, MADV_POPULATE_WRITE));
  }
  double t_fill = now_us() - t_start, c_fill = cpu_us() - c_start;
  mincore(map, len, vec);
  long absent = 0;
  for (long i = 0; i < len / PAGE; i++) absent += !(vec[i] & 1);

  // Census of folios through pagemap + kpageflags (maps every page readable first: the pages
  // are all cached, so this reads nothing).
  madvise(map, len, MADV_POPULATE_READ);
  long hist[12] = {0}, order0 = 0, heads = 0, unmapped = 0;
  {
    int pm = open("/proc/self/pagemap", O_RDONLY), kf = open("/proc/kpageflags", O_RDONLY);
    long n = len / PAGE;
    uint64_t *ent = malloc(n * 8);
    pread(pm, ent, n * 8, (long)((uintptr_t)map / PAGE) * 8);
    long run = 0;  // pages of the current compound folio
    for (long i = 0; i <= n; i++) {
      uint64_t fl = 0;
      int present = 0;
      if (i < n && (ent[i] >> 63)) {
        uint64_t pfn = ent[i] & ((1ULL << 55) - 1);
        pread(kf, &fl, 8, pfn * 8);
        present = 1;
      } else if (i < n) unmapped++;
      int head = present && (fl >> 15 & 1), tail = present && (fl >> 16 & 1);
      if (run && !tail) {  // the folio being counted ended
        int o = 0;
        while ((1L << o) < run) o++;
        hist[o]++;
        run = 0;
      }
      if (head) { heads++; run = 1; }
      else if (tail && run) run++;
      else if (present && !tail) { order0++; hist[0]++; }
    }
    close(pm);
    close(kf);
    free(ent);
  }
  // hist[0] counted order0 directly; compound ones by size.

  // The writer: 1 KiB records through the map, leaving the last 40 MiB.
  long synced_from = len - (40L << 20);
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  double w0 = now_us();
  if (writer) {
    char record[1024];
    memset(record, 7, sizeof record);
    for (long off = 0; off + 1024 <= synced_from; off += 1024) memcpy(map + off, record, 1024);
  }
  double w1 = now_us();
  getrusage(RUSAGE_SELF, &r1);
  // Write back what is dirty before the msync test so that it measures the appends only.
  if (writer) fsync(fd);
  wr("trace_marker", "MSYNC-START");
  long d0 = disk_written();
  double s0 = now_us();
  for (long i = 0; i < 500; i++) {
    long off = synced_from + i * 20480, page = off / PAGE * PAGE;
    memset(map + off, 7, 20480);
    TIMED("msync", msync(map + page, off + 20480 - page, MS_SYNC));
  }
  double s1 = now_us();
  long d1 = disk_written();
  wr("tracing_on", "0");

  // Parse the trace.
  long addo[12] = {0}, nsync = 0, nasync = 0, nord = 0, nunb = 0, wpages = 0;
  long rasz_max = 0, rasz_hist[13] = {0}, ordo[12] = {0};
  {
    char p[256];
    snprintf(p, sizeof p, TR "trace");
    FILE *t = fopen(p, "r");
    char line[1024];
    int after = 0;
    while (t && fgets(line, sizeof line, t)) {
      char *s;
      if (strstr(line, "MSYNC-START")) after = 1;
      if (getenv("TRACE") && !after && strstr(line, "page_cache_")) fputs(strstr(line, "page_cache_"), stderr);
      if ((s = strstr(line, "mm_filemap_add_to_page_cache:"))) {
        char *o = strstr(s, "order=");
        if (o && !after) { int v = atoi(o + 6); addo[v > 11 ? 11 : v]++; };
      } else if (strstr(line, "page_cache_sync_ra:")) nsync += !after;
      else if (strstr(line, "page_cache_async_ra:")) nasync += !after;
      else if ((s = strstr(line, "page_cache_ra_order:"))) {
        nord += !after;
        char *z = strstr(s, " size="), *o = strstr(s, " order=");
        long sz = z ? atol(z + 6) : 0;
        if (o) { int v = atoi(o + 7); ordo[v > 11 ? 11 : v]++; };
        if (sz > rasz_max) rasz_max = sz;
        int b = 0;
        while ((1L << b) < sz && b < 12) b++;
        rasz_hist[b]++;
      } else if ((s = strstr(line, "page_cache_ra_unbounded:"))) {
        nunb += !after;
        char *z = strstr(s, "nr_to_read=");
        long sz = z ? atol(z + 11) : 0;
        if (sz > rasz_max) rasz_max = sz;
      } else if ((s = strstr(line, "ext4_writepages_result:")) && after) {
        char *z = strstr(s, "pages_written ");
        if (z) wpages += atol(z + 14);
      }
    }
    if (t) fclose(t);
  }
  wr("events/enable", "0");
  wr("buffer_size_kb", "1024");
  rmdir("/sys/kernel/tracing/instances/rares");

  printf("== %s%s %ld MiB chunk %ld KiB: fill %.0f ms wall, %.0f ms CPU, absent after %ld\n", mode, use_cpu ? " (per-call CPU time)" : " (per-call wall time)", mib, chunk / 1024,
         t_fill / 1e3, c_fill / 1e3, absent);
  for (int k = 0; k < KINDS && kind_name[k]; k++) {
    long imax = 0;
    for (long i = 0; i < nlat[k]; i++) if (lat[k][i] > lat[k][imax]) imax = i;
    qsort(lat[k], nlat[k], sizeof(double), cmpd);
    double tot = 0;
    for (long i = 0; i < nlat[k]; i++) tot += lat[k][i];
    long n = nlat[k];
    printf("  %-9s n %6ld  p50 %7.1f  p99 %7.1f  p99.9 %7.1f  max %7.1f us  total %.0f ms  (max at #%ld)  >500us %ld\n",
           kind_name[k], n, lat[k][n / 2], lat[k][n * 99 / 100], lat[k][n * 999 / 1000],
           lat[k][n - 1], tot / 1e3, imax, ({ long c = 0; for (long i = 0; i < n; i++) c += lat[k][i] > 500; c; }));
  }
  printf("  folios added by order (trace):");
  for (int o = 0; o < 12; o++)
    if (addo[o]) printf(" o%d:%ld(%ld MiB)", o, addo[o], (addo[o] << o) * 4 / 1024);
  printf("\n  census at end (kpageflags) by order:");
  for (int o = 0; o < 12; o++)
    if (hist[o]) printf(" o%d:%ld", o, hist[o]);
  printf("  unmapped %ld\n", unmapped);
  printf("  ra events: sync %ld async %ld ra_order %ld unbounded %ld; max window %ld pages; windows by size (pages <=2^b):",
         nsync, nasync, nord, nunb, rasz_max);
  for (int b = 0; b < 13; b++)
    if (rasz_hist[b]) printf(" %ld:%ld", 1L << b, rasz_hist[b]);
  printf("; ra_order events by order:");
  for (int o = 0; o < 12; o++)
    if (ordo[o]) printf(" o%d:%ld", o, ordo[o]);
  printf("\n  writer %.0f ms minflt %ld | 500 x 20 KiB msynced: ext4 wrote %ld pages (%.1f MB), vda %.1f MB, %.0f us each\n",
         (w1 - w0) / 1e3, r1.ru_minflt - r0.ru_minflt, wpages, wpages * 4096 / 1e6, (d1 - d0) / 1e6,
         (s1 - s0) / 500);
  munmap(map, len);
  close(fd);
  close(kept);
  unlink(path);
  return 0;
}

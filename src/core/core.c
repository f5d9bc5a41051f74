/* core: status strings, errors, rank-0 logging, checks, timers, RNG,
 * progress, atomic files. */
#include "core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *losa_status_str(losa_status s)
{
    switch (s) {
    case LOSA_OK: return "ok";
    case LOSA_ERR_IO: return "i/o error";
    case LOSA_ERR_FORMAT: return "format error";
    case LOSA_ERR_UNSUPPORTED: return "unsupported";
    case LOSA_ERR_ARG: return "bad argument";
    case LOSA_ERR_NOMEM: return "out of memory";
    case LOSA_ERR_NUMERIC: return "non-finite value";
    case LOSA_ERR_MPI: return "MPI error";
    case LOSA_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

static char errbuf[1024];
static int log_rank = 0;
static int log_quiet = 0;
static void (*abort_hook)(int) = NULL;

losa_status core_err(losa_status s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return s;
}

const char *core_errmsg(void) { return errbuf[0] ? errbuf : "unknown error"; }

void core_log_init(int rank) { log_rank = rank; }
void core_log_quiet(int quiet) { log_quiet = quiet; }

void core_log(const char *fmt, ...)
{
    if (log_rank != 0 || log_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

void core_set_abort_hook(void (*hook)(int code)) { abort_hook = hook; }

void core_fatal(const char *file, int line, const char *what)
{
    fprintf(stderr, "losa: rank %d: invariant broken at %s:%d: %s\n", log_rank,
            file, line, what);
    fflush(stderr);
    if (abort_hook) abort_hook(3);
    abort();
}

double core_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double time_origin = -1;

void core_time_origin_set(void) { time_origin = core_time(); }

double core_time_origin(void)
{
    if (time_origin < 0) time_origin = core_time();
    return time_origin;
}

/* Out of memory: one line naming the rank and the size, then every rank
 * stops (the abort hook), as for a broken invariant. */
static void core_oom(size_t bytes) __attribute__((noreturn));
static void core_oom(size_t bytes)
{
    fprintf(stderr, "losa: rank %d: out of memory allocating %zu bytes\n", log_rank, bytes);
    fflush(stderr);
    if (abort_hook) abort_hook(4);
    abort();
}

/* n * size, aborting on overflow. */
static size_t core_bytes(size_t n, size_t size)
{
    size_t bytes = n * size;
    if (size && bytes / size != n) core_fatal(__FILE__, __LINE__, "allocation size overflow");
    return bytes;
}

void core_alloc_init(void)
{
    /* glibc raises its mmap threshold to the size of every mmapped block
     * freed (up to 32 MB), after which such blocks come from the heap and
     * stay resident once freed: a fixed threshold keeps the resident set
     * what is live. */
    mallopt(M_MMAP_THRESHOLD, CORE_MMAP_MIN);
    mallopt(M_TRIM_THRESHOLD, 2 * CORE_MMAP_MIN);
}

size_t core_alloc_bytes(size_t n, size_t size)
{
    size_t bytes = core_bytes(n, size);
    if (bytes == 0) bytes = 64;
    size_t align = bytes >= CORE_HUGE_MIN ? CORE_HUGE_PAGE : 64;
    return (bytes + align - 1) & ~(align - 1);
}

void *core_calloc(size_t n, size_t size)
{
    /* Large blocks (weights, sparse formats, activations) on transparent
     * huge pages: streaming a matrix through 4 KiB pages costs a TLB miss
     * per page, which shows in memory-bound kernels (decode: dense sgemv
     * ~5% and the sparse kernels ~25% more bandwidth on 2 MiB pages).  The
     * advice is a hint; without THP the block is an ordinary one. */
    size_t bytes = core_alloc_bytes(n, size);
    size_t align = bytes >= CORE_HUGE_MIN ? CORE_HUGE_PAGE : 64;
    void *p = aligned_alloc(align, bytes);
#ifdef MADV_HUGEPAGE
    if (p && align == CORE_HUGE_PAGE) (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    if (!p) core_oom(bytes);
    memset(p, 0, bytes);
    return p;
}

void *core_malloc(size_t n, size_t size)
{
    size_t bytes = core_bytes(n, size);
    void *p = malloc(bytes ? bytes : 1);
    if (!p) core_oom(bytes);
    return p;
}

void *core_realloc(void *p, size_t n, size_t size)
{
    size_t bytes = core_bytes(n, size);
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) core_oom(bytes);
    return q;
}

char *core_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = core_malloc(len + 1, 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *core_strdup(const char *s) { return core_strndup(s, SIZE_MAX); }

void core_free(void *p) { free(p); }

void core_rng_seed(core_rng *r, uint64_t seed)
{
    /* splitmix64 of the seed so nearby seeds give unrelated streams */
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    r->s = (z ^ (z >> 31)) | 1;
}

uint64_t core_rng_u64(core_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

float core_rng_uniform(core_rng *r) { return (core_rng_u64(r) >> 40) / 16777216.0f; }

float core_rng_normal(core_rng *r)
{
    float u1 = core_rng_uniform(r), u2 = core_rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

/* Progress lines: on a terminal one line redrawn with '\r' (at most once a
 * second); otherwise (a batch log, slurm-<id>.out) whole newline-terminated
 * lines, at the start, at most every 10 s, and at the end, so that `tail -f`
 * and grep can follow them.  LOSA_PROGRESS=tty|lines overrides the check. */
static int progress_tty(void)
{
    static int tty = -1;
    if (tty < 0) {
        const char *e = getenv("LOSA_PROGRESS");
        if (e && !strcmp(e, "tty")) tty = 1;
        else if (e && !strcmp(e, "lines")) tty = 0;
        else tty = isatty(STDERR_FILENO) ? 1 : 0;
    }
    return tty;
}

static void progress_line(const core_progress *p, int64_t done, double rate, double eta,
                          const char *extra)
{
    if (progress_tty())
        core_log("\r%s %lld/%lld  %.0f %s/s  ETA %.0fs%s%s   ", p->label, (long long)done,
                 (long long)p->total, rate, p->unit, eta, extra ? "  " : "", extra ? extra : "");
    else
        core_log("%s %lld/%lld (%.0f%%)  %.0f %s/s  ETA %.0fs%s%s\n", p->label,
                 (long long)done, (long long)p->total,
                 p->total > 0 ? 100.0 * (double)done / (double)p->total : 100.0, rate, p->unit,
                 eta, extra ? "  " : "", extra ? extra : "");
}

void core_progress_start(core_progress *p, const char *label, const char *unit,
                         int64_t total)
{
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = p->last = core_time();
    if (!progress_tty() && total > 0) progress_line(p, 0, 0, 0, NULL);
}

void core_progress_update(core_progress *p, int64_t done, int64_t units,
                          const char *extra)
{
    double now = core_time();
    if (progress_tty()) {
        if (now - p->last < 1.0 && done < p->total) return;
    } else if (now - p->last < 10.0 || done >= p->total) {
        return; /* the 100% line is core_progress_end's */
    }
    p->last = now;
    double el = now - p->t0;
    double rate = el > 0 ? units / el : 0;
    double eta = done > 0 ? el * (p->total - done) / done : 0;
    progress_line(p, done, rate, eta, extra);
}

void core_progress_end(core_progress *p, int64_t units)
{
    double el = core_time() - p->t0;
    core_log("%s%s %lld/%lld%s  %.0f %s/s  %.1fs%s\n", progress_tty() ? "\r" : "", p->label,
             (long long)p->total, (long long)p->total, progress_tty() ? "" : " (100%)",
             el > 0 ? units / el : 0, p->unit, el,
             progress_tty() ? "                    " : "");
}

/* Remove a temporary left by a dead writer: a file, or a directory of
 * files (export).  Returns 0 when it is gone. */
static int core_tmp_remove(const char *p)
{
    struct stat sb;
    if (lstat(p, &sb) != 0) return -1;
    if (!S_ISDIR(sb.st_mode)) return unlink(p);
    DIR *d = opendir(p);
    if (!d) return -1;
    struct dirent *e;
    char q[4352];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(q, sizeof q, "%s/%s", p, e->d_name);
        if (unlink(q) != 0) break; /* a nested directory: not ours, leave it */
    }
    closedir(d);
    return rmdir(p);
}

/* Temporaries "<path>.tmp.<pid>" survive a kill -9 of their writer.  Before
 * path is written again, remove those whose pid has no live process on this
 * host (kill(pid, 0) fails with ESRCH); a live pid, ours or another's (even
 * another user's: EPERM), is never touched.  Only temporaries of this exact
 * path are considered, so two writers of different files never meet; two
 * hosts writing the same path at once would already be a conflict. */
static void core_tmp_reclaim(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) + 1, path);
    else snprintf(dir, sizeof dir, ".");
    size_t lb = strlen(base);
    if (lb == 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, lb) || strncmp(nm + lb, ".tmp.", 5)) continue;
        const char *digits = nm + lb + 5;
        char *end;
        errno = 0;
        long pid = strtol(digits, &end, 10);
        if (errno || end == digits || *end || *digits < '1' || *digits > '9' || pid <= 0 ||
            pid > (long)INT32_MAX)
            continue;
        if (pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        char p[4352];
        snprintf(p, sizeof p, "%s%s%s", dir, slash ? "" : "/", nm);
        if (!log_quiet) {
            /* every rank that writes logs it (shards are written off rank 0) */
            char who[32] = "";
            if (log_rank) snprintf(who, sizeof who, "rank %d: ", log_rank);
            if (core_tmp_remove(p) == 0)
                fprintf(stderr, "%sremoved stale temporary %s (its writer, pid %ld, is gone)\n",
                        who, p, pid);
            else
                fprintf(stderr, "%scannot remove stale temporary %s (pid %ld is gone): %s\n",
                        who, p, pid, strerror(errno));
        } else {
            (void)core_tmp_remove(p);
        }
    }
    closedir(d);
}

void core_tmpname(char *buf, size_t n, const char *path)
{
    core_tmp_reclaim(path);
    snprintf(buf, n, "%s.tmp.%ld", path, (long)getpid());
}

losa_status core_commit_file(const char *tmp, const char *path)
{
    int fd = open(tmp, O_RDONLY);
    if (fd < 0)
        return core_err(LOSA_ERR_IO, "%s: cannot reopen to sync: %s", tmp, strerror(errno));
    if (fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return core_err(LOSA_ERR_IO, "%s: fsync failed: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return core_err(LOSA_ERR_IO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    return LOSA_OK;
}

losa_status core_read_file(const char *path, char **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return core_err(LOSA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return core_err(LOSA_ERR_IO, "%s: not a regular file", path);
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        fclose(f);
        return core_err(LOSA_ERR_NOMEM, "%s: cannot allocate %lld bytes", path,
                        (long long)st.st_size);
    }
    size_t got = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (got != (size_t)st.st_size) {
        free(buf);
        return core_err(LOSA_ERR_IO, "%s: short read (%zu of %lld bytes)", path, got,
                        (long long)st.st_size);
    }
    buf[got] = '\0';
    *data = buf;
    *size = got;
    return LOSA_OK;
}

losa_status core_lock_acquire(core_lock *lk, const char *path, const char *what)
{
    lk->fd = -1;
    lk->path[0] = 0;
    for (int tries = 0; tries < 100; tries++) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return core_err(LOSA_ERR_IO, "%s: cannot create the lock file for %s: %s", path, what,
                            strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            char holder[256] = "";
            ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
            close(fd);
            if (e != EWOULDBLOCK)
                return core_err(LOSA_ERR_IO, "%s: cannot lock %s: %s", path, what, strerror(e));
            holder[n > 0 ? n : 0] = 0;
            holder[strcspn(holder, "\n")] = 0;
            return core_err(LOSA_ERR_IO, "%s is in use by another losa command (%s; lock %s): "
                            "wait for it to end or choose another path", what,
                            holder[0] ? holder : "holder unknown", path);
        }
        /* the holder before us may have removed the file between our open
         * and our flock: then we hold a lock on an orphan inode; retry */
        struct stat a, b;
        if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino) {
            char host[256] = "unknown", buf[400];
            gethostname(host, sizeof host - 1);
            host[sizeof host - 1] = 0;
            int n = snprintf(buf, sizeof buf, "host %s pid %ld\n", host, (long)getpid());
            if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
                /* the lock holds without the note; the holder is then unnamed */
            }
            lk->fd = fd;
            snprintf(lk->path, sizeof lk->path, "%s", path);
            return LOSA_OK;
        }
        close(fd);
    }
    return core_err(LOSA_ERR_IO, "%s: cannot lock %s (the lock file keeps changing)", path, what);
}

void core_lock_release(core_lock *lk)
{
    if (!lk || lk->fd < 0 || !lk->path[0]) return; /* never held (or zeroed) */
    unlink(lk->path); /* while still held: a waiter then retries on a new file */
    close(lk->fd);
    lk->fd = -1;
    lk->path[0] = 0;
}

int core_same_file(const char *a, const char *b)
{
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left), or 0 if
 * it is ill-formed; *sub is then the length of its maximal subpart (the
 * lead byte and the continuation bytes that were still allowed), >= 1.
 * Unicode Table 3-7: the second byte's range depends on the lead. */
static int utf8_seq(const unsigned char *s, size_t n, int *sub)
{
    unsigned c = s[0];
    int need;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0x01 && c <= 0x7f) return 1;
    if (c >= 0xc2 && c <= 0xdf) need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        need = 2;
        if (c == 0xe0) lo = 0xa0;      /* no overlong 3-byte forms */
        else if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;
        if (c == 0xf0) lo = 0x90;      /* no overlong 4-byte forms */
        else if (c == 0xf4) hi = 0x8f; /* nothing above U+10FFFF */
    } else {
        *sub = 1; /* NUL, a continuation byte, C0, C1 or F5..FF */
        return 0;
    }
    int k = 1;
    for (; k <= need && (size_t)k < n; k++) {
        unsigned b = s[k];
        if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) break;
    }
    if (k == need + 1) return k;
    *sub = k;
    return 0;
}

char *core_utf8_repair(const char *s, size_t n, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    char *out = core_malloc(3 * n + 1, 1); /* each byte at most one U+FFFD */
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int sub = 1, l = utf8_seq(u + i, n - i, &sub);
        if (l) {
            memcpy(out + k, u + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
        } else {
            memcpy(out + k, "\xef\xbf\xbd", 3);
            k += 3;
            i += (size_t)sub;
        }
    }
    out[k] = '\0';
    if (len) *len = k;
    return out;
}

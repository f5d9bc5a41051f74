/* core: status codes, logging (rank 0 only), invariant checks, timers, RNG,
 * progress lines. Never includes mpi.h or hdf5.h: the rank is handed in once
 * by core_log_init().
 *
 * Dimension letters used across the repo (stated once, here):
 *   B batch, T tokens (sequence), D model width, H heads, Hkv kv-heads,
 *   hd head size (D / H), F ffn width, V vocab, L layers, R LoRA rank.
 * Sizes that multiply dimensions are int64_t / size_t.
 */
#ifndef LOSA_CORE_H
#define LOSA_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    LOSA_OK = 0,
    LOSA_ERR_IO,        /* file missing, unreadable, unwritable, truncated */
    LOSA_ERR_FORMAT,    /* malformed content (JSON, header, shapes) */
    LOSA_ERR_UNSUPPORTED, /* valid but not supported (dtype, architecture) */
    LOSA_ERR_ARG,       /* bad command line / deck value */
    LOSA_ERR_NOMEM,
    LOSA_ERR_NUMERIC,   /* non-finite values */
    LOSA_ERR_MPI,
    LOSA_ERR_INTERNAL
} losa_status;

const char *losa_status_str(losa_status s);

/* Error message buffer: the last error set with core_err() on this rank.
 * Functions that return a status other than LOSA_OK set it first. */
losa_status core_err(losa_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *core_errmsg(void);

/* Logging: only rank 0 prints (to stderr). core_log_init sets the rank. */
void core_log_init(int rank);
void core_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Quiet flag for tests (suppresses core_log output). */
void core_log_quiet(int quiet);

/* Always-on invariant check: aborts with file:line (and rank) on failure.
 * Only for broken invariants, never for input validation. */
#define LOSA_CHECK(cond)                                                    \
    do {                                                                    \
        if (!(cond)) core_fatal(__FILE__, __LINE__, #cond);                 \
    } while (0)
void core_fatal(const char *file, int line, const char *what)
    __attribute__((noreturn));
/* Set by the dist module so that core_fatal can abort every rank. */
void core_set_abort_hook(void (*hook)(int code));

/* Wall clock in seconds (monotonic). */
double core_time(void);
/* The process's start on the core_time clock: core_time_origin_set() once,
 * first thing in main (before MPI starts); core_time_origin() returns it
 * (core_time() of the first call when it was never set).  What a command
 * spends before its own work (MPI start, reading, tokenizing) is
 * core_time() - core_time_origin() at that point. */
void core_time_origin_set(void);
double core_time_origin(void);

/* Allocation helpers: 64-byte aligned, zeroed; abort on out-of-memory
 * (allocation of the big blocks happens once per kind, at build time). */
/* Blocks of at least CORE_HUGE_MIN bytes are 2 MiB aligned and advised
 * onto transparent huge pages (madvise MADV_HUGEPAGE). */
#define CORE_HUGE_PAGE ((size_t)2 << 20)
#define CORE_HUGE_MIN ((size_t)4 << 20)
void *core_calloc(size_t n, size_t size);
/* The process's allocator policy, once at start (main): blocks of
 * CORE_MMAP_MIN bytes or more are mapped on their own and given back to the
 * system when freed, so the resident set follows what is allocated (glibc's
 * adaptive threshold would keep freed blocks of up to 32 MB resident). */
#define CORE_MMAP_MIN ((size_t)256 << 10)
void core_alloc_init(void);
/* The bytes core_calloc(n, size) reserves and touches (zeroed): n * size
 * rounded up to 64 bytes, or to CORE_HUGE_PAGE for large blocks.  Every
 * size function of the modules (model_acts_bytes, lora_adapters_bytes, ...)
 * counts its blocks with it, so a plan adds up what is resident. */
size_t core_alloc_bytes(size_t n, size_t size);
/* The same contract (n * size checked for overflow, abort on out-of-memory)
 * for plain blocks: malloc (not zeroed) and realloc of n elements of size
 * bytes (0 bytes gives a valid block), and copies of strings (at most n
 * bytes of s, NUL-terminated).  Any of these blocks may be freed with free()
 * or core_free() and grown with core_realloc(). */
void *core_malloc(size_t n, size_t size);
void *core_realloc(void *p, size_t n, size_t size);
char *core_strdup(const char *s);
char *core_strndup(const char *s, size_t n);
void core_free(void *p);

/* Deterministic RNG (xorshift64*), seeded per purpose. */
typedef struct { uint64_t s; } core_rng;
void core_rng_seed(core_rng *r, uint64_t seed);
uint64_t core_rng_u64(core_rng *r);
float core_rng_uniform(core_rng *r); /* [0, 1) */
float core_rng_normal(core_rng *r);  /* N(0, 1), Box-Muller */

/* Progress line on rank 0: "label done/total  rate unit/s  ETA". */
typedef struct {
    const char *label;
    const char *unit;
    int64_t total;
    double t0, last;
} core_progress;
void core_progress_start(core_progress *p, const char *label, const char *unit,
                         int64_t total);
void core_progress_update(core_progress *p, int64_t done, int64_t units,
                          const char *extra);
void core_progress_end(core_progress *p, int64_t units);

/* Atomic output files: write to "<path>.tmp.<pid>", then fsync + rename.
 * core_tmpname fills buf with the temporary name for path; first it removes
 * (one stderr line each) temporaries of path left by a writer that died
 * (no live process with that pid on this host), files or directories. */
void core_tmpname(char *buf, size_t n, const char *path);
losa_status core_commit_file(const char *tmp, const char *path);

/* Exclusive lock of a file or directory for the life of a command: flock()
 * on the lock file path (created if needed; it holds "host H pid P" of the
 * holder).  Fails at once, without waiting, if another process holds it:
 * the error names path, what and the holder.  Released by
 * core_lock_release (which removes the file) or by the holder's death (the
 * kernel drops the lock; the file stays and is reused).  Not collective:
 * one rank (rank 0) holds it.  lk->fd is -1 when not held. */
typedef struct {
    int fd;
    char path[1100];
} core_lock;
losa_status core_lock_acquire(core_lock *lk, const char *path, const char *what);
void core_lock_release(core_lock *lk);

/* 1 if a and b both exist and are the same file (same device and inode,
 * through symlinks and other spellings), else 0. */
int core_same_file(const char *a, const char *b);

/* A copy of the n bytes of s as valid UTF-8 (malloc'd, NUL-terminated,
 * length in *len when len is not NULL): every maximal ill-formed
 * subsequence (Unicode 15, sec. 3.9, "U+FFFD substitution of maximal
 * subparts", as WHATWG and Python's errors='replace' decode) and every NUL
 * byte (which would end a C string) becomes U+FFFD (EF BF BD).  For text
 * written into JSON (tokenizer output of byte-fallback pieces, arguments). */
char *core_utf8_repair(const char *s, size_t n, size_t *len);

/* Whole-file read into a malloc'd buffer (NUL-terminated; size without NUL). */
losa_status core_read_file(const char *path, char **data, size_t *size);

#endif

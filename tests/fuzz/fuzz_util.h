/* Shared helpers of the libFuzzer harnesses (tests/fuzz/fuzz_*.c).
 * Each harness defines LLVMFuzzerTestOneInput, feeds the bytes to one parser
 * of outside input, and on success exercises the consumer of what was
 * parsed.  Invariants that must hold for every input use FUZZ_ASSERT (abort,
 * which libFuzzer reports as a crash). */
#ifndef LOSA_FUZZ_UTIL_H
#define LOSA_FUZZ_UTIL_H

#include "core.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_ASSERT(cond)                                                        \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: FUZZ_ASSERT(%s) failed; last error: %s\n",     \
                    __FILE__, __LINE__, #cond, core_errmsg());                   \
            abort();                                                             \
        }                                                                        \
    } while (0)

static inline void fuzz_quiet(void)
{
    static int done;
    if (!done) core_log_quiet(1);
    done = 1;
}

/* An in-memory file (memfd) whose content is replaced per input; its path
 * /proc/self/fd/N goes through the normal open() path of the readers. */
typedef struct {
    int fd;
    char path[64];
} fuzz_file;

static inline void fuzz_file_init(fuzz_file *f, const char *name)
{
    if (f->path[0]) return;
    f->fd = memfd_create(name, 0);
    if (f->fd < 0) { perror("memfd_create"); abort(); }
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

static inline void fuzz_file_set(fuzz_file *f, const void *data, size_t size)
{
    if (ftruncate(f->fd, 0) != 0) abort();
    const char *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(f->fd, p + done, size - done, (off_t)done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
}

/* NUL-terminated copy of the input (parsers of text take C strings). */
static inline char *fuzz_strdup(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static inline const char *fuzz_data_dir(void)
{
    const char *d = getenv("LOSA_DATA");
    return d && *d ? d : "../shared/data";
}

#endif

/* Training data loaded on rank 0 and broadcast (collective). */
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "lora.h"

lora_data_format lora_data_format_from_string(const char *f)
{
    return !strcmp(f, "alpaca") ? LORA_DATA_ALPACA : !strcmp(f, "text") ? LORA_DATA_TEXT : LORA_DATA_AUTO;
}

losa_status lora_data_load(dist_ctx *d, const char *path, lora_data_format fmt,
                           const tok_tokenizer *tk, int T, lora_dataset *ds)
{
    char *text = NULL;
    size_t len = 0;
    memset(ds, 0, sizeof *ds);
    losa_status s = dist_read_file(d, path, &text, &len);
    if (s != LOSA_OK) return s;
    if (dist_rank(d) == 0) s = lora_data_parse(ds, path, text, len, fmt, tk, T);
    free(text);
    if ((s = dist_agree(d, s)) != LOSA_OK) return s;
    int64_t hdr[3] = {ds->n, ds->n ? ds->off[ds->n] : 0, ds->format};
    dist_bcast(d, hdr, sizeof hdr, 0);
    if (dist_rank(d) != 0) {
        ds->n = hdr[0];
        ds->format = (lora_data_format)hdr[2];
        ds->ids = core_calloc((size_t)hdr[1] + 1, sizeof(int));
        ds->off = core_calloc((size_t)ds->n + 1, sizeof(int64_t));
        ds->resp = core_calloc((size_t)ds->n + 1, sizeof(int));
    }
    dist_bcast(d, ds->ids, sizeof(int) * hdr[1], 0);
    dist_bcast(d, ds->off, sizeof(int64_t) * (ds->n + 1), 0);
    dist_bcast(d, ds->resp, sizeof(int) * ds->n, 0);
    return LOSA_OK;
}


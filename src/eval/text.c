/* eval text: the text handling under the task files: a growing string,
 * tab-separated tables with csv-module quoting, lm-eval's HellaSwag
 * preprocessing and str.capitalize(). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "eval_internal.h"

/* ---- a growing byte string ---- */
void eval_buf_add(eval_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->n + n + 1 > cap) cap *= 2;
        b->p = core_realloc(b->p, cap, 1);
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
void eval_buf_addc(eval_buf *b, char c) { eval_buf_add(b, &c, 1); }
char *eval_buf_take(eval_buf *b)
{
    if (!b->p) eval_buf_add(b, "", 0);
    char *p = b->p;
    memset(b, 0, sizeof *b);
    return p;
}

int eval_isspace(unsigned char c)
{
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
}

/* ---- TSV with csv-module quoting ---- */
void eval_table_free(eval_table *tab)
{
    if (!tab) return;
    if (tab->cells)
        for (int64_t i = 0; i < (int64_t)(tab->n_rows + 1) * tab->n_cols; i++) free(tab->cells[i]);
    free(tab->cells);
    memset(tab, 0, sizeof *tab);
}

/* The cells of a table being read. */
typedef struct {
    char **p;
    size_t n, cap;
} tsv_cells;

static void tsv_cells_free(tsv_cells *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->p[i]);
    free(c->p);
}

static void tsv_cells_push(tsv_cells *c, char *s)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 64;
        c->p = core_realloc(c->p, c->cap, sizeof *c->p);
    }
    c->p[c->n++] = s;
}

/* The field at *pos into f: a quoted one first if it starts with '"' (""
 * is one '"'; tabs and newlines kept, *line counting them; *quoted set),
 * then unquoted text up to a tab or the end of the record (text after a
 * closing quote is kept, as csv does).  -1: a quoted field never closed. */
static int tsv_field(const char *text, size_t len, size_t *pos, int *line, eval_buf *f,
                     int *quoted)
{
    if (text[*pos] == '"') {
        *quoted = 1;
        (*pos)++;
        for (;;) {
            if (*pos >= len) return -1;
            char c = text[*pos];
            if (c == '"') {
                if (*pos + 1 < len && text[*pos + 1] == '"') {
                    eval_buf_addc(f, '"');
                    *pos += 2;
                    continue;
                }
                (*pos)++;
                break;
            }
            if (c == '\n') (*line)++;
            eval_buf_addc(f, c);
            (*pos)++;
        }
    }
    while (*pos < len && text[*pos] != '\t' && text[*pos] != '\n' &&
           !(text[*pos] == '\r' && *pos + 1 < len && text[*pos + 1] == '\n'))
        eval_buf_addc(f, text[(*pos)++]);
    return 0;
}

/* The record at *pos (begun on line rec_line): its fields appended to
 * cells, *nf of them; *pos and *line past its end. */
static losa_status tsv_record(const char *text, size_t len, size_t *pos, int *line,
                              tsv_cells *cells, int *nf, int *any_quoted, const char *what,
                              int rec_line)
{
    for (;;) {
        eval_buf f = {0};
        if (tsv_field(text, len, pos, line, &f, any_quoted)) {
            free(f.p);
            return core_err(LOSA_ERR_FORMAT, "%s: line %d: quoted field never closed", what,
                            rec_line);
        }
        tsv_cells_push(cells, eval_buf_take(&f));
        (*nf)++;
        if (*pos < len && text[*pos] == '\t') {
            (*pos)++;
            continue;
        }
        if (*pos < len && text[*pos] == '\r') (*pos)++;
        if (*pos < len && text[*pos] == '\n') (*pos)++;
        (*line)++;
        return LOSA_OK;
    }
}

losa_status eval_tsv_parse(eval_table *tab, const char *text, size_t len,
                           const char *what)
{
    memset(tab, 0, sizeof *tab);
    tsv_cells cells = {0};
    size_t pos = 0;
    int line = 1, records = 0;
    while (pos < len) {
        int rec_line = line, nf = 0, any_quoted = 0;
        size_t first = cells.n;
        losa_status s = tsv_record(text, len, &pos, &line, &cells, &nf, &any_quoted, what,
                                   rec_line);
        if (s != LOSA_OK) {
            tsv_cells_free(&cells);
            return s;
        }
        if (nf == 1 && !any_quoted && cells.p[first][0] == 0) { /* blank line */
            free(cells.p[--cells.n]);
            continue;
        }
        if (records == 0) tab->n_cols = nf;
        else if (nf != tab->n_cols) {
            tsv_cells_free(&cells);
            int hc = tab->n_cols;
            tab->n_cols = 0;
            return core_err(LOSA_ERR_FORMAT, "%s: line %d: %d fields, the header has %d",
                            what, rec_line, nf, hc);
        }
        records++;
    }
    if (records == 0) {
        tsv_cells_free(&cells);
        return core_err(LOSA_ERR_FORMAT, "%s: no header row", what);
    }
    tab->cells = cells.p;
    tab->n_rows = records - 1;
    return LOSA_OK;
}

/* ---- HellaSwag preprocessing (lm-eval's preprocess / _process_doc) ---- */
char *eval_hellaswag_preprocess(const char *text)
{
    size_t a = 0, b = strlen(text);
    while (a < b && eval_isspace((unsigned char)text[a])) a++;
    while (b > a && eval_isspace((unsigned char)text[b - 1])) b--;
    eval_buf s1 = {0}, s2 = {0}, s3 = {0};
    /* " [title]" -> ". " */
    for (size_t i = a; i < b;) {
        if (b - i >= 8 && !memcmp(text + i, " [title]", 8)) {
            eval_buf_add(&s1, ". ", 2);
            i += 8;
        } else eval_buf_addc(&s1, text[i++]);
    }
    char *t1 = eval_buf_take(&s1);
    /* re.sub("\\[.*?\\]", "", t): '[' up to the nearest ']' on the same line */
    for (size_t i = 0; t1[i];) {
        if (t1[i] == '[') {
            size_t j = i + 1;
            while (t1[j] && t1[j] != ']' && t1[j] != '\n') j++;
            if (t1[j] == ']') {
                i = j + 1;
                continue;
            }
        }
        eval_buf_addc(&s2, t1[i++]);
    }
    free(t1);
    char *t2 = eval_buf_take(&s2);
    /* str.replace("  ", " "): non-overlapping, left to right */
    for (size_t i = 0; t2[i];) {
        if (t2[i] == ' ' && t2[i + 1] == ' ') {
            eval_buf_addc(&s3, ' ');
            i += 2;
        } else eval_buf_addc(&s3, t2[i++]);
    }
    free(t2);
    return eval_buf_take(&s3);
}

char *eval_capitalize(const char *text)
{
    char *s = core_strdup(text);
    for (size_t i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 128) s[i] = (char)(i == 0 ? toupper(c) : tolower(c));
    }
    return s;
}


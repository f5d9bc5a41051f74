// ranks: 1 2 4
/* Zero-shot scoring: the TSV quoting parser and HellaSwag preprocessing on
 * tricky hand-derived cases (expected values from Python's csv / re /
 * str.capitalize); acc vs acc_norm on hand-made log-likelihoods; tiny
 * hand-written tasks (jsonl mc with a prefix strip, WinoGrande-style partial
 * scoring, quoted TSV) scored by the batched pipelined scorer and compared
 * with an independent unbatched single-stage computation (each request's
 * sequence built here by the stated token rule, forwarded alone, log-softmax
 * in double); identical log-likelihoods for the layouts PP=P, DP=P and
 * (P=4) 2x2.  Layout 1xP runs every micro-batch on one rank holding the
 * whole model, the same arithmetic as a 1-rank run, so equality across the
 * layouts means equality across 1, 2 and 4 ranks. */
#include <cjson/cJSON.h>
#include <string.h>
#include <sys/stat.h>

#include "dist.h"
#include "eval.h"
#include "test_util.h"

static void test_tsv(void)
{
    const char *t = "a\tb\tc\n"
                    "plain\t\"quoted\ttab\"\t\"say \"\"hi\"\"\"\r\n"
                    "\"multi\nline\"\t\t\"\"\n"
                    "\n"
                    "x\"y\tlast\"\tz";
    const char *want[4][3] = {{"a", "b", "c"},
                              {"plain", "quoted\ttab", "say \"hi\""},
                              {"multi\nline", "", ""},
                              {"x\"y", "last\"", "z"}};
    eval_table tab;
    TEST_CHECK(eval_tsv_parse(&tab, t, strlen(t), "t.tsv") == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(tab.n_cols == 3 && tab.n_rows == 3, "table %d x %d", tab.n_rows, tab.n_cols);
    if (tab.n_cols == 3 && tab.n_rows == 3)
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 3; c++)
                TEST_CHECK(!strcmp(tab.cells[r * 3 + c], want[r][c]), "cell %d,%d '%s' want '%s'",
                           r, c, tab.cells[r * 3 + c], want[r][c]);
    eval_table_free(&tab);
    const char *bad1 = "a\tb\n\"open\tx\n", *bad2 = "a\tb\n1\t2\t3\n";
    TEST_CHECK(eval_tsv_parse(&tab, bad1, strlen(bad1), "b1") == LOSA_ERR_FORMAT &&
                   strstr(core_errmsg(), "line 2: quoted field never closed"),
               "unterminated quote: %s", core_errmsg());
    TEST_CHECK(eval_tsv_parse(&tab, bad2, strlen(bad2), "b2") == LOSA_ERR_FORMAT &&
                   strstr(core_errmsg(), "line 2: 3 fields, the header has 2"),
               "field count: %s", core_errmsg());
}

static void test_hellaswag(void)
{
    const char *in[4] = {"  Making a cake: [header] How to bake [title] Mix flour.  Then  stir. ",
                         "a [b\nc] d [e] f", "x    y|x   y", "[a]b]c [[d]"};
    const char *want[4] = {"Making a cake: How to bake. Mix flour. Then stir.", "a [b\nc] d f",
                           "x  y|x  y", "b]c "};
    for (int i = 0; i < 4; i++) {
        char *p = eval_hellaswag_preprocess(in[i]);
        TEST_CHECK(!strcmp(p, want[i]), "preprocess %d: '%s' want '%s'", i, p, want[i]);
        free(p);
    }
    char *c = eval_capitalize("a FEW Women");
    TEST_CHECK(!strcmp(c, "A few women"), "capitalize '%s'", c);
    free(c);
}

/* acc: argmax of ll; acc_norm: argmax of ll / bytes; first maximum wins. */
static void test_acc_norm(void)
{
    int C[4] = {2, 3, 2, 2}, gold[4] = {1, 1, 0, 1};
    int nb[4][3] = {{2, 20}, {5, 5, 5}, {3, 3}, {1, 100}};
    double ll[9] = {-4, -10, -3, -1, -2, -1, -1, -5, -6};
    eval_item it[4];
    eval_task t = {.name = "hand", .n_items = 4, .items = it};
    for (int i = 0; i < 4; i++) {
        it[i] = (eval_item){.n_choices = C[i], .norm_bytes = nb[i], .gold = gold[i]};
    }
    eval_task_result r;
    memset(&r, 0, sizeof r);
    eval_mc_score(ll, &t, &r);
    /* item 0: long choice 1 has the lower sum (-10 < -4) but the higher
     * per-byte score (-0.5 > -2): acc misses, acc_norm hits; item 1 both hit;
     * item 2 tie -> choice 0 = gold; item 3 like item 0. */
    TEST_NEAR(r.acc, 0.5, 1e-15, "acc");
    TEST_NEAR(r.acc_norm, 1.0, 1e-15, "acc_norm");
    TEST_NEAR(r.acc_stderr, sqrt(0.25 / 3), 1e-15, "acc_stderr");
    TEST_NEAR(r.acc_norm_stderr, 0.0, 1e-15, "acc_norm_stderr");
    TEST_CHECK(r.n == 4, "n %d", r.n);
}

/* ---- tiny tasks ---- */
#define N_MC 7
static const char *mc_q[N_MC] = {
    "Passage: the cat sat on the mat\nQuestion: did the cat sit?",
    "Passage: Lily had a big red ball and she liked to play with it in the park every "
    "day with her friend Tom.\nQuestion: was the ball blue?",
    "Passage: short\nQuestion: yes?",
    "Passage: Once upon a time there was a little dog named Max who loved bones.\nQuestion: "
    "was it a dog?",
    "no prefix here\nQuestion: is that so?",
    "Passage: the sun is hot \nQuestion: hot?",
    "Passage: a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h\nQuestion: "
    "letters?"};
static const char *mc_ch[N_MC][3] = {{"no", "yes", "maybe so"}, {"no", "yes", "red"},
                                     {"no", "yes", "a very long answer"}, {"no", "yes", "cat"},
                                     {"no", "yes", "x"}, {"no", "yes", "sun"},
                                     {"no", "yes", "abc"}};
static const int mc_gold[N_MC] = {1, 0, 2, 1, 0, 1, 2};

#define N_PA 4
static const char *pa_opt[N_PA][2] = {{"Tom gave Lily the ball because Tom", "Tom gave Lily the ball because Lily"},
                                      {"The dog chased the cat so the dog", "The dog chased the cat so the cat"},
                                      {"Max ate it since Max", "Max ate it since it"},
                                      {"She won because she", "She won because he"}};
static const char *pa_cont[N_PA] = {"was kind.", "ran up a tree.", "was hungry.", "played well."};
static const int pa_gold[N_PA] = {0, 1, 0, 1};

#define N_TS 4
static const char *ts_raw = "sentence1\tsentence2\tlabel\tidx\n"
                            "The cat sat.\tA cat sat.\t0\t0\n"
                            "\"He said \"\"hi\"\" to her.\"\tShe heard \"hi\".\t1\t1\n"
                            "\"Two\tcolumns\tinside\"\tOK.\t0\t2\n"
                            "Lily played.\t\"A girl\nplayed.\"\t1\t3\n";
static const char *ts_s1[N_TS] = {"The cat sat.", "He said \"hi\" to her.", "Two\tcolumns\tinside",
                                  "Lily played."};
static const char *ts_s2[N_TS] = {"A cat sat.", "She heard \"hi\".", "OK.", "A girl\nplayed."};
static const int ts_gold[N_TS] = {0, 1, 0, 1};

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) { fprintf(stderr, "cannot write %s\n", path); return; }
    fputs(text, f);
    fclose(f);
}

/* JSON string literal of s (for the test's own JSONL). */
static void json_str(FILE *f, const char *s)
{
    cJSON *j = cJSON_CreateString(s);
    char *e = cJSON_PrintUnformatted(j);
    fputs(e, f);
    free(e);
    cJSON_Delete(j);
}

static void write_tasks(const char *dir)
{
    char p[1100];
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/mc.jsonl", dir);
    FILE *f = fopen(p, "w");
    for (int i = 0; i < N_MC; i++) {
        fprintf(f, "{\"query\": ");
        json_str(f, mc_q[i]);
        fprintf(f, ", \"choices\": [");
        for (int c = 0; c < 3; c++) {
            json_str(f, mc_ch[i][c]);
            fputs(c < 2 ? ", " : "", f);
        }
        fprintf(f, "], \"gold\": %d}\n", mc_gold[i]);
    }
    fclose(f);
    snprintf(p, sizeof p, "%s/pa.jsonl", dir);
    f = fopen(p, "w");
    for (int i = 0; i < N_PA; i++) {
        fprintf(f, "{\"context_options\": [");
        json_str(f, pa_opt[i][0]);
        fputs(", ", f);
        json_str(f, pa_opt[i][1]);
        fputs("], \"continuation\": ", f);
        json_str(f, pa_cont[i]);
        fprintf(f, ", \"gold\": %d}\n\n", pa_gold[i]);
    }
    fclose(f);
    snprintf(p, sizeof p, "%s/ts.tsv", dir);
    write_file(p, ts_raw);
    /* task files: relative data paths resolve against the data dir = dir */
    snprintf(p, sizeof p, "%s/mc.ini", dir);
    write_file(p, "# boolq-like\n[task]\nname = tiny_mc\ndata = mc.jsonl\nformat = jsonl\nmode = mc\n"
                  "strip_field = query\nstrip_prefix = \"Passage: \"\n"
                  "context = \"{query}\\nAnswer:\"\nchoices_field = choices\n"
                  "choice = \"{choice}\"\ntarget_delimiter = \" \"\ngold_field = gold\n");
    snprintf(p, sizeof p, "%s/pa.ini", dir);
    write_file(p, "[task]\ndata = pa.jsonl\nmode = partial\noptions_field = context_options\n"
                  "context = {option}\ncontinuation = {continuation}\n");
    snprintf(p, sizeof p, "%s/ts.ini", dir);
    write_file(p, "[task]\nname = tiny_tsv\ndata = ts.tsv\nformat = tsv\n"
                  "context = \"{sentence1}\\nQuestion: {sentence2} True or False?\\nAnswer:\"\n"
                  "choices = True|False\ngold_field = label\n");
    snprintf(p, sizeof p, "%s/bad_key.ini", dir);
    write_file(p, "[task]\ndata = mc.jsonl\ncontext = {query}\nchoices_field = choices\ncolour = red\n");
    snprintf(p, sizeof p, "%s/bad_gold.ini", dir);
    write_file(p, "[task]\ndata = pa.jsonl\nmode = mc\ncontext = {continuation}\n"
                  "choices_field = context_options\ngold_field = nope\n");
}

/* The expected strings of item i, choice c of task k (0 mc, 1 partial, 2 tsv). */
static void expected(int k, int i, int c, char *ctx, char *cont, size_t cap)
{
    if (k == 0) {
        const char *q = mc_q[i];
        if (!strncmp(q, "Passage: ", 9)) q += 9;
        snprintf(ctx, cap, "%s\nAnswer:", q);
        snprintf(cont, cap, " %s", mc_ch[i][c]);
    } else if (k == 1) {
        snprintf(ctx, cap, "%s", pa_opt[i][c]);
        snprintf(cont, cap, " %s", pa_cont[i]);
    } else {
        snprintf(ctx, cap, "%s\nQuestion: %s True or False?\nAnswer:", ts_s1[i], ts_s2[i]);
        snprintf(cont, cap, " %s", c == 0 ? "True" : "False");
    }
}

/* Unbatched, single-stage reference log-likelihood of (ctx, cont). */
static double ref_ll(const model_stage *full, model_acts *af, const tok_tokenizer *tok,
                     const char *ctx0, const char *cont0, int *truncated)
{
    char ctx[1024], whole[2048];
    snprintf(ctx, sizeof ctx, "%s", ctx0);
    size_t n = strlen(ctx);
    while (n > 0 && (ctx[n - 1] == ' ' || ctx[n - 1] == '\n')) n--; /* moves to cont */
    snprintf(whole, sizeof whole, "%s%s", ctx0, cont0);
    int *ce, *we;
    int64_t nce, nwe;
    tok_encode(tok, ctx, n, 1, 0, &ce, &nce);
    tok_encode(tok, whole, strlen(whole), 1, 0, &we, &nwe);
    int64_t ncont = nwe - nce;
    LOSA_CHECK(ncont > 0);
    int seq[4096];
    int64_t L = 0;
    for (int64_t j = 0; j < nce; j++) seq[L++] = ce[j];
    for (int64_t j = nce; j < nwe; j++) seq[L++] = we[j];
    int maxT = full->cfg.max_seq_len;
    int64_t off = L > maxT + 1 ? L - (maxT + 1) : 0;
    *truncated |= off > 0;
    int T = (int)(L - off - 1), V = full->cfg.vocab_size;
    model_stage_forward(af, full, seq + off, 1, T);
    double sum = 0;
    for (int64_t j = L - ncont; j < L; j++) {
        int pos = (int)(j - off - 1); /* logits row predicting seq[j] */
        const float *row = af->logits + (int64_t)pos * V;
        double mx = row[0], z = 0;
        for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
        sum += (double)row[seq[j]] - mx - log(z);
    }
    free(ce);
    free(we);
    return sum;
}

int main(int argc, char **argv)
{
    dist_ctx *d;
    if (dist_init(&argc, &argv, &d) != LOSA_OK) return 1;
    core_log_quiet(1);
    int P = dist_size(d), rank = dist_rank(d);
    test_tsv();
    test_hellaswag();
    test_acc_norm();

    const char *data = getenv("LOSA_DATA"), *tmp = getenv("LOSA_TEST_TMP");
    char tokpath[1024], dir[512];
    snprintf(tokpath, sizeof tokpath, "%s/models/stories260K/tok512.bin", data ? data : "../shared/data");
    snprintf(dir, sizeof dir, "%s/zeroshot_np%d", tmp ? tmp : "/tmp", P);
    if (rank == 0) write_tasks(dir);
    dist_barrier(d);
    tok_tokenizer tok;
    TEST_CHECK(tok_load_llama2c(&tok, tokpath, 512) == LOSA_OK, "tokenizer: %s", core_errmsg());

    model_config cfg = {.dim = 32, .hidden_dim = 64, .n_layers = 4, .n_heads = 4,
                        .n_kv_heads = 2, .vocab_size = 512, .max_seq_len = 32,
                        .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tie_embeddings = 0,
                        .bos_id = 1, .eos_id = 2};
    const char *names[3] = {"mc.ini", "pa.ini", "ts.ini"};
    const int n_items[3] = {N_MC, N_PA, N_TS};
    eval_task tasks[3];
    for (int k = 0; k < 3; k++) {
        char p[1100];
        snprintf(p, sizeof p, "%s/%s", dir, names[k]);
        losa_status s = eval_task_load(d, &tasks[k], p, dir, 0);
        TEST_CHECK(s == LOSA_OK, "load %s: %s", names[k], core_errmsg());
        if (s != LOSA_OK) return test_finish("test_zeroshot");
        TEST_CHECK(tasks[k].n_items == n_items[k], "%s: %d items", names[k], tasks[k].n_items);
        const int *gold = k == 0 ? mc_gold : k == 1 ? pa_gold : ts_gold;
        for (int i = 0; i < tasks[k].n_items && i < n_items[k]; i++)
            TEST_CHECK(tasks[k].items[i].gold == gold[i], "%s item %d gold %d", names[k], i,
                       tasks[k].items[i].gold);
        for (int i = 0; i < tasks[k].n_items; i++)
            for (int c = 0; c < tasks[k].items[i].n_choices; c++) {
                char ctx[1024], cont[1024];
                expected(k, i, c, ctx, cont, sizeof ctx);
                TEST_CHECK(!strcmp(tasks[k].items[i].context[c], ctx) &&
                               !strcmp(tasks[k].items[i].cont[c], cont),
                           "%s item %d choice %d: '%s'+'%s' want '%s'+'%s'", names[k], i, c,
                           tasks[k].items[i].context[c], tasks[k].items[i].cont[c], ctx, cont);
            }
    }
    TEST_CHECK(!strcmp(tasks[0].name, "tiny_mc") && !strcmp(tasks[1].name, "pa"), "names %s %s",
               tasks[0].name, tasks[1].name);
    {   /* --limit and bad task files */
        eval_task t;
        char p[1100];
        snprintf(p, sizeof p, "%s/mc.ini", dir);
        TEST_CHECK(eval_task_load(d, &t, p, dir, 3) == LOSA_OK && t.n_items == 3, "limit 3");
        eval_task_free(&t);
        snprintf(p, sizeof p, "%s/bad_key.ini", dir);
        TEST_CHECK(eval_task_load(d, &t, p, dir, 0) == LOSA_ERR_FORMAT &&
                       strstr(core_errmsg(), "line 5: unknown key 'colour'"),
                   "bad key: %s", core_errmsg());
        snprintf(p, sizeof p, "%s/bad_gold.ini", dir);
        TEST_CHECK(eval_task_load(d, &t, p, dir, 0) == LOSA_ERR_FORMAT &&
                       strstr(core_errmsg(), "gold field 'nope'"),
                   "bad gold: %s", core_errmsg());
    }

    /* reference: one stage with every layer, one request at a time */
    model_stage full;
    model_acts af;
    model_stage_build(&full, &cfg, 0, 1);
    model_stage_randomize(&full, 21, 0.3f);
    model_acts_build(&af, &full, 1, cfg.max_seq_len, 0);

    int layouts[3][2] = {{P, 1}, {1, P}, {2, 2}}, n_layouts = P == 4 ? 3 : (P == 1 ? 1 : 2);
    double *first[3] = {NULL, NULL, NULL};
    int truncated = 0;
    for (int li = 0; li < n_layouts; li++) {
        dist_set_layout(d, layouts[li][0], layouts[li][1]);
        model_stage s;
        TEST_CHECK(model_stage_for_rank(&s, &cfg, d) == LOSA_OK, "stage");
        model_stage_randomize(&s, 21, 0.3f);
        for (int k = 0; k < 3; k++) {
            eval_task_result r;
            /* 64 tokens per micro-batch: two rows of up to 32, many batches */
            losa_status st = eval_task_run(d, &s, &tok, &tasks[k], 64, &r);
            TEST_CHECK(st == LOSA_OK, "run %s: %s", names[k], core_errmsg());
            if (st != LOSA_OK) continue;
            if (li == 0) {
                /* against the unbatched single-stage reference */
                double maxd = 0, hit = 0, hitn = 0;
                int q = 0;
                for (int i = 0; i < tasks[k].n_items; i++) {
                    const eval_item *it = &tasks[k].items[i];
                    int best = 0, bestn = 0;
                    double bv = -1e300, bn = -1e300;
                    for (int c = 0; c < it->n_choices; c++, q++) {
                        char ctx[1024], cont[1024];
                        expected(k, i, c, ctx, cont, sizeof ctx);
                        double ref = ref_ll(&full, &af, &tok, ctx, cont, &truncated);
                        double dd = fabs(ref - r.ll[q]) / fmax(1.0, fabs(ref));
                        maxd = dd > maxd ? dd : maxd;
                        /* choice text bytes: cont without the delimiter (mc),
                           the option-filled context (partial) */
                        double nbytes = k == 1 ? strlen(ctx) : strlen(cont) - 1;
                        if (ref > bv) { bv = ref; best = c; }
                        if (ref / nbytes > bn) { bn = ref / nbytes; bestn = c; }
                    }
                    hit += best == it->gold;
                    hitn += bestn == it->gold;
                }
                TEST_CHECK(maxd < 1e-5, "%s: batched vs unbatched ll max rel diff %.3g", names[k], maxd);
                TEST_NEAR(r.acc, hit / tasks[k].n_items, 1e-15, "acc vs reference");
                TEST_NEAR(r.acc_norm, hitn / tasks[k].n_items, 1e-15, "acc_norm vs reference");
                if (rank == 0)
                    fprintf(stderr, "%-8s n=%d acc %.4f acc_norm %.4f  max rel diff vs unbatched %.2g\n",
                            names[k], r.n, r.acc, r.acc_norm, maxd);
                first[k] = malloc(sizeof(double) * r.n_requests);
                memcpy(first[k], r.ll, sizeof(double) * r.n_requests);
            } else {
                TEST_CHECK(!memcmp(first[k], r.ll, sizeof(double) * r.n_requests),
                           "%s: layout %dx%d log-likelihoods differ from %dx1", names[k],
                           layouts[li][0], layouts[li][1], P);
            }
            eval_task_result_free(&r);
        }
        model_stage_free(&s);
    }
    TEST_CHECK(truncated, "no request exceeded max_seq_len: the left cut is untested");
    for (int k = 0; k < 3; k++) {
        free(first[k]);
        eval_task_free(&tasks[k]);
    }
    model_acts_free(&af);
    model_stage_free(&full);
    tok_free(&tok);
    double fails = test_failures;
    dist_sum_doubles(d, &fails, 1);
    test_failures = (int)fails;
    int rc = rank == 0 ? test_finish("test_zeroshot") : (test_failures != 0);
    dist_finalize(&d);
    return rc;
}

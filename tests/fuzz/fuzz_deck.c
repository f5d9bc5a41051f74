/* Fuzz the deck parser and --set overrides (src/core/deck.c).  Input: the
 * deck text, then after a NUL byte up to 8 NUL-separated "section.key=value"
 * overrides.  After a successful parse every schema key is read through its
 * typed getter and must lie in its range / choices, and the resolved dump
 * must parse again to the same dump (what is echoed into run files is what
 * ran). */
#include "fuzz_util.h"
#include "deck.h"

static void check_keys(const deck *dk)
{
    for (int i = 0; i < deck_schema_len; i++) {
        const deck_key *k = &deck_schema[i];
        if (!k->def && !deck_is_set(dk, k->key)) continue;
        switch (k->type) {
        case DECK_INT: {
            int64_t v = deck_int(dk, k->key);
            FUZZ_ASSERT(v >= k->min && v <= k->max);
            break;
        }
        case DECK_FLOAT: {
            double v = deck_float(dk, k->key);
            FUZZ_ASSERT(v >= k->min && v <= k->max);
            break;
        }
        case DECK_BOOL: {
            int v = deck_bool(dk, k->key);
            FUZZ_ASSERT(v == 0 || v == 1);
            break;
        }
        case DECK_CHOICE: {
            const char *v = deck_str(dk, k->key);
            size_t n = strlen(v);
            const char *at = strstr(k->choices, v);
            FUZZ_ASSERT(n > 0 && at && (at[n] == '|' || at[n] == '\0'));
            break;
        }
        case DECK_STRING: {
            double x[64];
            (void)deck_float_list(deck_str(dk, k->key), x, 64);
            break;
        }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    char *text = fuzz_strdup(data, size);
    deck *dk = NULL;
    if (deck_parse(&dk, "fuzz.ini", text) != LOSA_OK) {
        FUZZ_ASSERT(dk == NULL && core_errmsg()[0] != '\0');
        free(text);
        return 0;
    }
    size_t at = strlen(text) + 1;
    for (int k = 0; k < 8 && at < size; k++) {
        const char *a = text + at;
        (void)deck_set(dk, a); /* a rejected override leaves the deck as it was */
        at += strlen(a) + 1;
    }
    (void)deck_check_required(dk, NULL);
    (void)deck_check_required(dk, "model,prune");
    check_keys(dk);
    char *dump = deck_dump(dk, NULL, 0);
    deck *again = NULL;
    if (deck_parse(&again, "dump", dump) != LOSA_OK) {
        fprintf(stderr, "dump does not parse again: %s\n---\n%s---\n", core_errmsg(), dump);
        abort();
    }
    char *dump2 = deck_dump(again, NULL, 0);
    if (strcmp(dump, dump2)) {
        fprintf(stderr, "dump changes on re-parse:\n---\n%s---\n%s---\n", dump, dump2);
        abort();
    }
    free(dump2);
    free(dump);
    deck_free(&again);
    deck_free(&dk);
    free(text);
    return 0;
}

/* Decks: parsing, defaults, overrides, and the errors that name deck, line
 * and expectation. */
#include <string.h>

#include "deck.h"
#include "test_util.h"

static void expect_err(const char *text, const char *set, const char *needle)
{
    deck *dk = NULL;
    losa_status s = deck_parse(&dk, "t.ini", text);
    if (s == LOSA_OK && set) s = deck_set(dk, set);
    if (s == LOSA_OK) s = deck_check_required(dk, "model,prune");
    TEST_CHECK(s != LOSA_OK, "expected an error for [%s] %s", text, set ? set : "");
    TEST_CHECK(strstr(core_errmsg(), needle) != NULL, "message '%s' lacks '%s'",
               core_errmsg(), needle);
    deck_free(&dk);
}

int main(void)
{
    const char *good = "# comment\n[model]\nstore = m.h5  # the store\n\n[prune]\n"
                       "method = sparsegpt\nsparsity = 0.7\n";
    deck *dk = NULL;
    TEST_CHECK(deck_parse(&dk, "good.ini", good) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(deck_check_required(dk, NULL) == LOSA_OK, "%s", core_errmsg());
    TEST_CHECK(!strcmp(deck_str(dk, "model.store"), "m.h5"), "inline comment stripped: '%s'",
               deck_str(dk, "model.store"));
    TEST_NEAR(deck_float(dk, "prune.sparsity"), 0.7, 1e-12, "sparsity");
    TEST_CHECK(deck_int(dk, "prune.blocksize") == 128, "default blocksize");
    TEST_CHECK(!strcmp(deck_str(dk, "prune.method"), "sparsegpt"), "method");
    TEST_CHECK(deck_set(dk, "prune.sparsity=0.6") == LOSA_OK, "set");
    TEST_NEAR(deck_float(dk, "prune.sparsity"), 0.6, 1e-12, "override");
    TEST_CHECK(deck_is_set(dk, "prune.sparsity") && !deck_is_set(dk, "prune.percdamp"), "is_set");
    char *dump = deck_dump(dk, "model,prune", 0);
    TEST_CHECK(strstr(dump, "[prune]\nmethod = sparsegpt\nsparsity = 0.6\n") != NULL, "dump:\n%s", dump);
    /* the dump parses back to the same values */
    deck *dk2 = NULL;
    TEST_CHECK(deck_parse(&dk2, "dump", dump) == LOSA_OK, "dump reparses");
    if (dk2) TEST_NEAR(deck_float(dk2, "prune.sparsity"), 0.6, 1e-12, "reparsed override");
    deck_free(&dk2);
    free(dump);
    deck_free(&dk);
    TEST_CHECK(dk == NULL, "deck_free sets NULL");

    expect_err("[model]\nstore = a\n[prune]\nsparsty = 0.5\n", NULL, "t.ini:4: unknown key 'prune.sparsty'");
    expect_err("[model]\nstore = a\n[prune]\nsparsity = 1.5\n", NULL, "t.ini:4: prune.sparsity: 1.5 is outside [0, 0.99]");
    expect_err("[model]\nstore = a\n[prune]\nmethod = obs\n", NULL, "expected one of magnitude|wanda|sparsegpt");
    expect_err("[model]\nstore = a\n[prune]\nblocksize = 12x\n", NULL, "t.ini:4: prune.blocksize: expected an integer");
    expect_err("[prune]\nsparsity = 0.5\n", NULL, "missing required key 'store' in section [model]");
    expect_err("[model]\nstore = a\nthis is not ini\n", NULL, "t.ini:3: syntax error");
    expect_err("[model]\nstore = a\n", "prune.sparsity=abc", "--set prune.sparsity: prune.sparsity: expected a number");
    expect_err("[model]\nstore = a\n", "nosuch=1", "expected section.key=value");
    /* a key set twice is an error naming both lines, also across a repeated
     * [section] (which may add other keys) */
    expect_err("[model]\nstore = a\n[prune]\nsparsity = 0.5\nsparsity = 0.6\n", NULL,
               "t.ini:5: prune.sparsity: set again (first set at t.ini:4)");
    expect_err("[prune]\nsparsity = 0.5\n[model]\nstore = a\n\n[prune]\nmethod = magnitude\n"
               "sparsity = 0.5\n", NULL, "t.ini:8: prune.sparsity: set again (first set at t.ini:2)");
    /* string keys too */
    expect_err("[model]\nstore = a\nstore = b\n", NULL, "t.ini:3: model.store: set again (first set at t.ini:2)");
    /* CRLF lines count as one line each */
    expect_err("[model]\r\nstore = a\r\n\r\n[prune]\r\nsparsty = 1\r\n", NULL,
               "t.ini:5: unknown key 'prune.sparsty'");
    /* an indented line would silently replace the value before it */
    expect_err("[model]\nstore = a\n   b.h5\n", NULL, "t.ini:3: indented line would continue the value set on line 2");
    {
        /* a repeated section adding other keys is fine; an indented key
         * right after a header is a key */
        deck *d2 = NULL;
        const char *t = "[prune]\n  method = magnitude\n[model]\nstore = a\n[prune]\nsparsity = 0.6\n";
        TEST_CHECK(deck_parse(&d2, "r.ini", t) == LOSA_OK, "repeated section: %s", core_errmsg());
        if (d2) {
            TEST_NEAR(deck_float(d2, "prune.sparsity"), 0.6, 1e-12, "merged section: sparsity");
            TEST_CHECK(!strcmp(deck_str(d2, "prune.method"), "magnitude"), "merged section: method");
            /* --set still overrides a key the deck set */
            TEST_CHECK(deck_set(d2, "prune.sparsity=0.7") == LOSA_OK, "%s", core_errmsg());
            TEST_NEAR(deck_float(d2, "prune.sparsity"), 0.7, 1e-12, "override after deck");
        }
        deck_free(&d2);
        /* a NUL byte ends the C string but not the deck: refused with its line */
        const char nul[] = "[model]\nstore = a\n[prune]\nspar\0sity = 0.9\nmethod = obs\n";
        losa_status s = deck_parse_n(&d2, "n.ini", nul, sizeof nul - 1);
        TEST_CHECK(s == LOSA_ERR_ARG && d2 == NULL, "NUL byte refused (status %d)", s);
        TEST_CHECK(strstr(core_errmsg(), "n.ini:4: NUL byte at column 5") != NULL, "message '%s'",
                   core_errmsg());
        deck_free(&d2);
        /* the same text without the NUL parses (the check is the NUL, not the rest) */
        const char ok[] = "[model]\nstore = a\n[prune]\nsparsity = 0.9\n";
        TEST_CHECK(deck_parse_n(&d2, "n.ini", ok, sizeof ok - 1) == LOSA_OK, "%s", core_errmsg());
        if (d2) TEST_NEAR(deck_float(d2, "prune.sparsity"), 0.9, 1e-12, "parsed to the end");
        deck_free(&d2);
    }
    double x[4];
    TEST_CHECK(deck_float_list("0.5, 0.6,0.7", x, 4) == 3 && x[2] == 0.7, "float list");
    TEST_CHECK(deck_float_list("0.5,,", x, 4) == -1, "bad float list");
    return test_finish("test_deck");
}

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
    char *dump = deck_dump(dk, "model,prune");
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
    double x[4];
    TEST_CHECK(deck_float_list("0.5, 0.6,0.7", x, 4) == 3 && x[2] == 0.7, "float list");
    TEST_CHECK(deck_float_list("0.5,,", x, 4) == -1, "bad float list");
    return test_finish("test_deck");
}

/* core_utf8_repair: well-formed UTF-8 passes unchanged; every maximal
 * ill-formed subpart becomes one U+FFFD, as in the Unicode Standard's own
 * examples (15.0, sec. 3.9, Tables 3-8 to 3-11) and Python's
 * bytes.decode('utf-8', 'replace'); NUL becomes U+FFFD. */
#include <string.h>

#include "core.h"
#include "test_util.h"

#define R "\xef\xbf\xbd" /* U+FFFD */

static void expect(const char *in, size_t n, const char *want, const char *what)
{
    size_t len = 0;
    char *out = core_utf8_repair(in, n, &len);
    TEST_CHECK(len == strlen(want) && !memcmp(out, want, len) && out[len] == '\0',
               "%s: got %zu bytes '%s', expected %zu bytes '%s'", what, len, out, strlen(want),
               want);
    free(out);
}

#define EXPECT(in, want, what) expect(in, sizeof(in) - 1, want, what)

int main(void)
{
    EXPECT("", "", "empty");
    EXPECT("plain ASCII ~\x7f", "plain ASCII ~\x7f", "ASCII");
    /* U+00E9, U+20AC, U+D7FF, U+E000, U+FFFF, U+10000, U+10FFFF */
    EXPECT("\xc3\xa9 \xe2\x82\xac \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf \xf0\x90\x80\x80 "
           "\xf4\x8f\xbf\xbf",
           "\xc3\xa9 \xe2\x82\xac \xed\x9f\xbf \xee\x80\x80 \xef\xbf\xbf \xf0\x90\x80\x80 "
           "\xf4\x8f\xbf\xbf", "well-formed 2-, 3- and 4-byte forms at the range edges");
    /* Table 3-8: a truncated 4-byte lead + a truncated 3-byte lead + C2 */
    EXPECT("\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64",
           "a" R R R "b" R "c" R R "d", "Unicode Table 3-8");
    /* Table 3-9: non-shortest forms (C0 / C1, E0 80, F0 80): every byte */
    EXPECT("\xc0\xaf\xe0\x80\xbf\xf0\x81\x82\x41", R R R R R R R R "A",
           "Unicode Table 3-9 (overlong)");
    /* Table 3-10: surrogates ED A0..BF: every byte */
    EXPECT("\xed\xa0\x80\xed\xbf\xbf\xed\xaf\x41", R R R R R R R R "A",
           "Unicode Table 3-10 (surrogates)");
    /* Table 3-11: bytes that never appear (F4 90.., F5..FF) */
    EXPECT("\xf4\x91\x92\x93\xff\x41\x80\xbf\x42", R R R R R "A" R R "B",
           "Unicode Table 3-11 (beyond U+10FFFF, FF, stray continuations)");
    /* truncated at the end of the buffer: one U+FFFD for the subpart */
    EXPECT("ok\xe2\x82", "ok" R, "3-byte form cut at the end");
    EXPECT("ok\xf0\x9f\x98", "ok" R, "4-byte form cut at the end");
    /* NUL inside the text: kept as U+FFFD, the text goes on */
    expect("a\0b", 3, "a" R "b", "embedded NUL");
    return test_finish("test_utf8");
}

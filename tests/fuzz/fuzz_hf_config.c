/* Fuzz the Hugging Face config.json parser (src/io/config.c).  On success
 * the config's consumers run: tensor shapes of every map, parameter count,
 * the pipeline split; the bounds io_config_check promises are asserted. */
#include "fuzz_util.h"
#include "io/io_internal.h"
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    char *text = fuzz_strdup(data, size);
    model_config c;
    losa_status s = io_hf_config_parse("config.json", text, size, &c);
    free(text);
    if (s != LOSA_OK) {
        FUZZ_ASSERT(core_errmsg()[0] != '\0');
        return 0;
    }
    FUZZ_ASSERT(model_config_check(&c, "config.json") == LOSA_OK);
    FUZZ_ASSERT(c.dim <= (1 << 24) && c.n_layers <= (1 << 16) && c.vocab_size <= (1 << 24));
    int64_t n = model_param_count(&c);
    FUZZ_ASSERT(n > 0 && n <= ((int64_t)1 << 41));
    for (int m = 0; m < MODEL_N_MAPS; m++) {
        int o, i;
        model_map_shape(&c, (model_map)m, &o, &i);
        FUZZ_ASSERT(o > 0 && i > 0);
    }
    if (c.n_layers <= 256) {
        int P = c.n_layers < 4 ? c.n_layers : 4, first[4], count[4], total = 0;
        model_split_layers(&c, P, first, count);
        for (int p = 0; p < P; p++) {
            FUZZ_ASSERT(count[p] >= 1 && first[p] == total);
            total += count[p];
        }
        FUZZ_ASSERT(total == c.n_layers);
    }
    return 0;
}

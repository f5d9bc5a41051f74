# Sourced by jobs/ scripts (not run): the shipped models imported into
# stores in $OUT once (skipped when present), from $DATA with $LOSA:
#   S260  $OUT/stories260K.h5   (llama2.c checkpoint + tok512.bin)
#   MINI  $OUT/minillama.h5     (HF safetensors directory)
S260=$OUT/stories260K.h5
MINI=$OUT/minillama.h5
[ -f "$S260" ] || "$LOSA" import "$DATA/models/stories260K/stories260K.bin" \
    --tokenizer "$DATA/models/stories260K/tok512.bin" --out "$S260" >/dev/null
[ -f "$MINI" ] || "$LOSA" import "$DATA/models/minillama" --out "$MINI" >/dev/null

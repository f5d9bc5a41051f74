/* deck: INI experiment decks ([section] key = value, '#' comments) checked
 * against one schema of every known key (type, range, default, help).
 * An unknown key, a missing required key or an out-of-range value is an
 * error naming the deck, the line and what was expected.  `--set
 * section.key=value` overrides are checked the same way.  Not collective:
 * rank 0 reads the file, the text is broadcast (cli), every rank parses the
 * same text and gets the same deck.
 */
#ifndef LOSA_DECK_H
#define LOSA_DECK_H

#include "core.h"

typedef enum { DECK_INT, DECK_FLOAT, DECK_STRING, DECK_BOOL, DECK_CHOICE } deck_type;

/* What a key is for (deck_key .flags), beyond its value: */
enum {
    DECK_NO_RESULT = 1 << 0, /* changes no result of a run (output paths, settings of other
                                commands, where data is kept): may differ on resume */
    DECK_RESUMABLE = 1 << 1, /* may change while LoSA steps remain (train.lr: resume after a
                                numerical stop) */
    DECK_PATH = 1 << 2,      /* a file path: two spellings of one file are the same value */
};

typedef struct {
    const char *key;     /* "section.key" */
    deck_type type;
    const char *def;     /* default as text; NULL = required */
    double min, max;     /* range for INT / FLOAT (inclusive) */
    const char *choices; /* "a|b|c" for CHOICE */
    const char *help;    /* one line, with units */
    const char *ref;     /* default of the reference code (losa.compat = reference), or NULL */
    unsigned flags;      /* DECK_NO_RESULT, DECK_RESUMABLE, DECK_PATH */
} deck_key;

/* The schema of every key any command understands (src/core/deck_schema.c). */
extern const deck_key deck_schema[];
extern const int deck_schema_len;
/* The schema entry of key, or NULL if the schema has no such key. */
const deck_key *deck_schema_key(const char *key);

typedef struct deck deck;

/* Parse text (the content of file `name`).  Values are checked by type and
 * range; required keys are checked by deck_check_required(). */
losa_status deck_parse(deck **dk, const char *name, const char *text);
/* The same for len bytes of text: a NUL byte among them is an error (as are
 * a key set twice and an indented continuation line, in both). */
losa_status deck_parse_n(deck **dk, const char *name, const char *text, size_t len);
/* "section.key=value" override (from --set). */
losa_status deck_set(deck *dk, const char *assignment);
/* Every required key (def == NULL) among the given sections must be set.
 * sections: "model,prune" (comma separated), NULL = all. */
losa_status deck_check_required(const deck *dk, const char *sections);
void deck_free(deck **dk);

/* Getters for keys of the schema (value from deck or default). */
int64_t deck_int(const deck *dk, const char *key);
double deck_float(const deck *dk, const char *key);
const char *deck_str(const deck *dk, const char *key);
int deck_bool(const deck *dk, const char *key);
int deck_is_set(const deck *dk, const char *key);
/* Where key got its value: > 0 the line of the deck file, 0 a --set
 * override (the last one wins over the file), -1 not set (the default). */
int deck_key_line(const deck *dk, const char *key);
/* The name the deck was parsed under (its path). */
const char *deck_name(const deck *dk);
/* The resolved deck as INI text (every key of the given sections, with
 * defaults filled in and overrides applied); malloc'd.  ref_defaults: a key
 * the deck does not set shows the reference code's default (deck_key.ref)
 * where it has one, losa's otherwise (settings_deck_dump decides it from
 * losa.compat, so that run files record the values in effect). */
char *deck_dump(const deck *dk, const char *sections, int ref_defaults);

/* Parse a list of floats "0.5,0.6" into x (up to n); returns the count or -1. */
int deck_float_list(const char *s, double *x, int n);

#endif

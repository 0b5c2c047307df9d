/* Fuzz target: template checking, subject expansion and validation, consumer
 * names. Input: template '\n' key0 '\n' key1 ... (at most PARTI_MAX_KEYS keys).
 * Properties: nothing crashes or over-reads; an accepted expansion is a valid
 * subject made of valid keys; sizes reported are exact; names are valid and
 * deterministic. */
#define PARTI_IMPLEMENTATION
#include "parti.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

/* An independent, naive expansion: the accepted output must equal it, and
 * every key it substitutes must pass parti_key_check. */
static void reference_expand(const char *t, const parti_partition *p, const char *got) {
    size_t i = 0, o = 0, glen = strlen(got);
    while (t[i]) {
        if ((t[i] == '{' && t[i + 1] == '{') || (t[i] == '}' && t[i + 1] == '}')) {
            CHECK(o < glen && got[o] == t[i]);
            o++;
            i += 2;
        } else if (t[i] == '{') {
            int k = 0;
            size_t klen;
            i++;
            while (t[i] >= '0' && t[i] <= '9') k = k * 10 + (t[i++] - '0');
            CHECK(t[i] == '}' && k < p->key_count);
            i++;
            CHECK(parti_key_check(p->keys[k], NULL, 0) == PARTI_ERR_OK);
            klen = strlen(p->keys[k]);
            CHECK(o + klen <= glen && memcmp(got + o, p->keys[k], klen) == 0);
            o += klen;
        } else {
            CHECK(o < glen && got[o] == t[i]);
            o++;
            i++;
        }
    }
    CHECK(o == glen);
}

static void check_expansion(const char *tmpl, const parti_partition *p) {
    char msg[256];
    size_t need = 0;
    parti_err e = parti_subject_expand(tmpl, p, NULL, 0, &need, msg, sizeof msg);
    if (e == PARTI_ERR_BUFFER_TOO_SMALL) {
        /* exact-size heap buffer: ASan catches any write past need */
        char *out = (char *)malloc(need);
        size_t need2 = 0;
        CHECK(out);
        e = parti_subject_expand(tmpl, p, out, need, &need2, msg, sizeof msg);
        CHECK(need2 == need);
        if (e == PARTI_ERR_OK) {
            CHECK(strlen(out) + 1 == need);
            CHECK(need - 1 <= PARTI_MAX_SUBJECT_LEN);
            CHECK(parti_subject_check(out, 1, NULL, 0) == PARTI_ERR_OK);
            CHECK(parti_template_check(tmpl, NULL, NULL, 0) == PARTI_ERR_OK);
            reference_expand(tmpl, p, out);
        }
        free(out);
    } else {
        CHECK(e != PARTI_ERR_OK);
    }
    (void)parti_template_check(tmpl, NULL, msg, sizeof msg);
    CHECK(memchr(msg, 0, sizeof msg) != NULL);
}

static void check_name(const char *id) {
    char a[PARTI_MAX_NAME_LEN + 1], b[PARTI_MAX_NAME_LEN + 1];
    parti_err e = parti_consumer_name("parti-", id, a, sizeof a, NULL, 0);
    if (e == PARTI_ERR_OK) {
        CHECK(parti_name_check(a, NULL, 0) == PARTI_ERR_OK);
        CHECK(parti_consumer_name("parti-", id, b, sizeof b, NULL, 0) == PARTI_ERR_OK);
        CHECK(strcmp(a, b) == 0);
    } else {
        CHECK(e == PARTI_ERR_INVALID_WORKER_ID);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = (char *)malloc(size + 1), *fields[PARTI_MAX_KEYS + 1];
    int n = 0;
    size_t i, start = 0;
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    for (i = 0; i <= size && n < PARTI_MAX_KEYS + 1; i++) {
        if (i == size || buf[i] == '\n') {
            buf[i] = 0;
            fields[n++] = buf + start;
            start = i + 1;
        }
    }
    {
        parti_partition p;
        p.keys = (const char *const *)(fields + 1);
        p.key_count = n - 1;
        p.weight = 1;
        check_expansion(fields[0], &p);
        (void)parti_subject_check(fields[0], 0, NULL, 0);
        check_name(fields[0]);
    }
    free(buf);
    return 0;
}

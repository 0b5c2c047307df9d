/* Fuzz target: the partition checkpoint (the value of a "ck.<subject>" key,
 * read from KV: untrusted), and the checkpoint key of a subject.
 * Input: the value bytes (an exact-size heap copy, no NUL terminator, so
 * ASan catches any read past the end).
 * Properties: no crash or over-read; a rejected value leaves the struct
 * zeroed; an accepted one has a non-empty owner and subject, encodes, and
 * decodes back to the same fields. The input up to its first NUL, taken as
 * a subject: its checkpoint key is a valid KV key that spells the subject
 * back (two subjects never share a key), or, exactly when the spelled key
 * would be longer than PARTI_MAX_SUBJECT_LEN, there is none. */
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; }

/* The subject a checkpoint key spells ("=XX" is the byte XX), into out. */
static size_t unkey(const char *key, char *out) {
    size_t n = 0;
    for (key += 3; *key; key++) {
        if (*key == '=') {
            CHECK(hexval(key[1]) >= 0 && hexval(key[2]) >= 0);
            out[n++] = (char)(hexval(key[1]) * 16 + hexval(key[2]));
            key += 2;
        } else {
            out[n++] = *key;
        }
    }
    out[n] = 0;
    return n;
}

static void check_key(const uint8_t *data, size_t size) {
    char subject[700], key[PARTI_CHECKPOINT_KEY_SIZE], back[PARTI_CHECKPOINT_KEY_SIZE];
    size_t n = 0, i, spelled = 3;
    while (n < size && n < sizeof subject - 1 && data[n]) subject[n] = (char)data[n], n++;
    subject[n] = 0;
    if (n == 0) {
        CHECK(parti_checkpoint_key(subject, key, sizeof key) == PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    for (i = 0; i < n; i++) { /* the spelled length, counted here */
        unsigned char c = (unsigned char)subject[i];
        int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                    (c == '.' && i > 0 && i + 1 < n && subject[i - 1] != '.' && subject[i + 1] != '.');
        spelled += plain ? 1 : 3;
    }
    if (spelled > PARTI_MAX_SUBJECT_LEN) {
        CHECK(parti_checkpoint_key(subject, key, sizeof key) == PARTI_ERR_INVALID_SUBJECT && key[0] == 0);
        return;
    }
    CHECK(parti_checkpoint_key(subject, key, sizeof key) == PARTI_ERR_OK && strlen(key) == spelled);
    CHECK(strncmp(key, "ck.", 3) == 0 && parti_kv_key_check(key, NULL, 0) == PARTI_ERR_OK);
    CHECK(unkey(key, back) == n && memcmp(back, subject, n) == 0);
    /* one byte short: nothing but a NUL */
    CHECK(parti_checkpoint_key(subject, back, strlen(key)) == PARTI_ERR_BUFFER_TOO_SMALL && back[0] == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parti_checkpoint ck, again, zero;
    char *copy = (char *)malloc(size ? size : 1), out[PARTI_MAX_NAME_LEN + PARTI_MAX_SUBJECT_LEN + 512];
    size_t needed = 0;
    if (!copy) abort();
    memcpy(copy, data, size);
    check_key(data, size);
    memset(&zero, 0, sizeof zero);
    if (parti_checkpoint_decode(&ck, copy, size) != PARTI_ERR_OK) {
        CHECK(memcmp(&ck, &zero, sizeof ck) == 0);
        free(copy);
        return 0;
    }
    CHECK(ck.owner[0] && ck.subject[0]);
    CHECK(ck.released == 0 || ck.released == 1);
    CHECK(parti_checkpoint_encode(&ck, out, sizeof out, &needed) == PARTI_ERR_OK);
    CHECK(needed == strlen(out) + 1);
    CHECK(parti_checkpoint_decode(&again, out, strlen(out)) == PARTI_ERR_OK);
    CHECK(strcmp(again.owner, ck.owner) == 0 && strcmp(again.subject, ck.subject) == 0);
    CHECK(again.instance == ck.instance && again.generation == ck.generation && again.seq == ck.seq &&
          again.stream_created_ns == ck.stream_created_ns && again.released == ck.released);
    free(copy);
    return 0;
}

/* Fuzz target: the partition checkpoint (the value of a "ck.<P>" key, read
 * from KV: untrusted).
 * Input: the value bytes (an exact-size heap copy, no NUL terminator, so
 * ASan catches any read past the end).
 * Properties: no crash or over-read; a rejected value leaves the struct
 * zeroed; an accepted one has a non-empty owner and subject, encodes, and
 * decodes back to the same fields. */
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parti_checkpoint ck, again, zero;
    char *copy = (char *)malloc(size ? size : 1), out[PARTI_MAX_NAME_LEN + PARTI_MAX_SUBJECT_LEN + 512];
    size_t needed = 0;
    if (!copy) abort();
    memcpy(copy, data, size);
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

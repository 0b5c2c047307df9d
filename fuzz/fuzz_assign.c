#define PARTI_IMPLEMENTATION
#include "parti.h"

/* Fuzz target: the assignment strategies and the assignment document.
 * The first byte picks the mode.
 *
 * Mode "document" (first byte % 4 == 0): the rest is an untrusted document
 * for parti_assignment_decode. A refused one leaves the result empty; an
 * accepted one keeps every rule of the format (counts within the limits,
 * member IDs 1..PARTI_ASSIGN_MAX_ID_LEN bytes and strictly ascending, owners
 * in -1..M-1), encodes again, and that encoding decodes to the same
 * assignment and re-encodes to the same bytes.
 *
 * Mode "assign": the bytes describe an input (see read_input) and parti_assign
 * runs on it. Properties:
 *   - duplicate member IDs are refused, anything else is accepted (callback:
 *     accepted exactly when its output is valid);
 *   - every partition has one owner, an index into the members;
 *   - running again, and running with the members reversed, gives the same
 *     owner IDs;
 *   - STICKY: parti_assign_bands matches an independent 128-bit computation
 *     of floor = floor(W*c*100 / (C*(100+tol))) and cap = ceil(W*c*(100+tol)
 *     / (C*100)). Unit weights: every load ends within [floor, cap], and the
 *     partitions whose previous owner is still live and that moved are
 *     exactly excess + max(0, deficit - orphans - excess) (the minimum:
 *     excess = sum (kept - cap)+ is what the caps force, the rest is what the
 *     floors force). Any weights: a live member that lost a partition it was
 *     not forced to shed still has at least its floor, and an assignment
 *     whose loads all lie within the bands is a fixed point (assigning again
 *     with it as the history changes nothing);
 *   - CONSISTENT_HASH and RENDEZVOUS: removing a member moves only its
 *     partitions; WEIGHTED_HASH with unit weights stays within the caps;
 *     ROUND_ROBIN loads differ by at most one;
 *   - the result builds into a document that encodes, decodes to the same
 *     owner IDs and re-encodes to the same bytes. */
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) __builtin_trap();                                                                                \
    } while (0)

#define MAX_P 400
#define MAX_N 12

typedef struct reader {
    const uint8_t *data;
    size_t size, at;
} reader;

static unsigned rd(reader *r) { return r->at < r->size ? r->data[r->at++] : 0u; }

typedef struct input {
    parti_partition parts[MAX_P];
    char keybuf[MAX_P][8];
    const char *keyptr[MAX_P];
    parti_member members[MAX_N];
    char idbuf[MAX_N][8];
    const char *prev[MAX_P];
    int have_prev, p, n, unit, duplicates;
    parti_assign_options o;
    int cb_owner[MAX_P];
} input;

static const char gone1[] = "gone", gone2[] = "zz-gone";

static parti_err fuzz_callback(void *user, const parti_assign_input *in, int *owner) {
    const input *x = (const input *)user;
    memcpy(owner, x->cb_owner, (size_t)in->partition_count * sizeof *owner);
    return PARTI_ERR_OK;
}

static void read_input(reader *r, input *x) {
    unsigned flags, t;
    int i, k;
    memset(x, 0, sizeof *x);
    x->o.strategy = (parti_strategy)(rd(r) % 6);
    flags = rd(r);
    x->unit = flags & 1;
    x->have_prev = (flags & 4) != 0;
    t = rd(r);
    x->o.tolerance_percent = t < 128 ? 0 : (int)(t % 120);
    x->o.vnodes = (int)(rd(r) % 33);
    x->n = 1 + (int)(rd(r) % MAX_N);
    for (k = 0; k < x->n; k++) {
        unsigned id = rd(r), c = rd(r);
        snprintf(x->idbuf[k], sizeof x->idbuf[k], "m%u", (flags & 8) ? id % 16 : (unsigned)k * 7 + id % 7);
        x->members[k].id = x->idbuf[k];
        x->members[k].capacity = (flags & 2) ? 0 : c == 255 ? 4000000000u : c % 5;
    }
    for (k = 0; k < x->n; k++)
        for (i = 0; i < k; i++) x->duplicates |= strcmp(x->idbuf[i], x->idbuf[k]) == 0;
    x->p = (int)((rd(r) << 8 | rd(r)) % (MAX_P + 1));
    for (i = 0; i < x->p; i++) {
        unsigned w = rd(r), o = rd(r);
        snprintf(x->keybuf[i], sizeof x->keybuf[i], "k%d", i);
        x->keyptr[i] = x->keybuf[i];
        x->parts[i].keys = &x->keyptr[i];
        x->parts[i].key_count = 1;
        x->parts[i].weight = x->unit ? w % 2 : w == 255 ? 4294967295u : w % 8;
        o %= (unsigned)x->n + 3;
        x->prev[i] = o < (unsigned)x->n ? x->idbuf[o] : o == (unsigned)x->n ? gone1 : o == (unsigned)x->n + 1 ? gone2 : NULL;
        x->cb_owner[i] = (int)(w % (unsigned)(x->n + 1)) - (w == 0x80 ? 2 : 0);
    }
    x->o.callback = fuzz_callback;
    x->o.callback_user = x;
}

static parti_assign_input input_of(const input *x, const parti_member *members, int n) {
    parti_assign_input in;
    memset(&in, 0, sizeof in);
    in.partitions = x->parts;
    in.partition_count = x->p;
    in.members = members;
    in.member_count = n;
    in.previous_owner = x->have_prev ? x->prev : NULL;
    return in;
}

static uint64_t weight_of(const input *x, int i) { return x->parts[i].weight ? x->parts[i].weight : 1; }

static int live_index(const input *x, const char *id) {
    int k;
    if (!id) return -1;
    for (k = 0; k < x->n; k++)
        if (strcmp(x->idbuf[k], id) == 0) return k;
    return -1;
}

static void check_bands(const input *x, const parti_assign_input *in, uint64_t *floors, uint64_t *caps) {
    unsigned __int128 W = 0, C = 0, up = 100u + (unsigned)x->o.tolerance_percent;
    int i, k;
    CHECK(parti_assign_bands(in, &x->o, floors, caps, NULL, 0) == PARTI_ERR_OK);
    for (i = 0; i < x->p; i++) W += weight_of(x, i);
    for (k = 0; k < x->n; k++) C += x->members[k].capacity ? x->members[k].capacity : 1;
    for (k = 0; k < x->n; k++) {
        unsigned __int128 c = x->members[k].capacity ? x->members[k].capacity : 1;
        unsigned __int128 f = W * c * 100u / (C * up), num = W * c * up, den = C * 100u;
        unsigned __int128 cap = (num + den - 1) / den;
        CHECK(floors[k] == (uint64_t)f && caps[k] == (uint64_t)cap);
    }
}

static void check_sticky(const input *x, const parti_assign_input *in, const int *owner) {
    uint64_t floors[MAX_N], caps[MAX_N], load[MAX_N] = {0}, kept[MAX_N] = {0};
    int orphans = 0, moved_live = 0, excess = 0, deficit = 0, i, k, within = 1;
    int forced[MAX_N] = {0}, lost[MAX_N] = {0};
    check_bands(x, in, floors, caps);
    for (i = 0; i < x->p; i++) {
        int was = x->have_prev ? live_index(x, x->prev[i]) : -1;
        load[owner[i]] += weight_of(x, i);
        if (was < 0) orphans++;
        else {
            kept[was] += weight_of(x, i);
            if (was != owner[i]) {
                moved_live++;
                lost[was] = 1;
            }
        }
    }
    for (k = 0; k < x->n; k++) {
        forced[k] = kept[k] > caps[k];
        within &= load[k] >= floors[k] && load[k] <= caps[k];
        /* a member that gave up partitions it could keep stays at or above its floor */
        if (lost[k] && !forced[k]) CHECK(load[k] >= floors[k]);
    }
    if (x->unit) {
        CHECK(within);
        for (k = 0; k < x->n; k++) {
            int keep = kept[k] < caps[k] ? (int)kept[k] : (int)caps[k];
            excess += (int)kept[k] - keep;
            if ((uint64_t)keep < floors[k]) deficit += (int)floors[k] - keep;
        }
        CHECK(moved_live == excess + (deficit - orphans - excess > 0 ? deficit - orphans - excess : 0));
    }
    if (within) { /* a fixed point */
        const char *ids[MAX_P];
        int again[MAX_P];
        parti_assign_input in2 = *in;
        for (i = 0; i < x->p; i++) ids[i] = x->members[owner[i]].id;
        in2.previous_owner = ids;
        CHECK(parti_assign(&in2, &x->o, again, NULL, 0) == PARTI_ERR_OK);
        CHECK(memcmp(again, owner, (size_t)x->p * sizeof *owner) == 0);
    }
}

/* Removing member `gone` moves only the partitions it had. */
static void check_removal_moves_only_its_partitions(const input *x, const int *owner, int gone) {
    parti_member fewer[MAX_N];
    parti_assign_input in;
    int again[MAX_P], i, k, m = 0;
    for (k = 0; k < x->n; k++)
        if (k != gone) fewer[m++] = x->members[k];
    in = input_of(x, fewer, m);
    CHECK(parti_assign(&in, &x->o, again, NULL, 0) == PARTI_ERR_OK);
    for (i = 0; i < x->p; i++)
        if (owner[i] != gone) CHECK(strcmp(fewer[again[i]].id, x->members[owner[i]].id) == 0);
}

static void check_document(const parti_assign_input *in, const int *owner, uint64_t epoch) {
    parti_assignment a, b;
    size_t needed = 0, needed2 = 0;
    char *buf, *buf2;
    int i;
    CHECK(parti_assignment_build(&a, in, owner, epoch, epoch + 1) == PARTI_ERR_OK);
    CHECK(parti_assignment_encode(&a, NULL, 0, &needed) == PARTI_ERR_BUFFER_TOO_SMALL && needed > 0);
    buf = (char *)malloc(needed);
    buf2 = (char *)malloc(needed);
    CHECK(buf && buf2);
    CHECK(parti_assignment_encode(&a, buf, needed, &needed2) == PARTI_ERR_OK && needed2 == needed);
    CHECK(parti_assignment_decode(&b, buf, needed - 1, NULL, 0) == PARTI_ERR_OK);
    CHECK(b.partition_count == in->partition_count && b.member_count == in->member_count);
    CHECK(b.epoch == epoch && b.version == epoch + 1);
    CHECK(b.partitions_fingerprint == parti_partitions_fingerprint(in->partitions, in->partition_count));
    for (i = 0; i < in->partition_count; i++)
        CHECK(strcmp(parti_assignment_owner_id(&b, i), in->members[owner[i]].id) == 0);
    CHECK(parti_assignment_encode(&b, buf2, needed, NULL) == PARTI_ERR_OK);
    CHECK(memcmp(buf, buf2, needed) == 0);
    free(buf);
    free(buf2);
    parti_assignment_free(&a);
    parti_assignment_free(&b);
}

static void fuzz_assign(const uint8_t *data, size_t size) {
    static input x;
    reader r = {data, size, 0};
    parti_assign_input in;
    parti_member reversed[MAX_N];
    int owner[MAX_P], again[MAX_P], i, k;
    parti_err e;
    read_input(&r, &x);
    in = input_of(&x, x.members, x.n);
    e = parti_assign(&in, &x.o, owner, NULL, 0);
    if (x.duplicates) {
        CHECK(e == PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    if (x.o.strategy == PARTI_STRATEGY_CALLBACK) {
        int valid = 1;
        for (i = 0; i < x.p; i++) valid &= x.cb_owner[i] >= 0 && x.cb_owner[i] < x.n;
        CHECK(valid ? e == PARTI_ERR_OK : e == PARTI_ERR_INVALID_ARGUMENT);
        if (valid) CHECK(memcmp(owner, x.cb_owner, (size_t)x.p * sizeof *owner) == 0);
        return;
    }
    CHECK(e == PARTI_ERR_OK);
    for (i = 0; i < x.p; i++) CHECK(owner[i] >= 0 && owner[i] < x.n);
    CHECK(parti_assign(&in, &x.o, again, NULL, 0) == PARTI_ERR_OK);
    CHECK(memcmp(owner, again, (size_t)x.p * sizeof *owner) == 0);
    for (k = 0; k < x.n; k++) reversed[k] = x.members[x.n - 1 - k];
    in = input_of(&x, reversed, x.n);
    CHECK(parti_assign(&in, &x.o, again, NULL, 0) == PARTI_ERR_OK);
    for (i = 0; i < x.p; i++) CHECK(strcmp(reversed[again[i]].id, x.members[owner[i]].id) == 0);
    in = input_of(&x, x.members, x.n);
    switch (x.o.strategy) {
    case PARTI_STRATEGY_STICKY: check_sticky(&x, &in, owner); break;
    case PARTI_STRATEGY_CONSISTENT_HASH:
    case PARTI_STRATEGY_RENDEZVOUS:
        if (x.n > 1) check_removal_moves_only_its_partitions(&x, owner, (int)(rd(&r) % (unsigned)x.n));
        break;
    case PARTI_STRATEGY_WEIGHTED_HASH:
        if (x.unit) {
            uint64_t floors[MAX_N], caps[MAX_N], load[MAX_N] = {0};
            CHECK(parti_assign_bands(&in, &x.o, floors, caps, NULL, 0) == PARTI_ERR_OK);
            for (i = 0; i < x.p; i++) load[owner[i]]++;
            for (k = 0; k < x.n; k++) CHECK(load[k] <= caps[k]);
        }
        break;
    case PARTI_STRATEGY_ROUND_ROBIN: {
        int load[MAX_N] = {0}, mn = MAX_P, mx = 0;
        for (i = 0; i < x.p; i++) load[owner[i]]++;
        for (k = 0; k < x.n; k++) {
            mn = load[k] < mn ? load[k] : mn;
            mx = load[k] > mx ? load[k] : mx;
        }
        CHECK(mx - mn <= 1);
        break;
    }
    case PARTI_STRATEGY_CALLBACK: break;
    }
    check_document(&in, owner, (uint64_t)size);
}

static void fuzz_document(const uint8_t *data, size_t size) {
    parti_assignment a, b;
    char msg[256];
    char *copy = (char *)malloc(size ? size : 1), *buf, *buf2;
    size_t needed = 0;
    int i;
    parti_err e;
    CHECK(copy);
    if (size) memcpy(copy, data, size);
    e = parti_assignment_decode(&a, copy, size, msg, sizeof msg);
    free(copy);
    if (e != PARTI_ERR_OK) {
        CHECK(a.members == NULL && a.owner == NULL && a.member_count == 0 && a.partition_count == 0);
        CHECK(msg[0] != 0);
        return;
    }
    CHECK(a.member_count >= 0 && a.member_count <= PARTI_ASSIGN_MAX_MEMBERS);
    CHECK(a.partition_count >= 0 && a.partition_count <= PARTI_ASSIGN_MAX_PARTITIONS);
    for (i = 0; i < a.member_count; i++) {
        size_t n = strlen(a.members[i]);
        CHECK(n >= 1 && n <= PARTI_ASSIGN_MAX_ID_LEN);
        if (i) CHECK(strcmp(a.members[i - 1], a.members[i]) < 0);
        CHECK(parti_assignment_member_index(&a, a.members[i]) == i);
    }
    for (i = 0; i < a.partition_count; i++) CHECK(a.owner[i] >= -1 && a.owner[i] < a.member_count);
    CHECK(parti_assignment_encode(&a, NULL, 0, &needed) == PARTI_ERR_BUFFER_TOO_SMALL);
    buf = (char *)malloc(needed);
    buf2 = (char *)malloc(needed);
    CHECK(buf && buf2);
    CHECK(parti_assignment_encode(&a, buf, needed, NULL) == PARTI_ERR_OK);
    CHECK(parti_assignment_decode(&b, buf, needed - 1, msg, sizeof msg) == PARTI_ERR_OK);
    CHECK(a.epoch == b.epoch && a.version == b.version && a.partitions_fingerprint == b.partitions_fingerprint);
    CHECK(a.member_count == b.member_count && a.partition_count == b.partition_count);
    for (i = 0; i < a.member_count; i++) CHECK(strcmp(a.members[i], b.members[i]) == 0);
    if (a.partition_count) CHECK(memcmp(a.owner, b.owner, (size_t)a.partition_count * sizeof *a.owner) == 0);
    CHECK(parti_assignment_encode(&b, buf2, needed, NULL) == PARTI_ERR_OK);
    CHECK(memcmp(buf, buf2, needed) == 0);
    free(buf);
    free(buf2);
    parti_assignment_free(&a);
    parti_assignment_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] % 4 == 0) fuzz_document(data + 1, size - 1);
    else fuzz_assign(data + 1, size - 1);
    return 0;
}

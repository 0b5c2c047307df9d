/* Unit tests of the assignment strategies and the assignment document. */
#include "parti.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char msg[512];

/* ---- fixtures ---- */

typedef struct parts {
    parti_partition *p;
    char **keys;
    const char **keyptr;
    int count;
} parts;

/* count partitions with one key "p<i>"; weights[i] when given. */
static parts make_parts(int count, const uint32_t *weights) {
    parts ps;
    int i;
    ps.count = count;
    ps.p = (parti_partition *)calloc((size_t)count + 1, sizeof *ps.p);
    ps.keys = (char **)calloc((size_t)count + 1, sizeof *ps.keys);
    ps.keyptr = (const char **)calloc((size_t)count + 1, sizeof *ps.keyptr);
    cr_assert(ps.p && ps.keys && ps.keyptr);
    for (i = 0; i < count; i++) {
        ps.keys[i] = (char *)malloc(16);
        snprintf(ps.keys[i], 16, "p%d", i);
        ps.keyptr[i] = ps.keys[i];
        ps.p[i].keys = &ps.keyptr[i];
        ps.p[i].key_count = 1;
        ps.p[i].weight = weights ? weights[i] : 1;
    }
    return ps;
}

static void free_parts(parts *ps) {
    int i;
    for (i = 0; i < ps->count; i++) free(ps->keys[i]);
    free(ps->keys);
    free(ps->keyptr);
    free(ps->p);
}

typedef struct members {
    parti_member *m;
    char **ids;
    int count;
} members;

/* count members "w<first+k>" with capacities caps[k] (NULL = all 0). */
static members make_members(int count, int first, const uint32_t *caps) {
    members ms;
    int k;
    ms.count = count;
    ms.m = (parti_member *)calloc((size_t)count + 1, sizeof *ms.m);
    ms.ids = (char **)calloc((size_t)count + 1, sizeof *ms.ids);
    cr_assert(ms.m && ms.ids);
    for (k = 0; k < count; k++) {
        ms.ids[k] = (char *)malloc(16);
        snprintf(ms.ids[k], 16, "w%d", first + k);
        ms.m[k].id = ms.ids[k];
        ms.m[k].capacity = caps ? caps[k] : 0;
    }
    return ms;
}

static void free_members(members *ms) {
    int k;
    for (k = 0; k < ms->count; k++) free(ms->ids[k]);
    free(ms->ids);
    free(ms->m);
}

static parti_assign_options opts_of(parti_strategy s) {
    parti_assign_options o;
    memset(&o, 0, sizeof o);
    o.strategy = s;
    return o;
}

/* Runs parti_assign and asserts success; returns owner IDs (pointers into ms). */
static const char **assign_ids(const parts *ps, const parti_member *ms, int n, const char *const *prev,
                               const parti_assign_options *o) {
    parti_assign_input in;
    int *owner = (int *)malloc(((size_t)ps->count + 1) * sizeof *owner);
    const char **ids = (const char **)malloc(((size_t)ps->count + 1) * sizeof *ids);
    parti_err e;
    int i;
    memset(&in, 0, sizeof in);
    in.partitions = ps->p;
    in.partition_count = ps->count;
    in.members = ms;
    in.member_count = n;
    in.previous_owner = prev;
    e = parti_assign(&in, o, owner, msg, sizeof msg);
    cr_assert_eq(e, PARTI_ERR_OK, "%s: %s", parti_error_name(e), msg);
    for (i = 0; i < ps->count; i++) {
        cr_assert(owner[i] >= 0 && owner[i] < n, "partition %d owner %d of %d", i, owner[i], n);
        ids[i] = ms[owner[i]].id;
    }
    free(owner);
    return ids;
}

static int load_of(const char **ids, int p, const char *id) {
    int i, n = 0;
    for (i = 0; i < p; i++) n += strcmp(ids[i], id) == 0;
    return n;
}

static void min_max_load(const char **ids, int p, const members *ms, int *mn, int *mx) {
    int k;
    *mn = p + 1;
    *mx = -1;
    for (k = 0; k < ms->count; k++) {
        int l = load_of(ids, p, ms->ids[k]);
        if (l < *mn) *mn = l;
        if (l > *mx) *mx = l;
    }
}

static int count_moved(const char **before, const char **after, int p) {
    int i, n = 0;
    for (i = 0; i < p; i++) n += before[i] && strcmp(before[i], after[i]) != 0;
    return n;
}

static uint64_t rng_state;
static uint64_t rnd(uint64_t bound) { return bound ? parti_rng_splitmix64(&rng_state) % bound : 0; }

static const parti_strategy all_builtin[] = {PARTI_STRATEGY_STICKY, PARTI_STRATEGY_CONSISTENT_HASH,
                                             PARTI_STRATEGY_WEIGHTED_HASH, PARTI_STRATEGY_RENDEZVOUS,
                                             PARTI_STRATEGY_ROUND_ROBIN};
#define NBUILTIN ((int)(sizeof all_builtin / sizeof *all_builtin))

/* ---- names and options ---- */

Test(assign, strategy_names_round_trip) {
    int s;
    parti_strategy out;
    for (s = 0; s <= PARTI_STRATEGY_CALLBACK; s++) {
        cr_assert_eq(parti_strategy_parse(parti_strategy_name((parti_strategy)s), &out), PARTI_ERR_OK);
        cr_assert_eq((int)out, s);
    }
    cr_assert_str_eq(parti_strategy_name(PARTI_STRATEGY_STICKY), "sticky");
    cr_assert_str_eq(parti_strategy_name(PARTI_STRATEGY_WEIGHTED_HASH), "weighted_hash");
    cr_assert_str_eq(parti_strategy_name((parti_strategy)42), "unknown");
    cr_assert_eq(parti_strategy_parse("Sticky", &out), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_strategy_parse(NULL, &out), PARTI_ERR_INVALID_ARGUMENT);
}

Test(assign, options_defaults) {
    parti_assign_options o = parti_assign_options_defaults(NULL), in;
    cr_assert_eq(o.strategy, PARTI_STRATEGY_STICKY);
    cr_assert_eq(o.vnodes, 128);
    cr_assert_eq(o.tolerance_percent, 0);
    memset(&in, 0, sizeof in);
    in.vnodes = 7;
    in.tolerance_percent = 10;
    o = parti_assign_options_defaults(&in);
    cr_assert_eq(o.vnodes, 7);
    cr_assert_eq(o.tolerance_percent, 10);
}

/* ---- every strategy, random inputs ---- */

typedef struct random_case {
    parts ps;
    members ms;
    char **gone;        /* departed member IDs used as previous owners */
    const char **prev;  /* may be NULL */
    parti_assign_options o;
} random_case;

static random_case make_random_case(parti_strategy s, int unit) {
    random_case rc;
    uint32_t *w, *caps;
    int i, p = (int)rnd(300), n = 1 + (int)rnd(20);
    w = (uint32_t *)malloc(((size_t)p + 1) * sizeof *w);
    caps = (uint32_t *)malloc(((size_t)n + 1) * sizeof *caps);
    for (i = 0; i < p; i++) w[i] = unit ? (uint32_t)rnd(2) : (uint32_t)(rnd(10) == 0 ? 1000 + rnd(5000) : rnd(6));
    for (i = 0; i < n; i++) caps[i] = (uint32_t)(rnd(3) ? 0 : rnd(5));
    rc.ps = make_parts(p, w);
    rc.ms = make_members(n, (int)rnd(5), caps);
    rc.gone = (char **)calloc(3, sizeof *rc.gone);
    for (i = 0; i < 3; i++) {
        rc.gone[i] = (char *)malloc(16);
        snprintf(rc.gone[i], 16, "gone%d", i);
    }
    rc.prev = NULL;
    if (rnd(4)) {
        rc.prev = (const char **)calloc((size_t)p + 1, sizeof *rc.prev);
        for (i = 0; i < p; i++) {
            uint64_t r = rnd(10);
            rc.prev[i] = r < 6 ? rc.ms.ids[rnd((uint64_t)n)] : r < 8 ? rc.gone[rnd(3)] : NULL;
        }
    }
    rc.o = opts_of(s);
    rc.o.tolerance_percent = rnd(3) ? 0 : (int)rnd(60);
    rc.o.vnodes = rnd(2) ? 0 : 1 + (int)rnd(64);
    free(w);
    free(caps);
    return rc;
}

static void free_random_case(random_case *rc) {
    int i;
    free_parts(&rc->ps);
    free_members(&rc->ms);
    for (i = 0; i < 3; i++) free(rc->gone[i]);
    free(rc->gone);
    free(rc->prev);
}

Test(assign, every_strategy_gives_every_partition_one_valid_owner) {
    int s, round;
    rng_state = 1;
    for (s = 0; s < NBUILTIN; s++) {
        for (round = 0; round < 150; round++) {
            random_case rc = make_random_case(all_builtin[s], round % 2);
            const char **a = assign_ids(&rc.ps, rc.ms.m, rc.ms.count, rc.prev, &rc.o);
            const char **b = assign_ids(&rc.ps, rc.ms.m, rc.ms.count, rc.prev, &rc.o);
            int i;
            for (i = 0; i < rc.ps.count; i++)
                cr_assert_str_eq(a[i], b[i], "%s round %d: not deterministic", parti_strategy_name(all_builtin[s]),
                                 round);
            free(a);
            free(b);
            free_random_case(&rc);
        }
    }
}

Test(assign, member_order_does_not_matter) {
    int s, round;
    rng_state = 2;
    for (s = 0; s < NBUILTIN; s++) {
        for (round = 0; round < 60; round++) {
            random_case rc = make_random_case(all_builtin[s], round % 2);
            parti_member *shuffled = (parti_member *)malloc(((size_t)rc.ms.count + 1) * sizeof *shuffled);
            const char **a, **b;
            int i;
            memcpy(shuffled, rc.ms.m, (size_t)rc.ms.count * sizeof *shuffled);
            for (i = rc.ms.count - 1; i > 0; i--) {
                int j = (int)rnd((uint64_t)i + 1);
                parti_member t = shuffled[i];
                shuffled[i] = shuffled[j];
                shuffled[j] = t;
            }
            a = assign_ids(&rc.ps, rc.ms.m, rc.ms.count, rc.prev, &rc.o);
            b = assign_ids(&rc.ps, shuffled, rc.ms.count, rc.prev, &rc.o);
            for (i = 0; i < rc.ps.count; i++)
                cr_assert_str_eq(a[i], b[i], "%s round %d partition %d", parti_strategy_name(all_builtin[s]), round, i);
            free(a);
            free(b);
            free(shuffled);
            free_random_case(&rc);
        }
    }
}

/* Fixed inputs give fixed outputs, on every platform and in every later
 * version: the digests below were computed once and must never change
 * (workers of different builds must agree). */
Test(assign, golden_outputs) {
    static const uint32_t caps[] = {1, 1, 2, 1, 3};
    static const uint64_t want[] = {
        0x1bb48b1253a55da5ULL, /* sticky */
        0x1d703a9ec14556b3ULL, /* consistent_hash */
        0x067d79caffa4a805ULL, /* weighted_hash */
        0xb35d55ce6ffe291aULL, /* rendezvous */
        0x055d203357fa22a1ULL, /* round_robin */
    };
    parts ps = make_parts(64, NULL);
    members ms = make_members(5, 0, caps);
    int s, i;
    for (s = 0; s < NBUILTIN; s++) {
        parti_assign_options o = opts_of(all_builtin[s]);
        const char **ids = assign_ids(&ps, ms.m, ms.count, NULL, &o);
        uint64_t h = 0xcbf29ce484222325ULL;
        for (i = 0; i < ps.count; i++) {
            const unsigned char *q = (const unsigned char *)ids[i];
            for (; *q; q++) h = (h ^ *q) * 0x100000001b3ULL;
            h = (h ^ ',') * 0x100000001b3ULL;
        }
        cr_expect_eq(h, want[s], "%s: digest 0x%016llxULL", parti_strategy_name(all_builtin[s]),
                     (unsigned long long)h);
        free(ids);
    }
    free_parts(&ps);
    free_members(&ms);
}

/* ---- sticky ---- */

/* The fewest moves any assignment within the bands [f, c] needs, from loads
 * (N members, the last new_count of them new with load 0) and orphans that
 * must move anyway: max(orphans + excess, deficit). */
static int minimum_moves(const int *loads, int n, int orphans, int f, int c) {
    int k, excess = 0, deficit = 0;
    for (k = 0; k < n; k++) {
        if (loads[k] > c) excess += loads[k] - c;
        if (loads[k] < f) deficit += f - loads[k];
    }
    return orphans + excess > deficit ? orphans + excess : deficit;
}

Test(assign, sticky_grow_moves_the_minimum_and_stays_balanced) {
    static const int cases[][2] = {{10, 3},  {100, 7},  {1000, 10}, {1000, 33}, {12, 5},
                                   {5, 8},   {64, 8},   {1001, 10}, {7, 1},     {100000, 99}};
    size_t c;
    for (c = 0; c < sizeof cases / sizeof *cases; c++) {
        int p = cases[c][0], n = cases[c][1], k, mn, mx, moved, want;
        parts ps = make_parts(p, NULL);
        members ms = make_members(n + 1, 0, NULL);
        parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
        const char **before = assign_ids(&ps, ms.m, n, NULL, &o), **after;
        int *loads = (int *)calloc((size_t)n + 2, sizeof *loads);
        min_max_load(before, p, &(members){ms.m, ms.ids, n}, &mn, &mx);
        cr_assert_leq(mx - mn, 1, "P=%d N=%d: loads %d..%d", p, n, mn, mx);
        for (k = 0; k < n; k++) loads[k] = load_of(before, p, ms.ids[k]);
        loads[n] = 0;
        after = assign_ids(&ps, ms.m, n + 1, before, &o);
        moved = count_moved(before, after, p);
        want = minimum_moves(loads, n + 1, 0, p / (n + 1), (p + n) / (n + 1));
        cr_assert_eq(moved, want, "P=%d N=%d->%d: moved %d, minimum %d", p, n, n + 1, moved, want);
        min_max_load(after, p, &ms, &mn, &mx);
        cr_assert_leq(mx - mn, 1, "P=%d N=%d: loads %d..%d after growing", p, n + 1, mn, mx);
        for (k = 0; k < p; k++)
            if (strcmp(before[k], after[k]) != 0) cr_assert_str_eq(after[k], ms.ids[n], "moved to an old member");
        if (p == 100000) printf("sticky %d partitions, %d -> %d members: moved %d (minimum %d)\n", p, n, n + 1, moved, want);
        free(before);
        free(after);
        free(loads);
        free_parts(&ps);
        free_members(&ms);
    }
}

Test(assign, sticky_grow_one_by_one) {
    parts ps = make_parts(97, NULL);
    members ms = make_members(12, 0, NULL);
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    const char **prev = assign_ids(&ps, ms.m, 1, NULL, &o);
    int n, k;
    for (n = 2; n <= 12; n++) {
        int loads[13], mn, mx, moved, want;
        const char **next;
        for (k = 0; k < n; k++) loads[k] = k < n - 1 ? load_of(prev, ps.count, ms.ids[k]) : 0;
        next = assign_ids(&ps, ms.m, n, prev, &o);
        moved = count_moved(prev, next, ps.count);
        want = minimum_moves(loads, n, 0, ps.count / n, (ps.count + n - 1) / n);
        cr_assert_eq(moved, want, "%d members: moved %d, minimum %d", n, moved, want);
        min_max_load(next, ps.count, &(members){ms.m, ms.ids, n}, &mn, &mx);
        cr_assert_leq(mx - mn, 1);
        free(prev);
        prev = next;
    }
    free(prev);
    free_parts(&ps);
    free_members(&ms);
}

Test(assign, sticky_shrink_moves_only_the_departed_members_partitions) {
    static const int cases[][3] = {{10, 3, 0}, {100, 7, 3}, {1000, 10, 9}, {1001, 33, 16}, {5, 4, 1}, {64, 8, 7}};
    size_t c;
    for (c = 0; c < sizeof cases / sizeof *cases; c++) {
        int p = cases[c][0], n = cases[c][1], gone = cases[c][2], i, mn, mx, moved = 0, departed_load;
        parts ps = make_parts(p, NULL);
        members ms = make_members(n, 0, NULL);
        parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
        const char **before = assign_ids(&ps, ms.m, n, NULL, &o), **after;
        parti_member *live = (parti_member *)malloc((size_t)n * sizeof *live);
        for (i = 0; i < n; i++) live[i] = ms.m[i];
        live[gone] = live[n - 1];
        after = assign_ids(&ps, live, n - 1, before, &o);
        departed_load = load_of(before, p, ms.ids[gone]);
        for (i = 0; i < p; i++) {
            if (strcmp(before[i], after[i]) == 0) continue;
            moved++;
            cr_assert_str_eq(before[i], ms.ids[gone], "P=%d N=%d: partition %d of a live member moved", p, n, i);
        }
        cr_assert_eq(moved, departed_load);
        {
            int k;
            mn = p + 1;
            mx = -1;
            for (k = 0; k < n - 1; k++) {
                int l = load_of(after, p, live[k].id);
                mn = l < mn ? l : mn;
                mx = l > mx ? l : mx;
            }
        }
        cr_assert_leq(mx - mn, 1, "P=%d N=%d: loads %d..%d after shrinking", p, n - 1, mn, mx);
        free(live);
        free(before);
        free(after);
        free_parts(&ps);
        free_members(&ms);
    }
}

/* From any history (random previous owners, departed ones, none), unit
 * weights: loads end within the bands and exactly the minimum moves. */
Test(assign, sticky_minimum_moves_from_any_history) {
    int round;
    rng_state = 3;
    for (round = 0; round < 300; round++) {
        int p = (int)rnd(400), n = 1 + (int)rnd(15), i, k, orphans = 0, moved_live = 0, excess = 0, deficit = 0;
        uint32_t caps[16];
        uint64_t floors[16], capsv[16];
        int kept[16], load[16];
        parts ps;
        members ms;
        const char **prev, **after;
        char gone[] = "gone";
        parti_assign_input in;
        parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
        o.tolerance_percent = round % 3 == 0 ? (int)rnd(40) : 0;
        for (k = 0; k < n; k++) caps[k] = round % 2 ? (uint32_t)rnd(4) : 0;
        ps = make_parts(p, NULL);
        ms = make_members(n, 0, caps);
        prev = (const char **)calloc((size_t)p + 1, sizeof *prev);
        for (i = 0; i < p; i++) {
            uint64_t r = rnd(10);
            prev[i] = r < 7 ? ms.ids[rnd(r < 3 ? 2 : (uint64_t)n) % (uint64_t)n] : r < 9 ? gone : NULL;
        }
        memset(&in, 0, sizeof in);
        in.partitions = ps.p;
        in.partition_count = p;
        in.members = ms.m;
        in.member_count = n;
        cr_assert_eq(parti_assign_bands(&in, &o, floors, capsv, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
        after = assign_ids(&ps, ms.m, n, prev, &o);
        for (k = 0; k < n; k++) kept[k] = load[k] = 0;
        for (i = 0; i < p; i++) {
            int was = -1;
            for (k = 0; k < n; k++) {
                if (prev[i] && strcmp(prev[i], ms.ids[k]) == 0) was = k;
                if (strcmp(after[i], ms.ids[k]) == 0) load[k]++;
            }
            if (was < 0) orphans++;
            else {
                kept[was]++;
                moved_live += strcmp(prev[i], after[i]) != 0;
            }
        }
        for (k = 0; k < n; k++) {
            int keep = kept[k] < (int)capsv[k] ? kept[k] : (int)capsv[k];
            excess += kept[k] - keep;
            if (keep < (int)floors[k]) deficit += (int)floors[k] - keep;
            cr_assert((uint64_t)load[k] >= floors[k] && (uint64_t)load[k] <= capsv[k],
                      "round %d: member %d load %d outside [%llu, %llu]", round, k, load[k],
                      (unsigned long long)floors[k], (unsigned long long)capsv[k]);
        }
        {
            int extra = deficit - orphans - excess;
            cr_assert_eq(moved_live, excess + (extra > 0 ? extra : 0), "round %d: moved %d, excess %d, extra %d",
                         round, moved_live, excess, extra);
        }
        free(prev);
        free(after);
        free_parts(&ps);
        free_members(&ms);
    }
}

Test(assign, sticky_bands) {
    static const uint32_t caps[] = {1, 2, 3};
    parts ps = make_parts(10, NULL), ps12 = make_parts(12, NULL);
    members ms = make_members(3, 0, NULL), mc = make_members(3, 0, caps);
    parti_assign_input in;
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    uint64_t f[3], c[3];
    memset(&in, 0, sizeof in);
    in.partitions = ps.p;
    in.partition_count = 10;
    in.members = ms.m;
    in.member_count = 3;
    cr_assert_eq(parti_assign_bands(&in, &o, f, c, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert(f[0] == 3 && c[0] == 4 && f[2] == 3 && c[2] == 4);
    o.tolerance_percent = 50; /* 10/3 * 1.5 = 5, 10/3 / 1.5 = 2.2 */
    cr_assert_eq(parti_assign_bands(&in, &o, f, c, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert(f[1] == 2 && c[1] == 5);
    o.tolerance_percent = 0;
    in.partitions = ps12.p;
    in.partition_count = 12;
    in.members = mc.m;
    cr_assert_eq(parti_assign_bands(&in, &o, f, c, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert(f[0] == 2 && c[0] == 2 && f[1] == 4 && c[1] == 4 && f[2] == 6 && c[2] == 6);
    cr_assert_eq(parti_assign_bands(&in, &o, NULL, NULL, msg, sizeof msg), PARTI_ERR_OK);
    free_parts(&ps);
    free_parts(&ps12);
    free_members(&ms);
    free_members(&mc);
}

Test(assign, sticky_tolerance_keeps_a_moderately_uneven_assignment) {
    parts ps = make_parts(100, NULL);
    members ms = make_members(4, 0, NULL);
    const char *prev[100];
    const char **tight, **loose;
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    int i;
    for (i = 0; i < 100; i++) prev[i] = ms.ids[i < 30 ? 0 : 1 + i % 3]; /* 30, 24, 23, 23 */
    tight = assign_ids(&ps, ms.m, 4, prev, &o);
    cr_assert_eq(count_moved(prev, tight, 100), 5, "cap 25 sheds 5");
    cr_assert_eq(load_of(tight, 100, "w0"), 25);
    o.tolerance_percent = 20; /* cap 30, floor 20 */
    loose = assign_ids(&ps, ms.m, 4, prev, &o);
    cr_assert_eq(count_moved(prev, loose, 100), 0, "cap 30 keeps everything");
    free(tight);
    free(loose);
    free_parts(&ps);
    free_members(&ms);
}

Test(assign, sticky_capacities_are_respected) {
    static const uint32_t caps[] = {1, 2, 3, 4};
    parts ps = make_parts(1000, NULL);
    members ms = make_members(4, 0, caps);
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    const char **ids = assign_ids(&ps, ms.m, 4, NULL, &o);
    cr_assert_eq(load_of(ids, 1000, "w0"), 100);
    cr_assert_eq(load_of(ids, 1000, "w1"), 200);
    cr_assert_eq(load_of(ids, 1000, "w2"), 300);
    cr_assert_eq(load_of(ids, 1000, "w3"), 400);
    free(ids);
    free_parts(&ps);
    free_members(&ms);
}

Test(assign, sticky_tiny_capacity_share) {
    static const uint32_t caps[] = {1, 4000000000u};
    parts ps = make_parts(10, NULL), none = make_parts(0, NULL);
    members ms = make_members(2, 0, caps);
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    const char **ids = assign_ids(&ps, ms.m, 2, NULL, &o), **empty;
    cr_assert_leq(load_of(ids, 10, "w0"), 1, "cap is ceil(10 / 4000000001) = 1");
    cr_assert_geq(load_of(ids, 10, "w1"), 9);
    empty = assign_ids(&none, ms.m, 2, NULL, &o);
    free(ids);
    free(empty);
    free_parts(&ps);
    free_parts(&none);
    free_members(&ms);
}

Test(assign, sticky_weighted_partitions_are_always_placed) {
    static const uint32_t w[] = {10, 1, 1, 1, 1};
    parts ps = make_parts(5, w);
    members ms = make_members(2, 0, NULL);
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    const char **ids = assign_ids(&ps, ms.m, 2, NULL, &o);
    int i;
    /* cap = ceil(14 / 2) = 7: the 10 fits nowhere and overshoots on w0 */
    cr_assert_str_eq(ids[0], "w0");
    for (i = 1; i < 5; i++) cr_assert_str_eq(ids[i], "w1");
    free(ids);
    free_parts(&ps);
    free_members(&ms);
}

Test(assign, sticky_sheds_the_heaviest_partition_first) {
    static const uint32_t w[] = {4, 1, 1, 1, 1};
    parts ps = make_parts(5, w);
    members ms = make_members(2, 0, NULL);
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    const char *prev[] = {"w0", "w0", "w0", "w0", "w0"};
    const char **ids = assign_ids(&ps, ms.m, 2, prev, &o);
    int i;
    cr_assert_str_eq(ids[0], "w1", "one heavy partition moves, not four light ones");
    for (i = 1; i < 5; i++) cr_assert_str_eq(ids[i], "w0");
    free(ids);
    free_parts(&ps);
    free_members(&ms);
}

Test(assign, weighted_partitions_are_assigned_by_every_strategy) {
    int s, round;
    rng_state = 4;
    for (s = 0; s < NBUILTIN; s++) {
        for (round = 0; round < 40; round++) {
            int p = 1 + (int)rnd(200), i;
            uint32_t *w = (uint32_t *)malloc((size_t)p * sizeof *w);
            parts ps;
            members ms = make_members(1 + (int)rnd(9), 0, NULL);
            parti_assign_options o = opts_of(all_builtin[s]);
            const char **ids;
            for (i = 0; i < p; i++) w[i] = rnd(20) == 0 ? 4294967295u : (uint32_t)rnd(1000);
            ps = make_parts(p, w);
            ids = assign_ids(&ps, ms.m, ms.count, NULL, &o);
            free(ids);
            free(w);
            free_parts(&ps);
            free_members(&ms);
        }
    }
}

/* ---- hashing strategies ---- */

/* Adding a member moves partitions only to it; removing it again restores
 * the old assignment (so removal moves only its partitions). */
static void check_only_new_member_gains(parti_strategy s, const uint32_t *caps) {
    parts ps = make_parts(3000, NULL);
    members ms = make_members(11, 0, caps);
    parti_assign_options o = opts_of(s);
    const char **before = assign_ids(&ps, ms.m, 10, NULL, &o);
    const char **after = assign_ids(&ps, ms.m, 11, NULL, &o);
    int i, moved = 0;
    for (i = 0; i < ps.count; i++) {
        if (strcmp(before[i], after[i]) == 0) continue;
        moved++;
        cr_assert_str_eq(after[i], "w10", "%s: partition %d moved between old members", parti_strategy_name(s), i);
    }
    cr_assert_gt(moved, 3000 / 11 / 3, "%s: the new member got only %d", parti_strategy_name(s), moved);
    cr_assert_lt(moved, 3000 / 11 * 3);
    free(before);
    free(after);
    free_parts(&ps);
    free_members(&ms);
}

Test(assign, consistent_hash_moves_only_to_a_new_member) {
    check_only_new_member_gains(PARTI_STRATEGY_CONSISTENT_HASH, NULL);
}

Test(assign, rendezvous_moves_only_to_a_new_member) {
    static const uint32_t caps[] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2};
    check_only_new_member_gains(PARTI_STRATEGY_RENDEZVOUS, NULL);
    check_only_new_member_gains(PARTI_STRATEGY_RENDEZVOUS, caps);
}

static double share_ratio(parti_strategy s, int tolerance) {
    static const uint32_t caps[] = {1, 3};
    parts ps = make_parts(20000, NULL);
    members ms = make_members(2, 0, caps);
    parti_assign_options o = opts_of(s);
    const char **ids;
    double r;
    o.tolerance_percent = tolerance;
    ids = assign_ids(&ps, ms.m, 2, NULL, &o);
    r = (double)load_of(ids, 20000, "w1") / (double)load_of(ids, 20000, "w0");
    free(ids);
    free_parts(&ps);
    free_members(&ms);
    return r;
}

Test(assign, weighted_strategies_follow_capacity) {
    double hrw = share_ratio(PARTI_STRATEGY_RENDEZVOUS, 0), ring = share_ratio(PARTI_STRATEGY_WEIGHTED_HASH, 10000);
    cr_assert(hrw > 2.8 && hrw < 3.2, "rendezvous 1:3 gave 1:%.3f", hrw);
    cr_assert(ring > 2.0 && ring < 4.5, "weighted ring 1:3 (unbounded) gave 1:%.3f", ring);
    cr_assert_float_eq(share_ratio(PARTI_STRATEGY_WEIGHTED_HASH, 0), 3.0, 1e-9, "bounded: exactly the cap");
}

Test(assign, weighted_hash_respects_the_cap) {
    int round;
    rng_state = 5;
    for (round = 0; round < 50; round++) {
        int p = (int)rnd(2000), n = 1 + (int)rnd(30), k;
        parts ps = make_parts(p, NULL);
        members ms = make_members(n, 0, NULL);
        parti_assign_options o = opts_of(PARTI_STRATEGY_WEIGHTED_HASH);
        const char **ids;
        o.tolerance_percent = (int)rnd(30);
        o.vnodes = 1 + (int)rnd(100);
        ids = assign_ids(&ps, ms.m, n, NULL, &o);
        for (k = 0; k < n; k++) {
            int cap = (int)(((uint64_t)p * (uint64_t)(100 + o.tolerance_percent) + (uint64_t)n * 100 - 1) /
                            ((uint64_t)n * 100));
            cr_assert_leq(load_of(ids, p, ms.ids[k]), cap);
        }
        free(ids);
        free_parts(&ps);
        free_members(&ms);
    }
}

/* Mostly heavy partitions with a little room to spare (tolerance 10, at most
 * 4 wasted per member): the walk passes members a partition would overfill
 * even when they are not full, so every load stays within the cap. */
Test(assign, weighted_hash_walks_past_members_a_partition_does_not_fit) {
    int round;
    rng_state = 7;
    for (round = 0; round < 30; round++) {
        int p = 500 + (int)rnd(1500), n = 2 + (int)rnd(20), i, k;
        uint32_t *w = (uint32_t *)malloc((size_t)p * sizeof *w);
        uint64_t total = 0;
        parts ps;
        members ms = make_members(n, 0, NULL);
        parti_assign_input in;
        parti_assign_options o = opts_of(PARTI_STRATEGY_WEIGHTED_HASH);
        int *owner = (int *)malloc((size_t)p * sizeof *owner);
        uint64_t *load = (uint64_t *)calloc((size_t)n, sizeof *load), cap;
        for (i = 0; i < p; i++) total += w[i] = rnd(10) == 0 ? 1 : 5;
        ps = make_parts(p, w);
        o.tolerance_percent = 10;
        memset(&in, 0, sizeof in);
        in.partitions = ps.p;
        in.partition_count = p;
        in.members = ms.m;
        in.member_count = n;
        cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_OK);
        for (i = 0; i < p; i++) load[owner[i]] += w[i];
        cap = (total * 110 + (uint64_t)n * 100 - 1) / ((uint64_t)n * 100);
        for (k = 0; k < n; k++) cr_assert_leq(load[k], cap, "round %d member %d", round, k);
        free(w);
        free(owner);
        free(load);
        free_parts(&ps);
        free_members(&ms);
    }
}

Test(assign, consistent_hash_uses_the_joined_keys) {
    /* {"a","b"} and {"a.b"} are the same key bytes, so the same owner */
    static const char *const k2[] = {"a", "b"}, *const k1[] = {"a.b"};
    parti_partition p[2] = {{k2, 2, 1}, {k1, 1, 1}};
    members ms = make_members(50, 0, NULL);
    parti_assign_input in;
    parti_assign_options o = opts_of(PARTI_STRATEGY_CONSISTENT_HASH);
    int owner[2], s;
    memset(&in, 0, sizeof in);
    in.partitions = p;
    in.partition_count = 2;
    in.members = ms.m;
    in.member_count = 50;
    for (s = PARTI_STRATEGY_CONSISTENT_HASH; s <= PARTI_STRATEGY_RENDEZVOUS; s++) {
        o.strategy = (parti_strategy)s;
        if (s == PARTI_STRATEGY_WEIGHTED_HASH) continue; /* bounded: the second one may be pushed on */
        cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_OK);
        cr_assert_eq(owner[0], owner[1]);
    }
    free_members(&ms);
}

/* ---- round robin ---- */

Test(assign, round_robin_goes_round_in_id_order) {
    parti_member ms[] = {{"c", 0}, {"b", 5}, {"a", 0}};
    parts ps = make_parts(10, NULL);
    members wrap = {ms, NULL, 3};
    parti_assign_options o = opts_of(PARTI_STRATEGY_ROUND_ROBIN);
    const char **ids = assign_ids(&ps, ms, 3, NULL, &o);
    int mn, mx, i;
    for (i = 0; i < 10; i++) cr_assert_str_eq(ids[i], i % 3 == 0 ? "a" : i % 3 == 1 ? "b" : "c");
    {
        int k;
        mn = 99;
        mx = -1;
        for (k = 0; k < 3; k++) {
            int l = load_of(ids, 10, wrap.m[k].id);
            mn = l < mn ? l : mn;
            mx = l > mx ? l : mx;
        }
    }
    cr_assert_eq(mx - mn, 1);
    free(ids);
    free_parts(&ps);
}

/* ---- callback ---- */

static parti_err cb_copy(void *user, const parti_assign_input *in, int *owner) {
    const int *want = (const int *)user;
    int i;
    for (i = 0; i < in->partition_count; i++) owner[i] = want[i];
    return PARTI_ERR_OK;
}

static parti_err cb_skip_last(void *user, const parti_assign_input *in, int *owner) {
    int i;
    (void)user;
    for (i = 0; i + 1 < in->partition_count; i++) owner[i] = 0;
    return PARTI_ERR_OK;
}

static parti_err cb_fail(void *user, const parti_assign_input *in, int *owner) {
    (void)user;
    (void)in;
    (void)owner;
    return PARTI_ERR_TIMEOUT;
}

Test(assign, callback_output_is_validated) {
    parts ps = make_parts(5, NULL);
    members ms = make_members(3, 0, NULL);
    parti_assign_input in;
    parti_assign_options o = opts_of(PARTI_STRATEGY_CALLBACK);
    int good[] = {0, 1, 2, 2, 1}, bad[] = {0, 1, 2, 3, 1}, negative[] = {0, -2, 0, 0, 0}, owner[5];
    memset(&in, 0, sizeof in);
    in.partitions = ps.p;
    in.partition_count = 5;
    in.members = ms.m;
    in.member_count = 3;
    o.callback = cb_copy;
    o.callback_user = good;
    cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_arr_eq(owner, good, sizeof good);
    o.callback_user = bad;
    cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "partition 3") && strstr(msg, "owner 3"), "%s", msg);
    o.callback_user = negative;
    cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "partition 1"), "%s", msg);
    o.callback = cb_skip_last;
    cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "partition 4") && strstr(msg, "owner -1"), "%s", msg);
    o.callback = cb_fail;
    cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_TIMEOUT);
    o.callback = NULL;
    cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "options.callback"), "%s", msg);
    free_parts(&ps);
    free_members(&ms);
}

/* ---- bad input ---- */

Test(assign, bad_input_is_refused_with_a_message) {
    static const char *const nullkey[] = {NULL};
    char longid[PARTI_ASSIGN_MAX_ID_LEN + 2];
    parts ps = make_parts(3, NULL);
    parti_member dup[] = {{"a", 0}, {"b", 0}, {"a", 0}}, nul[] = {{"a", 0}, {NULL, 0}}, empty[] = {{"", 0}},
                 longm[] = {{longid, 0}};
    parti_partition badpart[] = {{nullkey, 1, 1}}, nokeys[] = {{NULL, 2, 1}}, negkeys[] = {{NULL, -1, 1}};
    parti_assign_input in;
    parti_assign_options o = opts_of(PARTI_STRATEGY_STICKY);
    int owner[3];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    memset(&in, 0, sizeof in);
    in.partitions = ps.p;
    in.partition_count = 3;
    in.members = dup;
    in.member_count = 0;

#define REFUSED(needle)                                                                                            \
    do {                                                                                                           \
        msg[0] = 0;                                                                                                \
        cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT, "%s", needle);    \
        cr_assert(strstr(msg, needle), "message \"%s\" lacks \"%s\"", msg, needle);                                \
    } while (0)

    REFUSED("member_count must be 1..");
    in.member_count = 3;
    REFUSED("same id \"a\"");
    in.members = nul;
    in.member_count = 2;
    REFUSED("in.members[1].id is NULL");
    in.members = empty;
    in.member_count = 1;
    REFUSED("in.members[0].id must be 1..");
    in.members = longm;
    REFUSED("in.members[0].id must be 1..");
    in.members = NULL;
    REFUSED("in.members is NULL");
    in.members = dup;
    in.member_count = 2;
    in.partitions = NULL;
    REFUSED("in.partitions is NULL");
    in.partitions = badpart;
    in.partition_count = 1;
    REFUSED("in.partitions[0].keys[0] is NULL");
    in.partitions = nokeys;
    REFUSED("in.partitions[0].keys is NULL");
    in.partitions = negkeys;
    REFUSED("in.partitions[0].key_count");
    in.partitions = ps.p;
    in.partition_count = -1;
    REFUSED("in.partition_count");
    in.partition_count = 3;
    o.tolerance_percent = -1;
    REFUSED("options.tolerance_percent");
    o.tolerance_percent = 0;
    o.vnodes = PARTI_ASSIGN_MAX_VNODES + 1;
    REFUSED("options.vnodes");
    o.vnodes = 0;
    o.strategy = (parti_strategy)42;
    REFUSED("options.strategy");
    o.strategy = PARTI_STRATEGY_STICKY;
    cr_assert_eq(parti_assign(NULL, &o, owner, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_assign(&in, &o, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "owner is NULL"), "%s", msg);
    cr_assert_eq(parti_assign(&in, NULL, owner, NULL, 0), PARTI_ERR_OK, "NULL options and message are fine");
#undef REFUSED
    free_parts(&ps);
}

Test(assign, moved_counts_changed_owners) {
    parti_member ms[] = {{"a", 0}, {"b", 0}};
    const char *prev[] = {"a", "b", NULL, "gone"};
    int owner[] = {0, 0, 1, 1};
    parti_assign_input in;
    memset(&in, 0, sizeof in);
    in.partition_count = 4;
    in.members = ms;
    in.member_count = 2;
    cr_assert_eq(parti_assign_moved(&in, owner), 0, "no history, no moves");
    in.previous_owner = prev;
    cr_assert_eq(parti_assign_moved(&in, owner), 2, "b -> a and gone -> b; NULL -> b is not a move");
    owner[0] = 5;
    cr_assert_eq(parti_assign_moved(&in, owner), -1);
    cr_assert_eq(parti_assign_moved(NULL, owner), -1);
}

/* ---- the assignment document ---- */

static parti_assignment make_doc(char **ids, int m, const int *owner, int n) {
    parti_assignment a;
    memset(&a, 0, sizeof a);
    a.epoch = 7;
    a.version = 3;
    a.partitions_fingerprint = 0xff;
    a.members = ids;
    a.member_count = m;
    a.owner = (int *)owner;
    a.partition_count = n;
    return a;
}

Test(assignment_doc, wire_format_is_exactly_as_documented) {
    char *ids[] = {(char *)"a", (char *)"b", (char *)"c"};
    int owner[] = {0, 1, 2, -1, 0};
    parti_assignment a = make_doc(ids, 3, owner, 5), back;
    char buf[256];
    size_t needed;
    /* u = 1,2,3,0,1 in 2 bits: 01 10 11 00 01 -> 0x6C 0x40 -> "bEA" */
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, &needed), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "{\"v\":1,\"epoch\":7,\"version\":3,\"fp\":\"00000000000000ff\",\"n\":5,"
                          "\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"bEA\"}");
    cr_assert_eq(needed, strlen(buf) + 1);
    cr_assert_eq(parti_assignment_decode(&back, buf, strlen(buf), msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(back.partition_count, 5);
    cr_assert_arr_eq(back.owner, owner, sizeof owner);
    cr_assert_eq(back.epoch, 7);
    cr_assert_eq(back.version, 3);
    cr_assert_eq(back.partitions_fingerprint, 0xff);
    cr_assert_str_eq(back.members[2], "c");
    parti_assignment_free(&back);
    parti_assignment_free(&back);
}

Test(assignment_doc, build_encode_decode_round_trip) {
    int round;
    rng_state = 6;
    for (round = 0; round < 100; round++) {
        int p = (int)rnd(500), n = 1 + (int)rnd(40), i;
        parts ps = make_parts(p, NULL);
        members ms = make_members(n, (int)rnd(1000), NULL);
        parti_assign_input in;
        parti_assign_options o = opts_of(all_builtin[round % NBUILTIN]);
        int *owner = (int *)malloc(((size_t)p + 1) * sizeof *owner);
        parti_assignment a, b;
        size_t needed, needed2;
        char *buf, *buf2;
        memset(&in, 0, sizeof in);
        in.partitions = ps.p;
        in.partition_count = p;
        in.members = ms.m;
        in.member_count = n;
        cr_assert_eq(parti_assign(&in, &o, owner, msg, sizeof msg), PARTI_ERR_OK);
        if (p && rnd(2)) owner[rnd((uint64_t)p)] = -1;
        cr_assert_eq(parti_assignment_build(&a, &in, owner, round, 2 * (uint64_t)round), PARTI_ERR_OK);
        cr_assert_eq(parti_assignment_encode(&a, NULL, 0, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
        buf = (char *)malloc(needed);
        cr_assert_eq(parti_assignment_encode(&a, buf, needed, &needed2), PARTI_ERR_OK);
        cr_assert_eq(needed, needed2);
        cr_assert_eq(parti_assignment_decode(&b, buf, needed - 1, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
        cr_assert_eq(b.partition_count, p);
        cr_assert_eq(b.member_count, n);
        cr_assert_eq(b.partitions_fingerprint, parti_partitions_fingerprint(ps.p, p));
        cr_assert_eq(b.epoch, (uint64_t)round);
        cr_assert_eq(b.version, 2 * (uint64_t)round);
        for (i = 0; i < p; i++) {
            const char *want = owner[i] < 0 ? NULL : ms.ids[owner[i]];
            const char *got = parti_assignment_owner_id(&b, i);
            if (!want) cr_assert_null(got);
            else cr_assert_str_eq(got, want);
        }
        buf2 = (char *)malloc(needed);
        cr_assert_eq(parti_assignment_encode(&b, buf2, needed, NULL), PARTI_ERR_OK);
        cr_assert_str_eq(buf, buf2, "re-encoding is byte for byte the same");
        free(buf);
        free(buf2);
        free(owner);
        parti_assignment_free(&a);
        parti_assignment_free(&b);
        free_parts(&ps);
        free_members(&ms);
    }
}

Test(assignment_doc, big_assignment_stays_compact) {
    parts ps = make_parts(100000, NULL);
    members ms = make_members(1000, 100000, NULL); /* IDs "w100000".."w100999" */
    parti_assign_input in;
    int *owner = (int *)malloc(100000 * sizeof *owner);
    parti_assignment a, b;
    size_t needed;
    char *buf;
    memset(&in, 0, sizeof in);
    in.partitions = ps.p;
    in.partition_count = 100000;
    in.members = ms.m;
    in.member_count = 1000;
    cr_assert_eq(parti_assign(&in, NULL, owner, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_assignment_build(&a, &in, owner, 1, 1), PARTI_ERR_OK);
    cr_assert_eq(parti_assignment_encode(&a, NULL, 0, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
    printf("assignment document, 100000 partitions x 1000 members: %zu bytes\n", needed - 1);
    cr_assert_lt(needed, 200 * 1024, "%zu bytes", needed);
    buf = (char *)malloc(needed);
    cr_assert_eq(parti_assignment_encode(&a, buf, needed, NULL), PARTI_ERR_OK);
    cr_assert_eq(parti_assignment_decode(&b, buf, needed - 1, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_arr_eq(a.owner, b.owner, 100000 * sizeof(int));
    cr_assert_eq(parti_assignment_partitions_of(&b, parti_assignment_member_index(&b, "w100500"), NULL, 0), 100);
    free(buf);
    free(owner);
    parti_assignment_free(&a);
    parti_assignment_free(&b);
    free_parts(&ps);
    free_members(&ms);
}

typedef struct bad_doc {
    const char *text;
    parti_err err;
    const char *needle;
} bad_doc;

#define DOC_HEAD "\"v\":1,\"epoch\":7,\"version\":3,\"fp\":\"00000000000000ff\""

Test(assignment_doc, decoder_refuses_malformed_documents) {
    static const bad_doc cases[] = {
        {"", PARTI_ERR_JSON_SYNTAX, ""},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"ow", PARTI_ERR_JSON_SYNTAX, "syntax"},
        {"[]", PARTI_ERR_JSON_TYPE, "must be a JSON object"},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"bE\"}", PARTI_ERR_INVALID_ARGUMENT,
         "owners has 2 characters"},
        {"{\"v\":2,\"epoch\":7,\"version\":3,\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_JSON_RANGE, "v2 is not supported"},
        {"{\"epoch\":7,\"version\":3,\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_JSON_MISSING, "\"v\" is missing"},
        {"{\"v\":1,\"epoch\":\"7\",\"version\":3,\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_JSON_TYPE, "\"epoch\" must be a number"},
        {"{\"v\":1,\"epoch\":-1,\"version\":3,\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_JSON_RANGE, "\"epoch\" must be an integer"},
        {"{\"v\":1,\"epoch\":1,\"version\":3.5,\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_JSON_RANGE, "\"version\""},
        {"{\"v\":1,\"epoch\":7,\"version\":3,\"fp\":\"xyz\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_INVALID_ARGUMENT, "fp must be 16 lowercase hex"},
        {"{\"v\":1,\"epoch\":7,\"version\":3,\"fp\":\"00000000000000FF\",\"n\":0,\"members\":[],\"owners\":\"\"}",
         PARTI_ERR_INVALID_ARGUMENT, "fp must be 16 lowercase hex"},
        {"{\"v\":1,\"epoch\":7,\"version\":3,\"fp\":7,\"n\":0,\"members\":[],\"owners\":\"\"}", PARTI_ERR_JSON_TYPE,
         "\"fp\" must be a string"},
        {"{" DOC_HEAD ",\"n\":99999999999,\"members\":[],\"owners\":\"\"}", PARTI_ERR_JSON_RANGE,
         "\"n\" must be an integer 0..4194304"},
        {"{" DOC_HEAD ",\"n\":4194304,\"members\":[\"a\"],\"owners\":\"AAAA\"}", PARTI_ERR_INVALID_ARGUMENT,
         "4194304 partitions of 1 bits need 699051"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":{},\"owners\":\"\"}", PARTI_ERR_JSON_TYPE, "\"members\" must be an array"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[\"a\",3],\"owners\":\"\"}", PARTI_ERR_JSON_TYPE,
         "members[1] must be a string"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[\"a\",\"b\",\"b\"],\"owners\":\"\"}", PARTI_ERR_INVALID_ARGUMENT,
         "members[2] \"b\" is a duplicate"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[\"b\",\"a\"],\"owners\":\"\"}", PARTI_ERR_INVALID_ARGUMENT,
         "members[1] \"a\" is out of order"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[\"\"],\"owners\":\"\"}", PARTI_ERR_INVALID_ARGUMENT, "members[0] must be 1.."},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[\"a\\u0000b\"],\"owners\":\"\"}", PARTI_ERR_INVALID_ARGUMENT,
         "without U+0000"},
        {"{" DOC_HEAD ",\"n\":1,\"members\":[\"a\",\"b\"],\"owners\":\"wA\"}", PARTI_ERR_JSON_RANGE,
         "partition 0 member 3, there are 2 members"},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"b!A\"}", PARTI_ERR_INVALID_ARGUMENT,
         "outside base64url"},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"b+A\"}", PARTI_ERR_INVALID_ARGUMENT,
         "outside base64url"},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"bEB\"}", PARTI_ERR_INVALID_ARGUMENT,
         "padding bits set in its last character"},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"bEE\"}", PARTI_ERR_INVALID_ARGUMENT,
         "padding bits set after the last partition"},
        {"{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"\\u0062EA\"}", PARTI_ERR_INVALID_ARGUMENT,
         "without escapes"},
        {"{" DOC_HEAD ",\"v\":1,\"n\":0,\"members\":[],\"owners\":\"\"}", PARTI_ERR_INVALID_ARGUMENT,
         "field \"v\" appears twice"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[]}", PARTI_ERR_JSON_MISSING, "\"owners\" is missing"},
        {"{" DOC_HEAD ",\"n\":0,\"members\":[],\"owners\":null}", PARTI_ERR_JSON_TYPE, "\"owners\" must be a string"},
    };
    size_t i;
    for (i = 0; i < sizeof cases / sizeof *cases; i++) {
        parti_assignment a;
        parti_err e;
        msg[0] = 0;
        e = parti_assignment_decode(&a, cases[i].text, strlen(cases[i].text), msg, sizeof msg);
        cr_assert_eq(e, cases[i].err, "case %zu: %s, want %s (%s)", i, parti_error_name(e),
                     parti_error_name(cases[i].err), msg);
        cr_assert(strstr(msg, cases[i].needle), "case %zu: message \"%s\" lacks \"%s\"", i, msg, cases[i].needle);
        cr_assert(a.members == NULL && a.owner == NULL && a.member_count == 0 && a.partition_count == 0);
    }
}

Test(assignment_doc, decoder_messages_name_the_byte) {
    const char *text = "{" DOC_HEAD ",\"n\":5,\"members\":[\"a\",\"b\",\"c\"],\"owners\":\"b!A\"}";
    parti_assignment a;
    char want[64];
    cr_assert_eq(parti_assignment_decode(&a, text, strlen(text), msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    snprintf(want, sizeof want, "at %zu", (size_t)(strchr(text, '!') - text));
    cr_assert(strstr(msg, want), "message \"%s\" lacks \"%s\"", msg, want);
}

/* The writer's instance: optional, 16 lowercase hex digits, written after
 * "version" only when set; round trip byte for byte. */
Test(assignment_doc, the_leader_instance_round_trips_and_is_checked) {
    static const char with[] = "{\"v\":1,\"epoch\":7,\"version\":3,\"leader\":\"00c0ffee00000001\","
                               "\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}";
    static const char *const bad[] = {
        "{\"v\":1,\"epoch\":7,\"version\":3,\"leader\":\"00C0FFEE00000001\",\"fp\":\"00000000000000ff\",\"n\":0,"
        "\"members\":[],\"owners\":\"\"}",
        "{\"v\":1,\"epoch\":7,\"version\":3,\"leader\":\"c0ffee\",\"fp\":\"00000000000000ff\",\"n\":0,"
        "\"members\":[],\"owners\":\"\"}",
        "{\"v\":1,\"epoch\":7,\"version\":3,\"leader\":12,\"fp\":\"00000000000000ff\",\"n\":0,"
        "\"members\":[],\"owners\":\"\"}",
        "{\"v\":1,\"epoch\":7,\"version\":3,\"leader\":\"00c0ffee00000001\",\"leader\":\"00c0ffee00000001\","
        "\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],\"owners\":\"\"}",
    };
    parti_assignment a;
    char out[256];
    size_t i;
    cr_assert_eq(parti_assignment_decode(&a, with, strlen(with), msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(a.leader, 0x00c0ffee00000001ull);
    cr_assert_eq(parti_assignment_encode(&a, out, sizeof out, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(out, with);
    a.leader = 0; /* not given: not written */
    cr_assert_eq(parti_assignment_encode(&a, out, sizeof out, NULL), PARTI_ERR_OK);
    cr_assert_null(strstr(out, "leader"), "%s", out);
    parti_assignment_free(&a);
    cr_assert_eq(parti_assignment_decode(&a, out, strlen(out), msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(a.leader, 0);
    parti_assignment_free(&a);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_neq(parti_assignment_decode(&a, bad[i], strlen(bad[i]), msg, sizeof msg), PARTI_ERR_OK, "%s",
                      bad[i]);
        cr_assert(strstr(msg, "leader") != NULL, "%s: %s", bad[i], msg);
    }
}

Test(assignment_doc, decoder_accepts_whitespace_any_order_and_unknown_fields) {
    const char *text = " { \"owners\" : \"bEA\", \"members\" : [ \"a\", \"b\", \"c\" ], \"n\" : 5, \"future\": {\"x\":[1]},"
                       " \"fp\": \"00000000000000ff\", \"version\": 3, \"epoch\": 7, \"v\": 1 } ";
    parti_assignment a;
    int want[] = {0, 1, 2, -1, 0};
    cr_assert_eq(parti_assignment_decode(&a, text, strlen(text), msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_arr_eq(a.owner, want, sizeof want);
    parti_assignment_free(&a);
}

Test(assignment_doc, decoder_refuses_too_many_members) {
    size_t cap = (size_t)(PARTI_ASSIGN_MAX_MEMBERS + 1) * 10 + 256, o;
    char *text = (char *)malloc(cap);
    parti_assignment a;
    int k;
    o = (size_t)snprintf(text, cap, "{" DOC_HEAD ",\"n\":0,\"members\":[");
    for (k = 0; k <= PARTI_ASSIGN_MAX_MEMBERS; k++) o += (size_t)snprintf(text + o, cap - o, "%s\"m%06d\"", k ? "," : "", k);
    o += (size_t)snprintf(text + o, cap - o, "],\"owners\":\"\"}");
    cr_assert_eq(parti_assignment_decode(&a, text, o, msg, sizeof msg), PARTI_ERR_JSON_RANGE);
    cr_assert(strstr(msg, "65537 members"), "%s", msg);
    free(text);
}

Test(assignment_doc, encoder_refuses_what_the_format_forbids) {
    char *unsorted[] = {(char *)"b", (char *)"a"}, *sorted[] = {(char *)"a", (char *)"b"},
         *badutf8[] = {(char *)"a\xff"}, *emptyid[] = {(char *)""};
    int owner[] = {0, 1}, far[] = {0, 2};
    parti_assignment a = make_doc(unsorted, 2, owner, 2);
    char buf[256], tiny[8];
    size_t needed = 0;
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, &needed), PARTI_ERR_INVALID_ARGUMENT);
    a = make_doc(sorted, 2, far, 2);
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, &needed), PARTI_ERR_INVALID_ARGUMENT);
    a = make_doc(badutf8, 1, owner, 1);
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, &needed), PARTI_ERR_INVALID_ARGUMENT);
    a = make_doc(emptyid, 1, owner, 1);
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, &needed), PARTI_ERR_INVALID_ARGUMENT);
    a = make_doc(sorted, 2, owner, 2);
    cr_assert_eq(parti_assignment_encode(&a, tiny, sizeof tiny, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, NULL), PARTI_ERR_OK);
    cr_assert_eq(needed, strlen(buf) + 1);
    cr_assert_eq(parti_assignment_encode(&a, NULL, 5, &needed), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_assignment_encode(NULL, buf, sizeof buf, &needed), PARTI_ERR_INVALID_ARGUMENT);
}

Test(assignment_doc, empty_assignment_round_trips) {
    parti_assignment a = make_doc(NULL, 0, NULL, 0), b;
    char buf[256];
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "{\"v\":1,\"epoch\":7,\"version\":3,\"fp\":\"00000000000000ff\",\"n\":0,\"members\":[],"
                          "\"owners\":\"\"}");
    cr_assert_eq(parti_assignment_decode(&b, buf, strlen(buf), msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(b.member_count, 0);
    cr_assert_eq(b.partition_count, 0);
    parti_assignment_free(&b);
}

Test(assignment_doc, lookups) {
    char *ids[] = {(char *)"a", (char *)"b", (char *)"c"};
    int owner[] = {2, 0, 2, -1, 2}, out[2], all[4];
    parti_assignment a = make_doc(ids, 3, owner, 5);
    cr_assert_eq(parti_assignment_member_index(&a, "c"), 2);
    cr_assert_eq(parti_assignment_member_index(&a, "d"), -1);
    cr_assert_eq(parti_assignment_member_index(&a, NULL), -1);
    cr_assert_str_eq(parti_assignment_owner_id(&a, 0), "c");
    cr_assert_null(parti_assignment_owner_id(&a, 3));
    cr_assert_null(parti_assignment_owner_id(&a, 5));
    cr_assert_null(parti_assignment_owner_id(&a, -1));
    cr_assert_eq(parti_assignment_partitions_of(&a, 2, out, 2), 3, "count beyond cap");
    cr_assert(out[0] == 0 && out[1] == 2);
    cr_assert_eq(parti_assignment_partitions_of(&a, 2, all, 4), 3);
    cr_assert_eq(all[2], 4);
    cr_assert_eq(parti_assignment_partitions_of(&a, 1, all, 4), 0);
    cr_assert_eq(parti_assignment_partitions_of(&a, 3, all, 4), -1);
    cr_assert_eq(parti_assignment_partitions_of(NULL, 0, all, 4), -1);
}

Test(assignment_doc, fingerprint_depends_on_keys_and_order_only) {
    static const char *const ab[] = {"a", "bc"}, *const abc[] = {"ab", "c"}, *const x[] = {"x"};
    parti_partition p1[] = {{ab, 2, 1}, {x, 1, 1}}, p2[] = {{x, 1, 1}, {ab, 2, 1}}, p3[] = {{abc, 2, 1}, {x, 1, 1}},
                    p4[] = {{ab, 2, 9}, {x, 1, 0}};
    uint64_t f1 = parti_partitions_fingerprint(p1, 2);
    cr_assert_eq(f1, parti_partitions_fingerprint(p1, 2));
    cr_assert_neq(f1, parti_partitions_fingerprint(p2, 2), "order matters");
    cr_assert_neq(f1, parti_partitions_fingerprint(p3, 2), "key boundaries matter");
    cr_assert_neq(f1, parti_partitions_fingerprint(p1, 1), "count matters");
    cr_assert_eq(f1, parti_partitions_fingerprint(p4, 2), "weights do not");
    cr_assert_eq(parti_partitions_fingerprint(NULL, 0), parti_partitions_fingerprint(p1, 0));
}

Test(assignment_doc, build_refuses_bad_owner) {
    parts ps = make_parts(2, NULL);
    members ms = make_members(2, 0, NULL);
    parti_assign_input in;
    parti_assignment a;
    int owner[] = {0, 2};
    memset(&in, 0, sizeof in);
    in.partitions = ps.p;
    in.partition_count = 2;
    in.members = ms.m;
    in.member_count = 2;
    cr_assert_eq(parti_assignment_build(&a, &in, owner, 1, 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_null(a.members);
    cr_assert_eq(parti_assignment_build(&a, &in, NULL, 1, 1), PARTI_ERR_INVALID_ARGUMENT);
    free_parts(&ps);
    free_members(&ms);
}

/* Benchmark of the assignment strategies. For each strategy and each size
 * (partitions 1k/10k/100k x members 10/100/1000, unit weights, equal
 * capacities, default options) it prints:
 *   time      median wall time of a fresh assignment (no history), in ms
 *   x rr      that time over round robin's on the same input, measured in the
 *             same run (the baseline: the cheapest possible assignment)
 *   peak KiB  the most memory parti held at once during one assignment
 *             (counted by an allocator wrapper; the caller's owner[] array
 *             is not included)
 *   max/avg   the most loaded member over the average load
 *   grow      N -> N+1 members with the fresh assignment as history:
 *             partitions moved, the minimum, and their ratio. The minimum is
 *             floor(P/(N+1)): what the new member must receive for every
 *             load to be within one of the average; a strategy that leaves
 *             the new member short can move less (ratio < 1).
 *   shrink    N -> N-1 (member "worker-<N/2>" leaves):
 *             moved, the minimum (the departed member's partitions, which
 *             must move whatever the strategy), and the ratio
 *   grow ms   time of the N -> N+1 assignment with history */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A counting allocator: a 16-byte header keeps each block's size. */
static size_t mem_now, mem_peak;

static void *count_malloc(size_t n) {
    unsigned char *p = (unsigned char *)malloc(n + 16);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    mem_now += n;
    if (mem_now > mem_peak) mem_peak = mem_now;
    return p + 16;
}

static void count_free(void *q) {
    size_t n;
    unsigned char *p = (unsigned char *)q;
    if (!p) return;
    memcpy(&n, p - 16, sizeof n);
    mem_now -= n;
    free(p - 16);
}

static void *count_realloc(void *q, size_t n) {
    size_t old = 0;
    unsigned char *p;
    if (!q) return count_malloc(n);
    memcpy(&old, (unsigned char *)q - 16, sizeof old);
    p = (unsigned char *)realloc((unsigned char *)q - 16, n + 16);
    if (!p) return NULL;
    memcpy(p, &n, sizeof n);
    mem_now = mem_now - old + n;
    if (mem_now > mem_peak) mem_peak = mem_now;
    return p + 16;
}

#define PARTI_MALLOC(sz) count_malloc(sz)
#define PARTI_REALLOC(p, sz) count_realloc(p, sz)
#define PARTI_FREE(p) count_free(p)
#define PARTI_IMPLEMENTATION
#include "parti.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* moved / minimum with two decimals, "-" when the minimum is 0. */
static const char *ratio(int moved, int minimum) {
    static char buf[4][16];
    static int next;
    char *b = buf[next++ % 4];
    if (minimum <= 0) snprintf(b, sizeof buf[0], "-");
    else snprintf(b, sizeof buf[0], "%.2f", (double)moved / minimum);
    return b;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct variant {
    const char *label;
    parti_strategy strategy;
    int tolerance;
} variant;

static const variant variants[] = {
    {"sticky", PARTI_STRATEGY_STICKY, 0},
    {"consistent_hash", PARTI_STRATEGY_CONSISTENT_HASH, 0},
    {"weighted_hash", PARTI_STRATEGY_WEIGHTED_HASH, 0},
    {"weighted_hash+25%", PARTI_STRATEGY_WEIGHTED_HASH, 25},
    {"rendezvous", PARTI_STRATEGY_RENDEZVOUS, 0},
    {"round_robin", PARTI_STRATEGY_ROUND_ROBIN, 0},
};
#define NVARIANTS ((int)(sizeof variants / sizeof *variants))

static const int sizes_p[] = {1000, 10000, 100000};
static const int sizes_n[] = {10, 100, 1000};

#define MAXP 100000
#define MAXN 1001

static char keybuf[MAXP][12];
static const char *keyptr[MAXP];
static parti_partition parts[MAXP];
static char idbuf[MAXN][16];
static parti_member members[MAXN], fewer[MAXN];
static int owner[MAXP], owner2[MAXP];
static const char *prev[MAXP];
static int loads[MAXN];

static void run(const parti_member *ms, int n, int p, const char *const *history, const parti_assign_options *o,
                int *out) {
    parti_assign_input in;
    char msg[256];
    parti_err e;
    memset(&in, 0, sizeof in);
    in.partitions = parts;
    in.partition_count = p;
    in.members = ms;
    in.member_count = n;
    in.previous_owner = history;
    e = parti_assign(&in, o, out, msg, sizeof msg);
    if (e != PARTI_ERR_OK) {
        fprintf(stderr, "parti_assign: %s: %s\n", parti_error_name(e), msg);
        exit(1);
    }
}

/* Median time of reps fresh assignments; the peak memory of the first. */
static double timed(const parti_assign_options *o, int p, int n, int reps, size_t *peak) {
    double t[7];
    int r;
    for (r = 0; r < reps; r++) {
        double t0;
        mem_peak = mem_now;
        t0 = now_ms();
        run(members, n, p, NULL, o, owner);
        t[r] = now_ms() - t0;
        if (r == 0 && peak) *peak = mem_peak - mem_now;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    return t[reps / 2];
}

int main(void) {
    int i, si, ni, v;
    double start = now_ms();
    for (i = 0; i < MAXP; i++) {
        snprintf(keybuf[i], sizeof keybuf[i], "p%d", i);
        keyptr[i] = keybuf[i];
        parts[i].keys = &keyptr[i];
        parts[i].key_count = 1;
        parts[i].weight = 1;
    }
    for (i = 0; i < MAXN; i++) {
        snprintf(idbuf[i], sizeof idbuf[i], "worker-%d", i);
        members[i].id = idbuf[i];
        members[i].capacity = 0;
    }
    printf("parti assignment strategies: unit weights, equal capacities, default options (vnodes 128, tolerance 0\n"
           "unless shown). Baseline: round robin on the same input in the same run.\n\n");
    printf("%-18s %6s %5s %9s %7s %9s %7s | %6s %6s %5s | %6s %6s %5s | %8s\n", "strategy", "P", "N", "time ms",
           "x rr", "peak KiB", "max/avg", "grow", "min", "ratio", "shrink", "min", "ratio", "grow ms");
    for (si = 0; si < 3; si++) {
        for (ni = 0; ni < 3; ni++) {
            int p = sizes_p[si], n = sizes_n[ni], reps = p * n >= 10000000 ? 3 : 5;
            parti_assign_options rr;
            double base;
            memset(&rr, 0, sizeof rr);
            rr.strategy = PARTI_STRATEGY_ROUND_ROBIN;
            base = timed(&rr, p, n, 7, NULL);
            for (v = 0; v < NVARIANTS; v++) {
                parti_assign_options o;
                size_t peak = 0;
                double t, tg;
                int k, mx = 0, grow = 0, shrink = 0, gone = n / 2, m = 0, grow_min = p / (n + 1), shrink_min;
                memset(&o, 0, sizeof o);
                o.strategy = variants[v].strategy;
                o.tolerance_percent = variants[v].tolerance;
                t = timed(&o, p, n, reps, &peak);
                for (k = 0; k < n; k++) loads[k] = 0;
                for (i = 0; i < p; i++) loads[owner[i]]++;
                for (k = 0; k < n; k++) mx = loads[k] > mx ? loads[k] : mx;
                for (i = 0; i < p; i++) prev[i] = members[owner[i]].id;
                /* grow */
                tg = now_ms();
                run(members, n + 1, p, prev, &o, owner2);
                tg = now_ms() - tg;
                for (i = 0; i < p; i++) grow += strcmp(prev[i], members[owner2[i]].id) != 0;
                /* shrink: member n/2 leaves */
                for (k = 0; k < n; k++)
                    if (k != gone) fewer[m++] = members[k];
                shrink_min = loads[gone];
                run(fewer, m, p, prev, &o, owner2);
                for (i = 0; i < p; i++) shrink += strcmp(prev[i], fewer[owner2[i]].id) != 0;
                printf("%-18s %6d %5d %9.3f %7.1f %9.1f %7.2f | %6d %6d %5s | %6d %6d %5s | %8.3f\n",
                       variants[v].label, p, n, t, base > 0 ? t / base : 0.0, (double)peak / 1024.0,
                       (double)mx * n / p, grow, grow_min, ratio(grow, grow_min), shrink, shrink_min,
                       ratio(shrink, shrink_min), tg);
                fflush(stdout);
            }
            printf("%-18s %6d %5d %9.3f   (baseline)\n", "  round_robin base", p, n, base);
        }
    }
    printf("\ntotal %.1f s\n", (now_ms() - start) / 1e3);
    return 0;
}

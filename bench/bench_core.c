/* Benchmarks of the pure core. Each prints absolute numbers and a ratio
 * against a baseline measured in the same run:
 *   subjects_build  vs  snprintf + qsort + dedupe with no validation
 *   subjects_diff   vs  the same merge walk without allocation (counting only)
 *   json_parse      vs  a memchr scan of the same bytes for '"'
 *   metrics_write   vs  snprintf of the same number of "name value" lines
 *   backoff_next    vs  the bare RNG call */
#define _POSIX_C_SOURCE 199309L
#define PARTI_IMPLEMENTATION
#include "parti.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define NPART 1000
static char keybuf[NPART][16];
static const char *keyptr[NPART][1];
static parti_partition parts[NPART];
static volatile size_t sink;

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void baseline_build(void) {
    char *items[NPART];
    int i, w = 0;
    for (i = 0; i < NPART; i++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "orders.%s", keybuf[i]);
        items[i] = (char *)malloc((size_t)n + 1);
        memcpy(items[i], buf, (size_t)n + 1);
    }
    qsort(items, NPART, sizeof *items, cmp);
    for (i = 0; i < NPART; i++) {
        if (w && strcmp(items[w - 1], items[i]) == 0) { free(items[i]); continue; }
        items[w++] = items[i];
    }
    sink += (size_t)w;
    for (i = 0; i < w; i++) free(items[i]);
}

static void parti_build(void) {
    parti_subjects s = {NULL, 0};
    if (parti_subjects_build("orders.{0}", parts, NPART, 0, &s, NULL, 0) != PARTI_ERR_OK) abort();
    sink += (size_t)s.count;
    parti_subjects_free(&s);
}

static double time_it(void (*fn)(void), int iters) {
    double t0 = now_s();
    int i;
    for (i = 0; i < iters; i++) fn();
    return (now_s() - t0) / iters;
}

static parti_subjects set_a, set_b;

static void baseline_diff(void) {
    int i = 0, j = 0, n = 0;
    while (i < set_a.count || j < set_b.count) {
        int c = i >= set_a.count ? 1 : j >= set_b.count ? -1 : strcmp(set_a.items[i], set_b.items[j]);
        if (c == 0) { i++; j++; } else if (c < 0) { i++; n++; } else { j++; n++; }
    }
    sink += (size_t)n;
}

static void parti_diff(void) {
    parti_subjects add = {NULL, 0}, rem = {NULL, 0};
    if (parti_subjects_diff(&set_a, &set_b, &add, &rem) != PARTI_ERR_OK) abort();
    sink += (size_t)(add.count + rem.count);
    parti_subjects_free(&add);
    parti_subjects_free(&rem);
}

static uint64_t rng_state = 1;
static parti_backoff bo;

static void baseline_rng(void) { sink += (size_t)parti_rng_splitmix64(&rng_state); }
static void parti_backoff_step(void) {
    uint64_t d;
    if (parti_backoff_next(&bo, parti_rng_splitmix64, &rng_state, &d) != PARTI_ERR_OK) abort();
    sink += (size_t)d;
}

static char *json_doc;
static size_t json_len;

/* A consumer-info shaped document with 1000 filter subjects. */
static void make_json_doc(void) {
    size_t cap = 64 * 1024, n = 0;
    int i;
    json_doc = (char *)malloc(cap);
    n += (size_t)snprintf(json_doc + n, cap - n, "{\"name\":\"w1\",\"config\":{\"filter_subjects\":[");
    for (i = 0; i < 1000; i++) n += (size_t)snprintf(json_doc + n, cap - n, "%s\"orders.%d\"", i ? "," : "", i);
    n += (size_t)snprintf(json_doc + n, cap - n, "]},\"num_pending\":12345,\"delivered\":{\"stream_seq\":987}}");
    json_len = n;
}

static void parti_json(void) {
    parti_json_doc d;
    if (parti_json_parse(&d, json_doc, json_len, NULL, NULL, 0) != PARTI_ERR_OK) abort();
    sink += (size_t)d.node_count;
    parti_json_doc_free(&d);
}

static void baseline_json(void) {
    const char *p = json_doc, *end = json_doc + json_len;
    size_t quotes = 0;
    while ((p = (const char *)memchr(p, '"', (size_t)(end - p))) != NULL) {
        quotes++;
        p++;
    }
    sink += quotes;
}

static parti_metrics metrics;
static char scrape[64 * 1024];

static void parti_scrape(void) {
    size_t need = 0;
    if (parti_metrics_write(&metrics, NULL, 0, scrape, sizeof scrape, &need) != PARTI_ERR_OK) abort();
    sink += need;
}

static void baseline_scrape(void) {
    size_t n = 0;
    int i;
    for (i = 0; i < PARTI_METRICS_SERIES_COUNT; i++)
        n += (size_t)snprintf(scrape + n, sizeof scrape - n, "parti_metric_%d %llu\n", i, (unsigned long long)sink);
    sink += n;
}

static void report(const char *name, double parti_s, double base_s, const char *unit, double per) {
    printf("%-16s parti %10.3f %s   baseline %10.3f %s   ratio parti/baseline %.2fx\n", name, parti_s * per, unit,
           base_s * per, unit, parti_s / base_s);
}

int main(void) {
    int i;
    for (i = 0; i < NPART; i++) {
        snprintf(keybuf[i], sizeof keybuf[i], "%d", (i * 7919) % NPART);
        keyptr[i][0] = keybuf[i];
        parts[i].keys = keyptr[i];
        parts[i].key_count = 1;
        parts[i].weight = 1;
    }
    printf("parti %s core benchmarks (%d partitions)\n", PARTI_VERSION_STRING, NPART);
    time_it(parti_build, 20);
    time_it(baseline_build, 20);
    report("subjects_build", time_it(parti_build, 300), time_it(baseline_build, 300), "us/set", 1e6);

    parti_subjects_build("orders.{0}", parts, NPART, 0, &set_a, NULL, 0);
    parti_subjects_build("orders.{0}", parts + NPART / 4, NPART / 2, 0, &set_b, NULL, 0);
    report("subjects_diff", time_it(parti_diff, 2000), time_it(baseline_diff, 2000), "us/diff", 1e6);

    parti_backoff_init(&bo, 100, 30000, 0);
    report("backoff_next", time_it(parti_backoff_step, 2000000), time_it(baseline_rng, 2000000), "ns/call", 1e9);

    make_json_doc();
    report("json_parse", time_it(parti_json, 2000), time_it(baseline_json, 2000), "us/doc", 1e6);
    printf("%-16s %zu bytes: parti parses %.0f MB/s\n", "", json_len, json_len / time_it(parti_json, 2000) / 1e6);
    free(json_doc);

    parti_metrics_init(&metrics);
    {
        size_t need = 0;
        parti_metrics_write(&metrics, NULL, 0, NULL, 0, &need);
        report("metrics_write", time_it(parti_scrape, 20000), time_it(baseline_scrape, 20000), "us/scrape", 1e6);
        printf("%-16s %d series, %zu bytes per scrape\n", "", PARTI_METRICS_SERIES_COUNT, need);
    }
    parti_subjects_free(&set_a);
    parti_subjects_free(&set_b);
    return sink == 42 ? 1 : 0;
}

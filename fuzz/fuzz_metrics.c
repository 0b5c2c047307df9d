#define PARTI_IMPLEMENTATION
#include "parti.h"

/* Fuzz target: the Prometheus text writer on arbitrary series. The input
 * picks the series (names, help, types, labels with any bytes, counter and
 * gauge values from raw bits, histograms with raw or increasing bounds and
 * any bucket counts, NULL pointers now and then), the common labels and the
 * output capacity. Properties:
 *   - the writer accepts exactly what an independent check of the rules
 *     accepts (names, label names, UTF-8, types, bounds, repeated label
 *     names, "le" on histograms, split families);
 *   - size-only call, a call into an exact-size heap buffer of the chosen
 *     capacity (ASan catches any write past it) and, when that was too small,
 *     a retry with the reported size agree: same needed, the short buffer
 *     holds a NUL-terminated prefix of the full output, strlen == needed - 1;
 *   - every output line is "# HELP name ...", "# TYPE name type" or
 *     name{label="escaped",...} value, with one TYPE line per family;
 *   - a gauge's text reads back as exactly its value. */
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) __builtin_trap();                                                                                \
    } while (0)

enum { MAX_SERIES = 12, MAX_LABELS = 3, MAX_COMMON = 3, ARENA = 16384 };

typedef struct input {
    const uint8_t *d;
    size_t n, i;
} input;

static uint8_t u8(input *in) { return in->i < in->n ? in->d[in->i++] : 0; }

static uint64_t u64(input *in) {
    uint64_t v = 0;
    int k;
    for (k = 0; k < 8; k++) v = v << 8 | u8(in);
    return v;
}

static double dbl(input *in) {
    uint64_t bits = u64(in);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Everything the series point at lives here, for one input. */
typedef struct world {
    parti_metric series[MAX_SERIES];
    parti_label labels[MAX_SERIES][MAX_LABELS];
    parti_label common[MAX_COMMON];
    parti_counter counters[MAX_SERIES];
    parti_gauge gauges[MAX_SERIES];
    parti_histogram histograms[MAX_SERIES];
    char arena[ARENA];
    size_t used;
} world;

static const char *const name_pool[] = {"a", "a_total", "b:c", "_x", "h_seconds", "g", "1bad", "", "a-b"};
static const char *const label_pool[] = {"a", "b", "le", "result", "__x", "_", "9", "x y", ""};
static const char *const value_pool[] = {"", "v", "a\\b", "q\"q", "l\nl", "caf\xc3\xa9", "\xff", "\xed\xa0\x80"};

/* A NUL-terminated copy of up to len (from the input) bytes, or "" when
 * the arena is full. Embedded NULs just end the string early. */
static const char *raw_string(input *in, world *w) {
    size_t len = u8(in) % 24, k;
    char *s;
    if (w->used + len + 1 > ARENA) return "";
    s = w->arena + w->used;
    for (k = 0; k < len; k++) s[k] = (char)u8(in);
    s[len] = 0;
    w->used += len + 1;
    return s;
}

static const char *pick(input *in, world *w, const char *const *pool, size_t n) {
    uint8_t b = u8(in);
    return b < 224 ? pool[b % n] : raw_string(in, w);
}

static const char *pick_help(input *in, world *w) {
    switch (u8(in) % 4) {
    case 0: return NULL;
    case 1: return "";
    case 2: return "Some help: \\ \" \n end.";
    }
    return raw_string(in, w);
}

static void make_label(input *in, world *w, parti_label *l) {
    uint8_t b = u8(in);
    l->name = b == 255 ? NULL : pick(in, w, label_pool, sizeof label_pool / sizeof *label_pool);
    b = u8(in);
    l->value = b == 255 ? NULL : b < 160 ? value_pool[b % (sizeof value_pool / sizeof *value_pool)] : raw_string(in, w);
}

static void make_histogram(input *in, parti_histogram *h) {
    int k;
    memset(h, 0, sizeof *h);
    h->bucket_count = (int8_t)u8(in) % (PARTI_HISTOGRAM_MAX_BUCKETS + 3);
    if (u8(in) & 1) { /* mostly valid: increasing from a small start */
        double b = (double)(int8_t)u8(in) / 8;
        for (k = 0; k < PARTI_HISTOGRAM_MAX_BUCKETS; k++) {
            h->bounds[k] = b;
            b += (double)(u8(in) % 16) / 4; /* 0 step: a duplicate bound */
        }
    } else {
        for (k = 0; k < PARTI_HISTOGRAM_MAX_BUCKETS; k++) h->bounds[k] = dbl(in);
    }
    for (k = 0; k <= PARTI_HISTOGRAM_MAX_BUCKETS; k++) h->buckets[k] = u8(in) & 0x80 ? u64(in) : u8(in);
    h->sum = u8(in) & 1 ? dbl(in) : (double)u8(in) / 4;
}

static void make_series(input *in, world *w, int i) {
    parti_metric *m = &w->series[i];
    int k, nl;
    uint8_t vb;
    m->name = u8(in) == 255 ? NULL : pick(in, w, name_pool, sizeof name_pool / sizeof *name_pool);
    m->help = pick_help(in, w);
    m->type = (parti_metric_type)(u8(in) % 5); /* 0 and 4 are invalid */
    nl = u8(in) % (MAX_LABELS + 1);
    for (k = 0; k < nl; k++) make_label(in, w, &w->labels[i][k]);
    m->labels = nl ? w->labels[i] : (u8(in) & 1 ? NULL : w->labels[i]);
    m->label_count = u8(in) == 255 ? -1 : nl;
    w->counters[i].value = u64(in);
    w->gauges[i].value = dbl(in);
    make_histogram(in, &w->histograms[i]);
    vb = u8(in);
    m->value = vb == 255                          ? NULL
               : m->type == PARTI_METRIC_GAUGE     ? (const void *)&w->gauges[i]
               : m->type == PARTI_METRIC_HISTOGRAM ? (const void *)&w->histograms[i]
                                                   : (const void *)&w->counters[i];
}

/* ---- an independent statement of the rules ---- */

static int word_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int digit(char c) { return c >= '0' && c <= '9'; }

static int metric_name_ok(const char *s) {
    size_t k;
    if (!s || !*s) return 0;
    for (k = 0; s[k]; k++)
        if (!(word_start(s[k]) || s[k] == ':' || (k && digit(s[k])))) return 0;
    return 1;
}

static int label_name_ok(const char *s) {
    size_t k;
    if (!s || !*s || strncmp(s, "__", 2) == 0) return 0;
    for (k = 0; s[k]; k++)
        if (!(word_start(s[k]) || (k && digit(s[k])))) return 0;
    return 1;
}

/* Strict UTF-8 by code point arithmetic (not by the byte tables parti uses). */
static int utf8_ok(const char *str) {
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        uint32_t cp;
        int more, k;
        if (*s < 0x80) { s++; continue; }
        if ((*s & 0xE0) == 0xC0) { cp = *s & 0x1F; more = 1; }
        else if ((*s & 0xF0) == 0xE0) { cp = *s & 0x0F; more = 2; }
        else if ((*s & 0xF8) == 0xF0) { cp = *s & 0x07; more = 3; }
        else return 0;
        for (k = 1; k <= more; k++) {
            if ((s[k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[k] & 0x3F);
        }
        if ((more == 1 && cp < 0x80) || (more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000)) return 0;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        s += more + 1;
    }
    return 1;
}

static int finite(double v) { return v == v && v <= 1.7976931348623157e308 && v >= -1.7976931348623157e308; }

static int labels_ok(const parti_label *l, int n) {
    int k;
    if (n < 0 || (n && !l)) return 0;
    for (k = 0; k < n; k++)
        if (!label_name_ok(l[k].name) || !l[k].value || !utf8_ok(l[k].value)) return 0;
    return 1;
}

/* All label names of one sample (common + own) distinct; "le" not among them for histograms. */
static int names_ok(const parti_label *common, int nc, const parti_metric *m) {
    const char *all[MAX_COMMON + MAX_LABELS];
    int n = 0, a, b;
    for (a = 0; a < nc; a++) all[n++] = common[a].name;
    for (a = 0; a < m->label_count; a++) all[n++] = m->labels[a].name;
    for (a = 0; a < n; a++) {
        if (m->type == PARTI_METRIC_HISTOGRAM && strcmp(all[a], "le") == 0) return 0;
        for (b = 0; b < a; b++)
            if (strcmp(all[a], all[b]) == 0) return 0;
    }
    return 1;
}

static int series_ok(const parti_metric *m, const parti_label *common, int nc) {
    if (!metric_name_ok(m->name) || (m->help && !utf8_ok(m->help))) return 0;
    if (m->type < PARTI_METRIC_COUNTER || m->type > PARTI_METRIC_HISTOGRAM || !m->value) return 0;
    if (!labels_ok(m->labels, m->label_count) || !names_ok(common, nc, m)) return 0;
    if (m->type == PARTI_METRIC_HISTOGRAM) {
        const parti_histogram *h = (const parti_histogram *)m->value;
        int k;
        if (h->bucket_count < 0 || h->bucket_count > PARTI_HISTOGRAM_MAX_BUCKETS) return 0;
        for (k = 0; k < h->bucket_count; k++)
            if (!finite(h->bounds[k]) || (k && !(h->bounds[k] > h->bounds[k - 1]))) return 0;
    }
    return 1;
}

/* Also counts the families (for the TYPE-line check). */
static int all_ok(const world *w, int count, int nc, int *families) {
    int i, j;
    *families = 0;
    if (!labels_ok(w->common, nc)) return 0;
    for (i = 0; i < count; i++)
        if (!series_ok(&w->series[i], w->common, nc)) return 0;
    for (i = 0; i < count; i++) {
        if (i && strcmp(w->series[i].name, w->series[i - 1].name) == 0) {
            if (w->series[i].type != w->series[i - 1].type) return 0;
            continue;
        }
        ++*families;
        for (j = 0; j < i; j++)
            if (strcmp(w->series[j].name, w->series[i].name) == 0) return 0;
    }
    return 1;
}

/* ---- output shape ---- */

static const char *skip_name(const char *p, int metric) {
    const char *s = p;
    while (word_start(*p) || digit(*p) || (metric && *p == ':')) {
        if (p == s && digit(*p)) return s;
        p++;
    }
    return p;
}

static int number_ok(const char *s, const char *end) {
    char tmp[64];
    char *stop;
    size_t n = (size_t)(end - s);
    if (n == 0 || n >= sizeof tmp) return 0;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (!strcmp(tmp, "+Inf") || !strcmp(tmp, "-Inf") || !strcmp(tmp, "NaN")) return 1;
    if (strspn(tmp, "0123456789+-.e") != n) return 0; /* no "inf", "nan", hex or spaces from strtod */
    strtod(tmp, &stop);
    return *stop == 0;
}

/* name{l="v",...} value, the line without its '\n' at [p, end). */
static void check_sample(const char *p, const char *end) {
    const char *q = skip_name(p, 1);
    CHECK(q > p);
    if (*q == '{') {
        q++;
        for (;;) {
            const char *l = q;
            q = skip_name(q, 0);
            CHECK(q > l && q[0] == '=' && q[1] == '"');
            for (q += 2; *q != '"'; q++) {
                CHECK(q < end);
                if (*q == '\\') {
                    q++;
                    CHECK(*q == '\\' || *q == '"' || *q == 'n');
                }
            }
            q++;
            if (*q == '}') break;
            CHECK(*q == ',');
            q++;
        }
        q++;
    }
    CHECK(*q == ' ');
    CHECK(number_ok(q + 1, end));
}

static void check_lines(const char *text, int families) {
    const char *p = text;
    int types = 0;
    while (*p) {
        const char *end = strchr(p, '\n');
        CHECK(end);
        if (*p == '#') {
            const char *q;
            CHECK(strncmp(p, "# HELP ", 7) == 0 || strncmp(p, "# TYPE ", 7) == 0);
            q = skip_name(p + 7, 1);
            CHECK(q > p + 7 && (*q == ' ' || q == end));
            if (p[2] == 'T') {
                size_t n = (size_t)(end - q);
                types++;
                CHECK((n == 8 && !memcmp(q, " counter", 8)) || (n == 6 && !memcmp(q, " gauge", 6)) ||
                      (n == 10 && !memcmp(q, " histogram", 10)));
            }
        } else {
            check_sample(p, end);
        }
        p = end + 1;
    }
    CHECK(types == families);
}

/* Size-only, then the fuzz-chosen capacity, then (if short) the exact size. */
static void check_write(const world *w, int count, int nc, size_t cap) {
    int families;
    int valid = all_ok(w, count, nc, &families);
    size_t n0 = 7, n1 = 7, n2 = 7;
    parti_err e0 = parti_metrics_write_prometheus(w->series, count, w->common, nc, NULL, 0, &n0);
    char *buf = (char *)malloc(cap ? cap : 1), *full;
    parti_err e1;
    CHECK(buf);
    e1 = parti_metrics_write_prometheus(w->series, count, w->common, nc, cap ? buf : NULL, cap, &n1);
    if (!valid) {
        CHECK(e0 == PARTI_ERR_INVALID_ARGUMENT && e1 == PARTI_ERR_INVALID_ARGUMENT && n0 == 0 && n1 == 0);
        CHECK(cap == 0 || buf[0] == 0);
        free(buf);
        return;
    }
    CHECK(e0 == PARTI_ERR_BUFFER_TOO_SMALL && n0 >= 1 && n1 == n0);
    if (n0 <= cap) {
        CHECK(e1 == PARTI_ERR_OK && strlen(buf) == n0 - 1);
        check_lines(buf, families);
        free(buf);
        return;
    }
    CHECK(e1 == PARTI_ERR_BUFFER_TOO_SMALL);
    CHECK(cap == 0 || strlen(buf) == cap - 1);
    full = (char *)malloc(n0);
    CHECK(full);
    CHECK(parti_metrics_write_prometheus(w->series, count, w->common, nc, full, n0, &n2) == PARTI_ERR_OK);
    CHECK(n2 == n0 && strlen(full) == n0 - 1);
    CHECK(cap == 0 || memcmp(buf, full, cap - 1) == 0);
    check_lines(full, families);
    free(full);
    free(buf);
}

/* A single gauge's text reads back as its exact value. */
static void check_gauge_round_trip(double v) {
    parti_gauge g;
    parti_metric m;
    char text[128];
    const char *val;
    char *stop;
    g.value = v;
    m.name = "g";
    m.help = NULL;
    m.type = PARTI_METRIC_GAUGE;
    m.labels = NULL;
    m.label_count = 0;
    m.value = &g;
    CHECK(parti_metrics_write_prometheus(&m, 1, NULL, 0, text, sizeof text, NULL) == PARTI_ERR_OK);
    CHECK(strncmp(text, "# TYPE g gauge\ng ", 17) == 0);
    val = text + 17;
    if (v != v) {
        CHECK(strcmp(val, "NaN\n") == 0);
    } else if (!finite(v)) {
        CHECK(strcmp(val, v > 0 ? "+Inf\n" : "-Inf\n") == 0);
    } else {
        double back = strtod(val, &stop);
        CHECK(*stop == '\n' && stop[1] == 0);
        CHECK(memcmp(&back, &v, sizeof v) == 0); /* bit-exact: -0 stays -0 */
    }
}

/* init takes exactly the bounds the rules allow; observe then puts v in the
 * first bucket whose bound it does not exceed, or ignores a non-finite v. */
static void check_observe(const parti_histogram *src, double v) {
    parti_histogram h;
    int n = src->bucket_count, want = 0, k, ok = n >= 0 && n <= PARTI_HISTOGRAM_MAX_BUCKETS;
    for (k = 0; ok && k < n; k++)
        if (!finite(src->bounds[k]) || (k && !(src->bounds[k] > src->bounds[k - 1]))) ok = 0;
    CHECK((parti_histogram_init(&h, src->bounds, n) == PARTI_ERR_OK) == ok);
    if (!ok) {
        CHECK(h.bucket_count == 0);
        return;
    }
    parti_histogram_observe(&h, v);
    if (!finite(v)) {
        CHECK(h.ignored == 1 && h.count == 0);
        return;
    }
    while (want < n && v > h.bounds[want]) want++;
    CHECK(h.count == 1 && h.buckets[want] == 1 && h.sum == v);
    for (k = 0; k <= n; k++) CHECK(k == want || h.buckets[k] == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static world w; /* large; reset per input */
    input in;
    int count, nc, i;
    size_t cap;
    in.d = data;
    in.n = size;
    in.i = 0;
    memset(&w, 0, sizeof w);
    cap = (size_t)u8(&in) << 8 | u8(&in);
    cap = u8(&in) & 1 ? cap % 256 : cap; /* short buffers often */
    nc = u8(&in) % (MAX_COMMON + 1);
    for (i = 0; i < nc; i++) make_label(&in, &w, &w.common[i]);
    count = u8(&in) % (MAX_SERIES + 1);
    for (i = 0; i < count; i++) make_series(&in, &w, i);
    check_write(&w, count, nc, cap);
    check_gauge_round_trip(dbl(&in));
    for (i = 0; i < count; i++) check_observe(&w.histograms[i], w.gauges[i].value);
    return 0;
}

/* Unit tests of the metrics: counters, gauges, histograms, the Prometheus
 * text writer and the library's registry. */
#include "parti.h"

#include <criterion/criterion.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char out[65536];
static size_t need;

/* Writes the series into out (asserting success) and returns it. */
static const char *write_ok(const parti_metric *m, int n, const parti_label *common, int ncommon) {
    parti_err e;
    need = 0;
    e = parti_metrics_write_prometheus(m, n, common, ncommon, out, sizeof out, &need);
    cr_assert_eq(e, PARTI_ERR_OK, "write: %s", parti_error_name(e));
    cr_assert_eq(need, strlen(out) + 1);
    return out;
}

/* Asserts the series are refused as invalid, with needed 0 and "" in buf. */
static void write_invalid(const parti_metric *m, int n, const parti_label *common, int ncommon) {
    parti_err e;
    need = 12345;
    memcpy(out, "junk", 5);
    e = parti_metrics_write_prometheus(m, n, common, ncommon, out, sizeof out, &need);
    cr_assert_eq(e, PARTI_ERR_INVALID_ARGUMENT, "got %s", parti_error_name(e));
    cr_assert_eq(need, 0);
    cr_assert_str_empty(out);
}

static parti_metric series(const char *name, const char *help, parti_metric_type type, const parti_label *labels,
                           int nlabels, const void *value) {
    parti_metric m;
    m.name = name;
    m.help = help;
    m.type = type;
    m.labels = labels;
    m.label_count = nlabels;
    m.value = value;
    return m;
}

/* How often needle occurs in hay. */
static int occurrences(const char *hay, const char *needle) {
    int n = 0;
    size_t len = strlen(needle);
    const char *p = hay;
    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p += len;
    }
    return n;
}

/* The text a single unlabelled gauge with value v gets after its name. */
static const char *gauge_text(double v) {
    static char line[128];
    parti_gauge g;
    parti_metric m;
    char *nl;
    g.value = v;
    m = series("g", NULL, PARTI_METRIC_GAUGE, NULL, 0, &g);
    write_ok(&m, 1, NULL, 0);
    cr_assert(strncmp(out, "# TYPE g gauge\ng ", 17) == 0, "%s", out);
    cr_assert_lt(strlen(out + 17), sizeof line, "%s", out);
    memcpy(line, out + 17, strlen(out + 17) + 1);
    nl = strchr(line, '\n');
    cr_assert(nl && nl[1] == 0, "%s", out);
    *nl = 0;
    return line;
}

/* ---- counters, gauges, histograms ---- */

Test(metrics_values, counter_and_gauge_helpers) {
    parti_counter c = {0};
    parti_gauge g = {0};
    parti_counter_add(&c, 3);
    parti_counter_add(&c, 4);
    cr_assert_eq(c.value, 7);
    parti_gauge_set(&g, 2.5);
    parti_gauge_add(&g, -1);
    cr_assert(g.value == 1.5);
    parti_counter_add(NULL, 1); /* NULL is ignored, not a crash */
    parti_gauge_set(NULL, 1);
    parti_gauge_add(NULL, 1);
    parti_histogram_observe(NULL, 1);
}

Test(metrics_values, counter_wraps_like_an_unsigned_integer) {
    parti_counter c;
    c.value = UINT64_MAX;
    parti_counter_add(&c, 2);
    cr_assert_eq(c.value, 1);
}

Test(metrics_histogram, observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed) {
    static const double b[] = {0.1, 1, 10};
    parti_histogram h;
    cr_assert_eq(parti_histogram_init(&h, b, 3), PARTI_ERR_OK);
    parti_histogram_observe(&h, -5);  /* below everything: first bucket */
    parti_histogram_observe(&h, 0.1); /* equal to a bound: that bucket (le = less or equal) */
    parti_histogram_observe(&h, 0.5);
    parti_histogram_observe(&h, 1);
    parti_histogram_observe(&h, 10.000001); /* above the last bound */
    cr_assert_eq(h.buckets[0], 2);
    cr_assert_eq(h.buckets[1], 2);
    cr_assert_eq(h.buckets[2], 0);
    cr_assert_eq(h.buckets[3], 1);
    cr_assert_eq(h.count, 5);
    cr_assert(h.sum == -5 + 0.1 + 0.5 + 1 + 10.000001);
}

Test(metrics_histogram, non_finite_observations_are_counted_as_ignored_only) {
    static const double b[] = {1};
    parti_histogram h;
    double zero = 0;
    cr_assert_eq(parti_histogram_init(&h, b, 1), PARTI_ERR_OK);
    parti_histogram_observe(&h, zero / zero);
    parti_histogram_observe(&h, 1 / zero);
    parti_histogram_observe(&h, -1 / zero);
    parti_histogram_observe(&h, 0.5);
    cr_assert_eq(h.ignored, 3);
    cr_assert_eq(h.count, 1);
    cr_assert_eq(h.buckets[0], 1);
    cr_assert_eq(h.buckets[1], 0);
    cr_assert(h.sum == 0.5);
}

Test(metrics_histogram, init_rejects_bad_bounds_and_leaves_a_usable_histogram) {
    static const double unsorted[] = {1, 0.5}, dup[] = {1, 1}, many[PARTI_HISTOGRAM_MAX_BUCKETS + 1] = {0};
    double zero = 0, nan_b[1], inf_b[1], ok[PARTI_HISTOGRAM_MAX_BUCKETS];
    parti_histogram h;
    int i;
    nan_b[0] = zero / zero;
    inf_b[0] = 1 / zero;
    cr_assert_eq(parti_histogram_init(&h, unsorted, 2), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(&h, dup, 2), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(&h, nan_b, 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(&h, inf_b, 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(&h, many, PARTI_HISTOGRAM_MAX_BUCKETS + 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(&h, NULL, 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(&h, unsorted, -1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_histogram_init(NULL, unsorted, 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(h.bucket_count, 0); /* zeroed: a single +Inf bucket */
    parti_histogram_observe(&h, 3);
    cr_assert_eq(h.buckets[0], 1);
    for (i = 0; i < PARTI_HISTOGRAM_MAX_BUCKETS; i++) ok[i] = i - 3.5;
    cr_assert_eq(parti_histogram_init(&h, ok, PARTI_HISTOGRAM_MAX_BUCKETS), PARTI_ERR_OK);
    cr_assert_eq(h.bucket_count, PARTI_HISTOGRAM_MAX_BUCKETS);
    cr_assert_eq(parti_histogram_init(&h, NULL, 0), PARTI_ERR_OK);
}

/* ---- the writer: exact output ---- */

Test(metrics_writer, exact_output_of_a_counter_a_gauge_and_a_histogram) {
    static const double b[] = {0.005, 0.1, 2.5};
    static const parti_label code[] = {{"code", "200"}};
    parti_counter c;
    parti_gauge g;
    parti_histogram h;
    parti_metric m[3];
    c.value = 42;
    g.value = -3.25;
    cr_assert_eq(parti_histogram_init(&h, b, 3), PARTI_ERR_OK);
    parti_histogram_observe(&h, 0.001);
    parti_histogram_observe(&h, 0.05);
    parti_histogram_observe(&h, 0.07);
    parti_histogram_observe(&h, 7);
    m[0] = series("requests_total", "Requests served.", PARTI_METRIC_COUNTER, code, 1, &c);
    m[1] = series("temperature", "Now.", PARTI_METRIC_GAUGE, NULL, 0, &g);
    m[2] = series("latency_seconds", "Latency.", PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    cr_assert_str_eq(write_ok(m, 3, NULL, 0),
                     "# HELP requests_total Requests served.\n"
                     "# TYPE requests_total counter\n"
                     "requests_total{code=\"200\"} 42\n"
                     "# HELP temperature Now.\n"
                     "# TYPE temperature gauge\n"
                     "temperature -3.25\n"
                     "# HELP latency_seconds Latency.\n"
                     "# TYPE latency_seconds histogram\n"
                     "latency_seconds_bucket{le=\"0.005\"} 1\n"
                     "latency_seconds_bucket{le=\"0.1\"} 3\n"
                     "latency_seconds_bucket{le=\"2.5\"} 3\n"
                     "latency_seconds_bucket{le=\"+Inf\"} 4\n"
                     "latency_seconds_sum 7.121\n"
                     "latency_seconds_count 4\n");
}

Test(metrics_writer, a_family_gets_help_and_type_once) {
    static const parti_label ok[] = {{"result", "success"}}, noop[] = {{"result", "noop"}};
    parti_counter a, b;
    parti_metric m[2];
    a.value = 5;
    b.value = 1;
    m[0] = series("updates_total", "Updates.", PARTI_METRIC_COUNTER, ok, 1, &a);
    m[1] = series("updates_total", "ignored: the family's help is its first entry's", PARTI_METRIC_COUNTER, noop,
                  1, &b);
    cr_assert_str_eq(write_ok(m, 2, NULL, 0),
                     "# HELP updates_total Updates.\n"
                     "# TYPE updates_total counter\n"
                     "updates_total{result=\"success\"} 5\n"
                     "updates_total{result=\"noop\"} 1\n");
}

Test(metrics_writer, histogram_family_with_two_labelled_series) {
    static const double b[] = {1};
    static const parti_label x[] = {{"op", "x"}}, y[] = {{"op", "y"}};
    parti_histogram h1, h2;
    parti_metric m[2];
    parti_histogram_init(&h1, b, 1);
    parti_histogram_init(&h2, b, 1);
    parti_histogram_observe(&h1, 0.5);
    parti_histogram_observe(&h2, 2);
    m[0] = series("d_seconds", "D.", PARTI_METRIC_HISTOGRAM, x, 1, &h1);
    m[1] = series("d_seconds", NULL, PARTI_METRIC_HISTOGRAM, y, 1, &h2);
    cr_assert_str_eq(write_ok(m, 2, NULL, 0),
                     "# HELP d_seconds D.\n"
                     "# TYPE d_seconds histogram\n"
                     "d_seconds_bucket{op=\"x\",le=\"1\"} 1\n"
                     "d_seconds_bucket{op=\"x\",le=\"+Inf\"} 1\n"
                     "d_seconds_sum{op=\"x\"} 0.5\n"
                     "d_seconds_count{op=\"x\"} 1\n"
                     "d_seconds_bucket{op=\"y\",le=\"1\"} 0\n"
                     "d_seconds_bucket{op=\"y\",le=\"+Inf\"} 1\n"
                     "d_seconds_sum{op=\"y\"} 2\n"
                     "d_seconds_count{op=\"y\"} 1\n");
}

Test(metrics_writer, null_or_empty_help_means_no_help_line) {
    parti_counter c = {1};
    parti_metric m[2];
    m[0] = series("a", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    m[1] = series("b", "", PARTI_METRIC_COUNTER, NULL, 0, &c);
    cr_assert_str_eq(write_ok(m, 2, NULL, 0), "# TYPE a counter\na 1\n# TYPE b counter\nb 1\n");
}

Test(metrics_writer, label_values_escape_backslash_quote_and_newline) {
    static const parti_label l[] = {{"path", "C:\\dir\\\"x\"\nnext"}};
    parti_counter c = {0};
    parti_metric m = series("c", NULL, PARTI_METRIC_COUNTER, l, 1, &c);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0), "# TYPE c counter\nc{path=\"C:\\\\dir\\\\\\\"x\\\"\\nnext\"} 0\n");
}

Test(metrics_writer, help_escapes_backslash_and_newline_but_not_quotes) {
    parti_counter c = {0};
    parti_metric m = series("c", "say \"hi\"\\\nbye", PARTI_METRIC_COUNTER, NULL, 0, &c);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0), "# HELP c say \"hi\"\\\\\\nbye\n# TYPE c counter\nc 0\n");
}

Test(metrics_writer, utf8_passes_through_unchanged) {
    static const parti_label l[] = {{"city", "Z\xc3\xbcrich \xe2\x82\xac \xf0\x9f\x98\x80"}};
    parti_counter c = {0};
    parti_metric m = series("c", "caf\xc3\xa9", PARTI_METRIC_COUNTER, l, 1, &c);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0),
                     "# HELP c caf\xc3\xa9\n# TYPE c counter\nc{city=\"Z\xc3\xbcrich \xe2\x82\xac \xf0\x9f\x98\x80\"} 0\n");
}

Test(metrics_writer, common_labels_come_before_the_series_labels_and_le_last) {
    static const double b[] = {1};
    static const parti_label common[] = {{"worker", "w-1"}, {"group", "g"}};
    static const parti_label own[] = {{"op", "x"}};
    parti_counter c = {2};
    parti_histogram h;
    parti_metric m[3];
    parti_histogram_init(&h, b, 1);
    m[0] = series("c", NULL, PARTI_METRIC_COUNTER, own, 1, &c);
    m[1] = series("u", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    m[2] = series("h", NULL, PARTI_METRIC_HISTOGRAM, own, 1, &h);
    cr_assert_str_eq(write_ok(m, 3, common, 2),
                     "# TYPE c counter\n"
                     "c{worker=\"w-1\",group=\"g\",op=\"x\"} 2\n"
                     "# TYPE u counter\n"
                     "u{worker=\"w-1\",group=\"g\"} 2\n"
                     "# TYPE h histogram\n"
                     "h_bucket{worker=\"w-1\",group=\"g\",op=\"x\",le=\"1\"} 0\n"
                     "h_bucket{worker=\"w-1\",group=\"g\",op=\"x\",le=\"+Inf\"} 0\n"
                     "h_sum{worker=\"w-1\",group=\"g\",op=\"x\"} 0\n"
                     "h_count{worker=\"w-1\",group=\"g\",op=\"x\"} 0\n");
}

Test(metrics_writer, histogram_buckets_are_cumulative_and_inf_equals_count) {
    static const double b[] = {1, 2, 3, 4};
    parti_histogram h;
    parti_metric m;
    int i;
    parti_histogram_init(&h, b, 4);
    for (i = 0; i < 10; i++) parti_histogram_observe(&h, i * 0.5); /* 0 .. 4.5 */
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0),
                     "# TYPE h histogram\n"
                     "h_bucket{le=\"1\"} 3\n"
                     "h_bucket{le=\"2\"} 5\n"
                     "h_bucket{le=\"3\"} 7\n"
                     "h_bucket{le=\"4\"} 9\n"
                     "h_bucket{le=\"+Inf\"} 10\n"
                     "h_sum 22.5\n"
                     "h_count 10\n");
}

Test(metrics_writer, histogram_without_bounds_has_only_the_inf_bucket) {
    parti_histogram h;
    parti_metric m;
    parti_histogram_init(&h, NULL, 0);
    parti_histogram_observe(&h, 3);
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0), "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 1\n");
}

Test(metrics_writer, histogram_count_comes_from_buckets_and_saturates) {
    static const double b[] = {1};
    parti_histogram h;
    parti_metric m;
    parti_histogram_init(&h, b, 1);
    h.buckets[0] = UINT64_MAX - 1;
    h.buckets[1] = 5;
    h.count = 7; /* edited by hand: the writer stays self-consistent */
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0),
                     "# TYPE h histogram\n"
                     "h_bucket{le=\"1\"} 18446744073709551614\n"
                     "h_bucket{le=\"+Inf\"} 18446744073709551615\n"
                     "h_sum 0\n"
                     "h_count 18446744073709551615\n");
}

Test(metrics_writer, counters_print_every_uint64_exactly) {
    parti_counter c = {UINT64_MAX};
    parti_metric m = series("c", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0), "# TYPE c counter\nc 18446744073709551615\n");
    c.value = 0;
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0), "# TYPE c counter\nc 0\n");
}

Test(metrics_writer, nan_and_infinities_are_spelled_the_prometheus_way) {
    double zero = 0;
    static const double b[] = {1};
    parti_histogram h;
    parti_metric m;
    cr_assert_str_eq(gauge_text(zero / zero), "NaN");
    cr_assert_str_eq(gauge_text(-(zero / zero)), "NaN");
    cr_assert_str_eq(gauge_text(1 / zero), "+Inf");
    cr_assert_str_eq(gauge_text(-1 / zero), "-Inf");
    parti_histogram_init(&h, b, 1);
    h.sum = 1 / zero; /* e.g. after adding two huge finite values */
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    cr_assert(strstr(write_ok(&m, 1, NULL, 0), "\nh_sum +Inf\n"), "%s", out);
}

Test(metrics_writer, doubles_use_the_shortest_round_trip_form) {
    cr_assert_str_eq(gauge_text(0), "0");
    cr_assert_str_eq(gauge_text(-0.0), "-0");
    cr_assert_str_eq(gauge_text(1), "1");
    cr_assert_str_eq(gauge_text(10), "10");
    cr_assert_str_eq(gauge_text(0.1), "0.1");
    cr_assert_str_eq(gauge_text(0.005), "0.005");
    cr_assert_str_eq(gauge_text(0.0001), "0.0001");
    cr_assert_str_eq(gauge_text(0.1 + 0.2), "0.30000000000000004");
    cr_assert_str_eq(gauge_text(123456), "123456");
    cr_assert_str_eq(gauge_text(-2.5), "-2.5");
    cr_assert_str_eq(gauge_text(1.0 / 3), "0.3333333333333333");
}

Test(metrics_writer, large_and_tiny_doubles_use_exponents_like_go) {
    /* strconv.FormatFloat(v, 'g', -1, 64), as client_golang prints */
    cr_assert_str_eq(gauge_text(1e6), "1e+06");
    cr_assert_str_eq(gauge_text(1234567), "1.234567e+06");
    cr_assert_str_eq(gauge_text(1e-5), "1e-05");
    cr_assert_str_eq(gauge_text(1.5e-7), "1.5e-07");
    cr_assert_str_eq(gauge_text(9007199254740993.0), "9.007199254740992e+15");
    cr_assert_str_eq(gauge_text(1.7976931348623157e308), "1.7976931348623157e+308");
    cr_assert_str_eq(gauge_text(5e-324), "5e-324");
}

Test(metrics_writer, doubles_read_back_exactly) {
    uint64_t state = 7;
    int i;
    for (i = 0; i < 2000; i++) {
        uint64_t bits = parti_rng_splitmix64(&state);
        double v;
        memcpy(&v, &bits, sizeof v);
        if (v != v || v - v != 0) continue; /* NaN and Inf have their own spellings */
        cr_assert(strtod(gauge_text(v), NULL) == v, "%.17g printed as %s", v, gauge_text(v));
    }
}

Test(metrics_writer, decimal_point_is_a_dot_in_any_locale) {
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "de_DE"};
    size_t i;
    const char *set = NULL;
    for (i = 0; i < sizeof names / sizeof *names && !set; i++) set = setlocale(LC_NUMERIC, names[i]);
    cr_assert_not_null(set, "no locale with a decimal comma: scripts/setup builds de_DE.UTF-8 into .deps/locale "
                            "and make test sets LOCPATH to it");
    cr_assert_str_eq(gauge_text(0.25), "0.25");
    cr_assert_str_eq(gauge_text(1.5e-7), "1.5e-07");
    cr_assert_str_eq(gauge_text(0.1 + 0.2), "0.30000000000000004");
    setlocale(LC_NUMERIC, "C");
}

Test(metrics_writer, zero_series_give_an_empty_document) {
    cr_assert_str_eq(write_ok(NULL, 0, NULL, 0), "");
    cr_assert_eq(need, 1);
}

/* ---- the writer: refusals ---- */

Test(metrics_invalid, bad_metric_names) {
    static const char *const bad[] = {"", "1abc", "a-b", "a b", "a.b", "caf\xc3\xa9", "a{", "a\"", "a\n"};
    static const char *const good[] = {"a", "_a", ":a", "a:b_c9", "A_Z", "parti_members_current"};
    parti_counter c = {0};
    parti_metric m;
    size_t i;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        m = series(bad[i], NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
        write_invalid(&m, 1, NULL, 0);
    }
    m = series(NULL, NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    write_invalid(&m, 1, NULL, 0);
    for (i = 0; i < sizeof good / sizeof *good; i++) {
        m = series(good[i], NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
        write_ok(&m, 1, NULL, 0);
    }
}

Test(metrics_invalid, bad_label_names_in_series_and_common_labels) {
    static const char *const bad[] = {"", "1a", "a:b", "a-b", "__name__", "__x", "a b"};
    static const char *const good[] = {"a", "_a", "a_", "A9", "_"};
    parti_counter c = {0};
    parti_label l;
    parti_metric m;
    size_t i;
    l.value = "v";
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        l.name = bad[i];
        m = series("c", NULL, PARTI_METRIC_COUNTER, &l, 1, &c);
        write_invalid(&m, 1, NULL, 0);
        m = series("c", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
        write_invalid(&m, 1, &l, 1);
    }
    for (i = 0; i < sizeof good / sizeof *good; i++) {
        l.name = good[i];
        m = series("c", NULL, PARTI_METRIC_COUNTER, &l, 1, &c);
        write_ok(&m, 1, NULL, 0);
    }
}

Test(metrics_invalid, le_is_reserved_on_histograms_only) {
    static const parti_label le[] = {{"le", "1"}};
    parti_counter c = {0};
    parti_histogram h;
    parti_metric m;
    parti_histogram_init(&h, NULL, 0);
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, le, 1, &h);
    write_invalid(&m, 1, NULL, 0);
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    write_invalid(&m, 1, le, 1);
    m = series("c", NULL, PARTI_METRIC_COUNTER, le, 1, &c);
    cr_assert_str_eq(write_ok(&m, 1, NULL, 0), "# TYPE c counter\nc{le=\"1\"} 0\n");
}

Test(metrics_invalid, a_label_name_may_not_repeat_within_a_sample) {
    static const parti_label twice[] = {{"a", "1"}, {"a", "2"}}, one[] = {{"a", "3"}}, other[] = {{"b", "3"}};
    parti_counter c = {0};
    parti_metric m;
    m = series("c", NULL, PARTI_METRIC_COUNTER, twice, 2, &c);
    write_invalid(&m, 1, NULL, 0);
    m = series("c", NULL, PARTI_METRIC_COUNTER, one, 1, &c);
    write_invalid(&m, 1, one, 1);   /* common and own */
    write_invalid(&m, 1, twice, 2); /* within the common labels */
    m = series("c", NULL, PARTI_METRIC_COUNTER, other, 1, &c);
    write_ok(&m, 1, one, 1);
}

Test(metrics_invalid, a_family_may_not_be_split_or_mix_types) {
    parti_counter c = {0};
    parti_gauge g = {0};
    parti_metric m[3];
    m[0] = series("a", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    m[1] = series("b", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    m[2] = series("a", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    write_invalid(m, 3, NULL, 0);
    m[1] = series("a", NULL, PARTI_METRIC_GAUGE, NULL, 0, &g);
    write_invalid(m, 2, NULL, 0);
}

Test(metrics_invalid, invalid_utf8_in_label_values_or_help) {
    static const char *const bad[] = {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "ok\xf4\x90\x80\x80"};
    parti_counter c = {0};
    parti_label l;
    parti_metric m;
    size_t i;
    l.name = "a";
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        l.value = bad[i];
        m = series("c", NULL, PARTI_METRIC_COUNTER, &l, 1, &c);
        write_invalid(&m, 1, NULL, 0);
        m = series("c", bad[i], PARTI_METRIC_COUNTER, NULL, 0, &c);
        write_invalid(&m, 1, NULL, 0);
    }
}

Test(metrics_invalid, bad_histogram_contents) {
    parti_histogram h;
    parti_metric m;
    double zero = 0;
    parti_histogram_init(&h, NULL, 0);
    m = series("h", NULL, PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    h.bucket_count = 2;
    h.bounds[0] = 2;
    h.bounds[1] = 1; /* not increasing */
    write_invalid(&m, 1, NULL, 0);
    h.bounds[1] = 1 / zero;
    write_invalid(&m, 1, NULL, 0);
    h.bucket_count = -1;
    write_invalid(&m, 1, NULL, 0);
    h.bucket_count = PARTI_HISTOGRAM_MAX_BUCKETS + 1;
    write_invalid(&m, 1, NULL, 0);
}

Test(metrics_invalid, null_pointers_negative_counts_and_bad_types) {
    parti_counter c = {0};
    parti_label l;
    parti_metric m = series("c", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    write_invalid(NULL, 1, NULL, 0);
    write_invalid(&m, -1, NULL, 0);
    write_invalid(&m, 1, NULL, 1);  /* common NULL with a count */
    write_invalid(&m, 1, &l, -1);
    m.labels = NULL;
    m.label_count = 1;
    write_invalid(&m, 1, NULL, 0);
    m.label_count = -1;
    write_invalid(&m, 1, NULL, 0);
    m = series("c", NULL, PARTI_METRIC_COUNTER, NULL, 0, NULL); /* no value */
    write_invalid(&m, 1, NULL, 0);
    m = series("c", NULL, (parti_metric_type)0, NULL, 0, &c);
    write_invalid(&m, 1, NULL, 0);
    m = series("c", NULL, (parti_metric_type)4, NULL, 0, &c);
    write_invalid(&m, 1, NULL, 0);
    l.name = NULL;
    l.value = "v";
    m = series("c", NULL, PARTI_METRIC_COUNTER, &l, 1, &c);
    write_invalid(&m, 1, NULL, 0);
    l.name = "a";
    l.value = NULL;
    write_invalid(&m, 1, NULL, 0);
    /* buf NULL with a capacity */
    m = series("c", NULL, PARTI_METRIC_COUNTER, NULL, 0, &c);
    cr_assert_eq(parti_metrics_write_prometheus(&m, 1, NULL, 0, NULL, 10, &need), PARTI_ERR_INVALID_ARGUMENT);
    /* needed may be NULL */
    cr_assert_eq(parti_metrics_write_prometheus(&m, 1, NULL, 0, out, sizeof out, NULL), PARTI_ERR_OK);
    cr_assert_eq(parti_metrics_write_prometheus(&m, 1, NULL, 0, out, 3, NULL), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_str_eq(parti_metric_type_name(PARTI_METRIC_COUNTER), "counter");
    cr_assert_str_eq(parti_metric_type_name(PARTI_METRIC_GAUGE), "gauge");
    cr_assert_str_eq(parti_metric_type_name(PARTI_METRIC_HISTOGRAM), "histogram");
    cr_assert_str_eq(parti_metric_type_name((parti_metric_type)99), "unknown");
}

/* ---- the size contract ---- */

/* A registry with something in every kind of field, and labels to escape. */
static void busy_registry(parti_metrics *m) {
    parti_metrics_init(m);
    m->consumer_updates_success.value = 12;
    m->consumer_updates_noop.value = UINT64_MAX;
    parti_histogram_observe(&m->consumer_update_latency, 0.0031);
    parti_histogram_observe(&m->consumer_update_latency, 12);
    parti_histogram_observe(&m->rebalance_duration, 0.7);
    m->consumer_subjects_current.value = 1000;
    m->leader_epoch.value = 1234567;
    m->degraded.value = 1;
}

Test(metrics_size, size_only_call_then_exact_buffer) {
    static const parti_label common[] = {{"worker", "w\"1\\\n"}};
    parti_metrics m;
    size_t n1 = 0, n2 = 0;
    char *buf;
    busy_registry(&m);
    cr_assert_eq(parti_metrics_write(&m, common, 1, NULL, 0, &n1), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_gt(n1, 1000);
    buf = (char *)malloc(n1);
    cr_assert_eq(parti_metrics_write(&m, common, 1, buf, n1, &n2), PARTI_ERR_OK);
    cr_assert_eq(n2, n1);
    cr_assert_eq(strlen(buf) + 1, n1);
    cr_assert(strstr(buf, "worker=\"w\\\"1\\\\\\n\""), "%.300s", buf);
    free(buf);
}

Test(metrics_size, every_short_capacity_is_refused_without_overrun) {
    enum { CANARY = 32 };
    static const parti_label common[] = {{"worker", "w-1"}};
    parti_metrics m;
    size_t full_need = 0, cap;
    char *full, *buf;
    busy_registry(&m);
    parti_metrics_write(&m, common, 1, NULL, 0, &full_need);
    full = (char *)malloc(full_need);
    buf = (char *)malloc(full_need + CANARY);
    cr_assert_eq(parti_metrics_write(&m, common, 1, full, full_need, NULL), PARTI_ERR_OK);
    for (cap = 0; cap < full_need; cap++) {
        size_t n = 0;
        parti_err e;
        memset(buf, 0x5A, full_need + CANARY);
        e = parti_metrics_write(&m, common, 1, cap ? buf : NULL, cap, &n);
        cr_assert_eq(e, PARTI_ERR_BUFFER_TOO_SMALL, "cap %zu: %s", cap, parti_error_name(e));
        cr_assert_eq(n, full_need, "cap %zu: needed %zu, want %zu", cap, n, full_need);
        if (cap) {
            /* the prefix that fits, NUL-terminated within cap */
            cr_assert_eq(buf[cap - 1], 0, "cap %zu", cap);
            cr_assert(memcmp(buf, full, cap - 1) == 0, "cap %zu: not a prefix", cap);
        }
        {
            size_t k;
            for (k = cap; k < full_need + CANARY; k++) cr_assert_eq(buf[k], 0x5A, "cap %zu: byte %zu written", cap, k);
        }
    }
    free(full);
    free(buf);
}

Test(metrics_size, second_call_with_needed_produces_the_same_bytes) {
    static const double b[] = {0.5};
    parti_histogram h;
    parti_metric m;
    char small[8], *big;
    size_t n = 0, n2 = 0;
    parti_histogram_init(&h, b, 1);
    parti_histogram_observe(&h, 0.25);
    m = series("h_seconds", "Help.", PARTI_METRIC_HISTOGRAM, NULL, 0, &h);
    cr_assert_eq(parti_metrics_write_prometheus(&m, 1, NULL, 0, small, sizeof small, &n), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_str_eq(small, "# HELP ");
    big = (char *)malloc(n);
    cr_assert_eq(parti_metrics_write_prometheus(&m, 1, NULL, 0, big, n, &n2), PARTI_ERR_OK);
    cr_assert_eq(n2, n);
    cr_assert_str_eq(big, write_ok(&m, 1, NULL, 0));
    free(big);
}

/* ---- the registry ---- */

/* The names DESIGN.md (Observability) and the metrics brief promise, with
 * their types: each must appear exactly once as a family. */
static const struct {
    const char *name, *type;
} promised[] = {
    {"parti_worker_consumer_updates_total", "counter"},
    {"parti_worker_consumer_update_latency_seconds", "histogram"},
    {"parti_worker_consumer_subjects_current", "gauge"},
    {"parti_worker_consumer_subjects_near_limit_total", "counter"},
    {"parti_worker_consumer_subject_changes_total", "counter"},
    {"parti_worker_consumer_recreations_total", "counter"},
    {"parti_worker_consumer_recreation_failures_total", "counter"},
    {"parti_worker_consumer_updates_coalesced_total", "counter"},
    {"parti_worker_consumer_pull_restarts_total", "counter"},
    {"parti_worker_consumer_pull_consecutive_failures", "gauge"},
    {"parti_worker_consumer_messages_total", "counter"},
    {"parti_worker_consumer_dead_letters_total", "counter"},
    {"parti_worker_consumer_foreign_redeliveries_total", "counter"},
    {"parti_worker_consumer_refreshes_total", "counter"},
    {"parti_worker_consumer_catch_up_reads_total", "counter"},
    {"parti_worker_consumer_catch_up_tails_total", "counter"},
    {"parti_worker_consumer_catch_up_tails_ended_total", "counter"},
    {"parti_worker_consumer_delivery_gaps_total", "counter"},
    {"parti_worker_consumer_handoff_skipped_total", "counter"},
    {"parti_worker_consumer_oversized_messages_total", "counter"},
    {"parti_partition_claims_total", "counter"},
    {"parti_partition_releases_total", "counter"},
    {"parti_checkpoint_writes_total", "counter"},
    {"parti_checkpoint_failures_total", "counter"},
    {"parti_orphan_consumers_deleted_total", "counter"},
    {"parti_members_current", "gauge"},
    {"parti_is_leader", "gauge"},
    {"parti_leader_elections_total", "counter"},
    {"parti_leader_epoch", "gauge"},
    {"parti_assignment_version", "gauge"},
    {"parti_partitions_owned", "gauge"},
    {"parti_rebalances_total", "counter"},
    {"parti_rebalance_duration_seconds", "histogram"},
    {"parti_partitions_moved_total", "counter"},
    {"parti_assignments_rejected_total", "counter"},
    {"parti_partitions_unassigned", "gauge"},
    {"parti_heartbeat_failures_total", "counter"},
    {"parti_worker_id_conflicts_total", "counter"},
    {"parti_degraded", "gauge"},
    {"parti_circuit_breaker_state", "gauge"},
};

static char *registry_text(void) {
    parti_metrics m;
    size_t n = 0;
    char *buf;
    parti_metrics_init(&m);
    cr_assert_eq(parti_metrics_write(&m, NULL, 0, NULL, 0, &n), PARTI_ERR_BUFFER_TOO_SMALL);
    buf = (char *)malloc(n);
    cr_assert_eq(parti_metrics_write(&m, NULL, 0, buf, n, NULL), PARTI_ERR_OK);
    return buf;
}

Test(metrics_registry, every_promised_family_appears_exactly_once_with_its_type) {
    char *text = registry_text();
    char line[256];
    size_t i;
    for (i = 0; i < sizeof promised / sizeof *promised; i++) {
        snprintf(line, sizeof line, "# TYPE %s %s\n", promised[i].name, promised[i].type);
        cr_assert_eq(occurrences(text, line), 1, "%s", line);
        snprintf(line, sizeof line, "# HELP %s ", promised[i].name);
        cr_assert_eq(occurrences(text, line), 1, "%s", line);
    }
    /* and nothing else: as many families as promised */
    cr_assert_eq(occurrences(text, "# TYPE "), (int)(sizeof promised / sizeof *promised));
    free(text);
}

Test(metrics_registry, labelled_families_have_every_promised_series) {
    static const char *const lines[] = {
        "parti_worker_consumer_updates_total{result=\"success\"} 0\n",
        "parti_worker_consumer_updates_total{result=\"failure\"} 0\n",
        "parti_worker_consumer_updates_total{result=\"noop\"} 0\n",
        "parti_worker_consumer_subject_changes_total{type=\"add\"} 0\n",
        "parti_worker_consumer_subject_changes_total{type=\"remove\"} 0\n",
        "parti_worker_consumer_messages_total{result=\"ack\"} 0\n",
        "parti_worker_consumer_messages_total{result=\"nak\"} 0\n",
        "parti_worker_consumer_messages_total{result=\"term\"} 0\n",
        "parti_worker_consumer_messages_total{result=\"in_progress\"} 0\n",
        "parti_rebalances_total{result=\"success\"} 0\n",
        "parti_rebalances_total{result=\"failure\"} 0\n",
        "\nparti_worker_consumer_recreations_total 0\n",
        "\nparti_circuit_breaker_state 0\n",
    };
    char *text = registry_text();
    size_t i;
    for (i = 0; i < sizeof lines / sizeof *lines; i++) cr_assert_eq(occurrences(text, lines[i]), 1, "%s", lines[i]);
    free(text);
}

Test(metrics_registry, histograms_have_their_documented_buckets) {
    char *text = registry_text();
    cr_assert(strstr(text, "parti_worker_consumer_update_latency_seconds_bucket{le=\"0.001\"} 0\n"
                           "parti_worker_consumer_update_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
    cr_assert(strstr(text, "parti_worker_consumer_update_latency_seconds_bucket{le=\"10\"} 0\n"
                           "parti_worker_consumer_update_latency_seconds_bucket{le=\"+Inf\"} 0\n"));
    cr_assert(strstr(text, "parti_rebalance_duration_seconds_bucket{le=\"60\"} 0\n"
                           "parti_rebalance_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    cr_assert_eq(occurrences(text, "parti_worker_consumer_update_latency_seconds_bucket{"), 14);
    cr_assert_eq(occurrences(text, "parti_rebalance_duration_seconds_bucket{"), 13);
    free(text);
}

Test(metrics_registry, fields_are_what_the_series_point_at) {
    parti_metrics m;
    parti_metric s[PARTI_METRICS_SERIES_COUNT];
    int n, i, found = 0;
    parti_metrics_init(&m);
    n = parti_metrics_list(&m, s, PARTI_METRICS_SERIES_COUNT);
    cr_assert_eq(n, PARTI_METRICS_SERIES_COUNT);
    for (i = 0; i < n; i++) {
        if (s[i].value == &m.consumer_updates_noop) {
            cr_assert_str_eq(s[i].name, "parti_worker_consumer_updates_total");
            cr_assert_str_eq(s[i].labels[0].value, "noop");
            found++;
        }
        if (s[i].value == &m.consumer_update_latency) {
            cr_assert_eq(s[i].type, PARTI_METRIC_HISTOGRAM);
            cr_assert_eq(s[i].label_count, 0);
            found++;
        }
        if (s[i].value == &m.circuit_breaker_state) {
            cr_assert_str_eq(s[i].name, "parti_circuit_breaker_state");
            cr_assert_eq(s[i].type, PARTI_METRIC_GAUGE);
            found++;
        }
    }
    cr_assert_eq(found, 3);
    m.consumer_updates_noop.value = 9;
    m.circuit_breaker_state.value = 2;
    parti_histogram_observe(&m.consumer_update_latency, 0.02);
    cr_assert_eq(parti_metrics_write(&m, NULL, 0, out, sizeof out, NULL), PARTI_ERR_OK);
    cr_assert(strstr(out, "\nparti_worker_consumer_updates_total{result=\"noop\"} 9\n"));
    cr_assert(strstr(out, "\nparti_circuit_breaker_state 2\n"));
    cr_assert(strstr(out, "\nparti_worker_consumer_update_latency_seconds_bucket{le=\"0.025\"} 1\n"));
    cr_assert(strstr(out, "\nparti_worker_consumer_update_latency_seconds_sum 0.02\n"));
}

Test(metrics_registry, init_sets_bounds_and_zeroes_everything) {
    static const double latency[] = {PARTI_METRICS_UPDATE_LATENCY_BUCKETS};
    static const double rebalance[] = {PARTI_METRICS_REBALANCE_DURATION_BUCKETS};
    parti_metrics m;
    int i;
    memset(&m, 0xAB, sizeof m);
    parti_metrics_init(&m);
    cr_assert_eq(m.consumer_update_latency.bucket_count, 13);
    cr_assert(m.consumer_update_latency.bounds[0] == 0.001 && m.consumer_update_latency.bounds[12] == 10);
    cr_assert_eq(m.rebalance_duration.bucket_count, (int)(sizeof rebalance / sizeof *rebalance));
    for (i = 0; i < 13; i++) cr_assert(m.consumer_update_latency.bounds[i] == latency[i]);
    cr_assert_eq(m.consumer_updates_success.value, 0);
    cr_assert(m.leader_epoch.value == 0);
    cr_assert_eq(m.consumer_update_latency.count, 0);
    cr_assert_eq(m.consumer_update_latency.buckets[13], 0);
    parti_metrics_init(NULL);
}

Test(metrics_registry, list_reports_the_count_when_cap_is_short) {
    parti_metrics m;
    parti_metric s[4];
    parti_metrics_init(&m);
    memset(s, 0, sizeof s);
    cr_assert_eq(parti_metrics_list(&m, NULL, 0), PARTI_METRICS_SERIES_COUNT);
    cr_assert_eq(parti_metrics_list(&m, s, 3), PARTI_METRICS_SERIES_COUNT);
    cr_assert_str_eq(s[0].name, "parti_worker_consumer_updates_total");
    cr_assert_str_eq(s[2].labels[0].value, "noop");
    cr_assert_null(s[3].name); /* not written past cap */
    cr_assert_eq(parti_metrics_list(NULL, s, 4), -1);
    cr_assert_eq(parti_metrics_list(&m, NULL, 4), -1);
    cr_assert_eq(parti_metrics_list(&m, s, -1), -1);
    cr_assert_eq(parti_metrics_write(NULL, NULL, 0, out, sizeof out, &need), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(need, 0);
}

Test(metrics_registry, write_equals_list_plus_write_prometheus) {
    static const parti_label common[] = {{"worker", "w-9"}};
    parti_metrics m;
    parti_metric s[PARTI_METRICS_SERIES_COUNT];
    char *a = (char *)malloc(sizeof out), *b = (char *)malloc(sizeof out);
    busy_registry(&m);
    cr_assert_eq(parti_metrics_list(&m, s, PARTI_METRICS_SERIES_COUNT), PARTI_METRICS_SERIES_COUNT);
    cr_assert_eq(parti_metrics_write_prometheus(s, PARTI_METRICS_SERIES_COUNT, common, 1, a, sizeof out, NULL),
                 PARTI_ERR_OK);
    cr_assert_eq(parti_metrics_write(&m, common, 1, b, sizeof out, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(a, b);
    /* a common label clashing with a registry label is refused */
    {
        static const parti_label clash[] = {{"result", "x"}};
        cr_assert_eq(parti_metrics_write(&m, clash, 1, b, sizeof out, NULL), PARTI_ERR_INVALID_ARGUMENT);
    }
    free(a);
    free(b);
}

Test(metrics_registry, every_line_is_a_comment_or_a_sample) {
    static const parti_label common[] = {{"worker", "a\"b"}};
    parti_metrics m;
    const char *p;
    int lines = 0;
    busy_registry(&m);
    cr_assert_eq(parti_metrics_write(&m, common, 1, out, sizeof out, NULL), PARTI_ERR_OK);
    for (p = out; *p; lines++) {
        const char *nl = strchr(p, '\n');
        cr_assert(nl, "unterminated last line");
        if (*p == '#') {
            cr_assert(strncmp(p, "# HELP parti_", 13) == 0 || strncmp(p, "# TYPE parti_", 13) == 0);
        } else {
            const char *sp = nl;
            while (sp > p && sp[-1] != ' ') sp--;
            cr_assert(strncmp(p, "parti_", 6) == 0);
            cr_assert(sp > p + 1 && (sp[-2] == '}'), "%.*s", (int)(nl - p), p);
            cr_assert(strspn(sp, "0123456789.e+-InfNa") == (size_t)(nl - sp), "%.*s", (int)(nl - p), p);
        }
        p = nl + 1;
    }
    cr_assert_gt(lines, 100);
}

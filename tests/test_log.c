/* Logging: the formatters, the rate limiter, and the log of a worker through
 * an outage (silent by default, rate-limited when it repeats). */
#include "parti.h"
#include "parti_nats.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

Test(log, console_lines_quote_what_needs_quoting) {
    char buf[256];
    size_t need = 0;
    parti_log_field f[] = {{"durable", "parti-w1"}, {"detail", "stream not found"}, {"q", "a\"b\\c\nd"}, {"e", ""}};
    cr_assert_eq(parti_log_format_console(buf, sizeof buf, &need, PARTI_LOG_WARN, "consumer recreated", f, 4),
                 PARTI_ERR_OK);
    cr_assert_str_eq(buf, "WARN  consumer recreated durable=parti-w1 detail=\"stream not found\" "
                          "q=\"a\\\"b\\\\c\\nd\" e=\"\"\n");
    cr_assert_eq(need, strlen(buf) + 1);
    /* the size query and a buffer one short */
    cr_assert_eq(parti_log_format_console(NULL, 0, &need, PARTI_LOG_INFO, "m", NULL, 0), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(need, strlen("INFO  m\n") + 1);
    cr_assert_eq(parti_log_format_console(buf, need - 1, NULL, PARTI_LOG_INFO, "m", NULL, 0),
                 PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(parti_log_format_console(buf, sizeof buf, NULL, PARTI_LOG_INFO, NULL, NULL, 0),
                 PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_log_format_console(buf, sizeof buf, NULL, PARTI_LOG_INFO, "m", NULL, -1),
                 PARTI_ERR_INVALID_ARGUMENT);
}

Test(log, json_lines_are_valid_json_with_level_and_message) {
    char buf[256];
    size_t need = 0;
    parti_json_doc doc;
    parti_log_field f[] = {{"worker", "worker-3"}, {"detail", "tab\there \"q\""}};
    cr_assert_eq(parti_log_format_json(buf, sizeof buf, &need, PARTI_LOG_ERROR, "id lost", f, 2), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "{\"level\":\"error\",\"msg\":\"id lost\",\"worker\":\"worker-3\","
                          "\"detail\":\"tab\\there \\\"q\\\"\"}\n");
    cr_assert_eq(need, strlen(buf) + 1);
    cr_assert_eq(parti_json_parse(&doc, buf, strlen(buf) - 1, NULL, NULL, 0), PARTI_ERR_OK);
    parti_json_doc_free(&doc);
    cr_assert_eq(parti_log_format_json(buf, need - 1, &need, PARTI_LOG_ERROR, "id lost", f, 2),
                 PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_str_eq(buf, "");
    cr_assert_str_eq(parti_log_level_name(PARTI_LOG_WARN), "warn");
    cr_assert_str_eq(parti_log_level_name((parti_log_level)99), "unknown");
}

Test(log, the_limiter_lets_a_burst_through_then_counts) {
    parti_log_limiter l;
    uint32_t dropped = 7;
    int i, passed = 0;
    memset(&l, 0, sizeof l); /* burst 3, window 10 s */
    for (i = 0; i < 10; i++) passed += parti_log_limiter_allow(&l, 1000 + (uint64_t)i, PARTI_LOG_WARN, "x", NULL, 0, &dropped);
    cr_assert_eq(passed, 3);
    /* another record passes at once and reports the 7 dropped before it */
    cr_assert_eq(parti_log_limiter_allow(&l, 1100, PARTI_LOG_WARN, "y", NULL, 0, &dropped), 1);
    cr_assert_eq(dropped, 7);
    /* the same again after the window */
    for (i = 0; i < 5; i++) parti_log_limiter_allow(&l, 1200, PARTI_LOG_WARN, "y", NULL, 0, NULL);
    cr_assert_eq(parti_log_limiter_allow(&l, 11200, PARTI_LOG_WARN, "y", NULL, 0, &dropped), 1);
    cr_assert_eq(dropped, 3);
    cr_assert_eq(parti_log_limiter_allow(NULL, 0, PARTI_LOG_WARN, "y", NULL, 0, &dropped), 1);
}

/* A worker's log through a KV outage. */
static int records, warn_records, suppressed_seen;
static char last_line[512];
static void capture(void *user, parti_log_level level, const char *message, const parti_log_field *f, int n) {
    int i;
    (void)user;
    records++;
    warn_records += level == PARTI_LOG_WARN;
    for (i = 0; i < n; i++)
        if (strcmp(f[i].key, "suppressed_before") == 0) suppressed_seen++;
    parti_log_format_console(last_line, sizeof last_line, NULL, level, message, f, n);
}
static parti_verdict ack_all(void *u, const parti_msg *m, uint32_t *d) {
    (void)u, (void)m, (void)d;
    return PARTI_ACK;
}

Test(log, a_worker_logs_nothing_at_warn_while_well_and_rate_limits_an_outage) {
    static const char *const k0[] = {"p0"};
    static const parti_partition parts[] = {{k0, 1, 1}};
    static const char *const subs[] = {"orders.>"};
    parti_fake_world *w;
    parti_transport t, quiet_t;
    parti_stream_config sc;
    parti_config cfg;
    parti_options o;
    parti *p, *quiet;
    char msg[256];
    int i, during;
    cr_assert_eq(parti_fake_world_create(&w, NULL), PARTI_ERR_OK);
    parti_fake_connect(w, "w", &t);
    parti_fake_connect(w, "q", &quiet_t);
    memset(&sc, 0, sizeof sc);
    sc.name = "orders", sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(t.vt->stream_create(t.self, &sc, 1000), PARTI_ERR_OK);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders", cfg.subject_template = "orders.{0}", cfg.partitions = parts, cfg.partition_count = 1;
    memset(&o, 0, sizeof o);
    o.on_message = ack_all;
    cr_assert_eq(parti_create(&quiet, &quiet_t, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg); /* no log */
    o.log = capture;
    o.log_level = PARTI_LOG_WARN;
    o.max_stale_ms = 60000; /* stays degraded, keeps renewing attempts */
    o.member_ttl_ms = 60000;
    cr_assert_eq(parti_create(&p, &t, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    for (i = 0; i < 40; i++) { /* (quiet first: it leads, so the failures below are p's heartbeats alone) */
        parti_poll(quiet, 10);
        parti_poll(p, 100);
    }
    cr_assert_eq(records, 0, "nothing at WARN while all is well: %s", last_line);
    cr_assert(parti_is_leader(quiet) && !parti_is_leader(p));
    /* 30 s of failing heartbeats: about 30 identical warnings, a few logged */
    cr_assert_eq(parti_fake_fail_next(w, &t, "kv_update", 30, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    for (i = 0; i < 300; i++) parti_poll(p, 100);
    during = warn_records;
    cr_assert_geq(parti_metrics_of(p)->heartbeat_failures.value, 25);
    cr_assert_geq(during, 3);
    cr_assert_leq(during, 12, "%d warnings for one repeated failure", during);
    cr_assert_str_eq(parti_log_level_name(PARTI_LOG_DEBUG), "debug");
    parti_destroy(p);
    parti_destroy(quiet);
    parti_fake_disconnect(&t);
    parti_fake_disconnect(&quiet_t);
    parti_fake_world_destroy(w);
    (void)suppressed_seen;
}

Test(log, the_worker_consumer_logs_its_events_at_info) {
    static const char *const k0[] = {"p0"};
    static const parti_partition parts[] = {{k0, 1, 1}};
    static const char *const subs[] = {"orders.>"};
    static const int mine[] = {0};
    parti_fake_world *w;
    parti_transport t;
    parti_stream_config sc;
    parti_config cfg;
    parti_consumer_options o;
    parti_consumer *c;
    char msg[256];
    cr_assert_eq(parti_fake_world_create(&w, NULL), PARTI_ERR_OK);
    parti_fake_connect(w, "w", &t);
    memset(&sc, 0, sizeof sc);
    sc.name = "orders", sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(t.vt->stream_create(t.self, &sc, 1000), PARTI_ERR_OK);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders", cfg.subject_template = "orders.{0}", cfg.partitions = parts, cfg.partition_count = 1;
    memset(&o, 0, sizeof o);
    o.on_message = ack_all;
    o.log = capture;
    records = 0;
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_consumer_update(c, "w1", mine, 1), PARTI_ERR_OK);
    parti_consumer_poll(c, 200);
    cr_assert_geq(records, 1);
    cr_assert(strstr(last_line, "consumer created durable=parti-w1") != NULL, "%s", last_line);
    parti_consumer_destroy(c);
    parti_fake_disconnect(&t);
    parti_fake_world_destroy(w);
}

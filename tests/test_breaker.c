/* The circuit breaker decorator on the fake NATS (virtual time). */
#include "parti.h"
#include "parti_nats.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static parti_fake_world *w;
static parti_transport inner, t, ob;
static parti_breaker *b;
static int changes[3];

static void on_change(void *user, parti_breaker_state from, parti_breaker_state to) {
    (void)user, (void)from;
    changes[to]++;
}

static void setup(void) {
    parti_breaker_options o;
    memset(changes, 0, sizeof changes);
    cr_assert_eq(parti_fake_world_create(&w, NULL), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "worker", &inner), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "ob", &ob), PARTI_ERR_OK);
    memset(&o, 0, sizeof o);
    o.failure_threshold = 3;
    o.open_ms = 2000;
    o.on_change = on_change;
    cr_assert_eq(parti_breaker_wrap(&b, &t, &inner, &o), PARTI_ERR_OK);
}

static void teardown(void) {
    parti_breaker_free(b);
    parti_fake_disconnect(&inner);
    parti_fake_disconnect(&ob);
    parti_fake_world_destroy(w);
}

/* Calls of op that reached the fake (the log has a line for each, faults included). */
static int reached(const char *op) {
    size_t len;
    const char *log = parti_fake_log(w, &len), *p = log;
    char needle[64];
    int n = 0;
    snprintf(needle, sizeof needle, " worker %s ", op);
    while ((p = strstr(p, needle)) != NULL) {
        n++;
        p++;
    }
    return n;
}

static parti_err kv_get(void) {
    parti_kv_entry e;
    parti_err r;
    memset(&e, 0, sizeof e);
    r = t.vt->kv_get(t.self, "b", "k", 0, &e, 1000);
    if (r == PARTI_ERR_OK) parti_kv_entry_free(&e);
    return r;
}

TestSuite(breaker, .init = setup, .fini = teardown);

Test(breaker, opens_fails_fast_probes_and_closes) {
    parti_kv_config kc;
    int i, before;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(kv_get(), PARTI_ERR_KEY_NOT_FOUND); /* an answer: the server is up */
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_CLOSED);
    parti_fake_partition(w, &inner, 1);
    for (i = 0; i < 3; i++) cr_assert_eq(kv_get(), PARTI_ERR_NOT_CONNECTED);
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_OPEN);
    cr_assert_eq(changes[PARTI_BREAKER_OPEN], 1);
    before = reached("kv_get");
    for (i = 0; i < 50; i++) cr_assert_eq(kv_get(), PARTI_ERR_CIRCUIT_OPEN);
    cr_assert_eq(reached("kv_get"), before, "an open breaker must not touch the network");
    cr_assert_eq(parti_breaker_fast_failures(b), 50);
    /* after the cool-down one probe goes; it fails: open again */
    parti_fake_advance(w, 2000);
    cr_assert_eq(kv_get(), PARTI_ERR_NOT_CONNECTED);
    cr_assert_eq(reached("kv_get"), before + 1);
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_OPEN);
    cr_assert_eq(kv_get(), PARTI_ERR_CIRCUIT_OPEN);
    /* heal: the next probe succeeds and closes it */
    parti_fake_partition(w, &inner, 0);
    parti_fake_advance(w, 2000);
    cr_assert_eq(kv_get(), PARTI_ERR_KEY_NOT_FOUND);
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_CLOSED);
    cr_assert_eq(changes[PARTI_BREAKER_HALF_OPEN], 2);
    cr_assert_eq(changes[PARTI_BREAKER_CLOSED], 1);
    cr_assert_eq(parti_breaker_opens(b), 2);
    cr_assert_str_eq(parti_breaker_state_name(PARTI_BREAKER_HALF_OPEN), "half_open");
}

Test(breaker, ordinary_answers_do_not_trip_it) {
    parti_kv_config kc;
    uint64_t rev;
    int i;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->kv_create(t.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_OK);
    for (i = 0; i < 20; i++) {
        cr_assert_eq(t.vt->kv_create(t.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_KEY_EXISTS);
        cr_assert_eq(t.vt->kv_update(t.self, "b", "k", "v", 1, 999, &rev, 1000), PARTI_ERR_WRONG_REVISION);
    }
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_CLOSED);
    cr_assert(parti_breaker_is_failure(PARTI_ERR_TIMEOUT));
    cr_assert(!parti_breaker_is_failure(PARTI_ERR_CONSUMER_NOT_FOUND));
}

static int handled;
static parti_verdict ack(void *u, const parti_msg *m, uint32_t *d) {
    (void)u, (void)m, (void)d;
    handled++;
    return PARTI_ACK;
}

Test(breaker, a_consumer_rides_through_a_breaker_cycle_without_spinning) {
    static const char *const k0[] = {"p0"}, *const subs[] = {"orders.>"};
    static const parti_partition parts[] = {{k0, 1, 1}};
    static const int mine[] = {0};
    parti_stream_config sc;
    parti_config cfg;
    parti_consumer_options o;
    parti_consumer *c;
    char msg[256];
    int i, calls;
    memset(&sc, 0, sizeof sc);
    sc.name = "orders", sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders", cfg.subject_template = "orders.{0}", cfg.partitions = parts, cfg.partition_count = 1;
    memset(&o, 0, sizeof o);
    o.on_message = ack;
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_consumer_update(c, "w1", mine, 1), PARTI_ERR_OK);
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
    parti_fake_partition(w, &inner, 1);
    for (i = 0; i < 100; i++) parti_consumer_poll(c, 100); /* 10 s cut off */
    cr_assert_geq(parti_breaker_opens(b), 1);
    calls = reached("fetch_start") + reached("consumer_info");
    for (i = 0; i < 600; i++) parti_consumer_poll(c, 100); /* 60 s more */
    /* paced by backoff and the breaker's cool-down: a few dozen attempts, not a spin */
    cr_assert_leq(reached("fetch_start") + reached("consumer_info") - calls, 60, "%d calls reached the fake in 60 s",
                  reached("fetch_start") + reached("consumer_info") - calls);
    parti_fake_partition(w, &inner, 0);
    for (i = 0; i < 5; i++) {
        parti_pub_ack pa;
        cr_assert_eq(ob.vt->publish(ob.self, "orders.p0", NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
    }
    for (i = 0; i < 200 && handled < 5; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(handled, 5);
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_CLOSED);
    parti_consumer_destroy(c);
}

Test(breaker, a_group_worker_shows_its_breaker_in_health_and_metrics) {
    static const char *const k0[] = {"p0"}, *const subs[] = {"orders.>"};
    static const parti_partition parts[] = {{k0, 1, 1}};
    parti_stream_config sc;
    parti_config cfg;
    parti_options o;
    parti *p;
    parti_health h;
    char msg[256], json[2048];
    int i;
    memset(&sc, 0, sizeof sc);
    sc.name = "orders", sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders", cfg.subject_template = "orders.{0}", cfg.partitions = parts, cfg.partition_count = 1;
    memset(&o, 0, sizeof o);
    o.on_message = ack;
    o.breaker = b;
    cr_assert_eq(parti_create(&p, &t, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    for (i = 0; i < 50; i++) parti_poll(p, 100);
    cr_assert_eq(parti_state_of(p), PARTI_STATE_STABLE);
    cr_assert_eq(parti_metrics_of(p)->circuit_breaker_state.value, 0);
    parti_fake_partition(w, &inner, 1);
    for (i = 0; i < 30 && parti_breaker_state_of(b) != PARTI_BREAKER_OPEN; i++) parti_poll(p, 100);
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_OPEN);
    cr_assert_eq(parti_metrics_of(p)->circuit_breaker_state.value, 1);
    cr_assert_eq(parti_health_of(p, &h), PARTI_ERR_OK);
    cr_assert(h.degraded && !h.ready);
    cr_assert_eq(parti_health_json(p, json, sizeof json, NULL), PARTI_ERR_OK);
    cr_assert(strstr(json, "\"circuit_breaker\":{\"state\":\"open\"}"), "%s", json);
    parti_fake_partition(w, &inner, 0);
    for (i = 0; i < 100 && (parti_state_of(p) != PARTI_STATE_STABLE || parti_breaker_state_of(b) != PARTI_BREAKER_CLOSED);
         i++)
        parti_poll(p, 100);
    cr_assert_eq(parti_state_of(p), PARTI_STATE_STABLE);
    cr_assert_eq(parti_breaker_state_of(b), PARTI_BREAKER_CLOSED);
    cr_assert_eq(parti_metrics_of(p)->circuit_breaker_state.value, 0);
    parti_destroy(p);
}

/* flush (sending what a transport holds back, e.g. a burst of acks) passes
 * through the breaker, uncounted: it only sends what was given already. A
 * transport without it gives a breaker without it. */
static int flushes;
static void counting_flush(void *self) {
    (void)self;
    flushes++;
}

Test(breaker, flush_passes_through) {
    parti_transport_vtable vt = *inner.vt;
    parti_transport with = inner, wrapped;
    parti_breaker *b2 = NULL;
    cr_assert_null(t.vt->flush, "the fake holds nothing back: no flush");
    vt.flush = counting_flush;
    with.vt = &vt;
    cr_assert_eq(parti_breaker_wrap(&b2, &wrapped, &with, NULL), PARTI_ERR_OK);
    cr_assert_not_null(wrapped.vt->flush);
    flushes = 0;
    wrapped.vt->flush(wrapped.self);
    cr_assert_eq(flushes, 1);
    parti_breaker_free(b2);
}

/* kv_update_many passes through with each write's result counted, as the
 * same writes through kv_update would be; an open breaker refuses every
 * write without calling the transport. A transport without it gives a
 * breaker without it. */
static int many_calls;
static parti_err many_result = PARTI_ERR_TIMEOUT;
static void canned_update_many(void *self, const char *bucket, parti_kv_update *u, int n, uint32_t timeout_ms) {
    int i;
    (void)self, (void)bucket, (void)timeout_ms;
    many_calls++;
    for (i = 0; i < n; i++) u[i].err = many_result;
}

Test(breaker, kv_update_many_passes_through_and_counts_each_write) {
    parti_transport_vtable vt = *inner.vt;
    parti_transport with = inner, wrapped;
    parti_breaker_options o;
    parti_breaker *b2 = NULL;
    parti_kv_update u[2];
    int i;
    cr_assert_null(t.vt->kv_update_many, "the fake has none: neither has its breaker");
    vt.kv_update_many = canned_update_many;
    with.vt = &vt;
    memset(&o, 0, sizeof o);
    o.failure_threshold = 4;
    o.open_ms = 2000;
    cr_assert_eq(parti_breaker_wrap(&b2, &wrapped, &with, &o), PARTI_ERR_OK);
    cr_assert_not_null(wrapped.vt->kv_update_many);
    memset(u, 0, sizeof u);
    u[0].key = "m.a", u[1].key = "leader";
    many_calls = 0;
    many_result = PARTI_ERR_TIMEOUT;
    wrapped.vt->kv_update_many(wrapped.self, "b", u, 2, 1000); /* two failures */
    cr_assert_eq(parti_breaker_state_of(b2), PARTI_BREAKER_CLOSED);
    wrapped.vt->kv_update_many(wrapped.self, "b", u, 2, 1000); /* four: open */
    cr_assert_eq(parti_breaker_state_of(b2), PARTI_BREAKER_OPEN);
    cr_assert_eq(many_calls, 2);
    wrapped.vt->kv_update_many(wrapped.self, "b", u, 2, 1000);
    cr_assert_eq(many_calls, 2, "an open breaker does not call the transport");
    for (i = 0; i < 2; i++) cr_assert_eq(u[i].err, PARTI_ERR_CIRCUIT_OPEN);
    parti_fake_advance(w, 2000); /* half open: a success closes it */
    many_result = PARTI_ERR_OK;
    wrapped.vt->kv_update_many(wrapped.self, "b", u, 2, 1000);
    cr_assert_eq(many_calls, 3);
    cr_assert_eq(parti_breaker_state_of(b2), PARTI_BREAKER_CLOSED);
    parti_breaker_free(b2);
}

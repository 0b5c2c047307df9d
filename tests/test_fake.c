/* Tests of the fake NATS itself: virtual time, fault knobs, determinism.
 * (What it shares with a real server is pinned by tests/conformance.c.) */
#include "parti.h"
#include "parti_nats.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static parti_fake_world *w;
static parti_transport a, b;

static void setup_world(uint64_t seed, int no_auto, int no_markers) {
    parti_fake_options o;
    memset(&o, 0, sizeof o);
    o.seed = seed;
    o.no_auto_advance = no_auto;
    o.no_expiry_markers = no_markers;
    cr_assert_eq(parti_fake_world_create(&w, &o), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "a", &a), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "b", &b), PARTI_ERR_OK);
}

static void setup(void) { setup_world(1, 0, 0); }
static void teardown(void) {
    parti_fake_disconnect(&a);
    parti_fake_disconnect(&b);
    parti_fake_world_destroy(w);
    w = NULL;
}

static void make_stream(parti_transport *t) {
    static const char *const subs[] = {"orders.>"};
    parti_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    cr_assert_eq(t->vt->stream_create(t->self, &sc, 1000), PARTI_ERR_OK);
}

static void make_consumer(parti_transport *t, const char *name, const char *filter, uint32_t ack_wait) {
    parti_consumer_config cc;
    memset(&cc, 0, sizeof cc);
    cc.stream = "orders";
    cc.durable = name;
    cc.filter_subjects = &filter;
    cc.filter_count = 1;
    cc.ack_wait_ms = ack_wait;
    cr_assert_eq(t->vt->consumer_upsert(t->self, &cc, 1000), PARTI_ERR_OK);
}

static void publish(parti_transport *t, const char *subject) {
    parti_pub_ack pa;
    cr_assert_eq(t->vt->publish(t->self, subject, NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
}

static void start_pull(parti_transport *t, const char *name, int batch, uint32_t expires, uint32_t hb) {
    parti_fetch_opts fo;
    fo.batch = batch;
    fo.max_bytes = 0;
    fo.expires_ms = expires;
    fo.heartbeat_ms = hb;
    cr_assert_eq(t->vt->fetch_start(t->self, "orders", name, &fo, 1000), PARTI_ERR_OK);
}

TestSuite(fake, .init = setup, .fini = teardown);

Test(fake, waits_advance_virtual_time_by_exactly_the_wait) {
    parti_msg m;
    uint64_t t0;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    start_pull(&a, "w", 10, 5000, 1000);
    t0 = parti_fake_now(w);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 250), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_fake_now(w), t0 + 250);
    /* the pull expires at t0 + 5000: a longer wait stops there */
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 60000), PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(parti_fake_now(w), t0 + 5000);
}

Test(fake, a_wait_ends_early_when_a_redelivery_falls_due) {
    parti_msg m;
    uint64_t t0;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 1000);
    publish(&a, "orders.1");
    start_pull(&a, "w", 10, 5000, 0);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_OK);
    a.vt->msg_release(a.self, &m);
    t0 = parti_fake_now(w);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 4000), PARTI_ERR_OK);
    cr_assert_eq(m.delivery_count, 2);
    cr_assert_eq(parti_fake_now(w), t0 + 1000);
    a.vt->msg_release(a.self, &m);
}

Test(fake, without_auto_advance_waits_return_at_once) {
    parti_msg m;
    uint64_t t0;
    teardown();
    setup_world(1, 1, 0);
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    start_pull(&a, "w", 10, 5000, 1000);
    t0 = parti_fake_now(w);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 3000), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_fake_now(w), t0);
    parti_fake_advance(w, 5000);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_NO_MESSAGES);
}

Test(fake, latency_moves_time_and_times_out_past_the_timeout) {
    uint64_t t0 = parti_fake_now(w), rev;
    parti_kv_config kc;
    parti_kv_entry e;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    cr_assert_eq(a.vt->kv_open(a.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_set_latency(w, &a, "kv_put", 200), PARTI_ERR_OK);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "1", 1, &rev, 1000), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_now(w), t0 + 200);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "2", 1, &rev, 50), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_fake_now(w), t0 + 250);
    /* the timed-out put was not applied; client b has no latency */
    cr_assert_eq(b.vt->kv_get(b.self, "b", "k", 0, &e, 1000), PARTI_ERR_OK);
    cr_assert_eq(e.value[0], '1');
    parti_kv_entry_free(&e);
    cr_assert_eq(parti_fake_now(w), t0 + 250);
}

Test(fake, fail_next_hits_only_the_chosen_client_and_only_n_times) {
    parti_kv_config kc;
    uint64_t rev;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    cr_assert_eq(a.vt->kv_open(a.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_fail_next(w, &a, "kv_put", 2, PARTI_ERR_NO_RESPONDERS), PARTI_ERR_OK);
    cr_assert_eq(b.vt->kv_put(b.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_OK);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_NO_RESPONDERS);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_NO_RESPONDERS);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_fail_next(w, NULL, "kv_put", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_TIMEOUT);
    cr_assert_eq(b.vt->kv_put(b.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_TIMEOUT);
}

Test(fake, knobs_refuse_bad_arguments) {
    parti_transport stranger;
    parti_fake_world *other;
    cr_assert_eq(parti_fake_fail_next(w, &a, "no_such_op", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_fail_next(w, &a, NULL, 1, PARTI_ERR_TIMEOUT), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_fail_next(w, &a, "kv_get", -1, PARTI_ERR_TIMEOUT), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_set_latency(NULL, &a, "kv_get", 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_world_create(&other, NULL), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(other, "x", &stranger), PARTI_ERR_OK);
    /* a client of another world is not this world's to break */
    cr_assert_eq(parti_fake_fail_next(w, &stranger, "kv_get", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_INVALID_ARGUMENT);
    parti_fake_disconnect(&stranger);
    parti_fake_world_destroy(other);
    cr_assert_eq(parti_fake_delete_consumer(w, "nope", "x"), PARTI_ERR_STREAM_NOT_FOUND);
    cr_assert_eq(parti_fake_expire_key(w, "nope", "k"), PARTI_ERR_BUCKET_NOT_FOUND);
    cr_assert_eq(parti_fake_world_create(NULL, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_connect(NULL, "x", &stranger), PARTI_ERR_INVALID_ARGUMENT);
    parti_fake_partition(w, NULL, 1);
    parti_fake_skew_clock(NULL, &a, 5);
    parti_fake_advance(NULL, 5);
    parti_fake_disconnect(NULL);
}

Test(fake, skew_moves_one_clients_clock_only) {
    uint64_t ta = a.vt->now_ms(a.self), tb = b.vt->now_ms(b.self);
    cr_assert_eq(ta, tb);
    parti_fake_skew_clock(w, &a, -3000);
    cr_assert_eq(a.vt->now_ms(a.self), ta - 3000);
    cr_assert_eq(b.vt->now_ms(b.self), tb);
    parti_fake_advance(w, 10);
    cr_assert_eq(a.vt->now_ms(a.self), ta - 2990);
}

Test(fake, clients_draw_different_deterministic_random_streams) {
    uint64_t ra = a.vt->random(a.self), rb = b.vt->random(b.self);
    cr_assert_neq(ra, rb);
    teardown();
    setup_world(1, 0, 0);
    cr_assert_eq(a.vt->random(a.self), ra);
    teardown();
    setup_world(2, 0, 0);
    cr_assert_neq(a.vt->random(a.self), ra);
}

Test(fake, partition_cuts_a_client_and_heal_restores_it) {
    parti_msg m;
    parti_stream_info si;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    start_pull(&a, "w", 10, 5000, 1000);
    parti_fake_partition(w, &a, 1);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 100), PARTI_ERR_NOT_CONNECTED);
    cr_assert_eq(a.vt->stream_info(a.self, "orders", &si, 100), PARTI_ERR_NOT_CONNECTED);
    cr_assert_eq(b.vt->stream_info(b.self, "orders", &si, 100), PARTI_ERR_OK);
    parti_stream_info_free(&si);
    parti_fake_partition(w, &a, 0);
    cr_assert_eq(a.vt->stream_info(a.self, "orders", &si, 100), PARTI_ERR_OK);
    parti_stream_info_free(&si);
    /* the pull was lost with the connection */
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_NO_MESSAGES);
}

Test(fake, dropped_heartbeats_end_a_pull_after_two_intervals) {
    parti_msg m;
    uint64_t t0;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    start_pull(&a, "w", 10, 10000, 1000);
    parti_fake_drop_heartbeats(w, &a, 1);
    t0 = parti_fake_now(w);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 10000), PARTI_ERR_MISSED_HEARTBEAT);
    cr_assert_eq(parti_fake_now(w), t0 + 2000);
    /* with heartbeats back, an idle pull just expires */
    parti_fake_drop_heartbeats(w, &a, 0);
    start_pull(&a, "w", 10, 10000, 1000);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 20000), PARTI_ERR_NO_MESSAGES);
}

Test(fake, deleting_the_stream_ends_pulls_and_stops_publishes) {
    parti_msg m;
    parti_pub_ack pa;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    start_pull(&a, "w", 10, 5000, 1000);
    cr_assert_eq(parti_fake_delete_stream(w, "orders"), PARTI_ERR_OK);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 100), PARTI_ERR_CONSUMER_DELETED);
    cr_assert_eq(a.vt->publish(a.self, "orders.1", NULL, 0, "x", 1, &pa, 100), PARTI_ERR_NO_RESPONDERS);
    cr_assert_eq(parti_fake_delete_stream(w, "orders"), PARTI_ERR_STREAM_NOT_FOUND);
}

Test(fake, silent_expiry_without_markers) {
    parti_kv_config kc;
    parti_kv_watcher *wt;
    parti_kv_entry e;
    uint64_t rev;
    teardown();
    setup_world(1, 0, 1);
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    kc.ttl_ms = 1000;
    cr_assert_eq(a.vt->kv_open(a.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(b.vt->kv_watch(b.self, "b", "", &wt, 1000), PARTI_ERR_OK);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_OK);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_OK);
    cr_assert_eq(e.op, PARTI_KV_PUT);
    parti_kv_entry_free(&e);
    parti_fake_advance(w, 1000);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(b.vt->kv_get(b.self, "b", "k", 0, &e, 1000), PARTI_ERR_KEY_NOT_FOUND);
    b.vt->kv_watch_stop(b.self, wt);
}

Test(fake, expiry_marker_arrives_at_the_expiry_time) {
    parti_kv_config kc;
    parti_kv_watcher *wt;
    parti_kv_entry e;
    uint64_t rev, t0 = parti_fake_now(w);
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    kc.ttl_ms = 1000;
    cr_assert_eq(a.vt->kv_open(a.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(b.vt->kv_watch(b.self, "b", "", &wt, 1000), PARTI_ERR_OK);
    cr_assert_eq(a.vt->kv_put(a.self, "b", "k", "v", 1, &rev, 1000), PARTI_ERR_OK);
    parti_fake_advance(w, 999);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_OK);
    parti_kv_entry_free(&e);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_NO_MESSAGES);
    parti_fake_advance(w, 5000);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_OK);
    cr_assert_eq(e.op, PARTI_KV_EXPIRED);
    cr_assert_eq(e.created_ms, t0 + 1000);
    cr_assert_gt(e.revision, rev);
    parti_kv_entry_free(&e);
    b.vt->kv_watch_stop(b.self, wt);
}

Test(fake, inactive_consumers_are_removed) {
    parti_consumer_config cc;
    parti_consumer_info ci;
    const char *f = "orders.1";
    make_stream(&a);
    memset(&cc, 0, sizeof cc);
    cc.stream = "orders";
    cc.durable = "catchup";
    cc.filter_subjects = &f;
    cc.filter_count = 1;
    cc.inactive_threshold_ms = 5000;
    cr_assert_eq(a.vt->consumer_upsert(a.self, &cc, 1000), PARTI_ERR_OK);
    parti_fake_advance(w, 4999);
    cr_assert_eq(a.vt->consumer_info(a.self, "orders", "catchup", &ci, 1000), PARTI_ERR_OK);
    parti_consumer_info_free(&ci);
    parti_fake_advance(w, 1);
    cr_assert_eq(a.vt->consumer_info(a.self, "orders", "catchup", &ci, 1000), PARTI_ERR_CONSUMER_NOT_FOUND);
}

Test(fake, destroying_a_world_with_clients_and_messages_leaks_nothing) {
    parti_msg m;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    publish(&a, "orders.1");
    start_pull(&a, "w", 10, 5000, 1000);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_OK);
    parti_fake_world_destroy(w);
    w = NULL;
    /* a message outlives its world until released */
    cr_assert_str_eq(m.subject, "orders.1");
    a.vt->msg_release(a.self, &m);
    a.vt = NULL;
    b.vt = NULL;
    a.self = b.self = NULL;
}

/* A scripted scenario touching every part of the fake; returns its log. */
static char *scenario(uint64_t seed) {
    parti_fake_options o;
    parti_fake_world *sw;
    parti_transport c[3];
    parti_kv_config kc;
    parti_msg m;
    size_t len;
    char *log;
    int i, step;
    memset(&o, 0, sizeof o);
    o.seed = seed;
    parti_fake_world_create(&sw, &o);
    for (i = 0; i < 3; i++) parti_fake_connect(sw, NULL, &c[i]);
    make_stream(&c[0]);
    memset(&kc, 0, sizeof kc);
    kc.bucket = "members";
    kc.ttl_ms = 3000;
    c[0].vt->kv_open(c[0].self, &kc, 1000);
    for (i = 0; i < 3; i++) {
        char name[8];
        snprintf(name, sizeof name, "w%d", i);
        make_consumer(&c[i], name, i == 0 ? "orders.0" : i == 1 ? "orders.1" : "orders.2", 2000);
    }
    for (step = 0; step < 200; step++) {
        /* the random draws decide what happens: same seed, same story */
        int who = (int)(c[step % 3].vt->random(c[step % 3].self) % 3);
        uint64_t r = c[who].vt->random(c[who].self), rev;
        char subject[32], name[8], key[16];
        snprintf(name, sizeof name, "w%d", who);
        snprintf(subject, sizeof subject, "orders.%d", (int)(r % 3));
        snprintf(key, sizeof key, "worker-%d", (int)(r % 4));
        switch (r % 6) {
        case 0: publish(&c[who], subject); break;
        case 1: c[who].vt->kv_create(c[who].self, "members", key, "x", 1, &rev, 1000); break;
        case 2: {
            parti_fetch_opts fo = {3, 0, 1000, 200};
            c[who].vt->fetch_start(c[who].self, "orders", name, &fo, 1000);
            break;
        }
        case 3:
            if (c[who].vt->fetch_next(c[who].self, "orders", name, &m, (uint32_t)(r % 700)) == PARTI_ERR_OK) {
                c[who].vt->ack(c[who].self, &m, (parti_ack_kind)((r >> 8) % 4), 100, 1000);
                c[who].vt->msg_release(c[who].self, &m);
            }
            break;
        case 4: parti_fake_advance(sw, r % 1500); break;
        default: c[who].vt->kv_put(c[who].self, "members", key, "y", 1, &rev, 1000); break;
        }
    }
    parti_fake_log(sw, &len);
    log = (char *)malloc(len + 1);
    memcpy(log, parti_fake_log(sw, NULL), len + 1);
    for (i = 0; i < 3; i++) parti_fake_disconnect(&c[i]);
    parti_fake_world_destroy(sw);
    return log;
}

Test(determinism, same_seed_gives_byte_identical_event_logs_for_many_seeds) {
    uint64_t seed;
    char *prev = NULL;
    for (seed = 1; seed <= 50; seed++) {
        char *x = scenario(seed), *y = scenario(seed);
        cr_assert(strlen(x) > 2000, "seed %llu: log too short to mean anything", (unsigned long long)seed);
        cr_assert_str_eq(x, y, "seed %llu", (unsigned long long)seed);
        if (prev) cr_assert_str_neq(prev, x, "seeds %llu and %llu tell the same story", (unsigned long long)seed - 1,
                                    (unsigned long long)seed);
        free(prev);
        free(y);
        prev = x;
    }
    free(prev);
}

Test(fake, an_injected_fetch_failure_ends_the_pull_unless_it_is_a_timeout) {
    parti_msg m;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    publish(&a, "orders.1");
    start_pull(&a, "w", 10, 5000, 1000);
    cr_assert_eq(parti_fake_fail_next(w, &a, "fetch_next", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 100), PARTI_ERR_TIMEOUT);
    /* still pending after a timeout: the message arrives */
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 100), PARTI_ERR_OK);
    a.vt->msg_release(a.self, &m);
    cr_assert_eq(parti_fake_fail_next(w, &a, "fetch_next", 1, PARTI_ERR_NO_RESPONDERS), PARTI_ERR_OK);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 100), PARTI_ERR_NO_RESPONDERS);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 100), PARTI_ERR_NO_MESSAGES);
}

Test(fake, stream_get_next_takes_fail_next_latency_and_partition) {
    uint64_t t0;
    parti_msg m;
    make_stream(&a);
    publish(&a, "orders.1");
    cr_assert_eq(parti_fake_fail_next(w, &a, "stream_get_next", 1, PARTI_ERR_NOT_CONNECTED), PARTI_ERR_OK);
    cr_assert_eq(b.vt->stream_get_next(b.self, "orders", "orders.*", 1, &m, 1000), PARTI_ERR_OK);
    b.vt->msg_release(b.self, &m);
    memset(&m, 1, sizeof m);
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.*", 1, &m, 1000), PARTI_ERR_NOT_CONNECTED);
    cr_assert_null(m.handle, "out is emptied on a fault too");
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.*", 1, &m, 1000), PARTI_ERR_OK);
    a.vt->msg_release(a.self, &m);
    t0 = parti_fake_now(w);
    cr_assert_eq(parti_fake_set_latency(w, &a, "stream_get_next", 200), PARTI_ERR_OK);
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.1", 1, &m, 1000), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_now(w), t0 + 200);
    a.vt->msg_release(a.self, &m);
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.1", 1, &m, 50), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_fake_now(w), t0 + 250);
    cr_assert_eq(parti_fake_set_latency(w, &a, "stream_get_next", 0), PARTI_ERR_OK);
    parti_fake_partition(w, &a, 1);
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.1", 1, &m, 1000), PARTI_ERR_NOT_CONNECTED);
    parti_fake_partition(w, &a, 0);
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.1", 1, &m, 1000), PARTI_ERR_OK);
    a.vt->msg_release(a.self, &m);
}

Test(fake, a_direct_read_is_not_ackable_and_outlives_its_stream) {
    parti_msg m;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 30000);
    publish(&a, "orders.1");
    cr_assert_eq(a.vt->stream_get_next(a.self, "orders", "orders.1", 1, &m, 1000), PARTI_ERR_OK);
    cr_assert_eq(m.consumer_seq, 0);
    cr_assert_eq(m.delivery_count, 1);
    cr_assert_eq(a.vt->ack(a.self, &m, PARTI_ACK_ACK, 0, 1000), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(a.vt->ack(a.self, &m, PARTI_ACK_NAK, 10, 1000), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_delete_stream(w, "orders"), PARTI_ERR_OK);
    cr_assert_str_eq(m.subject, "orders.1");
    cr_assert_eq(m.len, 1);
    a.vt->msg_release(a.self, &m);
    cr_assert_null(m.handle);
}

Test(fake, a_stream_recreated_within_the_same_millisecond_has_another_created_ns) {
    parti_stream_info si;
    uint64_t t0 = parti_fake_now(w), first;
    make_stream(&a);
    cr_assert_eq(a.vt->stream_info(a.self, "orders", &si, 1000), PARTI_ERR_OK);
    first = si.created_ns;
    parti_stream_info_free(&si);
    cr_assert_eq(first, t0 * 1000000u, "the stamp is the world's clock in ns");
    cr_assert_eq(a.vt->stream_delete(a.self, "orders", 1000), PARTI_ERR_OK);
    make_stream(&a);
    cr_assert_eq(parti_fake_now(w), t0);
    cr_assert_eq(a.vt->stream_info(a.self, "orders", &si, 1000), PARTI_ERR_OK);
    cr_assert_gt(si.created_ns, first);
    parti_stream_info_free(&si);
}

Test(fake, a_partitioned_client_is_not_connected) {
    parti_fake_world *w;
    parti_transport t;
    cr_assert_eq(parti_fake_world_create(&w, NULL), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "c", &t), PARTI_ERR_OK);
    cr_assert_eq(t.vt->connected(t.self), 1);
    parti_fake_partition(w, &t, 1);
    cr_assert_eq(t.vt->connected(t.self), 0);
    parti_fake_partition(w, &t, 0);
    cr_assert_eq(t.vt->connected(t.self), 1);
    parti_fake_disconnect(&t);
    parti_fake_world_destroy(w);
}

/* A held-back write times out for its sender, lands delay_ms later with the
 * revision it expected, and watchers see it then; a lost reply is applied at
 * once. Both wait out the caller's timeout. */
Test(fake, writes_can_be_applied_late_or_lose_their_reply) {
    parti_kv_config kc;
    parti_kv_entry e;
    parti_kv_watcher *wt;
    uint64_t r1 = 0, r2 = 0, t0;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "ids";
    cr_assert_eq(a.vt->kv_open(a.self, &kc, 1000), PARTI_ERR_OK);
    cr_assert_eq(a.vt->kv_create(a.self, "ids", "k", "v1", 2, &r1, 1000), PARTI_ERR_OK);
    cr_assert_eq(b.vt->kv_watch(b.self, "ids", "", &wt, 1000), PARTI_ERR_OK);
    /* late: TIMEOUT after the timeout, nothing yet, applied 2 s after it was sent */
    cr_assert_eq(parti_fake_apply_late(w, &a, "kv_update", 1, 2000), PARTI_ERR_OK);
    t0 = parti_fake_now(w);
    cr_assert_eq(a.vt->kv_update(a.self, "ids", "k", "v2", 2, r1, &r2, 500), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_fake_now(w) - t0, 500);
    cr_assert_eq(b.vt->kv_get(b.self, "ids", "k", 0, &e, 1000), PARTI_ERR_OK);
    cr_assert(e.len == 2 && memcmp(e.value, "v1", 2) == 0);
    parti_kv_entry_free(&e);
    parti_fake_advance(w, 1499);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_NO_MESSAGES);
    parti_fake_advance(w, 1);
    cr_assert_eq(b.vt->kv_watch_next(b.self, wt, &e), PARTI_ERR_OK);
    cr_assert(e.len == 2 && memcmp(e.value, "v2", 2) == 0 && e.revision > r1);
    r2 = e.revision;
    parti_kv_entry_free(&e);
    /* lost reply: applied now, TIMEOUT after the timeout; a retry of the same CAS fails */
    cr_assert_eq(parti_fake_lose_replies(w, &a, "kv_update", 1), PARTI_ERR_OK);
    t0 = parti_fake_now(w);
    cr_assert_eq(a.vt->kv_update(a.self, "ids", "k", "v3", 2, r2, NULL, 300), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_fake_now(w) - t0, 300);
    cr_assert_eq(a.vt->kv_update(a.self, "ids", "k", "v3", 2, r2, NULL, 300), PARTI_ERR_WRONG_REVISION);
    cr_assert_eq(b.vt->kv_get(b.self, "ids", "k", 0, &e, 1000), PARTI_ERR_OK);
    cr_assert(e.len == 2 && memcmp(e.value, "v3", 2) == 0);
    parti_kv_entry_free(&e);
    /* only writes can be held back; reads have no reply to lose here */
    cr_assert_eq(parti_fake_apply_late(w, &a, "kv_get", 1, 10), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_lose_replies(w, &a, "kv_get", 1), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_fake_lose_replies(w, &a, "nope", 1), PARTI_ERR_INVALID_ARGUMENT);
    b.vt->kv_watch_stop(b.self, wt);
}

/* A delivery lost in transit: the server counts it (consumer sequence, ack
 * pending, the pull's batch), the client never sees it, and ack_wait brings
 * it back with delivery count 2 after the later messages were delivered. */
Test(fake, a_delivery_lost_in_transit_is_counted_by_the_server_and_redelivered_after_ack_wait) {
    parti_consumer_info ci;
    parti_msg m;
    make_stream(&a);
    make_consumer(&a, "w", "orders.1", 5000);
    publish(&a, "orders.1");
    publish(&a, "orders.1");
    publish(&a, "orders.1");
    cr_assert_eq(parti_fake_lose_deliveries(w, &a, 1), PARTI_ERR_OK);
    start_pull(&a, "w", 2, 1000, 0);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_OK);
    cr_assert_eq(m.stream_seq, 2);
    cr_assert_eq(m.consumer_seq, 2, "the lost delivery took consumer sequence 1");
    cr_assert_eq(m.delivery_count, 1);
    cr_assert_eq(a.vt->ack(a.self, &m, PARTI_ACK_ACK, 0, 1000), PARTI_ERR_OK);
    a.vt->msg_release(a.self, &m);
    /* the lost one counted against the batch of 2: the pull is complete */
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(a.vt->consumer_info(a.self, "orders", "w", &ci, 1000), PARTI_ERR_OK);
    cr_assert_eq(ci.num_ack_pending, 1);
    cr_assert_eq(ci.delivered_stream_seq, 2);
    cr_assert_eq(ci.ack_floor_stream_seq, 0);
    parti_consumer_info_free(&ci);
    start_pull(&a, "w", 10, 10000, 0);
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 0), PARTI_ERR_OK);
    cr_assert_eq(m.stream_seq, 3);
    cr_assert_eq(m.consumer_seq, 3);
    a.vt->msg_release(a.self, &m);
    /* after ack_wait: the lost one, with the next consumer sequence */
    cr_assert_eq(a.vt->fetch_next(a.self, "orders", "w", &m, 6000), PARTI_ERR_OK);
    cr_assert_eq(m.stream_seq, 1);
    cr_assert_eq(m.delivery_count, 2);
    cr_assert_eq(m.consumer_seq, 4);
    a.vt->msg_release(a.self, &m);
    cr_assert_eq(parti_fake_lose_deliveries(w, &a, -1), PARTI_ERR_INVALID_ARGUMENT);
}

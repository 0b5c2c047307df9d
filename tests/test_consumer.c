/* Tests of the worker consumer (parti_consumer_*) on the fake NATS: virtual
 * time only, never sleeps. The implementation comes from tests/impl.c. */
#include "parti.h"
#include "parti_nats.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPARTS 10

static const char *const keys[NPARTS][1] = {{"p0"}, {"p1"}, {"p2"}, {"p3"}, {"p4"},
                                            {"p5"}, {"p6"}, {"p7"}, {"p8"}, {"p9"}};
static parti_partition parts[NPARTS];

static parti_fake_world *w;
static parti_transport t;  /* the worker's client */
static parti_transport ob; /* an observer: publishes and inspects */
static parti_config cfg;
static parti_consumer_options opts;
static parti_consumer *c;

/* what the callbacks saw */
static struct {
    parti_consumer_event_kind kinds[256];
    uint64_t at[256];
    int n;
} ev;
static struct {
    parti_verdict verdict;
    uint32_t nak_delay;
    int handled;
    uint64_t seqs[1024];
    uint32_t deliveries[1024];
} hd;

static void on_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    (void)user;
    (void)err;
    cr_assert(detail != NULL);
    if (ev.n < 256) {
        ev.kinds[ev.n] = kind;
        ev.at[ev.n] = parti_fake_now(w);
        ev.n++;
    }
}

static parti_verdict on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    cr_assert(m && m->subject && nak_delay_ms && *nak_delay_ms == 0);
    if (hd.handled < 1024) {
        hd.seqs[hd.handled] = m->stream_seq;
        hd.deliveries[hd.handled] = m->delivery_count;
    }
    hd.handled++;
    if (hd.verdict == PARTI_NAK) *nak_delay_ms = hd.nak_delay;
    return hd.verdict;
}

static int count_events(parti_consumer_event_kind kind) {
    int i, n = 0;
    for (i = 0; i < ev.n; i++) n += ev.kinds[i] == kind;
    return n;
}

static void make_world(uint64_t seed) {
    static const char *const subs[] = {"orders.>"};
    parti_fake_options fo;
    parti_stream_config sc;
    int i;
    memset(&ev, 0, sizeof ev);
    memset(&hd, 0, sizeof hd);
    for (i = 0; i < NPARTS; i++) {
        parts[i].keys = keys[i];
        parts[i].key_count = 1;
        parts[i].weight = 1;
    }
    memset(&fo, 0, sizeof fo);
    fo.seed = seed;
    cr_assert_eq(parti_fake_world_create(&w, &fo), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "w1", &t), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, "ob", &ob), PARTI_ERR_OK);
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders";
    cfg.subject_template = "orders.{0}";
    cfg.partitions = parts;
    cfg.partition_count = NPARTS;
    memset(&opts, 0, sizeof opts);
    opts.on_message = on_message;
    opts.on_event = on_event;
    hd.verdict = PARTI_ACK;
}

static void make_consumer(void) {
    char msg[256];
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &opts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
}

static void setup(void) {
    make_world(1);
    make_consumer();
}

static void teardown(void) {
    parti_consumer_destroy(c);
    c = NULL;
    parti_fake_disconnect(&t);
    parti_fake_disconnect(&ob);
    parti_fake_world_destroy(w);
    w = NULL;
}

/* Lines of the event log for op that ended with result ("OK", "TIMEOUT", or NULL for any). */
static int count_log(const char *op, const char *result) {
    size_t len;
    const char *log = parti_fake_log(w, &len), *p = log;
    char needle[64], res[64];
    int n = 0;
    snprintf(needle, sizeof needle, " %s ", op);
    snprintf(res, sizeof res, "-> %s\n", result ? result : "");
    while (p && *p) {
        const char *eol = strchr(p, '\n');
        size_t l = eol ? (size_t)(eol - p + 1) : strlen(p);
        char line[600];
        if (l >= sizeof line) l = sizeof line - 1;
        memcpy(line, p, l);
        line[l] = 0;
        if (strstr(line, needle) && (!result || strstr(line, res))) n++;
        p += l;
    }
    return n;
}

static parti_err server_filters(const char *durable, char *out, size_t cap) {
    parti_consumer_info ci;
    parti_err e;
    int i;
    out[0] = 0;
    e = ob.vt->consumer_info(ob.self, "orders", durable, &ci, 1000);
    if (e != PARTI_ERR_OK) return e;
    for (i = 0; i < ci.filter_count; i++) {
        strncat(out, ci.filter_subjects[i], cap - strlen(out) - 1);
        if (i + 1 < ci.filter_count) strncat(out, ",", cap - strlen(out) - 1);
    }
    parti_consumer_info_free(&ci);
    return PARTI_ERR_OK;
}

static void expect_filters(const char *durable, const char *want) {
    char got[1024];
    cr_assert_eq(server_filters(durable, got, sizeof got), PARTI_ERR_OK, "no consumer %s", durable);
    cr_assert_str_eq(got, want);
}

static void publish(const char *subject) {
    parti_pub_ack pa;
    cr_assert_eq(ob.vt->publish(ob.self, subject, NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
}

/* Lets the coalescing window pass and applies what is pending. */
static void settle(void) {
    parti_fake_advance(w, 75);
    cr_assert_eq(parti_consumer_poll(c, 0), PARTI_ERR_OK);
}

static void update(const char *id, const int *p, int n) {
    cr_assert_eq(parti_consumer_update(c, id, p, n), PARTI_ERR_OK, "%s", parti_consumer_last_message(c));
}

TestSuite(consumer, .init = setup, .fini = teardown);

/* 1 */
Test(consumer, lazy_start_makes_nothing_on_the_server_before_the_first_update) {
    static const int mine[] = {2, 0};
    char got[256];
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_OK);
    parti_fake_advance(w, 60000);
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_OK);
    cr_assert_eq(server_filters("parti-w1", got, sizeof got), PARTI_ERR_CONSUMER_NOT_FOUND);
    cr_assert_eq(count_log("consumer_upsert", NULL) + count_log("fetch_start", NULL), 0);
    cr_assert_eq(parti_consumer_subjects(c)->count, 0);
    cr_assert_str_eq(parti_consumer_durable(c), "");
    /* recorded, not applied until the window passes */
    update("w1", mine, 2);
    cr_assert_eq(parti_consumer_poll(c, 0), PARTI_ERR_OK);
    cr_assert_eq(server_filters("parti-w1", got, sizeof got), PARTI_ERR_CONSUMER_NOT_FOUND);
    settle();
    expect_filters("parti-w1", "orders.p0,orders.p2");
    cr_assert_str_eq(parti_consumer_durable(c), "parti-w1");
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_CREATED), 1);
}

/* 2 */
Test(consumer, update_applies_the_full_sorted_set_once_and_counts_it) {
    static const int a[] = {3, 1, 1, 7}, b[] = {7, 1, 5};
    const parti_metrics *m = parti_consumer_metrics(c);
    update("w1", a, 4);
    settle();
    expect_filters("parti-w1", "orders.p1,orders.p3,orders.p7");
    cr_assert_eq(count_log("consumer_upsert", "OK"), 1);
    cr_assert_eq(m->consumer_updates_success.value, 1);
    cr_assert_eq(m->consumer_subject_adds.value, 3);
    cr_assert_eq(m->consumer_subject_removes.value, 0);
    cr_assert_eq(m->consumer_subjects_current.value, 3.0);
    cr_assert_eq(m->consumer_update_latency.count, 1);
    cr_assert_float_eq(m->consumer_update_latency.sum, 0.075, 1e-9);
    cr_assert_eq(parti_consumer_subjects(c)->count, 3);
    cr_assert_str_eq(parti_consumer_subjects(c)->items[0], "orders.p1");

    /* the same set again: a counted no-op, no server call */
    update("w1", a, 4);
    settle();
    cr_assert_eq(m->consumer_updates_noop.value, 1);
    cr_assert_eq(count_log("consumer_upsert", NULL), 1);

    update("w1", b, 3);
    settle();
    expect_filters("parti-w1", "orders.p1,orders.p5,orders.p7");
    cr_assert_eq(m->consumer_updates_success.value, 2);
    cr_assert_eq(m->consumer_subject_adds.value, 4);
    cr_assert_eq(m->consumer_subject_removes.value, 1);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_UPDATED), 1);
}

Test(consumer, too_many_subjects_is_refused_without_a_server_call_and_near_limit_is_counted) {
    static const int five[] = {0, 1, 2, 3, 4}, four[] = {0, 1, 2, 3}, two[] = {0, 1};
    const parti_metrics *m;
    parti_consumer_destroy(c);
    cfg.max_subjects = 4; /* warning at 80%: 3.2 -> 4 subjects */
    make_consumer();
    m = parti_consumer_metrics(c);
    cr_assert_eq(parti_consumer_update(c, "w1", five, 5), PARTI_ERR_TOO_MANY_SUBJECTS);
    cr_assert(strstr(parti_consumer_last_message(c), "max_subjects") != NULL, "%s", parti_consumer_last_message(c));
    settle();
    cr_assert_eq(count_log("consumer_upsert", NULL), 0);
    update("w1", two, 2);
    settle();
    cr_assert_eq(m->consumer_subjects_near_limit.value, 0);
    update("w1", four, 4);
    settle();
    cr_assert_eq(m->consumer_subjects_near_limit.value, 1);
    expect_filters("parti-w1", "orders.p0,orders.p1,orders.p2,orders.p3");
    /* bad indexes are refused too */
    {
        static const int bad[] = {0, NPARTS};
        cr_assert_eq(parti_consumer_update(c, "w1", bad, 2), PARTI_ERR_INVALID_ARGUMENT);
    }
}

/* 3 */
Test(consumer, worker_id_is_fixed_after_the_first_apply_unless_allowed) {
    static const int a[] = {1};
    char got[64];
    update("w1", a, 1);
    settle();
    cr_assert_eq(parti_consumer_update(c, "w2", a, 1), PARTI_ERR_WORKER_ID_IMMUTABLE);
    settle();
    cr_assert_eq(server_filters("parti-w2", got, sizeof got), PARTI_ERR_CONSUMER_NOT_FOUND);
    cr_assert_eq(parti_consumer_update(c, "", a, 1), PARTI_ERR_INVALID_WORKER_ID);

    parti_consumer_destroy(c);
    opts.allow_worker_id_change = 1;
    make_consumer();
    update("w1", a, 1);
    settle();
    update("w2", a, 1); /* same subjects, other ID: not a no-op */
    settle();
    expect_filters("parti-w2", "orders.p1");
    expect_filters("parti-w1", "orders.p1"); /* never deleted */
    cr_assert_str_eq(parti_consumer_durable(c), "parti-w2");
}

Test(consumer, before_the_first_apply_the_worker_id_may_still_change) {
    static const int a[] = {1};
    char got[64];
    update("w1", a, 1);
    update("w2", a, 1);
    settle();
    expect_filters("parti-w2", "orders.p1");
    cr_assert_eq(server_filters("parti-w1", got, sizeof got), PARTI_ERR_CONSUMER_NOT_FOUND);
}

/* 4 and the scenario */
Test(consumer, create_grow_shrink_pause_resume) {
    static const int one[] = {0}, three[] = {0, 1, 2}, two[] = {1, 2};
    const parti_metrics *m = parti_consumer_metrics(c);
    int before;
    update("w1", one, 1);
    settle();
    expect_filters("parti-w1", "orders.p0");
    update("w1", three, 3);
    settle();
    expect_filters("parti-w1", "orders.p0,orders.p1,orders.p2");
    update("w1", two, 2);
    settle();
    expect_filters("parti-w1", "orders.p1,orders.p2");
    publish("orders.p1");
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 1);

    /* empty: paused, consumer and its last filter kept, nothing pulled */
    update("w1", NULL, 0);
    settle();
    cr_assert(parti_consumer_is_paused(c));
    cr_assert_eq(parti_consumer_subjects(c)->count, 0);
    expect_filters("parti-w1", "orders.p1,orders.p2");
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_PAUSED), 1);
    publish("orders.p2");
    before = count_log("fetch_next", NULL);
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_OK);
    parti_fake_advance(w, 10000);
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 1);
    cr_assert_eq(count_log("fetch_next", NULL), before);
    /* an empty update while paused is a no-op */
    update("w1", NULL, 0);
    cr_assert_eq(m->consumer_updates_noop.value, 1);

    /* grow again: resumed, and the message that waited is delivered */
    update("w1", three, 3);
    settle();
    cr_assert(!parti_consumer_is_paused(c));
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_RESUMED), 1);
    expect_filters("parti-w1", "orders.p0,orders.p1,orders.p2");
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 2);
    cr_assert_eq(m->consumer_updates_success.value, 4);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_CREATED), 1);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_UPDATED), 3);
}

Test(consumer, resume_with_the_same_subjects_needs_no_server_call) {
    static const int two[] = {1, 2};
    update("w1", two, 2);
    settle();
    update("w1", NULL, 0);
    settle();
    update("w1", two, 2);
    settle();
    cr_assert(!parti_consumer_is_paused(c));
    cr_assert_eq(count_log("consumer_upsert", NULL), 1);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_RESUMED), 1);
}

/* 5 */
Test(consumer, a_burst_of_updates_within_the_window_is_one_server_update) {
    const parti_metrics *m = parti_consumer_metrics(c);
    int i;
    for (i = 0; i < 100; i++) {
        int p[2];
        p[0] = i % NPARTS;
        p[1] = (i * 7 + 3) % NPARTS;
        update("w1", p, 2);
        if (i % 10 == 9) parti_fake_advance(w, 7); /* 63 ms in all: inside the 75 ms window */
        cr_assert_eq(parti_consumer_poll(c, 0), PARTI_ERR_OK);
    }
    cr_assert_eq(count_log("consumer_upsert", NULL), 0);
    settle();
    cr_assert_eq(count_log("consumer_upsert", NULL), 1);
    cr_assert_eq(m->consumer_updates_coalesced.value, 99);
    cr_assert_eq(m->consumer_updates_success.value, 1);
    expect_filters("parti-w1", "orders.p6,orders.p9"); /* the last one wins: 99 % 10, (99 * 7 + 3) % 10 */
}

Test(consumer, no_coalesce_applies_at_the_next_poll) {
    static const int a[] = {4};
    parti_consumer_destroy(c);
    opts.no_coalesce = 1;
    make_consumer();
    update("w1", a, 1);
    cr_assert_eq(parti_consumer_poll(c, 0), PARTI_ERR_OK);
    expect_filters("parti-w1", "orders.p4");
    cr_assert_float_eq(parti_consumer_metrics(c)->consumer_update_latency.sum, 0.0, 1e-9);
}

/* 6 */
Test(consumer, failed_updates_are_retried_with_backoff_until_they_succeed) {
    static const int a[] = {1, 2};
    const parti_metrics *m = parti_consumer_metrics(c);
    uint64_t t0, last = 0;
    int polls = 0;
    cr_assert_eq(parti_fake_fail_next(w, NULL, "consumer_upsert", 4, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    update("w1", a, 2);
    t0 = parti_fake_now(w);
    while (m->consumer_updates_success.value == 0 && polls < 100000) {
        uint64_t f = m->consumer_updates_failure.value;
        parti_fake_advance(w, 1);
        cr_assert_eq(parti_consumer_poll(c, 0), PARTI_ERR_OK);
        if (m->consumer_updates_failure.value != f) last = parti_fake_now(w);
        polls++;
    }
    cr_assert_eq(m->consumer_updates_failure.value, 4);
    cr_assert_eq(m->consumer_updates_success.value, 1);
    expect_filters("parti-w1", "orders.p1,orders.p2");
    cr_assert_eq(count_log("consumer_upsert", "TIMEOUT"), 4);
    /* 4 retries, each >= base (100 ms) after the previous one */
    cr_assert_geq(parti_fake_now(w) - t0, 75 + 4 * 100);
    cr_assert_geq(parti_fake_now(w) - last, 100);
    cr_assert_eq(parti_consumer_last_error(c), PARTI_ERR_TIMEOUT);
    printf("consumer retries: 4 failures, applied after %llu virtual ms\n",
           (unsigned long long)(parti_fake_now(w) - t0));
}

Test(consumer, an_exhausted_retry_budget_reports_unhealthy_and_keeps_trying) {
    static const int a[] = {1};
    int i;
    parti_consumer_destroy(c);
    cfg.backoff_max_retries = 2;
    make_consumer();
    cr_assert_eq(parti_fake_fail_next(w, NULL, "consumer_upsert", 3, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    update("w1", a, 1);
    for (i = 0; i < 30000 && parti_consumer_metrics(c)->consumer_updates_success.value == 0; i++) {
        parti_fake_advance(w, 1);
        parti_consumer_poll(c, 0);
    }
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_UNHEALTHY), 1);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_HEALTHY), 1);
    expect_filters("parti-w1", "orders.p1");
}

/* 7 */
static uint64_t recreated_at(void) {
    int i;
    for (i = 0; i < ev.n; i++)
        if (ev.kinds[i] == PARTI_EVENT_CONSUMER_RECREATED) return ev.at[i];
    return 0;
}

Test(consumer, a_consumer_deleted_during_a_fetch_is_recreated_and_pulling_resumes) {
    static const int a[] = {1, 2};
    update("w1", a, 2);
    settle();
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK); /* a fetch is now pending */
    cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
    publish("orders.p2");
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_RECREATED), 1);
    expect_filters("parti-w1", "orders.p1,orders.p2");
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 1);
}

Test(consumer, a_consumer_deleted_while_idle_is_found_by_the_periodic_check) {
    static const int a[] = {3};
    update("w1", a, 1);
    settle();
    update("w1", NULL, 0); /* paused: no fetch pending */
    settle();
    cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
    parti_fake_advance(w, 5000);
    cr_assert_eq(parti_consumer_poll(c, 0), PARTI_ERR_OK);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    expect_filters("parti-w1", "orders.p3"); /* the last applied filter, never an empty one */
    cr_assert(parti_consumer_is_paused(c));
}

Test(consumer, recovery_time_over_twenty_seeds) {
    uint64_t times[20], seed;
    int i, j;
    teardown();
    for (seed = 1; seed <= 20; seed++) {
        static const int a[] = {0, 1, 2};
        uint64_t rng = seed * 7919, t_del;
        int fails = (int)(parti_rng_splitmix64(&rng) % 4), polls;
        uint32_t offset = (uint32_t)(parti_rng_splitmix64(&rng) % 3000);
        make_world(seed);
        make_consumer();
        update("w1", a, 3);
        settle();
        for (i = 0; i < 20; i++) publish(i % 2 ? "orders.p1" : "orders.p0");
        while (offset > 0) { /* running normally for a seed-dependent while */
            uint32_t step = offset < 50 ? offset : 50;
            parti_consumer_poll(c, step);
            offset -= step;
        }
        cr_assert_eq(parti_fake_fail_next(w, &t, "consumer_upsert", fails, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
        cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
        t_del = parti_fake_now(w);
        for (polls = 0; polls < 10000 && !recreated_at(); polls++) {
            parti_consumer_poll(c, 50);
            if (!recreated_at()) parti_fake_advance(w, 1); /* time passes also when the poll cannot wait */
        }
        cr_assert(recreated_at() != 0, "seed %llu: not recreated", (unsigned long long)seed);
        times[seed - 1] = recreated_at() - t_del;
        cr_assert_eq(parti_consumer_metrics(c)->consumer_recreation_failures.value, (uint64_t)fails);
        expect_filters("parti-w1", "orders.p0,orders.p1,orders.p2");
        for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
        cr_assert_eq(hd.handled, 20, "seed %llu: handled %d", (unsigned long long)seed, hd.handled); /* each once */
        teardown();
    }
    for (i = 1; i < 20; i++) /* insertion sort */
        for (j = i; j > 0 && times[j - 1] > times[j]; j--) {
            uint64_t x = times[j];
            times[j] = times[j - 1];
            times[j - 1] = x;
        }
    printf("consumer recovery after external delete, 20 seeds: p50 %llu ms, p95 %llu ms, max %llu ms (virtual)\n",
           (unsigned long long)times[9], (unsigned long long)times[18], (unsigned long long)times[19]);
    cr_assert_lt(times[18], 5000);
    make_world(1); /* for the suite's teardown */
    make_consumer();
}

/* 8 */
Test(consumer, messages_go_to_the_handler_and_are_settled_by_its_verdict) {
    static const int a[] = {0};
    const parti_metrics *m = parti_consumer_metrics(c);
    parti_consumer_info ci;
    update("w1", a, 1);
    settle();
    publish("orders.p0");
    publish("orders.p1"); /* not ours */
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 1);
    cr_assert_eq(m->consumer_messages_ack.value, 1);

    /* NAK with a delay: redelivered only after it */
    hd.verdict = PARTI_NAK;
    hd.nak_delay = 2000;
    publish("orders.p0");
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 2);
    hd.verdict = PARTI_TERM;
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 2);
    cr_assert_eq(parti_consumer_poll(c, 1500), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 3);
    cr_assert_eq(hd.deliveries[2], 2);
    cr_assert_eq(m->consumer_messages_nak.value, 1);
    cr_assert_eq(m->consumer_messages_term.value, 1);

    /* IN_PROGRESS keeps it pending; ACK then settles it */
    hd.verdict = PARTI_IN_PROGRESS;
    publish("orders.p0");
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(m->consumer_messages_in_progress.value, 1);
    cr_assert_eq(ob.vt->consumer_info(ob.self, "orders", "parti-w1", &ci, 1000), PARTI_ERR_OK);
    cr_assert_eq(ci.num_ack_pending, 1);
    parti_consumer_info_free(&ci);
    hd.verdict = PARTI_ACK;
    cr_assert_eq(parti_consumer_poll(c, 31000), PARTI_ERR_OK); /* ack_wait 30 s: redelivered */
    cr_assert_eq(m->consumer_messages_ack.value, 2);
    cr_assert_eq(ob.vt->consumer_info(ob.self, "orders", "parti-w1", &ci, 1000), PARTI_ERR_OK);
    cr_assert_eq(ci.num_ack_pending, 0);
    parti_consumer_info_free(&ci);
    cr_assert_eq(hd.handled, 5);
}

Test(consumer, fetch_uses_the_configured_tuning) {
    static const int a[] = {0};
    parti_consumer_destroy(c);
    cfg.fetch_batch = 7;
    cfg.fetch_expires_ms = 900;
    cfg.fetch_heartbeat_ms = 300;
    make_consumer();
    update("w1", a, 1);
    settle();
    cr_assert_eq(parti_consumer_poll(c, 10), PARTI_ERR_OK);
    cr_assert_eq(count_log("fetch_start", NULL), 1);
    {
        size_t len;
        cr_assert(strstr(parti_fake_log(w, &len), "fetch_start orders/parti-w1 batch=7 expires=900") != NULL);
    }
}

Test(consumer, poll_stays_within_its_timeout) {
    static const int a[] = {0};
    uint64_t t0;
    update("w1", a, 1);
    settle();
    t0 = parti_fake_now(w);
    cr_assert_eq(parti_consumer_poll(c, 250), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_now(w), t0 + 250);
    t0 = parti_fake_now(w);
    cr_assert_eq(parti_consumer_poll(c, 12000), PARTI_ERR_OK); /* across fetch expiries */
    cr_assert_eq(parti_fake_now(w), t0 + 12000);
}

Test(consumer, create_validates_config_and_options) {
    parti_consumer *x = NULL;
    char msg[256];
    parti_config bad = cfg;
    parti_consumer_options o = opts;
    bad.max_subjects = -3;
    cr_assert_eq(parti_consumer_create(&x, &t, &bad, &opts, msg, sizeof msg), PARTI_ERR_INVALID_CONFIG);
    cr_assert(strstr(msg, "max_subjects") != NULL);
    cr_assert_null(x);
    o.on_message = NULL;
    cr_assert_eq(parti_consumer_create(&x, &t, &cfg, &o, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_consumer_create(NULL, &t, &cfg, &opts, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_consumer_poll(NULL, 0), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_consumer_update(NULL, "w1", NULL, 0), PARTI_ERR_INVALID_ARGUMENT);
    parti_consumer_destroy(NULL);
}

Test(consumer, the_config_is_copied) {
    static const int a[] = {1};
    char stream[16] = "orders", tmpl[32] = "orders.{0}";
    char k1[8] = "p1";
    const char *kk[1];
    parti_partition pp[2];
    parti_config mine = cfg;
    parti_consumer *x;
    char msg[256];
    kk[0] = k1;
    pp[0] = parts[0];
    pp[1].keys = kk;
    pp[1].key_count = 1;
    pp[1].weight = 1;
    mine.stream = stream;
    mine.subject_template = tmpl;
    mine.partitions = pp;
    mine.partition_count = 2;
    cr_assert_eq(parti_consumer_create(&x, &t, &mine, &opts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    memset(stream, 'x', sizeof stream - 1);
    memset(tmpl, 'x', sizeof tmpl - 1);
    memset(k1, 'x', sizeof k1 - 1);
    memset(pp, 0, sizeof pp);
    cr_assert_eq(parti_consumer_update(x, "w9", a, 1), PARTI_ERR_OK);
    parti_fake_advance(w, 75);
    parti_consumer_poll(x, 0);
    expect_filters("parti-w9", "orders.p1");
    parti_consumer_destroy(x);
}

/* Verdict by subject: orders.p1 always fails, orders.p2 is poison. */
static parti_verdict dlq_handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    hd.handled++;
    if (strcmp(m->subject, "orders.p1") == 0) {
        if (hd.handled < 1024) hd.deliveries[hd.handled] = m->delivery_count;
        return PARTI_NAK;
    }
    return strcmp(m->subject, "orders.p2") == 0 ? PARTI_TERM : PARTI_ACK;
}

TestSuite(consumer_dead_letter, .fini = teardown);

Test(consumer_dead_letter, failed_and_terminated_messages_go_to_the_dead_letter_subject_once) {
    static const char *const dlq_subs[] = {"dlq.>"};
    static const char *const dlq_filter[] = {"dlq.orders"};
    parti_stream_config sc;
    parti_consumer_config dc;
    parti_fetch_opts fo = {10, 0, 1000, 0};
    parti_header h = {"x-correlation-id", "c-42"};
    parti_pub_ack pa;
    parti_msg m;
    char msg[256];
    int mine[] = {1, 2, 3}, i, got = 0, saw_fail = 0, saw_term = 0, fails = 0;
    make_world(7);
    memset(&sc, 0, sizeof sc);
    sc.name = "DLQ";
    sc.subjects = dlq_subs;
    sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
    cfg.max_deliver = 3;
    cfg.ack_wait_ms = 1000;
    opts.on_message = dlq_handler;
    opts.dead_letter_subject = "dlq.orders";
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &opts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_consumer_update(c, "w-1", mine, 3), PARTI_ERR_OK);
    parti_fake_advance(w, 100); /* past the coalescing window */
    parti_consumer_poll(c, 200);
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", &h, 1, "bad", 3, &pa, 1000), PARTI_ERR_OK);
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p2", NULL, 0, "poison", 6, &pa, 1000), PARTI_ERR_OK);
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p3", NULL, 0, "fine", 4, &pa, 1000), PARTI_ERR_OK);
    for (i = 0; i < 100; i++) { /* 50 virtual seconds: many ack_waits */
        parti_consumer_poll(c, 500);
        parti_fake_advance(w, 100);
    }
    cr_assert_eq(parti_consumer_metrics(c)->consumer_dead_letters.value, 2, "handled %d, last error %s", hd.handled,
                 parti_error_name(parti_consumer_last_error(c)));
    /* orders.p1 was delivered exactly max_deliver times, then dead-lettered and acked */
    for (i = 1; i < hd.handled && i < 1024; i++) fails += hd.deliveries[i] != 0;
    cr_assert_eq(fails, 3, "orders.p1 handled %d times", fails);
    /* read the dead letters back */
    memset(&dc, 0, sizeof dc);
    dc.stream = "DLQ";
    dc.durable = "reader";
    dc.filter_subjects = dlq_filter;
    dc.filter_count = 1;
    cr_assert_eq(ob.vt->consumer_upsert(ob.self, &dc, 1000), PARTI_ERR_OK);
    cr_assert_eq(ob.vt->fetch_start(ob.self, "DLQ", "reader", &fo, 1000), PARTI_ERR_OK);
    while (ob.vt->fetch_next(ob.self, "DLQ", "reader", &m, 100) == PARTI_ERR_OK) {
        const char *reason = parti_msg_header(&m, "Parti-Dead-Letter-Reason");
        got++;
        cr_assert_not_null(reason);
        cr_assert_str_eq(parti_msg_header(&m, "Parti-Original-Stream"), "orders");
        cr_assert_not_null(parti_msg_header(&m, "Parti-Original-Sequence"));
        cr_assert(strncmp(parti_msg_header(&m, "Nats-Msg-Id"), "parti-dlq-orders-", 17) == 0);
        if (strcmp(reason, "max_deliver") == 0) {
            saw_fail = 1;
            cr_assert_str_eq(parti_msg_header(&m, "Parti-Original-Subject"), "orders.p1");
            cr_assert_str_eq(parti_msg_header(&m, "Parti-Delivery-Count"), "3");
            cr_assert_str_eq(parti_msg_header(&m, "x-correlation-id"), "c-42");
            cr_assert(m.len == 3 && memcmp(m.data, "bad", 3) == 0);
        } else {
            cr_assert_str_eq(reason, "terminated");
            saw_term = 1;
            cr_assert_str_eq(parti_msg_header(&m, "Parti-Original-Subject"), "orders.p2");
        }
        ob.vt->ack(ob.self, &m, PARTI_ACK_ACK, 0, 1000);
        ob.vt->msg_release(ob.self, &m);
    }
    cr_assert_eq(got, 2);
    cr_assert(saw_fail && saw_term);
}

Test(consumer_dead_letter, a_retried_dead_letter_publish_is_deduplicated) {
    static const char *const dlq_subs[] = {"dlq.>"};
    parti_stream_config sc;
    parti_stream_info si;
    parti_pub_ack pa;
    parti_header earlier = {"Nats-Msg-Id", "parti-dlq-orders-1"};
    char msg[256];
    int mine[] = {2};
    make_world(3);
    memset(&sc, 0, sizeof sc);
    sc.name = "DLQ";
    sc.subjects = dlq_subs;
    sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
    opts.on_message = dlq_handler;
    opts.dead_letter_subject = "dlq.orders";
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &opts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_consumer_update(c, "w-1", mine, 1), PARTI_ERR_OK);
    parti_fake_advance(w, 100);
    parti_consumer_poll(c, 200);
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p2", NULL, 0, "poison", 6, &pa, 1000), PARTI_ERR_OK);
    cr_assert_eq(pa.stream_seq, 1);
    /* an earlier attempt that reached the server but whose ack was lost */
    cr_assert_eq(ob.vt->publish(ob.self, "dlq.orders", &earlier, 1, "poison", 6, &pa, 1000), PARTI_ERR_OK);
    parti_consumer_poll(c, 2000);
    cr_assert_eq(hd.handled, 1);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_dead_letters.value, 1);
    cr_assert_eq(ob.vt->stream_info(ob.self, "DLQ", &si, 1000), PARTI_ERR_OK);
    cr_assert_eq(si.messages, 1, "%llu dead letters for one message", (unsigned long long)si.messages);
    parti_stream_info_free(&si);
}

Test(consumer_dead_letter, a_bad_dead_letter_subject_is_refused_at_create) {
    char msg[256];
    make_world(1);
    opts.dead_letter_subject = "dlq.*";
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &opts, msg, sizeof msg), PARTI_ERR_INVALID_SUBJECT);
    cr_assert(strstr(msg, "dead_letter_subject"), "%s", msg);
    cr_assert_null(c);
}

Test(consumer, health_follows_apply_failure_and_recovery) {
    static const int a[] = {1};
    parti_health h;
    int i, saw_degraded = 0;
    uint64_t failed_at = 0;
    parti_consumer_destroy(c);
    cfg.backoff_max_retries = 2;
    make_consumer();
    cr_assert_eq(parti_consumer_health(c, &h), PARTI_ERR_OK);
    cr_assert(h.live && !h.ready && !h.degraded, "before the first apply: live, not ready");
    cr_assert_eq(h.last_error, PARTI_ERR_OK);
    cr_assert_eq(h.last_error_ms, 0);
    cr_assert_eq(parti_fake_fail_next(w, NULL, "consumer_upsert", 3, PARTI_ERR_NO_RESPONDERS), PARTI_ERR_OK);
    update("w1", a, 1);
    for (i = 0; i < 30000 && parti_consumer_metrics(c)->consumer_updates_success.value == 0; i++) {
        parti_fake_advance(w, 1);
        parti_consumer_poll(c, 0);
        parti_consumer_health(c, &h);
        if (h.degraded && !saw_degraded) {
            saw_degraded = 1;
            cr_assert(!h.ready);
            /* the budget ran out; the message keeps the cause */
            cr_assert_eq(h.last_error, PARTI_ERR_RETRY_BUDGET_EXHAUSTED, "%s", parti_error_name(h.last_error));
            cr_assert_eq(h.last_error_category, PARTI_CAT_FATAL);
            cr_assert(strstr(h.last_error_message, "no responders"), "%s", h.last_error_message);
            failed_at = h.last_error_ms;
            cr_assert(failed_at > 0 && failed_at <= t.vt->now_ms(t.self));
        }
    }
    cr_assert(saw_degraded, "the exhausted retry budget never showed as degraded");
    cr_assert_eq(parti_consumer_health(c, &h), PARTI_ERR_OK);
    cr_assert(h.live && h.ready && !h.degraded, "after recovery: ready again");
    cr_assert_geq(h.last_error_ms, failed_at, "the last error and its time stay for diagnosis");
    /* deleted behind its back: degraded until recreated */
    cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
    for (i = 0; i < 20 && !(parti_consumer_health(c, &h), h.degraded); i++) {
        parti_fake_advance(w, 1000);
        parti_consumer_poll(c, 0);
    }
    cr_assert(h.degraded && !h.ready, "a missing consumer never showed as degraded");
    for (i = 0; i < 20 && !(parti_consumer_health(c, &h), h.ready); i++) {
        parti_fake_advance(w, 1000);
        parti_consumer_poll(c, 0);
    }
    cr_assert(h.ready && !h.degraded, "not ready again after the recreation");
    cr_assert_geq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    cr_assert_eq(parti_consumer_health(NULL, &h), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_consumer_health(c, NULL), PARTI_ERR_INVALID_ARGUMENT);
}

/* ---- escalation, restarts, a lost stream, retry spreading ------------------ */

static int health_ready(void) {
    parti_health h;
    cr_assert_eq(parti_consumer_health(c, &h), PARTI_ERR_OK);
    return h.ready && !h.degraded;
}

/* Polls in 100 ms steps until cond holds; gives up after max_ms of virtual time. */
static int poll_until(int (*cond)(void), uint64_t max_ms) {
    uint64_t t0 = parti_fake_now(w);
    while (!cond()) {
        if (parti_fake_now(w) - t0 > max_ms) return 0;
        cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    }
    return 1;
}

static int is_unhealthy(void) { return count_events(PARTI_EVENT_CONSUMER_UNHEALTHY) > 0; }
static int handled_two(void) { return hd.handled >= 2; }
static int handled_five(void) { return hd.handled >= 5; }
static int handled_three(void) { return hd.handled >= 3; }
static int was_recreated(void) { return parti_consumer_metrics(c)->consumer_recreations.value > 0; }

Test(consumer, heartbeat_loss_escalates_to_a_refresh_and_recovers) {
    static const int a[] = {0, 1};
    uint64_t seed;
    teardown();
    for (seed = 1; seed <= 10; seed++) {
        const parti_metrics *m;
        parti_health h;
        make_world(seed);
        make_consumer();
        update("w1", a, 2);
        settle();
        m = parti_consumer_metrics(c);
        parti_fake_drop_heartbeats(w, &t, 1);
        cr_assert(poll_until(is_unhealthy, 60000), "seed %llu: no escalation", (unsigned long long)seed);
        /* three missed heartbeats (2 x 1 s each, plus backoff) fit in the 30 s window */
        cr_assert_eq(m->consumer_pull_restarts.value, 3, "seed %llu", (unsigned long long)seed);
        cr_assert_eq(parti_consumer_health(c, &h), PARTI_ERR_OK);
        cr_assert(h.degraded && !h.ready);
        cr_assert_eq(h.last_error, PARTI_ERR_MISSED_HEARTBEAT);
        parti_consumer_poll(c, 100); /* the refresh: info, then the same filter again */
        cr_assert_eq(m->consumer_refreshes.value, 1);
        cr_assert_eq(m->consumer_recreations.value, 0);
        expect_filters("parti-w1", "orders.p0,orders.p1");
        /* heartbeats come back: the next good pull makes it healthy */
        parti_fake_drop_heartbeats(w, &t, 0);
        publish("orders.p0");
        publish("orders.p1");
        cr_assert(poll_until(handled_two, 30000), "seed %llu: handled %d", (unsigned long long)seed, hd.handled);
        cr_assert(poll_until(health_ready, 10000));
        cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_HEALTHY), 1);
        cr_assert_eq(m->consumer_pull_consecutive_failures.value, 0);
        teardown();
    }
    make_world(1);
    make_consumer();
}

Test(consumer, heartbeat_loss_missing_the_consumer_recreates_it) {
    static const int a[] = {3};
    update("w1", a, 1);
    settle();
    parti_fake_drop_heartbeats(w, &t, 1);
    cr_assert(poll_until(is_unhealthy, 60000));
    cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
    parti_fake_drop_heartbeats(w, &t, 0);
    cr_assert_eq(parti_consumer_poll(c, 100), PARTI_ERR_OK);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_refreshes.value, 1);
    expect_filters("parti-w1", "orders.p3");
}

Test(consumer, failures_spread_wider_than_the_window_do_not_escalate) {
    static const int a[] = {0};
    int i;
    teardown();
    make_world(1);
    opts.failure_window_ms = 1500; /* three failures take longer than this */
    make_consumer();
    update("w1", a, 1);
    settle();
    parti_fake_drop_heartbeats(w, &t, 1);
    for (i = 0; i < 600; i++) parti_consumer_poll(c, 100); /* 60 s of missed heartbeats */
    cr_assert_geq(parti_consumer_metrics(c)->consumer_pull_restarts.value, 10);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_UNHEALTHY), 0);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_refreshes.value, 0);
}

Test(consumer, a_server_restart_ends_the_pull_and_nothing_is_lost) {
    static const int a[] = {0, 1};
    uint64_t seed;
    teardown();
    for (seed = 1; seed <= 10; seed++) {
        make_world(seed);
        make_consumer();
        update("w1", a, 2);
        settle();
        publish("orders.p0");
        publish("orders.p1");
        cr_assert(poll_until(handled_two, 10000));
        cr_assert_eq(parti_consumer_poll(c, 10), PARTI_ERR_OK); /* a pull is pending */
        parti_fake_restart(w);
        publish("orders.p0");
        publish("orders.p1");
        publish("orders.p0");
        cr_assert(poll_until(handled_five, 30000), "seed %llu: handled %d", (unsigned long long)seed, hd.handled);
        cr_assert_eq(hd.handled, 5); /* each once */
        cr_assert_geq(parti_consumer_metrics(c)->consumer_pull_restarts.value, 1);
        cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 0);
        cr_assert(health_ready());
        teardown();
    }
    make_world(1);
    make_consumer();
}

Test(consumer, a_deleted_and_recreated_stream_is_consumed_from_its_start) {
    static const char *const subs[] = {"orders.>"};
    static const int a[] = {0, 1};
    parti_stream_config sc;
    parti_health h;
    int i;
    update("w1", a, 2);
    settle();
    for (i = 0; i < 5; i++) publish(i % 2 ? "orders.p1" : "orders.p0");
    cr_assert(poll_until(handled_five, 10000));
    parti_fake_advance(w, 6000);
    parti_consumer_poll(c, 5000); /* an info check has seen the ack floor at 5 */
    cr_assert_eq(parti_fake_delete_stream(w, "orders"), PARTI_ERR_OK);
    for (i = 0; i < 100; i++) parti_consumer_poll(c, 100); /* 10 s without a stream */
    cr_assert_eq(parti_consumer_health(c, &h), PARTI_ERR_OK);
    cr_assert(h.degraded && !h.ready);
    cr_assert_eq(h.last_error, PARTI_ERR_STREAM_NOT_FOUND);
    cr_assert_str_eq(h.last_error_message, "recreating the consumer: stream not found");
    cr_assert_geq(parti_consumer_metrics(c)->consumer_recreation_failures.value, 3); /* retried, with backoff */
    cr_assert_leq(parti_consumer_metrics(c)->consumer_recreation_failures.value, 20);
    /* the stream comes back (new sequences from 1): everything in it is consumed */
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
    hd.handled = 0;
    publish("orders.p0");
    publish("orders.p1");
    cr_assert(poll_until(was_recreated, 30000));
    cr_assert(poll_until(handled_two, 10000), "handled %d of the new stream", hd.handled);
    cr_assert_eq(hd.handled, 2);
    cr_assert_eq(hd.seqs[0] + hd.seqs[1], 3); /* sequences 1 and 2 */
    cr_assert(poll_until(health_ready, 10000));
}

/* 50 workers whose first upserts all fail at the same moment: jitter spreads
 * their retries instead of sending them in lockstep. */
static uint64_t spread_created[50];
static void spread_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    (void)err;
    (void)detail;
    if (kind == PARTI_EVENT_CONSUMER_CREATED) spread_created[(intptr_t)user] = parti_fake_now(w);
}

Test(consumer, retries_of_fifty_workers_spread_out) {
    uint64_t seed;
    teardown();
    for (seed = 1; seed <= 5; seed++) {
        parti_transport ts[50];
        parti_consumer *cs[50];
        uint64_t t0, lo = UINT64_MAX, hi = 0;
        int i, j, distinct = 0, done = 0, step;
        make_world(seed);
        memset(spread_created, 0, sizeof spread_created);
        for (i = 0; i < 50; i++) {
            char name[24], id[24], msg[256];
            static const int a[] = {0};
            snprintf(name, sizeof name, "w%d", i);
            snprintf(id, sizeof id, "worker-%d", i);
            cr_assert_eq(parti_fake_connect(w, name, &ts[i]), PARTI_ERR_OK);
            opts.on_event = spread_event;
            opts.user = (void *)(intptr_t)i;
            opts.no_coalesce = 1;
            cr_assert_eq(parti_consumer_create(&cs[i], &ts[i], &cfg, &opts, msg, sizeof msg), PARTI_ERR_OK);
            cr_assert_eq(parti_consumer_update(cs[i], id, a, 1), PARTI_ERR_OK);
            /* the control plane is down for everyone: three failures each */
            cr_assert_eq(parti_fake_fail_next(w, &ts[i], "consumer_upsert", 3, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
        }
        t0 = parti_fake_now(w);
        for (step = 0; step < 20000 && done < 50; step++) { /* 1 ms steps, all workers polled in each */
            for (i = 0; i < 50; i++)
                if (!spread_created[i]) {
                    parti_consumer_poll(cs[i], 0);
                    done += spread_created[i] != 0;
                }
            parti_fake_advance(w, 1);
        }
        cr_assert_eq(done, 50, "seed %llu: %d of 50 created", (unsigned long long)seed, done);
        for (i = 0; i < 50; i++) {
            int seen = 0;
            for (j = 0; j < i; j++) seen |= spread_created[j] == spread_created[i];
            distinct += !seen;
            if (spread_created[i] < lo) lo = spread_created[i];
            if (spread_created[i] > hi) hi = spread_created[i];
        }
        /* in lockstep all 50 would succeed at one moment; jittered, they land
         * at many different milliseconds over hundreds of them */
        cr_assert_geq(distinct, 35, "seed %llu: only %d distinct retry times", (unsigned long long)seed, distinct);
        cr_assert_geq(hi - lo, 300, "seed %llu: retries within %llu ms", (unsigned long long)seed,
                      (unsigned long long)(hi - lo));
        if (seed == 1)
            printf("retry spreading, 50 workers x 3 failures: %d distinct success times over %llu ms (from t0+%llu)\n",
                   distinct, (unsigned long long)(hi - lo), (unsigned long long)(lo - t0));
        for (i = 0; i < 50; i++) {
            parti_consumer_destroy(cs[i]);
            parti_fake_disconnect(&ts[i]);
        }
        opts.on_event = on_event;
        opts.user = NULL;
        opts.no_coalesce = 0;
        teardown();
    }
    make_world(1);
    make_consumer();
}

Test(consumer, poll_waits_instead_of_spinning_while_paused_or_between_retries) {
    static const int a[] = {0}, b[] = {1};
    uint64_t t0;
    int before;
    update("w1", a, 1);
    settle();
    update("w1", NULL, 0);
    settle();
    t0 = parti_fake_now(w);
    before = count_log("consumer_info", NULL);
    cr_assert_eq(parti_consumer_poll(c, 60000), PARTI_ERR_OK); /* one call, a virtual minute */
    cr_assert_eq(parti_fake_now(w), t0 + 60000);
    /* only the periodic existence checks ran: one per info_interval_ms */
    cr_assert_eq(count_log("consumer_info", NULL) - before, 12, "%d info checks", count_log("consumer_info", NULL) - before);
    /* between retries too: the call sleeps to the next retry, it does not spin */
    cr_assert_eq(parti_fake_fail_next(w, &t, "consumer_upsert", 2, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    update("w1", b, 1);
    t0 = parti_fake_now(w);
    cr_assert_eq(parti_consumer_poll(c, 5000), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_now(w), t0 + 5000);
    cr_assert_eq(count_log("consumer_upsert", NULL), 4); /* first apply, two failures, success */
    expect_filters("parti-w1", "orders.p1");
}

/* Handoff: a gained partition's backlog behind the consumer's position is
 * processed (the server never rewinds a grown filter), and what this worker
 * already acked is skipped, not handled twice. */
Test(consumer, a_gained_partition_resumes_from_its_resume_point) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2];
    int i;
    update("w1", a, 1);
    settle();
    for (i = 0; i < 6; i++) publish(i % 2 ? "orders.p1" : "orders.p0"); /* seqs 1..6: p0 odd, p1 even */
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 3); /* p0 only */
    parti_fake_advance(w, 6000);
    parti_consumer_poll(c, 100);
    /* p1 moves in; its previous owner had acked up to 2: resume at 4 (seq 4 and 6 remain) */
    from[0] = 0;
    from[1] = 4;
    hd.handled = 0;
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 2, "handled %d", hd.handled);
    cr_assert_eq(hd.seqs[0], 4);
    cr_assert_eq(hd.seqs[1], 6);
    /* read from the stream (the catch-up), not by recreating the durable: p0 is not replayed */
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_reads.value, 2);
    cr_assert_eq(count_log("consumer_delete", NULL), 0);
    expect_filters("parti-w1", "orders.p0,orders.p1");
    /* new messages flow as usual, nothing skipped any more */
    publish("orders.p0");
    publish("orders.p1");
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 4);
}

/* A stream deleted and made again in the middle of a catch-up turn (here by
 * the handler of the turn's first message): what the turn reads is handed
 * over only after a look at the stream shows the one its positions count
 * in, so no message of the new stream is handled under the old positions
 * (it would be handled again, out of order, once the new stream is seen). */
static int swap_countdown, new_seen[2];
static parti_verdict swap_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    static const char *const subs[] = {"orders.>"};
    parti_verdict v = on_message(user, m, nak_delay_ms);
    if (m->len == 2 && m->data[0] == 'n') new_seen[m->data[1] - '1']++;
    if (swap_countdown > 0 && --swap_countdown == 0) {
        parti_stream_config sc;
        parti_pub_ack pa;
        memset(&sc, 0, sizeof sc);
        sc.name = "orders";
        sc.subjects = subs;
        sc.subject_count = 1;
        cr_assert_eq(parti_fake_delete_stream(w, "orders"), PARTI_ERR_OK);
        parti_fake_advance(w, 1);
        cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
        cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", NULL, 0, "n1", 2, &pa, 1000), PARTI_ERR_OK);
        cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", NULL, 0, "n2", 2, &pa, 1000), PARTI_ERR_OK);
    }
    return v;
}

static int saw_the_new_stream(void) { return new_seen[0] > 0 && new_seen[1] > 0; }

Test(consumer, a_stream_swapped_under_a_catch_up_turn_is_not_read_under_the_old_positions) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1};
    int i;
    parti_consumer_destroy(c);
    opts.on_message = swap_on_message;
    make_consumer();
    update("w1", a, 1);
    settle();
    for (i = 0; i < 4; i++) publish("orders.p1"); /* seqs 1..4, behind the filter */
    for (i = 0; i < 5; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 0);
    swap_countdown = 1; /* the first p1 message handled swaps the stream */
    new_seen[0] = new_seen[1] = 0;
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    cr_assert(poll_until(saw_the_new_stream, 30000), "the new stream's messages: %d, %d", new_seen[0], new_seen[1]);
    for (i = 0; i < 50; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(new_seen[0], 1, "n1 handled %d times", new_seen[0]);
    cr_assert_eq(new_seen[1], 1, "n2 handled %d times", new_seen[1]);
}

/* Head-of-line blocking: one durable delivers in stream order across its
 * whole filter, so a gained partition's messages newer than the catch-up's
 * end would wait behind the gainer's backlog on its other partitions. The
 * catch-up goes on reading the partition from the stream (its tail) until
 * the durable has delivered that far, then hands it back to the durable:
 * each message once, in order. */
static struct {
    int p0;             /* p0 messages handled */
    uint64_t p0_last;   /* in order */
    int p1;             /* p1 messages handled */
    uint64_t p1_seqs[16];
    int p0_when_late;   /* p0 messages handled when the late p1 one was */
    uint64_t late_seq;
} bl;
static parti_verdict backlog_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    if (strcmp(m->subject, "orders.p0") == 0) {
        cr_assert_gt(m->stream_seq, bl.p0_last, "p0 out of order: %llu after %llu", (unsigned long long)m->stream_seq,
                     (unsigned long long)bl.p0_last);
        bl.p0_last = m->stream_seq;
        bl.p0++;
        parti_fake_advance(w, 1); /* a millisecond of work per message */
    } else {
        cr_assert(bl.p1 < 16);
        bl.p1_seqs[bl.p1++] = m->stream_seq;
        if (m->stream_seq == bl.late_seq) bl.p0_when_late = bl.p0;
    }
    return PARTI_ACK;
}
static int late_handled(void) { return bl.late_seq && bl.p1 > 0 && bl.p1_seqs[bl.p1 - 1] >= bl.late_seq; }
static int backlog_done(void) { return bl.p0 >= 3000; }

Test(consumer, a_gained_partitions_new_messages_do_not_wait_behind_the_backlog_of_the_others) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1};
    parti_pub_ack pa;
    int i;
    parti_consumer_destroy(c);
    opts.on_message = backlog_on_message;
    make_consumer();
    memset(&bl, 0, sizeof bl);
    update("w1", a, 1);
    settle();
    for (i = 0; i < 3000; i++) publish("orders.p0"); /* seqs 1..3000: three seconds of work */
    publish("orders.p1");                            /* 3001, 3002: the catch-up reads them */
    publish("orders.p1");
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 10);
    cr_assert_lt(bl.p0, 1000, "the backlog is there: %d handled", bl.p0);
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 10);
    /* published after the catch-up read the stream's end: the durable has it
     * only behind the rest of p0's backlog */
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
    bl.late_seq = pa.stream_seq;
    cr_assert(poll_until(late_handled, 10000), "the late p1 message was not handled");
    cr_assert_lt(bl.p0_when_late, 2000, "it waited for %d of p0's 3000", bl.p0_when_late);
    cr_assert_geq(parti_consumer_metrics(c)->consumer_catch_up_tails.value, 1);
    /* the durable reaches the tail: p1 is its again, nothing twice, nothing out of order */
    cr_assert(poll_until(backlog_done, 20000), "p0's backlog: %d of 3000", bl.p0);
    publish("orders.p1");
    for (i = 0; i < 20; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails_ended.value, 1);
    cr_assert_eq(bl.p0, 3000);
    cr_assert_eq(bl.p1, 4, "p1 handled %d times", bl.p1);
    cr_assert_eq(bl.p1_seqs[0], 3001);
    cr_assert_eq(bl.p1_seqs[1], 3002);
    cr_assert_eq(bl.p1_seqs[2], bl.late_seq);
    cr_assert_eq(bl.p1_seqs[3], 3004);
}

/* The tail costs nothing on a quiet stream: the durable has nothing
 * pending, so it ends at once, and no partition is polled for ever. */
Test(consumer, a_catch_up_tail_ends_when_the_durable_has_nothing_pending) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1};
    int reads;
    update("w1", a, 1);
    settle();
    publish("orders.p1");
    publish("orders.p1");
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    cr_assert(poll_until(handled_two, 5000));
    reads = count_log("stream_get_next", NULL);
    cr_assert_eq(parti_consumer_poll(c, 60000), PARTI_ERR_OK); /* a quiet virtual minute */
    cr_assert_eq(count_log("stream_get_next", NULL), reads, "%d reads in a quiet minute",
                 count_log("stream_get_next", NULL) - reads);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails.value, 1);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails_ended.value, 1);
    publish("orders.p1"); /* the durable delivers it: once */
    cr_assert(poll_until(handled_three, 5000));
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_OK);
    cr_assert_eq(hd.handled, 3);
}

Test(consumer, a_resume_point_ahead_of_the_position_grows_in_place) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1000};
    update("w1", a, 1);
    settle();
    publish("orders.p0");
    parti_consumer_poll(c, 100);
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_reads.value, 0);
    cr_assert_eq(count_log("consumer_delete", NULL), 0);
    expect_filters("parti-w1", "orders.p0,orders.p1");
}

Test(consumer, a_recreated_consumer_does_not_replay_what_was_acked) {
    static const int a[] = {0, 1};
    int i;
    update("w1", a, 2);
    settle();
    for (i = 0; i < 5; i++) publish(i % 2 ? "orders.p1" : "orders.p0");
    for (i = 0; i < 5; i++) parti_consumer_poll(c, 100); /* handled; no info check has run yet */
    cr_assert_eq(hd.handled, 5);
    hd.verdict = PARTI_NAK; /* seq 6 stays unsettled: the floor stops before it */
    hd.nak_delay = 60000;
    publish("orders.p0");
    parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 6);
    hd.verdict = PARTI_ACK;
    cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
    publish("orders.p1"); /* seq 7 */
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    /* seq 6 again (never acked) and seq 7; nothing of 1..5 */
    cr_assert_eq(hd.handled, 8, "handled %d", hd.handled);
    cr_assert_eq(hd.seqs[6], 6);
    cr_assert_eq(hd.seqs[7], 7);
}

Test(consumer, a_restarted_worker_adopts_the_start_an_earlier_process_chose) {
    static const int a[] = {0};
    char msg[256];
    parti_health h;
    update("w1", a, 1);
    settle();
    publish("orders.p0");
    parti_consumer_poll(c, 200);
    cr_assert_eq(hd.handled, 1);
    cr_assert_eq(parti_fake_delete_consumer(w, "orders", "parti-w1"), PARTI_ERR_OK);
    parti_consumer_poll(c, 200); /* recreated "by start sequence" after its floor */
    cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    parti_consumer_destroy(c); /* the process restarts */
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &opts, msg, sizeof msg), PARTI_ERR_OK);
    update("w1", a, 1);
    settle();
    cr_assert_eq(parti_consumer_health(c, &h), PARTI_ERR_OK);
    cr_assert(h.ready && !h.degraded, "%s", parti_consumer_last_message(c));
    cr_assert_str_eq(parti_consumer_durable(c), "parti-w1");
    publish("orders.p0");
    parti_consumer_poll(c, 200);
    cr_assert_eq(hd.handled, 2);
}

Test(consumer, messages_of_a_wildcard_partition_are_not_counted_as_foreign) {
    static const int a[] = {0};
    cfg.subject_template = "orders.{0}.>";
    parti_consumer_destroy(c);
    make_consumer();
    update("w1", a, 1);
    settle();
    publish("orders.p0.x");
    publish("orders.p0.y.z");
    parti_consumer_poll(c, 200);
    cr_assert_eq(hd.handled, 2);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_foreign_redeliveries.value, 0);
}

Test(consumer, a_nak_of_a_partition_that_moves_away_is_still_retried_here) {
    static const int ab[] = {0, 1}, a[] = {0};
    int i;
    update("w1", ab, 2);
    settle();
    hd.verdict = PARTI_NAK;
    hd.nak_delay = 2000;
    publish("orders.p1");
    parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 1);
    hd.verdict = PARTI_ACK;
    update("w1", a, 1); /* p1 moves away; its NAKed message is held here, in order, and retried */
    settle();
    for (i = 0; i < 40; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 2, "nobody else would ever receive it: it must be processed here");
}

Test(consumer, past_the_retry_budget_retries_go_on_at_the_cap) {
    static const int a[] = {1};
    uint64_t t0;
    int i;
    parti_consumer_destroy(c);
    cfg.backoff_max_retries = 2;
    cfg.backoff_cap_ms = 10000;
    make_consumer();
    /* the first apply, 2 budgeted retries, then 3 more failures at the 10 s cap */
    cr_assert_eq(parti_fake_fail_next(w, NULL, "consumer_upsert", 6, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    update("w1", a, 1);
    t0 = parti_fake_now(w);
    for (i = 0; i < 600 && parti_consumer_metrics(c)->consumer_updates_success.value == 0; i++)
        parti_consumer_poll(c, 100);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_updates_success.value, 1);
    cr_assert_geq(parti_fake_now(w) - t0, 30000, "applied after %llu ms", (unsigned long long)(parti_fake_now(w) - t0));
    cr_assert_lt(parti_fake_now(w) - t0, 45000);
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_UNHEALTHY), 1);
}

Test(consumer, fail_fast_stops_at_the_first_failure_without_retrying) {
    static const int a[] = {0};
    parti_consumer_destroy(c);
    opts.fail_fast = 1;
    make_consumer();
    cr_assert_eq(parti_fake_fail_next(w, NULL, "consumer_upsert", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    update("w1", a, 1);
    parti_fake_advance(w, 75);
    cr_assert_eq(parti_consumer_poll(c, 1000), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_consumer_poll(c, 60000), PARTI_ERR_TIMEOUT);
    cr_assert_eq(count_log("consumer_upsert", NULL), 1, "no retry");
    cr_assert_eq(count_events(PARTI_EVENT_CONSUMER_UNHEALTHY), 1);
}

/* A message larger than fetch_max_bytes would stop its partition for ever
 * (every pull ends at once with 409 Message Size Exceeds MaxBytes); the
 * consumer pulls it alone without the limit, counts it, and goes on in order. */

Test(consumer, a_message_larger_than_fetch_max_bytes_is_taken_alone_and_counted) {
    static const int a[] = {0};
    static char big[2001];
    parti_pub_ack pa;
    uint64_t pulls_before;
    memset(big, 'b', 2000);
    parti_consumer_destroy(c);
    cfg.fetch_max_bytes = 500;
    make_consumer();
    update("w1", a, 1);
    settle();
    publish("orders.p0");
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p0", NULL, 0, big, 2000, &pa, 1000), PARTI_ERR_OK);
    publish("orders.p0");
    pulls_before = (uint64_t)count_log("fetch_start", NULL);
    cr_assert(poll_until(handled_three, 10000), "handled %d of 3", hd.handled);
    cr_assert(hd.seqs[0] < hd.seqs[1] && hd.seqs[1] < hd.seqs[2], "in stream order");
    cr_assert_eq(parti_consumer_metrics(c)->consumer_oversized_messages.value, 1);
    cr_assert_eq(parti_consumer_last_error(c), PARTI_ERR_MESSAGE_TOO_LARGE);
    /* no pull storm: a handful of pulls, not one per millisecond */
    cr_assert_lt((uint64_t)count_log("fetch_start", NULL) - pulls_before, 10);
}

/* Deliveries lost in transit. On a real server a connection that drops (or
 * that the server cuts as a slow consumer) while a pull's messages are on the
 * wire loses them: the server has counted them delivered, the client never
 * sees them, the next pull brings the later ones, and the lost ones come back
 * only after ack_wait, as redeliveries. Every message must still reach the
 * handler once, and in its partition's order. */
static int handled_one(void) { return hd.handled >= 1; }

static int times_handled(uint64_t seq) {
    int i, n = 0;
    for (i = 0; i < hd.handled && i < 1024; i++) n += hd.seqs[i] == seq;
    return n;
}

/* Each of want[0..n) handled exactly once, in this order (one partition's). */
static void expect_handled_once_in_order(const uint64_t *want, int n) {
    int i, j, last = -1;
    for (i = 0; i < n; i++) {
        cr_assert_eq(times_handled(want[i]), 1, "seq %llu handled %d times (lost in transit, then skipped?)",
                     (unsigned long long)want[i], times_handled(want[i]));
        for (j = 0; j < hd.handled && hd.seqs[j] != want[i]; j++) {
        }
        cr_assert_gt(j, last, "seq %llu handled after a later message of its partition", (unsigned long long)want[i]);
        last = j;
    }
}

Test(consumer, a_message_lost_in_transit_still_reaches_the_handler_before_the_later_ones_of_its_partition) {
    static const int a[] = {0, 1};
    static const uint64_t p0[] = {1, 2, 4, 5}, p1[] = {3};
    int i;
    update("w1", a, 2);
    settle();
    publish("orders.p0"); /* 1 */
    cr_assert(poll_until(handled_one, 10000));
    cr_assert_eq(parti_fake_lose_deliveries(w, &t, 1), PARTI_ERR_OK);
    publish("orders.p0"); /* 2: lost on the wire */
    publish("orders.p1"); /* 3 */
    publish("orders.p0"); /* 4 */
    publish("orders.p0"); /* 5 */
    for (i = 0; i < 400; i++) parti_consumer_poll(c, 100); /* 40 s: past ack_wait, 2 is redelivered */
    expect_handled_once_in_order(p0, 4);
    expect_handled_once_in_order(p1, 1);
    cr_assert_eq(hd.handled, 5);
}

Test(consumer, the_last_message_of_a_pull_lost_in_transit_is_not_skipped_when_the_next_pull_goes_on) {
    static const int a[] = {0};
    static const uint64_t p0[] = {1, 2, 3, 4};
    int i;
    parti_consumer_destroy(c);
    cfg.fetch_batch = 2;
    make_consumer();
    update("w1", a, 1);
    settle();
    publish("orders.p0"); /* 1: the first of a pull of 2 */
    cr_assert(poll_until(handled_one, 10000));
    cr_assert_eq(parti_fake_lose_deliveries(w, &t, 1), PARTI_ERR_OK);
    publish("orders.p0"); /* 2: the pull's last, lost on the wire; the pull is complete */
    publish("orders.p0"); /* 3: the next pull's first */
    publish("orders.p0"); /* 4 */
    for (i = 0; i < 400; i++) parti_consumer_poll(c, 100); /* 40 s: past ack_wait */
    expect_handled_once_in_order(p0, 4);
    cr_assert_eq(hd.handled, 4);
}

Test(consumer, messages_lost_in_transit_on_a_fresh_durable_are_handled_first) {
    static const int a[] = {0, 1};
    static const uint64_t p0[] = {1, 3, 4}, p1[] = {2, 5};
    int i;
    update("w1", a, 2);
    settle();
    cr_assert_eq(parti_fake_lose_deliveries(w, &t, 2), PARTI_ERR_OK);
    publish("orders.p0"); /* 1: lost */
    publish("orders.p1"); /* 2: lost */
    publish("orders.p0"); /* 3 */
    publish("orders.p0"); /* 4 */
    publish("orders.p1"); /* 5 */
    for (i = 0; i < 400; i++) parti_consumer_poll(c, 100);
    expect_handled_once_in_order(p0, 3);
    expect_handled_once_in_order(p1, 2);
    cr_assert_eq(hd.handled, 5);
}

/* A catch-up whose last read (the stream's last message) the handler NAKed
 * waits for that message's retry. A gap whose next delivery is a redelivery
 * makes the catch-up read the stream's end again: that end is where the
 * catch-up already is, but the NAKed message is not done, so the partition
 * must not count as caught up to it (its retry would be settled as done
 * before, without the handler). */
static int nak_first_x;
static parti_verdict nak_x_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    parti_verdict v = on_message(user, m, nak_delay_ms);
    if (strcmp(m->subject, "orders.p1") == 0 && nak_first_x) {
        nak_first_x = 0;
        *nak_delay_ms = 45000; /* retried after the lost delivery came back */
        return PARTI_NAK;
    }
    return v;
}

Test(consumer, a_naked_catch_up_read_is_retried_after_a_gap_that_rereads_the_streams_end) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1};
    int i;
    parti_consumer_destroy(c);
    opts.on_message = nak_x_on_message;
    make_consumer();
    update("w1", a, 1);
    settle();
    cr_assert_eq(parti_fake_lose_deliveries(w, &t, 1), PARTI_ERR_OK);
    publish("orders.p0"); /* 1: delivered, lost on the wire; redelivered after ack_wait */
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(hd.handled, 0);
    publish("orders.p1"); /* 2: behind the filter, the stream's last */
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 100); /* the durable's position passes it */
    nak_first_x = 1;
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(times_handled(2), 1, "the catch-up read 2 and the handler NAKed it");
    for (i = 0; i < 700; i++) parti_consumer_poll(c, 100); /* 70 s: the redelivery of 1, then 2's retry */
    cr_assert_eq(parti_consumer_metrics(c)->consumer_delivery_gaps.value, 1);
    cr_assert_eq(times_handled(1), 1, "seq 1 handled %d times", times_handled(1));
    cr_assert_eq(times_handled(2), 2, "the NAKed seq 2 was handled %d times: its retry never reached the handler",
                 times_handled(2));
}

/* A partition taken off the filter (it moved to another consumer, which
 * resumes it from this one's position) while its catch-up was in its tail:
 * the tail must end with it. Messages published after it left belong to
 * the next owner only; read here too they are handled twice. */
Test(consumer, a_partition_taken_off_the_filter_during_its_tail_is_not_read_on) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1};
    parti_pub_ack pa;
    int i;
    parti_consumer_destroy(c);
    opts.on_message = backlog_on_message;
    make_consumer();
    memset(&bl, 0, sizeof bl);
    update("w1", a, 1);
    settle();
    for (i = 0; i < 3000; i++) publish("orders.p0"); /* a backlog: three seconds of work */
    publish("orders.p1");                            /* 3001 */
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 10);
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    for (i = 0; i < 5; i++) parti_consumer_poll(c, 10);
    cr_assert_eq(bl.p1, 1, "the catch-up handled 3001");
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails.value, 1, "p1 is in its tail");
    update("w1", a, 1); /* p1 leaves: its next owner resumes after 3001 */
    settle();
    expect_filters("parti-w1", "orders.p0");
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
    for (i = 0; i < 50; i++) parti_consumer_poll(c, 10);
    cr_assert_eq(bl.p1, 1, "%llu, published after p1 left this consumer, was handled here too",
                 (unsigned long long)pa.stream_seq);
}

/* A transport over the fake whose pulled messages arrive in a client-side
 * buffer, as on a real connection: the batch the server sends is in the
 * client's subscription before the consumer takes the first of it, and a
 * stream deleted meanwhile does not take back what is buffered. */
static parti_transport_vtable bufvt;
static const parti_transport_vtable *bufinner;
static parti_msg bufq[512];
static int buf_n, buf_i;
static parti_err buf_end; /* the pull's end status, once the buffer is empty (OK: none yet) */

static parti_err buf_fetch_start(void *self, const char *stream, const char *durable, const parti_fetch_opts *o,
                                 uint32_t timeout_ms) {
    parti_err e = bufinner->fetch_start(self, stream, durable, o, timeout_ms);
    if (e == PARTI_ERR_OK && buf_i >= buf_n) buf_end = PARTI_ERR_OK; /* (a new pull; what is buffered stays) */
    return e;
}

static parti_err buf_fetch_next(void *self, const char *stream, const char *durable, parti_msg *out,
                                uint32_t timeout_ms) {
    parti_err e;
    if (buf_i < buf_n) {
        *out = bufq[buf_i++];
        return PARTI_ERR_OK;
    }
    buf_i = buf_n = 0;
    if (buf_end != PARTI_ERR_OK) {
        e = buf_end;
        buf_end = PARTI_ERR_OK;
        return e;
    }
    e = bufinner->fetch_next(self, stream, durable, out, timeout_ms);
    if (e != PARTI_ERR_OK) return e;
    /* the rest of what the server has for this pull lands in the buffer at once */
    while (buf_n < 512) {
        parti_err f = bufinner->fetch_next(self, stream, durable, &bufq[buf_n], 0);
        if (f == PARTI_ERR_OK) {
            buf_n++;
            continue;
        }
        if (f != PARTI_ERR_TIMEOUT) buf_end = f;
        break;
    }
    return PARTI_ERR_OK;
}

/* a delete forgets the durable's pull subscription and what it buffered (as
 * the NATS transport does) */
static parti_err buf_consumer_delete(void *self, const char *stream, const char *durable, uint32_t timeout_ms) {
    parti_err e = bufinner->consumer_delete(self, stream, durable, timeout_ms);
    if (e == PARTI_ERR_OK || e == PARTI_ERR_CONSUMER_NOT_FOUND) {
        while (buf_i < buf_n) bufinner->msg_release(self, &bufq[buf_i++]);
        buf_i = buf_n = 0;
        buf_end = PARTI_ERR_OK;
    }
    return e;
}

/* The test's consumer made again over the buffering transport. */
static void make_buffered_consumer(parti_message_handler on_message) {
    parti_consumer_destroy(c);
    bufinner = t.vt;
    bufvt = *t.vt;
    bufvt.fetch_start = buf_fetch_start;
    bufvt.fetch_next = buf_fetch_next;
    bufvt.consumer_delete = buf_consumer_delete;
    t.vt = &bufvt;
    buf_n = buf_i = 0;
    buf_end = PARTI_ERR_OK;
    opts.on_message = on_message;
    make_consumer();
    t.vt = bufinner; /* (the consumer keeps its own copy) */
}

/* the handler: p0 costs 3 ms; at the swap_at-th p0 message the stream is
 * deleted and made again, with new messages (payload "n") */
static struct {
    int p0_old, new_handled, old_after_new, swap_at;
    uint64_t new_seqs[64];
} sw;
static void swap_publish(const char *subject) {
    parti_pub_ack pa;
    cr_assert_eq(ob.vt->publish(ob.self, subject, NULL, 0, "n", 1, &pa, 1000), PARTI_ERR_OK);
}
static parti_verdict buffered_swap_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    if (m->len == 1 && m->data[0] == 'n') {
        if (sw.new_handled < 64) sw.new_seqs[sw.new_handled] = m->stream_seq;
        sw.new_handled++;
        return PARTI_ACK;
    }
    if (sw.new_handled) sw.old_after_new++; /* a message of the old stream, handled after the new one's */
    if (strcmp(m->subject, "orders.p0") == 0) {
        sw.p0_old++;
        parti_fake_advance(w, 3);
        if (sw.p0_old == sw.swap_at) {
            static const char *const subs[] = {"orders.>"};
            parti_stream_config sc;
            int i;
            memset(&sc, 0, sizeof sc);
            sc.name = "orders";
            sc.subjects = subs;
            sc.subject_count = 1;
            cr_assert_eq(parti_fake_delete_stream(w, "orders"), PARTI_ERR_OK);
            parti_fake_advance(w, 1);
            cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 1000), PARTI_ERR_OK);
            for (i = 0; i < 3; i++) swap_publish("orders.p0");
            swap_publish("orders.p1");
        }
    }
    return PARTI_ACK;
}
static int new_four_handled(void) { return sw.new_handled >= 4; }

/* The stream is deleted and made again while a pulled batch of the old
 * stream's durable is still in the client's buffer, and a catch-up's tail
 * (reading often, as tails do while the durable has a backlog) sees the new
 * stream first: the partitions start over in it from its beginning. The
 * old stream's buffered messages taken after that are handled as the new
 * stream's (after its messages, out of order) and move the position to
 * their old sequences: the new stream's messages up to there are skipped. */
Test(consumer, messages_of_a_deleted_stream_still_buffered_are_not_handled_under_the_new_streams_positions) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {1, 1};
    int i;
    memset(&sw, 0, sizeof sw);
    make_buffered_consumer(buffered_swap_on_message);
    cr_assert_eq(parti_consumer_update_from(c, "w1", a, 1, from), PARTI_ERR_OK); /* p0 from its start */
    settle();
    for (i = 0; i < 1000; i++) publish("orders.p0"); /* a backlog on the old stream */
    publish("orders.p1");
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 10);
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    for (i = 0; i < 3; i++) parti_consumer_poll(c, 10);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails.value, 1, "p1 is in its tail");
    cr_assert_lt(sw.p0_old, 700, "the backlog is still there: %d handled", sw.p0_old);
    sw.swap_at = sw.p0_old + 150; /* in the middle of a pulled batch */
    poll_until(new_four_handled, 60000);
    for (i = 0; i < 10; i++) swap_publish("orders.p0"); /* seqs 5..14 of the new stream */
    for (i = 0; i < 600; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(sw.old_after_new, 0, "%d messages of the deleted stream were handled after the new stream's",
                 sw.old_after_new);
    cr_assert_eq(sw.new_handled, 14, "%d of the new stream's 14 messages handled", sw.new_handled);
}

/* What the server sends a waiting pull arrives in the client's buffer at
 * once: here, each message published while the pull waits (the network
 * pushing them). */
static void buf_pump(void) {
    while (buf_n < 512) {
        parti_err f = bufinner->fetch_next(t.self, "orders", "parti-w1", &bufq[buf_n], 0);
        if (f != PARTI_ERR_OK) break;
        buf_n++;
    }
}

/* A pull waiting when the backlog's first messages were published got each
 * of them at once, with nothing pending after it, and they wait in the
 * client's buffer. Taken after a gained partition's tail began, such a
 * message says nothing about the new filter: it was sent before the change.
 * Ending the tail on it left the partition's next message behind the whole
 * backlog (seen on a loaded machine against a real server). */
Test(consumer, a_tail_is_not_ended_by_a_delivery_the_server_sent_before_the_filter_change) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {0, 1};
    parti_pub_ack pa;
    int i;
    memset(&bl, 0, sizeof bl);
    make_buffered_consumer(backlog_on_message);
    update("w1", a, 1);
    settle(); /* its pull waits */
    for (i = 0; i < 20; i++) {
        publish("orders.p0");
        buf_pump(); /* sent at once: nothing pending after it */
    }
    cr_assert_eq(buf_n, 20, "the waiting pull got %d of the first 20", buf_n);
    cr_assert_eq(bufq[19].num_pending, 0);
    for (i = 20; i < 3000; i++) publish("orders.p0"); /* the backlog: three seconds of work */
    publish("orders.p1");                              /* 3001, 3002: the catch-up reads them */
    publish("orders.p1");
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    settle();
    for (i = 0; i < 3 && bl.p1 < 2; i++) parti_consumer_poll(c, 10);
    cr_assert_eq(bl.p1, 2, "the catch-up handled %d of p1's 2", bl.p1);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails.value, 1, "p1 is in its tail");
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
    bl.late_seq = pa.stream_seq;
    cr_assert(poll_until(late_handled, 10000), "the late p1 message was not handled");
    cr_assert_geq(bl.p0, 20, "the buffered messages were handled first");
    cr_assert_lt(bl.p0_when_late, 2000, "it waited for %d of p0's 3000", bl.p0_when_late);
    cr_assert(poll_until(backlog_done, 20000), "p0's backlog: %d of 3000", bl.p0);
    for (i = 0; i < 20; i++) parti_consumer_poll(c, 100);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails_ended.value, 1);
    cr_assert_eq(bl.p0, 3000);
    cr_assert_eq(bl.p1, 3, "p1 handled %d times", bl.p1);
}

/* A tail reads one message per request to the server: a gained partition
 * that receives more messages a second than that can carry always finds
 * one, reads its full share every turn, and the durable, which takes one
 * message per turn of the poll loop, falls behind the others' rate: the
 * durable never reaches the tail, the tail never ends, and both the
 * partition and the others lag more and more. (The fake answers a stream
 * read, a stream info, a consumer info and a pull request after 1 ms, a
 * server a millisecond away; the durable's deliveries are in the client's
 * buffer.) */
static struct {
    uint64_t p0_handled, p1_handled, p0_pub, p1_pub, worst_p0_lat, worst_p1_lat;
} hot;
static uint64_t hot_p0_at[40000], hot_p1_at[40000];
static parti_verdict hot_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    uint64_t idx = (uint64_t)strtoull((const char *)m->data, NULL, 10), lat;
    (void)user;
    (void)nak_delay_ms;
    if (strcmp(m->subject, "orders.p0") == 0) {
        lat = parti_fake_now(w) - hot_p0_at[idx];
        if (idx >= 20000 && lat > hot.worst_p0_lat) hot.worst_p0_lat = lat; /* (not the backlog) */
        hot.p0_handled++;
    } else {
        lat = parti_fake_now(w) - hot_p1_at[idx];
        if (lat > hot.worst_p1_lat) hot.worst_p1_lat = lat;
        hot.p1_handled++;
    }
    return PARTI_ACK;
}
static void hot_publish(const char *subject, uint64_t idx) {
    parti_pub_ack pa;
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)idx);
    cr_assert_eq(ob.vt->publish(ob.self, subject, NULL, 0, buf, strlen(buf) + 1, &pa, 1000), PARTI_ERR_OK);
}

Test(consumer, a_tail_of_a_partition_busier_than_its_reads_does_not_starve_the_durable) {
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {1, 1}, t0, now;
    parti_consumer_destroy(c);
    opts.on_message = hot_on_message;
    make_consumer();
    memset(&hot, 0, sizeof hot);
    parti_fake_set_latency(w, &t, "stream_get_next", 1);
    parti_fake_set_latency(w, &t, "stream_info", 1);
    parti_fake_set_latency(w, &t, "consumer_info", 1);
    parti_fake_set_latency(w, &t, "fetch_start", 1);
    cr_assert_eq(parti_consumer_update_from(c, "w1", a, 1, from), PARTI_ERR_OK);
    settle();
    while (hot.p0_pub < 20000) { /* a backlog on p0 */
        hot_p0_at[hot.p0_pub] = parti_fake_now(w);
        hot_publish("orders.p0", hot.p0_pub++);
    }
    cr_assert_eq(parti_consumer_update_from(c, "w1", ab, 2, from), PARTI_ERR_OK);
    t0 = parti_fake_now(w);
    /* 10 s of 400 p0 and 2000 p1 messages a second */
    while ((now = parti_fake_now(w)) - t0 < 10000) {
        while (hot.p0_pub < 20000 + (now - t0) * 400 / 1000) {
            hot_p0_at[hot.p0_pub] = now;
            hot_publish("orders.p0", hot.p0_pub++);
        }
        while (hot.p1_pub < (now - t0) * 2000 / 1000) {
            hot_p1_at[hot.p1_pub] = now;
            hot_publish("orders.p1", hot.p1_pub++);
        }
        parti_consumer_poll(c, 5);
    }
    cr_log_info("hot tail: p0 %llu of %llu handled (worst %llu ms), p1 %llu of %llu (worst %llu ms), tails %llu, "
                "ended %llu", (unsigned long long)hot.p0_handled, (unsigned long long)hot.p0_pub,
                (unsigned long long)hot.worst_p0_lat, (unsigned long long)hot.p1_handled,
                (unsigned long long)hot.p1_pub, (unsigned long long)hot.worst_p1_lat,
                (unsigned long long)parti_consumer_metrics(c)->consumer_catch_up_tails.value,
                (unsigned long long)parti_consumer_metrics(c)->consumer_catch_up_tails_ended.value);
    cr_assert_lt(hot.worst_p1_lat, 2000, "p1's messages waited up to %llu ms", (unsigned long long)hot.worst_p1_lat);
    cr_assert_geq(hot.p0_handled + 800, hot.p0_pub, "p0: %llu of %llu handled, more than two seconds behind",
                  (unsigned long long)hot.p0_handled, (unsigned long long)hot.p0_pub);
    cr_assert_lt(hot.worst_p0_lat, 2000, "p0's new messages waited up to %llu ms", (unsigned long long)hot.worst_p0_lat);
}

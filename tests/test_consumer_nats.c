/* The worker consumer on a real nats-server: deletion mid-fetch is recovered,
 * a server restart and a hung server (missed heartbeats, escalation) are
 * ridden out without losing a message, and a poison message reaches the
 * dead-letter stream. Real time, bounded polling with deadlines. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static nats_server *srv;
static parti_transport t, ob;
static parti_consumer *c;
static int handled_ok, handled_poison;
static uint64_t seen[64];

static const char *const k0[] = {"p0"}, *const k1[] = {"p1"};
static const parti_partition parts[] = {{k0, 1, 1}, {k1, 1, 1}};

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static parti_verdict handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    if (m->len == 6 && memcmp(m->data, "poison", 6) == 0) {
        handled_poison++;
        return PARTI_TERM;
    }
    if (m->stream_seq < 64) seen[m->stream_seq]++;
    handled_ok++;
    return PARTI_ACK;
}

static void stream(const char *name, const char *subject) {
    parti_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    sc.subjects = &subject;
    sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&ob));
}

/* The stream "orders" in partitions p0 and p1, subjects orders.<key>. */
static void orders_config(parti_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->stream = "orders";
    cfg->subject_template = "orders.{0}";
    cfg->partitions = parts;
    cfg->partition_count = 2;
}

static void setup(void) {
    char err[512];
    parti_config cfg;
    parti_consumer_options o;
    int mine[] = {0, 1};
    cr_assert_eq(nats_server_start(&srv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(parti_nats_connect(&t, nats_server_url(srv), NULL, err, sizeof err), PARTI_ERR_OK, "%s", err);
    cr_assert_eq(parti_nats_connect(&ob, nats_server_url(srv), NULL, err, sizeof err), PARTI_ERR_OK, "%s", err);
    stream("orders", "orders.>");
    stream("DLQ", "dlq.>");
    orders_config(&cfg);
    cfg.fetch_expires_ms = 1000;
    cfg.fetch_heartbeat_ms = 250;
    memset(&o, 0, sizeof o);
    o.on_message = handler;
    o.dead_letter_subject = "dlq.orders";
    o.info_interval_ms = 500;
    o.op_timeout_ms = 1000;
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &o, err, sizeof err), PARTI_ERR_OK, "%s", err);
    cr_assert_eq(parti_consumer_update(c, "worker-1", mine, 2), PARTI_ERR_OK);
}

static void teardown(void) {
    parti_consumer_destroy(c);
    parti_nats_close(&t);
    parti_nats_close(&ob);
    nats_server_stop(srv, NULL, 0);
    nats_Close();
}

static void publish(const char *subject, const char *data) {
    parti_pub_ack pa;
    cr_assert_eq(ob.vt->publish(ob.self, subject, NULL, 0, data, strlen(data), &pa, 5000), PARTI_ERR_OK);
}

/* Polls until cond holds or deadline_ms passes. */
static int poll_until(int (*cond)(void), uint32_t deadline_ms) {
    uint64_t t0 = ms_now();
    while (ms_now() - t0 < deadline_ms) {
        parti_consumer_poll(c, 50);
        if (cond()) return 1;
    }
    return 0;
}

static int two_ok(void) { return handled_ok >= 2; }
static int three_ok(void) { return handled_ok >= 3; }
static int poison_done(void) { return parti_consumer_metrics(c)->consumer_dead_letters.value >= 1; }

TestSuite(consumer_nats, .init = setup, .fini = teardown, .timeout = 60);

Test(consumer_nats, deleted_mid_fetch_is_recreated_and_keeps_processing) {
    uint64_t t0, took;
    publish("orders.p0", "a");
    publish("orders.p1", "b");
    cr_assert(poll_until(two_ok, 10000), "handled %d", handled_ok);
    /* a pull is pending now; delete the consumer behind the worker's back */
    cr_assert_eq(ob.vt->consumer_delete(ob.self, "orders", "parti-worker-1", 5000), PARTI_ERR_OK);
    t0 = ms_now();
    publish("orders.p0", "c");
    cr_assert(poll_until(three_ok, 10000), "not recovered: handled %d", handled_ok);
    took = ms_now() - t0;
    cr_assert_geq(parti_consumer_metrics(c)->consumer_recreations.value, 1);
    cr_assert_lt(took, 5000, "recovery took %llu ms", (unsigned long long)took);
    cr_log_info("recovered from deletion in %llu ms (real server)", (unsigned long long)took);
    /* nothing lost, nothing handled twice after the ack floor */
    cr_assert_eq(seen[1] >= 1 && seen[2] >= 1 && seen[3] >= 1, 1);
}

Test(consumer_nats, a_poison_message_reaches_the_dead_letter_stream) {
    parti_stream_info si;
    publish("orders.p1", "poison");
    cr_assert(poll_until(poison_done, 10000), "no dead letter");
    cr_assert_eq(handled_poison, 1);
    cr_assert_eq(ob.vt->stream_info(ob.self, "DLQ", &si, 5000), PARTI_ERR_OK);
    cr_assert_eq(si.messages, 1);
    parti_stream_info_free(&si);
}

/* Publishes, retrying while the client reconnects after a restart. */
static void publish_retrying(const char *subject, const char *data) {
    parti_pub_ack pa;
    parti_err e = PARTI_ERR_NOT_CONNECTED;
    uint64_t t0 = ms_now();
    while (ms_now() - t0 < 15000) {
        if ((e = ob.vt->publish(ob.self, subject, NULL, 0, data, strlen(data), &pa, 2000)) == PARTI_ERR_OK) return;
        parti_consumer_poll(c, 50); /* keep the worker going meanwhile */
    }
    cr_assert_fail("publish after restart: %s", parti_strerror(e));
}

static int five_ok(void) { return handled_ok >= 5; }
static int is_ready(void) {
    parti_health h;
    return parti_consumer_health(c, &h) == PARTI_ERR_OK && h.ready && !h.degraded;
}

Test(consumer_nats, a_server_restart_is_ridden_out_without_loss) {
    char err[512];
    int i;
    publish("orders.p0", "a");
    publish("orders.p1", "b");
    cr_assert(poll_until(two_ok, 10000), "handled %d", handled_ok);
    cr_assert_eq(nats_server_restart(srv, err, sizeof err), 0, "%s", err);
    publish_retrying("orders.p0", "c");
    publish_retrying("orders.p1", "d");
    publish_retrying("orders.p0", "e");
    cr_assert(poll_until(five_ok, 20000), "after restart: handled %d", handled_ok);
    for (i = 1; i <= 5; i++) cr_assert_geq(seen[i], 1, "sequence %d never handled", i);
    cr_assert_geq(parti_consumer_metrics(c)->consumer_pull_restarts.value, 1);
    cr_assert(poll_until(is_ready, 10000), "not ready after the restart: %s", parti_consumer_last_message(c));
}

Test(consumer_nats, a_hung_server_escalates_to_a_refresh_and_recovers) {
    char err[512];
    parti_health h;
    uint64_t t0;
    int degraded_seen = 0;
    publish("orders.p0", "a");
    cr_assert(poll_until(two_ok, 3000) || handled_ok == 1, "handled %d", handled_ok);
    cr_assert_eq(nats_server_suspend(srv, err, sizeof err), 0, "%s", err);
    t0 = ms_now();
    while (ms_now() - t0 < 3000) { /* no heartbeats (missed after 500 ms), no replies (1 s timeouts) */
        parti_consumer_poll(c, 50);
        if (parti_consumer_health(c, &h) == PARTI_ERR_OK && h.degraded) degraded_seen = 1;
    }
    cr_assert_eq(nats_server_resume(srv, err, sizeof err), 0, "%s", err);
    cr_assert(degraded_seen, "never degraded while the server hung (last: %s)", parti_consumer_last_message(c));
    publish("orders.p1", "b");
    cr_assert(poll_until(two_ok, 15000), "after resume: handled %d", handled_ok);
    cr_assert(poll_until(is_ready, 10000), "not ready after resume: %s", parti_consumer_last_message(c));
    cr_assert_geq(parti_consumer_metrics(c)->consumer_refreshes.value, 1);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_recreations.value, 0);
}

static parti_verdict ack_any(void *u, const parti_msg *m, uint32_t *d) {
    (void)u, (void)m, (void)d;
    return PARTI_ACK;
}

Test(consumer_nats, a_stream_that_does_not_cover_the_template_is_refused_by_name) {
    static const char *const k0[] = {"p0"};
    static const parti_partition gp[] = {{k0, 1, 1}};
    parti_config cfg;
    parti_options o;
    parti_health h;
    parti *g;
    char msg[256];
    uint64_t t0 = ms_now();
    parti_err e = PARTI_ERR_OK;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders"; /* its subjects are "orders.>" */
    cfg.subject_template = "invoices.{0}";
    cfg.partitions = gp;
    cfg.partition_count = 1;
    memset(&o, 0, sizeof o);
    o.on_message = ack_any;
    o.memory_storage = 1;
    cr_assert_eq(parti_create(&g, &ob, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    while (ms_now() - t0 < 10000 && (e = parti_poll(g, 50)) == PARTI_ERR_OK) {
    }
    cr_assert_eq(e, PARTI_ERR_STREAM_MISMATCH);
    cr_assert_eq(parti_health_of(g, &h), PARTI_ERR_OK);
    cr_assert_str_eq(h.last_error_message, "stream orders: subjects [\"orders.>\"] do not cover \"invoices.p0\" "
                                           "(partition 0)");
    parti_destroy(g);
}

Test(consumer_nats, the_circuit_breaker_opens_fails_fast_and_closes_after_a_probe) {
    char err[512];
    parti_transport wrapped;
    parti_breaker *br;
    parti_breaker_options bo;
    parti_stream_info si;
    uint64_t t0;
    int i;
    parti_err e = PARTI_ERR_OK;
    memset(&bo, 0, sizeof bo);
    bo.failure_threshold = 2;
    bo.open_ms = 500;
    cr_assert_eq(parti_breaker_wrap(&br, &wrapped, &ob, &bo), PARTI_ERR_OK);
    cr_assert_eq(wrapped.vt->stream_info(wrapped.self, "orders", &si, 2000), PARTI_ERR_OK);
    parti_stream_info_free(&si);
    cr_assert_eq(nats_server_terminate(srv, err, sizeof err), 0, "%s", err);
    for (i = 0; i < 10 && parti_breaker_state_of(br) != PARTI_BREAKER_OPEN; i++)
        wrapped.vt->stream_info(wrapped.self, "orders", &si, 300);
    cr_assert_eq(parti_breaker_state_of(br), PARTI_BREAKER_OPEN);
    t0 = ms_now();
    for (i = 0; i < 100; i++) cr_assert_eq(wrapped.vt->stream_info(wrapped.self, "orders", &si, 2000), PARTI_ERR_CIRCUIT_OPEN);
    cr_assert_lt(ms_now() - t0, 100, "100 calls while open must not wait on the network");
    cr_assert_eq(nats_server_restart(srv, err, sizeof err), 0, "%s", err);
    t0 = ms_now();
    while (ms_now() - t0 < 20000) { /* the probe after each cool-down, until the client has reconnected */
        e = wrapped.vt->stream_info(wrapped.self, "orders", &si, 1000);
        if (e == PARTI_ERR_OK) {
            parti_stream_info_free(&si);
            break;
        }
        wrapped.vt->sleep_ms(wrapped.self, 100);
    }
    cr_assert_eq(e, PARTI_ERR_OK);
    cr_assert_eq(parti_breaker_state_of(br), PARTI_BREAKER_CLOSED);
    cr_assert_geq(parti_breaker_opens(br), 1);
    parti_breaker_free(br);
}

Test(consumer_nats, ten_seconds_without_nats_lose_nothing) {
    char err[512];
    parti_health h;
    uint64_t t0;
    int i, not_ready = 0;
    publish("orders.p0", "a");
    publish("orders.p1", "b");
    cr_assert(poll_until(two_ok, 10000), "handled %d", handled_ok);
    cr_assert_eq(nats_server_terminate(srv, err, sizeof err), 0, "%s", err);
    t0 = ms_now();
    while (ms_now() - t0 < 10000) { /* the outage: the worker keeps polling, as a service would */
        parti_consumer_poll(c, 100);
        if (parti_consumer_health(c, &h) == PARTI_ERR_OK && !h.ready) not_ready = 1;
    }
    cr_assert(not_ready, "the consumer never reported not ready while NATS was down");
    cr_assert_eq(nats_server_restart(srv, err, sizeof err), 0, "%s", err);
    publish_retrying("orders.p0", "c");
    publish_retrying("orders.p1", "d");
    publish_retrying("orders.p0", "e");
    cr_assert(poll_until(five_ok, 30000), "after the outage: handled %d", handled_ok);
    for (i = 1; i <= 5; i++) cr_assert_geq(seen[i], 1, "sequence %d never handled", i);
    cr_assert(poll_until(is_ready, 15000), "not ready after the outage: %s", parti_consumer_last_message(c));
}

/* The catch-up's tail on a real server: a partition gained by a worker whose
 * durable holds a backlog on its other partition. Its message published after
 * the catch-up is read from the stream at once, not after the backlog (the
 * durable delivers in stream order across its whole filter); each message of
 * it once, in order, also after the durable has caught up. */
static struct {
    int p0, p1;
    uint64_t p1_seqs[8], late_seq;
    int p0_when_late;
} tl;
static parti_verdict tail_handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    if (strcmp(m->subject, "orders.p0") == 0) {
        struct timespec ts = {0, 500000}; /* half a millisecond of work per backlog message */
        nanosleep(&ts, NULL);
        tl.p0++;
    } else if (tl.p1 < 8) {
        tl.p1_seqs[tl.p1++] = m->stream_seq;
        if (m->stream_seq == tl.late_seq) tl.p0_when_late = tl.p0;
    }
    return PARTI_ACK;
}
static int tail_after_done(void) { return tl.p1 >= 4; }
static int tail_caught_up(void) { return tl.p1 >= 2; }
static int tail_late_done(void) { return tl.late_seq && tl.p1 >= 3; }
static int tail_backlog_done(void) { return tl.p0 >= 4000; }

Test(consumer_nats, a_gained_partitions_new_messages_do_not_wait_behind_the_backlog) {
    char err[512];
    parti_config cfg;
    parti_consumer_options o;
    parti_pub_ack pa;
    parti_consumer *keep = c;
    int only0[] = {0}, both[] = {0, 1}, i;
    uint64_t from[2] = {0, 1};
    memset(&tl, 0, sizeof tl);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders";
    cfg.subject_template = "orders.{0}";
    cfg.partitions = parts;
    cfg.partition_count = 2;
    cfg.fetch_expires_ms = 1000;
    cfg.fetch_heartbeat_ms = 250;
    memset(&o, 0, sizeof o);
    o.on_message = tail_handler;
    o.op_timeout_ms = 1000;
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &o, err, sizeof err), PARTI_ERR_OK, "%s", err);
    cr_assert_eq(parti_consumer_update(c, "worker-2", only0, 1), PARTI_ERR_OK);
    parti_consumer_poll(c, 100);
    for (i = 0; i < 4000; i++) /* two seconds of work or more */
        cr_assert_eq(ob.vt->publish(ob.self, "orders.p0", NULL, 0, "x", 1, &pa, 5000), PARTI_ERR_OK);
    publish("orders.p1", "a"); /* the catch-up reads these two */
    publish("orders.p1", "b");
    parti_consumer_poll(c, 50);
    cr_assert_eq(parti_consumer_update_from(c, "worker-2", both, 2, from), PARTI_ERR_OK);
    cr_assert(poll_until(tail_caught_up, 10000), "the catch-up: %d of p1's 2", tl.p1);
    cr_assert_eq(tl.p1, 2, "the catch-up: %d of p1's 2", tl.p1);
    cr_assert_eq(ob.vt->publish(ob.self, "orders.p1", NULL, 0, "late", 4, &pa, 5000), PARTI_ERR_OK);
    tl.late_seq = pa.stream_seq;
    cr_assert(poll_until(tail_late_done, 20000), "the late p1 message was not handled");
    cr_assert_lt(tl.p0_when_late, 3000, "it waited for %d of p0's 4000", tl.p0_when_late);
    cr_assert(poll_until(tail_backlog_done, 30000), "p0's backlog: %d of 4000", tl.p0);
    publish("orders.p1", "after"); /* through the durable now */
    poll_until(tail_after_done, 10000);
    for (i = 0; i < 10; i++) parti_consumer_poll(c, 50);
    cr_assert_eq(tl.p1, 4, "p1 handled %d times", tl.p1);
    cr_assert_lt(tl.p1_seqs[0], tl.p1_seqs[1]);
    cr_assert_eq(tl.p1_seqs[2], tl.late_seq);
    cr_assert_gt(tl.p1_seqs[3], tl.late_seq);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails.value, 1);
    cr_assert_eq(parti_consumer_metrics(c)->consumer_catch_up_tails_ended.value, 1);
    cr_log_info("tail on a real server: the late message was handled after %d of 4000 backlog messages", tl.p0_when_late);
    parti_consumer_destroy(c);
    c = keep;
}

/* The stream is deleted and made again while a pulled batch of the old
 * stream's durable is still in the client's buffer, and a catch-up tail's
 * look at the stream (tails read every few milliseconds while the durable
 * has a backlog) sees the new stream first. Nothing the old durable sent
 * may be handled after that: it would come after the new stream's
 * messages and move the positions to its old sequences, skipping the new
 * stream's messages below them. */
static struct {
    int old_p0, swap_at, new_handled, old_after_new;
} bs;
static void bs_publish(const char *subject) { publish(subject, "n"); }
static parti_verdict bs_handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    if (m->len == 1 && m->data[0] == 'n') {
        bs.new_handled++;
        return PARTI_ACK;
    }
    if (bs.new_handled) bs.old_after_new++;
    if (strcmp(m->subject, "orders.p0") == 0) {
        struct timespec ts = {0, 3000000};
        bs.old_p0++;
        nanosleep(&ts, NULL); /* 3 ms of work */
        if (bs.old_p0 == bs.swap_at) {
            int i;
            cr_assert_eq(ob.vt->stream_delete(ob.self, "orders", 5000), PARTI_ERR_OK);
            stream("orders", "orders.>");
            for (i = 0; i < 3; i++) bs_publish("orders.p0");
            bs_publish("orders.p1");
        }
    }
    return PARTI_ACK;
}
static int bs_tail(void) { return parti_consumer_metrics(c)->consumer_catch_up_tails.value >= 1; }
static int bs_four(void) { return bs.new_handled >= 4; }
static int bs_all(void) { return bs.new_handled >= 14; }

Test(consumer_nats, a_deleted_streams_buffered_batch_is_not_handled_as_the_new_streams) {
    char err[512];
    parti_config cfg;
    parti_consumer_options o;
    static const int a[] = {0}, ab[] = {0, 1};
    uint64_t from[2] = {1, 1};
    int i;
    parti_consumer_destroy(c);
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders";
    cfg.subject_template = "orders.{0}";
    cfg.partitions = parts;
    cfg.partition_count = 2;
    memset(&o, 0, sizeof o);
    o.on_message = bs_handler;
    o.op_timeout_ms = 2000;
    memset(&bs, 0, sizeof bs);
    cr_assert_eq(parti_consumer_create(&c, &t, &cfg, &o, err, sizeof err), PARTI_ERR_OK, "%s", err);
    cr_assert_eq(parti_consumer_update_from(c, "worker-2", a, 1, from), PARTI_ERR_OK);
    for (i = 0; i < 2000; i++) publish("orders.p0", "x"); /* a backlog on the old stream */
    publish("orders.p1", "x");
    cr_assert_eq(parti_consumer_update_from(c, "worker-2", ab, 2, from), PARTI_ERR_OK);
    cr_assert(poll_until(bs_tail, 10000), "p1 never went into its tail");
    cr_assert_lt(bs.old_p0, 1700, "the backlog is still there: %d handled", bs.old_p0);
    bs.swap_at = bs.old_p0 + 150;
    poll_until(bs_four, 20000);
    for (i = 0; i < 10; i++) bs_publish("orders.p0");
    poll_until(bs_all, 10000);
    cr_assert_eq(bs.old_after_new, 0, "%d messages of the deleted stream were handled after the new stream's",
                 bs.old_after_new);
    cr_assert_eq(bs.new_handled, 14, "%d of the new stream's 14 messages handled", bs.new_handled);
}

/* The nats.c binding holds plain acks for a burst: none may still be held
 * when parti_consumer_poll returns (the process may make no further call on
 * that connection for a while, or destroy the consumer and let another
 * process take its durable: those messages would come back after ack_wait
 * and be handled again). A batch of 5 ends a poll right after its fifth
 * message, with that message's ack not yet sent by fetch_next. */
static int handled_small;

static parti_verdict small_handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)m;
    (void)nak_delay_ms;
    handled_small++;
    return PARTI_ACK;
}

/* A second consumer on t, for partition p1 alone, as worker_id. */
static parti_consumer *consumer_on_p1(const char *worker_id, int fetch_batch, parti_message_handler on_message) {
    char err[256];
    parti_config cfg;
    parti_consumer_options o;
    parti_consumer *pc = NULL;
    int mine[] = {1};
    orders_config(&cfg);
    cfg.fetch_batch = fetch_batch;
    cfg.ack_wait_ms = 30000;
    memset(&o, 0, sizeof o);
    o.on_message = on_message;
    cr_assert_eq(parti_consumer_create(&pc, &t, &cfg, &o, err, sizeof err), PARTI_ERR_OK, "%s", err);
    cr_assert_eq(parti_consumer_update(pc, worker_id, mine, 1), PARTI_ERR_OK);
    return pc;
}

Test(consumer_nats, no_ack_is_held_back_when_poll_returns) {
    parti_consumer *small = consumer_on_p1("worker-9", 5, small_handler);
    parti_consumer_info ci;
    int i;
    uint64_t t0, pending = 0;
    for (i = 0; i < 10; i++) publish("orders.p1", "m");
    for (t0 = ms_now(); handled_small < 10 && ms_now() - t0 < 10000;) parti_consumer_poll(small, 0);
    cr_assert_eq(handled_small, 10);
    /* nothing more on t: the other connection reads what the server has */
    for (t0 = ms_now(); ms_now() - t0 < 3000;) {
        cr_assert_eq(ob.vt->consumer_info(ob.self, "orders", "parti-worker-9", &ci, 5000), PARTI_ERR_OK);
        pending = ci.num_ack_pending;
        parti_consumer_info_free(&ci);
        if (!pending) break;
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    cr_assert_eq(pending, 0, "%llu acks never reached the server", (unsigned long long)pending);
    parti_consumer_destroy(small);
}

/* Held acks are not held while a poll goes on handling: with handlers of
 * 10 ms each, the acks of earlier messages reach the server while later
 * ones are handled (a connection that drops and is closed before it is back
 * loses only what is held, and a standalone consumer's successor would
 * handle those again). Read from inside the handler, on the other connection. */
static uint64_t floor_at_40;

static parti_verdict slow_handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    (void)user;
    (void)nak_delay_ms;
    if (++handled_small == 40) {
        parti_consumer_info ci;
        if (ob.vt->consumer_info(ob.self, "orders", "parti-worker-8", &ci, 5000) == PARTI_ERR_OK) {
            floor_at_40 = ci.ack_floor_stream_seq;
            parti_consumer_info_free(&ci);
        }
    }
    (void)m;
    nanosleep(&(struct timespec){0, 10000000}, NULL);
    return PARTI_ACK;
}

Test(consumer_nats, acks_are_not_held_while_a_poll_handles_on) {
    parti_consumer *slow;
    int i;
    uint64_t t0;
    handled_small = 0;
    for (i = 0; i < 60; i++) publish("orders.p1", "m");
    slow = consumer_on_p1("worker-8", 100, slow_handler);
    for (t0 = ms_now(); handled_small < 60 && ms_now() - t0 < 20000;) parti_consumer_poll(slow, 100);
    cr_assert_eq(handled_small, 60);
    /* the stream's first message of p1 is sequence 1: 39 handled before the 40th */
    cr_assert_geq(floor_at_40, 20, "ack floor %llu while the 40th message was handled",
                  (unsigned long long)floor_at_40);
    parti_consumer_destroy(slow);
}

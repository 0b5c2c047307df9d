/* The partition handoff on a real nats-server, under load: 64 partitions, a
 * producer at 2,000 msg/s, four worker processes' worth of groups in this
 * process (each with its own connection), one slower than the rest. While
 * producing: a join, a graceful leave, a crash (destroyed without leaving,
 * its connection closed: kill -9), and a pause past the member TTL (not
 * polled: SIGSTOP as the group sees it). Then the producer stops and the
 * group drains. Checked on what the handlers saw:
 *   - every published message handled;
 *   - per partition, no message handled for the first time after a later one;
 *   - the fencing token (partition, generation) never goes down per
 *     partition, and a worker handles a partition only between its
 *     on_partitions_assigned and its revoke / loss;
 *   - duplicates only of messages first handled by the crashed or the
 *     paused worker (printed per cause).
 * Real time, polling with deadlines, loopback only. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NP 64
#define NW 4
#define RATE 2000          /* messages per second */
#define MAX_MSGS 60000
#define SLOW_US 150        /* worker 1's handler takes this long */

typedef struct wk {
    parti_transport t;
    parti *p;
    int alive, paused, crashed;
    int mine[NP];
    int outside;           /* messages of a partition it was not assigned */
    uint64_t handled;
} wk;

static nats_server *srv;
static parti_transport ob;
static wk w[NW];
static const char *keys[NP][1];
static char key_text[NP][16];
static parti_partition parts[NP];
static parti_config cfg;
static parti_options opts;
/* per stream sequence: the partition published, how often handled, the first handler */
static signed char pub_part[MAX_MSGS + 1];
static unsigned char times[MAX_MSGS + 1];
static signed char first_by[MAX_MSGS + 1];
static uint64_t last_first[NP], last_gen[NP];
static int order_bad, gen_bad;
static uint64_t published;

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static parti_verdict handler(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    wk *x = (wk *)user;
    int idx = (int)(x - w), p = m->partition;
    (void)nak_delay_ms;
    x->handled++;
    if (p < 0 || p >= NP || m->stream_seq > MAX_MSGS) return PARTI_ACK;
    if (!x->mine[p]) x->outside++;
    if (m->generation < last_gen[p]) gen_bad++;
    if (m->generation > last_gen[p]) last_gen[p] = m->generation;
    if (times[m->stream_seq]++ == 0) {
        first_by[m->stream_seq] = (signed char)idx;
        if (m->stream_seq < last_first[p]) order_bad++;
        last_first[p] = m->stream_seq;
    }
    if (idx == 1) {
        struct timespec ts = {0, SLOW_US * 1000L};
        nanosleep(&ts, NULL);
    }
    return PARTI_ACK;
}

static void mark(void *user, const int *ps, int n, int v) {
    int i;
    for (i = 0; i < n; i++) ((wk *)user)->mine[ps[i]] = v;
}
static void on_assigned(void *user, const int *ps, int n) { mark(user, ps, n, 1); }
static void on_revoked(void *user, const int *ps, int n) { mark(user, ps, n, 0); }
static void on_lost(void *user, const int *ps, int n) { mark(user, ps, n, 0); }

static void start(int i) {
    char err[512];
    memset(&w[i], 0, sizeof w[i]);
    cr_assert_eq(parti_nats_connect(&w[i].t, nats_server_url(srv), NULL, err, sizeof err), PARTI_ERR_OK, "%s", err);
    opts.user = &w[i];
    cr_assert_eq(parti_create(&w[i].p, &w[i].t, &cfg, &opts, err, sizeof err), PARTI_ERR_OK, "%s", err);
    w[i].alive = 1;
}

static void setup(void) {
    char err[512];
    parti_stream_config sc;
    static const char *const subj[] = {"ho.>"};
    int i;
    cr_assert_eq(nats_server_start(&srv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(parti_nats_connect(&ob, nats_server_url(srv), NULL, err, sizeof err), PARTI_ERR_OK, "%s", err);
    memset(&sc, 0, sizeof sc);
    sc.name = "ho";
    sc.subjects = subj;
    sc.subject_count = 1;
    cr_assert_eq(ob.vt->stream_create(ob.self, &sc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&ob));
    for (i = 0; i < NP; i++) {
        snprintf(key_text[i], sizeof key_text[i], "p%d", i);
        keys[i][0] = key_text[i];
        parts[i].keys = keys[i];
        parts[i].key_count = 1;
        parts[i].weight = 1;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "ho";
    cfg.subject_template = "ho.{0}";
    cfg.partitions = parts;
    cfg.partition_count = NP;
    cfg.fetch_batch = 100;
    cfg.fetch_expires_ms = 1000;
    cfg.fetch_heartbeat_ms = 250;
    memset(&opts, 0, sizeof opts);
    opts.on_message = handler;
    opts.on_partitions_assigned = on_assigned;
    opts.on_partitions_revoked = on_revoked;
    opts.on_partitions_lost = on_lost;
    opts.heartbeat_ms = 250;
    opts.member_ttl_ms = 1500;
    opts.cold_start_ms = 500;
    opts.planned_window_ms = 100;
    opts.emergency_grace_ms = 50;
    opts.commit_interval_ms = 200;
    opts.op_timeout_ms = 1000;
    memset(pub_part, -1, sizeof pub_part);
    memset(times, 0, sizeof times);
    memset(first_by, -1, sizeof first_by);
    memset(last_first, 0, sizeof last_first);
    memset(last_gen, 0, sizeof last_gen);
    order_bad = gen_bad = 0;
    published = 0;
}

static void teardown(void) {
    int i;
    for (i = 0; i < NW; i++) {
        if (w[i].p) parti_destroy(w[i].p);
        if (w[i].t.vt) parti_nats_close(&w[i].t);
    }
    parti_nats_close(&ob);
    nats_server_stop(srv, NULL, 0);
    nats_Close();
}

/* Publishes what is due at RATE since t0 (round robin over partitions). */
static void produce(uint64_t t0, uint64_t now) {
    uint64_t due = (now - t0) * RATE / 1000;
    while (published < due && published < MAX_MSGS) {
        char subj[16];
        parti_pub_ack pa;
        int p = (int)(published % NP);
        snprintf(subj, sizeof subj, "ho.p%d", p);
        published++;
        if (ob.vt->publish(ob.self, subj, NULL, 0, "x", 1, &pa, 2000) == PARTI_ERR_OK && pa.stream_seq <= MAX_MSGS)
            pub_part[pa.stream_seq] = (signed char)p;
    }
}

static void poll_all(void) {
    int i;
    for (i = 0; i < NW; i++)
        if (w[i].alive && !w[i].paused) parti_poll(w[i].p, 1);
}

static int all_owned(void) {
    int owners[NP] = {0}, i, j;
    for (i = 0; i < NW; i++) {
        const int *o;
        int n;
        if (!w[i].alive || w[i].paused) continue;
        n = parti_owned(w[i].p, &o);
        for (j = 0; j < n; j++) owners[o[j]]++;
    }
    for (i = 0; i < NP; i++)
        if (owners[i] != 1) return 0;
    return 1;
}

static uint64_t unhandled(void) {
    uint64_t s, n = 0;
    for (s = 1; s <= MAX_MSGS; s++)
        if (pub_part[s] >= 0 && !times[s]) n++;
    return n;
}

TestSuite(handoff_nats, .init = setup, .fini = teardown, .timeout = 120);

Test(handoff_nats, joins_leaves_a_crash_and_a_pause_under_load_lose_nothing) {
    uint64_t t0, now, deadline, s, dup_crash = 0, dup_pause = 0, dup_other = 0;
    int i, joined = 0, left = 0, crashed = 0, paused = 0, resumed = 0;
    for (i = 0; i < 3; i++) start(i);
    deadline = ms_now() + 20000;
    while (!all_owned() && ms_now() < deadline) poll_all();
    cr_assert(all_owned(), "the group did not settle");
    t0 = ms_now();
    for (now = t0; now - t0 < 24000; now = ms_now()) {
        uint64_t at = now - t0;
        if (at < 14000) produce(t0, now);
        if (!joined && at >= 2000) joined = 1, start(3);
        if (!left && at >= 5000) { /* graceful leave of worker 2 */
            left = 1;
            cr_assert_eq(parti_leave(w[2].p, 3000), PARTI_ERR_OK);
            w[2].alive = 0;
        }
        if (!crashed && at >= 8000) { /* kill -9 of worker 0: no leave, connection gone */
            crashed = 1;
            parti_destroy(w[0].p);
            w[0].p = NULL;
            parti_nats_close(&w[0].t);
            w[0].t.vt = NULL;
            w[0].alive = 0;
            w[0].crashed = 1;
        }
        if (!paused && at >= 10000) paused = 1, w[3].paused = 1;     /* SIGSTOP */
        if (paused && !resumed && at >= 12500) resumed = 1, w[3].paused = 0; /* SIGCONT, past the TTL */
        poll_all();
        if (at >= 14000 && unhandled() == 0) break;
    }
    for (s = 1; s <= MAX_MSGS; s++) {
        if (times[s] <= 1) continue;
        if (first_by[s] == 0) dup_crash += times[s] - 1u;
        else if (first_by[s] == 3) dup_pause += times[s] - 1u;
        else dup_other += times[s] - 1u;
    }
    cr_log_info("%llu published; duplicates by cause: crash %llu, pause past the TTL %llu, other %llu",
                (unsigned long long)published, (unsigned long long)dup_crash, (unsigned long long)dup_pause,
                (unsigned long long)dup_other);
    {   /* the checkpoints' cost: KV writes per second of a worker that ran throughout (commit interval 200 ms) */
        const parti_metrics *m = parti_metrics_of(w[1].p);
        double secs = (double)(ms_now() - t0) / 1000.0;
        cr_log_info("worker 1: %llu checkpoint writes in %.1f s (%.1f per second, commit interval %u ms, %d "
                    "partitions held at the end), %llu claims, %llu releases",
                    (unsigned long long)m->checkpoint_writes.value, secs, (double)m->checkpoint_writes.value / secs,
                    opts.commit_interval_ms, parti_owned(w[1].p, NULL), (unsigned long long)m->partition_claims.value,
                    (unsigned long long)m->partition_releases.value);
    }
    cr_assert_geq(published, 27000, "the producer fell behind: %llu", (unsigned long long)published);
    cr_assert_eq(unhandled(), 0, "%llu messages never handled", (unsigned long long)unhandled());
    cr_assert_eq(order_bad, 0, "per-partition order broken %d times", order_bad);
    cr_assert_eq(gen_bad, 0, "a stale owner handled a message after a newer one (fencing token went down)");
    for (i = 0; i < NW; i++)
        cr_assert_eq(w[i].outside, 0, "worker %d handled %d messages of partitions it was not assigned", i,
                     w[i].outside);
    cr_assert_eq(dup_other, 0, "duplicates no crash or pause explains: %llu", (unsigned long long)dup_other);
}

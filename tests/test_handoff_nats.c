/* The partition handoff on a real nats-server, under load: 64 partitions, a
 * producer at 2,000 msg/s, four workers, each on its own thread with its own
 * connection (as separate processes would be), one slower than the rest.
 * While producing: a join, a graceful leave, a crash (destroyed without
 * leaving, its connection closed: kill -9), and a pause past the member TTL
 * (its thread stops polling: SIGSTOP as the group sees it). Then the
 * producer stops and the group drains, for as long as it makes progress (a
 * stall of DRAIN_STALL_MS with messages unhandled fails, as does the hard
 * cap). Checked on what the handlers saw:
 *   - every published message handled;
 *   - per partition, no message handled for the first time after a later one;
 *   - the fencing token (partition, generation) never goes down per
 *     partition, and a worker handles a partition only between its
 *     on_partitions_assigned and its revoke / loss;
 *   - duplicates only of messages first handled by the crashed or the
 *     paused worker (printed per cause).
 * On failure it prints, per partition with unhandled messages, where they
 * are and who holds the partition. Real time, polling with deadlines,
 * loopback only. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <pthread.h>

#define NP 64
#define NW 4
#define RATE 2000          /* messages per second */
#define MAX_MSGS 60000
#define SLOW_US 150        /* worker 1's handler takes this long */
#define PRODUCE_MS 14000   /* the producer runs this long */
#define DRAIN_STALL_MS 10000 /* after it: no message handled for this long with some unhandled fails */
#define RUN_CAP_MS 90000   /* and the whole run ends by then */

typedef struct wk {
    parti_transport t;
    parti *p;
    pthread_t th;
    pthread_mutex_t mu;    /* held by the worker's thread while it polls; by the main thread to act on it */
    int running;           /* the thread runs (joined at the end) */
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
static uint64_t published, handled_total;
static pthread_mutex_t rec_mu = PTHREAD_MUTEX_INITIALIZER; /* the record above, written by every handler */
static volatile int stop_threads;

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
    pthread_mutex_lock(&rec_mu);
    handled_total++;
    if (m->generation < last_gen[p]) gen_bad++;
    if (m->generation > last_gen[p]) last_gen[p] = m->generation;
    if (times[m->stream_seq]++ == 0) {
        first_by[m->stream_seq] = (signed char)idx;
        if (m->stream_seq < last_first[p]) order_bad++;
        last_first[p] = m->stream_seq;
    }
    pthread_mutex_unlock(&rec_mu);
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

/* A worker's thread: polls while the worker is alive and not paused. */
static void *worker_main(void *arg) {
    wk *x = (wk *)arg;
    while (!stop_threads) {
        int polled = 0;
        pthread_mutex_lock(&x->mu);
        if (x->alive && !x->paused && x->p) {
            parti_poll(x->p, 5);
            polled = 1;
        }
        pthread_mutex_unlock(&x->mu);
        if (!polled) { /* paused or gone: nothing to do until the main thread says otherwise */
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void start(int i) {
    char err[512];
    parti_transport t;
    parti_err e;
    cr_assert_eq(parti_nats_connect(&t, nats_server_url(srv), NULL, err, sizeof err), PARTI_ERR_OK, "%s", err);
    opts.user = &w[i];
    pthread_mutex_lock(&w[i].mu);
    w[i].t = t;
    e = parti_create(&w[i].p, &w[i].t, &cfg, &opts, err, sizeof err);
    w[i].alive = e == PARTI_ERR_OK;
    pthread_mutex_unlock(&w[i].mu);
    cr_assert_eq(e, PARTI_ERR_OK, "%s", err);
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
    published = handled_total = 0;
    stop_threads = 0;
    for (i = 0; i < NW; i++) {
        memset(&w[i], 0, sizeof w[i]);
        pthread_mutex_init(&w[i].mu, NULL);
    }
    for (i = 0; i < NW; i++) {
        cr_assert_eq(pthread_create(&w[i].th, NULL, worker_main, &w[i]), 0);
        w[i].running = 1;
    }
}

static void teardown(void) {
    int i;
    stop_threads = 1;
    for (i = 0; i < NW; i++)
        if (w[i].running) pthread_join(w[i].th, NULL), w[i].running = 0;
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

/* Sets worker i's paused flag (its thread finishes the poll it is in). */
static void set_paused(int i, int v) {
    pthread_mutex_lock(&w[i].mu);
    w[i].paused = v;
    pthread_mutex_unlock(&w[i].mu);
}

static int all_owned(void) {
    int owners[NP] = {0}, i, j;
    for (i = 0; i < NW; i++) {
        const int *o;
        int n = 0;
        pthread_mutex_lock(&w[i].mu);
        if (w[i].alive && !w[i].paused) {
            n = parti_owned(w[i].p, &o);
            for (j = 0; j < n; j++) owners[o[j]]++;
        }
        pthread_mutex_unlock(&w[i].mu);
    }
    for (i = 0; i < NP; i++)
        if (owners[i] != 1) return 0;
    return 1;
}

static uint64_t unhandled(void) {
    uint64_t s, n = 0;
    pthread_mutex_lock(&rec_mu);
    for (s = 1; s <= MAX_MSGS; s++)
        if (pub_part[s] >= 0 && !times[s]) n++;
    pthread_mutex_unlock(&rec_mu);
    return n;
}

static void nap_ms(long ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* Where the unhandled messages are: per partition, how many, the range, the
 * last handled, and which workers hold it (called with every thread stopped). */
static void report_unhandled(void) {
    uint64_t lo[NP] = {0}, hi[NP] = {0}, cnt[NP] = {0}, last[NP] = {0}, s;
    int i, j, k;
    for (s = 1; s <= MAX_MSGS; s++) {
        int p = pub_part[s];
        if (p < 0) continue;
        if (times[s]) {
            last[p] = s;
            continue;
        }
        if (!cnt[p]++) lo[p] = s;
        hi[p] = s;
    }
    for (i = 0; i < NP; i++) {
        char who[96] = "";
        if (!cnt[i]) continue;
        for (j = 0; j < NW; j++) {
            const int *o;
            int n;
            if (!w[j].p) continue;
            n = parti_owned(w[j].p, &o);
            for (k = 0; k < n; k++)
                if (o[k] == i)
                    snprintf(who + strlen(who), sizeof who - strlen(who), " w%d%s", j,
                             !w[j].alive ? "(gone)" : w[j].paused ? "(paused)" : "");
        }
        cr_log_info("partition %d: %llu unhandled in [%llu, %llu], last handled %llu, held by%s", i,
                    (unsigned long long)cnt[i], (unsigned long long)lo[i], (unsigned long long)hi[i],
                    (unsigned long long)last[i], who[0] ? who : " nobody");
    }
}

TestSuite(handoff_nats, .init = setup, .fini = teardown, .timeout = 150);

Test(handoff_nats, joins_leaves_a_crash_and_a_pause_under_load_lose_nothing) {
    uint64_t t0, now, deadline, s, dup_crash = 0, dup_pause = 0, dup_other = 0, progress_at = 0, seen = 0;
    uint64_t left_unhandled = 0, checked_at = 0;
    int i, joined = 0, left = 0, crashed = 0, paused = 0, resumed = 0;
    for (i = 0; i < 3; i++) start(i);
    deadline = ms_now() + 20000;
    while (!all_owned() && ms_now() < deadline) nap_ms(5);
    cr_assert(all_owned(), "the group did not settle");
    t0 = ms_now();
    for (now = t0; now - t0 < RUN_CAP_MS; now = ms_now()) {
        uint64_t at = now - t0;
        if (at < PRODUCE_MS) produce(t0, now);
        if (!joined && at >= 2000) joined = 1, start(3);
        if (!left && at >= 5000) { /* graceful leave of worker 2 */
            parti_err e;
            left = 1;
            pthread_mutex_lock(&w[2].mu);
            e = parti_leave(w[2].p, 3000);
            w[2].alive = 0;
            pthread_mutex_unlock(&w[2].mu);
            cr_assert_eq(e, PARTI_ERR_OK);
        }
        if (!crashed && at >= 8000) { /* kill -9 of worker 0: no leave, connection gone */
            crashed = 1;
            pthread_mutex_lock(&w[0].mu);
            parti_destroy(w[0].p);
            w[0].p = NULL;
            parti_nats_close(&w[0].t);
            w[0].t.vt = NULL;
            w[0].alive = 0;
            w[0].crashed = 1;
            pthread_mutex_unlock(&w[0].mu);
        }
        if (!paused && at >= 10000) paused = 1, set_paused(3, 1);                /* SIGSTOP */
        if (paused && !resumed && at >= 12500) resumed = 1, set_paused(3, 0); /* SIGCONT, past the TTL */
        if (at >= PRODUCE_MS && now - checked_at >= 100) { /* the drain: done, progressing, or stalled */
            uint64_t h;
            checked_at = now;
            if ((left_unhandled = unhandled()) == 0) break;
            pthread_mutex_lock(&rec_mu);
            h = handled_total;
            pthread_mutex_unlock(&rec_mu);
            if (h != seen || !progress_at) seen = h, progress_at = now;
            if (now - progress_at >= DRAIN_STALL_MS) break;
        }
        if (at >= PRODUCE_MS) nap_ms(5);
        else nap_ms(1);
    }
    stop_threads = 1; /* every worker stops where it is: the record is final */
    for (i = 0; i < NW; i++)
        if (w[i].running) pthread_join(w[i].th, NULL), w[i].running = 0;
    cr_log_info("drained %.1f s after the producer stopped", (double)(ms_now() - t0 - PRODUCE_MS) / 1000.0);
    left_unhandled = unhandled();
    if (left_unhandled) report_unhandled();
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
    cr_assert_eq(left_unhandled, 0, "%llu messages never handled (no progress for %d ms, or the %d ms cap)",
                 (unsigned long long)left_unhandled, DRAIN_STALL_MS, RUN_CAP_MS);
    cr_assert_eq(order_bad, 0, "per-partition order broken %d times", order_bad);
    cr_assert_eq(gen_bad, 0, "a stale owner handled a message after a newer one (fencing token went down)");
    for (i = 0; i < NW; i++)
        cr_assert_eq(w[i].outside, 0, "worker %d handled %d messages of partitions it was not assigned", i,
                     w[i].outside);
    cr_assert_eq(dup_other, 0, "duplicates no crash or pause explains: %llu", (unsigned long long)dup_other);
}

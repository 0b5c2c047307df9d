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
 * Three more runs take the server away under the same load (three workers):
 * a restart, a kill -9 with the server down past the member TTL, and a hang
 * (SIGSTOP) past the TTL; the stream and buckets are on file storage. Nothing lost, order and fencing
 * hold; duplicates (leases that ran out while cut off) are printed.
 * On failure it prints, per partition with unhandled messages, where they
 * are and who holds the partition. Real time, polling with deadlines,
 * loopback only. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <criterion/criterion.h>
#include <errno.h>
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

static void nap_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = ms % 1000 * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Publishes what is due at RATE since t0 (round robin over partitions), each
 * message under a Nats-Msg-Id. retry_ms 0: one try each, a failed publish is
 * counted and skipped. Otherwise each is retried until the server
 * acknowledges it (for at most retry_ms), so a publish whose reply a restart
 * lost is stored once and recorded all the same; 0 when one could not be
 * stored in time. */
static int produce(uint64_t t0, uint64_t now, uint32_t retry_ms) {
    uint64_t due = (now - t0) * RATE / 1000;
    while (published < due && published < MAX_MSGS) {
        char subj[16], id[32];
        parti_pub_ack pa;
        parti_header h;
        int p = (int)(published % NP);
        uint64_t until = ms_now() + retry_ms;
        parti_err e;
        snprintf(subj, sizeof subj, "ho.p%d", p);
        snprintf(id, sizeof id, "m%llu", (unsigned long long)published);
        h.name = "Nats-Msg-Id";
        h.value = id;
        while ((e = ob.vt->publish(ob.self, subj, &h, 1, "x", 1, &pa, 2000)) != PARTI_ERR_OK && ms_now() < until)
            nap_ms(20);
        if (e != PARTI_ERR_OK && retry_ms) return 0;
        published++;
        if (e == PARTI_ERR_OK && pa.stream_seq <= MAX_MSGS) pub_part[pa.stream_seq] = (signed char)p;
    }
    return 1;
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

/* The drain after the producer stopped (call every loop turn): 1 when every
 * recorded message was handled, or when none was for DRAIN_STALL_MS. */
typedef struct drain_state {
    uint64_t checked_at, progress_at, seen;
} drain_state;

static int drained(drain_state *d, uint64_t now) {
    uint64_t h;
    if (now - d->checked_at < 100) return 0;
    d->checked_at = now;
    if (unhandled() == 0) return 1;
    pthread_mutex_lock(&rec_mu);
    h = handled_total;
    pthread_mutex_unlock(&rec_mu);
    if (h != d->seen || !d->progress_at) d->seen = h, d->progress_at = now;
    return now - d->progress_at >= DRAIN_STALL_MS;
}

/* Stops every worker where it is (the record is final from then on), prints
 * the drain time, where unhandled messages are, and the duplicates, each
 * counted against the worker that handled the message first: dups[w]. */
static uint64_t stop_and_account(uint64_t t0, uint64_t produce_ms, uint64_t dups[NW]) {
    uint64_t left, s;
    int i;
    stop_threads = 1;
    for (i = 0; i < NW; i++)
        if (w[i].running) pthread_join(w[i].th, NULL), w[i].running = 0;
    cr_log_info("drained %.1f s after the producer stopped", (double)(ms_now() - t0 - produce_ms) / 1000.0);
    if ((left = unhandled()) != 0) report_unhandled();
    for (i = 0; i < NW; i++) dups[i] = 0;
    for (s = 1; s <= MAX_MSGS; s++)
        if (times[s] > 1 && first_by[s] >= 0 && first_by[s] < NW) dups[(int)first_by[s]] += times[s] - 1u;
    return left;
}

/* What holds whatever the faults: every recorded message handled, order,
 * fencing, nothing outside a worker's assignment. */
static void assert_record(uint64_t left) {
    int i;
    cr_assert_eq(left, 0, "%llu messages never handled (no progress for %d ms, or the %d ms cap)",
                 (unsigned long long)left, DRAIN_STALL_MS, RUN_CAP_MS);
    cr_assert_eq(order_bad, 0, "per-partition order broken %d times", order_bad);
    cr_assert_eq(gen_bad, 0, "a stale owner handled a message after a newer one (fencing token went down)");
    for (i = 0; i < NW; i++)
        cr_assert_eq(w[i].outside, 0, "worker %d handled %d messages of partitions it was not assigned", i,
                     w[i].outside);
}

/* Workers 0, 1 and 2 start; every partition gets exactly one owner. */
static void start_three_and_settle(void) {
    uint64_t deadline;
    int i;
    for (i = 0; i < 3; i++) start(i);
    deadline = ms_now() + 20000;
    while (!all_owned() && ms_now() < deadline) nap_ms(5);
    cr_assert(all_owned(), "the group did not settle");
}

TestSuite(handoff_nats, .init = setup, .fini = teardown, .timeout = 150);

Test(handoff_nats, joins_leaves_a_crash_and_a_pause_under_load_lose_nothing) {
    uint64_t t0, now, dups[NW], left;
    drain_state d = {0, 0, 0};
    int joined = 0, left_gracefully = 0, crashed = 0, paused = 0, resumed = 0;
    start_three_and_settle();
    t0 = ms_now();
    for (now = t0; now - t0 < RUN_CAP_MS; now = ms_now()) {
        uint64_t at = now - t0;
        if (at < PRODUCE_MS) produce(t0, now, 0);
        if (!joined && at >= 2000) joined = 1, start(3);
        if (!left_gracefully && at >= 5000) { /* graceful leave of worker 2 */
            parti_err e;
            left_gracefully = 1;
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
        if (at >= PRODUCE_MS && drained(&d, now)) break;
        nap_ms(at >= PRODUCE_MS ? 5 : 1);
    }
    left = stop_and_account(t0, PRODUCE_MS, dups);
    cr_log_info("%llu published; duplicates by cause: crash %llu, pause past the TTL %llu, other %llu",
                (unsigned long long)published, (unsigned long long)dups[0], (unsigned long long)dups[3],
                (unsigned long long)(dups[1] + dups[2]));
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
    assert_record(left);
    cr_assert_eq(dups[1] + dups[2], 0, "duplicates no crash or pause explains: %llu",
                 (unsigned long long)(dups[1] + dups[2]));
}

/* The server goes away while three workers (one slow) handle 2,000 msg/s
 * and comes back on the same port and store: a restart (SIGTERM, at once),
 * a crash (kill -9) with the server down for down_ms, or a hang (SIGSTOP,
 * then SIGCONT after down_ms: connections stay open, nothing answers). The
 * stream and the buckets are on file storage, so they come back. Every worker is cut off
 * meanwhile: its lease may run out and its partitions move (duplicates of
 * what it handled after its last checkpoint, printed), but nothing is lost,
 * and order and fencing hold. The producer retries each message under a
 * Nats-Msg-Id until it is stored (it waits while the server is down). */
#define RESTART_PRODUCE_MS 10000
enum { OUTAGE_RESTART, OUTAGE_KILL, OUTAGE_HANG };
static void run_server_outage(int how, uint32_t down_ms) {
    char err[512];
    uint64_t t0, now, dups[NW], left, out_ms = 0;
    drain_state d = {0, 0, 0};
    int restarted = 0;
    start_three_and_settle();
    t0 = ms_now();
    for (now = t0; now - t0 < RUN_CAP_MS; now = ms_now()) {
        uint64_t at = now - t0, total = RESTART_PRODUCE_MS * RATE / 1000;
        /* (every message due in the first RESTART_PRODUCE_MS, however long the outage held it up) */
        if (published < total)
            cr_assert(produce(t0, at < RESTART_PRODUCE_MS ? now : t0 + RESTART_PRODUCE_MS, 20000),
                      "message %llu could not be stored for 20 s", (unsigned long long)published);
        if (!restarted && at >= 4000) {
            uint64_t r0 = ms_now();
            restarted = 1;
            if (how == OUTAGE_HANG) { /* SIGSTOP: connections stay open, nothing answers */
                cr_assert_eq(nats_server_suspend(srv, err, sizeof err), 0, "%s", err);
                nap_ms((long)down_ms);
                cr_assert_eq(nats_server_resume(srv, err, sizeof err), 0, "%s", err);
            } else {
                if (how == OUTAGE_KILL) {
                    cr_assert_eq(nats_server_kill(srv, err, sizeof err), 0, "%s", err);
                    nap_ms((long)down_ms);
                }
                cr_assert_eq(nats_server_restart(srv, err, sizeof err), 0, "%s", err);
            }
            out_ms = ms_now() - r0;
        }
        if (published >= total && drained(&d, now)) break;
        nap_ms(published >= total ? 5 : 1);
    }
    left = stop_and_account(t0, RESTART_PRODUCE_MS, dups);
    cr_log_info("%llu published (the server was away %.1f s); duplicates by first handler: w0 %llu, w1 %llu, "
                "w2 %llu",
                (unsigned long long)published, (double)out_ms / 1000.0, (unsigned long long)dups[0],
                (unsigned long long)dups[1], (unsigned long long)dups[2]);
    cr_assert_eq(published, RESTART_PRODUCE_MS * RATE / 1000, "the producer stopped at %llu",
                 (unsigned long long)published);
    assert_record(left);
}

Test(handoff_nats, a_server_restart_under_load_loses_nothing) { run_server_outage(OUTAGE_RESTART, 0); }

Test(handoff_nats, a_server_crash_down_past_the_ttl_under_load_loses_nothing) { run_server_outage(OUTAGE_KILL, 2500); }

Test(handoff_nats, a_server_hung_past_the_ttl_under_load_loses_nothing) { run_server_outage(OUTAGE_HANG, 2500); }

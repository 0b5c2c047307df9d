/* Benchmarks of the group (parti_create / parti_poll / parti_leave) on a local
 * nats-server started for the run (loopback, random port, temp dir, stopped
 * at the end). Three workers live in this one process, each with its own
 * connection (parti_nats_connect) and parti object, polled round-robin with
 * parti_poll(p, 5) on this thread; 12 partitions "p0".."p11", template
 * "bench.{0}", stream "bench" on "bench.>", KV buckets in memory.
 *
 * Each repetition starts from a stable group (every partition owned by
 * exactly one of the 3 workers, each consumer on its filter, one leader),
 * takes one worker away, publishes one marker message to a partition that
 * worker owned, and measures until the handler of the new owner sees it.
 * Then a fresh worker is started and the group is left to settle again;
 * the next repetition starts 260 ms after that rebalance, so
 * min_rebalance_interval_ms (250) does not delay the one measured.
 *   graceful  parti_leave(p, 5000) on the owner (a non-leader, then the
 *             leader), on a thread of its own while the others go on being
 *             polled (as separate processes would: a leaving leader waits for
 *             them to claim what it released), the marker published as soon
 *             as leave returns, then parti_destroy + parti_nats_close; clock
 *             from the leave call
 *   crash     parti_destroy without leave and parti_nats_close (nothing
 *             renews its key: in-process kill -9), the marker published at
 *             once; clock from the destroy
 * Baselines measured in the same run: one raw nats.c kvStore_Get round trip
 * (graceful: planned_window_ms + that round trip) and the member TTL (crash).
 * The stages printed are the first time, counted from the same start, that
 * the group got there: the leader (or a new one) saw the change, an
 * assignment was published, the new owner applied it, its consumer changed
 * its filter on the server, the marker was handled.
 *
 * Two sections: fast timings (heartbeat 250 ms, TTL 1500 ms, cold start
 * 500 ms, planned window 100 ms, emergency grace 50 ms) and the defaults
 * (1000 / 5000 / 2000 / 500 / 100), shorter.
 * Environment: PARTI_BENCH_REPS = repetitions of each fast scenario (default
 * 20, 1..64; the fast leader crash runs a fifth as many); PARTI_BENCH_DEFAULTS=0
 * skips the defaults section; PARTI_BENCH_TIMELINE=1 prints every timeline;
 * PARTI_BENCH_ONLY=leave|leave-leader|crash|crash-leader runs only that fast
 * scenario, PARTI_BENCH_REPS times (the leader crash too), and no defaults.
 *
 * Also printed: how the new owner's consumer took the partition (with a
 * catch-up that read messages from the stream after the checkpoint, or with
 * none to read), and at the end how many markers were handled late or more than
 * once. A marker handled again is printed when it happens; it is explained
 * only when the worker that handled it first was crashed later (before it
 * committed that checkpoint), and any other repeat is an anomaly (every
 * marker is published after its worker left). Anomalies: a marker not handled 1.25 s (more than
 * the 1 s fetch heartbeat) after a live worker's consumer has its subject, a
 * marker handled by a worker that does not own its partition, a partition
 * owned by two live workers while the marker is on its way. Each is printed
 * with what the server says about the durables (the first two of a scenario
 * with the repetition's timeline too); the run goes on and exits 1 at the
 * end. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "../tests/nats_server.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NP 12
#define NW 3
#define MAX_REPS 64
#define MAX_INC 1024
#define MAX_EVENTS 512
#define POLL_MS 5
#define STABLE_ROUNDS 3        /* consecutive rounds the stable check must hold */
#define KV_RTT_SAMPLES 50
#define LEAVE_TIMEOUT_MS 5000
#define MAX_MARKERS 256
#define GIVE_UP_S 1.25         /* after the new owner's consumer has the marker's subject: > fetch heartbeat */
#define REBALANCE_GAP_S 0.26   /* min_rebalance_interval_ms (250) after the last rebalance */
#define FULL_REPORTS 2         /* anomalies per scenario printed with their timeline */

/* ---- failure and time ------------------------------------------------------ */

static nats_server *server; /* stopped by fail() before exiting */

static void fail(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
static void fail(const char *fmt, ...) {
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "bench_group: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (server) {
        nats_server_print_log_tail(server, stderr, 20);
        nats_server_stop(server, NULL, 0);
        server = NULL;
    }
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n values (sorted in place); -1 when n is 0. */
static double percentile(double *v, int n, double p) {
    int i = (int)(p * n + 0.999999) - 1;
    if (n <= 0) return -1;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

/* ---- the group under test ------------------------------------------------------ */

typedef struct worker {
    parti_transport t;
    parti *p;
    int live;
    int slot;
    int inc; /* which start of the slot (g.incarnation) */
} worker;

/* One entry of a repetition's timeline. */
enum { TL_GROUP, TL_CONSUMER, TL_MARKER, TL_STRAY, TL_NOTE };

typedef struct tl_event {
    double at; /* seconds since the repetition's start */
    int slot;
    int source; /* TL_* */
    int kind;   /* parti_event_kind or parti_consumer_event_kind */
    char id[16];
    char detail[64];
} tl_event;

typedef struct timings {
    const char *name;
    uint32_t heartbeat_ms, member_ttl_ms, cold_start_ms, planned_window_ms, emergency_grace_ms; /* 0 = default */
} timings;

/* Every marker published, to tell a late or repeated handling from a first one. */
typedef struct marker_rec {
    char text[48];
    int handled; /* times */
    int missed;  /* its repetition gave up waiting */
    int first_inc; /* the worker (incarnation) that handled it first */
} marker_rec;

typedef struct bench {
    natsConnection *nc; /* raw nats.c: stream, markers, the KV baseline */
    parti_transport obs; /* reads consumer info for the report of an anomaly */
    jsCtx *js;
    const char *url;
    worker w[NW];
    parti_config cfg;
    parti_options opts;
    char bucket_prefix[32], consumer_prefix[32];
    int incarnation;
    /* the repetition under way */
    double t0;
    char marker[64];
    int marker_part;
    uint64_t marker_seq;
    double marker_at;
    int marker_slot, marker_owner_ok;
    tl_event ev[MAX_EVENTS];
    int nev, ev_dropped;
    int *overlaps; /* where poll_round counts rounds with a partition owned twice */
    int print_all; /* PARTI_BENCH_TIMELINE=1 */
    double last_rebalance; /* when a leader last published an assignment */
    marker_rec mk[MAX_MARKERS];
    int nmk;
    /* totals of the run */
    long others, anomalies;
    int crashed[MAX_INC]; /* by incarnation: the worker was crashed (destroyed without a leave) */
    int dup_crash, dup_other;
} bench;

static bench g;
/* the timeline and the counters: a leaving worker's parti_leave runs on its
 * own thread (as it would in its own process) while the others are polled */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const keys[NP][1] = {{"p0"}, {"p1"}, {"p2"}, {"p3"}, {"p4"},  {"p5"},
                                        {"p6"}, {"p7"}, {"p8"}, {"p9"}, {"p10"}, {"p11"}};
static parti_partition parts[NP];

static void tl_add(int slot, int source, int kind, const char *id, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
static void tl_add(int slot, int source, int kind, const char *id, const char *fmt, ...) {
    tl_event *e;
    va_list ap;
    pthread_mutex_lock(&g_lock);
    if (g.nev >= MAX_EVENTS) {
        g.ev_dropped++;
        pthread_mutex_unlock(&g_lock);
        return;
    }
    e = &g.ev[g.nev++];
    e->at = now_s() - g.t0;
    e->slot = slot;
    e->source = source;
    e->kind = kind;
    snprintf(e->id, sizeof e->id, "%s", id && id[0] ? id : "-");
    va_start(ap, fmt);
    vsnprintf(e->detail, sizeof e->detail, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&g_lock);
}

static void tl_reset(void) {
    g.nev = 0;
    g.ev_dropped = 0;
    g.t0 = now_s();
}

static void tl_print(const char *title) {
    int i;
    printf("  timeline of %s (ms from the start; slot, worker ID):\n", title);
    for (i = 0; i < g.nev; i++) {
        const tl_event *e = &g.ev[i];
        const char *what = e->source == TL_GROUP      ? parti_event_name((parti_event_kind)e->kind)
                           : e->source == TL_CONSUMER ? parti_consumer_event_name((parti_consumer_event_kind)e->kind)
                           : e->source == TL_MARKER   ? "marker handled"
                           : e->source == TL_STRAY    ? "other message handled"
                                                      : "bench";
        printf("    %+9.1f  w%d %-9s %-10s %s %s\n", e->at * 1e3, e->slot, e->id,
               e->source == TL_CONSUMER ? "consumer" : e->source == TL_GROUP ? "group" : "", what, e->detail);
    }
    if (g.ev_dropped) printf("    (%d later events not kept)\n", g.ev_dropped);
}

static int owns(const parti *p, int partition) {
    const int *o = NULL;
    int i, n = parti_owned(p, &o);
    for (i = 0; i < n; i++)
        if (o[i] == partition) return 1;
    return 0;
}

static marker_rec *find_marker(const parti_msg *m) {
    int i;
    for (i = g.nmk - 1; i >= 0; i--)
        if (m->len == strlen(g.mk[i].text) && memcmp(m->data, g.mk[i].text, m->len) == 0) return &g.mk[i];
    return NULL;
}

static parti_verdict on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    worker *w = (worker *)user;
    marker_rec *r = find_marker(m);
    int current = r && g.marker[0] && strcmp(r->text, g.marker) == 0;
    (void)nak_delay_ms;
    if (r && ++r->handled == 1) r->first_inc = w->inc;
    if (r && r->handled > 1) {
        /* every marker is published after its worker left or died; a later
         * crash of the worker that handled it first (before its checkpoint
         * was committed) explains a repeat, nothing else does */
        int explained = r->first_inc > 0 && r->first_inc < MAX_INC && g.crashed[r->first_inc];
        if (explained) g.dup_crash++;
        else g.dup_other++;
        printf("  %s: marker %s handled again (time %d) by w%d %s, seq %llu, delivery %u, during %s\n",
               explained ? "duplicate after its first handler crashed" : "DUPLICATE (unexplained)", r->text,
               r->handled, w->slot, parti_worker_id(w->p), (unsigned long long)m->stream_seq, m->delivery_count,
               current ? "its repetition" : "a later step");
    }
    if (current && r->handled == 1) {
        g.marker_at = now_s();
        g.marker_slot = w->slot;
        g.marker_owner_ok = owns(w->p, g.marker_part);
    }
    if (!current) g.others++;
    tl_add(w->slot, current ? TL_MARKER : TL_STRAY, 0, parti_worker_id(w->p), "%s%.*s on %s, seq %llu, delivery %u",
           !r ? "not a marker: " : current ? "" : r->handled > 1 ? "again: " : "late: ", (int)(m->len < 40 ? m->len : 40),
           (const char *)m->data, m->subject, (unsigned long long)m->stream_seq, m->delivery_count);
    return PARTI_ACK;
}

static void on_event(void *user, const parti_event *ev) {
    worker *w = (worker *)user;
    if (ev->kind == PARTI_EVENT_REBALANCED) {
        pthread_mutex_lock(&g_lock);
        g.last_rebalance = now_s();
        pthread_mutex_unlock(&g_lock);
    }
    if (ev->kind == PARTI_EVENT_REBALANCED)
        tl_add(w->slot, TL_GROUP, (int)ev->kind, ev->worker_id, "v%llu e%llu moved %d", (unsigned long long)ev->version,
               (unsigned long long)ev->epoch, ev->moved);
    else
        tl_add(w->slot, TL_GROUP, (int)ev->kind, ev->worker_id, "%s%sv%llu e%llu owns %d", ev->detail,
               ev->detail[0] ? " " : "", (unsigned long long)ev->version, (unsigned long long)ev->epoch,
               ev->partitions);
}

static void on_consumer_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    worker *w = (worker *)user;
    tl_add(w->slot, TL_CONSUMER, (int)kind, w->p ? parti_worker_id(w->p) : "", "%s%s%s", detail,
           err ? " " : "", err ? parti_strerror(err) : "");
}

static void start_worker(int slot) {
    worker *w = &g.w[slot];
    parti_nats_options no;
    char name[32], msg[512];
    parti_err e;
    memset(&no, 0, sizeof no);
    snprintf(name, sizeof name, "bench-w%d-%d", slot, ++g.incarnation);
    w->inc = g.incarnation;
    no.name = name;
    w->slot = slot;
    w->p = NULL;
    if ((e = parti_nats_connect(&w->t, g.url, &no, msg, sizeof msg)) != PARTI_ERR_OK)
        fail("worker %d: connect: %s", slot, msg);
    g.opts.user = w;
    if ((e = parti_create(&w->p, &w->t, &g.cfg, &g.opts, msg, sizeof msg)) != PARTI_ERR_OK)
        fail("worker %d: parti_create: %s: %s", slot, parti_strerror(e), msg);
    w->live = 1;
}

static void drop_worker(int slot) {
    worker *w = &g.w[slot];
    parti_destroy(w->p);
    parti_nats_close(&w->t);
    w->p = NULL;
    w->live = 0;
}

/* One round of the poll loop; counts a round where two live workers own the
 * same partition. */
static void poll_round(void) {
    int count[NP], i, j, twice = 0;
    memset(count, 0, sizeof count);
    for (i = 0; i < NW; i++) {
        const int *o = NULL;
        int n;
        if (!g.w[i].live) continue;
        parti_poll(g.w[i].p, POLL_MS);
        n = parti_owned(g.w[i].p, &o);
        for (j = 0; j < n; j++)
            if (o[j] >= 0 && o[j] < NP && ++count[o[j]] == 2) twice = 1;
    }
    if (twice && g.overlaps) (*g.overlaps)++;
}

/* Every live worker stable on the same version with a non-empty share, its
 * consumer on exactly that share, one leader, every partition owned once. */
static int group_stable(char *why, size_t why_size) {
    int count[NP], i, j, leaders = 0, live = 0;
    uint64_t version = 0;
    memset(count, 0, sizeof count);
    for (i = 0; i < NW; i++) {
        const worker *w = &g.w[i];
        const parti_subjects *s;
        const int *o = NULL;
        int n;
        if (!w->live) continue;
        live++;
        if (parti_state_of(w->p) != PARTI_STATE_STABLE) {
            snprintf(why, why_size, "w%d (%s) is %s", i, parti_worker_id(w->p), parti_state_name(parti_state_of(w->p)));
            return 0;
        }
        if (!version) version = parti_assignment_version_of(w->p);
        if (parti_assignment_version_of(w->p) != version) {
            snprintf(why, why_size, "versions differ (%llu, %llu)", (unsigned long long)version,
                     (unsigned long long)parti_assignment_version_of(w->p));
            return 0;
        }
        leaders += parti_is_leader(w->p);
        n = parti_owned(w->p, &o);
        s = parti_consumer_subjects(parti_consumer_of(w->p));
        if (n == 0 || !s || s->count != n) {
            snprintf(why, why_size, "w%d owns %d partitions, its consumer has %d subjects", i, n, s ? s->count : -1);
            return 0;
        }
        for (j = 0; j < n; j++) count[o[j]]++;
    }
    if (live != NW || leaders != 1) {
        snprintf(why, why_size, "%d live workers, %d leaders", live, leaders);
        return 0;
    }
    for (i = 0; i < NP; i++)
        if (count[i] != 1) {
            snprintf(why, why_size, "partition p%d owned %d times", i, count[i]);
            return 0;
        }
    return 1;
}

static double wait_stable(double limit_s, const char *what) {
    char why[160] = "not checked yet";
    double t0 = now_s(), deadline = t0 + limit_s;
    int rounds = 0;
    while (rounds < STABLE_ROUNDS) {
        if (now_s() > deadline) {
            tl_print(what);
            fail("%s: the group was not stable within %.1f s: %s", what, limit_s, why);
        }
        poll_round();
        rounds = group_stable(why, sizeof why) ? rounds + 1 : 0;
    }
    return now_s() - t0;
}

/* Each repetition starts with the group at rest: min_rebalance_interval_ms
 * after the restore's rebalance, so it does not delay the next one. */
static void wait_rebalance_gap(void) {
    double deadline = now_s() + 2 * REBALANCE_GAP_S;
    while (now_s() < g.last_rebalance + REBALANCE_GAP_S && now_s() < deadline) poll_round();
}

static int owner_slot(int partition) {
    int i;
    for (i = 0; i < NW; i++)
        if (g.w[i].live && owns(g.w[i].p, partition)) return i;
    return -1;
}

/* ---- the raw baselines -------------------------------------------------------------- */

static double raw_kv_get_ms(void) {
    char bucket[64];
    double v[KV_RTT_SAMPLES];
    kvStore *kv = NULL;
    int i;
    snprintf(bucket, sizeof bucket, "%s-bench-assign", g.bucket_prefix);
    if (js_KeyValue(&kv, g.js, bucket) != NATS_OK) fail("raw js_KeyValue(%s) failed", bucket);
    for (i = 0; i < KV_RTT_SAMPLES; i++) {
        kvEntry *e = NULL;
        double t0 = now_s();
        if (kvStore_Get(&e, kv, "assignment") != NATS_OK) fail("raw kvStore_Get(%s, assignment) failed", bucket);
        v[i] = (now_s() - t0) * 1e3;
        kvEntry_Destroy(e);
    }
    kvStore_Destroy(kv);
    return percentile(v, KV_RTT_SAMPLES, 0.5);
}

static void publish_marker(int partition) {
    char subject[32];
    jsErrCode jerr = 0;
    jsPubAck *pa = NULL;
    snprintf(subject, sizeof subject, "bench.p%d", partition);
    if (js_Publish(&pa, g.js, subject, g.marker, (int)strlen(g.marker), NULL, &jerr) != NATS_OK)
        fail("publishing %s to %s failed (%d)", g.marker, subject, (int)jerr);
    g.marker_seq = pa->Sequence;
    jsPubAck_Destroy(pa);
    if (g.nmk >= MAX_MARKERS) fail("more than %d markers", MAX_MARKERS);
    snprintf(g.mk[g.nmk++].text, sizeof g.mk[0].text, "%s", g.marker);
}

/* What the server says about a worker's durable, and the worker's own counts. */
static void print_durable(const char *prefix, const char *id, const worker *w) {
    char durable[PARTI_MAX_NAME_LEN + 1], filters[160] = "";
    parti_consumer_info ci;
    parti_err e;
    int i;
    size_t len = 0;
    if (parti_consumer_name(g.consumer_prefix, id, durable, sizeof durable, NULL, 0) != PARTI_ERR_OK) return;
    memset(&ci, 0, sizeof ci);
    if ((e = g.obs.vt->consumer_info(g.obs.self, "bench", durable, &ci, 5000)) != PARTI_ERR_OK) {
        printf("%s%s: consumer info: %s\n", prefix, durable, parti_strerror(e));
        return;
    }
    for (i = 0; i < ci.filter_count && len < sizeof filters - 1; i++) {
        int k = snprintf(filters + len, sizeof filters - len, "%s%s", i ? "," : "", ci.filter_subjects[i] + 6);
        if (k < 0) break;
        len += (size_t)k;
    }
    printf("%s%s: delivered stream seq %llu, ack floor %llu, pending %llu, ack pending %llu, redelivered %llu, "
           "filter bench.{%s}", prefix, durable, (unsigned long long)ci.delivered_stream_seq,
           (unsigned long long)ci.ack_floor_stream_seq, (unsigned long long)ci.num_pending,
           (unsigned long long)ci.num_ack_pending, (unsigned long long)ci.num_redelivered, filters);
    parti_consumer_info_free(&ci);
    if (w) {
        const parti_metrics *m = parti_metrics_of(w->p);
        printf("; worker: catch-up reads %llu, skipped %llu, recreations %llu, updates %llu",
               (unsigned long long)m->consumer_catch_up_reads.value,
               (unsigned long long)m->consumer_handoff_skipped.value,
               (unsigned long long)m->consumer_recreations.value,
               (unsigned long long)m->consumer_updates_success.value);
    }
    printf("\n");
}

static void print_durables(const char *gone_id) {
    int i;
    printf("  the marker is stream seq %llu; durables now:\n", (unsigned long long)g.marker_seq);
    print_durable("    ", gone_id, NULL);
    for (i = 0; i < NW; i++)
        if (g.w[i].live) print_durable("    ", parti_worker_id(g.w[i].p), &g.w[i]);
}

/* ---- one scenario ------------------------------------------------------------------- */

enum { ST_GONE, ST_PUBLISHED, ST_POLLING, ST_DETECTED, ST_REBALANCED, ST_APPLIED, ST_CONSUMER, ST_HANDLED, ST_COUNT };
static const char *const stage_names[ST_COUNT] = {"", "marker published", "polling again", "leader saw it",
                                                  "assignment published", "new owner applied it",
                                                  "its consumer updated", "marker handled"};

typedef struct result {
    double stage[ST_COUNT][MAX_REPS]; /* ms from the start */
    int n[ST_COUNT];
    int crash, reps, ok, owner_wrong, overlap_handoff, overlap_restore, printed;
    /* marker handled (ms), split by how the new owner's consumer took the partition */
    double rewound[MAX_REPS], in_place[MAX_REPS];
    int n_rewound, n_in_place;
    double restore_s[MAX_REPS];
} result;

/* The first time after the start that the group reached each stage; events
 * of the worker taken away (slot gone) do not count. */
static void collect_stages(result *r, int gone, int new_owner) {
    double at[ST_COUNT], handled = (g.marker_at - g.t0) * 1e3;
    int i, s;
    for (s = ST_DETECTED; s < ST_HANDLED; s++) at[s] = -1;
    for (i = 0; i < g.nev; i++) {
        const tl_event *e = &g.ev[i];
        double ms = e->at * 1e3;
        if (ms > handled) break;
        if (e->slot == gone) continue;
        if (e->source == TL_GROUP && at[ST_DETECTED] < 0 &&
            (e->kind == PARTI_EVENT_MEMBER_LEFT || e->kind == PARTI_EVENT_BECAME_LEADER))
            at[ST_DETECTED] = ms;
        if (e->source == TL_GROUP && at[ST_REBALANCED] < 0 && e->kind == PARTI_EVENT_REBALANCED)
            at[ST_REBALANCED] = ms;
        if (e->slot == new_owner && e->source == TL_GROUP && at[ST_APPLIED] < 0 &&
            e->kind == PARTI_EVENT_ASSIGNMENT_CHANGED)
            at[ST_APPLIED] = ms;
        if (e->slot == new_owner && e->source == TL_CONSUMER && at[ST_CONSUMER] < 0 &&
            (e->kind == PARTI_EVENT_CONSUMER_UPDATED || e->kind == PARTI_EVENT_CONSUMER_RECREATED ||
             e->kind == PARTI_EVENT_CONSUMER_CREATED || e->kind == PARTI_EVENT_CONSUMER_RESUMED))
            at[ST_CONSUMER] = ms;
    }
    at[ST_HANDLED] = handled;
    for (s = ST_DETECTED; s < ST_COUNT; s++)
        if (at[s] >= 0) r->stage[s][r->n[s]++] = at[s];
}

/* Picks a partition (rotating with rep) whose owner is, or is not, the leader. */
static int pick_partition(int rep, int want_leader, int *slot) {
    int k;
    for (k = 0; k < NP; k++) {
        int part = (rep * 5 + k) % NP, s = owner_slot(part);
        if (s >= 0 && parti_is_leader(g.w[s].p) == want_leader) {
            *slot = s;
            return part;
        }
    }
    fail("no partition is owned by a %s", want_leader ? "leader" : "non-leader");
}

/* The live worker whose consumer has the partition's subject in its applied filter, -1 when none. */
static int consuming_slot(int partition) {
    char subject[32];
    int i, j;
    snprintf(subject, sizeof subject, "bench.p%d", partition);
    for (i = 0; i < NW; i++) {
        const parti_subjects *s;
        if (!g.w[i].live || !(s = parti_consumer_subjects(parti_consumer_of(g.w[i].p)))) continue;
        for (j = 0; j < s->count; j++)
            if (strcmp(s->items[j], subject) == 0) return i;
    }
    return -1;
}

static uint64_t rewinds_of(int slot) {
    return g.w[slot].live ? parti_metrics_of(g.w[slot].p)->consumer_catch_up_reads.value : 0;
}

static void stage_at(result *r, int s) { r->stage[s][r->n[s]++] = (now_s() - g.t0) * 1e3; }

/* Takes the owner away (leave or crash) and publishes the marker. */
typedef struct leave_job {
    parti *p;
    parti_err e;
    int done;
} leave_job;

static void *leave_thread(void *arg) {
    leave_job *j = (leave_job *)arg;
    parti_err e = parti_leave(j->p, LEAVE_TIMEOUT_MS);
    pthread_mutex_lock(&g_lock);
    j->e = e;
    j->done = 1;
    pthread_mutex_unlock(&g_lock);
    return NULL;
}

/* parti_leave on the worker in slot, on a thread of its own while the others
 * go on polling: a leaving leader waits for them to claim what it released,
 * as it would with each worker in its own process. */
static parti_err leave_while_polling(int slot) {
    leave_job j;
    pthread_t th;
    int done = 0;
    j.p = g.w[slot].p;
    j.e = PARTI_ERR_OK;
    j.done = 0;
    g.w[slot].live = 0; /* not polled meanwhile */
    if (pthread_create(&th, NULL, leave_thread, &j) != 0) fail("pthread_create failed");
    while (!done) {
        poll_round();
        pthread_mutex_lock(&g_lock);
        done = j.done;
        pthread_mutex_unlock(&g_lock);
    }
    pthread_join(th, NULL);
    g.w[slot].live = 1;
    return j.e;
}

static void take_away(result *r, int crash, int slot, int part, const char *title) {
    parti_err e;
    g.t0 = now_s();
    tl_add(slot, TL_NOTE, 0, parti_worker_id(g.w[slot].p), "%s", crash ? "destroy + close" : "parti_leave");
    if (crash) {
        if (g.w[slot].inc < MAX_INC) g.crashed[g.w[slot].inc] = 1;
        drop_worker(slot);
        stage_at(r, ST_GONE);
        publish_marker(part);
        stage_at(r, ST_PUBLISHED);
    } else {
        if ((e = leave_while_polling(slot)) != PARTI_ERR_OK)
            fail("%s: parti_leave: %s", title, parti_strerror(e));
        stage_at(r, ST_GONE);
        publish_marker(part);
        stage_at(r, ST_PUBLISHED);
        drop_worker(slot); /* the process exits after leaving */
    }
    tl_add(slot, TL_NOTE, 0, "", "marker %s published to bench.p%d, stream seq %llu", g.marker, part,
           (unsigned long long)g.marker_seq);
    stage_at(r, ST_POLLING);
}

/* Polls until the marker is handled, the limit passes, or GIVE_UP_S after a
 * live worker's consumer has the partition's subject (by then the marker
 * would have come: at most one fetch heartbeat later). *taker gets that
 * worker (-1 if none) and *taken_at when. */
static void wait_marker(int part, double limit_s, int *taker, double *taken_at) {
    *taker = -1;
    *taken_at = 0;
    while (!g.marker_at) {
        double t = now_s();
        if (t > g.t0 + limit_s || (*taken_at && t > *taken_at + GIVE_UP_S)) break;
        if (!*taken_at && (*taker = consuming_slot(part)) >= 0) *taken_at = t;
        poll_round();
    }
}

static void report_missing(result *r, const char *title, const char *gone_id, int part, double limit_s, int taker,
                           double taken_at) {
    g.anomalies++;
    g.mk[g.nmk - 1].missed = 1;
    if (taker >= 0)
        printf("  ANOMALY: %s: the marker was not handled %.2f s after w%d (%s) had bench.p%d in its consumer's "
               "filter (from %+.1f ms)\n",
               title, GIVE_UP_S, taker, parti_worker_id(g.w[taker].p), part, (taken_at - g.t0) * 1e3);
    else
        printf("  ANOMALY: %s: the marker was not handled and no live worker consumed bench.p%d within %.1f s\n",
               title, part, limit_s);
    if (r->printed++ < FULL_REPORTS || g.print_all) {
        tl_print(title);
        print_durables(gone_id);
    } else if (taker >= 0) {
        char prefix[48];
        snprintf(prefix, sizeof prefix, "    marker seq %llu; ", (unsigned long long)g.marker_seq);
        print_durable(prefix, parti_worker_id(g.w[taker].p), &g.w[taker]);
    }
}

static void record_delivery(result *r, const char *title, int gone, int part, const uint64_t *rewinds_before) {
    double ms = (g.marker_at - g.t0) * 1e3;
    r->ok++;
    collect_stages(r, gone, g.marker_slot);
    if (rewinds_of(g.marker_slot) > rewinds_before[g.marker_slot]) r->rewound[r->n_rewound++] = ms;
    else r->in_place[r->n_in_place++] = ms;
    if (!g.marker_owner_ok) {
        r->owner_wrong++;
        g.anomalies++;
        printf("  ANOMALY: %s: the marker was handled by w%d, which does not own p%d\n", title, g.marker_slot, part);
        tl_print(title);
    } else if (g.print_all) {
        tl_print(title);
    }
}

static void run_scenario(result *r, int crash, int leader, int reps, double handoff_limit_s, double restore_limit_s,
                         const char *label) {
    int rep, i;
    memset(r, 0, sizeof *r);
    r->crash = crash;
    r->reps = reps;
    for (rep = 0; rep < reps; rep++) {
        char title[128], gone_id[32];
        int slot, part = pick_partition(rep, leader, &slot), taker;
        double taken_at;
        uint64_t rewinds[NW];
        tl_reset();
        snprintf(g.marker, sizeof g.marker, "%s-%d", label, rep);
        snprintf(title, sizeof title, "%s repetition %d (marker to p%d, owner w%d %s%s)", label, rep, part, slot,
                 parti_worker_id(g.w[slot].p), leader ? ", the leader" : "");
        snprintf(gone_id, sizeof gone_id, "%s", parti_worker_id(g.w[slot].p));
        g.marker_part = part;
        g.marker_at = 0;
        g.marker_slot = -1;
        g.overlaps = &r->overlap_handoff;
        for (i = 0; i < NW; i++) rewinds[i] = rewinds_of(i);
        take_away(r, crash, slot, part, title);
        wait_marker(part, handoff_limit_s, &taker, &taken_at);
        if (g.marker_at) record_delivery(r, title, slot, part, rewinds);
        else report_missing(r, title, gone_id, part, handoff_limit_s, taker, taken_at);
        /* back to 3 workers; a partition owned twice for a round while the
         * fresh worker takes its share is the at-least-once handoff, counted apart */
        g.overlaps = &r->overlap_restore;
        start_worker(slot);
        r->restore_s[rep] = wait_stable(restore_limit_s, title);
        wait_rebalance_gap();
        g.overlaps = NULL;
    }
    if (r->overlap_handoff) g.anomalies++;
}

static void print_stages(const char *indent, result *r) {
    int s;
    printf("%sstages, p50 (p95) ms from the start:", indent);
    for (s = 0; s < ST_COUNT; s++) {
        int n = r->n[s];
        double p50 = percentile(r->stage[s], n, 0.5), p95 = percentile(r->stage[s], n, 0.95);
        const char *name = s == ST_GONE ? (r->crash ? "destroy + close" : "leave returned") : stage_names[s];
        if (n == 0) printf(" %s -%s", name, s + 1 < ST_COUNT ? ";" : "\n");
        else printf(" %s %.1f (%.1f)%s%s", name, p50, p95, n < r->ok ? " [not in every rep]" : "",
                    s + 1 < ST_COUNT ? ";" : "\n");
    }
}

/* "12.3", or "-" for a statistic of no values (percentile gives -1). */
static const char *ms_text(char *buf, size_t size, double v) {
    if (v < 0) snprintf(buf, size, "-");
    else snprintf(buf, size, "%.1f", v);
    return buf;
}

static const char *ratio_text(char *buf, size_t size, double v, double base) {
    if (v < 0 || base <= 0) snprintf(buf, size, "-");
    else snprintf(buf, size, "%.2fx", v / base);
    return buf;
}

static void print_split(const char *indent, result *r) {
    char a[24], b[24], c[24], d[24];
    int nr = r->n_rewound, ni = r->n_in_place;
    printf("%snew owner: caught up from the checkpoint (reads from the stream) in %d reps, handled p50 %s max "
           "%s ms; nothing to catch up in %d reps, handled p50 %s max %s ms\n",
           indent, nr, ms_text(a, sizeof a, percentile(r->rewound, nr, 0.5)),
           ms_text(b, sizeof b, percentile(r->rewound, nr, 1.0)), ni,
           ms_text(c, sizeof c, percentile(r->in_place, ni, 0.5)), ms_text(d, sizeof d, percentile(r->in_place, ni, 1.0)));
}

static void print_checks(const char *indent, result *r) {
    printf("%schecks: marker handled %d/%d (by a worker owning its partition %d/%d); a partition owned by two "
           "live workers: %d poll rounds during handoffs, %d during restores; restore to a stable group p50 %.0f ms\n",
           indent, r->ok, r->reps, r->ok - r->owner_wrong, r->ok, r->overlap_handoff, r->overlap_restore,
           percentile(r->restore_s, r->reps, 0.5) * 1e3);
}

static void report_graceful(result *r, const char *who, const timings *tm, double kv_ms) {
    char t[10][24];
    double v[MAX_REPS], p50, p95, p99, max, base = tm->planned_window_ms + kv_ms;
    int n = r->n[ST_HANDLED];
    memcpy(v, r->stage[ST_HANDLED], sizeof(double) * (size_t)n);
    p50 = percentile(v, n, 0.5);
    p95 = percentile(v, n, 0.95);
    p99 = percentile(v, n, 0.99);
    max = percentile(v, n, 1.0);
    printf("graceful leave of a %s (%d reps, marker handled in %d): leave -> marker handled p50 %s p95 %s p99 %s max "
           "%s ms | target p99 < 50 ms: p99/target %s | baseline planned_window %u ms + raw KV get %.2f ms = %.1f "
           "ms: p50/baseline %s, p99/baseline %s\n",
           who, r->reps, n, ms_text(t[0], 24, p50), ms_text(t[1], 24, p95), ms_text(t[2], 24, p99),
           ms_text(t[3], 24, max), ratio_text(t[4], 24, p99, 50.0), tm->planned_window_ms, kv_ms, base,
           ratio_text(t[5], 24, p50, base), ratio_text(t[6], 24, p99, base));
    print_stages("  ", r);
    print_split("  ", r);
    print_checks("  ", r);
    fflush(stdout);
}

static void report_crash(result *r, const char *who, const timings *tm) {
    char t[10][24];
    double v[MAX_REPS], p50, p95, max, target = tm->member_ttl_ms + 150.0;
    int n = r->n[ST_HANDLED];
    memcpy(v, r->stage[ST_HANDLED], sizeof(double) * (size_t)n);
    p50 = percentile(v, n, 0.5);
    p95 = percentile(v, n, 0.95);
    max = percentile(v, n, 1.0);
    printf("crash of a %s (destroy + close, %d reps, marker handled in %d): crash -> marker handled p50 %s p95 %s "
           "max %s ms | target <= member TTL + 150 ms = %.0f ms: p50 %s p95 %s max %s | baseline member TTL %u ms: "
           "p50/TTL %s max/TTL %s\n",
           who, r->reps, n, ms_text(t[0], 24, p50), ms_text(t[1], 24, p95), ms_text(t[2], 24, max), target,
           ratio_text(t[3], 24, p50, target), ratio_text(t[4], 24, p95, target), ratio_text(t[5], 24, max, target),
           tm->member_ttl_ms, ratio_text(t[6], 24, p50, tm->member_ttl_ms), ratio_text(t[7], 24, max, tm->member_ttl_ms));
    print_stages("  ", r);
    print_split("  ", r);
    print_checks("  ", r);
    fflush(stdout);
}

/* ---- a section: one set of timings on a fresh group ----------------------------------- */

typedef struct plan {
    int graceful, graceful_leader, crash, crash_leader;
} plan;

static void run_section(const timings *tm, const timings *shown, const plan *pl, int index) {
    result *r = (result *)malloc(sizeof *r);
    double kv_ms, t0 = now_s(), formed;
    /* bounds: a crash is seen after the TTL; a join is debounced up to 4 planned windows */
    double crash_s = shown->member_ttl_ms / 1e3 + 10.0, restore_s = 10.0 + shown->member_ttl_ms / 1e3;
    int i;
    char label[32];
    if (!r) fail("out of memory");
    snprintf(g.bucket_prefix, sizeof g.bucket_prefix, "bench%d", index);
    snprintf(g.consumer_prefix, sizeof g.consumer_prefix, "bench%d-", index);
    memset(&g.cfg, 0, sizeof g.cfg);
    g.cfg.stream = "bench";
    g.cfg.subject_template = "bench.{0}";
    g.cfg.partitions = parts;
    g.cfg.partition_count = NP;
    g.cfg.bucket_prefix = g.bucket_prefix;
    g.cfg.consumer_prefix = g.consumer_prefix;
    memset(&g.opts, 0, sizeof g.opts);
    g.opts.on_message = on_message;
    g.opts.on_event = on_event;
    g.opts.on_consumer_event = on_consumer_event;
    g.opts.heartbeat_ms = tm->heartbeat_ms;
    g.opts.member_ttl_ms = tm->member_ttl_ms;
    g.opts.cold_start_ms = tm->cold_start_ms;
    g.opts.planned_window_ms = tm->planned_window_ms;
    g.opts.emergency_grace_ms = tm->emergency_grace_ms;
    g.opts.memory_storage = 1;
    printf("== %s: heartbeat %u ms, member TTL %u ms, cold start %u ms, planned window %u ms, emergency grace %u ms "
           "(min rebalance interval 250 ms, consumer coalesce 75 ms: defaults)\n",
           tm->name, shown->heartbeat_ms, shown->member_ttl_ms, shown->cold_start_ms, shown->planned_window_ms,
           shown->emergency_grace_ms);
    tl_reset();
    for (i = 0; i < NW; i++) start_worker(i);
    formed = wait_stable(30.0, "forming the group");
    wait_rebalance_gap();
    kv_ms = raw_kv_get_ms();
    printf("group of %d formed and stable in %.0f ms; raw nats.c kvStore_Get round trip p50 %.3f ms (%d gets)\n", NW,
           formed * 1e3, kv_ms, KV_RTT_SAMPLES);
    fflush(stdout);
    if (pl->graceful) {
        snprintf(label, sizeof label, "s%d-leave", index);
        run_scenario(r, 0, 0, pl->graceful, 10.0, restore_s, label);
        report_graceful(r, "non-leader", shown, kv_ms);
    }
    if (pl->graceful_leader) {
        snprintf(label, sizeof label, "s%d-leave-leader", index);
        run_scenario(r, 0, 1, pl->graceful_leader, 10.0, restore_s, label);
        report_graceful(r, "leader", shown, kv_ms);
    }
    if (pl->crash) {
        snprintf(label, sizeof label, "s%d-crash", index);
        run_scenario(r, 1, 0, pl->crash, crash_s, restore_s, label);
        report_crash(r, "non-leader", shown);
    }
    if (pl->crash_leader) {
        snprintf(label, sizeof label, "s%d-crash-leader", index);
        run_scenario(r, 1, 1, pl->crash_leader, crash_s, restore_s, label);
        report_crash(r, "leader", shown);
    }
    /* wind down: a few rounds so a redelivered marker is still counted, then leave */
    for (i = 0; i < 10; i++) poll_round();
    for (i = 0; i < NW; i++) {
        parti_leave(g.w[i].p, 2000);
        drop_worker(i);
    }
    g.marker[0] = 0;
    printf("section time %.1f s\n", now_s() - t0);
    fflush(stdout);
    free(r);
}

static void make_stream(void) {
    jsStreamConfig sc;
    jsErrCode jerr = 0;
    const char *subjects[] = {"bench.>"};
    jsStreamConfig_Init(&sc);
    sc.Name = "bench";
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_MemoryStorage;
    if (js_AddStream(NULL, g.js, &sc, NULL, &jerr) != NATS_OK) fail("creating the stream bench failed (%d)", (int)jerr);
}

int main(void) {
    static const timings fast = {"fast timings", 250, 1500, 500, 100, 50};
    static const timings defaults = {"defaults", 0, 0, 0, 0, 0};
    static const timings defaults_shown = {"defaults", 1000, 5000, 2000, 500, 100};
    const char *reps_env = getenv("PARTI_BENCH_REPS"), *defaults_env = getenv("PARTI_BENCH_DEFAULTS");
    const char *timeline_env = getenv("PARTI_BENCH_TIMELINE"), *only = getenv("PARTI_BENCH_ONLY");
    int reps = reps_env ? atoi(reps_env) : 20, i;
    plan fast_plan, defaults_plan;
    char err[512];
    double t_start = now_s();
    g.print_all = timeline_env && strcmp(timeline_env, "1") == 0;
    if (reps < 1 || reps > MAX_REPS) fail("PARTI_BENCH_REPS must be 1..%d, got \"%s\"", MAX_REPS, reps_env);
    for (i = 0; i < NP; i++) {
        parts[i].keys = keys[i];
        parts[i].key_count = 1;
        parts[i].weight = 1;
    }
    fast_plan.graceful = reps;
    fast_plan.graceful_leader = reps;
    fast_plan.crash = reps;
    fast_plan.crash_leader = (reps + 4) / 5;
    defaults_plan.graceful = 3;
    defaults_plan.graceful_leader = 2;
    defaults_plan.crash = 1;
    defaults_plan.crash_leader = 1;
    if (only && *only) {
        static const char *names[] = {"leave", "leave-leader", "crash", "crash-leader"};
        int *slots[4];
        int k, found = 0;
        slots[0] = &fast_plan.graceful;
        slots[1] = &fast_plan.graceful_leader;
        slots[2] = &fast_plan.crash;
        slots[3] = &fast_plan.crash_leader;
        for (k = 0; k < 4; k++) {
            *slots[k] = strcmp(only, names[k]) == 0 ? reps : 0;
            found |= *slots[k] != 0;
        }
        if (!found) fail("PARTI_BENCH_ONLY must be leave, leave-leader, crash or crash-leader, got \"%s\"", only);
        defaults_env = "0";
    }

    if (nats_server_start(&server, NULL, err, sizeof err) != 0) fail("cannot start nats-server: %s", err);
    g.url = nats_server_url(server);
    if (natsConnection_ConnectTo(&g.nc, g.url) != NATS_OK) fail("raw connect failed");
    if (natsConnection_JetStream(&g.js, g.nc, NULL) != NATS_OK) fail("raw jetstream failed");
    if (parti_nats_connect(&g.obs, g.url, NULL, err, sizeof err) != PARTI_ERR_OK) fail("observer connect: %s", err);
    make_stream();
    printf("parti %s group benchmarks on nats-server %s, nats.c %s (loopback, memory storage; %d workers in one "
           "process polled round-robin with parti_poll(p, %d), %d partitions; PARTI_BENCH_REPS=%d)\n",
           PARTI_VERSION_STRING, nats_server_version(server), nats_GetVersion(), NW, POLL_MS, NP, reps);
    fflush(stdout);

    run_section(&fast, &fast, &fast_plan, 1);
    if (!defaults_env || strcmp(defaults_env, "0") != 0) run_section(&defaults, &defaults_shown, &defaults_plan, 2);

    {
        int once = 0, twice = 0, extra = 0, late = 0, never = 0;
        for (i = 0; i < g.nmk; i++) {
            if (g.mk[i].handled == 1) once++;
            if (g.mk[i].handled > 1) twice++, extra += g.mk[i].handled - 1;
            if (g.mk[i].missed && g.mk[i].handled) late++;
            if (!g.mk[i].handled) never++;
        }
        printf("markers published %d: handled once %d, more than once %d (%d extra handlings), only after their "
               "repetition gave up %d, never %d; handlings outside their repetition %ld; anomalies %ld\n",
               g.nmk, once, twice, extra, late, never, g.others, g.anomalies);
        printf("repeated handlings: %d after the first handler crashed (handled after its last checkpoint), "
               "%d otherwise (must be 0)\n", g.dup_crash, g.dup_other);
        if (g.dup_other) g.anomalies++;
    }
    parti_nats_close(&g.obs);
    jsCtx_Destroy(g.js);
    natsConnection_Destroy(g.nc);
    if (nats_server_stop(server, err, sizeof err) != 0) fprintf(stderr, "bench_group: stopping nats-server: %s\n", err);
    server = NULL;
    nats_Close();
    printf("total %.1f s\n", now_s() - t_start);
    return g.anomalies ? 1 : 0;
}

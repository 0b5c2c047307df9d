/* demo.c - the cluster demo behind `make demo`.
 *
 * Twelve partitions of a stream "demo" (subjects demo.p0 .. demo.p11) are
 * spread over a group of worker processes while a producer publishes 100
 * messages a second round-robin over them. The story:
 *
 *   1. three workers start and share the partitions;
 *   2. a fourth joins and takes its share;
 *   3. one is killed with kill -9: after its member TTL its partitions move;
 *   4. the producer stops, the workers drain, then leave gracefully;
 *   5. every published message is checked against what the workers handled:
 *      lost (never processed) must be zero; duplicates are counted by the
 *      step they happened in: only the kill -9 step may have any (what the
 *      killed worker handled after its last checkpoint); the others must
 *      have none (partitions move at their checkpoints).
 *
 * With a nats-server (tests/nats_server.h finds .deps/nats-server, starts it
 * on a random loopback port in a temporary directory and stops it at the
 * end, also on Ctrl-C) every worker and the producer is its own process, and
 * each worker writes "partition sequence" for every message it handles to
 * its own file, flushed before the message is acked. Without a server binary
 * the same story runs in one process on the fake NATS (parti_nats.h) and its
 * virtual clock.
 *
 *   demo [--check] [--fake] [--kill-leader]
 *     --check        terse output for `make test`; exit 1 on loss or a step timing out
 *     --fake         the fake NATS even when a nats-server is available
 *     --kill-leader  kill -9 the leader instead of a follower
 *
 * Exit status: 0 when nothing was lost and every step finished in time, 1
 * otherwise, 130 when interrupted.
 *
 * The parent process never opens a nats.c connection: nats.c starts threads,
 * and a process with threads cannot fork safely. Workers and the producer
 * connect after the fork; they report to the parent over one pipe, one line
 * per event (a write of less than PIPE_BUF bytes is atomic, so lines from
 * different processes never mix). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fork, pipes, signals, clock_gettime; the nats.c binding */
#endif
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* ---- the setting ------------------------------------------------------------------ */

#define DEMO_PARTITIONS 12
#define DEMO_WORKERS 4
#define DEMO_RATE_PER_S 100
#define DEMO_MAX_PUBLISH 12000 /* the producer stops here whatever happens */
#define DEMO_MAX_SEQ 16384     /* ledger size; the stream holds only the producer's messages */
#define DEMO_LINE_MAX 512      /* one report line over the pipe; < PIPE_BUF */
#define DEMO_PRODUCER_SLOT 9   /* the producer's index in error lines */

/* step deadlines, ms; every wait before the graceful stop also ends within
 * DEMO_STORY_BUDGET_MS of the start, so the whole run stays under a minute */
#define DEMO_STORY_BUDGET_MS 46000
#define DEMO_SETTLE_FIRST_MS 12000
#define DEMO_SETTLE_MS 8000
#define DEMO_HOLD_MS 1500
#define DEMO_DRAIN_MS 15000
#define DEMO_LEAVE_MS 5000
#define DEMO_STOP_MS 7000
#define DEMO_PRODUCER_READY_MS 8000
#define DEMO_SERVER_START_MS 8000
#define DEMO_PRODUCER_STOP_MS 5000

static const char *const demo_keys[DEMO_PARTITIONS][1] = {{"p0"}, {"p1"}, {"p2"}, {"p3"}, {"p4"},  {"p5"},
                                                          {"p6"}, {"p7"}, {"p8"}, {"p9"}, {"p10"}, {"p11"}};
static const parti_partition demo_parts[DEMO_PARTITIONS] = {
    {demo_keys[0], 1, 1}, {demo_keys[1], 1, 1}, {demo_keys[2], 1, 1},   {demo_keys[3], 1, 1},
    {demo_keys[4], 1, 1}, {demo_keys[5], 1, 1}, {demo_keys[6], 1, 1},   {demo_keys[7], 1, 1},
    {demo_keys[8], 1, 1}, {demo_keys[9], 1, 1}, {demo_keys[10], 1, 1}, {demo_keys[11], 1, 1}};

/* Set by SIGINT / SIGTERM in the parent, by SIGTERM in a child. */
static volatile sig_atomic_t demo_stop_requested = 0;

static void demo_on_signal(int sig) {
    (void)sig;
    demo_stop_requested = 1;
}

static void demo_catch(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = demo_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL); /* no SA_RESTART: a blocking poll returns at once */
}

static void demo_ignore(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

static uint64_t demo_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void demo_sleep_ms(uint32_t ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000u);
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    nanosleep(&ts, NULL); /* a signal ends it early, which is what we want */
}

static parti_config demo_config(void) {
    parti_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "demo";
    cfg.subject_template = "demo.{0}";
    cfg.partitions = demo_parts;
    cfg.partition_count = DEMO_PARTITIONS;
    /* short pulls: a leaving worker finishes its pending pull before it goes */
    cfg.fetch_expires_ms = 1000;
    cfg.fetch_heartbeat_ms = 250;
    return cfg;
}

static parti_stream_config demo_stream_config(int memory) {
    static const char *const subjects[] = {"demo.>"};
    parti_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.name = "demo";
    sc.subjects = subjects;
    sc.subject_count = 1;
    sc.memory_storage = memory;
    return sc;
}

/* "demo.p7" -> 7; -1 for anything else. */
static int demo_partition_of(const char *subject) {
    char *end;
    long v;
    if (!subject || strncmp(subject, "demo.p", 6) != 0 || !subject[6]) return -1;
    v = strtol(subject + 6, &end, 10);
    if (*end || v < 0 || v >= DEMO_PARTITIONS) return -1;
    return (int)v;
}

/* ---- what a worker reports ------------------------------------------------------ */

/* One group event, as the story needs it: the same shape whether it comes
 * from a parti object in this process or over the pipe from a worker. */
typedef struct demo_event {
    int kind;               /* parti_event_kind */
    int state;              /* parti_state */
    int leader;
    uint64_t version, epoch;
    int moved;
    int err;                /* parti_err */
    char id[40];
    int owned[DEMO_PARTITIONS];
    int nowned;
    char detail[200];
} demo_event;

static void demo_copy_text(char *dst, size_t cap, const char *src) {
    size_t i;
    if (!cap) return;
    for (i = 0; src && src[i] && i + 1 < cap; i++)
        dst[i] = (src[i] == '\n' || src[i] == '\t' || src[i] == '\r') ? ' ' : src[i];
    dst[i] = '\0';
}

static void demo_event_from(demo_event *out, parti *p, const parti_event *ev) {
    const int *owned = NULL;
    int n = p ? parti_owned(p, &owned) : 0, i;
    memset(out, 0, sizeof *out);
    out->kind = (int)ev->kind;
    out->state = (int)ev->state;
    out->leader = p ? parti_is_leader(p) : 0;
    out->version = ev->version;
    out->epoch = ev->epoch;
    out->moved = ev->moved;
    out->err = (int)ev->err;
    demo_copy_text(out->id, sizeof out->id, ev->worker_id);
    for (i = 0; i < n && out->nowned < DEMO_PARTITIONS; i++)
        if (owned[i] >= 0 && owned[i] < DEMO_PARTITIONS) out->owned[out->nowned++] = owned[i];
    demo_copy_text(out->detail, sizeof out->detail, ev->detail);
}

/* "W k kind state leader version epoch moved err id owned\tdetail\n" */
static int demo_event_format(char *buf, size_t cap, int k, const demo_event *e) {
    char owned[DEMO_PARTITIONS * 4 + 2];
    size_t used = 0;
    int i, n;
    owned[0] = '\0';
    for (i = 0; i < e->nowned; i++) {
        n = snprintf(owned + used, sizeof owned - used, "%s%d", i ? "," : "", e->owned[i]);
        if (n < 0 || (size_t)n >= sizeof owned - used) break;
        used += (size_t)n;
    }
    n = snprintf(buf, cap, "W %d %d %d %d %llu %llu %d %d %s %s\t%s\n", k, e->kind, e->state, e->leader,
                 (unsigned long long)e->version, (unsigned long long)e->epoch, e->moved, e->err,
                 e->id[0] ? e->id : "-", e->nowned ? owned : "-", e->detail);
    if (n < 0 || (size_t)n >= cap) return -1;
    return n;
}

static int demo_event_parse(const char *line, int *k, demo_event *e) {
    unsigned long long version, epoch;
    char owned[DEMO_PARTITIONS * 4 + 2], *tok, *save = NULL;
    const char *tab;
    memset(e, 0, sizeof *e);
    if (sscanf(line, "W %d %d %d %d %llu %llu %d %d %39s %49s", k, &e->kind, &e->state, &e->leader, &version,
               &epoch, &e->moved, &e->err, e->id, owned) != 10)
        return -1;
    e->version = version;
    e->epoch = epoch;
    if (strcmp(e->id, "-") == 0) e->id[0] = '\0';
    if (strcmp(owned, "-") != 0) {
        for (tok = strtok_r(owned, ",", &save); tok && e->nowned < DEMO_PARTITIONS; tok = strtok_r(NULL, ",", &save)) {
            int p = atoi(tok);
            if (p >= 0 && p < DEMO_PARTITIONS) e->owned[e->nowned++] = p;
        }
    }
    if ((tab = strchr(line, '\t')) != NULL) demo_copy_text(e->detail, sizeof e->detail, tab + 1);
    return 0;
}

/* ---- the story's state ------------------------------------------------------------- */

typedef struct demo demo;

/* What a parti object's callbacks need: in a worker process the pipe and the
 * record file; in the one-process fake story the story itself. */
typedef struct demo_ctx {
    demo *d;      /* fake mode */
    int k;        /* w1 is 0 */
    parti *p;
    FILE *record; /* real mode: "partition sequence" per handled message */
    int report_fd;/* real mode: the pipe to the parent */
    int failed;   /* real mode: writing the record failed */
} demo_ctx;

typedef struct demo_worker {
    int started, alive, killed;
    pid_t pid;
    char id[40];
    int state, leader;
    uint64_t version, epoch;
    int owned[DEMO_PARTITIONS];
    int nowned;
    uint64_t handled;
    /* fake mode */
    parti *p;
    parti_transport t;
    int connected;
    demo_ctx ctx;
} demo_worker;

typedef struct demo_mode {
    uint64_t (*now_ms)(demo *d);
    int (*start_worker)(demo *d, int k);
    int (*kill_worker)(demo *d, int k);
    void (*run_for)(demo *d, uint32_t ms);   /* lets the cluster work: events, messages, time */
    int (*stop_producer)(demo *d);
    int (*stop_workers)(demo *d);
    void (*collect)(demo *d);                /* brings the ledger up to date */
} demo_mode;

struct demo {
    int check, kill_leader;
    const demo_mode *mode;
    uint64_t t0;
    demo_worker w[DEMO_WORKERS];
    int timeouts;
    char timed_out[256];
    int errors;
    /* the ledger, indexed by stream sequence */
    signed char pub_part[DEMO_MAX_SEQ + 1];  /* partition published at that sequence, -1 = none */
    signed char rec_part[DEMO_MAX_SEQ + 1];  /* partition a worker recorded for it, -1 = none */
    uint16_t handled[DEMO_MAX_SEQ + 1];      /* times a worker recorded it */
    /* duplicates by the step they happened in (the time of the repeat) */
    uint64_t phase_at[6];                    /* when steps 1..5 began (now_ms; 0: not yet) */
    uint64_t dup_phase[6];
    uint64_t first_at[DEMO_MAX_SEQ + 1];    /* when a worker first recorded it */
    uint64_t published, publish_failed, out_of_range;
    int producing;
    /* real mode */
    nats_server *server;
    char url[128], dir[512];
    int report_rd, report_wr;
    char rbuf[8192];
    size_t rlen;
    pid_t producer;
    int producer_ready;
    char producer_error[256];
    /* fake mode */
    parti_fake_world *world;
    parti_transport pub_t;
    int pub_connected;
    uint64_t next_pub_ms, pub_n;
};

static const char *const demo_names[DEMO_WORKERS] = {"w1", "w2", "w3", "w4"};

static double demo_secs(demo *d) { return (double)(d->mode->now_ms(d) - d->t0) / 1000.0; }

static void demo_say(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void demo_say(demo *d, const char *fmt, ...) {
    va_list ap;
    printf("%7.2fs  ", demo_secs(d));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* Printed in both modes: what went wrong. */
static void demo_problem(demo *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void demo_problem(demo *d, const char *fmt, ...) {
    va_list ap;
    printf("%7.2fs  PROBLEM: ", demo_secs(d));
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    d->errors++;
}

static void demo_step_timed_out(demo *d, const char *step) {
    size_t used = strlen(d->timed_out);
    d->timeouts++;
    snprintf(d->timed_out + used, sizeof d->timed_out - used, "%s%s", used ? "; " : "", step);
    printf("%7.2fs  TIMEOUT: %s\n", demo_secs(d), step);
}

static void demo_owned_text(const int *owned, int n, char *buf, size_t cap) {
    size_t used = 0;
    int i, r;
    if (!cap) return;
    buf[0] = '\0';
    if (!n) snprintf(buf, cap, "(none)");
    for (i = 0; i < n; i++) {
        r = snprintf(buf + used, cap - used, "%sp%d", i ? " " : "", owned[i]);
        if (r < 0 || (size_t)r >= cap - used) break;
        used += (size_t)r;
    }
}

static void demo_worker_label(const demo *d, int k, char *buf, size_t cap) {
    snprintf(buf, cap, "%s %-8s", demo_names[k], d->w[k].id[0] ? d->w[k].id : "-");
}

/* ---- events -> the story's table and lines ---------------------------------------- */

static void demo_print_event(demo *d, int k, const demo_event *e, int old_state) {
    char who[64], owned[DEMO_PARTITIONS * 5 + 8];
    const char *state = parti_state_name((parti_state)e->state);
    int more = e->detail[0] && strcmp(e->detail, state) != 0; /* a detail that says more than the state */
    demo_worker_label(d, k, who, sizeof who);
    switch ((parti_event_kind)e->kind) {
    case PARTI_EVENT_JOINED: demo_say(d, "%s joined the group", who); break;
    case PARTI_EVENT_BECAME_LEADER: demo_say(d, "%s became the leader (epoch %llu)", who, (unsigned long long)e->epoch); break;
    case PARTI_EVENT_LOST_LEADERSHIP:
        demo_say(d, "%s is no longer the leader (%s)", who, e->detail[0] ? e->detail : parti_strerror((parti_err)e->err));
        break;
    case PARTI_EVENT_ASSIGNMENT_CHANGED:
        demo_owned_text(e->owned, e->nowned, owned, sizeof owned);
        demo_say(d, "%s applies assignment v%llu: %s", who, (unsigned long long)e->version, owned);
        break;
    case PARTI_EVENT_REBALANCED:
        demo_say(d, "%s (leader) published assignment: %d partition%s moved", who, e->moved, e->moved == 1 ? "" : "s");
        break;
    case PARTI_EVENT_MEMBER_JOINED:
        if (strcmp(e->detail, e->id) != 0) demo_say(d, "%s (leader) sees %s join", who, e->detail);
        break;
    case PARTI_EVENT_MEMBER_LEFT: demo_say(d, "%s (leader) sees %s gone", who, e->detail); break;
    case PARTI_EVENT_ID_LOST:
        demo_say(d, "%s lost its worker ID to another process (%s)", who, parti_strerror((parti_err)e->err));
        break;
    case PARTI_EVENT_STATE_CHANGED:
        if (e->state == PARTI_STATE_DEGRADED || old_state == PARTI_STATE_DEGRADED || e->state == PARTI_STATE_LEAVING ||
            e->state == PARTI_STATE_STOPPED)
            demo_say(d, "%s is %s%s%s", who, state, more ? ": " : "", more ? e->detail : "");
        break;
    default: break;
    }
}

static void demo_on_worker_event(demo *d, int k, const demo_event *e) {
    demo_worker *w;
    int old_state;
    if (k < 0 || k >= DEMO_WORKERS) return;
    w = &d->w[k];
    if (!w->alive) return; /* a killed worker's last words, still in the pipe */
    old_state = w->state;
    if (e->id[0]) memcpy(w->id, e->id, sizeof w->id);
    w->state = e->state;
    w->leader = e->leader;
    w->epoch = e->epoch;
    if (e->kind == PARTI_EVENT_ASSIGNMENT_CHANGED || e->version != w->version) {
        w->version = e->version;
        memcpy(w->owned, e->owned, sizeof w->owned);
        w->nowned = e->nowned;
    }
    if (e->kind == PARTI_EVENT_ID_LOST) w->nowned = 0;
    if (!d->check) demo_print_event(d, k, e, old_state);
}

static void demo_on_consumer_event(demo *d, int k, int kind, int err, const char *detail) {
    char who[64];
    if (d->check || k < 0 || k >= DEMO_WORKERS || !d->w[k].alive) return;
    if (kind != PARTI_EVENT_CONSUMER_RECREATED && kind != PARTI_EVENT_CONSUMER_UNHEALTHY &&
        kind != PARTI_EVENT_CONSUMER_HEALTHY)
        return;
    demo_worker_label(d, k, who, sizeof who);
    demo_say(d, "%s consumer %s%s%s%s", who, parti_consumer_event_name((parti_consumer_event_kind)kind),
             err ? " (" : "", err ? parti_strerror((parti_err)err) : "", err ? ")" : "");
    (void)detail;
}

/* ---- the ledger ------------------------------------------------------------------- */

static void demo_ledger_reset_published(demo *d) {
    memset(d->pub_part, -1, sizeof d->pub_part);
    d->published = d->publish_failed = 0;
}

static void demo_ledger_reset_handled(demo *d) {
    int k;
    memset(d->rec_part, -1, sizeof d->rec_part);
    memset(d->handled, 0, sizeof d->handled);
    memset(d->dup_phase, 0, sizeof d->dup_phase);
    d->out_of_range = 0;
    for (k = 0; k < DEMO_WORKERS; k++) d->w[k].handled = 0;
}

static void demo_ledger_published(demo *d, int part, uint64_t seq) {
    if (seq == 0 || seq > DEMO_MAX_SEQ || part < 0 || part >= DEMO_PARTITIONS) {
        d->out_of_range++;
        return;
    }
    if (d->pub_part[seq] < 0) d->published++;
    d->pub_part[seq] = (signed char)part;
}

/* The step a time falls in (1..5). */
static int demo_phase_of(const demo *d, uint64_t t) {
    int ph = 1, i;
    for (i = 2; i <= 5; i++)
        if (d->phase_at[i] && t >= d->phase_at[i]) ph = i;
    return ph;
}

static void demo_ledger_handled(demo *d, int k, int part, uint64_t seq, uint64_t at) {
    if (k >= 0 && k < DEMO_WORKERS) d->w[k].handled++;
    if (seq == 0 || seq > DEMO_MAX_SEQ || part < 0 || part >= DEMO_PARTITIONS) {
        d->out_of_range++;
        return;
    }
    if (d->handled[seq]) { /* a repeat: counted in the step of the later of the two */
        d->dup_phase[demo_phase_of(d, at > d->first_at[seq] ? at : d->first_at[seq])]++;
        if (at < d->first_at[seq]) d->first_at[seq] = at;
    } else {
        d->first_at[seq] = at;
    }
    if (d->handled[seq] < UINT16_MAX) d->handled[seq]++;
    if (d->rec_part[seq] < 0) d->rec_part[seq] = (signed char)part;
}

static uint64_t demo_unhandled(const demo *d) {
    uint64_t n = 0, s;
    for (s = 1; s <= DEMO_MAX_SEQ; s++)
        if (d->pub_part[s] >= 0 && !d->handled[s]) n++;
    return n;
}

/* Published messages processed at least once, and the extra deliveries. */
static uint64_t demo_processed(const demo *d, uint64_t *again) {
    uint64_t n = 0, s;
    *again = 0;
    for (s = 1; s <= DEMO_MAX_SEQ; s++) {
        if (d->pub_part[s] < 0 || !d->handled[s]) continue;
        n++;
        *again += d->handled[s] - 1u;
    }
    return n;
}

/* ---- the story ---------------------------------------------------------------------- */

static int demo_alive_count(const demo *d) {
    int k, n = 0;
    for (k = 0; k < DEMO_WORKERS; k++) n += d->w[k].alive;
    return n;
}

static int demo_leader(const demo *d) {
    int k;
    for (k = 0; k < DEMO_WORKERS; k++)
        if (d->w[k].alive && d->w[k].leader) return k;
    return -1;
}

/* Settled: every live worker applies the same assignment version, is stable
 * (or waiting with nothing to own), and together they own every partition
 * exactly once; must_own (or -1) must own at least one. */
static int demo_settled(const demo *d, int must_own) {
    int owner[DEMO_PARTITIONS], k, i, p;
    uint64_t v = 0;
    for (p = 0; p < DEMO_PARTITIONS; p++) owner[p] = -1;
    for (k = 0; k < DEMO_WORKERS; k++) {
        const demo_worker *w = &d->w[k];
        if (!w->alive) continue;
        if (!w->version || (v && w->version != v)) return 0;
        v = w->version;
        if (w->state != PARTI_STATE_STABLE && !(w->state == PARTI_STATE_WAITING && w->nowned == 0)) return 0;
        for (i = 0; i < w->nowned; i++) {
            if (owner[w->owned[i]] != -1) return 0;
            owner[w->owned[i]] = k;
        }
    }
    if (!v) return 0;
    for (p = 0; p < DEMO_PARTITIONS; p++)
        if (owner[p] < 0) return 0;
    return must_own < 0 || d->w[must_own].nowned > 0;
}

static void demo_owner_map(const demo *d, int *owner) {
    int k, i, p;
    for (p = 0; p < DEMO_PARTITIONS; p++) owner[p] = -1;
    for (k = 0; k < DEMO_WORKERS; k++)
        if (d->w[k].alive)
            for (i = 0; i < d->w[k].nowned; i++) owner[d->w[k].owned[i]] = k;
}

/* ms, cut to what is left of the story's budget */
static uint32_t demo_cap(demo *d, uint32_t ms) {
    uint64_t now = d->mode->now_ms(d), end = d->t0 + DEMO_STORY_BUDGET_MS;
    if (now >= end) return 0;
    return end - now < ms ? (uint32_t)(end - now) : ms;
}

static int demo_wait_settled(demo *d, uint32_t deadline_ms, int must_own, const char *step) {
    uint64_t start = d->mode->now_ms(d);
    deadline_ms = demo_cap(d, deadline_ms);
    while (!demo_stop_requested) {
        if (demo_settled(d, must_own)) return 0;
        if (d->mode->now_ms(d) - start >= deadline_ms) break;
        d->mode->run_for(d, 50);
    }
    if (!demo_stop_requested) demo_step_timed_out(d, step);
    return -1;
}

static void demo_print_assignment(demo *d, const int *before) {
    int owner[DEMO_PARTITIONS], k, p, moved = 0, leader = demo_leader(d);
    char owned[DEMO_PARTITIONS * 5 + 8], who[64], moves[512];
    size_t used = 0;
    uint64_t version = 0;
    d->mode->collect(d);
    for (k = 0; k < DEMO_WORKERS; k++)
        if (d->w[k].alive) version = d->w[k].version;
    printf("         assignment v%llu, %d workers, leader %s:\n", (unsigned long long)version, demo_alive_count(d),
           leader >= 0 ? demo_names[leader] : "(none seen)");
    for (k = 0; k < DEMO_WORKERS; k++) {
        if (!d->w[k].alive) continue;
        demo_owned_text(d->w[k].owned, d->w[k].nowned, owned, sizeof owned);
        demo_worker_label(d, k, who, sizeof who);
        printf("           %s  %-24s %6llu messages processed so far\n", who, owned,
               (unsigned long long)d->w[k].handled);
    }
    if (!before) return;
    demo_owner_map(d, owner);
    moves[0] = '\0';
    for (p = 0; p < DEMO_PARTITIONS; p++) {
        int r;
        if (before[p] == owner[p]) continue;
        moved++;
        r = snprintf(moves + used, sizeof moves - used, "%sp%d %s->%s", used ? ", " : "", p,
                     before[p] >= 0 ? demo_names[before[p]] : "-", owner[p] >= 0 ? demo_names[owner[p]] : "-");
        if (r > 0 && (size_t)r < sizeof moves - used) used += (size_t)r;
    }
    printf("         moved %d partition%s%s%s; %d stayed where they were\n", moved, moved == 1 ? "" : "s",
           moved ? ": " : "", moves, DEMO_PARTITIONS - moved);
}

static void demo_hold(demo *d, uint32_t ms) {
    uint64_t start = d->mode->now_ms(d), done, again;
    ms = demo_cap(d, ms);
    while (!demo_stop_requested && d->mode->now_ms(d) - start < ms) d->mode->run_for(d, 50);
    if (d->check || demo_stop_requested) return;
    d->mode->collect(d);
    done = demo_processed(d, &again);
    demo_say(d, "so far: %llu published, %llu of them processed, %llu processed again (at-least-once)",
             (unsigned long long)d->published, (unsigned long long)done, (unsigned long long)again);
}

static void demo_section(demo *d, const char *title) {
    int step = title[0] >= '1' && title[0] <= '5' ? title[0] - '0' : 0;
    if (step) d->phase_at[step] = d->mode->now_ms(d);
    if (!d->check) printf("\n== %s\n", title);
}

static int demo_pick_victim(const demo *d) {
    int k, leader = demo_leader(d);
    if (d->kill_leader && leader >= 0) return leader;
    for (k = 0; k < DEMO_WORKERS; k++)
        if (d->w[k].alive && k != leader && d->w[k].nowned > 0) return k;
    return 1;
}

static int demo_step_start(demo *d, int k) {
    if (d->mode->start_worker(d, k) != 0) {
        demo_problem(d, "%s could not be started", demo_names[k]);
        return -1;
    }
    return 0;
}

static void demo_story_cluster(demo *d) {
    int before[DEMO_PARTITIONS], k, victim;
    uint64_t t;

    demo_section(d, "1. three workers start");
    t = d->mode->now_ms(d);
    for (k = 0; k < 3 && !demo_stop_requested; k++) demo_step_start(d, k);
    if (demo_wait_settled(d, DEMO_SETTLE_FIRST_MS, -1, "three workers settle") == 0) {
        if (d->check)
            printf("ok   3 workers settled in %.1f s\n", (double)(d->mode->now_ms(d) - t) / 1000.0);
        else
            demo_print_assignment(d, NULL);
    }
    if (demo_stop_requested) return;
    demo_hold(d, DEMO_HOLD_MS);

    demo_section(d, "2. a fourth worker joins");
    demo_owner_map(d, before);
    t = d->mode->now_ms(d);
    if (demo_step_start(d, 3) == 0 &&
        demo_wait_settled(d, DEMO_SETTLE_MS, 3, "the fourth worker gets partitions") == 0) {
        if (d->check)
            printf("ok   w4 took %d partitions in %.1f s\n", d->w[3].nowned,
                   (double)(d->mode->now_ms(d) - t) / 1000.0);
        else
            demo_print_assignment(d, before);
    }
    if (demo_stop_requested) return;
    demo_hold(d, DEMO_HOLD_MS);

    victim = demo_pick_victim(d);
    demo_section(d, d->kill_leader ? "3. the leader is killed (kill -9)" : "3. a worker is killed (kill -9)");
    demo_owner_map(d, before);
    t = d->mode->now_ms(d);
    if (d->mode->kill_worker(d, victim) != 0) {
        demo_problem(d, "could not kill %s", demo_names[victim]);
        return;
    }
    if (!d->check)
        demo_say(d, "waiting for its member key to expire (ttl 1.5 s) and the leader to move its partitions");
    if (demo_wait_settled(d, DEMO_SETTLE_MS, -1, "partitions of the killed worker move") == 0) {
        if (d->check)
            printf("ok   %s killed, its partitions moved %.1f s later\n", demo_names[victim],
                   (double)(d->mode->now_ms(d) - t) / 1000.0);
        else {
            demo_say(d, "reassigned %.1f s after the kill", (double)(d->mode->now_ms(d) - t) / 1000.0);
            demo_print_assignment(d, before);
        }
    }
    if (demo_stop_requested) return;
    demo_hold(d, DEMO_HOLD_MS);
}

static void demo_story_drain(demo *d) {
    uint64_t t, missing = 0, last_report;
    uint32_t deadline;
    demo_section(d, "4. the producer stops; the workers finish");
    if (d->mode->stop_producer(d) != 0) demo_problem(d, "the producer did not stop cleanly");
    d->mode->collect(d);
    if (!d->check)
        demo_say(d, "producer stopped after %llu messages%s", (unsigned long long)d->published,
                 d->publish_failed ? " (some publishes failed: see below)" : "");
    t = last_report = d->mode->now_ms(d);
    deadline = demo_cap(d, DEMO_DRAIN_MS);
    while (!demo_stop_requested) {
        d->mode->collect(d);
        missing = demo_unhandled(d);
        if (!missing || d->mode->now_ms(d) - t >= deadline) break;
        if (!d->check && d->mode->now_ms(d) - last_report >= 2000) {
            demo_say(d, "waiting: %llu of %llu not processed yet", (unsigned long long)missing,
                     (unsigned long long)d->published);
            last_report = d->mode->now_ms(d);
        }
        d->mode->run_for(d, 100);
    }
    if (demo_stop_requested) return;
    if (missing)
        demo_step_timed_out(d, "every published message processed");
    else if (d->check)
        printf("ok   all %llu messages processed %.1f s after the producer stopped\n", (unsigned long long)d->published,
               (double)(d->mode->now_ms(d) - t) / 1000.0);
    else
        demo_say(d, "every published message has been processed (%.1f s after the producer stopped)",
                 (double)(d->mode->now_ms(d) - t) / 1000.0);
}

static void demo_story_leave(demo *d) {
    demo_section(d, d->server ? "5. the workers leave gracefully (SIGTERM -> parti_leave)"
                              : "5. the workers leave gracefully (parti_leave)");
    if (d->mode->stop_workers(d) != 0) demo_step_timed_out(d, "graceful stop of the workers");
    else if (d->check) printf("ok   workers left\n");
}

/* The final account; returns the number of lost messages. */
static uint64_t demo_report(demo *d) {
    uint64_t pub[DEMO_PARTITIONS] = {0}, done[DEMO_PARTITIONS] = {0}, lost[DEMO_PARTITIONS] = {0},
             dup[DEMO_PARTITIONS] = {0}, extra[DEMO_PARTITIONS] = {0};
    uint64_t tp = 0, td = 0, tl = 0, tdup = 0, tx = 0, s;
    int p;
    d->mode->collect(d);
    for (s = 1; s <= DEMO_MAX_SEQ; s++) {
        int pp = d->pub_part[s] >= 0 ? d->pub_part[s] : d->rec_part[s];
        if (pp < 0) continue;
        if (d->pub_part[s] >= 0) {
            pub[pp]++;
            if (d->handled[s]) done[pp]++;
            else lost[pp]++;
        } else {
            extra[pp]++; /* handled, never acknowledged to the producer */
        }
        if (d->handled[s] > 1) dup[pp] += d->handled[s] - 1u;
    }
    if (!d->check) {
        printf("\n== 6. the account\n");
        printf("  partition  published  processed  lost  duplicates\n");
    }
    for (p = 0; p < DEMO_PARTITIONS; p++) {
        if (!d->check)
            printf("  p%-8d  %9llu  %9llu  %4llu  %10llu\n", p, (unsigned long long)pub[p], (unsigned long long)done[p],
                   (unsigned long long)lost[p], (unsigned long long)dup[p]);
        tp += pub[p];
        td += done[p];
        tl += lost[p];
        tdup += dup[p];
        tx += extra[p];
    }
    if (!d->check) {
        printf("  total      %9llu  %9llu  %4llu  %10llu\n", (unsigned long long)tp, (unsigned long long)td,
               (unsigned long long)tl, (unsigned long long)tdup);
        printf("  processed counts each published message once; lost = published, never processed;\n"
               "  duplicates = extra deliveries of a message already processed: at-least-once redeliveries,\n"
               "  e.g. of what the killed worker had recorded but not yet acked, or of what was in flight\n"
               "  while a partition changed owner\n");
    } else {
        printf("     %llu published, %llu processed, %llu lost, %llu duplicates\n", (unsigned long long)tp,
               (unsigned long long)td, (unsigned long long)tl, (unsigned long long)tdup);
    }
    /* graceful moves hand partitions over at their checkpoint: no repeats;
     * a kill -9 repeats what the killed worker did after its last commit */
    printf("%s duplicates by step: start %llu, join %llu, kill -9 %llu (allowed: the killed worker's work after its "
           "last checkpoint), drain %llu, graceful leave %llu\n",
           d->check ? "    " : "  ", (unsigned long long)d->dup_phase[1], (unsigned long long)d->dup_phase[2],
           (unsigned long long)d->dup_phase[3], (unsigned long long)d->dup_phase[4],
           (unsigned long long)d->dup_phase[5]);
    if (tx)
        printf("  %llu message%s processed that the producer never saw acknowledged (a publish that timed out but "
               "was stored)\n", (unsigned long long)tx, tx == 1 ? " was" : "s were");
    if (d->publish_failed)
        printf("  %llu publish%s failed after retries (not counted as published)\n",
               (unsigned long long)d->publish_failed, d->publish_failed == 1 ? "" : "es");
    if (d->out_of_range) printf("  %llu records outside the ledger were ignored\n", (unsigned long long)d->out_of_range);
    return tl;
}

static int demo_story(demo *d) {
    uint64_t lost;
    demo_story_cluster(d);
    if (!demo_stop_requested) demo_story_drain(d);
    if (!demo_stop_requested) demo_story_leave(d);
    if (demo_stop_requested) {
        printf("\ninterrupted: stopping the workers%s\n", d->server ? " and the server" : "");
        return 130;
    }
    lost = demo_report(d);
    if (lost) {
        printf("FAILED: %llu lost\n", (unsigned long long)lost);
        return 1;
    }
    if (d->dup_phase[1] + d->dup_phase[2] + d->dup_phase[4] + d->dup_phase[5]) {
        printf("FAILED: duplicates in a step without a crash (start, join, drain or graceful leave)\n");
        return 1;
    }
    if (d->timeouts) {
        printf("FAILED: nothing lost, but %d step%s timed out: %s\n", d->timeouts, d->timeouts == 1 ? "" : "s",
               d->timed_out);
        return 1;
    }
    if (d->errors) {
        printf("FAILED: nothing lost, but %d problem%s (see PROBLEM above)\n", d->errors, d->errors == 1 ? "" : "s");
        return 1;
    }
    printf("OK: nothing lost, no duplicate outside the kill -9 step\n");
    return 0;
}

/* ---- the worker: shared by both modes -------------------------------------------------- */

static parti_options demo_worker_options(demo_ctx *ctx, parti_event_fn on_event, parti_consumer_event_fn on_cev,
                                         parti_message_handler on_message) {
    parti_options o;
    memset(&o, 0, sizeof o);
    o.on_message = on_message;
    o.user = ctx;
    o.on_event = on_event;
    o.on_consumer_event = on_cev;
    o.heartbeat_ms = 250;
    o.member_ttl_ms = 1500;
    o.cold_start_ms = 1000;
    o.planned_window_ms = 200;
    o.emergency_grace_ms = 100;
    o.memory_storage = 1;
    return o;
}

/* ---- real mode: the worker process ------------------------------------------------------ */

static void demo_send(int fd, const char *line, size_t len) {
    ssize_t r;
    int tries;
    for (tries = 0; tries < 100; tries++) { /* one write: atomic below PIPE_BUF */
        r = write(fd, line, len);
        if (r >= 0 || errno != EINTR) return;
    }
}

static void demo_send_error(int fd, int slot, const char *what, const char *msg) {
    char line[DEMO_LINE_MAX], text[300];
    int n;
    demo_copy_text(text, sizeof text, msg);
    n = snprintf(line, sizeof line, "E %d\t%s: %s\n", slot, what, text);
    if (n > 0) demo_send(fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static parti_verdict demo_proc_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    demo_ctx *c = (demo_ctx *)user;
    /* flushed before the ack: whatever was acked is on record */
    if (fprintf(c->record, "%d %llu %llu\n", demo_partition_of(m->subject), (unsigned long long)m->stream_seq,
                (unsigned long long)demo_mono_ms()) < 0 ||
        fflush(c->record) != 0) {
        c->failed = 1;
        *nak_delay_ms = 100;
        return PARTI_NAK;
    }
    return PARTI_ACK;
}

static void demo_proc_on_event(void *user, const parti_event *ev) {
    demo_ctx *c = (demo_ctx *)user;
    demo_event e;
    char line[DEMO_LINE_MAX];
    int n;
    demo_event_from(&e, c->p, ev);
    if ((n = demo_event_format(line, sizeof line, c->k, &e)) > 0) demo_send(c->report_fd, line, (size_t)n);
}

static void demo_proc_on_consumer_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    demo_ctx *c = (demo_ctx *)user;
    char line[DEMO_LINE_MAX], text[200];
    int n;
    demo_copy_text(text, sizeof text, detail);
    n = snprintf(line, sizeof line, "C %d %d %d\t%s\n", c->k, (int)kind, (int)err, text);
    if (n > 0) demo_send(c->report_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* What every child does first: die with the parent, leave Ctrl-C to it. */
static void demo_child_setup(pid_t parent) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    if (getppid() != parent) _exit(1); /* the parent died before prctl */
    demo_ignore(SIGINT);
    demo_ignore(SIGPIPE);
    demo_catch(SIGTERM);
}

static int demo_worker_main(int k, const char *url, const char *dir, int report_fd) {
    parti_config cfg = demo_config();
    parti_transport t;
    parti_nats_options no;
    parti_options o;
    demo_ctx ctx;
    char path[600], msg[512];
    parti_err e;
    int rc = 0;
    memset(&ctx, 0, sizeof ctx);
    ctx.k = k;
    ctx.report_fd = report_fd;
    snprintf(path, sizeof path, "%s/%s.log", dir, demo_names[k]);
    if (!(ctx.record = fopen(path, "w"))) {
        demo_send_error(report_fd, k, "open record file", strerror(errno));
        return 1;
    }
    memset(&no, 0, sizeof no);
    no.name = demo_names[k];
    if ((e = parti_nats_connect(&t, url, &no, msg, sizeof msg)) != PARTI_ERR_OK) {
        demo_send_error(report_fd, k, "parti_nats_connect", msg);
        fclose(ctx.record);
        return 1;
    }
    o = demo_worker_options(&ctx, demo_proc_on_event, demo_proc_on_consumer_event, demo_proc_on_message);
    if ((e = parti_create(&ctx.p, &t, &cfg, &o, msg, sizeof msg)) != PARTI_ERR_OK) {
        demo_send_error(report_fd, k, "parti_create", msg);
        parti_nats_close(&t);
        fclose(ctx.record);
        return 1;
    }
    while (!demo_stop_requested) {
        if (parti_poll(ctx.p, 50) == PARTI_ERR_CLOSED) {
            demo_send_error(report_fd, k, "parti_poll", "the worker stopped on its own");
            rc = 1;
            break;
        }
        if (ctx.failed) {
            demo_send_error(report_fd, k, "record file", "write failed; messages are nak'ed");
            ctx.failed = 0;
        }
    }
    if (!rc && (e = parti_leave(ctx.p, DEMO_LEAVE_MS)) != PARTI_ERR_OK) {
        demo_send_error(report_fd, k, "parti_leave", parti_strerror(e));
        rc = 1;
    }
    parti_destroy(ctx.p);
    parti_nats_close(&t);
    fclose(ctx.record);
    return rc;
}

/* ---- real mode: the producer process -------------------------------------------------- */

/* Publishes with a Nats-Msg-Id, retrying a few times: a retry of a publish
 * that was stored is deduplicated by the server and acked with the first
 * sequence. */
static parti_err demo_publish_one(parti_transport *t, uint64_t n, int part, uint64_t *seq) {
    char subject[32], id[48], body[32];
    parti_header h;
    parti_pub_ack ack;
    parti_err e = PARTI_ERR_TIMEOUT;
    int attempt;
    snprintf(subject, sizeof subject, "demo.p%d", part);
    snprintf(id, sizeof id, "demo-%llu", (unsigned long long)n);
    snprintf(body, sizeof body, "message %llu", (unsigned long long)n);
    h.name = "Nats-Msg-Id";
    h.value = id;
    for (attempt = 0; attempt < 5; attempt++) {
        memset(&ack, 0, sizeof ack);
        e = t->vt->publish(t->self, subject, &h, 1, body, strlen(body), &ack, 2000);
        if (e == PARTI_ERR_OK) {
            *seq = ack.stream_seq;
            return e;
        }
        if (parti_error_category(e) == PARTI_CAT_INVALID_INPUT) break;
        demo_sleep_ms(100);
    }
    return e;
}

static int demo_producer_main(const char *url, const char *dir, int report_fd, int file_storage) {
    parti_transport t;
    parti_nats_options no;
    parti_stream_config sc = demo_stream_config(!file_storage);
    FILE *f;
    char path[600], msg[512];
    uint64_t n, start, seq;
    parti_err e;
    memset(&no, 0, sizeof no);
    no.name = "producer";
    if ((e = parti_nats_connect(&t, url, &no, msg, sizeof msg)) != PARTI_ERR_OK) {
        demo_send_error(report_fd, DEMO_PRODUCER_SLOT, "producer: parti_nats_connect", msg);
        return 1;
    }
    if ((e = t.vt->stream_create(t.self, &sc, 5000)) != PARTI_ERR_OK) {
        demo_send_error(report_fd, DEMO_PRODUCER_SLOT, "producer: stream_create", parti_strerror(e));
        parti_nats_close(&t);
        return 1;
    }
    snprintf(path, sizeof path, "%s/published.log", dir);
    if (!(f = fopen(path, "w"))) {
        demo_send_error(report_fd, DEMO_PRODUCER_SLOT, "producer: open published.log", strerror(errno));
        parti_nats_close(&t);
        return 1;
    }
    demo_send(report_fd, "P ready\n", 8);
    start = demo_mono_ms();
    for (n = 0; n < DEMO_MAX_PUBLISH && !demo_stop_requested; n++) {
        uint64_t due = start + n * 1000u / DEMO_RATE_PER_S, now = demo_mono_ms();
        int part = (int)(n % DEMO_PARTITIONS);
        if (due > now) demo_sleep_ms((uint32_t)(due - now));
        if (demo_stop_requested) break;
        if (demo_publish_one(&t, n, part, &seq) == PARTI_ERR_OK)
            fprintf(f, "%d %llu\n", part, (unsigned long long)seq);
        else
            fprintf(f, "x %d %llu\n", part, (unsigned long long)n);
        fflush(f);
    }
    fclose(f);
    parti_nats_close(&t);
    return 0;
}

/* ---- real mode: the parent's side -------------------------------------------------------- */

static uint64_t demo_real_now(demo *d) {
    (void)d;
    return demo_mono_ms();
}

static void demo_real_line(demo *d, char *line) {
    int k, kind, err;
    demo_event e;
    const char *tab = strchr(line, '\t');
    switch (line[0]) {
    case 'W':
        if (demo_event_parse(line, &k, &e) == 0) demo_on_worker_event(d, k, &e);
        break;
    case 'C':
        if (sscanf(line, "C %d %d %d", &k, &kind, &err) == 3) demo_on_consumer_event(d, k, kind, err, tab ? tab + 1 : "");
        break;
    case 'P':
        if (strncmp(line, "P ready", 7) == 0) d->producer_ready = 1;
        break;
    case 'E':
        if (sscanf(line, "E %d", &k) == 1 && k == DEMO_PRODUCER_SLOT) {
            demo_copy_text(d->producer_error, sizeof d->producer_error, tab ? tab + 1 : "");
            demo_problem(d, "%s", d->producer_error);
        } else {
            demo_problem(d, "%s: %s", k >= 0 && k < DEMO_WORKERS ? demo_names[k] : "?", tab ? tab + 1 : line);
        }
        break;
    default: break;
    }
}

static void demo_real_read_reports(demo *d) {
    for (;;) {
        ssize_t r = read(d->report_rd, d->rbuf + d->rlen, sizeof d->rbuf - 1 - d->rlen);
        char *nl;
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return; /* EAGAIN, or every writer gone */
        }
        d->rlen += (size_t)r;
        d->rbuf[d->rlen] = '\0';
        while ((nl = strchr(d->rbuf, '\n')) != NULL) {
            *nl = '\0';
            demo_real_line(d, d->rbuf);
            d->rlen -= (size_t)(nl + 1 - d->rbuf);
            memmove(d->rbuf, nl + 1, d->rlen);
            d->rbuf[d->rlen] = '\0';
        }
        if (d->rlen == sizeof d->rbuf - 1) d->rlen = 0; /* a line too long: drop it */
    }
}

static void demo_describe_exit(int st, char *buf, size_t cap) {
    if (WIFEXITED(st)) snprintf(buf, cap, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) snprintf(buf, cap, "signal %d", WTERMSIG(st));
    else snprintf(buf, cap, "status 0x%x", (unsigned)st);
}

/* Notices workers that died without being asked to. */
static void demo_real_reap(demo *d) {
    int k, st;
    char how[32];
    for (k = 0; k < DEMO_WORKERS; k++) {
        if (!d->w[k].alive || !d->w[k].pid) continue;
        if (waitpid(d->w[k].pid, &st, WNOHANG) == d->w[k].pid) {
            d->w[k].alive = 0;
            d->w[k].pid = 0;
            demo_describe_exit(st, how, sizeof how);
            demo_problem(d, "%s exited on its own (%s)", demo_names[k], how);
        }
    }
}

static void demo_real_run_for(demo *d, uint32_t ms) {
    uint64_t deadline = demo_mono_ms() + ms, now;
    while (!demo_stop_requested && (now = demo_mono_ms()) < deadline) {
        struct pollfd pfd;
        uint64_t left = deadline - now;
        pfd.fd = d->report_rd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)(left < 100 ? left : 100)) > 0) demo_real_read_reports(d);
        demo_real_reap(d);
    }
    demo_real_read_reports(d);
}

/* Forks a child that runs fn and exits with its status. */
static pid_t demo_real_fork(demo *d, int k) {
    pid_t parent = getpid(), pid;
    fflush(NULL); /* nothing buffered may be written twice */
    pid = fork();
    if (pid != 0) return pid;
    demo_child_setup(parent);
    close(d->report_rd);
    nats_server_stop(d->server, NULL, 0); /* frees the inherited copy; the server is the parent's */
    d->server = NULL;
    if (k == DEMO_PRODUCER_SLOT) exit(demo_producer_main(d->url, d->dir, d->report_wr, 1));
    exit(demo_worker_main(k, d->url, d->dir, d->report_wr));
}

static int demo_real_start_worker(demo *d, int k) {
    pid_t pid = demo_real_fork(d, k);
    if (pid < 0) return -1;
    d->w[k].pid = pid;
    d->w[k].started = d->w[k].alive = 1;
    if (!d->check) demo_say(d, "%s started (pid %ld)", demo_names[k], (long)pid);
    return 0;
}

/* Waits for pid with a deadline; 1 = reaped, 0 = still running. */
static int demo_real_wait_pid(demo *d, pid_t pid, uint32_t ms, int *status) {
    uint64_t deadline = demo_mono_ms() + ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) return 1;
        if (demo_mono_ms() >= deadline) return 0;
        demo_real_read_reports(d);
        demo_sleep_ms(10);
    }
}

static int demo_real_kill_worker(demo *d, int k) {
    int st = 0;
    if (!d->w[k].alive || !d->w[k].pid) return -1;
    kill(d->w[k].pid, SIGKILL);
    d->w[k].alive = 0; /* from now on its reports still in the pipe are ignored */
    d->w[k].killed = 1;
    demo_real_wait_pid(d, d->w[k].pid, 2000, &st);
    if (!d->check) demo_say(d, "kill -9 %s (pid %ld), which owned %d partitions", demo_names[k], (long)d->w[k].pid, d->w[k].nowned);
    d->w[k].pid = 0;
    return 0;
}

static int demo_real_stop_producer(demo *d) {
    int st = 0, ok;
    if (!d->producer) return 0;
    kill(d->producer, SIGTERM);
    ok = demo_real_wait_pid(d, d->producer, DEMO_PRODUCER_STOP_MS, &st);
    if (!ok) {
        kill(d->producer, SIGKILL);
        demo_real_wait_pid(d, d->producer, 2000, &st);
    }
    d->producer = 0;
    d->producing = 0;
    return ok && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

static int demo_real_stop_workers(demo *d) {
    uint64_t start = demo_mono_ms();
    int k, st, rc = 0, left;
    char how[32];
    for (k = 0; k < DEMO_WORKERS; k++)
        if (d->w[k].alive && d->w[k].pid) kill(d->w[k].pid, SIGTERM);
    do {
        left = 0;
        demo_real_read_reports(d);
        for (k = 0; k < DEMO_WORKERS; k++) {
            if (!d->w[k].alive || !d->w[k].pid) continue;
            if (waitpid(d->w[k].pid, &st, WNOHANG) != d->w[k].pid) {
                left++;
                continue;
            }
            demo_describe_exit(st, how, sizeof how);
            if (!d->check)
                demo_say(d, "%s left (%s, %.1f s after SIGTERM)", demo_names[k], how,
                         (double)(demo_mono_ms() - start) / 1000.0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) demo_problem(d, "%s ended with %s", demo_names[k], how);
            d->w[k].alive = 0;
            d->w[k].pid = 0;
        }
        if (left) demo_sleep_ms(10);
    } while (left && demo_mono_ms() - start < DEMO_STOP_MS);
    for (k = 0; k < DEMO_WORKERS; k++) {
        if (!d->w[k].alive || !d->w[k].pid) continue;
        kill(d->w[k].pid, SIGKILL);
        demo_real_wait_pid(d, d->w[k].pid, 2000, &st);
        d->w[k].alive = 0;
        d->w[k].pid = 0;
        rc = -1;
    }
    return rc;
}

static void demo_real_read_file(demo *d, const char *name, int k) {
    char path[600], line[128];
    FILE *f;
    int lines = 0;
    snprintf(path, sizeof path, "%s/%s", d->dir, name);
    if (!(f = fopen(path, "r"))) return;
    while (fgets(line, sizeof line, f) && lines++ < 4 * DEMO_MAX_SEQ) {
        int part, n;
        unsigned long long seq, at = 0;
        if (!strchr(line, '\n')) break; /* a torn last line: not on record */
        if (k < 0 && line[0] == 'x') d->publish_failed++;
        else if ((n = sscanf(line, "%d %llu %llu", &part, &seq, &at)) < 2) continue;
        else if (k < 0) demo_ledger_published(d, part, seq);
        else demo_ledger_handled(d, k, part, seq, at);
    }
    fclose(f);
}

static void demo_real_collect(demo *d) {
    char name[32];
    int k;
    demo_ledger_reset_published(d);
    demo_ledger_reset_handled(d);
    demo_real_read_file(d, "published.log", -1);
    for (k = 0; k < DEMO_WORKERS; k++) {
        if (!d->w[k].started) continue;
        snprintf(name, sizeof name, "%s.log", demo_names[k]);
        demo_real_read_file(d, name, k);
    }
}

static const demo_mode demo_real_mode = {demo_real_now,          demo_real_start_worker, demo_real_kill_worker,
                                         demo_real_run_for,      demo_real_stop_producer, demo_real_stop_workers,
                                         demo_real_collect};

static int demo_real_start_producer(demo *d) {
    uint64_t start = demo_mono_ms();
    pid_t pid = demo_real_fork(d, DEMO_PRODUCER_SLOT);
    if (pid < 0) return -1;
    d->producer = pid;
    while (!d->producer_ready && !d->producer_error[0] && !demo_stop_requested &&
           demo_mono_ms() - start < DEMO_PRODUCER_READY_MS)
        demo_real_run_for(d, 50);
    if (!d->producer_ready) {
        if (!d->producer_error[0] && !demo_stop_requested) demo_step_timed_out(d, "the producer connects");
        return -1;
    }
    d->producing = 1;
    if (!d->check) {
        demo_say(d, "stream \"demo\" on demo.> (file storage); partitions p0..p11 are demo.p0..demo.p11");
        demo_say(d, "producer (pid %ld) publishes %d msg/s round-robin over the 12 partitions", (long)pid,
                 DEMO_RATE_PER_S);
    }
    return 0;
}

/* Every child is gone and the server stopped, whatever happened before. */
static void demo_real_cleanup(demo *d) {
    int k, st;
    char err[512];
    if (d->producer) {
        kill(d->producer, SIGTERM);
        if (!demo_real_wait_pid(d, d->producer, 3000, &st)) {
            kill(d->producer, SIGKILL);
            demo_real_wait_pid(d, d->producer, 2000, &st);
        }
        d->producer = 0;
    }
    for (k = 0; k < DEMO_WORKERS; k++)
        if (d->w[k].pid) kill(d->w[k].pid, SIGTERM);
    for (k = 0; k < DEMO_WORKERS; k++) {
        if (!d->w[k].pid) continue;
        if (!demo_real_wait_pid(d, d->w[k].pid, 3000, &st)) {
            kill(d->w[k].pid, SIGKILL);
            demo_real_wait_pid(d, d->w[k].pid, 2000, &st);
        }
        d->w[k].pid = 0;
        d->w[k].alive = 0;
    }
    if (d->server && nats_server_stop(d->server, err, sizeof err) != 0) fprintf(stderr, "demo: stopping nats-server: %s\n", err);
    d->server = NULL;
    if (d->report_rd >= 0) close(d->report_rd);
    if (d->report_wr >= 0) close(d->report_wr);
    d->report_rd = d->report_wr = -1;
}

static int demo_run_real(demo *d, const char *binary) {
    nats_server_options so;
    char err[1024];
    int fds[2], rc;
    memset(&so, 0, sizeof so);
    so.binary = binary;
    so.start_timeout_ms = DEMO_SERVER_START_MS;
    so.stop_timeout_ms = 5000;
    if (nats_server_start(&d->server, &so, err, sizeof err) != 0) {
        printf("demo: cannot start nats-server: %s\n", err);
        return 1;
    }
    snprintf(d->url, sizeof d->url, "%s", nats_server_url(d->server));
    snprintf(d->dir, sizeof d->dir, "%s", nats_server_dir(d->server));
    if (pipe(fds) != 0) {
        printf("demo: pipe: %s\n", strerror(errno));
        demo_real_cleanup(d);
        return 1;
    }
    d->report_rd = fds[0];
    d->report_wr = fds[1];
    fcntl(d->report_rd, F_SETFL, fcntl(d->report_rd, F_GETFL) | O_NONBLOCK);
    d->mode = &demo_real_mode;
    if (d->check)
        printf("demo --check: nats-server %s on %s\n", nats_server_version(d->server), d->url);
    else
        printf("parti demo: 12 partitions, a changing group of worker processes, nats-server %s on %s\n"
               "(a temporary server: loopback only, store and worker records in %s, removed at the end)\n\n",
               nats_server_version(d->server), d->url, d->dir);
    if (demo_real_start_producer(d) != 0) {
        demo_real_cleanup(d);
        return demo_stop_requested ? 130 : 1;
    }
    rc = demo_story(d);
    demo_real_cleanup(d);
    return rc;
}

/* ---- fake mode: one process, virtual time ------------------------------------------------ */

static uint64_t demo_fake_now(demo *d) { return parti_fake_now(d->world); }

static parti_verdict demo_fake_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    demo_ctx *c = (demo_ctx *)user;
    (void)nak_delay_ms;
    demo_ledger_handled(c->d, c->k, demo_partition_of(m->subject), m->stream_seq, parti_fake_now(c->d->world));
    return PARTI_ACK;
}

static void demo_fake_on_event(void *user, const parti_event *ev) {
    demo_ctx *c = (demo_ctx *)user;
    demo_event e;
    demo_event_from(&e, c->p, ev);
    demo_on_worker_event(c->d, c->k, &e);
}

static void demo_fake_on_consumer_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    demo_ctx *c = (demo_ctx *)user;
    demo_on_consumer_event(c->d, c->k, (int)kind, (int)err, detail);
}

static int demo_fake_start_worker(demo *d, int k) {
    demo_worker *w = &d->w[k];
    parti_config cfg = demo_config();
    parti_options o;
    char msg[512];
    parti_err e;
    if ((e = parti_fake_connect(d->world, demo_names[k], &w->t)) != PARTI_ERR_OK) {
        printf("demo: parti_fake_connect: %s\n", parti_strerror(e));
        return -1;
    }
    w->connected = 1;
    w->ctx.d = d;
    w->ctx.k = k;
    o = demo_worker_options(&w->ctx, demo_fake_on_event, demo_fake_on_consumer_event, demo_fake_on_message);
    if ((e = parti_create(&w->p, &w->t, &cfg, &o, msg, sizeof msg)) != PARTI_ERR_OK) {
        printf("demo: parti_create: %s: %s\n", parti_strerror(e), msg);
        return -1;
    }
    w->ctx.p = w->p;
    w->started = w->alive = 1;
    if (!d->check) demo_say(d, "%s started", demo_names[k]);
    return 0;
}

static int demo_fake_kill_worker(demo *d, int k) {
    demo_worker *w = &d->w[k];
    if (!w->alive || !w->p) return -1;
    parti_destroy(w->p); /* no leave: to the others it looks crashed */
    w->p = NULL;
    w->ctx.p = NULL;
    parti_fake_partition(d->world, &w->t, 1);
    w->alive = 0;
    w->killed = 1;
    if (!d->check) demo_say(d, "%s crashes (destroyed without leaving, cut off), owned %d partitions", demo_names[k], w->nowned);
    return 0;
}

static void demo_fake_publish_due(demo *d) {
    uint64_t now = parti_fake_now(d->world), seq = 0;
    int burst;
    for (burst = 0; d->producing && d->next_pub_ms <= now && burst < 100 && d->pub_n < DEMO_MAX_PUBLISH; burst++) {
        int part = (int)(d->pub_n % DEMO_PARTITIONS);
        if (demo_publish_one(&d->pub_t, d->pub_n, part, &seq) == PARTI_ERR_OK) demo_ledger_published(d, part, seq);
        else d->publish_failed++;
        d->pub_n++;
        d->next_pub_ms += 1000u / DEMO_RATE_PER_S;
    }
}

/* One round: the producer publishes what is due, every live worker polls.
 * Each poll moves the shared virtual clock (auto-advance). */
static void demo_fake_run_for(demo *d, uint32_t ms) {
    uint64_t deadline = parti_fake_now(d->world) + ms;
    int rounds, k;
    for (rounds = 0; rounds < 100000 && !demo_stop_requested && parti_fake_now(d->world) < deadline; rounds++) {
        uint64_t before = parti_fake_now(d->world);
        demo_fake_publish_due(d);
        for (k = 0; k < DEMO_WORKERS; k++)
            if (d->w[k].alive && d->w[k].p) parti_poll(d->w[k].p, 5);
        if (parti_fake_now(d->world) == before) parti_fake_advance(d->world, 1);
    }
}

static int demo_fake_stop_producer(demo *d) {
    d->producing = 0;
    return 0;
}

static int demo_fake_stop_workers(demo *d) {
    int k, rc = 0;
    parti_err e;
    for (k = 0; k < DEMO_WORKERS; k++) {
        uint64_t start = parti_fake_now(d->world);
        if (!d->w[k].alive || !d->w[k].p) continue;
        if ((e = parti_leave(d->w[k].p, DEMO_LEAVE_MS)) != PARTI_ERR_OK) {
            demo_problem(d, "%s: parti_leave: %s", demo_names[k], parti_strerror(e));
            rc = -1;
        } else if (!d->check) {
            demo_say(d, "%s left (parti_leave took %.2f s)", demo_names[k],
                     (double)(parti_fake_now(d->world) - start) / 1000.0);
        }
        d->w[k].alive = 0;
        /* let the others see it go before the next one leaves */
        demo_fake_run_for(d, 300);
    }
    return rc;
}

static void demo_fake_collect(demo *d) { (void)d; /* the handler writes the ledger directly */ }

static const demo_mode demo_fake_mode = {demo_fake_now,          demo_fake_start_worker, demo_fake_kill_worker,
                                         demo_fake_run_for,      demo_fake_stop_producer, demo_fake_stop_workers,
                                         demo_fake_collect};

static void demo_fake_cleanup(demo *d) {
    int k;
    for (k = 0; k < DEMO_WORKERS; k++) {
        if (d->w[k].p) parti_destroy(d->w[k].p);
        d->w[k].p = NULL;
        if (d->w[k].connected) parti_fake_disconnect(&d->w[k].t);
        d->w[k].connected = 0;
    }
    if (d->pub_connected) parti_fake_disconnect(&d->pub_t);
    d->pub_connected = 0;
    if (d->world) parti_fake_world_destroy(d->world);
    d->world = NULL;
}

static int demo_run_fake(demo *d) {
    parti_fake_options fo;
    parti_stream_config sc = demo_stream_config(0);
    parti_err e;
    int rc;
    memset(&fo, 0, sizeof fo);
    fo.no_log = 1;
    if ((e = parti_fake_world_create(&d->world, &fo)) != PARTI_ERR_OK ||
        (e = parti_fake_connect(d->world, "producer", &d->pub_t)) != PARTI_ERR_OK) {
        printf("demo: the fake NATS: %s\n", parti_strerror(e));
        demo_fake_cleanup(d);
        return 1;
    }
    d->pub_connected = 1;
    d->mode = &demo_fake_mode;
    d->t0 = parti_fake_now(d->world);
    if ((e = d->pub_t.vt->stream_create(d->pub_t.self, &sc, 2000)) != PARTI_ERR_OK) {
        printf("demo: stream_create on the fake NATS: %s\n", parti_strerror(e));
        demo_fake_cleanup(d);
        return 1;
    }
    d->producing = 1;
    d->next_pub_ms = d->t0;
    if (d->check)
        printf("demo --check: FAKE NATS (one process, virtual time)\n");
    else {
        printf("parti demo on the FAKE NATS: every worker is a parti object in this one process, each with its\n"
               "own client of an in-memory NATS; times are VIRTUAL seconds; killing = destroy without leaving\n"
               "and cutting the worker's client off\n\n");
        demo_say(d, "stream \"demo\" on demo.>; partitions p0..p11 are demo.p0..demo.p11");
        demo_say(d, "the producer publishes %d msg/s (virtual) round-robin over the 12 partitions", DEMO_RATE_PER_S);
    }
    rc = demo_story(d);
    demo_fake_cleanup(d);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

static void demo_first_line(const char *text, char *out, size_t cap) {
    size_t i;
    for (i = 0; text[i] && text[i] != '\n' && i + 1 < cap; i++) out[i] = text[i];
    out[i] = '\0';
}

int main(int argc, char **argv) {
    demo *d;
    char binary[1024], err[1024], line[256];
    int i, force_fake = 0, rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!(d = (demo *)calloc(1, sizeof *d))) return 1;
    d->report_rd = d->report_wr = -1;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--check") == 0) d->check = 1;
        else if (strcmp(argv[i], "--fake") == 0) force_fake = 1;
        else if (strcmp(argv[i], "--kill-leader") == 0) d->kill_leader = 1;
        else {
            fprintf(stderr, "usage: %s [--check] [--fake] [--kill-leader]\n", argv[0]);
            free(d);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    demo_ledger_reset_published(d);
    demo_ledger_reset_handled(d);
    demo_catch(SIGINT);
    demo_catch(SIGTERM);
    demo_ignore(SIGPIPE);
    if (force_fake) {
        rc = demo_run_fake(d);
    } else if (nats_server_find_binary(binary, sizeof binary, err, sizeof err) != 0) {
        demo_first_line(err, line, sizeof line);
        printf("no nats-server binary (%s; scripts/setup installs one): running the story on the fake NATS\n", line);
        rc = demo_run_fake(d);
    } else {
        d->t0 = demo_mono_ms(); /* the server's start counts too */
        rc = demo_run_real(d, binary);
    }
    free(d);
    return rc;
}

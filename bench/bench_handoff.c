/* bench_handoff.c - the partition handoff on a real nats-server, with worker
 * processes: a long soak under faults, and a handoff to a worker with a
 * backlog.
 *
 * Every worker, the producer and a helper ("tool") are processes forked from
 * this one, each connecting to a nats-server started for the part (loopback,
 * random port, temporary directory, removed at the end; tests/nats_server.h).
 * The parent never opens a nats.c connection (nats.c starts threads, and a
 * process with threads cannot fork safely); children report over one pipe,
 * one line per event (shorter than PIPE_BUF, so lines never mix), and workers
 * write what their handlers did to their own files, flushed before the ack.
 * Times are CLOCK_MONOTONIC microseconds, comparable across the processes of
 * one host.
 *
 * Part 1, "soak": 64 partitions, a producer publishing --rate msg/s (default
 * 2,000; each message carries a unique id and a Nats-Msg-Id; the producer
 * records id, partition, stream sequence and publish time), workers of
 * unequal speed (w2's handler takes --slow-us, default 1 ms, per message;
 * w3 200 us, w5 100 us, the rest nothing). While producing, at fixed
 * fractions of --seconds (default 60): w4 and w5 join, w3 leaves gracefully
 * (SIGTERM -> parti_leave), a worker owning partitions is killed with kill -9
 * (not the leader unless --kill-leader), w6 joins, the slow w2 is SIGSTOPped
 * for --stop-ms (default 3 s, twice the member TTL) and continued, w5
 * leaves, w7 joins. Then the producer stops, the group drains, every worker
 * leaves, and every handling on record (partition, stream sequence, worker,
 * start, end, parti_msg.generation) is checked:
 *   lost       published, never handled (must be 0)
 *   order      per partition, a first handling of a sequence below one
 *              handled first before it, in start-time order (must be 0)
 *   fencing    per partition, a handling whose generation is below one that
 *              started before it (must be 0)
 *   overlap    two workers handling one partition at the same wall time,
 *              classified: SIGSTOP (a handler call of the paused worker was
 *              under way while it was frozen: its lease ended during the
 *              call, which the fencing token is for), kill -9 (one side is
 *              the killed worker), other (must be 0)
 *   duplicates each repeat of a sequence, by the worker that handled it
 *              before: the killed worker (repeat after the kill: its work
 *              after its last checkpoint), the paused worker (repeat after the
 *              SIGSTOP: its lease ran out), other (must be 0)
 * and the latency from publish to first handling. Exit 1 when lost, order,
 * fencing, other overlaps or other duplicates are not 0, or a record does
 * not match what was published.
 *
 * Part 2, "backlog": does a handoff to a worker with a large backlog on its
 * OTHER partitions cost more than to one without? 16 partitions; a strategy
 * callback gives p0..p7 to the member with the highest capacity (B, 2) and
 * p8..p15 to the one with the lowest (A, 1), all to B when alone. B's handler
 * takes --slow-us per message of p0..p7, so a backlog published there stays
 * in B's durable (its num_pending is printed). Each repetition starts a fresh
 * A, waits until A holds p8..p15 and the group is at rest, then A leaves
 * (SIGTERM -> parti_leave) and, as soon as the leave returns, publishes M1 on
 * P (one of p8..p15): the next message of P. Measured: from A's leave call to
 * B's handler seeing M1 (with where it came from: the catch-up read from the
 * stream, or B's durable) and the stages on B (P claimed, filter updated).
 * Then the tool publishes M2 on P, now B's, and the time to B's handler is
 * measured too: through B's durable it would wait behind whatever backlog
 * sits there; the catch-up's tail reads it from the stream instead until the
 * durable has caught up (--m2-wait-ms bounds the wait). --reps repetitions (default 5) with
 * no backlog, then the tool publishes --backlog messages (default 1,000,000,
 * async publishes, file storage; the rate is printed) on p0..p7 and the
 * repetitions run again. Printed: p50 and max of each, and backlog/empty.
 * With --backlog 0 both phases are the same: their ratio is the noise floor
 * of the machine (on a busy 2-core host it varies a lot; raise --reps).
 * Exit 1 when a marker M1 is not handled by B, or not by its owner, or an
 * M2 is not handled within --m2-wait-ms.
 *
 *   bench_handoff [--part soak|backlog|both] [--seconds N] [--rate N] [--slow-us N]
 *                 [--stop-ms N] [--kill-leader] [--backlog N] [--reps N] [--m2-wait-ms N] [--verbose]
 *
 * Exit status: 0 when every check passed, 1 otherwise, 130 when interrupted.
 * Every child is killed at exit (and dies with this process: PR_SET_PDEATHSIG). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* fork, pipes, signals, clock_gettime, statvfs; the nats.c binding */
#endif
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "../tests/nats_server.h"

#include <nats/nats.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BH_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define BH_PRINTF(a, b)
#endif

/* ---- the setting ------------------------------------------------------------------ */

#define MAX_PARTS 64
#define SOAK_PARTS 64
#define BL_PARTS 16          /* p0..p7 B's backlog partitions, p8..p15 A's */
#define MAX_PROCS 48         /* slot 0: producer or tool; workers from 1 */
#define REPORT_LINE 1024     /* < PIPE_BUF: a line is written atomically */
#define MAX_REPS 16
#define HEARTBEAT_MS 250
#define MEMBER_TTL_MS 1500
#define COMMIT_INTERVAL_MS 1000 /* the default, shown in the report */
#define LEAVE_TIMEOUT_MS 5000
#define SERVER_START_MS 15000

enum { PART_SOAK = 1, PART_BACKLOG = 2 };
enum { ROLE_WORKER = 1, ROLE_PRODUCER, ROLE_TOOL };

typedef struct options {
    int parts;               /* PART_SOAK | PART_BACKLOG */
    int seconds;             /* soak duration */
    uint32_t rate;           /* soak msg/s */
    uint32_t slow_us;        /* the slow handler */
    uint32_t stop_ms;        /* soak: SIGSTOP length */
    int kill_leader;
    uint64_t backlog;        /* backlog part: N */
    int reps;
    uint32_t m2_wait_ms;
    int verbose;
} options;

static const char *key_ptr[MAX_PARTS][1];
static char key_text[MAX_PARTS][16];
static parti_partition parts[MAX_PARTS];

/* Set by SIGINT / SIGTERM in the parent, by SIGTERM in a child. */
static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void set_signal(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL); /* no SA_RESTART: a blocking wait returns at once */
}

static uint64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_us(uint64_t us) {
    struct timespec ts;
    ts.tv_sec = (time_t)(us / 1000000u);
    ts.tv_nsec = (long)(us % 1000000u) * 1000L;
    nanosleep(&ts, NULL); /* a signal ends it early, which is what we want */
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n values (sorted in place), 0 when n is 0. */
static uint64_t percentile(uint64_t *v, size_t n, double p) {
    size_t i;
    if (!n) return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    i = (size_t)(p * (double)n + 0.999999);
    i = i ? i - 1 : 0;
    return v[i < n ? i : n - 1];
}

static double ms_of(uint64_t us) { return (double)us / 1000.0; }

static void make_partitions(void) {
    int i;
    for (i = 0; i < MAX_PARTS; i++) {
        snprintf(key_text[i], sizeof key_text[i], "p%d", i);
        key_ptr[i][0] = key_text[i];
        parts[i].keys = key_ptr[i];
        parts[i].key_count = 1;
        parts[i].weight = 1;
    }
}

/* ---- the parent's view of its children ------------------------------------------- */

typedef struct proc {
    pid_t pid;               /* 0: never started, or reaped */
    int role;
    int expected_exit;       /* asked to stop, or killed: its exit is no surprise */
    int killed, stopped;
    int status, reaped;
    int cmd_fd;              /* the parent's end of its command pipe, or -1 */
    int ready;               /* producer / tool: connected and set up */
    /* a worker as its last event shows it */
    char id[40];
    int state, leader, nowned;
    uint64_t version;
    unsigned char owned[MAX_PARTS];
} proc;

/* What a child needs; filled by the parent before the fork. */
typedef struct child_args {
    int part, role, slot;
    uint32_t slow_us, capacity, rate;
    int rep, marker_part;    /* backlog A: publishes "M1 <rep>" on p<marker_part> after leaving */
    int cmd_fd;              /* producer / tool: commands from the parent */
} child_args;

typedef struct bench {
    options o;
    int part;                /* the part running now */
    nats_server *server;
    char url[128], dir[512];
    int report_rd, report_wr;
    char rbuf[65536];
    size_t rlen;
    proc p[MAX_PROCS];
    uint64_t t0_us;          /* log times are from here */
    int problems;
    uint64_t last_rebalance;     /* when a leader last published an assignment */
    void (*on_line)(char *line); /* the part's report lines other than W, E and R */
} bench;

static bench g;

static double secs_now(void) { return (double)(mono_us() - g.t0_us) / 1e6; }

static void say(const char *fmt, ...) BH_PRINTF(1, 2);
static void say(const char *fmt, ...) {
    va_list ap;
    printf("%8.2fs  ", secs_now());
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static void problem(const char *fmt, ...) BH_PRINTF(1, 2);
static void problem(const char *fmt, ...) {
    va_list ap;
    printf("%8.2fs  PROBLEM: ", secs_now());
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    g.problems++;
}

/* ---- children: the report pipe ---------------------------------------------------- */

static int report_fd = -1; /* in a child: the pipe to the parent */

static void report(const char *fmt, ...) BH_PRINTF(1, 2);
static void report(const char *fmt, ...) {
    char line[REPORT_LINE];
    va_list ap;
    int n, tries;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    for (tries = 0; tries < 100; tries++) /* one write: atomic below PIPE_BUF */
        if (write(report_fd, line, (size_t)n) >= 0 || errno != EINTR) return;
}

static void clean_text(char *dst, size_t cap, const char *src) {
    size_t i;
    if (!cap) return;
    for (i = 0; src && src[i] && i + 1 < cap; i++) dst[i] = (src[i] == '\n' || src[i] == '\r') ? ' ' : src[i];
    dst[i] = '\0';
}

static void report_error(int slot, const char *what, const char *msg) {
    char text[400];
    clean_text(text, sizeof text, msg);
    report("E %d %s: %s", slot, what, text);
}

/* ---- the worker process --------------------------------------------------------------- */

typedef struct wctx {
    const child_args *a;
    parti *p;
    FILE *record;            /* soak: one line per handling */
    int failed;
    uint64_t backlog_handled, last_pending;
} wctx;

/* Backlog part: p0..p(n/2-1) to the member with the highest capacity (B),
 * the rest to the one with the lowest (A); ties to the first. */
static parti_err backlog_strategy(void *user, const parti_assign_input *in, int *owner) {
    int i, hi = 0, lo = 0;
    (void)user;
    for (i = 1; i < in->member_count; i++) {
        if (in->members[i].capacity > in->members[hi].capacity) hi = i;
        if (in->members[i].capacity < in->members[lo].capacity) lo = i;
    }
    for (i = 0; i < in->partition_count; i++) owner[i] = i < in->partition_count / 2 ? hi : lo;
    return PARTI_ERR_OK;
}

static parti_config part_config(int part) {
    parti_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = part == PART_SOAK ? "soak" : "bl";
    cfg.subject_template = part == PART_SOAK ? "soak.{0}" : "bl.{0}";
    cfg.partitions = parts;
    cfg.partition_count = part == PART_SOAK ? SOAK_PARTS : BL_PARTS;
    /* short pulls: a leaving worker's pending pull ends soon */
    cfg.fetch_expires_ms = 1000;
    cfg.fetch_heartbeat_ms = 250;
    return cfg;
}

static parti_stream_config part_stream(int part) {
    static const char *const soak_subjects[] = {"soak.>"}, *const bl_subjects[] = {"bl.>"};
    parti_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.name = part == PART_SOAK ? "soak" : "bl";
    sc.subjects = part == PART_SOAK ? soak_subjects : bl_subjects;
    sc.subject_count = 1;
    sc.memory_storage = 0; /* file storage */
    return sc;
}

static uint64_t parse_uint(const uint8_t *data, size_t len) {
    uint64_t v = 0;
    size_t i;
    for (i = 0; i < len && i < 20 && data[i] >= '0' && data[i] <= '9'; i++) v = v * 10u + (uint64_t)(data[i] - '0');
    return v;
}

static parti_verdict soak_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    wctx *c = (wctx *)user;
    uint64_t start = mono_us(), end, id = parse_uint(m->data, m->len);
    if (c->a->slow_us) sleep_us(c->a->slow_us);
    end = mono_us();
    /* flushed before the ack: whatever was acked is on record */
    if (fprintf(c->record, "%d %llu %llu %llu %llu %llu\n", m->partition, (unsigned long long)m->stream_seq,
                (unsigned long long)start, (unsigned long long)end, (unsigned long long)m->generation,
                (unsigned long long)id) < 0 ||
        fflush(c->record) != 0) {
        c->failed = 1;
        *nak_delay_ms = 100;
        return PARTI_NAK;
    }
    return PARTI_ACK;
}

/* "M1 <rep>" / "M2 <rep>": 1 and which (1, 2) and rep; 0 for anything else. */
static int marker_parse(const parti_msg *m, int *which, int *rep) {
    if (m->len < 4 || m->len > 24 || m->data[0] != 'M' || (m->data[1] != '1' && m->data[1] != '2') || m->data[2] != ' ')
        return 0;
    *which = m->data[1] - '0';
    *rep = (int)parse_uint(m->data + 3, m->len - 3);
    return 1;
}

static parti_verdict backlog_on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    wctx *c = (wctx *)user;
    uint64_t t = mono_us();
    int which, rep;
    (void)nak_delay_ms;
    if (marker_parse(m, &which, &rep)) {
        const parti_metrics *mx = parti_metrics_of(c->p);
        /* via: d = B's durable, s = read from the stream (a catch-up: direct reads carry no consumer sequence) */
        report("K %d %d %d %llu %d %llu %llu %c %llu %llu %llu", c->a->slot, which, rep, (unsigned long long)t,
               m->partition, (unsigned long long)m->stream_seq, (unsigned long long)m->generation,
               m->consumer_seq ? 'd' : 's', (unsigned long long)c->last_pending,
               (unsigned long long)c->backlog_handled, (unsigned long long)mx->consumer_catch_up_reads.value);
        return PARTI_ACK;
    }
    if (m->partition >= 0 && m->partition < BL_PARTS / 2) { /* the backlog */
        if (m->consumer_seq) c->last_pending = m->num_pending;
        c->backlog_handled++;
        if (c->a->slow_us) sleep_us(c->a->slow_us);
    }
    return PARTI_ACK;
}

/* "W slot kind state leader version nowned owned-csv id" */
static void worker_on_event(void *user, const parti_event *ev) {
    wctx *c = (wctx *)user;
    char owned[MAX_PARTS * 4 + 2];
    const int *o = NULL;
    size_t used = 0;
    int n = c->p ? parti_owned(c->p, &o) : 0, i, r;
    owned[0] = '\0';
    for (i = 0; i < n; i++) {
        r = snprintf(owned + used, sizeof owned - used, "%s%d", i ? "," : "", o[i]);
        if (r < 0 || (size_t)r >= sizeof owned - used) break;
        used += (size_t)r;
    }
    report("W %d %d %d %d %llu %d %s %s %d %llu", c->a->slot, (int)ev->kind, (int)ev->state,
           c->p ? parti_is_leader(c->p) : 0, (unsigned long long)ev->version, n, n ? owned : "-",
           ev->worker_id && ev->worker_id[0] ? ev->worker_id : "-", ev->moved, (unsigned long long)mono_us());
}

static void worker_on_consumer_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    wctx *c = (wctx *)user;
    (void)detail;
    if (c->a->part == PART_BACKLOG)
        report("U %d %d %d %llu", c->a->slot, (int)kind, (int)err, (unsigned long long)mono_us());
}

static void worker_on_assigned(void *user, const int *ps, int n) {
    wctx *c = (wctx *)user;
    char list[MAX_PARTS * 4 + 2];
    size_t used = 0;
    int i, r;
    if (c->a->part != PART_BACKLOG) return;
    list[0] = '\0';
    for (i = 0; i < n; i++) {
        r = snprintf(list + used, sizeof list - used, "%s%d", i ? "," : "", ps[i]);
        if (r < 0 || (size_t)r >= sizeof list - used) break;
        used += (size_t)r;
    }
    report("G %d %llu %s", c->a->slot, (unsigned long long)mono_us(), n ? list : "-");
}

static parti_options worker_options(wctx *c) {
    parti_options o;
    memset(&o, 0, sizeof o);
    o.on_message = c->a->part == PART_SOAK ? soak_on_message : backlog_on_message;
    o.user = c;
    o.on_event = worker_on_event;
    o.on_consumer_event = worker_on_consumer_event;
    o.on_partitions_assigned = worker_on_assigned;
    o.heartbeat_ms = HEARTBEAT_MS;
    o.member_ttl_ms = MEMBER_TTL_MS;
    o.cold_start_ms = c->a->part == PART_SOAK ? 1000 : 500;
    o.planned_window_ms = c->a->part == PART_SOAK ? 200 : 100;
    o.emergency_grace_ms = c->a->part == PART_SOAK ? 100 : 50;
    o.commit_interval_ms = COMMIT_INTERVAL_MS;
    o.capacity = c->a->capacity;
    if (c->a->part == PART_BACKLOG) {
        o.assign.strategy = PARTI_STRATEGY_CALLBACK;
        o.assign.callback = backlog_strategy;
    }
    return o;
}

/* Backlog A, after its leave: the next message of its partition P. */
static void publish_m1(parti_transport *t, const child_args *a, uint64_t leave0, uint64_t leave1, parti_err le) {
    char subject[32], body[32];
    parti_pub_ack ack;
    parti_err e;
    uint64_t t2;
    snprintf(subject, sizeof subject, "bl.p%d", a->marker_part);
    snprintf(body, sizeof body, "M1 %d", a->rep);
    memset(&ack, 0, sizeof ack);
    e = t->vt->publish(t->self, subject, NULL, 0, body, strlen(body), &ack, 2000);
    t2 = mono_us();
    report("L %d %d %llu %llu %llu %llu %d %d", a->slot, a->rep, (unsigned long long)leave0, (unsigned long long)leave1,
           (unsigned long long)t2, (unsigned long long)ack.stream_seq, (int)le, (int)e);
}

static int worker_main(const child_args *a, const char *url, const char *dir) {
    parti_config cfg = part_config(a->part);
    parti_transport t;
    parti_nats_options no;
    parti_options o;
    wctx c;
    char path[600], name[32], msg[512];
    parti_err e;
    uint64_t leave0, leave1;
    int rc = 0;
    memset(&c, 0, sizeof c);
    c.a = a;
    if (a->part == PART_SOAK) {
        snprintf(path, sizeof path, "%s/w%d.log", dir, a->slot);
        if (!(c.record = fopen(path, "w"))) {
            report_error(a->slot, "open record file", strerror(errno));
            return 1;
        }
    }
    memset(&no, 0, sizeof no);
    snprintf(name, sizeof name, "%s-w%d", a->part == PART_SOAK ? "soak" : "bl", a->slot);
    no.name = name;
    if ((e = parti_nats_connect(&t, url, &no, msg, sizeof msg)) != PARTI_ERR_OK) {
        report_error(a->slot, "parti_nats_connect", msg);
        if (c.record) fclose(c.record);
        return 1;
    }
    o = worker_options(&c);
    if ((e = parti_create(&c.p, &t, &cfg, &o, msg, sizeof msg)) != PARTI_ERR_OK) {
        report_error(a->slot, "parti_create", msg);
        parti_nats_close(&t);
        if (c.record) fclose(c.record);
        return 1;
    }
    while (!stop_requested) {
        if (parti_poll(c.p, 20) != PARTI_ERR_OK) {
            report_error(a->slot, "parti_poll", "the worker stopped on its own");
            rc = 1;
            break;
        }
        if (c.failed) {
            report_error(a->slot, "record file", "write failed; messages are nak'ed");
            c.failed = 0;
        }
    }
    leave0 = mono_us();
    e = rc ? PARTI_ERR_CLOSED : parti_leave(c.p, LEAVE_TIMEOUT_MS);
    leave1 = mono_us();
    if (!rc && e != PARTI_ERR_OK) {
        report_error(a->slot, "parti_leave", parti_strerror(e));
        rc = 1;
    }
    if (a->part == PART_BACKLOG && a->marker_part >= 0) publish_m1(&t, a, leave0, leave1, e);
    parti_destroy(c.p);
    parti_nats_close(&t);
    if (c.record) fclose(c.record);
    return rc;
}

/* ---- the soak producer ------------------------------------------------------------------ */

/* Publishes with a Nats-Msg-Id, retrying a few times: a retry of a publish
 * that was stored is deduplicated by the server and acked with the first
 * sequence. */
static parti_err publish_soak(parti_transport *t, uint64_t id, int part, uint64_t *seq) {
    char subject[32], msgid[48], body[32];
    parti_header h;
    parti_pub_ack ack;
    parti_err e = PARTI_ERR_TIMEOUT;
    int attempt;
    snprintf(subject, sizeof subject, "soak.p%d", part);
    snprintf(msgid, sizeof msgid, "soak-%llu", (unsigned long long)id);
    snprintf(body, sizeof body, "%llu", (unsigned long long)id);
    h.name = "Nats-Msg-Id";
    h.value = msgid;
    for (attempt = 0; attempt < 5 && !(attempt && stop_requested); attempt++) {
        memset(&ack, 0, sizeof ack);
        e = t->vt->publish(t->self, subject, &h, 1, body, strlen(body), &ack, 2000);
        if (e == PARTI_ERR_OK) {
            *seq = ack.stream_seq;
            return e;
        }
        if (parti_error_category(e) == PARTI_CAT_INVALID_INPUT) break;
        sleep_us(50000);
    }
    return e;
}

/* Reads one command line from fd (blocking); 0 on EOF, error or a stop. */
static int read_command(int fd, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        char ch;
        ssize_t r = read(fd, &ch, 1);
        if (r < 0 && errno == EINTR && !stop_requested) continue;
        if (r <= 0) return 0;
        if (ch == '\n') break;
        buf[n++] = ch;
    }
    buf[n] = '\0';
    return 1;
}

static int producer_main(const child_args *a, const char *url, const char *dir) {
    parti_transport t;
    parti_nats_options no;
    parti_stream_config sc = part_stream(PART_SOAK);
    FILE *f;
    char path[600], msg[512], cmd[64];
    uint64_t n, start, seq, failed = 0, late_max = 0;
    parti_err e;
    memset(&no, 0, sizeof no);
    no.name = "soak-producer";
    if ((e = parti_nats_connect(&t, url, &no, msg, sizeof msg)) != PARTI_ERR_OK) {
        report_error(a->slot, "producer: parti_nats_connect", msg);
        return 1;
    }
    if ((e = t.vt->stream_create(t.self, &sc, 5000)) != PARTI_ERR_OK) {
        report_error(a->slot, "producer: stream_create", parti_strerror(e));
        parti_nats_close(&t);
        return 1;
    }
    snprintf(path, sizeof path, "%s/published.log", dir);
    if (!(f = fopen(path, "w"))) {
        report_error(a->slot, "producer: open published.log", strerror(errno));
        parti_nats_close(&t);
        return 1;
    }
    report("R %d", a->slot);
    if (!read_command(a->cmd_fd, cmd, sizeof cmd) || strcmp(cmd, "go") != 0) {
        fclose(f);
        parti_nats_close(&t);
        return stop_requested ? 0 : 1;
    }
    start = mono_us();
    for (n = 1; !stop_requested; n++) {
        uint64_t due = start + (n - 1) * 1000000u / a->rate, now = mono_us();
        int part = (int)((n - 1) % SOAK_PARTS);
        if (due > now) sleep_us(due - now);
        else if (now - due > late_max) late_max = now - due;
        if (stop_requested) break;
        now = mono_us(); /* the publish time: the message may be handled before its ack is back */
        if (publish_soak(&t, n, part, &seq) == PARTI_ERR_OK)
            fprintf(f, "%llu %d %llu %llu\n", (unsigned long long)n, part, (unsigned long long)seq,
                    (unsigned long long)now);
        else
            fprintf(f, "x %llu %d\n", (unsigned long long)n, part), failed++;
        if (n % 256 == 0) fflush(f);
    }
    fclose(f);
    report("P %d %llu %llu %llu %llu", a->slot, (unsigned long long)(n - 1), (unsigned long long)failed,
           (unsigned long long)(mono_us() - start), (unsigned long long)late_max);
    parti_nats_close(&t);
    return 0;
}

/* ---- the backlog tool: the stream, M2 markers, the backlog ------------------------------- */

typedef struct async_count {
    uint64_t errors;
} async_count;

static void on_async_error(jsCtx *js, jsPubAckErr *pae, void *closure) {
    (void)js;
    (void)pae;
    ((async_count *)closure)->errors++; /* one nats.c thread delivers these */
}

/* n messages on p0..p7 round robin, with async publishes; "B slot n errors us". */
static void publish_backlog(const child_args *a, const char *url, uint64_t n) {
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsOptions jo;
    jsPubOptions po;
    async_count count;
    natsStatus s;
    uint64_t i, start, failed_calls = 0;
    char subject[32], body[32];
    memset(&count, 0, sizeof count);
    if ((s = natsConnection_ConnectTo(&nc, url)) != NATS_OK) {
        report_error(a->slot, "backlog: connect", natsStatus_GetText(s));
        return;
    }
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 8192;
    jo.PublishAsync.StallWait = 5000;
    jo.PublishAsync.ErrHandler = on_async_error;
    jo.PublishAsync.ErrHandlerClosure = &count;
    if ((s = natsConnection_JetStream(&js, nc, &jo)) != NATS_OK) {
        report_error(a->slot, "backlog: jetstream", natsStatus_GetText(s));
        natsConnection_Destroy(nc);
        return;
    }
    start = mono_us();
    for (i = 0; i < n && !stop_requested; i++) {
        int len, attempt;
        snprintf(subject, sizeof subject, "bl.p%d", (int)(i % (BL_PARTS / 2)));
        len = snprintf(body, sizeof body, "b%llu", (unsigned long long)i);
        for (attempt = 0; attempt < 50 && !stop_requested; attempt++) /* a full window stalls, then fails: again */
            if ((s = js_PublishAsync(js, subject, body, len, NULL)) == NATS_OK) break;
        if (s != NATS_OK) failed_calls++;
    }
    jsPubOptions_Init(&po);
    po.MaxWait = 120000;
    if ((s = js_PublishAsyncComplete(js, &po)) != NATS_OK)
        report_error(a->slot, "backlog: waiting for the acks", natsStatus_GetText(s));
    report("B %d %llu %llu %llu", a->slot, (unsigned long long)i, (unsigned long long)(count.errors + failed_calls),
           (unsigned long long)(mono_us() - start));
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
}

static int tool_main(const child_args *a, const char *url) {
    parti_transport t;
    parti_nats_options no;
    parti_stream_config sc = part_stream(PART_BACKLOG);
    char msg[512], cmd[128];
    parti_err e;
    memset(&no, 0, sizeof no);
    no.name = "bl-tool";
    if ((e = parti_nats_connect(&t, url, &no, msg, sizeof msg)) != PARTI_ERR_OK) {
        report_error(a->slot, "tool: parti_nats_connect", msg);
        return 1;
    }
    if ((e = t.vt->stream_create(t.self, &sc, 5000)) != PARTI_ERR_OK) {
        report_error(a->slot, "tool: stream_create", parti_strerror(e));
        parti_nats_close(&t);
        return 1;
    }
    report("R %d", a->slot);
    while (!stop_requested && read_command(a->cmd_fd, cmd, sizeof cmd)) {
        unsigned long long n;
        int rep, part;
        if (sscanf(cmd, "pub %d %d", &rep, &part) == 2) { /* "Q slot rep t0 t1 seq err" */
            char subject[32], body[32];
            parti_pub_ack ack;
            uint64_t t0;
            snprintf(subject, sizeof subject, "bl.p%d", part);
            snprintf(body, sizeof body, "M2 %d", rep);
            memset(&ack, 0, sizeof ack);
            t0 = mono_us();
            e = t.vt->publish(t.self, subject, NULL, 0, body, strlen(body), &ack, 2000);
            report("Q %d %d %llu %llu %llu %d", a->slot, rep, (unsigned long long)t0, (unsigned long long)mono_us(),
                   (unsigned long long)ack.stream_seq, (int)e);
        } else if (sscanf(cmd, "backlog %llu", &n) == 1) {
            publish_backlog(a, url, n);
        } else if (strcmp(cmd, "quit") == 0) {
            break;
        }
    }
    parti_nats_close(&t);
    return 0;
}

/* ---- the parent: processes --------------------------------------------------------------- */

/* What every child does first: die with the parent, leave Ctrl-C to it. */
static void child_setup(pid_t parent) {
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    if (getppid() != parent) _exit(1); /* the parent died before prctl */
    set_signal(SIGINT, SIG_IGN);
    set_signal(SIGPIPE, SIG_IGN);
    set_signal(SIGTERM, on_stop_signal);
    stop_requested = 0;
}

/* Forks a child for a; a producer or tool gets a command pipe. */
static int spawn(const child_args *args) {
    child_args a = *args;
    pid_t parent = getpid(), pid;
    int cmd[2] = {-1, -1}, k;
    proc *p;
    if (a.slot < 0 || a.slot >= MAX_PROCS || g.p[a.slot].pid) return -1;
    p = &g.p[a.slot];
    if (a.role != ROLE_WORKER && pipe(cmd) != 0) return -1;
    fflush(NULL); /* nothing buffered may be written twice */
    pid = fork();
    if (pid < 0) {
        if (cmd[0] >= 0) close(cmd[0]), close(cmd[1]);
        return -1;
    }
    if (pid == 0) {
        int rc;
        child_setup(parent);
        close(g.report_rd);
        for (k = 0; k < MAX_PROCS; k++)
            if (g.p[k].cmd_fd >= 0) close(g.p[k].cmd_fd);
        if (cmd[1] >= 0) close(cmd[1]);
        a.cmd_fd = cmd[0];
        report_fd = g.report_wr;
        nats_server_stop(g.server, NULL, 0); /* frees the inherited copy; the server is the parent's */
        g.server = NULL;
        if (a.role == ROLE_WORKER) rc = worker_main(&a, g.url, g.dir);
        else if (a.role == ROLE_PRODUCER) rc = producer_main(&a, g.url, g.dir);
        else rc = tool_main(&a, g.url);
        nats_CloseAndWait(2000); /* nats_Close does not wait for the library's threads, and exit() would race them */
        exit(rc);
    }
    memset(p, 0, sizeof *p);
    p->pid = pid;
    p->role = a.role;
    p->cmd_fd = -1;
    if (cmd[0] >= 0) {
        close(cmd[0]);
        p->cmd_fd = cmd[1];
    }
    return 0;
}

static void describe_exit(int st, char *buf, size_t cap) {
    if (WIFEXITED(st)) snprintf(buf, cap, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) snprintf(buf, cap, "signal %d", WTERMSIG(st));
    else snprintf(buf, cap, "status 0x%x", (unsigned)st);
}

static const char *slot_name(int slot, char *buf, size_t cap) {
    if (slot == 0) snprintf(buf, cap, "%s", g.part == PART_SOAK ? "producer" : "tool");
    else if (g.part == PART_SOAK) snprintf(buf, cap, "w%d", slot);
    else if (slot == 1) snprintf(buf, cap, "B");
    else snprintf(buf, cap, "A%d", slot - 1); /* the repetition's A */
    return buf;
}

/* Notices children that exited; an exit nobody asked for is a problem. */
static void reap_children(void) {
    int k, st;
    char how[32], who[16];
    for (k = 0; k < MAX_PROCS; k++) {
        proc *p = &g.p[k];
        if (!p->pid || p->reaped) continue;
        if (waitpid(p->pid, &st, WNOHANG) != p->pid) continue;
        p->reaped = 1;
        p->status = st;
        if (!p->expected_exit) {
            describe_exit(st, how, sizeof how);
            problem("%s exited on its own (%s)", slot_name(k, who, sizeof who), how);
        }
    }
}

static void send_command(int slot, const char *fmt, ...) BH_PRINTF(2, 3);
static void send_command(int slot, const char *fmt, ...) {
    char line[256];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || g.p[slot].cmd_fd < 0) return;
    if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(g.p[slot].cmd_fd, line, (size_t)n) != n) problem("command to slot %d not written: %s", slot, strerror(errno));
}

/* Kills and reaps every child, stops the server. Safe to call twice. */
static void cleanup_all(void) {
    int k, st, tries;
    char err[512];
    for (k = 0; k < MAX_PROCS; k++) {
        proc *p = &g.p[k];
        if (p->cmd_fd >= 0) close(p->cmd_fd);
        p->cmd_fd = -1;
        if (!p->pid || p->reaped) continue;
        kill(p->pid, SIGCONT);
        kill(p->pid, SIGKILL);
        for (tries = 0; tries < 500 && waitpid(p->pid, &st, WNOHANG) == 0; tries++) sleep_us(10000);
        p->reaped = 1;
    }
    if (g.server && nats_server_stop(g.server, err, sizeof err) != 0) fprintf(stderr, "bench_handoff: stopping nats-server: %s\n", err);
    g.server = NULL;
    if (g.report_rd >= 0) close(g.report_rd);
    if (g.report_wr >= 0) close(g.report_wr);
    g.report_rd = g.report_wr = -1;
}

/* ---- the parent: reports ------------------------------------------------------------------- */

static void parse_owned(const char *csv, unsigned char *owned, int *n) {
    char buf[300], *tok, *save = NULL;
    memset(owned, 0, MAX_PARTS);
    *n = 0;
    if (strcmp(csv, "-") == 0) return;
    snprintf(buf, sizeof buf, "%s", csv);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int v = atoi(tok);
        if (v >= 0 && v < MAX_PARTS && !owned[v]) owned[v] = 1, (*n)++;
    }
}

static void on_worker_line(const char *line) {
    int slot, kind, state, leader, nowned, moved;
    unsigned long long version, at;
    char owned[300], id[40], who[16];
    proc *p;
    if (sscanf(line, "W %d %d %d %d %llu %d %299s %39s %d %llu", &slot, &kind, &state, &leader, &version, &nowned,
               owned, id, &moved, &at) != 10 ||
        slot < 1 || slot >= MAX_PROCS)
        return;
    p = &g.p[slot];
    if (p->killed) return; /* its last words, still in the pipe */
    p->state = state;
    p->leader = leader;
    p->version = version;
    parse_owned(owned, p->owned, &p->nowned);
    if (strcmp(id, "-") != 0) snprintf(p->id, sizeof p->id, "%s", id);
    slot_name(slot, who, sizeof who);
    switch ((parti_event_kind)kind) {
    case PARTI_EVENT_JOINED:
        if (g.o.verbose) say("%s joined as %s", who, p->id);
        break;
    case PARTI_EVENT_ID_LOST: say("%s (%s) lost its worker ID", who, p->id); break;
    case PARTI_EVENT_BECAME_LEADER: say("%s (%s) became the leader", who, p->id); break;
    case PARTI_EVENT_REBALANCED:
        say("%s (%s, leader) published assignment v%llu: %d partition%s moved", who, p->id, version, moved,
            moved == 1 ? "" : "s");
        g.last_rebalance = mono_us();
        break;
    default:
        if (g.o.verbose)
            say("%s (%s) %s: state %s, v%llu, owns %d", who, p->id, parti_event_name((parti_event_kind)kind),
                parti_state_name((parti_state)state), version, nowned);
        break;
    }
}

static void dispatch_line(char *line) {
    int slot;
    char who[16];
    if (line[0] == 'W') {
        on_worker_line(line);
    } else if (line[0] == 'E') {
        if (sscanf(line, "E %d", &slot) == 1 && slot >= 0 && slot < MAX_PROCS && !g.p[slot].killed)
            problem("%s: %s", slot_name(slot, who, sizeof who), strchr(line + 2, ' ') ? strchr(line + 2, ' ') + 1 : line);
    } else if (line[0] == 'R') {
        if (sscanf(line, "R %d", &slot) == 1 && slot >= 0 && slot < MAX_PROCS) g.p[slot].ready = 1;
    } else if (g.on_line) {
        g.on_line(line);
    }
}

static void read_reports(void) {
    for (;;) {
        ssize_t r = read(g.report_rd, g.rbuf + g.rlen, sizeof g.rbuf - 1 - g.rlen);
        char *nl, *start;
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return; /* EAGAIN */
        }
        g.rlen += (size_t)r;
        g.rbuf[g.rlen] = '\0';
        start = g.rbuf;
        while ((nl = strchr(start, '\n')) != NULL) {
            *nl = '\0';
            dispatch_line(start);
            start = nl + 1;
        }
        g.rlen -= (size_t)(start - g.rbuf);
        memmove(g.rbuf, start, g.rlen);
        if (g.rlen == sizeof g.rbuf - 1) g.rlen = 0; /* a line too long: dropped */
    }
}

/* Lets the children work for ms: reads reports, notices exits. */
static void pump(uint32_t ms) {
    uint64_t deadline = mono_us() + (uint64_t)ms * 1000u, now;
    do {
        struct pollfd pfd;
        uint64_t left;
        now = mono_us();
        left = deadline > now ? (deadline - now + 999) / 1000 : 0;
        pfd.fd = g.report_rd;
        pfd.events = POLLIN;
        pfd.revents = 0;
        if (poll(&pfd, 1, (int)(left < 50 ? left : 50)) > 0) read_reports();
        reap_children();
    } while (!stop_requested && mono_us() < deadline);
    read_reports();
}

/* Waits until the child in slot exits; 1 = reaped, 0 = the deadline passed. */
static int wait_exit(int slot, uint32_t ms) {
    uint64_t deadline = mono_us() + (uint64_t)ms * 1000u;
    while (!g.p[slot].reaped && !stop_requested && mono_us() < deadline) pump(10);
    return g.p[slot].reaped;
}

/* SIGTERM, then SIGKILL after ms; 1 when it exited with status 0 in time. */
static int stop_child(int slot, uint32_t ms) {
    proc *p = &g.p[slot];
    if (!p->pid || p->reaped) return 1;
    p->expected_exit = 1;
    if (p->stopped) kill(p->pid, SIGCONT), p->stopped = 0;
    kill(p->pid, SIGTERM);
    if (wait_exit(slot, ms)) return WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0;
    kill(p->pid, SIGKILL);
    wait_exit(slot, 2000);
    return 0;
}

static int start_server(void) {
    nats_server_options so;
    char err[1024];
    int fds[2];
    memset(&so, 0, sizeof so);
    so.start_timeout_ms = SERVER_START_MS;
    so.stop_timeout_ms = 10000;
    if (nats_server_start(&g.server, &so, err, sizeof err) != 0) {
        printf("bench_handoff: cannot start nats-server: %s\n", err);
        return -1;
    }
    snprintf(g.url, sizeof g.url, "%s", nats_server_url(g.server));
    snprintf(g.dir, sizeof g.dir, "%s", nats_server_dir(g.server));
    if (pipe(fds) != 0) {
        printf("bench_handoff: pipe: %s\n", strerror(errno));
        return -1;
    }
    g.report_rd = fds[0];
    g.report_wr = fds[1];
    fcntl(g.report_rd, F_SETFL, fcntl(g.report_rd, F_GETFL) | O_NONBLOCK);
    return 0;
}

static void reset_part(int part) {
    int k;
    memset(g.p, 0, sizeof g.p);
    for (k = 0; k < MAX_PROCS; k++) g.p[k].cmd_fd = -1;
    g.part = part;
    g.rlen = 0;
    g.on_line = NULL;
    g.report_rd = g.report_wr = -1;
}

static int wait_ready(int slot, uint32_t ms, const char *what) {
    uint64_t deadline = mono_us() + (uint64_t)ms * 1000u;
    while (!g.p[slot].ready && !g.p[slot].reaped && !stop_requested && mono_us() < deadline) pump(20);
    if (!g.p[slot].ready && !stop_requested) problem("%s not ready within %u ms", what, ms);
    return g.p[slot].ready ? 0 : -1;
}

static int running_worker(int slot) {
    const proc *p = &g.p[slot];
    return p->pid && !p->reaped && !p->killed && !p->expected_exit && p->role == ROLE_WORKER;
}

/* Every running, not stopped worker on one version, stable (or waiting with
 * nothing), every partition of n owned once. */
static int group_settled(int n) {
    int owner[MAX_PARTS], k, i;
    uint64_t v = 0;
    for (i = 0; i < n; i++) owner[i] = 0;
    for (k = 1; k < MAX_PROCS; k++) {
        const proc *p = &g.p[k];
        if (!running_worker(k) || p->stopped) continue;
        if (!p->version || (v && p->version != v)) return 0;
        v = p->version;
        if (p->state != PARTI_STATE_STABLE && !(p->state == PARTI_STATE_WAITING && p->nowned == 0)) return 0;
        for (i = 0; i < n; i++)
            if (p->owned[i] && owner[i]++) return 0;
    }
    if (!v) return 0;
    for (i = 0; i < n; i++)
        if (!owner[i]) return 0;
    return 1;
}

/* ---- part 1: soak --------------------------------------------------------------------------- */

#define SOAK_WORKERS 7 /* slots 1..7 */

enum { STEP_JOIN = 1, STEP_LEAVE, STEP_KILL, STEP_STOP };

typedef struct soak_step {
    double at;  /* fraction of the duration */
    int kind, slot;
} soak_step;

static const soak_step soak_steps[] = {{0.10, STEP_JOIN, 4},  {0.20, STEP_JOIN, 5}, {0.30, STEP_LEAVE, 3},
                                       {0.45, STEP_KILL, 0},  {0.55, STEP_JOIN, 6}, {0.65, STEP_STOP, 2},
                                       {0.80, STEP_LEAVE, 5}, {0.87, STEP_JOIN, 7}};

/* per slot: the handler's time per message (slot 2: --slow-us) */
static const uint32_t soak_handler_us[SOAK_WORKERS + 1] = {0, 0, 0 /* --slow-us */, 200, 0, 100, 0, 0};

typedef struct rec {
    uint64_t seq, start, end, gen, id;
    int part, slot;
} rec;

typedef struct tailf {
    FILE *f;
    char path[600];
} tailf;

typedef struct soak {
    uint64_t t_go;                   /* production started */
    int killed_slot, stopped_slot;
    uint64_t t_kill, t_stop, t_cont; /* us; 0 = did not happen */
    uint64_t produced, produce_failed, produce_us, produce_late_max;
    int producer_done;
    /* what was published, by stream sequence */
    uint64_t *pub_id, *pub_t;
    signed char *pub_part;
    uint16_t *times;                 /* handlings on record */
    uint64_t cap_seq, max_seq, published, publish_failed, pub_bad;
    rec *recs;
    size_t nrecs, cap_recs;
    uint64_t rec_bad;                /* unreadable or out-of-range records */
    tailf tail[SOAK_WORKERS + 1];    /* 0: published.log */
} soak;

static soak S;

static void soak_on_line(char *line) {
    unsigned long long n, failed, us, late;
    int slot;
    if (line[0] == 'P' && sscanf(line, "P %d %llu %llu %llu %llu", &slot, &n, &failed, &us, &late) == 5) {
        S.produced = n;
        S.produce_failed = failed;
        S.produce_us = us;
        S.produce_late_max = late;
        S.producer_done = 1;
    }
}

static int grow_seq(uint64_t seq) {
    uint64_t cap = S.cap_seq ? S.cap_seq : 65536, old = S.cap_seq;
    void *a, *b, *c, *d;
    if (seq < S.cap_seq) return 0;
    if (seq > 100000000u) return -1;
    while (cap <= seq) cap *= 2;
    a = realloc(S.pub_id, cap * sizeof *S.pub_id);
    if (a) S.pub_id = (uint64_t *)a;
    b = realloc(S.pub_t, cap * sizeof *S.pub_t);
    if (b) S.pub_t = (uint64_t *)b;
    c = realloc(S.pub_part, cap * sizeof *S.pub_part);
    if (c) S.pub_part = (signed char *)c;
    d = realloc(S.times, cap * sizeof *S.times);
    if (d) S.times = (uint16_t *)d;
    if (!a || !b || !c || !d) return -1;
    memset(S.pub_id + old, 0, (cap - old) * sizeof *S.pub_id);
    memset(S.pub_t + old, 0, (cap - old) * sizeof *S.pub_t);
    memset(S.pub_part + old, -1, (cap - old) * sizeof *S.pub_part);
    memset(S.times + old, 0, (cap - old) * sizeof *S.times);
    S.cap_seq = cap;
    return 0;
}

static void soak_published_line(int slot, const char *line) {
    unsigned long long id, seq, t;
    int part;
    (void)slot;
    if (line[0] == 'x') {
        S.publish_failed++;
        return;
    }
    if (sscanf(line, "%llu %d %llu %llu", &id, &part, &seq, &t) != 4 || part < 0 || part >= SOAK_PARTS || !seq ||
        grow_seq(seq) != 0) {
        S.pub_bad++;
        return;
    }
    if (!S.pub_id[seq]) S.published++;
    else if (S.pub_id[seq] != id) S.pub_bad++; /* two ids at one sequence */
    S.pub_id[seq] = id;
    S.pub_part[seq] = (signed char)part;
    S.pub_t[seq] = t;
    if (seq > S.max_seq) S.max_seq = seq;
}

static void soak_record_line(int slot, const char *line) {
    unsigned long long seq, start, end, gen, id;
    int part;
    rec *r;
    if (sscanf(line, "%d %llu %llu %llu %llu %llu", &part, &seq, &start, &end, &gen, &id) != 6 || part < 0 ||
        part >= SOAK_PARTS || !seq || grow_seq(seq) != 0) {
        S.rec_bad++;
        return;
    }
    if (S.nrecs == S.cap_recs) {
        size_t cap = S.cap_recs ? S.cap_recs * 2 : 65536;
        rec *nr = (rec *)realloc(S.recs, cap * sizeof *nr);
        if (!nr) {
            S.rec_bad++;
            return;
        }
        S.recs = nr;
        S.cap_recs = cap;
    }
    r = &S.recs[S.nrecs++];
    r->seq = seq;
    r->start = start;
    r->end = end;
    r->gen = gen;
    r->id = id;
    r->part = part;
    r->slot = slot;
    if (S.times[seq] < UINT16_MAX) S.times[seq]++;
    if (seq > S.max_seq) S.max_seq = seq;
}

/* Reads the complete lines added to a file since the last call. */
static void tail_read(tailf *t, int slot, void (*fn)(int, const char *)) {
    char line[256];
    int n;
    if (!t->f && !(t->f = fopen(t->path, "r"))) return;
    for (n = 0; n < 10000000; n++) {
        long pos = ftell(t->f);
        size_t len;
        if (!fgets(line, sizeof line, t->f)) {
            clearerr(t->f);
            return;
        }
        len = strlen(line);
        if (len && line[len - 1] == '\n') {
            fn(slot, line);
        } else if (feof(t->f)) { /* a line still being written: read it next time */
            clearerr(t->f);
            fseek(t->f, pos, SEEK_SET);
            return;
        }
        /* else an overlong line: its pieces fail to parse and are counted bad */
    }
}

static void soak_collect(void) {
    int k;
    tail_read(&S.tail[0], 0, soak_published_line);
    for (k = 1; k <= SOAK_WORKERS; k++)
        if (g.p[k].pid) tail_read(&S.tail[k], k, soak_record_line);
}

static uint64_t soak_unhandled(void) {
    uint64_t s, n = 0;
    for (s = 1; s <= S.max_seq && s < S.cap_seq; s++)
        if (S.pub_id[s] && !S.times[s]) n++;
    return n;
}

static int soak_start_worker(int slot) {
    child_args a;
    memset(&a, 0, sizeof a);
    a.part = PART_SOAK;
    a.role = ROLE_WORKER;
    a.slot = slot;
    a.slow_us = slot == 2 ? g.o.slow_us : soak_handler_us[slot];
    a.capacity = 1;
    a.marker_part = -1;
    snprintf(S.tail[slot].path, sizeof S.tail[slot].path, "%s/w%d.log", g.dir, slot);
    if (spawn(&a) != 0) {
        problem("w%d could not be started", slot);
        return -1;
    }
    say("w%d starts (pid %ld, handler %u us per message)", slot, (long)g.p[slot].pid, a.slow_us);
    return 0;
}

static int soak_pick_victim(void) {
    static const int order[] = {4, 1, 6, 5, 7, 3};
    size_t i;
    for (i = 0; i < sizeof order / sizeof order[0]; i++) {
        const proc *p = &g.p[order[i]];
        if (running_worker(order[i]) && !p->stopped && p->nowned > 0 && p->leader == g.o.kill_leader) return order[i];
    }
    for (i = 0; i < sizeof order / sizeof order[0]; i++)
        if (running_worker(order[i]) && !g.p[order[i]].stopped) return order[i];
    return -1;
}

static void soak_step_run(const soak_step *st) {
    proc *p;
    int k;
    switch (st->kind) {
    case STEP_JOIN: soak_start_worker(st->slot); break;
    case STEP_LEAVE:
        p = &g.p[st->slot];
        if (!running_worker(st->slot)) break;
        p->expected_exit = 1;
        kill(p->pid, SIGTERM);
        say("w%d (%s) leaves gracefully (SIGTERM -> parti_leave), owning %d partitions", st->slot, p->id, p->nowned);
        break;
    case STEP_KILL:
        if ((k = soak_pick_victim()) < 0) {
            problem("no worker to kill");
            break;
        }
        p = &g.p[k];
        p->expected_exit = p->killed = 1;
        S.t_kill = mono_us();
        kill(p->pid, SIGKILL);
        S.killed_slot = k;
        say("kill -9 w%d (%s%s), owning %d partitions", k, p->id, p->leader ? ", the leader" : "", p->nowned);
        break;
    case STEP_STOP:
        p = &g.p[st->slot];
        if (!running_worker(st->slot)) break;
        S.t_stop = mono_us();
        kill(p->pid, SIGSTOP);
        p->stopped = 1;
        S.stopped_slot = st->slot;
        say("SIGSTOP w%d (%s%s), owning %d partitions, for %u ms (member TTL %u ms)", st->slot, p->id,
            p->leader ? ", the leader" : "", p->nowned, g.o.stop_ms, MEMBER_TTL_MS);
        break;
    default: break;
    }
}

/* Production with the steps at their times; SIGCONT when the pause is over. */
static void soak_produce(void) {
    uint64_t duration = (uint64_t)g.o.seconds * 1000000u, last_note = 0;
    size_t next = 0, nsteps = sizeof soak_steps / sizeof soak_steps[0];
    while (!stop_requested) {
        uint64_t at = mono_us() - S.t_go;
        if (at >= duration) break;
        if (next < nsteps && at >= (uint64_t)(soak_steps[next].at * (double)duration)) soak_step_run(&soak_steps[next++]);
        if (S.t_stop && !S.t_cont && mono_us() >= S.t_stop + (uint64_t)g.o.stop_ms * 1000u) {
            proc *p = &g.p[S.stopped_slot];
            S.t_cont = mono_us();
            if (p->pid && !p->reaped) kill(p->pid, SIGCONT);
            p->stopped = 0;
            say("SIGCONT w%d after %.0f ms", S.stopped_slot, ms_of(S.t_cont - S.t_stop));
        }
        if (at - last_note >= 10000000u) {
            soak_collect();
            last_note = at;
            say("so far: %llu published, %llu handlings on record", (unsigned long long)S.published,
                (unsigned long long)S.nrecs);
        }
        pump(20);
    }
}

/* ---- soak: the analysis --------------------------------------------------------------------- */

static int cmp_rec(const void *a, const void *b) {
    const rec *x = (const rec *)a, *y = (const rec *)b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->slot - y->slot;
}

typedef struct soak_result {
    uint64_t handled, handlings, lost, extra, mismatch;
    uint64_t order_bad, gen_bad;
    uint64_t ov_kill, ov_stop, ov_other;   /* handlings that started while another worker's ran */
    unsigned char ov_kill_parts[SOAK_PARTS], ov_stop_parts[SOAK_PARTS], ov_other_parts[SOAK_PARTS];
    uint64_t dup_kill, dup_stop, dup_other;
    uint64_t dup_kill_age_max, dup_stop_age_max; /* us before the kill / stop of the first handling */
    uint64_t per_slot[SOAK_WORKERS + 1];
} soak_result;

/* A time on the timeline's clock (seconds since the part started). */
static const char *soak_t(uint64_t us, char *buf, size_t cap) {
    snprintf(buf, cap, "%.3fs", us >= g.t0_us ? (double)(us - g.t0_us) / 1e6 : -(double)(g.t0_us - us) / 1e6);
    return buf;
}

/* One repeat of r's sequence after the handling before it (prev). */
static void soak_classify_dup(soak_result *res, const rec *prev, const rec *r, int *shown) {
    char a[32], b[32];
    if (prev->slot == S.killed_slot && S.t_kill && r->start > S.t_kill && prev->slot != r->slot) {
        res->dup_kill++;
        if (S.t_kill > prev->start && S.t_kill - prev->start > res->dup_kill_age_max)
            res->dup_kill_age_max = S.t_kill - prev->start;
    } else if (prev->slot == S.stopped_slot && S.t_stop && r->start > S.t_stop && prev->slot != r->slot &&
               (!S.t_cont || prev->start < S.t_cont)) { /* work of the paused worker before it went on */
        res->dup_stop++;
        if (S.t_stop > prev->start && S.t_stop - prev->start > res->dup_stop_age_max)
            res->dup_stop_age_max = S.t_stop - prev->start;
    } else {
        res->dup_other++;
        if ((*shown)++ < 10)
            printf("  duplicate (other): p%d seq %llu by w%d at %s (gen %llu), again by w%d at %s (gen %llu)\n", r->part,
                   (unsigned long long)r->seq, prev->slot, soak_t(prev->start, a, sizeof a),
                   (unsigned long long)prev->gen, r->slot, soak_t(r->start, b, sizeof b), (unsigned long long)r->gen);
    }
}

/* A handling of the paused worker that was under way while it was frozen
 * (the SIGSTOP lands a few microseconds after the parent reads its clock, so
 * the handler may have started just after t_stop). */
static int frozen_in_handler(const rec *x) {
    uint64_t until = S.t_cont ? S.t_cont : UINT64_MAX;
    return S.t_stop && x->slot == S.stopped_slot && x->start < until && x->end > S.t_stop;
}

/* Two workers on one partition at once: r started before earlier (still
 * running) ended. */
static void soak_classify_overlap(soak_result *res, const rec *earlier, const rec *r, int *shown) {
    char a[32], b[32], c[32];
    if (frozen_in_handler(earlier) || frozen_in_handler(r)) {
        res->ov_stop++;
        res->ov_stop_parts[r->part] = 1;
    } else if (earlier->slot == S.killed_slot || r->slot == S.killed_slot) {
        res->ov_kill++;
        res->ov_kill_parts[r->part] = 1;
    } else {
        res->ov_other++;
        res->ov_other_parts[r->part] = 1;
        if ((*shown)++ < 10)
            printf("  overlap (other): p%d: w%d handled seq %llu from %s to %s (gen %llu); w%d started seq %llu at %s "
                   "(gen %llu)\n",
                   r->part, earlier->slot, (unsigned long long)earlier->seq, soak_t(earlier->start, a, sizeof a),
                   soak_t(earlier->end, b, sizeof b), (unsigned long long)earlier->gen, r->slot,
                   (unsigned long long)r->seq, soak_t(r->start, c, sizeof c), (unsigned long long)r->gen);
    }
}

static int count_marked(const unsigned char *flags) {
    int i, n = 0;
    for (i = 0; i < SOAK_PARTS; i++) n += flags[i] != 0;
    return n;
}

static void soak_analyze(soak_result *res) {
    uint64_t last_first[SOAK_PARTS], last_gen[SOAK_PARTS], max_end[SOAK_PARTS], s;
    int64_t *prev = NULL, ov_idx[SOAK_PARTS];
    unsigned char *seen = NULL;
    size_t i;
    int shown_dup = 0, shown_ov = 0, shown_order = 0, shown_gen = 0;
    char a[32];
    memset(res, 0, sizeof *res);
    memset(last_first, 0, sizeof last_first);
    memset(last_gen, 0, sizeof last_gen);
    memset(max_end, 0, sizeof max_end);
    for (i = 0; i < SOAK_PARTS; i++) ov_idx[i] = -1;
    qsort(S.recs, S.nrecs, sizeof *S.recs, cmp_rec);
    prev = (int64_t *)malloc((S.max_seq + 1) * sizeof *prev);
    seen = (unsigned char *)calloc(S.max_seq + 1, 1);
    if (!prev || !seen) {
        problem("out of memory in the analysis");
        free(prev);
        free(seen);
        return;
    }
    for (s = 0; s <= S.max_seq; s++) prev[s] = -1;
    res->handlings = S.nrecs;
    for (i = 0; i < S.nrecs; i++) {
        const rec *r = &S.recs[i];
        int p = r->part;
        res->per_slot[r->slot]++;
        if (S.pub_id[r->seq] && (S.pub_id[r->seq] != r->id || S.pub_part[r->seq] != p)) {
            if (res->mismatch++ < 5)
                printf("  record does not match what was published: seq %llu p%d id %llu (published p%d id %llu)\n",
                       (unsigned long long)r->seq, p, (unsigned long long)r->id, S.pub_part[r->seq],
                       (unsigned long long)S.pub_id[r->seq]);
        }
        /* order of first handlings per partition */
        if (!seen[r->seq]) {
            seen[r->seq] = 1;
            if (r->seq < last_first[p]) {
                res->order_bad++;
                if (shown_order++ < 10)
                    printf("  order: p%d seq %llu handled first by w%d at %s after seq %llu\n", p,
                           (unsigned long long)r->seq, r->slot, soak_t(r->start, a, sizeof a),
                           (unsigned long long)last_first[p]);
            } else {
                last_first[p] = r->seq;
            }
        }
        /* the fencing token never goes down per partition */
        if (r->gen < last_gen[p]) {
            res->gen_bad++;
            if (shown_gen++ < 10)
                printf("  fencing: p%d seq %llu by w%d at %s with generation %llu after generation %llu\n", p,
                       (unsigned long long)r->seq, r->slot, soak_t(r->start, a, sizeof a), (unsigned long long)r->gen,
                       (unsigned long long)last_gen[p]);
        } else {
            last_gen[p] = r->gen;
        }
        /* two workers at once */
        if (ov_idx[p] >= 0 && r->start < max_end[p] && S.recs[ov_idx[p]].slot != r->slot)
            soak_classify_overlap(res, &S.recs[ov_idx[p]], r, &shown_ov);
        if (r->end > max_end[p] || ov_idx[p] < 0) {
            max_end[p] = r->end;
            ov_idx[p] = (int64_t)i;
        }
        /* repeats */
        if (prev[r->seq] >= 0) soak_classify_dup(res, &S.recs[prev[r->seq]], r, &shown_dup);
        prev[r->seq] = (int64_t)i;
    }
    for (s = 1; s <= S.max_seq; s++) {
        if (S.pub_id[s] && S.times[s]) res->handled++;
        else if (S.pub_id[s]) res->lost++;
        else if (S.times[s]) res->extra++; /* handled, its publish never acknowledged */
    }
    free(prev);
    free(seen);
}

/* Publish -> first handling, and the worst of it. */
static void soak_latency(void) {
    uint64_t *lat = (uint64_t *)malloc((S.max_seq + 1) * sizeof *lat), *first, worst = 0, worst_seq = 0, s;
    size_t i, n = 0;
    char a[32];
    first = (uint64_t *)calloc(S.max_seq + 1, sizeof *first);
    if (!lat || !first) {
        free(lat);
        free(first);
        return;
    }
    for (i = 0; i < S.nrecs; i++) /* sorted by start: the first one per sequence is its first handling */
        if (!first[S.recs[i].seq]) first[S.recs[i].seq] = S.recs[i].start;
    for (s = 1; s <= S.max_seq; s++) {
        if (!S.pub_t[s] || !first[s]) continue;
        lat[n] = first[s] > S.pub_t[s] ? first[s] - S.pub_t[s] : 0;
        if (lat[n] > worst) worst = lat[n], worst_seq = s;
        n++;
    }
    if (n) {
        uint64_t p50 = percentile(lat, n, 0.50), p99 = percentile(lat, n, 0.99), p999 = percentile(lat, n, 0.999);
        printf("  latency publish -> first handling: p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms (p%d seq %llu "
               "published at %s)\n",
               ms_of(p50), ms_of(p99), ms_of(p999), ms_of(worst), S.pub_part[worst_seq], (unsigned long long)worst_seq,
               soak_t(S.pub_t[worst_seq], a, sizeof a));
    }
    free(lat);
    free(first);
}

static int soak_report(void) {
    soak_result res;
    double secs = (double)S.produce_us / 1e6, rate = secs > 0 ? (double)S.produced / secs : 0;
    int k, failed;
    soak_collect();
    printf("\n== soak: the account\n");
    soak_analyze(&res);
    printf("  published %llu in %.1f s: %.0f msg/s (target %u; %llu publishes failed after retries; the producer was at "
           "most %.1f ms behind its schedule)\n",
           (unsigned long long)S.published, secs, rate, g.o.rate, (unsigned long long)S.publish_failed,
           ms_of(S.produce_late_max));
    printf("  handled %llu distinct messages in %llu handlings; lost %llu\n", (unsigned long long)res.handled,
           (unsigned long long)res.handlings, (unsigned long long)res.lost);
    printf("  per-partition order violations (first handlings, in start order): %llu\n",
           (unsigned long long)res.order_bad);
    printf("  fencing token regressions (a generation below an earlier one of the partition): %llu\n",
           (unsigned long long)res.gen_bad);
    printf("  one partition handled by two workers at once (handlings started while another worker's ran, in how many "
           "partitions): SIGSTOP %llu in %d (the paused worker's handler was frozen mid-call while its lease ran out), "
           "kill -9 %llu in %d, other %llu in %d\n",
           (unsigned long long)res.ov_stop, count_marked(res.ov_stop_parts), (unsigned long long)res.ov_kill,
           count_marked(res.ov_kill_parts), (unsigned long long)res.ov_other, count_marked(res.ov_other_parts));
    printf("  duplicates: kill -9 %llu (first handled at most %.0f ms before the kill; commit interval %u ms), SIGSTOP "
           "%llu (first handled at most %.0f ms before the stop), other %llu\n",
           (unsigned long long)res.dup_kill, ms_of(res.dup_kill_age_max), COMMIT_INTERVAL_MS,
           (unsigned long long)res.dup_stop, ms_of(res.dup_stop_age_max), (unsigned long long)res.dup_other);
    soak_latency();
    printf("  handlings per worker:");
    for (k = 1; k <= SOAK_WORKERS; k++)
        if (g.p[k].pid)
            printf(" w%d%s %llu", k, k == S.killed_slot ? " (killed)" : k == S.stopped_slot ? " (paused)" : "",
                   (unsigned long long)res.per_slot[k]);
    printf("\n");
    if (res.extra) printf("  %llu handled messages whose publish was never acknowledged to the producer\n", (unsigned long long)res.extra);
    if (S.rec_bad || S.pub_bad) printf("  %llu unreadable records, %llu unreadable publish lines\n", (unsigned long long)S.rec_bad, (unsigned long long)S.pub_bad);
    if (rate < g.o.rate * 0.98) printf("  NOTE: the producer reached %.0f msg/s, below the %u asked for\n", rate, g.o.rate);
    failed = res.lost || res.order_bad || res.gen_bad || res.ov_other || res.dup_other || res.mismatch || S.rec_bad ||
             !res.handled;
    if (failed)
        printf("FAILED: lost %llu, order %llu, fencing %llu, other overlaps %llu, other duplicates %llu, mismatched %llu\n",
               (unsigned long long)res.lost, (unsigned long long)res.order_bad, (unsigned long long)res.gen_bad,
               (unsigned long long)res.ov_other, (unsigned long long)res.dup_other, (unsigned long long)res.mismatch);
    else
        printf("OK: nothing lost, order kept, no fencing regression, no unexplained overlap or duplicate\n");
    return failed;
}

static int soak_run(void) {
    child_args a;
    uint64_t t, deadline, missing = 0, last_note;
    int k, rc, leave_ok = 1;
    memset(&S, 0, sizeof S);
    reset_part(PART_SOAK);
    g.on_line = soak_on_line;
    S.killed_slot = S.stopped_slot = -1;
    printf("\n== part 1: soak: %d partitions, %u msg/s for %d s; heartbeat %u ms, member TTL %u ms, commit interval %u ms\n",
           SOAK_PARTS, g.o.rate, g.o.seconds, HEARTBEAT_MS, MEMBER_TTL_MS, COMMIT_INTERVAL_MS);
    if (start_server() != 0) return 1;
    printf("nats-server %s on %s, store and records in %s (file storage)\n", nats_server_version(g.server), g.url, g.dir);
    g.t0_us = mono_us();
    snprintf(S.tail[0].path, sizeof S.tail[0].path, "%s/published.log", g.dir);
    memset(&a, 0, sizeof a);
    a.part = PART_SOAK;
    a.role = ROLE_PRODUCER;
    a.slot = 0;
    a.rate = g.o.rate;
    if (spawn(&a) != 0 || wait_ready(0, 10000, "the producer") != 0) return 1;
    for (k = 1; k <= 3; k++)
        if (soak_start_worker(k) != 0) return 1;
    deadline = mono_us() + 30000000u;
    while (!group_settled(SOAK_PARTS) && !stop_requested && mono_us() < deadline) pump(50);
    if (!group_settled(SOAK_PARTS)) {
        if (!stop_requested) problem("the first three workers did not settle within 30 s");
        return 1;
    }
    say("3 workers settled; the producer starts");
    send_command(0, "go");
    S.t_go = mono_us();
    soak_produce();
    if (stop_requested) return 130;
    if (!stop_child(0, 10000)) problem("the producer did not stop cleanly");
    pump(100);
    soak_collect();
    say("producer stopped: %llu published (%.0f msg/s)", (unsigned long long)S.produced,
        S.produce_us ? (double)S.produced * 1e6 / (double)S.produce_us : 0.0);
    t = last_note = mono_us();
    while (!stop_requested && mono_us() - t < 120000000u) {
        soak_collect();
        if (!(missing = soak_unhandled())) break;
        if (mono_us() - last_note > 5000000u) {
            say("draining: %llu not handled yet", (unsigned long long)missing);
            last_note = mono_us();
        }
        pump(200);
    }
    if (stop_requested) return 130;
    if (missing) problem("%llu messages not handled 120 s after the producer stopped", (unsigned long long)missing);
    else say("drained: every published message handled, %.1f s after the producer stopped", (double)(mono_us() - t) / 1e6);
    for (k = 1; k <= SOAK_WORKERS; k++)
        if (running_worker(k)) {
            g.p[k].expected_exit = 1;
            kill(g.p[k].pid, SIGTERM);
        }
    for (k = 1; k <= SOAK_WORKERS; k++) {
        if (!g.p[k].pid || g.p[k].killed) continue;
        if (!wait_exit(k, 15000)) {
            problem("w%d did not leave within 15 s", k);
            leave_ok = 0;
        } else if (!WIFEXITED(g.p[k].status) || WEXITSTATUS(g.p[k].status) != 0) {
            char how[32];
            describe_exit(g.p[k].status, how, sizeof how);
            problem("w%d ended with %s", k, how);
            leave_ok = 0;
        }
    }
    if (leave_ok) say("every worker left gracefully");
    rc = soak_report();
    for (k = 0; k <= SOAK_WORKERS; k++)
        if (S.tail[k].f) fclose(S.tail[k].f);
    free(S.pub_id);
    free(S.pub_t);
    free(S.pub_part);
    free(S.times);
    free(S.recs);
    return rc || g.problems ? 1 : 0;
}

/* ---- part 2: backlog -------------------------------------------------------------------------- */

#define SLOT_TOOL 0
#define SLOT_B 1

typedef struct bl_rep {
    int P, done;
    uint64_t leave0, leave1, m1_pub, m1_seq; /* A's clock (us) */
    int leave_err, pub_err;
    uint64_t m1_at, pending, bl_handled;
    char m1_via;
    int m1_part_ok;
    uint64_t assigned_at, updated_at;       /* on B: P claimed, then its filter updated */
    uint64_t m2_pub, m2_seq, m2_at;
    char m2_via;
    double restore_ms;
} bl_rep;

typedef struct backlog {
    uint64_t n;               /* the backlog of this phase */
    int rep, a_slot, P;       /* the repetition under way */
    bl_rep *cur;
    int published_done;
    uint64_t pub_n, pub_err, pub_us;
    bl_rep r[2][MAX_REPS];
    int m2_pending;
} backlog;

static backlog L;

static void bl_on_line(char *line) {
    int slot, which, rep, part, le, pe;
    unsigned long long t, seq, gen, pending, handled, cu, t0, t1, t2, n, err, us;
    char via;
    bl_rep *r = L.cur;
    if (line[0] == 'K' && sscanf(line, "K %d %d %d %llu %d %llu %llu %c %llu %llu %llu", &slot, &which, &rep, &t,
                                        &part, &seq, &gen, &via, &pending, &handled, &cu) == 11) {
        if (!r || slot != SLOT_B || rep != L.rep) return; /* an earlier repetition's marker, or A's catch-up */
        if (which == 1 && !r->m1_at) {
            r->m1_at = t;
            r->m1_via = via;
            r->pending = pending;
            r->bl_handled = handled;
            r->m1_part_ok = part == r->P && g.p[SLOT_B].owned[part];
        } else if (which == 2 && !r->m2_at) {
            r->m2_at = t;
            r->m2_via = via;
        }
        (void)gen;
        (void)cu;
    } else if (line[0] == 'L' && sscanf(line, "L %d %d %llu %llu %llu %llu %d %d", &slot, &rep, &t0, &t1, &t2, &seq, &le,
                                        &pe) == 8) {
        if (!r || rep != L.rep) return;
        r->leave0 = t0;
        r->leave1 = t1;
        r->m1_pub = t2;
        r->m1_seq = seq;
        r->leave_err = le;
        r->pub_err = pe;
    } else if (line[0] == 'G' && sscanf(line, "G %d %llu", &slot, &t) == 2) {
        const char *list = strchr(line + 2, ' ');
        unsigned char owned[MAX_PARTS];
        int nn;
        list = list ? strchr(list + 1, ' ') : NULL;
        if (!r || slot != SLOT_B || !list || !r->leave0 || r->assigned_at) return;
        parse_owned(list + 1, owned, &nn);
        if (owned[r->P] && t >= r->leave0) r->assigned_at = t;
    } else if (line[0] == 'U' && sscanf(line, "U %d %d %d %llu", &slot, &which, &le, &t) == 4) {
        if (r && slot == SLOT_B && r->assigned_at && !r->updated_at && which == PARTI_EVENT_CONSUMER_UPDATED &&
            t >= r->assigned_at)
            r->updated_at = t;
    } else if (line[0] == 'Q' && sscanf(line, "Q %d %d %llu %llu %llu %d", &slot, &rep, &t0, &t1, &seq, &pe) == 6) {
        if (r && rep == L.rep) r->m2_pub = t0, r->m2_seq = seq;
    } else if (line[0] == 'B' && sscanf(line, "B %d %llu %llu %llu", &slot, &n, &err, &us) == 4) {
        L.pub_n = n;
        L.pub_err = err;
        L.pub_us = us;
        L.published_done = 1;
    }
}

/* A holds p8..p15, B p0..p7, both stable on one version, and the last
 * rebalance min_rebalance_interval_ms (250) ago. */
static int bl_split_settled(int a_slot) {
    const proc *a = &g.p[a_slot], *b = &g.p[SLOT_B];
    int i;
    if (!running_worker(a_slot) || !running_worker(SLOT_B)) return 0;
    if (a->state != PARTI_STATE_STABLE || b->state != PARTI_STATE_STABLE || a->version != b->version) return 0;
    for (i = 0; i < BL_PARTS; i++)
        if (a->owned[i] != (i >= BL_PARTS / 2) || b->owned[i] != (i < BL_PARTS / 2)) return 0;
    return mono_us() >= g.last_rebalance + 300000u;
}

static int bl_b_holds_all(void) {
    const proc *b = &g.p[SLOT_B];
    return running_worker(SLOT_B) && b->state == PARTI_STATE_STABLE && b->nowned == BL_PARTS;
}

static int bl_start_worker(int slot, uint32_t capacity, int rep, int marker_part) {
    child_args a;
    memset(&a, 0, sizeof a);
    a.part = PART_BACKLOG;
    a.role = ROLE_WORKER;
    a.slot = slot;
    a.capacity = capacity;
    a.slow_us = slot == SLOT_B ? g.o.slow_us : 0;
    a.rep = rep;
    a.marker_part = marker_part;
    return spawn(&a);
}

/* One repetition: a fresh A takes p8..p15, leaves; M1 right after, M2 once B has P. */
static void bl_run_rep(int phase, int rep, int a_slot) {
    bl_rep *r = &L.r[phase][rep];
    uint64_t t, deadline;
    char who[16];
    memset(r, 0, sizeof *r);
    r->P = BL_PARTS / 2 + (phase * g.o.reps + rep) % (BL_PARTS / 2);
    L.cur = r;
    L.rep = phase * 100 + rep;
    L.a_slot = a_slot;
    slot_name(a_slot, who, sizeof who);
    t = mono_us();
    if (bl_start_worker(a_slot, 1, L.rep, r->P) != 0) {
        problem("%s could not be started", who);
        return;
    }
    deadline = t + 60000000u;
    while (!bl_split_settled(a_slot) && !stop_requested && mono_us() < deadline && !g.p[a_slot].reaped) pump(10);
    if (!bl_split_settled(a_slot)) {
        if (!stop_requested) problem("%s did not take p8..p15 within 60 s", who);
        stop_child(a_slot, 10000); /* a stray A would take the next one's partitions */
        return;
    }
    r->restore_ms = ms_of(mono_us() - t);
    g.p[a_slot].expected_exit = 1;
    kill(g.p[a_slot].pid, SIGTERM);
    deadline = mono_us() + 15000000u;
    while ((!r->m1_at || !r->leave0) && !stop_requested && mono_us() < deadline) pump(5);
    if (!wait_exit(a_slot, 10000)) {
        problem("%s did not exit 10 s after its leave", who);
    } else if (!WIFEXITED(g.p[a_slot].status) || WEXITSTATUS(g.p[a_slot].status) != 0) {
        char how[32];
        describe_exit(g.p[a_slot].status, how, sizeof how);
        problem("%s ended with %s after its leave", who, how);
    }
    if (!r->leave0 || !r->m1_at) {
        if (!stop_requested)
            problem("rep %d: %s", rep + 1, !r->leave0 ? "A did not report its leave" : "B did not handle M1 within 15 s");
        return;
    }
    if (r->leave_err || r->pub_err) problem("rep %d: leave %s, M1 publish %s", rep + 1,
                                            parti_strerror((parti_err)r->leave_err), parti_strerror((parti_err)r->pub_err));
    if (!r->m1_part_ok) problem("rep %d: M1 on p%d was handled by B while B did not own it", rep + 1, r->P);
    /* M2: P is B's now; its new messages come through B's durable */
    send_command(SLOT_TOOL, "pub %d %d", L.rep, r->P);
    deadline = mono_us() + (uint64_t)g.o.m2_wait_ms * 1000u + 2000000u;
    while (!r->m2_pub && !stop_requested && mono_us() < deadline) pump(5);
    deadline = r->m2_pub + (uint64_t)g.o.m2_wait_ms * 1000u;
    while (r->m2_pub && !r->m2_at && !stop_requested && mono_us() < deadline) pump(5);
    r->done = 1;
    printf("    rep %d: P=p%-2d A's leave %.1f ms; leave -> M1 handled by B %.1f ms (via %s; claimed +%.1f ms, filter "
           "updated +%.1f ms); M2 %s; B's durable pending %llu, backlog handled %llu; A took p8..p15 in %.0f ms\n",
           rep + 1, r->P, ms_of(r->leave1 - r->leave0), ms_of(r->m1_at - r->leave0),
           r->m1_via == 's' ? "the stream catch-up" : "B's durable",
           r->assigned_at ? ms_of(r->assigned_at - r->leave0) : -1.0,
           r->updated_at ? ms_of(r->updated_at - r->leave0) : -1.0,
           r->m2_at ? "handled" : "NOT handled", (unsigned long long)r->pending, (unsigned long long)r->bl_handled,
           r->restore_ms);
    if (r->m2_at)
        printf("           M2 published -> handled %.1f ms (via %s)\n", ms_of(r->m2_at - r->m2_pub),
               r->m2_via == 's' ? "the stream catch-up" : "B's durable");
    else if (r->m2_pub)
        printf("           M2 (seq %llu) not handled within %u ms: it waits in B's durable behind the backlog\n",
               (unsigned long long)r->m2_seq, g.o.m2_wait_ms);
    fflush(stdout);
}

typedef struct bl_stats {
    int n, n2, via_stream, m2_missed;
    uint64_t total[MAX_REPS], after_leave[MAX_REPS], claimed[MAX_REPS], updated[MAX_REPS], m2[MAX_REPS];
    uint64_t p50, max, after_p50, claimed_p50, updated_p50, m2_p50, m2_max;
} bl_stats;

static void bl_stats_of(int phase, bl_stats *st) {
    int i;
    memset(st, 0, sizeof *st);
    for (i = 0; i < g.o.reps; i++) {
        const bl_rep *r = &L.r[phase][i];
        if (!r->done || !r->m1_at) continue;
        st->total[st->n] = r->m1_at - r->leave0;
        st->after_leave[st->n] = r->m1_at > r->leave1 ? r->m1_at - r->leave1 : 0;
        st->claimed[st->n] = r->assigned_at ? r->assigned_at - r->leave0 : 0;
        st->updated[st->n] = r->updated_at ? r->updated_at - r->leave0 : 0;
        st->via_stream += r->m1_via == 's';
        st->n++;
        if (r->m2_at) st->m2[st->n2++] = r->m2_at - r->m2_pub;
        else st->m2_missed++;
    }
    st->p50 = percentile(st->total, (size_t)st->n, 0.5);
    st->max = percentile(st->total, (size_t)st->n, 1.0);
    st->after_p50 = percentile(st->after_leave, (size_t)st->n, 0.5);
    st->claimed_p50 = percentile(st->claimed, (size_t)st->n, 0.5);
    st->updated_p50 = percentile(st->updated, (size_t)st->n, 0.5);
    st->m2_p50 = percentile(st->m2, (size_t)st->n2, 0.5);
    st->m2_max = percentile(st->m2, (size_t)st->n2, 1.0);
}

static void ratio_text(char *buf, size_t cap, uint64_t a, uint64_t b) {
    if (!a || !b) snprintf(buf, cap, "-");
    else snprintf(buf, cap, "%.2fx", (double)a / (double)b);
}

static int bl_report(void) {
    bl_stats e, b;
    char r1[16], r2[16], r3[16], r4[16];
    bl_stats_of(0, &e);
    bl_stats_of(1, &b);
    ratio_text(r1, sizeof r1, b.p50, e.p50);
    ratio_text(r2, sizeof r2, b.max, e.max);
    ratio_text(r3, sizeof r3, b.claimed_p50, e.claimed_p50);
    ratio_text(r4, sizeof r4, b.updated_p50, e.updated_p50);
    printf("\n== backlog: the account (B's handler %u us per backlog message)\n", g.o.slow_us);
    printf("  A's leave -> B's handler sees the next message of P (M1):\n");
    printf("    backlog 0:       p50 %.1f ms, max %.1f ms (%d reps, %d via the stream catch-up)\n", ms_of(e.p50),
           ms_of(e.max), e.n, e.via_stream);
    printf("    backlog %-8llu p50 %.1f ms, max %.1f ms (%d reps, %d via the stream catch-up)\n",
           (unsigned long long)L.n, ms_of(b.p50), ms_of(b.max), b.n, b.via_stream);
    printf("    ratio backlog/empty: p50 %s, max %s\n", r1, r2);
    printf("    stages, p50 from the leave call: P claimed by B %.1f / %.1f ms (%s), B's filter updated %.1f / %.1f ms "
           "(%s); leave returned -> M1 handled %.1f / %.1f ms (empty / backlog)\n",
           ms_of(e.claimed_p50), ms_of(b.claimed_p50), r3, ms_of(e.updated_p50), ms_of(b.updated_p50), r4,
           ms_of(e.after_p50), ms_of(b.after_p50));
    printf("  M2, published once P is B's: backlog 0: handled in %d/%d, p50 %.1f ms, max %.1f ms; "
           "backlog %llu: handled in %d/%d within %u ms%s\n",
           e.n2, e.n, ms_of(e.m2_p50), ms_of(e.m2_max), (unsigned long long)L.n, b.n2, b.n, g.o.m2_wait_ms,
           b.n2 == b.n ? "" : " (a new message of P waited behind B's backlog: head-of-line blocking)");
    if (b.n2)
        printf("    backlog M2 p50 %.1f ms, max %.1f ms\n", ms_of(b.m2_p50), ms_of(b.m2_max));
    return e.n < g.o.reps || b.n < g.o.reps || e.n2 < e.n || b.n2 < b.n;
}

static int bl_run(void) {
    child_args a;
    uint64_t deadline;
    struct statvfs vfs;
    int phase, rep, slot = 2, rc;
    memset(&L, 0, sizeof L);
    reset_part(PART_BACKLOG);
    g.on_line = bl_on_line;
    printf("\n== part 2: backlog: %d partitions; B holds p0..p7 (its handler %u us per message there) and takes p8..p15 "
           "when A leaves; %d reps with no backlog, then with %llu messages on p0..p7\n",
           BL_PARTS, g.o.slow_us, g.o.reps, (unsigned long long)g.o.backlog);
    if (start_server() != 0) return 1;
    printf("nats-server %s on %s, store in %s (file storage)\n", nats_server_version(g.server), g.url, g.dir);
    g.t0_us = mono_us();
    memset(&a, 0, sizeof a);
    a.part = PART_BACKLOG;
    a.role = ROLE_TOOL;
    a.slot = SLOT_TOOL;
    if (spawn(&a) != 0 || wait_ready(SLOT_TOOL, 10000, "the tool") != 0) return 1;
    if (bl_start_worker(SLOT_B, 2, -1, -1) != 0) return 1;
    deadline = mono_us() + 30000000u;
    while (!bl_b_holds_all() && !stop_requested && mono_us() < deadline) pump(20);
    if (!bl_b_holds_all()) {
        if (!stop_requested) problem("B did not hold every partition within 30 s");
        return 1;
    }
    say("B (%s) leads and holds all %d partitions", g.p[SLOT_B].id, BL_PARTS);
    for (phase = 0; phase < 2 && !stop_requested; phase++) {
        L.n = phase ? g.o.backlog : 0;
        if (phase && g.o.backlog) {
            if (statvfs(g.dir, &vfs) == 0)
                say("disk free where the store is: %.1f GB", (double)vfs.f_bavail * (double)vfs.f_frsize / 1e9);
            say("publishing the backlog: %llu messages on p0..p7 (async publishes)", (unsigned long long)g.o.backlog);
            send_command(SLOT_TOOL, "backlog %llu", (unsigned long long)g.o.backlog);
            deadline = mono_us() + 900000000u;
            while (!L.published_done && !stop_requested && mono_us() < deadline && !g.p[SLOT_TOOL].reaped) pump(100);
            if (!L.published_done) {
                if (!stop_requested) problem("the backlog was not published within 900 s");
                return 1;
            }
            say("backlog published: %llu messages in %.1f s = %.0f msg/s (%llu errors)", (unsigned long long)L.pub_n,
                (double)L.pub_us / 1e6, L.pub_us ? (double)L.pub_n * 1e6 / (double)L.pub_us : 0.0,
                (unsigned long long)L.pub_err);
            if (statvfs(g.dir, &vfs) == 0)
                say("disk free after: %.1f GB", (double)vfs.f_bavail * (double)vfs.f_frsize / 1e9);
            pump(1000); /* B starts on it: the backlog is in its durable, pulled at its handler's pace */
        }
        printf("  phase: backlog %llu\n", (unsigned long long)L.n);
        for (rep = 0; rep < g.o.reps && !stop_requested && running_worker(SLOT_B); rep++) {
            bl_run_rep(phase, rep, slot++);
            deadline = mono_us() + 30000000u; /* B takes everything back before the next A */
            while (!bl_b_holds_all() && !stop_requested && mono_us() < deadline) pump(10);
        }
    }
    if (stop_requested) return 130;
    rc = bl_report();
    if (!stop_child(SLOT_B, 15000)) problem("B did not leave cleanly");
    send_command(SLOT_TOOL, "quit");
    stop_child(SLOT_TOOL, 5000);
    return rc || g.problems ? 1 : 0;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--part soak|backlog|both] [--seconds N] [--rate N] [--slow-us N] [--stop-ms N] [--kill-leader]\n"
            "          [--backlog N] [--reps N] [--m2-wait-ms N] [--verbose]\n",
            argv0);
}

static int parse_args(int argc, char **argv, options *o) {
    int i;
    memset(o, 0, sizeof *o);
    o->parts = PART_SOAK | PART_BACKLOG;
    o->seconds = 60;
    o->rate = 2000;
    o->slow_us = 1000;
    o->stop_ms = 2 * MEMBER_TTL_MS;
    o->backlog = 1000000;
    o->reps = 5;
    o->m2_wait_ms = 3000;
    for (i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--kill-leader") == 0) o->kill_leader = 1;
        else if (strcmp(argv[i], "--verbose") == 0) o->verbose = 1;
        else if (!v) return -1;
        else if (strcmp(argv[i], "--part") == 0 && strcmp(v, "soak") == 0) o->parts = PART_SOAK, i++;
        else if (strcmp(argv[i], "--part") == 0 && strcmp(v, "backlog") == 0) o->parts = PART_BACKLOG, i++;
        else if (strcmp(argv[i], "--part") == 0 && strcmp(v, "both") == 0) o->parts = PART_SOAK | PART_BACKLOG, i++;
        else if (strcmp(argv[i], "--seconds") == 0) o->seconds = atoi(v), i++;
        else if (strcmp(argv[i], "--rate") == 0) o->rate = (uint32_t)strtoul(v, NULL, 10), i++;
        else if (strcmp(argv[i], "--slow-us") == 0) o->slow_us = (uint32_t)strtoul(v, NULL, 10), i++;
        else if (strcmp(argv[i], "--stop-ms") == 0) o->stop_ms = (uint32_t)strtoul(v, NULL, 10), i++;
        else if (strcmp(argv[i], "--backlog") == 0) o->backlog = strtoull(v, NULL, 10), i++;
        else if (strcmp(argv[i], "--reps") == 0) o->reps = atoi(v), i++;
        else if (strcmp(argv[i], "--m2-wait-ms") == 0) o->m2_wait_ms = (uint32_t)strtoul(v, NULL, 10), i++;
        else return -1;
    }
    if (o->seconds < 20 || o->seconds > 86400) {
        fprintf(stderr, "--seconds must be 20..86400\n");
        return -1;
    }
    if (o->rate < 1 || o->rate > 100000 || o->reps < 1 || o->reps > MAX_REPS || o->slow_us > 1000000 ||
        o->stop_ms < 1 || o->stop_ms > 60000 || o->m2_wait_ms > 600000 || o->backlog > 100000000u) {
        fprintf(stderr, "an option is out of range (--rate 1..100000, --reps 1..%d, --slow-us <= 1000000, --stop-ms "
                        "1..60000, --m2-wait-ms <= 600000, --backlog <= 100000000)\n", MAX_REPS);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    int rc = 0, r;
    uint64_t t0 = mono_us();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_args(argc, argv, &g.o) != 0) {
        usage(argv[0]);
        return 2;
    }
    g.report_rd = g.report_wr = -1;
    make_partitions();
    set_signal(SIGINT, on_stop_signal);
    set_signal(SIGTERM, on_stop_signal);
    set_signal(SIGPIPE, SIG_IGN);
    printf("parti %s handoff benchmarks: worker processes on a local nats-server; nats.c %s\n", PARTI_VERSION_STRING,
           nats_GetVersion());
    if (g.o.parts & PART_SOAK) {
        r = soak_run();
        cleanup_all();
        if (r) rc = r;
    }
    if ((g.o.parts & PART_BACKLOG) && !stop_requested) {
        r = bl_run();
        cleanup_all();
        if (r && rc != 130) rc = r;
    }
    if (stop_requested) {
        printf("interrupted: every child killed, the server stopped\n");
        rc = 130;
    }
    printf("total %.1f s\n", (double)(mono_us() - t0) / 1e6);
    return rc;
}

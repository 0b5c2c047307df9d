/* Benchmarks of the worker consumer (parti_consumer_*) on a local
 * nats-server started for the run (loopback, random port, temp dir, stopped
 * at the end). Each section prints absolute numbers and the ratio parti /
 * baseline measured in the same run, the baseline being raw nats.c:
 *   pull      messages through the worker consumer (handler returns ACK) vs
 *             natsSubscription_FetchRequest on a pull subscription bound to a
 *             durable with the same filter_subjects (4 of 8 subjects), the
 *             same batch, expiry and idle heartbeat, natsMsg_Ack on each;
 *             32 B and 1 KiB, batch 100 and 1000; median of alternating rounds;
 *             each side's durable is created before its clock starts (the
 *             worker's with the config it sends: its first poll finds it, as
 *             a restarted worker does; creating one is timed in recreate);
 *             parti's clock stops in the handler at the last message (poll
 *             itself runs on to its timeout); also the client's CPU time per
 *             message on each side (getrusage of this process: every thread,
 *             user + system), which the machine's noise disturbs less than
 *             the rates do, and the server's (it shares the cores)
 *   update    parti_consumer_update (no_coalesce) until poll has the new
 *             filter on the server, vs one raw $JS.API.CONSUMER.CREATE round
 *             trip changing filter_subjects; two sets alternate; p50 / p95
 *   recreate  the worker's durable deleted with js_DeleteConsumer while a
 *             pull is pending, until the recreation is counted and a message
 *             published after the delete reaches the handler, vs one raw
 *             consumer create round trip; p50 / p95 / max
 * Environment: PARTI_BENCH_STORAGE=memory|file (default memory),
 * PARTI_BENCH_MSGS = messages published per payload size (default 200000;
 * half of them match the filter), PARTI_BENCH_ROUNDS = pull rounds (default 5,
 * 1..51), PARTI_BENCH_ONLY=pull skips the update and recreate sections; for
 * profiling, PARTI_BENCH_SIDE=parti|raw runs one side of the pull rounds and
 * PARTI_BENCH_SIZE=32|1024, PARTI_BENCH_BATCH=100|1000 one case. nats.c 3.4 cannot express
 * filter_subjects, so the raw consumer config is sent as JSON through
 * natsConnection_Request, as any client without that field would. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "../tests/nats_server.h"

#include <nats/nats.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <unistd.h>

#define PULL_ROUNDS_MAX 51
static int pull_rounds = 5; /* PARTI_BENCH_ROUNDS */
enum { SIDE_PARTI = 1, SIDE_RAW = 2 };
static int pull_sides = SIDE_PARTI | SIDE_RAW; /* PARTI_BENCH_SIDE */
static int pull_size, pull_batch;             /* PARTI_BENCH_SIZE, PARTI_BENCH_BATCH: 0 = both */
#define UPDATE_ITERATIONS 300
#define RECREATE_ITERATIONS 20
#define MAX_ACK_PENDING 10000
#define PUBLISH_WINDOW 4000
#define FETCH_EXPIRES_MS 5000
#define FETCH_HEARTBEAT_MS 1000
#define PULL_DEADLINE_S 120.0   /* one side of one round */
#define STEP_DEADLINE_S 10.0    /* one update or one recreation */

/* What the benchmark holds on to, so a failure can stop the server first. */
typedef struct bench {
    nats_server *srv;
    parti_transport t; /* parti's connection: the worker consumers and the stream setup */
    natsConnection *nc; /* the raw nats.c connection */
    jsCtx *js;
    int memory;
} bench;

static bench *fail_ctx; /* only for fail(): stop the server before exiting */

static void fail(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;
static void fail(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "bench_consumer: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (fail_ctx && fail_ctx->srv) {
        nats_server_print_log_tail(fail_ctx->srv, stderr, 20);
        nats_server_stop(fail_ctx->srv, NULL, 0);
        fail_ctx->srv = NULL;
    }
    exit(1);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this process (every thread: the caller's, nats.c's reader and
 * flusher), user + system, in seconds. */
static double cpu_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* The server's CPU time so far (user + system, /proc; 0 where there is none):
 * the server shares this machine's cores with the client, so what one side
 * makes it do per message counts too. */
static double server_cpu_s(const bench *b) {
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    long tick = sysconf(_SC_CLK_TCK);
    FILE *f;
    size_t len;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)nats_server_pid(b->srv));
    if (!(f = fopen(path, "r"))) return 0;
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    /* after the command's closing parenthesis: state is field 3, utime 14, stime 15 */
    if (!(p = strrchr(buf, ')')) || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return tick > 0 ? (double)(ut + st) / (double)tick : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double percentile(const double *sorted, int n, double p) {
    int i = (int)(p * n + 0.999999) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return sorted[i];
}

/* ---- the stream and the partitions -------------------------------------- */

static const char *const keys[8][1] = {{"0"}, {"1"}, {"2"}, {"3"}, {"4"}, {"5"}, {"6"}, {"7"}};
static const parti_partition parts[8] = {{keys[0], 1, 1}, {keys[1], 1, 1}, {keys[2], 1, 1}, {keys[3], 1, 1},
                                         {keys[4], 1, 1}, {keys[5], 1, 1}, {keys[6], 1, 1}, {keys[7], 1, 1}};
static const int set_a[4] = {0, 2, 4, 6}, set_b[4] = {1, 3, 5, 7};
static const char *const subjects_a[4] = {"bench.0", "bench.2", "bench.4", "bench.6"};
static const char *const subjects_b[4] = {"bench.1", "bench.3", "bench.5", "bench.7"};

static void make_stream(bench *b, const char *name, const char *wildcard) {
    parti_stream_config sc;
    parti_err e;
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    sc.subjects = &wildcard;
    sc.subject_count = 1;
    sc.memory_storage = b->memory;
    if ((e = b->t.vt->stream_create(b->t.self, &sc, 5000)) != PARTI_ERR_OK)
        fail("stream %s: %s (%s)", name, parti_strerror(e), parti_nats_last_error(&b->t));
}

static uint64_t stream_messages(bench *b, const char *name) {
    parti_stream_info si;
    uint64_t n;
    if (b->t.vt->stream_info(b->t.self, name, &si, 5000) != PARTI_ERR_OK) fail("stream info %s failed", name);
    n = si.messages;
    parti_stream_info_free(&si);
    return n;
}

static void purge(bench *b, const char *stream) {
    jsErrCode jerr = 0;
    if (js_PurgeStream(b->js, stream, NULL, &jerr) != NATS_OK) fail("purge %s failed (%d)", stream, (int)jerr);
}

static void publish_all(bench *b, int n, int size) {
    char *payload = (char *)calloc(1, (size_t)size);
    jsPubOptions po;
    uint64_t before = stream_messages(b, "bench");
    char subject[16];
    int i;
    if (!payload) fail("out of memory");
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    /* in windows: an unbounded burst makes the server drop messages ("excessive stream ingest rate") */
    for (i = 0; i < n; i++) {
        snprintf(subject, sizeof subject, "bench.%d", i % 8);
        if (js_PublishAsync(b->js, subject, payload, size, NULL) != NATS_OK) fail("publish %d failed", i);
        if ((i + 1) % PUBLISH_WINDOW == 0 || i == n - 1)
            if (js_PublishAsyncComplete(b->js, &po) != NATS_OK) fail("publish acks did not come within 30 s");
    }
    free(payload);
    if (stream_messages(b, "bench") != before + (uint64_t)n)
        fail("the stream holds %llu messages, expected %llu", (unsigned long long)stream_messages(b, "bench"),
             (unsigned long long)(before + (uint64_t)n));
}

/* ---- raw nats.c consumers ---------------------------------------------------- */

/* The consumer config the worker consumer sends (see parti_nats.h), as JSON. */
static void raw_upsert(bench *b, const char *stream, const char *durable, const char *const *filters, int count) {
    char subject[256], body[1024];
    natsMsg *reply = NULL;
    natsStatus s;
    int len, i;
    len = snprintf(body, sizeof body,
                   "{\"stream_name\":\"%s\",\"config\":{\"durable_name\":\"%s\",\"name\":\"%s\","
                   "\"deliver_policy\":\"all\",\"ack_policy\":\"explicit\",\"ack_wait\":30000000000,"
                   "\"max_deliver\":5,\"max_ack_pending\":%d,\"replay_policy\":\"instant\",\"filter_subjects\":[",
                   stream, durable, durable, MAX_ACK_PENDING);
    for (i = 0; i < count && len > 0 && len < (int)sizeof body; i++)
        len += snprintf(body + len, sizeof body - (size_t)len, "%s\"%s\"", i ? "," : "", filters[i]);
    if (len > 0 && len < (int)sizeof body) len += snprintf(body + len, sizeof body - (size_t)len, "]}}");
    if (len <= 0 || len >= (int)sizeof body) fail("consumer config of %s does not fit", durable);
    snprintf(subject, sizeof subject, "$JS.API.CONSUMER.CREATE.%s.%s", stream, durable);
    s = natsConnection_Request(&reply, b->nc, subject, body, len, 5000);
    if (s != NATS_OK) fail("raw consumer create %s: %s", durable, natsStatus_GetText(s));
    if (natsMsg_GetDataLength(reply) <= 0 || strstr(natsMsg_GetData(reply), "\"error\""))
        fail("raw consumer create %s: %.300s", durable, natsMsg_GetData(reply));
    natsMsg_Destroy(reply);
}

static void raw_delete(bench *b, const char *stream, const char *durable) {
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(b->js, stream, durable, NULL, &jerr);
    if (s != NATS_OK) fail("delete consumer %s: %s (%d)", durable, natsStatus_GetText(s), (int)jerr);
}

/* ---- the worker consumer --------------------------------------------------- */

typedef struct worker {
    parti_consumer *c;
    long handled;
    long target;         /* handled count whose time is recorded (0 = none) */
    double target_at;    /* when the handler reached target, 0 = not yet */
    char marker[32];     /* a payload to watch for ("" = none) */
    double marker_at;    /* when the handler saw it, 0 = not yet */
    double recreated_at; /* when the RECREATED event came, 0 = not yet */
    long assigned;       /* partitions assigned (a group's worker) */
} worker;

static parti_verdict on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
    worker *w = (worker *)user;
    size_t n = strlen(w->marker);
    (void)nak_delay_ms;
    if (++w->handled == w->target) w->target_at = now_s();
    if (n && !w->marker_at && m->len == n && memcmp(m->data, w->marker, n) == 0) w->marker_at = now_s();
    return PARTI_ACK;
}

static void on_event(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail) {
    worker *w = (worker *)user;
    (void)err;
    (void)detail;
    if (kind == PARTI_EVENT_CONSUMER_RECREATED && !w->recreated_at) w->recreated_at = now_s();
}

/* The config both the worker consumer and the group read with. */
static parti_config bench_config(const char *stream, const char *tmpl, const parti_partition *partitions, int count,
                                 int batch, int expires_ms, int heartbeat_ms) {
    parti_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = stream;
    cfg.subject_template = tmpl;
    cfg.partitions = partitions;
    cfg.partition_count = count;
    cfg.fetch_batch = batch;
    cfg.fetch_expires_ms = expires_ms;
    cfg.fetch_heartbeat_ms = heartbeat_ms;
    cfg.max_ack_pending = MAX_ACK_PENDING;
    return cfg;
}

static void worker_create(bench *b, worker *w, const char *stream, const char *tmpl, int batch) {
    parti_config cfg = bench_config(stream, tmpl, parts, 8, batch, FETCH_EXPIRES_MS, FETCH_HEARTBEAT_MS);
    parti_consumer_options o;
    char msg[256];
    parti_err e;
    memset(w, 0, sizeof *w);
    memset(&o, 0, sizeof o);
    o.on_message = on_message;
    o.on_event = on_event;
    o.user = w;
    o.no_coalesce = 1;
    if ((e = parti_consumer_create(&w->c, &b->t, &cfg, &o, msg, sizeof msg)) != PARTI_ERR_OK)
        fail("parti_consumer_create: %s: %s", parti_strerror(e), msg);
}

static void worker_update(worker *w, const char *id, const int *partitions, int count) {
    parti_err e = parti_consumer_update(w->c, id, partitions, count);
    if (e != PARTI_ERR_OK) fail("parti_consumer_update: %s: %s", parti_strerror(e), parti_consumer_last_message(w->c));
}

static uint64_t worker_counter(const worker *w, int which) {
    const parti_metrics *m = parti_consumer_metrics(w->c);
    return which == 0 ? m->consumer_updates_success.value : m->consumer_recreations.value;
}

/* Polls until the first update is on the server (its durable exists). */
static void worker_wait_applied(worker *w) {
    double deadline = now_s() + STEP_DEADLINE_S;
    while (worker_counter(w, 0) == 0) {
        if (now_s() > deadline)
            fail("the worker consumer was not created within %.0f s: %s", STEP_DEADLINE_S,
                 parti_consumer_last_message(w->c));
        parti_consumer_poll(w->c, 10);
    }
}

/* ---- 1. pull throughput ------------------------------------------------------ */

static double raw_pull(bench *b, const char *durable, int batch, long expect, double *cpu_us, double *srv_us,
                       int expires_ms, int heartbeat_ms) {
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsFetchRequest fr;
    jsErrCode jerr = 0;
    long got = 0;
    double t0, deadline, c0, s0;
    jsSubOptions_Init(&so);
    so.Stream = "bench";
    so.Consumer = durable;
    if (js_PullSubscribe(&sub, b->js, NULL, durable, NULL, &so, &jerr) != NATS_OK)
        fail("raw bind to %s failed (%d)", durable, (int)jerr);
    jsFetchRequest_Init(&fr);
    fr.Batch = batch;
    fr.Expires = (int64_t)expires_ms * 1000000;
    fr.Heartbeat = (int64_t)heartbeat_ms * 1000000;
    c0 = cpu_s();
    s0 = server_cpu_s(b);
    t0 = now_s();
    deadline = t0 + PULL_DEADLINE_S;
    while (got < expect) {
        natsMsgList list = {NULL, 0};
        natsStatus s;
        int i;
        if (now_s() > deadline) fail("raw pull: %ld of %ld messages after %.0f s", got, expect, PULL_DEADLINE_S);
        s = natsSubscription_FetchRequest(&list, sub, &fr);
        if (s != NATS_OK && s != NATS_TIMEOUT) fail("raw fetch: %s", natsStatus_GetText(s));
        for (i = 0; i < list.Count; i++)
            if (natsMsg_Ack(list.Msgs[i], NULL) != NATS_OK) fail("raw ack failed");
        got += list.Count;
        natsMsgList_Destroy(&list);
    }
    t0 = now_s() - t0;
    *cpu_us = (cpu_s() - c0) * 1e6 / (double)got;
    *srv_us = (server_cpu_s(b) - s0) * 1e6 / (double)got;
    natsSubscription_Destroy(sub);
    if (got != expect) fail("raw pull: %ld messages, expected %ld", got, expect);
    return (double)got / t0;
}

static double parti_pull(bench *b, const char *id, int batch, long expect, double *cpu_us, double *srv_us) {
    worker w;
    double t0, deadline, c0, s0;
    worker_create(b, &w, "bench", "bench.{0}", batch);
    worker_update(&w, id, set_a, 4);
    w.target = expect;
    /* the clock includes the worker's upsert of its durable, which exists
     * already (one round trip, lazily in poll); it stops in the handler, as
     * poll runs on to its timeout after the last message */
    c0 = cpu_s();
    s0 = server_cpu_s(b);
    t0 = now_s();
    deadline = t0 + PULL_DEADLINE_S;
    while (w.handled < expect) {
        if (now_s() > deadline)
            fail("worker consumer: %ld of %ld messages after %.0f s (%s)", w.handled, expect, PULL_DEADLINE_S,
                 parti_consumer_last_message(w.c));
        parti_consumer_poll(w.c, 100);
    }
    t0 = w.target_at - t0;
    *cpu_us = (cpu_s() - c0) * 1e6 / (double)w.handled; /* (and the rest of the last poll: it waits) */
    *srv_us = (server_cpu_s(b) - s0) * 1e6 / (double)w.handled;
    if (w.handled != expect) fail("worker consumer: %ld messages, expected %ld", w.handled, expect);
    if (worker_counter(&w, 1) != 0) fail("worker consumer: it recreated the durable made for it (the configs differ)");
    if (parti_consumer_metrics(w.c)->consumer_messages_ack.value != (uint64_t)expect)
        fail("worker consumer: ack counter %llu, expected %ld",
             (unsigned long long)parti_consumer_metrics(w.c)->consumer_messages_ack.value, expect);
    parti_consumer_destroy(w.c);
    return (double)w.handled / t0;
}

/* The rounds of one case, each side's rate and CPU times per message. */
typedef struct rounds {
    double raw_rates[PULL_ROUNDS_MAX], parti_rates[PULL_ROUNDS_MAX], ratios[PULL_ROUNDS_MAX];
    double raw_cpu[PULL_ROUNDS_MAX], parti_cpu[PULL_ROUNDS_MAX], raw_srv[PULL_ROUNDS_MAX], parti_srv[PULL_ROUNDS_MAX];
} rounds;

/* Round r: the two sides in alternating order, so neither always runs on a
 * warmer server (or one side alone, PARTI_BENCH_SIDE, for profiling). */
typedef double (*side_fn)(bench *b, void *arg, double *cpu_us, double *srv_us);
static void run_round(bench *b, rounds *rs, int r, side_fn parti_side, void *parti_arg, side_fn raw_side,
                      void *raw_arg) {
    rs->parti_rates[r] = rs->raw_rates[r] = rs->parti_cpu[r] = rs->raw_cpu[r] = 1; /* (a side not run) */
    rs->parti_srv[r] = rs->raw_srv[r] = 1;
    if (r % 2) {
        if (pull_sides & SIDE_PARTI) rs->parti_rates[r] = parti_side(b, parti_arg, &rs->parti_cpu[r], &rs->parti_srv[r]);
        if (pull_sides & SIDE_RAW) rs->raw_rates[r] = raw_side(b, raw_arg, &rs->raw_cpu[r], &rs->raw_srv[r]);
    } else {
        if (pull_sides & SIDE_RAW) rs->raw_rates[r] = raw_side(b, raw_arg, &rs->raw_cpu[r], &rs->raw_srv[r]);
        if (pull_sides & SIDE_PARTI) rs->parti_rates[r] = parti_side(b, parti_arg, &rs->parti_cpu[r], &rs->parti_srv[r]);
    }
    rs->ratios[r] = rs->parti_rates[r] / rs->raw_rates[r];
}

static void report(const char *what, rounds *rs, int size, int batch, long expect) {
    int m = pull_rounds / 2;
    qsort(rs->raw_rates, (size_t)pull_rounds, sizeof(double), cmp_double);
    qsort(rs->parti_rates, (size_t)pull_rounds, sizeof(double), cmp_double);
    qsort(rs->ratios, (size_t)pull_rounds, sizeof(double), cmp_double);
    qsort(rs->raw_cpu, (size_t)pull_rounds, sizeof(double), cmp_double);
    qsort(rs->parti_cpu, (size_t)pull_rounds, sizeof(double), cmp_double);
    qsort(rs->raw_srv, (size_t)pull_rounds, sizeof(double), cmp_double);
    qsort(rs->parti_srv, (size_t)pull_rounds, sizeof(double), cmp_double);
    printf("%s %4d B batch %4d: parti %7.0f msg/s | raw nats.c %7.0f msg/s | ratio %.3fx "
           "(medians of %d rounds of %ld msgs; per-round ratio median %.3f, range %.3f..%.3f)\n",
           what, size, batch, rs->parti_rates[m], rs->raw_rates[m], rs->parti_rates[m] / rs->raw_rates[m], pull_rounds,
           expect, rs->ratios[m], rs->ratios[0], rs->ratios[pull_rounds - 1]);
    printf("%s %4d B batch %4d: client CPU per message (this process, all threads): parti %.2f us | "
           "raw nats.c %.2f us | ratio %.2fx (medians)\n",
           what, size, batch, rs->parti_cpu[m], rs->raw_cpu[m], rs->parti_cpu[m] / rs->raw_cpu[m]);
    printf("%s %4d B batch %4d: server CPU per message (nats-server, 10 ms ticks): parti %.2f us | "
           "raw nats.c %.2f us | ratio %.2fx (medians)\n",
           what, size, batch, rs->parti_srv[m], rs->raw_srv[m], rs->parti_srv[m] / rs->raw_srv[m]);
    if (pull_sides != (SIDE_PARTI | SIDE_RAW)) printf("(one side only: its ratios are not ratios)\n");
    fflush(stdout);
}

/* What one side of a round reads. */
typedef struct side_arg {
    const char *name; /* the worker ID (parti) or the durable (raw) */
    parti *p;         /* the group (pull through the group) */
    worker *w;        /* its handler's counts */
    int batch, expires_ms, heartbeat_ms;
    long expect;
} side_arg;

static double consumer_side(bench *b, void *arg, double *cpu_us, double *srv_us) {
    side_arg *a = (side_arg *)arg;
    return parti_pull(b, a->name, a->batch, a->expect, cpu_us, srv_us);
}

static double raw_side(bench *b, void *arg, double *cpu_us, double *srv_us) {
    side_arg *a = (side_arg *)arg;
    return raw_pull(b, a->name, a->batch, a->expect, cpu_us, srv_us, a->expires_ms, a->heartbeat_ms);
}

/* One payload size and batch through the worker consumer. */
static void bench_pull_case(bench *b, int size, int batch, long expect) {
    rounds rs;
    int r;
    for (r = 0; r < pull_rounds; r++) {
        char raw_name[64], id[64], durable[PARTI_MAX_NAME_LEN + 1];
        side_arg pa, ra;
        snprintf(raw_name, sizeof raw_name, "raw-%d-%d-%d", size, batch, r);
        snprintf(id, sizeof id, "w-%d-%d-%d", size, batch, r);
        if (parti_consumer_name("parti-", id, durable, sizeof durable, NULL, 0) != PARTI_ERR_OK)
            fail("consumer name of %s", id);
        raw_upsert(b, "bench", raw_name, subjects_a, 4);
        /* both clocks start with their durable on the server: the worker's is
         * made here with the config it sends, and its first poll finds it */
        if (pull_sides & SIDE_PARTI) raw_upsert(b, "bench", durable, subjects_a, 4);
        memset(&pa, 0, sizeof pa);
        pa.name = id, pa.batch = batch, pa.expect = expect;
        ra = pa;
        ra.name = raw_name, ra.expires_ms = FETCH_EXPIRES_MS, ra.heartbeat_ms = FETCH_HEARTBEAT_MS;
        run_round(b, &rs, r, consumer_side, &pa, raw_side, &ra);
        raw_delete(b, "bench", raw_name);
        if (pull_sides & SIDE_PARTI) raw_delete(b, "bench", durable);
    }
    report("pull", &rs, size, batch, expect);
}

static void bench_pull(bench *b, int published) {
    static const int sizes[] = {32, 1024}, batches[] = {100, 1000};
    long expect = published / 2; /* 4 of the 8 subjects match */
    int si, bi;
    for (si = 0; si < 2; si++) {
        if (pull_size && sizes[si] != pull_size) continue;
        purge(b, "bench");
        publish_all(b, published, sizes[si]);
        for (bi = 0; bi < 2; bi++)
            if (!pull_batch || batches[bi] == pull_batch) bench_pull_case(b, sizes[si], batches[bi], expect);
    }
    purge(b, "bench");
}

/* ---- 1b. pull throughput through the group ------------------------------------ */

/* A one-worker group holding partitions 0, 2, 4 and 6 of "bench". Its member
 * lease outlasts the round's unpolled stretches (publishing, the raw side),
 * so it keeps its partitions throughout. */
#define GROUP_FETCH_EXPIRES_MS 1000
#define GROUP_FETCH_HEARTBEAT_MS 250

static void on_assigned(void *user, const int *partitions, int count) {
    (void)partitions;
    ((worker *)user)->assigned += count;
}

static double group_side(bench *b, void *arg, double *cpu_us, double *srv_us) {
    side_arg *a = (side_arg *)arg;
    double t0, deadline, c0, s0;
    long start = a->w->handled;
    parti_err e;
    a->w->target = start + a->expect;
    a->w->target_at = 0;
    c0 = cpu_s();
    s0 = server_cpu_s(b);
    t0 = now_s();
    deadline = t0 + PULL_DEADLINE_S;
    while (a->w->handled < a->w->target) {
        if (now_s() > deadline)
            fail("group: %ld of %ld messages after %.0f s", a->w->handled - start, a->expect, PULL_DEADLINE_S);
        if ((e = parti_poll(a->p, 100)) != PARTI_ERR_OK) fail("parti_poll: %s", parti_strerror(e));
    }
    t0 = a->w->target_at - t0;
    *cpu_us = (cpu_s() - c0) * 1e6 / (double)a->expect;
    *srv_us = (server_cpu_s(b) - s0) * 1e6 / (double)a->expect;
    if (a->w->handled != a->w->target) fail("group: %ld messages, expected %ld", a->w->handled - start, a->expect);
    return (double)a->expect / t0;
}

/* Polls p until *count reaches 4 (by deadline). */
static void group_poll_until(parti *p, const long *count, double deadline, const char *what) {
    parti_err e;
    while (*count < 4) {
        if (now_s() > deadline) fail("the group did not %s within %.0f s", what, 3 * STEP_DEADLINE_S);
        if ((e = parti_poll(p, 50)) != PARTI_ERR_OK) fail("parti_poll: %s", parti_strerror(e));
    }
}

/* Starts the group and polls until it holds its four partitions and a
 * message of each has reached the handler (through its durable). */
static parti *group_start(bench *b, worker *w, int batch) {
    static const parti_partition gparts[4] = {{keys[0], 1, 1}, {keys[2], 1, 1}, {keys[4], 1, 1}, {keys[6], 1, 1}};
    parti_config cfg =
        bench_config("bench", "bench.{0}", gparts, 4, batch, GROUP_FETCH_EXPIRES_MS, GROUP_FETCH_HEARTBEAT_MS);
    parti_options o;
    parti *p = NULL;
    char msg[256];
    double deadline = now_s() + 3 * STEP_DEADLINE_S;
    parti_err e;
    int i;
    memset(w, 0, sizeof *w);
    memset(&o, 0, sizeof o);
    o.on_message = on_message;
    o.on_partitions_assigned = on_assigned;
    o.user = w;
    o.heartbeat_ms = 5000;
    o.member_ttl_ms = 30000;
    o.cold_start_ms = 100;
    o.memory_storage = 0; /* (in memory, first claims wait a TTL: see parti_options) */
    if ((e = parti_create(&p, &b->t, &cfg, &o, msg, sizeof msg)) != PARTI_ERR_OK)
        fail("parti_create: %s: %s", parti_strerror(e), msg);
    group_poll_until(p, &w->assigned, deadline, "take its partitions");
    for (i = 0; i < 4; i++)
        if (b->t.vt->publish(b->t.self, subjects_a[i], NULL, 0, "m", 1, NULL, 5000) != PARTI_ERR_OK)
            fail("publishing a marker failed");
    group_poll_until(p, &w->handled, deadline, "handle its first messages");
    return p;
}

/* One payload size and batch through a group: per round a fresh group takes
 * the partitions of an emptied stream, is left unpolled until its pending
 * pull has expired (so it holds no delivery in advance), the backlog is
 * published, and then the group and a raw consumer created before it each
 * read it. */
static void bench_group_case(bench *b, int published, int size, int batch) {
    long expect = published / 2;
    rounds rs;
    int r;
    for (r = 0; r < pull_rounds; r++) {
        char raw_name[64];
        worker w;
        side_arg ga, ra;
        double idle_until;
        parti_err e;
        snprintf(raw_name, sizeof raw_name, "graw-%d-%d-%d", size, batch, r);
        purge(b, "bench");
        raw_upsert(b, "bench", raw_name, subjects_a, 4);
        memset(&ga, 0, sizeof ga);
        ga.p = group_start(b, &w, batch);
        ga.w = &w, ga.batch = batch, ga.expect = expect;
        ra = ga;
        ra.name = raw_name, ra.expires_ms = GROUP_FETCH_EXPIRES_MS, ra.heartbeat_ms = GROUP_FETCH_HEARTBEAT_MS;
        /* the raw consumer has the 4 messages the group handled first: read them off */
        if (pull_sides & SIDE_RAW) {
            double cpu, srv;
            side_arg first = ra;
            first.expect = 4;
            raw_side(b, &first, &cpu, &srv);
        }
        for (idle_until = now_s() + (GROUP_FETCH_EXPIRES_MS + 500) / 1000.0; now_s() < idle_until;)
            nanosleep(&(struct timespec){0, 10000000}, NULL); /* the pending pull runs out */
        publish_all(b, published, size);
        run_round(b, &rs, r, group_side, &ga, raw_side, &ra);
        if ((e = parti_leave(ga.p, 10000)) != PARTI_ERR_OK) fail("parti_leave: %s", parti_strerror(e));
        parti_destroy(ga.p);
        raw_delete(b, "bench", raw_name);
    }
    report("group", &rs, size, batch, expect);
}

static void bench_group(bench *b, int published) {
    static const int sizes[] = {32, 1024}, batches[] = {100, 1000};
    int si, bi;
    for (si = 0; si < 2; si++)
        for (bi = 0; bi < 2; bi++)
            if ((!pull_size || sizes[si] == pull_size) && (!pull_batch || batches[bi] == pull_batch))
                bench_group_case(b, published, sizes[si], batches[bi]);
    purge(b, "bench");
}

/* ---- 2. update latency --------------------------------------------------------- */

static int subjects_are(const parti_subjects *s, const char *const *want, int count) {
    int i;
    if (!s || s->count != count) return 0;
    for (i = 0; i < count; i++)
        if (strcmp(s->items[i], want[i]) != 0) return 0;
    return 1;
}

static double parti_update_once(worker *w, int to_b) {
    uint64_t before = worker_counter(w, 0);
    const char *const *want = to_b ? subjects_b : subjects_a;
    double t0 = now_s(), deadline = t0 + STEP_DEADLINE_S;
    worker_update(w, "w-upd", to_b ? set_b : set_a, 4);
    while (worker_counter(w, 0) == before || !subjects_are(parti_consumer_subjects(w->c), want, 4)) {
        if (now_s() > deadline)
            fail("update not applied within %.0f s: %s", STEP_DEADLINE_S, parti_consumer_last_message(w->c));
        parti_consumer_poll(w->c, 0);
    }
    return now_s() - t0;
}

static double raw_update_once(bench *b, int to_b) {
    double t0 = now_s();
    raw_upsert(b, "bench", "raw-upd", to_b ? subjects_b : subjects_a, 4);
    return now_s() - t0;
}

static void bench_update(bench *b) {
    static double pv[UPDATE_ITERATIONS], bv[UPDATE_ITERATIONS];
    parti_consumer_info ci;
    worker w;
    int i, p0;
    worker_create(b, &w, "bench", "bench.{0}", 100);
    worker_update(&w, "w-upd", set_a, 4);
    worker_wait_applied(&w);
    raw_upsert(b, "bench", "raw-upd", subjects_a, 4);
    parti_consumer_poll(w.c, 50); /* a pull is pending from here on */
    for (i = 0; i < UPDATE_ITERATIONS; i++) {
        int to_b = !(i % 2);
        if (i % 4 < 2) {
            pv[i] = parti_update_once(&w, to_b);
            bv[i] = raw_update_once(b, to_b);
        } else {
            bv[i] = raw_update_once(b, to_b);
            pv[i] = parti_update_once(&w, to_b);
        }
        parti_consumer_poll(w.c, 1); /* the worker keeps pulling between updates */
    }
    /* the server has the last set: the worker did not only think so */
    if (b->t.vt->consumer_info(b->t.self, "bench", parti_consumer_durable(w.c), &ci, 5000) != PARTI_ERR_OK)
        fail("consumer info of %s failed", parti_consumer_durable(w.c));
    p0 = ci.filter_count == 4 && strcmp(ci.filter_subjects[0], (UPDATE_ITERATIONS - 1) % 2 ? "bench.0" : "bench.1") == 0;
    parti_consumer_info_free(&ci);
    if (!p0) fail("the server's filter of %s is not the last update", parti_consumer_durable(w.c));
    raw_delete(b, "bench", parti_consumer_durable(w.c));
    raw_delete(b, "bench", "raw-upd");
    parti_consumer_destroy(w.c);
    qsort(pv, UPDATE_ITERATIONS, sizeof(double), cmp_double);
    qsort(bv, UPDATE_ITERATIONS, sizeof(double), cmp_double);
    printf("update (4 subjects, alternating sets, %d times): parti p50 %.3f ms p95 %.3f ms | raw create-update "
           "p50 %.3f ms p95 %.3f ms | ratio p50 %.2fx p95 %.2fx\n",
           UPDATE_ITERATIONS, percentile(pv, UPDATE_ITERATIONS, 0.5) * 1e3, percentile(pv, UPDATE_ITERATIONS, 0.95) * 1e3,
           percentile(bv, UPDATE_ITERATIONS, 0.5) * 1e3, percentile(bv, UPDATE_ITERATIONS, 0.95) * 1e3,
           percentile(pv, UPDATE_ITERATIONS, 0.5) / percentile(bv, UPDATE_ITERATIONS, 0.5),
           percentile(pv, UPDATE_ITERATIONS, 0.95) / percentile(bv, UPDATE_ITERATIONS, 0.95));
    fflush(stdout);
}

/* ---- 3. recreation after an external delete ---------------------------------- */

static void bench_recreate(bench *b) {
    static const int all[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    static const char *const rec_subjects[8] = {"rec.0", "rec.1", "rec.2", "rec.3",
                                                "rec.4", "rec.5", "rec.6", "rec.7"};
    double delivered[RECREATE_ITERATIONS], recreated[RECREATE_ITERATIONS], created[RECREATE_ITERATIONS];
    double deleted[RECREATE_ITERATIONS], published[RECREATE_ITERATIONS];
    worker w;
    char durable[PARTI_MAX_NAME_LEN + 1];
    long handled;
    int i;
    make_stream(b, "rec", "rec.>");
    worker_create(b, &w, "rec", "rec.{0}", 100);
    worker_update(&w, "w-rec", all, 8);
    worker_wait_applied(&w);
    snprintf(durable, sizeof durable, "%s", parti_consumer_durable(w.c));
    for (i = 0; i < RECREATE_ITERATIONS; i++) {
        uint64_t before;
        jsErrCode jerr = 0;
        double t0, t1, deadline;
        char subject[16];
        /* settle: a pull is pending when the delete comes */
        parti_consumer_poll(w.c, 50);
        parti_consumer_poll(w.c, 50);
        before = worker_counter(&w, 1);
        snprintf(w.marker, sizeof w.marker, "marker-%d", i);
        w.marker_at = 0;
        w.recreated_at = 0;
        snprintf(subject, sizeof subject, "rec.%d", i % 8);
        t0 = now_s();
        raw_delete(b, "rec", durable);
        deleted[i] = now_s() - t0;
        if (js_Publish(NULL, b->js, subject, w.marker, (int)strlen(w.marker), NULL, &jerr) != NATS_OK)
            fail("publishing the marker failed (%d)", (int)jerr);
        published[i] = now_s() - t0; /* the worker polls from here: this thread did the delete and publish */
        deadline = t0 + STEP_DEADLINE_S;
        while (worker_counter(&w, 1) == before || !w.marker_at) {
            if (now_s() > deadline)
                fail("recreation %d: not recreated and delivering within %.0f s (recreations %llu -> %llu, "
                     "marker %s; last: %s)",
                     i, STEP_DEADLINE_S, (unsigned long long)before, (unsigned long long)worker_counter(&w, 1),
                     w.marker_at ? "seen" : "not seen", parti_consumer_last_message(w.c));
            parti_consumer_poll(w.c, 5);
        }
        delivered[i] = w.marker_at - t0;
        recreated[i] = (w.recreated_at ? w.recreated_at : w.marker_at) - t0;
        /* baseline: creating the same consumer with raw nats.c */
        t1 = now_s();
        raw_upsert(b, "rec", "raw-rec", rec_subjects, 8);
        created[i] = now_s() - t1;
        raw_delete(b, "rec", "raw-rec");
    }
    handled = w.handled;
    raw_delete(b, "rec", durable);
    parti_consumer_destroy(w.c);
    qsort(delivered, RECREATE_ITERATIONS, sizeof(double), cmp_double);
    qsort(recreated, RECREATE_ITERATIONS, sizeof(double), cmp_double);
    qsort(created, RECREATE_ITERATIONS, sizeof(double), cmp_double);
    qsort(deleted, RECREATE_ITERATIONS, sizeof(double), cmp_double);
    qsort(published, RECREATE_ITERATIONS, sizeof(double), cmp_double);
    printf("recreate (delete with a pull pending, %d times): recreated p50 %.2f ms p95 %.2f ms | "
           "message after the delete handled p50 %.2f ms p95 %.2f ms max %.2f ms (target p95 < 1000 ms); "
           "%ld messages handled for %d published (replays from the last known ack floor)\n",
           RECREATE_ITERATIONS, percentile(recreated, RECREATE_ITERATIONS, 0.5) * 1e3,
           percentile(recreated, RECREATE_ITERATIONS, 0.95) * 1e3, percentile(delivered, RECREATE_ITERATIONS, 0.5) * 1e3,
           percentile(delivered, RECREATE_ITERATIONS, 0.95) * 1e3, delivered[RECREATE_ITERATIONS - 1] * 1e3, handled,
           RECREATE_ITERATIONS);
    printf("recreate baseline: raw consumer create p50 %.2f ms p95 %.2f ms | ratio recreated/create p50 %.1fx, "
           "handled/create p50 %.1fx p95 %.1fx (times count from the delete request; its round trip p50 %.2f ms, "
           "with the marker publish p50 %.2f ms, passes before the worker polls again)\n",
           percentile(created, RECREATE_ITERATIONS, 0.5) * 1e3, percentile(created, RECREATE_ITERATIONS, 0.95) * 1e3,
           percentile(recreated, RECREATE_ITERATIONS, 0.5) / percentile(created, RECREATE_ITERATIONS, 0.5),
           percentile(delivered, RECREATE_ITERATIONS, 0.5) / percentile(created, RECREATE_ITERATIONS, 0.5),
           percentile(delivered, RECREATE_ITERATIONS, 0.95) / percentile(created, RECREATE_ITERATIONS, 0.95),
           percentile(deleted, RECREATE_ITERATIONS, 0.5) * 1e3, percentile(published, RECREATE_ITERATIONS, 0.5) * 1e3);
    fflush(stdout);
}

int main(void) {
    bench b;
    char err[512];
    const char *storage = getenv("PARTI_BENCH_STORAGE"), *msgs = getenv("PARTI_BENCH_MSGS");
    const char *rounds = getenv("PARTI_BENCH_ROUNDS"), *only = getenv("PARTI_BENCH_ONLY");
    const char *side = getenv("PARTI_BENCH_SIDE"), *size = getenv("PARTI_BENCH_SIZE");
    const char *batch = getenv("PARTI_BENCH_BATCH");
    int published = msgs ? atoi(msgs) : 200000;
    parti_err e;
    double t_start = now_s();
    memset(&b, 0, sizeof b);
    if (storage && strcmp(storage, "memory") != 0 && strcmp(storage, "file") != 0)
        fail("PARTI_BENCH_STORAGE must be memory or file, got \"%s\"", storage);
    if (published < 8 || published > 10000000) fail("PARTI_BENCH_MSGS must be 8..10000000, got \"%s\"", msgs);
    published -= published % 8;
    if (rounds) pull_rounds = atoi(rounds);
    if (pull_rounds < 1 || pull_rounds > PULL_ROUNDS_MAX)
        fail("PARTI_BENCH_ROUNDS must be 1..%d, got \"%s\"", PULL_ROUNDS_MAX, rounds);
    if (only && strcmp(only, "pull") != 0 && strcmp(only, "group") != 0)
        fail("PARTI_BENCH_ONLY must be pull or group, got \"%s\"", only);
    if (side && strcmp(side, "parti") == 0) pull_sides = SIDE_PARTI;
    else if (side && strcmp(side, "raw") == 0) pull_sides = SIDE_RAW;
    else if (side) fail("PARTI_BENCH_SIDE must be parti or raw, got \"%s\"", side);
    if (size) pull_size = atoi(size);
    if (size && pull_size != 32 && pull_size != 1024) fail("PARTI_BENCH_SIZE must be 32 or 1024, got \"%s\"", size);
    if (batch) pull_batch = atoi(batch);
    if (batch && pull_batch != 100 && pull_batch != 1000)
        fail("PARTI_BENCH_BATCH must be 100 or 1000, got \"%s\"", batch);
    b.memory = !storage || strcmp(storage, "memory") == 0;
    fail_ctx = &b;
    if (nats_server_start(&b.srv, NULL, err, sizeof err) != 0) fail("cannot start nats-server: %s", err);
    if ((e = parti_nats_connect(&b.t, nats_server_url(b.srv), NULL, err, sizeof err)) != PARTI_ERR_OK)
        fail("parti connect: %s", err);
    if (natsConnection_ConnectTo(&b.nc, nats_server_url(b.srv)) != NATS_OK) fail("raw connect failed");
    if (natsConnection_JetStream(&b.js, b.nc, NULL) != NATS_OK) fail("raw jetstream failed");
    printf("parti %s worker consumer benchmarks on nats-server %s, nats.c %s (%s storage, loopback; "
           "PARTI_BENCH_STORAGE=memory|file, PARTI_BENCH_MSGS=%d)\n",
           PARTI_VERSION_STRING, parti_nats_server_version(&b.t), nats_GetVersion(), b.memory ? "memory" : "file",
           published);
    fflush(stdout);

    make_stream(&b, "bench", "bench.>");
    if (!only || strcmp(only, "pull") == 0) bench_pull(&b, published);
    if (!only || strcmp(only, "group") == 0) bench_group(&b, published);
    if (!only) {
        bench_update(&b);
        bench_recreate(&b);
    }

    jsCtx_Destroy(b.js);
    natsConnection_Destroy(b.nc);
    parti_nats_close(&b.t);
    if (nats_server_stop(b.srv, err, sizeof err) != 0) fprintf(stderr, "bench_consumer: stopping nats-server: %s\n", err);
    b.srv = NULL;
    nats_Close();
    printf("total %.1f s\n", now_s() - t_start);
    return 0;
}

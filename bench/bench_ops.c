/* Operability costs, on a local nats-server started for the run (loopback,
 * random port, temp dir, stopped at the end):
 *   logging   pull throughput of a group worker with logging at INFO (the
 *             console sink into /dev/null) vs logging disabled, same run,
 *             alternating rounds; metrics are always on in both (they are
 *             plain counters, there is no switch), so the ratio is the cost
 *             of the log path; target < 1% difference
 *   idle      CPU time (user + system, all threads, nats.c's included) of
 *             one idle group worker polled in a loop for 10 s, as a share
 *             of one core; target < 1%
 *   outage    the same while the server is down for 10 s (nats.c
 *             reconnecting, parti degraded): no busy loop
 * Environment: PARTI_BENCH_MSGS (default 100000), PARTI_BENCH_IDLE_S (10). */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "../tests/nats_server.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static nats_server *srv;
#define DIE(...) do { fprintf(stderr, "bench_ops: " __VA_ARGS__); fputc('\n', stderr); \
                      if (srv) { nats_server_stop(srv, NULL, 0); } exit(1); } while (0)
static long handled;

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static parti_verdict on_message(void *user, const parti_msg *m, uint32_t *d) {
    (void)user, (void)m, (void)d;
    handled++;
    return PARTI_ACK;
}

static const char *const k[4][1] = {{"0"}, {"1"}, {"2"}, {"3"}};
static const parti_partition parts[4] = {{k[0], 1, 1}, {k[1], 1, 1}, {k[2], 1, 1}, {k[3], 1, 1}};

/* A group of one on stream `stream`, stable, with or without logging. */
static parti *worker(parti_transport *t, const char *stream, const char *tmpl, FILE *log) {
    parti_config cfg;
    parti_options o;
    parti *p;
    char msg[256];
    double t0 = wall_s();
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = stream;
    cfg.subject_template = tmpl;
    cfg.partitions = parts;
    cfg.partition_count = 4;
    cfg.fetch_batch = 500;
    cfg.max_ack_pending = 10000;
    memset(&o, 0, sizeof o);
    o.on_message = on_message;
    o.memory_storage = 0; /* file: the outage section restarts the server */
    o.cold_start_ms = 200;
    o.heartbeat_ms = 250;
    o.member_ttl_ms = 1500;
    o.max_stale_ms = 60000; /* capped at the lease (TTL - heartbeat / 2): degraded, it keeps polling and stops handling */
    if (log) {
        o.log = parti_log_to_console;
        o.log_user = log;
        o.log_level = PARTI_LOG_INFO;
    }
    if (parti_create(&p, t, &cfg, &o, msg, sizeof msg) != PARTI_ERR_OK) DIE("create: %s", msg);
    while (parti_state_of(p) != PARTI_STATE_STABLE) {
        if (wall_s() - t0 > 20) DIE("worker never stable");
        parti_poll(p, 50);
    }
    return p;
}

static void stream(parti_transport *t, const char *name, const char *subj) {
    parti_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    sc.subjects = &subj;
    sc.subject_count = 1;
    sc.memory_storage = 0;
    if (t->vt->stream_create(t->self, &sc, 5000) != PARTI_ERR_OK) DIE("stream %s", name);
}

static void publish(natsConnection *nc, const char *prefix, int n) {
    jsCtx *js;
    jsPubOptions po;
    char subj[64];
    int i;
    if (natsConnection_JetStream(&js, nc, NULL) != NATS_OK) DIE("jetstream");
    for (i = 0; i < n; i++) {
        snprintf(subj, sizeof subj, "%s.%d", prefix, i % 4);
        if (js_PublishAsync(js, subj, "0123456789abcdef0123456789abcdef", 32, NULL) != NATS_OK) DIE("publish");
        if (i % 4000 == 3999) {
            jsPubOptions_Init(&po);
            po.MaxWait = 10000;
            if (js_PublishAsyncComplete(js, &po) != NATS_OK) DIE("publish complete");
        }
    }
    jsPubOptions_Init(&po);
    po.MaxWait = 10000;
    if (js_PublishAsyncComplete(js, &po) != NATS_OK) DIE("publish complete");
    jsCtx_Destroy(js);
}

/* Messages per second through a worker until `want` more are handled. */
static double drain(parti *p, long want) {
    long start = handled;
    double t0 = wall_s();
    while (handled - start < want) {
        if (wall_s() - t0 > 120) DIE("drain stalled at %ld of %ld", handled - start, want);
        parti_poll(p, 20);
    }
    return (double)want / (wall_s() - t0);
}

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(void) {
    char err[512];
    parti_transport ta, tb, tc;
    natsConnection *nc = NULL;
    parti *quiet, *loud, *idle;
    FILE *devnull = fopen("/dev/null", "w");
    int msgs = getenv("PARTI_BENCH_MSGS") ? atoi(getenv("PARTI_BENCH_MSGS")) : 100000;
    int idle_s = getenv("PARTI_BENCH_IDLE_S") ? atoi(getenv("PARTI_BENCH_IDLE_S")) : 10;
    double rq[5], rl[5], c0, w0, idle_cpu, out_cpu, out_wall;
    int r, rounds = 5;
    if (!devnull || msgs < 1000 || idle_s < 1) DIE("bad environment");
    if (nats_server_start(&srv, NULL, err, sizeof err) != 0) DIE("%s", err);
    if (parti_nats_connect(&ta, nats_server_url(srv), NULL, err, sizeof err) != PARTI_ERR_OK ||
        parti_nats_connect(&tb, nats_server_url(srv), NULL, err, sizeof err) != PARTI_ERR_OK ||
        parti_nats_connect(&tc, nats_server_url(srv), NULL, err, sizeof err) != PARTI_ERR_OK)
        DIE("connect: %s", err);
    if (natsConnection_ConnectTo(&nc, nats_server_url(srv)) != NATS_OK) DIE("nats.c connect");
    printf("parti %s operability benchmarks on nats-server %s (loopback, file storage)\n", PARTI_VERSION_STRING,
           nats_server_version(srv));
    stream(&ta, "quiet", "quiet.>");
    stream(&ta, "loud", "loud.>");
    quiet = worker(&ta, "quiet", "quiet.{0}", NULL);
    loud = worker(&tb, "loud", "loud.{0}", devnull);
    for (r = 0; r < rounds; r++) { /* alternate, so drift hits both */
        publish(nc, "quiet", msgs / rounds);
        rq[r] = drain(quiet, msgs / rounds);
        publish(nc, "loud", msgs / rounds);
        rl[r] = drain(loud, msgs / rounds);
    }
    qsort(rq, (size_t)rounds, sizeof *rq, cmpd);
    qsort(rl, (size_t)rounds, sizeof *rl, cmpd);
    printf("logging: pull with logging at INFO %.0f msg/s | logging off %.0f msg/s | ratio %.3fx (medians of %d "
           "rounds of %d msgs; metrics on in both; target difference < 1%%)\n",
           rl[rounds / 2], rq[rounds / 2], rl[rounds / 2] / rq[rounds / 2], rounds, msgs / rounds);
    parti_leave(quiet, 2000);
    parti_leave(loud, 2000);
    parti_destroy(quiet);
    parti_destroy(loud);

    /* idle: one worker, nothing to do */
    stream(&ta, "idle", "idle.>");
    idle = worker(&tc, "idle", "idle.{0}", NULL);
    c0 = cpu_s();
    w0 = wall_s();
    while (wall_s() - w0 < idle_s) parti_poll(idle, 100);
    idle_cpu = (cpu_s() - c0) / (wall_s() - w0);
    printf("idle: CPU of the whole process (4 connections' nats.c threads included) over %d s: %.3f%% of one core "
           "(target < 1%%)\n", idle_s, idle_cpu * 100);

    /* outage: the server stopped for idle_s seconds */
    if (nats_server_terminate(srv, err, sizeof err) != 0) DIE("terminate: %s", err);
    c0 = cpu_s();
    w0 = wall_s();
    while (wall_s() - w0 < idle_s) parti_poll(idle, 100);
    out_wall = wall_s() - w0;
    out_cpu = (cpu_s() - c0) / out_wall;
    printf("outage: server down %.1f s, worker %s: CPU %.3f%% of one core (idle baseline %.3f%%: ratio %.2fx)\n",
           out_wall, parti_state_name(parti_state_of(idle)), out_cpu * 100, idle_cpu * 100,
           idle_cpu > 0 ? out_cpu / idle_cpu : 0.0);
    if (nats_server_restart(srv, err, sizeof err) != 0) DIE("restart: %s", err);
    w0 = wall_s();
    while (parti_state_of(idle) != PARTI_STATE_STABLE) {
        if (wall_s() - w0 > 30) {
            parti_health h;
            parti_health_of(idle, &h);
            DIE("not stable again after the restart (%s: %s)", parti_state_name(parti_state_of(idle)),
                h.last_error_message ? h.last_error_message : "");
        }
        parti_poll(idle, 50);
    }
    printf("outage: stable again %.2f s after the restart\n", wall_s() - w0);
    parti_destroy(idle);
    natsConnection_Destroy(nc);
    parti_nats_close(&ta);
    parti_nats_close(&tb);
    parti_nats_close(&tc);
    nats_server_stop(srv, NULL, 0);
    nats_Close();
    fclose(devnull);
    return 0;
}

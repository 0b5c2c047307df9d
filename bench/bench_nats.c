/* Benchmarks of the nats.c binding against raw nats.c, on a local
 * nats-server started for the run (loopback, temp dir, stopped at the end).
 * Each line prints the absolute numbers and the ratio parti / raw measured
 * in the same run:
 *   pull       multi-filter durable consumer (4 of 8 subjects), ack each:
 *              raw = nats.c natsSubscription_Fetch bound to the consumer,
 *              parti = fetch_start + fetch_next; 32 B and 1 KiB, batch 1/100/1000
 *   update     consumer filter update round trip vs a consumer info round trip
 *   kv_cas     parti kv_update vs nats.c kvStore_Update round trip */
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

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static const char *const all_subjects[] = {"bench.0", "bench.1", "bench.2", "bench.3",
                                           "bench.4", "bench.5", "bench.6", "bench.7"};
static const char *const filter_a[] = {"bench.0", "bench.2", "bench.4", "bench.6"};
static const char *const filter_b[] = {"bench.1", "bench.3", "bench.5", "bench.7"};

static parti_transport t;
static natsConnection *nc;
static jsCtx *js;

static void make_consumer(const char *name, const char *const *filters) {
    parti_consumer_config cc;
    parti_err e;
    memset(&cc, 0, sizeof cc);
    cc.stream = "bench";
    cc.durable = name;
    cc.filter_subjects = filters;
    cc.filter_count = 4;
    cc.ack_wait_ms = 30000;
    cc.max_ack_pending = 10000;
    cc.deliver_policy = PARTI_DELIVER_NEW; /* only what this run publishes */
    if ((e = t.vt->consumer_upsert(t.self, &cc, 5000)) != PARTI_ERR_OK)
        DIE("consumer %s: %s (%s)", name, parti_strerror(e), parti_nats_last_error(&t));
}

static void publish_all(int n, int size) {
    char *payload = (char *)calloc(1, (size_t)size);
    jsPubOptions po;
    int i;
    for (i = 0; i < n; i++)
        if (js_PublishAsync(js, all_subjects[i % 8], payload, size, NULL) != NATS_OK) DIE("publish failed");
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    if (js_PublishAsyncComplete(js, &po) != NATS_OK) DIE("publish did not complete");
    free(payload);
}

static double raw_pull(const char *consumer, int batch, int expect) {
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsErrCode jerr = 0;
    int got = 0, guard = 0;
    double t0;
    jsSubOptions_Init(&so);
    so.Stream = "bench";
    so.Consumer = consumer;
    if (js_PullSubscribe(&sub, js, NULL, consumer, NULL, &so, &jerr) != NATS_OK) DIE("raw bind failed (%d)", (int)jerr);
    t0 = now_s();
    while (got < expect && guard++ < 10000000) {
        natsMsgList list = {NULL, 0};
        natsStatus s = natsSubscription_Fetch(&list, sub, batch, 5000, NULL);
        int i;
        if (s != NATS_OK && s != NATS_TIMEOUT) DIE("raw fetch: %s", natsStatus_GetText(s));
        for (i = 0; i < list.Count; i++) natsMsg_Ack(list.Msgs[i], NULL);
        got += list.Count;
        natsMsgList_Destroy(&list);
    }
    t0 = now_s() - t0;
    natsSubscription_Destroy(sub);
    return got / t0;
}

static double parti_pull(const char *consumer, int batch, int expect) {
    parti_fetch_opts fo;
    int got = 0, guard = 0;
    double t0 = now_s();
    fo.batch = batch;
    fo.max_bytes = 0;
    fo.expires_ms = 5000;
    fo.heartbeat_ms = 1000;
    while (got < expect && guard++ < 10000000) {
        parti_msg m;
        parti_err e;
        if ((e = t.vt->fetch_start(t.self, "bench", consumer, &fo, 1000)) != PARTI_ERR_OK) DIE("fetch_start: %s", parti_strerror(e));
        while ((e = t.vt->fetch_next(t.self, "bench", consumer, &m, 5000)) == PARTI_ERR_OK) {
            t.vt->ack(t.self, &m, PARTI_ACK_ACK, 0, 1000);
            t.vt->msg_release(t.self, &m);
            got++;
        }
        if (e != PARTI_ERR_NO_MESSAGES && e != PARTI_ERR_TIMEOUT) DIE("fetch_next: %s", parti_strerror(e));
    }
    return got / (now_s() - t0);
}

#define ROUNDS 5

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report_rtt(const char *name, double *parti_v, double *base_v, int n, const char *base_name) {
    qsort(parti_v, (size_t)n, sizeof *parti_v, cmp_double);
    qsort(base_v, (size_t)n, sizeof *base_v, cmp_double);
    printf("%-8s parti median %.3f ms p99 %.3f ms | %s median %.3f ms p99 %.3f ms | ratio %.2fx\n", name,
           parti_v[n / 2] * 1e3, parti_v[n * 99 / 100] * 1e3, base_name, base_v[n / 2] * 1e3,
           base_v[n * 99 / 100] * 1e3, parti_v[n / 2] / base_v[n / 2]);
}

int main(void) {
    nats_server *srv = NULL;
    char err[512];
    parti_stream_config sc;
    parti_err e;
    static const int sizes[] = {32, 1024}, batches[] = {1, 100, 1000};
    int si, bi, i;
    double *pv, *bv;

    if (nats_server_start(&srv, NULL, err, sizeof err) != 0) DIE("cannot start nats-server: %s", err);
    if ((e = parti_nats_connect(&t, nats_server_url(srv), NULL, err, sizeof err)) != PARTI_ERR_OK) DIE("%s", err);
    if (natsConnection_ConnectTo(&nc, nats_server_url(srv)) != NATS_OK) DIE("raw connect failed");
    if (natsConnection_JetStream(&js, nc, NULL) != NATS_OK) DIE("raw jetstream failed");
    printf("parti %s binding benchmarks on nats-server %s, nats.c %s (%s storage, loopback; "
           "PARTI_BENCH_STORAGE=memory|file)\n",
           PARTI_VERSION_STRING, parti_nats_server_version(&t), nats_GetVersion(),
           getenv("PARTI_BENCH_STORAGE") && strcmp(getenv("PARTI_BENCH_STORAGE"), "memory") == 0 ? "memory" : "file");

    memset(&sc, 0, sizeof sc);
    sc.name = "bench";
    sc.subjects = all_subjects;
    sc.subject_count = 8;
    sc.memory_storage = getenv("PARTI_BENCH_STORAGE") && strcmp(getenv("PARTI_BENCH_STORAGE"), "memory") == 0;
    if ((e = t.vt->stream_create(t.self, &sc, 5000)) != PARTI_ERR_OK) DIE("stream: %s", parti_strerror(e));

    for (si = 0; si < 2; si++) {
        for (bi = 0; bi < 3; bi++) {
            int n = batches[bi] == 1 ? 2000 : 20000, expect = n / 2; /* half the subjects match */
            double raw_rates[ROUNDS], parti_rates[ROUNDS];
            int r;
            for (r = 0; r < ROUNDS; r++) {
                char raw_name[32], parti_name[32];
                snprintf(raw_name, sizeof raw_name, "raw_%d_%d_%d", sizes[si], batches[bi], r);
                snprintf(parti_name, sizeof parti_name, "parti_%d_%d_%d", sizes[si], batches[bi], r);
                make_consumer(raw_name, filter_a);
                make_consumer(parti_name, filter_a);
                publish_all(n, sizes[si]);
                /* alternate the order so neither side always runs on a warmer cache */
                if (r % 2) {
                    parti_rates[r] = parti_pull(parti_name, batches[bi], expect);
                    raw_rates[r] = raw_pull(raw_name, batches[bi], expect);
                } else {
                    raw_rates[r] = raw_pull(raw_name, batches[bi], expect);
                    parti_rates[r] = parti_pull(parti_name, batches[bi], expect);
                }
                t.vt->consumer_delete(t.self, "bench", raw_name, 5000);
                t.vt->consumer_delete(t.self, "bench", parti_name, 5000);
            }
            qsort(raw_rates, ROUNDS, sizeof(double), cmp_double);
            qsort(parti_rates, ROUNDS, sizeof(double), cmp_double);
            printf("pull %5d B batch %4d: parti %9.0f msg/s | raw nats.c %9.0f msg/s | ratio %.3fx "
                   "(median of %d rounds of %d msgs)\n",
                   sizes[si], batches[bi], parti_rates[ROUNDS / 2], raw_rates[ROUNDS / 2],
                   parti_rates[ROUNDS / 2] / raw_rates[ROUNDS / 2], ROUNDS, expect);
        }
    }

    /* filter update round trip vs a consumer info round trip */
    pv = (double *)calloc(500, sizeof *pv);
    bv = (double *)calloc(500, sizeof *bv);
    make_consumer("upd", filter_a);
    for (i = 0; i < 500; i++) {
        parti_consumer_info ci;
        double t0 = now_s();
        make_consumer("upd", i % 2 ? filter_a : filter_b);
        pv[i] = now_s() - t0;
        t0 = now_s();
        if (t.vt->consumer_info(t.self, "bench", "upd", &ci, 5000) != PARTI_ERR_OK) DIE("info failed");
        bv[i] = now_s() - t0;
        parti_consumer_info_free(&ci);
    }
    report_rtt("update", pv, bv, 500, "info");

    /* KV compare-and-swap: parti vs nats.c on the same bucket */
    {
        parti_kv_config kc;
        kvStore *kv = NULL;
        uint64_t rev = 0, raw_rev = 0;
        memset(&kc, 0, sizeof kc);
        kc.bucket = "benchkv";
        if (t.vt->kv_open(t.self, &kc, 5000) != PARTI_ERR_OK) DIE("kv_open failed");
        if (js_KeyValue(&kv, js, "benchkv") != NATS_OK) DIE("nats.c kv bind failed");
        t.vt->kv_put(t.self, "benchkv", "p", "0", 1, &rev, 5000);
        kvStore_Put(&raw_rev, kv, "r", "0", 1);
        for (i = 0; i < 500; i++) {
            double t0 = now_s();
            if (t.vt->kv_update(t.self, "benchkv", "p", "x", 1, rev, &rev, 5000) != PARTI_ERR_OK) DIE("parti CAS failed");
            pv[i] = now_s() - t0;
            t0 = now_s();
            if (kvStore_Update(&raw_rev, kv, "r", "x", 1, raw_rev) != NATS_OK) DIE("nats.c CAS failed");
            bv[i] = now_s() - t0;
        }
        report_rtt("kv_cas", pv, bv, 500, "nats.c");
        kvStore_Destroy(kv);
    }
    free(pv);
    free(bv);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    parti_nats_close(&t);
    nats_server_stop(srv, NULL, 0);
    nats_Close();
    return 0;
}

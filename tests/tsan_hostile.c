/* The hostile-server scenario under ThreadSanitizer (Criterion's sandbox does
 * not start under TSan, so this is a plain program): nats.c's threads
 * (reconnects, callbacks, pings) run while the server is stopped, continued,
 * restarted, and transports are closed in the middle of it. Exit status 0
 * when every call returned within its bound; TSan reports make the run fail
 * (make test fails a check whose log holds a sanitizer report). */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); return 1; } while (0)

int main(void) {
    static const char *const subs[] = {"orders.>"}, *const filters[] = {"orders.1"};
    nats_server *srv;
    parti_transport t;
    parti_stream_config sc;
    parti_consumer_config cc;
    parti_kv_config kc;
    parti_kv_watcher *wt;
    parti_kv_entry e;
    parti_fetch_opts fo;
    char err[512], msg[256];
    uint64_t worst = 0;
    int round, i;
    if (nats_server_start(&srv, NULL, err, sizeof err) != 0) FAIL("server: %s", err);
    for (round = 0; round < 3; round++) {
        if (parti_nats_connect(&t, nats_server_url(srv), NULL, msg, sizeof msg) != PARTI_ERR_OK) FAIL("%s", msg);
        memset(&sc, 0, sizeof sc);
        sc.name = "orders", sc.subjects = subs, sc.subject_count = 1;
        t.vt->stream_create(t.self, &sc, 5000);
        memset(&cc, 0, sizeof cc);
        cc.stream = "orders", cc.durable = "w1", cc.filter_subjects = filters, cc.filter_count = 1;
        if (t.vt->consumer_upsert(t.self, &cc, 5000) != PARTI_ERR_OK) FAIL("upsert: %s", parti_nats_last_error(&t));
        memset(&kc, 0, sizeof kc);
        kc.bucket = "members";
        if (t.vt->kv_open(t.self, &kc, 5000) != PARTI_ERR_OK) FAIL("kv_open: %s", parti_nats_last_error(&t));
        if (t.vt->kv_watch(t.self, "members", "", &wt, 5000) != PARTI_ERR_OK) FAIL("kv_watch");
        fo.batch = 10, fo.max_bytes = 0, fo.expires_ms = 1000, fo.heartbeat_ms = 200;
        t.vt->fetch_start(t.self, "orders", "w1", &fo, 1000);
        if (nats_server_suspend(srv, err, sizeof err) != 0) FAIL("suspend: %s", err);
        for (i = 0; i < 10; i++) {
            parti_msg m;
            uint64_t t0 = ms_now(), d;
            t.vt->kv_put(t.self, "members", "k", "v", 1, NULL, 200);
            t.vt->publish(t.self, "orders.1", NULL, 0, "x", 1, NULL, 200);
            if (t.vt->fetch_next(t.self, "orders", "w1", &m, 200) == PARTI_ERR_OK) t.vt->msg_release(t.self, &m);
            if (t.vt->kv_watch_next(t.self, wt, &e) == PARTI_ERR_OK) parti_kv_entry_free(&e);
            d = ms_now() - t0;
            if (d > worst) worst = d;
            if (d > 4 * 200 + 1000 + 500) FAIL("round %d: four calls of 200 ms took %llu ms", round, (unsigned long long)d);
        }
        if (nats_server_resume(srv, err, sizeof err) != 0) FAIL("resume: %s", err);
        if (round == 1 && nats_server_restart(srv, err, sizeof err) != 0) FAIL("restart: %s", err);
        t.vt->kv_watch_stop(t.self, wt);
        parti_nats_close(&t); /* possibly while nats.c is reconnecting */
    }
    nats_server_stop(srv, NULL, 0);
    nats_Close();
    printf("hostile server under TSan: 3 rounds, worst step of four 200 ms calls %llu ms\n", (unsigned long long)worst);
    return 0;
}

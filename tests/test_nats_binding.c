/* The nats.c binding against a real nats-server: connection errors, the
 * server-version check, and the failures a pull must survive (server killed,
 * stopped, restarted, consumer or stream deleted by another connection).
 * Each test starts its own server (loopback, random port, temp dir). */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* syscall(SYS_tgkill) */
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "nats_server.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LEAK_CHECK 1
#endif
#endif
#ifdef LEAK_CHECK
#include <sanitizer/lsan_interface.h>
#endif

static nats_server *srv;
static parti_transport t, other;
static char msg[512];

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void start(void) {
    char err[512];
    cr_assert_eq(nats_server_start(&srv, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(parti_nats_connect(&t, nats_server_url(srv), NULL, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_nats_connect(&other, nats_server_url(srv), NULL, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
}

static void stop(void) {
    parti_nats_close(&t);
    parti_nats_close(&other);
    nats_server_stop(srv, NULL, 0);
    srv = NULL;
    nats_Close();
}

static void make_stream_and_consumer(void) {
    static const char *const subs[] = {"orders.>"};
    static const char *const filters[] = {"orders.1", "orders.2"};
    parti_stream_config sc;
    parti_consumer_config cc;
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    cr_assert_eq(t.vt->stream_create(t.self, &sc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    memset(&cc, 0, sizeof cc);
    cc.stream = "orders";
    cc.durable = "w1";
    cc.filter_subjects = filters;
    cc.filter_count = 2;
    cc.ack_wait_ms = 2000;
    cr_assert_eq(t.vt->consumer_upsert(t.self, &cc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
}

/* A pull that is pending on the server: the request is published
 * asynchronously, so wait until a first fetch_next has waited a while. */
static void pull_is_pending(void) {
    parti_msg m;
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &m, 300), PARTI_ERR_TIMEOUT);
}

static void start_pull(uint32_t expires, uint32_t hb) {
    parti_fetch_opts fo;
    fo.batch = 10;
    fo.max_bytes = 0;
    fo.expires_ms = expires;
    fo.heartbeat_ms = hb;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "w1", &fo, 5000), PARTI_ERR_OK);
}

/* Waits (bounded) for the pull to end with something other than TIMEOUT. */
static parti_err pull_outcome(uint32_t deadline_ms, uint64_t *elapsed) {
    uint64_t t0 = ms_now();
    parti_err e = PARTI_ERR_TIMEOUT;
    while (ms_now() - t0 < deadline_ms) {
        parti_msg m;
        e = t.vt->fetch_next(t.self, "orders", "w1", &m, 100);
        if (e == PARTI_ERR_OK) t.vt->msg_release(t.self, &m);
        else if (e != PARTI_ERR_TIMEOUT) break;
    }
    if (elapsed) *elapsed = ms_now() - t0;
    return e;
}

TestSuite(binding_connect, .timeout = 60);

Test(binding_connect, server_down_is_not_connected_within_the_timeout) {
    parti_nats_options o;
    uint64_t t0 = ms_now();
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = 500;
    /* port 1 on loopback: nothing listens there */
    cr_assert_eq(parti_nats_connect(&t, "nats://127.0.0.1:1", &o, msg, sizeof msg), PARTI_ERR_NOT_CONNECTED);
    cr_assert(strstr(msg, "127.0.0.1:1"), "%s", msg);
    cr_assert_lt(ms_now() - t0, 5000);
    cr_assert_null(t.vt);
    nats_Close();
}

Test(binding_connect, bad_arguments) {
    cr_assert_eq(parti_nats_connect(NULL, "nats://127.0.0.1:4222", NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_nats_connect(&t, NULL, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_nats_connect(&t, "", NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_neq(parti_nats_connect(&t, "nats://127.0.0.1:notaport", NULL, msg, sizeof msg), PARTI_ERR_OK);
    parti_nats_close(NULL);
    parti_nats_close(&t);
    cr_assert_str_eq(parti_nats_server_version(&t), "");
    nats_Close();
}

Test(binding_connect, an_old_server_is_refused_clearly) {
    nats_server_options o;
    char err[512];
    static const char *old = ".deps/nats-server-old/usr/sbin/nats-server";
    FILE *f = fopen(old, "rb");
    cr_assert_not_null(f, "no old nats-server at %s: scripts/setup installs Debian bookworm 2.9.x there", old);
    fclose(f);
    memset(&o, 0, sizeof o);
    o.binary = old;
    cr_assert_eq(nats_server_start(&srv, &o, err, sizeof err), 0, "%s", err);
    cr_assert_eq(parti_nats_connect(&t, nats_server_url(srv), NULL, msg, sizeof msg), PARTI_ERR_SERVER_TOO_OLD);
    cr_assert(strstr(msg, "2.9") && strstr(msg, ">= 2.10"), "%s", msg);
    nats_server_stop(srv, NULL, 0);
    nats_Close();
}

TestSuite(binding_faults, .init = start, .fini = stop, .timeout = 120);

Test(binding_faults, reports_the_server_version) {
    cr_assert_str_eq(parti_nats_server_version(&t), nats_server_version(srv));
    cr_assert_geq(parti_version_number(parti_nats_server_version(&t)), 2010000);
}

Test(binding_faults, consumer_deleted_by_another_connection_mid_fetch) {
    uint64_t took;
    make_stream_and_consumer();
    start_pull(10000, 1000);
    pull_is_pending();
    cr_assert_eq(other.vt->consumer_delete(other.self, "orders", "w1", 5000), PARTI_ERR_OK);
    cr_assert_eq(pull_outcome(5000, &took), PARTI_ERR_CONSUMER_DELETED);
    cr_assert_lt(took, 2000, "took %llu ms", (unsigned long long)took);
    /* a new pull on the missing consumer reaches nobody */
    start_pull(2000, 500);
    cr_assert_eq(pull_outcome(5000, NULL), PARTI_ERR_NO_RESPONDERS);
}

Test(binding_faults, stream_deleted_mid_fetch) {
    parti_pub_ack pa;
    parti_consumer_info ci;
    make_stream_and_consumer();
    start_pull(10000, 1000);
    pull_is_pending();
    cr_assert_eq(other.vt->stream_delete(other.self, "orders", 5000), PARTI_ERR_OK);
    cr_assert_eq(pull_outcome(5000, NULL), PARTI_ERR_CONSUMER_DELETED);
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "x", 1, &pa, 2000), PARTI_ERR_NO_RESPONDERS);
    cr_assert_eq(t.vt->consumer_info(t.self, "orders", "w1", &ci, 2000), PARTI_ERR_STREAM_NOT_FOUND);
}

Test(binding_faults, server_killed_mid_fetch_is_a_missed_heartbeat) {
    uint64_t took;
    parti_err e;
    make_stream_and_consumer();
    start_pull(30000, 500);
    cr_assert_eq(nats_server_kill(srv, NULL, 0), 0);
    e = pull_outcome(10000, &took);
    cr_assert(e == PARTI_ERR_MISSED_HEARTBEAT || e == PARTI_ERR_NOT_CONNECTED, "%s", parti_error_name(e));
    cr_assert_lt(took, 5000, "took %llu ms", (unsigned long long)took);
}

Test(binding_faults, hung_server_is_a_missed_heartbeat_after_two_intervals) {
    uint64_t took;
    make_stream_and_consumer();
    start_pull(30000, 500);
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
    cr_assert_eq(pull_outcome(10000, &took), PARTI_ERR_MISSED_HEARTBEAT);
    cr_assert_geq(took, 900, "took %llu ms", (unsigned long long)took);
    cr_assert_lt(took, 3000, "took %llu ms", (unsigned long long)took);
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
}

Test(binding_faults, server_stopped_mid_fetch_ends_the_pull) {
    parti_err e;
    make_stream_and_consumer();
    start_pull(30000, 1000);
    pull_is_pending();
    cr_assert_eq(nats_server_terminate(srv, NULL, 0), 0);
    e = pull_outcome(10000, NULL);
    /* "409 Server Shutdown" when the server gets to tell; otherwise the
     * connection drops first (or JetStream's responders go before the pull's
     * status does): every one of these ends the pull and is transient */
    cr_assert(e == PARTI_ERR_SERVER_SHUTDOWN || e == PARTI_ERR_NOT_CONNECTED || e == PARTI_ERR_MISSED_HEARTBEAT ||
                  e == PARTI_ERR_NO_RESPONDERS,
              "%s", parti_error_name(e));
    cr_assert_eq(parti_error_category(e), PARTI_CAT_TRANSIENT);
}

/* Polls an operation until it stops failing with a connection error. */
static int reconnected(void) {
    uint64_t t0 = ms_now();
    while (ms_now() - t0 < 15000) {
        parti_stream_info si;
        parti_err e = t.vt->stream_info(t.self, "orders", &si, 1000);
        if (e == PARTI_ERR_OK) {
            parti_stream_info_free(&si);
            return 1;
        }
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    }
    return 0;
}

Test(binding_faults, after_a_restart_pulls_resume_and_state_is_kept) {
    parti_pub_ack pa;
    parti_msg m;
    parti_consumer_info ci;
    parti_err e = PARTI_ERR_TIMEOUT;
    uint64_t t0;
    make_stream_and_consumer();
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "before", 6, &pa, 2000), PARTI_ERR_OK);
    start_pull(30000, 1000);
    cr_assert_eq(nats_server_restart(srv, NULL, 0), 0);
    cr_assert(reconnected(), "no reconnect within 15 s: %s", parti_nats_last_error(&t));
    cr_assert_eq(t.vt->consumer_info(t.self, "orders", "w1", &ci, 5000), PARTI_ERR_OK);
    cr_assert_eq(ci.filter_count, 2);
    parti_consumer_info_free(&ci);
    cr_assert_eq(t.vt->publish(t.self, "orders.2", NULL, 0, "after", 5, &pa, 2000), PARTI_ERR_OK);
    /* the pending pull was lost with the old connection: pull again until both arrive */
    t0 = ms_now();
    {
        int got_before = 0, got_after = 0;
        while (ms_now() - t0 < 15000 && !(got_before && got_after)) {
            e = t.vt->fetch_next(t.self, "orders", "w1", &m, 200);
            if (e == PARTI_ERR_OK) {
                got_before |= m.len == 6 && memcmp(m.data, "before", 6) == 0;
                got_after |= m.len == 5 && memcmp(m.data, "after", 5) == 0;
                t.vt->ack(t.self, &m, PARTI_ACK_ACK, 0, 1000);
                t.vt->msg_release(t.self, &m);
            } else if (e != PARTI_ERR_TIMEOUT) {
                start_pull(2000, 500);
            }
        }
        cr_assert(got_before && got_after, "before=%d after=%d last=%s", got_before, got_after, parti_error_name(e));
    }
}

Test(binding_faults, kv_watcher_keeps_working_across_a_restart) {
    parti_kv_config kc;
    parti_kv_watcher *wt;
    parti_kv_entry ent;
    uint64_t rev, t0;
    int seen_after = 0;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "members";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    cr_assert_eq(t.vt->kv_watch(t.self, "members", "", &wt, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    cr_assert_eq(nats_server_restart(srv, NULL, 0), 0);
    t0 = ms_now();
    while (ms_now() - t0 < 15000 && other.vt->kv_put(other.self, "members", "w-1", "x", 1, &rev, 1000) != PARTI_ERR_OK)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    t0 = ms_now();
    while (ms_now() - t0 < 15000 && !seen_after) {
        parti_err e = t.vt->kv_watch_next(t.self, wt, &ent);
        if (e == PARTI_ERR_OK) {
            seen_after = strcmp(ent.key, "w-1") == 0 && ent.revision == rev;
            parti_kv_entry_free(&ent);
        } else {
            nanosleep(&(struct timespec){0, 20000000}, NULL);
        }
    }
    t.vt->kv_watch_stop(t.self, wt);
    cr_assert(seen_after, "the watcher went silent after the restart: %s", parti_nats_last_error(&t));
}

/* A user who may connect but not use the JetStream API. */
static const char *const restricted_config =
    "accounts {\n"
    "  APP {\n"
    "    jetstream: enabled\n"
    "    users: [\n"
    "      {user: full, password: full}\n"
    "      {user: limited, password: limited, permissions: {publish: {deny: [\"$JS.API.>\", \"orders.>\"]}}}\n"
    "    ]\n"
    "  }\n"
    "}\n"
    "no_auth_user: full\n";

Test(binding_connect, permission_errors_are_typed_and_bounded) {
    nats_server_options o;
    parti_stream_info si;
    parti_pub_ack pa;
    char err[512], url[128];
    uint64_t t0;
    parti_err e;
    memset(&o, 0, sizeof o);
    o.config = restricted_config;
    cr_assert_eq(nats_server_start(&srv, &o, err, sizeof err), 0, "%s", err);
    snprintf(url, sizeof url, "nats://limited:limited@127.0.0.1:%d", nats_server_port(srv));
    cr_assert_eq(parti_nats_connect(&t, url, NULL, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    t0 = ms_now();
    e = t.vt->stream_info(t.self, "orders", &si, 2000);
    cr_assert_eq(e, PARTI_ERR_PERMISSION_DENIED, "%s: %s", parti_error_name(e), parti_nats_last_error(&t));
    cr_assert(strstr(parti_nats_last_error(&t), "Permissions Violation"), "%s", parti_nats_last_error(&t));
    cr_assert_lt(ms_now() - t0, 3000);
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_PERMISSION_DENIED);
    cr_assert_eq(parti_error_category(PARTI_ERR_PERMISSION_DENIED), PARTI_CAT_FATAL);
    /* a wrong password is refused at connect */
    snprintf(url, sizeof url, "nats://limited:wrong@127.0.0.1:%d", nats_server_port(srv));
    cr_assert_eq(parti_nats_connect(&other, url, NULL, msg, sizeof msg), PARTI_ERR_PERMISSION_DENIED, "%s", msg);
    parti_nats_close(&t);
    nats_server_stop(srv, NULL, 0);
    srv = NULL;
    nats_Close();
}

/* Closing a transport while nats.c is reconnecting it, or just after it did,
 * must not touch freed memory (ASan): no callback of nats.c holds the
 * transport object. */
Test(binding_faults, closing_during_and_right_after_reconnects_is_safe) {
    int i;
    for (i = 0; i < 4; i++) {
        parti_transport c;
        uint64_t t0;
        cr_assert_eq(parti_nats_connect(&c, nats_server_url(srv), NULL, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
        cr_assert_eq(nats_server_restart(srv, NULL, 0), 0);
        if (i % 2) { /* close while it may still be reconnecting */
            parti_nats_close(&c);
            continue;
        }
        t0 = ms_now();
        while (!c.vt->connected(c.self) && ms_now() - t0 < 15000) nanosleep(&(struct timespec){0, 20000000}, NULL);
        cr_assert(c.vt->connected(c.self), "no reconnect within 15 s");
        parti_nats_close(&c);
    }
}

/* A hung server (SIGSTOP) stops reading: once the socket buffers are full a
 * write would block for as long as TCP takes. With the write deadline every
 * publish returns within its timeout plus the deadline. */
Test(binding_faults, publishing_to_a_hung_server_is_bounded) {
    static char big[64 * 1024];
    parti_pub_ack pa;
    uint64_t worst = 0, t0 = 0;
    int i;
    make_stream_and_consumer();
    memset(big, 'x', sizeof big);
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
    for (i = 0; i < 200; i++) { /* 12.5 MiB: far more than the socket buffers hold */
        uint64_t t1 = ms_now(), d;
        parti_err e = t.vt->publish(t.self, "orders.1", NULL, 0, big, sizeof big, &pa, 200);
        d = ms_now() - t1;
        if (d > worst) worst = d;
        cr_assert_neq(e, PARTI_ERR_OK, "a publish to a stopped server succeeded");
        if (!t0) t0 = t1;
        if (ms_now() - t0 > 20000) break;
    }
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
    printf("publish to a hung server: %d calls, worst %llu ms (timeout 200 + write deadline 1000)\n", i,
           (unsigned long long)worst);
    cr_assert_leq(worst, 200 + 1000 + 500, "a publish took %llu ms", (unsigned long long)worst);
}

/* Account limits: the call was right, the server is full. Each comes back as
 * PARTI_ERR_LIMIT_REACHED (transient: retry later), never as a configuration
 * error that would stop retries (a dead letter that cannot be stored now can
 * be later). */
static const char limits_config[] =
    "accounts: {\n"
    "  L: { jetstream: { max_mem: 64K, max_file: 64K, max_streams: 2, max_consumers: 1 },\n"
    "       users: [ {user: l, password: l} ] }\n"
    "}\n"
    "no_auth_user: l\n";

Test(binding_connect, account_limits_are_limit_reached) {
    static const char *const s1[] = {"a.>"}, *const s2[] = {"b.>"}, *const s3[] = {"c.>"}, *const f[] = {"a.1"};
    static char big[4096];
    nats_server_options o;
    parti_stream_config sc;
    parti_consumer_config cc;
    char err[512];
    parti_err e = PARTI_ERR_OK;
    int i;
    memset(&o, 0, sizeof o);
    o.config = limits_config;
    cr_assert_eq(nats_server_start(&srv, &o, err, sizeof err), 0, "%s", err);
    cr_assert_eq(parti_nats_connect(&t, nats_server_url(srv), NULL, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    memset(&sc, 0, sizeof sc);
    sc.subject_count = 1;
    sc.name = "A", sc.subjects = s1;
    cr_assert_eq(t.vt->stream_create(t.self, &sc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    sc.name = "B", sc.subjects = s2;
    cr_assert_eq(t.vt->stream_create(t.self, &sc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    sc.name = "C", sc.subjects = s3;
    e = t.vt->stream_create(t.self, &sc, 5000);
    cr_assert_eq(e, PARTI_ERR_LIMIT_REACHED, "%s: %s", parti_error_name(e), parti_nats_last_error(&t));
    memset(&cc, 0, sizeof cc);
    cc.stream = "A", cc.durable = "d1", cc.filter_subjects = f, cc.filter_count = 1;
    cr_assert_eq(t.vt->consumer_upsert(t.self, &cc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    cc.durable = "d2";
    e = t.vt->consumer_upsert(t.self, &cc, 5000);
    cr_assert_eq(e, PARTI_ERR_LIMIT_REACHED, "%s: %s", parti_error_name(e), parti_nats_last_error(&t));
    for (i = 0; i < 64 && e != PARTI_ERR_LIMIT_REACHED; i++)
        e = t.vt->publish(t.self, "a.1", NULL, 0, big, sizeof big, NULL, 5000);
    cr_assert_eq(e, PARTI_ERR_LIMIT_REACHED, "64 KiB of storage, 4 KiB messages: %s after %d: %s", parti_error_name(e),
                 i, parti_nats_last_error(&t));
    cr_assert_eq(parti_error_category(e), PARTI_CAT_TRANSIENT);
    parti_nats_close(&t);
    nats_server_stop(srv, NULL, 0);
    srv = NULL;
    nats_Close();
}

/* Each durable pulled gets a subscription on the connection; deleting the
 * consumer drops it (white-box: the test is built with the implementation),
 * so a worker that changes IDs many times does not leave one per old ID. */
Test(binding_faults, deleting_a_consumer_drops_its_pull_subscription) {
    static const char *const filters[] = {"orders.1"};
    parti_consumer_config cc;
    parti_fetch_opts fo;
    char name[16];
    int i;
    make_stream_and_consumer();
    memset(&cc, 0, sizeof cc);
    cc.stream = "orders";
    cc.filter_subjects = filters;
    cc.filter_count = 1;
    fo.batch = 1, fo.max_bytes = 0, fo.expires_ms = 1000, fo.heartbeat_ms = 0;
    for (i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "old-%d", i);
        cc.durable = name;
        cr_assert_eq(t.vt->consumer_upsert(t.self, &cc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
        cr_assert_eq(t.vt->fetch_start(t.self, "orders", name, &fo, 5000), PARTI_ERR_OK);
        cr_assert_eq(t.vt->consumer_delete(t.self, "orders", name, 5000), PARTI_ERR_OK);
    }
    cr_assert_eq(arrlen(((parti__nconn *)t.self)->pulls), 0, "%d pull subscriptions left",
                 (int)arrlen(((parti__nconn *)t.self)->pulls));
}

/* The timing contract against a hung server (SIGSTOP): every call returns
 * within its timeout plus the write deadline (1 s) and scheduling slack;
 * kv_watch_next, non-blocking, returns at once. Prints each call's time. */
Test(binding_faults, every_call_to_a_hung_server_is_bounded) {
    parti_kv_config kc;
    parti_kv_watcher *wt;
    parti_kv_entry e;
    parti_consumer_info ci;
    parti_stream_info si;
    parti_fetch_opts fo;
    parti_msg m;
    char **keys;
    int nkeys, i;
    uint64_t rev = 0, t0, d, worst = 0;
    const uint32_t timeout = 300, bound = 300 + 1000 + 300;
    make_stream_and_consumer();
    memset(&kc, 0, sizeof kc);
    kc.bucket = "members";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 5000), PARTI_ERR_OK);
    for (i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "m.w%d", i);
        cr_assert_eq(t.vt->kv_put(t.self, "members", key, "x", 1, &rev, 5000), PARTI_ERR_OK);
    }
    cr_assert_eq(t.vt->kv_watch(t.self, "members", "", &wt, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "x", 1, NULL, 5000), PARTI_ERR_OK);
    fo.batch = 1, fo.max_bytes = 0, fo.expires_ms = 5000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "w1", &fo, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &m, 5000), PARTI_ERR_OK);
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
#define TIMED(what, call)                                                                                          \
    do {                                                                                                           \
        parti_err r_;                                                                                              \
        t0 = ms_now();                                                                                             \
        r_ = (call);                                                                                               \
        d = ms_now() - t0;                                                                                         \
        printf("hung server: %-16s %5llu ms -> %s\n", what, (unsigned long long)d, parti_error_name(r_));          \
        if (d > worst) worst = d;                                                                                  \
        cr_assert_leq(d, bound, "%s took %llu ms (timeout %u)", what, (unsigned long long)d, timeout);             \
    } while (0)
    TIMED("kv_keys", t.vt->kv_keys(t.self, "members", &keys, &nkeys, timeout));
    TIMED("kv_create", t.vt->kv_create(t.self, "members", "m.new", "x", 1, NULL, timeout));
    TIMED("kv_update", t.vt->kv_update(t.self, "members", "m.w1", "y", 1, rev, NULL, timeout));
    TIMED("kv_put", t.vt->kv_put(t.self, "members", "m.w2", "y", 1, NULL, timeout));
    TIMED("kv_get", t.vt->kv_get(t.self, "members", "m.w3", 0, &e, timeout));
    TIMED("kv_delete", t.vt->kv_delete(t.self, "members", "m.w4", timeout));
    TIMED("kv_watch_next", t.vt->kv_watch_next(t.self, wt, &e));
    TIMED("consumer_info", t.vt->consumer_info(t.self, "orders", "w1", &ci, timeout));
    TIMED("stream_info", t.vt->stream_info(t.self, "orders", &si, timeout));
    TIMED("ack", t.vt->ack(t.self, &m, PARTI_ACK_ACK, 0, timeout));
    TIMED("fetch_start", t.vt->fetch_start(t.self, "orders", "w1", &fo, timeout));
    TIMED("publish", t.vt->publish(t.self, "orders.1", NULL, 0, "x", 1, NULL, timeout));
    {
        parti_kv_update u[2];
        memset(u, 0, sizeof u);
        u[0].key = "m.w5", u[0].value = "z", u[0].len = 1, u[0].expected = rev;
        u[1].key = "leader", u[1].value = "z", u[1].len = 1, u[1].expected = 0;
        TIMED("kv_update_many", (t.vt->kv_update_many(t.self, "members", u, 2, timeout), u[0].err));
        cr_assert(u[0].err != PARTI_ERR_OK && u[1].err != PARTI_ERR_OK);
    }
#undef TIMED
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
    printf("hung server: worst call %llu ms (timeout %u ms, bound %u ms)\n", (unsigned long long)worst, timeout, bound);
    t.vt->msg_release(t.self, &m);
    t.vt->kv_watch_stop(t.self, wt);
}

/* Held acks meet a hung server whose socket is full: the burst that the next
 * call sends first blocks on the write deadline once (the connection then
 * counts as broken and the rest goes to the reconnect buffer), so the call
 * still returns within its timeout plus write_deadline_ms, not that for
 * every ack. Long names make each ack about 200 bytes, so 20,000 of them fill
 * the socket's buffers. */
Test(binding_faults, held_acks_against_a_hung_server_cost_one_write_deadline) {
#define LONG_STREAM "S234567890123456789012345678901234567890123456789012345678901234"
#define LONG_DURABLE "D234567890123456789012345678901234567890123456789012345678901234"
    static const char *const subs[] = {"ev.>"}, *const filters[] = {"ev.1"};
    const int n = 22000;
    const uint32_t timeout = 100, bound = 100 + 1000 + 500;
    parti_stream_config sc;
    parti_consumer_config cc;
    parti_fetch_opts fo;
    parti__nconn *nc = (parti__nconn *)t.self;
    natsConnection *raw = NULL;
    uint64_t t0, d;
    int i, got = 0, buffered = 0;
    memset(&sc, 0, sizeof sc);
    sc.name = LONG_STREAM, sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(t.vt->stream_create(t.self, &sc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    memset(&cc, 0, sizeof cc);
    cc.stream = LONG_STREAM, cc.durable = LONG_DURABLE, cc.filter_subjects = filters, cc.filter_count = 1;
    cc.ack_wait_ms = 60000, cc.max_ack_pending = 1000000;
    cr_assert_eq(t.vt->consumer_upsert(t.self, &cc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    cr_assert_eq(natsConnection_ConnectTo(&raw, nats_server_url(srv)), NATS_OK);
    for (i = 0; i < n; i++) cr_assert_eq(natsConnection_PublishString(raw, "ev.1", "x"), NATS_OK);
    cr_assert_eq(natsConnection_FlushTimeout(raw, 10000), NATS_OK);
    natsConnection_Destroy(raw);
    fo.batch = n + 10, fo.max_bytes = 0, fo.expires_ms = 120000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, LONG_STREAM, LONG_DURABLE, &fo, 5000), PARTI_ERR_OK);
    /* every delivery in this process before the server stops */
    for (t0 = ms_now(); buffered < n && ms_now() - t0 < 20000;) {
        cr_assert_eq(arrlen(nc->pulls), 1);
        natsSubscription_GetPending(nc->pulls[0].sub, &buffered, NULL);
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    cr_assert_eq(buffered, n, "%d of %d deliveries arrived", buffered, n);
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
    for (i = 0; i < n; i++) {
        parti_msg m;
        t0 = ms_now();
        cr_assert_eq(t.vt->fetch_next(t.self, LONG_STREAM, LONG_DURABLE, &m, timeout), PARTI_ERR_OK);
        cr_assert_eq(t.vt->ack(t.self, &m, PARTI_ACK_ACK, 0, timeout), PARTI_ERR_OK);
        t.vt->msg_release(t.self, &m);
        d = ms_now() - t0;
        cr_assert_leq(d, bound, "message %d: fetch_next and ack took %llu ms", i, (unsigned long long)d);
        got++;
    }
    {
        parti_msg m;
        t0 = ms_now();
        t.vt->fetch_next(t.self, LONG_STREAM, LONG_DURABLE, &m, timeout); /* nothing more: the burst goes first */
        d = ms_now() - t0;
    }
    printf("hung server: %d held acks, then fetch_next(%u) took %llu ms (bound %u)\n", got, timeout,
           (unsigned long long)d, bound);
    cr_assert_leq(d, bound, "fetch_next took %llu ms", (unsigned long long)d);
    t0 = ms_now();
    t.vt->sleep_ms(t.self, 10);
    cr_assert_leq(ms_now() - t0, bound);
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
#undef LONG_STREAM
#undef LONG_DURABLE
}

/* Server times (a message's stored time, a KV entry's write time) come on the
 * transport's own clock, as the contract says, so now_ms - timestamp is an age. */
Test(binding_faults, server_times_are_on_the_transport_clock) {
    parti_kv_config kc;
    parti_kv_entry e;
    parti_fetch_opts fo;
    parti_msg m;
    uint64_t now;
    make_stream_and_consumer();
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "x", 1, NULL, 5000), PARTI_ERR_OK);
    fo.batch = 1, fo.max_bytes = 0, fo.expires_ms = 5000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "w1", &fo, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &m, 5000), PARTI_ERR_OK);
    now = t.vt->now_ms(t.self);
    cr_assert(m.timestamp_ms <= now && now - m.timestamp_ms < 5000, "message stored at %llu, now %llu",
              (unsigned long long)m.timestamp_ms, (unsigned long long)now);
    t.vt->msg_release(t.self, &m);
    memset(&kc, 0, sizeof kc);
    kc.bucket = "members";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->kv_put(t.self, "members", "k", "v", 1, NULL, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->kv_get(t.self, "members", "k", 0, &e, 5000), PARTI_ERR_OK);
    now = t.vt->now_ms(t.self);
    cr_assert(e.created_ms > 0 && e.created_ms <= now && now - e.created_ms < 5000, "entry written at %llu, now %llu",
              (unsigned long long)e.created_ms, (unsigned long long)now);
    parti_kv_entry_free(&e);
}

/* A bucket deleted and created again (an operator, or memory storage lost in a
 * restart) starts its revisions at 1 again and takes the watch consumer with
 * it. The watcher notices (missed idle heartbeats), sets itself up again
 * without blocking a call, and sees the new bucket's entries from its start. */
Test(binding_faults, a_watcher_survives_its_bucket_being_recreated) {
    parti_kv_config kc;
    parti_kv_watcher *wt;
    parti_kv_entry e;
    uint64_t t0, worst = 0;
    int seen = 0;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "members";
    kc.memory_storage = 1;
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 5000), PARTI_ERR_OK);
    for (seen = 0; seen < 5; seen++) {
        char key[16];
        snprintf(key, sizeof key, "old%d", seen);
        cr_assert_eq(t.vt->kv_put(t.self, "members", key, "x", 1, NULL, 5000), PARTI_ERR_OK);
    }
    cr_assert_eq(t.vt->kv_watch(t.self, "members", "", &wt, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    cr_assert_eq(other.vt->stream_delete(other.self, "KV_members", 5000), PARTI_ERR_OK);
    cr_assert_eq(other.vt->kv_open(other.self, &kc, 5000), PARTI_ERR_OK);
    cr_assert_eq(other.vt->kv_put(other.self, "members", "new", "y", 1, NULL, 5000), PARTI_ERR_OK);
    seen = 0;
    t0 = ms_now();
    while (!seen && ms_now() - t0 < 20000) {
        uint64_t t1 = ms_now(), d;
        parti_err r = t.vt->kv_watch_next(t.self, wt, &e);
        d = ms_now() - t1;
        if (d > worst) worst = d;
        if (r == PARTI_ERR_OK) {
            seen = strcmp(e.key, "new") == 0 && e.revision == 1;
            parti_kv_entry_free(&e);
        } else {
            nanosleep(&(struct timespec){0, 20000000}, NULL);
        }
    }
    printf("re-created bucket: its first entry seen after %llu ms; slowest kv_watch_next %llu ms\n",
           (unsigned long long)(ms_now() - t0), (unsigned long long)worst);
    cr_assert(seen, "the watcher never saw the re-created bucket's first entry (revision 1)");
    cr_assert_lt(worst, 100, "kv_watch_next blocked for %llu ms", (unsigned long long)worst);
    t.vt->kv_watch_stop(t.self, wt);
}

/* parti_poll(t) against a stopped server returns within t plus one op
 * timeout (plus scheduling slack), whatever the group and its consumer were
 * doing when the server stopped. */
static parti_verdict poll_bound_on_message(void *user, const parti_msg *m, uint32_t *nak) {
    (void)user, (void)m, (void)nak;
    return PARTI_ACK;
}

Test(binding_faults, parti_poll_is_bounded_while_the_server_hangs) {
    static const char *const k[4][1] = {{"1"}, {"2"}, {"3"}, {"4"}};
    parti_partition parts[4];
    parti_config cfg;
    parti_options o;
    parti *p;
    uint64_t t0, worst = 0;
    int i;
    make_stream_and_consumer();
    for (i = 0; i < 4; i++) parts[i].keys = k[i], parts[i].key_count = 1, parts[i].weight = 1;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders";
    cfg.subject_template = "orders.{0}";
    cfg.partitions = parts;
    cfg.partition_count = 4;
    cfg.fetch_expires_ms = 2000;
    cfg.fetch_heartbeat_ms = 500;
    memset(&o, 0, sizeof o);
    o.on_message = poll_bound_on_message;
    o.heartbeat_ms = 250;
    o.member_ttl_ms = 1500;
    o.cold_start_ms = 300;
    o.op_timeout_ms = 500;
    o.consumer.op_timeout_ms = 500;
    o.memory_storage = 1;
    cr_assert_eq(parti_create(&p, &t, &cfg, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    for (t0 = ms_now(); ms_now() - t0 < 15000 && parti_state_of(p) != PARTI_STATE_STABLE;) parti_poll(p, 50);
    cr_assert_eq(parti_state_of(p), PARTI_STATE_STABLE, "the worker did not become stable");
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
    for (i = 0; i < 20; i++) {
        uint64_t t1 = ms_now(), d;
        parti_poll(p, 100);
        d = ms_now() - t1;
        if (d > worst) worst = d;
    }
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
    printf("parti_poll(100) with the server stopped, op timeouts 500 ms: worst %llu ms over 20 polls\n",
           (unsigned long long)worst);
    cr_assert_leq(worst, 100 + 500 + 300, "a poll took %llu ms", (unsigned long long)worst);
    parti_destroy(p);
}

/* ---- a reply that comes after its request timed out ---------------------- */

/* Requests that time out while their replies arrive: each gives up its reply
 * subscription while nats.c's reading thread may be handing it the reply.
 * nats.c before 3.6 uses a subscription it looked up without a reference
 * (nats.c issue 637), so destroying it then crashed the reading thread or
 * wedged it (every later request timing out, closing hanging): 13 of 15 runs
 * of 20,000 such requests failed. Now the subscription is destroyed only
 * after a later flush came back. Every request answers OK or TIMEOUT, the
 * answers are right, and the connection still works afterwards. */
Test(binding_faults, requests_that_time_out_as_their_replies_arrive_leave_the_connection_working) {
    parti_kv_config kc;
    parti_kv_entry e;
    uint64_t rev = 0;
    long ok = 0, timeouts = 0, i;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    cr_assert_eq(t.vt->kv_put(t.self, "b", "k", "v", 1, &rev, 5000), PARTI_ERR_OK);
    /* 1-3 ms: a few percent time out, their replies on the way */
    for (i = 0; i < 20000 && timeouts < 300; i++) {
        parti_err r = t.vt->kv_get(t.self, "b", "k", 0, &e, (uint32_t)(1 + i % 3));
        if (r == PARTI_ERR_OK) {
            cr_assert(e.len == 1 && e.value[0] == 'v', "a reply that is not this request's");
            parti_kv_entry_free(&e);
            ok++;
        } else {
            cr_assert_eq(r, PARTI_ERR_TIMEOUT, "%s: %s", parti_error_name(r), parti_nats_last_error(&t));
            timeouts++;
        }
    }
    cr_log_info("%ld requests: %ld answered, %ld timed out", i, ok, timeouts);
    cr_assert_gt(timeouts, 0, "no request timed out: the case was not exercised");
    cr_assert_eq(t.vt->kv_get(t.self, "b", "k", 0, &e, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    parti_kv_entry_free(&e);
}

/* The reply is not taken for the next request's, and requests go on. */
Test(binding_faults, a_late_reply_is_not_taken_for_the_next_request) {
    parti_stream_info si;
    parti_consumer_info ci;
    parti_err e;
    make_stream_and_consumer();
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
    e = t.vt->stream_info(t.self, "orders", &si, 300);
    cr_assert_eq(e, PARTI_ERR_TIMEOUT, "%s", parti_error_name(e));
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
    /* the stream info reply is on its way as the consumer info is asked */
    e = t.vt->consumer_info(t.self, "orders", "w1", &ci, 5000);
    cr_assert_eq(e, PARTI_ERR_OK, "%s: %s", parti_error_name(e), parti_nats_last_error(&t));
    cr_assert_str_eq(ci.name, "w1");
    cr_assert_eq(ci.filter_count, 2);
    parti_consumer_info_free(&ci);
    e = t.vt->stream_info(t.self, "orders", &si, 5000);
    cr_assert_eq(e, PARTI_ERR_OK, "%s: %s", parti_error_name(e), parti_nats_last_error(&t));
    cr_assert_str_eq(si.name, "orders");
    parti_stream_info_free(&si);
}

/* Under load a thread of nats.c may not run for a while. One that outlives
 * parti_nats_close and frees a message (nats.c hands messages to its garbage
 * collector thread) after the application's nats_Close() stopped that
 * collector leaks the message. LeakSanitizer reported this once, after every
 * test of this file had passed on a loaded machine: natsConnection_Request's
 * delivery thread, freeing replies that came after their request had timed
 * out. The test makes that lag certain: the threads of nats.c that the first
 * requests start are held in a signal handler until after nats_Close(). */
static int hold_pipe[2] = {-1, -1}, held_pipe[2] = {-1, -1};

static void hold_here(int sig) {
    int saved = errno;
    char c = 1;
    (void)sig;
    if (write(held_pipe[1], &c, 1) < 0) { /* (the test then fails waiting for it) */
    }
    while (read(hold_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    errno = saved;
}

/* This process's thread ids (up to cap). */
static int thread_ids(pid_t *ids, int cap) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (!d) return 0;
    while ((e = readdir(d)) != NULL && n < cap)
        if (e->d_name[0] != '.') ids[n++] = (pid_t)atoi(e->d_name);
    closedir(d);
    return n;
}

static int thread_alive(pid_t tid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d", (int)tid);
    return access(path, F_OK) == 0;
}

/* Messages the transport's connection received (white-box). */
static uint64_t messages_in(parti_transport *tr) {
    natsStatistics *st = NULL;
    uint64_t in = 0;
    if (natsStatistics_Create(&st) != NATS_OK) return 0;
    if (natsConnection_GetStats(((parti__nconn *)tr->self)->nc, st) == NATS_OK)
        natsStatistics_GetCounts(st, &in, NULL, NULL, NULL, NULL);
    natsStatistics_Destroy(st);
    return in;
}

Test(binding_connect, a_late_reply_is_freed_even_when_threads_of_nats_c_lag) {
    pid_t before[128], now[128], held[16];
    int nb, nn, nh = 0, i, j;
    struct sigaction sa;
    parti_stream_info si;
    uint64_t in0, t0;
    parti_err e;
    cr_assert_eq(pipe(hold_pipe), 0);
    cr_assert_eq(pipe(held_pipe), 0);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hold_here;
    sigemptyset(&sa.sa_mask);
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    start();
    nb = thread_ids(before, 128);
    make_stream_and_consumer(); /* the first requests on t */
    nn = thread_ids(now, 128);
    for (i = 0; i < nn; i++) {
        for (j = 0; j < nb && before[j] != now[i]; j++) {
        }
        if (j == nb && nh < 16) held[nh++] = now[i];
    }
    for (i = 0; i < nh; i++) cr_assert_eq(syscall(SYS_tgkill, (long)getpid(), (long)held[i], (long)SIGUSR1), 0);
    for (i = 0; i < nh; i++) { /* each is in the handler before the test goes on */
        struct pollfd pfd;
        char c;
        pfd.fd = held_pipe[0];
        pfd.events = POLLIN;
        cr_assert_eq(poll(&pfd, 1, 10000), 1, "thread %d of %d not held", i, nh);
        cr_assert_eq(read(held_pipe[0], &c, 1), 1);
    }
    /* a request that times out; its reply comes after */
    cr_assert_eq(nats_server_suspend(srv, NULL, 0), 0);
    in0 = messages_in(&t);
    e = t.vt->stream_info(t.self, "orders", &si, 300);
    cr_assert_eq(e, PARTI_ERR_TIMEOUT, "%s", parti_error_name(e));
    cr_assert_eq(nats_server_resume(srv, NULL, 0), 0);
    for (t0 = ms_now(); messages_in(&t) == in0 && ms_now() - t0 < 2000;)
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    printf("late reply %s; %d thread(s) of nats.c held\n", messages_in(&t) > in0 ? "received" : "not received", nh);
    stop(); /* closes both transports, stops the server, nats_Close() */
    /* the held threads go on only now */
    for (i = 0; i < nh; i++) cr_assert_eq(write(hold_pipe[1], "x", 1), 1);
    for (i = 0; i < nh; i++)
        for (t0 = ms_now(); thread_alive(held[i]) && ms_now() - t0 < 10000;)
            nanosleep(&(struct timespec){0, 10000000}, NULL);
#ifdef LEAK_CHECK
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaked: see LeakSanitizer's report above");
#endif
}

/* ---- acks in bursts ----------------------------------------------------------
 * Plain acks are held for the next burst (see parti__nats_send_acks); these
 * prove every such ack still reaches the server: before the pull waits, before
 * any other call on the connection, and at close. Each reads the consumer's
 * ack pending count on the other connection, which sends nothing for t. */

/* Publishes n messages of size bytes to orders.1 and pulls them in a batch of
 * n + extra (with extra, the pull stays open); acks and releases each one and
 * returns after the last without waiting again (its ack at least is held).
 * Returns the most released deliveries the binding held at once (see
 * parti__nats_msg_release), checking its bounds after each. */
static int take_and_release_with(int n, size_t size, int extra, size_t header_size) {
    parti__nconn *nc = (parti__nconn *)t.self;
    parti_fetch_opts fo;
    parti_header h;
    char *data = (char *)calloc(1, size), *value = (char *)malloc(header_size + 1);
    int i, got = 0, most = 0;
    uint64_t t0;
    cr_assert(data && value);
    memset(value, 'v', header_size);
    value[header_size] = 0;
    h.name = "Big";
    h.value = value;
    for (i = 0; i < n; i++)
        cr_assert_eq(t.vt->publish(t.self, "orders.1", header_size ? &h : NULL, header_size ? 1 : 0, data, size, NULL,
                                   5000),
                     PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    free(data);
    free(value);
    fo.batch = n + extra, fo.max_bytes = 0, fo.expires_ms = 10000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "w1", &fo, 5000), PARTI_ERR_OK);
    for (t0 = ms_now(); got < n && ms_now() - t0 < 10000;) {
        parti_msg m;
        parti_err e = t.vt->fetch_next(t.self, "orders", "w1", &m, 1000);
        if (e == PARTI_ERR_TIMEOUT) continue;
        cr_assert_eq(e, PARTI_ERR_OK, "%s", parti_error_name(e));
        cr_assert_eq(m.len, size);
        cr_assert_eq(t.vt->ack(t.self, &m, PARTI_ACK_ACK, 0, 1000), PARTI_ERR_OK);
        t.vt->msg_release(t.self, &m);
        got++;
        if (nc->dead_count > most) most = nc->dead_count;
        cr_assert_leq(nc->dead_count, PARTI__NATS_DEAD_BURST);
        cr_assert_lt(nc->dead_bytes, PARTI__NATS_DEAD_BYTES);
    }
    cr_assert_eq(got, n);
    return most;
}

static int take_and_release(int n, size_t size, int extra) { return take_and_release_with(n, size, extra, 0); }

/* n messages, the pull left open: the last ack at least is held. */
static void take_and_ack(int n) { take_and_release(n, 1, 10); }

/* The consumer's ack pending count as the other connection reads it, once
 * it is at most want or after 5 s. */
static uint64_t ack_pending_down_to(uint64_t want) {
    parti_consumer_info ci;
    uint64_t t0 = ms_now(), pending = UINT64_MAX;
    while (ms_now() - t0 < 5000) {
        cr_assert_eq(other.vt->consumer_info(other.self, "orders", "w1", &ci, 5000), PARTI_ERR_OK);
        pending = ci.num_ack_pending;
        parti_consumer_info_free(&ci);
        if (pending <= want) break;
        nanosleep(&(struct timespec){0, 20000000}, NULL);
    }
    return pending;
}

Test(binding_faults, held_acks_are_sent_before_the_pull_waits) {
    parti_msg m;
    make_stream_and_consumer();
    take_and_ack(40);
    /* the pull waits for 10 more: the acks go before that wait */
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &m, 300), PARTI_ERR_TIMEOUT);
    cr_assert_eq(ack_pending_down_to(0), 0);
}

Test(binding_faults, held_acks_are_sent_before_any_other_call) {
    parti_consumer_info ci;
    make_stream_and_consumer();
    take_and_ack(40);
    cr_assert_eq(t.vt->consumer_info(t.self, "orders", "w1", &ci, 5000), PARTI_ERR_OK);
    parti_consumer_info_free(&ci);
    cr_assert_eq(ack_pending_down_to(0), 0);
}

Test(binding_faults, held_acks_are_sent_at_close) {
    make_stream_and_consumer();
    take_and_ack(40);
    parti_nats_close(&t);
    cr_assert_eq(ack_pending_down_to(0), 0);
}

/* ---- released deliveries go back to nats.c together --------------------------
 * (see parti__nats_msg_release: one at a time, each woke nats.c's freeing
 * thread). What is held is bounded by count and by payload bytes, and
 * flush gives it all back; close does too (LeakSanitizer would report it). */

Test(binding_faults, released_deliveries_go_back_to_nats_c_together) {
    parti__nconn *nc = (parti__nconn *)t.self;
    make_stream_and_consumer();
    /* small ones: held until the count bound, the rest until flush */
    cr_assert_eq(take_and_release(PARTI__NATS_DEAD_BURST + 10, 8, 0), PARTI__NATS_DEAD_BURST - 1);
    cr_assert_eq(nc->dead_count, 10);
    t.vt->flush(t.self);
    cr_assert_eq(nc->dead_count, 0);
    cr_assert_eq(nc->dead_bytes, 0);
    /* large ones: the byte bound comes first (4 of 300 KiB pass 1 MiB) */
    cr_assert_eq(take_and_release(6, 300 * 1024, 0), 3);
    cr_assert_eq(nc->dead_count, 2);
    t.vt->flush(t.self);
    cr_assert_eq(nc->dead_count, 0);
    /* headers count too (the server takes at most 64 KiB of them: 18 of 60
     * KiB pass 1 MiB; uncounted, all 40 would be held) */
    cr_assert_eq(take_and_release_with(40, 1, 0, 60 * 1024), 17);
    t.vt->flush(t.self);
    cr_assert_eq(nc->dead_count, 0);
    /* and held ones at close */
    cr_assert_eq(take_and_release(5, 8, 0), 5);
    parti_nats_close(&t);
#ifdef LEAK_CHECK
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "leaked: see LeakSanitizer's report above");
#endif
}

/* A delivery's stored time is put on the transport clock with a clock pair
 * read after each wait (not per message): messages taken in one go keep
 * their distances, and one stored after a wait is not dated to the pair
 * read before it. */
Test(binding_faults, delivery_times_keep_their_distances_and_follow_the_clock) {
    parti_fetch_opts fo;
    parti_msg a, b, c;
    uint64_t t0, now;
    make_stream_and_consumer();
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "a", 1, NULL, 5000), PARTI_ERR_OK);
    /* 300 ms between the two stored times (a gap to measure, not a wait for something) */
    for (t0 = t.vt->now_ms(t.self); t.vt->now_ms(t.self) - t0 < 300;) nanosleep(&(struct timespec){0, 5000000}, NULL);
    cr_assert_eq(t.vt->publish(t.self, "orders.2", NULL, 0, "b", 1, NULL, 5000), PARTI_ERR_OK);
    fo.batch = 3, fo.max_bytes = 0, fo.expires_ms = 10000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "w1", &fo, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &a, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &b, 5000), PARTI_ERR_OK);
    now = t.vt->now_ms(t.self);
    cr_assert(b.timestamp_ms >= a.timestamp_ms + 280 && b.timestamp_ms <= a.timestamp_ms + 400,
              "stored 300 ms apart, dated %llu and %llu", (unsigned long long)a.timestamp_ms,
              (unsigned long long)b.timestamp_ms);
    cr_assert_leq(b.timestamp_ms, now);
    /* the pull waits (nothing more yet); a message stored 300 ms later is dated then */
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &c, 50), PARTI_ERR_TIMEOUT);
    for (t0 = t.vt->now_ms(t.self); t.vt->now_ms(t.self) - t0 < 300;) nanosleep(&(struct timespec){0, 5000000}, NULL);
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "c", 1, NULL, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &c, 5000), PARTI_ERR_OK);
    now = t.vt->now_ms(t.self);
    cr_assert(c.timestamp_ms >= b.timestamp_ms + 300 && c.timestamp_ms <= now, "dated %llu after %llu, now %llu",
              (unsigned long long)c.timestamp_ms, (unsigned long long)b.timestamp_ms, (unsigned long long)now);
    t.vt->msg_release(t.self, &a);
    t.vt->msg_release(t.self, &b);
    t.vt->msg_release(t.self, &c);
}

/* A message stored while the handler of an earlier one ran, and already
 * buffered when fetch_next comes back, is dated when it was stored, not at
 * the clock pair read for the earlier one. */
Test(binding_faults, a_buffered_delivery_is_not_dated_before_it_was_stored) {
    parti_fetch_opts fo;
    parti_msg a, d;
    uint64_t t0, before, now;
    make_stream_and_consumer();
    cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "a", 1, NULL, 5000), PARTI_ERR_OK);
    fo.batch = 5, fo.max_bytes = 0, fo.expires_ms = 10000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "w1", &fo, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &a, 5000), PARTI_ERR_OK);
    /* a's handler runs 800 ms; the other connection stores d 500 ms in */
    for (t0 = t.vt->now_ms(t.self); t.vt->now_ms(t.self) - t0 < 500;) nanosleep(&(struct timespec){0, 5000000}, NULL);
    before = other.vt->now_ms(other.self);
    cr_assert_eq(other.vt->publish(other.self, "orders.2", NULL, 0, "d", 1, NULL, 5000), PARTI_ERR_OK);
    for (t0 = t.vt->now_ms(t.self); t.vt->now_ms(t.self) - t0 < 300;) nanosleep(&(struct timespec){0, 5000000}, NULL);
    cr_assert_eq(t.vt->fetch_next(t.self, "orders", "w1", &d, 5000), PARTI_ERR_OK);
    now = t.vt->now_ms(t.self);
    cr_assert(d.timestamp_ms + 2 >= before && d.timestamp_ms <= now,
              "d stored after %llu, dated %llu, taken at %llu (a dated %llu)", (unsigned long long)before,
              (unsigned long long)d.timestamp_ms, (unsigned long long)now, (unsigned long long)a.timestamp_ms);
    t.vt->msg_release(t.self, &a);
    t.vt->msg_release(t.self, &d);
}

Test(binding_faults, a_burst_never_stalls_a_consumer_whose_ack_pending_limit_is_lower) {
    static const char *const filters[] = {"orders.1"};
    parti_consumer_config cc;
    parti_fetch_opts fo;
    parti_pub_ack pa;
    uint64_t t0;
    int i, got = 0;
    make_stream_and_consumer();
    memset(&cc, 0, sizeof cc);
    cc.stream = "orders";
    cc.durable = "small";
    cc.filter_subjects = filters;
    cc.filter_count = 1;
    cc.max_ack_pending = 20; /* below the burst: the server stops at 20 until acks come */
    cr_assert_eq(t.vt->consumer_upsert(t.self, &cc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
    for (i = 0; i < 300; i++)
        cr_assert_eq(t.vt->publish(t.self, "orders.1", NULL, 0, "m", 1, &pa, 2000), PARTI_ERR_OK);
    fo.batch = 300, fo.max_bytes = 0, fo.expires_ms = 30000, fo.heartbeat_ms = 0;
    cr_assert_eq(t.vt->fetch_start(t.self, "orders", "small", &fo, 5000), PARTI_ERR_OK);
    /* one pull of 300 under a limit of 20: it goes on only as acks arrive */
    for (t0 = ms_now(); got < 300 && ms_now() - t0 < 10000;) {
        parti_msg m;
        parti_err e = t.vt->fetch_next(t.self, "orders", "small", &m, 1000);
        if (e == PARTI_ERR_TIMEOUT) continue;
        cr_assert_eq(e, PARTI_ERR_OK, "%s after %d", parti_error_name(e), got);
        cr_assert_eq(t.vt->ack(t.self, &m, PARTI_ACK_ACK, 0, 1000), PARTI_ERR_OK);
        t.vt->msg_release(t.self, &m);
        got++;
    }
    cr_assert_eq(got, 300, "%d of 300 in 10 s", got);
    printf("300 messages under max_ack_pending 20 in %llu ms\n", (unsigned long long)(ms_now() - t0));
}

/* ---- kv_update_many --------------------------------------------------------- */

static void open_members(void) {
    parti_kv_config kc;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "members";
    cr_assert_eq(t.vt->kv_open(t.self, &kc, 5000), PARTI_ERR_OK, "%s", parti_nats_last_error(&t));
}

static void set_update(parti_kv_update *u, const char *key, const char *value, uint64_t expected) {
    memset(u, 0, sizeof *u);
    u->key = key, u->value = value, u->len = strlen(value), u->expected = expected;
}

static void assert_value(const char *key, const char *value) {
    parti_kv_entry e;
    cr_assert_eq(other.vt->kv_get(other.self, "members", key, 0, &e, 5000), PARTI_ERR_OK, "%s", key);
    cr_assert_str_eq((const char *)e.value, value, "%s", key);
    parti_kv_entry_free(&e);
}

/* Each write is answered as kv_update would answer it alone: a refused one
 * (wrong revision) takes no revision and does not stop the ones after it. */
Test(binding_faults, kv_update_many_answers_each_write_as_kv_update_would) {
    parti_kv_update u[3];
    uint64_t ra = 0, rl = 0;
    open_members();
    cr_assert_eq(t.vt->kv_put(t.self, "members", "m.a", "a1", 2, &ra, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->kv_put(t.self, "members", "leader", "l1", 2, &rl, 5000), PARTI_ERR_OK);
    set_update(&u[0], "m.a", "a2", ra);
    set_update(&u[1], "leader", "l2", rl + 100); /* wrong */
    set_update(&u[2], "m.b", "b1", 0);           /* 0: the key must not exist */
    t.vt->kv_update_many(t.self, "members", u, 3, 5000);
    cr_assert_eq(u[0].err, PARTI_ERR_OK, "%s", parti_error_name(u[0].err));
    cr_assert_eq(u[1].err, PARTI_ERR_WRONG_REVISION, "%s", parti_error_name(u[1].err));
    cr_assert_eq(u[2].err, PARTI_ERR_OK, "%s", parti_error_name(u[2].err));
    cr_assert_eq(u[0].revision, rl + 1);
    cr_assert_eq(u[2].revision, rl + 2, "the refused write took no revision");
    assert_value("m.a", "a2");
    assert_value("leader", "l1");
    assert_value("m.b", "b1");
    /* again from the new revisions: both land */
    set_update(&u[0], "m.a", "a3", u[0].revision);
    set_update(&u[1], "leader", "l3", rl);
    t.vt->kv_update_many(t.self, "members", u, 2, 5000);
    cr_assert_eq(u[0].err, PARTI_ERR_OK);
    cr_assert_eq(u[1].err, PARTI_ERR_OK);
    cr_assert_eq(u[1].revision, u[0].revision + 1);
    assert_value("leader", "l3");
}

/* Bad input writes nothing; a missing bucket and a closed connection are
 * reported for every write. */
Test(binding_faults, kv_update_many_refuses_bad_input_and_reports_a_missing_bucket) {
    parti_kv_update u[2];
    uint64_t ra = 0;
    open_members();
    cr_assert_eq(t.vt->kv_put(t.self, "members", "m.a", "a1", 2, &ra, 5000), PARTI_ERR_OK);
    set_update(&u[0], "m.a", "a2", ra);
    set_update(&u[1], "bad key!", "x", 0);
    t.vt->kv_update_many(t.self, "members", u, 2, 5000);
    cr_assert_eq(u[0].err, PARTI_ERR_INVALID_NAME, "%s", parti_error_name(u[0].err));
    cr_assert_eq(u[1].err, PARTI_ERR_INVALID_NAME);
    assert_value("m.a", "a1");
    set_update(&u[0], "m.a", "a2", ra);
    u[1].key = NULL;
    t.vt->kv_update_many(t.self, "members", u, 2, 5000);
    cr_assert_eq(u[0].err, PARTI_ERR_INVALID_ARGUMENT);
    t.vt->kv_update_many(t.self, "members", u, 0, 5000); /* nothing to do: no crash */
    t.vt->kv_update_many(t.self, "members", NULL, 2, 5000); /* nowhere to answer: no crash */
    {
        static parti_kv_update many[65];
        int i;
        for (i = 0; i < 65; i++) set_update(&many[i], "m.a", "a2", ra);
        t.vt->kv_update_many(t.self, "members", many, 65, 5000); /* over the binding's 64 */
        for (i = 0; i < 65; i++) cr_assert_eq(many[i].err, PARTI_ERR_INVALID_ARGUMENT);
        assert_value("m.a", "a1");
    }
    cr_assert_eq(other.vt->stream_delete(other.self, "KV_members", 5000), PARTI_ERR_OK);
    set_update(&u[0], "m.a", "a2", ra);
    set_update(&u[1], "leader", "l", 0);
    t.vt->kv_update_many(t.self, "members", u, 2, 5000);
    cr_assert_eq(u[0].err, PARTI_ERR_BUCKET_NOT_FOUND, "%s", parti_error_name(u[0].err));
    cr_assert_eq(u[1].err, PARTI_ERR_BUCKET_NOT_FOUND, "%s", parti_error_name(u[1].err));
}

/* The stored time of the stream message seq, in ns of the day (the
 * server's clock), from the JetStream API; -1 when it cannot be read. */
static long long stored_ns(uint64_t seq) {
    char body[64], reply[4096], err[256];
    const char *tm;
    int h, mi;
    double s;
    snprintf(body, sizeof body, "{\"seq\":%llu}", (unsigned long long)seq);
    if (nats_server_request(srv, "$JS.API.STREAM.MSG.GET.KV_members", body, reply, sizeof reply, 5000, err,
                            sizeof err) != 0)
        return -1;
    if (!(tm = strstr(reply, "\"time\":\"")) || strlen(tm) < 8 + 11 + 8) return -1;
    if (sscanf(tm + 8 + 11, "%d:%d:%lf", &h, &mi, &s) != 3) return -1;
    return (long long)(h * 3600 + mi * 60) * 1000000000LL + (long long)(s * 1e9);
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* Every request goes out before any reply is awaited, so the server stores
 * the writes back to back: the gap between their stored times is well under
 * the one between two kv_update calls in a row, which includes a reply's
 * way back and the next request's way out (medians of 15 pairs each). This
 * is what lets a dead leader's two keys expire in one pass. */
Test(binding_faults, kv_update_many_stores_its_writes_back_to_back) {
    enum { PAIRS = 15 };
    long long many[PAIRS], seq[PAIRS];
    parti_kv_update u[2];
    uint64_t ra = 0, rb = 0;
    int i;
    open_members();
    cr_assert_eq(t.vt->kv_put(t.self, "members", "m.a", "a", 1, &ra, 5000), PARTI_ERR_OK);
    cr_assert_eq(t.vt->kv_put(t.self, "members", "leader", "l", 1, &rb, 5000), PARTI_ERR_OK);
    for (i = 0; i < PAIRS; i++) {
        long long x, y;
        set_update(&u[0], "m.a", "a", ra);
        set_update(&u[1], "leader", "l", rb);
        t.vt->kv_update_many(t.self, "members", u, 2, 5000);
        cr_assert_eq(u[0].err, PARTI_ERR_OK);
        cr_assert_eq(u[1].err, PARTI_ERR_OK);
        ra = u[0].revision, rb = u[1].revision;
        x = stored_ns(ra), y = stored_ns(rb);
        cr_assert(x >= 0 && y >= 0);
        many[i] = y - x;
        cr_assert_eq(t.vt->kv_update(t.self, "members", "m.a", "a", 1, ra, &ra, 5000), PARTI_ERR_OK);
        cr_assert_eq(t.vt->kv_update(t.self, "members", "leader", "l", 1, rb, &rb, 5000), PARTI_ERR_OK);
        x = stored_ns(ra), y = stored_ns(rb);
        cr_assert(x >= 0 && y >= 0);
        seq[i] = y - x;
    }
    qsort(many, PAIRS, sizeof many[0], cmp_ll);
    qsort(seq, PAIRS, sizeof seq[0], cmp_ll);
    printf("stored-time gap of two writes: kv_update_many median %.1f us (max %.1f), two kv_update calls median "
           "%.1f us\n", many[PAIRS / 2] / 1e3, many[PAIRS - 1] / 1e3, seq[PAIRS / 2] / 1e3);
    cr_assert_lt(many[PAIRS / 2] * 2, seq[PAIRS / 2], "kv_update_many %lld ns, kv_update twice %lld ns",
                 many[PAIRS / 2], seq[PAIRS / 2]);
}

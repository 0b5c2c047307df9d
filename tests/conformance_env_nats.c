/* The conformance environment for a real nats-server (tests/nats_server.c):
 * real time, the faults a real server can produce.
 *
 *   reset            stops the previous test's server (if this process has
 *                    one) and starts a fresh one: new free port, new empty
 *                    store directory. Fails the test (with the reason and the
 *                    server log's tail) when no server can be started, e.g.
 *                    when the binary is missing.
 *   connect          parti_nats_connect to the server's URL, default options.
 *   disconnect       parti_nats_close (resumes a suspended server first, so a
 *                    test that failed while "dropping heartbeats" cannot hang
 *                    its teardown).
 *   advance(ms)      sleeps ms of real time.
 *   drop_heartbeats  SIGSTOP (on) / SIGCONT (off) of the server: it stops
 *                    sending heartbeats, but also answering anything, to
 *                    EVERY client, not only t.
 *   restart_server   SIGTERM, then a new server process on the same port and
 *                    store directory, polled until ready. Clients reconnect
 *                    on their own; pending pulls are lost; file-stored
 *                    streams, consumers and KV survive (memory-stored streams
 *                    do NOT survive a real restart).
 *   lose_reply       SIGSTOP (on): the next request waits in the server's
 *                    socket and the call times out; SIGCONT (off): the
 *                    server handles it then. Every client is affected.
 *   partition, fail_next, expire_key: NULL (a real server cannot do them;
 *                    those cases skip).
 *   kv_expiry_markers 1 when the server is >= 2.11 (subject delete markers),
 *                    read from the INFO line at each reset.
 *
 * Criterion runs each test in its own process: the server a test's init
 * starts belongs to that process, dies with it (PR_SET_PDEATHSIG), and is
 * stopped by the destructor below when the process exits normally (a failed
 * assertion included). The destructor also sweeps directories left by test
 * processes that crashed; it runs in Criterion's runner too, after all tests,
 * so nothing is left in $TMPDIR. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"
#include "conformance.h"
#include "nats_server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static nats_server *server;

static void nats_env_stop_server(void) {
    char err[1024];
    if (!server) return;
    if (nats_server_stop(server, err, sizeof err) != 0) fprintf(stderr, "conformance env: stop: %s\n", err);
    server = NULL;
}

static void nats_env_reset(conf_env *env) {
    char err[2048];
    nats_env_stop_server();
    if (nats_server_start(&server, NULL, err, sizeof err) != 0) {
        server = NULL;
        cr_assert_fail("conformance env nats-server: cannot start a server: %s", err);
    }
    if (!nats_server_version_at_least(server, 2, 10, 0)) {
        char version[64];
        snprintf(version, sizeof version, "%s", nats_server_version(server));
        nats_env_stop_server(); /* a failed init skips the destructor: stop it here */
        cr_assert_fail("conformance env nats-server: the server is version %s; parti needs >= 2.10 "
                       "(run scripts/setup, or set PARTI_NATS_SERVER)",
                       version);
    }
    env->kv_expiry_markers = nats_server_version_at_least(server, 2, 11, 0);
}

static parti_err nats_env_connect(conf_env *env, parti_transport *out) {
    char msg[512] = "";
    parti_err e;
    (void)env;
    if (!server) {
        fprintf(stderr, "conformance env nats-server: connect without a server (reset failed?)\n");
        return PARTI_ERR_NOT_CONNECTED;
    }
    e = parti_nats_connect(out, nats_server_url(server), NULL, msg, sizeof msg);
    if (e != PARTI_ERR_OK)
        fprintf(stderr, "conformance env nats-server: parti_nats_connect(%s): %s: %s\n", nats_server_url(server),
                parti_error_name(e), msg);
    return e;
}

static void nats_env_resume(void) {
    char err[512];
    if (server && nats_server_suspended(server) && nats_server_resume(server, err, sizeof err) != 0)
        fprintf(stderr, "conformance env nats-server: resume: %s\n", err);
}

static void nats_env_disconnect(conf_env *env, parti_transport *t) {
    (void)env;
    nats_env_resume();
    parti_nats_close(t);
}

static void nats_env_advance(conf_env *env, uint32_t ms) {
    struct timespec ts, rem;
    (void)env;
    ts.tv_sec = (time_t)(ms / 1000u);
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &rem) == -1 && errno == EINTR) ts = rem;
}

static void nats_env_drop_heartbeats(conf_env *env, parti_transport *t, int on) {
    char err[512];
    int rc;
    (void)env;
    (void)t; /* a real server cannot single out one client: all of them are affected */
    cr_assert_not_null(server, "drop_heartbeats without a server");
    rc = on ? nats_server_suspend(server, err, sizeof err) : nats_server_resume(server, err, sizeof err);
    cr_assert_eq(rc, 0, "conformance env nats-server: %s: %s", on ? "SIGSTOP" : "SIGCONT", err);
}

static void nats_env_restart(conf_env *env) {
    char err[2048];
    int rc;
    (void)env;
    cr_assert_not_null(server, "restart_server without a server");
    rc = nats_server_restart(server, err, sizeof err);
    cr_assert_eq(rc, 0, "conformance env nats-server: restart: %s", err);
}

/* A lost reply: the server is stopped, so the request waits in its socket
 * and the call times out; continued, it handles the request (the reply goes
 * to an inbox nobody reads any more). */
static void nats_env_lose_reply(conf_env *env, parti_transport *t, const char *op, int on) {
    (void)t;
    (void)op;
    nats_env_drop_heartbeats(env, t, on);
}

/* Stops this process's server at exit (LeakSanitizer runs after this) and
 * removes directories of test processes that crashed. */
__attribute__((destructor)) static void nats_env_cleanup(void) {
    nats_env_resume();
    nats_env_stop_server();
    nats_server_sweep_stale();
}

static conf_env nats_env = {"nats-server",
                            nats_env_reset,
                            nats_env_connect,
                            nats_env_disconnect,
                            nats_env_advance,
                            nats_env_drop_heartbeats,
                            nats_env_restart,
                            NULL, /* partition */
                            NULL, /* fail_next */
                            NULL, /* expire_key */
                            nats_env_lose_reply,
                            0,    /* kv_expiry_markers: set by reset from the server's version */
                            NULL};

conf_env *conformance_env(void) { return &nats_env; }

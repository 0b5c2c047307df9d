/* A real nats-server for tests: start, stop, kill -9, restart, suspend.
 *
 * Each server runs on 127.0.0.1 only, on a free port picked by binding port 0
 * (retried when another process takes it first), with JetStream on and its
 * store in a fresh directory $TMPDIR/parti-test-XXXXXX (or /tmp); no
 * monitoring port, no cluster, no other listener. The server's output goes to
 * server.log in that directory; when something fails, its tail is printed to
 * stderr.
 *
 * Robustness:
 *   - the child sets PR_SET_PDEATHSIG = SIGKILL before exec, so the server
 *     dies with the test process, even when the test crashes. (Linux sends it
 *     when the THREAD that forked exits: start, restart and stop a server
 *     from a thread that lives as long as the server, e.g. the main thread.)
 *   - the directory holds an "owner" file (pid, its start time, pid
 *     namespace); every start, and nats_server_sweep_stale, removes
 *     parti-test-* directories whose owner is gone (left by a crashed test);
 *   - the server is started with "-n parti-test-XXXXXX", so `pgrep -f
 *     parti-test` finds every server of the harness, and the readiness probe
 *     checks that the INFO line names OUR server (a port taken by another
 *     server between the probe bind and the server's bind is retried on a
 *     new port);
 *   - the log is appended across restarts, with a "=== test harness:" line
 *     before each start;
 *   - every wait polls with a deadline (connect + read the INFO line, then a
 *     JetStream API request; waitpid with WNOHANG), no fixed sleeps.
 *
 * The binary: $PARTI_NATS_SERVER when set (and then only that one), else
 * PARTI_REPO_ROOT "/.deps/nats-server/usr/sbin/nats-server" when the macro is
 * defined at compile time, else .deps/nats-server/usr/sbin/nats-server under
 * the current directory or up to 3 parents of it, else under the parents of
 * the test executable's directory. A missing binary is an error naming the
 * paths tried and scripts/setup, never a silent pass.
 *
 * Functions return 0 on success, -1 on failure with a message in err (when
 * err is not NULL). Not thread-safe; use a server from one thread. */
#ifndef PARTI_TEST_NATS_SERVER_H
#define PARTI_TEST_NATS_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nats_server nats_server;

typedef struct nats_server_options {
    const char *binary;          /* NULL: nats_server_find_binary() */
    uint32_t start_timeout_ms;   /* until ready; 0 = 30000 (generous: a loaded machine) */
    uint32_t stop_timeout_ms;    /* SIGTERM -> exit, before SIGKILL; 0 = 10000 */
    int port;                    /* 0 = a free port (the usual case) */
    int quiet;                   /* 1: do not print the log tail on failure */
    const char *config;          /* extra configuration file text (-c), e.g. accounts; NULL = none.
                                  * The readiness probe connects without credentials: keep a
                                  * no_auth_user that may use JetStream. */
} nats_server_options;

/* Finds the binary (see above) into buf. 0, or -1 with a message in err. */
int nats_server_find_binary(char *buf, size_t size, char *err, size_t err_size);

/* Starts a server in a fresh directory and waits until it is ready. */
int nats_server_start(nats_server **out, const nats_server_options *opts, char *err, size_t err_size);

/* SIGTERM (SIGKILL after stop_timeout_ms), reap, remove the directory, free.
 * NULL is a no-op. A server started by another process (inherited over
 * fork) is only freed, never signalled, and its directory is kept. Returns 0
 * when the server exited on SIGTERM, -1 when it had to be killed or the
 * directory could not be removed. */
int nats_server_stop(nats_server *s, char *err, size_t err_size);

/* kill -9 and reap; the directory (store and log) is kept. */
int nats_server_kill(nats_server *s, char *err, size_t err_size);

/* SIGTERM and reap (SIGKILL after the deadline); the directory is kept. */
int nats_server_terminate(nats_server *s, char *err, size_t err_size);

/* Stops the server if it runs (SIGTERM, as nats_server_terminate), then starts
 * it again on the same port with the same store, and waits until it is ready.
 * Retries for a while when the port is briefly taken. */
int nats_server_restart(nats_server *s, char *err, size_t err_size);

/* SIGSTOP / SIGCONT: a hung server (no heartbeats, no replies) for every
 * client at once. */
int nats_server_suspend(nats_server *s, char *err, size_t err_size);
int nats_server_resume(nats_server *s, char *err, size_t err_size);

/* Changes the deadlines used from now on (0 = the default). */
void nats_server_set_timeouts(nats_server *s, uint32_t start_timeout_ms, uint32_t stop_timeout_ms);

const char *nats_server_url(const nats_server *s);      /* "nats://127.0.0.1:PORT" */
const char *nats_server_version(const nats_server *s);  /* from the INFO line, "2.15.1" */
/* 1 when the version is >= major.minor.patch */
int nats_server_version_at_least(const nats_server *s, int major, int minor, int patch);
int nats_server_port(const nats_server *s);
pid_t nats_server_pid(const nats_server *s);            /* 0 when not running */
int nats_server_running(const nats_server *s);
int nats_server_suspended(const nats_server *s);
const char *nats_server_dir(const nats_server *s);      /* the parti-test-XXXXXX directory */
const char *nats_server_store_dir(const nats_server *s);/* DIR/store (JetStream under DIR/store/jetstream) */
const char *nats_server_log_path(const nats_server *s); /* DIR/server.log */
/* Prints the last `lines` lines of the server log to f. */
void nats_server_print_log_tail(const nats_server *s, FILE *f, int lines);

/* One request over a fresh raw NATS connection (no client library needed):
 * publishes payload (NULL = empty) on subject with a reply inbox and copies
 * the reply's payload, NUL-terminated, into reply. -1 on timeout, no
 * responders or a reply larger than reply_size - 1 (or 16 KiB). */
int nats_server_request(const nats_server *s, const char *subject, const char *payload, char *reply,
                        size_t reply_size, uint32_t timeout_ms, char *err, size_t err_size);

/* Removes $TMPDIR/parti-test-* directories (this user's) whose owner process
 * is gone. Every start does it; call it at exit of a test runner too (the
 * parent of crashed test processes) so nothing is left behind. */
void nats_server_sweep_stale(void);

/* Parses "x.y.z" (a leading 'v' and a suffix such as "-beta" are allowed).
 * 0, or -1 when it is not a version. */
int nats_server_parse_version(const char *v, int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif

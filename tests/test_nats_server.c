/* Tests of the real-server harness (tests/nats_server.c) on its own: no
 * binding, no parti. Raw sockets and /proc check what the harness claims. */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE

#include "nats_server.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T_TIMEOUT 60 /* seconds per test; Criterion kills the test, PDEATHSIG the server */

static char err[2048];
static nats_server *srv_a, *srv_b;

static void t_fini(void) {
    nats_server_stop(srv_a, NULL, 0);
    nats_server_stop(srv_b, NULL, 0);
    srv_a = srv_b = NULL;
}

TestSuite(harness, .fini = t_fini, .timeout = T_TIMEOUT);

/* ---- helpers ------------------------------------------------------------------- */

static uint64_t t_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void t_start(nats_server **s, const nats_server_options *o) {
    uint64_t t0 = t_now_ms();
    int rc = nats_server_start(s, o, err, sizeof err);
    cr_assert_eq(rc, 0, "start failed: %s", err);
    cr_log_info("nats-server %s ready at %s in %lu ms", nats_server_version(*s), nats_server_url(*s),
                (unsigned long)(t_now_ms() - t0));
}

/* Reads the first line the server sends on a new connection. */
static int t_read_info(int port, char *line, size_t size) {
    struct sockaddr_in a;
    size_t len = 0;
    uint64_t deadline = t_now_ms() + 5000;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    while (len + 1 < size) {
        struct pollfd p = {fd, POLLIN, 0};
        uint64_t now = t_now_ms();
        ssize_t n;
        char *nl;
        if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0) break;
        n = recv(fd, line + len, size - 1 - len, 0);
        if (n <= 0) break;
        len += (size_t)n;
        line[len] = 0;
        if ((nl = strstr(line, "\r\n")) != NULL) {
            *nl = 0;
            close(fd);
            return 0;
        }
    }
    close(fd);
    return -1;
}

/* 1 when pid no longer runs (gone, or a zombie nobody reaps) */
static int t_gone(pid_t pid) {
    char path[64], buf[512];
    FILE *f;
    char *rp;
    if (kill(pid, 0) == -1 && errno == ESRCH) return 1;
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    f = fopen(path, "r");
    if (!f) return 1;
    buf[0] = 0;
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    rp = strrchr(buf, ')');
    return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

static int t_exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static int t_files;
static int t_count_file(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)p;
    (void)sb;
    (void)ftw;
    if (flag == FTW_F) t_files++;
    return 0;
}

static int t_count_files(const char *dir) {
    t_files = 0;
    if (nftw(dir, t_count_file, 16, FTW_PHYS) != 0) return -1;
    return t_files;
}

static void t_request(nats_server *s, const char *subject, const char *payload, char *reply, size_t size) {
    int rc = nats_server_request(s, subject, payload, reply, size, 5000, err, sizeof err);
    cr_assert_eq(rc, 0, "request %s: %s", subject, err);
}

/* A file-stored stream H on h.> with one message. */
static void t_stream_with_one_message(nats_server *s) {
    char reply[16384];
    t_request(s, "$JS.API.STREAM.CREATE.H", "{\"name\":\"H\",\"subjects\":[\"h.>\"],\"storage\":\"file\"}", reply,
              sizeof reply);
    cr_assert(strstr(reply, "stream_create_response") && !strstr(reply, "\"error\""), "create: %s", reply);
    t_request(s, "h.1", "hello", reply, sizeof reply);
    cr_assert(strstr(reply, "\"stream\":\"H\"") && strstr(reply, "\"seq\":1"), "publish ack: %s", reply);
}

static void t_expect_messages(nats_server *s, int n) {
    char reply[16384], want[32];
    snprintf(want, sizeof want, "\"messages\":%d,", n);
    t_request(s, "$JS.API.STREAM.INFO.H", NULL, reply, sizeof reply);
    cr_assert(strstr(reply, want), "stream info after restart, want %s: %s", want, reply);
}

/* Listening TCP sockets and bound UDP sockets owned by pid, as "proto addr:port". */
static int t_listeners(pid_t pid, char out[][64], int max) {
    char path[64], target[128], line[512];
    unsigned long inodes[256];
    int ninodes = 0, n = 0, t;
    DIR *d;
    struct dirent *e;
    static const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"};
    snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    d = opendir(path);
    if (!d) return -1;
    while ((e = readdir(d)) != NULL && ninodes < 256) {
        char fdpath[PATH_MAX];
        ssize_t len;
        if (e->d_name[0] == '.') continue;
        snprintf(fdpath, sizeof fdpath, "%s/%s", path, e->d_name);
        len = readlink(fdpath, target, sizeof target - 1);
        if (len <= 0) continue;
        target[len] = 0;
        if (sscanf(target, "socket:[%lu]", &inodes[ninodes]) == 1) ninodes++;
    }
    closedir(d);
    for (t = 0; t < 4; t++) {
        FILE *f = fopen(tables[t], "r");
        if (!f) continue;
        if (!fgets(line, sizeof line, f)) line[0] = 0; /* header */
        while (fgets(line, sizeof line, f) && n < max) {
            char local[48], remote[48];
            unsigned st;
            unsigned long inode;
            int i, k;
            if (sscanf(line, "%*d: %47s %47s %x %*s %*s %*s %*d %*d %lu", local, remote, &st, &inode) != 4) continue;
            if (t < 2 && st != 0x0A) continue; /* TCP: LISTEN only */
            for (i = 0, k = 0; i < ninodes; i++)
                if (inodes[i] == inode) k = 1;
            if (!k) continue;
            snprintf(out[n++], 64, "%s %s", tables[t] + 10, local);
        }
        fclose(f);
    }
    return n;
}

/* ---- tests ------------------------------------------------------------------------ */

Test(harness, parse_version_accepts_x_y_z_and_rejects_the_rest) {
    int a, b, c;
    cr_assert_eq(nats_server_parse_version("2.15.1", &a, &b, &c), 0);
    cr_assert(a == 2 && b == 15 && c == 1);
    cr_assert_eq(nats_server_parse_version("v2.10.27-beta.1", &a, &b, &c), 0);
    cr_assert(a == 2 && b == 10 && c == 27);
    cr_assert_eq(nats_server_parse_version("2.15", &a, &b, &c), -1);
    cr_assert_eq(nats_server_parse_version("", &a, &b, &c), -1);
    cr_assert_eq(nats_server_parse_version(NULL, &a, &b, &c), -1);
    cr_assert_eq(nats_server_parse_version("x.1.2", &a, &b, &c), -1);
}

Test(harness, the_default_binary_is_found_and_is_absolute) {
    char bin[PATH_MAX];
    unsetenv("PARTI_NATS_SERVER");
    cr_assert_eq(nats_server_find_binary(bin, sizeof bin, err, sizeof err), 0, "%s", err);
    cr_assert_eq(bin[0], '/', "%s", bin);
    cr_assert(strstr(bin, "nats-server"), "%s", bin);
}

Test(harness, start_accepts_connections_and_info_reports_version_at_least_2_10) {
    char info[8192], want[64];
    int a, b, c;
    t_start(&srv_a, NULL);
    cr_assert(nats_server_running(srv_a));
    cr_assert_eq(t_read_info(nats_server_port(srv_a), info, sizeof info), 0, "no INFO line on port %d",
                 nats_server_port(srv_a));
    cr_assert_eq(strncmp(info, "INFO {", 6), 0, "%s", info);
    snprintf(want, sizeof want, "\"version\":\"%s\"", nats_server_version(srv_a));
    cr_assert(strstr(info, want), "INFO %s does not carry %s", info, want);
    cr_assert(strstr(info, "\"jetstream\":true"), "%s", info);
    cr_assert_eq(nats_server_parse_version(nats_server_version(srv_a), &a, &b, &c), 0, "%s",
                 nats_server_version(srv_a));
    cr_assert(a > 2 || (a == 2 && b >= 10), "version %s < 2.10", nats_server_version(srv_a));
    cr_assert(nats_server_version_at_least(srv_a, 2, 10, 0));
    cr_assert_not(nats_server_version_at_least(srv_a, a, b, c + 1));
    snprintf(want, sizeof want, "nats://127.0.0.1:%d", nats_server_port(srv_a));
    cr_assert_str_eq(nats_server_url(srv_a), want);
}

Test(harness, the_only_listener_is_the_client_port_on_loopback) {
    char l[16][64], want[64];
    int n;
    t_start(&srv_a, NULL);
    n = t_listeners(nats_server_pid(srv_a), l, 16);
    cr_assert_eq(n, 1, "nats-server has %d listeners (first: %s)", n, n > 0 ? l[0] : "-");
    /* /proc/net/tcp: 0100007F = 127.0.0.1, port in hex */
    snprintf(want, sizeof want, "tcp 0100007F:%04X", (unsigned)nats_server_port(srv_a));
    cr_assert_str_eq(l[0], want);
}

Test(harness, store_and_log_live_in_a_fresh_parti_test_dir) {
    const char *dir;
    t_start(&srv_a, NULL);
    dir = nats_server_dir(srv_a);
    cr_assert(strstr(dir, "/parti-test-"), "%s", dir);
    cr_assert(t_exists(nats_server_store_dir(srv_a)));
    cr_assert(t_exists(nats_server_log_path(srv_a)));
    cr_assert_eq(strncmp(nats_server_store_dir(srv_a), dir, strlen(dir)), 0);
}

Test(harness, stop_leaves_no_process_and_no_dir) {
    pid_t pid;
    char dir[PATH_MAX];
    t_start(&srv_a, NULL);
    pid = nats_server_pid(srv_a);
    snprintf(dir, sizeof dir, "%s", nats_server_dir(srv_a));
    cr_assert(pid > 0);
    cr_assert_eq(nats_server_stop(srv_a, err, sizeof err), 0, "%s", err);
    srv_a = NULL;
    cr_assert(kill(pid, 0) == -1 && errno == ESRCH, "pid %ld still exists (not reaped?)", (long)pid);
    cr_assert_not(t_exists(dir), "%s still exists", dir);
}

Test(harness, stop_of_a_suspended_server_still_stops_it) {
    pid_t pid;
    uint64_t t0;
    t_start(&srv_a, NULL);
    pid = nats_server_pid(srv_a);
    cr_assert_eq(nats_server_suspend(srv_a, err, sizeof err), 0, "%s", err);
    t0 = t_now_ms();
    cr_assert_eq(nats_server_stop(srv_a, err, sizeof err), 0, "%s", err);
    srv_a = NULL;
    cr_assert(kill(pid, 0) == -1 && errno == ESRCH);
    cr_log_info("stop of a suspended server took %lu ms", (unsigned long)(t_now_ms() - t0));
}

Test(harness, kill_9_keeps_the_store_and_restart_recovers_it_on_the_same_port) {
    int port, files;
    pid_t old;
    char url[64];
    uint64_t t0;
    t_start(&srv_a, NULL);
    t_stream_with_one_message(srv_a);
    port = nats_server_port(srv_a);
    old = nats_server_pid(srv_a);
    snprintf(url, sizeof url, "%s", nats_server_url(srv_a));

    cr_assert_eq(nats_server_kill(srv_a, err, sizeof err), 0, "%s", err);
    cr_assert_not(nats_server_running(srv_a));
    cr_assert(kill(old, 0) == -1 && errno == ESRCH);
    files = t_count_files(nats_server_store_dir(srv_a));
    cr_assert_gt(files, 0, "store %s is empty after kill -9", nats_server_store_dir(srv_a));
    cr_assert(t_exists(nats_server_log_path(srv_a)));

    t0 = t_now_ms();
    cr_assert_eq(nats_server_restart(srv_a, err, sizeof err), 0, "%s", err);
    cr_log_info("restart after kill -9 took %lu ms", (unsigned long)(t_now_ms() - t0));
    cr_assert(nats_server_running(srv_a));
    cr_assert_neq(nats_server_pid(srv_a), old);
    cr_assert_eq(nats_server_port(srv_a), port);
    cr_assert_str_eq(nats_server_url(srv_a), url);
    t_expect_messages(srv_a, 1);
}

Test(harness, restart_of_a_running_server_uses_sigterm_and_keeps_the_store) {
    pid_t old;
    int port;
    uint64_t t0;
    t_start(&srv_a, NULL);
    t_stream_with_one_message(srv_a);
    old = nats_server_pid(srv_a);
    port = nats_server_port(srv_a);
    t0 = t_now_ms();
    cr_assert_eq(nats_server_restart(srv_a, err, sizeof err), 0, "%s", err);
    cr_log_info("SIGTERM restart took %lu ms", (unsigned long)(t_now_ms() - t0));
    cr_assert(kill(old, 0) == -1 && errno == ESRCH);
    cr_assert_eq(nats_server_port(srv_a), port);
    t_expect_messages(srv_a, 1);
}

Test(harness, two_servers_at_once_get_different_ports_and_dirs) {
    char info[8192];
    t_start(&srv_a, NULL);
    t_start(&srv_b, NULL);
    cr_assert_neq(nats_server_port(srv_a), nats_server_port(srv_b));
    cr_assert_str_neq(nats_server_dir(srv_a), nats_server_dir(srv_b));
    cr_assert_eq(t_read_info(nats_server_port(srv_a), info, sizeof info), 0);
    cr_assert_eq(t_read_info(nats_server_port(srv_b), info, sizeof info), 0);
    /* independent stores: a stream on one is not on the other */
    t_stream_with_one_message(srv_a);
    {
        char reply[16384];
        t_request(srv_b, "$JS.API.STREAM.INFO.H", NULL, reply, sizeof reply);
        cr_assert(strstr(reply, "\"error\""), "stream H leaked into the second server: %s", reply);
    }
}

Test(harness, a_port_held_by_another_server_is_refused_not_mistaken_for_ours) {
    nats_server_options o;
    t_start(&srv_a, NULL);
    memset(&o, 0, sizeof o);
    o.port = nats_server_port(srv_a);
    o.quiet = 1;
    cr_assert_eq(nats_server_start(&srv_b, &o, err, sizeof err), -1, "second server on port %d started", o.port);
    cr_assert_null(srv_b);
    cr_assert(strstr(err, "taken"), "%s", err);
    /* the first server is untouched */
    t_stream_with_one_message(srv_a);
    t_expect_messages(srv_a, 1);
}

Test(harness, restart_on_a_squatted_port_fails_clearly_and_works_once_it_is_free) {
    nats_server_options o;
    struct sockaddr_in a;
    int fd, one = 1;
    memset(&o, 0, sizeof o);
    o.quiet = 1;
    t_start(&srv_a, &o);
    cr_assert_eq(nats_server_kill(srv_a, err, sizeof err), 0, "%s", err);
    nats_server_set_timeouts(srv_a, 1500, 0); /* the squatted restart gives up after 1.5 s */
    /* a squatter that accepts connections and never speaks */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)nats_server_port(srv_a));
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
    cr_assert_eq(listen(fd, 16), 0);
    cr_assert_eq(nats_server_restart(srv_a, err, sizeof err), -1, "restarted on a squatted port");
    cr_assert(strstr(err, "taken"), "%s", err);
    cr_assert_not(nats_server_running(srv_a));
    close(fd);
    nats_server_set_timeouts(srv_a, 0, 0);
    cr_assert_eq(nats_server_restart(srv_a, err, sizeof err), 0, "%s", err);
    cr_assert(nats_server_running(srv_a));
}

Test(harness, suspend_makes_requests_time_out_and_resume_brings_them_back) {
    char reply[16384];
    t_start(&srv_a, NULL);
    cr_assert_eq(nats_server_suspend(srv_a, err, sizeof err), 0, "%s", err);
    cr_assert(nats_server_suspended(srv_a));
    cr_assert_eq(nats_server_request(srv_a, "$JS.API.INFO", NULL, reply, sizeof reply, 300, err, sizeof err), -1,
                 "a suspended server answered: %s", reply);
    cr_assert_eq(nats_server_resume(srv_a, err, sizeof err), 0, "%s", err);
    cr_assert_not(nats_server_suspended(srv_a));
    t_request(srv_a, "$JS.API.INFO", NULL, reply, sizeof reply);
    cr_assert(strstr(reply, "account_info_response"), "%s", reply);
}

Test(harness, a_missing_binary_is_a_clear_error) {
    nats_server_options o;
    memset(&o, 0, sizeof o);
    o.binary = "/nonexistent/nats-server";
    cr_assert_eq(nats_server_start(&srv_a, &o, err, sizeof err), -1);
    cr_assert_null(srv_a);
    cr_assert(strstr(err, "/nonexistent/nats-server") && strstr(err, "scripts/setup"), "%s", err);
}

Test(harness, a_missing_binary_from_the_environment_is_a_clear_error) {
    char bin[PATH_MAX];
    setenv("PARTI_NATS_SERVER", "/nonexistent/nats-server", 1);
    cr_assert_eq(nats_server_find_binary(bin, sizeof bin, err, sizeof err), -1);
    cr_assert(strstr(err, "PARTI_NATS_SERVER=/nonexistent/nats-server"), "%s", err);
    cr_assert_eq(nats_server_start(&srv_a, NULL, err, sizeof err), -1);
    cr_assert_null(srv_a);
    cr_assert(strstr(err, "PARTI_NATS_SERVER"), "%s", err);
}

Test(harness, a_binary_that_is_not_a_server_fails_to_start_with_its_status) {
    nats_server_options o;
    memset(&o, 0, sizeof o);
    o.binary = "/bin/false";
    o.start_timeout_ms = 3000;
    o.quiet = 1;
    cr_assert_eq(nats_server_start(&srv_a, &o, err, sizeof err), -1);
    cr_assert(strstr(err, "exited with status 1") && strstr(err, "before it was ready"), "%s", err);
}

/* The test process dies without stopping its server: the server dies with it
 * (PR_SET_PDEATHSIG) and the next start removes the orphaned directory. */
Test(harness, a_crashed_test_leaves_no_server_and_its_dir_is_swept) {
    int fds[2], st = 0;
    char buf[PATH_MAX + 64];
    char dir[PATH_MAX];
    size_t len = 0;
    long spid = 0;
    pid_t child, r;
    uint64_t deadline;

    /* orphans are re-parented to us, so we can reap the server and see why it died */
    cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    cr_assert_eq(pipe(fds), 0);
    child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        nats_server *s;
        int n;
        close(fds[0]);
        if (nats_server_start(&s, NULL, err, sizeof err) != 0) {
            n = snprintf(buf, sizeof buf, "start failed: %s", err);
            if (write(fds[1], buf, (size_t)n) != n) _exit(3);
            _exit(2);
        }
        n = snprintf(buf, sizeof buf, "%ld %s\n", (long)nats_server_pid(s), nats_server_dir(s));
        if (write(fds[1], buf, (size_t)n) != n) _exit(3);
        raise(SIGKILL); /* a crash: no cleanup at all */
        _exit(4);
    }
    close(fds[1]);
    for (;;) { /* until the child's end closes */
        ssize_t n = read(fds[0], buf + len, sizeof buf - 1 - len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
        if (len >= sizeof buf - 1) break;
    }
    close(fds[0]);
    buf[len] = 0;
    cr_assert_eq(waitpid(child, &st, 0), child);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status 0x%x: %s", (unsigned)st, buf);
    cr_assert_eq(sscanf(buf, "%ld %4095s", &spid, dir), 2, "child said '%s'", buf);

    deadline = t_now_ms() + 10000;
    for (;;) {
        r = waitpid((pid_t)spid, &st, WNOHANG);
        if (r == (pid_t)spid) break;
        if (r < 0 && t_gone((pid_t)spid)) { st = -1; break; } /* reaped by someone else */
        cr_assert(t_now_ms() < deadline, "server %ld outlived its test process", spid);
        {
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    if (st != -1) cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "server status 0x%x", (unsigned)st);

    t_start(&srv_a, NULL); /* sweeps directories whose owner is dead */
    cr_assert_not(t_exists(dir), "orphaned %s was not swept", dir);
}

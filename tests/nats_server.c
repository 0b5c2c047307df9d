/* A real nats-server for tests; see nats_server.h. Linux (prctl). */
#define _XOPEN_SOURCE 700
#define _DEFAULT_SOURCE

#include "nats_server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

#define NS_REL_BINARY ".deps/nats-server/usr/sbin/nats-server"
#define NS_DIR_PREFIX "parti-test-"
#define NS_DEFAULT_START_MS 30000u
#define NS_DEFAULT_STOP_MS 10000u
#define NS_KILL_REAP_MS 5000u     /* after SIGKILL */
#define NS_POLL_MS 2              /* polling step while waiting */
#define NS_PORT_ATTEMPTS 10       /* fresh ports tried when one is taken */
#define NS_SWEEP_MAX 4096         /* directory entries looked at per sweep */
#define NS_LOG_TAIL_LINES 40

struct nats_server {
    char binary[PATH_MAX];
    char dir[PATH_MAX];
    char store[PATH_MAX];
    char log[PATH_MAX];
    char conf[PATH_MAX]; /* DIR/server.conf when options gave a config, else "" */
    char name[64];     /* server name = basename of dir: identifies our INFO line */
    char url[64];
    char version[64];
    int port;
    pid_t pid;         /* 0 when not running */
    pid_t owner;       /* the process that started it */
    int suspended;
    uint32_t start_timeout_ms, stop_timeout_ms;
    int quiet;
};

/* ---- small helpers ----------------------------------------------------------- */

static void ns_err(char *err, size_t size, const char *fmt, ...) {
    va_list ap;
    if (!err || !size) return;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

static uint64_t ns_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void ns_sleep_ms(unsigned ms) {
    struct timespec ts, rem;
    ts.tv_sec = ms / 1000u;
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &rem) == -1 && errno == EINTR) ts = rem;
}

static int ns_executable(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

static const char *ns_tmpdir(void) {
    const char *t = getenv("TMPDIR");
    struct stat st;
    if (t && *t && stat(t, &st) == 0 && S_ISDIR(st.st_mode)) return t;
    return "/tmp";
}

static int ns_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) return -1;
    return 0;
}

/* rm -rf path; 0 or -1 */
static int ns_rmtree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(path, ns_rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

int nats_server_parse_version(const char *v, int *major, int *minor, int *patch) {
    int part[3] = {0, 0, 0};
    int i;
    if (!v) return -1;
    if (*v == 'v') v++;
    for (i = 0; i < 3; i++) {
        int n = 0, digits = 0;
        while (*v >= '0' && *v <= '9' && digits < 6) {
            n = n * 10 + (*v - '0');
            v++;
            digits++;
        }
        if (!digits) return -1;
        part[i] = n;
        if (i < 2) {
            if (*v != '.') return -1;
            v++;
        }
    }
    if (major) *major = part[0];
    if (minor) *minor = part[1];
    if (patch) *patch = part[2];
    return 0;
}

/* ---- finding the binary ---------------------------------------------------- */

static int ns_try(const char *cand, char *buf, size_t size) {
    char real[PATH_MAX];
    if (!ns_executable(cand)) return 0;
    if (!realpath(cand, real)) return 0;
    if (strlen(real) >= size) return 0;
    memcpy(buf, real, strlen(real) + 1);
    return 1;
}

int nats_server_find_binary(char *buf, size_t size, char *err, size_t err_size) {
    const char *env = getenv("PARTI_NATS_SERVER");
    char cand[PATH_MAX];
    char tried[1024] = "";
    size_t tl = 0;
    int up;

    if (env && *env) {
        if (ns_try(env, buf, size)) return 0;
        ns_err(err, err_size, "PARTI_NATS_SERVER=%s is not an executable file (%s)", env,
               access(env, F_OK) == 0 ? "not executable" : "no such file");
        return -1;
    }
#define NS_TRIED(p)                                                                           \
    do {                                                                                      \
        int n_ = snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? ", " : "", (p));        \
        if (n_ > 0) tl = tl + (size_t)n_ < sizeof tried ? tl + (size_t)n_ : sizeof tried - 1; \
    } while (0)
#ifdef PARTI_REPO_ROOT
    snprintf(cand, sizeof cand, "%s/%s", PARTI_REPO_ROOT, NS_REL_BINARY);
    if (ns_try(cand, buf, size)) return 0;
    NS_TRIED(cand);
#endif
    /* the current directory (make runs tests from the repo root) and its parents */
    for (up = 0; up <= 3; up++) {
        size_t off = 0;
        int i;
        cand[0] = 0;
        for (i = 0; i < up; i++) off += (size_t)snprintf(cand + off, sizeof cand - off, "../");
        snprintf(cand + off, sizeof cand - off, "%s", NS_REL_BINARY);
        if (ns_try(cand, buf, size)) return 0;
        NS_TRIED(cand);
    }
    /* the test executable's directory's parents (build/x -> repo root) */
    {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            for (up = 0; up <= 3; up++) {
                char *slash = strrchr(exe, '/');
                if (!slash || slash == exe) break;
                *slash = 0; /* exe is now a directory */
                if ((size_t)snprintf(cand, sizeof cand, "%s/%s", exe, NS_REL_BINARY) >= sizeof cand) break;
                if (ns_try(cand, buf, size)) return 0;
                NS_TRIED(cand);
            }
        }
    }
#undef NS_TRIED
    ns_err(err, err_size,
           "nats-server binary not found (tried %s); run scripts/setup (make test does) "
           "or set PARTI_NATS_SERVER to a nats-server >= 2.10",
           tried);
    return -1;
}

/* ---- stale directories --------------------------------------------------------- */

/* The start time of pid (clock ticks since boot, /proc/PID/stat field 22);
 * 0 when unknown. With the pid it names one process across pid reuse. */
static unsigned long long ns_start_time(long pid) {
    char path[64], buf[1024];
    FILE *f;
    char *p;
    unsigned long long t = 0;
    int field;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (!f) return 0;
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    p = strrchr(buf, ')'); /* the command name may hold spaces and ')' */
    if (!p) return 0;
    p++;
    for (field = 3; field <= 22 && p; field++) { /* p is before field `field` */
        while (*p == ' ') p++;
        if (field == 22) {
            t = strtoull(p, NULL, 10);
            break;
        }
        p = strchr(p, ' ');
    }
    return t;
}

/* Our pid namespace ("pid:[4026531836]"), so a sweep never judges the pids of
 * another container that shares $TMPDIR. */
static void ns_pid_namespace(char *buf, size_t size) {
    ssize_t n = readlink("/proc/self/ns/pid", buf, size - 1);
    if (n < 0) n = 0;
    buf[n] = 0;
    if (!n) snprintf(buf, size, "-");
}

/* Removes parti-test-* directories whose owner process is gone (a test that
 * crashed before it could clean up; its server died with it by PDEATHSIG).
 * The owner file says "PID STARTTIME PIDNS". */
void nats_server_sweep_stale(void) {
    const char *tmp = ns_tmpdir();
    DIR *d = opendir(tmp);
    struct dirent *e;
    int seen = 0;
    char my_ns[128];
    if (!d) return;
    ns_pid_namespace(my_ns, sizeof my_ns);
    while ((e = readdir(d)) != NULL && seen++ < NS_SWEEP_MAX) {
        char path[PATH_MAX], owner[PATH_MAX + 8], line[256], ns[128];
        FILE *f;
        long pid = 0;
        unsigned long long started = 0;
        struct stat st;
        int got = 0;
        if (strncmp(e->d_name, NS_DIR_PREFIX, strlen(NS_DIR_PREFIX)) != 0) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", tmp, e->d_name) >= sizeof path) continue;
        if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) continue;
        snprintf(owner, sizeof owner, "%s/owner", path);
        f = fopen(owner, "r");
        if (!f) continue; /* being created right now, or not ours */
        if (fgets(line, sizeof line, f)) got = sscanf(line, "%ld %llu %127s", &pid, &started, ns);
        fclose(f);
        if (got != 3 || pid <= 0 || strcmp(ns, my_ns) != 0) continue;
        if ((kill((pid_t)pid, 0) == -1 && errno == ESRCH) || (started && ns_start_time(pid) != started))
            ns_rmtree(path);
    }
    closedir(d);
}

/* ---- ports ------------------------------------------------------------------------ */

static int ns_free_port(void) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;
    if (fd < 0) return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---- the child process ------------------------------------------------------------- */

static int ns_spawn(nats_server *s, char *err, size_t err_size) {
    char portstr[16];
    char *argv[14];
    int logfd, nullfd, i = 0;
    long open_max = sysconf(_SC_OPEN_MAX);
    pid_t parent = getpid(), pid;
    FILE *lf;

    if (open_max < 0 || open_max > 65536) open_max = 65536;
    snprintf(portstr, sizeof portstr, "%d", s->port);
    argv[i++] = s->binary;
    argv[i++] = (char *)"-a";
    argv[i++] = (char *)"127.0.0.1";
    argv[i++] = (char *)"-p";
    argv[i++] = portstr;
    argv[i++] = (char *)"-js";
    argv[i++] = (char *)"-sd";
    argv[i++] = s->store;
    argv[i++] = (char *)"-n";
    argv[i++] = s->name;
    if (s->conf[0]) {
        argv[i++] = (char *)"-c";
        argv[i++] = s->conf;
    }
    argv[i] = NULL;

    lf = fopen(s->log, "a");
    if (lf) {
        fprintf(lf, "=== test harness: starting %s on 127.0.0.1:%d (test pid %ld)\n", s->binary, s->port,
                (long)parent);
        fclose(lf);
    }
    logfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd < 0) {
        ns_err(err, err_size, "cannot open %s: %s", s->log, strerror(errno));
        return -1;
    }
    nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nullfd < 0) {
        ns_err(err, err_size, "cannot open /dev/null: %s", strerror(errno));
        close(logfd);
        return -1;
    }
    /* keep both above 2, so the child's dup2 onto 0..2 cannot clobber one
     * (when the test runs with a standard descriptor closed) */
    if (logfd < 3 || nullfd < 3) {
        int hi_log = fcntl(logfd, F_DUPFD_CLOEXEC, 3), hi_null = fcntl(nullfd, F_DUPFD_CLOEXEC, 3);
        close(logfd);
        close(nullfd);
        if (hi_log < 0 || hi_null < 0) {
            ns_err(err, err_size, "fcntl(F_DUPFD_CLOEXEC): %s", strerror(errno));
            if (hi_log >= 0) close(hi_log);
            if (hi_null >= 0) close(hi_null);
            return -1;
        }
        logfd = hi_log;
        nullfd = hi_null;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        ns_err(err, err_size, "fork: %s", strerror(errno));
        close(logfd);
        close(nullfd);
        return -1;
    }
    if (pid == 0) {
        /* child: async-signal-safe calls only (the test process may have threads) */
        static const char msg[] = "=== test harness: exec of nats-server failed\n";
        struct sigaction sa;
        sigset_t none;
        long fd;
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) _exit(126);
        if (getppid() != parent) _exit(126); /* the test died before prctl */
        if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0) _exit(126);
#ifdef SYS_close_range
        if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0)
#endif
            for (fd = 3; fd < open_max; fd++) close((int)fd);
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        sigaction(SIGPIPE, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGUSR2, &sa, NULL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        if (write(2, msg, sizeof msg - 1) < 0) _exit(127);
        _exit(127);
    }
    close(logfd);
    close(nullfd);
    s->pid = pid;
    s->suspended = 0;
    return 0;
}

/* Waits until pid exits (1), the deadline passes (0) or it is not our child (-1). */
static int ns_reap(pid_t pid, uint32_t timeout_ms, int *status) {
    uint64_t deadline = ns_now_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (status) *status = st;
            return 1;
        }
        if (r < 0 && errno != EINTR) return -1;
        if (ns_now_ms() >= deadline) return 0;
        ns_sleep_ms(NS_POLL_MS);
    }
}

static void ns_describe_status(int st, char *buf, size_t size) {
    if (WIFEXITED(st))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, size, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, size, "status 0x%x", (unsigned)st);
}

/* ---- readiness: INFO line, then a JetStream API request ---------------------------- */

typedef struct ns_conn {
    int fd;
    char buf[16384];
    size_t len;
} ns_conn;

/* Reads more bytes before the deadline: 1 read, 0 timeout, -1 closed/error. */
static int ns_fill(ns_conn *c, uint64_t deadline) {
    struct pollfd p;
    ssize_t n;
    uint64_t now = ns_now_ms();
    if (c->len >= sizeof c->buf) return -1;
    if (now >= deadline) return 0;
    p.fd = c->fd;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, (int)(deadline - now)) <= 0) return 0;
    n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0) return -1;
    c->len += (size_t)n;
    return 1;
}

/* The next "\r\n"-terminated line (without it) into line: 1, 0 timeout, -1 error. */
static int ns_line(ns_conn *c, char *line, size_t size, uint64_t deadline) {
    for (;;) {
        char *end = NULL;
        size_t i;
        for (i = 0; i + 1 < c->len; i++)
            if (c->buf[i] == '\r' && c->buf[i + 1] == '\n') {
                end = c->buf + i;
                break;
            }
        if (end) {
            size_t n = (size_t)(end - c->buf);
            if (n >= size) return -1;
            memcpy(line, c->buf, n);
            line[n] = 0;
            memmove(c->buf, end + 2, c->len - n - 2);
            c->len -= n + 2;
            return 1;
        }
        {
            int r = ns_fill(c, deadline);
            if (r <= 0) return r;
        }
    }
}

/* n bytes of payload plus "\r\n" into out (NUL-terminated): 1, 0, -1 */
static int ns_payload(ns_conn *c, size_t n, char *out, size_t size, uint64_t deadline) {
    if (n + 2 > sizeof c->buf || n >= size) return -1;
    while (c->len < n + 2) {
        int r = ns_fill(c, deadline);
        if (r <= 0) return r;
    }
    memcpy(out, c->buf, n);
    out[n] = 0;
    memmove(c->buf, c->buf + n + 2, c->len - n - 2);
    c->len -= n + 2;
    return 1;
}

static int ns_send(int fd, const char *s) {
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        off += (size_t)n;
    }
    return 0;
}

/* copies the string value of "key":"..." from json into out */
static int ns_json_str(const char *json, const char *key, char *out, size_t size) {
    char pat[64];
    const char *p, *e;
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    p = strstr(json, pat);
    if (!p) return -1;
    p += strlen(pat);
    e = strchr(p, '"');
    if (!e || (size_t)(e - p) >= size) return -1;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = 0;
    return 0;
}

enum { NS_PROBE_READY, NS_PROBE_NOT_YET, NS_PROBE_FOREIGN, NS_PROBE_ERROR };

/* Connects to 127.0.0.1:port and reads the INFO line; when name is not NULL
 * the line must name that server. Sends CONNECT. NS_PROBE_READY with c->fd
 * open, else c->fd closed. */
static int ns_hello(ns_conn *c, int port, const char *name, char *version, size_t version_size, uint64_t deadline,
                    char *why, size_t why_size) {
    struct sockaddr_in a;
    char line[8192], got[64];
    int r, result = NS_PROBE_NOT_YET;

    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        snprintf(why, why_size, "socket: %s", strerror(errno));
        return NS_PROBE_ERROR;
    }
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        snprintf(why, why_size, "connect to 127.0.0.1:%d: %s", port, strerror(errno));
        goto fail;
    }
    r = ns_line(c, line, sizeof line, deadline);
    if (r <= 0 || strncmp(line, "INFO ", 5) != 0) {
        snprintf(why, why_size, "no INFO line from 127.0.0.1:%d", port);
        goto fail;
    }
    if (name && (ns_json_str(line, "server_name", got, sizeof got) != 0 || strcmp(got, name) != 0)) {
        snprintf(why, why_size, "127.0.0.1:%d is served by another server", port);
        result = NS_PROBE_FOREIGN;
        goto fail;
    }
    if (version && ns_json_str(line, "version", version, version_size) != 0) {
        snprintf(why, why_size, "INFO line without a version: %.200s", line);
        result = NS_PROBE_ERROR;
        goto fail;
    }
    if (!strstr(line, "\"jetstream\":true")) {
        snprintf(why, why_size, "INFO line says JetStream is off: %.200s", line);
        result = NS_PROBE_ERROR;
        goto fail;
    }
    if (ns_send(c->fd, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,"
                       "\"name\":\"parti-test-harness\"}\r\n") != 0) {
        snprintf(why, why_size, "send: %s", strerror(errno));
        goto fail;
    }
    return NS_PROBE_READY;
fail:
    close(c->fd);
    c->fd = -1;
    return result;
}

/* A request on a connection from ns_hello: 1 with the reply payload in out,
 * 0 no responders, -1 timeout or error (why says which). */
static int ns_request(ns_conn *c, const char *subject, const char *payload, char *out, size_t out_size,
                      uint64_t deadline, char *why, size_t why_size) {
    char line[8192];
    int rounds = 0;
    size_t plen = payload ? strlen(payload) : 0;
    char head[1024];
    if ((size_t)snprintf(head, sizeof head, "SUB _INBOX.harness.r 1\r\nPUB %s _INBOX.harness.r %lu\r\n", subject,
                         (unsigned long)plen) >= sizeof head) {
        snprintf(why, why_size, "subject too long");
        return -1;
    }
    if (ns_send(c->fd, head) != 0 || (plen && ns_send(c->fd, payload) != 0) || ns_send(c->fd, "\r\nPING\r\n") != 0) {
        snprintf(why, why_size, "send: %s", strerror(errno));
        return -1;
    }
    while (rounds++ < 64) {
        size_t n;
        const char *sp;
        int r = ns_line(c, line, sizeof line, deadline);
        if (r <= 0) {
            snprintf(why, why_size, r == 0 ? "no reply to %s in time" : "connection closed waiting for %s", subject);
            return -1;
        }
        if (strcmp(line, "PING") == 0) {
            if (ns_send(c->fd, "PONG\r\n") != 0) return -1;
            continue;
        }
        if (strcmp(line, "PONG") == 0 || strcmp(line, "+OK") == 0) continue;
        if (strncmp(line, "-ERR", 4) == 0) {
            snprintf(why, why_size, "server said %.200s", line);
            return -1;
        }
        if (strncmp(line, "HMSG ", 5) == 0) { /* only a status reply (503) comes with headers here */
            snprintf(why, why_size, "no responders for %s", subject);
            return 0;
        }
        if (strncmp(line, "MSG ", 4) != 0) continue;
        sp = strrchr(line, ' ');
        n = (size_t)strtoul(sp + 1, NULL, 10);
        if (ns_payload(c, n, out, out_size, deadline) <= 0) {
            snprintf(why, why_size, "short or oversized reply to %s", subject);
            return -1;
        }
        return 1;
    }
    snprintf(why, why_size, "no reply to %s", subject);
    return -1;
}

/* One probe of our port: INFO naming our server, then JetStream account info. */
static int ns_probe(nats_server *s, uint64_t deadline, char *why, size_t why_size) {
    ns_conn *c = (ns_conn *)calloc(1, sizeof *c);
    char reply[8192];
    int result;
    if (!c) return NS_PROBE_ERROR;
    result = ns_hello(c, s->port, s->name, s->version, sizeof s->version, deadline, why, why_size);
    if (result == NS_PROBE_READY) {
        int r = ns_request(c, "$JS.API.INFO", NULL, reply, sizeof reply, deadline, why, why_size);
        if (r <= 0)
            result = NS_PROBE_NOT_YET; /* no responders: JetStream not up yet */
        else if (!strstr(reply, "account_info_response") || strstr(reply, "\"error\"")) {
            snprintf(why, why_size, "JetStream API replied %.200s", reply);
            result = NS_PROBE_NOT_YET;
        }
        close(c->fd);
    }
    free(c);
    return result;
}

int nats_server_request(const nats_server *s, const char *subject, const char *payload, char *reply,
                        size_t reply_size, uint32_t timeout_ms, char *err, size_t err_size) {
    ns_conn *c;
    char why[512] = "";
    uint64_t deadline = ns_now_ms() + timeout_ms;
    int r;
    if (!s || !subject || !reply || !reply_size) {
        ns_err(err, err_size, "nats_server_request: bad arguments");
        return -1;
    }
    c = (ns_conn *)calloc(1, sizeof *c);
    if (!c) return -1;
    r = ns_hello(c, s->port, NULL, NULL, 0, deadline, why, sizeof why);
    if (r == NS_PROBE_READY) {
        r = ns_request(c, subject, payload, reply, reply_size, deadline, why, sizeof why);
        close(c->fd);
        if (r != 1) {
            ns_err(err, err_size, "%s", why);
            r = -1;
        } else {
            r = 0;
        }
    } else {
        ns_err(err, err_size, "%s", why);
        r = -1;
    }
    free(c);
    return r;
}

enum { NS_WAIT_READY, NS_WAIT_PORT_TAKEN, NS_WAIT_FAILED };

static int ns_log_says_port_taken(const nats_server *s) {
    FILE *f = fopen(s->log, "r");
    char line[1024];
    int taken = 0, lines = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f) && lines++ < 100000)
        if (strstr(line, "address already in use")) taken = 1;
        else if (strstr(line, "=== test harness: starting")) taken = 0; /* only the last start counts */
    fclose(f);
    return taken;
}

/* Polls until the spawned server is ready, has exited, or the deadline passes.
 * On anything but READY the child has been killed and reaped. */
static int ns_wait_ready(nats_server *s, uint64_t deadline, char *err, size_t err_size) {
    char why[512] = "not probed yet";
    int st = 0, polls = 0;
    for (;;) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        int p;
        if (r == s->pid) {
            char desc[64];
            s->pid = 0;
            if (ns_log_says_port_taken(s)) return NS_WAIT_PORT_TAKEN;
            ns_describe_status(st, desc, sizeof desc);
            ns_err(err, err_size, "nats-server %s %s before it was ready (port %d)", s->binary, desc, s->port);
            return NS_WAIT_FAILED;
        }
        {
            /* a probe gets at most 1 s, so a listener that is not our server
             * (accepts, never speaks) cannot hide our server's exit */
            uint64_t probe_deadline = ns_now_ms() + 1000u;
            p = ns_probe(s, probe_deadline < deadline ? probe_deadline : deadline, why, sizeof why);
        }
        if (p == NS_PROBE_READY) return NS_WAIT_READY;
        if (p == NS_PROBE_FOREIGN) {
            kill(s->pid, SIGKILL);
            ns_reap(s->pid, NS_KILL_REAP_MS, NULL);
            s->pid = 0;
            return NS_WAIT_PORT_TAKEN;
        }
        if (p == NS_PROBE_ERROR || ns_now_ms() >= deadline) {
            kill(s->pid, SIGKILL);
            ns_reap(s->pid, NS_KILL_REAP_MS, NULL);
            s->pid = 0;
            if (ns_log_says_port_taken(s)) return NS_WAIT_PORT_TAKEN;
            ns_err(err, err_size, "nats-server on port %d not ready after %u ms (%d polls): %s", s->port,
                   (unsigned)s->start_timeout_ms, polls, why);
            return NS_WAIT_FAILED;
        }
        polls++;
        ns_sleep_ms(NS_POLL_MS);
    }
}

/* ---- public API -------------------------------------------------------------------- */

static void ns_fail_log(const nats_server *s) {
    if (s->quiet) return;
    fprintf(stderr, "---- tail of %s ----\n", s->log);
    nats_server_print_log_tail(s, stderr, NS_LOG_TAIL_LINES);
    fprintf(stderr, "---- end of nats-server log ----\n");
}

int nats_server_start(nats_server **out, const nats_server_options *opts, char *err, size_t err_size) {
    nats_server *s;
    char tmpl[PATH_MAX], owner[PATH_MAX + 8];
    const char *base;
    FILE *f;
    int attempt;
    uint64_t deadline;

    if (!out) {
        ns_err(err, err_size, "nats_server_start: out is NULL");
        return -1;
    }
    *out = NULL;
    s = (nats_server *)calloc(1, sizeof *s);
    if (!s) {
        ns_err(err, err_size, "out of memory");
        return -1;
    }
    s->start_timeout_ms = opts && opts->start_timeout_ms ? opts->start_timeout_ms : NS_DEFAULT_START_MS;
    s->stop_timeout_ms = opts && opts->stop_timeout_ms ? opts->stop_timeout_ms : NS_DEFAULT_STOP_MS;
    s->quiet = opts ? opts->quiet : 0;
    s->owner = getpid();

    if (opts && opts->binary) {
        if (!ns_try(opts->binary, s->binary, sizeof s->binary)) {
            ns_err(err, err_size,
                   "nats-server binary %s: %s; run scripts/setup (make test does) or set PARTI_NATS_SERVER",
                   opts->binary, access(opts->binary, F_OK) == 0 ? "not executable" : "no such file");
            free(s);
            return -1;
        }
    } else if (nats_server_find_binary(s->binary, sizeof s->binary, err, err_size) != 0) {
        free(s);
        return -1;
    }

    nats_server_sweep_stale();
    if ((size_t)snprintf(tmpl, sizeof tmpl, "%s/%sXXXXXX", ns_tmpdir(), NS_DIR_PREFIX) >= sizeof tmpl ||
        !mkdtemp(tmpl)) {
        ns_err(err, err_size, "mkdtemp %s: %s", tmpl, strerror(errno));
        free(s);
        return -1;
    }
    memcpy(s->dir, tmpl, strlen(tmpl) + 1);
    snprintf(owner, sizeof owner, "%s/owner", s->dir);
    f = fopen(owner, "w");
    if (f) {
        char ns[128];
        ns_pid_namespace(ns, sizeof ns);
        fprintf(f, "%ld %llu %s\n", (long)getpid(), ns_start_time((long)getpid()), ns);
        fclose(f);
    }
    if ((size_t)snprintf(s->store, sizeof s->store, "%s/store", s->dir) >= sizeof s->store ||
        (size_t)snprintf(s->log, sizeof s->log, "%s/server.log", s->dir) >= sizeof s->log) {
        ns_err(err, err_size, "temporary directory path too long: %s", s->dir);
        ns_rmtree(s->dir);
        free(s);
        return -1;
    }
    if (mkdir(s->store, 0700) != 0) {
        ns_err(err, err_size, "mkdir %s: %s", s->store, strerror(errno));
        ns_rmtree(s->dir);
        free(s);
        return -1;
    }
    if (opts && opts->config) {
        FILE *cf;
        if ((size_t)snprintf(s->conf, sizeof s->conf, "%s/server.conf", s->dir) >= sizeof s->conf ||
            !(cf = fopen(s->conf, "w")) || fputs(opts->config, cf) < 0 || fclose(cf) != 0) {
            ns_err(err, err_size, "cannot write %s/server.conf", s->dir);
            ns_rmtree(s->dir);
            free(s);
            return -1;
        }
    }
    base = strrchr(s->dir, '/');
    if ((size_t)snprintf(s->name, sizeof s->name, "%s", base ? base + 1 : s->dir) >= sizeof s->name) {
        ns_err(err, err_size, "temporary directory name too long: %s", s->dir);
        ns_rmtree(s->dir);
        free(s);
        return -1;
    }

    deadline = ns_now_ms() + s->start_timeout_ms;
    for (attempt = 0; attempt < NS_PORT_ATTEMPTS; attempt++) {
        int w;
        s->port = opts && opts->port ? opts->port : ns_free_port();
        if (s->port <= 0) {
            ns_err(err, err_size, "no free port on 127.0.0.1: %s", strerror(errno));
            break;
        }
        snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
        if (ns_spawn(s, err, err_size) != 0) break;
        w = ns_wait_ready(s, deadline, err, err_size);
        if (w == NS_WAIT_READY) {
            *out = s;
            return 0;
        }
        if (w == NS_WAIT_FAILED) break;
        /* port taken by someone else between our probe bind and the server's */
        ns_err(err, err_size, "port %d was taken %d times in a row", s->port, attempt + 1);
        if (opts && opts->port) break;
    }
    ns_fail_log(s);
    ns_rmtree(s->dir);
    free(s);
    return -1;
}

int nats_server_terminate(nats_server *s, char *err, size_t err_size) {
    int st = 0, r, rc = 0;
    if (!s) return 0;
    if (s->owner != getpid()) {
        ns_err(err, err_size, "server %d belongs to process %ld", s->port, (long)s->owner);
        return -1;
    }
    if (!s->pid) return 0;
    kill(s->pid, SIGTERM);
    if (s->suspended) kill(s->pid, SIGCONT); /* a stopped process only acts on SIGTERM once continued */
    s->suspended = 0;
    r = ns_reap(s->pid, s->stop_timeout_ms, &st);
    if (r == 0) {
        ns_err(err, err_size, "nats-server (pid %ld) ignored SIGTERM for %u ms; killed", (long)s->pid,
               (unsigned)s->stop_timeout_ms);
        kill(s->pid, SIGKILL);
        r = ns_reap(s->pid, NS_KILL_REAP_MS, &st);
        rc = -1;
    }
    if (r == 0) {
        ns_err(err, err_size, "nats-server (pid %ld) survived SIGKILL for %u ms", (long)s->pid,
               (unsigned)NS_KILL_REAP_MS);
        return -1;
    }
    s->pid = 0;
    return rc;
}

int nats_server_kill(nats_server *s, char *err, size_t err_size) {
    if (!s) return 0;
    if (s->owner != getpid()) {
        ns_err(err, err_size, "server %d belongs to process %ld", s->port, (long)s->owner);
        return -1;
    }
    if (!s->pid) return 0;
    kill(s->pid, SIGKILL);
    if (ns_reap(s->pid, NS_KILL_REAP_MS, NULL) == 0) {
        ns_err(err, err_size, "nats-server (pid %ld) survived SIGKILL for %u ms", (long)s->pid,
               (unsigned)NS_KILL_REAP_MS);
        return -1;
    }
    s->pid = 0;
    s->suspended = 0;
    return 0;
}

int nats_server_stop(nats_server *s, char *err, size_t err_size) {
    int rc = 0;
    if (!s) return 0;
    if (s->owner != getpid()) { /* a copy inherited over fork: not ours to stop */
        free(s);
        return 0;
    }
    if (nats_server_terminate(s, err, err_size) != 0) {
        rc = -1;
        if (s->pid) nats_server_kill(s, NULL, 0);
    }
    if (ns_rmtree(s->dir) != 0) {
        if (!rc) ns_err(err, err_size, "cannot remove %s: %s", s->dir, strerror(errno));
        rc = -1;
    }
    free(s);
    return rc;
}

int nats_server_restart(nats_server *s, char *err, size_t err_size) {
    uint64_t deadline;
    int attempt;
    if (!s) {
        ns_err(err, err_size, "nats_server_restart: NULL server");
        return -1;
    }
    if (nats_server_terminate(s, err, err_size) != 0 && s->pid) return -1;
    deadline = ns_now_ms() + s->start_timeout_ms;
    for (attempt = 0; attempt < 1000; attempt++) {
        int w;
        if (ns_spawn(s, err, err_size) != 0) break;
        w = ns_wait_ready(s, deadline, err, err_size);
        if (w == NS_WAIT_READY) return 0;
        if (w == NS_WAIT_FAILED) break;
        if (ns_now_ms() >= deadline) {
            ns_err(err, err_size, "port %d stayed taken for %u ms; cannot restart on it", s->port,
                   (unsigned)s->start_timeout_ms);
            break;
        }
        ns_sleep_ms(50); /* the same port must come free: poll it */
    }
    ns_fail_log(s);
    return -1;
}

/* 1 once /proc/<pid>/stat shows the process in state want, within ms. */
static int ns_wait_state(pid_t pid, char want, uint32_t ms) {
    char path[64], buf[512], *p;
    uint32_t waited;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (waited = 0; waited <= ms; waited++) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[n] = 0;
        /* "pid (comm) S ...": the state follows the last ')' */
        if ((p = strrchr(buf, ')')) != NULL && p[1] == ' ' && p[2] == want) return 1;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return 0;
}

int nats_server_suspend(nats_server *s, char *err, size_t err_size) {
    if (!s || !s->pid || s->owner != getpid()) {
        ns_err(err, err_size, "no running server to suspend");
        return -1;
    }
    if (kill(s->pid, SIGSTOP) != 0) {
        ns_err(err, err_size, "SIGSTOP: %s", strerror(errno));
        return -1;
    }
    s->suspended = 1;
    /* the signal is delivered asynchronously: return only once the process is
     * stopped (state T in /proc), so nothing sent after this is handled */
    if (!ns_wait_state(s->pid, 'T', 2000)) {
        ns_err(err, err_size, "SIGSTOP: the server was not stopped within 2 s");
        return -1;
    }
    return 0;
}

int nats_server_resume(nats_server *s, char *err, size_t err_size) {
    if (!s || !s->pid || s->owner != getpid()) {
        ns_err(err, err_size, "no running server to resume");
        return -1;
    }
    if (kill(s->pid, SIGCONT) != 0) {
        ns_err(err, err_size, "SIGCONT: %s", strerror(errno));
        return -1;
    }
    s->suspended = 0;
    return 0;
}

void nats_server_set_timeouts(nats_server *s, uint32_t start_timeout_ms, uint32_t stop_timeout_ms) {
    if (!s) return;
    s->start_timeout_ms = start_timeout_ms ? start_timeout_ms : NS_DEFAULT_START_MS;
    s->stop_timeout_ms = stop_timeout_ms ? stop_timeout_ms : NS_DEFAULT_STOP_MS;
}

const char *nats_server_url(const nats_server *s) { return s ? s->url : ""; }
const char *nats_server_version(const nats_server *s) { return s ? s->version : ""; }
int nats_server_port(const nats_server *s) { return s ? s->port : 0; }
pid_t nats_server_pid(const nats_server *s) { return s ? s->pid : 0; }
int nats_server_running(const nats_server *s) { return s && s->pid != 0; }
int nats_server_suspended(const nats_server *s) { return s && s->suspended; }
const char *nats_server_dir(const nats_server *s) { return s ? s->dir : ""; }
const char *nats_server_store_dir(const nats_server *s) { return s ? s->store : ""; }
const char *nats_server_log_path(const nats_server *s) { return s ? s->log : ""; }

int nats_server_version_at_least(const nats_server *s, int major, int minor, int patch) {
    int a, b, c;
    if (!s || nats_server_parse_version(s->version, &a, &b, &c) != 0) return 0;
    if (a != major) return a > major;
    if (b != minor) return b > minor;
    return c >= patch;
}

void nats_server_print_log_tail(const nats_server *s, FILE *out, int lines) {
    FILE *f;
    long size, from;
    char *buf;
    size_t n, i, start;
    int seen = 0;
    if (!s || !out || lines <= 0) return;
    f = fopen(s->log, "r");
    if (!f) {
        fprintf(out, "(no log at %s)\n", s->log);
        return;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0) {
        fclose(f);
        return;
    }
    from = size > 65536 ? size - 65536 : 0;
    buf = (char *)malloc((size_t)(size - from) + 1);
    if (!buf || fseek(f, from, SEEK_SET) != 0) {
        free(buf);
        fclose(f);
        return;
    }
    n = fread(buf, 1, (size_t)(size - from), f);
    fclose(f);
    buf[n] = 0;
    start = 0;
    for (i = n; i > 0; i--)
        if (buf[i - 1] == '\n' && i != n && ++seen >= lines) {
            start = i;
            break;
        }
    fputs(buf + start, out);
    if (n && buf[n - 1] != '\n') fputc('\n', out);
    free(buf);
}

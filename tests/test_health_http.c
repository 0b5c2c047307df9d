/* The HTTP health endpoints of examples/health_server.c, scraped with curl,
 * against a real nats-server that is stopped and started again: ready flips
 * to 503 while NATS is down (the process stays alive and near idle) and back
 * to 200 after. Bounded polling with deadlines. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"
#include "nats_server.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static nats_server *srv;
static pid_t child;
static int http_port;
static char body[70000];

static void nap_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int free_port(void) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
              getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* GET path with curl; returns the status code (0 when curl could not connect), body in body. */
static int get(const char *path) {
    char url[128], out[] = "/tmp/parti-health-XXXXXX", code[16] = "";
    int fd = mkstemp(out), pipefd[2], status = 0;
    ssize_t n;
    FILE *f;
    pid_t pid;
    cr_assert(fd >= 0);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", http_port, path);
    cr_assert_eq(pipe(pipefd), 0);
    pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        execlp("curl", "curl", "-s", "--max-time", "2", "-o", out, "-w", "%{http_code}", url, (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    n = read(pipefd[0], code, sizeof code - 1);
    close(pipefd[0]);
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 127, "curl is missing (scripts/setup installs it)");
    code[n > 0 ? n : 0] = 0;
    body[0] = 0;
    if ((f = fopen(out, "r")) != NULL) {
        size_t got = fread(body, 1, sizeof body - 1, f);
        body[got] = 0;
        fclose(f);
    }
    unlink(out);
    return atoi(code);
}

static int wait_status(const char *path, int want, uint32_t deadline_ms) {
    uint64_t t0 = ms_now();
    int code = 0;
    while (ms_now() - t0 < deadline_ms) {
        if ((code = get(path)) == want) return 1;
        nap_ms(100); /* the poll interval of a probe, bounded by the deadline */
    }
    return 0;
}

static double child_cpu_s(void) {
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    int i;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)child);
    if (!(f = fopen(path, "r"))) return -1;
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    p = strrchr(buf, ')'); /* fields after the command name */
    if (!p) return -1;
    for (i = 0; i < 12 && p; i++) p = strchr(p + 1, ' '); /* to field 14 (utime) */
    if (!p || sscanf(p + 1, "%lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void setup(void) {
    char err[512], port[16];
    const char *bin = getenv("HEALTH_SERVER_BIN") ? getenv("HEALTH_SERVER_BIN") : "build/health_server";
    cr_assert_eq(nats_server_start(&srv, NULL, err, sizeof err), 0, "%s", err);
    http_port = free_port();
    snprintf(port, sizeof port, "%d", http_port);
    child = fork();
    cr_assert(child >= 0);
    if (child == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 2); /* its log */
        execl(bin, bin, nats_server_url(srv), port, "health", (char *)NULL);
        _exit(127);
    }
}

static void teardown(void) {
    if (child > 0) {
        int status;
        uint64_t t0 = ms_now();
        kill(child, SIGTERM);
        while (waitpid(child, &status, WNOHANG) == 0) {
            if (ms_now() - t0 > 10000) {
                kill(child, SIGKILL);
                waitpid(child, &status, 0);
                break;
            }
            nap_ms(20);
        }
    }
    nats_server_stop(srv, NULL, 0);
}

TestSuite(health_http, .init = setup, .fini = teardown, .timeout = 120);

Test(health_http, endpoints_answer_and_ready_follows_nats) {
    char err[512];
    parti_json_doc doc;
    int ready = -1, status;
    uint64_t t0, down_ms, up_ms;
    double cpu0, cpu;
    cr_assert(wait_status("/health/live", 200, 20000), "/health/live never answered 200");
    cr_assert(wait_status("/health/ready", 200, 20000), "never ready: %s", body);
    cr_assert_eq(get("/health"), 200);
    cr_assert_eq(parti_json_parse(&doc, body, strlen(body), NULL, NULL, 0), PARTI_ERR_OK, "%s", body);
    cr_assert_eq(parti_json_get_bool(&doc, parti_json_root(&doc), "ready", &ready), PARTI_ERR_OK);
    cr_assert_eq(ready, 1);
    parti_json_doc_free(&doc);
    cr_assert_eq(get("/metrics"), 200);
    cr_assert(strstr(body, "# TYPE parti_worker_consumer_updates_total counter"), "%.300s", body);
    cr_assert(strstr(body, "parti_is_leader{worker=\"worker-0\"} 1"), "%.2000s", body);
    cr_assert_eq(get("/nope"), 404);

    /* NATS goes away: not ready, still live, no crash loop, near idle */
    cr_assert_eq(nats_server_terminate(srv, err, sizeof err), 0, "%s", err);
    t0 = ms_now();
    cr_assert(wait_status("/health/ready", 503, 15000), "still ready with NATS down");
    down_ms = ms_now() - t0;
    cr_assert_eq(get("/health"), 503);
    cr_assert(strstr(body, "\"ready\":false"), "%s", body);
    cr_assert(strstr(body, "\"connection\":{\"ok\":false}") || strstr(body, "\"kv\":{\"ok\":false"), "%s", body);
    cr_assert_eq(get("/health/live"), 200);
    cpu0 = child_cpu_s();
    t0 = ms_now();
    while (ms_now() - t0 < 10000) nap_ms(100); /* measuring: a fixed 10 s window on purpose */
    cpu = (child_cpu_s() - cpu0) / ((double)(ms_now() - t0) / 1000.0);
    cr_assert_eq(waitpid(child, &status, WNOHANG), 0, "the worker exited during the outage");
    cr_log_info("NATS down: not ready after %llu ms; worker CPU %.1f%% of one core", (unsigned long long)down_ms,
                cpu * 100);
    cr_assert_lt(cpu, 0.30, "busy while NATS is down: %.0f%% of a core", cpu * 100);

    /* NATS is back: ready again */
    cr_assert_eq(nats_server_restart(srv, err, sizeof err), 0, "%s", err);
    t0 = ms_now();
    cr_assert(wait_status("/health/ready", 200, 30000), "not ready again after NATS came back: %s", body);
    up_ms = ms_now() - t0;
    cr_log_info("NATS back: ready after %llu ms", (unsigned long long)up_ms);
    printf("health endpoints: not ready %llu ms after NATS stopped, CPU %.1f%% of a core while down, ready %llu ms "
           "after it restarted\n", (unsigned long long)down_ms, cpu * 100, (unsigned long long)up_ms);
}

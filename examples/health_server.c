/* A parti worker that serves its health and metrics over HTTP
 * (libmicrohttpd, loopback only):
 *   /health/live    200 "live" while the worker runs, else 503
 *   /health/ready   200 "ready" when parti_health_of says ready, else 503
 *   /health         parti_health_json, 200 when ready else 503
 *   /metrics        Prometheus text (parti_metrics_write, label worker="...")
 *
 *   health_server nats://127.0.0.1:4222 8080 [stream]
 *
 * parti objects are not thread-safe: the main thread polls the worker and,
 * after every poll, renders the four answers into buffers under a mutex; the
 * HTTP thread only copies them. Logs go to stderr (console sink, info).
 * SIGTERM / SIGINT: leave the group and exit. */
#define _POSIX_C_SOURCE 200809L
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE 65536

static struct {
    pthread_mutex_t mu;
    int live, ready;
    char status[32];
    char json[PAGE];
    char metrics[PAGE];
} page = {PTHREAD_MUTEX_INITIALIZER, 1, 0, "starting", "{}", ""};

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static parti_verdict on_message(void *user, const parti_msg *m, uint32_t *d) {
    (void)user, (void)m, (void)d;
    return PARTI_ACK;
}

/* Renders what the HTTP thread serves (main thread only). */
static void render(parti *p) {
    static char json[PAGE], metrics[PAGE];
    parti_health h;
    parti_label worker = {"worker", parti_worker_id(p)[0] ? parti_worker_id(p) : "none"};
    size_t need;
    parti_health_of(p, &h);
    if (parti_health_json(p, json, sizeof json, &need) != PARTI_ERR_OK) snprintf(json, sizeof json, "{}");
    if (parti_metrics_write(parti_metrics_of(p), &worker, 1, metrics, sizeof metrics, &need) != PARTI_ERR_OK)
        metrics[0] = 0;
    pthread_mutex_lock(&page.mu);
    page.live = h.live;
    page.ready = h.ready;
    snprintf(page.status, sizeof page.status, "%s", h.ready ? "ready" : h.degraded ? "degraded" : "not_ready");
    memcpy(page.json, json, sizeof json);
    memcpy(page.metrics, metrics, sizeof metrics);
    pthread_mutex_unlock(&page.mu);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **state) {
    static char body[PAGE + 2];
    const char *type = "text/plain";
    unsigned code = 200;
    struct MHD_Response *r;
    enum MHD_Result ret;
    (void)cls, (void)version, (void)upload, (void)upload_size, (void)state;
    if (strcmp(method, "GET") != 0) return MHD_NO;
    pthread_mutex_lock(&page.mu);
    if (strcmp(url, "/health/live") == 0) {
        code = page.live ? 200 : 503;
        snprintf(body, sizeof body, "%s\n", page.live ? "live" : "stopped");
    } else if (strcmp(url, "/health/ready") == 0) {
        code = page.ready ? 200 : 503;
        snprintf(body, sizeof body, "%s\n", page.status);
    } else if (strcmp(url, "/health") == 0) {
        code = page.ready ? 200 : 503;
        type = "application/json";
        snprintf(body, sizeof body, "%s\n", page.json);
    } else if (strcmp(url, "/metrics") == 0) {
        type = "text/plain; version=0.0.4";
        snprintf(body, sizeof body, "%s", page.metrics);
    } else {
        code = 404;
        snprintf(body, sizeof body, "not found\n");
    }
    r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    pthread_mutex_unlock(&page.mu);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static const char *const keys[4][1] = {{"p0"}, {"p1"}, {"p2"}, {"p3"}};
static const parti_partition parts[4] = {{keys[0], 1, 1}, {keys[1], 1, 1}, {keys[2], 1, 1}, {keys[3], 1, 1}};

int main(int argc, char **argv) {
    char err[256], tmpl[96], subj[96];
    const char *subjp = subj;
    const char *stream = argc > 3 ? argv[3] : "health";
    parti_transport t;
    parti_nats_options no;
    parti_stream_config sc;
    parti_config cfg;
    parti_options o;
    struct sockaddr_in sa;
    struct MHD_Daemon *d;
    parti *p;
    parti_err e;
    int port = argc > 2 ? atoi(argv[2]) : 0;
    if (argc < 3 || port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s nats://127.0.0.1:4222 HTTP_PORT [stream]\n", argv[0]);
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    memset(&no, 0, sizeof no);
    no.reconnect_wait_ms = 200; /* reconnect forever (max_reconnect 0) */
    if ((e = parti_nats_connect(&t, argv[1], &no, err, sizeof err)) != PARTI_ERR_OK) {
        fprintf(stderr, "connect: %s: %s\n", parti_strerror(e), err);
        return 1;
    }
    snprintf(tmpl, sizeof tmpl, "%s.{0}", stream);
    snprintf(subj, sizeof subj, "%s.>", stream);
    memset(&sc, 0, sizeof sc);
    sc.name = stream;
    sc.subjects = &subjp;
    sc.subject_count = 1;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = stream;
    cfg.subject_template = tmpl;
    cfg.partitions = parts;
    cfg.partition_count = 4;
    cfg.fetch_expires_ms = 1000;
    cfg.fetch_heartbeat_ms = 250;
    memset(&o, 0, sizeof o);
    o.on_message = on_message;
    o.create_stream = &sc; /* this example owns its stream */
    o.heartbeat_ms = 250;
    o.member_ttl_ms = 1500;
    o.cold_start_ms = 200;
    o.consumer.op_timeout_ms = 1000;
    o.op_timeout_ms = 1000;
    o.log = parti_log_to_console;
    if ((e = parti_create(&p, &t, &cfg, &o, err, sizeof err)) != PARTI_ERR_OK) {
        fprintf(stderr, "create: %s: %s\n", parti_strerror(e), err);
        return 1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (unsigned short)port, NULL, NULL, answer, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "cannot serve HTTP on 127.0.0.1:%d\n", port);
        parti_destroy(p);
        parti_nats_close(&t);
        return 1;
    }
    fprintf(stderr, "serving /health/live /health/ready /health /metrics on http://127.0.0.1:%d\n", port);
    while (!stop) {
        e = parti_poll(p, 100);
        render(p);
        if (e != PARTI_ERR_OK) {
            fprintf(stderr, "worker stopped: %s\n", parti_strerror(e));
            break;
        }
    }
    parti_leave(p, 2000);
    render(p);
    MHD_stop_daemon(d);
    parti_destroy(p);
    parti_nats_close(&t);
    nats_Close();
    return 0;
}

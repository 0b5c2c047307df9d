/* parti_nats.h - transports for parti.h - v0.1.0
 * MIT or public domain, as parti.h.
 *
 * Two implementations of the parti_transport vtable (see parti.h):
 *
 *   THE FAKE NATS (always available, needs no nats.c)
 *     One in-memory "server" (a parti_fake_world) that many clients connect
 *     to, with a virtual clock the test advances, and the JetStream semantics
 *     parti depends on: streams with wildcard subjects, Nats-Msg-Id dedupe,
 *     durable pull consumers with filter_subjects (an in-place update keeps the
 *     position and never rewinds; a removed subject's unacked messages are
 *     still redelivered), ack_wait redelivery, nak delay, term, in-progress,
 *     max_deliver, max_ack_pending, num_pending; KV buckets with revisions,
 *     create-if-absent, compare-and-swap, history, TTL expiry on the virtual
 *     clock (with expiry markers, as nats-server >= 2.11 writes them, or
 *     silent, as 2.10) and watchers. Every operation and its result is written
 *     to an event log; the same seed and the same calls give the same bytes.
 *
 *     Faults you can inject: delete a consumer or a stream behind the
 *     clients' backs, stop fetch heartbeats, fail the next N calls of an
 *     operation with a chosen status, add latency to an operation, cut a
 *     client off and heal it, restart the server (pending pulls end with
 *     SERVER_SHUTDOWN; file-storage streams, consumers and KV survive,
 *     memory-storage ones are lost), expire a key early, skew one client's
 *     clock, and the ambiguous writes of real servers: a write applied whose
 *     reply is lost (the caller sees TIMEOUT), a KV write applied late
 *     (a stalled process's buffered write landing after the world moved on),
 *     and a pulled message lost in transit (counted delivered by the server,
 *     never seen by the client, redelivered after ack_wait).
 *     A wait hook lets a scheduler run many clients on threads, one at a
 *     time, on the shared virtual clock (the whole-group simulator).
 *
 *     Time: nothing happens until time moves. parti_fake_advance moves the
 *     clock and runs what falls due (KV expiry, consumer inactivity). With
 *     auto-advance (the default), a call that would wait on a real server
 *     (fetch_next with a timeout, an operation with injected latency) moves
 *     the clock instead, just as far as the wait would have lasted, so a
 *     single-threaded loop of several clients sees consistent time.
 *
 *       parti_fake_world *w;
 *       parti_transport t;
 *       parti_fake_world_create(&w, NULL);        // seed 1, auto-advance on
 *       parti_fake_connect(w, "worker-a", &t);
 *       ... use t.vt->... or hand t to parti ...
 *       parti_fake_advance(w, 30000);             // 30 virtual seconds
 *       parti_fake_disconnect(&t);
 *       parti_fake_world_destroy(w);
 *
 *     Not modelled (on purpose): clustering and replicas, stream limits other
 *     than max_msgs (a message max_msgs removes stops being pending, as on
 *     the server), purge, consumer pause,
 *     subject transforms, mirrors and sources, message size limits of
 *     streams. Acks are fire-and-forget, as natsMsg_Ack: an ack of a message
 *     whose consumer is gone succeeds and does nothing.
 *
 *   THE NATS.C BINDING
 *     parti_nats_connect() gives a transport over a real nats-server (>= 2.10)
 *     through nats.c; see "The nats.c binding" below. Link with -lnats and
 *     compile the implementation file with POSIX (-D_POSIX_C_SOURCE=200809L).
 *     Define PARTI_NATS_NO_NATSC to leave the binding out: the fake never
 *     needs nats.c.
 *
 * Include after parti.h; the implementation is compiled where
 * PARTI_IMPLEMENTATION is defined.
 */
#ifndef PARTI_NATS_H
#define PARTI_NATS_H

#include "parti.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct parti_fake_world parti_fake_world;

typedef struct parti_fake_options {
    uint64_t seed;          /* RNG seed of the clients (each client derives its own); 0 = 1 */
    uint64_t start_ms;      /* initial virtual time; 0 = 1000000 */
    int no_auto_advance;    /* 1: waits return at once, only parti_fake_advance moves time */
    int no_expiry_markers;  /* 1: KV TTL expiry is silent to watchers (nats-server 2.10) */
    int no_log;             /* 1: keep no event log */
    /* Cooperative scheduling, for running many clients on threads of one
     * simulated machine (tests/sim.c): when set, every wait of a client
     * (fetch_next with a timeout, sleep_ms, injected latency) calls
     * wait(wait_user, until_ms, wakeable) instead of moving the clock. The
     * hook returns once the scheduler has moved the clock (with
     * parti_fake_advance) to until_ms, or earlier when wakeable is 1 and
     * something a pull may be waiting for happened meanwhile; the fake then
     * looks again. Only one client may run at a time. */
    void (*wait)(void *wait_user, uint64_t until_ms, int wakeable);
    void *wait_user;
} parti_fake_options;

PARTIDEF parti_err parti_fake_world_create(parti_fake_world **out, const parti_fake_options *opts);
/* Frees the world; clients must have been disconnected first (else they are
 * freed too, and their parti_transport must not be used again). */
PARTIDEF void parti_fake_world_destroy(parti_fake_world *w);
PARTIDEF uint64_t parti_fake_now(const parti_fake_world *w);
/* Moves the virtual clock forward and runs what falls due. */
PARTIDEF void parti_fake_advance(parti_fake_world *w, uint64_t ms);

/* A new client of the world; name (may be NULL) shows in the event log. */
PARTIDEF parti_err parti_fake_connect(parti_fake_world *w, const char *name, parti_transport *out);
PARTIDEF void parti_fake_disconnect(parti_transport *t);

/* Faults. client = NULL means every client connected now. op is a vtable
 * field name ("kv_get", "fetch_next", "consumer_upsert", ...). */
PARTIDEF parti_err parti_fake_delete_consumer(parti_fake_world *w, const char *stream, const char *durable);
PARTIDEF parti_err parti_fake_delete_stream(parti_fake_world *w, const char *stream);
/* How many durable consumers stream has (-1: no such stream). */
PARTIDEF int parti_fake_consumer_count(const parti_fake_world *w, const char *stream);
PARTIDEF void parti_fake_drop_heartbeats(parti_fake_world *w, parti_transport *client, int on);
PARTIDEF parti_err parti_fake_fail_next(parti_fake_world *w, parti_transport *client, const char *op, int n,
                                        parti_err status);
PARTIDEF parti_err parti_fake_set_latency(parti_fake_world *w, parti_transport *client, const char *op, uint32_t ms);
/* Ambiguous writes, as a real server produces them. The next n calls of op
 * (kv_create, kv_update, kv_put, kv_delete, publish, consumer_upsert or
 * consumer_delete) are applied, but their replies are lost: each call waits
 * its whole timeout and returns PARTI_ERR_TIMEOUT. */
PARTIDEF parti_err parti_fake_lose_replies(parti_fake_world *w, parti_transport *client, const char *op, int n);
/* The next n KV writes of op (kv_create, kv_update, kv_put or kv_delete) wait
 * their whole timeout and return PARTI_ERR_TIMEOUT, and are applied delay_ms
 * after they were sent (with the expected revision they carried): the
 * buffered writes of a stalled process arriving after the world moved on. */
PARTIDEF parti_err parti_fake_apply_late(parti_fake_world *w, parti_transport *client, const char *op, int n,
                                         uint32_t delay_ms);
/* Deliveries lost in transit, as on a real server when a connection drops (or
 * the server cuts a slow client off) while messages of a pull are on the
 * wire: the next n messages the server hands to client's pulls (any durable)
 * count as delivered (ack pending, the consumer sequence advances, the
 * pull's batch and max_bytes are spent) but fetch_next never returns them;
 * the pull goes on with the messages after them, and each lost one is
 * redelivered after ack_wait with a higher delivery count. */
PARTIDEF parti_err parti_fake_lose_deliveries(parti_fake_world *w, parti_transport *client, int n);
PARTIDEF void parti_fake_partition(parti_fake_world *w, parti_transport *client, int cut);
/* Restarts the server: pending pulls end with SERVER_SHUTDOWN; file-storage
 * streams (with their consumers) and buckets survive, memory-storage ones are
 * lost, as on nats-server. */
PARTIDEF void parti_fake_restart(parti_fake_world *w);
PARTIDEF parti_err parti_fake_expire_key(parti_fake_world *w, const char *bucket, const char *key);
PARTIDEF void parti_fake_skew_clock(parti_fake_world *w, parti_transport *client, int64_t ms);
/* The event log: one line per operation, "<time> <client> <op> <args> -> <result>". */
PARTIDEF const char *parti_fake_log(const parti_fake_world *w, size_t *len);


/* ======================================================================== */
/* The nats.c binding                                                        */
/* ======================================================================== */
/* A parti_transport over a real nats-server through nats.c (Debian
 * libnats-dev 3.4; link -lnats). Needs nats-server >= 2.10 (multi-subject
 * consumer filters): parti_nats_connect reads the server's version and
 * refuses older servers with PARTI_ERR_SERVER_TOO_OLD rather than letting a
 * 2.9 server silently consume the whole stream. On >= 2.11 KV buckets are
 * created with subject delete markers, so watchers see TTL expiry
 * (PARTI_KV_EXPIRED) when it happens; on 2.10 expiry is silent and must be
 * polled.
 *
 * Everything goes through the JetStream API with per-call timeouts: streams,
 * consumers (full config JSON on every upsert, as nats.c 3.4 cannot express
 * filter_subjects), KV (a stream KV_<bucket> on subjects $KV.<bucket>.>, as
 * every NATS client lays it out), pulls (raw pull requests with idle
 * heartbeats, so every status is seen) and watchers (a push consumer with
 * idle heartbeats; after a reconnect, or three missed heartbeats, it is set
 * up again from the last seen revision, or from revision 1 when the bucket
 * was re-created, in steps that never block kv_watch_next).
 * Timing: every call returns within its timeout_ms; calls of several
 * requests (kv_keys, kv_create) share one budget; socket writes fail after
 * write_deadline_ms instead of blocking on a hung server, so a call that
 * writes (ack, fetch_start, and any call that first sends held acks, below)
 * returns within timeout_ms + write_deadline_ms. fetch_start writes its
 * pull at once rather than after the millisecond nats.c's flusher sleeps
 * before each write. kv_update_many (at most 64 writes) writes all its
 * requests before it reads a reply (one budget for all), so the server
 * stores them back to back: a leader's member key and leader key, renewed
 * so, were stored a median 10-15 us apart against 176-276 us for two
 * kv_update calls in a row (test kv_update_many_stores_its_writes_back_to_back).
 * Plain acks (+ACK) are held and sent in bursts: with an ack given once the
 * oldest held one is 4 ms old (a coarse clock: 4-8 ms), every 1024, when the
 * pull has had nothing buffered for a millisecond (written at once then),
 * before any other call that talks to the server (requests, pulls, other
 * acks, sleep_ms), at flush (the worker consumer calls it before
 * parti_consumer_poll returns and when it is destroyed) and at close. So an
 * ack waits at most those milliseconds or until the next message's handler
 * returns. Held acks delay deliveries only when they hold the consumer at
 * its max_ack_pending: by that millisecond plus the acks' way to the server
 * and the next deliveries' way back (1.2-6.4 ms per stall measured at
 * max_ack_pending 1000 on a loaded 2-core host, as with bursts of 256).
 * Acks held when the
 * connection drops and the transport is closed before it is back are lost
 * (as are those in nats.c's buffers): the server sends those messages again
 * after ack_wait; a group worker settles them by its checkpoints, a
 * standalone consumer handles them again.
 * Released deliveries are given back to nats.c together (at most 1024, or
 * 1 MiB of payload and headers, are held; the rest at flush and at close):
 * nats.c frees messages on a thread of its own and wakes it for each one it
 * is given while it sleeps.
 * Server times (message timestamps, KV write times) are converted to the
 * transport clock; for deliveries with a wall/transport clock pair read
 * again only for a message stored after its reading, after each wait and
 * every 256 messages (dated as with a fresh pair, unless the wall clock was
 * stepped since). JetStream errors map to typed errors by what to do (see
 * parti_js_api_error_described).
 * Requests take their replies on one synchronous subscription of the
 * connection (a timed-out request gives it up, so a late reply never answers
 * a later request); subscriptions given up while connected are freed only
 * after a later request's reply came or the connection closed (nats.c < 3.6
 * may still be reading a message into them: nats.c issue 637).
 * The implementation needs POSIX (sockets, clock_gettime): compile it with
 * -D_POSIX_C_SOURCE=200809L or in gnu mode. */
#ifndef PARTI_NATS_NO_NATSC

typedef struct parti_nats_options {
    uint32_t connect_timeout_ms;   /* 0 = 2000 */
    int max_reconnect;             /* reconnect attempts; 0 = forever, < 0 = never */
    uint32_t reconnect_wait_ms;    /* between attempts; 0 = 250 */
    uint32_t reconnect_jitter_ms;  /* up to this much random extra per attempt, so many workers do not
                                      reconnect in lockstep; 0 = 100 */
    const char *name;              /* connection name shown by the server; 0 = "parti" */
    uint32_t write_deadline_ms;    /* a socket write that cannot finish in this long fails (the connection
                                      then reconnects) instead of blocking; 0 = 1000 */
    int no_expiry_markers;         /* 1: never use subject delete markers (as on 2.10) */
} parti_nats_options;

/* Connects to url ("nats://127.0.0.1:4222", or a comma-separated list).
 * Errors: PARTI_ERR_NOT_CONNECTED (no server), PARTI_ERR_SERVER_TOO_OLD,
 * PARTI_ERR_UNSUPPORTED (JetStream off), PARTI_ERR_PERMISSION_DENIED,
 * PARTI_ERR_INVALID_ARGUMENT; msg says which and why. */
PARTIDEF parti_err parti_nats_connect(parti_transport *out, const char *url, const parti_nats_options *opts, char *msg,
                                      size_t msg_size);
PARTIDEF void parti_nats_close(parti_transport *t);
/* "2.15.1" */
PARTIDEF const char *parti_nats_server_version(const parti_transport *t);
/* The last error text the server or nats.c gave on this transport; never NULL. */
PARTIDEF const char *parti_nats_last_error(const parti_transport *t);

#endif /* PARTI_NATS_NO_NATSC */

#ifdef __cplusplus
}
#endif
#endif /* PARTI_NATS_H */

#if defined(PARTI_IMPLEMENTATION) && !defined(PARTI_NATS__IMPLEMENTED)
#define PARTI_NATS__IMPLEMENTED

#ifdef __cplusplus
extern "C" {
#endif

/* Every vtable operation, for fault injection by name. */
#define PARTI__FAKE_OPS(X)                                                                                         \
    X(stream_create) X(stream_info) X(stream_delete) X(kv_open) X(kv_create) X(kv_update) X(kv_put) X(kv_get)     \
    X(kv_delete) X(kv_keys) X(kv_watch) X(kv_watch_next) X(consumer_upsert) X(consumer_info) X(consumer_delete)    \
    X(fetch_start) X(fetch_next) X(ack) X(publish) X(stream_get_next)

enum {
#define PARTI__FAKE_OP_ENUM(name) PARTI__FOP_##name,
    PARTI__FAKE_OPS(PARTI__FAKE_OP_ENUM)
#undef PARTI__FAKE_OP_ENUM
    PARTI__FOP_COUNT
};

static const char *const parti__fake_op_names[] = {
#define PARTI__FAKE_OP_NAME(name) #name,
    PARTI__FAKE_OPS(PARTI__FAKE_OP_NAME)
#undef PARTI__FAKE_OP_NAME
};

typedef struct parti__fmsg {
    uint64_t seq, ts;
    char *subject;
    uint8_t *data;
    size_t len;
    parti_header *hdrs; /* stb_ds array; strings owned */
} parti__fmsg;

typedef struct parti__fdedupe {
    char *id;
    uint64_t seq, ts;
} parti__fdedupe;

typedef struct parti__fpend {
    uint64_t seq, deadline;
    uint32_t deliveries;
} parti__fpend;

typedef struct parti__fconsumer {
    char *name;
    char **filters; /* stb_ds array */
    uint64_t ack_wait, inactive, last_active;
    int max_deliver, max_ack_pending;
    uint64_t position, cseq, redelivered, instance;
    parti__fpend *pend; /* stb_ds array, by seq */
    parti_deliver_policy deliver; /* fixed at creation, as on the server */
    uint64_t start_seq;
} parti__fconsumer;

typedef struct parti__fstream {
    char *name;
    char **subjects; /* stb_ds array */
    int memory;
    uint64_t dupwin, max_msgs, last_seq;
    uint64_t created_ns;    /* the world's clock in ns, made unique per creation */
    parti_retention retention;
    parti__fmsg *msgs;      /* stb_ds array, ascending seq */
    parti__fdedupe *dedupe; /* stb_ds array, ascending ts */
    parti__fconsumer **consumers;
} parti__fstream;

typedef struct parti__frec {
    char *key;
    uint8_t *value;
    size_t len;
    uint64_t rev, ts;
    parti_kv_op op;
} parti__frec;

typedef struct parti__fbucket {
    char *name;
    uint32_t history;
    uint64_t ttl;
    size_t max_value;
    int memory;
    parti__frec *recs; /* stb_ds array, ascending rev (and ts) */
    uint64_t last_rev;
} parti__fbucket;

typedef struct parti__fclient parti__fclient;

typedef struct parti__fwatch {
    parti__fclient *c;
    char *bucket, *prefix;
    parti_kv_entry *queue; /* stb_ds array */
    size_t head;
} parti__fwatch; /* what a parti_kv_watcher handed out by the fake points to */

typedef struct parti__fpull {
    char *stream, *consumer;
    uint64_t instance, expires_at, last_activity;
    int active, remaining, delivered;
    int64_t bytes_left; /* < 0: no limit */
    uint32_t hb;
    parti_err terminal; /* status to report next, PARTI_ERR_OK if none */
} parti__fpull;

typedef struct parti__fdeliv {
    uint64_t instance, seq;
    char *stream, *consumer, *subject; /* consumer NULL: read by stream_get_next, not ackable */
    uint8_t *data;
    parti_header *hdrs; /* plain PARTI_MALLOC array of nhdr */
    int nhdr;
} parti__fdeliv;

struct parti__fclient {
    parti_fake_world *w;
    char *name;
    int cut, drop_hb;
    int64_t skew;
    uint64_t rng;
    int fail_n[PARTI__FOP_COUNT];
    parti_err fail_status[PARTI__FOP_COUNT];
    uint32_t latency[PARTI__FOP_COUNT];
    int lose_n[PARTI__FOP_COUNT];    /* replies to lose (fetch_next: deliveries lost in transit) */
    int late_n[PARTI__FOP_COUNT];    /* writes to apply late */
    uint32_t late_ms[PARTI__FOP_COUNT];
    parti__fpull *pulls;             /* stb_ds array */
    parti__fwatch **watchers;        /* stb_ds array */
};

typedef struct parti__flate {
    uint64_t due, expected;
    int op;
    char *bucket, *key;
    uint8_t *value;
    size_t len;
} parti__flate; /* a KV write held back by parti_fake_apply_late */

struct parti_fake_world {
    uint64_t now, seed, instances;
    uint64_t last_created_ns; /* of the newest stream: the next one's stamp is later */
    parti__flate *late;       /* stb_ds array */
    parti__fclient *ghost;    /* applies the late writes: no faults, no pulls */
    int applying_late;
    int auto_advance, markers, keep_log, next_client;
    void (*wait)(void *wait_user, uint64_t until_ms, int wakeable);
    void *wait_user;
    parti__fstream **streams;
    parti__fbucket **buckets;
    parti__fclient **clients;
    char *log; /* stb_ds array of chars, NUL-terminated when non-empty */
};

/* ---- small helpers ------------------------------------------------------ */

static void parti__fake_log(parti_fake_world *w, const parti__fclient *c, const char *op, parti_err e,
                            const char *fmt, ...) {
    char line[512];
    int n, m;
    va_list ap;
    if (!w->keep_log) return;
    n = snprintf(line, sizeof line, "%llu %s %s ", (unsigned long long)w->now, c ? c->name : "-", op);
    if (n < 0 || (size_t)n >= sizeof line) return;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    n = (size_t)(n + m) >= sizeof line ? (int)sizeof line - 1 : n + m;
    m = snprintf(line + n, sizeof line - (size_t)n, " -> %s\n", parti_error_name(e) + 10);
    n = (size_t)(n + (m < 0 ? 0 : m)) >= sizeof line ? (int)sizeof line - 1 : n + (m < 0 ? 0 : m);
    if (arrlen(w->log) > 0) arrpop(w->log); /* the previous NUL */
    memcpy(arraddnptr(w->log, n), line, (size_t)n);
    arrput(w->log, 0);
}

static void parti__fake_free_hdrs(parti_header *h) {
    int i;
    for (i = 0; i < (int)arrlen(h); i++) {
        PARTI_FREE((void *)h[i].name);
        PARTI_FREE((void *)h[i].value);
    }
    arrfree(h);
}

static void parti__fake_free_msg(parti__fmsg *m) {
    PARTI_FREE(m->subject);
    PARTI_FREE(m->data);
    parti__fake_free_hdrs(m->hdrs);
}

static void parti__fake_free_strings(char **a) {
    int i;
    for (i = 0; i < (int)arrlen(a); i++) PARTI_FREE(a[i]);
    arrfree(a);
}

static void parti__fake_free_consumer(parti__fconsumer *c) {
    PARTI_FREE(c->name);
    parti__fake_free_strings(c->filters);
    arrfree(c->pend);
    PARTI_FREE(c);
}

static void parti__fake_free_stream(parti__fstream *s) {
    int i;
    PARTI_FREE(s->name);
    parti__fake_free_strings(s->subjects);
    for (i = 0; i < (int)arrlen(s->msgs); i++) parti__fake_free_msg(&s->msgs[i]);
    arrfree(s->msgs);
    for (i = 0; i < (int)arrlen(s->dedupe); i++) PARTI_FREE(s->dedupe[i].id);
    arrfree(s->dedupe);
    for (i = 0; i < (int)arrlen(s->consumers); i++) parti__fake_free_consumer(s->consumers[i]);
    arrfree(s->consumers);
    PARTI_FREE(s);
}

static void parti__fake_free_rec(parti__frec *r) {
    PARTI_FREE(r->key);
    PARTI_FREE(r->value);
}

static void parti__fake_free_bucket(parti__fbucket *b) {
    int i;
    PARTI_FREE(b->name);
    for (i = 0; i < (int)arrlen(b->recs); i++) parti__fake_free_rec(&b->recs[i]);
    arrfree(b->recs);
    PARTI_FREE(b);
}

static void parti__fake_free_watcher(parti__fwatch *wt) {
    size_t i;
    for (i = wt->head; i < (size_t)arrlen(wt->queue); i++) parti_kv_entry_free(&wt->queue[i]);
    arrfree(wt->queue);
    PARTI_FREE(wt->bucket);
    PARTI_FREE(wt->prefix);
    PARTI_FREE(wt);
}

static parti__fstream *parti__fake_stream(parti_fake_world *w, const char *name) {
    int i;
    for (i = 0; i < (int)arrlen(w->streams); i++)
        if (strcmp(w->streams[i]->name, name) == 0) return w->streams[i];
    return NULL;
}

static parti__fbucket *parti__fake_bucket(parti_fake_world *w, const char *name) {
    int i;
    for (i = 0; i < (int)arrlen(w->buckets); i++)
        if (strcmp(w->buckets[i]->name, name) == 0) return w->buckets[i];
    return NULL;
}

static parti__fconsumer *parti__fake_consumer(parti__fstream *s, const char *name) {
    int i;
    if (!s) return NULL;
    for (i = 0; i < (int)arrlen(s->consumers); i++)
        if (strcmp(s->consumers[i]->name, name) == 0) return s->consumers[i];
    return NULL;
}

static int parti__fake_filters_match(char *const *filters, const char *subject) {
    int i;
    for (i = 0; i < (int)arrlen(filters); i++)
        if (parti_subject_matches(filters[i], subject)) return 1;
    return 0;
}

/* Index of the message with seq in s->msgs, or -1. */
static int parti__fake_msg_index(const parti__fstream *s, uint64_t seq) {
    int lo = 0, hi = (int)arrlen(s->msgs) - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->msgs[mid].seq == seq) return mid;
        if (s->msgs[mid].seq < seq) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Index of the first message with a sequence above seq (arrlen when none). */
static int parti__fake_first_after(const parti__fstream *s, uint64_t seq) {
    int lo = 0, hi = (int)arrlen(s->msgs);
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s->msgs[mid].seq <= seq) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Ends every pending pull of a consumer (all clients) with a status. */
static void parti__fake_end_pulls(parti_fake_world *w, const char *stream, const char *consumer, parti_err status) {
    int i, j;
    for (i = 0; i < (int)arrlen(w->clients); i++) {
        parti__fclient *c = w->clients[i];
        for (j = 0; j < (int)arrlen(c->pulls); j++) {
            parti__fpull *p = &c->pulls[j];
            if (p->active && strcmp(p->stream, stream) == 0 && (!consumer || strcmp(p->consumer, consumer) == 0))
                p->terminal = status;
        }
    }
}

static void parti__fake_remove_consumer(parti_fake_world *w, parti__fstream *s, int idx) {
    parti__fake_end_pulls(w, s->name, s->consumers[idx]->name, PARTI_ERR_CONSUMER_DELETED);
    parti__fake_free_consumer(s->consumers[idx]);
    arrdel(s->consumers, idx);
}

/* ---- KV records, watchers and expiry ------------------------------------- */

static void parti__fake_notify(parti_fake_world *w, const parti__fbucket *b, const parti__frec *r) {
    int i, j;
    for (i = 0; i < (int)arrlen(w->clients); i++) {
        parti__fclient *c = w->clients[i];
        for (j = 0; j < (int)arrlen(c->watchers); j++) {
            parti__fwatch *wt = c->watchers[j];
            parti_kv_entry e;
            if (strcmp(wt->bucket, b->name) != 0 || strncmp(r->key, wt->prefix, strlen(wt->prefix)) != 0) continue;
            memset(&e, 0, sizeof e);
            e.key = parti__strdup(r->key);
            e.value = (uint8_t *)parti__memdup(r->value, r->len);
            e.len = r->len;
            e.revision = r->rev;
            e.created_ms = r->ts;
            e.op = r->op;
            arrput(wt->queue, e);
        }
    }
}

/* Latest record of key (any op), or NULL. */
static parti__frec *parti__fake_latest(parti__fbucket *b, const char *key) {
    int i;
    for (i = (int)arrlen(b->recs) - 1; i >= 0; i--)
        if (strcmp(b->recs[i].key, key) == 0) return &b->recs[i];
    return NULL;
}

static parti_err parti__fake_append(parti_fake_world *w, parti__fbucket *b, const char *key, const void *value,
                                    size_t len, parti_kv_op op, uint64_t ts, uint64_t *rev) {
    parti__frec r;
    int i, count = 0;
    r.key = parti__strdup(key);
    r.value = (uint8_t *)parti__memdup(value, len);
    if (!r.key || !r.value) {
        PARTI_FREE(r.key);
        PARTI_FREE(r.value);
        return PARTI_ERR_NOMEM;
    }
    r.len = len;
    r.rev = ++b->last_rev;
    r.ts = ts;
    r.op = op;
    arrput(b->recs, r);
    if (rev) *rev = r.rev;
    parti__fake_notify(w, b, &b->recs[arrlen(b->recs) - 1]);
    /* history: keep the newest `history` records of this key */
    for (i = (int)arrlen(b->recs) - 1; i >= 0; i--) {
        if (strcmp(b->recs[i].key, key) != 0) continue;
        if (++count > (int)b->history) {
            parti__fake_free_rec(&b->recs[i]);
            arrdel(b->recs, i);
        }
    }
    return PARTI_ERR_OK;
}

/* Removes record i because its age passed the TTL; the latest live value of a
 * key leaves an expiry marker (where markers are on). */
static void parti__fake_expire_rec(parti_fake_world *w, parti__fbucket *b, int i, uint64_t at) {
    parti__frec r = b->recs[i];
    int was_latest = parti__fake_latest(b, r.key) == &b->recs[i];
    arrdel(b->recs, i);
    if (was_latest && r.op == PARTI_KV_PUT) {
        parti__fake_log(w, NULL, "kv_expire", PARTI_ERR_OK, "%s/%s rev=%llu", b->name, r.key, (unsigned long long)r.rev);
        if (w->markers) parti__fake_append(w, b, r.key, "", 0, PARTI_KV_EXPIRED, at, NULL);
    }
    parti__fake_free_rec(&r);
}

static void parti__fake_run_kv_expiry(parti_fake_world *w) {
    int i;
    for (i = 0; i < (int)arrlen(w->buckets); i++) {
        parti__fbucket *b = w->buckets[i];
        int guard = 0;
        if (!b->ttl) continue;
        /* records are in ts order; markers appended here are newer than all others */
        while (arrlen(b->recs) > 0 && b->recs[0].ts + b->ttl <= w->now && guard++ < 1000000)
            parti__fake_expire_rec(w, b, 0, b->recs[0].ts + b->ttl);
    }
}

static void parti__fake_run_inactivity(parti_fake_world *w) {
    int i, j;
    for (i = 0; i < (int)arrlen(w->streams); i++) {
        parti__fstream *s = w->streams[i];
        for (j = (int)arrlen(s->consumers) - 1; j >= 0; j--) {
            parti__fconsumer *c = s->consumers[j];
            if (c->inactive && w->now - c->last_active >= c->inactive) parti__fake_remove_consumer(w, s, j);
        }
    }
}

static void parti__fake_apply_due_late(parti_fake_world *w);

static void parti__fake_set_time(parti_fake_world *w, uint64_t t) {
    if (t <= w->now) return;
    w->now = t;
    parti__fake_run_kv_expiry(w);
    parti__fake_run_inactivity(w);
    parti__fake_apply_due_late(w);
}

/* A client waits until time until: the scheduler's hook runs the other
 * clients meanwhile; without one, auto-advance moves the clock. */
static void parti__fake_wait(parti_fake_world *w, uint64_t until, int wakeable) {
    if (w->wait) w->wait(w->wait_user, until, wakeable);
    else if (w->auto_advance) parti__fake_set_time(w, until);
}

/* The end of a call that reached the server: its reply may be lost. */
static parti_err parti__fake_reply(parti__fclient *c, int op, parti_err e, uint32_t timeout_ms) {
    if (c->lose_n[op] <= 0) return e;
    c->lose_n[op]--;
    parti__fake_log(c->w, c, parti__fake_op_names[op], PARTI_ERR_TIMEOUT, "applied (%s), reply lost",
                    parti_error_name(e) + 10);
    parti__fake_wait(c->w, c->w->now + timeout_ms, 0);
    return PARTI_ERR_TIMEOUT;
}

/* A KV write to hold back (parti_fake_apply_late): queued, and the caller
 * waits out its timeout. Returns 1 when held. */
static int parti__fake_hold(parti__fclient *c, int op, const char *bucket, const char *key, const void *value,
                            size_t len, uint64_t expected, uint32_t timeout_ms) {
    parti__flate l;
    if (c->late_n[op] <= 0) return 0;
    c->late_n[op]--;
    memset(&l, 0, sizeof l);
    l.due = c->w->now + c->late_ms[op];
    l.op = op;
    l.expected = expected;
    l.bucket = parti__strdup(bucket);
    l.key = parti__strdup(key);
    l.value = (uint8_t *)parti__memdup(value ? value : "", len);
    l.len = len;
    arrput(c->w->late, l);
    parti__fake_log(c->w, c, parti__fake_op_names[op], PARTI_ERR_TIMEOUT, "%s/%s held back until %llu", bucket, key,
                    (unsigned long long)l.due);
    parti__fake_wait(c->w, c->w->now + timeout_ms, 0);
    return 1;
}

/* ---- the client side: fault gate ------------------------------------------ */

/* Runs the faults configured for an op: cut, fail-next, latency. Returns
 * PARTI_ERR_OK when the op may proceed. */
static parti_err parti__fake_gate(parti__fclient *c, int op, uint32_t timeout_ms) {
    parti_fake_world *w = c->w;
    if (c->cut) return PARTI_ERR_NOT_CONNECTED;
    if (c->fail_n[op] > 0) {
        c->fail_n[op]--;
        return c->fail_status[op];
    }
    if (c->latency[op]) {
        uint32_t wait = c->latency[op] < timeout_ms ? c->latency[op] : timeout_ms;
        parti__fake_wait(w, w->now + wait, 0);
        if (c->latency[op] > timeout_ms) return PARTI_ERR_TIMEOUT;
    }
    return PARTI_ERR_OK;
}

#define PARTI__FAKE_BEGIN(opname, timeout)                                                                         \
    parti__fclient *c = (parti__fclient *)self;                                                                    \
    parti_fake_world *w;                                                                                           \
    parti_err e;                                                                                                   \
    if (!c) return PARTI_ERR_INVALID_ARGUMENT;                                                                     \
    w = c->w;                                                                                                      \
    if ((e = parti__fake_gate(c, PARTI__FOP_##opname, (timeout))) != PARTI_ERR_OK) {                              \
        parti__fake_log(w, c, #opname, e, "fault");                                                                \
        return e;                                                                                                  \
    }

/* ---- clock and randomness -------------------------------------------------- */

static uint64_t parti__fake_now_ms(void *self) {
    parti__fclient *c = (parti__fclient *)self;
    int64_t t = (int64_t)c->w->now + c->skew;
    return t < 0 ? 0 : (uint64_t)t;
}

/* A wait with nothing to wait for: with auto-advance the clock moves by ms
 * (running what falls due), else nothing happens. */
static void parti__fake_sleep_ms(void *self, uint32_t ms) {
    parti__fclient *c = (parti__fclient *)self;
    if (c) parti__fake_wait(c->w, c->w->now + ms, 0);
}

static int parti__fake_connected(void *self) {
    parti__fclient *c = (parti__fclient *)self;
    return c && !c->cut;
}

static uint64_t parti__fake_random(void *self) {
    return parti_rng_splitmix64(&((parti__fclient *)self)->rng);
}

/* ---- streams ----------------------------------------------------------------- */

static int parti__fake_subjects_overlap(const char *a, const char *b) {
    return parti_subject_matches(a, b) || parti_subject_matches(b, a) || strcmp(a, b) == 0;
}

static parti_err parti__fake_stream_create(void *self, const parti_stream_config *cfg, uint32_t timeout_ms) {
    parti__fstream *s;
    int i, j, k;
    PARTI__FAKE_BEGIN(stream_create, timeout_ms)
    if (!cfg || !cfg->name || cfg->subject_count < 1 || !cfg->subjects) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(cfg->name, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    for (i = 0; i < cfg->subject_count; i++)
        if ((e = parti_subject_check(cfg->subjects[i], 1, NULL, 0)) != PARTI_ERR_OK)
            return e == PARTI_ERR_INVALID_ARGUMENT ? e : PARTI_ERR_INVALID_SUBJECT;
    if ((s = parti__fake_stream(w, cfg->name)) != NULL) {
        int same = (int)arrlen(s->subjects) == cfg->subject_count;
        for (i = 0; same && i < cfg->subject_count; i++) same = strcmp(s->subjects[i], cfg->subjects[i]) == 0;
        e = same ? PARTI_ERR_OK : PARTI_ERR_ALREADY_EXISTS;
        parti__fake_log(w, c, "stream_create", e, "%s", cfg->name);
        return e;
    }
    for (k = 0; k < (int)arrlen(w->streams); k++)
        for (i = 0; i < (int)arrlen(w->streams[k]->subjects); i++)
            for (j = 0; j < cfg->subject_count; j++)
                if (parti__fake_subjects_overlap(w->streams[k]->subjects[i], cfg->subjects[j])) {
                    parti__fake_log(w, c, "stream_create", PARTI_ERR_ALREADY_EXISTS, "%s overlaps %s", cfg->name,
                                    w->streams[k]->name);
                    return PARTI_ERR_ALREADY_EXISTS;
                }
    if (!(s = (parti__fstream *)PARTI_MALLOC(sizeof *s))) return PARTI_ERR_NOMEM;
    memset(s, 0, sizeof *s);
    s->name = parti__strdup(cfg->name);
    for (i = 0; i < cfg->subject_count; i++)
        arrput(s->subjects, parti__strdup(cfg->subjects[i]));
    s->memory = cfg->memory_storage;
    s->dupwin = cfg->duplicate_window_ms ? cfg->duplicate_window_ms : 120000;
    s->max_msgs = cfg->max_msgs;
    s->retention = cfg->retention; /* reported; its removal rules are not modelled */
    /* a re-creation within the same virtual millisecond still gets another stamp */
    w->last_created_ns = w->now * 1000000u > w->last_created_ns ? w->now * 1000000u : w->last_created_ns + 1;
    s->created_ns = w->last_created_ns;
    arrput(w->streams, s);
    parti__fake_log(w, c, "stream_create", PARTI_ERR_OK, "%s", cfg->name);
    return PARTI_ERR_OK;
}

static parti_err parti__fake_stream_info(void *self, const char *stream, parti_stream_info *out,
                                         uint32_t timeout_ms) {
    parti__fstream *s;
    int i;
    PARTI__FAKE_BEGIN(stream_info, timeout_ms)
    if (!stream || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (!(s = parti__fake_stream(w, stream))) return PARTI_ERR_STREAM_NOT_FOUND;
    out->name = parti__strdup(s->name);
    out->subject_count = (int)arrlen(s->subjects);
    out->subjects = (char **)PARTI_MALLOC(sizeof(char *) * (size_t)(out->subject_count + 1));
    if (!out->name || !out->subjects) {
        parti_stream_info_free(out);
        return PARTI_ERR_NOMEM;
    }
    for (i = 0; i < out->subject_count; i++) out->subjects[i] = parti__strdup(s->subjects[i]);
    out->memory_storage = s->memory;
    out->duplicate_window_ms = s->dupwin;
    out->retention = s->retention;
    out->messages = (uint64_t)arrlen(s->msgs);
    out->first_seq = arrlen(s->msgs) ? s->msgs[0].seq : s->last_seq + 1;
    out->last_seq = s->last_seq;
    out->created_ns = s->created_ns;
    return PARTI_ERR_OK;
}

static parti_err parti__fake_stream_delete_in(parti_fake_world *w, const char *stream) {
    int i;
    for (i = 0; i < (int)arrlen(w->streams); i++) {
        if (strcmp(w->streams[i]->name, stream) == 0) {
            parti__fake_end_pulls(w, stream, NULL, PARTI_ERR_CONSUMER_DELETED);
            parti__fake_free_stream(w->streams[i]);
            arrdel(w->streams, i);
            return PARTI_ERR_OK;
        }
    }
    return PARTI_ERR_STREAM_NOT_FOUND;
}

static parti_err parti__fake_stream_delete(void *self, const char *stream, uint32_t timeout_ms) {
    PARTI__FAKE_BEGIN(stream_delete, timeout_ms)
    if (!stream) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    e = parti__fake_stream_delete_in(w, stream);
    parti__fake_log(w, c, "stream_delete", e, "%s", stream);
    return e;
}

/* ---- publish ---------------------------------------------------------------- */

static parti_err parti__fake_publish(void *self, const char *subject, const parti_header *headers, int header_count,
                                     const void *data, size_t len, parti_pub_ack *ack, uint32_t timeout_ms) {
    parti__fstream *s = NULL;
    parti__fmsg m;
    const char *msg_id = NULL;
    int i, j;
    PARTI__FAKE_BEGIN(publish, timeout_ms)
    if (!subject || (len && !data) || header_count < 0 || (header_count && !headers)) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_subject_check(subject, 0, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
    for (i = 0; i < header_count; i++) {
        if (!headers[i].name || !headers[i].value) return PARTI_ERR_INVALID_ARGUMENT;
        if (strcmp(headers[i].name, "Nats-Msg-Id") == 0) msg_id = headers[i].value;
    }
    for (i = 0; !s && i < (int)arrlen(w->streams); i++)
        for (j = 0; j < (int)arrlen(w->streams[i]->subjects); j++)
            if (parti_subject_matches(w->streams[i]->subjects[j], subject)) {
                s = w->streams[i];
                break;
            }
    if (!s) {
        parti__fake_log(w, c, "publish", PARTI_ERR_NO_RESPONDERS, "%s", subject);
        return PARTI_ERR_NO_RESPONDERS;
    }
    while (arrlen(s->dedupe) > 0 && s->dedupe[0].ts + s->dupwin <= w->now) {
        PARTI_FREE(s->dedupe[0].id);
        arrdel(s->dedupe, 0);
    }
    if (msg_id) {
        for (i = 0; i < (int)arrlen(s->dedupe); i++) {
            if (strcmp(s->dedupe[i].id, msg_id) == 0) {
                if (ack) {
                    ack->stream_seq = s->dedupe[i].seq;
                    ack->duplicate = 1;
                }
                parti__fake_log(w, c, "publish", PARTI_ERR_OK, "%s duplicate of %llu", subject,
                                (unsigned long long)s->dedupe[i].seq);
                return PARTI_ERR_OK;
            }
        }
    }
    memset(&m, 0, sizeof m);
    m.seq = ++s->last_seq;
    m.ts = w->now;
    m.subject = parti__strdup(subject);
    m.data = (uint8_t *)parti__memdup(data, len);
    m.len = len;
    for (i = 0; i < header_count; i++) {
        parti_header h;
        h.name = (const char *)parti__strdup(headers[i].name);
        h.value = (const char *)parti__strdup(headers[i].value);
        arrput(m.hdrs, h);
    }
    arrput(s->msgs, m);
    if (msg_id) {
        parti__fdedupe d;
        d.id = parti__strdup(msg_id);
        d.seq = m.seq;
        d.ts = w->now;
        arrput(s->dedupe, d);
    }
    if (s->max_msgs && (uint64_t)arrlen(s->msgs) > s->max_msgs) {
        uint64_t gone = s->msgs[0].seq;
        int k, q;
        parti__fake_free_msg(&s->msgs[0]);
        arrdel(s->msgs, 0);
        /* like the server: a delivered message the limits removed is no longer pending */
        for (k = 0; k < (int)arrlen(s->consumers); k++)
            for (q = 0; q < (int)arrlen(s->consumers[k]->pend); q++)
                if (s->consumers[k]->pend[q].seq == gone) {
                    arrdel(s->consumers[k]->pend, q);
                    break;
                }
    }
    if (ack) {
        ack->stream_seq = m.seq;
        ack->duplicate = 0;
    }
    parti__fake_log(w, c, "publish", PARTI_ERR_OK, "%s seq=%llu", subject, (unsigned long long)m.seq);
    return parti__fake_reply(c, PARTI__FOP_publish, PARTI_ERR_OK, timeout_ms);
}

/* ---- key/value ---------------------------------------------------------------- */

static parti_err parti__fake_kv_open(void *self, const parti_kv_config *cfg, uint32_t timeout_ms) {
    parti__fbucket *b;
    PARTI__FAKE_BEGIN(kv_open, timeout_ms)
    if (!cfg || !cfg->bucket) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(cfg->bucket, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (cfg->history > 64) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti__fake_bucket(w, cfg->bucket)) {
        parti__fake_log(w, c, "kv_open", PARTI_ERR_OK, "%s existing", cfg->bucket);
        return PARTI_ERR_OK;
    }
    if (!(b = (parti__fbucket *)PARTI_MALLOC(sizeof *b))) return PARTI_ERR_NOMEM;
    memset(b, 0, sizeof *b);
    b->name = parti__strdup(cfg->bucket);
    b->history = cfg->history ? cfg->history : 1;
    b->ttl = cfg->ttl_ms;
    b->max_value = cfg->max_value_size ? cfg->max_value_size : 1024 * 1024;
    b->memory = cfg->memory_storage;
    arrput(w->buckets, b);
    parti__fake_log(w, c, "kv_open", PARTI_ERR_OK, "%s ttl=%llu", cfg->bucket, (unsigned long long)b->ttl);
    return PARTI_ERR_OK;
}

/* Common checks of a KV call; finds the bucket. */
static parti_err parti__fake_kv_args(parti_fake_world *w, const char *bucket, const char *key, const void *value,
                                     size_t len, parti__fbucket **b) {
    if (!bucket || !key || (len && !value)) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(bucket, NULL, 0) != PARTI_ERR_OK || parti_kv_key_check(key, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    if (!(*b = parti__fake_bucket(w, bucket))) return PARTI_ERR_BUCKET_NOT_FOUND;
    if (len > (*b)->max_value) return PARTI_ERR_VALUE_TOO_LARGE;
    return PARTI_ERR_OK;
}

static parti_err parti__fake_kv_create(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                       uint64_t *revision, uint32_t timeout_ms) {
    parti__fbucket *b;
    parti__frec *r;
    uint64_t rev = 0;
    PARTI__FAKE_BEGIN(kv_create, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, value, len, &b)) != PARTI_ERR_OK) return e;
    if (parti__fake_hold(c, PARTI__FOP_kv_create, bucket, key, value, len, 0, timeout_ms)) return PARTI_ERR_TIMEOUT;
    r = parti__fake_latest(b, key);
    e = r && r->op == PARTI_KV_PUT ? PARTI_ERR_KEY_EXISTS
                                   : parti__fake_append(w, b, key, value, len, PARTI_KV_PUT, w->now, &rev);
    if (revision && e == PARTI_ERR_OK) *revision = rev;
    parti__fake_log(w, c, "kv_create", e, "%s/%s rev=%llu", bucket, key, (unsigned long long)rev);
    return parti__fake_reply(c, PARTI__FOP_kv_create, e, timeout_ms);
}

static parti_err parti__fake_kv_update(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                       uint64_t expected, uint64_t *revision, uint32_t timeout_ms) {
    parti__fbucket *b;
    parti__frec *r;
    uint64_t rev = 0;
    PARTI__FAKE_BEGIN(kv_update, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, value, len, &b)) != PARTI_ERR_OK) return e;
    if (parti__fake_hold(c, PARTI__FOP_kv_update, bucket, key, value, len, expected, timeout_ms)) return PARTI_ERR_TIMEOUT;
    r = parti__fake_latest(b, key);
    e = (r ? r->rev : 0) != expected ? PARTI_ERR_WRONG_REVISION
                                     : parti__fake_append(w, b, key, value, len, PARTI_KV_PUT, w->now, &rev);
    if (revision && e == PARTI_ERR_OK) *revision = rev;
    parti__fake_log(w, c, "kv_update", e, "%s/%s expected=%llu rev=%llu", bucket, key, (unsigned long long)expected,
                    (unsigned long long)rev);
    return parti__fake_reply(c, PARTI__FOP_kv_update, e, timeout_ms);
}

static parti_err parti__fake_kv_put(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                    uint64_t *revision, uint32_t timeout_ms) {
    parti__fbucket *b;
    uint64_t rev = 0;
    PARTI__FAKE_BEGIN(kv_put, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, value, len, &b)) != PARTI_ERR_OK) return e;
    if (parti__fake_hold(c, PARTI__FOP_kv_put, bucket, key, value, len, 0, timeout_ms)) return PARTI_ERR_TIMEOUT;
    e = parti__fake_append(w, b, key, value, len, PARTI_KV_PUT, w->now, &rev);
    if (revision && e == PARTI_ERR_OK) *revision = rev;
    parti__fake_log(w, c, "kv_put", e, "%s/%s rev=%llu", bucket, key, (unsigned long long)rev);
    return parti__fake_reply(c, PARTI__FOP_kv_put, e, timeout_ms);
}

static parti_err parti__fake_entry_from(const parti__frec *r, parti_kv_entry *out) {
    out->key = parti__strdup(r->key);
    out->value = (uint8_t *)parti__memdup(r->value, r->len);
    if (!out->key || !out->value) {
        parti_kv_entry_free(out);
        return PARTI_ERR_NOMEM;
    }
    out->len = r->len;
    out->revision = r->rev;
    out->created_ms = r->ts;
    out->op = r->op;
    return PARTI_ERR_OK;
}

static parti_err parti__fake_kv_get(void *self, const char *bucket, const char *key, uint64_t revision,
                                    parti_kv_entry *out, uint32_t timeout_ms) {
    parti__fbucket *b;
    parti__frec *r = NULL;
    int i;
    PARTI__FAKE_BEGIN(kv_get, timeout_ms)
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if ((e = parti__fake_kv_args(w, bucket, key, NULL, 0, &b)) != PARTI_ERR_OK) return e;
    if (revision == 0) r = parti__fake_latest(b, key);
    else
        for (i = 0; i < (int)arrlen(b->recs); i++)
            if (b->recs[i].rev == revision && strcmp(b->recs[i].key, key) == 0) r = &b->recs[i];
    e = !r || r->op != PARTI_KV_PUT ? PARTI_ERR_KEY_NOT_FOUND : parti__fake_entry_from(r, out);
    parti__fake_log(w, c, "kv_get", e, "%s/%s rev=%llu", bucket, key, (unsigned long long)(r ? r->rev : 0));
    return e;
}

/* kv_delete (expected 0) and kv_delete_if share the op's faults */
static parti_err parti__fake_kv_delete_if(void *self, const char *bucket, const char *key, uint64_t expected,
                                          uint32_t timeout_ms) {
    parti__fbucket *b;
    parti__frec *r;
    PARTI__FAKE_BEGIN(kv_delete, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, NULL, 0, &b)) != PARTI_ERR_OK) return e;
    if (parti__fake_hold(c, PARTI__FOP_kv_delete, bucket, key, NULL, 0, expected, timeout_ms)) return PARTI_ERR_TIMEOUT;
    r = parti__fake_latest(b, key);
    e = expected && (r ? r->rev : 0) != expected ? PARTI_ERR_WRONG_REVISION
                                                 : parti__fake_append(w, b, key, "", 0, PARTI_KV_DELETE, w->now, NULL);
    parti__fake_log(w, c, "kv_delete", e, "%s/%s expected=%llu", bucket, key, (unsigned long long)expected);
    return parti__fake_reply(c, PARTI__FOP_kv_delete, e, timeout_ms);
}

static parti_err parti__fake_kv_delete(void *self, const char *bucket, const char *key, uint32_t timeout_ms) {
    return parti__fake_kv_delete_if(self, bucket, key, 0, timeout_ms);
}

static parti_err parti__fake_kv_keys(void *self, const char *bucket, char ***keys, int *count, uint32_t timeout_ms) {
    parti__fbucket *b;
    parti_subjects live = {NULL, 0};
    int i;
    PARTI__FAKE_BEGIN(kv_keys, timeout_ms)
    if (!bucket || !keys || !count) return PARTI_ERR_INVALID_ARGUMENT;
    *keys = NULL;
    *count = 0;
    if (parti_name_check(bucket, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (!(b = parti__fake_bucket(w, bucket))) return PARTI_ERR_BUCKET_NOT_FOUND;
    for (i = 0; i < (int)arrlen(b->recs); i++) {
        parti__frec *r = &b->recs[i];
        if (r->op == PARTI_KV_PUT && parti__fake_latest(b, r->key) == r &&
            (e = parti_subjects_add(&live, r->key)) != PARTI_ERR_OK) {
            parti_subjects_free(&live);
            return e;
        }
    }
    parti_subjects_sort_unique(&live);
    *keys = live.items;
    *count = live.count;
    parti__fake_log(w, c, "kv_keys", PARTI_ERR_OK, "%s count=%d", bucket, live.count);
    return PARTI_ERR_OK;
}

static parti_err parti__fake_kv_watch(void *self, const char *bucket, const char *prefix, parti_kv_watcher **out,
                                      uint32_t timeout_ms) {
    parti__fwatch *wt;
    PARTI__FAKE_BEGIN(kv_watch, timeout_ms)
    if (!bucket || !out) return PARTI_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!prefix) prefix = "";
    if (parti_name_check(bucket, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (!parti__fake_bucket(w, bucket)) return PARTI_ERR_BUCKET_NOT_FOUND;
    if (!(wt = (parti__fwatch *)PARTI_MALLOC(sizeof *wt))) return PARTI_ERR_NOMEM;
    memset(wt, 0, sizeof *wt);
    wt->c = c;
    wt->bucket = parti__strdup(bucket);
    wt->prefix = parti__strdup(prefix);
    arrput(c->watchers, wt);
    *out = (parti_kv_watcher *)wt;
    parti__fake_log(w, c, "kv_watch", PARTI_ERR_OK, "%s prefix=%s", bucket, prefix);
    return PARTI_ERR_OK;
}

static parti_err parti__fake_kv_watch_next(void *self, parti_kv_watcher *handle, parti_kv_entry *out) {
    parti__fwatch *wt = (parti__fwatch *)handle;
    PARTI__FAKE_BEGIN(kv_watch_next, 0)
    (void)w;
    if (!wt || !out || wt->c != c) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (wt->head >= (size_t)arrlen(wt->queue)) {
        arrsetlen(wt->queue, 0);
        wt->head = 0;
        return PARTI_ERR_NO_MESSAGES;
    }
    *out = wt->queue[wt->head++];
    return PARTI_ERR_OK;
}

static void parti__fake_kv_watch_stop(void *self, parti_kv_watcher *handle) {
    parti__fwatch *wt = (parti__fwatch *)handle;
    parti__fclient *c = (parti__fclient *)self;
    int i;
    if (!c || !wt) return;
    for (i = 0; i < (int)arrlen(c->watchers); i++) {
        if (c->watchers[i] == wt) {
            arrdel(c->watchers, i);
            parti__fake_free_watcher(wt);
            return;
        }
    }
}

/* ---- consumers ------------------------------------------------------------------ */

static parti_err parti__fake_check_filters(const parti__fstream *s, const parti_consumer_config *cfg) {
    int i, j, covered;
    for (i = 0; i < cfg->filter_count; i++) {
        if (!cfg->filter_subjects[i]) return PARTI_ERR_INVALID_ARGUMENT;
        if (parti_subject_check(cfg->filter_subjects[i], 1, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
        for (covered = 0, j = 0; j < (int)arrlen(s->subjects); j++)
            covered |= parti_subject_matches(s->subjects[j], cfg->filter_subjects[i]) ||
                       strcmp(s->subjects[j], cfg->filter_subjects[i]) == 0;
        if (!covered) return PARTI_ERR_INVALID_SUBJECT;
        /* JetStream refuses overlapping filters (API error 10138) */
        for (j = 0; j < i; j++)
            if (parti__fake_subjects_overlap(cfg->filter_subjects[i], cfg->filter_subjects[j]))
                return PARTI_ERR_INVALID_CONFIG;
    }
    return PARTI_ERR_OK;
}

static parti_err parti__fake_consumer_upsert(void *self, const parti_consumer_config *cfg, uint32_t timeout_ms) {
    parti__fstream *s;
    parti__fconsumer *k;
    int i, created = 0;
    PARTI__FAKE_BEGIN(consumer_upsert, timeout_ms)
    if (!cfg || !cfg->stream || !cfg->durable || cfg->filter_count < 1 || !cfg->filter_subjects ||
        cfg->max_deliver < 0 || cfg->max_ack_pending < 0)
        return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(cfg->stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(cfg->durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    if (!(s = parti__fake_stream(w, cfg->stream))) {
        parti__fake_log(w, c, "consumer_upsert", PARTI_ERR_STREAM_NOT_FOUND, "%s/%s", cfg->stream, cfg->durable);
        return PARTI_ERR_STREAM_NOT_FOUND;
    }
    if ((e = parti__fake_check_filters(s, cfg)) != PARTI_ERR_OK) {
        parti__fake_log(w, c, "consumer_upsert", e, "%s/%s", cfg->stream, cfg->durable);
        return e;
    }
    if ((k = parti__fake_consumer(s, cfg->durable)) != NULL &&
        (k->deliver != cfg->deliver_policy ||
         (cfg->deliver_policy == PARTI_DELIVER_BY_START_SEQUENCE && k->start_seq != cfg->opt_start_seq))) {
        /* nats-server: "deliver policy can not be updated" */
        parti__fake_log(w, c, "consumer_upsert", PARTI_ERR_ALREADY_EXISTS, "%s/%s deliver policy", cfg->stream,
                        cfg->durable);
        return PARTI_ERR_ALREADY_EXISTS;
    }
    if (!k && cfg->update_only) { /* "action":"update" on a missing consumer: 10149 */
        parti__fake_log(w, c, "consumer_upsert", PARTI_ERR_CONSUMER_NOT_FOUND, "%s/%s update only", cfg->stream,
                        cfg->durable);
        return PARTI_ERR_CONSUMER_NOT_FOUND;
    }
    if (!k) {
        if (!(k = (parti__fconsumer *)PARTI_MALLOC(sizeof *k))) return PARTI_ERR_NOMEM;
        memset(k, 0, sizeof *k);
        k->name = parti__strdup(cfg->durable);
        k->instance = ++w->instances;
        k->deliver = cfg->deliver_policy;
        k->start_seq = cfg->deliver_policy == PARTI_DELIVER_BY_START_SEQUENCE ? cfg->opt_start_seq : 0;
        if (cfg->deliver_policy == PARTI_DELIVER_BY_START_SEQUENCE)
            k->position = cfg->opt_start_seq ? cfg->opt_start_seq - 1 : 0;
        else if (cfg->deliver_policy == PARTI_DELIVER_NEW)
            k->position = s->last_seq;
        arrput(s->consumers, k);
        created = 1;
    }
    /* in place: the position and the pending acks stay; only the config changes */
    parti__fake_free_strings(k->filters);
    k->filters = NULL;
    for (i = 0; i < cfg->filter_count; i++)
        arrput(k->filters, parti__strdup(cfg->filter_subjects[i]));
    k->ack_wait = cfg->ack_wait_ms ? cfg->ack_wait_ms : 30000;
    k->max_deliver = cfg->max_deliver;
    k->max_ack_pending = cfg->max_ack_pending ? cfg->max_ack_pending : 1000;
    k->inactive = cfg->inactive_threshold_ms;
    k->last_active = w->now;
    parti__fake_log(w, c, "consumer_upsert", PARTI_ERR_OK, "%s/%s %s filters=%d position=%llu", cfg->stream,
                    cfg->durable, created ? "created" : "updated", cfg->filter_count,
                    (unsigned long long)k->position);
    return parti__fake_reply(c, PARTI__FOP_consumer_upsert, PARTI_ERR_OK, timeout_ms);
}

static uint64_t parti__fake_num_pending(const parti__fstream *s, const parti__fconsumer *k) {
    uint64_t n = 0;
    int i;
    for (i = (int)arrlen(s->msgs) - 1; i >= 0 && s->msgs[i].seq > k->position; i--)
        n += (uint64_t)parti__fake_filters_match(k->filters, s->msgs[i].subject);
    return n;
}

static parti_err parti__fake_consumer_info(void *self, const char *stream, const char *durable,
                                           parti_consumer_info *out, uint32_t timeout_ms) {
    parti__fstream *s;
    parti__fconsumer *k;
    int i;
    PARTI__FAKE_BEGIN(consumer_info, timeout_ms)
    if (!stream || !durable || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    e = !(s = parti__fake_stream(w, stream))              ? PARTI_ERR_STREAM_NOT_FOUND
        : !(k = parti__fake_consumer(s, durable)) ? PARTI_ERR_CONSUMER_NOT_FOUND
                                                   : PARTI_ERR_OK;
    parti__fake_log(w, c, "consumer_info", e, "%s/%s", stream, durable);
    if (e != PARTI_ERR_OK) return e;
    out->name = parti__strdup(k->name);
    out->filter_count = (int)arrlen(k->filters);
    out->filter_subjects = (char **)PARTI_MALLOC(sizeof(char *) * (size_t)(out->filter_count + 1));
    if (!out->name || !out->filter_subjects) {
        parti_consumer_info_free(out);
        return PARTI_ERR_NOMEM;
    }
    for (i = 0; i < out->filter_count; i++)
        out->filter_subjects[i] = parti__strdup(k->filters[i]);
    out->delivered_stream_seq = k->position;
    out->delivered_consumer_seq = k->cseq;
    out->ack_floor_stream_seq = arrlen(k->pend) ? k->pend[0].seq - 1 : k->position;
    out->num_pending = parti__fake_num_pending(s, k);
    out->num_ack_pending = (uint64_t)arrlen(k->pend);
    out->num_redelivered = k->redelivered;
    out->deliver_policy = k->deliver;
    out->opt_start_seq = k->start_seq;
    return PARTI_ERR_OK;
}

static parti_err parti__fake_consumer_delete(void *self, const char *stream, const char *durable, uint32_t timeout_ms) {
    PARTI__FAKE_BEGIN(consumer_delete, timeout_ms)
    if (!stream || !durable) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    e = parti_fake_delete_consumer(w, stream, durable);
    parti__fake_log(w, c, "consumer_delete", e, "%s/%s", stream, durable);
    return parti__fake_reply(c, PARTI__FOP_consumer_delete, e, timeout_ms);
}

/* ---- pull -------------------------------------------------------------------------- */

static parti__fpull *parti__fake_pull(parti__fclient *c, const char *stream, const char *consumer) {
    int i;
    for (i = 0; i < (int)arrlen(c->pulls); i++)
        if (strcmp(c->pulls[i].stream, stream) == 0 && strcmp(c->pulls[i].consumer, consumer) == 0) return &c->pulls[i];
    return NULL;
}

static parti_err parti__fake_fetch_start(void *self, const char *stream, const char *durable,
                                         const parti_fetch_opts *opts, uint32_t timeout_ms) {
    parti__fpull *p;
    parti__fconsumer *k;
    PARTI__FAKE_BEGIN(fetch_start, timeout_ms)
    if (!stream || !durable || !opts || opts->batch < 1 || opts->max_bytes < 0 || opts->expires_ms < 10 ||
        (opts->heartbeat_ms && opts->heartbeat_ms > opts->expires_ms / 2))
        return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    if (!(p = parti__fake_pull(c, stream, durable))) {
        parti__fpull np;
        memset(&np, 0, sizeof np);
        np.stream = parti__strdup(stream);
        np.consumer = parti__strdup(durable);
        arrput(c->pulls, np);
        p = &c->pulls[arrlen(c->pulls) - 1];
    }
    k = parti__fake_consumer(parti__fake_stream(w, stream), durable);
    p->active = 1;
    p->instance = k ? k->instance : 0;
    p->remaining = opts->batch;
    p->delivered = 0;
    p->bytes_left = opts->max_bytes ? opts->max_bytes : -1;
    p->expires_at = w->now + opts->expires_ms;
    p->hb = opts->heartbeat_ms;
    p->last_activity = w->now;
    /* a pull request to a consumer that does not exist reaches nobody */
    p->terminal = k ? PARTI_ERR_OK : PARTI_ERR_NO_RESPONDERS;
    if (k) k->last_active = w->now;
    parti__fake_log(w, c, "fetch_start", PARTI_ERR_OK, "%s/%s batch=%d expires=%u", stream, durable, opts->batch,
                    opts->expires_ms);
    return PARTI_ERR_OK;
}

/* Copies stored message mi into d (which the caller zeroed) and points out at
 * it, as a first delivery outside any consumer. 0 when out of memory. */
static int parti__fake_copy_msg(const parti__fstream *s, int mi, parti_msg *out, parti__fdeliv *d) {
    const parti__fmsg *m = &s->msgs[mi];
    int i, n = (int)arrlen(m->hdrs), ok;
    d->seq = m->seq;
    d->stream = parti__strdup(s->name);
    d->subject = parti__strdup(m->subject);
    d->data = (uint8_t *)parti__memdup(m->data, m->len);
    d->hdrs = n ? (parti_header *)PARTI_MALLOC(sizeof(parti_header) * (size_t)n) : NULL;
    d->nhdr = d->hdrs ? n : 0;
    ok = d->stream && d->subject && d->data && d->nhdr == n;
    for (i = 0; i < d->nhdr; i++) {
        d->hdrs[i].name = (const char *)parti__strdup(m->hdrs[i].name);
        d->hdrs[i].value = (const char *)parti__strdup(m->hdrs[i].value);
        ok = ok && d->hdrs[i].name && d->hdrs[i].value;
    }
    memset(out, 0, sizeof *out);
    out->subject = d->subject;
    out->data = d->data;
    out->len = m->len;
    out->headers = d->hdrs;
    out->header_count = d->nhdr;
    out->stream_seq = m->seq;
    out->delivery_count = 1;
    out->timestamp_ms = m->ts;
    out->handle = d;
    return ok;
}

static void parti__fake_fill_msg(parti__fstream *s, parti__fconsumer *k, int mi, uint32_t deliveries, parti_msg *out,
                                 parti__fdeliv *d) {
    parti__fake_copy_msg(s, mi, out, d);
    d->instance = k->instance;
    d->consumer = parti__strdup(k->name);
    out->consumer_seq = ++k->cseq;
    out->delivery_count = deliveries;
    out->num_pending = parti__fake_num_pending(s, k);
}

/* Picks the next message for a consumer: due redeliveries first (also of
 * subjects no longer in the filter, as the server does), then new matching
 * messages after the position while under max_ack_pending. Returns the index
 * into s->msgs or -1, and drops pending entries that are gone or exhausted. */
/* What a message counts against a pull's max_bytes (the server counts the
 * subject and headers too). */
static int64_t parti__fake_msg_size(const parti__fmsg *m) {
    int64_t n = (int64_t)m->len + (int64_t)strlen(m->subject);
    int i;
    for (i = 0; i < (int)arrlen(m->hdrs); i++) n += (int64_t)(strlen(m->hdrs[i].name) + strlen(m->hdrs[i].value) + 4);
    return n;
}

static int parti__fake_pick(parti_fake_world *w, parti__fstream *s, parti__fconsumer *k, int64_t room,
                            uint32_t *deliveries) {
    int i;
    for (i = 0; i < (int)arrlen(k->pend); i++) {
        parti__fpend *p = &k->pend[i];
        int mi;
        if (p->deadline > w->now) continue;
        mi = parti__fake_msg_index(s, p->seq);
        if (mi < 0 || (k->max_deliver > 0 && p->deliveries >= (uint32_t)k->max_deliver)) {
            arrdel(k->pend, i);
            i--;
            continue;
        }
        if (room >= 0 && parti__fake_msg_size(&s->msgs[mi]) > room) return -2;
        p->deliveries++;
        p->deadline = w->now + k->ack_wait;
        k->redelivered++;
        *deliveries = p->deliveries;
        return mi;
    }
    if ((int)arrlen(k->pend) >= k->max_ack_pending) return -1;
    for (i = parti__fake_first_after(s, k->position); i < (int)arrlen(s->msgs); i++) {
        parti__fpend np;
        if (!parti__fake_filters_match(k->filters, s->msgs[i].subject)) continue;
        if (room >= 0 && parti__fake_msg_size(&s->msgs[i]) > room) return -2;
        k->position = s->msgs[i].seq;
        np.seq = s->msgs[i].seq;
        np.deliveries = 1;
        np.deadline = w->now + k->ack_wait;
        arrput(k->pend, np);
        *deliveries = 1;
        return i;
    }
    /* like the server, the scan moved past what does not match: a subject
     * added later never brings those back */
    if (s->last_seq > k->position) k->position = s->last_seq;
    return -1;
}

/* Earliest future time at which a pending entry becomes due, or UINT64_MAX. */
static uint64_t parti__fake_next_due(const parti_fake_world *w, const parti__fconsumer *k) {
    uint64_t t = UINT64_MAX;
    int i;
    for (i = 0; i < (int)arrlen(k->pend); i++)
        if (k->pend[i].deadline > w->now && k->pend[i].deadline < t) t = k->pend[i].deadline;
    return t;
}

static parti_err parti__fake_fetch_next(void *self, const char *stream, const char *durable, parti_msg *out,
                                        uint32_t timeout_ms) {
    parti__fclient *c = (parti__fclient *)self;
    parti_fake_world *w;
    parti__fpull *p;
    uint64_t deadline;
    parti_err e;
    int guard;
    if (!c || !stream || !durable || !out) return PARTI_ERR_INVALID_ARGUMENT;
    w = c->w;
    memset(out, 0, sizeof *out);
    p = parti__fake_pull(c, stream, durable);
    if ((e = parti__fake_gate(c, PARTI__FOP_fetch_next, timeout_ms)) != PARTI_ERR_OK) {
        /* every status but TIMEOUT means the pull is over, injected or not */
        if (p && e != PARTI_ERR_TIMEOUT) p->active = 0;
        parti__fake_log(w, c, "fetch_next", e, "fault");
        return e;
    }
    if (!p || !p->active) return PARTI_ERR_NO_MESSAGES;
    deadline = w->now + timeout_ms;
    for (guard = 0; guard < 100000; guard++) {
        parti__fstream *s = parti__fake_stream(w, stream);
        parti__fconsumer *k = parti__fake_consumer(s, durable);
        uint64_t next, missed_at = UINT64_MAX;
        uint32_t deliveries = 0;
        int mi;
        if (p->terminal != PARTI_ERR_OK) {
            e = p->terminal;
            p->active = 0;
            p->terminal = PARTI_ERR_OK;
            parti__fake_log(w, c, "fetch_next", e, "%s/%s", stream, durable);
            return e;
        }
        if (!k || k->instance != p->instance) {
            p->active = 0;
            parti__fake_log(w, c, "fetch_next", PARTI_ERR_CONSUMER_DELETED, "%s/%s", stream, durable);
            return PARTI_ERR_CONSUMER_DELETED;
        }
        if (p->remaining <= 0 || p->bytes_left == 0) {
            p->active = 0;
            return PARTI_ERR_NO_MESSAGES;
        }
        mi = parti__fake_pick(w, s, k, p->bytes_left, &deliveries);
        if (mi == -2) { /* the next message does not fit in what max_bytes leaves: the pull is complete */
            e = p->delivered ? PARTI_ERR_NO_MESSAGES : PARTI_ERR_MESSAGE_TOO_LARGE; /* 409, as the server */
            p->active = 0;
            parti__fake_log(w, c, "fetch_next", e, "%s/%s max_bytes reached", stream, durable);
            return e;
        }
        if (mi >= 0 && c->lose_n[PARTI__FOP_fetch_next] > 0) {
            /* lost in transit: the server has counted it delivered and goes on */
            c->lose_n[PARTI__FOP_fetch_next]--;
            k->cseq++;
            p->remaining--;
            p->delivered++;
            if (p->bytes_left > 0) p->bytes_left -= parti__fake_msg_size(&s->msgs[mi]);
            p->last_activity = w->now;
            k->last_active = w->now;
            parti__fake_log(w, c, "fetch_next", PARTI_ERR_OK,
                            "%s/%s seq=%llu subject=%s delivery=%u consumer_seq=%llu lost in transit", stream, durable,
                            (unsigned long long)s->msgs[mi].seq, s->msgs[mi].subject, deliveries,
                            (unsigned long long)k->cseq);
            continue;
        }
        if (mi >= 0) {
            parti__fdeliv *d = (parti__fdeliv *)PARTI_MALLOC(sizeof *d);
            if (!d) return PARTI_ERR_NOMEM;
            memset(d, 0, sizeof *d);
            parti__fake_fill_msg(s, k, mi, deliveries, out, d);
            p->remaining--;
            p->delivered++;
            if (p->bytes_left > 0) p->bytes_left -= parti__fake_msg_size(&s->msgs[mi]);
            p->last_activity = w->now;
            k->last_active = w->now;
            parti__fake_log(w, c, "fetch_next", PARTI_ERR_OK, "%s/%s seq=%llu subject=%s delivery=%u", stream, durable,
                            (unsigned long long)out->stream_seq, out->subject, deliveries);
            return PARTI_ERR_OK;
        }
        if (w->now >= p->expires_at) {
            p->active = 0;
            parti__fake_log(w, c, "fetch_next", PARTI_ERR_NO_MESSAGES, "%s/%s expired", stream, durable);
            return PARTI_ERR_NO_MESSAGES;
        }
        if (c->drop_hb && p->hb) {
            missed_at = p->last_activity + 2 * (uint64_t)p->hb;
            if (w->now >= missed_at) {
                p->active = 0;
                parti__fake_log(w, c, "fetch_next", PARTI_ERR_MISSED_HEARTBEAT, "%s/%s", stream, durable);
                return PARTI_ERR_MISSED_HEARTBEAT;
            }
        }
        if (w->now >= deadline || (!w->auto_advance && !w->wait)) return PARTI_ERR_TIMEOUT;
        /* wait, as the real call would, until the first thing that can change the answer */
        next = deadline;
        if (p->expires_at < next) next = p->expires_at;
        if (missed_at < next) next = missed_at;
        if (parti__fake_next_due(w, k) < next) next = parti__fake_next_due(w, k);
        parti__fake_wait(w, next, 1);
        if (c->cut) return PARTI_ERR_NOT_CONNECTED;
    }
    return PARTI_ERR_TIMEOUT;
}

static parti_err parti__fake_ack(void *self, const parti_msg *m, parti_ack_kind kind, uint32_t delay_ms,
                                 uint32_t timeout_ms) {
    parti__fdeliv *d;
    parti__fconsumer *k;
    int i;
    static const char *const kinds[] = {"ack", "nak", "term", "in_progress"};
    PARTI__FAKE_BEGIN(ack, timeout_ms)
    if (!m || !m->handle || (int)kind < 0 || kind > PARTI_ACK_IN_PROGRESS) return PARTI_ERR_INVALID_ARGUMENT;
    d = (parti__fdeliv *)m->handle;
    if (!d->consumer) { /* read by stream_get_next: no consumer waits for its ack */
        parti__fake_log(w, c, "ack", PARTI_ERR_INVALID_ARGUMENT, "%s seq=%llu not delivered by a consumer", kinds[kind],
                        (unsigned long long)d->seq);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    k = parti__fake_consumer(parti__fake_stream(w, d->stream), d->consumer);
    if (!k || k->instance != d->instance) {
        parti__fake_log(w, c, "ack", PARTI_ERR_OK, "%s seq=%llu consumer gone", kinds[kind], (unsigned long long)d->seq);
        return PARTI_ERR_OK;
    }
    k->last_active = w->now;
    for (i = 0; i < (int)arrlen(k->pend); i++) {
        if (k->pend[i].seq != d->seq) continue;
        if (kind == PARTI_ACK_ACK || kind == PARTI_ACK_TERM) arrdel(k->pend, i);
        else if (kind == PARTI_ACK_NAK) k->pend[i].deadline = w->now + delay_ms;
        else k->pend[i].deadline = w->now + k->ack_wait;
        break;
    }
    parti__fake_log(w, c, "ack", PARTI_ERR_OK, "%s/%s %s seq=%llu", d->stream, d->consumer, kinds[kind],
                    (unsigned long long)d->seq);
    return PARTI_ERR_OK;
}

static void parti__fake_msg_release(void *self, parti_msg *m) {
    parti__fdeliv *d;
    int i;
    (void)self;
    if (!m || !m->handle) return;
    d = (parti__fdeliv *)m->handle;
    for (i = 0; i < d->nhdr; i++) {
        PARTI_FREE((void *)d->hdrs[i].name);
        PARTI_FREE((void *)d->hdrs[i].value);
    }
    PARTI_FREE(d->hdrs);
    PARTI_FREE(d->stream);
    PARTI_FREE(d->consumer);
    PARTI_FREE(d->subject);
    PARTI_FREE(d->data);
    PARTI_FREE(d);
    memset(m, 0, sizeof *m);
}

/* ---- direct reads ---------------------------------------------------------------- */

static parti_err parti__fake_get_next_in(void *self, const char *stream, const char *filter, uint64_t from_seq,
                                         parti_msg *out, uint32_t timeout_ms) {
    parti__fstream *s;
    parti__fdeliv *d;
    int i;
    PARTI__FAKE_BEGIN(stream_get_next, timeout_ms)
    if (!stream || !filter || !out || from_seq < 1) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (parti_subject_check(filter, 1, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
    if (!(s = parti__fake_stream(w, stream))) {
        e = PARTI_ERR_STREAM_NOT_FOUND;
    } else {
        for (i = parti__fake_first_after(s, from_seq - 1); i < (int)arrlen(s->msgs); i++)
            if (parti_subject_matches(filter, s->msgs[i].subject)) break;
        e = i < (int)arrlen(s->msgs) ? PARTI_ERR_OK : PARTI_ERR_NO_MESSAGES;
    }
    if (e != PARTI_ERR_OK) {
        parti__fake_log(w, c, "stream_get_next", e, "%s %s from=%llu", stream, filter, (unsigned long long)from_seq);
        return e;
    }
    if (!(d = (parti__fdeliv *)PARTI_MALLOC(sizeof *d))) return PARTI_ERR_NOMEM;
    memset(d, 0, sizeof *d);
    if (!parti__fake_copy_msg(s, i, out, d)) {
        parti__fake_msg_release(self, out);
        return PARTI_ERR_NOMEM;
    }
    parti__fake_log(w, c, "stream_get_next", PARTI_ERR_OK, "%s %s from=%llu seq=%llu subject=%s", stream, filter,
                    (unsigned long long)from_seq, (unsigned long long)out->stream_seq, out->subject);
    return PARTI_ERR_OK;
}

/* out is empty on every error, faults included */
static parti_err parti__fake_stream_get_next(void *self, const char *stream, const char *filter, uint64_t from_seq,
                                             parti_msg *out, uint32_t timeout_ms) {
    if (out) memset(out, 0, sizeof *out);
    return parti__fake_get_next_in(self, stream, filter, from_seq, out, timeout_ms);
}

/* Applies the held-back writes that are due, through the world's own client
 * (their senders may be gone by now). */
static void parti__fake_apply_due_late(parti_fake_world *w) {
    int i;
    if (w->applying_late || !w->ghost) return;
    w->applying_late = 1;
    for (i = 0; i < (int)arrlen(w->late); i++) {
        parti__flate l = w->late[i];
        if (l.due > w->now) continue;
        arrdel(w->late, i);
        i--;
        switch (l.op) {
        case PARTI__FOP_kv_create: parti__fake_kv_create(w->ghost, l.bucket, l.key, l.value, l.len, NULL, 0); break;
        case PARTI__FOP_kv_update:
            parti__fake_kv_update(w->ghost, l.bucket, l.key, l.value, l.len, l.expected, NULL, 0);
            break;
        case PARTI__FOP_kv_put: parti__fake_kv_put(w->ghost, l.bucket, l.key, l.value, l.len, NULL, 0); break;
        default: parti__fake_kv_delete_if(w->ghost, l.bucket, l.key, l.expected, 0); break;
        }
        PARTI_FREE(l.bucket);
        PARTI_FREE(l.key);
        PARTI_FREE(l.value);
    }
    w->applying_late = 0;
}

static const parti_transport_vtable parti__fake_vtable = {
    parti__fake_now_ms,        parti__fake_random,        parti__fake_stream_create, parti__fake_stream_info,
    parti__fake_stream_delete, parti__fake_kv_open,       parti__fake_kv_create,     parti__fake_kv_update,
    parti__fake_kv_put,        parti__fake_kv_get,        parti__fake_kv_delete,     parti__fake_kv_keys,
    parti__fake_kv_watch,      parti__fake_kv_watch_next, parti__fake_kv_watch_stop, parti__fake_consumer_upsert,
    parti__fake_consumer_info, parti__fake_consumer_delete, parti__fake_fetch_start, parti__fake_fetch_next,
    parti__fake_ack,           parti__fake_msg_release,   parti__fake_publish,       parti__fake_sleep_ms,
    parti__fake_connected,     parti__fake_kv_delete_if,  parti__fake_stream_get_next, NULL /* nothing held */,
    NULL /* kv_update for each in turn */};

/* ---- the world --------------------------------------------------------------------- */

PARTIDEF parti_err parti_fake_world_create(parti_fake_world **out, const parti_fake_options *opts) {
    parti_fake_world *w;
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!(w = (parti_fake_world *)PARTI_MALLOC(sizeof *w))) return PARTI_ERR_NOMEM;
    memset(w, 0, sizeof *w);
    w->seed = opts && opts->seed ? opts->seed : 1;
    w->now = opts && opts->start_ms ? opts->start_ms : 1000000;
    w->auto_advance = !(opts && opts->no_auto_advance);
    w->markers = !(opts && opts->no_expiry_markers);
    w->keep_log = !(opts && opts->no_log);
    w->wait = opts ? opts->wait : NULL;
    w->wait_user = opts ? opts->wait_user : NULL;
    if (!(w->ghost = (parti__fclient *)PARTI_MALLOC(sizeof *w->ghost))) {
        PARTI_FREE(w);
        return PARTI_ERR_NOMEM;
    }
    memset(w->ghost, 0, sizeof *w->ghost);
    w->ghost->w = w;
    w->ghost->name = parti__strdup("late");
    *out = w;
    return PARTI_ERR_OK;
}

static void parti__fake_free_client(parti__fclient *c) {
    int i;
    for (i = 0; i < (int)arrlen(c->pulls); i++) {
        PARTI_FREE(c->pulls[i].stream);
        PARTI_FREE(c->pulls[i].consumer);
    }
    arrfree(c->pulls);
    for (i = 0; i < (int)arrlen(c->watchers); i++) parti__fake_free_watcher(c->watchers[i]);
    arrfree(c->watchers);
    PARTI_FREE(c->name);
    PARTI_FREE(c);
}

PARTIDEF void parti_fake_world_destroy(parti_fake_world *w) {
    int i;
    if (!w) return;
    for (i = 0; i < (int)arrlen(w->clients); i++) parti__fake_free_client(w->clients[i]);
    arrfree(w->clients);
    if (w->ghost) parti__fake_free_client(w->ghost);
    for (i = 0; i < (int)arrlen(w->late); i++) {
        PARTI_FREE(w->late[i].bucket);
        PARTI_FREE(w->late[i].key);
        PARTI_FREE(w->late[i].value);
    }
    arrfree(w->late);
    for (i = 0; i < (int)arrlen(w->streams); i++) parti__fake_free_stream(w->streams[i]);
    arrfree(w->streams);
    for (i = 0; i < (int)arrlen(w->buckets); i++) parti__fake_free_bucket(w->buckets[i]);
    arrfree(w->buckets);
    arrfree(w->log);
    PARTI_FREE(w);
}

PARTIDEF uint64_t parti_fake_now(const parti_fake_world *w) { return w ? w->now : 0; }

PARTIDEF void parti_fake_advance(parti_fake_world *w, uint64_t ms) {
    if (!w || ms == 0) return;
    parti__fake_set_time(w, ms > UINT64_MAX - w->now ? UINT64_MAX : w->now + ms);
}

PARTIDEF parti_err parti_fake_connect(parti_fake_world *w, const char *name, parti_transport *out) {
    parti__fclient *c;
    char buf[32];
    if (!w || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (!(c = (parti__fclient *)PARTI_MALLOC(sizeof *c))) return PARTI_ERR_NOMEM;
    memset(c, 0, sizeof *c);
    c->w = w;
    snprintf(buf, sizeof buf, "c%d", w->next_client);
    if (!name || !*name) name = buf;
    c->name = parti__strdup(name);
    /* every client draws from its own stream, derived from the world seed */
    c->rng = w->seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(w->next_client + 1));
    w->next_client++;
    arrput(w->clients, c);
    out->vt = &parti__fake_vtable;
    out->self = c;
    parti__fake_log(w, c, "connect", PARTI_ERR_OK, "-");
    return PARTI_ERR_OK;
}

PARTIDEF void parti_fake_disconnect(parti_transport *t) {
    parti__fclient *c;
    int i;
    if (!t || !t->self || t->vt != &parti__fake_vtable) return;
    c = (parti__fclient *)t->self;
    for (i = 0; i < (int)arrlen(c->w->clients); i++) {
        if (c->w->clients[i] == c) {
            arrdel(c->w->clients, i);
            break;
        }
    }
    parti__fake_log(c->w, c, "disconnect", PARTI_ERR_OK, "-");
    parti__fake_free_client(c);
    t->self = NULL;
    t->vt = NULL;
}

/* The client behind a transport, when it belongs to this world. */
static parti__fclient *parti__fake_client_of(parti_fake_world *w, parti_transport *t) {
    if (!w || !t || t->vt != &parti__fake_vtable || !t->self) return NULL;
    return ((parti__fclient *)t->self)->w == w ? (parti__fclient *)t->self : NULL;
}

static int parti__fake_op_index(const char *op) {
    int i;
    for (i = 0; op && i < PARTI__FOP_COUNT; i++)
        if (strcmp(parti__fake_op_names[i], op) == 0) return i;
    return -1;
}

PARTIDEF parti_err parti_fake_delete_consumer(parti_fake_world *w, const char *stream, const char *durable) {
    parti__fstream *s;
    int i;
    if (!w || !stream || !durable) return PARTI_ERR_INVALID_ARGUMENT;
    if (!(s = parti__fake_stream(w, stream))) return PARTI_ERR_STREAM_NOT_FOUND;
    for (i = 0; i < (int)arrlen(s->consumers); i++) {
        if (strcmp(s->consumers[i]->name, durable) == 0) {
            parti__fake_remove_consumer(w, s, i);
            return PARTI_ERR_OK;
        }
    }
    return PARTI_ERR_CONSUMER_NOT_FOUND;
}

PARTIDEF int parti_fake_consumer_count(const parti_fake_world *w, const char *stream) {
    parti__fstream *s;
    if (!w || !stream || !(s = parti__fake_stream((parti_fake_world *)w, stream))) return -1;
    return (int)arrlen(s->consumers);
}

PARTIDEF parti_err parti_fake_delete_stream(parti_fake_world *w, const char *stream) {
    if (!w || !stream) return PARTI_ERR_INVALID_ARGUMENT;
    parti__fake_log(w, NULL, "fault_delete_stream", PARTI_ERR_OK, "%s", stream);
    return parti__fake_stream_delete_in(w, stream);
}

PARTIDEF void parti_fake_drop_heartbeats(parti_fake_world *w, parti_transport *client, int on) {
    int i;
    if (!w) return;
    for (i = 0; i < (int)arrlen(w->clients); i++)
        if (!client || parti__fake_client_of(w, client) == w->clients[i]) w->clients[i]->drop_hb = on;
}

PARTIDEF parti_err parti_fake_fail_next(parti_fake_world *w, parti_transport *client, const char *op, int n,
                                        parti_err status) {
    int i, idx = parti__fake_op_index(op);
    if (!w || idx < 0 || n < 0 || (client && !parti__fake_client_of(w, client))) return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < (int)arrlen(w->clients); i++) {
        if (client && parti__fake_client_of(w, client) != w->clients[i]) continue;
        w->clients[i]->fail_n[idx] = n;
        w->clients[i]->fail_status[idx] = status;
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_fake_set_latency(parti_fake_world *w, parti_transport *client, const char *op, uint32_t ms) {
    int i, idx = parti__fake_op_index(op);
    if (!w || idx < 0 || (client && !parti__fake_client_of(w, client))) return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < (int)arrlen(w->clients); i++)
        if (!client || parti__fake_client_of(w, client) == w->clients[i]) w->clients[i]->latency[idx] = ms;
    return PARTI_ERR_OK;
}

/* Sets a per-op counter on one client or on all. */
static parti_err parti__fake_arm(parti_fake_world *w, parti_transport *client, int idx, int n, int late,
                                 uint32_t delay_ms) {
    int i;
    if (!w || idx < 0 || n < 0 || (client && !parti__fake_client_of(w, client))) return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < (int)arrlen(w->clients); i++) {
        if (client && parti__fake_client_of(w, client) != w->clients[i]) continue;
        if (late) {
            w->clients[i]->late_n[idx] = n;
            w->clients[i]->late_ms[idx] = delay_ms;
        } else {
            w->clients[i]->lose_n[idx] = n;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_fake_lose_replies(parti_fake_world *w, parti_transport *client, const char *op, int n) {
    int idx = parti__fake_op_index(op);
    if (idx != PARTI__FOP_kv_create && idx != PARTI__FOP_kv_update && idx != PARTI__FOP_kv_put &&
        idx != PARTI__FOP_kv_delete && idx != PARTI__FOP_publish && idx != PARTI__FOP_consumer_upsert &&
        idx != PARTI__FOP_consumer_delete)
        return PARTI_ERR_INVALID_ARGUMENT;
    return parti__fake_arm(w, client, idx, n, 0, 0);
}

PARTIDEF parti_err parti_fake_apply_late(parti_fake_world *w, parti_transport *client, const char *op, int n,
                                         uint32_t delay_ms) {
    int idx = parti__fake_op_index(op);
    if (idx != PARTI__FOP_kv_create && idx != PARTI__FOP_kv_update && idx != PARTI__FOP_kv_put &&
        idx != PARTI__FOP_kv_delete)
        return PARTI_ERR_INVALID_ARGUMENT;
    return parti__fake_arm(w, client, idx, n, 1, delay_ms);
}

PARTIDEF parti_err parti_fake_lose_deliveries(parti_fake_world *w, parti_transport *client, int n) {
    return parti__fake_arm(w, client, PARTI__FOP_fetch_next, n, 0, 0);
}

PARTIDEF void parti_fake_partition(parti_fake_world *w, parti_transport *client, int cut) {
    parti__fclient *c = parti__fake_client_of(w, client);
    int i;
    if (!c) return;
    c->cut = cut;
    if (cut)
        for (i = 0; i < (int)arrlen(c->pulls); i++)
            c->pulls[i].active = 0; /* lost with the connection; calls say NOT_CONNECTED until healed */
    parti__fake_log(w, c, cut ? "fault_partition" : "fault_heal", PARTI_ERR_OK, "-");
}

PARTIDEF void parti_fake_restart(parti_fake_world *w) {
    int i, j;
    if (!w) return;
    for (i = 0; i < (int)arrlen(w->clients); i++)
        for (j = 0; j < (int)arrlen(w->clients[i]->pulls); j++)
            if (w->clients[i]->pulls[j].active) w->clients[i]->pulls[j].terminal = PARTI_ERR_SERVER_SHUTDOWN;
    /* memory storage does not survive the restart (its consumers go with it) */
    for (i = (int)arrlen(w->streams) - 1; i >= 0; i--)
        if (w->streams[i]->memory) {
            parti__fake_log(w, NULL, "fault_restart", PARTI_ERR_OK, "memory stream %s lost", w->streams[i]->name);
            parti__fake_free_stream(w->streams[i]);
            arrdel(w->streams, i);
        }
    for (i = (int)arrlen(w->buckets) - 1; i >= 0; i--)
        if (w->buckets[i]->memory) {
            parti__fake_log(w, NULL, "fault_restart", PARTI_ERR_OK, "memory bucket %s lost", w->buckets[i]->name);
            parti__fake_free_bucket(w->buckets[i]);
            arrdel(w->buckets, i);
        }
    parti__fake_log(w, NULL, "fault_restart", PARTI_ERR_OK, "-");
}

PARTIDEF parti_err parti_fake_expire_key(parti_fake_world *w, const char *bucket, const char *key) {
    parti__fbucket *b;
    parti__frec *r;
    int i;
    if (!w || !bucket || !key) return PARTI_ERR_INVALID_ARGUMENT;
    if (!(b = parti__fake_bucket(w, bucket))) return PARTI_ERR_BUCKET_NOT_FOUND;
    if (!(r = parti__fake_latest(b, key)) || r->op != PARTI_KV_PUT) return PARTI_ERR_KEY_NOT_FOUND;
    parti__fake_log(w, NULL, "fault_expire_key", PARTI_ERR_OK, "%s/%s", bucket, key);
    /* all of the key's records age out at once; the live value leaves a marker */
    for (i = (int)arrlen(b->recs) - 1; i >= 0; i--) {
        if (strcmp(b->recs[i].key, key) != 0) continue;
        parti__fake_free_rec(&b->recs[i]);
        arrdel(b->recs, i);
    }
    if (w->markers) return parti__fake_append(w, b, key, "", 0, PARTI_KV_EXPIRED, w->now, NULL);
    return PARTI_ERR_OK;
}

PARTIDEF void parti_fake_skew_clock(parti_fake_world *w, parti_transport *client, int64_t ms) {
    parti__fclient *c = parti__fake_client_of(w, client);
    if (c) c->skew = ms;
}

PARTIDEF const char *parti_fake_log(const parti_fake_world *w, size_t *len) {
    size_t n = w && arrlen(w->log) ? (size_t)arrlen(w->log) - 1 : 0;
    if (len) *len = n;
    return n ? w->log : "";
}

#ifdef __cplusplus
}
#endif

/* ======================================================================== */
/* The nats.c binding                                                        */
/* ======================================================================== */
#ifndef PARTI_NATS_NO_NATSC

#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200112L
#error "parti_nats.h: the nats.c binding needs POSIX; compile with -D_POSIX_C_SOURCE=200809L (or define PARTI_NATS_NO_NATSC)"
#endif

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct parti__npull {
    char *stream, *consumer, *inbox;   /* replies arrive on "<inbox>.<pull id>" */
    char current[160];                 /* the reply subject of the pull request in flight */
    natsSubscription *sub;
    uint64_t id, expires_at, last_activity, reconnects, last_used;
    int active, remaining, delivered;
    int fresh;                         /* a message came since last_activity was read off the clock */
    uint32_t hb;
} parti__npull;

typedef struct parti__nconn parti__nconn;

typedef struct parti__nwatch {
    parti__nconn *n;
    char *bucket, *prefix, *consumer;
    natsSubscription *sub;        /* the push consumer's deliveries */
    natsSubscription *ctl;        /* replies to the watcher's own API requests, "<ctl_inbox>.<gen>" */
    char *ctl_inbox;
    char created[64];             /* the bucket stream's creation time: another one = the bucket was re-created */
    int phase;                    /* PARTI__WATCH_ACTIVE, _INFO (stream info asked), _CREATE (consumer asked) */
    uint64_t gen, phase_since, retry_at, last_activity;
    uint64_t last_rev, reconnects;
} parti__nwatch;

enum { PARTI__WATCH_ACTIVE = 0, PARTI__WATCH_INFO, PARTI__WATCH_CREATE, PARTI__WATCH_RETRY };
/* The watch consumer's idle heartbeat; three missed mean it is gone (e.g. with
 * its bucket) and the watcher is set up again. */
#define PARTI__WATCH_HB_MS 2000u

typedef struct parti__ndeliv {
    natsMsg *msg;       /* NULL: read by stream_get_next (not ackable), all of it in owned */
    parti_header *hdrs; /* PARTI_MALLOC array; strings belong to msg (or owned) */
    const char **keys;  /* from natsMsgHeader_Keys, freed with free() */
    char *owned;        /* stream_get_next: subject, data and header block in one PARTI_MALLOC */
    size_t hdr_bytes;   /* the headers' names and values (counted while held: parti__nats_destroy_later) */
} parti__ndeliv;

/* Released messages given back to nats.c together (see
 * parti__nats_msg_release): at most this many, or this many bytes of payload
 * and headers. */
#define PARTI__NATS_DEAD_BURST 1024
#define PARTI__NATS_DEAD_BYTES (1u << 20)

struct parti__nconn {
    natsConnection *nc;
    natsOptions *opts;
    natsStatistics *stats; /* reused to read the reconnect count (no callback holds this object) */
    char version[32];
    uint32_t vnum;
    int markers;
    uint64_t rng;
    char last_error[256];
    parti__npull *pulls; /* stb_ds array */
    /* Requests: replies come to this synchronous subscription on
     * "<rinbox>.*", on "<rinbox>.<rid>" (see parti__nats_request); NULL until
     * the first request and after a request that got no answer. */
    natsSubscription *rsub;
    char *rinbox;
    uint64_t rid;
    /* Subscriptions given up while the connection is open: unsubscribed at
     * once, destroyed only after a later request's reply came (or after the
     * connection is closed). nats.c before 3.6 hands a message to a
     * subscription it looked up without holding a reference (nats.c issue
     * 637): destroyed while a message for it is being read (a late reply,
     * a pull's last delivery), it is used after it was freed, which crashes
     * or wedges the reading thread. The reply to a request sent after the
     * UNSUB comes after every message the server sent for it, and the
     * reading thread handles them in order (a flush's OK is no such sign:
     * nats.c 3.4 also reports OK for a PING it could not write). stb_ds
     * array. */
    natsSubscription **retired;
    /* Plain acks (+ACK) not sent yet, as their reply subjects one after
     * another, each NUL-terminated (see parti__nats_ack). */
    char *acks;
    size_t acks_len, acks_cap;
    int acks_count;
    uint64_t acks_since; /* the coarse clock when the oldest held ack was given */
    /* Delivered messages released by the caller and not yet given back to
     * nats.c (see parti__nats_msg_release). */
    natsMsg *dead[PARTI__NATS_DEAD_BURST];
    int dead_count;
    size_t dead_bytes;
    /* A wall clock reading and the transport clock's at the same moment, to
     * put deliveries' server timestamps on the transport clock without two
     * clock reads per message (see parti__nats_delivery_time); stamp_uses:
     * deliveries dated with it, 0 = read it afresh for the next one. */
    uint64_t stamp_wall_ns, stamp_now_ms;
    int stamp_uses;
};

static void parti__nats_send_acks(parti__nconn *n);

/* Gives the released messages back to nats.c (see parti__nats_msg_release). */
static void parti__nats_free_dead(parti__nconn *n) {
    int i;
    for (i = 0; i < n->dead_count; i++) natsMsg_Destroy(n->dead[i]);
    n->dead_count = 0;
    n->dead_bytes = 0;
}

/* Gives up sub (NULL: nothing) as described at parti__nconn.retired. */
static void parti__nats_retire(parti__nconn *n, natsSubscription *sub) {
    if (!sub) return;
    natsSubscription_Unsubscribe(sub);
    arrput(n->retired, sub);
}

/* A reply came: every subscription retired before its request can go. */
static void parti__nats_reap_retired(parti__nconn *n) {
    while (arrlen(n->retired) > 0) natsSubscription_Destroy(arrpop(n->retired));
}

/* The transport clock: monotonic, and counting time the host was suspended
 * where the platform can (CLOCK_BOOTTIME on Linux): a lease must not look
 * valid after a suspend it slept through. */
static uint64_t parti__nats_now_ms(void *self) {
    struct timespec ts;
    (void)self;
#ifdef CLOCK_BOOTTIME
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wall-clock nanoseconds now, to put the server's timestamps on the
 * transport clock (the one now_ms reads). */
static uint64_t parti__nats_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t parti__nats_server_time(uint64_t wall_ns) {
    return parti_wall_to_transport_ms(wall_ns, parti__nats_wall_ns(), parti__nats_now_ms(NULL));
}

static void parti__nats_sleep_ms(void *self, uint32_t ms) {
    struct timespec ts;
    if (self) parti__nats_send_acks((parti__nconn *)self); /* (not held through a sleep) */
    ts.tv_sec = (time_t)(ms / 1000u);
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int parti__nats_is_connected(void *self) {
    parti__nconn *n = (parti__nconn *)self;
    return n && n->nc && natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

static uint64_t parti__nats_random(void *self) {
    return parti_rng_splitmix64(&((parti__nconn *)self)->rng);
}

static void parti__nats_note(parti__nconn *n, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void parti__nats_note(parti__nconn *n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->last_error, sizeof n->last_error, fmt, ap);
    va_end(ap);
}

/* Plain acks are sent in bursts rather than one by one: acked one at a
 * time, the caller's thread and the reading thread meet on the connection's
 * lock for every message (bench_consumer at batch 1000: about 15% more client
 * CPU per message; bursts of 1024 rather than 256 took 1.37-1.43 against
 * 1.57-1.61 us per message, about one burst per pull of 1000 instead of
 * four). They go out when the pull has had nothing buffered for a
 * millisecond (fetch_next), every PARTI__NATS_ACK_BURST or
 * PARTI__NATS_ACK_HOLD_MS, before any other call that talks to the server,
 * at flush and at close. While held they can keep the consumer at its
 * max_ack_pending; then that millisecond (plus a round trip) is how long
 * they hold a delivery back. An ack that never arrives is no loss: the server sends the message
 * again after ack_wait; this process settles it as done (its position is past
 * it), a group's next owner goes by the checkpoint, and only a standalone
 * consumer's successor on the same durable handles it again (see the notes at
 * the top). */
#define PARTI__NATS_ACK_BURST 1024
/* The longest an ack is held (on the coarse clock, below): a connection
 * that drops and is closed before it is back loses what is held, and those
 * messages come again, so the window stays near nats.c's own (its flusher
 * writes a millisecond after it is asked). */
#define PARTI__NATS_ACK_HOLD_MS 4u

/* A clock for the hold: read on every ack, so the cheapest there is (a few
 * milliseconds coarse on Linux). */
static uint64_t parti__nats_coarse_ms(void) {
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0)
#endif
        clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Writes what nats.c has buffered now rather than after its flusher's
 * millisecond: the PING goes out with it, and its PONG is waited for only
 * that millisecond (on a slow link it would hold back deliveries already
 * here). Nothing is concluded from the answer: nats.c 3.4 also reports OK
 * for a PING it could not write. */
static void parti__nats_write_now(parti__nconn *n) {
    natsConnection_FlushTimeout(n->nc, 1);
}

static void parti__nats_send_acks(parti__nconn *n) {
    size_t off = 0;
    int failed = 0;
    natsStatus first = NATS_OK;
    while (off < n->acks_len) {
        const char *reply = n->acks + off;
        natsStatus s = natsConnection_PublishString(n->nc, reply, "+ACK");
        if (s != NATS_OK && !failed++) first = s;
        off += strlen(reply) + 1;
    }
    n->acks_len = 0;
    n->acks_count = 0;
    if (failed)
        parti__nats_note(n, "%d of the acks not sent (%s): those messages come again after ack_wait", failed,
                         natsStatus_GetText(first));
}

static parti_err parti__nats_map(parti__nconn *n, natsStatus s, const char *what) {
    parti_err e;
    if (s == NATS_OK) return PARTI_ERR_OK;
    switch (s) {
    case NATS_TIMEOUT: e = PARTI_ERR_TIMEOUT; break;
    case NATS_NO_RESPONDERS: e = PARTI_ERR_NO_RESPONDERS; break;
    case NATS_CONNECTION_CLOSED: case NATS_CONNECTION_DISCONNECTED: case NATS_NO_SERVER: case NATS_STALE_CONNECTION:
    case NATS_IO_ERROR: e = PARTI_ERR_NOT_CONNECTED; break;
    case NATS_NOT_PERMITTED: case NATS_CONNECTION_AUTH_FAILED: e = PARTI_ERR_PERMISSION_DENIED; break;
    case NATS_NO_MEMORY: e = PARTI_ERR_NOMEM; break;
    case NATS_INVALID_SUBJECT: e = PARTI_ERR_INVALID_SUBJECT; break;
    case NATS_INVALID_ARG: case NATS_INVALID_TIMEOUT: e = PARTI_ERR_INVALID_ARGUMENT; break;
    case NATS_MAX_PAYLOAD: e = PARTI_ERR_VALUE_TOO_LARGE; break;
    default: e = PARTI_ERR_PROTOCOL; break;
    }
    parti__nats_note(n, "%s: %s", what, natsStatus_GetText(s));
    return e;
}

static int parti__nats_connected(parti__nconn *n) {
    return natsConnection_Status(n->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* What is left of a call's budget that ends at deadline: 0 when spent. A
 * call that makes several requests gives each what is left, so the whole
 * call stays within its timeout. */
static uint32_t parti__nats_left(parti__nconn *n, uint64_t deadline) {
    uint64_t now = parti__nats_now_ms(n);
    return now >= deadline ? 0 : (uint32_t)(deadline - now);
}

/* Reconnects so far, from the connection's own statistics. (A reconnected
 * callback would have to point at this object, and nats.c may still run a
 * queued callback after parti_nats_close freed it.) */
static uint64_t parti__nats_reconnects(parti__nconn *n) {
    uint64_t in_msgs = 0, in_bytes = 0, out_msgs = 0, out_bytes = 0, reconnects = 0;
    if (natsConnection_GetStats(n->nc, n->stats) != NATS_OK) return 0;
    natsStatistics_GetCounts(n->stats, &in_msgs, &in_bytes, &out_msgs, &out_bytes, &reconnects);
    return reconnects;
}

/* ---- JSON request bodies --------------------------------------------------- */

/* Runs a JSON builder twice (measure, then write) into a PARTI_MALLOC'd string. */
typedef void (*parti__json_builder)(parti_json_writer *w, const void *arg);

static parti_err parti__nats_json(parti__json_builder build, const void *arg, char **out, size_t *len) {
    parti_json_writer w;
    size_t need = 0;
    parti_err e;
    *out = NULL;
    parti_json_writer_init(&w, NULL, 0);
    build(&w, arg);
    e = parti_json_writer_finish(&w, &need);
    if (e != PARTI_ERR_OK && e != PARTI_ERR_BUFFER_TOO_SMALL) return e;
    if (!(*out = (char *)PARTI_MALLOC(need))) return PARTI_ERR_NOMEM;
    parti_json_writer_init(&w, *out, need);
    build(&w, arg);
    if ((e = parti_json_writer_finish(&w, NULL)) != PARTI_ERR_OK) {
        PARTI_FREE(*out);
        *out = NULL;
        return e;
    }
    *len = need - 1;
    return PARTI_ERR_OK;
}

/* The JetStream API wants durations in nanoseconds. */
static int64_t parti__ns(uint64_t ms) { return ms > (uint64_t)INT64_MAX / 1000000 ? INT64_MAX : (int64_t)ms * 1000000; }

static void parti__nats_build_stream(parti_json_writer *w, const void *arg) {
    const parti_stream_config *c = (const parti_stream_config *)arg;
    int i;
    parti_json_object_begin(w);
    parti_json_key(w, "name");
    parti_json_string(w, c->name);
    parti_json_key(w, "subjects");
    parti_json_array_begin(w);
    for (i = 0; i < c->subject_count; i++) parti_json_string(w, c->subjects[i]);
    parti_json_array_end(w);
    parti_json_key(w, "retention");
    parti_json_string(w, c->retention == PARTI_RETENTION_WORKQUEUE ? "workqueue"
                         : c->retention == PARTI_RETENTION_INTEREST ? "interest"
                                                                    : "limits");
    parti_json_key(w, "storage");
    parti_json_string(w, c->memory_storage ? "memory" : "file");
    parti_json_key(w, "num_replicas");
    parti_json_int(w, 1);
    parti_json_key(w, "duplicate_window");
    parti_json_int(w, parti__ns(c->duplicate_window_ms ? c->duplicate_window_ms : 120000));
    parti_json_key(w, "max_msgs");
    parti_json_int(w, c->max_msgs ? (int64_t)c->max_msgs : -1);
    parti_json_key(w, "discard");
    parti_json_string(w, "old");
    parti_json_object_end(w);
}

typedef struct parti__nats_bucket_args {
    const parti_kv_config *cfg;
    const char *stream;
    char subject[PARTI_MAX_NAME_LEN + 8];
    int markers;
} parti__nats_bucket_args;

static void parti__nats_build_bucket(parti_json_writer *w, const void *arg) {
    const parti__nats_bucket_args *a = (const parti__nats_bucket_args *)arg;
    uint64_t ttl = a->cfg->ttl_ms;
    parti_json_object_begin(w);
    parti_json_key(w, "name");
    parti_json_string(w, a->stream);
    parti_json_key(w, "subjects");
    parti_json_array_begin(w);
    parti_json_string(w, a->subject);
    parti_json_array_end(w);
    parti_json_key(w, "retention");
    parti_json_string(w, "limits");
    parti_json_key(w, "storage");
    parti_json_string(w, a->cfg->memory_storage ? "memory" : "file");
    parti_json_key(w, "num_replicas");
    parti_json_int(w, 1);
    parti_json_key(w, "max_msgs_per_subject");
    parti_json_int(w, a->cfg->history ? a->cfg->history : 1);
    parti_json_key(w, "max_age");
    parti_json_int(w, parti__ns(ttl));
    parti_json_key(w, "max_msg_size");
    parti_json_int(w, (int64_t)(a->cfg->max_value_size ? a->cfg->max_value_size : 1024 * 1024));
    parti_json_key(w, "duplicate_window");
    parti_json_int(w, parti__ns(ttl && ttl < 120000 ? ttl : 120000));
    parti_json_key(w, "discard");
    parti_json_string(w, "new");
    parti_json_key(w, "allow_rollup_hdrs");
    parti_json_bool(w, 1);
    parti_json_key(w, "deny_delete");
    parti_json_bool(w, 1);
    parti_json_key(w, "allow_direct");
    parti_json_bool(w, 1);
    if (a->markers && ttl) {
        /* the server then writes a marker when a key ages out (nats-server >= 2.11) */
        parti_json_key(w, "allow_msg_ttl");
        parti_json_bool(w, 1);
        parti_json_key(w, "subject_delete_marker_ttl");
        parti_json_int(w, parti__ns(ttl < 1000 ? 1000 : ttl));
    }
    parti_json_object_end(w);
}

static void parti__nats_build_consumer(parti_json_writer *w, const void *arg) {
    const parti_consumer_config *c = (const parti_consumer_config *)arg;
    static const char *const policies[] = {"all", "by_start_sequence", "new"};
    int i;
    parti_json_object_begin(w);
    parti_json_key(w, "stream_name");
    parti_json_string(w, c->stream);
    if (c->update_only) { /* 10149 "consumer does not exist" rather than a new consumer (2.10+) */
        parti_json_key(w, "action");
        parti_json_string(w, "update");
    }
    parti_json_key(w, "config");
    parti_json_object_begin(w);
    parti_json_key(w, "durable_name");
    parti_json_string(w, c->durable);
    parti_json_key(w, "name");
    parti_json_string(w, c->durable);
    parti_json_key(w, "deliver_policy");
    parti_json_string(w, policies[c->deliver_policy]);
    if (c->deliver_policy == PARTI_DELIVER_BY_START_SEQUENCE) {
        parti_json_key(w, "opt_start_seq");
        parti_json_uint(w, c->opt_start_seq ? c->opt_start_seq : 1);
    }
    parti_json_key(w, "ack_policy");
    parti_json_string(w, "explicit");
    parti_json_key(w, "ack_wait");
    parti_json_int(w, parti__ns(c->ack_wait_ms ? c->ack_wait_ms : 30000));
    parti_json_key(w, "max_deliver");
    parti_json_int(w, c->max_deliver > 0 ? c->max_deliver : -1);
    parti_json_key(w, "max_ack_pending");
    parti_json_int(w, c->max_ack_pending > 0 ? c->max_ack_pending : 1000);
    parti_json_key(w, "replay_policy");
    parti_json_string(w, "instant");
    if (c->inactive_threshold_ms) {
        parti_json_key(w, "inactive_threshold");
        parti_json_int(w, parti__ns(c->inactive_threshold_ms));
    }
    parti_json_key(w, "filter_subjects");
    parti_json_array_begin(w);
    for (i = 0; i < c->filter_count; i++) parti_json_string(w, c->filter_subjects[i]);
    parti_json_array_end(w);
    parti_json_object_end(w);
    parti_json_object_end(w);
}

/* ---- requests -------------------------------------------------------------- */

/* The server answers a publish it does not permit with an asynchronous
 * "Permissions Violation for Publish to ..." error and no reply: a request
 * then times out. Tell the two apart by the connection's last error. */
static int parti__nats_denied(parti__nconn *n, const char *subject) {
    const char *text = NULL;
    natsConnection_GetLastError(n->nc, &text);
    if (!text || !strstr(text, "Permissions Violation") || !strstr(text, subject)) return 0;
    parti__nats_note(n, "%s", text);
    return 1;
}

/* Drops the reply subscription (what it queued is freed here, on the
 * caller's thread); the next request subscribes on a new inbox, so a reply
 * that comes after its request gave up (a late "no responders" included)
 * never reaches a later request. */
static void parti__nats_reply_drop(parti__nconn *n) {
    parti__nats_retire(n, n->rsub);
    n->rsub = NULL;
    PARTI_FREE(n->rinbox);
    n->rinbox = NULL;
}

static natsStatus parti__nats_reply_sub(parti__nconn *n) {
    natsInbox *inbox = NULL;
    char wildcard[256];
    natsStatus s;
    if (n->rsub) return NATS_OK;
    if ((s = natsInbox_Create(&inbox)) != NATS_OK) return s;
    n->rinbox = parti__strdup(inbox);
    natsInbox_Destroy(inbox);
    if (!n->rinbox) return NATS_NO_MEMORY;
    snprintf(wildcard, sizeof wildcard, "%s.*", n->rinbox);
    if ((s = natsConnection_SubscribeSync(&n->rsub, n->nc, wildcard)) != NATS_OK) {
        n->rsub = NULL;
        parti__nats_reply_drop(n);
    }
    return s;
}

/* Writes one request (into nats.c's buffer) with the next reply subject
 * "<rinbox>.<rid>" of the reply subscription (which must exist), put in
 * rsubj. */
static natsStatus parti__nats_send_request(parti__nconn *n, const char *subject, const parti_header *hdrs, int nhdr,
                                           const void *data, size_t len, char *rsubj, size_t rsubj_size) {
    natsMsg *req = NULL;
    natsStatus s;
    int i;
    snprintf(rsubj, rsubj_size, "%s.%llu", n->rinbox, (unsigned long long)++n->rid);
    s = natsMsg_Create(&req, subject, rsubj, (const char *)data, (int)len);
    for (i = 0; s == NATS_OK && i < nhdr; i++) s = natsMsgHeader_Add(req, hdrs[i].name, hdrs[i].value);
    if (s == NATS_OK) s = natsConnection_PublishMsg(n->nc, req);
    natsMsg_Destroy(req);
    return s;
}

/* A request with optional headers; *reply is the server's message.
 *
 * Not natsConnection_Request: it takes replies on an asynchronous
 * subscription of nats.c's own, whose delivery thread natsConnection_Destroy
 * does not wait for. On a loaded host that thread can run after the
 * application's nats_Close() stopped nats.c's garbage collector thread; the
 * replies it frees then (ones that came after their request timed out) are
 * never freed, which LeakSanitizer reports. Here replies come to a
 * synchronous subscription of the transport, read on the caller's thread, so
 * that once parti_nats_close returns no thread of nats.c holds a message of
 * the transport's. */
static parti_err parti__nats_request(parti__nconn *n, const char *subject, const parti_header *hdrs, int nhdr,
                                     const void *data, size_t len, uint32_t timeout_ms, natsMsg **reply) {
    char rsubj[128];
    uint64_t deadline;
    natsStatus s;
    *reply = NULL;
    parti__nats_send_acks(n); /* (acks first, in the order they were given) */
    if (!parti__nats_connected(n)) {
        parti__nats_note(n, "%s: not connected", subject);
        return PARTI_ERR_NOT_CONNECTED;
    }
    deadline = parti__nats_now_ms(n) + (timeout_ms ? timeout_ms : 1);
    s = parti__nats_reply_sub(n);
    if (s == NATS_OK) s = parti__nats_send_request(n, subject, hdrs, nhdr, data, len, rsubj, sizeof rsubj);
    /* a publish is left to nats.c's flusher thread, which waits a millisecond
     * for more; a flush writes it now (and waits for the PONG to its PING,
     * which comes once the server has read the request). Only the reply's
     * outcome counts (nats.c 3.4 reports OK for a PING it could not write). */
    if (s == NATS_OK && parti__nats_left(n, deadline))
        natsConnection_FlushTimeout(n->nc, (int64_t)parti__nats_left(n, deadline));
    while (s == NATS_OK) {
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, n->rsub, (int64_t)parti__nats_left(n, deadline));
        if (s != NATS_OK) break;
        if (strcmp(natsMsg_GetSubject(m), rsubj) == 0) {
            *reply = m;
            /* the reading thread handed over this reply after everything the
             * server sent before it: it is done with every subscription
             * retired before the request went out */
            parti__nats_reap_retired(n);
            break;
        }
        natsMsg_Destroy(m); /* not this request's: a second answer to an earlier one */
    }
    /* (a "no responders" status answers this request: the subscription is
     * newer than every request that got no answer) */
    if (s != NATS_OK && s != NATS_NO_RESPONDERS) parti__nats_reply_drop(n);
    if (s == NATS_TIMEOUT && parti__nats_denied(n, subject)) return PARTI_ERR_PERMISSION_DENIED;
    return parti__nats_map(n, s, subject);
}

/* Status header of a reply ("404", ...), or NULL. */
static const char *parti__nats_status_of(natsMsg *m) {
    const char *v = NULL;
    if (natsMsgHeader_Get(m, "Status", &v) != NATS_OK) return NULL;
    return v;
}

/* Parses a JSON reply; a JetStream "error" object becomes its parti_err, and
 * its err_code goes to *err_code_out (may be NULL; 0 without an error). */
static parti_err parti__nats_reply_json_code(parti__nconn *n, natsMsg *reply, parti_json_doc *doc,
                                             int64_t *err_code_out) {
    char jmsg[128];
    int err;
    parti_err e;
    memset(doc, 0, sizeof *doc);
    if (err_code_out) *err_code_out = 0;
    e = parti_json_parse(doc, natsMsg_GetData(reply), (size_t)natsMsg_GetDataLength(reply), NULL, jmsg, sizeof jmsg);
    if (e != PARTI_ERR_OK) {
        parti__nats_note(n, "unparsable JetStream reply: %s", jmsg);
        return PARTI_ERR_PROTOCOL;
    }
    if ((err = parti_json_get(doc, parti_json_root(doc), "error")) >= 0) {
        int64_t code = 0, err_code = 0;
        char desc[160] = "";
        parti_json_get_int64(doc, err, "code", &code);
        parti_json_get_int64(doc, err, "err_code", &err_code);
        parti_json_get_string(doc, err, "description", desc, sizeof desc, NULL);
        parti__nats_note(n, "JetStream error %lld/%lld: %s", (long long)code, (long long)err_code, desc);
        parti_json_doc_free(doc);
        if (err_code_out) *err_code_out = err_code;
        return parti_js_api_error_described((int)err_code, (int)code, desc);
    }
    return PARTI_ERR_OK;
}

static parti_err parti__nats_reply_json(parti__nconn *n, natsMsg *reply, parti_json_doc *doc) {
    return parti__nats_reply_json_code(n, reply, doc, NULL);
}

/* A JetStream API call: request, JSON reply, error mapping. */
static parti_err parti__nats_api(parti__nconn *n, const char *subject, const char *body, size_t len,
                                 uint32_t timeout_ms, parti_json_doc *doc) {
    natsMsg *reply = NULL;
    parti_err e = parti__nats_request(n, subject, NULL, 0, body, len, timeout_ms, &reply);
    memset(doc, 0, sizeof *doc);
    if (e == PARTI_ERR_NO_RESPONDERS) parti__nats_note(n, "%s: no responders (JetStream not enabled?)", subject);
    if (e != PARTI_ERR_OK) return e;
    e = parti__nats_reply_json(n, reply, doc);
    natsMsg_Destroy(reply);
    return e;
}

/* "$JS.API.STREAM.INFO." + name, refused when it does not fit. */
static parti_err parti__nats_subject(char *out, size_t cap, const char *api, const char *name) {
    int k = snprintf(out, cap, "%s%s", api, name);
    return k < 0 || (size_t)k >= cap ? PARTI_ERR_INVALID_NAME : PARTI_ERR_OK;
}

static char *parti__nats_dup_str(const parti_json_doc *d, int node) {
    char *s = NULL;
    if (parti_json_as_string_dup(d, node, &s) != PARTI_ERR_OK) return NULL;
    return s;
}

/* Copies a JSON array of strings (or one string) into a PARTI_MALLOC'd list. */
static parti_err parti__nats_strings(const parti_json_doc *d, int arr, int single, char ***out, int *count) {
    int n = 0, i, node;
    *out = NULL;
    *count = 0;
    if (arr < 0 && single < 0) return PARTI_ERR_OK;
    n = arr >= 0 ? (int)parti_json_count(d, arr) : 1;
    if (!(*out = (char **)PARTI_MALLOC(sizeof(char *) * (size_t)(n + 1)))) return PARTI_ERR_NOMEM;
    for (i = 0, node = arr >= 0 ? parti_json_first(d, arr) : single; i < n && node >= 0; i++) {
        if (!((*out)[i] = parti__nats_dup_str(d, node))) {
            parti_strings_free(*out, i);
            *out = NULL;
            return PARTI_ERR_PROTOCOL;
        }
        node = arr >= 0 ? parti_json_next(d, node) : -1;
    }
    *count = i;
    return PARTI_ERR_OK;
}

/* ---- streams --------------------------------------------------------------- */

static parti_err parti__nats_stream_create(void *self, const parti_stream_config *cfg, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    char subject[128], *body = NULL;
    size_t len = 0;
    parti_json_doc doc;
    parti_err e;
    int i;
    if (!n || !cfg || !cfg->name || cfg->subject_count < 1 || !cfg->subjects) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(cfg->name, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    for (i = 0; i < cfg->subject_count; i++)
        if ((e = parti_subject_check(cfg->subjects[i], 1, NULL, 0)) != PARTI_ERR_OK)
            return e == PARTI_ERR_INVALID_ARGUMENT ? e : PARTI_ERR_INVALID_SUBJECT;
    if ((e = parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.CREATE.", cfg->name)) != PARTI_ERR_OK)
        return e;
    if ((e = parti__nats_json(parti__nats_build_stream, cfg, &body, &len)) != PARTI_ERR_OK) return e;
    e = parti__nats_api(n, subject, body, len, timeout_ms, &doc);
    PARTI_FREE(body);
    parti_json_doc_free(&doc);
    return e;
}

static parti_err parti__nats_stream_info(void *self, const char *stream, parti_stream_info *out, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    char subject[128];
    parti_json_doc doc;
    parti_err e;
    int cfg, st;
    int64_t dw = 0;
    char storage[16] = "", created[64] = "";
    if (!n || !stream || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.INFO.", stream);
    if ((e = parti__nats_api(n, subject, NULL, 0, timeout_ms, &doc)) != PARTI_ERR_OK) return e;
    cfg = parti_json_get(&doc, parti_json_root(&doc), "config");
    st = parti_json_get(&doc, parti_json_root(&doc), "state");
    out->name = parti__nats_dup_str(&doc, parti_json_get(&doc, cfg, "name"));
    e = parti__nats_strings(&doc, parti_json_get(&doc, cfg, "subjects"), -1, &out->subjects, &out->subject_count);
    parti_json_get_string(&doc, cfg, "storage", storage, sizeof storage, NULL);
    out->memory_storage = strcmp(storage, "memory") == 0;
    parti_json_get_int64(&doc, cfg, "duplicate_window", &dw);
    out->duplicate_window_ms = dw > 0 ? (uint64_t)dw / 1000000 : 0;
    storage[0] = 0;
    parti_json_get_string(&doc, cfg, "retention", storage, sizeof storage, NULL);
    out->retention = strcmp(storage, "workqueue") == 0  ? PARTI_RETENTION_WORKQUEUE
                     : strcmp(storage, "interest") == 0 ? PARTI_RETENTION_INTEREST
                                                        : PARTI_RETENTION_LIMITS;
    parti_json_get_uint64(&doc, st, "messages", &out->messages);
    parti_json_get_uint64(&doc, st, "first_seq", &out->first_seq);
    parti_json_get_uint64(&doc, st, "last_seq", &out->last_seq);
    parti_json_get_string(&doc, parti_json_root(&doc), "created", created, sizeof created, NULL);
    if (parti_rfc3339_parse(created, strlen(created), &out->created_ns) != PARTI_ERR_OK) out->created_ns = 0;
    parti_json_doc_free(&doc);
    if (e == PARTI_ERR_OK && !out->name) e = PARTI_ERR_PROTOCOL;
    if (e != PARTI_ERR_OK) parti_stream_info_free(out);
    return e;
}

static parti_err parti__nats_stream_delete(void *self, const char *stream, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    char subject[128];
    parti_json_doc doc;
    parti_err e;
    if (!n || !stream) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.DELETE.", stream);
    e = parti__nats_api(n, subject, NULL, 0, timeout_ms, &doc);
    parti_json_doc_free(&doc);
    return e;
}

/* ---- direct reads: $JS.API.STREAM.MSG.GET ------------------------------------ */

/* JetStream's "no message found" (a 404 that parti_js_api_error reads as a
 * missing key): for a direct read it means nothing matches from there on. */
#define PARTI__JS_NO_MESSAGE_FOUND 10037

/* Decodes standard base64 (RFC 4648 section 4, '=' padding optional) of the n
 * bytes at in into out, which has room for n / 4 * 3 + 3 bytes. Untrusted
 * input: 0 on a character outside the alphabet or an impossible length. */
static int parti__nats_base64_decode(const char *in, size_t n, uint8_t *out, size_t *out_len) {
    uint32_t acc = 0;
    size_t i, o = 0;
    int bits = 0;
    *out_len = 0;
    if (n % 4 == 0 && n && in[n - 1] == '=') n -= (n >= 2 && in[n - 2] == '=') ? 2 : 1;
    if (n % 4 == 1) return 0;
    for (i = 0; i < n; i++) {
        char ch = in[i];
        uint32_t v;
        if (ch >= 'A' && ch <= 'Z') v = (uint32_t)(ch - 'A');
        else if (ch >= 'a' && ch <= 'z') v = (uint32_t)(ch - 'a') + 26;
        else if (ch >= '0' && ch <= '9') v = (uint32_t)(ch - '0') + 52;
        else if (ch == '+') v = 62;
        else if (ch == '/') v = 63;
        else return 0;
        acc = (acc << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1u;
        }
    }
    *out_len = o;
    return 1;
}

/* Splits a NATS header block ("NATS/1.0[ status]\r\nName: value\r\n...\r\n"),
 * len bytes NUL-terminated at block[len], in place into name/value pairs
 * (NUL-terminated inside block) in out, which has room for a pair per line.
 * Returns the count, or -1 when the block is malformed. */
static int parti__nats_headers_split(char *block, size_t len, parti_header *out) {
    char *p = block, *end = block + len;
    int count = 0, first = 1;
    if (len < 8 || memcmp(block, "NATS/1.0", 8) != 0) return -1;
    while (p < end) {
        char *eol = (char *)memchr(p, '\n', (size_t)(end - p)), *line_end, *colon, *name_end, *value;
        if (!eol) eol = end;
        line_end = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
        if (first) {
            first = 0;
        } else if (line_end == p) {
            break; /* the empty line ends the block */
        } else {
            if (!(colon = (char *)memchr(p, ':', (size_t)(line_end - p)))) return -1;
            for (name_end = colon; name_end > p && (name_end[-1] == ' ' || name_end[-1] == '\t'); name_end--) {
            }
            if (name_end == p) return -1;
            for (value = colon + 1; value < line_end && (*value == ' ' || *value == '\t'); value++) {
            }
            while (line_end > value && (line_end[-1] == ' ' || line_end[-1] == '\t')) line_end--;
            *name_end = 0;
            *line_end = 0;
            out[count].name = p;
            out[count].value = value;
            count++;
        }
        p = eol < end ? eol + 1 : end;
    }
    return count;
}

/* The length of a JSON string member, without its escapes (base64 has none:
 * an escaped one is refused by the decoder); 0 and "" when absent. */
static const char *parti__nats_raw_member(const parti_json_doc *d, int obj, const char *key, size_t *len) {
    int node = parti_json_get(d, obj, key);
    const char *raw;
    *len = 0;
    if (node < 0 || parti_json_type_of(d, node) != PARTI_JSON_STRING || !(raw = parti_json_raw(d, node, len))) return "";
    return raw;
}

/* Builds out over the "message" object of a MSG.GET reply: one block holds
 * the subject, the decoded data and the decoded header block. */
static parti_err parti__nats_get_fill(const parti_json_doc *doc, int msg, parti_msg *out) {
    parti__ndeliv *d;
    const char *hraw, *draw;
    size_t hlen, dlen, slen = 0, hcap, dcap, lines = 0, i;
    char stamp[48] = "";
    uint64_t wall = 0;
    int subj = parti_json_get(doc, msg, "subject"), nh = 0;
    hraw = parti__nats_raw_member(doc, msg, "hdrs", &hlen);
    draw = parti__nats_raw_member(doc, msg, "data", &dlen);
    if (parti_json_as_string(doc, subj, NULL, 0, &slen) != PARTI_ERR_BUFFER_TOO_SMALL || slen < 2)
        return PARTI_ERR_PROTOCOL;
    hcap = hlen / 4 * 3 + 3;
    dcap = dlen / 4 * 3 + 3;
    if (!(d = (parti__ndeliv *)PARTI_MALLOC(sizeof *d))) return PARTI_ERR_NOMEM;
    memset(d, 0, sizeof *d);
    out->handle = d;
    if (!(d->owned = (char *)PARTI_MALLOC(slen + dcap + 1 + hcap + 1))) return PARTI_ERR_NOMEM;
    parti_json_as_string(doc, subj, d->owned, slen, NULL);
    out->subject = d->owned;
    out->data = (const uint8_t *)d->owned + slen;
    if (!parti__nats_base64_decode(draw, dlen, (uint8_t *)d->owned + slen, &out->len)) return PARTI_ERR_PROTOCOL;
    d->owned[slen + out->len] = 0;
    if (hlen) {
        char *block = d->owned + slen + dcap + 1;
        size_t blen;
        if (!parti__nats_base64_decode(hraw, hlen, (uint8_t *)block, &blen)) return PARTI_ERR_PROTOCOL;
        block[blen] = 0;
        for (i = 0; i < blen; i++) lines += block[i] == '\n';
        if (!(d->hdrs = (parti_header *)PARTI_MALLOC(sizeof(parti_header) * (lines + 1)))) return PARTI_ERR_NOMEM;
        if ((nh = parti__nats_headers_split(block, blen, d->hdrs)) < 0) return PARTI_ERR_PROTOCOL;
    }
    out->headers = nh ? d->hdrs : NULL;
    out->header_count = nh;
    if (parti_json_get_uint64(doc, msg, "seq", &out->stream_seq) != PARTI_ERR_OK || !out->stream_seq)
        return PARTI_ERR_PROTOCOL;
    out->delivery_count = 1;
    parti_json_get_string(doc, msg, "time", stamp, sizeof stamp, NULL);
    if (parti_rfc3339_parse(stamp, strlen(stamp), &wall) == PARTI_ERR_OK) out->timestamp_ms = parti__nats_server_time(wall);
    return PARTI_ERR_OK;
}

typedef struct parti__nats_get_req {
    uint64_t seq;
    const char *filter;
} parti__nats_get_req;

static void parti__nats_build_get(parti_json_writer *w, const void *arg) {
    const parti__nats_get_req *r = (const parti__nats_get_req *)arg;
    parti_json_object_begin(w);
    parti_json_key(w, "seq");
    parti_json_uint(w, r->seq);
    parti_json_key(w, "next_by_subj");
    parti_json_string(w, r->filter);
    parti_json_object_end(w);
}

static void parti__nats_msg_release(void *self, parti_msg *m);

static parti_err parti__nats_stream_get_next(void *self, const char *stream, const char *filter, uint64_t from_seq,
                                             parti_msg *out, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nats_get_req r;
    char subject[128], *body = NULL;
    size_t len = 0;
    natsMsg *reply = NULL;
    parti_json_doc doc;
    int64_t err_code = 0;
    int msg;
    parti_err e;
    if (out) memset(out, 0, sizeof *out);
    if (!n || !stream || !filter || !out || from_seq < 1) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (parti_subject_check(filter, 1, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.MSG.GET.", stream);
    r.seq = from_seq;
    r.filter = filter;
    if ((e = parti__nats_json(parti__nats_build_get, &r, &body, &len)) != PARTI_ERR_OK) return e;
    e = parti__nats_request(n, subject, NULL, 0, body, len, timeout_ms, &reply);
    PARTI_FREE(body);
    if (e == PARTI_ERR_NO_RESPONDERS) parti__nats_note(n, "%s: no responders (JetStream not enabled?)", subject);
    if (e != PARTI_ERR_OK) return e;
    e = parti__nats_reply_json_code(n, reply, &doc, &err_code);
    natsMsg_Destroy(reply);
    if (err_code == PARTI__JS_NO_MESSAGE_FOUND) return PARTI_ERR_NO_MESSAGES;
    if (e != PARTI_ERR_OK) return e;
    if ((msg = parti_json_get(&doc, parti_json_root(&doc), "message")) < 0 ||
        parti_json_type_of(&doc, msg) != PARTI_JSON_OBJECT) {
        parti__nats_note(n, "%s: reply without a message", subject);
        e = PARTI_ERR_PROTOCOL;
    } else if ((e = parti__nats_get_fill(&doc, msg, out)) == PARTI_ERR_PROTOCOL) {
        parti__nats_note(n, "%s: malformed message in the reply", subject);
    }
    parti_json_doc_free(&doc);
    if (e != PARTI_ERR_OK) parti__nats_msg_release(n, out);
    return e;
}

/* ---- publish ----------------------------------------------------------------- */

/* Reads a publish ack: {"stream":..,"seq":N,"duplicate":true} or an error. */
static parti_err parti__nats_pub_ack(parti__nconn *n, natsMsg *reply, uint64_t *seq, int *duplicate) {
    parti_json_doc doc;
    parti_err e = parti__nats_reply_json(n, reply, &doc);
    int dup = 0;
    if (e != PARTI_ERR_OK) return e;
    if (parti_json_get_uint64(&doc, parti_json_root(&doc), "seq", seq) != PARTI_ERR_OK) e = PARTI_ERR_PROTOCOL;
    parti_json_get_bool(&doc, parti_json_root(&doc), "duplicate", &dup);
    if (duplicate) *duplicate = dup;
    parti_json_doc_free(&doc);
    return e;
}

static parti_err parti__nats_publish(void *self, const char *subject, const parti_header *headers, int header_count,
                                     const void *data, size_t len, parti_pub_ack *ack, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    natsMsg *reply = NULL;
    uint64_t seq = 0;
    int dup = 0, i;
    parti_err e;
    if (!n || !subject || (len && !data) || header_count < 0 || (header_count && !headers))
        return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < header_count; i++)
        if (!headers[i].name || !headers[i].value) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_subject_check(subject, 0, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
    e = parti__nats_request(n, subject, headers, header_count, data, len, timeout_ms, &reply);
    if (e != PARTI_ERR_OK) return e;
    e = parti__nats_pub_ack(n, reply, &seq, &dup);
    natsMsg_Destroy(reply);
    if (e == PARTI_ERR_OK && ack) {
        ack->stream_seq = seq;
        ack->duplicate = dup;
    }
    return e;
}

/* ---- key/value --------------------------------------------------------------- */

typedef struct parti__nkv {
    char stream[PARTI_MAX_NAME_LEN + 8];  /* KV_<bucket> */
    char subject[PARTI_MAX_SUBJECT_LEN + PARTI_MAX_NAME_LEN + 8]; /* $KV.<bucket>.<key> */
} parti__nkv;

static parti_err parti__nats_kv_names(const char *bucket, const char *key, parti__nkv *k) {
    if (!bucket) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(bucket, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (key && parti_kv_key_check(key, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    snprintf(k->stream, sizeof k->stream, "KV_%s", bucket);
    snprintf(k->subject, sizeof k->subject, "$KV.%s.%s", bucket, key ? key : ">");
    return PARTI_ERR_OK;
}

static parti_err parti__nats_kv_open(void *self, const parti_kv_config *cfg, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nats_bucket_args a;
    parti__nkv k;
    char subject[128], *body = NULL;
    size_t len = 0;
    parti_json_doc doc;
    parti_err e;
    if (!n || !cfg || !cfg->bucket || cfg->history > 64) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__nats_kv_names(cfg->bucket, NULL, &k)) != PARTI_ERR_OK) return e;
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.INFO.", k.stream);
    e = parti__nats_api(n, subject, NULL, 0, timeout_ms, &doc);
    parti_json_doc_free(&doc);
    if (e != PARTI_ERR_STREAM_NOT_FOUND) return e;
    a.cfg = cfg;
    a.stream = k.stream;
    snprintf(a.subject, sizeof a.subject, "$KV.%s.>", cfg->bucket);
    a.markers = n->markers;
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.CREATE.", k.stream);
    if ((e = parti__nats_json(parti__nats_build_bucket, &a, &body, &len)) != PARTI_ERR_OK) return e;
    e = parti__nats_api(n, subject, body, len, timeout_ms, &doc);
    PARTI_FREE(body);
    parti_json_doc_free(&doc);
    return e;
}

/* The operation an entry records, from its headers. */
static parti_kv_op parti__nats_kv_op(natsMsg *m) {
    const char *v = NULL;
    if (natsMsgHeader_Get(m, "Nats-Marker-Reason", &v) == NATS_OK && v) return PARTI_KV_EXPIRED;
    if (natsMsgHeader_Get(m, "KV-Operation", &v) == NATS_OK && v) {
        if (strcmp(v, "DEL") == 0) return PARTI_KV_DELETE;
        if (strcmp(v, "PURGE") == 0) return PARTI_KV_PURGE;
    }
    return PARTI_KV_PUT;
}

/* Direct get of the latest entry of a key (any op), or of one revision. */
static parti_err parti__nats_kv_raw_get(parti__nconn *n, const parti__nkv *k, uint64_t revision, natsMsg **out,
                                        uint32_t timeout_ms) {
    char subject[sizeof(((parti__nkv *)0)->stream) + sizeof(((parti__nkv *)0)->subject) + 24], body[48];
    const char *status, *subj = NULL;
    natsMsg *reply = NULL;
    parti_err e;
    *out = NULL;
    if (revision) {
        snprintf(subject, sizeof subject, "$JS.API.DIRECT.GET.%s", k->stream);
        snprintf(body, sizeof body, "{\"seq\":%llu}", (unsigned long long)revision);
        e = parti__nats_request(n, subject, NULL, 0, body, strlen(body), timeout_ms, &reply);
    } else {
        snprintf(subject, sizeof subject, "$JS.API.DIRECT.GET.%s.%s", k->stream, k->subject);
        e = parti__nats_request(n, subject, NULL, 0, NULL, 0, timeout_ms, &reply);
    }
    if (e == PARTI_ERR_NO_RESPONDERS) return PARTI_ERR_BUCKET_NOT_FOUND;
    if (e != PARTI_ERR_OK) return e;
    if ((status = parti__nats_status_of(reply)) != NULL) {
        e = strcmp(status, "404") == 0 ? PARTI_ERR_KEY_NOT_FOUND : PARTI_ERR_PROTOCOL;
        if (e == PARTI_ERR_PROTOCOL) parti__nats_note(n, "direct get: status %s", status);
        natsMsg_Destroy(reply); /* owns status */
        return e;
    }
    if (revision && (natsMsgHeader_Get(reply, "Nats-Subject", &subj) != NATS_OK || !subj || strcmp(subj, k->subject) != 0)) {
        natsMsg_Destroy(reply);
        return PARTI_ERR_KEY_NOT_FOUND;
    }
    *out = reply;
    return PARTI_ERR_OK;
}

static uint64_t parti__nats_header_u64(natsMsg *m, const char *name) {
    const char *v = NULL;
    uint64_t x = 0;
    if (natsMsgHeader_Get(m, name, &v) == NATS_OK && v) parti__parse_u64(v, strlen(v), &x);
    return x;
}

/* A KV write: publish to the key's subject with headers, read the ack. */
/* A KV write that nobody answered: the bucket is gone, or (in a cluster) its
 * stream has no leader for a moment. Only the stream's info tells which; a
 * lost ID must not be concluded from an election. */
static parti_err parti__nats_kv_unanswered(parti__nconn *n, const parti__nkv *k, uint64_t deadline) {
    char subject[128];
    parti_json_doc doc;
    parti_err e;
    if (!parti__nats_left(n, deadline)) return PARTI_ERR_NO_RESPONDERS;
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.INFO.", k->stream);
    e = parti__nats_api(n, subject, NULL, 0, parti__nats_left(n, deadline), &doc);
    parti_json_doc_free(&doc);
    return e == PARTI_ERR_STREAM_NOT_FOUND ? PARTI_ERR_BUCKET_NOT_FOUND : PARTI_ERR_NO_RESPONDERS;
}

static parti_err parti__nats_kv_write(parti__nconn *n, const parti__nkv *k, const parti_header *hdrs, int nhdr,
                                      const void *value, size_t len, uint64_t *revision, uint32_t timeout_ms) {
    natsMsg *reply = NULL;
    uint64_t seq = 0, deadline = parti__nats_now_ms(n) + timeout_ms;
    parti_err e = parti__nats_request(n, k->subject, hdrs, nhdr, value, len, timeout_ms, &reply);
    if (e == PARTI_ERR_NO_RESPONDERS) return parti__nats_kv_unanswered(n, k, deadline);
    if (e != PARTI_ERR_OK) return e;
    e = parti__nats_pub_ack(n, reply, &seq, NULL);
    natsMsg_Destroy(reply);
    if (e == PARTI_ERR_OK && revision) *revision = seq;
    return e;
}

/* The header of a compare-and-swap write: applied only while the key's
 * last revision is expected (0: the key has none). */
static void parti__nats_expect_revision(parti_header *h, char *num, size_t num_size, uint64_t expected) {
    snprintf(num, num_size, "%llu", (unsigned long long)expected);
    h->name = "Nats-Expected-Last-Subject-Sequence";
    h->value = num;
}

static parti_err parti__nats_kv_update(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                       uint64_t expected, uint64_t *revision, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    parti_header h;
    char num[24];
    parti_err e;
    if (!n || !key || (len && !value)) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__nats_kv_names(bucket, key, &k)) != PARTI_ERR_OK) return e;
    parti__nats_expect_revision(&h, num, sizeof num, expected);
    return parti__nats_kv_write(n, &k, &h, 1, value, len, revision, timeout_ms);
}

static parti_err parti__nats_kv_create(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                       uint64_t *revision, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    natsMsg *latest = NULL;
    uint64_t seq, deadline = parti__nats_now_ms(n) + timeout_ms;
    parti_err e = parti__nats_kv_update(self, bucket, key, value, len, 0, revision, timeout_ms);
    if (e != PARTI_ERR_WRONG_REVISION) return e;
    /* the subject has entries: create still succeeds over a delete, purge or
     * expiry marker (up to three requests, all within timeout_ms) */
    parti__nats_kv_names(bucket, key, &k);
    if (!parti__nats_left(n, deadline)) return PARTI_ERR_TIMEOUT;
    if ((e = parti__nats_kv_raw_get(n, &k, 0, &latest, parti__nats_left(n, deadline))) != PARTI_ERR_OK)
        return e == PARTI_ERR_KEY_NOT_FOUND ? PARTI_ERR_KEY_EXISTS : e;
    seq = parti__nats_header_u64(latest, "Nats-Sequence");
    if (parti__nats_kv_op(latest) == PARTI_KV_PUT) {
        natsMsg_Destroy(latest);
        return PARTI_ERR_KEY_EXISTS;
    }
    natsMsg_Destroy(latest);
    if (!parti__nats_left(n, deadline)) return PARTI_ERR_TIMEOUT;
    e = parti__nats_kv_update(self, bucket, key, value, len, seq, revision, parti__nats_left(n, deadline));
    return e == PARTI_ERR_WRONG_REVISION ? PARTI_ERR_KEY_EXISTS : e;
}

static parti_err parti__nats_kv_put(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                    uint64_t *revision, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    parti_err e;
    if (!n || !key || (len && !value)) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__nats_kv_names(bucket, key, &k)) != PARTI_ERR_OK) return e;
    return parti__nats_kv_write(n, &k, NULL, 0, value, len, revision, timeout_ms);
}

static parti_err parti__nats_kv_delete(void *self, const char *bucket, const char *key, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    parti_header h;
    parti_err e;
    if (!n || !key) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__nats_kv_names(bucket, key, &k)) != PARTI_ERR_OK) return e;
    h.name = "KV-Operation";
    h.value = "DEL";
    return parti__nats_kv_write(n, &k, &h, 1, NULL, 0, NULL, timeout_ms);
}

/* A delete marker written only when the key's last revision is expected. */
static parti_err parti__nats_kv_delete_if(void *self, const char *bucket, const char *key, uint64_t expected,
                                          uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    parti_header h[2];
    char num[24];
    parti_err e;
    if (!n || !key || !expected) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__nats_kv_names(bucket, key, &k)) != PARTI_ERR_OK) return e;
    h[0].name = "KV-Operation";
    h[0].value = "DEL";
    parti__nats_expect_revision(&h[1], num, sizeof num, expected);
    return parti__nats_kv_write(n, &k, h, 2, NULL, 0, NULL, timeout_ms);
}

static parti_err parti__nats_entry(natsMsg *m, const char *key, uint64_t rev, uint64_t created_ms,
                                   parti_kv_entry *out) {
    size_t len = (size_t)natsMsg_GetDataLength(m);
    out->key = parti__strdup(key);
    out->value = (uint8_t *)parti__memdup(natsMsg_GetData(m), len);
    if (!out->key || !out->value) {
        parti_kv_entry_free(out);
        return PARTI_ERR_NOMEM;
    }
    out->len = len;
    out->revision = rev;
    out->created_ms = created_ms;
    out->op = parti__nats_kv_op(m);
    return PARTI_ERR_OK;
}

static parti_err parti__nats_kv_get(void *self, const char *bucket, const char *key, uint64_t revision,
                                    parti_kv_entry *out, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    natsMsg *m = NULL;
    parti_err e;
    if (!n || !key || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if ((e = parti__nats_kv_names(bucket, key, &k)) != PARTI_ERR_OK) return e;
    if ((e = parti__nats_kv_raw_get(n, &k, revision, &m, timeout_ms)) != PARTI_ERR_OK) return e;
    if (parti__nats_kv_op(m) != PARTI_KV_PUT) {
        e = PARTI_ERR_KEY_NOT_FOUND;
    } else {
        const char *stamp = NULL;
        uint64_t wall = 0;
        natsMsgHeader_Get(m, "Nats-Time-Stamp", &stamp);
        if (stamp && parti_rfc3339_parse(stamp, strlen(stamp), &wall) != PARTI_ERR_OK) wall = 0;
        e = parti__nats_entry(m, key, parti__nats_header_u64(m, "Nats-Sequence"), wall ? parti__nats_server_time(wall) : 0,
                              out);
    }
    natsMsg_Destroy(m);
    return e;
}

typedef struct parti__nats_keys_req {
    const char *filter;
    int64_t offset;
} parti__nats_keys_req;

static void parti__nats_build_keys(parti_json_writer *w, const void *arg) {
    const parti__nats_keys_req *r = (const parti__nats_keys_req *)arg;
    parti_json_object_begin(w);
    parti_json_key(w, "subjects_filter");
    parti_json_string(w, r->filter);
    parti_json_key(w, "offset");
    parti_json_int(w, r->offset);
    parti_json_object_end(w);
}

static parti_err parti__nats_kv_keys(void *self, const char *bucket, char ***keys, int *count, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti_subjects live = {NULL, 0};
    parti__nkv k;
    parti__nats_keys_req req;
    char subject[128];
    size_t prefix_len;
    uint64_t deadline;
    parti_err e;
    int page;
    if (!n || !keys || !count) return PARTI_ERR_INVALID_ARGUMENT;
    *keys = NULL;
    *count = 0;
    if ((e = parti__nats_kv_names(bucket, NULL, &k)) != PARTI_ERR_OK) return e;
    deadline = parti__nats_now_ms(n) + timeout_ms; /* every request below shares this budget */
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.INFO.", k.stream);
    prefix_len = strlen(k.subject) - 1; /* "$KV.<bucket>." */
    req.filter = k.subject;
    req.offset = 0;
    /* the server pages the subject list; each page is bounded, so is the loop */
    for (page = 0; page < 100000; page++) {
        parti_json_doc doc;
        char *body = NULL;
        size_t len = 0;
        int64_t total = 0;
        int subs, node, got = 0;
        if ((e = parti__nats_json(parti__nats_build_keys, &req, &body, &len)) != PARTI_ERR_OK) break;
        e = parti__nats_left(n, deadline) ? parti__nats_api(n, subject, body, len, parti__nats_left(n, deadline), &doc)
                                          : PARTI_ERR_TIMEOUT;
        PARTI_FREE(body);
        if (e == PARTI_ERR_STREAM_NOT_FOUND) e = PARTI_ERR_BUCKET_NOT_FOUND;
        if (e != PARTI_ERR_OK) break;
        parti_json_get_int64(&doc, parti_json_root(&doc), "total", &total);
        subs = parti_json_get(&doc, parti_json_get(&doc, parti_json_root(&doc), "state"), "subjects");
        for (node = parti_json_first(&doc, subs); node >= 0 && e == PARTI_ERR_OK; node = parti_json_next(&doc, node)) {
            char *s = parti__nats_dup_str(&doc, parti_json_member_key(&doc, node));
            got++;
            if (s && strlen(s) > prefix_len) e = parti_subjects_add(&live, s + prefix_len);
            PARTI_FREE(s);
        }
        parti_json_doc_free(&doc);
        req.offset += got;
        if (e != PARTI_ERR_OK || got == 0 || req.offset >= total) break;
    }
    if (e == PARTI_ERR_OK) {
        /* subjects whose last entry is a delete or an expiry marker are not live keys */
        int i, w = 0;
        for (i = 0; i < live.count; i++) {
            natsMsg *m = NULL;
            parti__nkv kk;
            parti_err ge = e != PARTI_ERR_OK ? e : parti__nats_kv_names(bucket, live.items[i], &kk);
            if (ge == PARTI_ERR_OK)
                ge = parti__nats_left(n, deadline) ? parti__nats_kv_raw_get(n, &kk, 0, &m, parti__nats_left(n, deadline))
                                                   : PARTI_ERR_TIMEOUT; /* the first timeout ends the listing */
            if (ge == PARTI_ERR_OK && parti__nats_kv_op(m) == PARTI_KV_PUT) live.items[w++] = live.items[i];
            else PARTI_FREE(live.items[i]);
            if (m) natsMsg_Destroy(m);
            if (ge != PARTI_ERR_OK && ge != PARTI_ERR_KEY_NOT_FOUND && ge != PARTI_ERR_INVALID_NAME && e == PARTI_ERR_OK) e = ge;
        }
        live.count = w;
    }
    if (e != PARTI_ERR_OK) {
        parti_subjects_free(&live);
        return e;
    }
    parti_subjects_sort_unique(&live);
    *keys = live.items;
    *count = live.count;
    return PARTI_ERR_OK;
}

/* ---- watchers: a push consumer, re-created after a reconnect ------------------ */

typedef struct parti__nats_watch_req {
    const char *stream, *deliver, *filter;
    uint64_t start;
} parti__nats_watch_req;

static void parti__nats_build_watch(parti_json_writer *w, const void *arg) {
    const parti__nats_watch_req *r = (const parti__nats_watch_req *)arg;
    parti_json_object_begin(w);
    parti_json_key(w, "stream_name");
    parti_json_string(w, r->stream);
    parti_json_key(w, "config");
    parti_json_object_begin(w);
    parti_json_key(w, "deliver_subject");
    parti_json_string(w, r->deliver);
    parti_json_key(w, "deliver_policy");
    parti_json_string(w, "by_start_sequence");
    parti_json_key(w, "opt_start_seq");
    parti_json_uint(w, r->start);
    parti_json_key(w, "ack_policy");
    parti_json_string(w, "none");
    parti_json_key(w, "filter_subject");
    parti_json_string(w, r->filter);
    parti_json_key(w, "idle_heartbeat");
    parti_json_int(w, parti__ns(PARTI__WATCH_HB_MS));
    parti_json_key(w, "mem_storage");
    parti_json_bool(w, 1);
    parti_json_key(w, "num_replicas");
    parti_json_int(w, 1);
    parti_json_key(w, "inactive_threshold");
    parti_json_int(w, parti__ns(60000));
    parti_json_object_end(w);
    parti_json_object_end(w);
}

/* Sends a JetStream API request whose reply comes to the watcher's control
 * inbox (not waited for: watch_next picks it up). */
static parti_err parti__nats_watch_ask(parti__nwatch *wt, const char *subject, const char *body, size_t len) {
    char reply[192];
    natsStatus s;
    wt->gen++;
    snprintf(reply, sizeof reply, "%s.%llu", wt->ctl_inbox, (unsigned long long)wt->gen);
    s = natsConnection_PublishRequest(wt->n->nc, subject, reply, body ? body : "", (int)len);
    wt->phase_since = parti__nats_now_ms(wt->n);
    return parti__nats_map(wt->n, s, subject);
}

/* The reply to the current request, if it came: PARTI_ERR_OK with *doc, the
 * request's JetStream error, or PARTI_ERR_NO_MESSAGES (not yet). */
static parti_err parti__nats_watch_answer(parti__nwatch *wt, parti_json_doc *doc) {
    char want[192];
    int guard;
    memset(doc, 0, sizeof *doc);
    snprintf(want, sizeof want, "%s.%llu", wt->ctl_inbox, (unsigned long long)wt->gen);
    for (guard = 0; guard < 64; guard++) {
        natsMsg *m = NULL;
        parti_err e;
        if (natsSubscription_NextMsg(&m, wt->ctl, 0) != NATS_OK) return PARTI_ERR_NO_MESSAGES;
        if (strcmp(natsMsg_GetSubject(m), want) != 0) { /* an answer to an earlier request */
            natsMsg_Destroy(m);
            continue;
        }
        e = parti__nats_reply_json(wt->n, m, doc);
        natsMsg_Destroy(m);
        return e;
    }
    return PARTI_ERR_NO_MESSAGES;
}

/* Forgets the push consumer: unsubscribes, and asks the server to delete it
 * without waiting (its inactive threshold removes it anyway). */
static void parti__nats_watch_drop(parti__nwatch *wt) {
    parti__nats_retire(wt->n, wt->sub);
    wt->sub = NULL;
    if (wt->consumer) {
        char subject[256];
        parti__nkv k;
        parti__nats_kv_names(wt->bucket, NULL, &k);
        snprintf(subject, sizeof subject, "$JS.API.CONSUMER.DELETE.%s.%s", k.stream, wt->consumer);
        if (parti__nats_connected(wt->n)) parti__nats_watch_ask(wt, subject, NULL, 0);
        PARTI_FREE(wt->consumer);
        wt->consumer = NULL;
    }
}

/* A step failed: start over in a second. */
static void parti__nats_watch_retry_later(parti__nwatch *wt) {
    wt->phase = PARTI__WATCH_RETRY;
    wt->retry_at = parti__nats_now_ms(wt->n) + 1000;
}

/* Step 1 of (re)starting: ask for the bucket stream's info. */
static void parti__nats_watch_restart(parti__nwatch *wt) {
    char subject[128];
    parti__nkv k;
    parti__nats_watch_drop(wt);
    parti__nats_kv_names(wt->bucket, NULL, &k);
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.INFO.", k.stream);
    if (parti__nats_watch_ask(wt, subject, NULL, 0) == PARTI_ERR_OK) wt->phase = PARTI__WATCH_INFO;
    else parti__nats_watch_retry_later(wt);
}

/* Step 2: a new deliver inbox, and the consumer from the first revision not
 * seen (from the start when the bucket was re-created). */
static parti_err parti__nats_watch_create(parti__nwatch *wt) {
    parti__nats_watch_req req;
    parti__nkv k;
    natsInbox *inbox = NULL;
    char subject[128], *body = NULL;
    size_t len = 0;
    natsStatus s;
    parti_err e;
    parti__nats_kv_names(wt->bucket, NULL, &k);
    if ((s = natsInbox_Create(&inbox)) != NATS_OK) return parti__nats_map(wt->n, s, "inbox");
    s = natsConnection_SubscribeSync(&wt->sub, wt->n->nc, inbox);
    if (s != NATS_OK) {
        natsInbox_Destroy(inbox);
        return parti__nats_map(wt->n, s, "watch subscribe");
    }
    req.stream = k.stream;
    req.deliver = inbox;
    req.filter = k.subject;
    req.start = wt->last_rev + 1;
    parti__nats_subject(subject, sizeof subject, "$JS.API.CONSUMER.CREATE.", k.stream);
    e = parti__nats_json(parti__nats_build_watch, &req, &body, &len);
    natsInbox_Destroy(inbox);
    if (e == PARTI_ERR_OK) e = parti__nats_watch_ask(wt, subject, body, len);
    PARTI_FREE(body);
    return e;
}

/* Reads a stream info reply: remembers the creation time, and starts from
 * the beginning when the stream is another one than before. */
static void parti__nats_watch_stream(parti__nwatch *wt, const parti_json_doc *doc) {
    char created[64] = "";
    uint64_t last = 0;
    parti_json_get_string(doc, parti_json_root(doc), "created", created, sizeof created, NULL);
    parti_json_get_uint64(doc, parti_json_get(doc, parti_json_root(doc), "state"), "last_seq", &last);
    if (wt->created[0] && (strcmp(created, wt->created) != 0 || last < wt->last_rev)) wt->last_rev = 0;
    memcpy(wt->created, created, sizeof created);
}

/* Moves a restart along without blocking; PARTI_ERR_OK once active again. */
static parti_err parti__nats_watch_progress(parti__nwatch *wt) {
    parti__nconn *n = wt->n;
    parti_json_doc doc;
    parti_err e;
    uint64_t now = parti__nats_now_ms(n);
    if (wt->phase == PARTI__WATCH_RETRY) {
        if (now < wt->retry_at) return PARTI_ERR_NO_MESSAGES;
        parti__nats_watch_restart(wt);
        return PARTI_ERR_NO_MESSAGES;
    }
    e = parti__nats_watch_answer(wt, &doc);
    if (e == PARTI_ERR_NO_MESSAGES) {
        if (now - wt->phase_since > 5000) parti__nats_watch_restart(wt); /* the request or its reply was lost */
        return PARTI_ERR_NO_MESSAGES;
    }
    if (e != PARTI_ERR_OK) { /* e.g. the bucket is gone: try again in a second */
        parti__nats_watch_retry_later(wt);
        return e == PARTI_ERR_STREAM_NOT_FOUND ? PARTI_ERR_BUCKET_NOT_FOUND : e;
    }
    if (wt->phase == PARTI__WATCH_INFO) {
        parti__nats_watch_stream(wt, &doc);
        parti_json_doc_free(&doc);
        if ((e = parti__nats_watch_create(wt)) != PARTI_ERR_OK) {
            parti__nats_watch_retry_later(wt);
            return e;
        }
        wt->phase = PARTI__WATCH_CREATE;
        return PARTI_ERR_NO_MESSAGES;
    }
    wt->consumer = parti__nats_dup_str(&doc, parti_json_get(&doc, parti_json_root(&doc), "name"));
    parti_json_doc_free(&doc);
    wt->phase = PARTI__WATCH_ACTIVE;
    wt->last_activity = now;
    wt->reconnects = parti__nats_reconnects(n);
    return PARTI_ERR_OK;
}

static void parti__nats_watch_free(parti__nwatch *wt) {
    parti__nats_watch_drop(wt);
    parti__nats_retire(wt->n, wt->ctl);
    PARTI_FREE(wt->ctl_inbox);
    PARTI_FREE(wt->bucket);
    PARTI_FREE(wt->prefix);
    PARTI_FREE(wt);
}

/* kv_watch may block (within timeout_ms): it reads the bucket's last revision
 * and creates the consumer, waiting for both answers. */
static parti_err parti__nats_kv_watch(void *self, const char *bucket, const char *prefix, parti_kv_watcher **out,
                                      uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nwatch *wt;
    parti__nkv k;
    parti_json_doc doc;
    natsInbox *inbox = NULL;
    char subject[128], wildcard[192];
    uint64_t deadline;
    parti_err e;
    if (!n || !bucket || !out) return PARTI_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!prefix) prefix = "";
    if ((e = parti__nats_kv_names(bucket, NULL, &k)) != PARTI_ERR_OK) return e;
    deadline = parti__nats_now_ms(n) + timeout_ms;
    if (!(wt = (parti__nwatch *)PARTI_MALLOC(sizeof *wt))) return PARTI_ERR_NOMEM;
    memset(wt, 0, sizeof *wt);
    wt->n = n;
    wt->bucket = parti__strdup(bucket);
    wt->prefix = parti__strdup(prefix);
    if (natsInbox_Create(&inbox) == NATS_OK) wt->ctl_inbox = parti__strdup(inbox);
    natsInbox_Destroy(inbox);
    if (!wt->bucket || !wt->prefix || !wt->ctl_inbox) {
        parti__nats_watch_free(wt);
        return PARTI_ERR_NOMEM;
    }
    snprintf(wildcard, sizeof wildcard, "%s.*", wt->ctl_inbox);
    if ((e = parti__nats_map(n, natsConnection_SubscribeSync(&wt->ctl, n->nc, wildcard), "watch control")) !=
        PARTI_ERR_OK) {
        parti__nats_watch_free(wt);
        return e;
    }
    /* the watch starts after the bucket's last revision, so nothing older is replayed */
    parti__nats_subject(subject, sizeof subject, "$JS.API.STREAM.INFO.", k.stream);
    e = parti__nats_api(n, subject, NULL, 0, timeout_ms, &doc);
    if (e == PARTI_ERR_OK) {
        parti_json_get_uint64(&doc, parti_json_get(&doc, parti_json_root(&doc), "state"), "last_seq", &wt->last_rev);
        parti__nats_watch_stream(wt, &doc);
        parti_json_doc_free(&doc);
        e = parti__nats_watch_create(wt);
        wt->phase = PARTI__WATCH_CREATE;
    }
    while (e == PARTI_ERR_OK && wt->phase != PARTI__WATCH_ACTIVE) { /* wait for the create's answer */
        e = parti__nats_watch_progress(wt);
        if (e == PARTI_ERR_NO_MESSAGES) {
            e = parti__nats_left(n, deadline) ? PARTI_ERR_OK : PARTI_ERR_TIMEOUT;
            if (e == PARTI_ERR_OK) parti__nats_sleep_ms(n, 2);
        }
    }
    if (e == PARTI_ERR_STREAM_NOT_FOUND) e = PARTI_ERR_BUCKET_NOT_FOUND;
    if (e != PARTI_ERR_OK) {
        parti__nats_watch_free(wt);
        return e;
    }
    *out = (parti_kv_watcher *)wt;
    return PARTI_ERR_OK;
}

/* Non-blocking. A watcher whose push consumer may be gone (after a reconnect,
 * or three idle heartbeats missed, e.g. because the bucket was deleted) is set
 * up again in steps, one per call, never waiting for the server; a re-created
 * bucket is watched from its first revision. */
static parti_err parti__nats_kv_watch_next(void *self, parti_kv_watcher *handle, parti_kv_entry *out) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nwatch *wt = (parti__nwatch *)handle;
    uint64_t now;
    int guard;
    if (!n || !wt || !out || wt->n != n) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (!parti__nats_connected(n)) return PARTI_ERR_NOT_CONNECTED;
    now = parti__nats_now_ms(n);
    if (wt->phase == PARTI__WATCH_ACTIVE &&
        (wt->reconnects != parti__nats_reconnects(n) || now - wt->last_activity > 3 * PARTI__WATCH_HB_MS))
        parti__nats_watch_restart(wt);
    if (wt->phase != PARTI__WATCH_ACTIVE) {
        parti_err e = parti__nats_watch_progress(wt);
        if (e != PARTI_ERR_OK) return e;
    }
    for (guard = 0; guard < 1024; guard++) {
        natsMsg *m = NULL;
        parti_js_ack_meta meta;
        const char *subj, *reply;
        size_t plen = strlen("$KV.") + strlen(wt->bucket) + 1;
        natsStatus s = natsSubscription_NextMsg(&m, wt->sub, 0);
        parti_err e;
        if (s == NATS_TIMEOUT) return PARTI_ERR_NO_MESSAGES;
        if (s != NATS_OK) return parti__nats_map(n, s, "watch");
        wt->last_activity = parti__nats_now_ms(n); /* entries and idle heartbeats alike */
        subj = natsMsg_GetSubject(m);
        reply = natsMsg_GetReply(m);
        /* heartbeats and other status messages carry no ack subject */
        if (!reply || parti_js_ack_parse(reply, strlen(reply), &meta) != PARTI_ERR_OK || !subj ||
            strlen(subj) <= plen || meta.stream_seq <= wt->last_rev) {
            natsMsg_Destroy(m);
            continue;
        }
        wt->last_rev = meta.stream_seq;
        if (strncmp(subj + plen, wt->prefix, strlen(wt->prefix)) != 0) {
            natsMsg_Destroy(m);
            continue;
        }
        e = parti__nats_entry(m, subj + plen, meta.stream_seq, parti__nats_server_time(meta.timestamp_ns), out);
        natsMsg_Destroy(m);
        return e;
    }
    return PARTI_ERR_NO_MESSAGES;
}

static void parti__nats_kv_watch_stop(void *self, parti_kv_watcher *handle) {
    (void)self;
    if (handle) parti__nats_watch_free((parti__nwatch *)handle);
}

/* ---- consumers ------------------------------------------------------------------ */

static parti_err parti__nats_consumer_upsert(void *self, const parti_consumer_config *cfg, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    char subject[256], *body = NULL;
    size_t len = 0;
    parti_json_doc doc;
    parti_err e;
    int i, c, fs;
    if (!n || !cfg || !cfg->stream || !cfg->durable || cfg->filter_count < 1 || !cfg->filter_subjects ||
        cfg->max_deliver < 0 || cfg->max_ack_pending < 0 || (int)cfg->deliver_policy < 0 ||
        cfg->deliver_policy > PARTI_DELIVER_NEW)
        return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(cfg->stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(cfg->durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    for (i = 0; i < cfg->filter_count; i++) {
        if (!cfg->filter_subjects[i]) return PARTI_ERR_INVALID_ARGUMENT;
        if (parti_subject_check(cfg->filter_subjects[i], 1, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
    }
    snprintf(subject, sizeof subject, "$JS.API.CONSUMER.CREATE.%s.%s", cfg->stream, cfg->durable);
    if ((e = parti__nats_json(parti__nats_build_consumer, cfg, &body, &len)) != PARTI_ERR_OK) return e;
    e = parti__nats_api(n, subject, body, len, timeout_ms, &doc);
    PARTI_FREE(body);
    if (e != PARTI_ERR_OK) return e;
    /* a server that ignored filter_subjects would consume the whole stream */
    c = parti_json_get(&doc, parti_json_root(&doc), "config");
    fs = parti_json_get(&doc, c, "filter_subjects");
    if (!(fs >= 0 && (int)parti_json_count(&doc, fs) == cfg->filter_count) &&
        !(cfg->filter_count == 1 && parti_json_string_eq(&doc, parti_json_get(&doc, c, "filter_subject"),
                                                          cfg->filter_subjects[0]))) {
        parti__nats_note(n, "the server did not keep filter_subjects (nats-server %s; need >= 2.10)", n->version);
        e = PARTI_ERR_SERVER_TOO_OLD;
    }
    parti_json_doc_free(&doc);
    return e;
}

static parti_err parti__nats_consumer_info(void *self, const char *stream, const char *durable,
                                           parti_consumer_info *out, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    char subject[256];
    parti_json_doc doc;
    parti_err e;
    int root, c;
    if (!n || !stream || !durable || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    snprintf(subject, sizeof subject, "$JS.API.CONSUMER.INFO.%s.%s", stream, durable);
    if ((e = parti__nats_api(n, subject, NULL, 0, timeout_ms, &doc)) != PARTI_ERR_OK) return e;
    root = parti_json_root(&doc);
    c = parti_json_get(&doc, root, "config");
    out->name = parti__nats_dup_str(&doc, parti_json_get(&doc, root, "name"));
    e = parti__nats_strings(&doc, parti_json_get(&doc, c, "filter_subjects"), parti_json_get(&doc, c, "filter_subject"),
                            &out->filter_subjects, &out->filter_count);
    parti_json_get_uint64(&doc, parti_json_get(&doc, root, "delivered"), "stream_seq", &out->delivered_stream_seq);
    parti_json_get_uint64(&doc, parti_json_get(&doc, root, "delivered"), "consumer_seq", &out->delivered_consumer_seq);
    parti_json_get_uint64(&doc, parti_json_get(&doc, root, "ack_floor"), "stream_seq", &out->ack_floor_stream_seq);
    parti_json_get_uint64(&doc, root, "num_pending", &out->num_pending);
    parti_json_get_uint64(&doc, root, "num_ack_pending", &out->num_ack_pending);
    parti_json_get_uint64(&doc, root, "num_redelivered", &out->num_redelivered);
    {
        char dp[32];
        if (parti_json_get_string(&doc, c, "deliver_policy", dp, sizeof dp, NULL) == PARTI_ERR_OK) {
            if (strcmp(dp, "by_start_sequence") == 0) out->deliver_policy = PARTI_DELIVER_BY_START_SEQUENCE;
            else if (strcmp(dp, "new") == 0) out->deliver_policy = PARTI_DELIVER_NEW;
            else out->deliver_policy = PARTI_DELIVER_ALL;
        }
        parti_json_get_uint64(&doc, c, "opt_start_seq", &out->opt_start_seq);
    }
    parti_json_doc_free(&doc);
    if (e == PARTI_ERR_OK && !out->name) e = PARTI_ERR_PROTOCOL;
    if (e != PARTI_ERR_OK) parti_consumer_info_free(out);
    return e;
}

static void parti__nats_pull_forget(parti__nconn *n, const char *stream, const char *consumer, uint64_t idle_ms);

static parti_err parti__nats_consumer_delete(void *self, const char *stream, const char *durable, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    char subject[256];
    parti_json_doc doc;
    parti_err e;
    if (!n || !stream || !durable) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    snprintf(subject, sizeof subject, "$JS.API.CONSUMER.DELETE.%s.%s", stream, durable);
    e = parti__nats_api(n, subject, NULL, 0, timeout_ms, &doc);
    parti_json_doc_free(&doc);
    if (e == PARTI_ERR_OK || e == PARTI_ERR_CONSUMER_NOT_FOUND) parti__nats_pull_forget(n, stream, durable, 0);
    return e;
}

/* ---- pull ------------------------------------------------------------------------- */

static void parti__nats_pull_free(parti__nconn *n, parti__npull *p) {
    parti__nats_retire(n, p->sub);
    PARTI_FREE(p->stream);
    PARTI_FREE(p->consumer);
    PARTI_FREE(p->inbox);
}

/* Drops the pull subscription of a durable (consumer NULL: of every durable
 * not pulled for idle_ms), so the subscriptions of old worker IDs' consumers
 * do not accumulate on the connection. */
static void parti__nats_pull_forget(parti__nconn *n, const char *stream, const char *consumer, uint64_t idle_ms) {
    uint64_t now = parti__nats_now_ms(n);
    int i;
    for (i = (int)arrlen(n->pulls) - 1; i >= 0; i--) {
        parti__npull *p = &n->pulls[i];
        int drop = consumer ? strcmp(p->stream, stream) == 0 && strcmp(p->consumer, consumer) == 0
                            : !p->active && now - p->last_used > idle_ms;
        if (!drop) continue;
        parti__nats_pull_free(n, p);
        arrdel(n->pulls, i);
    }
}

static parti__npull *parti__nats_pull(parti__nconn *n, const char *stream, const char *consumer, int create) {
    parti__npull p;
    natsInbox *inbox = NULL;
    char wildcard[256];
    int i;
    for (i = 0; i < (int)arrlen(n->pulls); i++)
        if (strcmp(n->pulls[i].stream, stream) == 0 && strcmp(n->pulls[i].consumer, consumer) == 0) return &n->pulls[i];
    if (!create) return NULL;
    memset(&p, 0, sizeof p);
    if (natsInbox_Create(&inbox) != NATS_OK) return NULL;
    p.inbox = parti__strdup(inbox);
    natsInbox_Destroy(inbox);
    snprintf(wildcard, sizeof wildcard, "%s.*", p.inbox);
    if (!p.inbox || natsConnection_SubscribeSync(&p.sub, n->nc, wildcard) != NATS_OK) {
        PARTI_FREE(p.inbox);
        return NULL;
    }
    /* a consumer's deliveries can be large; never drop them as a slow consumer */
    natsSubscription_SetPendingLimits(p.sub, -1, -1);
    p.stream = parti__strdup(stream);
    p.consumer = parti__strdup(consumer);
    arrput(n->pulls, p);
    return &n->pulls[arrlen(n->pulls) - 1];
}

static parti_err parti__nats_fetch_start(void *self, const char *stream, const char *durable,
                                         const parti_fetch_opts *opts, uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__npull *p;
    char subject[256], reply[sizeof p->current], body[160];
    natsStatus s;
    (void)timeout_ms; /* (writes only: bounded by the write deadline) */
    if (!n || !stream || !durable || !opts || opts->batch < 1 || opts->max_bytes < 0 || opts->expires_ms < 10 ||
        (opts->heartbeat_ms && opts->heartbeat_ms > opts->expires_ms / 2))
        return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    parti__nats_send_acks(n);
    if (!parti__nats_connected(n)) return PARTI_ERR_NOT_CONNECTED;
    parti__nats_pull_forget(n, NULL, NULL, 60000);
    if (!(p = parti__nats_pull(n, stream, durable, 1))) return PARTI_ERR_NOMEM;
    p->id++;
    p->last_used = parti__nats_now_ms(n);
    snprintf(subject, sizeof subject, "$JS.API.CONSUMER.MSG.NEXT.%s.%s", stream, durable);
    snprintf(reply, sizeof reply, "%s.%llu", p->inbox, (unsigned long long)p->id);
    snprintf(p->current, sizeof p->current, "%s", reply);
    snprintf(body, sizeof body, "{\"batch\":%d,\"max_bytes\":%lld,\"expires\":%lld,\"idle_heartbeat\":%lld}",
             opts->batch, (long long)opts->max_bytes, (long long)parti__ns(opts->expires_ms),
             (long long)parti__ns(opts->heartbeat_ms));
    s = natsConnection_PublishRequest(n->nc, subject, reply, body, (int)strlen(body));
    if (s != NATS_OK) return parti__nats_map(n, s, "pull request");
    p->active = 1;
    p->remaining = opts->batch;
    p->delivered = 0;
    p->hb = opts->heartbeat_ms;
    p->last_activity = parti__nats_now_ms(n);
    p->expires_at = p->last_activity + opts->expires_ms;
    p->reconnects = parti__nats_reconnects(n);
    /* written now (with the acks before it), not after the millisecond nats.c's
     * flusher thread sleeps before each write: at batch 100 that millisecond
     * was most of a pull's time (bench_consumer) */
    parti__nats_write_now(n);
    return PARTI_ERR_OK;
}

static parti_err parti__nats_pull_end(parti__npull *p, parti_err e) {
    p->active = 0;
    return e;
}

/* A message's handle: a parti__ndeliv when it has headers (or was read by
 * stream_get_next: no natsMsg), else the natsMsg itself with the low bit set
 * (natsMsg is malloc'd, so that bit is free), which saves an allocation per
 * message on the hot path. */
static natsMsg *parti__nats_handle_msg(void *handle) {
    if ((uintptr_t)handle & 1u) return (natsMsg *)((uintptr_t)handle & ~(uintptr_t)1u);
    return ((parti__ndeliv *)handle)->msg;
}

/* parti__nats_server_time for a delivery without two clock reads each: the
 * wall/transport clock pair is read again only for a message stored after
 * the pair's wall reading (then the pair is stale), for the first delivery
 * after a wait and every PARTI__NATS_STAMP_USES deliveries (a wall clock
 * step is picked up there). A message stored before the reading is dated as
 * with a fresh pair, to the millisecond (the two clocks' offset is the
 * same). So the saving is on backlogs: a consumer keeping up with live
 * traffic dates most messages after a fresh read, as before. */
#define PARTI__NATS_STAMP_USES 256
static uint64_t parti__nats_delivery_time(parti__nconn *n, uint64_t wall_ns) {
    if (n->stamp_uses <= 0 || n->stamp_uses >= PARTI__NATS_STAMP_USES || wall_ns > n->stamp_wall_ns) {
        n->stamp_wall_ns = parti__nats_wall_ns();
        n->stamp_now_ms = parti__nats_now_ms(NULL);
        n->stamp_uses = 0;
    }
    n->stamp_uses++;
    return parti_wall_to_transport_ms(wall_ns, n->stamp_wall_ns, n->stamp_now_ms);
}

static void parti__nats_fill_common(parti__nconn *n, natsMsg *m, const parti_js_ack_meta *meta, parti_msg *out) {
    memset(out, 0, sizeof *out);
    out->subject = natsMsg_GetSubject(m);
    out->data = (const uint8_t *)natsMsg_GetData(m);
    out->len = (size_t)natsMsg_GetDataLength(m);
    out->stream_seq = meta->stream_seq;
    out->consumer_seq = meta->consumer_seq;
    out->delivery_count = (uint32_t)meta->delivered;
    out->num_pending = meta->pending;
    out->timestamp_ms = parti__nats_delivery_time(n, meta->timestamp_ns);
}

/* Builds a parti_msg over a delivered natsMsg (headers included). */
static parti_err parti__nats_fill_msg(parti__nconn *n, natsMsg *m, const parti_js_ack_meta *meta, parti_msg *out) {
    parti__ndeliv *d;
    const char **keys = NULL;
    int count = 0, i;
    if (natsMsgHeader_Keys(m, &keys, &count) != NATS_OK || count <= 0) {
        free((void *)keys);
        parti__nats_fill_common(n, m, meta, out);
        out->handle = (void *)((uintptr_t)m | 1u);
        return PARTI_ERR_OK;
    }
    if (!(d = (parti__ndeliv *)PARTI_MALLOC(sizeof *d))) {
        free((void *)keys);
        return PARTI_ERR_NOMEM;
    }
    memset(d, 0, sizeof *d);
    d->msg = m;
    d->keys = keys;
    d->hdrs = (parti_header *)PARTI_MALLOC(sizeof(parti_header) * (size_t)count);
    for (i = 0; d->hdrs && i < count; i++) {
        const char *v = "";
        natsMsgHeader_Get(m, d->keys[i], &v);
        d->hdrs[i].name = d->keys[i];
        d->hdrs[i].value = v ? v : "";
        d->hdr_bytes += strlen(d->hdrs[i].name) + strlen(d->hdrs[i].value) + 4;
    }
    parti__nats_fill_common(n, m, meta, out);
    out->headers = d->hdrs;
    out->header_count = d->hdrs ? count : 0;
    out->handle = d;
    return PARTI_ERR_OK;
}

static parti_err parti__nats_fetch_next(void *self, const char *stream, const char *durable, parti_msg *out,
                                        uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__npull *p;
    uint64_t deadline;
    int guard, acks_held = 0;
    if (!n || !stream || !durable || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (!(p = parti__nats_pull(n, stream, durable, 0)) || !p->active) return PARTI_ERR_NO_MESSAGES;
    if (p->remaining <= 0) return parti__nats_pull_end(p, PARTI_ERR_NO_MESSAGES);
    deadline = 0; /* read off the clock only when nothing is buffered */
    for (guard = 0; guard < 100000; guard++) {
        uint64_t now, wait;
        natsMsg *m = NULL;
        natsStatus s;
        const char *status, *reply;
        parti_js_ack_meta meta;
        /* the hot path: a delivery already buffered is taken without a clock
         * read (on virtual machines that trap the time stamp counter a read
         * costs microseconds, as much as the rest of a message) and without
         * the reconnect check (it locks the connection, which the reading
         * thread takes for every message); the checks below only matter
         * while nothing arrives. A delivery buffered before a reconnect is
         * a delivery all the same. */
        s = guard == 0 ? natsSubscription_NextMsg(&m, p->sub, 0) : NATS_TIMEOUT; /* 0: only if buffered */
        if (s == NATS_TIMEOUT) {
            /* a reconnect loses pending pulls on the server: the caller pulls again */
            if (p->reconnects != parti__nats_reconnects(n)) return parti__nats_pull_end(p, PARTI_ERR_NO_MESSAGES);
            now = parti__nats_now_ms(n);
            if (!deadline) deadline = now + timeout_ms;
            wait = deadline > now ? deadline - now : 0;
            if (p->fresh) { /* activity since the last look: it counts from now */
                p->last_activity = now;
                p->fresh = 0;
            }
            if (p->hb && now >= p->last_activity + 2 * (uint64_t)p->hb)
                return parti__nats_pull_end(p, PARTI_ERR_MISSED_HEARTBEAT);
            /* the server ends the pull with a 408 at expiry; allow it a second to arrive */
            if (now >= p->expires_at + 1000) return parti__nats_pull_end(p, PARTI_ERR_NO_MESSAGES);
            if (p->hb && p->last_activity + 2 * (uint64_t)p->hb - now < wait)
                wait = p->last_activity + 2 * (uint64_t)p->hb - now;
            /* acks not sent yet wait a millisecond for the next deliveries
             * (the rest of a pull's batch is usually on its way): they go in
             * one burst with theirs. After that they are written before the
             * wait, at once rather than after the flusher's own millisecond:
             * they may be what holds the consumer at its max_ack_pending */
            if (n->acks_count && !acks_held && wait > 1) {
                acks_held = 1;
                wait = 1;
            } else if (n->acks_count) {
                parti__nats_send_acks(n);
                if (wait > 0) parti__nats_write_now(n);
                continue; /* (time went by: read the clock again) */
            }
            n->stamp_uses = 0; /* (the clock pair for timestamps is read afresh after a wait) */
            /* the connection state is checked only when nothing arrived: it costs a lock */
            s = natsSubscription_NextMsg(&m, p->sub, (int64_t)wait);
        }
        if (s == NATS_TIMEOUT) {
            if (!parti__nats_connected(n)) return parti__nats_pull_end(p, PARTI_ERR_NOT_CONNECTED);
            if (deadline && parti__nats_now_ms(n) >= deadline) return PARTI_ERR_TIMEOUT;
            continue; /* (after the hot path: wait as asked) */
        }
        if (s == NATS_NO_RESPONDERS) return parti__nats_pull_end(p, PARTI_ERR_NO_RESPONDERS);
        if (s != NATS_OK) return parti__nats_pull_end(p, parti__nats_map(n, s, "pull"));
        if ((status = parti__nats_status_of(m)) != NULL) {
            const char *desc = NULL;
            parti_err e;
            natsMsgHeader_Get(m, "Description", &desc);
            /* a status of an earlier pull request is history */
            if (strcmp(natsMsg_GetSubject(m), p->current) != 0) {
                natsMsg_Destroy(m);
                continue;
            }
            e = parti_js_pull_status(status, desc);
            /* too large after others: the pull is just complete */
            if (e == PARTI_ERR_MESSAGE_TOO_LARGE && p->delivered > 0) e = PARTI_ERR_NO_MESSAGES;
            if (e == PARTI_ERR_PROTOCOL) parti__nats_note(n, "pull status %s %s", status, desc ? desc : "");
            natsMsg_Destroy(m);
            p->last_activity = parti__nats_now_ms(n);
            if (e == PARTI_ERR_OK) continue; /* idle heartbeat */
            return parti__nats_pull_end(p, e);
        }
        reply = natsMsg_GetReply(m);
        if (!reply || parti_js_ack_parse(reply, strlen(reply), &meta) != PARTI_ERR_OK) {
            parti__nats_note(n, "pull: message without a JetStream ack subject");
            natsMsg_Destroy(m);
            continue;
        }
        p->fresh = 1; /* (last_activity is read off the clock at the next wait) */
        p->remaining--;
        p->delivered++;
        if (parti__nats_fill_msg(n, m, &meta, out) != PARTI_ERR_OK) {
            natsMsg_Destroy(m);
            return PARTI_ERR_NOMEM;
        }
        return PARTI_ERR_OK;
    }
    return PARTI_ERR_TIMEOUT;
}

static parti_err parti__nats_ack(void *self, const parti_msg *m, parti_ack_kind kind, uint32_t delay_ms,
                                 uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    natsMsg *delivered;
    const char *reply;
    char delayed[64];
    const char *body;
    (void)timeout_ms;
    if (!n || !m || !m->handle || (int)kind < 0 || kind > PARTI_ACK_IN_PROGRESS) return PARTI_ERR_INVALID_ARGUMENT;
    /* a message read by stream_get_next has no consumer to ack to */
    if (!(delivered = parti__nats_handle_msg(m->handle)) || !(reply = natsMsg_GetReply(delivered)))
        return PARTI_ERR_INVALID_ARGUMENT;
    if (kind == PARTI_ACK_ACK) { /* kept for the next burst (see parti__nats_send_acks) */
        size_t need = strlen(reply) + 1;
        if (n->acks_len + need > n->acks_cap) {
            size_t cap = n->acks_cap ? n->acks_cap * 2 : 8192;
            char *grown;
            while (cap < n->acks_len + need) cap *= 2;
            if (!(grown = (char *)PARTI_REALLOC(n->acks, cap))) {
                parti__nats_send_acks(n);
                return parti__nats_map(n, natsConnection_PublishString(n->nc, reply, "+ACK"), "ack");
            }
            n->acks = grown;
            n->acks_cap = cap;
        }
        memcpy(n->acks + n->acks_len, reply, need);
        n->acks_len += need;
        {
            uint64_t now = parti__nats_coarse_ms();
            if (n->acks_count++ == 0) n->acks_since = now;
            if (n->acks_count >= PARTI__NATS_ACK_BURST || now - n->acks_since >= PARTI__NATS_ACK_HOLD_MS)
                parti__nats_send_acks(n);
        }
        return PARTI_ERR_OK;
    }
    parti__nats_send_acks(n);
    switch (kind) {
    case PARTI_ACK_NAK:
        body = "-NAK";
        if (delay_ms) {
            snprintf(delayed, sizeof delayed, "-NAK {\"delay\":%lld}", (long long)parti__ns(delay_ms));
            body = delayed;
        }
        break;
    case PARTI_ACK_TERM: body = "+TERM"; break;
    default: body = "+WPI"; break;
    }
    return parti__nats_map(n, natsConnection_PublishString(n->nc, reply, body), "ack");
}

/* A delivered message is not destroyed at once but many together (at most
 * PARTI__NATS_DEAD_BURST of them or PARTI__NATS_DEAD_BYTES of payload and
 * headers; what
 * is left at flush, which a consumer's poll calls as it returns, and at close):
 * natsMsg_Destroy hands each message to nats.c's freeing thread and wakes it
 * when it sleeps, and one at a time that wake-up came for nearly every
 * message (bench_consumer at batch 1000: a futex wake on this thread and a
 * context switch on that one per message). */
static void parti__nats_destroy_later(parti__nconn *n, natsMsg *msg, size_t hdr_bytes) {
    if (!n) {
        natsMsg_Destroy(msg);
        return;
    }
    n->dead[n->dead_count++] = msg;
    n->dead_bytes += (size_t)natsMsg_GetDataLength(msg) + hdr_bytes;
    if (n->dead_count == PARTI__NATS_DEAD_BURST || n->dead_bytes >= PARTI__NATS_DEAD_BYTES) parti__nats_free_dead(n);
}

static void parti__nats_msg_release(void *self, parti_msg *m) {
    parti__nconn *n = (parti__nconn *)self;
    parti__ndeliv *d;
    if (!m || !m->handle) return;
    if ((uintptr_t)m->handle & 1u) {
        parti__nats_destroy_later(n, parti__nats_handle_msg(m->handle), 0);
        memset(m, 0, sizeof *m);
        return;
    }
    d = (parti__ndeliv *)m->handle;
    PARTI_FREE(d->hdrs);
    PARTI_FREE(d->owned);
    free((void *)d->keys); /* allocated by nats.c */
    if (d->msg) parti__nats_destroy_later(n, d->msg, d->hdr_bytes);
    PARTI_FREE(d);
    memset(m, 0, sizeof *m);
}

static void parti__nats_flush(void *self) {
    if (!self) return;
    parti__nats_send_acks((parti__nconn *)self);
    parti__nats_free_dead((parti__nconn *)self);
}

#define PARTI__NATS_MANY_MAX 64 /* writes in one kv_update_many call */

/* kv_update for several keys of a bucket (at most PARTI__NATS_MANY_MAX; more
 * are refused with PARTI_ERR_INVALID_ARGUMENT): every request is written before
 * any reply is read, so the server stores the writes back to back (a few
 * microseconds apart instead of a round trip). Replies are told apart by
 * their reply subjects; a "no responders" status names none, and goes to
 * the earliest write still unanswered (the server answers in order). */
static void parti__nats_kv_update_many(void *self, const char *bucket, parti_kv_update *u, int n_updates,
                                       uint32_t timeout_ms) {
    parti__nconn *n = (parti__nconn *)self;
    parti__nkv k;
    uint64_t deadline, base;
    natsStatus s = NATS_OK;
    parti_err e = PARTI_ERR_OK;
    unsigned char answered[PARTI__NATS_MANY_MAX];
    int i, sent = 0, open = 0;
    if (!u || n_updates < 1) return;
    for (i = 0; i < n_updates; i++) u[i].err = PARTI_ERR_INVALID_ARGUMENT, u[i].revision = 0;
    if (!n || n_updates > PARTI__NATS_MANY_MAX) return;
    memset(answered, 0, sizeof answered);
    for (i = 0; i < n_updates; i++) {
        if (!u[i].key || (u[i].len && !u[i].value)) return;
        if ((e = parti__nats_kv_names(bucket, u[i].key, &k)) != PARTI_ERR_OK) {
            for (i = 0; i < n_updates; i++) u[i].err = e;
            return;
        }
    }
    parti__nats_send_acks(n); /* (acks first, in the order they were given) */
    deadline = parti__nats_now_ms(n) + (timeout_ms ? timeout_ms : 1);
    if (!parti__nats_connected(n)) {
        parti__nats_note(n, "kv_update_many %s: not connected", bucket);
        for (i = 0; i < n_updates; i++) u[i].err = PARTI_ERR_NOT_CONNECTED;
        return;
    }
    s = parti__nats_reply_sub(n);
    base = n->rid + 1;
    for (i = 0; s == NATS_OK && i < n_updates; i++) {
        char rsubj[128], num[24];
        parti_header h;
        parti__nats_kv_names(bucket, u[i].key, &k);
        parti__nats_expect_revision(&h, num, sizeof num, u[i].expected);
        s = parti__nats_send_request(n, k.subject, &h, 1, u[i].value, u[i].len, rsubj, sizeof rsubj);
        if (s == NATS_OK) u[i].err = PARTI_ERR_TIMEOUT, sent++, open++; /* until its reply says otherwise */
    }
    for (i = sent; i < n_updates; i++) u[i].err = parti__nats_map(n, s, bucket); /* never sent */
    if (sent && parti__nats_left(n, deadline)) /* written now, not after the flusher's millisecond */
        natsConnection_FlushTimeout(n->nc, (int64_t)parti__nats_left(n, deadline));
    s = NATS_OK;
    while (open > 0) {
        natsMsg *m = NULL;
        const char *subj, *dot;
        uint64_t id = 0;
        s = natsSubscription_NextMsg(&m, n->rsub, (int64_t)parti__nats_left(n, deadline));
        if (s == NATS_NO_RESPONDERS) { /* the earliest unanswered write's */
            for (i = 0; i < sent && answered[i]; i++) {}
            if (i < sent) u[i].err = PARTI_ERR_NO_RESPONDERS, answered[i] = 1, open--;
            continue;
        }
        if (s != NATS_OK) break;
        subj = natsMsg_GetSubject(m);
        dot = strrchr(subj, '.');
        if (dot && (size_t)(dot - subj) == strlen(n->rinbox) && strncmp(subj, n->rinbox, (size_t)(dot - subj)) == 0)
            parti__parse_u64(dot + 1, strlen(dot + 1), &id);
        if (id >= base && id < base + (uint64_t)sent && !answered[id - base]) {
            uint64_t seq = 0;
            i = (int)(id - base);
            u[i].err = parti__nats_pub_ack(n, m, &seq, NULL);
            if (u[i].err == PARTI_ERR_OK) u[i].revision = seq;
            answered[i] = 1;
            open--;
            parti__nats_reap_retired(n); /* (as for any request's reply) */
        }
        natsMsg_Destroy(m); /* or not one of these: a second answer to an earlier request */
    }
    if (open > 0) {
        parti__nats_reply_drop(n); /* a late reply must not reach a later request */
        for (i = 0; i < sent; i++) {
            if (answered[i]) continue;
            parti__nats_kv_names(bucket, u[i].key, &k);
            u[i].err = s == NATS_TIMEOUT && parti__nats_denied(n, k.subject) ? PARTI_ERR_PERMISSION_DENIED
                                                                              : parti__nats_map(n, s, k.subject);
        }
    }
    for (i = 0; i < sent; i++) { /* nobody answered: the bucket is gone, or its stream has no leader */
        if (!answered[i] || u[i].err != PARTI_ERR_NO_RESPONDERS) continue;
        parti__nats_kv_names(bucket, u[i].key, &k);
        u[i].err = parti__nats_kv_unanswered(n, &k, deadline);
    }
}

static const parti_transport_vtable parti__nats_vtable = {
    parti__nats_now_ms,         parti__nats_random,        parti__nats_stream_create, parti__nats_stream_info,
    parti__nats_stream_delete,  parti__nats_kv_open,       parti__nats_kv_create,     parti__nats_kv_update,
    parti__nats_kv_put,         parti__nats_kv_get,        parti__nats_kv_delete,     parti__nats_kv_keys,
    parti__nats_kv_watch,       parti__nats_kv_watch_next, parti__nats_kv_watch_stop, parti__nats_consumer_upsert,
    parti__nats_consumer_info,  parti__nats_consumer_delete, parti__nats_fetch_start, parti__nats_fetch_next,
    parti__nats_ack,            parti__nats_msg_release,   parti__nats_publish,       parti__nats_sleep_ms,
    parti__nats_is_connected,   parti__nats_kv_delete_if,  parti__nats_stream_get_next, parti__nats_flush,
    parti__nats_kv_update_many};

/* ---- connect: and read the server's INFO line for its version ------------------ */

/* Reads the INFO line a NATS server sends first, from host:port (bounded by
 * timeout_ms and by the buffer), and parses version and JetStream support. */
static parti_err parti__nats_server_info(const char *url, uint32_t timeout_ms, char *version, size_t vcap,
                                         int *jetstream, char *msg, size_t msg_size) {
    char host[256], port[16], buf[4096], jmsg[96];
    const char *p = strstr(url, "://"), *colon, *end;
    struct addrinfo hints, *res = NULL;
    size_t got = 0;
    int fd = -1, rc;
    parti_json_doc doc;
    parti_err e = PARTI_ERR_NOT_CONNECTED;
    uint64_t deadline = parti__nats_now_ms(NULL) + timeout_ms;
    p = p ? p + 3 : url;
    if ((end = strchr(p, '@')) != NULL) p = end + 1; /* user:pass@ */
    end = p + strcspn(p, "/,");
    if (*p == '[') {
        const char *rb = (const char *)memchr(p, ']', (size_t)(end - p));
        if (!rb) return PARTI_ERR_INVALID_ARGUMENT;
        snprintf(host, sizeof host, "%.*s", (int)(rb - p - 1), p + 1);
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = (const char *)memchr(p, ':', (size_t)(end - p));
        snprintf(host, sizeof host, "%.*s", (int)((colon ? colon : end) - p), p);
    }
    snprintf(port, sizeof port, "%.*s", colon ? (int)(end - colon - 1) : 4, colon ? colon + 1 : "4222");
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res) {
        parti__msg(msg, msg_size, "cannot resolve %s:%s", host, port);
        return PARTI_ERR_NOT_CONNECTED;
    }
    fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0) {
        struct pollfd pfd;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
        rc = connect(fd, res->ai_addr, res->ai_addrlen);
        pfd.fd = fd;
        pfd.events = POLLIN;
        if (rc == 0 || errno == EINPROGRESS) {
            /* read until the end of the INFO line, the buffer, or the deadline */
            while (got < sizeof buf - 1) {
                uint64_t now = parti__nats_now_ms(NULL);
                ssize_t r;
                if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) <= 0) break;
                r = read(fd, buf + got, sizeof buf - 1 - got);
                if (r <= 0) break;
                got += (size_t)r;
                if (memchr(buf, '\n', got)) break;
            }
        }
        close(fd);
    }
    freeaddrinfo(res);
    buf[got] = 0;
    if (got < 5 || strncmp(buf, "INFO ", 5) != 0 || !strchr(buf, '\n')) {
        parti__msg(msg, msg_size, "no INFO line from %s:%s", host, port);
        return e;
    }
    *strchr(buf, '\n') = 0;
    if (parti_json_parse(&doc, buf + 5, strlen(buf + 5), NULL, jmsg, sizeof jmsg) != PARTI_ERR_OK) {
        parti__msg(msg, msg_size, "unparsable INFO from the server: %s", jmsg);
        return PARTI_ERR_PROTOCOL;
    }
    version[0] = 0;
    parti_json_get_string(&doc, parti_json_root(&doc), "version", version, vcap, NULL);
    *jetstream = 0;
    parti_json_get_bool(&doc, parti_json_root(&doc), "jetstream", jetstream);
    parti_json_doc_free(&doc);
    return PARTI_ERR_OK;
}

static void parti__nats_free(parti__nconn *n) {
    int i;
    /* closed first: then no thread of nats.c reads for a subscription
     * destroyed below (see parti__nconn.retired), so every one retired is
     * destroyed at once; acks not sent yet go first */
    if (n->nc) {
        parti__nats_send_acks(n);
        natsConnection_Close(n->nc);
    }
    parti__nats_free_dead(n);
    PARTI_FREE(n->acks);
    for (i = 0; i < (int)arrlen(n->pulls); i++) parti__nats_pull_free(n, &n->pulls[i]);
    arrfree(n->pulls);
    parti__nats_reply_drop(n);
    parti__nats_reap_retired(n);
    arrfree(n->retired);
    if (n->nc) natsConnection_Destroy(n->nc);
    natsOptions_Destroy(n->opts);
    natsStatistics_Destroy(n->stats);
    PARTI_FREE(n);
}

PARTIDEF parti_err parti_nats_connect(parti_transport *out, const char *url, const parti_nats_options *opts, char *msg,
                                      size_t msg_size) {
    parti__nconn *n;
    parti_nats_options o;
    char connected[256];
    int jetstream = 0;
    natsStatus s;
    parti_err e;
    if (!out || !url || !*url) {
        parti__msg(msg, msg_size, "parti_nats_connect: NULL transport or empty URL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    memset(out, 0, sizeof *out);
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (!(n = (parti__nconn *)PARTI_MALLOC(sizeof *n))) return PARTI_ERR_NOMEM;
    memset(n, 0, sizeof *n);
    n->rng = (uint64_t)parti__nats_now_ms(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)n;
    s = natsOptions_Create(&n->opts);
    if (s == NATS_OK) s = natsOptions_SetURL(n->opts, url);
    if (s == NATS_OK) s = natsOptions_SetTimeout(n->opts, o.connect_timeout_ms ? o.connect_timeout_ms : 2000);
    if (s == NATS_OK) s = natsOptions_SetName(n->opts, o.name ? o.name : "parti");
    if (s == NATS_OK) s = natsOptions_SetAllowReconnect(n->opts, o.max_reconnect >= 0);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(n->opts, o.max_reconnect == 0 ? -1 : o.max_reconnect);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(n->opts, o.reconnect_wait_ms ? o.reconnect_wait_ms : 250);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectJitter(n->opts, o.reconnect_jitter_ms ? o.reconnect_jitter_ms : 100,
                                           o.reconnect_jitter_ms ? o.reconnect_jitter_ms : 100);
    /* a write that cannot complete (a hung server, full socket buffers) fails
     * after this instead of blocking the caller for as long as TCP takes */
    if (s == NATS_OK) s = natsOptions_SetWriteDeadline(n->opts, o.write_deadline_ms ? o.write_deadline_ms : 1000);
    if (s == NATS_OK) s = natsStatistics_Create(&n->stats);
    if (s == NATS_OK) s = natsConnection_Connect(&n->nc, n->opts);
    if (s != NATS_OK) {
        e = parti__nats_map(n, s, "connect");
        parti__msg(msg, msg_size, "cannot connect to %s: %s", url, natsStatus_GetText(s));
        parti__nats_free(n);
        return e;
    }
    if (natsConnection_GetConnectedUrl(n->nc, connected, sizeof connected) != NATS_OK) snprintf(connected, sizeof connected, "%s", url);
    e = parti__nats_server_info(connected, o.connect_timeout_ms ? o.connect_timeout_ms : 2000, n->version,
                                sizeof n->version, &jetstream, msg, msg_size);
    n->vnum = parti_version_number(n->version);
    if (e == PARTI_ERR_OK && n->vnum < 2010000) {
        parti__msg(msg, msg_size,
                   "nats-server %s at %s is too old: parti needs >= 2.10 for multi-subject consumer filters",
                   n->version[0] ? n->version : "(unknown version)", connected);
        e = PARTI_ERR_SERVER_TOO_OLD;
    } else if (e == PARTI_ERR_OK && !jetstream) {
        parti__msg(msg, msg_size, "nats-server %s at %s does not have JetStream enabled (start it with -js)",
                   n->version, connected);
        e = PARTI_ERR_UNSUPPORTED;
    }
    if (e != PARTI_ERR_OK) {
        parti__nats_free(n);
        return e;
    }
    n->markers = n->vnum >= 2011000 && !o.no_expiry_markers;
    out->vt = &parti__nats_vtable;
    out->self = n;
    return PARTI_ERR_OK;
}

PARTIDEF void parti_nats_close(parti_transport *t) {
    if (!t || t->vt != &parti__nats_vtable || !t->self) return;
    parti__nats_free((parti__nconn *)t->self);
    t->vt = NULL;
    t->self = NULL;
}

PARTIDEF const char *parti_nats_server_version(const parti_transport *t) {
    if (!t || t->vt != &parti__nats_vtable || !t->self) return "";
    return ((parti__nconn *)t->self)->version;
}

PARTIDEF const char *parti_nats_last_error(const parti_transport *t) {
    if (!t || t->vt != &parti__nats_vtable || !t->self) return "";
    return ((parti__nconn *)t->self)->last_error;
}

#ifdef __cplusplus
}
#endif
#endif /* PARTI_NATS_NO_NATSC */

#endif /* PARTI_IMPLEMENTATION && !PARTI_NATS__IMPLEMENTED */

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
 *     SERVER_SHUTDOWN; streams, consumers and KV survive, as with file
 *     storage), expire a key early, skew one client's clock.
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
 *     than max_msgs, purge, consumer pause, memory-storage loss on restart,
 *     subject transforms, mirrors and sources, message size limits of
 *     streams. Acks are fire-and-forget, as natsMsg_Ack: an ack of a message
 *     whose consumer is gone succeeds and does nothing.
 *
 *   THE NATS.C BINDING
 *     Arrives with the binding issue; define PARTI_NATS_NO_NATSC to make sure
 *     nothing of nats.c is needed (the fake never needs it).
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
PARTIDEF void parti_fake_drop_heartbeats(parti_fake_world *w, parti_transport *client, int on);
PARTIDEF parti_err parti_fake_fail_next(parti_fake_world *w, parti_transport *client, const char *op, int n,
                                        parti_err status);
PARTIDEF parti_err parti_fake_set_latency(parti_fake_world *w, parti_transport *client, const char *op, uint32_t ms);
PARTIDEF void parti_fake_partition(parti_fake_world *w, parti_transport *client, int cut);
PARTIDEF void parti_fake_restart(parti_fake_world *w);
PARTIDEF parti_err parti_fake_expire_key(parti_fake_world *w, const char *bucket, const char *key);
PARTIDEF void parti_fake_skew_clock(parti_fake_world *w, parti_transport *client, int64_t ms);
/* The event log: one line per operation, "<time> <client> <op> <args> -> <result>". */
PARTIDEF const char *parti_fake_log(const parti_fake_world *w, size_t *len);

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
    X(fetch_start) X(fetch_next) X(ack) X(publish)

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
} parti__fconsumer;

typedef struct parti__fstream {
    char *name;
    char **subjects; /* stb_ds array */
    int memory;
    uint64_t dupwin, max_msgs, last_seq;
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

struct parti_kv_watcher {
    parti__fclient *c;
    char *bucket, *prefix;
    parti_kv_entry *queue; /* stb_ds array */
    size_t head;
};

typedef struct parti__fpull {
    char *stream, *consumer;
    uint64_t instance, expires_at, last_activity;
    int active, remaining;
    int64_t bytes_left; /* < 0: no limit */
    uint32_t hb;
    parti_err terminal; /* status to report next, PARTI_ERR_OK if none */
} parti__fpull;

typedef struct parti__fdeliv {
    uint64_t instance, seq;
    char *stream, *consumer, *subject;
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
    parti__fpull *pulls;             /* stb_ds array */
    parti_kv_watcher **watchers;     /* stb_ds array */
};

struct parti_fake_world {
    uint64_t now, seed, instances;
    int auto_advance, markers, keep_log, next_client;
    parti__fstream **streams;
    parti__fbucket **buckets;
    parti__fclient **clients;
    char *log; /* stb_ds array of chars, NUL-terminated when non-empty */
};

/* ---- small helpers ------------------------------------------------------ */

static void *parti__fake_memdup(const void *p, size_t n) {
    uint8_t *d = (uint8_t *)PARTI_MALLOC(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = 0;
    return d;
}

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

static void parti__fake_free_watcher(parti_kv_watcher *wt) {
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
            parti_kv_watcher *wt = c->watchers[j];
            parti_kv_entry e;
            if (strcmp(wt->bucket, b->name) != 0 || strncmp(r->key, wt->prefix, strlen(wt->prefix)) != 0) continue;
            memset(&e, 0, sizeof e);
            e.key = (char *)parti__fake_memdup(r->key, strlen(r->key));
            e.value = (uint8_t *)parti__fake_memdup(r->value, r->len);
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
    r.key = (char *)parti__fake_memdup(key, strlen(key));
    r.value = (uint8_t *)parti__fake_memdup(value, len);
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

static void parti__fake_set_time(parti_fake_world *w, uint64_t t) {
    if (t <= w->now) return;
    w->now = t;
    parti__fake_run_kv_expiry(w);
    parti__fake_run_inactivity(w);
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
        if (w->auto_advance) parti__fake_set_time(w, w->now + wait);
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
        if (parti_subject_check(cfg->subjects[i], 1, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_SUBJECT;
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
    s->name = (char *)parti__fake_memdup(cfg->name, strlen(cfg->name));
    for (i = 0; i < cfg->subject_count; i++)
        arrput(s->subjects, (char *)parti__fake_memdup(cfg->subjects[i], strlen(cfg->subjects[i])));
    s->memory = cfg->memory_storage;
    s->dupwin = cfg->duplicate_window_ms ? cfg->duplicate_window_ms : 120000;
    s->max_msgs = cfg->max_msgs;
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
    out->name = (char *)parti__fake_memdup(s->name, strlen(s->name));
    out->subject_count = (int)arrlen(s->subjects);
    out->subjects = (char **)PARTI_MALLOC(sizeof(char *) * (size_t)(out->subject_count + 1));
    if (!out->name || !out->subjects) {
        parti_stream_info_free(out);
        return PARTI_ERR_NOMEM;
    }
    for (i = 0; i < out->subject_count; i++) out->subjects[i] = (char *)parti__fake_memdup(s->subjects[i], strlen(s->subjects[i]));
    out->memory_storage = s->memory;
    out->duplicate_window_ms = s->dupwin;
    out->messages = (uint64_t)arrlen(s->msgs);
    out->first_seq = arrlen(s->msgs) ? s->msgs[0].seq : s->last_seq + 1;
    out->last_seq = s->last_seq;
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
    m.subject = (char *)parti__fake_memdup(subject, strlen(subject));
    m.data = (uint8_t *)parti__fake_memdup(data, len);
    m.len = len;
    for (i = 0; i < header_count; i++) {
        parti_header h;
        h.name = (const char *)parti__fake_memdup(headers[i].name, strlen(headers[i].name));
        h.value = (const char *)parti__fake_memdup(headers[i].value, strlen(headers[i].value));
        arrput(m.hdrs, h);
    }
    arrput(s->msgs, m);
    if (msg_id) {
        parti__fdedupe d;
        d.id = (char *)parti__fake_memdup(msg_id, strlen(msg_id));
        d.seq = m.seq;
        d.ts = w->now;
        arrput(s->dedupe, d);
    }
    if (s->max_msgs && (uint64_t)arrlen(s->msgs) > s->max_msgs) {
        parti__fake_free_msg(&s->msgs[0]);
        arrdel(s->msgs, 0);
    }
    if (ack) {
        ack->stream_seq = m.seq;
        ack->duplicate = 0;
    }
    parti__fake_log(w, c, "publish", PARTI_ERR_OK, "%s seq=%llu", subject, (unsigned long long)m.seq);
    return PARTI_ERR_OK;
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
    b->name = (char *)parti__fake_memdup(cfg->bucket, strlen(cfg->bucket));
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
    r = parti__fake_latest(b, key);
    e = r && r->op == PARTI_KV_PUT ? PARTI_ERR_KEY_EXISTS
                                   : parti__fake_append(w, b, key, value, len, PARTI_KV_PUT, w->now, &rev);
    if (revision && e == PARTI_ERR_OK) *revision = rev;
    parti__fake_log(w, c, "kv_create", e, "%s/%s rev=%llu", bucket, key, (unsigned long long)rev);
    return e;
}

static parti_err parti__fake_kv_update(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                       uint64_t expected, uint64_t *revision, uint32_t timeout_ms) {
    parti__fbucket *b;
    parti__frec *r;
    uint64_t rev = 0;
    PARTI__FAKE_BEGIN(kv_update, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, value, len, &b)) != PARTI_ERR_OK) return e;
    r = parti__fake_latest(b, key);
    e = (r ? r->rev : 0) != expected ? PARTI_ERR_WRONG_REVISION
                                     : parti__fake_append(w, b, key, value, len, PARTI_KV_PUT, w->now, &rev);
    if (revision && e == PARTI_ERR_OK) *revision = rev;
    parti__fake_log(w, c, "kv_update", e, "%s/%s expected=%llu rev=%llu", bucket, key, (unsigned long long)expected,
                    (unsigned long long)rev);
    return e;
}

static parti_err parti__fake_kv_put(void *self, const char *bucket, const char *key, const void *value, size_t len,
                                    uint64_t *revision, uint32_t timeout_ms) {
    parti__fbucket *b;
    uint64_t rev = 0;
    PARTI__FAKE_BEGIN(kv_put, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, value, len, &b)) != PARTI_ERR_OK) return e;
    e = parti__fake_append(w, b, key, value, len, PARTI_KV_PUT, w->now, &rev);
    if (revision && e == PARTI_ERR_OK) *revision = rev;
    parti__fake_log(w, c, "kv_put", e, "%s/%s rev=%llu", bucket, key, (unsigned long long)rev);
    return e;
}

static parti_err parti__fake_entry_from(const parti__frec *r, parti_kv_entry *out) {
    out->key = (char *)parti__fake_memdup(r->key, strlen(r->key));
    out->value = (uint8_t *)parti__fake_memdup(r->value, r->len);
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

static parti_err parti__fake_kv_delete(void *self, const char *bucket, const char *key, uint32_t timeout_ms) {
    parti__fbucket *b;
    PARTI__FAKE_BEGIN(kv_delete, timeout_ms)
    if ((e = parti__fake_kv_args(w, bucket, key, NULL, 0, &b)) != PARTI_ERR_OK) return e;
    e = parti__fake_append(w, b, key, "", 0, PARTI_KV_DELETE, w->now, NULL);
    parti__fake_log(w, c, "kv_delete", e, "%s/%s", bucket, key);
    return e;
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
    parti_kv_watcher *wt;
    PARTI__FAKE_BEGIN(kv_watch, timeout_ms)
    if (!bucket || !out) return PARTI_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!prefix) prefix = "";
    if (parti_name_check(bucket, NULL, 0) != PARTI_ERR_OK) return PARTI_ERR_INVALID_NAME;
    if (!parti__fake_bucket(w, bucket)) return PARTI_ERR_BUCKET_NOT_FOUND;
    if (!(wt = (parti_kv_watcher *)PARTI_MALLOC(sizeof *wt))) return PARTI_ERR_NOMEM;
    memset(wt, 0, sizeof *wt);
    wt->c = c;
    wt->bucket = (char *)parti__fake_memdup(bucket, strlen(bucket));
    wt->prefix = (char *)parti__fake_memdup(prefix, strlen(prefix));
    arrput(c->watchers, wt);
    *out = wt;
    parti__fake_log(w, c, "kv_watch", PARTI_ERR_OK, "%s prefix=%s", bucket, prefix);
    return PARTI_ERR_OK;
}

static parti_err parti__fake_kv_watch_next(void *self, parti_kv_watcher *wt, parti_kv_entry *out) {
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

static void parti__fake_kv_watch_stop(void *self, parti_kv_watcher *wt) {
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
    if (!(k = parti__fake_consumer(s, cfg->durable))) {
        if (!(k = (parti__fconsumer *)PARTI_MALLOC(sizeof *k))) return PARTI_ERR_NOMEM;
        memset(k, 0, sizeof *k);
        k->name = (char *)parti__fake_memdup(cfg->durable, strlen(cfg->durable));
        k->instance = ++w->instances;
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
        arrput(k->filters, (char *)parti__fake_memdup(cfg->filter_subjects[i], strlen(cfg->filter_subjects[i])));
    k->ack_wait = cfg->ack_wait_ms ? cfg->ack_wait_ms : 30000;
    k->max_deliver = cfg->max_deliver;
    k->max_ack_pending = cfg->max_ack_pending ? cfg->max_ack_pending : 1000;
    k->inactive = cfg->inactive_threshold_ms;
    k->last_active = w->now;
    parti__fake_log(w, c, "consumer_upsert", PARTI_ERR_OK, "%s/%s %s filters=%d position=%llu", cfg->stream,
                    cfg->durable, created ? "created" : "updated", cfg->filter_count,
                    (unsigned long long)k->position);
    return PARTI_ERR_OK;
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
    if (!(s = parti__fake_stream(w, stream))) return PARTI_ERR_STREAM_NOT_FOUND;
    if (!(k = parti__fake_consumer(s, durable))) return PARTI_ERR_CONSUMER_NOT_FOUND;
    out->name = (char *)parti__fake_memdup(k->name, strlen(k->name));
    out->filter_count = (int)arrlen(k->filters);
    out->filter_subjects = (char **)PARTI_MALLOC(sizeof(char *) * (size_t)(out->filter_count + 1));
    if (!out->name || !out->filter_subjects) {
        parti_consumer_info_free(out);
        return PARTI_ERR_NOMEM;
    }
    for (i = 0; i < out->filter_count; i++)
        out->filter_subjects[i] = (char *)parti__fake_memdup(k->filters[i], strlen(k->filters[i]));
    out->delivered_stream_seq = k->position;
    out->ack_floor_stream_seq = arrlen(k->pend) ? k->pend[0].seq - 1 : k->position;
    out->num_pending = parti__fake_num_pending(s, k);
    out->num_ack_pending = (uint64_t)arrlen(k->pend);
    out->num_redelivered = k->redelivered;
    return PARTI_ERR_OK;
}

static parti_err parti__fake_consumer_delete(void *self, const char *stream, const char *durable, uint32_t timeout_ms) {
    PARTI__FAKE_BEGIN(consumer_delete, timeout_ms)
    if (!stream || !durable) return PARTI_ERR_INVALID_ARGUMENT;
    if (parti_name_check(stream, NULL, 0) != PARTI_ERR_OK || parti_name_check(durable, NULL, 0) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_NAME;
    e = parti_fake_delete_consumer(w, stream, durable);
    parti__fake_log(w, c, "consumer_delete", e, "%s/%s", stream, durable);
    return e;
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
        np.stream = (char *)parti__fake_memdup(stream, strlen(stream));
        np.consumer = (char *)parti__fake_memdup(durable, strlen(durable));
        arrput(c->pulls, np);
        p = &c->pulls[arrlen(c->pulls) - 1];
    }
    k = parti__fake_consumer(parti__fake_stream(w, stream), durable);
    p->active = 1;
    p->instance = k ? k->instance : 0;
    p->remaining = opts->batch;
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

static void parti__fake_fill_msg(parti__fstream *s, parti__fconsumer *k, int mi, uint32_t deliveries, parti_msg *out,
                                 parti__fdeliv *d) {
    parti__fmsg *m = &s->msgs[mi];
    int i, n = (int)arrlen(m->hdrs);
    d->instance = k->instance;
    d->seq = m->seq;
    d->stream = (char *)parti__fake_memdup(s->name, strlen(s->name));
    d->consumer = (char *)parti__fake_memdup(k->name, strlen(k->name));
    d->subject = (char *)parti__fake_memdup(m->subject, strlen(m->subject));
    d->data = (uint8_t *)parti__fake_memdup(m->data, m->len);
    d->hdrs = n ? (parti_header *)PARTI_MALLOC(sizeof(parti_header) * (size_t)n) : NULL;
    d->nhdr = d->hdrs ? n : 0;
    for (i = 0; i < d->nhdr; i++) {
        d->hdrs[i].name = (const char *)parti__fake_memdup(m->hdrs[i].name, strlen(m->hdrs[i].name));
        d->hdrs[i].value = (const char *)parti__fake_memdup(m->hdrs[i].value, strlen(m->hdrs[i].value));
    }
    memset(out, 0, sizeof *out);
    out->subject = d->subject;
    out->data = d->data;
    out->len = m->len;
    out->headers = d->hdrs;
    out->header_count = d->nhdr;
    out->stream_seq = m->seq;
    out->consumer_seq = ++k->cseq;
    out->delivery_count = deliveries;
    out->num_pending = parti__fake_num_pending(s, k);
    out->timestamp_ms = m->ts;
    out->handle = d;
}

/* Picks the next message for a consumer: due redeliveries first (also of
 * subjects no longer in the filter, as the server does), then new matching
 * messages after the position while under max_ack_pending. Returns the index
 * into s->msgs or -1, and drops pending entries that are gone or exhausted. */
static int parti__fake_pick(parti_fake_world *w, parti__fstream *s, parti__fconsumer *k, uint32_t *deliveries) {
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
        p->deliveries++;
        p->deadline = w->now + k->ack_wait;
        k->redelivered++;
        *deliveries = p->deliveries;
        return mi;
    }
    if ((int)arrlen(k->pend) >= k->max_ack_pending) return -1;
    for (i = 0; i < (int)arrlen(s->msgs); i++) {
        parti__fpend np;
        if (s->msgs[i].seq <= k->position || !parti__fake_filters_match(k->filters, s->msgs[i].subject)) continue;
        k->position = s->msgs[i].seq;
        np.seq = s->msgs[i].seq;
        np.deliveries = 1;
        np.deadline = w->now + k->ack_wait;
        arrput(k->pend, np);
        *deliveries = 1;
        return i;
    }
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
    parti__fpull *p;
    uint64_t deadline;
    int guard;
    PARTI__FAKE_BEGIN(fetch_next, timeout_ms)
    if (!stream || !durable || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(out, 0, sizeof *out);
    if (!(p = parti__fake_pull(c, stream, durable)) || !p->active) return PARTI_ERR_NO_MESSAGES;
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
        mi = parti__fake_pick(w, s, k, &deliveries);
        if (mi >= 0) {
            parti__fdeliv *d = (parti__fdeliv *)PARTI_MALLOC(sizeof *d);
            if (!d) return PARTI_ERR_NOMEM;
            memset(d, 0, sizeof *d);
            parti__fake_fill_msg(s, k, mi, deliveries, out, d);
            p->remaining--;
            if (p->bytes_left > 0) p->bytes_left = (int64_t)out->len >= p->bytes_left ? 0 : p->bytes_left - (int64_t)out->len;
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
        if (w->now >= deadline || !w->auto_advance) return PARTI_ERR_TIMEOUT;
        /* wait, as the real call would, until the first thing that can change the answer */
        next = deadline;
        if (p->expires_at < next) next = p->expires_at;
        if (missed_at < next) next = missed_at;
        if (parti__fake_next_due(w, k) < next) next = parti__fake_next_due(w, k);
        parti__fake_set_time(w, next);
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

static const parti_transport_vtable parti__fake_vtable = {
    parti__fake_now_ms,        parti__fake_random,        parti__fake_stream_create, parti__fake_stream_info,
    parti__fake_stream_delete, parti__fake_kv_open,       parti__fake_kv_create,     parti__fake_kv_update,
    parti__fake_kv_put,        parti__fake_kv_get,        parti__fake_kv_delete,     parti__fake_kv_keys,
    parti__fake_kv_watch,      parti__fake_kv_watch_next, parti__fake_kv_watch_stop, parti__fake_consumer_upsert,
    parti__fake_consumer_info, parti__fake_consumer_delete, parti__fake_fetch_start, parti__fake_fetch_next,
    parti__fake_ack,           parti__fake_msg_release,   parti__fake_publish};

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
    c->name = (char *)parti__fake_memdup(name, strlen(name));
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
#endif /* PARTI_IMPLEMENTATION && !PARTI_NATS__IMPLEMENTED */

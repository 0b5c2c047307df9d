/* Transport conformance suite: the behaviour parti relies on, written once
 * against the parti_transport vtable and run in every environment
 * (tests/conformance.h): the fake NATS now, a real nats-server later. Where
 * the fake and the real server disagree, the fake is wrong.
 *
 * Rules that keep the suite honest on a real server:
 *   - every test starts from env->reset (a fresh server state) and uses fixed
 *     names; clients, watchers and messages are tracked and released in the
 *     fixture's fini, also when an assertion fails;
 *   - time passes only through env->advance inside bounded polling loops;
 *     durations are measured with the transport clock (now_ms), never assumed;
 *   - fault hooks may be NULL: such cases skip with the reason, before they
 *     connect anything.
 * Suites: clock, stream, publish, kv, kv_ttl, kv_watch, consumer, pull, ack,
 * faults, bad_input. */
#include "parti.h"
#include "conformance.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== */
/* Fixture: tracked clients, watchers and messages                           */
/* ======================================================================== */

#define CONF_TO 5000u        /* timeout of one request */
#define CONF_SHORT_TO 500u   /* timeout of a request expected to fail (partition) */
#define CONF_STEP 10u        /* polling step */
#define CONF_POLL 0u         /* fetch_next timeout inside polling loops: never block */
#define CONF_MAX_CLIENTS 4
#define CONF_MAX_MSGS 64
#define CONF_MAX_WATCHERS 8

typedef struct conf_client {
    parti_transport t;
    int open;
} conf_client;

typedef struct conf_held_msg {
    parti_msg m;
    parti_transport *owner;
    int held;
} conf_held_msg;

typedef struct conf_watch {
    parti_kv_watcher *w;
    parti_transport *owner;
} conf_watch;

static conf_env *env;
static conf_client conf_clients[CONF_MAX_CLIENTS];
static conf_held_msg conf_msgs[CONF_MAX_MSGS];
static conf_watch conf_watches[CONF_MAX_WATCHERS];

static void conf_init(void) {
    env = conformance_env();
    memset(conf_clients, 0, sizeof conf_clients);
    memset(conf_msgs, 0, sizeof conf_msgs);
    memset(conf_watches, 0, sizeof conf_watches);
    env->reset(env);
}

static void conf_release_owned_by(parti_transport *c) {
    int i;
    for (i = 0; i < CONF_MAX_MSGS; i++)
        if (conf_msgs[i].held && conf_msgs[i].owner == c) {
            c->vt->msg_release(c->self, &conf_msgs[i].m);
            conf_msgs[i].held = 0;
        }
    for (i = 0; i < CONF_MAX_WATCHERS; i++)
        if (conf_watches[i].w && conf_watches[i].owner == c) {
            c->vt->kv_watch_stop(c->self, conf_watches[i].w);
            conf_watches[i].w = NULL;
        }
}

static void conf_disconnect(parti_transport *c) {
    int i;
    for (i = 0; i < CONF_MAX_CLIENTS; i++)
        if (conf_clients[i].open && &conf_clients[i].t == c) {
            conf_release_owned_by(c);
            env->disconnect(env, c);
            conf_clients[i].open = 0;
        }
}

static void conf_fini(void) {
    int i;
    for (i = 0; i < CONF_MAX_CLIENTS; i++)
        if (conf_clients[i].open) conf_disconnect(&conf_clients[i].t);
}

TestSuite(clock, .init = conf_init, .fini = conf_fini);
TestSuite(stream, .init = conf_init, .fini = conf_fini);
TestSuite(publish, .init = conf_init, .fini = conf_fini);
TestSuite(kv, .init = conf_init, .fini = conf_fini);
TestSuite(kv_ttl, .init = conf_init, .fini = conf_fini);
TestSuite(kv_watch, .init = conf_init, .fini = conf_fini);
TestSuite(consumer, .init = conf_init, .fini = conf_fini);
TestSuite(pull, .init = conf_init, .fini = conf_fini);
TestSuite(ack, .init = conf_init, .fini = conf_fini);
TestSuite(faults, .init = conf_init, .fini = conf_fini);
TestSuite(bad_input, .init = conf_init, .fini = conf_fini);

/* ---- assertions ----------------------------------------------------------- */

#define CONF_EXPECT(expr, want)                                                                                   \
    do {                                                                                                          \
        parti_err conf_got_ = (expr);                                                                             \
        parti_err conf_want_ = (want);                                                                            \
        cr_assert_eq(conf_got_, conf_want_, "%s\n  returned %s, expected %s", #expr, parti_error_name(conf_got_), \
                     parti_error_name(conf_want_));                                                               \
    } while (0)

#define CONF_OK(expr) CONF_EXPECT(expr, PARTI_ERR_OK)

/* one of two acceptable statuses */
#define CONF_EXPECT2(expr, want1, want2)                                                                          \
    do {                                                                                                          \
        parti_err conf_got_ = (expr);                                                                             \
        cr_assert(conf_got_ == (want1) || conf_got_ == (want2), "%s\n  returned %s, expected %s or %s", #expr,    \
                  parti_error_name(conf_got_), parti_error_name(want1), parti_error_name(want2));                 \
    } while (0)

/* refused as the caller's mistake: an error of category invalid_input */
#define CONF_EXPECT_INVALID_INPUT(expr)                                                                           \
    do {                                                                                                          \
        parti_err conf_got_ = (expr);                                                                             \
        cr_assert(conf_got_ != PARTI_ERR_OK && parti_error_category(conf_got_) == PARTI_CAT_INVALID_INPUT,        \
                  "%s\n  returned %s (%s), expected an invalid_input error", #expr, parti_error_name(conf_got_),   \
                  parti_category_name(parti_error_category(conf_got_)));                                          \
    } while (0)

#define SUBJ(...) ((const char *const[]){__VA_ARGS__})
#define NSUBJ(...) ((int)(sizeof SUBJ(__VA_ARGS__) / sizeof(const char *)))
#define LIST(...) SUBJ(__VA_ARGS__), NSUBJ(__VA_ARGS__)

/* ---- clients and time ----------------------------------------------------- */

static parti_transport *conf_connect(void) {
    int i;
    for (i = 0; i < CONF_MAX_CLIENTS; i++)
        if (!conf_clients[i].open) {
            memset(&conf_clients[i].t, 0, sizeof conf_clients[i].t);
            CONF_OK(env->connect(env, &conf_clients[i].t));
            cr_assert_not_null(conf_clients[i].t.vt, "env %s: connect gave no vtable", env->name);
            conf_clients[i].open = 1;
            return &conf_clients[i].t;
        }
    cr_assert_fail("more than %d clients in one test", CONF_MAX_CLIENTS);
    return NULL;
}

static uint64_t conf_now(parti_transport *c) { return c->vt->now_ms(c->self); }

/* Lets ms of transport time pass (measured on c's clock). */
static void conf_sleep(parti_transport *c, uint32_t ms) {
    uint64_t start = conf_now(c);
    int guard = 0;
    while (conf_now(c) - start < ms) {
        env->advance(env, CONF_STEP);
        cr_assert(++guard < 10000000, "clock does not move");
    }
}

/* Polls cond every step_ms (letting time pass through env->advance) until it
 * holds (1) or deadline_ms of advanced time have passed (0). */
static int conf_wait_until(conf_env *e, uint32_t deadline_ms, uint32_t step_ms, int (*cond)(void *), void *arg) {
    uint32_t waited = 0;
    for (;;) {
        if (cond(arg)) return 1;
        if (waited >= deadline_ms) return 0;
        e->advance(e, step_ms);
        waited += step_ms;
    }
}

/* ---- streams and publish ---------------------------------------------------- */

static void conf_stream_full(parti_transport *c, const char *name, const char *const *subjects, int n, int memory,
                             uint64_t dup_window_ms, uint64_t max_msgs) {
    parti_stream_config sc;
    memset(&sc, 0, sizeof sc);
    sc.name = name;
    sc.subjects = subjects;
    sc.subject_count = n;
    sc.memory_storage = memory;
    sc.duplicate_window_ms = dup_window_ms;
    sc.max_msgs = max_msgs;
    CONF_OK(c->vt->stream_create(c->self, &sc, CONF_TO));
}

/* Storage of the streams and buckets most cases use: memory, or file when
 * PARTI_CONF_STORAGE=file (make test runs the real-server suite both ways). */
static int conf_memory(void) {
    const char *s = getenv("PARTI_CONF_STORAGE");
    return !(s && strcmp(s, "file") == 0);
}

static void conf_stream(parti_transport *c, const char *name, const char *const *subjects, int n) {
    conf_stream_full(c, name, subjects, n, conf_memory(), 0, 0);
}

/* The stream most cases use: ORDERS on orders.> */
static void conf_orders(parti_transport *c) { conf_stream(c, "ORDERS", LIST("orders.>")); }

static uint64_t conf_pub(parti_transport *c, const char *subject, const char *data) {
    parti_pub_ack pa = {0, 0};
    CONF_OK(c->vt->publish(c->self, subject, NULL, 0, data, strlen(data), &pa, CONF_TO));
    cr_assert_eq(pa.duplicate, 0, "publish to %s reported a duplicate", subject);
    cr_assert_gt(pa.stream_seq, 0);
    return pa.stream_seq;
}

static parti_err conf_pub_id(parti_transport *c, const char *subject, const char *msg_id, const char *data,
                             parti_pub_ack *pa) {
    parti_header h[1];
    h[0].name = "Nats-Msg-Id";
    h[0].value = msg_id;
    memset(pa, 0, sizeof *pa);
    return c->vt->publish(c->self, subject, h, 1, data, strlen(data), pa, CONF_TO);
}

static parti_stream_info conf_stream_info(parti_transport *c, const char *name) {
    parti_stream_info si;
    memset(&si, 0, sizeof si);
    CONF_OK(c->vt->stream_info(c->self, name, &si, CONF_TO));
    return si;
}

static int conf_has(char **items, int n, const char *s) {
    int i;
    for (i = 0; i < n; i++)
        if (items[i] && strcmp(items[i], s) == 0) return 1;
    return 0;
}

/* ---- key/value -------------------------------------------------------------- */

static void conf_kv_open_full(parti_transport *c, const char *bucket, uint32_t history, uint64_t ttl_ms,
                              size_t max_value_size, int memory) {
    parti_kv_config kc;
    memset(&kc, 0, sizeof kc);
    kc.bucket = bucket;
    kc.history = history;
    kc.ttl_ms = ttl_ms;
    kc.max_value_size = max_value_size;
    kc.memory_storage = memory;
    CONF_OK(c->vt->kv_open(c->self, &kc, CONF_TO));
}

static void conf_kv_open(parti_transport *c, const char *bucket) {
    conf_kv_open_full(c, bucket, 1, 0, 0, conf_memory());
}

static uint64_t conf_put(parti_transport *c, const char *bucket, const char *key, const char *value) {
    uint64_t rev = 0;
    CONF_OK(c->vt->kv_put(c->self, bucket, key, value, strlen(value), &rev, CONF_TO));
    cr_assert_gt(rev, 0, "kv_put %s/%s gave revision 0", bucket, key);
    return rev;
}

static parti_err conf_create(parti_transport *c, const char *bucket, const char *key, const char *value,
                             uint64_t *rev) {
    *rev = 0;
    return c->vt->kv_create(c->self, bucket, key, value, strlen(value), rev, CONF_TO);
}

static parti_err conf_update(parti_transport *c, const char *bucket, const char *key, const char *value,
                             uint64_t expected, uint64_t *rev) {
    *rev = 0;
    return c->vt->kv_update(c->self, bucket, key, value, strlen(value), expected, rev, CONF_TO);
}

static parti_err conf_get(parti_transport *c, const char *bucket, const char *key, uint64_t revision,
                          parti_kv_entry *out) {
    memset(out, 0, sizeof *out);
    return c->vt->kv_get(c->self, bucket, key, revision, out, CONF_TO);
}

/* Asserts key holds value (latest revision) and returns its revision. */
static uint64_t conf_expect_value(parti_transport *c, const char *bucket, const char *key, const char *value) {
    parti_kv_entry e;
    uint64_t rev;
    CONF_OK(conf_get(c, bucket, key, 0, &e));
    cr_assert_eq(e.len, strlen(value), "%s/%s has %zu bytes, expected \"%s\"", bucket, key, e.len, value);
    cr_assert(memcmp(e.value, value, e.len) == 0, "%s/%s = \"%.*s\", expected \"%s\"", bucket, key, (int)e.len,
              (const char *)e.value, value);
    rev = e.revision;
    parti_kv_entry_free(&e);
    return rev;
}

typedef struct conf_kv_probe {
    parti_transport *c;
    const char *bucket, *key;
    parti_err want, last;
} conf_kv_probe;

static int conf_kv_get_is(void *arg) {
    conf_kv_probe *p = (conf_kv_probe *)arg;
    parti_kv_entry e;
    p->last = conf_get(p->c, p->bucket, p->key, 0, &e);
    parti_kv_entry_free(&e);
    return p->last == p->want;
}

/* Polls until kv_get of key returns want; returns the time that took. */
static uint64_t conf_wait_kv_get(parti_transport *c, const char *bucket, const char *key, parti_err want,
                                 uint32_t deadline_ms) {
    conf_kv_probe p;
    uint64_t start = conf_now(c);
    p.c = c;
    p.bucket = bucket;
    p.key = key;
    p.want = want;
    p.last = PARTI_ERR_OK;
    cr_assert(conf_wait_until(env, deadline_ms, CONF_STEP, conf_kv_get_is, &p),
              "kv_get %s/%s still returns %s after %u ms, expected %s", bucket, key, parti_error_name(p.last),
              deadline_ms, parti_error_name(want));
    return conf_now(c) - start;
}

static int conf_keys_contain(parti_transport *c, const char *bucket, const char *key) {
    char **keys = NULL;
    int n = 0, found;
    CONF_OK(c->vt->kv_keys(c->self, bucket, &keys, &n, CONF_TO));
    found = conf_has(keys, n, key);
    parti_strings_free(keys, n);
    return found;
}

static parti_kv_watcher *conf_watch_start(parti_transport *c, const char *bucket, const char *prefix) {
    int i;
    for (i = 0; i < CONF_MAX_WATCHERS; i++)
        if (!conf_watches[i].w) {
            CONF_OK(c->vt->kv_watch(c->self, bucket, prefix, &conf_watches[i].w, CONF_TO));
            cr_assert_not_null(conf_watches[i].w);
            conf_watches[i].owner = c;
            return conf_watches[i].w;
        }
    cr_assert_fail("more than %d watchers in one test", CONF_MAX_WATCHERS);
    return NULL;
}

static void conf_watch_stop(parti_transport *c, parti_kv_watcher *w) {
    int i;
    for (i = 0; i < CONF_MAX_WATCHERS; i++)
        if (conf_watches[i].w == w) conf_watches[i].w = NULL;
    c->vt->kv_watch_stop(c->self, w);
}

/* Next watch event within deadline_ms: PARTI_ERR_OK with *out filled (free
 * it), or PARTI_ERR_NO_MESSAGES when none came. */
static parti_err conf_watch_wait(parti_transport *c, parti_kv_watcher *w, parti_kv_entry *out, uint32_t deadline_ms) {
    uint64_t start = conf_now(c);
    for (;;) {
        parti_err e;
        memset(out, 0, sizeof *out);
        e = c->vt->kv_watch_next(c->self, w, out);
        if (e != PARTI_ERR_NO_MESSAGES) return e;
        if (conf_now(c) - start >= deadline_ms) return e;
        env->advance(env, CONF_STEP);
    }
}

/* Asserts the next event is op on key and returns its revision. */
static uint64_t conf_expect_event(parti_transport *c, parti_kv_watcher *w, parti_kv_op op, const char *key,
                                  const char *value) {
    parti_kv_entry e;
    uint64_t rev;
    CONF_OK(conf_watch_wait(c, w, &e, 5000));
    cr_assert_str_eq(e.key, key, "watch event for \"%s\", expected \"%s\"", e.key, key);
    cr_assert_eq(e.op, op, "watch event on %s has op %d, expected %d", key, (int)e.op, (int)op);
    if (value) {
        cr_assert_eq(e.len, strlen(value), "watch event on %s: %zu bytes, expected \"%s\"", key, e.len, value);
        cr_assert(memcmp(e.value, value, e.len) == 0);
    }
    rev = e.revision;
    cr_assert_gt(rev, 0);
    parti_kv_entry_free(&e);
    return rev;
}

/* Asserts no event arrives within ms. */
static void conf_expect_no_event(parti_transport *c, parti_kv_watcher *w, uint32_t ms) {
    parti_kv_entry e;
    parti_err r = conf_watch_wait(c, w, &e, ms);
    if (r == PARTI_ERR_OK) {
        char key[128];
        int op = (int)e.op;
        snprintf(key, sizeof key, "%s", e.key ? e.key : "(null)");
        parti_kv_entry_free(&e);
        cr_assert_fail("unexpected watch event: op %d on \"%s\"", op, key);
    }
    CONF_EXPECT(r, PARTI_ERR_NO_MESSAGES);
}

/* ---- consumers and pulls ------------------------------------------------------ */

static parti_consumer_config conf_ccfg(const char *stream, const char *durable, const char *const *filters, int n) {
    parti_consumer_config cc;
    memset(&cc, 0, sizeof cc);
    cc.stream = stream;
    cc.durable = durable;
    cc.filter_subjects = filters;
    cc.filter_count = n;
    cc.ack_wait_ms = 30000;
    return cc;
}

static void conf_consumer(parti_transport *c, const char *stream, const char *durable, const char *const *filters,
                          int n, uint32_t ack_wait_ms) {
    parti_consumer_config cc = conf_ccfg(stream, durable, filters, n);
    cc.ack_wait_ms = ack_wait_ms;
    CONF_OK(c->vt->consumer_upsert(c->self, &cc, CONF_TO));
}

static parti_consumer_info conf_cinfo(parti_transport *c, const char *stream, const char *durable) {
    parti_consumer_info ci;
    memset(&ci, 0, sizeof ci);
    CONF_OK(c->vt->consumer_info(c->self, stream, durable, &ci, CONF_TO));
    return ci;
}

static parti_fetch_opts conf_opts(int batch, uint32_t expires_ms, uint32_t heartbeat_ms) {
    parti_fetch_opts o;
    memset(&o, 0, sizeof o);
    o.batch = batch;
    o.expires_ms = expires_ms;
    o.heartbeat_ms = heartbeat_ms;
    return o;
}

static parti_err conf_fetch_start(parti_transport *c, const char *stream, const char *durable, int batch,
                                  uint32_t expires_ms, uint32_t heartbeat_ms) {
    parti_fetch_opts o = conf_opts(batch, expires_ms, heartbeat_ms);
    return c->vt->fetch_start(c->self, stream, durable, &o, CONF_TO);
}

/* Waits up to deadline_ms for the pending pull's next result. On
 * PARTI_ERR_OK *out is a tracked message (conf_release it or leave it to the
 * fixture); PARTI_ERR_TIMEOUT when the deadline passed with the pull pending. */
static parti_err conf_next(parti_transport *c, const char *stream, const char *durable, uint32_t deadline_ms,
                           parti_msg **out) {
    uint64_t start = conf_now(c);
    int i;
    *out = NULL;
    for (i = 0; i < CONF_MAX_MSGS; i++)
        if (!conf_msgs[i].held) break;
    cr_assert_lt(i, CONF_MAX_MSGS, "more than %d messages held", CONF_MAX_MSGS);
    for (;;) {
        parti_err e;
        memset(&conf_msgs[i].m, 0, sizeof conf_msgs[i].m);
        e = c->vt->fetch_next(c->self, stream, durable, &conf_msgs[i].m, CONF_POLL);
        if (e == PARTI_ERR_OK) {
            conf_msgs[i].held = 1;
            conf_msgs[i].owner = c;
            *out = &conf_msgs[i].m;
            return e;
        }
        if (e != PARTI_ERR_TIMEOUT) return e;
        if (conf_now(c) - start >= deadline_ms) return e;
        env->advance(env, CONF_STEP);
    }
}

static void conf_release(parti_transport *c, parti_msg *m) {
    int i;
    for (i = 0; i < CONF_MAX_MSGS; i++)
        if (conf_msgs[i].held && &conf_msgs[i].m == m) {
            c->vt->msg_release(c->self, m);
            conf_msgs[i].held = 0;
        }
}

/* Starts a pull and asserts its next message arrives within deadline_ms. */
static parti_msg *conf_fetch_one(parti_transport *c, const char *stream, const char *durable, uint32_t deadline_ms) {
    parti_msg *m = NULL;
    CONF_OK(conf_fetch_start(c, stream, durable, 1, deadline_ms + 1000, 0));
    CONF_OK(conf_next(c, stream, durable, deadline_ms, &m));
    return m;
}

/* A direct read (stream_get_next); on PARTI_ERR_OK *out is a tracked message. */
static parti_err conf_get_next(parti_transport *c, const char *stream, const char *filter, uint64_t from_seq,
                               parti_msg **out) {
    parti_err e;
    int i;
    *out = NULL;
    for (i = 0; i < CONF_MAX_MSGS; i++)
        if (!conf_msgs[i].held) break;
    cr_assert_lt(i, CONF_MAX_MSGS, "more than %d messages held", CONF_MAX_MSGS);
    cr_assert_not_null(c->vt->stream_get_next, "env %s: no stream_get_next", env->name);
    memset(&conf_msgs[i].m, 0, sizeof conf_msgs[i].m);
    e = c->vt->stream_get_next(c->self, stream, filter, from_seq, &conf_msgs[i].m, CONF_TO);
    if (e == PARTI_ERR_OK) {
        conf_msgs[i].held = 1;
        conf_msgs[i].owner = c;
        *out = &conf_msgs[i].m;
    }
    return e;
}

/* The sequence stream_get_next finds (0 when PARTI_ERR_NO_MESSAGES). */
static uint64_t conf_get_next_seq(parti_transport *c, const char *stream, const char *filter, uint64_t from_seq) {
    parti_msg *m = NULL;
    uint64_t seq;
    parti_err e = conf_get_next(c, stream, filter, from_seq, &m);
    if (e == PARTI_ERR_NO_MESSAGES) return 0;
    CONF_OK(e);
    seq = m->stream_seq;
    conf_release(c, m);
    return seq;
}

typedef struct conf_delivery {
    uint64_t seq;
    uint64_t consumer_seq;
    uint32_t count;
    uint64_t pending;
    uint64_t at; /* ms after the caller's origin */
    char subject[64];
    char data[64];
} conf_delivery;

#define CONF_NO_ACK (-1)

static void conf_record(conf_delivery *d, const parti_msg *m, uint64_t at) {
    memset(d, 0, sizeof *d);
    d->seq = m->stream_seq;
    d->consumer_seq = m->consumer_seq;
    d->count = m->delivery_count;
    d->pending = m->num_pending;
    d->at = at;
    snprintf(d->subject, sizeof d->subject, "%s", m->subject ? m->subject : "");
    snprintf(d->data, sizeof d->data, "%.*s", (int)(m->len < 63 ? m->len : 63), m->data ? (const char *)m->data : "");
}

/* One pull: starts it with o and takes every message until it ends. Each
 * message is recorded (up to max), answered with ack_kind (CONF_NO_ACK: left
 * unacked) and released. *end is the status that ended the pull
 * (PARTI_ERR_TIMEOUT when it had not ended expires + 5 s later). Returns how
 * many messages came. */
static int conf_pull_once(parti_transport *c, const char *stream, const char *durable, const parti_fetch_opts *o,
                          int ack_kind, uint64_t origin, conf_delivery *out, int max, parti_err *end) {
    int n = 0;
    CONF_OK(c->vt->fetch_start(c->self, stream, durable, o, CONF_TO));
    for (;;) {
        parti_msg *m;
        parti_err e = conf_next(c, stream, durable, o->expires_ms + 5000, &m);
        if (e != PARTI_ERR_OK) {
            *end = e;
            return n;
        }
        if (n < max) conf_record(&out[n], m, conf_now(c) - origin);
        n++;
        cr_assert_lt(n, 10000, "a pull of batch %d delivered %d messages", o->batch, n);
        if (ack_kind != CONF_NO_ACK) CONF_OK(c->vt->ack(c->self, m, (parti_ack_kind)ack_kind, 0, CONF_TO));
        conf_release(c, m);
    }
}

/* Keeps pulls open for at least window_ms (each ending with NO_MESSAGES is
 * restarted; the last one is drained to its end so no delivery is left in
 * flight) and records every delivery. Returns the number of deliveries. */
static int conf_collect(parti_transport *c, const char *stream, const char *durable, uint32_t window_ms, int ack_kind,
                        uint64_t origin, conf_delivery *out, int max) {
    parti_fetch_opts o = conf_opts(16, 500, 0);
    uint64_t start = conf_now(c);
    int n = 0, rounds = 0;
    do {
        parti_err end = PARTI_ERR_OK;
        uint64_t before = conf_now(c);
        n += conf_pull_once(c, stream, durable, &o, ack_kind, origin, out + (n < max ? n : max),
                            n < max ? max - n : 0, &end);
        CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
        /* a pull that ends at once (a broken expiry) must not spin forever */
        if (conf_now(c) == before) env->advance(env, CONF_STEP);
        cr_assert_lt(++rounds, 100000, "pulls keep ending without time passing");
    } while (conf_now(c) - start < window_ms);
    return n;
}

typedef struct conf_cinfo_probe {
    parti_transport *c;
    const char *stream, *durable;
    uint64_t ack_floor, num_ack_pending;
    parti_err last;
    parti_consumer_info seen;
} conf_cinfo_probe;

/* the consumer's ack floor reached ack_floor and num_ack_pending is as wanted */
static int conf_cinfo_acked(void *arg) {
    conf_cinfo_probe *p = (conf_cinfo_probe *)arg;
    parti_consumer_info ci;
    int ok;
    memset(&ci, 0, sizeof ci);
    p->last = p->c->vt->consumer_info(p->c->self, p->stream, p->durable, &ci, CONF_TO);
    ok = p->last == PARTI_ERR_OK && ci.ack_floor_stream_seq >= p->ack_floor &&
         ci.num_ack_pending == p->num_ack_pending;
    p->seen.ack_floor_stream_seq = ci.ack_floor_stream_seq;
    p->seen.num_ack_pending = ci.num_ack_pending;
    p->seen.delivered_stream_seq = ci.delivered_stream_seq;
    parti_consumer_info_free(&ci);
    return ok;
}

/* Acks travel asynchronously on a real server: wait until the consumer shows them. */
static void conf_wait_acked(parti_transport *c, const char *stream, const char *durable, uint64_t ack_floor,
                            uint64_t num_ack_pending) {
    conf_cinfo_probe p;
    memset(&p, 0, sizeof p);
    p.c = c;
    p.stream = stream;
    p.durable = durable;
    p.ack_floor = ack_floor;
    p.num_ack_pending = num_ack_pending;
    cr_assert(conf_wait_until(env, 5000, CONF_STEP, conf_cinfo_acked, &p),
              "consumer %s: ack floor %llu / ack pending %llu (%s), expected >= %llu / %llu", durable,
              (unsigned long long)p.seen.ack_floor_stream_seq, (unsigned long long)p.seen.num_ack_pending,
              parti_error_name(p.last), (unsigned long long)ack_floor, (unsigned long long)num_ack_pending);
}

/* ======================================================================== */
/* clock                                                                     */
/* ======================================================================== */

Test(clock, now_ms_moves_forward_as_time_passes) {
    parti_transport *a = conf_connect();
    uint64_t t1 = conf_now(a), t2, t3;
    env->advance(env, 100);
    t2 = conf_now(a);
    t3 = conf_now(a);
    cr_assert_geq(t2, t1 + 99, "100 ms passed but now_ms moved %llu ms", (unsigned long long)(t2 - t1));
    cr_assert_geq(t3, t2, "now_ms went backwards");
}

Test(clock, sleep_ms_lets_that_much_time_pass) {
    parti_transport *a = conf_connect();
    uint64_t t1, t2;
    cr_assert(a->vt->sleep_ms != NULL, "the transport has no sleep_ms: poll loops would spin");
    t1 = conf_now(a);
    a->vt->sleep_ms(a->self, 120);
    t2 = conf_now(a);
    cr_assert_geq(t2, t1 + 119, "slept 120 ms but now_ms moved %llu ms", (unsigned long long)(t2 - t1));
    cr_assert_lt(t2, t1 + 2000, "slept 120 ms but now_ms moved %llu ms", (unsigned long long)(t2 - t1));
    a->vt->sleep_ms(a->self, 0); /* returns at once */
    cr_assert_lt(conf_now(a), t2 + 1000);
}

Test(clock, connected_says_so_while_connected) {
    parti_transport *a = conf_connect();
    cr_assert(a->vt->connected != NULL);
    cr_assert_eq(a->vt->connected(a->self), 1);
}

Test(clock, random_gives_varying_64_bit_values) {
    parti_transport *a = conf_connect();
    uint64_t v[16], all_or = 0;
    int i, j;
    for (i = 0; i < 16; i++) {
        v[i] = a->vt->random(a->self);
        all_or |= v[i];
        for (j = 0; j < i; j++) cr_assert_neq(v[i], v[j], "random repeated a value within 16 draws");
    }
    cr_assert_neq(all_or >> 32, 0, "random never sets the upper 32 bits");
}

/* ======================================================================== */
/* stream                                                                    */
/* ======================================================================== */

Test(stream, create_with_wildcard_subjects_and_read_info) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    conf_stream(a, "ORDERS", LIST("orders.>", "audit.*"));
    si = conf_stream_info(a, "ORDERS");
    cr_assert_str_eq(si.name, "ORDERS");
    cr_assert_eq(si.subject_count, 2);
    cr_assert(conf_has(si.subjects, si.subject_count, "orders.>"));
    cr_assert(conf_has(si.subjects, si.subject_count, "audit.*"));
    cr_assert_eq(si.memory_storage, conf_memory());
    cr_assert_eq(si.duplicate_window_ms, 120000, "default duplicate window is 2 min, got %llu",
                 (unsigned long long)si.duplicate_window_ms);
    cr_assert_eq(si.messages, 0);
    cr_assert_eq(si.last_seq, 0);
    parti_stream_info_free(&si);
}

Test(stream, info_counts_messages_captured_by_wildcards) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    parti_pub_ack pa;
    conf_stream(a, "ORDERS", LIST("orders.>", "audit.*"));
    cr_assert_eq(conf_pub(a, "orders.eu", "1"), 1);
    cr_assert_eq(conf_pub(a, "orders.us.east.7", "2"), 2);
    cr_assert_eq(conf_pub(a, "audit.login", "3"), 3);
    /* "*" is exactly one token: audit.a.b is not captured */
    CONF_EXPECT(a->vt->publish(a->self, "audit.a.b", NULL, 0, "x", 1, &pa, CONF_TO), PARTI_ERR_NO_RESPONDERS);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 3);
    cr_assert_eq(si.first_seq, 1);
    cr_assert_eq(si.last_seq, 3);
    parti_stream_info_free(&si);
}

Test(stream, create_again_with_the_same_config_keeps_the_stream) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    conf_orders(a);
    conf_pub(a, "orders.a", "kept");
    conf_orders(a);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 1, "re-creating an identical stream must not reset it");
    cr_assert_eq(si.last_seq, 1);
    parti_stream_info_free(&si);
}

Test(stream, create_again_with_other_subjects_is_already_exists) {
    parti_transport *a = conf_connect();
    parti_stream_config sc;
    parti_stream_info si;
    conf_orders(a);
    memset(&sc, 0, sizeof sc);
    sc.name = "ORDERS";
    sc.subjects = SUBJ("billing.>");
    sc.subject_count = 1;
    sc.memory_storage = 1;
    CONF_EXPECT(a->vt->stream_create(a->self, &sc, CONF_TO), PARTI_ERR_ALREADY_EXISTS);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.subject_count, 1);
    cr_assert_str_eq(si.subjects[0], "orders.>", "the existing stream's subjects must stay");
    parti_stream_info_free(&si);
}

Test(stream, subjects_overlapping_another_stream_are_refused) {
    parti_transport *a = conf_connect();
    parti_stream_config sc;
    parti_stream_info si;
    conf_orders(a);
    memset(&sc, 0, sizeof sc);
    sc.name = "EU";
    sc.subjects = SUBJ("orders.eu.*");
    sc.subject_count = 1;
    sc.memory_storage = 1;
    CONF_EXPECT_INVALID_INPUT(a->vt->stream_create(a->self, &sc, CONF_TO));
    memset(&si, 0, sizeof si);
    CONF_EXPECT(a->vt->stream_info(a->self, "EU", &si, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
}

Test(stream, invalid_subject_is_refused) {
    parti_transport *a = conf_connect();
    parti_stream_config sc;
    static const char *const bad[] = {"orders..x", "", "orders.>.x", "orders x", "orders.a*"};
    size_t i;
    memset(&sc, 0, sizeof sc);
    sc.name = "BAD";
    sc.subject_count = 1;
    sc.memory_storage = 1;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        parti_stream_info si;
        sc.subjects = &bad[i];
        CONF_EXPECT_INVALID_INPUT(a->vt->stream_create(a->self, &sc, CONF_TO));
        memset(&si, 0, sizeof si);
        CONF_EXPECT(a->vt->stream_info(a->self, "BAD", &si, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
    }
}

Test(stream, delete_removes_the_stream_and_its_messages) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    parti_pub_ack pa;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_pub(a, "orders.b", "y");
    CONF_OK(a->vt->stream_delete(a->self, "ORDERS", CONF_TO));
    memset(&si, 0, sizeof si);
    CONF_EXPECT(a->vt->stream_info(a->self, "ORDERS", &si, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", NULL, 0, "z", 1, &pa, CONF_TO), PARTI_ERR_NO_RESPONDERS);
    conf_orders(a);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 0, "a re-created stream starts empty");
    parti_stream_info_free(&si);
}

Test(stream, unknown_stream_is_stream_not_found) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    memset(&si, 0, sizeof si);
    CONF_EXPECT(a->vt->stream_info(a->self, "NOPE", &si, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
    CONF_EXPECT(a->vt->stream_delete(a->self, "NOPE", CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
}

Test(stream, max_msgs_discards_the_oldest) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    conf_stream_full(a, "CAPPED", LIST("capped.>"), 1, 0, 2);
    conf_pub(a, "capped.a", "1");
    conf_pub(a, "capped.a", "2");
    conf_pub(a, "capped.a", "3");
    si = conf_stream_info(a, "CAPPED");
    cr_assert_eq(si.messages, 2);
    cr_assert_eq(si.first_seq, 2);
    cr_assert_eq(si.last_seq, 3);
    parti_stream_info_free(&si);
}

Test(stream, created_ns_is_set_and_changes_when_the_stream_is_recreated) {
    parti_transport *a = conf_connect();
    parti_stream_info si;
    uint64_t first;
    conf_orders(a);
    si = conf_stream_info(a, "ORDERS");
    first = si.created_ns;
    parti_stream_info_free(&si);
    cr_assert_neq(first, 0, "stream_info must give the creation time");
    conf_orders(a); /* the same config again: the same stream */
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.created_ns, first, "an idempotent create keeps the stream (and its creation time)");
    parti_stream_info_free(&si);
    CONF_OK(a->vt->stream_delete(a->self, "ORDERS", CONF_TO));
    conf_orders(a);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_neq(si.created_ns, 0);
    cr_assert_neq(si.created_ns, first, "a stream deleted and created again must have another creation time");
    parti_stream_info_free(&si);
}

/* ---- direct reads: stream_get_next --------------------------------------------- */

Test(stream, get_next_finds_the_first_match_at_or_after_from_seq) {
    parti_transport *a = conf_connect();
    parti_msg *m;
    uint64_t before;
    conf_orders(a);
    cr_assert_eq(conf_pub(a, "orders.eu.1", "a"), 1);
    cr_assert_eq(conf_pub(a, "orders.us.1", "b"), 2);
    cr_assert_eq(conf_pub(a, "orders.eu.2", "c"), 3);
    cr_assert_eq(conf_pub(a, "orders.us.1", "d"), 4);
    cr_assert_eq(conf_pub(a, "orders.eu.1", "e"), 5);
    /* a literal subject: the next one at or after from_seq, skipping the others */
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.eu.1", 1), 1);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.eu.1", 2), 5);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.us.1", 3), 4);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.eu.1", 5), 5, "from_seq itself is included");
    /* wildcards */
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.eu.*", 2), 3);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.us.>", 3), 4);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.>", 2), 2);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "*.*.2", 1), 3);
    /* nothing more: past the end, past the last match, a subject never written */
    CONF_EXPECT(conf_get_next(a, "ORDERS", "orders.eu.1", 6, &m), PARTI_ERR_NO_MESSAGES);
    CONF_EXPECT(conf_get_next(a, "ORDERS", "orders.>", 6, &m), PARTI_ERR_NO_MESSAGES);
    CONF_EXPECT(conf_get_next(a, "ORDERS", "orders.us.1", 5, &m), PARTI_ERR_NO_MESSAGES);
    CONF_EXPECT(conf_get_next(a, "ORDERS", "orders.ca.1", 1, &m), PARTI_ERR_NO_MESSAGES);
    cr_assert_null(m);
    /* what a direct read gives: a first delivery outside any consumer */
    before = conf_now(a);
    CONF_OK(conf_get_next(a, "ORDERS", "orders.us.*", 3, &m));
    cr_assert_str_eq(m->subject, "orders.us.1");
    cr_assert_eq(m->stream_seq, 4);
    cr_assert_eq(m->len, 1);
    cr_assert(memcmp(m->data, "d", 1) == 0);
    cr_assert_eq(m->consumer_seq, 0);
    cr_assert_eq(m->delivery_count, 1);
    cr_assert_gt(m->timestamp_ms, 0, "the stored time must be filled");
    cr_assert_leq(m->timestamp_ms, before + 1, "stored at %llu, read at %llu", (unsigned long long)m->timestamp_ms,
                  (unsigned long long)before);
    /* it is not a delivery: no consumer takes an ack for it */
    CONF_EXPECT(a->vt->ack(a->self, m, PARTI_ACK_ACK, 0, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    conf_release(a, m);
}

Test(stream, get_next_round_trips_headers_and_data) {
    parti_transport *a = conf_connect();
    parti_header h[3];
    parti_pub_ack pa;
    parti_msg *m;
    static const char bin[] = {'a', 0, (char)0xff, '\r', '\n', '=', 'z'};
    int i, j;
    h[0].name = "X-Trace";
    h[0].value = "abc-123";
    h[1].name = "X-Reason";
    h[1].value = "two words";
    h[2].name = "Nats-Msg-Id";
    h[2].value = "id-1";
    conf_orders(a);
    CONF_OK(a->vt->publish(a->self, "orders.eu.7", h, 3, bin, sizeof bin, &pa, CONF_TO));
    CONF_OK(a->vt->publish(a->self, "orders.eu.8", NULL, 0, "", 0, &pa, CONF_TO));
    /* every length modulo 3, so base64 ends in every way */
    for (i = 1; i <= 4; i++) CONF_OK(a->vt->publish(a->self, "orders.len", NULL, 0, "wxyz", (size_t)i, &pa, CONF_TO));
    CONF_OK(conf_get_next(a, "ORDERS", "orders.eu.7", 1, &m));
    cr_assert_eq(m->stream_seq, 1);
    cr_assert_eq(m->len, sizeof bin);
    cr_assert(memcmp(m->data, bin, sizeof bin) == 0, "binary data must round-trip");
    cr_assert_str_eq(parti_msg_header(m, "X-Trace"), "abc-123");
    cr_assert_str_eq(parti_msg_header(m, "X-Reason"), "two words");
    cr_assert_str_eq(parti_msg_header(m, "Nats-Msg-Id"), "id-1");
    cr_assert_null(parti_msg_header(m, "X-Missing"));
    conf_release(a, m);
    CONF_OK(conf_get_next(a, "ORDERS", "orders.eu.*", 2, &m));
    cr_assert_eq(m->stream_seq, 2);
    cr_assert_str_eq(m->subject, "orders.eu.8");
    cr_assert_eq(m->len, 0);
    cr_assert_eq(m->header_count, 0);
    conf_release(a, m);
    for (i = 1, j = 3; i <= 4; i++, j++) {
        CONF_OK(conf_get_next(a, "ORDERS", "orders.len", (uint64_t)j, &m));
        cr_assert_eq(m->stream_seq, (uint64_t)j);
        cr_assert_eq(m->len, (size_t)i);
        cr_assert(memcmp(m->data, "wxyz", (size_t)i) == 0);
        conf_release(a, m);
    }
}

Test(stream, get_next_of_a_missing_stream_is_stream_not_found) {
    parti_transport *a = conf_connect();
    parti_msg *m;
    CONF_EXPECT(conf_get_next(a, "NOPE", "orders.>", 1, &m), PARTI_ERR_STREAM_NOT_FOUND);
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    CONF_OK(a->vt->stream_delete(a->self, "ORDERS", CONF_TO));
    CONF_EXPECT(conf_get_next(a, "ORDERS", "orders.a", 1, &m), PARTI_ERR_STREAM_NOT_FOUND);
    cr_assert_null(m);
}

static const char *const conf_bad_names[] = {"", "a.b", "a b", "a*", "a>", "a\tb", "a/b", "\xc3\xa9t\xc3\xa9",
                                             "x12345678901234567890123456789012345678901234567890123456789012345"};
#define CONF_N_BAD_NAMES ((int)(sizeof conf_bad_names / sizeof *conf_bad_names))

Test(stream, invalid_names_are_invalid_name) {
    parti_transport *a = conf_connect();
    parti_stream_config sc;
    int i;
    memset(&sc, 0, sizeof sc);
    sc.subjects = SUBJ("orders.>");
    sc.subject_count = 1;
    sc.memory_storage = 1;
    for (i = 0; i < CONF_N_BAD_NAMES; i++) {
        parti_stream_info si;
        memset(&si, 0, sizeof si);
        sc.name = conf_bad_names[i];
        CONF_EXPECT(a->vt->stream_create(a->self, &sc, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->stream_info(a->self, conf_bad_names[i], &si, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->stream_delete(a->self, conf_bad_names[i], CONF_TO), PARTI_ERR_INVALID_NAME);
    }
}

/* ======================================================================== */
/* publish                                                                   */
/* ======================================================================== */

Test(publish, stream_sequence_increases_by_one) {
    parti_transport *a = conf_connect();
    conf_orders(a);
    cr_assert_eq(conf_pub(a, "orders.a", "1"), 1);
    cr_assert_eq(conf_pub(a, "orders.b", "2"), 2);
    cr_assert_eq(conf_pub(a, "orders.a", "3"), 3);
}

Test(publish, subject_no_stream_captures_is_no_responders) {
    parti_transport *a = conf_connect();
    parti_pub_ack pa;
    parti_stream_info si;
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", NULL, 0, "x", 1, &pa, CONF_TO), PARTI_ERR_NO_RESPONDERS);
    conf_orders(a);
    CONF_EXPECT(a->vt->publish(a->self, "billing.a", NULL, 0, "x", 1, &pa, CONF_TO), PARTI_ERR_NO_RESPONDERS);
    CONF_EXPECT(a->vt->publish(a->self, "orders", NULL, 0, "x", 1, &pa, CONF_TO), PARTI_ERR_NO_RESPONDERS);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 0);
    parti_stream_info_free(&si);
}

Test(publish, headers_and_payload_round_trip_into_fetched_message) {
    parti_transport *a = conf_connect();
    parti_header h[2];
    parti_pub_ack pa;
    parti_msg *m;
    h[0].name = "X-Trace";
    h[0].value = "abc-123";
    h[1].name = "X-Reason";
    h[1].value = "two words";
    conf_orders(a);
    CONF_OK(a->vt->publish(a->self, "orders.eu.7", h, 2, "payload", 7, &pa, CONF_TO));
    conf_consumer(a, "ORDERS", "w1", LIST("orders.>"), 30000);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    cr_assert_str_eq(m->subject, "orders.eu.7");
    cr_assert_eq(m->len, 7);
    cr_assert(memcmp(m->data, "payload", 7) == 0);
    cr_assert_eq(m->stream_seq, pa.stream_seq);
    cr_assert_str_eq(parti_msg_header(m, "X-Trace"), "abc-123");
    cr_assert_str_eq(parti_msg_header(m, "X-Reason"), "two words");
    cr_assert_null(parti_msg_header(m, "X-Missing"));
    conf_release(a, m);
}

Test(publish, empty_payload_is_stored_and_delivered) {
    parti_transport *a = conf_connect();
    parti_pub_ack pa;
    parti_msg *m;
    conf_orders(a);
    CONF_OK(a->vt->publish(a->self, "orders.a", NULL, 0, "", 0, &pa, CONF_TO));
    cr_assert_eq(pa.stream_seq, 1);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    cr_assert_eq(m->len, 0);
    cr_assert_eq(m->stream_seq, 1);
    conf_release(a, m);
}

Test(publish, msg_id_within_the_window_is_a_duplicate) {
    parti_transport *a = conf_connect();
    parti_pub_ack first, again;
    parti_stream_info si;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(8, 1000, 0);
    conf_orders(a);
    CONF_OK(conf_pub_id(a, "orders.a", "id-1", "one", &first));
    cr_assert_eq(first.duplicate, 0);
    CONF_OK(conf_pub_id(a, "orders.a", "id-1", "one", &again));
    cr_assert_eq(again.duplicate, 1, "same Nats-Msg-Id within the window must be reported as duplicate");
    cr_assert_eq(again.stream_seq, first.stream_seq, "a duplicate reports the original sequence");
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 1, "a duplicate must not be stored");
    parti_stream_info_free(&si);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.>"), 30000);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 1);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
}

Test(publish, different_msg_ids_are_both_stored) {
    parti_transport *a = conf_connect();
    parti_pub_ack p1, p2;
    conf_orders(a);
    CONF_OK(conf_pub_id(a, "orders.a", "id-1", "one", &p1));
    CONF_OK(conf_pub_id(a, "orders.a", "id-2", "one", &p2));
    cr_assert_eq(p2.duplicate, 0);
    cr_assert_eq(p2.stream_seq, p1.stream_seq + 1);
}

Test(publish, msg_id_after_the_window_is_stored_again) {
    parti_transport *a = conf_connect();
    parti_pub_ack p1, p2;
    conf_stream_full(a, "ORDERS", LIST("orders.>"), 1, 1000, 0);
    CONF_OK(conf_pub_id(a, "orders.a", "id-1", "one", &p1));
    conf_sleep(a, 3000);
    CONF_OK(conf_pub_id(a, "orders.a", "id-1", "one", &p2));
    cr_assert_eq(p2.duplicate, 0, "the duplicate window (1 s) has passed");
    cr_assert_eq(p2.stream_seq, p1.stream_seq + 1);
}

Test(publish, invalid_subject_is_refused) {
    parti_transport *a = conf_connect();
    static const char *const bad[] = {"orders..a", "orders.*", "orders.>", "", "orders a", ".orders"};
    parti_stream_info si;
    parti_pub_ack pa;
    size_t i;
    conf_orders(a);
    for (i = 0; i < sizeof bad / sizeof *bad; i++)
        CONF_EXPECT_INVALID_INPUT(a->vt->publish(a->self, bad[i], NULL, 0, "x", 1, &pa, CONF_TO));
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 0);
    parti_stream_info_free(&si);
}

/* ======================================================================== */
/* kv                                                                        */
/* ======================================================================== */

Test(kv, open_creates_the_bucket_and_reopen_keeps_its_data) {
    parti_transport *a = conf_connect();
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "v1");
    conf_kv_open(a, "cfg");
    conf_expect_value(a, "cfg", "k", "v1");
}

Test(kv, create_if_absent_refuses_a_live_key) {
    parti_transport *a = conf_connect();
    uint64_t r1, r2;
    conf_kv_open(a, "ids");
    CONF_OK(conf_create(a, "ids", "worker-0", "alice", &r1));
    cr_assert_gt(r1, 0);
    CONF_EXPECT(conf_create(a, "ids", "worker-0", "bob", &r2), PARTI_ERR_KEY_EXISTS);
    cr_assert_eq(conf_expect_value(a, "ids", "worker-0", "alice"), r1);
}

Test(kv, create_succeeds_again_after_delete) {
    parti_transport *a = conf_connect();
    uint64_t r1, r2;
    conf_kv_open(a, "ids");
    CONF_OK(conf_create(a, "ids", "worker-0", "alice", &r1));
    CONF_OK(a->vt->kv_delete(a->self, "ids", "worker-0", CONF_TO));
    CONF_OK(conf_create(a, "ids", "worker-0", "bob", &r2));
    cr_assert_gt(r2, r1);
    cr_assert_eq(conf_expect_value(a, "ids", "worker-0", "bob"), r2);
}

Test(kv, get_returns_the_latest_value_and_revision) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t r2;
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "first");
    r2 = conf_put(a, "cfg", "k", "v2");
    CONF_OK(conf_get(a, "cfg", "k", 0, &e));
    cr_assert_str_eq(e.key, "k");
    cr_assert_eq(e.len, 2);
    cr_assert_str_eq((const char *)e.value, "v2", "value is NUL-terminated");
    cr_assert_eq(e.revision, r2);
    cr_assert_eq(e.op, PARTI_KV_PUT);
    parti_kv_entry_free(&e);
}

Test(kv, get_by_revision_returns_that_version) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t r1, r2;
    conf_kv_open_full(a, "cfg", 5, 0, 0, 1);
    r1 = conf_put(a, "cfg", "k", "one");
    r2 = conf_put(a, "cfg", "k", "two");
    CONF_OK(conf_get(a, "cfg", "k", r1, &e));
    cr_assert_str_eq((const char *)e.value, "one");
    cr_assert_eq(e.revision, r1);
    parti_kv_entry_free(&e);
    CONF_OK(conf_get(a, "cfg", "k", r2, &e));
    cr_assert_str_eq((const char *)e.value, "two");
    cr_assert_eq(e.revision, r2);
    parti_kv_entry_free(&e);
}

Test(kv, get_by_revision_of_another_key_is_key_not_found) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t rb;
    conf_kv_open_full(a, "cfg", 5, 0, 0, 1);
    conf_put(a, "cfg", "a", "1");
    rb = conf_put(a, "cfg", "b", "2");
    CONF_EXPECT(conf_get(a, "cfg", "a", rb, &e), PARTI_ERR_KEY_NOT_FOUND);
    CONF_EXPECT(conf_get(a, "cfg", "a", rb + 100, &e), PARTI_ERR_KEY_NOT_FOUND);
}

Test(kv, get_of_a_missing_key_is_key_not_found) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    conf_kv_open(a, "cfg");
    CONF_EXPECT(conf_get(a, "cfg", "never", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
    conf_put(a, "cfg", "other", "x");
    CONF_EXPECT(conf_get(a, "cfg", "never", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
}

Test(kv, update_with_the_current_revision_succeeds) {
    parti_transport *a = conf_connect();
    uint64_t r1, r2;
    conf_kv_open(a, "ids");
    CONF_OK(conf_create(a, "ids", "worker-0", "lease-1", &r1));
    CONF_OK(conf_update(a, "ids", "worker-0", "lease-2", r1, &r2));
    cr_assert_gt(r2, r1);
    cr_assert_eq(conf_expect_value(a, "ids", "worker-0", "lease-2"), r2);
}

Test(kv, update_with_a_stale_revision_is_wrong_revision) {
    parti_transport *a = conf_connect();
    uint64_t r1, r2, r3;
    conf_kv_open(a, "ids");
    CONF_OK(conf_create(a, "ids", "worker-0", "lease-1", &r1));
    CONF_OK(conf_update(a, "ids", "worker-0", "lease-2", r1, &r2));
    CONF_EXPECT(conf_update(a, "ids", "worker-0", "stolen", r1, &r3), PARTI_ERR_WRONG_REVISION);
    cr_assert_eq(conf_expect_value(a, "ids", "worker-0", "lease-2"), r2, "a failed CAS must not write");
}

Test(kv, update_of_a_missing_key_is_wrong_revision) {
    parti_transport *a = conf_connect();
    uint64_t r;
    parti_kv_entry e;
    conf_kv_open(a, "ids");
    conf_put(a, "ids", "other", "x");
    conf_put(a, "ids", "other", "y");
    CONF_EXPECT(conf_update(a, "ids", "worker-9", "x", 2, &r), PARTI_ERR_WRONG_REVISION);
    CONF_EXPECT(conf_get(a, "ids", "worker-9", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
}

Test(kv, put_overwrites_and_returns_a_new_revision) {
    parti_transport *a = conf_connect();
    uint64_t r1, r2;
    conf_kv_open(a, "cfg");
    r1 = conf_put(a, "cfg", "k", "one");
    r2 = conf_put(a, "cfg", "k", "two");
    cr_assert_gt(r2, r1);
    cr_assert_eq(conf_expect_value(a, "cfg", "k", "two"), r2);
}

Test(kv, delete_makes_get_key_not_found) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "v");
    conf_put(a, "cfg", "other", "w");
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "k", CONF_TO));
    CONF_EXPECT(conf_get(a, "cfg", "k", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
    conf_expect_value(a, "cfg", "other", "w");
}

Test(kv, delete_if_deletes_only_at_the_expected_revision) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t r1, r2;
    cr_assert(a->vt->kv_delete_if != NULL);
    conf_kv_open(a, "cfg");
    r1 = conf_put(a, "cfg", "k", "one");
    r2 = conf_put(a, "cfg", "k", "two");
    /* a stale revision (another process wrote since): nothing is deleted */
    CONF_EXPECT(a->vt->kv_delete_if(a->self, "cfg", "k", r1, CONF_TO), PARTI_ERR_WRONG_REVISION);
    cr_assert_eq(conf_expect_value(a, "cfg", "k", "two"), r2);
    /* the current one: deleted, and watchers and get see it gone */
    CONF_OK(a->vt->kv_delete_if(a->self, "cfg", "k", r2, CONF_TO));
    CONF_EXPECT(conf_get(a, "cfg", "k", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
    /* and a create succeeds over the delete marker */
    CONF_OK(a->vt->kv_create(a->self, "cfg", "k", "three", 5, &r1, CONF_TO));
    CONF_EXPECT(a->vt->kv_delete_if(a->self, "cfg", "k", r2, CONF_TO), PARTI_ERR_WRONG_REVISION);
    conf_expect_value(a, "cfg", "k", "three");
}

Test(kv, keys_are_sorted_and_exclude_deleted_keys) {
    parti_transport *a = conf_connect();
    char **keys = NULL;
    int n = 0;
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "b", "1");
    conf_put(a, "cfg", "x", "1");
    conf_put(a, "cfg", "c.1", "1");
    conf_put(a, "cfg", "a", "1");
    conf_put(a, "cfg", "c", "1");
    conf_put(a, "cfg", "a", "2");
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "x", CONF_TO));
    CONF_OK(a->vt->kv_keys(a->self, "cfg", &keys, &n, CONF_TO));
    cr_assert_eq(n, 4, "expected a b c c.1, got %d keys", n);
    cr_assert_str_eq(keys[0], "a");
    cr_assert_str_eq(keys[1], "b");
    cr_assert_str_eq(keys[2], "c");
    cr_assert_str_eq(keys[3], "c.1");
    parti_strings_free(keys, n);
}

Test(kv, keys_of_an_empty_bucket_is_an_empty_list) {
    parti_transport *a = conf_connect();
    char **keys = NULL;
    int n = -1;
    conf_kv_open(a, "cfg");
    CONF_OK(a->vt->kv_keys(a->self, "cfg", &keys, &n, CONF_TO));
    cr_assert_eq(n, 0);
    parti_strings_free(keys, n);
    conf_put(a, "cfg", "k", "v");
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "k", CONF_TO));
    keys = NULL;
    n = -1;
    CONF_OK(a->vt->kv_keys(a->self, "cfg", &keys, &n, CONF_TO));
    cr_assert_eq(n, 0, "only deleted keys: the list is empty");
    parti_strings_free(keys, n);
}

Test(kv, revisions_strictly_increase_across_keys) {
    parti_transport *a = conf_connect();
    uint64_t prev = 0, r = 0, rc;
    int i;
    conf_kv_open(a, "cfg");
    for (i = 0; i < 4; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        CONF_OK(conf_create(a, "cfg", key, "c", &r));
        cr_assert_gt(r, prev, "revision %llu after %llu", (unsigned long long)r, (unsigned long long)prev);
        prev = rc = r;
        r = conf_put(a, "cfg", "shared", "p");
        cr_assert_gt(r, prev);
        prev = r;
        CONF_OK(conf_update(a, "cfg", key, "u", rc, &r));
        cr_assert_gt(r, prev);
        prev = r;
    }
}

Test(kv, unknown_bucket_is_bucket_not_found) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    parti_kv_watcher *w = NULL;
    uint64_t r;
    char **keys = NULL;
    int n = 0;
    conf_kv_open(a, "cfg");
    CONF_EXPECT(conf_get(a, "nope", "k", 0, &e), PARTI_ERR_BUCKET_NOT_FOUND);
    CONF_EXPECT(a->vt->kv_put(a->self, "nope", "k", "v", 1, &r, CONF_TO), PARTI_ERR_BUCKET_NOT_FOUND);
    CONF_EXPECT(conf_create(a, "nope", "k", "v", &r), PARTI_ERR_BUCKET_NOT_FOUND);
    CONF_EXPECT(conf_update(a, "nope", "k", "v", 1, &r), PARTI_ERR_BUCKET_NOT_FOUND);
    CONF_EXPECT(a->vt->kv_delete(a->self, "nope", "k", CONF_TO), PARTI_ERR_BUCKET_NOT_FOUND);
    CONF_EXPECT(a->vt->kv_keys(a->self, "nope", &keys, &n, CONF_TO), PARTI_ERR_BUCKET_NOT_FOUND);
    CONF_EXPECT(a->vt->kv_watch(a->self, "nope", "", &w, CONF_TO), PARTI_ERR_BUCKET_NOT_FOUND);
}

static const char *const conf_bad_keys[] = {"a b", "", ".a", "a..b", "a*", "a.", "a>", "a\nb", "k\xc3\xa9"};
#define CONF_N_BAD_KEYS ((int)(sizeof conf_bad_keys / sizeof *conf_bad_keys))

Test(kv, bad_keys_are_invalid_name) {
    parti_transport *a = conf_connect();
    char **keys = NULL;
    int i, n = 0;
    conf_kv_open(a, "cfg");
    for (i = 0; i < CONF_N_BAD_KEYS; i++) {
        const char *k = conf_bad_keys[i];
        parti_kv_entry e;
        uint64_t r;
        CONF_EXPECT(conf_create(a, "cfg", k, "v", &r), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(conf_update(a, "cfg", k, "v", 1, &r), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->kv_put(a->self, "cfg", k, "v", 1, &r, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(conf_get(a, "cfg", k, 0, &e), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->kv_delete(a->self, "cfg", k, CONF_TO), PARTI_ERR_INVALID_NAME);
    }
    CONF_OK(a->vt->kv_keys(a->self, "cfg", &keys, &n, CONF_TO));
    cr_assert_eq(n, 0, "a refused key must not be stored");
    parti_strings_free(keys, n);
}

Test(kv, value_larger_than_max_value_size_is_refused) {
    parti_transport *a = conf_connect();
    char big[65];
    parti_kv_entry e;
    uint64_t r, r0;
    memset(big, 'x', sizeof big);
    conf_kv_open_full(a, "cfg", 1, 0, 64, 1);
    CONF_EXPECT(a->vt->kv_put(a->self, "cfg", "big", big, 65, &r, CONF_TO), PARTI_ERR_VALUE_TOO_LARGE);
    CONF_EXPECT(a->vt->kv_create(a->self, "cfg", "big", big, 65, &r, CONF_TO), PARTI_ERR_VALUE_TOO_LARGE);
    CONF_EXPECT(conf_get(a, "cfg", "big", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
    r0 = conf_put(a, "cfg", "small", "fits");
    CONF_EXPECT(a->vt->kv_update(a->self, "cfg", "small", big, 65, r0, &r, CONF_TO), PARTI_ERR_VALUE_TOO_LARGE);
    cr_assert_eq(conf_expect_value(a, "cfg", "small", "fits"), r0);
}

Test(kv, binary_values_round_trip) {
    parti_transport *a = conf_connect();
    static const uint8_t v[5] = {'a', 0, 0xff, '\n', 'z'};
    parti_kv_entry e;
    uint64_t r;
    conf_kv_open(a, "cfg");
    CONF_OK(a->vt->kv_put(a->self, "cfg", "bin", v, sizeof v, &r, CONF_TO));
    CONF_OK(conf_get(a, "cfg", "bin", 0, &e));
    cr_assert_eq(e.len, 5);
    cr_assert(memcmp(e.value, v, 5) == 0);
    cr_assert_eq(e.value[5], 0, "value is NUL-terminated after len");
    parti_kv_entry_free(&e);
}

Test(kv, empty_value_is_a_live_key) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t r, r2;
    conf_kv_open(a, "cfg");
    CONF_OK(a->vt->kv_put(a->self, "cfg", "empty", "", 0, &r, CONF_TO));
    CONF_OK(conf_get(a, "cfg", "empty", 0, &e));
    cr_assert_eq(e.len, 0);
    cr_assert_eq(e.op, PARTI_KV_PUT);
    cr_assert_eq(e.revision, r);
    parti_kv_entry_free(&e);
    cr_assert(conf_keys_contain(a, "cfg", "empty"));
    CONF_EXPECT(conf_create(a, "cfg", "empty", "x", &r2), PARTI_ERR_KEY_EXISTS);
}

Test(kv, history_keeps_the_last_n_values) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t r[4];
    int i;
    conf_kv_open_full(a, "cfg", 3, 0, 0, 1);
    r[0] = conf_put(a, "cfg", "k", "v0");
    r[1] = conf_put(a, "cfg", "k", "v1");
    r[2] = conf_put(a, "cfg", "k", "v2");
    r[3] = conf_put(a, "cfg", "k", "v3");
    CONF_EXPECT(conf_get(a, "cfg", "k", r[0], &e), PARTI_ERR_KEY_NOT_FOUND);
    for (i = 1; i < 4; i++) {
        char want[16];
        snprintf(want, sizeof want, "v%d", i);
        CONF_OK(conf_get(a, "cfg", "k", r[i], &e));
        cr_assert_str_eq((const char *)e.value, want);
        cr_assert_eq(e.revision, r[i]);
        parti_kv_entry_free(&e);
    }
}

Test(kv, default_history_keeps_only_the_latest_value) {
    parti_transport *a = conf_connect();
    parti_kv_entry e;
    uint64_t r1, r2;
    conf_kv_open_full(a, "cfg", 0, 0, 0, 1);
    r1 = conf_put(a, "cfg", "k", "old");
    r2 = conf_put(a, "cfg", "k", "new");
    CONF_EXPECT(conf_get(a, "cfg", "k", r1, &e), PARTI_ERR_KEY_NOT_FOUND);
    CONF_OK(conf_get(a, "cfg", "k", r2, &e));
    cr_assert_str_eq((const char *)e.value, "new");
    parti_kv_entry_free(&e);
}

Test(kv, cas_race_between_two_clients_has_exactly_one_winner) {
    parti_transport *a = conf_connect(), *b = conf_connect();
    parti_kv_entry ea, eb;
    parti_err ra, rb;
    uint64_t r0, wa, wb;
    conf_kv_open(a, "lead");
    r0 = conf_put(a, "lead", "leader", "none");
    CONF_OK(conf_get(a, "lead", "leader", 0, &ea));
    CONF_OK(conf_get(b, "lead", "leader", 0, &eb));
    cr_assert_eq(ea.revision, r0);
    cr_assert_eq(eb.revision, r0);
    ra = conf_update(a, "lead", "leader", "alice", ea.revision, &wa);
    rb = conf_update(b, "lead", "leader", "bob", eb.revision, &wb);
    parti_kv_entry_free(&ea);
    parti_kv_entry_free(&eb);
    cr_assert((ra == PARTI_ERR_OK) != (rb == PARTI_ERR_OK), "a: %s, b: %s: exactly one CAS must win",
              parti_error_name(ra), parti_error_name(rb));
    if (ra == PARTI_ERR_OK) {
        CONF_EXPECT(rb, PARTI_ERR_WRONG_REVISION);
        cr_assert_eq(conf_expect_value(b, "lead", "leader", "alice"), wa);
    } else {
        CONF_EXPECT(ra, PARTI_ERR_WRONG_REVISION);
        cr_assert_eq(conf_expect_value(a, "lead", "leader", "bob"), wb);
    }
}

Test(kv, create_race_between_two_clients_has_exactly_one_winner) {
    parti_transport *a = conf_connect(), *b = conf_connect();
    parti_err ra, rb;
    uint64_t wa, wb;
    conf_kv_open(a, "ids");
    conf_kv_open(b, "ids");
    ra = conf_create(a, "ids", "worker-0", "alice", &wa);
    rb = conf_create(b, "ids", "worker-0", "bob", &wb);
    cr_assert((ra == PARTI_ERR_OK) != (rb == PARTI_ERR_OK), "a: %s, b: %s: exactly one create must win",
              parti_error_name(ra), parti_error_name(rb));
    if (ra == PARTI_ERR_OK) {
        CONF_EXPECT(rb, PARTI_ERR_KEY_EXISTS);
        cr_assert_eq(conf_expect_value(b, "ids", "worker-0", "alice"), wa);
    } else {
        CONF_EXPECT(ra, PARTI_ERR_KEY_EXISTS);
        cr_assert_eq(conf_expect_value(a, "ids", "worker-0", "bob"), wb);
    }
}

/* ======================================================================== */
/* kv_ttl                                                                    */
/* ======================================================================== */

#define CONF_TTL 1000u

Test(kv_ttl, key_expires_after_the_bucket_ttl) {
    parti_transport *a = conf_connect();
    uint64_t t0, took;
    conf_kv_open_full(a, "members", 1, CONF_TTL, 0, 1);
    t0 = conf_now(a);
    conf_put(a, "members", "worker-0", "alive");
    conf_sleep(a, CONF_TTL / 2);
    conf_expect_value(a, "members", "worker-0", "alive");
    cr_assert(conf_keys_contain(a, "members", "worker-0"));
    conf_wait_kv_get(a, "members", "worker-0", PARTI_ERR_KEY_NOT_FOUND, CONF_TTL + 10000);
    took = conf_now(a) - t0;
    cr_assert_geq(took, CONF_TTL * 9 / 10, "expired after %llu ms, TTL is %u", (unsigned long long)took, CONF_TTL);
    cr_assert(!conf_keys_contain(a, "members", "worker-0"), "kv_keys must exclude an expired key");
}

Test(kv_ttl, a_write_refreshes_the_ttl) {
    parti_transport *a = conf_connect();
    conf_kv_open_full(a, "members", 1, CONF_TTL, 0, 1);
    conf_put(a, "members", "worker-0", "v1");
    conf_sleep(a, CONF_TTL * 6 / 10);
    conf_put(a, "members", "worker-0", "v2");
    conf_sleep(a, CONF_TTL * 6 / 10);
    /* 1.2 x TTL after the first write, 0.6 x TTL after the second */
    conf_expect_value(a, "members", "worker-0", "v2");
    conf_wait_kv_get(a, "members", "worker-0", PARTI_ERR_KEY_NOT_FOUND, CONF_TTL + 10000);
}

Test(kv_ttl, an_expired_key_can_be_created_again) {
    parti_transport *a = conf_connect();
    uint64_t r1, r2;
    conf_kv_open_full(a, "members", 1, CONF_TTL, 0, 1);
    CONF_OK(conf_create(a, "members", "worker-0", "first", &r1));
    conf_wait_kv_get(a, "members", "worker-0", PARTI_ERR_KEY_NOT_FOUND, CONF_TTL + 10000);
    CONF_OK(conf_create(a, "members", "worker-0", "second", &r2));
    cr_assert_gt(r2, r1);
    conf_expect_value(a, "members", "worker-0", "second");
}

Test(kv_ttl, watcher_sees_the_expiry_marker) {
    parti_transport *a, *b;
    parti_kv_watcher *w;
    parti_kv_entry e;
    uint64_t rput, t0;
    if (!conformance_env()->kv_expiry_markers)
        cr_skip_test("env %s cannot report TTL expiry to watchers (no subject delete markers)",
                     conformance_env()->name);
    a = conf_connect();
    b = conf_connect();
    conf_kv_open_full(a, "members", 1, CONF_TTL, 0, 1);
    w = conf_watch_start(b, "members", "");
    t0 = conf_now(a);
    rput = conf_put(a, "members", "worker-0", "alive");
    cr_assert_eq(conf_expect_event(b, w, PARTI_KV_PUT, "worker-0", "alive"), rput);
    CONF_OK(conf_watch_wait(b, w, &e, CONF_TTL + 10000));
    cr_assert_str_eq(e.key, "worker-0");
    cr_assert_eq(e.op, PARTI_KV_EXPIRED, "op %d, expected PARTI_KV_EXPIRED", (int)e.op);
    cr_assert_gt(e.revision, rput);
    parti_kv_entry_free(&e);
    cr_assert_geq(conf_now(b) - t0, CONF_TTL * 9 / 10, "the marker came before the TTL passed");
    CONF_EXPECT(conf_get(a, "members", "worker-0", 0, &e), PARTI_ERR_KEY_NOT_FOUND);
}

Test(kv_ttl, expire_key_hook_expires_a_key_early) {
    parti_transport *a;
    parti_kv_watcher *w;
    char **keys = NULL;
    int n = 0;
    if (!conformance_env()->expire_key) cr_skip_test("env %s cannot expire a key early", conformance_env()->name);
    a = conf_connect();
    conf_kv_open_full(a, "members", 1, 60000, 0, 1);
    conf_put(a, "members", "worker-0", "alive");
    conf_put(a, "members", "worker-1", "alive");
    w = conf_watch_start(a, "members", "");
    env->expire_key(env, "members", "worker-0");
    conf_wait_kv_get(a, "members", "worker-0", PARTI_ERR_KEY_NOT_FOUND, 5000);
    conf_expect_value(a, "members", "worker-1", "alive");
    CONF_OK(a->vt->kv_keys(a->self, "members", &keys, &n, CONF_TO));
    cr_assert_eq(n, 1);
    cr_assert_str_eq(keys[0], "worker-1");
    parti_strings_free(keys, n);
    if (env->kv_expiry_markers) conf_expect_event(a, w, PARTI_KV_EXPIRED, "worker-0", NULL);
    conf_expect_no_event(a, w, 300);
}

/* ======================================================================== */
/* kv_watch                                                                  */
/* ======================================================================== */

Test(kv_watch, sees_puts_and_deletes_in_revision_order) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w;
    uint64_t r1, r2, r4, rd, r;
    conf_kv_open(a, "cfg");
    w = conf_watch_start(a, "cfg", "");
    r1 = conf_put(a, "cfg", "a", "1");
    r2 = conf_put(a, "cfg", "b", "2");
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "a", CONF_TO));
    r4 = conf_put(a, "cfg", "a", "3");
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "a", "1"), r1);
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "b", "2"), r2);
    rd = conf_expect_event(a, w, PARTI_KV_DELETE, "a", NULL);
    cr_assert(rd > r2 && rd < r4, "delete revision %llu not between %llu and %llu", (unsigned long long)rd,
              (unsigned long long)r2, (unsigned long long)r4);
    r = conf_expect_event(a, w, PARTI_KV_PUT, "a", "3");
    cr_assert_eq(r, r4);
    conf_expect_no_event(a, w, 300);
}

/* A timed-out compare-and-swap may have been applied: the caller must read
 * back before concluding anything (retrying the same CAS then fails). */
Test(kv, a_timed_out_compare_and_swap_may_have_been_applied) {
    parti_transport *a;
    parti_kv_entry e;
    uint64_t r1, r2, t0;
    parti_err err;
    int applied = 0;
    if (!env->lose_reply) cr_skip_test("env %s cannot lose a reply", env->name);
    a = conf_connect();
    conf_kv_open(a, "ids");
    CONF_OK(conf_create(a, "ids", "worker-0", "v1", &r1));
    env->lose_reply(env, a, "kv_update", 1);
    err = a->vt->kv_update(a->self, "ids", "worker-0", "v2", 2, r1, &r2, 300);
    env->lose_reply(env, a, "kv_update", 0);
    CONF_EXPECT(err, PARTI_ERR_TIMEOUT);
    for (t0 = conf_now(a); !applied && conf_now(a) - t0 < 10000; env->advance(env, CONF_STEP)) {
        memset(&e, 0, sizeof e);
        if (a->vt->kv_get(a->self, "ids", "worker-0", 0, &e, 1000) != PARTI_ERR_OK) continue;
        applied = e.len == 2 && memcmp(e.value, "v2", 2) == 0;
        r2 = e.revision;
        parti_kv_entry_free(&e);
    }
    cr_assert(applied, "the timed-out update was not applied within 10 s");
    cr_assert_gt(r2, r1);
    /* the same CAS again fails: the revision moved on */
    CONF_EXPECT(a->vt->kv_update(a->self, "ids", "worker-0", "v2", 2, r1, NULL, 2000), PARTI_ERR_WRONG_REVISION);
}

Test(kv_watch, create_and_update_are_seen_as_puts) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w;
    uint64_t r1, r2;
    conf_kv_open(a, "ids");
    w = conf_watch_start(a, "ids", "");
    CONF_OK(conf_create(a, "ids", "worker-0", "c", &r1));
    CONF_OK(conf_update(a, "ids", "worker-0", "u", r1, &r2));
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "worker-0", "c"), r1);
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "worker-0", "u"), r2);
}

Test(kv_watch, does_not_replay_writes_made_before_it_started) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w;
    uint64_t r;
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "old", "before");
    w = conf_watch_start(a, "cfg", "");
    r = conf_put(a, "cfg", "new", "after");
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "new", "after"), r);
    conf_expect_no_event(a, w, 300);
}

Test(kv_watch, prefix_delivers_only_matching_keys) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w;
    uint64_t r1, r2;
    conf_kv_open(a, "cfg");
    w = conf_watch_start(a, "cfg", "user.");
    conf_put(a, "cfg", "admin.1", "x");
    r1 = conf_put(a, "cfg", "user.1", "u1");
    conf_put(a, "cfg", "userx.1", "x");
    conf_put(a, "cfg", "user", "x");
    r2 = conf_put(a, "cfg", "user.2.deep", "u2");
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "admin.1", CONF_TO));
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "user.1", "u1"), r1);
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "user.2.deep", "u2"), r2);
    conf_expect_no_event(a, w, 300);
}

Test(kv_watch, next_is_non_blocking_and_idle_is_no_messages) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w;
    parti_kv_entry e;
    conf_kv_open(a, "cfg");
    w = conf_watch_start(a, "cfg", "");
    memset(&e, 0, sizeof e);
    CONF_EXPECT(a->vt->kv_watch_next(a->self, w, &e), PARTI_ERR_NO_MESSAGES);
    cr_assert_null(e.key, "an idle next must not fill the entry");
    conf_put(a, "cfg", "k", "v");
    conf_expect_event(a, w, PARTI_KV_PUT, "k", "v");
    memset(&e, 0, sizeof e);
    CONF_EXPECT(a->vt->kv_watch_next(a->self, w, &e), PARTI_ERR_NO_MESSAGES);
}

Test(kv_watch, stop_ends_only_that_watcher) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w1, *w2, *w3;
    uint64_t r;
    conf_kv_open(a, "cfg");
    w1 = conf_watch_start(a, "cfg", "");
    w2 = conf_watch_start(a, "cfg", "");
    conf_watch_stop(a, w1);
    r = conf_put(a, "cfg", "k", "v");
    cr_assert_eq(conf_expect_event(a, w2, PARTI_KV_PUT, "k", "v"), r);
    w3 = conf_watch_start(a, "cfg", "");
    r = conf_put(a, "cfg", "k", "v2");
    cr_assert_eq(conf_expect_event(a, w3, PARTI_KV_PUT, "k", "v2"), r);
    cr_assert_eq(conf_expect_event(a, w2, PARTI_KV_PUT, "k", "v2"), r);
}

Test(kv_watch, a_watcher_of_one_client_sees_writes_of_another) {
    parti_transport *a = conf_connect(), *b = conf_connect();
    parti_kv_watcher *w;
    uint64_t r;
    conf_kv_open(a, "cfg");
    w = conf_watch_start(b, "cfg", "");
    r = conf_put(a, "cfg", "worker-0", "hello");
    cr_assert_eq(conf_expect_event(b, w, PARTI_KV_PUT, "worker-0", "hello"), r);
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "worker-0", CONF_TO));
    conf_expect_event(b, w, PARTI_KV_DELETE, "worker-0", NULL);
}

Test(kv_watch, a_watcher_sees_only_its_bucket) {
    parti_transport *a = conf_connect();
    parti_kv_watcher *w;
    uint64_t r;
    conf_kv_open(a, "one");
    conf_kv_open(a, "two");
    w = conf_watch_start(a, "one", "");
    conf_put(a, "two", "k", "elsewhere");
    r = conf_put(a, "one", "k", "here");
    cr_assert_eq(conf_expect_event(a, w, PARTI_KV_PUT, "k", "here"), r);
    conf_expect_no_event(a, w, 300);
}

/* ======================================================================== */
/* consumer                                                                  */
/* ======================================================================== */

/* orders.a x3, orders.b x2, orders.c x1, interleaved: a b c a b a (seq 1..6) */
static void conf_orders_abc(parti_transport *c) {
    conf_orders(c);
    conf_pub(c, "orders.a", "a1");
    conf_pub(c, "orders.b", "b1");
    conf_pub(c, "orders.c", "c1");
    conf_pub(c, "orders.a", "a2");
    conf_pub(c, "orders.b", "b2");
    conf_pub(c, "orders.a", "a3");
}

Test(consumer, upsert_creates_a_consumer_with_its_filters) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 30000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_str_eq(ci.name, "w1");
    cr_assert_eq(ci.filter_count, 2);
    cr_assert(conf_has(ci.filter_subjects, ci.filter_count, "orders.a"));
    cr_assert(conf_has(ci.filter_subjects, ci.filter_count, "orders.b"));
    cr_assert_eq(ci.num_pending, 5, "num_pending counts only matching messages, got %llu",
                 (unsigned long long)ci.num_pending);
    cr_assert_eq(ci.delivered_stream_seq, 0);
    cr_assert_eq(ci.num_ack_pending, 0);
    parti_consumer_info_free(&ci);
}

Test(consumer, update_only_never_creates_a_deleted_consumer) {
    parti_transport *a = conf_connect();
    parti_consumer_config cc;
    parti_consumer_info ci;
    conf_orders_abc(a);
    cc = conf_ccfg("ORDERS", "w1", LIST("orders.a"));
    cc.update_only = 1;
    /* missing: refused, and nothing is made */
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    /* present: updated in place */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    cc = conf_ccfg("ORDERS", "w1", LIST("orders.a", "orders.b"));
    cc.update_only = 1;
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.filter_count, 2);
    parti_consumer_info_free(&ci);
    /* deleted behind its back: refused again */
    CONF_OK(a->vt->consumer_delete(a->self, "ORDERS", "w1", CONF_TO));
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
}

Test(consumer, the_deliver_policy_is_fixed_at_creation_and_reported) {
    parti_transport *a = conf_connect();
    parti_consumer_config cc;
    parti_consumer_info ci;
    const char *f[] = {"orders.a"};
    conf_orders_abc(a);
    memset(&cc, 0, sizeof cc);
    cc.stream = "ORDERS";
    cc.durable = "w1";
    cc.filter_subjects = f;
    cc.filter_count = 1;
    cc.deliver_policy = PARTI_DELIVER_BY_START_SEQUENCE;
    cc.opt_start_seq = 3;
    cr_assert_eq(a->vt->consumer_upsert(a->self, &cc, 5000), PARTI_ERR_OK);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.deliver_policy, PARTI_DELIVER_BY_START_SEQUENCE);
    cr_assert_eq(ci.opt_start_seq, 3);
    parti_consumer_info_free(&ci);
    cc.deliver_policy = PARTI_DELIVER_ALL; /* what a restarted process would send */
    cc.opt_start_seq = 0;
    cr_assert_eq(a->vt->consumer_upsert(a->self, &cc, 5000), PARTI_ERR_ALREADY_EXISTS);
    cc.deliver_policy = PARTI_DELIVER_BY_START_SEQUENCE;
    cc.opt_start_seq = 4;
    cr_assert_eq(a->vt->consumer_upsert(a->self, &cc, 5000), PARTI_ERR_ALREADY_EXISTS);
    cc.opt_start_seq = 3; /* repeating it is fine */
    cr_assert_eq(a->vt->consumer_upsert(a->self, &cc, 5000), PARTI_ERR_OK);
}

Test(consumer, upsert_with_the_same_config_keeps_the_position) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_delivery d[4];
    parti_err end;
    parti_fetch_opts o = conf_opts(2, 2000, 0);
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 4, &end), 2);
    conf_wait_acked(a, "ORDERS", "w1", 4, 0);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.delivered_stream_seq, 4);
    cr_assert_eq(ci.num_pending, 1);
    parti_consumer_info_free(&ci);
}

Test(consumer, upsert_with_new_filters_updates_in_place_keeping_the_position) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(2, 2000, 0);
    int n;
    conf_orders_abc(a); /* a1 b1 c1 a2 b2 a3 */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 2);
    cr_assert_eq(d[0].seq, 1);
    cr_assert_eq(d[1].seq, 4);
    conf_wait_acked(a, "ORDERS", "w1", 4, 0);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 30000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.delivered_stream_seq, 4, "an in-place update keeps the position, got %llu",
                 (unsigned long long)ci.delivered_stream_seq);
    cr_assert_eq(ci.ack_floor_stream_seq, 4);
    cr_assert_eq(ci.filter_count, 2);
    cr_assert(conf_has(ci.filter_subjects, ci.filter_count, "orders.b"));
    cr_assert_eq(ci.num_pending, 2, "after seq 4: b2 (5) and a3 (6), got %llu", (unsigned long long)ci.num_pending);
    parti_consumer_info_free(&ci);
    o = conf_opts(8, 1000, 0);
    n = conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end);
    cr_assert_eq(n, 2);
    cr_assert_eq(d[0].seq, 5);
    cr_assert_str_eq(d[0].subject, "orders.b");
    cr_assert_eq(d[1].seq, 6);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
}

/* DESIGN.md "Filter changes" (a): adding a subject never rewinds. */
Test(consumer, added_subject_never_delivers_messages_older_than_the_position) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(4, 1000, 0);
    int n, i;
    conf_orders(a);
    conf_pub(a, "orders.b", "b1"); /* 1 */
    conf_pub(a, "orders.b", "b2"); /* 2 */
    conf_pub(a, "orders.a", "a1"); /* 3 */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 1);
    cr_assert_eq(d[0].seq, 3);
    conf_wait_acked(a, "ORDERS", "w1", 3, 0);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 30000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.num_pending, 0, "older messages of an added subject are not pending, got %llu",
                 (unsigned long long)ci.num_pending);
    parti_consumer_info_free(&ci);
    conf_pub(a, "orders.b", "b3"); /* 4 */
    conf_pub(a, "orders.a", "a2"); /* 5 */
    n = conf_collect(a, "ORDERS", "w1", 2000, PARTI_ACK_ACK, conf_now(a), d, 8);
    for (i = 0; i < n && i < 8; i++)
        cr_assert(d[i].seq > 3, "seq %llu (%s) is older than the position and must never be delivered",
                  (unsigned long long)d[i].seq, d[i].subject);
    cr_assert_eq(n, 2, "expected b3 and a2, got %d deliveries", n);
    cr_assert_eq(d[0].seq, 4);
    cr_assert_str_eq(d[0].subject, "orders.b");
    cr_assert_eq(d[1].seq, 5);
}

/* A pull that finds nothing moves the consumer past what does not match: a
 * subject added afterwards never brings those messages. (While a pull
 * waits, the server moves on without always reporting it in info's
 * delivered sequence, so parti's handoff does not rely on that number.) */
Test(consumer, an_empty_pull_moves_the_position_past_unmatched_messages) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(4, 1500, 500);
    int n;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    conf_pub(a, "orders.b", "b1"); /* 1 */
    conf_pub(a, "orders.b", "b2"); /* 2 */
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 0);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.num_pending, 0);
    parti_consumer_info_free(&ci);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 30000);
    n = conf_collect(a, "ORDERS", "w1", 1500, PARTI_ACK_ACK, conf_now(a), d, 8);
    cr_assert_eq(n, 0, "the scan moved past b1 and b2: adding orders.b must not bring them (got %d)", n);
}

/* DESIGN.md "Filter changes" (b): removing a subject does not cancel the
 * redelivery of its unacked messages. */
Test(consumer, removed_subject_still_redelivers_its_unacked_message) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    uint64_t t_del;
    int n, i, found = 0;
    conf_orders(a);
    conf_pub(a, "orders.a", "a1"); /* 1 */
    conf_pub(a, "orders.b", "b1"); /* 2 */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 1000);
    /* the clock starts before the pull: the server cannot deliver b1 earlier,
     * while the client may take it from its buffer later (a loaded machine) */
    t_del = conf_now(a);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 2, 3000, 0));
    CONF_OK(conf_next(a, "ORDERS", "w1", 3000, &m));
    cr_assert_eq(m->stream_seq, 1);
    CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_ACK, 0, CONF_TO));
    conf_release(a, m);
    CONF_OK(conf_next(a, "ORDERS", "w1", 3000, &m));
    cr_assert_eq(m->stream_seq, 2);
    conf_release(a, m); /* b1 stays unacked */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 1000);
    n = conf_collect(a, "ORDERS", "w1", 3000, PARTI_ACK_ACK, t_del, d, 8);
    for (i = 0; i < n && i < 8; i++) {
        cr_assert_eq(d[i].seq, 2, "only b1 may come back, got seq %llu", (unsigned long long)d[i].seq);
        cr_assert_str_eq(d[i].subject, "orders.b");
        cr_assert_eq(d[i].count, 2);
        cr_assert_geq(d[i].at, 900, "redelivered %llu ms after the pull request, ack_wait is 1000",
                      (unsigned long long)d[i].at);
        found = 1;
    }
    cr_assert(found, "the unacked message of the removed subject was not redelivered");
    cr_assert_eq(n, 1);
}

Test(consumer, removed_subject_gets_no_new_messages) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    int n;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 30000);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    conf_pub(a, "orders.b", "b1");
    conf_pub(a, "orders.a", "a1");
    n = conf_collect(a, "ORDERS", "w1", 1500, PARTI_ACK_ACK, conf_now(a), d, 8);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(d[0].subject, "orders.a");
    cr_assert_eq(d[0].seq, 2);
}

Test(consumer, delete_removes_the_consumer_and_its_position) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(2, 1000, 0);
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 2);
    CONF_OK(a->vt->consumer_delete(a->self, "ORDERS", "w1", CONF_TO));
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    CONF_EXPECT(a->vt->consumer_delete(a->self, "ORDERS", "w1", CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.delivered_stream_seq, 0, "a re-created consumer starts over");
    cr_assert_eq(ci.num_pending, 3);
    parti_consumer_info_free(&ci);
}

Test(consumer, missing_consumer_is_consumer_not_found) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_orders(a);
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "ghost", &ci, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    CONF_EXPECT(a->vt->consumer_delete(a->self, "ORDERS", "ghost", CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
}

Test(consumer, missing_stream_is_stream_not_found) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    parti_consumer_config cc = conf_ccfg("NOPE", "w1", LIST("orders.a"));
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
    CONF_EXPECT(a->vt->consumer_info(a->self, "NOPE", "w1", &ci, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
    CONF_EXPECT(a->vt->consumer_delete(a->self, "NOPE", "w1", CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
}

Test(consumer, empty_filter_list_is_refused_never_the_whole_stream) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    parti_consumer_config cc = conf_ccfg("ORDERS", "w1", SUBJ("orders.a"), 0);
    parti_err e;
    conf_orders_abc(a);
    e = a->vt->consumer_upsert(a->self, &cc, CONF_TO);
    cr_assert(e == PARTI_ERR_INVALID_ARGUMENT || e == PARTI_ERR_INVALID_CONFIG,
              "empty filter list gave %s, expected INVALID_ARGUMENT or INVALID_CONFIG", parti_error_name(e));
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    /* nor may an existing consumer be widened to the whole stream */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.b"), 30000);
    e = a->vt->consumer_upsert(a->self, &cc, CONF_TO);
    cr_assert(e == PARTI_ERR_INVALID_ARGUMENT || e == PARTI_ERR_INVALID_CONFIG, "got %s", parti_error_name(e));
    cc.filter_subjects = NULL;
    e = a->vt->consumer_upsert(a->self, &cc, CONF_TO);
    cr_assert(e == PARTI_ERR_INVALID_ARGUMENT || e == PARTI_ERR_INVALID_CONFIG, "got %s", parti_error_name(e));
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.filter_count, 1);
    cr_assert_str_eq(ci.filter_subjects[0], "orders.b");
    cr_assert_eq(ci.num_pending, 2);
    parti_consumer_info_free(&ci);
}

Test(consumer, overlapping_filters_are_refused) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    parti_consumer_config cc = conf_ccfg("ORDERS", "w1", LIST("orders.*", "orders.a"));
    conf_orders(a);
    CONF_EXPECT_INVALID_INPUT(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
}

Test(consumer, invalid_filter_subject_is_refused) {
    parti_transport *a = conf_connect();
    static const char *const bad[] = {"orders..a", "", "orders.>.a", "orders a", "orders.a*"};
    size_t i;
    conf_orders(a);
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        parti_consumer_info ci;
        parti_consumer_config cc = conf_ccfg("ORDERS", "w1", &bad[i], 1);
        CONF_EXPECT_INVALID_INPUT(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
        memset(&ci, 0, sizeof ci);
        CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_TO), PARTI_ERR_CONSUMER_NOT_FOUND);
    }
}

Test(consumer, deliver_new_skips_stored_messages) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    parti_consumer_config cc = conf_ccfg("ORDERS", "w1", LIST("orders.>"));
    parti_msg *m;
    conf_orders_abc(a);
    cc.deliver_policy = PARTI_DELIVER_NEW;
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.num_pending, 0);
    parti_consumer_info_free(&ci);
    conf_pub(a, "orders.a", "new");
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    cr_assert_eq(m->stream_seq, 7);
    conf_release(a, m);
}

Test(consumer, deliver_by_start_sequence_starts_there) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    parti_consumer_config cc = conf_ccfg("ORDERS", "w1", LIST("orders.>"));
    parti_msg *m;
    conf_orders_abc(a);
    cc.deliver_policy = PARTI_DELIVER_BY_START_SEQUENCE;
    cc.opt_start_seq = 4;
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.num_pending, 3);
    parti_consumer_info_free(&ci);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    cr_assert_eq(m->stream_seq, 4);
    conf_release(a, m);
}

Test(consumer, consumers_on_one_stream_are_independent) {
    parti_transport *a = conf_connect();
    conf_delivery d1[8], d2[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(8, 1000, 0);
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    conf_consumer(a, "ORDERS", "w2", LIST("orders.a"), 30000);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d1, 8, &end), 3);
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w2", &o, PARTI_ACK_ACK, conf_now(a), d2, 8, &end), 3);
    cr_assert_eq(d2[0].seq, 1);
    cr_assert_eq(d2[2].seq, 6);
}

/* ======================================================================== */
/* pull                                                                      */
/* ======================================================================== */

Test(pull, fetch_returns_matching_messages_in_stream_order) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(10, 1000, 0);
    int n, i;
    static const uint64_t want_seq[] = {1, 2, 4, 5, 6};
    static const char *const want_data[] = {"a1", "b1", "a2", "b2", "a3"};
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 30000);
    n = conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end);
    cr_assert_eq(n, 5, "5 of 6 messages match, got %d", n);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
    for (i = 0; i < 5; i++) {
        cr_assert_eq(d[i].seq, want_seq[i], "message %d: seq %llu", i, (unsigned long long)d[i].seq);
        cr_assert_str_eq(d[i].data, want_data[i]);
        cr_assert_eq(d[i].count, 1);
        cr_assert_eq(d[i].pending, (uint64_t)(4 - i), "message %d: num_pending %llu", i,
                     (unsigned long long)d[i].pending);
        if (i) cr_assert_gt(d[i].consumer_seq, d[i - 1].consumer_seq);
    }
}

/* Each delivery, a redelivery too, takes the consumer's next sequence, a
 * filter change keeps the count, and consumer info reports it: so a gap in
 * what a client sees means deliveries lost on the way (parti catches up). */
Test(pull, every_delivery_takes_the_next_consumer_sequence_and_info_reports_the_count) {
    parti_transport *a = conf_connect();
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(2, 1000, 0);
    int n, i, redelivered;
    conf_orders_abc(a); /* a1 b1 c1 a2 b2 a3 */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 1000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.delivered_consumer_seq, 0);
    parti_consumer_info_free(&ci);
    n = conf_pull_once(a, "ORDERS", "w1", &o, CONF_NO_ACK, conf_now(a), d, 8, &end); /* a1 a2, never acked */
    cr_assert_eq(n, 2);
    cr_assert_eq(d[0].consumer_seq, 1);
    cr_assert_eq(d[1].consumer_seq, 2);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a", "orders.b"), 1000);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.delivered_consumer_seq, 2, "after a filter change: %llu", (unsigned long long)ci.delivered_consumer_seq);
    parti_consumer_info_free(&ci);
    /* b2 and a3, and after ack_wait a1 and a2 again: consumer seqs 3..6 */
    n = conf_collect(a, "ORDERS", "w1", 2500, PARTI_ACK_ACK, conf_now(a), d, 8);
    cr_assert_eq(n, 4, "%d deliveries", n);
    for (i = 0, redelivered = 0; i < n; i++) {
        cr_assert_eq(d[i].consumer_seq, (uint64_t)(3 + i), "delivery %d: consumer seq %llu", i,
                     (unsigned long long)d[i].consumer_seq);
        redelivered += d[i].count == 2 && (d[i].seq == 1 || d[i].seq == 4);
    }
    cr_assert_eq(redelivered, 2);
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_eq(ci.delivered_consumer_seq, 6);
    parti_consumer_info_free(&ci);
}

Test(pull, batch_limit_ends_the_pull_before_it_expires) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(2, 10000, 0);
    uint64_t t0;
    int n;
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.>"), 30000);
    t0 = conf_now(a);
    n = conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, t0, d, 8, &end);
    cr_assert_eq(n, 2);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
    cr_assert_lt(conf_now(a) - t0, 5000, "a full batch ends the pull; it must not wait for expiry");
    cr_assert_eq(d[0].seq, 1);
    cr_assert_eq(d[1].seq, 2);
    n = conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, t0, d, 8, &end);
    cr_assert_eq(n, 2);
    cr_assert_eq(d[0].seq, 3);
    cr_assert_eq(d[1].seq, 4);
}

Test(pull, pull_without_messages_ends_with_no_messages_at_expiry) {
    parti_transport *a = conf_connect();
    parti_msg *m;
    uint64_t t0, took;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    t0 = conf_now(a);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 10, 1000, 0));
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 6000, &m), PARTI_ERR_NO_MESSAGES);
    took = conf_now(a) - t0;
    cr_assert_geq(took, 900, "the pull ended after %llu ms, expires is 1000", (unsigned long long)took);
}

Test(pull, pending_pull_receives_a_message_published_later) {
    parti_transport *a = conf_connect(), *b = conf_connect();
    parti_msg *m;
    uint64_t seq;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 1, 5000, 0));
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 200, &m), PARTI_ERR_TIMEOUT);
    conf_pub(b, "orders.b", "not mine");
    seq = conf_pub(b, "orders.a", "late");
    CONF_OK(conf_next(a, "ORDERS", "w1", 3000, &m));
    cr_assert_eq(m->stream_seq, seq);
    cr_assert_eq(m->len, 4);
    cr_assert(memcmp(m->data, "late", 4) == 0);
    conf_release(a, m);
}

Test(pull, max_bytes_limits_the_pull) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(10, 2000, 0);
    char payload[101];
    int i, n;
    memset(payload, 'p', 100);
    payload[100] = 0;
    conf_orders(a);
    for (i = 0; i < 5; i++) conf_pub(a, "orders.a", payload);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    o.max_bytes = 250;
    n = conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end);
    cr_assert(n >= 1 && n <= 2, "250 bytes hold one or two 100-byte messages, got %d", n);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
    o.max_bytes = 0;
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 5 - n);
}

/* nats-server answers 409 "Message Size Exceeds MaxBytes" when the next
 * message does not fit: after others the pull is just complete, but when it
 * is the first, no pull with that limit will ever get past it. */
Test(pull, a_message_larger_than_max_bytes_is_reported_not_looped) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(10, 2000, 0);
    char small[51], big[1001];
    int k;
    memset(small, 's', 50);
    small[50] = 0;
    memset(big, 'b', 1000);
    big[1000] = 0;
    conf_orders(a);
    conf_pub(a, "orders.a", small);
    conf_pub(a, "orders.a", big);
    conf_pub(a, "orders.a", small);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    o.max_bytes = 500;
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 1);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES); /* the small one came first: complete */
    for (k = 0; k < 2; k++) { /* and again: the big one is next each time */
        cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 0);
        CONF_EXPECT(end, PARTI_ERR_MESSAGE_TOO_LARGE);
    }
    o.max_bytes = 0;
    o.batch = 1;
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 1);
    cr_assert_eq(d[0].data[0], 'b', "the big message comes alone without the limit");
    o.max_bytes = 500;
    o.batch = 10;
    cr_assert_eq(conf_pull_once(a, "ORDERS", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 1);
}

/* A delivered message that the stream's limits remove is no longer pending:
 * it does not hold a max_ack_pending slot until ack_wait. */
Test(pull, a_message_dropped_by_the_stream_limit_frees_its_pending_slot) {
    parti_transport *a = conf_connect();
    parti_consumer_config cc;
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(1, 1000, 0);
    int i;
    conf_stream_full(a, "LIMITED", LIST("lim.>"), conf_memory(), 0, 2);
    cc = conf_ccfg("LIMITED", "w1", LIST("lim.a"));
    cc.ack_wait_ms = 60000;
    cc.max_ack_pending = 1;
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    conf_pub(a, "lim.a", "m1");
    cr_assert_eq(conf_pull_once(a, "LIMITED", "w1", &o, -1, conf_now(a), d, 8, &end), 1); /* not acked */
    for (i = 0; i < 3; i++) conf_pub(a, "lim.a", "later"); /* m1 falls out of the 2-message stream */
    ci = conf_cinfo(a, "LIMITED", "w1");
    cr_assert_eq(ci.num_ack_pending, 0, "the dropped message still counts as pending: %llu",
                 (unsigned long long)ci.num_ack_pending);
    parti_consumer_info_free(&ci);
    cr_assert_eq(conf_pull_once(a, "LIMITED", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 1,
                 "the consumer is blocked by a message that no longer exists");
}

Test(pull, fetch_on_a_missing_consumer_is_an_error) {
    parti_transport *a = conf_connect();
    static const char *const streams[] = {"ORDERS", "NOPE"};
    int i;
    conf_orders(a);
    for (i = 0; i < 2; i++) {
        parti_msg *m = NULL;
        parti_err e = conf_fetch_start(a, streams[i], "ghost", 1, 2000, 0);
        if (e == PARTI_ERR_OK) e = conf_next(a, streams[i], "ghost", 5000, &m);
        cr_assert(e == PARTI_ERR_NO_RESPONDERS || e == PARTI_ERR_CONSUMER_NOT_FOUND ||
                      (i == 1 && e == PARTI_ERR_STREAM_NOT_FOUND),
                  "fetch on %s/ghost gave %s, expected NO_RESPONDERS or CONSUMER_NOT_FOUND", streams[i],
                  parti_error_name(e));
        cr_assert(parti_error_category(e) == PARTI_CAT_TRANSIENT || parti_error_category(e) == PARTI_CAT_RETRIABLE);
    }
}

Test(pull, consumer_deleted_by_another_client_ends_the_pull) {
    parti_transport *a = conf_connect(), *b = conf_connect();
    parti_msg *m;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 10, 20000, 1000));
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 100, &m), PARTI_ERR_TIMEOUT);
    CONF_OK(b->vt->consumer_delete(b->self, "ORDERS", "w1", CONF_TO));
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 3000, &m), PARTI_ERR_CONSUMER_DELETED);
}

Test(pull, missed_heartbeats_end_the_pull) {
    parti_transport *a;
    parti_msg *m;
    uint64_t t0, took;
    if (!conformance_env()->drop_heartbeats)
        cr_skip_test("env %s cannot drop fetch heartbeats", conformance_env()->name);
    a = conf_connect();
    conf_orders(a);
    /* short ack_wait: on a real server the abandoned pull request may still
     * take the next message; it then comes back after ack_wait */
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 2000);
    t0 = conf_now(a);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 10, 4000, 500));
    env->drop_heartbeats(env, a, 1);
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 3000, &m), PARTI_ERR_MISSED_HEARTBEAT);
    took = conf_now(a) - t0;
    cr_assert_geq(took, 500, "missed heartbeat after %llu ms, heartbeat is 500", (unsigned long long)took);
    cr_assert_leq(took, 2000, "missed heartbeat took %llu ms, expected within ~3 x 500", (unsigned long long)took);
    env->drop_heartbeats(env, a, 0);
    conf_pub(a, "orders.a", "after");
    m = conf_fetch_one(a, "ORDERS", "w1", 10000);
    cr_assert_eq(m->stream_seq, 1);
    conf_release(a, m);
}

Test(pull, heartbeats_keep_an_idle_pull_alive_until_expiry) {
    parti_transport *a = conf_connect();
    parti_msg *m;
    uint64_t t0, took;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    t0 = conf_now(a);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 10, 3000, 500));
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 8000, &m), PARTI_ERR_NO_MESSAGES);
    took = conf_now(a) - t0;
    cr_assert_geq(took, 2700, "an idle pull with heartbeats ended after %llu ms, expires is 3000",
                  (unsigned long long)took);
}

Test(pull, server_restart_ends_a_pending_pull) {
    parti_transport *a;
    parti_msg *m;
    if (!conformance_env()->restart_server) cr_skip_test("env %s cannot restart the server", conformance_env()->name);
    a = conf_connect();
    conf_stream_full(a, "DURABLE", LIST("dur.>"), 0, 0, 0);
    conf_consumer(a, "DURABLE", "w1", LIST("dur.>"), 30000);
    CONF_OK(conf_fetch_start(a, "DURABLE", "w1", 10, 30000, 1000));
    CONF_EXPECT(conf_next(a, "DURABLE", "w1", 100, &m), PARTI_ERR_TIMEOUT);
    env->restart_server(env);
    CONF_EXPECT2(conf_next(a, "DURABLE", "w1", 10000, &m), PARTI_ERR_SERVER_SHUTDOWN, PARTI_ERR_NOT_CONNECTED);
}

Test(pull, two_pullers_on_one_consumer_never_share_a_message) {
    parti_transport *a = conf_connect(), *b = conf_connect();
    parti_msg *m;
    int seen[7] = {0}, got = 0, i;
    parti_err ea = PARTI_ERR_OK, eb = PARTI_ERR_OK;
    conf_orders_abc(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.>"), 30000);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 3, 1000, 0));
    CONF_OK(conf_fetch_start(b, "ORDERS", "w1", 3, 1000, 0));
    while ((ea == PARTI_ERR_OK || eb == PARTI_ERR_OK) && got <= 6) {
        if (ea == PARTI_ERR_OK) {
            ea = conf_next(a, "ORDERS", "w1", 3000, &m);
            if (ea == PARTI_ERR_OK) {
                cr_assert(m->stream_seq >= 1 && m->stream_seq <= 6);
                seen[m->stream_seq]++;
                got++;
                CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_ACK, 0, CONF_TO));
                conf_release(a, m);
            }
        }
        if (eb == PARTI_ERR_OK) {
            eb = conf_next(b, "ORDERS", "w1", 3000, &m);
            if (eb == PARTI_ERR_OK) {
                cr_assert(m->stream_seq >= 1 && m->stream_seq <= 6);
                seen[m->stream_seq]++;
                got++;
                CONF_OK(b->vt->ack(b->self, m, PARTI_ACK_ACK, 0, CONF_TO));
                conf_release(b, m);
            }
        }
    }
    CONF_EXPECT(ea, PARTI_ERR_NO_MESSAGES);
    CONF_EXPECT(eb, PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(got, 6);
    for (i = 1; i <= 6; i++) cr_assert_eq(seen[i], 1, "seq %d delivered %d times", i, seen[i]);
}

/* ======================================================================== */
/* ack                                                                       */
/* ======================================================================== */

#define CONF_ACK_WAIT 1000u

/* A message settled with kind (ack or term) is not delivered again, even
 * after more than two ack_waits. */
static void conf_settled_is_never_redelivered(parti_ack_kind kind) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), CONF_ACK_WAIT);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    CONF_OK(a->vt->ack(a->self, m, kind, 0, CONF_TO));
    conf_release(a, m);
    conf_wait_acked(a, "ORDERS", "w1", 1, 0);
    cr_assert_eq(conf_collect(a, "ORDERS", "w1", CONF_ACK_WAIT * 5 / 2, CONF_NO_ACK, conf_now(a), d, 8), 0);
}

Test(ack, an_acked_message_is_never_redelivered) { conf_settled_is_never_redelivered(PARTI_ACK_ACK); }

Test(ack, an_unacked_message_is_redelivered_after_ack_wait) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    uint64_t t_del;
    int n;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), CONF_ACK_WAIT);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    t_del = conf_now(a);
    cr_assert_eq(m->delivery_count, 1);
    conf_release(a, m);
    n = conf_collect(a, "ORDERS", "w1", CONF_ACK_WAIT * 3, PARTI_ACK_ACK, t_del, d, 8);
    cr_assert_eq(n, 1, "expected one redelivery, got %d", n);
    cr_assert_eq(d[0].seq, 1);
    cr_assert_eq(d[0].count, 2);
    cr_assert_geq(d[0].at, CONF_ACK_WAIT * 9 / 10, "redelivered %llu ms after delivery, ack_wait is %u",
                  (unsigned long long)d[0].at, CONF_ACK_WAIT);
}

Test(ack, nak_with_delay_redelivers_no_sooner_than_the_delay) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    uint64_t t_nak;
    int n;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 5000);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    t_nak = conf_now(a);
    CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_NAK, 1000, CONF_TO));
    conf_release(a, m);
    n = conf_collect(a, "ORDERS", "w1", 3000, PARTI_ACK_ACK, t_nak, d, 8);
    cr_assert_eq(n, 1, "expected the nak'd message back within 3 s (delay 1 s, ack_wait 5 s), got %d", n);
    cr_assert_eq(d[0].count, 2);
    cr_assert_geq(d[0].at, 950, "redelivered %llu ms after a nak with a 1000 ms delay", (unsigned long long)d[0].at);
}

Test(ack, nak_without_delay_redelivers_before_ack_wait) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    uint64_t t_nak;
    int n;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 10000);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    t_nak = conf_now(a);
    CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_NAK, 0, CONF_TO));
    conf_release(a, m);
    n = conf_collect(a, "ORDERS", "w1", 1500, PARTI_ACK_ACK, t_nak, d, 8);
    cr_assert_eq(n, 1, "a nak without delay must come back long before ack_wait (10 s), got %d", n);
    cr_assert_eq(d[0].count, 2);
    cr_assert_lt(d[0].at, 2000);
}

Test(ack, term_is_never_redelivered) { conf_settled_is_never_redelivered(PARTI_ACK_TERM); }

Test(ack, in_progress_extends_the_ack_deadline) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    uint64_t t_ip;
    int n;
    conf_orders(a);
    conf_pub(a, "orders.a", "slow");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), CONF_ACK_WAIT);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    conf_sleep(a, CONF_ACK_WAIT / 2);
    t_ip = conf_now(a);
    CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_IN_PROGRESS, 0, CONF_TO));
    conf_release(a, m);
    /* without in_progress it would come back ~500 ms after t_ip */
    n = conf_collect(a, "ORDERS", "w1", CONF_ACK_WAIT * 3, PARTI_ACK_ACK, t_ip, d, 8);
    cr_assert_eq(n, 1, "expected one redelivery after the extended deadline, got %d", n);
    cr_assert_eq(d[0].count, 2);
    cr_assert_geq(d[0].at, CONF_ACK_WAIT * 9 / 10, "redelivered %llu ms after in_progress, ack_wait is %u",
                  (unsigned long long)d[0].at, CONF_ACK_WAIT);
}

Test(ack, max_deliver_stops_redelivery_after_the_limit) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_consumer_config cc = conf_ccfg("ORDERS", "w1", LIST("orders.a"));
    int n;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    cc.ack_wait_ms = CONF_ACK_WAIT;
    cc.max_deliver = 2;
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    n = conf_collect(a, "ORDERS", "w1", CONF_ACK_WAIT * 5, CONF_NO_ACK, conf_now(a), d, 8);
    cr_assert_eq(n, 2, "max_deliver 2: delivered %d times", n);
    cr_assert_eq(d[0].count, 1);
    cr_assert_eq(d[1].count, 2);
    cr_assert_eq(d[1].seq, 1);
}

Test(ack, max_ack_pending_caps_unacked_deliveries) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_consumer_config cc = conf_ccfg("ORDERS", "w1", LIST("orders.a"));
    parti_fetch_opts o = conf_opts(10, 1000, 0);
    parti_err end;
    parti_msg *m, *first;
    int n;
    conf_orders(a);
    for (n = 0; n < 5; n++) conf_pub(a, "orders.a", "x");
    cc.max_ack_pending = 2;
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 10, 1000, 0));
    CONF_OK(conf_next(a, "ORDERS", "w1", 3000, &first));
    CONF_OK(conf_next(a, "ORDERS", "w1", 3000, &m));
    cr_assert_eq(m->stream_seq, 2);
    CONF_EXPECT(conf_next(a, "ORDERS", "w1", 6000, &m), PARTI_ERR_NO_MESSAGES);
    /* one slot frees up: exactly one more */
    CONF_OK(a->vt->ack(a->self, first, PARTI_ACK_ACK, 0, CONF_TO));
    conf_release(a, first);
    conf_wait_acked(a, "ORDERS", "w1", 1, 1);
    n = conf_pull_once(a, "ORDERS", "w1", &o, CONF_NO_ACK, conf_now(a), d, 8, &end);
    cr_assert_eq(n, 1, "with 1 of 2 ack slots free a pull gets one message, got %d", n);
    cr_assert_eq(d[0].seq, 3);
    CONF_EXPECT(end, PARTI_ERR_NO_MESSAGES);
}

Test(ack, acking_a_redelivered_message_stops_redelivery) {
    parti_transport *a = conf_connect();
    conf_delivery d[8];
    parti_msg *m;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), CONF_ACK_WAIT);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    conf_release(a, m);
    m = conf_fetch_one(a, "ORDERS", "w1", CONF_ACK_WAIT * 3);
    cr_assert_eq(m->delivery_count, 2);
    CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_ACK, 0, CONF_TO));
    conf_release(a, m);
    conf_wait_acked(a, "ORDERS", "w1", 1, 0);
    cr_assert_eq(conf_collect(a, "ORDERS", "w1", CONF_ACK_WAIT * 5 / 2, CONF_NO_ACK, conf_now(a), d, 8), 0);
}

/* ======================================================================== */
/* faults                                                                    */
/* ======================================================================== */

#define CONF_NEED_FAIL_NEXT()                                                                              \
    do {                                                                                                   \
        if (!conformance_env()->fail_next)                                                                 \
            cr_skip_test("env %s cannot fail the next calls of an operation", conformance_env()->name);    \
    } while (0)

Test(faults, fail_next_fails_n_calls_of_that_op_then_recovers) {
    parti_transport *a;
    parti_kv_entry e;
    CONF_NEED_FAIL_NEXT();
    a = conf_connect();
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "v");
    env->fail_next(env, a, "kv_get", 2, PARTI_ERR_TIMEOUT);
    conf_put(a, "cfg", "other", "w"); /* another op is not affected */
    CONF_EXPECT(conf_get(a, "cfg", "k", 0, &e), PARTI_ERR_TIMEOUT);
    CONF_EXPECT(conf_get(a, "cfg", "k", 0, &e), PARTI_ERR_TIMEOUT);
    conf_expect_value(a, "cfg", "k", "v");
    conf_expect_value(a, "cfg", "k", "v");
}

Test(faults, fail_next_applies_only_to_that_client) {
    parti_transport *a, *b;
    parti_kv_entry e;
    CONF_NEED_FAIL_NEXT();
    a = conf_connect();
    b = conf_connect();
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "v");
    env->fail_next(env, a, "kv_get", 1, PARTI_ERR_NOT_CONNECTED);
    conf_expect_value(b, "cfg", "k", "v");
    CONF_EXPECT(conf_get(a, "cfg", "k", 0, &e), PARTI_ERR_NOT_CONNECTED);
    conf_expect_value(a, "cfg", "k", "v");
}

Test(faults, fail_next_publish_then_publish_works) {
    parti_transport *a;
    parti_pub_ack pa;
    CONF_NEED_FAIL_NEXT();
    a = conf_connect();
    conf_orders(a);
    env->fail_next(env, a, "publish", 1, PARTI_ERR_NO_RESPONDERS);
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", NULL, 0, "x", 1, &pa, CONF_TO), PARTI_ERR_NO_RESPONDERS);
    CONF_OK(a->vt->publish(a->self, "orders.a", NULL, 0, "x", 1, &pa, CONF_TO));
    cr_assert_gt(pa.stream_seq, 0);
}

Test(faults, fail_next_consumer_upsert_then_upsert_works) {
    parti_transport *a;
    parti_consumer_config cc;
    parti_consumer_info ci;
    CONF_NEED_FAIL_NEXT();
    a = conf_connect();
    conf_orders(a);
    cc = conf_ccfg("ORDERS", "w1", LIST("orders.a"));
    env->fail_next(env, a, "consumer_upsert", 1, PARTI_ERR_TIMEOUT);
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_TIMEOUT);
    CONF_OK(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    ci = conf_cinfo(a, "ORDERS", "w1");
    cr_assert_str_eq(ci.filter_subjects[0], "orders.a");
    parti_consumer_info_free(&ci);
}

Test(faults, fail_next_fetch_next_then_a_new_pull_works) {
    parti_transport *a;
    parti_msg *m = NULL, raw;
    parti_err e;
    CONF_NEED_FAIL_NEXT();
    a = conf_connect();
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    env->fail_next(env, a, "fetch_next", 1, PARTI_ERR_MISSED_HEARTBEAT);
    CONF_OK(conf_fetch_start(a, "ORDERS", "w1", 1, 5000, 1000));
    memset(&raw, 0, sizeof raw);
    e = a->vt->fetch_next(a->self, "ORDERS", "w1", &raw, CONF_POLL);
    if (e == PARTI_ERR_OK) a->vt->msg_release(a->self, &raw);
    CONF_EXPECT(e, PARTI_ERR_MISSED_HEARTBEAT);
    conf_pub(a, "orders.a", "after");
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    cr_assert_eq(m->stream_seq, 1);
    conf_release(a, m);
}

Test(faults, fail_next_works_for_every_request_op) {
    parti_transport *a;
    parti_stream_info si;
    parti_consumer_info ci;
    parti_kv_entry e;
    parti_pub_ack pa;
    parti_msg raw;
    char **keys = NULL;
    int n = 0;
    uint64_t r, rk;
    CONF_NEED_FAIL_NEXT();
    a = conf_connect();
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    conf_kv_open(a, "cfg");
    rk = conf_put(a, "cfg", "k", "v");
#define CONF_FAIL_ONCE(op, call)                                                                                  \
    do {                                                                                                          \
        env->fail_next(env, a, op, 1, PARTI_ERR_TIMEOUT);                                                         \
        CONF_EXPECT(call, PARTI_ERR_TIMEOUT);                                                                     \
    } while (0)
    memset(&si, 0, sizeof si);
    memset(&ci, 0, sizeof ci);
    memset(&e, 0, sizeof e);
    CONF_FAIL_ONCE("stream_info", a->vt->stream_info(a->self, "ORDERS", &si, CONF_TO));
    si = conf_stream_info(a, "ORDERS");
    parti_stream_info_free(&si);
    CONF_FAIL_ONCE("consumer_info", a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_TO));
    ci = conf_cinfo(a, "ORDERS", "w1");
    parti_consumer_info_free(&ci);
    CONF_FAIL_ONCE("kv_put", a->vt->kv_put(a->self, "cfg", "p", "v", 1, &r, CONF_TO));
    conf_put(a, "cfg", "p", "v");
    CONF_FAIL_ONCE("kv_create", conf_create(a, "cfg", "c", "v", &r));
    CONF_OK(conf_create(a, "cfg", "c2", "v", &r));
    rk = conf_expect_value(a, "cfg", "k", "v");
    CONF_FAIL_ONCE("kv_update", conf_update(a, "cfg", "k", "v2", rk, &r));
    CONF_OK(conf_get(a, "cfg", "k", 0, &e)); /* a TIMEOUT may or may not have written */
    rk = e.revision;
    parti_kv_entry_free(&e);
    CONF_OK(conf_update(a, "cfg", "k", "v3", rk, &r));
    CONF_FAIL_ONCE("kv_keys", a->vt->kv_keys(a->self, "cfg", &keys, &n, CONF_TO));
    cr_assert(conf_keys_contain(a, "cfg", "k"));
    CONF_FAIL_ONCE("kv_delete", a->vt->kv_delete(a->self, "cfg", "p", CONF_TO));
    CONF_OK(a->vt->kv_delete(a->self, "cfg", "p", CONF_TO));
    CONF_FAIL_ONCE("publish", a->vt->publish(a->self, "orders.a", NULL, 0, "x", 1, &pa, CONF_TO));
    conf_pub(a, "orders.a", "x");
    CONF_FAIL_ONCE("consumer_delete", a->vt->consumer_delete(a->self, "ORDERS", "w1", CONF_TO));
    CONF_OK(a->vt->consumer_delete(a->self, "ORDERS", "w1", CONF_TO));
    memset(&raw, 0, sizeof raw);
    CONF_FAIL_ONCE("stream_get_next", a->vt->stream_get_next(a->self, "ORDERS", "orders.a", 1, &raw, CONF_TO));
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.a", 1), 1);
#undef CONF_FAIL_ONCE
}

Test(faults, partition_cuts_a_client_off_until_healed) {
    parti_transport *a, *b;
    parti_kv_entry e;
    parti_pub_ack pa;
    parti_consumer_info ci;
    parti_msg raw;
    if (!conformance_env()->partition) cr_skip_test("env %s cannot partition a client", conformance_env()->name);
    a = conf_connect();
    b = conf_connect();
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "before");
    env->partition(env, a, 1);
    memset(&e, 0, sizeof e);
    CONF_EXPECT2(a->vt->kv_get(a->self, "cfg", "k", 0, &e, CONF_SHORT_TO), PARTI_ERR_NOT_CONNECTED,
                 PARTI_ERR_TIMEOUT);
    CONF_EXPECT2(a->vt->publish(a->self, "orders.a", NULL, 0, "x", 1, &pa, CONF_SHORT_TO), PARTI_ERR_NOT_CONNECTED,
                 PARTI_ERR_TIMEOUT);
    memset(&ci, 0, sizeof ci);
    CONF_EXPECT2(a->vt->consumer_info(a->self, "ORDERS", "w1", &ci, CONF_SHORT_TO), PARTI_ERR_NOT_CONNECTED,
                 PARTI_ERR_TIMEOUT);
    memset(&raw, 0, sizeof raw);
    CONF_EXPECT2(a->vt->stream_get_next(a->self, "ORDERS", "orders.a", 1, &raw, CONF_SHORT_TO),
                 PARTI_ERR_NOT_CONNECTED, PARTI_ERR_TIMEOUT);
    /* the others keep working */
    conf_put(b, "cfg", "k", "during");
    env->partition(env, a, 0);
    conf_wait_kv_get(a, "cfg", "k", PARTI_ERR_OK, 10000);
    conf_expect_value(a, "cfg", "k", "during");
    conf_pub(a, "orders.a", "after");
}

Test(faults, server_restart_keeps_durable_consumer_position_and_kv) {
    parti_transport *a;
    parti_consumer_info ci;
    conf_delivery d[8];
    parti_err end;
    parti_fetch_opts o = conf_opts(8, 1000, 0);
    parti_msg *m;
    parti_stream_info si;
    uint64_t rk, created;
    if (!conformance_env()->restart_server) cr_skip_test("env %s cannot restart the server", conformance_env()->name);
    a = conf_connect();
    conf_stream_full(a, "DURABLE", LIST("dur.>"), 0, 0, 0);
    conf_kv_open_full(a, "state", 1, 0, 0, 0);
    conf_pub(a, "dur.a", "1");
    conf_pub(a, "dur.a", "2");
    conf_consumer(a, "DURABLE", "w1", LIST("dur.>"), 30000);
    cr_assert_eq(conf_pull_once(a, "DURABLE", "w1", &o, PARTI_ACK_ACK, conf_now(a), d, 8, &end), 2);
    conf_wait_acked(a, "DURABLE", "w1", 2, 0);
    rk = conf_put(a, "state", "k", "kept");
    si = conf_stream_info(a, "DURABLE");
    created = si.created_ns;
    parti_stream_info_free(&si);
    env->restart_server(env);
    conf_wait_kv_get(a, "state", "k", PARTI_ERR_OK, 15000);
    cr_assert_eq(conf_expect_value(a, "state", "k", "kept"), rk);
    si = conf_stream_info(a, "DURABLE");
    cr_assert_eq(si.created_ns, created, "a restart keeps a file stream's creation time");
    parti_stream_info_free(&si);
    ci = conf_cinfo(a, "DURABLE", "w1");
    cr_assert_eq(ci.delivered_stream_seq, 2, "position after restart: %llu", (unsigned long long)ci.delivered_stream_seq);
    cr_assert_eq(ci.ack_floor_stream_seq, 2);
    cr_assert_eq(ci.filter_count, 1);
    cr_assert_str_eq(ci.filter_subjects[0], "dur.>");
    parti_consumer_info_free(&ci);
    cr_assert_eq(conf_pub(a, "dur.a", "3"), 3);
    m = conf_fetch_one(a, "DURABLE", "w1", 5000);
    cr_assert_eq(m->stream_seq, 3, "after a restart the consumer continues from its position");
    conf_release(a, m);
}

/* ======================================================================== */
/* bad_input                                                                 */
/* ======================================================================== */

Test(bad_input, stream_ops_refuse_null_arguments) {
    parti_transport *a = conf_connect();
    parti_stream_config sc;
    parti_stream_info si;
    memset(&si, 0, sizeof si);
    CONF_EXPECT(a->vt->stream_create(a->self, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    memset(&sc, 0, sizeof sc);
    sc.subjects = SUBJ("orders.>");
    sc.subject_count = 1;
    CONF_EXPECT(a->vt->stream_create(a->self, &sc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    sc.name = "ORDERS";
    sc.subjects = NULL;
    CONF_EXPECT(a->vt->stream_create(a->self, &sc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->stream_info(a->self, NULL, &si, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    conf_orders(a);
    CONF_EXPECT(a->vt->stream_info(a->self, "ORDERS", NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->stream_delete(a->self, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    si = conf_stream_info(a, "ORDERS");
    parti_stream_info_free(&si);
}

Test(bad_input, stream_create_with_a_null_subject_is_invalid_argument) {
    parti_transport *a = conf_connect();
    parti_stream_config sc;
    parti_stream_info si;
    static const char *const null_subject[] = {"orders.>", NULL};
    memset(&sc, 0, sizeof sc);
    sc.name = "ORDERS";
    sc.subjects = null_subject;
    sc.subject_count = 2;
    CONF_EXPECT(a->vt->stream_create(a->self, &sc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    memset(&si, 0, sizeof si);
    CONF_EXPECT(a->vt->stream_info(a->self, "ORDERS", &si, CONF_TO), PARTI_ERR_STREAM_NOT_FOUND);
}

Test(bad_input, ack_with_an_unknown_kind_is_invalid_argument) {
    parti_transport *a = conf_connect();
    parti_msg *m;
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    m = conf_fetch_one(a, "ORDERS", "w1", 5000);
    CONF_EXPECT(a->vt->ack(a->self, m, (parti_ack_kind)99, 0, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->ack(a->self, m, (parti_ack_kind)-1, 0, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_OK(a->vt->ack(a->self, m, PARTI_ACK_ACK, 0, CONF_TO));
    conf_release(a, m);
    conf_wait_acked(a, "ORDERS", "w1", 1, 0);
}

Test(bad_input, kv_ops_refuse_null_arguments) {
    parti_transport *a = conf_connect();
    parti_kv_config kc;
    parti_kv_entry e;
    parti_kv_watcher *w;
    uint64_t r;
    char **keys = NULL;
    int n = 0;
    memset(&kc, 0, sizeof kc);
    memset(&e, 0, sizeof e);
    CONF_EXPECT(a->vt->kv_open(a->self, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_open(a->self, &kc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    conf_kv_open(a, "cfg");
    CONF_EXPECT(a->vt->kv_create(a->self, NULL, "k", "v", 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_create(a->self, "cfg", NULL, "v", 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_create(a->self, "cfg", "k", NULL, 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_update(a->self, NULL, "k", "v", 1, 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_update(a->self, "cfg", NULL, "v", 1, 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_update(a->self, "cfg", "k", NULL, 1, 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_put(a->self, NULL, "k", "v", 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_put(a->self, "cfg", NULL, "v", 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_put(a->self, "cfg", "k", NULL, 1, &r, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_get(a->self, NULL, "k", 0, &e, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_get(a->self, "cfg", NULL, 0, &e, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    conf_put(a, "cfg", "k", "v");
    CONF_EXPECT(a->vt->kv_get(a->self, "cfg", "k", 0, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_delete(a->self, NULL, "k", CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_delete(a->self, "cfg", NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_keys(a->self, NULL, &keys, &n, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_keys(a->self, "cfg", NULL, &n, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_keys(a->self, "cfg", &keys, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_watch(a->self, NULL, "", &w, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_watch(a->self, "cfg", "", NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    w = conf_watch_start(a, "cfg", "");
    CONF_EXPECT(a->vt->kv_watch_next(a->self, NULL, &e), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->kv_watch_next(a->self, w, NULL), PARTI_ERR_INVALID_ARGUMENT);
    /* nothing was written by the refused calls */
    conf_expect_value(a, "cfg", "k", "v");
}

Test(bad_input, consumer_ops_refuse_null_arguments) {
    parti_transport *a = conf_connect();
    parti_consumer_config cc;
    parti_consumer_info ci;
    static const char *const null_filter[] = {NULL};
    memset(&ci, 0, sizeof ci);
    conf_orders(a);
    CONF_EXPECT(a->vt->consumer_upsert(a->self, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    cc = conf_ccfg(NULL, "w1", LIST("orders.a"));
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    cc = conf_ccfg("ORDERS", NULL, LIST("orders.a"));
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    cc = conf_ccfg("ORDERS", "w1", NULL, 1);
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    cc = conf_ccfg("ORDERS", "w1", null_filter, 1);
    CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    cc = conf_ccfg("ORDERS", "w1", SUBJ("orders.a"), -1);
    CONF_EXPECT_INVALID_INPUT(a->vt->consumer_upsert(a->self, &cc, CONF_TO));
    CONF_EXPECT(a->vt->consumer_info(a->self, NULL, "w1", &ci, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", NULL, &ci, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", "w1", NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->consumer_delete(a->self, NULL, "w1", CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->consumer_delete(a->self, "ORDERS", NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    ci = conf_cinfo(a, "ORDERS", "w1");
    parti_consumer_info_free(&ci);
}

Test(bad_input, pull_ops_refuse_null_arguments) {
    parti_transport *a = conf_connect();
    parti_fetch_opts o = conf_opts(1, 1000, 0);
    parti_msg raw;
    memset(&raw, 0, sizeof raw);
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    CONF_EXPECT(a->vt->fetch_start(a->self, NULL, "w1", &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", NULL, &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", "w1", NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_OK(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO));
    CONF_EXPECT(a->vt->fetch_next(a->self, "ORDERS", "w1", NULL, CONF_POLL), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->fetch_next(a->self, NULL, "w1", &raw, CONF_POLL), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->fetch_next(a->self, "ORDERS", NULL, &raw, CONF_POLL), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->ack(a->self, NULL, PARTI_ACK_ACK, 0, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
}

Test(bad_input, publish_refuses_null_arguments) {
    parti_transport *a = conf_connect();
    parti_pub_ack pa;
    parti_header h[1];
    parti_stream_info si;
    h[0].name = NULL;
    h[0].value = "v";
    conf_orders(a);
    CONF_EXPECT(a->vt->publish(a->self, NULL, NULL, 0, "x", 1, &pa, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", NULL, 0, NULL, 5, &pa, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", NULL, 2, "x", 1, &pa, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", h, 1, "x", 1, &pa, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->publish(a->self, "orders.a", h, -1, "x", 1, &pa, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    si = conf_stream_info(a, "ORDERS");
    cr_assert_eq(si.messages, 0, "a refused publish must not store anything");
    parti_stream_info_free(&si);
}

Test(bad_input, stream_get_next_refuses_bad_arguments) {
    parti_transport *a = conf_connect();
    parti_msg raw;
    memset(&raw, 0, sizeof raw);
    conf_orders(a);
    conf_pub(a, "orders.a", "x");
    CONF_EXPECT(a->vt->stream_get_next(a->self, NULL, "orders.a", 1, &raw, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->stream_get_next(a->self, "ORDERS", NULL, 1, &raw, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->stream_get_next(a->self, "ORDERS", "orders.a", 1, NULL, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->stream_get_next(a->self, "ORDERS", "orders.a", 0, &raw, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    CONF_EXPECT(a->vt->stream_get_next(a->self, "a.b", "orders.a", 1, &raw, CONF_TO), PARTI_ERR_INVALID_NAME);
    CONF_EXPECT(a->vt->stream_get_next(a->self, "ORDERS", "orders..a", 1, &raw, CONF_TO), PARTI_ERR_INVALID_SUBJECT);
    CONF_EXPECT(a->vt->stream_get_next(a->self, "ORDERS", "", 1, &raw, CONF_TO), PARTI_ERR_INVALID_SUBJECT);
    cr_assert_null(raw.handle);
    cr_assert_eq(conf_get_next_seq(a, "ORDERS", "orders.a", 1), 1);
}

Test(bad_input, release_and_watch_stop_accept_null) {
    parti_transport *a = conf_connect();
    a->vt->msg_release(a->self, NULL);
    a->vt->kv_watch_stop(a->self, NULL);
    conf_kv_open(a, "cfg");
    conf_put(a, "cfg", "k", "still works");
}

Test(bad_input, fetch_options_out_of_range_are_invalid_argument) {
    parti_transport *a = conf_connect();
    parti_fetch_opts o;
    conf_orders(a);
    conf_consumer(a, "ORDERS", "w1", LIST("orders.a"), 30000);
    o = conf_opts(0, 1000, 0);
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    o = conf_opts(-3, 1000, 0);
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    o = conf_opts(1, 5, 0);
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    o = conf_opts(1, 1000, 600); /* heartbeat must be <= expires / 2 */
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    o = conf_opts(1, 1000, 0);
    o.max_bytes = -1;
    CONF_EXPECT(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO), PARTI_ERR_INVALID_ARGUMENT);
    o = conf_opts(1, 1000, 500);
    CONF_OK(a->vt->fetch_start(a->self, "ORDERS", "w1", &o, CONF_TO));
}

Test(bad_input, invalid_bucket_names_are_invalid_name) {
    parti_transport *a = conf_connect();
    parti_kv_config kc;
    int i;
    memset(&kc, 0, sizeof kc);
    for (i = 0; i < CONF_N_BAD_NAMES; i++) {
        parti_kv_entry e;
        uint64_t r;
        char **keys = NULL;
        int n = 0;
        kc.bucket = conf_bad_names[i];
        CONF_EXPECT(a->vt->kv_open(a->self, &kc, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(conf_get(a, conf_bad_names[i], "k", 0, &e), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->kv_put(a->self, conf_bad_names[i], "k", "v", 1, &r, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->kv_keys(a->self, conf_bad_names[i], &keys, &n, CONF_TO), PARTI_ERR_INVALID_NAME);
    }
}

Test(bad_input, invalid_consumer_names_are_invalid_name) {
    parti_transport *a = conf_connect();
    int i;
    conf_orders(a);
    for (i = 0; i < CONF_N_BAD_NAMES; i++) {
        parti_consumer_info ci;
        parti_consumer_config cc = conf_ccfg("ORDERS", conf_bad_names[i], LIST("orders.a"));
        memset(&ci, 0, sizeof ci);
        CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->consumer_info(a->self, "ORDERS", conf_bad_names[i], &ci, CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(a->vt->consumer_delete(a->self, "ORDERS", conf_bad_names[i], CONF_TO), PARTI_ERR_INVALID_NAME);
        CONF_EXPECT(conf_fetch_start(a, "ORDERS", conf_bad_names[i], 1, 1000, 0), PARTI_ERR_INVALID_NAME);
        cc = conf_ccfg(conf_bad_names[i], "w1", LIST("orders.a"));
        CONF_EXPECT(a->vt->consumer_upsert(a->self, &cc, CONF_TO), PARTI_ERR_INVALID_NAME);
    }
}

Test(bad_input, kv_open_refuses_history_above_64) {
    parti_transport *a = conf_connect();
    parti_kv_config kc;
    parti_kv_entry e;
    memset(&kc, 0, sizeof kc);
    kc.bucket = "cfg";
    kc.history = 65;
    kc.memory_storage = 1;
    CONF_EXPECT_INVALID_INPUT(a->vt->kv_open(a->self, &kc, CONF_TO));
    CONF_EXPECT(conf_get(a, "cfg", "k", 0, &e), PARTI_ERR_BUCKET_NOT_FOUND);
    kc.history = 64;
    CONF_OK(a->vt->kv_open(a->self, &kc, CONF_TO));
}

/* Fuzz target: random sequences of transport operations and faults against
 * the fake NATS, checking its invariants after every step:
 *   - revisions of a bucket strictly increase (returned and watched)
 *   - an acked (or terminated) message is never delivered again
 *   - a first delivery always matches the consumer's filters at that moment
 *   - no message is delivered more than max_deliver times
 *   - a key whose TTL passed is gone for get
 * Input bytes are read as opcodes and operands; running out ends the run. */
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC /* the fake needs no nats.c */
#include "parti.h"
#include "parti_nats.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)
#define NCLIENT 2
#define NCONS 2
#define NKEYS 3
#define TTL 5000
#define MAX_DELIVER 4

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static int next(input *in) {
    if (!in->n) return -1;
    in->n--;
    return *in->p++;
}

typedef struct {
    int exists;
    unsigned mask;             /* filters: bit i = "s.i" */
    uint8_t done[256];         /* acked or terminated seqs (seq < 256) */
} consumer_model;

typedef struct {
    uint64_t last_rev;         /* highest revision seen anywhere */
    uint64_t written_at[NKEYS];/* last successful write time, 0 = none/deleted */
} bucket_model;

static const char *const subjects[4] = {"s.0", "s.1", "s.2", "s.3"};
static const char *const cons_names[NCONS] = {"c0", "c1"};
static const char *const keys[NKEYS] = {"k0", "k1", "k2"};

static void note_rev(bucket_model *b, uint64_t rev) {
    CHECK(rev > b->last_rev);
    b->last_rev = rev;
}

static void upsert(parti_transport *t, consumer_model *cm, int which, unsigned mask) {
    const char *f[4];
    int n = 0, i;
    parti_consumer_config cc;
    for (i = 0; i < 4; i++)
        if (mask & (1u << i)) f[n++] = subjects[i];
    if (!n) return;
    memset(&cc, 0, sizeof cc);
    cc.stream = "s";
    cc.durable = cons_names[which];
    cc.filter_subjects = f;
    cc.filter_count = n;
    cc.ack_wait_ms = 1000;
    cc.max_deliver = MAX_DELIVER;
    cc.max_ack_pending = 3;
    if (t->vt->consumer_upsert(t->self, &cc, 1000) == PARTI_ERR_OK) {
        if (!cm[which].exists) memset(cm[which].done, 0, sizeof cm[which].done);
        cm[which].exists = 1;
        cm[which].mask = mask;
    }
}

static void on_message(parti_transport *t, consumer_model *c, const parti_msg *m, int how) {
    CHECK(m->stream_seq < 256);
    CHECK(!c->done[m->stream_seq]);
    CHECK(m->delivery_count >= 1 && m->delivery_count <= MAX_DELIVER);
    if (m->delivery_count == 1) {
        int i, ok = 0;
        for (i = 0; i < 4; i++) ok |= (c->mask & (1u << i)) && strcmp(m->subject, subjects[i]) == 0;
        CHECK(ok);
    }
    how %= 5;
    if (how == 4) return; /* no ack: redelivered after ack_wait */
    if (t->vt->ack(t->self, m, (parti_ack_kind)how, 300, 1000) == PARTI_ERR_OK &&
        (how == PARTI_ACK_ACK || how == PARTI_ACK_TERM))
        c->done[m->stream_seq] = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parti_fake_world *w;
    parti_fake_options o;
    parti_transport t[NCLIENT];
    parti_kv_watcher *wt[NCLIENT];
    consumer_model cm[NCONS];
    bucket_model bm;
    input in;
    int i, op, steps = 0, cut[NCLIENT] = {0, 0};
    const char *stream_subjects[] = {"s.>"};
    parti_stream_config sc;
    parti_kv_config kc;

    in.p = data;
    in.n = size;
    memset(&o, 0, sizeof o);
    o.seed = 7;
    o.no_log = 1;
    o.no_expiry_markers = size > 0 && (data[0] & 1);
    memset(cm, 0, sizeof cm);
    memset(&bm, 0, sizeof bm);
    CHECK(parti_fake_world_create(&w, &o) == PARTI_ERR_OK);
    for (i = 0; i < NCLIENT; i++) CHECK(parti_fake_connect(w, NULL, &t[i]) == PARTI_ERR_OK);
    memset(&sc, 0, sizeof sc);
    sc.name = "s";
    sc.subjects = stream_subjects;
    sc.subject_count = 1;
    CHECK(t[0].vt->stream_create(t[0].self, &sc, 1000) == PARTI_ERR_OK);
    memset(&kc, 0, sizeof kc);
    kc.bucket = "b";
    kc.history = 3;
    kc.ttl_ms = TTL;
    CHECK(t[0].vt->kv_open(t[0].self, &kc, 1000) == PARTI_ERR_OK);
    for (i = 0; i < NCLIENT; i++) CHECK(t[i].vt->kv_watch(t[i].self, "b", "", &wt[i], 1000) == PARTI_ERR_OK);

    while ((op = next(&in)) >= 0 && steps++ < 2000) {
        int a = next(&in), b = next(&in);
        int ci = (a < 0 ? 0 : a) % NCLIENT, k = (b < 0 ? 0 : b) % NCONS;
        parti_transport *tc = &t[ci];
        uint64_t rev = 0;
        parti_err e;
        if (a < 0 || b < 0) break;
        switch (op % 12) {
        case 0: { /* publish */
            parti_pub_ack pa;
            if (tc->vt->publish(tc->self, subjects[b % 4], NULL, 0, "x", 1, &pa, 1000) == PARTI_ERR_OK)
                CHECK(pa.stream_seq >= 1);
            break;
        }
        case 1: upsert(tc, cm, k, (unsigned)(a >> 1) & 15u); break;
        case 2: {
            parti_fetch_opts fo;
            fo.batch = 1 + (a % 8);
            fo.max_bytes = 0;
            fo.expires_ms = 2000;
            fo.heartbeat_ms = 500;
            tc->vt->fetch_start(tc->self, "s", cons_names[k], &fo, 1000);
            break;
        }
        case 3: { /* drain what the pull gives within a timeout */
            parti_msg m;
            int guard = 0;
            while (guard++ < 16 && (e = tc->vt->fetch_next(tc->self, "s", cons_names[k], &m, (uint32_t)(a * 10))) ==
                                       PARTI_ERR_OK) {
                on_message(tc, &cm[k], &m, b + guard);
                tc->vt->msg_release(tc->self, &m);
            }
            break;
        }
        case 4: { /* KV writes */
            const char *key = keys[a % NKEYS];
            parti_kv_entry ent;
            switch (b % 4) {
            case 0: e = tc->vt->kv_create(tc->self, "b", key, "v", 1, &rev, 1000); break;
            case 1:
                e = tc->vt->kv_get(tc->self, "b", key, 0, &ent, 1000);
                if (e == PARTI_ERR_OK) {
                    uint64_t r = ent.revision;
                    parti_kv_entry_free(&ent);
                    e = tc->vt->kv_update(tc->self, "b", key, "w", 1, (b & 4) ? r : r + 1, &rev, 1000);
                    if (b & 4) CHECK(e != PARTI_ERR_WRONG_REVISION || cut[ci]);
                    else CHECK(e != PARTI_ERR_OK);
                }
                break;
            case 2: e = tc->vt->kv_put(tc->self, "b", key, "p", 1, &rev, 1000); break;
            default:
                e = tc->vt->kv_delete(tc->self, "b", key, 1000);
                if (e == PARTI_ERR_OK) bm.written_at[a % NKEYS] = 0;
                e = PARTI_ERR_INTERNAL; /* no revision to check */
                break;
            }
            if (e == PARTI_ERR_OK) {
                note_rev(&bm, rev);
                bm.written_at[a % NKEYS] = parti_fake_now(w);
            }
            break;
        }
        case 5: { /* TTL: a key written longer than TTL ago is gone */
            parti_kv_entry ent;
            int ki = a % NKEYS;
            e = tc->vt->kv_get(tc->self, "b", keys[ki], 0, &ent, 1000);
            if (e == PARTI_ERR_OK) {
                CHECK(bm.written_at[ki] && bm.written_at[ki] + TTL > parti_fake_now(w));
                parti_kv_entry_free(&ent);
            }
            break;
        }
        case 6: parti_fake_advance(w, (uint64_t)a * 20); break;
        case 7: { /* watched revisions increase */
            parti_kv_entry ent;
            uint64_t last = 0;
            while (tc->vt->kv_watch_next(tc->self, wt[ci], &ent) == PARTI_ERR_OK) {
                CHECK(ent.revision > last);
                last = ent.revision;
                parti_kv_entry_free(&ent);
            }
            break;
        }
        case 8: /* faults */
            switch (b % 6) {
            case 0:
                if (parti_fake_delete_consumer(w, "s", cons_names[k]) == PARTI_ERR_OK) cm[k].exists = 0;
                break;
            case 1: parti_fake_restart(w); break;
            case 2:
                cut[ci] = !cut[ci];
                parti_fake_partition(w, tc, cut[ci]);
                break;
            case 3: parti_fake_drop_heartbeats(w, tc, a & 1); break;
            case 4: parti_fake_fail_next(w, tc, "fetch_next", a % 3, PARTI_ERR_TIMEOUT); break;
            default:
                if (parti_fake_expire_key(w, "b", keys[a % NKEYS]) == PARTI_ERR_OK) bm.written_at[a % NKEYS] = 0;
                break;
            }
            break;
        case 9: {
            parti_consumer_info info;
            if (tc->vt->consumer_info(tc->self, "s", cons_names[k], &info, 1000) == PARTI_ERR_OK) {
                CHECK(cm[k].exists);
                CHECK(info.filter_count >= 1 && info.filter_count <= 4);
                parti_consumer_info_free(&info);
            }
            break;
        }
        case 10: parti_fake_skew_clock(w, tc, (int64_t)a - 128); break;
        default: {
            char **ks;
            int n;
            if (tc->vt->kv_keys(tc->self, "b", &ks, &n, 1000) == PARTI_ERR_OK) {
                for (i = 1; i < n; i++) CHECK(strcmp(ks[i - 1], ks[i]) < 0);
                parti_strings_free(ks, n);
            }
            break;
        }
        }
    }
    for (i = 0; i < NCLIENT; i++) {
        t[i].vt->kv_watch_stop(t[i].self, wt[i]);
        parti_fake_disconnect(&t[i]);
    }
    parti_fake_world_destroy(w);
    return 0;
}

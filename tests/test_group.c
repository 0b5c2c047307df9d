/* Tests of the group (parti_create / parti_poll / parti_leave) on the fake
 * NATS: several workers in one process, virtual time, many seeds. */
#include "parti.h"
#include "parti_nats.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NP 12
#define MAXW 12

static const char *const gkeys[NP][1] = {{"p0"}, {"p1"}, {"p2"}, {"p3"}, {"p4"},  {"p5"},
                                         {"p6"}, {"p7"}, {"p8"}, {"p9"}, {"p10"}, {"p11"}};
static parti_partition gparts[NP];
static parti_fake_world *gw;
static parti_transport gob;
static parti_config gcfg;
static parti_options gopts;

typedef struct worker {
    parti_transport t;
    parti *p;
    int alive;
    int handled;
    int events[16];
    uint32_t slow_ms;      /* each handler call takes this long (virtual) */
    int after_lease;       /* handler calls that began past the worker's lease */
    int revoked, assigned, lost; /* partitions the rebalance callbacks named */
    int cb_order_bad;      /* a message of a partition before its on_partitions_assigned */
    int mine[NP];          /* per partition: assigned (1) by the callbacks, not yet revoked or lost */
} worker;
/* per partition: the last generation a handler saw, and sequences in order */
static uint64_t last_gen[NP];
static uint64_t last_seq[NP];
static int gen_went_down, seq_went_down, bad_partition;
static worker ws[MAXW];
/* per message (by stream sequence): which workers handled it */
static int handled_by[4096][MAXW];

static parti_verdict g_on_message(void *user, const parti_msg *m, uint32_t *nak) {
    worker *wk = (worker *)user;
    (void)nak;
    wk->handled++;
    if (wk->p && !parti_lease_valid(wk->p)) wk->after_lease++;
    if (m->partition < 0 || m->partition >= NP || strcmp(m->subject + 7, gkeys[m->partition][0]) != 0) {
        bad_partition++;
    } else {
        /* the fencing token never goes down; order per partition holds */
        if (m->generation < last_gen[m->partition]) gen_went_down++;
        last_gen[m->partition] = m->generation;
        if (m->stream_seq < last_seq[m->partition]) seq_went_down++;
        last_seq[m->partition] = m->stream_seq;
        if (!wk->mine[m->partition]) wk->cb_order_bad++;
    }
    if (m->stream_seq < 4096) handled_by[m->stream_seq][wk - ws]++;
    if (wk->slow_ms) parti_fake_advance(gw, wk->slow_ms);
    return PARTI_ACK;
}

static void g_on_event(void *user, const parti_event *ev) {
    worker *wk = (worker *)user;
    int k = (int)ev->kind - 100;
    cr_assert(ev->worker_id && ev->detail);
    if (k >= 0 && k < 16) wk->events[k]++;
}

static void g_cb(worker *wk, const int *parts, int n, int *counter, int value) {
    int i;
    *counter += n;
    for (i = 0; i < n; i++)
        if (parts[i] >= 0 && parts[i] < NP) wk->mine[parts[i]] = value;
}
static void g_revoked(void *user, const int *parts, int n) { g_cb((worker *)user, parts, n, &((worker *)user)->revoked, 0); }
static void g_assigned(void *user, const int *parts, int n) { g_cb((worker *)user, parts, n, &((worker *)user)->assigned, 1); }
static void g_lost(void *user, const int *parts, int n) { g_cb((worker *)user, parts, n, &((worker *)user)->lost, 0); }

/* While one worker blocks in a call that waits (parti_leave), the fake's
 * wait hook runs the others, as their own processes would run. */
static int hook_on, hook_busy, hook_skip = -1;
static void g_wait_hook(void *user, uint64_t until, int wakeable) {
    int i, guard;
    (void)user;
    (void)wakeable;
    if (hook_busy || hook_skip < 0) { /* (a wait of one of the others: time just moves) */
        if (until > parti_fake_now(gw)) parti_fake_advance(gw, until - parti_fake_now(gw));
        return;
    }
    hook_busy = 1;
    for (guard = 0; guard < 100000 && parti_fake_now(gw) < until; guard++) {
        uint64_t before = parti_fake_now(gw);
        for (i = 0; i < MAXW; i++)
            if (i != hook_skip && ws[i].alive && ws[i].p) parti_poll(ws[i].p, 1);
        if (parti_fake_now(gw) == before) parti_fake_advance(gw, 1);
    }
    hook_busy = 0;
}

static void g_world(uint64_t seed) {
    static const char *const subs[] = {"orders.>"};
    parti_fake_options fo;
    parti_stream_config sc;
    int i;
    memset(ws, 0, sizeof ws);
    memset(handled_by, 0, sizeof handled_by);
    memset(last_gen, 0, sizeof last_gen);
    memset(last_seq, 0, sizeof last_seq);
    gen_went_down = seq_went_down = bad_partition = 0;
    for (i = 0; i < NP; i++) {
        gparts[i].keys = gkeys[i];
        gparts[i].key_count = 1;
        gparts[i].weight = 1;
    }
    memset(&fo, 0, sizeof fo);
    fo.seed = seed;
    if (hook_on) fo.wait = g_wait_hook;
    hook_skip = -1;
    cr_assert_eq(parti_fake_world_create(&gw, &fo), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(gw, "observer", &gob), PARTI_ERR_OK);
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    cr_assert_eq(gob.vt->stream_create(gob.self, &sc, 1000), PARTI_ERR_OK);
    memset(&gcfg, 0, sizeof gcfg);
    gcfg.stream = "orders";
    gcfg.subject_template = "orders.{0}";
    gcfg.partitions = gparts;
    gcfg.partition_count = NP;
    memset(&gopts, 0, sizeof gopts);
    gopts.on_message = g_on_message;
    gopts.on_event = g_on_event;
    gopts.on_partitions_revoked = g_revoked;
    gopts.on_partitions_assigned = g_assigned;
    gopts.on_partitions_lost = g_lost;
}

static void g_start(int i) {
    char name[16], msg[256];
    snprintf(name, sizeof name, "w%d", i);
    cr_assert_eq(parti_fake_connect(gw, name, &ws[i].t), PARTI_ERR_OK);
    gopts.user = &ws[i];
    cr_assert_eq(parti_create(&ws[i].p, &ws[i].t, &gcfg, &gopts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    ws[i].alive = 1;
}

/* Crash: no leave; the client is cut off so nothing it had keeps running. */
static void g_kill(int i) {
    parti_fake_partition(gw, &ws[i].t, 1);
    parti_destroy(ws[i].p);
    ws[i].p = NULL;
    ws[i].alive = 0;
}

static void g_teardown(void) {
    int i;
    for (i = 0; i < MAXW; i++) {
        if (ws[i].p) parti_destroy(ws[i].p);
        if (ws[i].t.vt) parti_fake_disconnect(&ws[i].t);
    }
    memset(ws, 0, sizeof ws);
    parti_fake_disconnect(&gob);
    parti_fake_world_destroy(gw);
    gw = NULL;
}

/* Runs every live worker for ms of virtual time in steps. */
static void g_run(uint64_t ms) {
    uint64_t end = parti_fake_now(gw) + ms;
    while (parti_fake_now(gw) < end) {
        int i;
        uint64_t before = parti_fake_now(gw);
        for (i = 0; i < MAXW; i++)
            if (ws[i].alive && ws[i].p) parti_poll(ws[i].p, 10);
        if (parti_fake_now(gw) == before) parti_fake_advance(gw, 1);
    }
}

/* Every partition owned by exactly one live worker, all on one version. */
static int g_assignment_ok(int expect_workers) {
    int owners[NP], i, j, n = 0, stable = 0;
    uint64_t v = 0;
    for (i = 0; i < NP; i++) owners[i] = 0;
    for (i = 0; i < MAXW; i++) {
        const int *o;
        int k;
        if (!ws[i].alive) continue;
        n++;
        k = parti_owned(ws[i].p, &o);
        if (v && parti_assignment_version_of(ws[i].p) != v) return 0;
        v = parti_assignment_version_of(ws[i].p);
        for (j = 0; j < k; j++) owners[o[j]]++;
        stable += parti_state_of(ws[i].p) == PARTI_STATE_STABLE;
    }
    if (n != expect_workers || stable != n) return 0;
    for (i = 0; i < NP; i++)
        if (owners[i] != 1) return 0;
    return 1;
}

/* A world of three settled workers on short timings (heartbeat 250 ms, TTL 1 s). */
static void g_start_three_fast(uint64_t seed, uint32_t op_timeout_ms) {
    int who;
    g_world(seed);
    gopts.heartbeat_ms = 250;
    gopts.member_ttl_ms = 1000;
    gopts.op_timeout_ms = op_timeout_ms;
    for (who = 0; who < 3; who++) g_start(who);
    g_run(5000);
    cr_assert(g_assignment_ok(3));
}

static int g_leaders(void) {
    int i, n = 0;
    for (i = 0; i < MAXW; i++) n += ws[i].alive && parti_is_leader(ws[i].p);
    return n;
}

TestSuite(group, .fini = g_teardown);

/* The assignment key as it is on the server. */
static void g_doc_entry(parti_kv_entry *e) {
    memset(e, 0, sizeof *e);
    cr_assert_eq(gob.vt->kv_get(gob.self, "parti-orders-assign", "assignment", 0, e, 1000), PARTI_ERR_OK);
}

/* Three workers, settled on one document; worker 1's rejected documents so far. */
static uint64_t g_three_settled(uint64_t seed) {
    int i;
    g_world(seed);
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(3));
    return parti_metrics_of(ws[1].p)->assignments_rejected.value;
}

Test(group, cold_start_of_one_three_and_ten_workers) {
    static const int sizes[] = {1, 3, 10};
    int s;
    uint64_t seed;
    for (s = 0; s < 3; s++)
        for (seed = 1; seed <= 5; seed++) {
            int i, ids[MAXW];
            g_world(seed * 31 + (uint64_t)s);
            for (i = 0; i < sizes[s]; i++) g_start(i);
            g_run(5000);
            cr_assert(g_assignment_ok(sizes[s]), "%d workers, seed %llu: no single assignment", sizes[s],
                      (unsigned long long)seed);
            cr_assert_eq(g_leaders(), 1);
            /* distinct IDs worker-0 .. worker-(n-1) */
            for (i = 0; i < sizes[s]; i++) ids[i] = atoi(parti_worker_id(ws[i].p) + 7);
            for (i = 0; i < sizes[s]; i++) {
                int j;
                cr_assert_lt(ids[i], sizes[s]);
                for (j = 0; j < i; j++) cr_assert_neq(ids[i], ids[j]);
            }
            g_teardown();
        }
}

static int g_find_leader(void) {
    int i;
    for (i = 0; i < MAXW; i++)
        if (ws[i].alive && parti_is_leader(ws[i].p)) return i;
    return -1;
}

static void g_publish_all(int per_partition) {
    int i, k;
    for (k = 0; k < per_partition; k++)
        for (i = 0; i < NP; i++) {
            char subj[32];
            parti_pub_ack pa;
            snprintf(subj, sizeof subj, "orders.p%d", i);
            cr_assert_eq(gob.vt->publish(gob.self, subj, NULL, 0, "x", 1, &pa, 1000), PARTI_ERR_OK);
        }
}

/* Messages 1..n each handled at least once; returns how many were handled twice or more. */
static int g_check_all_handled(int n) {
    int s, i, dups = 0;
    for (s = 1; s <= n; s++) {
        int total = 0;
        for (i = 0; i < MAXW; i++) total += handled_by[s][i];
        cr_assert_geq(total, 1, "message %d never handled", s);
        dups += total > 1;
    }
    return dups;
}

Test(group, scale_three_to_four_to_two_keeps_every_partition_owned_once) {
    uint64_t seed;
    for (seed = 1; seed <= 8; seed++) {
        int i;
        g_world(seed);
        for (i = 0; i < 3; i++) g_start(i);
        g_run(4000);
        cr_assert(g_assignment_ok(3), "seed %llu: 3 workers", (unsigned long long)seed);
        g_publish_all(5);
        g_start(3);
        g_run(3000);
        cr_assert(g_assignment_ok(4), "seed %llu: 4 workers", (unsigned long long)seed);
        cr_assert_eq(g_leaders(), 1);
        /* two graceful leaves (one may be the leader) */
        for (i = 0; i < 2; i++) {
            cr_assert_eq(parti_leave(ws[i].p, 2000), PARTI_ERR_OK);
            cr_assert_eq(parti_state_of(ws[i].p), PARTI_STATE_STOPPED);
            cr_assert_eq(parti_poll(ws[i].p, 10), PARTI_ERR_CLOSED);
            ws[i].alive = 0;
        }
        g_run(3000);
        cr_assert(g_assignment_ok(2), "seed %llu: 2 workers", (unsigned long long)seed);
        cr_assert_eq(g_leaders(), 1);
        g_publish_all(5);
        g_run(3000);
        g_check_all_handled(NP * 10);
        g_teardown();
    }
}

Test(group, a_crashed_worker_and_a_crashed_leader_are_replaced) {
    uint64_t seed;
    for (seed = 1; seed <= 8; seed++) {
        int i, leader, victim;
        uint64_t epoch0, t0;
        g_world(seed);
        for (i = 0; i < 4; i++) g_start(i);
        g_run(4000);
        cr_assert(g_assignment_ok(4));
        leader = g_find_leader();
        cr_assert_geq(leader, 0);
        epoch0 = parti_epoch(ws[leader].p);
        victim = (leader + 1) % 4;
        g_kill(victim);
        t0 = parti_fake_now(gw);
        g_run(7000); /* TTL 5 s + grace */
        cr_assert(g_assignment_ok(3), "seed %llu: after a worker crash", (unsigned long long)seed);
        g_publish_all(3);
        g_kill(leader);
        g_run(8000);
        cr_assert(g_assignment_ok(2), "seed %llu: after the leader crash", (unsigned long long)seed);
        cr_assert_eq(g_leaders(), 1);
        cr_assert_gt(parti_epoch(ws[g_find_leader()].p), epoch0, "a new leader has a higher epoch");
        g_publish_all(3);
        g_run(3000);
        g_check_all_handled(NP * 6);
        (void)t0;
        g_teardown();
    }
}

/* After the leader crashes, the worker elected in its place publishes
 * within the emergency grace of its election: its first look at the
 * members finds every one of them new to it, and those are not joins to
 * debounce with a planned window (which pushed the first document of a
 * new leader back by planned_window_ms: 500 ms here, not 100). */
Test(group, a_new_leader_rebalances_within_the_emergency_grace_of_its_election) {
    uint64_t seed;
    for (seed = 1; seed <= 20; seed++) {
        int leader, next = -1, guard;
        uint64_t elected = 0, published = 0, before = 0;
        g_three_settled(seed);
        leader = g_find_leader();
        cr_assert_geq(leader, 0);
        g_kill(leader);
        for (guard = 0; guard < 20000 && !published; guard++) {
            g_run(1);
            if (next < 0 && (next = g_find_leader()) >= 0) {
                elected = parti_fake_now(gw);
                before = parti_metrics_of(ws[next].p)->rebalances_success.value;
            }
            if (next >= 0 && parti_metrics_of(ws[next].p)->rebalances_success.value > before)
                published = parti_fake_now(gw);
        }
        cr_assert_geq(next, 0, "seed %llu: no new leader", (unsigned long long)seed);
        cr_assert_gt(published, 0, "seed %llu: the new leader never rebalanced", (unsigned long long)seed);
        cr_assert_leq(published - elected, 100 + 30, "seed %llu: first document %llu ms after the election "
                      "(emergency grace 100 ms, planned window 500 ms)", (unsigned long long)seed,
                      (unsigned long long)(published - elected));
        g_run(2000);
        cr_assert(g_assignment_ok(2), "seed %llu: two workers own everything", (unsigned long long)seed);
        g_teardown();
    }
}

static int g_total_events(int kind) {
    int i, n = 0;
    for (i = 0; i < MAXW; i++) n += ws[i].events[kind - 100];
    return n;
}

Test(group, events_say_who_leads_and_what_changed) {
    int i;
    g_world(9);
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert_eq(g_total_events(PARTI_EVENT_BECAME_LEADER), 1);
    cr_assert_eq(g_total_events(PARTI_EVENT_JOINED), 3);
    cr_assert_geq(g_total_events(PARTI_EVENT_ASSIGNMENT_CHANGED), 3);
    cr_assert_eq(g_total_events(PARTI_EVENT_REBALANCED), 1);
    /* seen by the leader: joins after its first look, never itself */
    cr_assert_leq(g_total_events(PARTI_EVENT_MEMBER_JOINED), 2);
    g_start(3);
    g_run(3000);
    cr_assert_eq(ws[g_find_leader()].events[PARTI_EVENT_MEMBER_JOINED - 100] - 0 >= 1, 1);
    cr_assert_str_eq(parti_state_name(PARTI_STATE_STABLE), "stable");
    cr_assert_str_eq(parti_event_name(PARTI_EVENT_BECAME_LEADER), "became_leader");
}

static int g_leader_metric_rebalances(void) {
    int l = g_find_leader();
    return l < 0 ? -1 : (int)parti_metrics_of(ws[l].p)->rebalances_success.value;
}

Test(group, a_join_moves_exactly_the_minimum_and_a_burst_is_one_rebalance) {
    uint64_t seed;
    for (seed = 1; seed <= 8; seed++) {
        int i, l, before;
        uint64_t moved0;
        g_world(seed);
        for (i = 0; i < 3; i++) g_start(i);
        g_run(4000);
        cr_assert(g_assignment_ok(3));
        l = g_find_leader();
        moved0 = parti_metrics_of(ws[l].p)->partitions_moved.value;
        before = g_leader_metric_rebalances();
        g_publish_all(4);
        g_run(1000); /* processed by their first owners */
        g_start(3); /* 3 -> 4: 12 partitions, caps 3: exactly 3 move */
        g_run(3000);
        cr_assert(g_assignment_ok(4));
        /* the newcomer starts where the previous owners stopped: no history replayed */
        cr_assert_eq(g_check_all_handled(NP * 4), 0, "seed %llu: messages handled twice", (unsigned long long)seed);
        cr_assert_eq(ws[3].handled, 0);
        cr_assert_eq(g_find_leader(), l);
        cr_assert_eq(parti_metrics_of(ws[l].p)->partitions_moved.value - moved0, 3, "seed %llu: moved %llu",
                     (unsigned long long)seed,
                     (unsigned long long)(parti_metrics_of(ws[l].p)->partitions_moved.value - moved0));
        cr_assert_eq(g_leader_metric_rebalances() - before, 1);
        /* a burst: four more join within 200 ms -> one rebalance */
        before = g_leader_metric_rebalances();
        for (i = 4; i < 8; i++) {
            g_start(i);
            g_run(50);
        }
        g_run(4000);
        cr_assert(g_assignment_ok(8));
        cr_assert_eq(g_leader_metric_rebalances() - before, 1, "seed %llu: %d rebalances for one burst",
                     (unsigned long long)seed, g_leader_metric_rebalances() - before);
        g_teardown();
    }
}

Test(group, a_worker_whose_id_was_taken_stops_at_once_and_rejoins) {
    uint64_t seed;
    for (seed = 1; seed <= 8; seed++) {
        char lost_id[32], key[48];
        int i, a = 1, handled_after;
        g_world(seed);
        for (i = 0; i < 2; i++) g_start(i);
        g_run(4000);
        cr_assert(g_assignment_ok(2));
        snprintf(lost_id, sizeof lost_id, "%s", parti_worker_id(ws[a].p));
        snprintf(key, sizeof key, "m.%s", lost_id);
        /* a's key expires behind its back and a newcomer claims that very ID */
        cr_assert_eq(parti_fake_expire_key(gw, "parti-orders-members", key), PARTI_ERR_OK);
        g_start(2);
        for (i = 0; i < 200 && strcmp(parti_worker_id(ws[2].p), lost_id) != 0; i++) parti_poll(ws[2].p, 5);
        cr_assert_str_eq(parti_worker_id(ws[2].p), lost_id, "the newcomer claims the lowest free ID");
        /* a's next heartbeat loses the compare-and-swap */
        for (i = 0; i < 300 && !ws[a].events[PARTI_EVENT_ID_LOST - 100]; i++) parti_poll(ws[a].p, 5);
        cr_assert_eq(ws[a].events[PARTI_EVENT_ID_LOST - 100], 1, "seed %llu", (unsigned long long)seed);
        cr_assert(parti_consumer_is_paused(parti_consumer_of(ws[a].p)), "processing must stop at once");
        cr_assert_eq(parti_metrics_of(ws[a].p)->worker_id_conflicts.value, 1);
        handled_after = ws[a].handled;
        /* its own number is taken: another only after one member TTL (the
         * loss may have been a lost bucket, whose other holders still run) */
        g_run(4000);
        cr_assert_str_eq(parti_worker_id(ws[a].p), "", "seed %llu: claimed another ID within the TTL",
                         (unsigned long long)seed);
        g_run(5000);
        cr_assert(g_assignment_ok(3), "seed %llu: after the rejoin", (unsigned long long)seed);
        cr_assert_str_neq(parti_worker_id(ws[a].p), lost_id);
        cr_assert_str_neq(parti_worker_id(ws[a].p), "");
        g_publish_all(2);
        g_run(3000);
        g_check_all_handled(NP * 2);
        cr_assert_geq(ws[a].handled, handled_after);
        g_teardown();
    }
}

Test(group, a_stale_leaders_assignment_is_ignored) {
    int i, me;
    char buf[4096];
    parti_kv_entry e;
    parti_assignment a;
    uint64_t v, rev = 0;
    size_t need = 0;
    g_world(3);
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(3));
    v = parti_assignment_version_of(ws[0].p);
    /* an old leader (epoch 1 below the current) writes a newer-looking version
     * giving everything to worker-0 */
    g_doc_entry(&e);
    memset(&a, 0, sizeof a);
    cr_assert_eq(parti_assignment_decode(&a, (const char *)e.value, e.len, NULL, 0), PARTI_ERR_OK);
    cr_assert_gt(a.epoch, 1);
    a.epoch -= 1;
    a.version += 100;
    me = parti_assignment_member_index(&a, "worker-0");
    cr_assert_geq(me, 0);
    for (i = 0; i < a.partition_count; i++) a.owner[i] = me;
    cr_assert_eq(parti_assignment_encode(&a, buf, sizeof buf, &need), PARTI_ERR_OK);
    cr_assert_eq(gob.vt->kv_update(gob.self, "parti-orders-assign", "assignment", buf, need - 1, e.revision, &rev, 1000),
                 PARTI_ERR_OK);
    parti_kv_entry_free(&e);
    parti_assignment_free(&a);
    g_run(3000);
    cr_assert(g_assignment_ok(3), "a lower epoch must not be applied");
    /* and the leader wrote a good document over it, the next version of its own */
    g_doc_entry(&e);
    memset(&a, 0, sizeof a);
    cr_assert_eq(parti_assignment_decode(&a, (const char *)e.value, e.len, NULL, 0), PARTI_ERR_OK);
    cr_assert_eq(a.epoch, parti_epoch(ws[0].p));
    cr_assert_eq(a.version, v + 1);
    parti_kv_entry_free(&e);
    parti_assignment_free(&a);
    for (i = 0; i < 3; i++) cr_assert_eq(parti_assignment_version_of(ws[i].p), v + 1);
}

Test(group, a_stream_an_operator_deletes_under_running_workers_is_not_created_again) {
    static const char *const subs[] = {"orders.>"};
    parti_stream_config sc;
    parti_stream_info si;
    char key[48];
    int i;
    g_world(4);
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    gopts.create_stream = &sc; /* it may create the stream when it first joins */
    g_start(0);
    gopts.create_stream = NULL;
    g_run(4000);
    cr_assert(g_assignment_ok(1));
    cr_assert_eq(gob.vt->stream_delete(gob.self, "orders", 1000), PARTI_ERR_OK);
    /* and its ID is lost, so it joins again (checking the stream first) */
    snprintf(key, sizeof key, "m.%s", parti_worker_id(ws[0].p));
    cr_assert_eq(parti_fake_expire_key(gw, "parti-orders-members", key), PARTI_ERR_OK);
    for (i = 0; i < 400 && !ws[0].events[PARTI_EVENT_ID_LOST - 100]; i++) parti_poll(ws[0].p, 10);
    cr_assert_eq(ws[0].events[PARTI_EVENT_ID_LOST - 100], 1);
    g_run(8000);
    memset(&si, 0, sizeof si);
    cr_assert_eq(gob.vt->stream_info(gob.self, "orders", &si, 1000), PARTI_ERR_STREAM_NOT_FOUND,
                 "the worker made the deleted stream again");
    cr_assert_eq(parti_state_of(ws[0].p), PARTI_STATE_JOINING, "it waits for the stream");
}

Test(group, memory_storage_workers_claim_no_id_until_the_buckets_are_a_ttl_old) {
    int i;
    uint64_t t0;
    g_world(6);
    gopts.memory_storage = 1;
    gopts.heartbeat_ms = 200;
    gopts.member_ttl_ms = 1000;
    t0 = parti_fake_now(gw);
    for (i = 0; i < 2; i++) g_start(i);
    g_run(900);
    for (i = 0; i < 2; i++) cr_assert_str_eq(parti_worker_id(ws[i].p), "", "joined %llu ms after the buckets were made",
                                             (unsigned long long)(parti_fake_now(gw) - t0));
    g_run(3000);
    cr_assert(g_assignment_ok(2));
    /* the server restarts and the buckets are lost: the workers take their
     * own numbers back at once; a process started now waits a TTL */
    {
        char before[2][32];
        for (i = 0; i < 2; i++) snprintf(before[i], sizeof before[i], "%s", parti_worker_id(ws[i].p));
        parti_fake_restart(gw);
        g_start(2);
        g_run(600);
        cr_assert_str_eq(parti_worker_id(ws[2].p), "", "a newcomer took an ID within the TTL after the loss");
        for (i = 0; i < 2; i++) cr_assert_str_eq(parti_worker_id(ws[i].p), before[i]);
        g_run(4000);
        cr_assert(g_assignment_ok(3));
    }
}

Test(group, no_message_reaches_the_handler_past_the_lease_even_mid_batch) {
    int i, v = 1, before;
    g_world(7);
    gopts.heartbeat_ms = 250;
    gopts.member_ttl_ms = 1000;
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(3));
    if (parti_is_leader(ws[v].p)) v = 2;
    /* one worker's handler takes 400 ms per message: a batch of its backlog
     * runs far past the 1 s TTL within one poll, with no renewal in between */
    ws[v].slow_ms = 400;
    g_publish_all(4);
    before = ws[v].handled;
    parti_poll(ws[v].p, 10);
    cr_assert_gt(ws[v].handled, before);
    cr_assert_leq(ws[v].handled - before, 3, "handled %d messages in 400 ms steps past a lease under 1 s",
                  ws[v].handled - before);
    cr_assert_eq(ws[v].after_lease, 0, "a message reached the handler past the lease");
}

Test(group, more_partitions_than_the_workers_can_hold_are_left_unowned_and_reported) {
    int i;
    char json[4096];
    parti_health h;
    g_world(5);
    gcfg.max_subjects = 5; /* NP = 12 partitions, 2 workers x 5 */
    for (i = 0; i < 2; i++) g_start(i);
    g_run(5000);
    for (i = 0; i < 2; i++) {
        const int *ow;
        cr_assert_eq(parti_owned(ws[i].p, &ow), 5, "worker %d", i);
        cr_assert_eq(parti_consumer_subjects(parti_consumer_of(ws[i].p))->count, 5, "its consumer holds them");
        cr_assert_eq(parti_metrics_of(ws[i].p)->partitions_unassigned.value, 2.0, "worker %d: %f", i, parti_metrics_of(ws[i].p)->partitions_unassigned.value);
        cr_assert_eq(parti_health_of(ws[i].p, &h), PARTI_ERR_OK);
        cr_assert(h.degraded, "an over-capacity group reports degraded health");
        cr_assert_eq(parti_health_json(ws[i].p, json, sizeof json, NULL), PARTI_ERR_OK);
        cr_assert(strstr(json, "\"unowned_partitions\":2") != NULL, "%s", json);
    }
    /* a third worker: everything is owned again */
    g_start(2);
    g_run(5000);
    for (i = 0; i < 3; i++) {
        cr_assert_eq(parti_metrics_of(ws[i].p)->partitions_unassigned.value, 0.0);
        cr_assert_eq(parti_health_of(ws[i].p, &h), PARTI_ERR_OK);
        cr_assert(!h.degraded);
    }
    cr_assert(g_assignment_ok(3));
}

Test(group, garbage_on_the_assignment_key_is_replaced_by_the_leader) {
    int j;
    uint64_t rev = 0, before;
    parti_kv_entry e;
    static const char *const junk[] = {"{\"not\":\"an assignment\"", "{}", "\xff\xfe"};
    for (j = 0; j < 3; j++) {
        before = g_three_settled(3);
        g_doc_entry(&e);
        cr_assert_eq(gob.vt->kv_update(gob.self, "parti-orders-assign", "assignment", junk[j], strlen(junk[j]),
                                       e.revision, &rev, 1000), PARTI_ERR_OK);
        parti_kv_entry_free(&e);
        g_run(3000);
        cr_assert(g_assignment_ok(3));
        cr_assert_gt(parti_metrics_of(ws[1].p)->assignments_rejected.value, before);
        /* a worker joining now finds a good document */
        g_doc_entry(&e);
        cr_assert_gt(e.revision, rev, "the leader did not write over the garbage");
        {
            parti_assignment a;
            memset(&a, 0, sizeof a);
            cr_assert_eq(parti_assignment_decode(&a, (const char *)e.value, e.len, NULL, 0), PARTI_ERR_OK);
            parti_assignment_free(&a);
        }
        parti_kv_entry_free(&e);
        g_teardown();
    }
}

/* The epoch alone does not fence: a bucket made again after a server restart
 * starts the leader key's revisions over, and a later leader can get the
 * epoch a deposed one wrote under (seed 469: the deposed leader's document,
 * written into the new bucket, was applied as the new leader's). A document
 * names its writer's process; one under the leader's epoch and a newer
 * version, but from another process, is refused and written over. */
Test(group, a_document_under_the_leaders_epoch_from_another_process_is_refused) {
    int i, moved = 0;
    uint64_t rev = 0, before;
    parti_kv_entry e;
    parti_assignment a;
    char *buf;
    size_t need = 0;
    before = g_three_settled(5);
    g_doc_entry(&e);
    memset(&a, 0, sizeof a);
    cr_assert_eq(parti_assignment_decode(&a, (const char *)e.value, e.len, NULL, 0), PARTI_ERR_OK);
    cr_assert_neq(a.leader, 0, "the leader names itself in its document");
    a.leader ^= 0x5a5a5a5a5a5a5a5aull; /* another process, same epoch */
    a.version++;
    for (i = 0; i < a.partition_count; i++) /* everything to one member: applied, it would show */
        if (a.owner[i] != 0) {
            a.owner[i] = 0;
            moved++;
        }
    cr_assert_gt(moved, 0);
    cr_assert_eq(parti_assignment_encode(&a, NULL, 0, &need), PARTI_ERR_BUFFER_TOO_SMALL);
    buf = (char *)malloc(need);
    cr_assert_eq(parti_assignment_encode(&a, buf, need, NULL), PARTI_ERR_OK);
    cr_assert_eq(gob.vt->kv_update(gob.self, "parti-orders-assign", "assignment", buf, need - 1, e.revision, &rev,
                                   1000),
                 PARTI_ERR_OK);
    free(buf);
    parti_assignment_free(&a);
    parti_kv_entry_free(&e);
    g_run(3000);
    cr_assert_gt(parti_metrics_of(ws[1].p)->assignments_rejected.value, before, "the foreign document was applied");
    cr_assert(g_assignment_ok(3));
    g_doc_entry(&e);
    cr_assert_gt(e.revision, rev, "the leader did not write over the foreign document");
    parti_kv_entry_free(&e);
    g_teardown();
}

Test(group, a_kv_outage_degrades_keeps_processing_and_recovers) {
    uint64_t seed;
    for (seed = 1; seed <= 6; seed++) {
        int i, v = 1, before;
        parti_health h;
        g_world(seed);
        for (i = 0; i < 3; i++) g_start(i);
        g_run(4000);
        cr_assert(g_assignment_ok(3));
        if (parti_is_leader(ws[v].p)) v = 2;
        /* heartbeats fail for about 3 s (< max_stale_ms = member TTL): degraded, still processing */
        cr_assert_eq(parti_fake_fail_next(gw, &ws[v].t, "kv_update", 3, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
        cr_assert_eq(parti_fake_fail_next(gw, &ws[v].t, "kv_get", 3, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
        g_run(2500);
        cr_assert_eq(parti_state_of(ws[v].p), PARTI_STATE_DEGRADED, "seed %llu: %s", (unsigned long long)seed,
                     parti_state_name(parti_state_of(ws[v].p)));
        cr_assert_eq(parti_health_of(ws[v].p, &h), PARTI_ERR_OK);
        cr_assert(h.degraded && !h.ready);
        cr_assert_eq(parti_metrics_of(ws[v].p)->degraded.value, 1);
        before = ws[v].handled;
        g_publish_all(2);
        g_run(300);
        cr_assert_gt(ws[v].handled, before, "a degraded worker keeps processing its partitions");
        g_run(3000);
        cr_assert_eq(parti_state_of(ws[v].p), PARTI_STATE_STABLE);
        cr_assert_eq(parti_health_of(ws[v].p, &h), PARTI_ERR_OK);
        cr_assert(h.ready && !h.degraded);
        cr_assert(g_assignment_ok(3));
        cr_assert_geq(parti_metrics_of(ws[v].p)->heartbeat_failures.value, 2);
        g_teardown();
    }
}

Test(group, an_outage_past_the_staleness_limit_stops_processing_then_resyncs) {
    int i, v = 1;
    const int *own;
    g_world(5);
    gopts.max_stale_ms = 2500; /* below the 5 s member TTL, so the stop is the staleness limit's doing */
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(3));
    if (parti_is_leader(ws[v].p)) v = 2;
    cr_assert_eq(parti_fake_fail_next(gw, &ws[v].t, "kv_update", 12, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_fail_next(gw, &ws[v].t, "kv_get", 12, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    g_run(1000); /* the last renewal was at most 1 s before the outage: within the limit */
    cr_assert(!parti_consumer_is_paused(parti_consumer_of(ws[v].p)), "within the limit it keeps processing");
    g_run(2000); /* past max_stale_ms, before its key can expire */
    cr_assert_gt(parti_owned(ws[v].p, &own), 0, "still assigned");
    cr_assert(parti_consumer_is_paused(parti_consumer_of(ws[v].p)), "a stale worker must stop processing");
    /* its key expired meanwhile: the others took its partitions. It concludes
     * that only once it can read its key back (each failing read is retried at
     * the next heartbeat: the 12 injected failures take 12 s), then joins again */
    g_run(30000);
    cr_assert(g_assignment_ok(3), "after the outage");
    g_publish_all(2);
    g_run(3000);
    g_check_all_handled(NP * 2);
    cr_assert_eq(g_leaders(), 1);
}

static int g_json_bool(const char *json, const char *path_obj, const char *key) {
    parti_json_doc d;
    int v = -1, node;
    cr_assert_eq(parti_json_parse(&d, json, strlen(json), NULL, NULL, 0), PARTI_ERR_OK, "%s", json);
    node = parti_json_root(&d);
    if (path_obj) node = parti_json_get(&d, parti_json_get(&d, node, "components"), path_obj);
    if (parti_json_get_bool(&d, node, key, &v) != PARTI_ERR_OK) v = -1;
    parti_json_doc_free(&d);
    return v;
}

Test(group, health_json_names_the_component_that_fails) {
    char json[2048];
    size_t need = 0;
    int i, v = 1;
    g_world(4);
    for (i = 0; i < 2; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(2));
    cr_assert_eq(parti_health_json(ws[v].p, json, sizeof json, &need), PARTI_ERR_OK);
    cr_assert(strstr(json, "\"status\":\"ready\""), "%s", json);
    cr_assert_eq(g_json_bool(json, NULL, "ready"), 1);
    cr_assert_eq(g_json_bool(json, "connection", "ok"), 1);
    cr_assert_eq(g_json_bool(json, "kv", "ok"), 1);
    cr_assert_eq(g_json_bool(json, "consumer", "ok"), 1);
    cr_assert(strstr(json, "\"last_error\":null"), "%s", json);
    /* cut off from NATS: not ready, the connection and the KV say why */
    parti_fake_partition(gw, &ws[v].t, 1);
    g_run(3000);
    cr_assert_eq(parti_health_json(ws[v].p, json, sizeof json, &need), PARTI_ERR_OK);
    cr_assert(strstr(json, "\"status\":\"degraded\""), "%s", json);
    cr_assert_eq(g_json_bool(json, NULL, "ready"), 0);
    cr_assert_eq(g_json_bool(json, "connection", "ok"), 0);
    cr_assert_eq(g_json_bool(json, "kv", "ok"), 0);
    cr_assert(strstr(json, "\"code\":\"PARTI_ERR_NOT_CONNECTED\""), "%s", json);
    /* back */
    parti_fake_partition(gw, &ws[v].t, 0);
    g_run(8000);
    cr_assert_eq(parti_health_json(ws[v].p, json, sizeof json, &need), PARTI_ERR_OK);
    cr_assert_eq(g_json_bool(json, NULL, "ready"), 1, "%s", json);
    /* the buffer contract */
    cr_assert_eq(parti_health_json(ws[v].p, NULL, 0, &need), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(need, strlen(json) + 1);
    cr_assert_eq(parti_health_json(NULL, json, sizeof json, &need), PARTI_ERR_INVALID_ARGUMENT);
}

Test(group, a_missing_stream_is_waited_for_or_created_when_asked_and_a_mismatch_stops) {
    static const char *const subs[] = {"orders.>"}, *const other[] = {"other.>"};
    parti_stream_config sc;
    parti_stream_info si;
    parti_health h;
    int i;
    g_world(2);
    cr_assert_eq(gob.vt->stream_delete(gob.self, "orders", 1000), PARTI_ERR_OK);
    g_start(0);
    g_run(3000);
    cr_assert_eq(parti_state_of(ws[0].p), PARTI_STATE_JOINING, "no stream: wait");
    cr_assert_eq(parti_health_of(ws[0].p, &h), PARTI_ERR_OK);
    cr_assert_eq(h.last_error, PARTI_ERR_STREAM_NOT_FOUND);
    cr_assert_str_eq(h.last_error_message, "waiting for the stream: stream not found");
    /* a second worker that was told to create it */
    memset(&sc, 0, sizeof sc);
    sc.name = "orders";
    sc.subjects = subs;
    sc.subject_count = 1;
    gopts.create_stream = &sc;
    g_start(1);
    gopts.create_stream = NULL;
    g_run(6000);
    cr_assert(g_assignment_ok(2), "both join once the stream exists");
    g_teardown();
    /* a stream that does not cover the template: a typed error naming it, the stream untouched */
    g_world(3);
    cr_assert_eq(gob.vt->stream_delete(gob.self, "orders", 1000), PARTI_ERR_OK);
    sc.subjects = other;
    cr_assert_eq(gob.vt->stream_create(gob.self, &sc, 1000), PARTI_ERR_OK);
    g_start(0);
    for (i = 0; i < 100 && parti_state_of(ws[0].p) != PARTI_STATE_STOPPED; i++) parti_poll(ws[0].p, 10);
    cr_assert_eq(parti_state_of(ws[0].p), PARTI_STATE_STOPPED);
    cr_assert_eq(parti_poll(ws[0].p, 10), PARTI_ERR_STREAM_MISMATCH);
    cr_assert_eq(parti_health_of(ws[0].p, &h), PARTI_ERR_OK);
    cr_assert(!h.live && !h.ready);
    cr_assert_str_eq(h.last_error_message, "stream orders: subjects [\"other.>\"] do not cover \"orders.p0\" (partition 0)");
    cr_assert_eq(gob.vt->stream_info(gob.self, "orders", &si, 1000), PARTI_ERR_OK);
    cr_assert_eq(si.subject_count, 1);
    cr_assert_str_eq(si.subjects[0], "other.>");
    parti_stream_info_free(&si);
}

Test(group, fail_fast_stops_the_worker_at_the_first_failed_call) {
    g_world(6);
    gopts.fail_fast = 1;
    g_start(0);
    cr_assert_eq(parti_fake_fail_next(gw, &ws[0].t, "kv_create", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    cr_assert_eq(parti_poll(ws[0].p, 1000), PARTI_ERR_TIMEOUT);
    cr_assert_eq(parti_state_of(ws[0].p), PARTI_STATE_STOPPED);
    cr_assert_eq(parti_poll(ws[0].p, 1000), PARTI_ERR_TIMEOUT);
    /* without it the same failure is retried and the worker joins */
    gopts.fail_fast = 0;
    g_start(1);
    cr_assert_eq(parti_fake_fail_next(gw, &ws[1].t, "kv_create", 1, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    ws[0].alive = 0;
    g_run(5000);
    cr_assert_str_neq(parti_worker_id(ws[1].p), "");
}

Test(group, a_vanished_bucket_makes_the_worker_join_again) {
    int i;
    g_world(8);
    for (i = 0; i < 2; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(2));
    /* what a memory-storage server restart looks like to a renewal */
    cr_assert_eq(parti_fake_fail_next(gw, &ws[1].t, "kv_update", 1, PARTI_ERR_BUCKET_NOT_FOUND), PARTI_ERR_OK);
    g_run(1500);
    cr_assert_eq(ws[1].events[PARTI_EVENT_ID_LOST - 100], 1);
    g_run(6000);
    cr_assert(g_assignment_ok(2), "joined again with its buckets reopened");
    g_publish_all(2);
    g_run(2000);
    g_check_all_handled(NP * 2);
}

Test(group, a_cut_off_leader_stops_leading_before_its_key_can_expire) {
    int i, l;
    uint64_t t0;
    g_world(12);
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(3));
    l = g_find_leader();
    parti_fake_partition(gw, &ws[l].t, 1);
    t0 = parti_fake_now(gw);
    /* nobody else can win before the key's TTL (5 s after its last renewal);
     * the old leader must have let go by then */
    while (parti_fake_now(gw) - t0 < 4000) {
        int n = 0;
        g_run(100);
        for (i = 0; i < 3; i++) n += ws[i].alive && parti_is_leader(ws[i].p);
        cr_assert_leq(n, 1, "two leaders at +%llu ms", (unsigned long long)(parti_fake_now(gw) - t0));
    }
    cr_assert(!parti_is_leader(ws[l].p), "a leader that cannot renew stops leading within TTL - heartbeat");
    cr_assert_eq(ws[l].events[PARTI_EVENT_LOST_LEADERSHIP - 100], 1);
    g_run(4000);
    cr_assert_eq(g_leaders(), 1);
    cr_assert_neq(g_find_leader(), l);
}

Test(group, a_failed_rebalance_is_retried_with_backoff) {
    int i, l;
    g_world(13);
    for (i = 0; i < 3; i++) g_start(i);
    g_run(4000);
    cr_assert(g_assignment_ok(3));
    l = g_find_leader();
    /* the next writes of the leader fail (its renewals included, and the leader key's, retried at each
     * poll after a timeout; the fake fails them at once): the join's rebalance must be retried */
    cr_assert_eq(parti_fake_fail_next(gw, &ws[l].t, "kv_update", 40, PARTI_ERR_TIMEOUT), PARTI_ERR_OK);
    g_start(3);
    g_run(6000);
    cr_assert(g_assignment_ok(4));
    cr_assert_geq(parti_metrics_of(ws[l].p)->rebalances_failure.value, 1);
    cr_assert_eq(g_find_leader(), l);
}

Test(group, two_groups_share_one_connection) {
    static const char *const subs[] = {"invoices.>"};
    parti_stream_config sc;
    parti_config cfg2;
    parti *second;
    char msg[256];
    int i;
    g_world(14);
    memset(&sc, 0, sizeof sc);
    sc.name = "invoices", sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(gob.vt->stream_create(gob.self, &sc, 1000), PARTI_ERR_OK);
    g_start(0);
    cfg2 = gcfg;
    cfg2.stream = "invoices";
    cfg2.subject_template = "invoices.{0}";
    gopts.user = &ws[1];
    cr_assert_eq(parti_create(&second, &ws[0].t, &cfg2, &gopts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    for (i = 0; i < 100; i++) {
        parti_poll(ws[0].p, 25);
        parti_poll(second, 25);
    }
    cr_assert_eq(parti_state_of(ws[0].p), PARTI_STATE_STABLE);
    cr_assert_eq(parti_state_of(second), PARTI_STATE_STABLE);
    cr_assert_eq(parti_owned(second, NULL), NP);
    cr_assert_eq(parti_owned(ws[0].p, NULL), NP);
    parti_destroy(second);
}

/* The timing contract of parti_poll: with every KV and consumer call of a
 * worker hanging past its timeout, poll(t) still returns within t plus one
 * op timeout (each call gets what is left of that budget), on the leader and
 * on a follower, over many polls. */
Test(group, a_poll_returns_within_its_timeout_plus_one_op_timeout_while_the_server_hangs) {
    static const char *const ops[] = {"kv_create", "kv_update", "kv_put",          "kv_get",        "kv_delete",
                                      "kv_keys",   "kv_open",   "consumer_upsert", "consumer_info", "stream_info",
                                      "publish",   "fetch_start", "ack"};
    int who, k, i;
    uint64_t worst = 0;
    for (who = 0; who < 2; who++) {
        int target;
        g_world(7 + (uint64_t)who);
        gopts.op_timeout_ms = 400;
        gopts.consumer.op_timeout_ms = 400;
        for (i = 0; i < 3; i++) g_start(i);
        g_run(6000);
        cr_assert(g_assignment_ok(3));
        target = who == 0 ? g_find_leader() : (g_find_leader() + 1) % 3;
        for (k = 0; k < (int)(sizeof ops / sizeof ops[0]); k++)
            cr_assert_eq(parti_fake_set_latency(gw, &ws[target].t, ops[k], 60000), PARTI_ERR_OK);
        for (i = 0; i < 40; i++) {
            uint64_t t0 = parti_fake_now(gw), d;
            parti_poll(ws[target].p, 100);
            d = parti_fake_now(gw) - t0;
            if (d > worst) worst = d;
            cr_assert_leq(d, 100 + 400 + 50, "%s poll %d took %llu ms", who ? "follower" : "leader", i,
                          (unsigned long long)d);
        }
        g_teardown();
    }
    printf("poll(100) with a hung server and op timeouts of 400 ms: worst %llu ms\n", (unsigned long long)worst);
}

/* A renewal applied on the server whose reply was lost: the next renewal's
 * compare-and-swap fails, and the worker reads its key back before
 * concluding anything. Its value names this process, so the ID is still
 * its own: no ID_LOST, same ID, same partitions, leader or not. */
Test(group, a_renewal_whose_reply_was_lost_keeps_the_id) {
    uint64_t seed;
    for (seed = 1; seed <= 10; seed++) {
        int who;
        g_start_three_fast(seed * 13, 200); /* the lost reply is waited out; these tests poll in lockstep */
        for (who = 0; who < 3; who++) {
            char id[32];
            snprintf(id, sizeof id, "%s", parti_worker_id(ws[who].p));
            cr_assert_eq(parti_fake_lose_replies(gw, &ws[who].t, "kv_update", 1), PARTI_ERR_OK);
            g_run(2000);
            cr_assert_str_eq(parti_worker_id(ws[who].p), id, "seed %llu: worker %d changed its ID",
                             (unsigned long long)seed, who);
            cr_assert_eq(ws[who].events[PARTI_EVENT_ID_LOST - 100], 0, "seed %llu: worker %d lost its ID",
                         (unsigned long long)seed, who);
        }
        cr_assert(g_assignment_ok(3));
        cr_assert_eq(g_leaders(), 1);
        g_teardown();
    }
}

/* An ID claim (create-if-absent) whose reply was lost landed all the same:
 * the worker reads the key back, finds its own value, and keeps that ID
 * instead of leaving a second key of its own behind until its TTL. */
Test(group, a_claim_whose_reply_was_lost_takes_that_id) {
    g_world(5);
    gopts.op_timeout_ms = 200;
    g_start(0);
    cr_assert_eq(parti_fake_lose_replies(gw, &ws[0].t, "kv_create", 1), PARTI_ERR_OK);
    g_run(3000);
    cr_assert_str_eq(parti_worker_id(ws[0].p), "worker-0");
    cr_assert(g_assignment_ok(1));
    cr_assert_eq(parti_metrics_of(ws[0].p)->members_current.value, 1, "members: %g",
                 parti_metrics_of(ws[0].p)->members_current.value);
}

/* Small polls against a slow KV: each poll has time for one lease call, not
 * two. The leader's renewal and an election wait for the next poll rather
 * than run with a starved timeout, so the group keeps one leader (found by
 * review: with the budget alone, the leader's renewal timed out every time
 * and the group ended without a leader). */
Test(group, small_polls_with_slow_kv_keep_one_leader) {
    static const char *const ops[] = {"kv_create", "kv_update", "kv_put", "kv_get", "kv_delete", "kv_keys"};
    static const uint32_t lat[] = {220, 300};
    static const uint32_t pt[] = {1, 100};
    int a, b, k, r, i;
    for (a = 0; a < 2; a++)
        for (b = 0; b < 2; b++) {
            int leaders_seen = 0, lost = 0;
            g_world(21 + (uint64_t)(a * 2 + b));
            gopts.op_timeout_ms = 400;
            gopts.consumer.op_timeout_ms = 400;
            gopts.heartbeat_ms = 1000;
            gopts.member_ttl_ms = 5000;
            for (i = 0; i < 3; i++) g_start(i);
            g_run(6000);
            cr_assert(g_assignment_ok(3));
            for (k = 0; k < 6; k++) cr_assert_eq(parti_fake_set_latency(gw, NULL, ops[k], lat[a]), PARTI_ERR_OK);
            for (r = 0; r < 600; r++)
                for (i = 0; i < 3; i++) parti_poll(ws[i].p, pt[b]);
            for (i = 0; i < 3; i++) {
                leaders_seen += parti_is_leader(ws[i].p);
                lost += ws[i].events[PARTI_EVENT_ID_LOST - 100];
            }
            cr_assert_eq(leaders_seen, 1, "latency %u ms, polls of %u ms: %d leaders after %llu virtual s", lat[a],
                         pt[b], leaders_seen, (unsigned long long)(parti_fake_now(gw) / 1000));
            cr_assert_eq(lost, 0, "latency %u, polls of %u: %d ID losses", lat[a], pt[b], lost);
            g_teardown();
        }
}

/* A renewal's compare-and-swap fails (its earlier reply was lost) and the
 * read-back gets no answer either: nothing can be concluded, so the worker
 * keeps its ID and reads back again at its next heartbeat (review finding). */
Test(group, an_inconclusive_read_back_keeps_the_id) {
    uint64_t seed;
    for (seed = 1; seed <= 5; seed++) {
        int who;
        g_start_three_fast(seed * 17, 100);
        for (who = 0; who < 3; who++) {
            cr_assert_eq(parti_fake_lose_replies(gw, &ws[who].t, "kv_update", 1), PARTI_ERR_OK);
            cr_assert_eq(parti_fake_fail_next(gw, &ws[who].t, "kv_get", 3, PARTI_ERR_NOT_CONNECTED), PARTI_ERR_OK);
            g_run(3000);
            cr_assert_eq(ws[who].events[PARTI_EVENT_ID_LOST - 100], 0, "seed %llu: worker %d lost its ID",
                         (unsigned long long)seed, who);
        }
        cr_assert(g_assignment_ok(3));
        g_teardown();
    }
}

/* ---- the handoff ----------------------------------------------------------- */

/* A graceful leave under load, with a backlog on every partition and a slow
 * worker: every message handled exactly once, in order per partition, the
 * fencing token never goes down, and every message of a partition reaches a
 * handler only between its on_partitions_assigned and its revoke. */
Test(group, a_graceful_leave_under_backlog_hands_over_without_loss_or_duplicate) {
    uint64_t seed;
    for (seed = 1; seed <= 8; seed++) {
        int i, leaver;
        g_start_three_fast(seed * 7, 300);
        ws[1].slow_ms = 3; /* one worker slower than the rest */
        g_publish_all(20);
        g_run(150); /* part of the backlog handled */
        leaver = (int)(seed % 3);
        cr_assert_eq(parti_leave(ws[leaver].p, 2000), PARTI_ERR_OK);
        cr_assert_gt(ws[leaver].revoked, 0, "seed %llu: the leaver's partitions were revoked", (unsigned long long)seed);
        ws[leaver].alive = 0;
        g_publish_all(10);
        g_run(4000);
        cr_assert_eq(g_check_all_handled(NP * 30), 0, "seed %llu: a graceful leave duplicated messages",
                     (unsigned long long)seed);
        cr_assert_eq(seq_went_down, 0, "seed %llu: order", (unsigned long long)seed);
        cr_assert_eq(gen_went_down, 0, "seed %llu: fencing token went down", (unsigned long long)seed);
        cr_assert_eq(bad_partition, 0);
        for (i = 0; i < 3; i++) {
            cr_assert_eq(ws[i].cb_order_bad, 0, "seed %llu: worker %d handled a partition outside its callbacks",
                         (unsigned long long)seed, i);
            cr_assert_eq(ws[i].lost, 0, "seed %llu: nothing is lost in a graceful move", (unsigned long long)seed);
        }
        g_teardown();
    }
}

/* Partition i's checkpoint key: who holds it, and whether it was released. */
static int g_ck(int i, parti_checkpoint *ck) {
    parti_kv_entry e;
    char subject[32], key[PARTI_CHECKPOINT_KEY_SIZE];
    int ok;
    snprintf(subject, sizeof subject, "orders.%s", gkeys[i][0]);
    cr_assert_eq(parti_checkpoint_key(subject, key, sizeof key), PARTI_ERR_OK);
    memset(&e, 0, sizeof e);
    if (gob.vt->kv_get(gob.self, "parti-orders-assign", key, 0, &e, 1000) != PARTI_ERR_OK) return 0;
    ok = parti_checkpoint_decode(ck, (const char *)e.value, e.len) == PARTI_ERR_OK;
    parti_kv_entry_free(&e);
    return ok;
}

/* A leader that leaves hands its partitions over itself: by the time
 * parti_leave returns, its last document (under its own epoch: no election,
 * no new leader's first rebalance) is applied and every partition it held
 * is claimed by another worker; nothing is lost or handled twice. */
Test(group, a_leaders_graceful_leave_hands_its_partitions_over_before_it_returns) {
    uint64_t seed;
    hook_on = 1;
    for (seed = 1; seed <= 8; seed++) {
        int i, leader, was_mine[NP], others = 0;
        uint64_t epoch, t0;
        g_start_three_fast(seed * 13, 300);
        g_publish_all(10);
        g_run(300);
        leader = g_find_leader();
        cr_assert_geq(leader, 0);
        epoch = parti_epoch(ws[leader].p);
        for (i = 0; i < NP; i++) {
            parti_checkpoint ck;
            was_mine[i] = g_ck(i, &ck) && strcmp(ck.owner, parti_worker_id(ws[leader].p)) == 0;
            others += !was_mine[i];
        }
        cr_assert_lt(others, NP, "seed %llu: the leader held partitions", (unsigned long long)seed);
        hook_skip = leader;
        t0 = parti_fake_now(gw);
        cr_assert_eq(parti_leave(ws[leader].p, 2000), PARTI_ERR_OK);
        hook_skip = -1;
        ws[leader].alive = 0;
        cr_assert_lt(parti_fake_now(gw) - t0, 250, "seed %llu: the leave waited its whole bound (%llu ms)",
                     (unsigned long long)seed, (unsigned long long)(parti_fake_now(gw) - t0));
        for (i = 0; i < NP; i++) {
            parti_checkpoint ck;
            cr_assert(g_ck(i, &ck));
            cr_assert(!ck.released && strcmp(ck.owner, parti_worker_id(ws[leader].p)) != 0,
                      "seed %llu: partition %d (%s) is not claimed by another worker when the leave returns",
                      (unsigned long long)seed, i, was_mine[i] ? "the leader's" : "another's");
        }
        for (i = 0; i < 3; i++)
            if (i != leader) cr_assert_eq(parti_assignment_epoch_of(ws[i].p), epoch, "seed %llu: applied the leader's "
                                          "own last document", (unsigned long long)seed);
        g_publish_all(10);
        g_run(3000);
        cr_assert_eq(g_check_all_handled(NP * 20), 0, "seed %llu: the leader's leave duplicated messages",
                     (unsigned long long)seed);
        cr_assert_eq(seq_went_down, 0);
        cr_assert_eq(gen_went_down, 0);
        cr_assert(g_assignment_ok(2));
        for (i = 0; i < 3; i++) cr_assert_eq(ws[i].lost, 0);
        g_teardown();
    }
    hook_on = 0;
}

/* A crash: the partitions move after the TTL, from the last checkpoint; only
 * what the dead worker handled after its last commit is handled again. */
Test(group, a_crash_hands_over_from_the_checkpoint) {
    uint64_t seed;
    for (seed = 1; seed <= 8; seed++) {
        int i, dups, victim = (int)(seed % 3);
        g_start_three_fast(seed * 11, 300);
        g_publish_all(10);
        g_run(3000); /* handled and committed (commit interval 1 s) */
        g_kill(victim);
        g_publish_all(10);
        g_run(6000);
        dups = g_check_all_handled(NP * 20);
        cr_assert_eq(dups, 0, "seed %llu: committed work was repeated: %d", (unsigned long long)seed, dups);
        cr_assert_eq(seq_went_down, 0);
        cr_assert_eq(gen_went_down, 0);
        for (i = 0; i < 3; i++) cr_assert_eq(ws[i].cb_order_bad, 0);
        g_teardown();
    }
}

/* A worker whose lease runs out (paused past its TTL) gets on_partitions_lost
 * and hands nothing more to its handler; the partitions move. */
Test(group, a_worker_paused_past_its_lease_loses_its_partitions) {
    int i, before;
    g_start_three_fast(5, 300);
    g_publish_all(2);
    g_run(1000);
    ws[2].alive = 0; /* not polled: paused */
    g_run(3000);
    g_publish_all(2);
    before = ws[2].handled;
    ws[2].alive = 1;
    parti_poll(ws[2].p, 10);
    cr_assert_gt(ws[2].lost, 0, "the paused worker was told its partitions are lost");
    cr_assert_eq(ws[2].handled, before, "nothing handled past the lease");
    g_run(4000);
    g_check_all_handled(NP * 4);
    for (i = 0; i < 3; i++) cr_assert_eq(ws[i].after_lease, 0);
    cr_assert_eq(seq_went_down, 0);
}

/* 100 join/leave cycles: each process has its own durable, and the leader
 * deletes the durables of processes that left; none accumulate. */
Test(group, join_leave_cycles_leave_no_orphan_consumers) {
    int cycle, n;
    g_start_three_fast(21, 300);
    for (cycle = 0; cycle < 100; cycle++) {
        g_start(3);
        g_run(600);
        cr_assert_eq(parti_leave(ws[3].p, 1000), PARTI_ERR_OK);
        parti_destroy(ws[3].p);
        parti_fake_disconnect(&ws[3].t);
        ws[3].p = NULL;
        ws[3].t.vt = NULL;
        ws[3].alive = 0;
        g_run(300);
    }
    g_run(3000); /* orphan_grace_ms (the TTL) and a heartbeat */
    n = parti_fake_consumer_count(gw, "orders");
    cr_assert_eq(n, 3, "%d durable consumers for 3 workers", n);
    cr_assert(g_assignment_ok(3));
}

/* Registered durables ("d." keys) in the assignment bucket. */
static int g_registered_durables(void) {
    char **keys = NULL;
    int n = 0, i, d = 0;
    cr_assert_eq(gob.vt->kv_keys(gob.self, "parti-orders-assign", &keys, &n, 1000), PARTI_ERR_OK);
    for (i = 0; i < n; i++) d += strncmp(keys[i], "d.", 2) == 0;
    parti_strings_free(keys, n);
    return d;
}

/* A process that crashed while one leader led, which then crashed itself
 * before the grace was over: the next leader finds the durable in the
 * registry and deletes it. Graceful leaves delete their own. */
Test(group, durables_of_crashed_processes_are_deleted_after_the_leader_changes) {
    uint64_t seed;
    for (seed = 1; seed <= 4; seed++) {
        int i, leader, n, live = 0;
        g_start_three_fast(seed * 17, 300);
        g_start(3);
        g_start(4);
        g_run(2000);
        cr_assert(g_assignment_ok(5));
        cr_assert_eq(parti_fake_consumer_count(gw, "orders"), 5);
        cr_assert_eq(g_registered_durables(), 5);
        leader = g_find_leader();
        cr_assert_geq(leader, 0);
        g_kill(leader == 3 ? 4 : 3); /* a crash: its durable stays behind */
        g_run(1300);                 /* its key expired; the leader's grace (one TTL) is not over */
        cr_assert_eq(parti_fake_consumer_count(gw, "orders"), 5);
        g_kill(leader); /* the leader dies with it on its list */
        i = leader == 0 ? 1 : 0;
        cr_assert_eq(parti_leave(ws[i].p, 1000), PARTI_ERR_OK); /* a graceful leave takes its durable along */
        ws[i].alive = 0;
        g_run(8000);
        for (i = 0; i < MAXW; i++) live += ws[i].alive;
        n = parti_fake_consumer_count(gw, "orders");
        cr_assert_eq(n, live, "seed %llu: %d durables for %d live workers", (unsigned long long)seed, n, live);
        cr_assert_eq(g_registered_durables(), live);
        cr_assert(g_assignment_ok(live));
        g_teardown();
    }
}

/* Each process has its own durable: a process that took over the ID of a
 * paused one does not share its consumer. */
Test(group, every_process_has_its_own_durable) {
    int i, j;
    g_start_three_fast(3, 300);
    for (i = 0; i < 3; i++)
        for (j = 0; j < i; j++)
            cr_assert_str_neq(parti_consumer_durable(parti_consumer_of(ws[i].p)),
                              parti_consumer_durable(parti_consumer_of(ws[j].p)));
    cr_assert(strstr(parti_consumer_durable(parti_consumer_of(ws[0].p)), parti_worker_id(ws[0].p)) != NULL);
}

/* Catch-up reads slow enough to outlast the lease (answered past it, inside
 * the TTL): nothing is skipped, nothing handled past the lease, order kept.
 * (The exact interleaving that once skipped a message here, a read answered
 * past the lease and then taken back as the worker's own, is simulator
 * seeds 6514 and 21400, inside make sim-long's 100,000.) */
Test(group, slow_catch_up_reads_lose_nothing) {
    int i;
    g_start_three_fast(41, 300);
    /* a backlog on every partition, then worker 1 leaves: its partitions are caught up by the others */
    g_publish_all(5);
    for (i = 0; i < 3; i++) cr_assert_eq(parti_fake_set_latency(gw, &ws[i].t, "stream_get_next", 950), PARTI_ERR_OK);
    cr_assert_eq(parti_leave(ws[1].p, 2000), PARTI_ERR_OK);
    ws[1].alive = 0;
    g_run(3000); /* reads answered after 950 ms: past the lease (TTL 1 s - heartbeat / 2), inside the TTL */
    for (i = 0; i < 3; i++) cr_assert_eq(parti_fake_set_latency(gw, &ws[i].t, "stream_get_next", 0), PARTI_ERR_OK);
    g_run(8000);
    g_check_all_handled(NP * 5); /* every message handled at least once */
    cr_assert_eq(seq_went_down, 0);
    for (i = 0; i < 3; i++) cr_assert_eq(ws[i].after_lease, 0);
}

/* A leave that begins just past the lease, before any poll saw it run out
 * (slow handlers kept the renewals waiting), while the member key is still
 * the worker's on the server: it renews first and releases every partition
 * at what it handled, so the next owners repeat nothing. It once wrote no
 * release and deleted the key, and the next owners started from the last
 * checkpoint (simulator seed 19543). */
Test(group, a_leave_just_past_the_lease_with_its_key_alive_releases_without_duplicate) {
    uint64_t seed;
    for (seed = 1; seed <= 6; seed++) {
        int i, leaver = (int)(seed % 3), guard;
        g_world(seed * 13);
        gopts.heartbeat_ms = 250;
        gopts.member_ttl_ms = 1000;
        gopts.op_timeout_ms = 300;
        gopts.commit_interval_ms = 60000; /* what is handled stays above the checkpoints */
        for (i = 0; i < 3; i++) g_start(i);
        g_run(5000);
        cr_assert(g_assignment_ok(3));
        g_publish_all(3);
        g_run(1000);
        /* the leaver is not polled until its lease has just run out (875 ms
         * after its last renewal was sent; its key lives 1 s after it arrived) */
        ws[leaver].alive = 0;
        for (guard = 0; guard < 1000 && parti_lease_valid(ws[leaver].p); guard++) g_run(1);
        cr_assert(!parti_lease_valid(ws[leaver].p));
        cr_assert_eq(parti_leave(ws[leaver].p, 2000), PARTI_ERR_OK);
        cr_assert_gt(ws[leaver].revoked, 0);
        cr_assert_eq(ws[leaver].lost, 0, "seed %llu: the leave lost partitions", (unsigned long long)seed);
        g_run(4000);
        cr_assert(g_assignment_ok(2), "seed %llu: 2 workers", (unsigned long long)seed);
        cr_assert_eq(g_check_all_handled(NP * 3), 0, "seed %llu: the leave past the lease duplicated messages",
                     (unsigned long long)seed);
        cr_assert_eq(seq_went_down, 0);
        g_teardown();
    }
}

/* A catch-up hands what it read to the handler a turn at a time; in a group
 * a turn stops at the poll's deadline after one message, so slow handlers do
 * not hold off the renewals (which run between polls). A turn once handed
 * over 16 messages whatever they took: with 60 ms handlers that is 960 ms,
 * past the lease (TTL 1 s - heartbeat / 2), and the worker lost its
 * partitions over and over while catching up (simulator seed 19543). */
Test(group, slow_handlers_during_a_catch_up_do_not_starve_the_renewals) {
    int i;
    g_start_three_fast(43, 300);
    g_publish_all(40); /* 40 messages on each partition, handled by now */
    g_run(2000);
    for (i = 0; i < 3; i++) ws[i].slow_ms = 60;
    cr_assert_eq(parti_leave(ws[1].p, 2000), PARTI_ERR_OK); /* its checkpoints: at 40 */
    ws[1].alive = 0;
    g_publish_all(30); /* 30 more on each: the gainers read worker 1's share from the stream */
    g_run(40000);
    for (i = 0; i < 3; i += 2) {
        cr_assert_eq(ws[i].lost, 0, "worker %d lost partitions %d times (its lease ran out)", i, ws[i].lost);
        cr_assert_eq(ws[i].after_lease, 0);
    }
    g_check_all_handled(NP * 70);
    cr_assert_eq(seq_went_down, 0);
}

/* A leader renews its member key and the leader key in one kv_update_many
 * call, member key first (on nats-server the two are then stored
 * microseconds apart and a dead leader's keys expire in one pass); the
 * others renew their member key alone. A recording transport in front of
 * the fake sees every renewal. */
static parti_transport_vtable rec_vt;
static const parti_transport_vtable *rec_inner;
static int rec_pairs, rec_singles, rec_odd, rec_leader_alone;
static void rec_update_many(void *self, const char *bucket, parti_kv_update *u, int n, uint32_t timeout_ms) {
    int i;
    if (n == 2 && strncmp(u[0].key, "m.", 2) == 0 && strcmp(u[1].key, "leader") == 0) rec_pairs++;
    else if (n == 1 && strncmp(u[0].key, "m.", 2) == 0) rec_singles++;
    else rec_odd++;
    for (i = 0; i < n; i++)
        u[i].err = rec_inner->kv_update(self, bucket, u[i].key, u[i].value, u[i].len, u[i].expected, &u[i].revision,
                                        timeout_ms);
}
static parti_err rec_update(void *self, const char *bucket, const char *key, const void *value, size_t len,
                            uint64_t expected, uint64_t *revision, uint32_t timeout_ms) {
    if (strcmp(key, "leader") == 0) rec_leader_alone++;
    return rec_inner->kv_update(self, bucket, key, value, len, expected, revision, timeout_ms);
}

/* Three workers whose transports pass through update and update_many (in
 * front of the fake, which rec_inner names) before reaching the fake. */
static void g_start_wrapped(parti_transport wrapped[3],
                            parti_err (*update)(void *, const char *, const char *, const void *, size_t, uint64_t,
                                                uint64_t *, uint32_t),
                            void (*update_many)(void *, const char *, parti_kv_update *, int, uint32_t)) {
    char msg[256];
    int i;
    for (i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        cr_assert_eq(parti_fake_connect(gw, name, &ws[i].t), PARTI_ERR_OK);
        rec_inner = ws[i].t.vt;
        rec_vt = *ws[i].t.vt;
        rec_vt.kv_update_many = update_many;
        rec_vt.kv_update = update;
        wrapped[i].vt = &rec_vt;
        wrapped[i].self = ws[i].t.self;
        gopts.user = &ws[i];
        cr_assert_eq(parti_create(&ws[i].p, &wrapped[i], &gcfg, &gopts, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
        ws[i].alive = 1;
    }
}

Test(group, a_leader_renews_its_member_key_and_the_leader_key_together) {
    parti_transport wrapped[3];
    int l;
    g_world(31);
    gopts.heartbeat_ms = 250;
    gopts.member_ttl_ms = 1000;
    g_start_wrapped(wrapped, rec_update, rec_update_many);
    g_run(5000);
    cr_assert(g_assignment_ok(3));
    l = g_find_leader();
    rec_pairs = rec_singles = rec_odd = rec_leader_alone = 0;
    g_run(2000); /* 8 heartbeats each */
    cr_assert_geq(rec_pairs, 7, "the leader's renewals together: %d", rec_pairs);
    cr_assert_geq(rec_singles, 14, "the others' renewals: %d", rec_singles);
    cr_assert_eq(rec_odd, 0);
    cr_assert_eq(rec_leader_alone, 0, "the leader key renewed on its own %d times", rec_leader_alone);
    /* and a dead leader is still replaced */
    g_kill(l);
    g_run(3000);
    cr_assert_eq(g_leaders(), 1);
    cr_assert(g_assignment_ok(2));
}

/* A restart loses the memory-storage buckets: the leader's next renewal of
 * both keys finds both gone. It settles its lost ID while it still leads, so
 * it may stand again at once in the new buckets (the others wait a TTL), and
 * the group is not left without a leader for a TTL (review of the paired
 * renewal: processing the leader key's result first stepped it down before
 * the ID loss and took that right away: 2.0 s leaderless at TTL 2 s). */
Test(group, a_leader_whose_buckets_were_lost_leads_again_at_once) {
    int i, l;
    uint64_t t0, leaderless = 0, since = 0;
    g_world(41);
    gopts.memory_storage = 1;
    gopts.heartbeat_ms = 500;
    gopts.member_ttl_ms = 2000;
    gopts.op_timeout_ms = 200;
    for (i = 0; i < 3; i++) g_start(i);
    g_run(8000);
    cr_assert(g_assignment_ok(3));
    l = g_find_leader();
    parti_fake_restart(gw);
    g_start(3); /* a newcomer makes the buckets again at once */
    for (t0 = parti_fake_now(gw); parti_fake_now(gw) - t0 < 4000;) {
        g_run(10);
        if (g_leaders() == 0) {
            if (!since) since = parti_fake_now(gw);
            if (parti_fake_now(gw) - since > leaderless) leaderless = parti_fake_now(gw) - since;
        } else {
            since = 0;
        }
    }
    printf("memory buckets lost: longest without a leader %llu ms (TTL 2000)\n", (unsigned long long)leaderless);
    cr_assert_lt(leaderless, 500, "%llu ms without a leader", (unsigned long long)leaderless);
    cr_assert_eq(g_find_leader(), l, "the leader at the loss leads again");
    g_run(4000);
    cr_assert(g_assignment_ok(4));
}

/* A leader whose member key writes fail (they hang and time out, not
 * applied) while the leader key's would land: after the first such
 * heartbeat it renews the leader key no more, so the key expires with its
 * ID and another is elected (review: it renewed the leader key at every
 * heartbeat until it lost its ID, and the group waited a TTL more). */
static void *hang_self;
static int hang_on, leader_writes_while_failing, member_failing;
static parti_err hang_update(void *self, const char *bucket, const char *key, const void *value, size_t len,
                             uint64_t expected, uint64_t *revision, uint32_t timeout_ms) {
    if (self == hang_self && hang_on) {
        if (strncmp(key, "m.", 2) == 0) {
            member_failing = 1;
            parti_fake_advance(gw, timeout_ms); /* hangs until its timeout, not applied */
            return PARTI_ERR_TIMEOUT;
        }
        if (strcmp(key, "leader") == 0 && member_failing) leader_writes_while_failing++;
    }
    return rec_inner->kv_update(self, bucket, key, value, len, expected, revision, timeout_ms);
}
static void hang_update_many(void *self, const char *bucket, parti_kv_update *u, int n, uint32_t timeout_ms) {
    int i;
    for (i = 0; i < n; i++)
        u[i].err = hang_update(self, bucket, u[i].key, u[i].value, u[i].len, u[i].expected, &u[i].revision,
                               timeout_ms);
}

Test(group, a_leader_whose_member_key_writes_fail_stops_renewing_the_leader_key) {
    parti_transport wrapped[3];
    int l;
    uint64_t t0;
    g_world(43);
    gopts.heartbeat_ms = 250;
    gopts.member_ttl_ms = 1000;
    gopts.op_timeout_ms = 100;
    g_start_wrapped(wrapped, hang_update, hang_update_many);
    g_run(5000);
    cr_assert(g_assignment_ok(3));
    l = g_find_leader();
    hang_self = ws[l].t.self;
    hang_on = 1;
    member_failing = leader_writes_while_failing = 0;
    t0 = parti_fake_now(gw);
    while (parti_fake_now(gw) - t0 < 3000 && !(g_leaders() == 1 && !parti_is_leader(ws[l].p))) g_run(10);
    printf("member writes failing: %d leader key writes meanwhile; another leads after %llu ms (TTL 1000)\n",
           leader_writes_while_failing, (unsigned long long)(parti_fake_now(gw) - t0));
    cr_assert_leq(leader_writes_while_failing, 1, "the leader key was renewed %d times while the member key's "
                  "renewals failed", leader_writes_while_failing);
    cr_assert(g_leaders() == 1 && !parti_is_leader(ws[l].p), "no other leader within 3 s");
    hang_on = 0;
}

/* ---- workers with the partitions in another order (a rolling deploy) ---- */

/* Old workers O1, O2 run with partitions [a, b]; a new build N1 with [b, a].
 * O1 (the leader) leaves, N1 leads, and O2 refuses its document (another
 * partition list) and goes on with what it had. Checkpoints are named by
 * subject, so N1 finds O2's claim of b under b's key and waits for it, and
 * starts a after the position O1 released it at. Before, keys were named by
 * index: N1's index of a was O2's of b, and the two took it from each other
 * (a review's schedule: 20 messages handled by both, b replayed from the
 * stream's start again and again). */
static const char *const mx_ka[1] = {"a"}, *const mx_kb[1] = {"b"};
static int mx_handled[3][200]; /* worker, stream sequence: handler calls */

static parti_verdict mx_on_message(void *user, const parti_msg *m, uint32_t *nak) {
    int w = (int)(intptr_t)user;
    (void)nak;
    if (m->stream_seq < 200) mx_handled[w][m->stream_seq]++;
    return PARTI_ACK;
}

static void mx_poll(parti **ps, const int *order, int rounds) {
    int r, i;
    for (r = 0; r < rounds; r++)
        for (i = 0; i < 3; i++)
            if (ps[order[i]]) parti_poll(ps[order[i]], 25);
}

/* n messages, a and b in turn, the workers polled between them; returns n */
static int mx_publish(const parti_transport *t, parti **ps, const int *order, int n) {
    int k;
    for (k = 0; k < n; k++) {
        cr_assert_eq(t->vt->publish(t->self, k % 2 ? "orders.b" : "orders.a", NULL, 0, "x", 1, NULL, 1000),
                     PARTI_ERR_OK);
        mx_poll(ps, order, 2);
    }
    return n;
}

Test(group, workers_with_the_partitions_in_another_order_never_hold_one_at_once) {
    static const char *const subs[] = {"orders.>"};
    const parti_partition old_parts[2] = {{mx_ka, 1, 1}, {mx_kb, 1, 1}}, new_parts[2] = {{mx_kb, 1, 1}, {mx_ka, 1, 1}};
    const int by_index[3] = {0, 1, 2}, new_first[3] = {2, 0, 1};
    parti_fake_world *w;
    parti_transport t[4];
    parti_stream_config sc;
    parti_config oc, nc;
    parti_options o;
    parti *ps[3] = {NULL, NULL, NULL};
    char msg[256];
    int i, seq, leader, twice = 0, replayed = 0, missing = 0, published = 0;
    memset(mx_handled, 0, sizeof mx_handled);
    cr_assert_eq(parti_fake_world_create(&w, NULL), PARTI_ERR_OK);
    for (i = 0; i < 4; i++) cr_assert_eq(parti_fake_connect(w, NULL, &t[i]), PARTI_ERR_OK);
    memset(&sc, 0, sizeof sc);
    sc.name = "orders", sc.subjects = subs, sc.subject_count = 1;
    cr_assert_eq(t[3].vt->stream_create(t[3].self, &sc, 1000), PARTI_ERR_OK);
    memset(&oc, 0, sizeof oc);
    oc.stream = "orders", oc.subject_template = "orders.{0}", oc.partitions = old_parts, oc.partition_count = 2;
    nc = oc;
    nc.partitions = new_parts;
    memset(&o, 0, sizeof o);
    o.on_message = mx_on_message;
    for (i = 0; i < 2; i++) {
        o.user = (void *)(intptr_t)i;
        cr_assert_eq(parti_create(&ps[i], &t[i], &oc, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
        mx_poll(ps, by_index, 4);
    }
    mx_poll(ps, by_index, 200);
    published += mx_publish(&t[3], ps, by_index, 40);
    mx_poll(ps, by_index, 60);
    /* the new build joins; the old leader leaves; the new build wins the election */
    o.user = (void *)(intptr_t)2;
    cr_assert_eq(parti_create(&ps[2], &t[2], &nc, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    mx_poll(ps, new_first, 40);
    leader = parti_is_leader(ps[0]) ? 0 : 1;
    cr_assert(parti_is_leader(ps[leader]));
    cr_assert_eq(parti_leave(ps[leader], 2000), PARTI_ERR_OK);
    parti_destroy(ps[leader]);
    ps[leader] = NULL;
    mx_poll(ps, new_first, 200);
    cr_assert(parti_is_leader(ps[2]), "the new build leads");
    published += mx_publish(&t[3], ps, new_first, 40);
    mx_poll(ps, new_first, 100);
    /* the deploy ends: the other old worker leaves too, and hands b over */
    cr_assert_eq(parti_leave(ps[1 - leader], 2000), PARTI_ERR_OK);
    parti_destroy(ps[1 - leader]);
    ps[1 - leader] = NULL;
    mx_poll(ps, new_first, 200);
    published += mx_publish(&t[3], ps, new_first, 20);
    mx_poll(ps, new_first, 200);
    for (seq = 1; seq <= published; seq++) {
        int by = 0, calls = 0;
        for (i = 0; i < 3; i++) by += mx_handled[i][seq] > 0, calls += mx_handled[i][seq];
        if (by > 1 || calls > 1) twice++;
        if (calls == 0) missing++;
        if (seq <= 40 && mx_handled[2][seq]) replayed++;
    }
    printf("mixed partition lists: %d messages, %d handled more than once, %d by the new build before it joined, "
           "%d never handled\n", published, twice, replayed, missing);
    cr_assert_eq(twice, 0, "%d messages handled more than once (graceful moves only)", twice);
    cr_assert_eq(replayed, 0, "the new build replayed %d messages its partitions' checkpoints covered", replayed);
    cr_assert_eq(missing, 0, "%d messages never handled", missing);
    for (i = 0; i < 3; i++)
        if (ps[i]) parti_destroy(ps[i]);
    for (i = 0; i < 4; i++) parti_fake_disconnect(&t[i]);
    parti_fake_world_destroy(w);
}

/* A partition whose subject has no checkpoint key (too long once spelled)
 * is refused at creation, not found at its first claim. */
Test(group, a_partition_list_whose_subject_has_no_checkpoint_key_is_refused) {
    static const char *const fits[1] = {"abc"}, *const too_long[1] = {"abcd"};
    char tmpl[PARTI_MAX_SUBJECT_LEN], msg[512];
    parti_partition part = {fits, 1, 1};
    parti_fake_world *w;
    parti_transport t;
    parti_config c;
    parti_options o;
    parti *p = NULL;
    memset(tmpl, 'x', sizeof tmpl);
    strcpy(tmpl + PARTI_MAX_SUBJECT_LEN - 7, ".{0}"); /* 505 x, and ".abc": a 509-byte subject */
    cr_assert_eq(strlen(tmpl), PARTI_MAX_SUBJECT_LEN - 3);
    cr_assert_eq(parti_fake_world_create(&w, NULL), PARTI_ERR_OK);
    cr_assert_eq(parti_fake_connect(w, NULL, &t), PARTI_ERR_OK);
    memset(&c, 0, sizeof c);
    c.stream = "orders", c.subject_template = tmpl, c.partitions = &part, c.partition_count = 1;
    memset(&o, 0, sizeof o);
    o.on_message = mx_on_message;
    cr_assert_eq(parti_create(&p, &t, &c, &o, msg, sizeof msg), PARTI_ERR_OK, "%s", msg); /* key: 512 bytes */
    parti_destroy(p);
    p = NULL;
    part.keys = too_long; /* a 510-byte subject, a 513-byte key */
    cr_assert_eq(parti_create(&p, &t, &c, &o, msg, sizeof msg), PARTI_ERR_INVALID_CONFIG);
    cr_assert_null(p);
    cr_assert(strstr(msg, "config.partitions[0]") && strstr(msg, "checkpoint key"), "%s", msg);
    parti_fake_disconnect(&t);
    parti_fake_world_destroy(w);
}

/* The environment a conformance suite runs in. The suite (tests/conformance.c)
 * is written once against the transport vtable; each environment (the fake
 * NATS, a real nats-server) provides one of these, linked in as
 * conformance_env(). Cases that need a fault an environment cannot produce
 * check for a NULL hook and skip (cr_skip_test) with a reason. */
#ifndef PARTI_CONFORMANCE_H
#define PARTI_CONFORMANCE_H

#include "parti.h"

typedef struct conf_env conf_env;
struct conf_env {
    const char *name;                   /* "fake", "nats-server" */
    /* fresh, empty server state for one test case (called from each test's init) */
    void (*reset)(conf_env *env);
    /* a new client connection; several may be open at once */
    parti_err (*connect)(conf_env *env, parti_transport *out);
    void (*disconnect)(conf_env *env, parti_transport *t);
    /* let ms of time pass: virtual time on the fake, a real sleep on a server.
     * Use it only inside bounded polling loops (see conf_wait_until). */
    void (*advance)(conf_env *env, uint32_t ms);
    /* faults; NULL when the environment cannot produce them */
    void (*drop_heartbeats)(conf_env *env, parti_transport *t, int on);
    void (*restart_server)(conf_env *env);             /* pending pulls lost, durable state kept */
    void (*partition)(conf_env *env, parti_transport *t, int cut); /* cut = 1 isolates the client, 0 heals */
    void (*fail_next)(conf_env *env, parti_transport *t, const char *op, int n, parti_err status);
    void (*expire_key)(conf_env *env, const char *bucket, const char *key);
    /* on = 1: the next call of op by t reaches the server but its reply does
     * not come back within the call's timeout; on = 0: replies flow again
     * (the fake loses one reply; a real server is stopped, then continued,
     * and handles the request it had buffered) */
    void (*lose_reply)(conf_env *env, parti_transport *t, const char *op, int on);
    int kv_expiry_markers;              /* 1 when TTL expiry is seen by watchers (PARTI_KV_EXPIRED) */
    void *impl;
};

conf_env *conformance_env(void);

#endif

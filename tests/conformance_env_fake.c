/* The conformance environment for the fake NATS: virtual time, every fault. */
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"
#include "parti_nats.h"
#include "conformance.h"

#include <string.h>

static parti_fake_world *world;

static void fake_reset(conf_env *env) {
    (void)env;
    parti_fake_world_destroy(world);
    parti_fake_world_create(&world, NULL);
}

static parti_err fake_connect(conf_env *env, parti_transport *out) {
    (void)env;
    if (!world) parti_fake_world_create(&world, NULL);
    return parti_fake_connect(world, NULL, out);
}

static void fake_disconnect(conf_env *env, parti_transport *t) {
    (void)env;
    parti_fake_disconnect(t);
}

static void fake_advance(conf_env *env, uint32_t ms) {
    (void)env;
    parti_fake_advance(world, ms);
}

static void fake_drop_heartbeats(conf_env *env, parti_transport *t, int on) {
    (void)env;
    parti_fake_drop_heartbeats(world, t, on);
}

static void fake_restart(conf_env *env) {
    (void)env;
    parti_fake_restart(world);
}

static void fake_partition(conf_env *env, parti_transport *t, int cut) {
    (void)env;
    parti_fake_partition(world, t, cut);
}

static void fake_fail_next(conf_env *env, parti_transport *t, const char *op, int n, parti_err status) {
    (void)env;
    parti_fake_fail_next(world, t, op, n, status);
}

static void fake_expire_key(conf_env *env, const char *bucket, const char *key) {
    (void)env;
    parti_fake_expire_key(world, bucket, key);
}

static void fake_lose_reply(conf_env *env, parti_transport *t, const char *op, int on) {
    (void)env;
    if (on && parti_fake_lose_replies(world, t, op, 1) != PARTI_ERR_OK) abort(); /* a bug in the test */
}

/* LeakSanitizer runs at exit: free the last test's world. */
__attribute__((destructor)) static void fake_cleanup(void) {
    parti_fake_world_destroy(world);
    world = NULL;
}

static conf_env fake_env = {"fake",          fake_reset,     fake_connect,   fake_disconnect,
                            fake_advance,    fake_drop_heartbeats, fake_restart, fake_partition,
                            fake_fail_next,  fake_expire_key, fake_lose_reply, 1,           NULL};

conf_env *conformance_env(void) { return &fake_env; }

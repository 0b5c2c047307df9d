/* parti.h - partition assignment for NATS JetStream - v0.2.0
 * Single-file C library; MIT or public domain (see the end of the file).
 *
 * WHAT IT IS
 *   parti spreads the partitions of a JetStream stream over a changing set of
 *   worker processes and gives each worker ONE durable pull consumer whose
 *   filter_subjects are exactly its partitions' subjects. This header is the
 *   sans-I/O core: everything that needs no network. Time, randomness and I/O
 *   reach it through callbacks, so every behaviour is testable and replayable.
 *
 *   This version (0.2.0) holds:
 *     - errors: one table of codes with names, messages and categories
 *     - configuration: zero means default, one validation with a clear message
 *     - partitions -> subjects: template expansion, NATS subject validation,
 *       sort + deduplicate, diff, max_subjects, durable consumer names
 *     - decorrelated-jitter backoff on an injected RNG
 *     - metrics (counters, gauges, histograms) and a Prometheus text writer
 *     - a bounded JSON writer and an untrusted-input JSON reader
 *     - the transport vtable (KV, consumers, pulls, acks, publish, clock, RNG)
 *       and pure parsers of JetStream protocol text
 *   parti_nats.h implements the vtable twice: a fake in-memory NATS with a
 *   virtual clock and fault injection, and the nats.c binding for a real
 *   nats-server. On top of the vtable:
 *     - the worker consumer (parti_consumer_*): one durable pull consumer per
 *       worker, updated in place, coalesced, retried with backoff, recreated
 *       when deleted, escalating repeated pull failures, ordered per-partition
 *       queues with local retries, catch-ups read from the stream, dead
 *       letters, health, metrics
 *     - the handoff: per-partition claims and checkpoints in KV, revoke
 *       before assign, a fencing token on every message (what holds under
 *       faults: README "Guarantees", docs/testing.md)
 *     - assignment strategies as pure functions (sticky bounded-load,
 *       consistent hashing, weighted, rendezvous, round robin, callback) and
 *       the compact assignment document
 *     - the group (parti_create / parti_poll / parti_leave): stable worker
 *       IDs, heartbeats, leader election with epochs, debounced rebalances,
 *       degraded mode; see docs/protocol.md
 *
 * USING IT
 *   In exactly one C or C++ file:
 *       #define PARTI_IMPLEMENTATION
 *       #include "parti.h"
 *   Everywhere else just #include "parti.h". Needs stb_ds (<stb/stb_ds.h>,
 *   Debian libstb-dev); nothing to link (no libm, no pthreads).
 *
 *       static const char *const k0[] = {"eu"}, *const k1[] = {"us"};
 *       static const parti_partition parts[] = {{k0, 1, 1}, {k1, 1, 1}};
 *
 *       char msg[256];
 *       parti_config cfg = {0};                  // zero = defaults
 *       cfg.stream = "orders";
 *       cfg.subject_template = "orders.{0}";     // {N} = key N of a partition
 *       cfg.partitions = parts;
 *       cfg.partition_count = 2;
 *       parti_err e = parti_config_validate(&cfg, msg, sizeof msg);
 *       if (e) fprintf(stderr, "%s: %s\n", parti_strerror(e), msg);
 *       // e.g. "invalid configuration: config.max_subjects must be >= 1, got -3"
 *
 *       parti_subjects mine = {0};               // sorted, unique, owned by the set
 *       e = parti_subjects_build(cfg.subject_template, parts, 2, 1024, &mine, msg, sizeof msg);
 *       ...
 *       parti_subjects_free(&mine);
 *
 * CONVENTIONS
 *   - Every fallible function returns parti_err (0 = PARTI_ERR_OK). Results
 *     come back through out-parameters. Nothing aborts on bad input: NULL
 *     pointers, bad lengths and malformed data give a typed error.
 *   - (char *msg, size_t msg_size) pairs take a caller buffer for a human
 *     message naming what was wrong and where; they may be NULL / 0. The
 *     message is always NUL-terminated and truncated to fit.
 *   - Output buffers come with their capacity. Functions that write text
 *     report the size they need (including the NUL) through *needed, also
 *     when they return PARTI_ERR_BUFFER_TOO_SMALL, and never write past cap.
 *   - Strings passed in stay the caller's; parti copies what it keeps.
 *     Structures parti fills (parti_subjects, parti_json_doc) own their
 *     memory until their _free function is called.
 *   - No global mutable state; not thread-safe per object (parti_poll and
 *     parti_consumer_poll run everything on the caller's thread).
 *
 * ERROR CATEGORIES (parti_error_category)
 *   retriable      retry the same call with backoff (timeout, CAS conflict)
 *   transient      a condition that clears by itself (server restarting,
 *                  no responders); keep running degraded and retry later
 *   fatal          retrying will not help (out of memory, server too old)
 *   invalid_input  the caller passed something wrong; fix the call
 *
 * SUBJECT TEMPLATES
 *   "orders.{0}.{1}" substitutes key 0 and key 1 of a partition. Placeholders
 *   are {0}..{15}; write "{{" and "}}" for literal braces. Literal text must
 *   form valid subject tokens; "*" may be a whole literal token and ">" the
 *   whole last token, so a partition may be a wildcard filter such as
 *   "orders.{0}.>". Keys are single tokens: non-empty, valid UTF-8, no '.',
 *   '*', '>', whitespace or control characters, at most PARTI_MAX_KEY_LEN.
 *   Subjects sort bytewise (strcmp), identically on every platform.
 *
 * CONFIGURATION MACROS (define before including, in the implementation file
 * unless noted)
 *   PARTI_STATIC            make every function static (private copy per file)
 *   PARTIDEF                storage class of public functions (default extern)
 *   PARTI_MALLOC(sz), PARTI_REALLOC(p, sz), PARTI_FREE(p)
 *                           allocator (define all three or none); stb_ds uses
 *                           it too unless STBDS_REALLOC is already defined
 *   PARTI_ASSERT(x)         internal invariant checks (default assert)
 *   PARTI_STB_DS_EXTERNAL   do not instantiate stb_ds here; the program
 *                           defines STB_DS_IMPLEMENTATION elsewhere
 *   Limits (any file, same value everywhere): PARTI_MAX_SUBJECT_LEN (512),
 *   PARTI_MAX_KEY_LEN (128), PARTI_MAX_NAME_LEN (64), PARTI_MAX_KEYS (16),
 *   PARTI_JSON_MAX_DEPTH (64), PARTI_JSON_MAX_NODES, PARTI_JSON_MAX_LEN,
 *   PARTI_HISTOGRAM_MAX_BUCKETS (16, 13..1024).
 *
 * VERSION HISTORY
 *   unreleased  the handoff replaced: per-partition checkpoints and claims
 *          (keys ck.<subject>, parti_checkpoint_key/encode/decode), revoke before
 *          assign, catch-up from the checkpoint read from the stream (the
 *          vtable gained stream_get_next, required by groups, flush,
 *          optional, for transports that send acks in bursts, and
 *          kv_update_many, optional, for writes sent together; stream info
 *          gained created_ns), ordered mode with local retries, the fencing
 *          token (parti_msg.partition, .generation), rebalance callbacks
 *          (on_partitions_revoked/assigned/lost), commit_interval_ms, a
 *          durable per process (orphan_grace_ms; registry keys d.<durable>;
 *          parti_leave deletes its own), a leaving leader's hand-over; the
 *          consumer-wide ack floor resume points, rewinds and skip lists and
 *          the metric parti_worker_consumer_handoff_rewinds_total are gone;
 *          control plane decided by the KV: documents fenced by the
 *          leader key on read, epochs raised above what members applied
 *          (bucket loss), the member lease checked before every message
 *          (parti_lease_valid), deletes at an expected revision (the vtable
 *          gained kv_delete_if, optional), over-capacity partitions left
 *          unowned and reported (parti_partitions_unassigned,
 *          parti_assignments_rejected_total);
 *          bounded calls: parti_poll(t) returns within t + one op timeout
 *          while the server hangs; renewals and ID claims whose reply was
 *          lost are read back (parti_assignment_epoch_of, the errors
 *          MESSAGE_TOO_LARGE and LIMIT_REACHED, parti_js_api_error_described,
 *          parti_rfc3339_parse, parti_wall_to_transport_ms are new);
 *          parti_nats.h: a write deadline, typed 409 and limit errors,
 *          watchers that survive a re-created bucket, server times on the
 *          transport clock, and in the fake a wait hook for the whole-group
 *          simulator (tests/sim.c), lost replies and late writes, memory
 *          storage lost on restart, deliveries lost in transit
 *          (parti_fake_lose_deliveries); a catch-up reads on past its end
 *          (the tail) until the durable has delivered that far, so a gained
 *          partition does not wait behind the gainer's backlog; a gap in
 *          the durable's consumer sequence (deliveries lost on the wire)
 *          catches every held partition up again (consumer info gained
 *          delivered_consumer_seq; metrics ..._catch_up_tails_total,
 *          ..._catch_up_tails_ended_total, ..._delivery_gaps_total);
 *          assignment documents name their writer (parti_assignment.leader,
 *          the optional "leader" field) and are fenced on epoch and writer;
 *          claims and elections without the quiet period are bounded by the
 *          lease held at the ID loss; a new leader's first document waits
 *          the emergency grace, not a planned window; parti_nats.h takes a
 *          buffered delivery without reading the clock, gives released
 *          deliveries back to nats.c together, dates deliveries with a clock
 *          pair read again only when it is stale, and sends plain acks in
 *          bursts of 1024
 *   0.2.0  the worker consumer, assignment strategies and document, the group
 *          (membership, leader election, rebalancing, degraded mode); the
 *          vtable gained sleep_ms, consumer info the deliver policy
 *   0.1.0  errors, config, subjects, names, backoff, metrics, JSON, the
 *          transport vtable; parti_nats.h: the fake NATS and the nats.c binding
 */
#ifndef PARTI_H
#define PARTI_H

#define PARTI_VERSION_MAJOR 0
#define PARTI_VERSION_MINOR 2
#define PARTI_VERSION_PATCH 0
#define PARTI_VERSION_STRING "0.2.0"

#include <stddef.h>
#include <stdint.h>

#ifndef PARTIDEF
#ifdef PARTI_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define PARTIDEF static __attribute__((unused))
#else
#define PARTIDEF static
#endif
#else
#define PARTIDEF extern
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ======================================================================== */
/* Errors                                                                    */
/* ======================================================================== */

typedef enum parti_category {
    PARTI_CAT_NONE = 0,      /* success */
    PARTI_CAT_RETRIABLE,     /* retry the same call (with backoff) and it may succeed */
    PARTI_CAT_TRANSIENT,     /* a condition that clears by itself; keep running degraded */
    PARTI_CAT_FATAL,         /* will not succeed by retrying; needs a human or a restart */
    PARTI_CAT_INVALID_INPUT  /* the caller passed something wrong; fix the call */
} parti_category;

/* X(NAME, CATEGORY, "message") - the one list behind parti_err, its names,
 * messages and categories. New codes are appended; values never change. */
#define PARTI_ERRORS(X)                                                                            \
    X(OK, NONE, "success")                                                                         \
    X(INVALID_ARGUMENT, INVALID_INPUT, "invalid argument (NULL pointer, zero length or out of range)") \
    X(INVALID_CONFIG, INVALID_INPUT, "invalid configuration")                                      \
    X(INVALID_TEMPLATE, INVALID_INPUT, "invalid subject template")                                 \
    X(INVALID_KEY, INVALID_INPUT, "invalid partition key")                                         \
    X(INVALID_SUBJECT, INVALID_INPUT, "invalid NATS subject")                                      \
    X(SUBJECT_TOO_LONG, INVALID_INPUT, "subject longer than PARTI_MAX_SUBJECT_LEN")                \
    X(TOO_MANY_SUBJECTS, INVALID_INPUT, "more subjects than max_subjects")                         \
    X(INVALID_WORKER_ID, INVALID_INPUT, "invalid worker ID")                                       \
    X(INVALID_NAME, INVALID_INPUT, "invalid stream, consumer or bucket name")                      \
    X(NOT_SORTED, INVALID_INPUT, "subject set is not sorted and unique")                           \
    X(BUFFER_TOO_SMALL, INVALID_INPUT, "output buffer too small")                                  \
    X(JSON_SYNTAX, INVALID_INPUT, "malformed JSON")                                                \
    X(JSON_TOO_DEEP, INVALID_INPUT, "JSON nested too deeply")                                      \
    X(JSON_TOO_LARGE, INVALID_INPUT, "JSON document too large")                                    \
    X(JSON_TYPE, INVALID_INPUT, "JSON value has the wrong type")                                   \
    X(JSON_MISSING, INVALID_INPUT, "JSON field missing")                                           \
    X(JSON_RANGE, INVALID_INPUT, "JSON number out of range")                                       \
    X(NOMEM, FATAL, "out of memory")                                                               \
    X(RETRY_BUDGET_EXHAUSTED, FATAL, "retry budget exhausted")                                     \
    X(TIMEOUT, RETRIABLE, "operation timed out")                                                   \
    X(WRONG_REVISION, RETRIABLE, "compare-and-swap failed: wrong last revision")                   \
    X(KEY_EXISTS, RETRIABLE, "key already exists")                                                 \
    X(KEY_NOT_FOUND, RETRIABLE, "key not found")                                                   \
    X(BUCKET_NOT_FOUND, TRANSIENT, "key/value bucket not found")                                   \
    X(STREAM_NOT_FOUND, TRANSIENT, "stream not found")                                             \
    X(CONSUMER_NOT_FOUND, RETRIABLE, "consumer not found")                                         \
    X(CONSUMER_DELETED, RETRIABLE, "consumer deleted")                                             \
    X(NO_MESSAGES, RETRIABLE, "no messages before the fetch expired")                              \
    X(MISSED_HEARTBEAT, TRANSIENT, "missed fetch heartbeat")                                       \
    X(NO_RESPONDERS, TRANSIENT, "no responders")                                                   \
    X(SERVER_SHUTDOWN, TRANSIENT, "server shutting down")                                          \
    X(NOT_CONNECTED, TRANSIENT, "not connected to NATS")                                           \
    X(CIRCUIT_OPEN, TRANSIENT, "circuit breaker open: failing fast")                               \
    X(PERMISSION_DENIED, FATAL, "permission denied")                                               \
    X(SERVER_TOO_OLD, FATAL, "server too old (nats-server >= 2.10 needed for filter_subjects)")    \
    X(WORKER_ID_IMMUTABLE, INVALID_INPUT, "worker ID cannot change after the first update")        \
    X(UNSUPPORTED, FATAL, "operation not supported by this transport")                             \
    X(PROTOCOL, TRANSIENT, "unexpected response from the server")                                  \
    X(INTERNAL, FATAL, "internal error (a bug in parti)")                                          \
    X(VALUE_TOO_LARGE, INVALID_INPUT, "value larger than the bucket's max_value_size")               \
    X(ALREADY_EXISTS, INVALID_INPUT, "exists already with a different configuration")                \
    X(CLOSED, FATAL, "stopped: the worker left or hit a fatal error")                                  \
    X(STREAM_MISMATCH, INVALID_INPUT, "the stream does not fit the configuration")                    \
    X(MESSAGE_TOO_LARGE, TRANSIENT, "the next message is larger than the pull's max_bytes")           \
    X(LIMIT_REACHED, TRANSIENT, "a server or account limit was reached (storage, consumers, streams, request rate)")

typedef enum parti_err {
#define PARTI__ENUM(name, cat, msg) PARTI_ERR_##name,
    PARTI_ERRORS(PARTI__ENUM)
#undef PARTI__ENUM
    PARTI_ERR__COUNT
} parti_err;

/* "success", "invalid subject template", ... ; never NULL, also for unknown codes. */
PARTIDEF const char *parti_strerror(parti_err e);
/* "PARTI_ERR_INVALID_TEMPLATE", ...; never NULL. */
PARTIDEF const char *parti_error_name(parti_err e);
PARTIDEF parti_category parti_error_category(parti_err e);
/* "none", "retriable", "transient", "fatal", "invalid_input" */
PARTIDEF const char *parti_category_name(parti_category c);

/* ======================================================================== */
/* Limits                                                                    */
/* ======================================================================== */

/* Longest subject parti produces or accepts, in bytes (without NUL). */
#ifndef PARTI_MAX_SUBJECT_LEN
#define PARTI_MAX_SUBJECT_LEN 512
#endif
/* Longest key token of a partition, in bytes. */
#ifndef PARTI_MAX_KEY_LEN
#define PARTI_MAX_KEY_LEN 128
#endif
/* Longest stream, consumer or bucket name parti produces or accepts. */
#ifndef PARTI_MAX_NAME_LEN
#define PARTI_MAX_NAME_LEN 64
#endif
/* Highest placeholder index in a template ({0}..{PARTI_MAX_KEYS-1}). */
#ifndef PARTI_MAX_KEYS
#define PARTI_MAX_KEYS 16
#endif

/* ======================================================================== */
/* Partitions and subjects (pure functions)                                  */
/* ======================================================================== */

/* A partition: its key tokens (substituted into the subject template) and a
 * relative weight (0 means 1). The strings belong to the caller. */
typedef struct parti_partition {
    const char *const *keys;
    int key_count;
    uint32_t weight;
} parti_partition;

/* A set of subjects, sorted bytewise (strcmp order) and unique once built by
 * parti_subjects_build. The set owns its strings; free with parti_subjects_free. */
typedef struct parti_subjects {
    char **items;
    int count;
} parti_subjects;

/* Checks a subject template. Placeholders are {0}..{15}; "{{" and "}}" stand
 * for literal braces. Literal text must form valid subject tokens; "*" may be a
 * whole literal token and ">" the whole last one (a wildcard filter), but keys
 * never introduce wildcards. On success *max_key_index is the highest
 * placeholder used (-1 when none). */
PARTIDEF parti_err parti_template_check(const char *tmpl, int *max_key_index, char *msg, size_t msg_size);

/* Expands tmpl for one partition into out (cap bytes, NUL-terminated), checking
 * each key and the resulting subject. *needed (may be NULL) receives the size
 * the subject needs including its NUL, also on PARTI_ERR_BUFFER_TOO_SMALL. */
PARTIDEF parti_err parti_subject_expand(const char *tmpl, const parti_partition *p, char *out, size_t cap,
                                        size_t *needed, char *msg, size_t msg_size);

/* Checks one key token: non-empty, at most PARTI_MAX_KEY_LEN bytes, valid
 * UTF-8, no '.', '*', '>', whitespace or control characters. */
PARTIDEF parti_err parti_key_check(const char *key, char *msg, size_t msg_size);

/* Checks a subject or filter subject against the NATS rules: no empty tokens,
 * no whitespace or control characters, valid UTF-8, at most
 * PARTI_MAX_SUBJECT_LEN bytes; "*" only as a whole token and ">" only as the
 * whole last token (allow_wildcards = 0 refuses both). */
PARTIDEF parti_err parti_subject_check(const char *subject, int allow_wildcards, char *msg, size_t msg_size);

/* 1 when subject (no wildcards) matches filter ("*" = one token, ">" = one
 * or more trailing tokens), by the NATS rules; 0 otherwise or on NULL. */
PARTIDEF int parti_subject_matches(const char *filter, const char *subject);

/* Expands the template for every partition, validates, sorts and removes
 * duplicates into out (which must be empty: {0}). Fails with
 * PARTI_ERR_TOO_MANY_SUBJECTS when more than max_subjects distinct subjects
 * result (max_subjects <= 0 means no limit). On error out stays empty. */
PARTIDEF parti_err parti_subjects_build(const char *tmpl, const parti_partition *parts, int count, int max_subjects,
                                        parti_subjects *out, char *msg, size_t msg_size);

/* Sorts (strcmp order) and removes duplicates in place, freeing the duplicates. */
PARTIDEF void parti_subjects_sort_unique(parti_subjects *s);

/* Copies a string into the set (unsorted until parti_subjects_sort_unique). */
PARTIDEF parti_err parti_subjects_add(parti_subjects *s, const char *subject);

/* Computes added = new - old and removed = old - new. Both inputs must be
 * sorted and unique (else PARTI_ERR_NOT_SORTED); added and removed must be
 * empty and come out sorted and unique. */
PARTIDEF parti_err parti_subjects_diff(const parti_subjects *old_set, const parti_subjects *new_set,
                                       parti_subjects *added, parti_subjects *removed);

/* 1 when count is at or above warn_percent of max_subjects (the near-limit
 * warning), else 0. max_subjects <= 0 or warn_percent <= 0 never warns. */
PARTIDEF int parti_subjects_near_limit(int count, int max_subjects, int warn_percent);

/* 1 when the set is sorted and unique. */
PARTIDEF int parti_subjects_is_sorted(const parti_subjects *s);

PARTIDEF void parti_subjects_free(parti_subjects *s);

/* Checks a stream, consumer or bucket name: 1..PARTI_MAX_NAME_LEN bytes of
 * [A-Za-z0-9_-]. (JetStream accepts more; parti keeps to what every tool,
 * file system and subject position accepts.) */
PARTIDEF parti_err parti_name_check(const char *name, char *msg, size_t msg_size);

/* Durable consumer name for a worker: prefix (a valid name, may be "" or NULL)
 * followed by the worker ID. An ID made only of [A-Za-z0-9-] that fits is used
 * as is; any other ID has every other byte replaced by '_', is shortened to
 * fit, and gets "_" and 16 hex digits of its 64-bit FNV-1a hash appended. The
 * result is deterministic, and two different IDs map to the same name only if
 * they collide in 64 bits of hash after identical sanitizing. IDs that are
 * empty or sanitize to nothing but '_' are refused. out needs
 * PARTI_MAX_NAME_LEN + 1 bytes. */
PARTIDEF parti_err parti_consumer_name(const char *prefix, const char *worker_id, char *out, size_t cap, char *msg,
                                       size_t msg_size);

/* 64-bit FNV-1a, the hash behind names and (later) hashing strategies. */
PARTIDEF uint64_t parti_hash64(const void *data, size_t len);

/* ======================================================================== */
/* Randomness and backoff                                                    */
/* ======================================================================== */

/* A source of 64 random bits. parti never calls rand(); it draws from the
 * one the transport or the config gives it, so runs replay from a seed. */
typedef uint64_t (*parti_rng_fn)(void *user);

/* splitmix64: a small deterministic generator for tests and simulations;
 * pass it as parti_rng_fn with a uint64_t state as user. */
PARTIDEF uint64_t parti_rng_splitmix64(void *state);

/* Decorrelated-jitter exponential backoff: each delay is uniform in
 * [base, 3 x previous delay], capped at cap_ms. max_retries > 0 bounds the
 * number of delays handed out before PARTI_ERR_RETRY_BUDGET_EXHAUSTED
 * (0 = unlimited). Reset after a success. */
typedef struct parti_backoff {
    uint64_t base_ms, cap_ms, prev_ms;
    uint32_t max_retries, attempts;
} parti_backoff;

PARTIDEF parti_err parti_backoff_init(parti_backoff *b, uint64_t base_ms, uint64_t cap_ms, uint32_t max_retries);
PARTIDEF parti_err parti_backoff_next(parti_backoff *b, parti_rng_fn rng, void *rng_user, uint64_t *delay_ms);
PARTIDEF void parti_backoff_reset(parti_backoff *b);

/* ======================================================================== */
/* Configuration                                                             */
/* ======================================================================== */

/* Every field zero means "the default"; parti_config_defaults shows them.
 * Strings and the partition array are the caller's and must outlive parti's
 * use of the config. */
typedef struct parti_config {
    const char *stream;            /* JetStream stream holding the partitions (required) */
    const char *subject_template;  /* e.g. "orders.{0}" (required) */
    const parti_partition *partitions;
    int partition_count;           /* >= 1 (required) */
    const char *bucket_prefix;     /* KV bucket prefix; default "parti" */
    const char *consumer_prefix;   /* durable consumer name prefix; default "parti-" */
    int max_subjects;              /* per consumer; default 1024 */
    int subjects_warn_percent;     /* near-limit warning at this % of max_subjects; default 80 */
    uint32_t backoff_base_ms;      /* control-plane retry backoff: first delay; default 100 */
    uint32_t backoff_cap_ms;       /* largest delay; default 10000 */
    uint32_t backoff_max_retries;  /* retry budget per operation; default 0 = unlimited */
    /* pull tuning */
    int fetch_batch;               /* messages per fetch; default 100 */
    int64_t fetch_max_bytes;       /* bytes per fetch; default 0 = no limit */
    uint32_t fetch_expires_ms;     /* how long a fetch waits; default 5000 */
    uint32_t fetch_heartbeat_ms;   /* idle heartbeat of a fetch, <= expires/2; default 1000 */
    uint32_t ack_wait_ms;          /* redelivery after this; default 30000 */
    int max_ack_pending;           /* default 1000 */
    int max_deliver;               /* deliveries before dead-lettering; default 5 */
    /* startup contract (parti_stream_check), opt-in requirements */
    int require_file_storage;      /* 1: refuse a memory-storage stream (lost on a server restart) */
    uint64_t min_duplicate_window_ms; /* refuse a stream whose dedupe window is shorter; 0 = any */
} parti_config;

/* Returns *cfg with every zero field replaced by its default. cfg may be NULL
 * (all defaults). */
PARTIDEF parti_config parti_config_defaults(const parti_config *cfg);

/* Validates a config (defaults applied first). On failure returns
 * PARTI_ERR_INVALID_CONFIG (or the more specific template/key error) and
 * writes the field and the rule into msg, e.g.
 * "config.max_subjects must be >= 1, got -3". */
PARTIDEF parti_err parti_config_validate(const parti_config *cfg, char *msg, size_t msg_size);

/* ======================================================================== */
/* The transport vtable                                                      */
/* ======================================================================== */
/* Everything parti does on the network goes through a parti_transport: the
 * nats.c binding and the fake in-memory NATS (parti_nats.h) implement it, and
 * so can a user's own transport. The core never calls a clock, a random
 * generator or a socket directly.
 *
 * Contract for every operation:
 *   - It returns within timeout_ms (plus scheduling noise) with a parti_err.
 *     PARTI_ERR_TIMEOUT means "no answer in time"; the operation may or may
 *     not have happened on the server (retry idempotently).
 *   - Strings and buffers passed in stay the caller's and need only live for
 *     the call. Results written to out-parameters are owned by the caller and
 *     released with the matching parti_*_free function (they are allocated
 *     with PARTI_MALLOC). Out-parameters that only report (a revision, a
 *     publish ack) may be NULL.
 *   - Names (streams, consumers, buckets) follow parti_name_check; keys follow
 *     parti_kv_key_check; a bad name is PARTI_ERR_INVALID_NAME, NULL pointers
 *     PARTI_ERR_INVALID_ARGUMENT.
 *   - Unreachable server: PARTI_ERR_NOT_CONNECTED (fast) or PARTI_ERR_TIMEOUT.
 *   - A transport serves one thread at a time (the poll loop); it is not
 *     required to be thread-safe.
 * What the core may assume: revisions of one bucket strictly increase; a
 * consumer never delivers a message outside its filter_subjects except the
 * redelivery of one it delivered before the filter changed (as the real
 * server does); an acked message is never redelivered; time from now_ms never
 * goes backwards. */

typedef enum parti_kv_op {
    PARTI_KV_PUT = 1,   /* a value was written */
    PARTI_KV_DELETE,    /* the key was deleted (tombstone) */
    PARTI_KV_PURGE,     /* the key and its history were purged */
    PARTI_KV_EXPIRED    /* the key's age passed the bucket TTL (seen only where the server writes
                         * expiry markers: nats-server >= 2.11; poll as a backstop) */
} parti_kv_op;

typedef struct parti_kv_entry {
    char *key;
    uint8_t *value;     /* NUL-terminated for convenience; len excludes the NUL */
    size_t len;
    uint64_t revision;  /* the bucket-wide sequence of this entry */
    uint64_t created_ms;/* server time of the write (transport clock) */
    parti_kv_op op;
} parti_kv_entry;

typedef struct parti_kv_config {
    const char *bucket;
    uint32_t history;       /* values kept per key, 1..64; 0 = 1 */
    uint64_t ttl_ms;        /* max age of an entry since its last write; 0 = forever */
    size_t max_value_size;  /* 0 = 1 MiB */
    int memory_storage;     /* 1 = memory, 0 = file */
} parti_kv_config;

typedef struct parti_kv_watcher parti_kv_watcher; /* opaque, transport-defined */

typedef enum parti_deliver_policy {
    PARTI_DELIVER_ALL = 0,          /* from the first message of the stream */
    PARTI_DELIVER_BY_START_SEQUENCE,/* from opt_start_seq */
    PARTI_DELIVER_NEW               /* only messages stored after creation */
} parti_deliver_policy;

typedef struct parti_consumer_config {
    const char *stream;
    const char *durable;                  /* consumer name */
    const char *const *filter_subjects;   /* at least 1; never empty (that would mean the whole stream) */
    int filter_count;
    parti_deliver_policy deliver_policy;  /* applies at creation only */
    uint64_t opt_start_seq;
    uint32_t ack_wait_ms;                 /* 0 = 30 s */
    int max_deliver;                      /* 0 = unlimited */
    int max_ack_pending;                  /* 0 = 1000 */
    uint32_t inactive_threshold_ms;       /* 0 = keep forever */
    int update_only;                      /* 1: PARTI_ERR_CONSUMER_NOT_FOUND when the consumer is gone, never
                                           * created anew (a deleted durable is noticed, not silently made
                                           * again at "new" messages); nats-server 2.10+ ("action":"update") */
} parti_consumer_config;

typedef struct parti_consumer_info {
    char *name;
    char **filter_subjects;        /* as the server has them now */
    int filter_count;
    uint64_t delivered_stream_seq; /* the consumer's position */
    uint64_t delivered_consumer_seq; /* deliveries so far, redeliveries too (the next takes this + 1) */
    uint64_t ack_floor_stream_seq;
    uint64_t num_pending;          /* matching messages after the position */
    uint64_t num_ack_pending;      /* delivered, not yet acked */
    uint64_t num_redelivered;
    parti_deliver_policy deliver_policy; /* fixed at creation: an upsert must repeat it */
    uint64_t opt_start_seq;              /* with PARTI_DELIVER_BY_START_SEQUENCE */
} parti_consumer_info;

typedef enum parti_retention {
    PARTI_RETENTION_LIMITS = 0,  /* kept until limits remove them (the usual) */
    PARTI_RETENTION_INTEREST,    /* removed once every consumer acked */
    PARTI_RETENTION_WORKQUEUE    /* removed when acked; consumer filters may not overlap */
} parti_retention;

typedef struct parti_stream_config {
    const char *name;
    const char *const *subjects;   /* may hold wildcards */
    int subject_count;
    int memory_storage;
    uint64_t duplicate_window_ms;  /* Nats-Msg-Id dedupe window; 0 = 2 min */
    uint64_t max_msgs;             /* 0 = unlimited */
    parti_retention retention;     /* default limits */
} parti_stream_config;

typedef struct parti_stream_info {
    char *name;
    char **subjects;
    int subject_count;
    int memory_storage;
    uint64_t duplicate_window_ms;
    uint64_t messages, first_seq, last_seq;
    parti_retention retention;
    uint64_t created_ns;       /* when this stream was created (server clock, ns since 1970; 0: unknown):
                                * a stream deleted and created again under its name has another */
} parti_stream_info;

/* The startup contract, pure: does the stream (as stream_info gave it) fit
 * cfg? Every subject the template makes from cfg.partitions must lie inside
 * one of the stream's subjects (a wildcard partition inside a wider
 * wildcard); the retention must not be workqueue (a partition changing
 * owner briefly sits in two consumers' filters, which a work queue
 * refuses); cfg.require_file_storage and cfg.min_duplicate_window_ms when
 * set. PARTI_ERR_STREAM_MISMATCH with the setting named in msg, e.g.
 * "stream orders: subjects [\"orders.eu.*\"] do not cover \"orders.us.1\"
 * (partition 2)" or "stream orders: retention workqueue ...". */
PARTIDEF parti_err parti_stream_check(const parti_stream_info *si, const parti_config *cfg, char *msg,
                                      size_t msg_size);
/* 1 when every subject matching filter a also matches filter b. */
PARTIDEF int parti_subject_covers(const char *b, const char *a);


typedef struct parti_header {
    const char *name;
    const char *value;
} parti_header;

/* A message delivered by a pull. Every pointer stays valid until the message
 * is released with the transport's msg_release (or acked through ack, which
 * does not release). Release every message before the transport is closed:
 * a release may use the transport. */
typedef struct parti_msg {
    const char *subject;
    const uint8_t *data;
    size_t len;
    const parti_header *headers;
    int header_count;
    uint64_t stream_seq;
    uint64_t consumer_seq;
    uint32_t delivery_count;   /* 1 on first delivery */
    uint64_t num_pending;      /* messages left for the consumer after this one */
    uint64_t timestamp_ms;     /* when the stream stored it (transport clock) */
    void *handle;              /* transport's; the core never looks inside */
    /* Set by the consumer for the handler (transports leave them 0): the
     * fencing token. partition is the message's index into config.partitions
     * (-1: none matches); generation is this worker's ownership generation of
     * that partition (a group's claim revision, monotone across owners; 0
     * outside a group). A sink that stores the highest generation per
     * partition and rejects writes below it never takes a stale owner's
     * write (docs/protocol.md, "Fencing"). */
    int partition;
    uint64_t generation;
} parti_msg;

typedef struct parti_fetch_opts {
    int batch;                 /* >= 1 */
    int64_t max_bytes;         /* 0 = no limit */
    uint32_t expires_ms;       /* the pull request lives this long on the server (>= 10) */
    uint32_t heartbeat_ms;     /* idle heartbeat, <= expires/2; 0 = none */
} parti_fetch_opts;

typedef enum parti_ack_kind {
    PARTI_ACK_ACK = 0,
    PARTI_ACK_NAK,             /* redeliver after delay_ms (0 = at once) */
    PARTI_ACK_TERM,            /* never redeliver */
    PARTI_ACK_IN_PROGRESS      /* restart the ack_wait timer */
} parti_ack_kind;

typedef struct parti_pub_ack {
    uint64_t stream_seq;
    int duplicate;             /* 1 when the Nats-Msg-Id was seen within the duplicate window */
} parti_pub_ack;

/* One write of kv_update_many: key, value, len and expected as kv_update
 * takes them; revision and err are what it would have given back. */
typedef struct parti_kv_update {
    const char *key;
    const void *value;
    size_t len;
    uint64_t expected;
    uint64_t revision;         /* out: the key's new revision when err is PARTI_ERR_OK */
    parti_err err;             /* out: kv_update's result for this write */
} parti_kv_update;

typedef struct parti_transport_vtable {
    /* time and randomness */
    uint64_t (*now_ms)(void *self);  /* monotonic milliseconds */
    uint64_t (*random)(void *self);  /* 64 random bits */

    /* streams (parti creates one only when the user asks it to) */
    parti_err (*stream_create)(void *self, const parti_stream_config *cfg, uint32_t timeout_ms);
    parti_err (*stream_info)(void *self, const char *stream, parti_stream_info *out, uint32_t timeout_ms);
    parti_err (*stream_delete)(void *self, const char *stream, uint32_t timeout_ms);

    /* key/value; kv_open creates the bucket when missing */
    parti_err (*kv_open)(void *self, const parti_kv_config *cfg, uint32_t timeout_ms);
    /* create-if-absent: PARTI_ERR_KEY_EXISTS when the key has a live value */
    parti_err (*kv_create)(void *self, const char *bucket, const char *key, const void *value, size_t len,
                           uint64_t *revision, uint32_t timeout_ms);
    /* compare-and-swap: PARTI_ERR_WRONG_REVISION unless the key's last revision is expected */
    parti_err (*kv_update)(void *self, const char *bucket, const char *key, const void *value, size_t len,
                           uint64_t expected, uint64_t *revision, uint32_t timeout_ms);
    parti_err (*kv_put)(void *self, const char *bucket, const char *key, const void *value, size_t len,
                        uint64_t *revision, uint32_t timeout_ms);
    /* revision 0 = the latest; PARTI_ERR_KEY_NOT_FOUND when absent, deleted or expired */
    parti_err (*kv_get)(void *self, const char *bucket, const char *key, uint64_t revision, parti_kv_entry *out,
                        uint32_t timeout_ms);
    parti_err (*kv_delete)(void *self, const char *bucket, const char *key, uint32_t timeout_ms);
    /* live keys, sorted; free with parti_strings_free */
    parti_err (*kv_keys)(void *self, const char *bucket, char ***keys, int *count, uint32_t timeout_ms);
    /* watch a key prefix ("" = all): changes after the watch starts, in revision order */
    parti_err (*kv_watch)(void *self, const char *bucket, const char *prefix, parti_kv_watcher **out,
                          uint32_t timeout_ms);
    /* non-blocking: PARTI_ERR_OK with an entry, PARTI_ERR_NO_MESSAGES when nothing is pending */
    parti_err (*kv_watch_next)(void *self, parti_kv_watcher *w, parti_kv_entry *out);
    void (*kv_watch_stop)(void *self, parti_kv_watcher *w);

    /* durable pull consumers: upsert creates, or updates in place keeping the position */
    parti_err (*consumer_upsert)(void *self, const parti_consumer_config *cfg, uint32_t timeout_ms);
    parti_err (*consumer_info)(void *self, const char *stream, const char *durable, parti_consumer_info *out,
                               uint32_t timeout_ms);
    parti_err (*consumer_delete)(void *self, const char *stream, const char *durable, uint32_t timeout_ms);

    /* pull: fetch_start sends a pull request for the consumer; fetch_next waits
     * up to timeout_ms for its next message. A new request does not cancel an
     * earlier one still pending on a real server: messages the earlier one takes
     * are still returned by fetch_next (nothing is lost), only its end status is
     * not reported. fetch_next returns:
     *   PARTI_ERR_OK             *out holds a message (release it)
     *   PARTI_ERR_TIMEOUT        nothing yet; the pull is still pending
     *   PARTI_ERR_NO_MESSAGES    the pull is over (expired or batch/bytes done): start another
     *   PARTI_ERR_CONSUMER_DELETED, PARTI_ERR_NO_RESPONDERS (no such consumer),
     *   PARTI_ERR_MISSED_HEARTBEAT (no heartbeat for 2 x heartbeat_ms),
     *   PARTI_ERR_MESSAGE_TOO_LARGE: the next message alone is larger than
     *     max_bytes and this pull delivered nothing (pull it with no limit);
     *     a message that does not fit after others ends the pull with
     *     PARTI_ERR_NO_MESSAGES,
     *   PARTI_ERR_SERVER_SHUTDOWN, PARTI_ERR_NOT_CONNECTED: the pull is over */
    parti_err (*fetch_start)(void *self, const char *stream, const char *durable, const parti_fetch_opts *opts,
                             uint32_t timeout_ms);
    parti_err (*fetch_next)(void *self, const char *stream, const char *durable, parti_msg *out,
                            uint32_t timeout_ms);
    parti_err (*ack)(void *self, const parti_msg *m, parti_ack_kind kind, uint32_t delay_ms, uint32_t timeout_ms);
    void (*msg_release)(void *self, parti_msg *m);

    /* JetStream publish; PARTI_ERR_NO_RESPONDERS when no stream takes the subject */
    parti_err (*publish)(void *self, const char *subject, const parti_header *headers, int header_count,
                         const void *data, size_t len, parti_pub_ack *ack, uint32_t timeout_ms);

    /* waits ms of now_ms time (the fake moves its virtual clock instead); used
     * when nothing else can be waited on, so poll loops never spin. May be
     * NULL: then poll returns early instead of waiting. */
    void (*sleep_ms)(void *self, uint32_t ms);

    /* 1 while connected to a server, 0 while not (reconnecting). May be NULL
     * (health then infers it from the errors calls give). */
    int (*connected)(void *self);

    /* delete only when the key's last revision is expected (>= 1):
     * PARTI_ERR_WRONG_REVISION otherwise, and nothing is written. May be NULL:
     * the group then reads the key back before an unconditional delete */
    parti_err (*kv_delete_if)(void *self, const char *bucket, const char *key, uint64_t expected,
                              uint32_t timeout_ms);

    /* A direct read of the stream, outside any consumer: the first stored
     * message whose sequence is >= from_seq (>= 1) and whose subject matches
     * filter (a subject; wildcards allowed), into out. PARTI_ERR_NO_MESSAGES
     * when there is none; PARTI_ERR_STREAM_NOT_FOUND. out is given back with
     * msg_release and never acked (out->consumer_seq 0, delivery_count 1).
     * A group needs it: a partition that moves in is caught up with it from
     * its checkpoint (see the handoff). */
    parti_err (*stream_get_next)(void *self, const char *stream, const char *filter, uint64_t from_seq,
                                 parti_msg *out, uint32_t timeout_ms);

    /* Sends what the transport holds back to send together (the nats.c
     * binding's plain acks, see parti_nats.h) and frees what it holds back
     * to free together (the binding's released messages). The worker
     * consumer calls it before parti_consumer_poll returns and when it is
     * destroyed, so no ack it gave waits for a later call. May be NULL:
     * nothing is held back. */
    void (*flush)(void *self);

    /* kv_update for n keys of one bucket, all sent before any reply is
     * awaited, in the order given, within timeout_ms in all. Not atomic:
     * each is applied or refused on its own, and u[i].err says which, as
     * kv_update would. A leader renews its member key and the leader key
     * this way: the server stores them microseconds apart rather than a
     * round trip apart, so when the leader dies both expire in the same
     * pass of the server's expiry timer (docs/protocol.md, "Leader election
     * and epochs"). May be NULL: the group then calls kv_update for each in
     * turn. */
    void (*kv_update_many)(void *self, const char *bucket, parti_kv_update *u, int n, uint32_t timeout_ms);
} parti_transport_vtable;

typedef struct parti_transport {
    const parti_transport_vtable *vt;
    void *self;
} parti_transport;

/* Checks a KV key: 1..PARTI_MAX_SUBJECT_LEN bytes of [A-Za-z0-9_=/.-], no
 * leading or trailing '.', no empty token (what JetStream KV accepts). */
PARTIDEF parti_err parti_kv_key_check(const char *key, char *msg, size_t msg_size);
PARTIDEF void parti_kv_entry_free(parti_kv_entry *e);
PARTIDEF void parti_consumer_info_free(parti_consumer_info *ci);
PARTIDEF void parti_stream_info_free(parti_stream_info *si);
PARTIDEF void parti_strings_free(char **strings, int count);
/* Finds a header by name (case-sensitive, as NATS headers are); NULL if absent. */
PARTIDEF const char *parti_msg_header(const parti_msg *m, const char *name);
/* The same, ignoring ASCII case (headers set by HTTP-minded producers vary). */
PARTIDEF const char *parti_msg_header_nocase(const parti_msg *m, const char *name);
/* Well-known headers, looked up ignoring case; NULL when absent:
 *   tenant       "x-tenant-id", then "tenant-id"
 *   correlation  "x-correlation-id", then "correlation-id" */
PARTIDEF const char *parti_msg_tenant_id(const parti_msg *m);
PARTIDEF const char *parti_msg_correlation_id(const parti_msg *m);
/* Parses a W3C trace context "traceparent" (untrusted): version (2 lowercase
 * hex, not "ff"), trace-id (32 lowercase hex, not all zero), parent-id (16,
 * not all zero), flags (2); version 00 is exactly 55 characters, later
 * versions may carry more after a '-'. trace_id / parent_id (33 / 17 bytes,
 * NUL-terminated) and flags may be NULL. PARTI_ERR_INVALID_ARGUMENT when it
 * is not one (outputs then hold "" / 0). */
PARTIDEF parti_err parti_traceparent_parse(const char *tp, char *trace_id, char *parent_id, uint8_t *flags);
/* The trace ID of the message's "traceparent" header into out (33 bytes);
 * PARTI_ERR_KEY_NOT_FOUND without the header, INVALID_ARGUMENT when bad. */
PARTIDEF parti_err parti_msg_trace_id(const parti_msg *m, char *out);

/* ======================================================================== */
/* JetStream protocol helpers (pure; used by the nats.c binding)            */
/* ======================================================================== */

/* What a delivered message's ack subject says about it:
 * "$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>" (v1)
 * or "$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<sseq>
 * .<cseq>.<ts>.<pending>[.<token>...]" (v2). Pointers are not kept: stream
 * and consumer are copied into the struct. */
typedef struct parti_js_ack_meta {
    char stream[PARTI_MAX_NAME_LEN + 1];
    char consumer[PARTI_MAX_NAME_LEN + 1];
    uint64_t delivered, stream_seq, consumer_seq, timestamp_ns, pending;
} parti_js_ack_meta;

/* Parses an ack subject (untrusted). PARTI_ERR_PROTOCOL when it is not one. */
PARTIDEF parti_err parti_js_ack_parse(const char *reply, size_t len, parti_js_ack_meta *out);

/* Maps a JetStream API error (its "err_code" and HTTP-like "code") to a
 * parti_err by what the caller should do: fix the call (INVALID_CONFIG,
 * INVALID_SUBJECT, ...), retry later (LIMIT_REACHED for account, storage,
 * consumer and stream limits and 429; NOT_CONNECTED while JetStream has no
 * leader; PROTOCOL for other server-side failures), or give up (UNSUPPORTED,
 * PERMISSION_DENIED). E.g. 10059 -> PARTI_ERR_STREAM_NOT_FOUND, 10071 ->
 * PARTI_ERR_WRONG_REVISION, 10026 -> PARTI_ERR_LIMIT_REACHED. Unknown errors
 * map by code class. */
PARTIDEF parti_err parti_js_api_error(int err_code, int code);
/* The same, with the error's description (may be NULL): the server reports
 * some refusals only in the text of a generic code, e.g. 10012 "deliver
 * policy can not be updated" (a consumer that exists with another
 * configuration: PARTI_ERR_ALREADY_EXISTS) where 10012 alone is a transient
 * server-side failure. */
PARTIDEF parti_err parti_js_api_error_described(int err_code, int code, const char *description);

/* Maps a pull status message ("Status" header value and "Description") to
 * what fetch_next reports: 100 -> PARTI_ERR_OK (heartbeat, keep waiting),
 * 404/408 -> PARTI_ERR_NO_MESSAGES, 409 "Consumer Deleted" ->
 * PARTI_ERR_CONSUMER_DELETED, 409 "Server Shutdown" ->
 * PARTI_ERR_SERVER_SHUTDOWN, 409 "Message Size Exceeds MaxBytes" ->
 * PARTI_ERR_MESSAGE_TOO_LARGE, other 409 -> PARTI_ERR_NO_MESSAGES (re-pull),
 * 503 -> PARTI_ERR_NO_RESPONDERS, anything else -> PARTI_ERR_PROTOCOL. */
PARTIDEF parti_err parti_js_pull_status(const char *status, const char *description);

/* Parses an RFC 3339 timestamp as nats-server writes them ("Nats-Time-Stamp":
 * "2026-12-03T06:10:24.123456789Z", or with a +hh:mm / -hh:mm offset; 0 to 9
 * fraction digits) into nanoseconds since the Unix epoch. Untrusted input,
 * exactly len bytes (no NUL needed): PARTI_ERR_INVALID_ARGUMENT for anything
 * else (out of range fields, dates before 1970 or after 2262). */
PARTIDEF parti_err parti_rfc3339_parse(const char *s, size_t len, uint64_t *ns);

/* A server wall-clock time (ns since the epoch) on a transport's clock:
 * transport_now_ms - (wall_now_ns - wall_ns) / 1e6, clamped at 0 and at
 * transport_now_ms (a time from the future is now). Pure. */
PARTIDEF uint64_t parti_wall_to_transport_ms(uint64_t wall_ns, uint64_t wall_now_ns, uint64_t transport_now_ms);

/* Parses "2.10.27" (or "v2.15.1-beta") into a comparable number
 * major*1000000 + minor*1000 + patch; 0 when unparsable. */
PARTIDEF uint32_t parti_version_number(const char *version);

/* ======================================================================== */
/* Metrics: counters, gauges, histograms and a Prometheus text writer        */
/* ======================================================================== */
/* Metrics are plain structs the application reads directly: no registry
 * object, no global state, no locks, no allocation. The core updates them on
 * the poll thread only; a reader on another thread (an HTTP /metrics
 * handler, say) must take a copy under a lock of its own that the poll
 * thread also holds while it runs (e.g. copy the whole parti_metrics struct
 * between parti_poll() calls), then format the copy.
 *
 *   parti_counter    uint64_t, only goes up (wraps modulo 2^64, which
 *                    Prometheus reads as a counter reset)
 *   parti_gauge      double: Prometheus samples are float64 anyway, and a
 *                    double holds every integer a gauge here reaches
 *                    (exact up to 2^53)
 *   parti_histogram  fixed finite upper bounds (seconds for durations) set
 *                    at init, per-bucket counts, sum and count
 *
 * parti_metrics_write_prometheus formats any set of series in the Prometheus
 * text exposition format 0.0.4; parti_metrics_write formats the library's
 * own registry (parti_metrics, below):
 *
 *     parti_metrics m;                      // in real use: the one parti keeps
 *     parti_label common[] = {{"worker", "w-1"}};
 *     char buf[16384]; size_t needed;
 *     parti_metrics_init(&m);
 *     m.consumer_updates_success.value++;
 *     parti_histogram_observe(&m.consumer_update_latency, 0.004);
 *     if (parti_metrics_write(&m, common, 1, buf, sizeof buf, &needed) == PARTI_ERR_OK)
 *         serve(buf, needed - 1);           // else: grow to needed and call again
 */

/* Most finite bucket bounds of one histogram (the "+Inf" bucket is extra).
 * At least as many as the registry's largest histogram uses (13). */
#ifndef PARTI_HISTOGRAM_MAX_BUCKETS
#define PARTI_HISTOGRAM_MAX_BUCKETS 16
#endif
#if PARTI_HISTOGRAM_MAX_BUCKETS < 13 || PARTI_HISTOGRAM_MAX_BUCKETS > 1024
#error "PARTI_HISTOGRAM_MAX_BUCKETS must be 13..1024 (the registry's histograms need 13)"
#endif

typedef struct parti_counter {
    uint64_t value;
} parti_counter;

typedef struct parti_gauge {
    double value;
} parti_gauge;

/* Observation v lands in the first bucket i with v <= bounds[i], or in
 * buckets[bucket_count] when it is above every bound. buckets[] are NOT
 * cumulative; the writer makes them so. NaN and +-Inf observations are not
 * recorded (one would turn sum into Inf or NaN for good) and only counted in
 * ignored. The writer derives _count and the "+Inf" bucket from buckets[],
 * so the exposition stays self-consistent even if count was edited. */
typedef struct parti_histogram {
    int bucket_count;                                  /* finite bounds in use, 0..PARTI_HISTOGRAM_MAX_BUCKETS */
    double bounds[PARTI_HISTOGRAM_MAX_BUCKETS];        /* finite, strictly increasing upper bounds */
    uint64_t buckets[PARTI_HISTOGRAM_MAX_BUCKETS + 1]; /* per-bucket counts; [bucket_count] = above the last bound */
    uint64_t count;                                    /* recorded observations */
    double sum;                                        /* sum of recorded observations */
    uint64_t ignored;                                  /* non-finite observations dropped */
} parti_histogram;

/* Adds n; wraps modulo 2^64 (Prometheus reads that as a reset). The three
 * helpers ignore a NULL metric. */
PARTIDEF void parti_counter_add(parti_counter *c, uint64_t n);
PARTIDEF void parti_gauge_set(parti_gauge *g, double v);
PARTIDEF void parti_gauge_add(parti_gauge *g, double delta);
/* Zeroes h and sets its bounds: 0..PARTI_HISTOGRAM_MAX_BUCKETS finite,
 * strictly increasing values (bounds may be NULL when n is 0). Otherwise
 * PARTI_ERR_INVALID_ARGUMENT and h is left zeroed (a single "+Inf" bucket). */
PARTIDEF parti_err parti_histogram_init(parti_histogram *h, const double *bounds, int n);
/* Records v (see parti_histogram). NULL h is ignored. */
PARTIDEF void parti_histogram_observe(parti_histogram *h, double v);

/* ---- describing series for the writer ------------------------------------ */

typedef struct parti_label {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" (reserved by Prometheus) */
    const char *value; /* any valid UTF-8 */
} parti_label;

typedef enum parti_metric_type {
    PARTI_METRIC_COUNTER = 1,
    PARTI_METRIC_GAUGE,
    PARTI_METRIC_HISTOGRAM
} parti_metric_type;

/* One sample series. Consecutive entries with the same name form one family
 * (one "# HELP" and "# TYPE"); they must share the type, the family's help
 * is its first entry's (NULL or "" means no HELP line), and a name may not
 * come back after another family. value points to the parti_counter,
 * parti_gauge or parti_histogram matching type. Histogram series may not
 * have a label named "le" (the writer adds it). */
typedef struct parti_metric {
    const char *name;         /* [a-zA-Z_:][a-zA-Z0-9_:]* */
    const char *help;         /* any valid UTF-8, or NULL */
    parti_metric_type type;
    const parti_label *labels;/* may be NULL when label_count is 0 */
    int label_count;
    const void *value;
} parti_metric;

/* Writes count series in the Prometheus text exposition format 0.0.4 into
 * buf (cap bytes; buf may be NULL when cap is 0, for a size-only call).
 * common labels come first on every sample, then the series' own, then "le"
 * on histogram buckets. No label name may repeat within one sample.
 *
 * Output per family: "# HELP name text" (\\ and newline escaped), "# TYPE
 * name counter|gauge|histogram", then one "name{labels} value" line per
 * sample (no braces when there are no labels; label values escape \\, " and
 * newline). Histograms give cumulative name_bucket{...,le="b"} lines for each
 * bound and le="+Inf", then name_sum and name_count. Numbers: counters as
 * exact integers; doubles in the shortest form that reads back as the same
 * double, spelled as Go's strconv.FormatFloat(v, 'g', -1, 64) spells it (so
 * le values match client_golang's): "0.005", "10", "1e-07", "1.5e+06", never
 * a locale's decimal comma; and "+Inf", "-Inf", "NaN".
 *
 * Returns PARTI_ERR_OK with *needed = bytes written including the NUL;
 * PARTI_ERR_BUFFER_TOO_SMALL with *needed = the exact size a second call
 * needs, buf then holding the first cap - 1 bytes of the output and a NUL;
 * PARTI_ERR_INVALID_ARGUMENT for NULL pointers, negative counts, bad names,
 * bad types, invalid UTF-8, bad histogram bounds or a family split in two
 * (then *needed is 0 and buf, if cap > 0, holds ""). Never writes past cap;
 * always NUL-terminates when cap > 0. needed may be NULL. Zero series give
 * "" (needed 1). */
PARTIDEF parti_err parti_metrics_write_prometheus(const parti_metric *metrics, int count,
                                                  const parti_label *common_labels, int common_count, char *buf,
                                                  size_t cap, size_t *needed);

/* "counter", "gauge", "histogram"; "unknown" for anything else. */
PARTIDEF const char *parti_metric_type_name(parti_metric_type t);

/* ---- the library's registry ---------------------------------------------- */

/* Bucket bounds (seconds) of the registry's histograms. */
#define PARTI_METRICS_UPDATE_LATENCY_BUCKETS 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
#define PARTI_METRICS_REBALANCE_DURATION_BUCKETS 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60

/* Every metric parti keeps: the public contract. One row per series:
 *   X(field, kind, "metric_name", label_name, label_value, bounds, "help")
 * field is the parti_metrics member, kind counter | gauge | histogram,
 * label_name/label_value 0 for an unlabelled series, bounds a bucket list
 * for histograms (0 otherwise). Rows of one family are consecutive; only
 * the first carries the help text. New rows are appended to their group;
 * names never change. */
#define PARTI_METRICS(X)                                                                                           \
    /* ---- the worker consumer ---- */                                                                            \
    /* Consumer filter updates by outcome: success (filter_subjects changed on the server), failure (the update   \
     * failed and will be retried), noop (the wanted subjects equalled the current ones). */                      \
    X(consumer_updates_success, counter, "parti_worker_consumer_updates_total", "result", "success", 0,             \
      "Worker consumer filter updates, by result (success, failure, noop).")                                      \
    X(consumer_updates_failure, counter, "parti_worker_consumer_updates_total", "result", "failure", 0, 0)         \
    X(consumer_updates_noop, counter, "parti_worker_consumer_updates_total", "result", "noop", 0, 0)               \
    /* Time from an accepted assignment to the consumer's filter being in place on the server. */                 \
    X(consumer_update_latency, histogram, "parti_worker_consumer_update_latency_seconds", 0, 0,                    \
      PARTI_METRICS_UPDATE_LATENCY_BUCKETS, "Seconds from an assignment change to the consumer filter being applied.") \
    /* Subjects in the consumer's filter_subjects now. */                                                          \
    X(consumer_subjects_current, gauge, "parti_worker_consumer_subjects_current", 0, 0, 0,                         \
      "Subjects in the worker consumer's filter_subjects now.")                                                   \
    /* Updates that left the subject count at or above subjects_warn_percent of max_subjects. */                 \
    X(consumer_subjects_near_limit, counter, "parti_worker_consumer_subjects_near_limit_total", 0, 0, 0,           \
      "Consumer updates whose subject count reached the near-limit warning threshold of max_subjects.")           \
    /* Subjects added to / removed from the filter, summed over all updates. */                                   \
    X(consumer_subject_adds, counter, "parti_worker_consumer_subject_changes_total", "type", "add", 0,             \
      "Subjects added to or removed from the worker consumer's filter, by type (add, remove).")                  \
    X(consumer_subject_removes, counter, "parti_worker_consumer_subject_changes_total", "type", "remove", 0, 0)    \
    /* The consumer was deleted (or lost) and created again. */                                                   \
    X(consumer_recreations, counter, "parti_worker_consumer_recreations_total", 0, 0, 0,                           \
      "Times the worker consumer was found missing and created again.")                                           \
    X(consumer_recreation_failures, counter, "parti_worker_consumer_recreation_failures_total", 0, 0, 0,           \
      "Failed attempts to create the worker consumer again.")                                                     \
    /* Assignment changes folded into a later update because one was already in flight. */                        \
    X(consumer_updates_coalesced, counter, "parti_worker_consumer_updates_coalesced_total", 0, 0, 0,               \
      "Assignment changes merged into a later consumer update instead of applied one by one.")                   \
    /* Pulls started again after an error (consumer deleted, missed heartbeat, server shutdown, ...). */          \
    X(consumer_pull_restarts, counter, "parti_worker_consumer_pull_restarts_total", 0, 0, 0,                       \
      "Pull requests restarted after an error ended the previous one.")                                           \
    /* Pull errors in a row since the last good pull; 0 when healthy. */                                          \
    X(consumer_pull_consecutive_failures, gauge, "parti_worker_consumer_pull_consecutive_failures", 0, 0, 0,       \
      "Pull failures in a row since the last successful pull.")                                                   \
    /* Messages handled, by the verdict the handler returned. */                                                  \
    X(consumer_messages_ack, counter, "parti_worker_consumer_messages_total", "result", "ack", 0,                  \
      "Messages handled, by result (ack, nak, term, in_progress).")                                               \
    X(consumer_messages_nak, counter, "parti_worker_consumer_messages_total", "result", "nak", 0, 0)               \
    X(consumer_messages_term, counter, "parti_worker_consumer_messages_total", "result", "term", 0, 0)             \
    X(consumer_messages_in_progress, counter, "parti_worker_consumer_messages_total", "result", "in_progress", 0, 0) \
    /* Messages past max_deliver, published to the dead-letter subject. */                                        \
    X(consumer_dead_letters, counter, "parti_worker_consumer_dead_letters_total", 0, 0, 0,                         \
      "Messages sent to the dead-letter subject (terminated, or not acked on their last delivery).")                                \
    /* Redeliveries of a partition this worker no longer owns; still processed (nobody else would get them). */   \
    X(consumer_foreign_redeliveries, counter, "parti_worker_consumer_foreign_redeliveries_total", 0, 0, 0,         \
      "Redelivered messages of partitions this worker no longer owns, processed anyway.")                        \
    /* Forced refreshes after unhealthy_after pull failures within failure_window_ms. */                         \
    X(consumer_refreshes, counter, "parti_worker_consumer_refreshes_total", 0, 0, 0,                               \
      "Forced consumer refreshes after repeated pull failures within the failure window.")                       \
    /* Handoff: a moved-in partition's messages read from the stream, and messages acked without the handler. */ \
    X(consumer_catch_up_reads, counter, "parti_worker_consumer_catch_up_reads_total", 0, 0, 0,                    \
      "Messages of a partition read from the stream after its checkpoint when it moved in (the catch-up).")    \
    X(consumer_catch_up_tails, counter, "parti_worker_consumer_catch_up_tails_total", 0, 0, 0,                    \
      "Catch-ups that went on reading past their end: the durable had not delivered that far (a backlog).")    \
    X(consumer_catch_up_tails_ended, counter, "parti_worker_consumer_catch_up_tails_ended_total", 0, 0, 0,        \
      "Catch-up tails ended: the durable delivered as far as they had read or had nothing pending, or they fell behind their partitions' rates.") \
    X(consumer_delivery_gaps, counter, "parti_worker_consumer_delivery_gaps_total", 0, 0, 0,                      \
      "Deliveries lost on the way (a gap in the consumer sequence): the partitions were caught up again.")      \
    X(consumer_handoff_skipped, counter, "parti_worker_consumer_handoff_skipped_total", 0, 0, 0,                   \
      "Messages acked without the handler: done before, read by a catch-up, or of a partition another owns.")  \
    /* A message larger than fetch_max_bytes: pulled alone, without the byte limit. */                            \
    X(consumer_oversized_messages, counter, "parti_worker_consumer_oversized_messages_total", 0, 0, 0,             \
      "Messages larger than fetch_max_bytes, pulled alone without the byte limit.")                              \
    /* ---- membership, leader, rebalance ---- */                                                                 \
    X(members_current, gauge, "parti_members_current", 0, 0, 0, "Live members of the group as this worker sees it.") \
    /* 1 while this worker is the leader (computes and publishes assignments), else 0. */                         \
    X(is_leader, gauge, "parti_is_leader", 0, 0, 0, "1 while this worker is the group leader, else 0.")             \
    X(leader_elections, counter, "parti_leader_elections_total", 0, 0, 0,                                          \
      "Times this worker won the leader election.")                                                               \
    /* The epoch of the leadership this worker last saw; fences stale leaders. */                                 \
    X(leader_epoch, gauge, "parti_leader_epoch", 0, 0, 0, "Epoch of the current leadership as this worker sees it.") \
    /* Version of the assignment this worker applies. */                                                          \
    X(assignment_version, gauge, "parti_assignment_version", 0, 0, 0,                                              \
      "Version of the partition assignment this worker last applied.")                                            \
    X(partitions_owned, gauge, "parti_partitions_owned", 0, 0, 0, "Partitions assigned to this worker now.")       \
    /* Rebalances this worker ran as leader, by outcome. */                                                       \
    X(rebalances_success, counter, "parti_rebalances_total", "result", "success", 0,                               \
      "Rebalances run by this worker as leader, by result (success, failure).")                                   \
    X(rebalances_failure, counter, "parti_rebalances_total", "result", "failure", 0, 0)                            \
    /* From a membership change being noticed to the new assignment being published. */                           \
    X(rebalance_duration, histogram, "parti_rebalance_duration_seconds", 0, 0,                                     \
      PARTI_METRICS_REBALANCE_DURATION_BUCKETS,                                                                    \
      "Seconds from a membership change to the new assignment being published.")                                  \
    /* Partitions whose owner changed, summed over this leader's rebalances. */                                   \
    X(partitions_moved, counter, "parti_partitions_moved_total", 0, 0, 0,                                          \
      "Partitions that changed owner in rebalances run by this worker.")                                          \
    /* Documents on the assignment key this worker did not apply: garbage, another partition list, or */           \
    /* an epoch the leader key did not hold when read (a stale or foreign writer; the leader replaces them). */    \
    X(assignments_rejected, counter, "parti_assignments_rejected_total", 0, 0, 0,                                  \
      "Assignment documents rejected: malformed, for another partition list, or not fenced by the leader key.")   \
    /* Leader: partitions its last assignment left without an owner, because the workers' consumers */            \
    /* cannot hold them (partitions > workers x max_subjects). Also a health reason. */                            \
    X(partitions_unassigned, gauge, "parti_partitions_unassigned", 0, 0, 0,                                        \
      "Partitions the leader's last assignment left unowned: more than the workers can hold (max_subjects).")    \
    /* The handoff: partitions claimed and released, checkpoints written. */                                    \
    X(partition_claims, counter, "parti_partition_claims_total", 0, 0, 0,                                          \
      "Partitions this worker claimed (it then starts them after their checkpoint).")                            \
    X(partition_releases, counter, "parti_partition_releases_total", 0, 0, 0,                                      \
      "Partitions this worker released with their checkpoint (a graceful move).")                                \
    X(checkpoint_writes, counter, "parti_checkpoint_writes_total", 0, 0, 0,                                        \
      "Checkpoint writes of this worker (one per partition whose position moved, per commit interval).")        \
    X(checkpoint_failures, counter, "parti_checkpoint_failures_total", 0, 0, 0,                                    \
      "Checkpoint writes that got no answer (tried again).")                                                     \
    X(orphans_deleted, counter, "parti_orphan_consumers_deleted_total", 0, 0, 0,                                   \
      "Durable consumers of departed worker processes deleted by this worker as leader.")                        \
    X(heartbeat_failures, counter, "parti_heartbeat_failures_total", 0, 0, 0,                                      \
      "Heartbeats of this worker that failed to reach the KV bucket.")                                            \
    /* Another live process was found holding this worker's ID (its compare-and-swap renewal lost). */            \
    X(worker_id_conflicts, counter, "parti_worker_id_conflicts_total", 0, 0, 0,                                    \
      "Times another process was found holding this worker's ID.")                                                \
    /* 1 while the worker runs degraded (the control plane is unreachable; it keeps its last assignment). */      \
    X(degraded, gauge, "parti_degraded", 0, 0, 0,                                                                  \
      "1 while this worker runs degraded on its last known assignment, else 0.")                                  \
    /* Circuit breaker of control-plane calls: 0 closed (calls pass), 1 open (failing fast), 2 half-open. */     \
    X(circuit_breaker_state, gauge, "parti_circuit_breaker_state", 0, 0, 0,                                        \
      "Control-plane circuit breaker: 0 closed, 1 open, 2 half-open.")

/* The registry: one member per row of PARTI_METRICS (e.g. m->consumer_updates_success.value,
 * m->consumer_update_latency). parti updates it; the application reads it (see the threading note above). */
typedef struct parti_metrics {
#define PARTI__METRICS_FIELD(field, kind, name, label_name, label_value, bounds, help) parti_##kind field;
    PARTI_METRICS(PARTI__METRICS_FIELD)
#undef PARTI__METRICS_FIELD
} parti_metrics;

/* Series in the registry (rows of PARTI_METRICS): size for parti_metrics_list. */
#define PARTI__METRICS_PLUS_ONE(...) +1
enum { PARTI_METRICS_SERIES_COUNT = 0 PARTI_METRICS(PARTI__METRICS_PLUS_ONE) };
#undef PARTI__METRICS_PLUS_ONE

/* Zeroes the registry and sets the histograms' bounds. NULL is ignored. */
PARTIDEF void parti_metrics_init(parti_metrics *m);
/* Describes the registry's series into out (at most cap of them; out may be
 * NULL when cap is 0) in PARTI_METRICS order; the descriptions point into m
 * and static tables, so they stay valid as long as m does. Returns the number
 * of series (PARTI_METRICS_SERIES_COUNT), also when it is more than cap (then
 * only cap were written), or -1 for NULL m, negative cap or NULL out with
 * cap > 0. */
PARTIDEF int parti_metrics_list(const parti_metrics *m, parti_metric *out, int cap);
/* parti_metrics_list + parti_metrics_write_prometheus in one call, with the
 * same buffer contract (NULL m: PARTI_ERR_INVALID_ARGUMENT). The common
 * labels (e.g. worker="w-1") may not be named "result", "type" or "le": the
 * registry uses those. */
PARTIDEF parti_err parti_metrics_write(const parti_metrics *m, const parti_label *common, int ncommon, char *buf,
                                       size_t cap, size_t *needed);


/* ======================================================================== */
/* JSON: a bounded writer and an untrusted-input reader                      */
/* ======================================================================== */
/* Just enough JSON for JetStream API requests and responses, KV values and
 * parti's own documents: integers only on the writing side, a flat DOM on the
 * reading side. Everything read comes from the network, so the reader is
 * strict RFC 8259 with hard limits, and every accessor accepts any node index
 * (including -1 from a failed lookup) without misbehaving. */

/* Deepest nesting of arrays/objects, for both the reader and the writer
 * (1..64: the writer keeps one bit per level in a uint64_t). */
#ifndef PARTI_JSON_MAX_DEPTH
#define PARTI_JSON_MAX_DEPTH 64
#endif
#if PARTI_JSON_MAX_DEPTH < 1 || PARTI_JSON_MAX_DEPTH > 64
#error "PARTI_JSON_MAX_DEPTH must be 1..64"
#endif
/* Most nodes (values plus object keys) one document may hold. */
#ifndef PARTI_JSON_MAX_NODES
#define PARTI_JSON_MAX_NODES (1 << 20)
#endif
#if PARTI_JSON_MAX_NODES < 1 || PARTI_JSON_MAX_NODES > 0x7FFFFFFF
#error "PARTI_JSON_MAX_NODES must be 1..2^31-1 (node indices are int)"
#endif
/* Longest document accepted, in bytes (at most 4 GiB - 2: offsets are 32-bit). */
#ifndef PARTI_JSON_MAX_LEN
#define PARTI_JSON_MAX_LEN (64u * 1024u * 1024u)
#endif
#if PARTI_JSON_MAX_LEN > 0xFFFFFFFE
#error "PARTI_JSON_MAX_LEN must be below 4 GiB - 1 (node offsets are 32-bit)"
#endif

/* ---- writer ---------------------------------------------------------------
 * Writes into a caller buffer and never past it. Commas and colons are
 * automatic; misuse (a key outside an object, a value where a key is due, an
 * unbalanced end, a second top-level value) is recorded, not crashed on.
 * The first error sticks and later calls do nothing, except that
 * PARTI_ERR_BUFFER_TOO_SMALL keeps counting len so one pass reports the size
 * the whole output needs; a misuse error found later replaces it (a bigger
 * buffer would not help). A size-only pass: init with buf NULL and cap 0.
 *
 * Strings are escaped per RFC 8259: '"', '\\' and bytes below 0x20 (\b \f \n
 * \r \t, others \u00XX); everything else, including UTF-8, is copied as is.
 * Strings that are not valid UTF-8 are refused with PARTI_ERR_INVALID_ARGUMENT
 * (nothing of them is written): parti never alters a name or ID silently.
 *
 *     char buf[256]; size_t needed;
 *     parti_json_writer w;
 *     parti_json_writer_init(&w, buf, sizeof buf);
 *     parti_json_object_begin(&w);
 *     parti_json_key(&w, "stream_name"); parti_json_string(&w, "orders");
 *     parti_json_key(&w, "seq");         parti_json_uint(&w, 42);
 *     parti_json_object_end(&w);
 *     if (parti_json_writer_finish(&w, &needed) != PARTI_ERR_OK) ...   // needed: bytes incl. NUL
 */
typedef struct parti_json_writer {
    char *buf;          /* caller buffer; NULL only with cap 0 */
    size_t cap;
    size_t len;         /* bytes the output needs so far, without the NUL; counts on past cap */
    parti_err err;      /* first error (see above); PARTI_ERR_OK while all is well */
    int depth;          /* open arrays/objects */
    int after_key;      /* a key was written and its value is due */
    int root_done;      /* the top-level value has been started */
    uint64_t comma;     /* bit d-1: the container at depth d already holds a value */
    uint64_t object;    /* bit d-1: the container at depth d is an object */
} parti_json_writer;

/* buf may be NULL when cap is 0 (size-only pass); NULL with cap > 0 records
 * PARTI_ERR_INVALID_ARGUMENT. */
PARTIDEF void parti_json_writer_init(parti_json_writer *w, char *buf, size_t cap);
/* More than PARTI_JSON_MAX_DEPTH open containers: PARTI_ERR_JSON_TOO_DEEP. */
PARTIDEF void parti_json_object_begin(parti_json_writer *w);
PARTIDEF void parti_json_object_end(parti_json_writer *w);
PARTIDEF void parti_json_array_begin(parti_json_writer *w);
PARTIDEF void parti_json_array_end(parti_json_writer *w);
/* An object member's name; only inside an object, and only where a key is due. */
PARTIDEF void parti_json_key(parti_json_writer *w, const char *key);
PARTIDEF void parti_json_key_n(parti_json_writer *w, const char *key, size_t n);
/* s NULL writes null. */
PARTIDEF void parti_json_string(parti_json_writer *w, const char *s);
/* n bytes of s, which may contain NUL (written as \u0000). */
PARTIDEF void parti_json_string_n(parti_json_writer *w, const char *s, size_t n);
PARTIDEF void parti_json_int(parti_json_writer *w, int64_t v);
PARTIDEF void parti_json_uint(parti_json_writer *w, uint64_t v);
PARTIDEF void parti_json_bool(parti_json_writer *w, int v);
PARTIDEF void parti_json_null(parti_json_writer *w);
/* A number given as its JSON text (e.g. copied from a parsed document); text
 * that is not exactly one RFC 8259 number is PARTI_ERR_INVALID_ARGUMENT. */
PARTIDEF void parti_json_number_raw(parti_json_writer *w, const char *text, size_t n);
/* Ends the output: NUL-terminates it when len + 1 <= cap, sets *needed (may be
 * NULL) to len + 1, and returns the first error: PARTI_ERR_BUFFER_TOO_SMALL
 * when it did not fit (buf then holds a truncated, NUL-terminated prefix when
 * cap > 0), PARTI_ERR_INVALID_ARGUMENT when containers are still open or
 * nothing was written. */
PARTIDEF parti_err parti_json_writer_finish(parti_json_writer *w, size_t *needed);

/* ---- reader ---------------------------------------------------------------
 * parti_json_parse builds a flat array of nodes. Node 0 is the root; the
 * children of an array are its elements, the children of an object are its
 * member VALUES, each pointing at its key (a STRING node) through .key.
 * Iterate with parti_json_first / parti_json_next:
 *
 *     parti_json_doc doc;
 *     if (parti_json_parse(&doc, text, len, NULL, msg, sizeof msg) != PARTI_ERR_OK) ...
 *     int cfg = parti_json_get(&doc, parti_json_root(&doc), "config");
 *     int subs = parti_json_get(&doc, cfg, "filter_subjects");   // -1 in, -1 out
 *     for (int i = parti_json_first(&doc, subs); i >= 0; i = parti_json_next(&doc, i))
 *         ... parti_json_as_string(&doc, i, buf, sizeof buf, NULL) ...
 *     parti_json_doc_free(&doc);
 *
 * Strict RFC 8259: exactly one value with optional surrounding whitespace; no
 * comments, trailing commas, NaN, leading zeros, '+', ".5" or "1."; strings
 * hold no raw control characters, only the standard escapes, \uXXXX with
 * surrogates properly paired, and valid UTF-8 (no overlongs, no encoded
 * surrogates, nothing above U+10FFFF). Duplicate object keys are kept;
 * lookups return the LAST one, as Go's encoding/json (nats-server) does. */
typedef enum parti_json_type {
    PARTI_JSON_INVALID = 0, /* what a bad node index reports */
    PARTI_JSON_NULL,
    PARTI_JSON_FALSE,
    PARTI_JSON_TRUE,
    PARTI_JSON_NUMBER,
    PARTI_JSON_STRING,
    PARTI_JSON_ARRAY,
    PARTI_JSON_OBJECT
} parti_json_type;

/* node.flags */
#define PARTI_JSON_FLAG_ESCAPED 1u /* string: holds backslash escapes */
#define PARTI_JSON_FLAG_NUL 2u     /* string: holds U+0000 (\u0000) */
#define PARTI_JSON_FLAG_INTEGER 4u /* number: no fraction, no exponent */
#define PARTI_JSON_FLAG_KEY 8u     /* string: an object member's key */

typedef struct parti_json_node {
    parti_json_type type;
    uint32_t start;  /* offset in doc.text: strings just past the opening quote, others their first byte */
    uint32_t len;    /* raw bytes: strings between the quotes (still escaped), containers through the bracket */
    uint32_t count;  /* arrays: elements, objects: members, strings: bytes once unescaped; else 0 */
    int32_t child;   /* first element / first member value; -1 if none */
    int32_t next;    /* next element / member value of the parent; -1 at the end */
    int32_t key;     /* object member values: their key node; else -1 */
    uint32_t flags;  /* PARTI_JSON_FLAG_* */
} parti_json_node;

/* Owns a copy of the text and the nodes until parti_json_doc_free. */
typedef struct parti_json_doc {
    char *text;      /* the parsed bytes, NUL-terminated for convenience */
    size_t len;
    parti_json_node *nodes;
    int node_count;
} parti_json_doc;

/* Parses len bytes of text (no NUL needed) into *doc, which it overwrites (free
 * an earlier document first). Returns PARTI_ERR_JSON_SYNTAX,
 * PARTI_ERR_JSON_TOO_DEEP, PARTI_ERR_JSON_TOO_LARGE (more than
 * PARTI_JSON_MAX_LEN bytes or PARTI_JSON_MAX_NODES nodes), PARTI_ERR_NOMEM or
 * PARTI_ERR_INVALID_ARGUMENT (doc or text NULL). On failure *doc is empty,
 * *err_offset (may be NULL) is the offset of the offending byte (len when the
 * input ended early), and msg says what and where, e.g.
 * "JSON syntax error at byte 17: expected ':' after object key (found '}')". */
PARTIDEF parti_err parti_json_parse(parti_json_doc *doc, const char *text, size_t len, size_t *err_offset, char *msg,
                                    size_t msg_size);
/* Frees and zeroes; NULL and zeroed documents are fine, twice is fine. */
PARTIDEF void parti_json_doc_free(parti_json_doc *doc);

/* Every function below accepts NULL documents and any node index: a bad one
 * gives -1, 0, PARTI_JSON_INVALID or PARTI_ERR_INVALID_ARGUMENT. */
PARTIDEF int parti_json_root(const parti_json_doc *doc); /* 0, or -1 for an empty doc */
PARTIDEF parti_json_type parti_json_type_of(const parti_json_doc *doc, int node);
/* "null", "false", "true", "number", "string", "array", "object", "invalid" */
PARTIDEF const char *parti_json_type_name(parti_json_type t);
/* Elements of an array, members of an object; 0 for anything else. */
PARTIDEF uint32_t parti_json_count(const parti_json_doc *doc, int node);
/* First child / next sibling (see above), -1 when there is none. */
PARTIDEF int parti_json_first(const parti_json_doc *doc, int container);
PARTIDEF int parti_json_next(const parti_json_doc *doc, int node);
/* The key node of an object member's value, -1 for anything else. */
PARTIDEF int parti_json_member_key(const parti_json_doc *doc, int node);
/* Value of the member named key (compared unescaped; the last one if repeated),
 * -1 when absent or obj is not an object. key_n variant: key may hold NUL. */
PARTIDEF int parti_json_get(const parti_json_doc *doc, int obj, const char *key);
PARTIDEF int parti_json_get_n(const parti_json_doc *doc, int obj, const char *key, size_t key_len);
/* Element i of an array (walks from the front: iterate for whole arrays), -1 if none. */
PARTIDEF int parti_json_at(const parti_json_doc *doc, int arr, uint32_t i);
/* The node's raw text and its length (see parti_json_node), NULL on a bad index. */
PARTIDEF const char *parti_json_raw(const parti_json_doc *doc, int node, size_t *len);

/* Numbers as exact integers. Forms with a fraction or exponent count when
 * their value is an integer ("1e3", "2.50e1", "-0.0"). Not a number:
 * PARTI_ERR_JSON_TYPE; not an integer or out of the type's range:
 * PARTI_ERR_JSON_RANGE. *out is written only on success. */
PARTIDEF parti_err parti_json_as_int64(const parti_json_doc *doc, int node, int64_t *out);
PARTIDEF parti_err parti_json_as_uint64(const parti_json_doc *doc, int node, uint64_t *out);
/* true / false; anything else PARTI_ERR_JSON_TYPE. */
PARTIDEF parti_err parti_json_as_bool(const parti_json_doc *doc, int node, int *out);
/* The unescaped string, NUL-terminated, into out (cap bytes; out may be NULL
 * when cap is 0). *needed (may be NULL) gets the size including the NUL, also
 * with PARTI_ERR_BUFFER_TOO_SMALL (then nothing is written). A string holding
 * U+0000 is PARTI_ERR_JSON_RANGE here (it cannot be a C string): use
 * parti_json_as_bytes. Not a string: PARTI_ERR_JSON_TYPE. */
PARTIDEF parti_err parti_json_as_string(const parti_json_doc *doc, int node, char *out, size_t cap, size_t *needed);
/* The unescaped bytes (NUL included as is) into out; *len (may be NULL) gets
 * their count, also with PARTI_ERR_BUFFER_TOO_SMALL. A NUL is appended when
 * cap > count. */
PARTIDEF parti_err parti_json_as_bytes(const parti_json_doc *doc, int node, char *out, size_t cap, size_t *len);
/* A PARTI_MALLOC'd NUL-terminated copy (free with PARTI_FREE) into *out;
 * same errors as parti_json_as_string, plus PARTI_ERR_NOMEM. */
PARTIDEF parti_err parti_json_as_string_dup(const parti_json_doc *doc, int node, char **out);
/* 1 when node is a string whose unescaped bytes equal s, else 0; no allocation. */
PARTIDEF int parti_json_string_eq(const parti_json_doc *doc, int node, const char *s);
PARTIDEF int parti_json_string_eq_n(const parti_json_doc *doc, int node, const char *s, size_t n);

/* Member lookups in one call: PARTI_ERR_JSON_MISSING when obj has no member
 * key, PARTI_ERR_JSON_TYPE when obj is not an object or the value has the
 * wrong type (null included), PARTI_ERR_JSON_RANGE as above,
 * PARTI_ERR_INVALID_ARGUMENT for NULL doc/key/out or a bad obj index. */
PARTIDEF parti_err parti_json_get_int64(const parti_json_doc *doc, int obj, const char *key, int64_t *out);
PARTIDEF parti_err parti_json_get_uint64(const parti_json_doc *doc, int obj, const char *key, uint64_t *out);
PARTIDEF parti_err parti_json_get_bool(const parti_json_doc *doc, int obj, const char *key, int *out);
PARTIDEF parti_err parti_json_get_string(const parti_json_doc *doc, int obj, const char *key, char *out, size_t cap,
                                         size_t *needed);



/* ======================================================================== */
/* The worker consumer                                                       */
/* ======================================================================== */
/* One durable pull consumer per worker whose filter_subjects are exactly the
 * subjects of the partitions the worker owns. Usable on its own (a user with
 * an assignment source of their own) and, later, driven by membership.
 *
 *     static parti_verdict on_message(void *user, const parti_msg *m, uint32_t *nak_delay_ms) {
 *         return handle(m) ? PARTI_ACK : PARTI_NAK;   // *nak_delay_ms may be set for NAK
 *     }
 *     parti_consumer_options o = {0};
 *     parti_consumer *c;
 *     o.on_message = on_message;
 *     if ((e = parti_consumer_create(&c, &t, &cfg, &o, msg, sizeof msg))) ...
 *     int mine[] = {0, 3, 7};                          // indexes into cfg.partitions
 *     parti_consumer_update(c, "worker-1", mine, 3);   // recorded, applied by poll
 *     while (running) parti_consumer_poll(c, 100);     // update, recovery, pull, handler
 *     parti_consumer_destroy(c);                       // the durable stays on the server
 *
 * Lifecycle and guarantees:
 *   - Lazy: create makes no server call. The consumer appears on the server
 *     with the first non-empty update that poll applies; nothing is pulled
 *     before that.
 *   - update validates at once (partition indexes, worker ID, max_subjects:
 *     PARTI_ERR_TOO_MANY_SUBJECTS without touching the server) and records
 *     the wanted set. poll applies it once the coalescing window (opened by
 *     the first update of a burst) has passed, as ONE consumer_upsert with
 *     the full sorted set; an unchanged set is a no-op (counted, no call).
 *   - The worker ID is fixed by the first successful apply; another ID gives
 *     PARTI_ERR_WORKER_ID_IMMUTABLE unless allow_worker_id_change (then the
 *     consumer of the new ID is used and the old one is left on the server).
 *   - An empty assignment pauses pulling and keeps the consumer with its last
 *     filter (never an empty filter, which would mean the whole stream); the
 *     next non-empty update resumes.
 *   - Failed control-plane calls are retried with decorrelated-jitter backoff
 *     (cfg.backoff_*; randomness from the transport). When the retry budget
 *     (cfg.backoff_max_retries) runs out an UNHEALTHY event is raised and the
 *     retries go on at cfg.backoff_cap_ms: an assignment is never dropped.
 *   - A consumer deleted behind parti's back (seen by a pull, by an update
 *     that finds it gone: updates never create it anew, or by a
 *     consumer_info check every info_interval_ms while no pull is pending) is
 *     created again from the last applied subjects, with new messages only,
 *     and every partition of its filter is caught up from its position (in
 *     a group its checkpoint or what it handled since; alone, what it
 *     handled or at least the last ack floor the server reported): read
 *     from the stream in order, so none is skipped and none of its own
 *     partitions is replayed from before its position.
 *   - Ordered: each partition has a queue. A NAK (with its delay), an
 *     IN_PROGRESS (ack_wait / 2) or a failing dead-letter publish keeps the
 *     message here, in progress on the server, and tries it again in order;
 *     later messages of that partition wait, other partitions flow. After
 *     cfg.max_deliver tries it is dead-lettered (or terminated without a
 *     dead-letter subject) and the partition moves on. A redelivery of a
 *     message at or below its partition's position is acked without the
 *     handler.
 *   - With options.dead_letter_subject, a terminated message or one failed on
 *     its last delivery is published there (see the option) and then acked.
 *   - parti_consumer_health says live / ready / degraded with the last error.
 *   - Pull failures (missed heartbeats, no responders, server shutdown, ...)
 *     restart the pull after a backoff. options.unhealthy_after of them
 *     within options.failure_window_ms escalate: UNHEALTHY event, and a
 *     forced refresh (consumer_info, then the last subjects applied again,
 *     or the consumer created again when missing); the consumer reports
 *     degraded until a pull succeeds again.
 *   - A deleted stream: the consumer's checks fail with
 *     PARTI_ERR_STREAM_NOT_FOUND, it turns UNHEALTHY and keeps retrying with
 *     backoff; when the stream is back the consumer is created again.
 *   - Handler verdicts: ACK, NAK (redelivery after *nak_delay_ms, 0 = at
 *     once), TERM (never redelivered), IN_PROGRESS (restarts ack_wait; the
 *     message is redelivered later). The message and its pointers are valid
 *     only during the handler.
 *   - poll returns after timeout_ms of transport time (a little later when a
 *     handler runs long). When nothing can be waited on (paused, between
 *     retries) it waits with the transport's sleep_ms until the next timer or
 *     the deadline, so a caller's loop never spins (a transport without
 *     sleep_ms makes poll return early instead).
 *   - Callbacks run inside poll (and update for nothing but validation: no
 *     callback runs in update), on the caller's thread. */

/* ======================================================================== */
/* Logging                                                                   */
/* ======================================================================== */
/* parti is silent unless given a log callback (parti_options.log,
 * parti_consumer_options.log). A record is a level, a message and key/value
 * fields (e.g. worker="worker-3", error="consumer deleted"); the strings are
 * valid for the call. Two ready-made sinks print one line per record:
 * parti_log_to_console ("WARN  consumer recreated durable=parti-worker-1")
 * and parti_log_to_json_lines ({"level":"warn","msg":"...","durable":"..."});
 * their user pointer is a FILE * (NULL = stderr). Repeated identical records
 * are rate-limited (parti_log_limiter) so an outage cannot flood the log:
 * within a window the first burst goes through, the rest are counted and
 * summed up in a "repeated N times" field of the next record that passes. */

typedef enum parti_log_level { /* 0 is "the default" in options (INFO) */
    PARTI_LOG_DEBUG = 1,
    PARTI_LOG_INFO,
    PARTI_LOG_WARN,
    PARTI_LOG_ERROR,
    PARTI_LOG_OFF
} parti_log_level;

/* "debug", "info", "warn", "error", "off"; "unknown" otherwise. */
PARTIDEF const char *parti_log_level_name(parti_log_level level);

typedef struct parti_log_field {
    const char *key;
    const char *value;
} parti_log_field;

typedef void (*parti_log_fn)(void *user, parti_log_level level, const char *message, const parti_log_field *fields,
                             int field_count);

/* One line (ending in '\n') into buf, with the buffer contract of the other
 * writers (*needed = size with the NUL, also with BUFFER_TOO_SMALL; buf may
 * be NULL with cap 0). Console: "LEVEL message key=value key=\"two words\""
 * (values with spaces, quotes, '=' or control bytes are quoted and escaped).
 * JSON: {"level":"...","msg":"...","key":"value",...} (keys "level" and "msg"
 * in fields are written as given after them; JSON escaping). NULL fields
 * count as ""; PARTI_ERR_INVALID_ARGUMENT for a NULL message or negative
 * count. */
PARTIDEF parti_err parti_log_format_console(char *buf, size_t cap, size_t *needed, parti_log_level level,
                                            const char *message, const parti_log_field *fields, int field_count);
PARTIDEF parti_err parti_log_format_json(char *buf, size_t cap, size_t *needed, parti_log_level level,
                                         const char *message, const parti_log_field *fields, int field_count);
/* Ready-made sinks for parti_options.log: user is a FILE * (NULL = stderr). */
PARTIDEF void parti_log_to_console(void *file, parti_log_level level, const char *message,
                                   const parti_log_field *fields, int field_count);
PARTIDEF void parti_log_to_json_lines(void *file, parti_log_level level, const char *message,
                                      const parti_log_field *fields, int field_count);

/* Rate limit of identical records: at most burst of the same (level,
 * message, fields) within window_ms; zero fields mean defaults (burst 3,
 * window 10000 ms). Pure: time comes in. */
typedef struct parti_log_limiter {
    uint64_t window_ms;
    int burst;
    uint64_t last_hash, window_start;
    int in_window;
    uint32_t suppressed;   /* records dropped since the last one let through */
} parti_log_limiter;

/* 1: emit (then *suppressed gets how many were dropped before it, to be
 * reported with it), 0: drop (counted). */
PARTIDEF int parti_log_limiter_allow(parti_log_limiter *l, uint64_t now_ms, parti_log_level level,
                                     const char *message, const parti_log_field *fields, int field_count,
                                     uint32_t *suppressed);

typedef enum parti_verdict {
    PARTI_ACK = 0,      /* done: never handed over again */
    PARTI_NAK,          /* failed: handed over again after *nak_delay_ms (0 = at once), in order: later
                         * messages of its partition wait (other partitions do not) */
    PARTI_TERM,         /* poison: dead-lettered (with a dead-letter subject), never handed over again */
    PARTI_IN_PROGRESS   /* not done yet: handed over again after ack_wait / 2, in order, like a NAK */
} parti_verdict;

/* The message handler: fixed at creation. nak_delay_ms points to 0; set it
 * with PARTI_NAK to delay the retry. m->partition and m->generation are the
 * fencing token (see parti_msg). */
typedef parti_verdict (*parti_message_handler)(void *user, const parti_msg *m, uint32_t *nak_delay_ms);

typedef enum parti_consumer_event_kind {
    PARTI_EVENT_CONSUMER_CREATED = 0, /* first apply: the durable consumer is in place on the server */
    PARTI_EVENT_CONSUMER_UPDATED,     /* its filter_subjects changed in place */
    PARTI_EVENT_CONSUMER_RECREATED,   /* it was found missing and created again from the last subjects */
    PARTI_EVENT_CONSUMER_PAUSED,      /* empty assignment: pulling stopped, the consumer is kept */
    PARTI_EVENT_CONSUMER_RESUMED,     /* a non-empty assignment after a pause: pulling again */
    PARTI_EVENT_CONSUMER_UNHEALTHY,   /* retries exhausted, a fatal error, or pulls failing in a row */
    PARTI_EVENT_CONSUMER_HEALTHY      /* back to normal after UNHEALTHY */
} parti_consumer_event_kind;

/* "created", "updated", "recreated", "paused", "resumed", "unhealthy", "healthy". */
PARTIDEF const char *parti_consumer_event_name(parti_consumer_event_kind kind);

/* err is the error behind the event (PARTI_ERR_OK for most); detail is a
 * short human text (the durable name, or what failed), valid for the call. */
typedef void (*parti_consumer_event_fn)(void *user, parti_consumer_event_kind kind, parti_err err, const char *detail);

/* Zero means the default for every field but on_message (required). */
typedef struct parti_consumer_options {
    parti_message_handler on_message; /* required */
    void *user;                       /* passed to on_message and on_event */
    parti_consumer_event_fn on_event; /* may be NULL */
    uint32_t coalesce_ms;             /* updates within this window become one; default 75 */
    int no_coalesce;                  /* 1: apply every update at the next poll */
    int allow_worker_id_change;       /* 1: a new worker ID switches to that ID's consumer */
    uint32_t op_timeout_ms;           /* timeout of each control-plane call; default 5000 */
    uint32_t info_interval_ms;        /* existence check while no pull is pending; default 5000 */
    /* Escalation: unhealthy_after pull failures (missed heartbeats, no
     * responders, server shutdown, ...) within failure_window_ms make the
     * consumer UNHEALTHY and force a refresh: the last subjects are applied
     * again (the consumer recreated if missing). It stays unhealthy until a
     * pull succeeds again. */
    int unhealthy_after;              /* N: 1..64; default 3 */
    uint32_t failure_window_ms;       /* T; default 30000 */
    /* Dead letters: a message the handler terminates, or one on its last
     * delivery (delivery_count >= cfg.max_deliver) that the handler fails, is
     * published here (a JetStream subject; a stream must take it) with its
     * headers and Parti-Dead-Letter-Reason ("terminated" | "max_deliver"),
     * Parti-Original-Subject, -Stream, -Sequence, Parti-Delivery-Count, and
     * Nats-Msg-Id "parti-dlq-<stream>-<sequence>" so a retried publish is
     * deduplicated by the server; then it is acked. NULL = no dead letters
     * (the server then drops a message after max_deliver). Copied. */
    const char *dead_letter_subject;
    /* Logging (see "Logging"): silent when log is NULL. */
    parti_log_fn log;
    void *log_user;                   /* passed to log (a FILE * for the ready-made sinks) */
    parti_log_level log_level;        /* records below it are dropped; 0 = PARTI_LOG_INFO */
    /* 1: no retries (tests, development): the first failed control-plane
     * call stops the consumer and every later poll returns its error. */
    int fail_fast;
} parti_consumer_options;

typedef struct parti_consumer parti_consumer; /* opaque */

/* Validates cfg (parti_config_validate; the message goes to msg) and opts,
 * and copies what it keeps (strings, partitions): cfg may go away after.
 * t must outlive the consumer. Makes no server call. */
PARTIDEF parti_err parti_consumer_create(parti_consumer **out, const parti_transport *t, const parti_config *cfg,
                                         const parti_consumer_options *opts, char *msg, size_t msg_size);

/* Records the wanted assignment: the worker's ID and its partitions
 * (indexes into cfg.partitions; duplicates are fine; count 0 pauses).
 * Errors: PARTI_ERR_INVALID_ARGUMENT (NULL, index out of range),
 * PARTI_ERR_INVALID_WORKER_ID, PARTI_ERR_WORKER_ID_IMMUTABLE,
 * PARTI_ERR_TOO_MANY_SUBJECTS, PARTI_ERR_NOMEM; then nothing is recorded.
 * parti_consumer_last_message says more. No server call. */
PARTIDEF parti_err parti_consumer_update(parti_consumer *c, const char *worker_id, const int *partitions, int count);

/* The same, for a partition moving in: resume_from[i] (for partitions[i])
 * is the first stream sequence of that partition to process (0 = none
 * given). A consumer's filter grows in place and the server never rewinds
 * it, so a partition that enters the filter with a first sequence is caught
 * up: once the server has the new filter, its messages from there up to the
 * stream's last sequence are read from the stream (stream_get_next) and
 * handed over in order; durable deliveries of it up to that point are acked
 * without the handler (parti_worker_consumer_handoff_skipped_total). The
 * durable is never deleted or rewound for it. resume_from may be NULL. */
PARTIDEF parti_err parti_consumer_update_from(parti_consumer *c, const char *worker_id, const int *partitions,
                                              int count, const uint64_t *resume_from);

/* Runs what is due: the pending update, recovery, existence checks, then
 * pulls and calls the handler until timeout_ms of transport time passed or
 * nothing can be waited on. Failures of server calls are retried and
 * reported through events and metrics, not returned: poll returns
 * PARTI_ERR_OK, or PARTI_ERR_INVALID_ARGUMENT for a NULL consumer; with
 * options.fail_fast, the first failure's error (then on every call). */
PARTIDEF parti_err parti_consumer_poll(parti_consumer *c, uint32_t timeout_ms);

/* The subjects being consumed now: the applied filter, empty while paused
 * or before the first apply. Valid until the next update or poll. */
PARTIDEF const parti_subjects *parti_consumer_subjects(const parti_consumer *c);
/* 1 while an empty assignment holds pulling stopped. */
PARTIDEF int parti_consumer_is_paused(const parti_consumer *c);
/* The durable consumer's name once the first apply succeeded, else "". */
PARTIDEF const char *parti_consumer_durable(const parti_consumer *c);
/* The last error a server call or update gave (PARTI_ERR_OK when none). */
PARTIDEF parti_err parti_consumer_last_error(const parti_consumer *c);
/* A human message for the last error; never NULL. */
PARTIDEF const char *parti_consumer_last_message(const parti_consumer *c);
PARTIDEF const parti_metrics *parti_consumer_metrics(const parti_consumer *c);

/* ======================================================================== */
/* Circuit breaker                                                           */
/* ======================================================================== */
/* A transport decorator: parti_breaker_wrap gives a transport that forwards
 * to inner, with control-plane calls (stream_*, kv_open/create/update/put/
 * get/delete/keys/watch, consumer_*, fetch_start, publish) behind a breaker:
 *   closed     calls pass; failure_threshold failures in a row open it
 *   open       calls fail at once with PARTI_ERR_CIRCUIT_OPEN, without
 *              touching the network, for open_ms
 *   half-open  one call (the probe) passes; success closes the breaker,
 *              failure opens it again for another open_ms
 * Failures are the answers that say the server is unreachable or sick:
 * TIMEOUT, NOT_CONNECTED, NO_RESPONDERS, SERVER_SHUTDOWN. Every other answer
 * (KEY_EXISTS, WRONG_REVISION, CONSUMER_NOT_FOUND, ...) proves the server
 * is up and counts as a success. The data path is never blocked: now_ms,
 * random, sleep_ms, connected, fetch_next (it waits on a pull already sent),
 * ack, msg_release, kv_watch_next, kv_watch_stop pass straight through.
 * Callers do not spin while it is open: parti's retries are paced by their
 * backoff and its poll sleeps. Hand the breaker to parti_options.breaker so
 * health and the parti_circuit_breaker_state gauge show it. */
typedef enum parti_breaker_state {
    PARTI_BREAKER_CLOSED = 0,
    PARTI_BREAKER_OPEN = 1,
    PARTI_BREAKER_HALF_OPEN = 2
} parti_breaker_state;

/* "closed", "open", "half_open". */
PARTIDEF const char *parti_breaker_state_name(parti_breaker_state s);

typedef struct parti_breaker_options {
    int failure_threshold;  /* failures in a row that open it; default 5 */
    uint32_t open_ms;       /* how long it stays open before a probe; default 5000 */
    void (*on_change)(void *user, parti_breaker_state from, parti_breaker_state to); /* may be NULL */
    void *user;
} parti_breaker_options;

typedef struct parti_breaker parti_breaker; /* opaque */

/* *out gets the breaker, *wrapped the transport to hand to parti (valid
 * while the breaker lives; inner must outlive it). */
PARTIDEF parti_err parti_breaker_wrap(parti_breaker **out, parti_transport *wrapped, const parti_transport *inner,
                                      const parti_breaker_options *opts);
PARTIDEF void parti_breaker_free(parti_breaker *b);
PARTIDEF parti_breaker_state parti_breaker_state_of(const parti_breaker *b);
/* Calls failed fast while open, and times it opened. */
PARTIDEF uint64_t parti_breaker_fast_failures(const parti_breaker *b);
PARTIDEF uint64_t parti_breaker_opens(const parti_breaker *b);
/* 1 when an answer counts as a failure (see above). */
PARTIDEF int parti_breaker_is_failure(parti_err e);

/* Health, fit for probes:
 *   live      the object works and poll can run (always 1 for a created consumer)
 *   ready     the consumer exists on the server with the worker's filter and
 *             nothing is wrong now (a paused consumer with no partitions is ready)
 *   degraded  something needs recovering: the consumer is missing and being
 *             recreated, or failures passed the limits (UNHEALTHY event)
 * with the last error, its category, when it happened (transport clock, ms;
 * 0 = never) and its message (valid until the next poll or update). */
typedef struct parti_health {
    int live, ready, degraded;
    parti_err last_error;
    parti_category last_error_category;
    uint64_t last_error_ms;
    const char *last_error_message;
} parti_health;

PARTIDEF parti_err parti_consumer_health(const parti_consumer *c, parti_health *out);

/* Frees the consumer. Never deletes the durable consumer on the server (a
 * restarted worker finds its position there); NULL is ignored. */
PARTIDEF void parti_consumer_destroy(parti_consumer *c);

/* ======================================================================== */
/* Assignment: strategies and the assignment document (pure functions)       */
/* ======================================================================== */
/* Who owns which partition. parti_assign maps (partitions, live members,
 * previous owners) to an owner per partition; the leader runs it and
 * publishes the result as one assignment document (parti_assignment_encode),
 * which every worker decodes (parti_assignment_decode) and applies. Both are
 * pure: no I/O, no clock, no globals, no floating point, so every worker on
 * every platform computes the same bytes from the same input.
 *
 *     parti_member ms[] = {{"worker-1", 0}, {"worker-2", 0}, {"worker-3", 0}};
 *     parti_assign_input in = {0};
 *     in.partitions = parts; in.partition_count = nparts;
 *     in.members = ms; in.member_count = 3;
 *     in.previous_owner = prev;                   // member ID per partition, NULL = none
 *     int *owner = malloc(nparts * sizeof *owner);
 *     parti_err e = parti_assign(&in, NULL, owner, msg, sizeof msg);   // NULL = sticky, defaults
 *     // partition i now belongs to ms[owner[i]].id
 *
 *     parti_assignment a;
 *     e = parti_assignment_build(&a, &in, owner, epoch, version);
 *     e = parti_assignment_encode(&a, buf, sizeof buf, &needed);        // the KV value
 *     parti_assignment_free(&a);
 *
 * DETERMINISM
 *   Hashes are 64-bit FNV-1a (parti_hash64) finished with the murmur3 fmix64
 *   mixer (FNV's high bits change little when only the last bytes differ,
 *   which would cluster ring points such as "w1#1", "w1#2"):
 *     partition hash  fnv(key0 "." key1 "." ...), the key tokens joined with '.'
 *     ring point k    fmix64(fnv(member_id "#" k)), k in decimal, from 0
 *     partition spot  fmix64(partition hash)
 *     HRW score       fmix64(partition hash XOR fmix64(fnv(member_id)))
 *   Every sort is a total order ending in the member ID (bytewise, strcmp) or
 *   the partition index, so the order of in->members never matters: a
 *   shuffled member array gives the same owner IDs.
 *
 * LIMITS (define before including, same value everywhere)
 *   PARTI_ASSIGN_MAX_MEMBERS     members per assignment (65536, at most 131072)
 *   PARTI_ASSIGN_MAX_PARTITIONS  partitions per assignment (4194304)
 *   PARTI_ASSIGN_MAX_ID_LEN      bytes of a member ID (256)
 */


#ifndef PARTI_ASSIGN_MAX_MEMBERS
#define PARTI_ASSIGN_MAX_MEMBERS 65536
#endif
#if PARTI_ASSIGN_MAX_MEMBERS < 1 || PARTI_ASSIGN_MAX_MEMBERS > 131072
#error "PARTI_ASSIGN_MAX_MEMBERS must be 1..131072 (cap arithmetic stays within 64 bits)"
#endif
#ifndef PARTI_ASSIGN_MAX_PARTITIONS
#define PARTI_ASSIGN_MAX_PARTITIONS (1 << 22)
#endif
#if PARTI_ASSIGN_MAX_PARTITIONS < 1 || PARTI_ASSIGN_MAX_PARTITIONS > (1 << 26)
#error "PARTI_ASSIGN_MAX_PARTITIONS must be 1..2^26"
#endif
#ifndef PARTI_ASSIGN_MAX_ID_LEN
#define PARTI_ASSIGN_MAX_ID_LEN 256
#endif
/* Largest parti_assign_options.vnodes and .tolerance_percent. */
#define PARTI_ASSIGN_MAX_VNODES 4096
#define PARTI_ASSIGN_MAX_TOLERANCE 10000

/* STICKY (the default): sticky bounded-load. Each member m gets a band
 *     floor_m = floor(W * c_m * 100 / (C * (100 + tol)))
 *     cap_m   = ceil (W * c_m * (100 + tol) / (C * 100))
 *   (W = total partition weight, c_m = m's capacity, C = total capacity, tol
 *   = tolerance_percent; exact integer arithmetic). With unit weights, equal
 *   capacities and tol 0 that is floor(P/N) .. ceil(P/N). Then:
 *   1. keep: a partition whose previous owner is a live member stays there;
 *      a member whose kept weight passes its cap sheds the fewest partitions
 *      that bring it back within the cap: heaviest first, among equals the
 *      highest partition index;
 *   2. place: the rest (new, orphaned, shed), heaviest first then by index,
 *      each on the member below its floor, else the least loaded relative to
 *      its cap (load * cap_other < load_other * cap), among those it fits in
 *      (load + weight <= cap); ties go to the lower member ID;
 *   3. fill: a member still below its floor takes partitions from the members
 *      furthest above theirs (never pushing them below their floor or itself
 *      past its cap); donors give their heaviest partition that fits, among
 *      equals the highest index.
 *   With unit weights every load ends within [floor, cap] and the number of
 *   partitions that change owner is the minimum any assignment within those
 *   bands needs: max(orphans + excess, deficit) where excess = sum of
 *   (kept - cap)+ and deficit = sum of (floor - kept)+. So with equal
 *   capacities max - min <= 1, and from such a balanced assignment N -> N+1
 *   moves max(sum (load - cap)+, floor(P/(N+1))) and N -> N-1 moves only the
 *   departed member's partitions.
 *   Weighted partitions may make a band unreachable (one partition heavier
 *   than a cap): parti_assign never fails for that; a partition that fits
 *   nowhere goes where it overshoots least ((load + weight) / cap smallest)
 *   and floors are filled as far as fitting partitions allow.
 * CONSISTENT_HASH: a ring of `vnodes` points per member (capacity ignored);
 *   a partition belongs to the first point at or clockwise after its spot.
 *   Adding a member moves partitions only to it; removing one moves only its.
 * WEIGHTED_HASH: a ring with floor(vnodes * N * c_m / C) points per member
 *   (at least 1; a member of average capacity has `vnodes`) and STICKY's
 *   caps: partitions, heaviest first then by index, walk clockwise past
 *   members whose cap they would exceed (consistent hashing with bounded
 *   loads); previous owners are ignored. With tolerance 0 the caps are tight
 *   and one membership change can cascade along the ring; a tolerance of
 *   10..25 keeps the walks, and so the movement, short.
 * RENDEZVOUS: highest random weight. Equal capacities: the member with the
 *   highest score wins. Otherwise weighted: the highest c_m / -log2(score /
 *   2^64), computed in 20-bit fixed point with integers only and compared by
 *   cross-multiplication; ties go to the higher score, then the lower ID (so
 *   equal capacities give exactly the unweighted result). Adding a member
 *   moves partitions only to it. Costs P x N hashes (more with unequal
 *   capacities: a fixed-point logarithm each).
 * ROUND_ROBIN: partition i to the (i mod N)-th member in ID order; weights,
 *   capacities and previous owners are ignored.
 * CALLBACK: the user's function fills owner[]; parti checks every entry. */
typedef enum parti_strategy {
    PARTI_STRATEGY_STICKY = 0,
    PARTI_STRATEGY_CONSISTENT_HASH,
    PARTI_STRATEGY_WEIGHTED_HASH,
    PARTI_STRATEGY_RENDEZVOUS,
    PARTI_STRATEGY_ROUND_ROBIN,
    PARTI_STRATEGY_CALLBACK
} parti_strategy;

/* "sticky", "consistent_hash", "weighted_hash", "rendezvous", "round_robin",
 * "callback"; "unknown" for anything else (never NULL). */
PARTIDEF const char *parti_strategy_name(parti_strategy s);
/* The inverse of parti_strategy_name (exact, case-sensitive);
 * PARTI_ERR_INVALID_ARGUMENT for NULL or an unknown name. */
PARTIDEF parti_err parti_strategy_parse(const char *name, parti_strategy *out);

/* A live member: its ID (1..PARTI_ASSIGN_MAX_ID_LEN bytes, unique) and its
 * relative capacity (0 means 1). The string stays the caller's. */
typedef struct parti_member {
    const char *id;
    uint32_t capacity;
} parti_member;

typedef struct parti_assign_input {
    const parti_partition *partitions; /* weight 0 = 1; keys hashed by the hashing strategies */
    int partition_count;               /* 0..PARTI_ASSIGN_MAX_PARTITIONS */
    const parti_member *members;
    int member_count;                  /* 1..PARTI_ASSIGN_MAX_MEMBERS, distinct IDs */
    /* Per partition: the ID of its owner so far, or NULL. The array may be
     * NULL (no history). IDs that are not live members are departed owners. */
    const char *const *previous_owner;
} parti_assign_input;

/* A user strategy: fill owner[0..in->partition_count) with indexes into
 * in->members (owner[] comes filled with -1). Return PARTI_ERR_OK, or an
 * error that parti_assign passes on. */
typedef parti_err (*parti_assign_fn)(void *user, const parti_assign_input *in, int *owner);

/* Zero means the default for every field. */
typedef struct parti_assign_options {
    parti_strategy strategy;   /* default PARTI_STRATEGY_STICKY */
    int tolerance_percent;     /* STICKY, WEIGHTED_HASH: widens the bands above; 0..10000, default 0
                                  (WEIGHTED_HASH moves far less with 25: see bench/bench_assign.c) */
    int vnodes;                /* ring points per member (per member of average capacity for
                                  WEIGHTED_HASH); 1..PARTI_ASSIGN_MAX_VNODES, default 128 */
    parti_assign_fn callback;  /* PARTI_STRATEGY_CALLBACK: required */
    void *callback_user;
} parti_assign_options;

/* opts with every zero field replaced by its default (opts NULL: all defaults). */
PARTIDEF parti_assign_options parti_assign_options_defaults(const parti_assign_options *opts);

/* Computes owner[i] = the index into in->members of partition i's owner, for
 * every i < in->partition_count (owner may be NULL only when that is 0).
 * opts may be NULL (all defaults). Errors, each with a message naming the
 * field: PARTI_ERR_INVALID_ARGUMENT for a NULL input, no members, a NULL,
 * empty, too long or duplicate member ID, NULL partitions or keys, options out
 * of range, a missing callback, or a callback result that leaves a partition
 * without a valid member ("callback gave partition 7 owner 5, member_count
 * is 3"); PARTI_ERR_NOMEM; whatever the callback returns. On error owner[]
 * holds nothing useful. */
PARTIDEF parti_err parti_assign(const parti_assign_input *in, const parti_assign_options *opts, int *owner, char *msg,
                                size_t msg_size);

/* The per-member bands of STICKY and WEIGHTED_HASH described above: floors[m]
 * and caps[m] for each member index m (either array may be NULL). Same input
 * checks as parti_assign. */
PARTIDEF parti_err parti_assign_bands(const parti_assign_input *in, const parti_assign_options *opts, uint64_t *floors,
                                      uint64_t *caps, char *msg, size_t msg_size);

/* How many partitions changed owner: those with a previous owner (non-NULL
 * in->previous_owner[i]) whose new owner in->members[owner[i]] has another
 * ID. New partitions are not moves. 0 when in->previous_owner is NULL; -1 for
 * NULL arguments or an owner index out of range. */
PARTIDEF int parti_assign_moved(const parti_assign_input *in, const int *owner);

/* ---- the assignment document ---------------------------------------------
 * What the leader writes to KV: one value, replaced atomically. A worker
 * applies it only if epoch and version are not older than what it has and
 * the fingerprint matches its own partition list.
 *
 * WIRE FORMAT, version 1 (JSON, RFC 8259; parti writes exactly this key order
 * and no whitespace):
 *   {"v":1,"epoch":E,"version":V,["leader":"0123456789abcdef",]"fp":"0123456789abcdef","n":P,
 *    "members":["worker-1","worker-2",...],"owners":"<base64url>"}
 *   v        1. Readers refuse any other value; a change that old readers
 *            would misread gets a new v.
 *   epoch    the leader's fencing token, 0..2^64-1.
 *   version  increases with every document of one epoch, 0..2^64-1.
 *   leader   optional: the writing leader's process instance, 16 lowercase
 *            hex digits (parti writes it after "version" when not 0). With
 *            the epoch it is the fence: a worker applies the document only
 *            while the leader key holds this epoch AND this instance, so a
 *            deposed leader's late write under a reused epoch (a bucket made
 *            again after a restart starts the keys' revisions over) is
 *            refused.
 *   fp       parti_partitions_fingerprint of the partition list, 16
 *            lowercase hex digits.
 *   n        the number of partitions, 0..PARTI_ASSIGN_MAX_PARTITIONS.
 *   members  M member IDs, 0..PARTI_ASSIGN_MAX_MEMBERS, each 1..
 *            PARTI_ASSIGN_MAX_ID_LEN bytes of UTF-8 without U+0000, strictly
 *            ascending bytewise (so unique). Members that own nothing are
 *            listed too: being listed means being part of the assignment.
 *   owners   the owner of each partition as a number u in 0..M: 0 =
 *            unowned, k = members[k-1]. Each u is written as B bits, most
 *            significant first, where B = the bit length of M (at least 1);
 *            the n values are concatenated in partition order and packed
 *            into ceil(n*B/8) bytes, first bit in the top bit of the first
 *            byte, the last byte padded with zero bits; the bytes are in
 *            base64url (RFC 4648 section 5: A-Z a-z 0-9 '-' '_') without '='
 *            padding, so exactly ceil(8*ceil(n*B/8)/6) characters, with the
 *            unused low bits of the last character zero (canonical; Go's
 *            base64.RawURLEncoding.Strict() reads it). No escapes.
 *   Other fields are ignored (additions that old readers may skip keep v);
 *   a known field given twice is refused. 100000 partitions over 1000
 *   members take 10 bits each: 166667 characters, about 180 KB in all.
 *   Decoding checks everything: a document from the network is untrusted. */
typedef struct parti_assignment {
    uint64_t epoch, version;
    uint64_t leader;     /* the instance of the leader that wrote it; 0 = not given */
    uint64_t partitions_fingerprint;
    char **members;      /* owned; strictly ascending */
    int member_count;
    int *owner;          /* owned; owner[i] indexes members, -1 = unowned */
    int partition_count;
} parti_assignment;

/* Fingerprint of a partition list, for checking that a document was computed
 * for the same partitions in the same order (owners are indexed by position):
 * parti_hash64 (FNV-1a) of u32le(count), then per partition u32le(key_count)
 * and per key u32le(length) and its bytes. Weights are not included (they
 * change placement, not what an index means). NULL keys count as "". */
PARTIDEF uint64_t parti_partitions_fingerprint(const parti_partition *partitions, int count);

/* Builds a document from parti_assign's result: members copied and sorted by
 * ID, owners remapped (owner[i] may be -1 for unowned), the fingerprint of
 * in->partitions. *a is overwritten; free with parti_assignment_free.
 * PARTI_ERR_INVALID_ARGUMENT (bad input or owner index), PARTI_ERR_NOMEM. */
PARTIDEF parti_err parti_assignment_build(parti_assignment *a, const parti_assign_input *in, const int *owner,
                                          uint64_t epoch, uint64_t version);

/* Writes the document (format above) into out (cap bytes, NUL-terminated).
 * *needed (may be NULL) gets the size including the NUL, also with
 * PARTI_ERR_BUFFER_TOO_SMALL; out may be NULL with cap 0 to ask for the size.
 * PARTI_ERR_INVALID_ARGUMENT when *a breaks a rule of the format (counts,
 * member IDs not strictly ascending or not UTF-8, owner out of range);
 * PARTI_ERR_NOMEM. */
PARTIDEF parti_err parti_assignment_encode(const parti_assignment *a, char *out, size_t cap, size_t *needed);

/* Reads a document (untrusted bytes, no NUL needed) into *a, which it
 * overwrites; on failure *a is empty. Errors name the field and the byte:
 * JSON_SYNTAX, JSON_TOO_DEEP, JSON_TOO_LARGE (not JSON), JSON_MISSING (a
 * field absent), JSON_TYPE (a field of the wrong JSON type), JSON_RANGE (a
 * number or count out of range, v other than 1, an owner past the member
 * list), INVALID_ARGUMENT (a repeated field, a bad fp, member IDs empty, too
 * long, holding U+0000, duplicate or unsorted, owners of the wrong length,
 * with escapes, a character outside base64url or padding bits set), NOMEM. */
PARTIDEF parti_err parti_assignment_decode(parti_assignment *a, const char *data, size_t len, char *msg,
                                           size_t msg_size);

/* Frees what *a owns and zeroes it; NULL and zeroed documents are fine. */
PARTIDEF void parti_assignment_free(parti_assignment *a);

/* A partition's checkpoint: the value of its key (parti_checkpoint_key) in
 * the assignment bucket, written with compare-and-swap by its owner only (see
 * "Handoff" in the protocol notes above). */
typedef struct parti_checkpoint {
    char owner[PARTI_MAX_NAME_LEN + 1]; /* the worker ID that holds (or last held) the partition */
    uint64_t instance;                  /* and its process (parti's random instance number) */
    uint64_t generation;                /* the owner generation (the claim's KV revision); 0 in the claim itself */
    uint64_t seq;                       /* every message of the partition up to this stream sequence is done */
    uint64_t stream_created_ns;         /* the stream seq counts in (parti_stream_info.created_ns) */
    char subject[PARTI_MAX_SUBJECT_LEN + 1]; /* the partition's subject (another list: not this partition's) */
    int released;                       /* 1: the owner let it go; the next owner starts after seq */
} parti_checkpoint;

/* {"owner":..,"instance":"<16 hex>","gen":..,"seq":..,"stream":..,
 * "subject":..,"released":true|false} into out (NUL-terminated); *needed
 * (may be NULL) is the size it takes. PARTI_ERR_BUFFER_TOO_SMALL,
 * INVALID_ARGUMENT. */
PARTIDEF parti_err parti_checkpoint_encode(const parti_checkpoint *ck, char *out, size_t cap, size_t *needed);
/* Reads a checkpoint (untrusted bytes): every field above is required, of
 * its type; strings bounded. On failure *ck is zeroed: JSON_* errors,
 * INVALID_ARGUMENT. */
PARTIDEF parti_err parti_checkpoint_decode(parti_checkpoint *ck, const char *data, size_t len);

/* The key of a partition's checkpoint in the assignment bucket, named by
 * the partition's subject (not its index), so workers configured with the
 * same partitions in another order, or with some added or removed, find
 * each partition's position and its holder under one key (for the same
 * subject byte for byte): "ck." and the subject, each byte other than A-Z
 * a-z 0-9 - _ written "=XX" (two upper-case hex digits), a dot too where it
 * would leave an empty token ("orders.eu.7" -> "ck.orders.eu.7", "orders.*"
 * -> "ck.orders.=2A", "a=b" -> "ck.a=3Db"): two subjects never share a key.
 * A key is at most PARTI_MAX_SUBJECT_LEN bytes, so a cap of
 * PARTI_CHECKPOINT_KEY_SIZE always fits; a subject whose key would be longer
 * is PARTI_ERR_INVALID_SUBJECT (parti_create refuses such a partition list).
 * INVALID_ARGUMENT (NULL, empty subject), BUFFER_TOO_SMALL; on any error
 * nothing is written but a NUL (when cap > 0). */
#define PARTI_CHECKPOINT_KEY_SIZE (PARTI_MAX_SUBJECT_LEN + 1)
PARTIDEF parti_err parti_checkpoint_key(const char *subject, char *key, size_t cap);

/* Index of member_id in a->members (binary search), -1 when absent. */
PARTIDEF int parti_assignment_member_index(const parti_assignment *a, const char *member_id);

/* The owner ID of partition i, NULL when unowned or out of range; valid
 * until *a is freed. Feeds parti_assign_input.previous_owner. */
PARTIDEF const char *parti_assignment_owner_id(const parti_assignment *a, int partition);

/* The partitions of member index m in ascending order: writes the first
 * min(count, cap) into out (may be NULL when cap is 0) and returns count
 * (what parti_consumer_update takes); -1 for a NULL document or m out of
 * range. */
PARTIDEF int parti_assignment_partitions_of(const parti_assignment *a, int member, int *out, int cap);

/* ======================================================================== */
/* The group: membership, leader election, assignment                       */
/* ======================================================================== */
/* A parti object is one worker of a group: every process that creates one
 * with the same stream, template, partitions and bucket_prefix joins the
 * same group. It claims a stable worker ID, keeps it alive with heartbeats,
 * takes part in the leader election, and applies the assignment the leader
 * publishes to its own worker consumer (parti_consumer_*), which pulls and
 * calls the handler. Everything happens inside parti_poll, on the caller's
 * thread.
 *
 *     parti_options o = {0};
 *     o.on_message = on_message;
 *     parti *p;
 *     if ((e = parti_create(&p, &t, &cfg, &o, msg, sizeof msg))) ...
 *     while (running) parti_poll(p, 100);
 *     parti_leave(p, 5000);        // graceful: hand the partitions over now
 *     parti_destroy(p);
 *
 * Protocol (KV; see docs/protocol.md):
 *   bucket "<prefix>-<stream>-members", TTL member_ttl_ms:
 *     "m.<worker-id>"  {"instance":"<hex>","capacity":N,"epoch":E,"applied":[E,V]}
 *                      claimed with create-if-absent (its own previous number
 *                      first, else the lowest free "worker-N"), renewed every
 *                      heartbeat_ms by compare-and-swap on its revision. A
 *                      failed or unanswered write is read back (the instance
 *                      decides) before anything is concluded. A lost ID: this
 *                      worker stops processing at once and joins again.
 *     "leader"         {"worker":"<id>","instance":"<hex>","epoch":E}
 *                      created by whoever finds it missing (after reading its
 *                      own key back); the epoch is above the create's revision
 *                      and every epoch or document any member reports, and is
 *                      stamped into the key before anything is published.
 *                      Renewed by CAS; a leader stops acting as one before the
 *                      key can expire, and steps down only when the key shows
 *                      another holder or a higher epoch.
 *   bucket "<prefix>-<stream>-assign", no TTL:
 *     "assignment"     one document (parti_assignment_encode): epoch, version,
 *                      partitions fingerprint, members, owner of every
 *                      partition (or none, past workers x max_subjects).
 *                      Written by the leader with CAS on the last revision it
 *                      saw. FENCING: a worker applies a document only when its
 *                      (epoch, version) is newer than what it applied AND the
 *                      leader key holds that epoch and the document's
 *                      writer (its "leader" instance) when it reads it; the
 *                      leader replaces anything else it finds there.
 *     "ck.<subject>"   a partition's claim and checkpoint (parti_checkpoint,
 *                      key by parti_checkpoint_key):
 *                      holder (ID and process instance), owner generation,
 *                      seq (every message up to it done), the stream's
 *                      creation time, released or not. Written by CAS by the
 *                      holder only.
 *     "d.<durable>"    the durables' registry: the process (instance, ID)
 *                      whose durable it is, written before it creates it.
 * The HANDOFF (Kafka's cooperative protocol): a document that moves P from A
 * to B makes A stop handing P to the handler at once, call
 * on_partitions_revoked, and write P's checkpoint released. B claims P's key
 * (CAS) only when it is released or its holder's member key is gone or
 * another process's (the holder's lease ran out), calls
 * on_partitions_assigned, adds P to its durable's filter in place, reads the
 * stream's last sequence L, reads P's messages after the checkpoint up to L
 * straight from the stream (stream_get_next) in order, and takes P's
 * messages above L from its durable. So graceful moves have no duplicate, no
 * overlap and keep order; after a crash or a lease lost, the new owner
 * repeats at most what the old one handled since its last checkpoint: up to
 * commit_interval_ms of work after a crash; after a pause or cut-off it can
 * be more (no commit round runs then, while messages already held are still
 * handled until the lease ends; docs/testing.md has the measured spans).
 * Each message carries the fencing token
 * (parti_msg.partition, .generation): a sink that rejects generations below
 * the highest it saw never takes a stale owner's write. A LEADER that leaves
 * hands over itself: after its releases it publishes one last document
 * without itself and waits (at most a heartbeat) until they are claimed,
 * then gives up the leader key. Each process has a durable of its own;
 * parti_leave deletes it, and the leader deletes those of crashed processes
 * (also of processes that left under an earlier leader: the registry).
 * The LEASE: a worker acts on its ID (hands messages to the handler, applies
 * documents) only until the send time of its last successful renewal plus
 * min(max_stale_ms, member_ttl_ms - heartbeat_ms / 2), checked before every
 * message; parti_lease_valid() says whether it holds. Graceful leave deletes
 * the member key at the revision it wrote (kv_delete_if; watchers see it at
 * once); a crash is seen when the key's TTL expires (watch with delete
 * markers where the server has them, and a listing every heartbeat as the
 * backstop). Clocks: leases are measured on each host's monotonic clock;
 * hosts whose clocks run at different rates, or jump forward, by more than
 * heartbeat_ms / 2 within a TTL shorten the margin the lease relies on. */

typedef struct parti parti; /* opaque */

typedef enum parti_state {
    PARTI_STATE_JOINING = 0, /* claiming a worker ID */
    PARTI_STATE_WAITING,     /* a member; no assignment names it yet */
    PARTI_STATE_STABLE,      /* processing its partitions */
    PARTI_STATE_REBALANCING, /* a new assignment is being applied to its consumer */
    PARTI_STATE_DEGRADED,    /* the control plane is unreachable: still on the last assignment */
    PARTI_STATE_LEAVING,     /* parti_leave is handing the partitions over */
    PARTI_STATE_STOPPED      /* left, or stopped by a fatal error */
} parti_state;

/* "joining", "waiting", "stable", "rebalancing", "degraded", "leaving", "stopped". */
PARTIDEF const char *parti_state_name(parti_state s);

typedef enum parti_event_kind {
    PARTI_EVENT_STATE_CHANGED = 100, /* state moved (ev->state) */
    PARTI_EVENT_JOINED,              /* a worker ID was claimed (ev->worker_id) */
    PARTI_EVENT_ID_LOST,             /* another process holds this worker's ID: processing stopped */
    PARTI_EVENT_BECAME_LEADER,       /* won the election (ev->epoch) */
    PARTI_EVENT_LOST_LEADERSHIP,     /* stopped acting as leader */
    PARTI_EVENT_ASSIGNMENT_CHANGED,  /* a new assignment was applied (ev->version, ev->partitions) */
    PARTI_EVENT_REBALANCED,          /* as leader, published an assignment (ev->moved partitions moved) */
    PARTI_EVENT_MEMBER_JOINED,       /* the leader saw a member join (ev->detail = its ID) */
    PARTI_EVENT_MEMBER_LEFT          /* the leader saw a member leave or expire (ev->detail) */
} parti_event_kind;

/* "state_changed", "joined", ... */
PARTIDEF const char *parti_event_name(parti_event_kind kind);

typedef struct parti_event {
    parti_event_kind kind;
    parti_state state;      /* the state now */
    const char *worker_id;  /* "" before joining */
    uint64_t epoch;         /* the leader epoch this worker knows */
    uint64_t version;       /* the assignment version it applies */
    int partitions;         /* partitions it owns now */
    int moved;              /* REBALANCED: partitions that changed owner */
    parti_err err;          /* the error behind ID_LOST / LOST_LEADERSHIP / DEGRADED, else OK */
    const char *detail;     /* short human text; valid for the call */
} parti_event;

typedef void (*parti_event_fn)(void *user, const parti_event *ev);

/* Zero means the default for every field but on_message (required). */
typedef struct parti_options {
    parti_message_handler on_message; /* required */
    void *user;                       /* passed to on_message, on_event and on_consumer_event */
    parti_event_fn on_event;          /* group events; may be NULL */
    parti_consumer_event_fn on_consumer_event; /* the worker consumer's events; may be NULL */
    /* the worker consumer's tuning (its on_message, user, on_event and
     * allow_worker_id_change are set by the group) */
    parti_consumer_options consumer;
    parti_assign_options assign;      /* strategy; default sticky bounded-load */
    uint32_t capacity;                /* this worker's relative capacity; 0 = 1 */
    int max_workers;                  /* IDs worker-0 .. worker-(max-1); default 1024 */
    uint32_t heartbeat_ms;            /* member and leader renewal; default 1000 */
    uint32_t member_ttl_ms;           /* a silent member is gone after this; default 5000, >= 3 x heartbeat */
    uint32_t cold_start_ms;           /* first assignment waits this long for workers to join; default 2000 */
    uint32_t planned_window_ms;       /* joins and graceful leaves are debounced this long; default 500 */
    uint32_t emergency_grace_ms;      /* a crashed member's partitions move after this; default 100 */
    uint32_t min_rebalance_interval_ms; /* between two published assignments; default 250 */
    uint32_t max_stale_ms;            /* degraded: keep processing this long after the last renewal was sent;
                                         default and cap member_ttl_ms - heartbeat_ms / 2 (the lease: no
                                         other process can hold the ID yet) */
    uint32_t op_timeout_ms;           /* each KV call; default 2000 */
    int memory_storage;               /* 1: KV buckets in memory (tests, demos); a restart loses them, so
                                         new claims wait until they are one TTL old (needs kv_put) */
    uint32_t commit_interval_ms;      /* each held partition's checkpoint is written this often when it
                                         moved (and at once on a release); default 1000. After a crash,
                                         the next owner repeats at most this much of its work */
    /* Rebalance callbacks (each may be NULL; user is options.user), with
     * the partition indexes, called from inside parti_poll / parti_leave:
     *   revoked:  partitions moving away, before their checkpoints are
     *             committed and released (flush per-partition state here;
     *             no message of them reaches the handler from now on);
     *   assigned: partitions claimed, before their first message (also a
     *             revoked partition given back before its release was
     *             written: it is held again, from where it stopped);
     *   lost:     partitions taken away without a release (the lease ran
     *             out, the ID was lost, another worker took over).
     * Each partition goes assigned, then revoked or lost, then assigned
     * again, and so on; the handler sees it only in between (the simulator
     * checks this on every seed). A revoked partition whose release cannot
     * be written before the lease runs out (or that another worker has
     * taken over meanwhile) gets no lost after its revoked: its next owner
     * starts from its last committed checkpoint, so work since then may be
     * repeated, as after a crash. A worker stopped by an error (parti_poll
     * returns it) makes no more callbacks. */
    void (*on_partitions_revoked)(void *user, const int *partitions, int count);
    void (*on_partitions_assigned)(void *user, const int *partitions, int count);
    void (*on_partitions_lost)(void *user, const int *partitions, int count);
    /* The leader deletes the durable consumer of a process that left (its
     * member key gone, or its ID held by another process) this long after
     * it saw so, or after it found it in the durables' registry ("d." keys)
     * when it became leader; default member_ttl_ms. Not deleted if the
     * process is a member again by then. (Each process has its own durable,
     * named "<prefix>-<worker ID>-<16 hex of its instance>"; parti_leave
     * deletes its own.) */
    uint32_t orphan_grace_ms;
    /* The stream is checked before joining (parti_stream_check): a mismatch
     * stops the worker with PARTI_ERR_STREAM_MISMATCH. A missing stream is
     * waited for (retried with backoff), or created with exactly this config
     * when it is given (its name must be cfg.stream); parti never changes or
     * deletes a stream. */
    const parti_stream_config *create_stream;
    /* The breaker around t, if any (parti_breaker_wrap): shown in health
     * and in the parti_circuit_breaker_state gauge. */
    const parti_breaker *breaker;
    /* 1: no retries (tests, development): the first failed server call stops
     * the worker (state STOPPED) and poll returns its error. */
    int fail_fast;
    /* Logging (see "Logging"): silent when log is NULL; the worker consumer
     * logs through it too unless consumer.log is set. */
    parti_log_fn log;
    void *log_user;
    parti_log_level log_level;        /* 0 = PARTI_LOG_INFO */
} parti_options;

/* Validates cfg and opts (messages name the field), makes no server call.
 * t must outlive the object. */
PARTIDEF parti_err parti_create(parti **out, const parti_transport *t, const parti_config *cfg,
                                const parti_options *opts, char *msg, size_t msg_size);

/* Runs everything that is due: joining, heartbeats, election, watches, the
 * leader's rebalances, the worker consumer (pulls and the handler), for
 * timeout_ms of transport time. It returns within timeout_ms plus one op
 * timeout (the larger of options.op_timeout_ms and the consumer's) plus the
 * time the handler takes, also when the server hangs: every server call of
 * the poll gets only what is left of that budget (lease calls, never cut
 * short, wait for the next poll instead). parti_leave keeps every call
 * within its own timeout_ms the same way. Server failures are handled
 * inside (retries, degraded mode) and reported through events, metrics and
 * health; poll
 * returns PARTI_ERR_OK, PARTI_ERR_INVALID_ARGUMENT (NULL), PARTI_ERR_CLOSED
 * after parti_leave, or the error that stopped the worker (e.g.
 * PARTI_ERR_STREAM_MISMATCH; health's last error message names the setting). */
PARTIDEF parti_err parti_poll(parti *p, uint32_t timeout_ms);

/* Graceful leave: stops handing messages to the handler, revokes every
 * partition it holds (on_partitions_revoked) and releases each with its
 * checkpoint, so the next owners start right after the last message handled
 * here (no duplicate); then gives up leadership, deletes the member key so
 * the leader moves the partitions at once, and stops. Waits at most
 * timeout_ms (releases not written by then are taken over after the lease,
 * from the last committed checkpoints). */
PARTIDEF parti_err parti_leave(parti *p, uint32_t timeout_ms);

/* Frees; does not leave (a destroyed worker looks crashed: its key expires). */
PARTIDEF void parti_destroy(parti *p);

PARTIDEF parti_state parti_state_of(const parti *p);
PARTIDEF const char *parti_worker_id(const parti *p);          /* "" before joining */
PARTIDEF int parti_is_leader(const parti *p);
/* 1 while this worker's member lease holds: it was renewed recently enough
 * that no other process can hold its ID. Messages reach the handler only
 * while it does (checked before each one); a handler that runs long can
 * call it before committing side effects. */
PARTIDEF int parti_lease_valid(const parti *p);
PARTIDEF uint64_t parti_epoch(const parti *p);                  /* the leader epoch this worker knows */
PARTIDEF uint64_t parti_assignment_version_of(const parti *p);  /* the version it applies; 0 = none */
PARTIDEF uint64_t parti_assignment_epoch_of(const parti *p);    /* the epoch of that document; 0 = none */
/* The partitions (indexes into cfg.partitions, ascending) this worker owns
 * now; *out valid until the next poll. Returns the count. */
PARTIDEF int parti_owned(const parti *p, const int **out);
/* The worker's metrics: the group's rows and its worker consumer's. */
PARTIDEF const parti_metrics *parti_metrics_of(parti *p);
/* Health of the whole worker: live; ready = a member, not stale, and its
 * consumer ready; degraded = control plane unreachable, ID lost, or the
 * consumer degraded; with the last error. */
PARTIDEF parti_err parti_health_of(const parti *p, parti_health *out);
PARTIDEF parti_consumer *parti_consumer_of(parti *p);
/* Health as one JSON object, for a /health endpoint:
 *   {"status":"ready"|"degraded"|"not_ready"|"stopped","live":b,"ready":b,
 *    "degraded":b,"worker":"worker-3","state":"stable","leader":b,
 *    "epoch":N,"assignment_version":N,"partitions":N,
 *    "components":{
 *      "connection":{"ok":b},             (transport's connected, or inferred)
 *      "kv":{"ok":b,"silent_ms":N},       (member key renewals; silent since)
 *      "membership":{"ok":b,"state":"..."},
 *      "consumer":{"ok":b,"ready":b,"degraded":b,"durable":"..."},
 *      "circuit_breaker":{"state":"closed"|"open"|"half_open"}},
 *    "last_error":{"code":"TIMEOUT","category":"retriable",
 *                  "message":"...","at_ms":N}}      (or null)
 * Buffer contract of the other writers (*needed with the NUL). */
PARTIDEF parti_err parti_health_json(parti *p, char *buf, size_t cap, size_t *needed);

#ifdef __cplusplus
}
#endif
#endif /* PARTI_H */

/* ======================================================================== */
/* Implementation                                                            */
/* ======================================================================== */
#ifdef PARTI_IMPLEMENTATION
#ifndef PARTI__IMPLEMENTED
#define PARTI__IMPLEMENTED

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(PARTI_MALLOC) && !defined(PARTI_REALLOC) && !defined(PARTI_FREE)
#define PARTI_MALLOC(sz) malloc(sz)
#define PARTI_REALLOC(p, sz) realloc(p, sz)
#define PARTI_FREE(p) free(p)
#elif !defined(PARTI_MALLOC) || !defined(PARTI_REALLOC) || !defined(PARTI_FREE)
#error "define all of PARTI_MALLOC, PARTI_REALLOC and PARTI_FREE, or none"
#endif

#ifndef PARTI_ASSERT
#include <assert.h>
#define PARTI_ASSERT(x) assert(x)
#endif

/* stb_ds allocates through parti's allocator. */
#ifndef STBDS_REALLOC
#define STBDS_REALLOC(ctx, p, sz) PARTI_REALLOC(p, sz)
#define STBDS_FREE(ctx, p) PARTI_FREE(p)
#endif
#if !defined(PARTI_STB_DS_EXTERNAL) && !defined(STB_DS_IMPLEMENTATION)
#define STB_DS_IMPLEMENTATION
#endif
#include <stb/stb_ds.h>

#ifdef __cplusplus
extern "C" {
#endif

static const struct {
    const char *name;
    const char *msg;
    parti_category cat;
} parti__errors[] = {
#define PARTI__ROW(name, cat, msg) {"PARTI_ERR_" #name, msg, PARTI_CAT_##cat},
    PARTI_ERRORS(PARTI__ROW)
#undef PARTI__ROW
};

PARTIDEF const char *parti_strerror(parti_err e) {
    if ((int)e < 0 || e >= PARTI_ERR__COUNT) return "unknown parti error";
    return parti__errors[e].msg;
}

PARTIDEF const char *parti_error_name(parti_err e) {
    if ((int)e < 0 || e >= PARTI_ERR__COUNT) return "PARTI_ERR_UNKNOWN";
    return parti__errors[e].name;
}

PARTIDEF parti_category parti_error_category(parti_err e) {
    if ((int)e < 0 || e >= PARTI_ERR__COUNT) return PARTI_CAT_FATAL;
    return parti__errors[e].cat;
}

PARTIDEF const char *parti_category_name(parti_category c) {
    switch (c) {
    case PARTI_CAT_NONE: return "none";
    case PARTI_CAT_RETRIABLE: return "retriable";
    case PARTI_CAT_TRANSIENT: return "transient";
    case PARTI_CAT_FATAL: return "fatal";
    case PARTI_CAT_INVALID_INPUT: return "invalid_input";
    }
    return "unknown";
}

/* Writes a message into a caller buffer (may be NULL / 0), always terminated. */
#if defined(__GNUC__) || defined(__clang__)
static void parti__msg(char *msg, size_t msg_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#endif
static void parti__msg(char *msg, size_t msg_size, const char *fmt, ...) {
    va_list ap;
    if (!msg || msg_size == 0) return;
    va_start(ap, fmt);
    vsnprintf(msg, msg_size, fmt, ap);
    va_end(ap);
}

/* ---- subjects and names ------------------------------------------------- */

/* Length of the UTF-8 sequence at s (n bytes available), 0 when invalid:
 * overlongs, surrogates and code points above U+10FFFF are refused. */
static size_t parti__utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len, i;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (n < len) return 0;
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return len;
}

/* Bytes NATS never accepts inside a subject token. */
static int parti__is_space_or_ctl(unsigned char c) {
    return c <= 0x20 || c == 0x7F;
}

PARTIDEF parti_err parti_key_check(const char *key, char *msg, size_t msg_size) {
    size_t n, i, step;
    if (!key) {
        parti__msg(msg, msg_size, "key is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    n = strlen(key);
    if (n == 0) {
        parti__msg(msg, msg_size, "key is empty (it would make an empty subject token)");
        return PARTI_ERR_INVALID_KEY;
    }
    if (n > PARTI_MAX_KEY_LEN) {
        parti__msg(msg, msg_size, "key is %zu bytes, longer than PARTI_MAX_KEY_LEN (%d)", n, PARTI_MAX_KEY_LEN);
        return PARTI_ERR_INVALID_KEY;
    }
    for (i = 0; i < n; i += step) {
        unsigned char c = (unsigned char)key[i];
        step = 1;
        if (c == '.' || c == '*' || c == '>') {
            parti__msg(msg, msg_size, "key \"%s\" contains '%c' at byte %zu (keys are single tokens, never wildcards)",
                       key, c, i);
            return PARTI_ERR_INVALID_KEY;
        }
        if (parti__is_space_or_ctl(c)) {
            parti__msg(msg, msg_size, "key contains whitespace or a control character (0x%02x) at byte %zu", c, i);
            return PARTI_ERR_INVALID_KEY;
        }
        if (c >= 0x80 && (step = parti__utf8_seq((const unsigned char *)key + i, n - i)) == 0) {
            parti__msg(msg, msg_size, "key is not valid UTF-8 at byte %zu", i);
            return PARTI_ERR_INVALID_KEY;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_subject_check(const char *subject, int allow_wildcards, char *msg, size_t msg_size) {
    size_t n, i, tok_start = 0, step;
    if (!subject) {
        parti__msg(msg, msg_size, "subject is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    n = strlen(subject);
    if (n == 0) {
        parti__msg(msg, msg_size, "subject is empty");
        return PARTI_ERR_INVALID_SUBJECT;
    }
    if (n > PARTI_MAX_SUBJECT_LEN) {
        parti__msg(msg, msg_size, "subject is %zu bytes, longer than PARTI_MAX_SUBJECT_LEN (%d)", n,
                   PARTI_MAX_SUBJECT_LEN);
        return PARTI_ERR_SUBJECT_TOO_LONG;
    }
    for (i = 0; i <= n; i += step) {
        unsigned char c = (unsigned char)subject[i];
        step = 1;
        if (c == '.' || c == 0) {
            size_t tlen = i - tok_start;
            if (tlen == 0) {
                parti__msg(msg, msg_size, "subject \"%s\" has an empty token at byte %zu", subject, i);
                return PARTI_ERR_INVALID_SUBJECT;
            }
            if (tlen == 1 && (subject[tok_start] == '*' || subject[tok_start] == '>')) {
                if (!allow_wildcards) {
                    parti__msg(msg, msg_size, "subject \"%s\" contains the wildcard '%c'", subject, subject[tok_start]);
                    return PARTI_ERR_INVALID_SUBJECT;
                }
                if (subject[tok_start] == '>' && c != 0) {
                    parti__msg(msg, msg_size, "subject \"%s\": '>' must be the last token", subject);
                    return PARTI_ERR_INVALID_SUBJECT;
                }
            }
            tok_start = i + 1;
            continue;
        }
        if (parti__is_space_or_ctl(c)) {
            parti__msg(msg, msg_size, "subject contains whitespace or a control character (0x%02x) at byte %zu", c, i);
            return PARTI_ERR_INVALID_SUBJECT;
        }
        if ((c == '*' || c == '>') && !(i == tok_start && (subject[i + 1] == '.' || subject[i + 1] == 0))) {
            parti__msg(msg, msg_size, "subject \"%s\": '%c' at byte %zu is not a whole token", subject, c, i);
            return PARTI_ERR_INVALID_SUBJECT;
        }
        if (c >= 0x80 && (step = parti__utf8_seq((const unsigned char *)subject + i, n - i)) == 0) {
            parti__msg(msg, msg_size, "subject is not valid UTF-8 at byte %zu", i);
            return PARTI_ERR_INVALID_SUBJECT;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF int parti_subject_matches(const char *filter, const char *subject) {
    const char *f = filter, *s = subject;
    if (!f || !s) return 0;
    for (;;) {
        size_t flen = strcspn(f, "."), slen = strcspn(s, ".");
        if (flen == 1 && f[0] == '>') return slen > 0;
        if (!(flen == 1 && f[0] == '*') && (flen != slen || memcmp(f, s, flen) != 0)) return 0;
        if (flen == 1 && f[0] == '*' && slen == 0) return 0;
        f += flen;
        s += slen;
        if (!*f || !*s) return !*f && !*s;
        f++;
        s++;
    }
}

/* One step of template scanning: a literal byte or a placeholder. */
typedef struct parti__tmpl_tok {
    int key;          /* placeholder index, or -1 for a literal byte */
    char literal;
    size_t next;      /* offset after this token */
} parti__tmpl_tok;

static parti_err parti__tmpl_next(const char *t, size_t i, parti__tmpl_tok *tok, char *msg, size_t msg_size) {
    tok->key = -1;
    if (t[i] == '{' && t[i + 1] == '{') { tok->literal = '{'; tok->next = i + 2; return PARTI_ERR_OK; }
    if (t[i] == '}' && t[i + 1] == '}') { tok->literal = '}'; tok->next = i + 2; return PARTI_ERR_OK; }
    if (t[i] == '}') {
        parti__msg(msg, msg_size, "template \"%s\": unbalanced '}' at byte %zu (write \"}}\" for a literal brace)", t, i);
        return PARTI_ERR_INVALID_TEMPLATE;
    }
    if (t[i] == '{') {
        size_t j = i + 1;
        int idx = 0, digits = 0;
        while (t[j] >= '0' && t[j] <= '9' && digits < 3) {
            idx = idx * 10 + (t[j] - '0');
            j++;
            digits++;
        }
        if (digits == 0 || t[j] != '}') {
            parti__msg(msg, msg_size,
                       "template \"%s\": '{' at byte %zu does not start a placeholder {0}..{%d} (write \"{{\" for a literal brace)",
                       t, i, PARTI_MAX_KEYS - 1);
            return PARTI_ERR_INVALID_TEMPLATE;
        }
        if (idx >= PARTI_MAX_KEYS || (digits > 1 && t[i + 1] == '0')) {
            parti__msg(msg, msg_size, "template \"%s\": placeholder at byte %zu must be {0}..{%d}", t, i,
                       PARTI_MAX_KEYS - 1);
            return PARTI_ERR_INVALID_TEMPLATE;
        }
        tok->key = idx;
        tok->next = j + 1;
        return PARTI_ERR_OK;
    }
    tok->literal = t[i];
    tok->next = i + 1;
    return PARTI_ERR_OK;
}

/* Expands with stand-in keys or real ones; out may be NULL/0 to measure. */
static parti_err parti__tmpl_expand(const char *t, const char *const *keys, int key_count, char *out, size_t cap,
                                    size_t *len_out, int *max_key, char *msg, size_t msg_size) {
    size_t i = 0, len = 0;
    parti__tmpl_tok tok;
    parti_err e;
    memset(&tok, 0, sizeof tok); /* (set by parti__tmpl_next; some optimisers cannot tell) */
    *max_key = -1;
    while (t[i]) {
        if ((e = parti__tmpl_next(t, i, &tok, msg, msg_size)) != PARTI_ERR_OK) return e;
        if (tok.key < 0) {
            if (len + 1 < cap) out[len] = tok.literal;
            len++;
        } else {
            const char *k;
            size_t klen;
            if (tok.key > *max_key) *max_key = tok.key;
            if (tok.key >= key_count) {
                parti__msg(msg, msg_size, "template \"%s\" uses {%d} but the partition has %d key(s)", t, tok.key,
                           key_count);
                return PARTI_ERR_INVALID_TEMPLATE;
            }
            k = keys[tok.key];
            if ((e = parti_key_check(k, msg, msg_size)) != PARTI_ERR_OK) return e;
            klen = strlen(k);
            if (len + klen < cap) memcpy(out + len, k, klen);
            len += klen;
        }
        i = tok.next;
    }
    if (cap > 0) out[len < cap ? len : cap - 1] = 0;
    *len_out = len;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_template_check(const char *tmpl, int *max_key_index, char *msg, size_t msg_size) {
    static const char *const stand_in[PARTI_MAX_KEYS] = {"k", "k", "k", "k", "k", "k", "k", "k",
                                                         "k", "k", "k", "k", "k", "k", "k", "k"};
    char buf[PARTI_MAX_SUBJECT_LEN + 1];
    size_t len;
    int max_key;
    parti_err e;
    if (!tmpl) {
        parti__msg(msg, msg_size, "template is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (!*tmpl) {
        parti__msg(msg, msg_size, "template is empty");
        return PARTI_ERR_INVALID_TEMPLATE;
    }
    e = parti__tmpl_expand(tmpl, stand_in, PARTI_MAX_KEYS, buf, sizeof buf, &len, &max_key, msg, msg_size);
    if (e != PARTI_ERR_OK) return e;
    if (len > PARTI_MAX_SUBJECT_LEN) {
        parti__msg(msg, msg_size, "template \"%s\" is longer than PARTI_MAX_SUBJECT_LEN (%d) even with 1-byte keys",
                   tmpl, PARTI_MAX_SUBJECT_LEN);
        return PARTI_ERR_INVALID_TEMPLATE;
    }
    if ((e = parti_subject_check(buf, 1, msg, msg_size)) != PARTI_ERR_OK) {
        char inner[160];
        parti__msg(inner, sizeof inner, "%s", msg && msg_size ? msg : "");
        parti__msg(msg, msg_size, "template \"%s\" does not make a valid subject: %s", tmpl, inner);
        return PARTI_ERR_INVALID_TEMPLATE;
    }
    if (max_key_index) *max_key_index = max_key;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_subject_expand(const char *tmpl, const parti_partition *p, char *out, size_t cap,
                                        size_t *needed, char *msg, size_t msg_size) {
    parti_err e;
    size_t len = 0;
    int max_key;
    if (needed) *needed = 0;
    if (!tmpl || !p || (p->key_count > 0 && !p->keys) || p->key_count < 0 || (!out && cap)) {
        parti__msg(msg, msg_size, "parti_subject_expand: NULL template, partition or keys");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if ((e = parti_template_check(tmpl, NULL, msg, msg_size)) != PARTI_ERR_OK) return e;
    e = parti__tmpl_expand(tmpl, p->keys, p->key_count, out, cap, &len, &max_key, msg, msg_size);
    if (e != PARTI_ERR_OK) return e;
    if (needed) *needed = len + 1;
    if (len > PARTI_MAX_SUBJECT_LEN) {
        parti__msg(msg, msg_size, "subject from template \"%s\" is %zu bytes, longer than PARTI_MAX_SUBJECT_LEN (%d)",
                   tmpl, len, PARTI_MAX_SUBJECT_LEN);
        return PARTI_ERR_SUBJECT_TOO_LONG;
    }
    if (len + 1 > cap) {
        parti__msg(msg, msg_size, "subject needs %zu bytes, buffer has %zu", len + 1, cap);
        return PARTI_ERR_BUFFER_TOO_SMALL;
    }
    return parti_subject_check(out, 1, msg, msg_size);
}

/* A NUL-terminated copy of n bytes (which may hold NULs), or NULL. */
static void *parti__memdup(const void *p, size_t n) {
    uint8_t *d = (uint8_t *)PARTI_MALLOC(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = 0;
    return d;
}

static char *parti__strdup(const char *s) { return (char *)parti__memdup(s, strlen(s)); }

PARTIDEF parti_err parti_subjects_add(parti_subjects *s, const char *subject) {
    char **grown;
    char *copy;
    if (!s || !subject || s->count < 0) return PARTI_ERR_INVALID_ARGUMENT;
    if (!(copy = parti__strdup(subject))) return PARTI_ERR_NOMEM;
    /* grow in powers of two: count is the only size we keep */
    if ((s->count & (s->count - 1)) == 0) {
        size_t cap = s->count ? (size_t)s->count * 2 : 1;
        if (s->count >= 0x3FFFFFFF || !(grown = (char **)PARTI_REALLOC(s->items, cap * sizeof *grown))) {
            PARTI_FREE(copy);
            return PARTI_ERR_NOMEM;
        }
        s->items = grown;
    }
    s->items[s->count++] = copy;
    return PARTI_ERR_OK;
}

PARTIDEF void parti_subjects_free(parti_subjects *s) {
    int i;
    if (!s) return;
    for (i = 0; i < s->count; i++) PARTI_FREE(s->items[i]);
    PARTI_FREE(s->items);
    s->items = NULL;
    s->count = 0;
}

static int parti__strcmp_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

PARTIDEF void parti_subjects_sort_unique(parti_subjects *s) {
    int i, w = 0;
    if (!s || s->count <= 1) return;
    qsort(s->items, (size_t)s->count, sizeof *s->items, parti__strcmp_ptr);
    for (i = 0; i < s->count; i++) {
        if (w > 0 && strcmp(s->items[w - 1], s->items[i]) == 0) {
            PARTI_FREE(s->items[i]);
            continue;
        }
        s->items[w++] = s->items[i];
    }
    s->count = w;
}

PARTIDEF int parti_subjects_is_sorted(const parti_subjects *s) {
    int i;
    if (!s || s->count < 0 || (s->count > 0 && !s->items)) return 0;
    for (i = 1; i < s->count; i++)
        if (strcmp(s->items[i - 1], s->items[i]) >= 0) return 0;
    return 1;
}

PARTIDEF parti_err parti_subjects_build(const char *tmpl, const parti_partition *parts, int count, int max_subjects,
                                        parti_subjects *out, char *msg, size_t msg_size) {
    char buf[PARTI_MAX_SUBJECT_LEN + 1];
    parti_err e;
    int i;
    if (!tmpl || !out || count < 0 || (count > 0 && !parts)) {
        parti__msg(msg, msg_size, "parti_subjects_build: NULL template, partitions or output");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (out->count != 0 || out->items) {
        parti__msg(msg, msg_size, "parti_subjects_build: output set must be empty");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if ((e = parti_template_check(tmpl, NULL, msg, msg_size)) != PARTI_ERR_OK) return e;
    for (i = 0; i < count; i++) {
        char inner[256];
        e = parti_subject_expand(tmpl, &parts[i], buf, sizeof buf, NULL, inner, sizeof inner);
        if (e == PARTI_ERR_OK) e = parti_subjects_add(out, buf);
        if (e != PARTI_ERR_OK) {
            parti__msg(msg, msg_size, "partition %d: %s", i, e == PARTI_ERR_NOMEM ? "out of memory" : inner);
            parti_subjects_free(out);
            return e;
        }
    }
    parti_subjects_sort_unique(out);
    if (max_subjects > 0 && out->count > max_subjects) {
        parti__msg(msg, msg_size, "%d subjects exceed max_subjects (%d)", out->count, max_subjects);
        parti_subjects_free(out);
        return PARTI_ERR_TOO_MANY_SUBJECTS;
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_subjects_diff(const parti_subjects *old_set, const parti_subjects *new_set,
                                       parti_subjects *added, parti_subjects *removed) {
    int i = 0, j = 0;
    parti_err e = PARTI_ERR_OK;
    if (!old_set || !new_set || !added || !removed || added == removed || added->count || removed->count ||
        added->items || removed->items)
        return PARTI_ERR_INVALID_ARGUMENT;
    if (!parti_subjects_is_sorted(old_set) || !parti_subjects_is_sorted(new_set)) return PARTI_ERR_NOT_SORTED;
    while (e == PARTI_ERR_OK && (i < old_set->count || j < new_set->count)) {
        int c = i >= old_set->count ? 1 : j >= new_set->count ? -1 : strcmp(old_set->items[i], new_set->items[j]);
        if (c == 0) { i++; j++; }
        else if (c < 0) e = parti_subjects_add(removed, old_set->items[i++]);
        else e = parti_subjects_add(added, new_set->items[j++]);
    }
    if (e != PARTI_ERR_OK) {
        parti_subjects_free(added);
        parti_subjects_free(removed);
    }
    return e;
}

PARTIDEF int parti_subjects_near_limit(int count, int max_subjects, int warn_percent) {
    if (max_subjects <= 0 || warn_percent <= 0) return 0;
    return (int64_t)count * 100 >= (int64_t)max_subjects * warn_percent;
}

static int parti__is_name_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

PARTIDEF parti_err parti_name_check(const char *name, char *msg, size_t msg_size) {
    size_t i, n;
    if (!name) {
        parti__msg(msg, msg_size, "name is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    n = strlen(name);
    if (n == 0 || n > PARTI_MAX_NAME_LEN) {
        parti__msg(msg, msg_size, "name \"%.80s\" must be 1..%d bytes, is %zu", name, PARTI_MAX_NAME_LEN, n);
        return PARTI_ERR_INVALID_NAME;
    }
    for (i = 0; i < n; i++) {
        if (!parti__is_name_char((unsigned char)name[i])) {
            parti__msg(msg, msg_size, "name \"%.80s\" has byte 0x%02x at %zu; allowed are A-Z a-z 0-9 '-' '_'", name,
                       (unsigned char)name[i], i);
            return PARTI_ERR_INVALID_NAME;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF uint64_t parti_hash64(const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

PARTIDEF parti_err parti_consumer_name(const char *prefix, const char *worker_id, char *out, size_t cap, char *msg,
                                       size_t msg_size) {
    static const char hex[] = "0123456789abcdef";
    size_t plen, idlen, room, need, i, o = 0;
    int as_is = 1, kept = 0;
    parti_err e;
    if (!worker_id || !out || cap == 0) {
        parti__msg(msg, msg_size, "parti_consumer_name: NULL worker ID or output");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    out[0] = 0;
    if (!prefix) prefix = "";
    plen = strlen(prefix);
    if (plen && (e = parti_name_check(prefix, msg, msg_size)) != PARTI_ERR_OK) return e;
    idlen = strlen(worker_id);
    if (idlen == 0) {
        parti__msg(msg, msg_size, "worker ID is empty");
        return PARTI_ERR_INVALID_WORKER_ID;
    }
    if (plen + 1 + 17 > PARTI_MAX_NAME_LEN) {
        parti__msg(msg, msg_size, "consumer prefix \"%s\" leaves no room for the worker ID within %d bytes", prefix,
                   PARTI_MAX_NAME_LEN);
        return PARTI_ERR_INVALID_NAME;
    }
    for (i = 0; i < idlen; i++) {
        unsigned char c = (unsigned char)worker_id[i];
        if (c == '_' || !parti__is_name_char(c)) as_is = 0;
        if (c != '_' && parti__is_name_char(c)) kept++;
    }
    if (plen + idlen > PARTI_MAX_NAME_LEN) as_is = 0;
    if (!kept) {
        parti__msg(msg, msg_size, "worker ID has no byte usable in a consumer name (A-Z a-z 0-9 '-')");
        return PARTI_ERR_INVALID_WORKER_ID;
    }
    /* sanitized names always end in "_<16 hex>", and unchanged ones never
     * contain '_', so the two kinds cannot collide */
    room = PARTI_MAX_NAME_LEN - plen - 17;
    need = as_is ? plen + idlen + 1 : plen + (idlen < room ? idlen : room) + 18;
    if (cap < need) {
        parti__msg(msg, msg_size, "consumer name needs %zu bytes, buffer has %zu", need, cap);
        return PARTI_ERR_BUFFER_TOO_SMALL;
    }
    memcpy(out, prefix, plen);
    o = plen;
    if (as_is) {
        memcpy(out + o, worker_id, idlen + 1);
        return PARTI_ERR_OK;
    }
    for (i = 0; i < idlen && i < room; i++) {
        unsigned char c = (unsigned char)worker_id[i];
        out[o++] = parti__is_name_char(c) ? (char)c : '_';
    }
    {
        uint64_t h = parti_hash64(worker_id, idlen);
        int b;
        out[o++] = '_';
        for (b = 60; b >= 0; b -= 4) out[o++] = hex[(h >> b) & 0xF];
    }
    out[o] = 0;
    return PARTI_ERR_OK;
}

/* ---- randomness and backoff --------------------------------------------- */

PARTIDEF uint64_t parti_rng_splitmix64(void *state) {
    uint64_t *s = (uint64_t *)state;
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

PARTIDEF parti_err parti_backoff_init(parti_backoff *b, uint64_t base_ms, uint64_t cap_ms, uint32_t max_retries) {
    if (!b || base_ms == 0 || cap_ms < base_ms) return PARTI_ERR_INVALID_ARGUMENT;
    b->base_ms = base_ms;
    b->cap_ms = cap_ms;
    b->max_retries = max_retries;
    parti_backoff_reset(b);
    return PARTI_ERR_OK;
}

PARTIDEF void parti_backoff_reset(parti_backoff *b) {
    if (!b) return;
    b->attempts = 0;
    b->prev_ms = b->base_ms;
}

PARTIDEF parti_err parti_backoff_next(parti_backoff *b, parti_rng_fn rng, void *rng_user, uint64_t *delay_ms) {
    uint64_t hi, span, d;
    if (!b || !rng || !delay_ms || b->base_ms == 0 || b->cap_ms < b->base_ms) return PARTI_ERR_INVALID_ARGUMENT;
    if (b->max_retries && b->attempts >= b->max_retries) return PARTI_ERR_RETRY_BUDGET_EXHAUSTED;
    /* decorrelated jitter (Brooker, AWS): uniform in [base, 3 x previous] */
    hi = b->prev_ms > b->cap_ms / 3 ? b->cap_ms : b->prev_ms * 3;
    if (hi < b->base_ms) hi = b->base_ms;
    span = hi - b->base_ms + 1;
    d = b->base_ms + rng(rng_user) % span;
    if (d > b->cap_ms) d = b->cap_ms;
    b->prev_ms = d;
    b->attempts++;
    *delay_ms = d;
    return PARTI_ERR_OK;
}

/* ---- configuration ------------------------------------------------------ */

PARTIDEF parti_config parti_config_defaults(const parti_config *cfg) {
    parti_config c;
    if (cfg) c = *cfg;
    else memset(&c, 0, sizeof c);
    if (!c.bucket_prefix) c.bucket_prefix = "parti";
    if (!c.consumer_prefix) c.consumer_prefix = "parti-";
    if (!c.max_subjects) c.max_subjects = 1024;
    if (!c.subjects_warn_percent) c.subjects_warn_percent = 80;
    if (!c.backoff_base_ms) c.backoff_base_ms = 100;
    if (!c.backoff_cap_ms) c.backoff_cap_ms = 10000;
    if (!c.fetch_batch) c.fetch_batch = 100;
    if (!c.fetch_expires_ms) c.fetch_expires_ms = 5000;
    if (!c.fetch_heartbeat_ms) c.fetch_heartbeat_ms = c.fetch_expires_ms / 5 ? c.fetch_expires_ms / 5 : 1;
    if (!c.ack_wait_ms) c.ack_wait_ms = 30000;
    if (!c.max_ack_pending) c.max_ack_pending = 1000;
    if (!c.max_deliver) c.max_deliver = 5;
    return c;
}

/* Checks that every partition expands to a valid subject and that no two
 * partitions share one (ownership of a subject must be unambiguous). */
static parti_err parti__config_check_partitions(const parti_config *c, char *msg, size_t msg_size) {
    parti_subjects all = {NULL, 0};
    char buf[PARTI_MAX_SUBJECT_LEN + 1], inner[256];
    parti_err e = PARTI_ERR_OK;
    int i;
    for (i = 0; i < c->partition_count && e == PARTI_ERR_OK; i++) {
        e = parti_subject_expand(c->subject_template, &c->partitions[i], buf, sizeof buf, NULL, inner, sizeof inner);
        if (e != PARTI_ERR_OK) parti__msg(msg, msg_size, "config.partitions[%d]: %s", i, inner);
        else if ((e = parti_subjects_add(&all, buf)) != PARTI_ERR_OK) parti__msg(msg, msg_size, "out of memory");
    }
    if (e == PARTI_ERR_OK) {
        qsort(all.items, (size_t)all.count, sizeof *all.items, parti__strcmp_ptr);
        for (i = 1; i < all.count; i++) {
            if (strcmp(all.items[i - 1], all.items[i]) == 0) {
                parti__msg(msg, msg_size, "config.partitions: two partitions expand to the same subject \"%s\"",
                           all.items[i]);
                e = PARTI_ERR_INVALID_CONFIG;
                break;
            }
        }
    }
    parti_subjects_free(&all);
    return e;
}

#define PARTI__RULE(cond, ...)                                                                                     \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            parti__msg(msg, msg_size, __VA_ARGS__);                                                                \
            return PARTI_ERR_INVALID_CONFIG;                                                                       \
        }                                                                                                          \
    } while (0)

PARTIDEF parti_err parti_config_validate(const parti_config *cfg, char *msg, size_t msg_size) {
    parti_config c;
    char inner[200];
    parti_err e;
    if (!cfg) {
        parti__msg(msg, msg_size, "config is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    c = parti_config_defaults(cfg);
    PARTI__RULE(c.stream, "config.stream is required");
    if (parti_name_check(c.stream, inner, sizeof inner) != PARTI_ERR_OK)
        PARTI__RULE(0, "config.stream: %s", inner);
    PARTI__RULE(c.subject_template, "config.subject_template is required");
    if ((e = parti_template_check(c.subject_template, NULL, inner, sizeof inner)) != PARTI_ERR_OK) {
        parti__msg(msg, msg_size, "config.subject_template: %s", inner);
        return e;
    }
    PARTI__RULE(c.partition_count >= 1, "config.partition_count must be >= 1, got %d", c.partition_count);
    PARTI__RULE(c.partitions, "config.partitions is NULL but partition_count is %d", c.partition_count);
    if (parti_name_check(c.bucket_prefix, inner, sizeof inner) != PARTI_ERR_OK)
        PARTI__RULE(0, "config.bucket_prefix: %s", inner);
    if (c.consumer_prefix[0] && parti_name_check(c.consumer_prefix, inner, sizeof inner) != PARTI_ERR_OK)
        PARTI__RULE(0, "config.consumer_prefix: %s", inner);
    PARTI__RULE(strlen(c.consumer_prefix) + 18 <= PARTI_MAX_NAME_LEN,
                "config.consumer_prefix must be at most %d bytes, got %zu", PARTI_MAX_NAME_LEN - 18,
                strlen(c.consumer_prefix));
    PARTI__RULE(c.max_subjects >= 1, "config.max_subjects must be >= 1, got %d", c.max_subjects);
    PARTI__RULE(c.subjects_warn_percent >= 1 && c.subjects_warn_percent <= 100,
                "config.subjects_warn_percent must be 1..100, got %d", c.subjects_warn_percent);
    PARTI__RULE(c.backoff_cap_ms >= c.backoff_base_ms, "config.backoff_cap_ms must be >= backoff_base_ms (%u), got %u",
                c.backoff_base_ms, c.backoff_cap_ms);
    PARTI__RULE(c.fetch_batch >= 1, "config.fetch_batch must be >= 1, got %d", c.fetch_batch);
    PARTI__RULE(c.fetch_max_bytes >= 0, "config.fetch_max_bytes must be >= 0, got %lld", (long long)c.fetch_max_bytes);
    PARTI__RULE(c.fetch_expires_ms >= 10, "config.fetch_expires_ms must be >= 10, got %u", c.fetch_expires_ms);
    PARTI__RULE(c.fetch_heartbeat_ms <= c.fetch_expires_ms / 2,
                "config.fetch_heartbeat_ms must be <= fetch_expires_ms / 2 (%u), got %u", c.fetch_expires_ms / 2,
                c.fetch_heartbeat_ms);
    PARTI__RULE(c.ack_wait_ms >= 100, "config.ack_wait_ms must be >= 100, got %u", c.ack_wait_ms);
    PARTI__RULE(c.max_ack_pending >= 1, "config.max_ack_pending must be >= 1, got %d", c.max_ack_pending);
    PARTI__RULE(c.max_deliver >= 1, "config.max_deliver must be >= 1, got %d", c.max_deliver);
    return parti__config_check_partitions(&c, msg, msg_size);
}
#undef PARTI__RULE

/* ---- transport helpers ---------------------------------------------------- */

PARTIDEF int parti_subject_covers(const char *b, const char *a) {
    /* token by token: '>' in b takes the rest; '*' in b takes any single
     * token of a but '>'; a literal must be equal */
    if (!a || !b) return 0;
    for (;;) {
        size_t la = strcspn(a, "."), lb = strcspn(b, ".");
        if (lb == 1 && b[0] == '>') return la > 0;
        if (lb == 1 && b[0] == '*') {
            if (la == 1 && a[0] == '>') return 0;
        } else if (la != lb || memcmp(a, b, la) != 0) {
            return 0;
        }
        a += la;
        b += lb;
        if (!*a || !*b) return !*a && !*b;
        a++, b++;
    }
}

PARTIDEF parti_err parti_stream_check(const parti_stream_info *si, const parti_config *cfg, char *msg,
                                      size_t msg_size) {
    parti_config d;
    char subj[PARTI_MAX_SUBJECT_LEN + 1];
    int i, j;
    if (!si || !cfg || !si->name || (si->subject_count > 0 && !si->subjects)) {
        parti__msg(msg, msg_size, "parti_stream_check: NULL stream info or config");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    d = parti_config_defaults(cfg);
    if (si->retention == PARTI_RETENTION_WORKQUEUE) {
        parti__msg(msg, msg_size, "stream %.64s: retention workqueue does not fit (a partition changing owner sits in "
                   "two consumers' filters for a moment, which a work queue refuses); use limits or interest",
                   si->name);
        return PARTI_ERR_STREAM_MISMATCH;
    }
    if (d.require_file_storage && si->memory_storage) {
        parti__msg(msg, msg_size, "stream %.64s: storage is memory, config.require_file_storage wants file", si->name);
        return PARTI_ERR_STREAM_MISMATCH;
    }
    if (d.min_duplicate_window_ms && si->duplicate_window_ms < d.min_duplicate_window_ms) {
        parti__msg(msg, msg_size, "stream %.64s: duplicate_window is %llu ms, config.min_duplicate_window_ms wants "
                   ">= %llu", si->name, (unsigned long long)si->duplicate_window_ms,
                   (unsigned long long)d.min_duplicate_window_ms);
        return PARTI_ERR_STREAM_MISMATCH;
    }
    for (i = 0; i < d.partition_count; i++) {
        int ok = 0;
        parti_err e = parti_subject_expand(d.subject_template, &d.partitions[i], subj, sizeof subj, NULL, msg, msg_size);
        if (e != PARTI_ERR_OK) return e;
        for (j = 0; !ok && j < si->subject_count; j++) ok = parti_subject_covers(si->subjects[j], subj);
        if (!ok) {
            char list[160];
            size_t used = 0;
            list[0] = 0;
            for (j = 0; j < si->subject_count && used + 4 < sizeof list; j++) {
                int n = snprintf(list + used, sizeof list - used, "%s\"%s\"", j ? ", " : "", si->subjects[j]);
                if (n < 0) break;
                used += (size_t)n < sizeof list - used ? (size_t)n : sizeof list - used - 1;
            }
            parti__msg(msg, msg_size, "stream %.64s: subjects [%s] do not cover \"%.200s\" (partition %d)", si->name,
                       list, subj, i);
            return PARTI_ERR_STREAM_MISMATCH;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_kv_key_check(const char *key, char *msg, size_t msg_size) {
    size_t i, n;
    if (!key) {
        parti__msg(msg, msg_size, "key is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    n = strlen(key);
    if (n == 0 || n > PARTI_MAX_SUBJECT_LEN) {
        parti__msg(msg, msg_size, "KV key must be 1..%d bytes, is %zu", PARTI_MAX_SUBJECT_LEN, n);
        return PARTI_ERR_INVALID_NAME;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (!parti__is_name_char(c) && c != '=' && c != '/' && c != '.') {
            parti__msg(msg, msg_size, "KV key \"%.80s\" has byte 0x%02x at %zu; allowed are A-Z a-z 0-9 - _ = / .",
                       key, c, i);
            return PARTI_ERR_INVALID_NAME;
        }
        if (c == '.' && (i == 0 || i == n - 1 || key[i + 1] == '.')) {
            parti__msg(msg, msg_size, "KV key \"%.80s\" has an empty token at byte %zu", key, i);
            return PARTI_ERR_INVALID_NAME;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF void parti_strings_free(char **strings, int count) {
    int i;
    if (!strings) return;
    for (i = 0; i < count; i++) PARTI_FREE(strings[i]);
    PARTI_FREE(strings);
}

PARTIDEF void parti_kv_entry_free(parti_kv_entry *e) {
    if (!e) return;
    PARTI_FREE(e->key);
    PARTI_FREE(e->value);
    memset(e, 0, sizeof *e);
}

PARTIDEF void parti_consumer_info_free(parti_consumer_info *ci) {
    if (!ci) return;
    PARTI_FREE(ci->name);
    parti_strings_free(ci->filter_subjects, ci->filter_count);
    memset(ci, 0, sizeof *ci);
}

PARTIDEF void parti_stream_info_free(parti_stream_info *si) {
    if (!si) return;
    PARTI_FREE(si->name);
    parti_strings_free(si->subjects, si->subject_count);
    memset(si, 0, sizeof *si);
}

static int parti__ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        int x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y) return 0;
    }
    return *a == *b;
}

PARTIDEF const char *parti_msg_header_nocase(const parti_msg *m, const char *name) {
    int i;
    if (!m || !name || m->header_count < 0 || (m->header_count > 0 && !m->headers)) return NULL;
    for (i = 0; i < m->header_count; i++)
        if (m->headers[i].name && parti__ieq(m->headers[i].name, name)) return m->headers[i].value;
    return NULL;
}

PARTIDEF const char *parti_msg_tenant_id(const parti_msg *m) {
    const char *v = parti_msg_header_nocase(m, "x-tenant-id");
    return v ? v : parti_msg_header_nocase(m, "tenant-id");
}

PARTIDEF const char *parti_msg_correlation_id(const parti_msg *m) {
    const char *v = parti_msg_header_nocase(m, "x-correlation-id");
    return v ? v : parti_msg_header_nocase(m, "correlation-id");
}

/* n lowercase hex digits at p, not all zero when nonzero is set. */
static int parti__lhex(const char *p, int n, int nonzero) {
    int i, any = 0;
    for (i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return 0;
        any |= ch != '0';
    }
    return !nonzero || any;
}

PARTIDEF parti_err parti_traceparent_parse(const char *tp, char *trace_id, char *parent_id, uint8_t *flags) {
    size_t len;
    if (trace_id) trace_id[0] = 0;
    if (parent_id) parent_id[0] = 0;
    if (flags) *flags = 0;
    if (!tp) return PARTI_ERR_INVALID_ARGUMENT;
    for (len = 0; len < 512 && tp[len]; len++) {
    }
    if (len < 55 || !parti__lhex(tp, 2, 0) || (tp[0] == 'f' && tp[1] == 'f') || tp[2] != '-' ||
        !parti__lhex(tp + 3, 32, 1) || tp[35] != '-' || !parti__lhex(tp + 36, 16, 1) || tp[52] != '-' ||
        !parti__lhex(tp + 53, 2, 0))
        return PARTI_ERR_INVALID_ARGUMENT;
    if (tp[0] == '0' && tp[1] == '0' ? len != 55 : (len > 55 && tp[55] != '-')) return PARTI_ERR_INVALID_ARGUMENT;
    if (trace_id) {
        memcpy(trace_id, tp + 3, 32);
        trace_id[32] = 0;
    }
    if (parent_id) {
        memcpy(parent_id, tp + 36, 16);
        parent_id[16] = 0;
    }
    if (flags) {
        int hi = tp[53] <= '9' ? tp[53] - '0' : tp[53] - 'a' + 10, lo = tp[54] <= '9' ? tp[54] - '0' : tp[54] - 'a' + 10;
        *flags = (uint8_t)(hi * 16 + lo);
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_msg_trace_id(const parti_msg *m, char *out) {
    const char *tp = parti_msg_header_nocase(m, "traceparent");
    if (out) out[0] = 0;
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    if (!tp) return PARTI_ERR_KEY_NOT_FOUND;
    return parti_traceparent_parse(tp, out, NULL, NULL);
}

PARTIDEF const char *parti_msg_header(const parti_msg *m, const char *name) {
    int i;
    if (!m || !name || m->header_count < 0 || (m->header_count > 0 && !m->headers)) return NULL;
    for (i = 0; i < m->header_count; i++)
        if (m->headers[i].name && strcmp(m->headers[i].name, name) == 0) return m->headers[i].value;
    return NULL;
}

/* ---- JetStream protocol helpers ------------------------------------------ */

/* Parses a decimal uint64 token; 0 on overflow or garbage. */
static int parti__parse_u64(const char *s, size_t n, uint64_t *out) {
    uint64_t v = 0;
    size_t i;
    if (n == 0 || n > 20) return 0;
    for (i = 0; i < n; i++) {
        unsigned d;
        if (s[i] < '0' || s[i] > '9') return 0;
        d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

PARTIDEF parti_err parti_js_ack_parse(const char *reply, size_t len, parti_js_ack_meta *out) {
    const char *tok[16], *p, *end;
    size_t tlen[16], i;
    int n = 0, base;
    uint64_t *nums[5];
    if (!reply || !out) return PARTI_ERR_INVALID_ARGUMENT;
    out->stream[0] = out->consumer[0] = 0;
    out->delivered = out->stream_seq = out->consumer_seq = out->timestamp_ns = out->pending = 0;
    /* (on every delivery: memchr, not a loop over the bytes) */
    if (len < 4 || memchr(reply, 0, len)) return PARTI_ERR_PROTOCOL;
    for (p = reply, end = reply + len;;) {
        const char *dot = (const char *)memchr(p, '.', (size_t)(end - p));
        if (n == 16) return PARTI_ERR_PROTOCOL;
        tok[n] = p;
        tlen[n++] = (size_t)((dot ? dot : end) - p);
        if (!dot) break;
        p = dot + 1;
    }
    if (n < 9 || tlen[0] != 3 || memcmp(tok[0], "$JS", 3) != 0 || tlen[1] != 3 || memcmp(tok[1], "ACK", 3) != 0)
        return PARTI_ERR_PROTOCOL;
    base = n == 9 ? 2 : n >= 12 ? 4 : -1;
    if (base < 0) return PARTI_ERR_PROTOCOL;
    if (tlen[base] == 0 || tlen[base] > PARTI_MAX_NAME_LEN || tlen[base + 1] == 0 ||
        tlen[base + 1] > PARTI_MAX_NAME_LEN)
        return PARTI_ERR_PROTOCOL;
    nums[0] = &out->delivered;
    nums[1] = &out->stream_seq;
    nums[2] = &out->consumer_seq;
    nums[3] = &out->timestamp_ns;
    nums[4] = &out->pending;
    for (i = 0; i < 5; i++)
        if (!parti__parse_u64(tok[base + 2 + (int)i], tlen[base + 2 + (int)i], nums[i])) {
            out->delivered = out->stream_seq = out->consumer_seq = out->timestamp_ns = out->pending = 0;
            return PARTI_ERR_PROTOCOL;
        }
    memcpy(out->stream, tok[base], tlen[base]);
    out->stream[tlen[base]] = 0;
    memcpy(out->consumer, tok[base + 1], tlen[base + 1]);
    out->consumer[tlen[base + 1]] = 0;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_js_api_error(int err_code, int code) {
    switch (err_code) {
    case 10059: return PARTI_ERR_STREAM_NOT_FOUND;
    case 10014: case 10149: return PARTI_ERR_CONSUMER_NOT_FOUND;
    case 10071: case 10164: return PARTI_ERR_WRONG_REVISION;
    case 10058: case 10065: case 10148: case 10013: return PARTI_ERR_ALREADY_EXISTS;
    case 10136: case 10138: case 10139: case 10052: case 10025: case 10133: case 10122: case 10113:
        return PARTI_ERR_INVALID_CONFIG;
    case 10093: case 10131: return PARTI_ERR_INVALID_SUBJECT;
    case 10054: return PARTI_ERR_VALUE_TOO_LARGE;
    case 10039: case 10076: return PARTI_ERR_UNSUPPORTED;
    /* limits: the call was fine; retry later (or raise the limit) */
    case 10002: /* account resources exceeded */
    case 10023: /* insufficient resources */
    case 10026: /* maximum consumers */
    case 10027: /* maximum streams */
    case 10028: /* memory resources */
    case 10047: /* storage resources */
    case 10167: /* too many requests */
        return PARTI_ERR_LIMIT_REACHED;
    /* JetStream temporarily unavailable: no leader, offline, incomplete */
    case 10008: case 10009: case 10004: case 10118: case 10119: return PARTI_ERR_NOT_CONNECTED;
    default: break;
    }
    if (code == 403) return PARTI_ERR_PERMISSION_DENIED;
    if (code == 404) return PARTI_ERR_KEY_NOT_FOUND;
    if (code == 408) return PARTI_ERR_TIMEOUT;
    if (code == 429) return PARTI_ERR_LIMIT_REACHED;
    if (code == 503) return PARTI_ERR_NO_RESPONDERS;
    if (code >= 400 && code < 500) return PARTI_ERR_INVALID_CONFIG;
    return PARTI_ERR_PROTOCOL; /* 500s (e.g. 10012, a consumer create that failed on the server): transient */
}

PARTIDEF parti_err parti_js_api_error_described(int err_code, int code, const char *description) {
    if (description && (strstr(description, "can not be updated") || strstr(description, "cannot be updated")))
        return PARTI_ERR_ALREADY_EXISTS;
    return parti_js_api_error(err_code, code);
}

PARTIDEF parti_err parti_js_pull_status(const char *status, const char *description) {
    if (!status) return PARTI_ERR_PROTOCOL;
    if (!description) description = "";
    if (strcmp(status, "100") == 0) return PARTI_ERR_OK;
    if (strcmp(status, "404") == 0 || strcmp(status, "408") == 0) return PARTI_ERR_NO_MESSAGES;
    if (strcmp(status, "503") == 0) return PARTI_ERR_NO_RESPONDERS;
    if (strcmp(status, "409") == 0) {
        if (strstr(description, "Consumer Deleted") || strstr(description, "consumer deleted"))
            return PARTI_ERR_CONSUMER_DELETED;
        if (strstr(description, "Server Shutdown") || strstr(description, "server shutdown"))
            return PARTI_ERR_SERVER_SHUTDOWN;
        /* the next message does not fit in what max_bytes leaves; when the pull
         * delivered nothing it never will (the transport tells the two apart) */
        if (strstr(description, "Message Size Exceeds MaxBytes")) return PARTI_ERR_MESSAGE_TOO_LARGE;
        return PARTI_ERR_NO_MESSAGES; /* leadership change, batch completed: pull again */
    }
    return PARTI_ERR_PROTOCOL;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), for y >= 1970. */
static int64_t parti__days_from_civil(int64_t y, unsigned m, unsigned d) {
    int64_t era;
    unsigned yoe, doy, doe;
    y -= m <= 2;
    era = y / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* n decimal digits at s into *out; 0 when one is not a digit. */
static int parti__digits(const char *s, int n, unsigned *out) {
    int i;
    *out = 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        *out = *out * 10 + (unsigned)(s[i] - '0');
    }
    return 1;
}

PARTIDEF parti_err parti_rfc3339_parse(const char *s, size_t len, uint64_t *ns) {
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, sec, oh = 0, om = 0, frac = 0;
    size_t i = 19, nfrac = 0;
    int64_t days, secs;
    int sign = 0;
    if (ns) *ns = 0;
    if (!s || !ns || len < 20 || len > 35) return PARTI_ERR_INVALID_ARGUMENT;
    if (!parti__digits(s, 4, &y) || s[4] != '-' || !parti__digits(s + 5, 2, &mo) || s[7] != '-' ||
        !parti__digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !parti__digits(s + 11, 2, &h) ||
        s[13] != ':' || !parti__digits(s + 14, 2, &mi) || s[16] != ':' || !parti__digits(s + 17, 2, &sec))
        return PARTI_ERR_INVALID_ARGUMENT;
    if (s[i] == '.') {
        for (i++; i < len && s[i] >= '0' && s[i] <= '9'; i++, nfrac++) {
            if (nfrac >= 9) return PARTI_ERR_INVALID_ARGUMENT;
            frac = frac * 10 + (unsigned)(s[i] - '0');
        }
        if (!nfrac) return PARTI_ERR_INVALID_ARGUMENT;
        for (; nfrac < 9; nfrac++) frac *= 10;
    }
    if (i < len && (s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
        sign = 0;
    } else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && parti__digits(s + i + 1, 2, &oh) && s[i + 3] == ':' &&
               parti__digits(s + i + 4, 2, &om) && oh <= 23 && om <= 59) {
        sign = s[i] == '+' ? 1 : -1;
    } else {
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (y < 1970 || y > 2262 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
        return PARTI_ERR_INVALID_ARGUMENT;
    if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) return PARTI_ERR_INVALID_ARGUMENT;
    days = parti__days_from_civil((int64_t)y, mo, d);
    secs = days * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + (int64_t)sec - sign * ((int64_t)oh * 3600 + om * 60);
    /* keep within what an int64_t of nanoseconds holds (to 2262-04-11T23:47:16.854775807Z) */
    if (secs < 0 || secs > 9223372036LL || (secs == 9223372036LL && frac > 854775807u)) return PARTI_ERR_INVALID_ARGUMENT;
    *ns = (uint64_t)secs * 1000000000u + frac;
    return PARTI_ERR_OK;
}

PARTIDEF uint64_t parti_wall_to_transport_ms(uint64_t wall_ns, uint64_t wall_now_ns, uint64_t transport_now_ms) {
    uint64_t age_ms = wall_now_ns > wall_ns ? (wall_now_ns - wall_ns) / 1000000u : 0;
    return age_ms >= transport_now_ms ? 0 : transport_now_ms - age_ms;
}

PARTIDEF uint32_t parti_version_number(const char *version) {
    uint32_t part[3] = {0, 0, 0};
    int i = 0, digits = 0;
    const char *p = version;
    if (!p) return 0;
    if (*p == 'v') p++;
    for (; *p && i < 3; p++) {
        if (*p >= '0' && *p <= '9') {
            if (++digits > 3) return 0;
            part[i] = part[i] * 10 + (uint32_t)(*p - '0');
        } else if (*p == '.' && digits) {
            i++;
            digits = 0;
        } else {
            break;
        }
    }
    /* at least "major.minor" */
    if (i == 0 || (i == 1 && !digits)) return 0;
    return part[0] * 1000000 + part[1] * 1000 + part[2];
}

/* ---- metrics --------------------------------------------------------------- */

/* Finite means neither NaN nor +-Inf: v - v is 0 exactly for finite v and NaN
 * otherwise. Done by hand so users need not link libm for isfinite(). */
static int parti__metrics_finite(double v) {
    return v - v == 0.0;
}

PARTIDEF void parti_counter_add(parti_counter *c, uint64_t n) {
    if (c) c->value += n;
}

PARTIDEF void parti_gauge_set(parti_gauge *g, double v) {
    if (g) g->value = v;
}

PARTIDEF void parti_gauge_add(parti_gauge *g, double delta) {
    if (g) g->value += delta;
}

/* 1 when n bounds are usable: n in range, each finite and above the last. */
static int parti__metrics_bounds_ok(const double *bounds, int n) {
    int i;
    if (n < 0 || n > PARTI_HISTOGRAM_MAX_BUCKETS || (n > 0 && !bounds)) return 0;
    for (i = 0; i < n; i++) {
        if (!parti__metrics_finite(bounds[i])) return 0;
        if (i > 0 && !(bounds[i] > bounds[i - 1])) return 0;
    }
    return 1;
}

PARTIDEF parti_err parti_histogram_init(parti_histogram *h, const double *bounds, int n) {
    if (!h) return PARTI_ERR_INVALID_ARGUMENT;
    memset(h, 0, sizeof *h);
    if (!parti__metrics_bounds_ok(bounds, n)) return PARTI_ERR_INVALID_ARGUMENT;
    if (n > 0) memcpy(h->bounds, bounds, (size_t)n * sizeof *bounds);
    h->bucket_count = n;
    return PARTI_ERR_OK;
}

PARTIDEF void parti_histogram_observe(parti_histogram *h, double v) {
    int i = 0, n;
    if (!h) return;
    if (!parti__metrics_finite(v)) {
        h->ignored++;
        return;
    }
    /* clamp: the struct is public and may have been filled by hand */
    n = h->bucket_count < 0 ? 0 : h->bucket_count > PARTI_HISTOGRAM_MAX_BUCKETS ? PARTI_HISTOGRAM_MAX_BUCKETS
                                                                                 : h->bucket_count;
    while (i < n && v > h->bounds[i]) i++;
    h->buckets[i]++;
    h->count++;
    h->sum += v;
}

PARTIDEF const char *parti_metric_type_name(parti_metric_type t) {
    switch (t) {
    case PARTI_METRIC_COUNTER: return "counter";
    case PARTI_METRIC_GAUGE: return "gauge";
    case PARTI_METRIC_HISTOGRAM: return "histogram";
    }
    return "unknown";
}

/* ---- validation ---- */

static int parti__metrics_is_word_start(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int parti__metrics_is_digit(unsigned char c) {
    return c >= '0' && c <= '9';
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]* */
static int parti__metrics_name_ok(const char *s) {
    size_t i;
    if (!s || !s[0]) return 0;
    for (i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!parti__metrics_is_word_start(c) && c != ':' && !(i > 0 && parti__metrics_is_digit(c))) return 0;
    }
    return 1;
}

/* Label names: [a-zA-Z_][a-zA-Z0-9_]*, minus the "__" prefix Prometheus
 * reserves for its own labels (__name__ would even clash with the name). */
static int parti__metrics_label_name_ok(const char *s) {
    size_t i;
    if (!s || !s[0] || (s[0] == '_' && s[1] == '_')) return 0;
    for (i = 0; s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!parti__metrics_is_word_start(c) && !(i > 0 && parti__metrics_is_digit(c))) return 0;
    }
    return 1;
}

/* Prometheus refuses a scrape whose help text or label values are not UTF-8. */
static int parti__metrics_utf8_ok(const char *s) {
    size_t n = strlen(s), i, step;
    for (i = 0; i < n; i += step) {
        step = 1;
        if ((unsigned char)s[i] >= 0x80 && (step = parti__utf8_seq((const unsigned char *)s + i, n - i)) == 0)
            return 0;
    }
    return 1;
}

static int parti__metrics_labels_ok(const parti_label *labels, int n) {
    int i;
    if (n < 0 || (n > 0 && !labels)) return 0;
    for (i = 0; i < n; i++)
        if (!parti__metrics_label_name_ok(labels[i].name) || !labels[i].value ||
            !parti__metrics_utf8_ok(labels[i].value))
            return 0;
    return 1;
}

/* 1 when name occurs among the labels (n checked already). */
static int parti__metrics_has_label(const parti_label *labels, int n, const char *name) {
    int i;
    for (i = 0; i < n; i++)
        if (strcmp(labels[i].name, name) == 0) return 1;
    return 0;
}

/* No label name twice in one sample, counting the common labels: Prometheus
 * refuses such a scrape. Quadratic, but label sets are a handful. */
static int parti__metrics_labels_unique(const parti_label *common, int ncommon, const parti_label *own, int nown) {
    int i;
    for (i = 1; i < ncommon; i++)
        if (parti__metrics_has_label(common, i, common[i].name)) return 0;
    for (i = 0; i < nown; i++)
        if (parti__metrics_has_label(common, ncommon, own[i].name) || parti__metrics_has_label(own, i, own[i].name))
            return 0;
    return 1;
}

static int parti__metrics_value_ok(const parti_metric *m) {
    const parti_histogram *h;
    if (!m->value) return 0;
    if (m->type == PARTI_METRIC_COUNTER || m->type == PARTI_METRIC_GAUGE) return 1;
    if (m->type != PARTI_METRIC_HISTOGRAM) return 0;
    h = (const parti_histogram *)m->value;
    return parti__metrics_bounds_ok(h->bounds, h->bucket_count);
}

/* Everything about one series that does not depend on its neighbours. */
static int parti__metrics_series_ok(const parti_metric *m, const parti_label *common, int ncommon) {
    if (!parti__metrics_name_ok(m->name) || !parti__metrics_value_ok(m)) return 0;
    if (m->help && !parti__metrics_utf8_ok(m->help)) return 0;
    if (!parti__metrics_labels_ok(m->labels, m->label_count)) return 0;
    if (!parti__metrics_labels_unique(common, ncommon, m->labels, m->label_count)) return 0;
    if (m->type == PARTI_METRIC_HISTOGRAM && (parti__metrics_has_label(common, ncommon, "le") ||
                                              parti__metrics_has_label(m->labels, m->label_count, "le")))
        return 0;
    return 1;
}

/* Series i starts a family: the first one, or a name unlike its predecessor's. */
static int parti__metrics_family_start(const parti_metric *metrics, int i) {
    return i == 0 || strcmp(metrics[i].name, metrics[i - 1].name) != 0;
}

/* A family's series share the type, and its name is not used by an earlier
 * family: the text format wants each family in one block. */
static int parti__metrics_families_ok(const parti_metric *metrics, int count) {
    int i, j;
    for (i = 1; i < count; i++) {
        if (!parti__metrics_family_start(metrics, i)) {
            if (metrics[i].type != metrics[i - 1].type) return 0;
            continue;
        }
        for (j = 0; j < i; j++)
            if (strcmp(metrics[j].name, metrics[i].name) == 0) return 0;
    }
    return 1;
}

static parti_err parti__metrics_check(const parti_metric *metrics, int count, const parti_label *common, int ncommon) {
    int i;
    if (count < 0 || (count > 0 && !metrics)) return PARTI_ERR_INVALID_ARGUMENT;
    if (!parti__metrics_labels_ok(common, ncommon)) return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < count; i++)
        if (!parti__metrics_series_ok(&metrics[i], common, ncommon)) return PARTI_ERR_INVALID_ARGUMENT;
    return parti__metrics_families_ok(metrics, count) ? PARTI_ERR_OK : PARTI_ERR_INVALID_ARGUMENT;
}

/* ---- bounded output ---- */

/* Output that copies what fits in cap and counts everything, so one pass
 * gives both the truncated prefix and the exact size needed. */
typedef struct parti__metrics_out {
    char *buf;
    size_t cap;
    size_t len;      /* bytes the whole output needs so far, without the NUL */
    int overflowed;  /* len would no longer fit in a size_t with its NUL */
} parti__metrics_out;

static void parti__metrics_put(parti__metrics_out *o, const char *s, size_t n) {
    size_t fit;
    if (o->overflowed || n > (size_t)-1 - 1 - o->len) {
        o->overflowed = 1;
        return;
    }
    fit = o->len < o->cap ? o->cap - o->len : 0;
    if (fit > n) fit = n;
    if (fit) memcpy(o->buf + o->len, s, fit);
    o->len += n;
}

static void parti__metrics_puts(parti__metrics_out *o, const char *s) {
    parti__metrics_put(o, s, strlen(s));
}

/* Escapes \ and newline, and " too when quoted (label values; HELP text
 * keeps its quotes as they are, per the format). */
static void parti__metrics_put_escaped(parti__metrics_out *o, const char *s, int quoted) {
    size_t start = 0, i;
    for (i = 0; s[i]; i++) {
        const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '\n' ? "\\n" : quoted && s[i] == '"' ? "\\\"" : NULL;
        if (!esc) continue;
        parti__metrics_put(o, s + start, i - start);
        parti__metrics_put(o, esc, 2);
        start = i + 1;
    }
    parti__metrics_put(o, s + start, i - start);
}

/* Decimal digits of v into out (at least 21 bytes), NUL-terminated. */
static void parti__metrics_format_u64(uint64_t v, char *out) {
    char tmp[21];
    int n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && n < 20);
    for (i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
}

/* Bytes %g prints other than the decimal point. */
static int parti__metrics_is_number_char(char c) {
    return parti__metrics_is_digit((unsigned char)c) || c == '-' || c == '+' || c == 'e' || c == 'E';
}

/* Rewrites printf's locale decimal point (',' in de_DE, possibly several
 * bytes elsewhere) as '.': a run of anything but digits, signs and the
 * exponent mark is that separator. */
static void parti__metrics_normalize_point(char *s) {
    size_t r = 0, w = 0;
    while (s[r]) {
        if (parti__metrics_is_number_char(s[r])) {
            s[w++] = s[r++];
            continue;
        }
        while (s[r] && !parti__metrics_is_number_char(s[r])) r++;
        s[w++] = '.';
    }
    s[w] = 0;
}

/* Shortest text that reads back as exactly v, spelled as Go's
 * strconv.FormatFloat(v, 'g', -1, 64) does (so as client_golang): the fewest
 * significant digits (1..17) that round-trip, in exponent form when the
 * decimal exponent is below -4 or at least 6 ("1e-05", "1.5e+06"), else plain
 * ("0.0025", "10", "123456"). printf and strtod share the locale, so the
 * round-trip test holds in any locale; the separator is made '.' afterwards.
 * out: at least 64 bytes. */
static void parti__metrics_format_double(double v, char *out, size_t cap) {
    int digits, exp10;
    const char *e;
    if (v != v) {
        memcpy(out, "NaN", 4);
        return;
    }
    if (!parti__metrics_finite(v)) {
        memcpy(out, v > 0 ? "+Inf" : "-Inf", 5);
        return;
    }
    for (digits = 1;; digits++) { /* 17 digits always round-trip */
        snprintf(out, cap, "%.*e", digits - 1, v);
        if (digits >= 17 || strtod(out, NULL) == v) break;
    }
    e = strchr(out, 'e');
    exp10 = e ? (int)strtol(e + 1, NULL, 10) : 0;
    if (exp10 >= -4 && exp10 < 6)
        snprintf(out, cap, "%.*f", digits - 1 - exp10 > 0 ? digits - 1 - exp10 : 0, v);
    parti__metrics_normalize_point(out);
}

static void parti__metrics_put_double(parti__metrics_out *o, double v) {
    char num[64];
    parti__metrics_format_double(v, num, sizeof num);
    parti__metrics_puts(o, num);
}

static void parti__metrics_put_u64(parti__metrics_out *o, uint64_t v) {
    char num[21];
    parti__metrics_format_u64(v, num);
    parti__metrics_puts(o, num);
}

/* ---- samples ---- */

/* The labels of one sample, from the series and the call. */
typedef struct parti__metrics_labels {
    const parti_label *common, *own;
    int ncommon, nown;
} parti__metrics_labels;

static void parti__metrics_put_label(parti__metrics_out *o, const char *name, const char *value, int first) {
    if (!first) parti__metrics_put(o, ",", 1);
    parti__metrics_puts(o, name);
    parti__metrics_put(o, "=\"", 2);
    parti__metrics_put_escaped(o, value, 1);
    parti__metrics_put(o, "\"", 1);
}

/* {common...,own...,le="..."}, or nothing when there is no label at all. */
static void parti__metrics_put_label_set(parti__metrics_out *o, const parti__metrics_labels *l, const char *le) {
    int i, first = 1;
    if (l->ncommon + l->nown == 0 && !le) return;
    parti__metrics_put(o, "{", 1);
    for (i = 0; i < l->ncommon; i++, first = 0)
        parti__metrics_put_label(o, l->common[i].name, l->common[i].value, first);
    for (i = 0; i < l->nown; i++, first = 0)
        parti__metrics_put_label(o, l->own[i].name, l->own[i].value, first);
    if (le) parti__metrics_put_label(o, "le", le, first);
    parti__metrics_put(o, "}", 1);
}

/* name + suffix + labels + ' ', ready for the value and its newline. */
static void parti__metrics_put_sample_start(parti__metrics_out *o, const char *name, const char *suffix,
                                            const parti__metrics_labels *l, const char *le) {
    parti__metrics_puts(o, name);
    parti__metrics_puts(o, suffix);
    parti__metrics_put_label_set(o, l, le);
    parti__metrics_put(o, " ", 1);
}

static void parti__metrics_put_header(parti__metrics_out *o, const parti_metric *m) {
    if (m->help && m->help[0]) {
        parti__metrics_puts(o, "# HELP ");
        parti__metrics_puts(o, m->name);
        parti__metrics_put(o, " ", 1);
        parti__metrics_put_escaped(o, m->help, 0);
        parti__metrics_put(o, "\n", 1);
    }
    parti__metrics_puts(o, "# TYPE ");
    parti__metrics_puts(o, m->name);
    parti__metrics_put(o, " ", 1);
    parti__metrics_puts(o, parti_metric_type_name(m->type));
    parti__metrics_put(o, "\n", 1);
}

/* a + b, held at UINT64_MAX: cumulative buckets must never go down. */
static uint64_t parti__metrics_add_sat(uint64_t a, uint64_t b) {
    return a > (uint64_t)-1 - b ? (uint64_t)-1 : a + b;
}

/* Cumulative _bucket lines, then _sum and _count. _count is the "+Inf"
 * bucket by definition, so both come from buckets[] (see parti_histogram). */
static void parti__metrics_put_histogram(parti__metrics_out *o, const parti_metric *m, const parti__metrics_labels *l) {
    const parti_histogram *h = (const parti_histogram *)m->value;
    uint64_t cumulative = 0;
    char le[64];
    int i;
    for (i = 0; i <= h->bucket_count; i++) {
        cumulative = parti__metrics_add_sat(cumulative, h->buckets[i]);
        if (i < h->bucket_count) parti__metrics_format_double(h->bounds[i], le, sizeof le);
        parti__metrics_put_sample_start(o, m->name, "_bucket", l, i < h->bucket_count ? le : "+Inf");
        parti__metrics_put_u64(o, cumulative);
        parti__metrics_put(o, "\n", 1);
    }
    parti__metrics_put_sample_start(o, m->name, "_sum", l, NULL);
    parti__metrics_put_double(o, h->sum);
    parti__metrics_put(o, "\n", 1);
    parti__metrics_put_sample_start(o, m->name, "_count", l, NULL);
    parti__metrics_put_u64(o, cumulative);
    parti__metrics_put(o, "\n", 1);
}

static void parti__metrics_put_series(parti__metrics_out *o, const parti_metric *m, const parti_label *common,
                                      int ncommon) {
    parti__metrics_labels l;
    l.common = common;
    l.ncommon = ncommon;
    l.own = m->labels;
    l.nown = m->label_count;
    if (m->type == PARTI_METRIC_HISTOGRAM) {
        parti__metrics_put_histogram(o, m, &l);
        return;
    }
    parti__metrics_put_sample_start(o, m->name, "", &l, NULL);
    if (m->type == PARTI_METRIC_COUNTER)
        parti__metrics_put_u64(o, ((const parti_counter *)m->value)->value);
    else
        parti__metrics_put_double(o, ((const parti_gauge *)m->value)->value);
    parti__metrics_put(o, "\n", 1);
}

/* NUL-terminates (the whole output, or the prefix that fits) and reports. */
static parti_err parti__metrics_finish(parti__metrics_out *o, size_t *needed) {
    if (o->overflowed) {
        if (o->cap) o->buf[0] = 0;
        if (needed) *needed = 0;
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (needed) *needed = o->len + 1;
    if (o->len < o->cap) {
        o->buf[o->len] = 0;
        return PARTI_ERR_OK;
    }
    if (o->cap) o->buf[o->cap - 1] = 0;
    return PARTI_ERR_BUFFER_TOO_SMALL;
}

PARTIDEF parti_err parti_metrics_write_prometheus(const parti_metric *metrics, int count,
                                                  const parti_label *common_labels, int common_count, char *buf,
                                                  size_t cap, size_t *needed) {
    parti__metrics_out o;
    int i;
    if (needed) *needed = 0;
    if (!buf && cap) return PARTI_ERR_INVALID_ARGUMENT;
    if (cap) buf[0] = 0;
    if (parti__metrics_check(metrics, count, common_labels, common_count) != PARTI_ERR_OK)
        return PARTI_ERR_INVALID_ARGUMENT;
    o.buf = buf;
    o.cap = cap;
    o.len = 0;
    o.overflowed = 0;
    for (i = 0; i < count; i++) {
        if (parti__metrics_family_start(metrics, i)) parti__metrics_put_header(&o, &metrics[i]);
        parti__metrics_put_series(&o, &metrics[i], common_labels, common_count);
    }
    return parti__metrics_finish(&o, needed);
}

/* ---- the registry ---- */

#define PARTI__METRICS_TYPE_counter PARTI_METRIC_COUNTER
#define PARTI__METRICS_TYPE_gauge PARTI_METRIC_GAUGE
#define PARTI__METRICS_TYPE_histogram PARTI_METRIC_HISTOGRAM

/* Histogram rows get a bounds array (and a compile-time check that it fits);
 * the bucket list arrives as several arguments, hence the "...". */
#define PARTI__METRICS_BOUNDS_counter(field, ...)
#define PARTI__METRICS_BOUNDS_gauge(field, ...)
#define PARTI__METRICS_BOUNDS_histogram(field, ...)                                                             \
    static const double parti__metrics_bounds_##field[] = {__VA_ARGS__};                                         \
    typedef char parti__metrics_fits_##field[sizeof parti__metrics_bounds_##field / sizeof(double) <=             \
                                                     PARTI_HISTOGRAM_MAX_BUCKETS                                  \
                                                 ? 1                                                              \
                                                 : -1];
#define PARTI__METRICS_BOUNDS(field, kind, name, label_name, label_value, bounds, help)                          \
    PARTI__METRICS_BOUNDS_##kind(field, bounds)
PARTI_METRICS(PARTI__METRICS_BOUNDS)
#undef PARTI__METRICS_BOUNDS

#define PARTI__METRICS_BOUNDS_REF_counter(field) NULL, 0
#define PARTI__METRICS_BOUNDS_REF_gauge(field) NULL, 0
#define PARTI__METRICS_BOUNDS_REF_histogram(field)                                                              \
    parti__metrics_bounds_##field, (int)(sizeof parti__metrics_bounds_##field / sizeof(double))

/* One row of PARTI_METRICS as data. */
typedef struct parti__metrics_row {
    const char *name, *help;
    parti_metric_type type;
    parti_label label; /* name NULL: unlabelled */
    size_t offset;     /* of the member in parti_metrics */
    const double *bounds;
    int bound_count;
} parti__metrics_row;

#define PARTI__METRICS_ROW(field, kind, name, label_name, label_value, bounds, help)                            \
    {name, help, PARTI__METRICS_TYPE_##kind, {label_name, label_value}, offsetof(parti_metrics, field),           \
     PARTI__METRICS_BOUNDS_REF_##kind(field)},
static const parti__metrics_row parti__metrics_rows[] = {PARTI_METRICS(PARTI__METRICS_ROW)};
#undef PARTI__METRICS_ROW

PARTIDEF void parti_metrics_init(parti_metrics *m) {
    int i;
    if (!m) return;
    memset(m, 0, sizeof *m);
    for (i = 0; i < PARTI_METRICS_SERIES_COUNT; i++) {
        const parti__metrics_row *r = &parti__metrics_rows[i];
        parti_err e;
        if (r->type != PARTI_METRIC_HISTOGRAM) continue;
        e = parti_histogram_init((parti_histogram *)(void *)((char *)m + r->offset), r->bounds, r->bound_count);
        PARTI_ASSERT(e == PARTI_ERR_OK); /* the tables are ours */
        (void)e;
    }
}

PARTIDEF int parti_metrics_list(const parti_metrics *m, parti_metric *out, int cap) {
    int i;
    if (!m || cap < 0 || (cap > 0 && !out)) return -1;
    for (i = 0; i < PARTI_METRICS_SERIES_COUNT && i < cap; i++) {
        const parti__metrics_row *r = &parti__metrics_rows[i];
        out[i].name = r->name;
        out[i].help = r->help;
        out[i].type = r->type;
        out[i].labels = r->label.name ? &r->label : NULL;
        out[i].label_count = r->label.name ? 1 : 0;
        out[i].value = (const char *)m + r->offset;
    }
    return PARTI_METRICS_SERIES_COUNT;
}

PARTIDEF parti_err parti_metrics_write(const parti_metrics *m, const parti_label *common, int ncommon, char *buf,
                                       size_t cap, size_t *needed) {
    parti_metric series[PARTI_METRICS_SERIES_COUNT];
    if (parti_metrics_list(m, series, PARTI_METRICS_SERIES_COUNT) != PARTI_METRICS_SERIES_COUNT) {
        if (needed) *needed = 0;
        if (buf && cap) buf[0] = 0;
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    return parti_metrics_write_prometheus(series, PARTI_METRICS_SERIES_COUNT, common, ncommon, buf, cap, needed);
}


/* ---- JSON writer ----------------------------------------------------------- */

/* Records e unless an error is already there. A misuse error replaces
 * BUFFER_TOO_SMALL: retrying with a bigger buffer would not fix it. */
static void parti__json_fail(parti_json_writer *w, parti_err e) {
    if (w->err == PARTI_ERR_OK || (w->err == PARTI_ERR_BUFFER_TOO_SMALL && e != PARTI_ERR_BUFFER_TOO_SMALL))
        w->err = e;
}

/* Only BUFFER_TOO_SMALL lets writing go on (to count the size needed). */
static int parti__json_usable(const parti_json_writer *w) {
    return w->err == PARTI_ERR_OK || w->err == PARTI_ERR_BUFFER_TOO_SMALL;
}

/* Appends n bytes, copying what fits and counting all of them. */
static void parti__json_put(parti_json_writer *w, const char *s, size_t n) {
    if (n > (size_t)-1 - 1 - w->len) { /* len + 1 must stay representable for *needed */
        parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    if (w->len < w->cap) {
        size_t room = w->cap - w->len, k = n < room ? n : room;
        memcpy(w->buf + w->len, s, k);
        if (k < n) parti__json_fail(w, PARTI_ERR_BUFFER_TOO_SMALL);
    } else if (n) {
        parti__json_fail(w, PARTI_ERR_BUFFER_TOO_SMALL);
    }
    w->len += n;
}

static int parti__json_in_object(const parti_json_writer *w) {
    return w->depth > 0 && ((w->object >> (w->depth - 1)) & 1u);
}

/* Checks that a value may come now and writes the comma before it.
 * Returns 0 (after recording the error) when it may not. */
static int parti__json_before_value(parti_json_writer *w) {
    uint64_t bit;
    if (!parti__json_usable(w)) return 0;
    if (w->depth == 0) {
        if (w->root_done) { /* a second top-level value would not be one JSON text */
            parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
            return 0;
        }
        w->root_done = 1;
        return 1;
    }
    if (parti__json_in_object(w)) {
        if (!w->after_key) { /* object members need a key first */
            parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
            return 0;
        }
        w->after_key = 0; /* the comma went before the key */
        return 1;
    }
    bit = (uint64_t)1 << (w->depth - 1);
    if (w->comma & bit) parti__json_put(w, ",", 1);
    w->comma |= bit;
    return 1;
}

PARTIDEF void parti_json_writer_init(parti_json_writer *w, char *buf, size_t cap) {
    if (!w) return;
    memset(w, 0, sizeof *w);
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->err = PARTI_ERR_OK;
    if (!buf && cap) w->err = PARTI_ERR_INVALID_ARGUMENT;
}

static void parti__json_begin(parti_json_writer *w, int is_object) {
    uint64_t bit;
    if (!w || !parti__json_usable(w)) return;
    if (w->depth >= PARTI_JSON_MAX_DEPTH) { /* checked first: nothing is written */
        parti__json_fail(w, PARTI_ERR_JSON_TOO_DEEP);
        return;
    }
    if (!parti__json_before_value(w)) return;
    w->depth++;
    bit = (uint64_t)1 << (w->depth - 1);
    w->comma &= ~bit;
    if (is_object) w->object |= bit;
    else w->object &= ~bit;
    parti__json_put(w, is_object ? "{" : "[", 1);
}

static void parti__json_end(parti_json_writer *w, int is_object) {
    if (!w || !parti__json_usable(w)) return;
    if (w->depth == 0 || parti__json_in_object(w) != is_object || w->after_key) {
        parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    w->depth--;
    parti__json_put(w, is_object ? "}" : "]", 1);
}

PARTIDEF void parti_json_object_begin(parti_json_writer *w) { parti__json_begin(w, 1); }
PARTIDEF void parti_json_object_end(parti_json_writer *w) { parti__json_end(w, 1); }
PARTIDEF void parti_json_array_begin(parti_json_writer *w) { parti__json_begin(w, 0); }
PARTIDEF void parti_json_array_end(parti_json_writer *w) { parti__json_end(w, 0); }

/* 1 when s[0..n) is valid UTF-8 (the writer refuses to emit anything else). */
static int parti__json_utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0, k;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        k = parti__utf8_seq(s + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

/* Writes s as a quoted, escaped string; the caller has validated UTF-8. Runs
 * of bytes needing no escape are copied in one go. */
static void parti__json_put_quoted(parti_json_writer *w, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    size_t i, run = 0;
    parti__json_put(w, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t elen = 2;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        parti__json_put(w, s + run, i - run);
        run = i + 1;
        esc[0] = '\\';
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xF];
            elen = 6;
        }
        parti__json_put(w, esc, elen);
    }
    parti__json_put(w, s + run, n - run);
    parti__json_put(w, "\"", 1);
}

/* Validates before writing so a refused string leaves no partial output. */
static int parti__json_string_ok(parti_json_writer *w, const char *s, size_t n) {
    if (!s || !parti__json_utf8_ok((const unsigned char *)s, n)) {
        parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
        return 0;
    }
    return 1;
}

PARTIDEF void parti_json_key_n(parti_json_writer *w, const char *key, size_t n) {
    uint64_t bit;
    if (!w || !parti__json_usable(w)) return;
    if (!parti__json_in_object(w) || w->after_key) {
        parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    if (!parti__json_string_ok(w, key, n)) return;
    bit = (uint64_t)1 << (w->depth - 1);
    if (w->comma & bit) parti__json_put(w, ",", 1);
    w->comma |= bit;
    parti__json_put_quoted(w, key, n);
    parti__json_put(w, ":", 1);
    w->after_key = 1;
}

PARTIDEF void parti_json_key(parti_json_writer *w, const char *key) {
    if (!w) return;
    if (!key) {
        parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    parti_json_key_n(w, key, strlen(key));
}

PARTIDEF void parti_json_string_n(parti_json_writer *w, const char *s, size_t n) {
    if (!w || !parti__json_usable(w)) return;
    if (!parti__json_string_ok(w, s, n)) return;
    if (!parti__json_before_value(w)) return;
    parti__json_put_quoted(w, s, n);
}

PARTIDEF void parti_json_string(parti_json_writer *w, const char *s) {
    if (!s) parti_json_null(w);
    else parti_json_string_n(w, s, strlen(s));
}

/* Writes a scalar's text after the value checks. */
static void parti__json_scalar(parti_json_writer *w, const char *text, size_t n) {
    if (!w || !parti__json_before_value(w)) return;
    parti__json_put(w, text, n);
}

PARTIDEF void parti_json_uint(parti_json_writer *w, uint64_t v) {
    char tmp[20];
    size_t i = sizeof tmp;
    do { /* digits from the right; 20 always suffice for 2^64 - 1 */
        tmp[--i] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    parti__json_scalar(w, tmp + i, sizeof tmp - i);
}

PARTIDEF void parti_json_int(parti_json_writer *w, int64_t v) {
    char tmp[21];
    size_t i = sizeof tmp;
    /* the magnitude in unsigned arithmetic, so INT64_MIN needs no special case */
    uint64_t m = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + (int)(m % 10));
        m /= 10;
    } while (m);
    if (v < 0) tmp[--i] = '-';
    parti__json_scalar(w, tmp + i, sizeof tmp - i);
}

PARTIDEF void parti_json_bool(parti_json_writer *w, int v) {
    if (v) parti__json_scalar(w, "true", 4);
    else parti__json_scalar(w, "false", 5);
}

PARTIDEF void parti_json_null(parti_json_writer *w) { parti__json_scalar(w, "null", 4); }

static int parti__json_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* Checks the RFC 8259 number grammar at s[0..n). Returns NULL with *used = the
 * number's length, or what is wrong with *used = offset of the bad byte. */
static const char *parti__json_scan_number(const unsigned char *s, size_t n, size_t *used, int *is_int) {
    size_t i = 0;
    *is_int = 1;
    if (i < n && s[i] == '-') i++;
    *used = i;
    if (i >= n || !parti__json_is_digit(s[i])) return i ? "expected a digit after '-'" : "expected a value";
    if (s[i] == '0') {
        i++;
        *used = i;
        if (i < n && parti__json_is_digit(s[i])) return "leading zeros are not allowed in numbers";
    } else {
        while (i < n && parti__json_is_digit(s[i])) i++;
    }
    if (i < n && s[i] == '.') {
        *is_int = 0;
        i++;
        *used = i;
        if (i >= n || !parti__json_is_digit(s[i])) return "expected a digit after the decimal point";
        while (i < n && parti__json_is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        *is_int = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        *used = i;
        if (i >= n || !parti__json_is_digit(s[i])) return "expected a digit in the exponent";
        while (i < n && parti__json_is_digit(s[i])) i++;
    }
    *used = i;
    return NULL;
}

PARTIDEF void parti_json_number_raw(parti_json_writer *w, const char *text, size_t n) {
    size_t used;
    int is_int;
    if (!w || !parti__json_usable(w)) return;
    if (!text || parti__json_scan_number((const unsigned char *)text, n, &used, &is_int) || used != n) {
        parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
        return;
    }
    parti__json_scalar(w, text, n);
}

PARTIDEF parti_err parti_json_writer_finish(parti_json_writer *w, size_t *needed) {
    if (!w) return PARTI_ERR_INVALID_ARGUMENT;
    if (needed) *needed = w->len + 1;
    if (parti__json_usable(w) && (w->depth != 0 || !w->root_done)) parti__json_fail(w, PARTI_ERR_INVALID_ARGUMENT);
    if (w->len + 1 > w->cap) parti__json_fail(w, PARTI_ERR_BUFFER_TOO_SMALL);
    /* the buffer always ends up a C string: the output, or a truncated prefix */
    if (w->cap > 0) w->buf[w->len < w->cap ? w->len : w->cap - 1] = 0;
    return w->err;
}

/* ---- JSON reader ----------------------------------------------------------- */

typedef struct parti__json_frame {
    int node;  /* the open array/object */
    int last;  /* its last child so far, -1 if none */
} parti__json_frame;

typedef struct parti__json_parser {
    const unsigned char *s;
    size_t n, pos;
    parti_json_node *nodes;
    int count, cap;
    int depth;
    int pending_key;           /* key node of the member value about to be parsed */
    parti_err err;
    size_t err_pos;
    const char *what;          /* what went wrong, for the message */
    parti__json_frame stack[PARTI_JSON_MAX_DEPTH];
} parti__json_parser;

/* Records an error; returns 0 so callers can `return parti__json_error(...)`. */
static int parti__json_error(parti__json_parser *p, parti_err e, size_t pos, const char *what) {
    p->err = e;
    p->err_pos = pos;
    p->what = what;
    return 0;
}

static void parti__json_skip_ws(parti__json_parser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Doubles the node array, up to PARTI_JSON_MAX_NODES. */
static int parti__json_grow(parti__json_parser *p) {
    int cap;
    parti_json_node *nodes;
    if (p->cap >= PARTI_JSON_MAX_NODES)
        return parti__json_error(p, PARTI_ERR_JSON_TOO_LARGE, p->pos, "more nodes than PARTI_JSON_MAX_NODES");
    cap = p->cap ? (p->cap > PARTI_JSON_MAX_NODES / 2 ? PARTI_JSON_MAX_NODES : p->cap * 2) : 64;
    if (cap > PARTI_JSON_MAX_NODES) cap = PARTI_JSON_MAX_NODES;
    nodes = (parti_json_node *)PARTI_REALLOC(p->nodes, (size_t)cap * sizeof *nodes);
    if (!nodes) return parti__json_error(p, PARTI_ERR_NOMEM, p->pos, "out of memory");
    p->nodes = nodes;
    p->cap = cap;
    return 1;
}

/* Appends a node starting at byte start; returns its index or -1. */
static int parti__json_add(parti__json_parser *p, parti_json_type type, size_t start) {
    parti_json_node *nd;
    if (p->count >= p->cap && !parti__json_grow(p)) return -1;
    nd = &p->nodes[p->count];
    nd->type = type;
    nd->start = (uint32_t)start;
    nd->len = 0;
    nd->count = 0;
    nd->child = -1;
    nd->next = -1;
    nd->key = -1;
    nd->flags = 0;
    return p->count++;
}

/* Makes node idx the next child of the innermost open container. */
static void parti__json_link(parti__json_parser *p, int idx) {
    parti__json_frame *f;
    parti_json_node *parent;
    if (p->depth == 0) return;
    f = &p->stack[p->depth - 1];
    parent = &p->nodes[f->node];
    if (f->last < 0) parent->child = idx;
    else p->nodes[f->last].next = idx;
    f->last = idx;
    parent->count++;
    if (parent->type == PARTI_JSON_OBJECT) p->nodes[idx].key = p->pending_key;
}

/* Value of 4 hex digits at s, or -1. */
static long parti__json_hex4(const unsigned char *s) {
    long v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static size_t parti__json_utf8_len(uint32_t cp) { return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; }

/* Checks the \u escape at s[i] (i at the backslash), pairing surrogates.
 * Returns the bytes consumed (6 or 12) and the code point, or 0. */
static size_t parti__json_scan_u(parti__json_parser *p, size_t i, uint32_t *cp) {
    const unsigned char *s = p->s;
    long hi, lo;
    if (p->n - i < 6) return (size_t)parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->n, "unterminated \\u escape");
    if ((hi = parti__json_hex4(s + i + 2)) < 0)
        return (size_t)parti__json_error(p, PARTI_ERR_JSON_SYNTAX, i, "\\u needs 4 hex digits");
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return (size_t)parti__json_error(p, PARTI_ERR_JSON_SYNTAX, i, "lone low surrogate in \\u escape");
    if (hi < 0xD800 || hi > 0xDBFF) {
        *cp = (uint32_t)hi;
        return 6;
    }
    /* a high surrogate must be followed at once by an escaped low one */
    if (p->n - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' || (lo = parti__json_hex4(s + i + 8)) < 0 ||
        lo < 0xDC00 || lo > 0xDFFF)
        return (size_t)parti__json_error(p, PARTI_ERR_JSON_SYNTAX, i, "high surrogate in \\u escape without a low one");
    *cp = 0x10000u + (((uint32_t)hi - 0xD800u) << 10) + ((uint32_t)lo - 0xDC00u);
    return 12;
}

/* Checks one escape at s[i] (the backslash); adds its unescaped size to *ulen.
 * Returns the bytes consumed or 0. */
static size_t parti__json_scan_escape(parti__json_parser *p, size_t i, size_t *ulen, uint32_t *flags) {
    uint32_t cp;
    size_t k;
    if (i + 1 >= p->n) return (size_t)parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->n, "unterminated string");
    switch (p->s[i + 1]) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        *ulen += 1;
        return 2;
    case 'u':
        if ((k = parti__json_scan_u(p, i, &cp)) == 0) return 0;
        if (cp == 0) *flags |= PARTI_JSON_FLAG_NUL;
        *ulen += parti__json_utf8_len(cp);
        return k;
    default:
        return (size_t)parti__json_error(p, PARTI_ERR_JSON_SYNTAX, i, "invalid escape in string");
    }
}

/* Scans the string whose opening quote is at p->pos into node idx; leaves
 * p->pos past the closing quote. */
static int parti__json_string(parti__json_parser *p, int idx) {
    const unsigned char *s = p->s;
    size_t n = p->n, i = p->pos + 1, ulen = 0, k, run;
    uint32_t flags = 0;
    for (;;) {
        run = i; /* plain ASCII is the common case: take it in one sweep */
        while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') i++;
        ulen += i - run;
        if (i >= n) return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, n, "unterminated string");
        if (s[i] == '"') break;
        if (s[i] < 0x20)
            return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, i, "control character in string (must be escaped)");
        if (s[i] == '\\') {
            flags |= PARTI_JSON_FLAG_ESCAPED;
            if ((k = parti__json_scan_escape(p, i, &ulen, &flags)) == 0) return 0;
        } else if ((k = parti__utf8_seq(s + i, n - i)) == 0) {
            return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, i, "invalid UTF-8 in string");
        } else {
            ulen += k;
        }
        i += k;
    }
    p->nodes[idx].start = (uint32_t)(p->pos + 1);
    p->nodes[idx].len = (uint32_t)(i - p->pos - 1);
    p->nodes[idx].count = (uint32_t)ulen; /* <= raw length < 2^32 */
    p->nodes[idx].flags |= flags;
    p->pos = i + 1;
    return 1;
}

static int parti__json_number(parti__json_parser *p, int idx) {
    size_t used;
    int is_int;
    const char *what = parti__json_scan_number(p->s + p->pos, p->n - p->pos, &used, &is_int);
    if (what) return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos + used, what);
    p->nodes[idx].len = (uint32_t)used;
    if (is_int) p->nodes[idx].flags |= PARTI_JSON_FLAG_INTEGER;
    p->pos += used;
    return 1;
}

static int parti__json_literal(parti__json_parser *p, int idx, const char *word, size_t wlen) {
    if (p->n - p->pos < wlen || memcmp(p->s + p->pos, word, wlen) != 0)
        return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos, "invalid literal (expected true, false or null)");
    p->nodes[idx].len = (uint32_t)wlen;
    p->pos += wlen;
    return 1;
}

/* Parses the scalar at p->pos (not end of input) as a child of the open container. */
static int parti__json_scalar_value(parti__json_parser *p) {
    unsigned char c = p->s[p->pos];
    parti_json_type t = c == '"' ? PARTI_JSON_STRING
                        : c == 't' ? PARTI_JSON_TRUE
                        : c == 'f' ? PARTI_JSON_FALSE
                        : c == 'n' ? PARTI_JSON_NULL
                        : PARTI_JSON_NUMBER;
    int idx;
    if (t == PARTI_JSON_NUMBER && c != '-' && !parti__json_is_digit(c))
        return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos, "expected a value");
    if ((idx = parti__json_add(p, t, p->pos)) < 0) return 0;
    parti__json_link(p, idx);
    switch (t) {
    case PARTI_JSON_STRING: return parti__json_string(p, idx);
    case PARTI_JSON_TRUE: return parti__json_literal(p, idx, "true", 4);
    case PARTI_JSON_FALSE: return parti__json_literal(p, idx, "false", 5);
    case PARTI_JSON_NULL: return parti__json_literal(p, idx, "null", 4);
    default: return parti__json_number(p, idx);
    }
}

/* Parser states between tokens. */
enum { PARTI__JSON_FAIL = -1, PARTI__JSON_VALUE, PARTI__JSON_KEY, PARTI__JSON_AFTER, PARTI__JSON_DONE };

/* Closes the innermost container at p->pos (its closing bracket). */
static void parti__json_close(parti__json_parser *p) {
    parti_json_node *nd = &p->nodes[p->stack[p->depth - 1].node];
    nd->len = (uint32_t)(p->pos + 1 - nd->start);
    p->depth--;
    p->pos++;
}

/* A value is due at p->pos: opens a container or parses a scalar. */
static int parti__json_state_value(parti__json_parser *p) {
    unsigned char c;
    int idx, is_obj;
    parti__json_skip_ws(p);
    if (p->pos >= p->n) {
        parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->n, "unexpected end of input, expected a value");
        return PARTI__JSON_FAIL;
    }
    c = p->s[p->pos];
    if (c != '{' && c != '[') return parti__json_scalar_value(p) ? PARTI__JSON_AFTER : PARTI__JSON_FAIL;
    if (p->depth >= PARTI_JSON_MAX_DEPTH) {
        parti__json_error(p, PARTI_ERR_JSON_TOO_DEEP, p->pos, "nesting deeper than PARTI_JSON_MAX_DEPTH");
        return PARTI__JSON_FAIL;
    }
    is_obj = c == '{';
    if ((idx = parti__json_add(p, is_obj ? PARTI_JSON_OBJECT : PARTI_JSON_ARRAY, p->pos)) < 0) return PARTI__JSON_FAIL;
    parti__json_link(p, idx);
    p->stack[p->depth].node = idx;
    p->stack[p->depth].last = -1;
    p->depth++;
    p->pos++;
    parti__json_skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (is_obj ? '}' : ']')) {
        parti__json_close(p);
        return PARTI__JSON_AFTER;
    }
    return is_obj ? PARTI__JSON_KEY : PARTI__JSON_VALUE;
}

/* An object key is due at p->pos (whitespace skipped): key, then ':'. */
static int parti__json_state_key(parti__json_parser *p) {
    int idx;
    if (p->pos >= p->n || p->s[p->pos] != '"') {
        parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos, "expected a string as object key");
        return PARTI__JSON_FAIL;
    }
    if ((idx = parti__json_add(p, PARTI_JSON_STRING, p->pos)) < 0) return PARTI__JSON_FAIL;
    p->nodes[idx].flags = PARTI_JSON_FLAG_KEY;
    if (!parti__json_string(p, idx)) return PARTI__JSON_FAIL;
    p->pending_key = idx;
    parti__json_skip_ws(p);
    if (p->pos >= p->n || p->s[p->pos] != ':') {
        parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos, "expected ':' after object key");
        return PARTI__JSON_FAIL;
    }
    p->pos++;
    return PARTI__JSON_VALUE;
}

/* A value just ended: ',' or the closing bracket of the container, or the end. */
static int parti__json_state_after(parti__json_parser *p) {
    int is_obj;
    parti__json_skip_ws(p);
    if (p->depth == 0) return PARTI__JSON_DONE;
    is_obj = p->nodes[p->stack[p->depth - 1].node].type == PARTI_JSON_OBJECT;
    if (p->pos < p->n && p->s[p->pos] == ',') {
        p->pos++;
        parti__json_skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == (is_obj ? '}' : ']')) {
            parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos, "trailing comma");
            return PARTI__JSON_FAIL;
        }
        return is_obj ? PARTI__JSON_KEY : PARTI__JSON_VALUE;
    }
    if (p->pos < p->n && p->s[p->pos] == (is_obj ? '}' : ']')) {
        parti__json_close(p);
        return PARTI__JSON_AFTER;
    }
    parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos,
                      is_obj ? "expected ',' or '}' after object member" : "expected ',' or ']' after array element");
    return PARTI__JSON_FAIL;
}

/* Runs the state machine; every step consumes input or closes a container,
 * so it ends within O(n) steps. */
static int parti__json_run(parti__json_parser *p) {
    int state = PARTI__JSON_VALUE;
    while (state != PARTI__JSON_DONE) {
        if (state == PARTI__JSON_VALUE) state = parti__json_state_value(p);
        else if (state == PARTI__JSON_KEY) state = parti__json_state_key(p);
        else state = parti__json_state_after(p);
        if (state < 0) return 0;
    }
    if (p->pos != p->n)
        return parti__json_error(p, PARTI_ERR_JSON_SYNTAX, p->pos, "unexpected data after the JSON value");
    return 1;
}

/* "'x'", "byte 0x01" or "end of input": what the parser found at pos. */
static void parti__json_found(const parti__json_parser *p, char *out, size_t cap) {
    if (p->err_pos >= p->n) parti__msg(out, cap, "end of input");
    else if (p->s[p->err_pos] > 0x20 && p->s[p->err_pos] < 0x7F) parti__msg(out, cap, "'%c'", p->s[p->err_pos]);
    else parti__msg(out, cap, "byte 0x%02x", p->s[p->err_pos]);
}

static void parti__json_message(const parti__json_parser *p, char *msg, size_t msg_size) {
    char found[16];
    switch (p->err) {
    case PARTI_ERR_JSON_TOO_DEEP:
        parti__msg(msg, msg_size, "JSON too deep at byte %zu: more than %d nested arrays/objects", p->err_pos,
                   PARTI_JSON_MAX_DEPTH);
        break;
    case PARTI_ERR_JSON_TOO_LARGE:
        parti__msg(msg, msg_size, "JSON too large at byte %zu: more than %d nodes (PARTI_JSON_MAX_NODES)", p->err_pos,
                   (int)PARTI_JSON_MAX_NODES);
        break;
    case PARTI_ERR_NOMEM:
        parti__msg(msg, msg_size, "out of memory at byte %zu while parsing JSON", p->err_pos);
        break;
    default:
        parti__json_found(p, found, sizeof found);
        parti__msg(msg, msg_size, "JSON syntax error at byte %zu: %s (found %s)", p->err_pos, p->what, found);
    }
}

/* Checks the arguments and the size limits before any parsing. */
static parti_err parti__json_parse_args(parti_json_doc *doc, const char *text, size_t len, size_t *err_offset,
                                        char *msg, size_t msg_size) {
    if (err_offset) *err_offset = 0;
    if (!doc || !text) {
        parti__msg(msg, msg_size, "JSON parse: %s is NULL", doc ? "text" : "doc");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (len > (size_t)PARTI_JSON_MAX_LEN || len > (size_t)0xFFFFFFFEu) {
        size_t limit = (size_t)PARTI_JSON_MAX_LEN < (size_t)0xFFFFFFFEu ? (size_t)PARTI_JSON_MAX_LEN : 0xFFFFFFFEu;
        if (err_offset) *err_offset = limit;
        parti__msg(msg, msg_size, "JSON too large at byte %zu: the document has %zu bytes (PARTI_JSON_MAX_LEN)", limit,
                   len);
        return PARTI_ERR_JSON_TOO_LARGE;
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_json_parse(parti_json_doc *doc, const char *text, size_t len, size_t *err_offset, char *msg,
                                    size_t msg_size) {
    parti__json_parser p;
    parti_err e = parti__json_parse_args(doc, text, len, err_offset, msg, msg_size);
    if (doc) memset(doc, 0, sizeof *doc);
    if (e != PARTI_ERR_OK) return e;
    memset(&p, 0, sizeof p);
    p.s = (const unsigned char *)text;
    p.n = len;
    p.err = PARTI_ERR_OK;
    p.pending_key = -1;
    if (parti__json_run(&p)) {
        doc->text = (char *)PARTI_MALLOC(len + 1); /* the doc keeps its own copy */
        if (!doc->text) parti__json_error(&p, PARTI_ERR_NOMEM, len, "out of memory");
    }
    if (p.err != PARTI_ERR_OK) {
        if (err_offset) *err_offset = p.err_pos;
        parti__json_message(&p, msg, msg_size);
        PARTI_FREE(p.nodes);
        return p.err;
    }
    memcpy(doc->text, text, len);
    doc->text[len] = 0;
    doc->len = len;
    doc->nodes = p.nodes;
    doc->node_count = p.count;
    return PARTI_ERR_OK;
}

PARTIDEF void parti_json_doc_free(parti_json_doc *doc) {
    if (!doc) return;
    PARTI_FREE(doc->nodes);
    PARTI_FREE(doc->text);
    memset(doc, 0, sizeof *doc);
}

/* ---- JSON accessors ---------------------------------------------------------- */

/* The node at index i, or NULL for any bad document or index. */
static const parti_json_node *parti__json_node(const parti_json_doc *doc, int i) {
    const parti_json_node *nd;
    if (!doc || !doc->nodes || !doc->text || i < 0 || i >= doc->node_count) return NULL;
    nd = &doc->nodes[i];
    if ((size_t)nd->start > doc->len || (size_t)nd->len > doc->len - nd->start) return NULL;
    return nd;
}

PARTIDEF int parti_json_root(const parti_json_doc *doc) { return parti__json_node(doc, 0) ? 0 : -1; }

PARTIDEF parti_json_type parti_json_type_of(const parti_json_doc *doc, int node) {
    const parti_json_node *nd = parti__json_node(doc, node);
    return nd ? nd->type : PARTI_JSON_INVALID;
}

PARTIDEF const char *parti_json_type_name(parti_json_type t) {
    switch (t) {
    case PARTI_JSON_NULL: return "null";
    case PARTI_JSON_FALSE: return "false";
    case PARTI_JSON_TRUE: return "true";
    case PARTI_JSON_NUMBER: return "number";
    case PARTI_JSON_STRING: return "string";
    case PARTI_JSON_ARRAY: return "array";
    case PARTI_JSON_OBJECT: return "object";
    case PARTI_JSON_INVALID: break;
    }
    return "invalid";
}

static int parti__json_is_container(const parti_json_node *nd) {
    return nd && (nd->type == PARTI_JSON_ARRAY || nd->type == PARTI_JSON_OBJECT);
}

PARTIDEF uint32_t parti_json_count(const parti_json_doc *doc, int node) {
    const parti_json_node *nd = parti__json_node(doc, node);
    return parti__json_is_container(nd) ? nd->count : 0;
}

PARTIDEF int parti_json_first(const parti_json_doc *doc, int container) {
    const parti_json_node *nd = parti__json_node(doc, container);
    if (!parti__json_is_container(nd) || !parti__json_node(doc, nd->child)) return -1;
    return nd->child;
}

PARTIDEF int parti_json_next(const parti_json_doc *doc, int node) {
    const parti_json_node *nd = parti__json_node(doc, node);
    /* children always follow their predecessor: a smaller index would be a cycle */
    if (!nd || nd->next <= node || !parti__json_node(doc, nd->next)) return -1;
    return nd->next;
}

PARTIDEF int parti_json_member_key(const parti_json_doc *doc, int node) {
    const parti_json_node *nd = parti__json_node(doc, node), *k;
    if (!nd || !(k = parti__json_node(doc, nd->key)) || k->type != PARTI_JSON_STRING) return -1;
    return nd->key;
}

PARTIDEF const char *parti_json_raw(const parti_json_doc *doc, int node, size_t *len) {
    const parti_json_node *nd = parti__json_node(doc, node);
    if (len) *len = nd ? nd->len : 0;
    return nd ? doc->text + nd->start : NULL;
}

/* Decodes the unit at raw[*i] (a plain byte or a whole escape, the parser has
 * checked it) into out; returns the bytes produced (1..4) and advances *i. */
static size_t parti__json_unescape_one(const unsigned char *raw, size_t n, size_t *i, unsigned char out[4]) {
    size_t at = *i;
    uint32_t cp;
    long hi, lo;
    if (raw[at] != '\\' || at + 1 >= n) {
        out[0] = raw[at];
        *i = at + 1;
        return 1;
    }
    switch (raw[at + 1]) {
    case 'b': out[0] = '\b'; break;
    case 'f': out[0] = '\f'; break;
    case 'n': out[0] = '\n'; break;
    case 'r': out[0] = '\r'; break;
    case 't': out[0] = '\t'; break;
    case 'u': break;
    default: out[0] = raw[at + 1]; /* '"', '\\', '/' */
    }
    *i = at + 2;
    if (raw[at + 1] != 'u') return 1;
    if (n - at < 6 || (hi = parti__json_hex4(raw + at + 2)) < 0) return 1; /* unreachable after parsing */
    cp = (uint32_t)hi;
    *i = at + 6;
    if (hi >= 0xD800 && hi <= 0xDBFF && n - at >= 12 && raw[at + 6] == '\\' && raw[at + 7] == 'u' &&
        (lo = parti__json_hex4(raw + at + 8)) >= 0xDC00 && lo <= 0xDFFF) {
        cp = 0x10000u + (((uint32_t)hi - 0xD800u) << 10) + ((uint32_t)lo - 0xDC00u);
        *i = at + 12;
    }
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The string node at index node, or NULL. */
static const parti_json_node *parti__json_string_node(const parti_json_doc *doc, int node) {
    const parti_json_node *nd = parti__json_node(doc, node);
    return nd && nd->type == PARTI_JSON_STRING ? nd : NULL;
}

/* Writes the unescaped bytes of a string node into out (at most cap). */
static void parti__json_unescape(const parti_json_doc *doc, const parti_json_node *nd, char *out, size_t cap) {
    const unsigned char *raw = (const unsigned char *)doc->text + nd->start;
    size_t i = 0, o = 0, k, j;
    unsigned char u[4];
    if (cap == 0) return; /* out may be NULL then */
    if (!(nd->flags & PARTI_JSON_FLAG_ESCAPED)) { /* no escapes: the raw bytes are the value */
        memcpy(out, raw, nd->len < cap ? nd->len : cap);
        return;
    }
    while (i < nd->len && o < cap) {
        k = parti__json_unescape_one(raw, nd->len, &i, u);
        for (j = 0; j < k && o < cap; j++) out[o++] = (char)u[j];
    }
}

PARTIDEF int parti_json_string_eq_n(const parti_json_doc *doc, int node, const char *s, size_t n) {
    const parti_json_node *nd = parti__json_string_node(doc, node);
    const unsigned char *raw, *us = (const unsigned char *)s;
    size_t i = 0, o = 0, k, j;
    unsigned char u[4];
    if (!nd || !s || nd->count != n) return 0;
    raw = (const unsigned char *)doc->text + nd->start;
    if (!(nd->flags & PARTI_JSON_FLAG_ESCAPED)) return memcmp(raw, s, n) == 0;
    while (i < nd->len) { /* decode as we compare: no buffer, no allocation */
        k = parti__json_unescape_one(raw, nd->len, &i, u);
        for (j = 0; j < k; j++, o++)
            if (o >= n || us[o] != u[j]) return 0;
    }
    return o == n;
}

PARTIDEF int parti_json_string_eq(const parti_json_doc *doc, int node, const char *s) {
    return s ? parti_json_string_eq_n(doc, node, s, strlen(s)) : 0;
}

/* Common checks of the string getters: the node and its type. */
static parti_err parti__json_string_check(const parti_json_doc *doc, int node, const parti_json_node **nd) {
    *nd = parti__json_node(doc, node);
    if (!*nd) return PARTI_ERR_INVALID_ARGUMENT;
    if ((*nd)->type != PARTI_JSON_STRING) return PARTI_ERR_JSON_TYPE;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_json_as_bytes(const parti_json_doc *doc, int node, char *out, size_t cap, size_t *len) {
    const parti_json_node *nd;
    parti_err e = parti__json_string_check(doc, node, &nd);
    if (len) *len = e == PARTI_ERR_OK ? nd->count : 0;
    if (e != PARTI_ERR_OK) return e;
    if (!out && cap) return PARTI_ERR_INVALID_ARGUMENT;
    if (cap < nd->count) return PARTI_ERR_BUFFER_TOO_SMALL;
    parti__json_unescape(doc, nd, out, nd->count);
    if (cap > nd->count) out[nd->count] = 0;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_json_as_string(const parti_json_doc *doc, int node, char *out, size_t cap, size_t *needed) {
    const parti_json_node *nd;
    parti_err e = parti__json_string_check(doc, node, &nd);
    if (needed) *needed = e == PARTI_ERR_OK ? (size_t)nd->count + 1 : 0;
    if (e != PARTI_ERR_OK) return e;
    if (nd->flags & PARTI_JSON_FLAG_NUL) return PARTI_ERR_JSON_RANGE;
    if (!out && cap) return PARTI_ERR_INVALID_ARGUMENT;
    if (cap < (size_t)nd->count + 1) return PARTI_ERR_BUFFER_TOO_SMALL;
    parti__json_unescape(doc, nd, out, nd->count);
    out[nd->count] = 0;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_json_as_string_dup(const parti_json_doc *doc, int node, char **out) {
    const parti_json_node *nd;
    parti_err e;
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if ((e = parti__json_string_check(doc, node, &nd)) != PARTI_ERR_OK) return e;
    if (nd->flags & PARTI_JSON_FLAG_NUL) return PARTI_ERR_JSON_RANGE;
    *out = (char *)PARTI_MALLOC((size_t)nd->count + 1);
    if (!*out) return PARTI_ERR_NOMEM;
    return parti_json_as_string(doc, node, *out, (size_t)nd->count + 1, NULL);
}

PARTIDEF int parti_json_get_n(const parti_json_doc *doc, int obj, const char *key, size_t key_len) {
    const parti_json_node *nd = parti__json_node(doc, obj);
    int i, found = -1;
    if (!nd || nd->type != PARTI_JSON_OBJECT || !key) return -1;
    /* no early exit: the last duplicate wins, as in Go's encoding/json */
    for (i = parti_json_first(doc, obj); i >= 0; i = parti_json_next(doc, i))
        if (parti_json_string_eq_n(doc, parti_json_member_key(doc, i), key, key_len)) found = i;
    return found;
}

PARTIDEF int parti_json_get(const parti_json_doc *doc, int obj, const char *key) {
    return key ? parti_json_get_n(doc, obj, key, strlen(key)) : -1;
}

PARTIDEF int parti_json_at(const parti_json_doc *doc, int arr, uint32_t i) {
    const parti_json_node *nd = parti__json_node(doc, arr);
    int c;
    uint32_t k;
    if (!nd || nd->type != PARTI_JSON_ARRAY || i >= nd->count) return -1;
    c = parti_json_first(doc, arr);
    for (k = 0; k < i && c >= 0; k++) c = parti_json_next(doc, c);
    return c;
}

PARTIDEF parti_err parti_json_as_bool(const parti_json_doc *doc, int node, int *out) {
    const parti_json_node *nd = parti__json_node(doc, node);
    if (!nd || !out) return PARTI_ERR_INVALID_ARGUMENT;
    if (nd->type != PARTI_JSON_TRUE && nd->type != PARTI_JSON_FALSE) return PARTI_ERR_JSON_TYPE;
    *out = nd->type == PARTI_JSON_TRUE;
    return PARTI_ERR_OK;
}

/* Where the digits of a number's mantissa lie: first and last nonzero digit,
 * how many digits follow the decimal point, where the mantissa ends. */
typedef struct parti__json_mantissa {
    size_t first_nz, last_nz, end, frac_digits;
    int any_nz;
} parti__json_mantissa;

static void parti__json_scan_mantissa(const char *s, size_t n, size_t i, parti__json_mantissa *m) {
    int in_frac = 0;
    memset(m, 0, sizeof *m);
    for (; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
        if (s[i] == '.') {
            in_frac = 1;
            continue;
        }
        if (in_frac) m->frac_digits++;
        if (s[i] != '0') {
            if (!m->any_nz) m->first_nz = i;
            m->any_nz = 1;
            m->last_nz = i;
        }
    }
    m->end = i;
}

/* The exponent after 'e' at s[i] (i == n: none), saturated at +-10^15: far
 * beyond any digit count, so a saturated value decides like the true one. */
static int64_t parti__json_exponent(const char *s, size_t n, size_t i) {
    int64_t e = 0;
    int neg = 0;
    if (i >= n) return 0;
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    for (; i < n && parti__json_is_digit((unsigned char)s[i]); i++)
        if (e < 1000000000000000) e = e * 10 + (s[i] - '0');
    return neg ? -e : e;
}

/* The exact integer value of a checked JSON number: magnitude and sign.
 * value = D * 10^e10 where D runs from the first to the last nonzero digit. */
static parti_err parti__json_number_u64(const char *s, size_t n, uint64_t *mag, int *neg) {
    parti__json_mantissa m;
    int64_t e10, digits = 0, trailing = 0;
    uint64_t v = 0;
    size_t i;
    *neg = n > 0 && s[0] == '-';
    parti__json_scan_mantissa(s, n, (size_t)*neg, &m);
    *mag = 0;
    if (!m.any_nz) return PARTI_ERR_OK; /* 0, -0, 0.000e99 */
    for (i = m.first_nz; i <= m.last_nz; i++) digits += s[i] != '.';
    for (i = m.last_nz + 1; i < m.end; i++) trailing += s[i] != '.';
    e10 = parti__json_exponent(s, n, m.end) - (int64_t)m.frac_digits + trailing;
    if (e10 < 0) return PARTI_ERR_JSON_RANGE;          /* has a fractional part */
    if (digits + e10 > 20) return PARTI_ERR_JSON_RANGE; /* >= 10^20 > 2^64 */
    for (i = m.first_nz; i <= m.last_nz; i++) {
        unsigned d;
        if (s[i] == '.') continue;
        d = (unsigned)(s[i] - '0');
        if (v > (~(uint64_t)0 - d) / 10) return PARTI_ERR_JSON_RANGE;
        v = v * 10 + d;
    }
    for (; e10 > 0; e10--) {
        if (v > ~(uint64_t)0 / 10) return PARTI_ERR_JSON_RANGE;
        v *= 10;
    }
    *mag = v;
    return PARTI_ERR_OK;
}

/* Common part of the integer getters: node checks and the exact value. */
static parti_err parti__json_integer(const parti_json_doc *doc, int node, uint64_t *mag, int *neg) {
    const parti_json_node *nd = parti__json_node(doc, node);
    if (!nd) return PARTI_ERR_INVALID_ARGUMENT;
    if (nd->type != PARTI_JSON_NUMBER) return PARTI_ERR_JSON_TYPE;
    return parti__json_number_u64(doc->text + nd->start, nd->len, mag, neg);
}

PARTIDEF parti_err parti_json_as_uint64(const parti_json_doc *doc, int node, uint64_t *out) {
    uint64_t mag;
    int neg;
    parti_err e;
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__json_integer(doc, node, &mag, &neg)) != PARTI_ERR_OK) return e;
    if (neg && mag) return PARTI_ERR_JSON_RANGE;
    *out = mag;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_json_as_int64(const parti_json_doc *doc, int node, int64_t *out) {
    const uint64_t limit = (uint64_t)1 << 63; /* |INT64_MIN| */
    uint64_t mag;
    int neg;
    parti_err e;
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__json_integer(doc, node, &mag, &neg)) != PARTI_ERR_OK) return e;
    if (mag > limit || (!neg && mag == limit)) return PARTI_ERR_JSON_RANGE;
    /* -(mag - 1) - 1 keeps INT64_MIN in range without signed overflow */
    *out = neg && mag ? -(int64_t)(mag - 1) - 1 : (int64_t)mag;
    return PARTI_ERR_OK;
}

/* Finds member key of obj for the get_* helpers. */
static parti_err parti__json_member(const parti_json_doc *doc, int obj, const char *key, int *node) {
    const parti_json_node *nd = parti__json_node(doc, obj);
    if (!nd || !key) return PARTI_ERR_INVALID_ARGUMENT;
    if (nd->type != PARTI_JSON_OBJECT) return PARTI_ERR_JSON_TYPE;
    *node = parti_json_get(doc, obj, key);
    return *node < 0 ? PARTI_ERR_JSON_MISSING : PARTI_ERR_OK;
}

PARTIDEF parti_err parti_json_get_int64(const parti_json_doc *doc, int obj, const char *key, int64_t *out) {
    int node;
    parti_err e = parti__json_member(doc, obj, key, &node);
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    return e != PARTI_ERR_OK ? e : parti_json_as_int64(doc, node, out);
}

PARTIDEF parti_err parti_json_get_uint64(const parti_json_doc *doc, int obj, const char *key, uint64_t *out) {
    int node;
    parti_err e = parti__json_member(doc, obj, key, &node);
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    return e != PARTI_ERR_OK ? e : parti_json_as_uint64(doc, node, out);
}

PARTIDEF parti_err parti_json_get_bool(const parti_json_doc *doc, int obj, const char *key, int *out) {
    int node;
    parti_err e = parti__json_member(doc, obj, key, &node);
    if (!out) return PARTI_ERR_INVALID_ARGUMENT;
    return e != PARTI_ERR_OK ? e : parti_json_as_bool(doc, node, out);
}

PARTIDEF parti_err parti_json_get_string(const parti_json_doc *doc, int obj, const char *key, char *out, size_t cap,
                                         size_t *needed) {
    int node;
    parti_err e = parti__json_member(doc, obj, key, &node);
    if (needed) *needed = 0;
    return e != PARTI_ERR_OK ? e : parti_json_as_string(doc, node, out, cap, needed);
}



/* ---- logging ------------------------------------------------------------ */

PARTIDEF const char *parti_log_level_name(parti_log_level level) {
    switch (level) {
    case PARTI_LOG_DEBUG: return "debug";
    case PARTI_LOG_INFO: return "info";
    case PARTI_LOG_WARN: return "warn";
    case PARTI_LOG_ERROR: return "error";
    case PARTI_LOG_OFF: return "off";
    }
    return "unknown";
}

typedef struct parti__sb {
    char *buf;
    size_t cap, len; /* len counts everything, written or not */
} parti__sb;

static void parti__sb_putc(parti__sb *b, char ch) {
    if (b->len + 1 < b->cap) b->buf[b->len] = ch;
    b->len++;
}

static void parti__sb_puts(parti__sb *b, const char *s) {
    while (*s) parti__sb_putc(b, *s++);
}

static parti_err parti__sb_finish(parti__sb *b, size_t *needed) {
    if (needed) *needed = b->len + 1;
    if (b->cap == 0) return b->buf || !needed ? PARTI_ERR_BUFFER_TOO_SMALL : PARTI_ERR_BUFFER_TOO_SMALL;
    if (b->len + 1 > b->cap) {
        b->buf[0] = 0;
        return PARTI_ERR_BUFFER_TOO_SMALL;
    }
    b->buf[b->len] = 0;
    return PARTI_ERR_OK;
}

static const char *const parti__level_upper[] = {"?    ", "DEBUG", "INFO ", "WARN ", "ERROR", "OFF  "};

static void parti__log_console_value(parti__sb *b, const char *v) {
    const char *p;
    int quote = !*v;
    for (p = v; *p && !quote; p++)
        quote = (unsigned char)*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f;
    if (!quote) {
        parti__sb_puts(b, v);
        return;
    }
    parti__sb_putc(b, '"');
    for (p = v; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch == '"' || ch == '\\') {
            parti__sb_putc(b, '\\');
            parti__sb_putc(b, (char)ch);
        } else if (ch == '\n') {
            parti__sb_puts(b, "\\n");
        } else if (ch < 0x20 || ch == 0x7f) {
            char hex[8];
            snprintf(hex, sizeof hex, "\\x%02x", ch);
            parti__sb_puts(b, hex);
        } else {
            parti__sb_putc(b, (char)ch);
        }
    }
    parti__sb_putc(b, '"');
}

PARTIDEF parti_err parti_log_format_console(char *buf, size_t cap, size_t *needed, parti_log_level level,
                                            const char *message, const parti_log_field *fields, int field_count) {
    parti__sb b;
    int i;
    if (needed) *needed = 0;
    if (!message || field_count < 0 || (field_count > 0 && !fields) || (!buf && cap)) {
        if (buf && cap) buf[0] = 0;
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    b.buf = buf;
    b.cap = cap;
    b.len = 0;
    parti__sb_puts(&b, (unsigned)level <= PARTI_LOG_OFF ? parti__level_upper[level] : "?    ");
    parti__sb_putc(&b, ' ');
    for (; *message; message++) parti__sb_putc(&b, *message == '\n' ? ' ' : *message);
    for (i = 0; i < field_count; i++) {
        parti__sb_putc(&b, ' ');
        parti__sb_puts(&b, fields[i].key ? fields[i].key : "");
        parti__sb_putc(&b, '=');
        parti__log_console_value(&b, fields[i].value ? fields[i].value : "");
    }
    parti__sb_putc(&b, '\n');
    return parti__sb_finish(&b, needed);
}

PARTIDEF parti_err parti_log_format_json(char *buf, size_t cap, size_t *needed, parti_log_level level,
                                         const char *message, const parti_log_field *fields, int field_count) {
    parti_json_writer w;
    size_t n = 0;
    int i;
    parti_err e;
    if (needed) *needed = 0;
    if (!message || field_count < 0 || (field_count > 0 && !fields) || (!buf && cap)) {
        if (buf && cap) buf[0] = 0;
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    parti_json_writer_init(&w, buf, cap > 0 ? cap - 1 : 0); /* room for the newline */
    parti_json_object_begin(&w);
    parti_json_key(&w, "level");
    parti_json_string(&w, parti_log_level_name(level));
    parti_json_key(&w, "msg");
    parti_json_string(&w, message);
    for (i = 0; i < field_count; i++) {
        parti_json_key(&w, fields[i].key ? fields[i].key : "");
        parti_json_string(&w, fields[i].value ? fields[i].value : "");
    }
    parti_json_object_end(&w);
    e = parti_json_writer_finish(&w, &n);
    if (e != PARTI_ERR_OK && e != PARTI_ERR_BUFFER_TOO_SMALL) {
        if (buf && cap) buf[0] = 0;
        return e;
    }
    /* n includes the NUL; the line adds '\n' */
    if (needed) *needed = n + 1;
    if (e != PARTI_ERR_OK || n + 1 > cap) {
        if (buf && cap) buf[0] = 0;
        return PARTI_ERR_BUFFER_TOO_SMALL;
    }
    buf[n - 1] = '\n';
    buf[n] = 0;
    return PARTI_ERR_OK;
}

static void parti__log_to_file(void *file, int json, parti_log_level level, const char *message,
                               const parti_log_field *fields, int field_count) {
    char small[1024], *line = small;
    size_t need = 0;
    parti_err e;
    FILE *f = file ? (FILE *)file : stderr;
    e = json ? parti_log_format_json(small, sizeof small, &need, level, message, fields, field_count)
             : parti_log_format_console(small, sizeof small, &need, level, message, fields, field_count);
    if (e == PARTI_ERR_BUFFER_TOO_SMALL && need > 0 && (line = (char *)PARTI_MALLOC(need)) != NULL)
        e = json ? parti_log_format_json(line, need, NULL, level, message, fields, field_count)
                 : parti_log_format_console(line, need, NULL, level, message, fields, field_count);
    if (e == PARTI_ERR_OK && line) fputs(line, f);
    if (line != small) PARTI_FREE(line);
}

PARTIDEF void parti_log_to_console(void *file, parti_log_level level, const char *message,
                                   const parti_log_field *fields, int field_count) {
    parti__log_to_file(file, 0, level, message, fields, field_count);
}

PARTIDEF void parti_log_to_json_lines(void *file, parti_log_level level, const char *message,
                                      const parti_log_field *fields, int field_count) {
    parti__log_to_file(file, 1, level, message, fields, field_count);
}

PARTIDEF int parti_log_limiter_allow(parti_log_limiter *l, uint64_t now_ms, parti_log_level level,
                                     const char *message, const parti_log_field *fields, int field_count,
                                     uint32_t *suppressed) {
    uint64_t h = 1469598103934665603ULL, window;
    unsigned char lv = (unsigned char)level;
    int i, burst;
    if (suppressed) *suppressed = 0;
    if (!l) return 1;
    window = l->window_ms ? l->window_ms : 10000;
    burst = l->burst > 0 ? l->burst : 3;
    h = parti_hash64(&lv, 1);
    if (message) h ^= parti_hash64(message, strlen(message)) * 31;
    for (i = 0; fields && i < field_count; i++) {
        if (fields[i].key) h = h * 1099511628211ULL ^ parti_hash64(fields[i].key, strlen(fields[i].key));
        if (fields[i].value) h = h * 1099511628211ULL ^ parti_hash64(fields[i].value, strlen(fields[i].value));
    }
    if (h != l->last_hash || now_ms - l->window_start >= window || now_ms < l->window_start) {
        l->last_hash = h;
        l->window_start = now_ms;
        l->in_window = 0;
    }
    if (l->in_window >= burst) {
        l->suppressed++;
        return 0;
    }
    l->in_window++;
    if (suppressed) *suppressed = l->suppressed;
    l->suppressed = 0;
    return 1;
}

/* ---- the worker consumer -------------------------------------------------- */

#define PARTI__CONSUMER_NO_TIME UINT64_MAX
#define PARTI__TAIL_POLL_MIN_MS 2     /* a tail's read that found nothing: the next one after 2 ms, doubling */
#define PARTI__TAIL_POLL_MAX_MS 100   /* ... up to this */
#define PARTI__TAIL_CHECK_MIN_MS 10   /* tails: the durable's pending count is read again after 10 ms, doubling */
#define PARTI__TAIL_CHECK_MAX_MS 1000 /* ... up to this */
#define PARTI__TAIL_FULL_TURNS 4      /* tails behind their partitions' rates for this many full turns end */
#define PARTI__CONSUMER_MAX_FAILURES 64

/* A message held in a partition's queue: from the durable, or read directly
 * from the stream by a catch-up (never acked). */
typedef struct parti__held {
    parti_msg m;
    int direct;
} parti__held;

/* A partition, as the consumer sees it. */
enum { PARTI__P_NONE = 0, PARTI__P_ACTIVE, PARTI__P_CATCHUP, PARTI__P_REVOKED };
typedef struct parti__cpart {
    int state;                   /* PARTI__P_* */
    uint64_t pos;                /* every message of the partition up to this sequence is done */
    uint64_t gen;                /* the owner generation handed to the handler (fencing) */
    uint64_t cu_next, cu_end;    /* catch-up: the next sequence to read; the stream's last then */
    int cu_known;                /* cu_end was read (after the filter with the partition was on the server) */
    int tail;                    /* catch-up past cu_end: reading on until the durable delivers the partition */
    uint64_t tail_at;            /* tail: the next read is due then (the last found nothing) */
    uint32_t tail_wait;          /* tail: the wait after the next read that finds nothing */
    uint64_t tail_from;          /* tail: cu_end when it began (the stream's last after the filter change) */
    uint64_t retry_at;           /* ordered: the head failed, it is tried again then */
    uint32_t attempts;           /* how often the head was handed to the handler */
    parti__held *q;              /* stb_ds array: held messages, sorted by sequence, one per sequence */
} parti__cpart;

typedef struct parti__csubj {
    const char *subject;
    int partition;
} parti__csubj;

struct parti_consumer {
    parti_transport t;
    uint64_t call_deadline;      /* server calls end by then (0: no poll running: op_timeout_ms each) */
    uint64_t lease_until;        /* in a group: no message reaches the handler from then on (0: no lease) */
    int lease_lapsed;            /* a message was held back because the lease had run out */
    parti_config cfg;            /* defaults applied; strings and partitions point into owned copies */
    parti_consumer_options opts; /* defaults applied */
    parti_metrics metrics;
    /* owned copies behind cfg */
    char *stream, *tmpl, *prefix;
    parti_partition *parts;
    char **key_store;            /* every key string, one allocation each */
    const char **key_ptrs;       /* cfg.partitions[i].keys point in here */
    /* what the server has (as far as parti knows) */
    char *worker_id;             /* fixed by the first successful apply */
    char durable[PARTI_MAX_NAME_LEN + 1];
    parti_subjects applied;      /* the filter last put on the server; never empty once applied */
    parti_subjects none;         /* always empty: what subjects() shows while paused */
    int exists;                  /* applied at least once under this durable */
    int forgotten;               /* group: the durable was given up with the worker ID; it may still be on
                                    the server, at the position it had then */
    /* where a (re)created durable starts: the server refuses to change it on
     * update, so every upsert of one durable sends the same */
    parti_deliver_policy deliver;
    uint64_t start_seq;
    uint64_t ack_floor;          /* from the last consumer_info: all up to here acked */
    /* per partition (cfg.partition_count): its position, its handoff state and its ordered queue */
    parti__cpart *pt;
    char **psubj;                /* each partition's subject (the catch-up reads filter on it) */
    parti__csubj *smap;          /* exact subjects, sorted: subject -> partition */
    int smap_n;
    int *wild;                   /* stb_ds array: partitions whose subject has a wildcard */
    int group;                   /* run by a group: only granted partitions reach the handler */
    int catching_up;             /* partitions in PARTI__P_CATCHUP */
    int tailing;                 /* of those, in the tail (pt[i].tail) */
    uint64_t tail_min;           /* no tail's cu_end is below this (a lower bound; NO_TIME: none) */
    uint64_t tail_check_at;      /* tails: the durable's pending count is read then */
    uint32_t tail_check_wait;    /* tails: the wait after a read that finds messages pending */
    int tail_full_turns;         /* catch-up turns in a row that were all tail reads finding a message */
    uint64_t durable_seen;       /* the highest stream sequence the durable delivered for the first time */
    uint64_t cseq_seen;          /* the durable's last delivery seen (its consumer sequence) */
    int cseq_known;              /* cseq_seen is the durable's count (0: the next delivery sets it) */
    uint64_t cu_due;             /* no catch-up read is due before then (0: look) */
    int cu_cursor;               /* the catch-up's next read looks from this partition on */
    uint64_t next_retry_at;      /* no held head is due to be tried again before then */
    uint64_t stream_created;     /* the stream's created_ns as last read (0: unknown): positions count in it */
    uint64_t *pending_from;      /* per pending subject: first sequence to process (0 = none given) */
    uint64_t cu_retry_at;        /* a failed catch-up read or stream read is tried again then */
    char *dead_letter;           /* owned copy of options.dead_letter_subject, or NULL */
    uint64_t last_err_ms;        /* when last_err happened (transport clock) */
    int paused;
    int need_recreate;
    /* the wanted assignment, waiting for its coalescing window */
    int has_pending;
    char *pending_id;
    parti_subjects pending;
    uint64_t pending_since, pending_due;
    /* control-plane retries */
    parti_backoff backoff;
    uint64_t retry_at;
    /* pulling */
    int fetch_active;
    int pull_unlimited;          /* the next message is larger than fetch_max_bytes: pull it alone */
    int pull_failures;           /* in a row, for the gauge */
    uint64_t fail_times[PARTI__CONSUMER_MAX_FAILURES]; /* recent pull failures, a ring */
    int fail_next, fail_count;
    int need_refresh;            /* escalated: apply the last subjects again */
    int budget_spent;            /* the retry budget ran out: retry every backoff_cap_ms until a success */
    parti_err failed;            /* fail_fast: the error that stopped it */
    parti_log_limiter limiter;   /* repeated identical log records */
    int stream_lost;             /* the stream was found missing: recreate from its start */
    int stream_changed;          /* another stream was seen: what the old durable sent is dropped at the recreation */
    parti_backoff pull_backoff;
    uint64_t pull_retry_at;
    uint64_t next_info_check;
    int unhealthy;
    parti_err last_err;
    char last_msg[256];
};

PARTIDEF const char *parti_consumer_event_name(parti_consumer_event_kind kind) {
    switch (kind) {
    case PARTI_EVENT_CONSUMER_CREATED: return "created";
    case PARTI_EVENT_CONSUMER_UPDATED: return "updated";
    case PARTI_EVENT_CONSUMER_RECREATED: return "recreated";
    case PARTI_EVENT_CONSUMER_PAUSED: return "paused";
    case PARTI_EVENT_CONSUMER_RESUMED: return "resumed";
    case PARTI_EVENT_CONSUMER_UNHEALTHY: return "unhealthy";
    case PARTI_EVENT_CONSUMER_HEALTHY: return "healthy";
    }
    return "unknown";
}

static uint64_t parti__consumer_now(const parti_consumer *c) { return c->t.vt->now_ms(c->t.self); }

static uint64_t parti__consumer_rng(void *user) {
    parti_consumer *c = (parti_consumer *)user;
    return c->t.vt->random(c->t.self);
}

/* One log record, rate-limited; the durable and the worker's fields first. */
static void parti__log(parti_log_fn fn, void *user, parti_log_level min, parti_log_limiter *lim, uint64_t now,
                       parti_log_level level, const char *message, const parti_log_field *fields, int n) {
    parti_log_field all[8];
    char rep[24];
    uint32_t dropped = 0;
    int k = 0, i;
    if (!fn || level < (min ? min : PARTI_LOG_INFO)) return;
    if (!parti_log_limiter_allow(lim, now, level, message, fields, n, &dropped)) return;
    for (i = 0; i < n && k < 7; i++) all[k++] = fields[i];
    if (dropped) {
        snprintf(rep, sizeof rep, "%u", dropped);
        all[k].key = "suppressed_before";
        all[k++].value = rep;
    }
    fn(user, level, message, all, k);
}

/* The timeout of a server call made at now: op_timeout_ms, cut so the call
 * ends by call_deadline (0: no poll running, no cut), at least 1 ms. This is
 * what bounds a poll when the server hangs. */
static uint32_t parti__budget(uint64_t now, uint64_t call_deadline, uint32_t op_timeout_ms) {
    if (!call_deadline) return op_timeout_ms;
    if (now + 1 >= call_deadline) return 1;
    return call_deadline - now < op_timeout_ms ? (uint32_t)(call_deadline - now) : op_timeout_ms;
}

/* The timeout of the consumer's next server call (see parti__budget). */
static uint32_t parti__consumer_budget(const parti_consumer *c) {
    return parti__budget(c->call_deadline ? c->t.vt->now_ms(c->t.self) : 0, c->call_deadline, c->opts.op_timeout_ms);
}

static void parti__consumer_log(parti_consumer *c, parti_log_level level, const char *message, parti_err e,
                                const char *detail) {
    parti_log_field f[3];
    int n = 0;
    if (!c->opts.log) return;
    f[n].key = "durable", f[n++].value = c->durable[0] ? c->durable : "(none yet)";
    if (e != PARTI_ERR_OK) f[n].key = "error", f[n++].value = parti_error_name(e);
    if (detail && *detail) f[n].key = "detail", f[n++].value = detail;
    parti__log(c->opts.log, c->opts.log_user, c->opts.log_level, &c->limiter, c->t.vt->now_ms(c->t.self), level,
               message, f, n);
}

static void parti__consumer_event(parti_consumer *c, parti_consumer_event_kind kind, parti_err err,
                                  const char *detail) {
    char what[48];
    parti_log_level lv = kind == PARTI_EVENT_CONSUMER_UNHEALTHY  ? PARTI_LOG_ERROR
                         : kind == PARTI_EVENT_CONSUMER_RECREATED ? PARTI_LOG_WARN
                                                                  : PARTI_LOG_INFO;
    snprintf(what, sizeof what, "consumer %s", parti_consumer_event_name(kind));
    parti__consumer_log(c, lv, what, err, detail);
    if (c->opts.on_event) c->opts.on_event(c->opts.user, kind, err, detail ? detail : "");
}

static void parti__consumer_fail(parti_consumer *c, parti_err e, const char *what) {
    c->last_err = e;
    c->last_err_ms = c->t.vt->now_ms(c->t.self);
    parti__msg(c->last_msg, sizeof c->last_msg, "%s: %s", what, parti_strerror(e));
    parti__consumer_log(c, PARTI_LOG_WARN, what, e, parti_strerror(e));
}

static void parti__consumer_set_unhealthy(parti_consumer *c, parti_err e) {
    if (c->unhealthy) return;
    c->unhealthy = 1;
    parti__consumer_event(c, PARTI_EVENT_CONSUMER_UNHEALTHY, e, c->last_msg);
}

static void parti__consumer_set_healthy(parti_consumer *c) {
    c->budget_spent = 0; /* a success: the next failure starts a fresh budget */
    if (!c->unhealthy) return;
    c->unhealthy = 0;
    parti__consumer_event(c, PARTI_EVENT_CONSUMER_HEALTHY, PARTI_ERR_OK, c->durable);
}

static int parti__consumer_sets_equal(const parti_subjects *a, const parti_subjects *b) {
    int i;
    if (a->count != b->count) return 0;
    for (i = 0; i < a->count; i++)
        if (strcmp(a->items[i], b->items[i]) != 0) return 0;
    return 1;
}

static void parti__consumer_free_copies(parti_consumer *c) {
    int i;
    for (i = 0; i < (int)arrlen(c->key_store); i++) PARTI_FREE(c->key_store[i]);
    arrfree(c->key_store);
    PARTI_FREE((void *)c->key_ptrs);
    PARTI_FREE(c->parts);
    PARTI_FREE(c->stream);
    PARTI_FREE(c->tmpl);
    PARTI_FREE(c->prefix);
}

/* Deep-copies the strings and partitions of cfg so the caller's may go away. */
static parti_err parti__consumer_copy_config(parti_consumer *c, const parti_config *cfg) {
    int i, j, nkeys = 0, k = 0;
    c->cfg = parti_config_defaults(cfg);
    for (i = 0; i < c->cfg.partition_count; i++) nkeys += c->cfg.partitions[i].key_count;
    c->stream = parti__strdup(c->cfg.stream);
    c->tmpl = parti__strdup(c->cfg.subject_template);
    c->prefix = parti__strdup(c->cfg.consumer_prefix);
    c->parts = (parti_partition *)PARTI_MALLOC(sizeof(parti_partition) * (size_t)c->cfg.partition_count);
    c->key_ptrs = (const char **)PARTI_MALLOC(sizeof(char *) * (size_t)(nkeys + 1));
    if (!c->stream || !c->tmpl || !c->prefix || !c->parts || !c->key_ptrs) return PARTI_ERR_NOMEM;
    for (i = 0; i < c->cfg.partition_count; i++) {
        const parti_partition *p = &c->cfg.partitions[i];
        c->parts[i].keys = c->key_ptrs + k;
        c->parts[i].key_count = p->key_count;
        c->parts[i].weight = p->weight;
        for (j = 0; j < p->key_count; j++) {
            char *key = parti__strdup(p->keys[j]);
            if (!key) return PARTI_ERR_NOMEM;
            arrput(c->key_store, key);
            c->key_ptrs[k++] = key;
        }
    }
    c->cfg.stream = c->stream;
    c->cfg.subject_template = c->tmpl;
    c->cfg.consumer_prefix = c->prefix;
    c->cfg.partitions = c->parts;
    c->cfg.bucket_prefix = NULL; /* the consumer has no use for it; do not keep the caller's pointer */
    return PARTI_ERR_OK;
}

static int parti__consumer_cmp_subj(const void *a, const void *b) {
    return strcmp(((const parti__csubj *)a)->subject, ((const parti__csubj *)b)->subject);
}

/* Every partition's subject, and the map back from a subject. */
static parti_err parti__consumer_map_partitions(parti_consumer *c) {
    int n = c->cfg.partition_count, i;
    char subj[PARTI_MAX_SUBJECT_LEN + 1];
    /* (n is a validated int count: sizes fit in size_t) */
    c->pt = (parti__cpart *)PARTI_MALLOC(sizeof *c->pt * (size_t)n + 1);
    c->psubj = (char **)PARTI_MALLOC(sizeof *c->psubj * (size_t)n + 1);
    c->smap = (parti__csubj *)PARTI_MALLOC(sizeof *c->smap * (size_t)n + 1);
    if (!c->pt || !c->psubj || !c->smap) return PARTI_ERR_NOMEM;
    memset(c->pt, 0, sizeof *c->pt * (size_t)n);
    memset(c->psubj, 0, sizeof *c->psubj * (size_t)n);
    for (i = 0; i < n; i++) {
        if (parti_subject_expand(c->cfg.subject_template, &c->cfg.partitions[i], subj, sizeof subj, NULL, NULL, 0) !=
            PARTI_ERR_OK)
            subj[0] = 0; /* validated already: cannot happen */
        if (!(c->psubj[i] = parti__strdup(subj))) return PARTI_ERR_NOMEM;
        if (strchr(subj, '*') || strchr(subj, '>')) {
            arrput(c->wild, i);
        } else {
            c->smap[c->smap_n].subject = c->psubj[i];
            c->smap[c->smap_n++].partition = i;
        }
    }
    if (c->smap_n > 1) qsort(c->smap, (size_t)c->smap_n, sizeof *c->smap, parti__consumer_cmp_subj);
    return PARTI_ERR_OK;
}

/* The partition a subject belongs to, -1 when none. */
static int parti__consumer_partition_of(const parti_consumer *c, const char *subject) {
    int lo = 0, hi = c->smap_n - 1, i;
    if (!subject) return -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, r = strcmp(c->smap[mid].subject, subject);
        if (r == 0) return c->smap[mid].partition;
        if (r < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    for (i = 0; i < (int)arrlen(c->wild); i++)
        if (parti_subject_matches(c->psubj[c->wild[i]], subject)) return c->wild[i];
    return -1;
}

/* Empties partition i's queue: durable messages are acked without the
 * handler when ack is set (their partition went to another owner, who reads
 * them from the stream), else just given back; direct reads are given back. */
static void parti__consumer_drop_queue(parti_consumer *c, int i, int ack) {
    parti__cpart *ps = &c->pt[i];
    int k;
    for (k = 0; k < (int)arrlen(ps->q); k++) {
        if (ack && !ps->q[k].direct) {
            parti_counter_add(&c->metrics.consumer_handoff_skipped, 1);
            c->t.vt->ack(c->t.self, &ps->q[k].m, PARTI_ACK_ACK, 0, parti__consumer_budget(c));
        }
        c->t.vt->msg_release(c->t.self, &ps->q[k].m);
    }
    arrfree(ps->q);
    ps->q = NULL;
    ps->attempts = 0;
    ps->retry_at = 0;
    c->cu_due = 0; /* a catch-up read that waited for a dropped one may be due */
}

PARTIDEF parti_err parti_consumer_create(parti_consumer **out, const parti_transport *t, const parti_config *cfg,
                                         const parti_consumer_options *opts, char *msg, size_t msg_size) {
    parti_consumer *c;
    parti_err e;
    if (out) *out = NULL;
    if (!out || !t || !t->vt || !cfg || !opts) {
        parti__msg(msg, msg_size, "parti_consumer_create: NULL output, transport, config or options");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (!t->vt->now_ms || !t->vt->random || !t->vt->consumer_upsert || !t->vt->consumer_info ||
        !t->vt->fetch_start || !t->vt->fetch_next || !t->vt->ack || !t->vt->msg_release) {
        parti__msg(msg, msg_size, "parti_consumer_create: the transport lacks an operation the consumer needs");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (!opts->on_message) {
        parti__msg(msg, msg_size, "options.on_message is required");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (opts->unhealthy_after < 0 || opts->unhealthy_after > PARTI__CONSUMER_MAX_FAILURES) {
        parti__msg(msg, msg_size, "options.unhealthy_after must be 0 (default 3) to %d, got %d",
                   PARTI__CONSUMER_MAX_FAILURES, opts->unhealthy_after);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (opts->dead_letter_subject && parti_subject_check(opts->dead_letter_subject, 0, NULL, 0) != PARTI_ERR_OK) {
        parti__msg(msg, msg_size, "options.dead_letter_subject \"%.80s\" is not a valid subject (no wildcards)",
                   opts->dead_letter_subject);
        return PARTI_ERR_INVALID_SUBJECT;
    }
    if ((unsigned)opts->log_level > PARTI_LOG_OFF) {
        parti__msg(msg, msg_size, "options.log_level must be 0 (info) to PARTI_LOG_OFF, got %d", (int)opts->log_level);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (opts->dead_letter_subject && !t->vt->publish) {
        parti__msg(msg, msg_size, "options.dead_letter_subject needs a transport that can publish");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if ((e = parti_config_validate(cfg, msg, msg_size)) != PARTI_ERR_OK) return e;
    if (!(c = (parti_consumer *)PARTI_MALLOC(sizeof *c))) {
        parti__msg(msg, msg_size, "out of memory");
        return PARTI_ERR_NOMEM;
    }
    memset(c, 0, sizeof *c);
    c->t = *t;
    c->opts = *opts;
    if (!c->opts.coalesce_ms) c->opts.coalesce_ms = 75;
    if (!c->opts.op_timeout_ms) c->opts.op_timeout_ms = 5000;
    if (!c->opts.info_interval_ms) c->opts.info_interval_ms = 5000;
    if (!c->opts.unhealthy_after) c->opts.unhealthy_after = 3;
    if (!c->opts.failure_window_ms) c->opts.failure_window_ms = 30000;
    c->opts.dead_letter_subject = NULL;
    if ((e = parti__consumer_copy_config(c, cfg)) != PARTI_ERR_OK ||
        (opts->dead_letter_subject && !(c->dead_letter = parti__strdup(opts->dead_letter_subject)))) {
        if (e == PARTI_ERR_OK) e = PARTI_ERR_NOMEM;
        PARTI_FREE(c->dead_letter);
        parti__msg(msg, msg_size, "out of memory");
        parti__consumer_free_copies(c);
        PARTI_FREE(c);
        return e;
    }
    if ((e = parti__consumer_map_partitions(c)) != PARTI_ERR_OK) {
        parti__msg(msg, msg_size, "out of memory");
        parti_consumer_destroy(c);
        return e;
    }
    parti_metrics_init(&c->metrics);
    parti_backoff_init(&c->backoff, c->cfg.backoff_base_ms, c->cfg.backoff_cap_ms, c->cfg.backoff_max_retries);
    parti_backoff_init(&c->pull_backoff, c->cfg.backoff_base_ms, c->cfg.backoff_cap_ms, 0);
    c->paused = 1; /* nothing to pull before the first apply */
    *out = c;
    return PARTI_ERR_OK;
}

PARTIDEF void parti_consumer_destroy(parti_consumer *c) {
    int i;
    if (!c) return;
    for (i = 0; c->pt && i < c->cfg.partition_count; i++) parti__consumer_drop_queue(c, i, 0);
    if (c->t.vt && c->t.vt->flush) c->t.vt->flush(c->t.self); /* its acks go now, not at a later call */
    for (i = 0; c->psubj && i < c->cfg.partition_count; i++) PARTI_FREE(c->psubj[i]);
    PARTI_FREE(c->psubj);
    PARTI_FREE(c->pt);
    PARTI_FREE(c->smap);
    arrfree(c->wild);
    parti_subjects_free(&c->applied);
    parti_subjects_free(&c->pending);
    PARTI_FREE(c->pending_from);
    PARTI_FREE(c->worker_id);
    PARTI_FREE(c->pending_id);
    PARTI_FREE(c->dead_letter);
    parti__consumer_free_copies(c);
    PARTI_FREE(c);
}

PARTIDEF parti_err parti_consumer_update(parti_consumer *c, const char *worker_id, const int *partitions, int count) {
    return parti_consumer_update_from(c, worker_id, partitions, count, NULL);
}

/* Finds subject in a sorted set; -1 when absent. */
static int parti__subjects_find(const parti_subjects *set, const char *subject) {
    int lo = 0, hi = set->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(set->items[mid], subject);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

PARTIDEF parti_err parti_consumer_update_from(parti_consumer *c, const char *worker_id, const int *partitions,
                                              int count, const uint64_t *resume_from) {
    char name[PARTI_MAX_NAME_LEN + 1];
    uint64_t *from = NULL;
    parti_partition *sel = NULL;
    parti_subjects set = {NULL, 0};
    char *id_copy;
    parti_err e;
    int i;
    if (!c) return PARTI_ERR_INVALID_ARGUMENT;
    if (!worker_id || count < 0 || (count > 0 && !partitions)) {
        parti__msg(c->last_msg, sizeof c->last_msg, "parti_consumer_update: NULL worker ID or partitions");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    for (i = 0; i < count; i++) {
        if (partitions[i] < 0 || partitions[i] >= c->cfg.partition_count) {
            parti__msg(c->last_msg, sizeof c->last_msg, "partitions[%d] = %d is not an index into config.partitions "
                       "(0..%d)", i, partitions[i], c->cfg.partition_count - 1);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
    }
    if ((e = parti_consumer_name(c->cfg.consumer_prefix, worker_id, name, sizeof name, c->last_msg,
                                 sizeof c->last_msg)) != PARTI_ERR_OK)
        return e;
    if (c->worker_id && strcmp(c->worker_id, worker_id) != 0 && !c->opts.allow_worker_id_change) {
        parti__msg(c->last_msg, sizeof c->last_msg, "worker ID \"%.80s\" differs from \"%.80s\", fixed by the first "
                   "update (set options.allow_worker_id_change to allow)", worker_id, c->worker_id);
        return PARTI_ERR_WORKER_ID_IMMUTABLE;
    }
    if (count > 0) {
        if (!(sel = (parti_partition *)PARTI_MALLOC(sizeof *sel * (size_t)count))) return PARTI_ERR_NOMEM;
        for (i = 0; i < count; i++) sel[i] = c->cfg.partitions[partitions[i]];
    }
    e = parti_subjects_build(c->cfg.subject_template, sel, count, c->cfg.max_subjects, &set, c->last_msg,
                             sizeof c->last_msg);
    PARTI_FREE(sel);
    if (e != PARTI_ERR_OK) return e;
    if (resume_from && set.count > 0) { /* the resume point of each subject */
        char subj[PARTI_MAX_SUBJECT_LEN + 1];
        if (!(from = (uint64_t *)PARTI_MALLOC(sizeof *from * (size_t)set.count))) {
            parti_subjects_free(&set);
            return PARTI_ERR_NOMEM;
        }
        memset(from, 0, sizeof *from * (size_t)set.count);
        for (i = 0; i < count; i++) {
            int k;
            if (!resume_from[i] || parti_subject_expand(c->cfg.subject_template, &c->cfg.partitions[partitions[i]],
                                                        subj, sizeof subj, NULL, NULL, 0) != PARTI_ERR_OK)
                continue;
            if ((k = parti__subjects_find(&set, subj)) >= 0 && (!from[k] || resume_from[i] < from[k]))
                from[k] = resume_from[i];
        }
        /* a coalesced earlier update's resume points still count */
        for (i = 0; c->has_pending && c->pending_from && i < c->pending.count; i++) {
            int k = c->pending_from[i] ? parti__subjects_find(&set, c->pending.items[i]) : -1;
            if (k >= 0 && (!from[k] || c->pending_from[i] < from[k])) from[k] = c->pending_from[i];
        }
    }
    /* nothing in flight and nothing would change: count it and stop here */
    if (!c->has_pending && (!c->worker_id || strcmp(c->worker_id, worker_id) == 0) &&
        (set.count == 0 ? c->paused : (!c->paused && c->exists && parti__consumer_sets_equal(&set, &c->applied)))) {
        parti_subjects_free(&set);
        PARTI_FREE(from);
        parti_counter_add(&c->metrics.consumer_updates_noop, 1);
        return PARTI_ERR_OK;
    }
    if (!(id_copy = parti__strdup(worker_id))) {
        parti_subjects_free(&set);
        PARTI_FREE(from);
        return PARTI_ERR_NOMEM;
    }
    if (c->has_pending) {
        parti_counter_add(&c->metrics.consumer_updates_coalesced, 1);
    } else {
        c->has_pending = 1;
        c->pending_since = parti__consumer_now(c);
        c->pending_due = c->pending_since + (c->opts.no_coalesce ? 0 : c->opts.coalesce_ms);
    }
    parti_subjects_free(&c->pending);
    PARTI_FREE(c->pending_id);
    PARTI_FREE(c->pending_from);
    c->pending = set;
    c->pending_id = id_copy;
    c->pending_from = from;
    return PARTI_ERR_OK;
}

static void parti__consumer_clear_pending(parti_consumer *c) {
    c->has_pending = 0;
    PARTI_FREE(c->pending_from);
    c->pending_from = NULL;
    parti_subjects_free(&c->pending);
    PARTI_FREE(c->pending_id);
    c->pending_id = NULL;
}

/* Schedules the next try of a failed control-plane call. */
static void parti__consumer_schedule_retry(parti_consumer *c, uint64_t now, parti_err e) {
    uint64_t delay = c->cfg.backoff_cap_ms;
    parti_category cat = parti_error_category(e);
    if (c->opts.fail_fast) {
        c->failed = e;
        parti__consumer_set_unhealthy(c, e);
        return;
    }
    if (c->budget_spent) { /* still failing after the budget: keep the slowest pace */
        if (cat == PARTI_CAT_FATAL || cat == PARTI_CAT_INVALID_INPUT) parti__consumer_set_unhealthy(c, e);
    } else if (parti_backoff_next(&c->backoff, parti__consumer_rng, c, &delay) != PARTI_ERR_OK) {
        /* budget spent: say so, and keep trying at the slowest pace */
        char cause[sizeof c->last_msg];
        memcpy(cause, c->last_msg, sizeof cause); /* the message is rewritten from itself */
        parti__consumer_fail(c, PARTI_ERR_RETRY_BUDGET_EXHAUSTED, cause);
        parti__consumer_set_unhealthy(c, PARTI_ERR_RETRY_BUDGET_EXHAUSTED);
        parti_backoff_reset(&c->backoff);
        c->budget_spent = 1;
        delay = c->cfg.backoff_cap_ms;
    } else if (cat == PARTI_CAT_FATAL || cat == PARTI_CAT_INVALID_INPUT) {
        parti__consumer_set_unhealthy(c, e);
    }
    c->retry_at = now + delay;
}

static parti_err parti__consumer_upsert_as(parti_consumer *c, const char *durable, const parti_subjects *set,
                                          int update_only) {
    parti_consumer_config cc;
    memset(&cc, 0, sizeof cc);
    cc.update_only = update_only;
    cc.stream = c->cfg.stream;
    cc.durable = durable;
    cc.filter_subjects = (const char *const *)set->items;
    cc.filter_count = set->count;
    cc.deliver_policy = c->deliver;
    cc.opt_start_seq = c->start_seq;
    cc.ack_wait_ms = c->cfg.ack_wait_ms;
    cc.max_deliver = c->cfg.max_deliver;
    cc.max_ack_pending = c->cfg.max_ack_pending;
    return c->t.vt->consumer_upsert(c->t.self, &cc, parti__consumer_budget(c));
}

static parti_err parti__consumer_upsert(parti_consumer *c, const char *durable, const parti_subjects *set) {
    return parti__consumer_upsert_as(c, durable, set, 0);
}

static void parti__consumer_saw_stream(parti_consumer *c, uint64_t created_ns);
static void parti__consumer_read_base(parti_consumer *c);

/* Reads the stream's identity (its creation time) and acts on a change
 * (parti__consumer_saw_stream). *created (may be NULL) gets it, 0 unknown. */
static parti_err parti__consumer_check_stream(parti_consumer *c, uint64_t *created) {
    parti_stream_info si;
    parti_err e;
    if (created) *created = 0;
    if (!c->t.vt->stream_info) return PARTI_ERR_UNSUPPORTED;
    memset(&si, 0, sizeof si);
    if ((e = c->t.vt->stream_info(c->t.self, c->cfg.stream, &si, parti__consumer_budget(c))) != PARTI_ERR_OK) return e;
    if (created) *created = si.created_ns;
    parti__consumer_saw_stream(c, si.created_ns);
    parti_stream_info_free(&si);
    return PARTI_ERR_OK;
}

/* A catch-up's read failed: a missing stream means a recreation; tried again after the backoff base. */
static void parti__consumer_catch_up_failed(parti_consumer *c, parti_err e, const char *what, uint64_t now) {
    if (e == PARTI_ERR_STREAM_NOT_FOUND) {
        c->stream_lost = 1;
        c->need_recreate = 1;
        c->fetch_active = 0;
    }
    parti__consumer_fail(c, e, what);
    c->cu_retry_at = now + c->cfg.backoff_base_ms;
}

/* 1 when partition ps holds a read of its catch-up not handled yet (a retry waits). */
static int parti__consumer_direct_held(const parti__cpart *ps) {
    int k;
    for (k = 0; k < (int)arrlen(ps->q); k++)
        if (ps->q[k].direct) return 1;
    return 0;
}

/* A doubled wait, at most cap. */
static uint32_t parti__consumer_double_capped(uint32_t ms, uint32_t cap) { return ms * 2 > cap ? cap : ms * 2; }

/* Partition ps stops being a tail (it stays in the catch-up, or leaves it). */
static void parti__consumer_leave_tail(parti_consumer *c, parti__cpart *ps) {
    if (!ps->tail) return;
    ps->tail = 0;
    if (!--c->tailing) c->tail_min = PARTI__CONSUMER_NO_TIME;
}

/* Partition i enters the catch-up: its messages after pos are read from the
 * stream up to the stream's last sequence, read once the filter with its
 * subject is on the server (so every later message comes through the
 * durable). Held messages are given back: the catch-up reads them again. */
static void parti__consumer_catch_up_from(parti_consumer *c, int i, uint64_t pos) {
    parti__cpart *ps = &c->pt[i];
    parti__consumer_drop_queue(c, i, 0);
    if (ps->state != PARTI__P_CATCHUP) c->catching_up++;
    parti__consumer_leave_tail(c, ps);
    ps->state = PARTI__P_CATCHUP;
    ps->pos = pos;
    ps->cu_end = 0;
    ps->cu_known = 0;
    ps->cu_next = pos + 1;
    c->cu_due = 0;
}

static void parti__consumer_drain(parti_consumer *c, int i);

/* Partition i leaves the catch-up (its tail too): from now on its messages
 * come through the durable only. */
static void parti__consumer_end_catch_up(parti_consumer *c, int i, int state) {
    parti__cpart *ps = &c->pt[i];
    if (ps->state != PARTI__P_CATCHUP) return;
    c->catching_up--;
    parti__consumer_leave_tail(c, ps);
    ps->state = state;
}

/* Partition i's tail ends: the durable takes the partition. */
static void parti__consumer_end_tail(parti_consumer *c, int i) {
    parti__consumer_end_catch_up(c, i, PARTI__P_ACTIVE);
    parti_counter_add(&c->metrics.consumer_catch_up_tails_ended, 1);
}

/* The tails whose reads the durable has reached end: every message of
 * theirs after cu_end comes through it. Whatever the durable delivers for
 * the first time comes in stream order (a filter change never rewinds it),
 * so once it delivered durable_seen >= cu_end, each later message of the
 * partition is either delivered after that or was delivered before it, and
 * then it was above cu_end and ended the tail already.
 * idle_after: the durable had nothing more pending when it sent a message
 * with this sequence (0: not known). That ends the tails whose filter
 * change came before the send, i.e. whose tail_from is below it (stored
 * later than the stream's last after the change): a message sent earlier
 * (still in the client's buffer when the tail began) said so of a filter
 * without their partitions, and a tail ended on it leaves their next
 * messages behind the whole backlog. PARTI__CONSUMER_NO_TIME: every tail
 * (the durable's state read after every change). */
static void parti__consumer_end_tails(parti_consumer *c, uint64_t idle_after) {
    uint64_t low = PARTI__CONSUMER_NO_TIME;
    int i;
    if (!c->tailing || (!idle_after && c->durable_seen < c->tail_min)) return;
    for (i = 0; i < c->cfg.partition_count && c->tailing; i++) {
        parti__cpart *ps = &c->pt[i];
        if (ps->state != PARTI__P_CATCHUP || !ps->tail) continue;
        if (ps->tail_from < idle_after || ps->cu_end <= c->durable_seen)
            parti__consumer_end_tail(c, i);
        else if (ps->cu_end < low) {
            low = ps->cu_end;
        }
    }
    c->tail_min = c->tailing ? low : PARTI__CONSUMER_NO_TIME;
    for (i = 0; i < c->cfg.partition_count; i++) /* (drained after the switch: no handler sees half of it) */
        if (c->pt[i].state == PARTI__P_ACTIVE && arrlen(c->pt[i].q)) parti__consumer_drain(c, i);
}

/* The catch-up of partition i reached its end: everything up to cu_end is
 * done. Unless the durable has delivered that far, its newer messages wait
 * there behind the rest of its backlog (it delivers in stream order across
 * its whole filter), so the partition goes on reading from the stream (the
 * tail) until the durable reaches it. */
static void parti__consumer_caught_up(parti_consumer *c, int i) {
    parti__cpart *ps = &c->pt[i];
    if (ps->state != PARTI__P_CATCHUP || ps->tail) return;
    /* a read not done yet (its handler NAKed it, a retry waits): the
     * position stays below it; the catch-up ends once it is done */
    if (parti__consumer_direct_held(ps)) return;
    if (ps->cu_end > ps->pos) ps->pos = ps->cu_end;
    /* (a partition no longer in the filter: the durable never delivers it, no tail) */
    if (c->durable_seen >= ps->cu_end || parti__subjects_find(&c->applied, c->psubj[i]) < 0) {
        parti__consumer_end_catch_up(c, i, PARTI__P_ACTIVE);
        return;
    }
    ps->tail = 1;
    ps->tail_at = 0;
    ps->tail_wait = PARTI__TAIL_POLL_MIN_MS;
    ps->tail_from = ps->cu_end;
    c->tailing++;
    if (ps->cu_end < c->tail_min) c->tail_min = ps->cu_end;
    c->tail_check_at = 0; /* the durable may have nothing pending: then no tail is needed */
    c->tail_check_wait = PARTI__TAIL_CHECK_MIN_MS;
    c->cu_due = 0;
    parti_counter_add(&c->metrics.consumer_catch_up_tails, 1);
}

/* Creates the consumer again from the last applied subjects. It starts
 * with new messages; every partition of the filter is caught up from its
 * position (a group's checkpoint, or what this process handled; alone, at
 * least the last ack floor the server reported), so nothing is skipped and
 * no partition is replayed from before its position. */
static void parti__consumer_recreate(parti_consumer *c, uint64_t now) {
    parti_err e;
    int k;
    c->deliver = PARTI_DELIVER_NEW;
    c->start_seq = 0;
    if (c->stream_created) {
        /* the durable is gone, maybe with its stream: positions are kept
         * unless the stream there now is another (its creation time
         * differs); a grant made meanwhile from a checkpoint of the new
         * stream is not reset. Read before the new durable delivers. */
        uint64_t created;
        if (parti__consumer_check_stream(c, &created) == PARTI_ERR_OK && created) c->stream_lost = 0;
    }
    if (c->stream_changed && c->t.vt->consumer_delete) {
        /* (the durable is gone with the old stream, or is one this process
         * made on the new one before it saw the change: deleting it also
         * drops the pull subscription of the durable's name, with what the
         * old durable sent into it) */
        parti_err de = c->t.vt->consumer_delete(c->t.self, c->cfg.stream, c->durable, parti__consumer_budget(c));
        if (de == PARTI_ERR_OK || de == PARTI_ERR_CONSUMER_NOT_FOUND) {
            c->stream_changed = 0;
        } else if (de != PARTI_ERR_STREAM_NOT_FOUND) { /* (a missing stream: the upsert below fails too) */
            parti_counter_add(&c->metrics.consumer_recreation_failures, 1);
            parti__consumer_fail(c, de, "dropping the old stream's consumer");
            parti__consumer_schedule_retry(c, now, de);
            return;
        }
    }
    e = parti__consumer_upsert(c, c->durable, &c->applied);
    if (e != PARTI_ERR_OK) {
        parti_counter_add(&c->metrics.consumer_recreation_failures, 1);
        parti__consumer_fail(c, e, "recreating the consumer");
        if (e == PARTI_ERR_STREAM_NOT_FOUND) {
            c->stream_lost = 1;
            parti__consumer_set_unhealthy(c, e);
        }
        parti__consumer_schedule_retry(c, now, e);
        return;
    }
    for (k = 0; k < c->applied.count; k++) {
        int i = parti__consumer_partition_of(c, c->applied.items[k]);
        uint64_t pos;
        if (i < 0) continue;
        if (c->group && c->pt[i].state != PARTI__P_ACTIVE && c->pt[i].state != PARTI__P_CATCHUP) continue;
        /* a stream deleted and made again: its sequences start again, old positions mean nothing */
        pos = c->stream_lost ? 0 : c->pt[i].pos;
        if (!c->group && !c->stream_lost && c->ack_floor > pos) pos = c->ack_floor;
        parti__consumer_catch_up_from(c, i, pos);
    }
    if (c->stream_lost) c->ack_floor = 0;
    c->durable_seen = 0; /* a new durable: it delivers from its creation on */
    parti__consumer_read_base(c);
    c->stream_lost = 0;
    c->need_recreate = 0;
    c->fetch_active = 0;
    parti_backoff_reset(&c->backoff);
    c->retry_at = 0;
    c->next_info_check = now + c->opts.info_interval_ms;
    parti_counter_add(&c->metrics.consumer_recreations, 1);
    parti__consumer_event(c, PARTI_EVENT_CONSUMER_RECREATED, PARTI_ERR_OK, c->durable);
    parti__consumer_set_healthy(c);
}

/* The durable exists with a start another process chose (an earlier
 * version's recreation): the server refuses to change it, so repeat it. 1
 * when something was adopted. */
static int parti__consumer_adopt_start(parti_consumer *c, const char *durable) {
    parti_consumer_info ci;
    int changed;
    memset(&ci, 0, sizeof ci);
    if (c->t.vt->consumer_info(c->t.self, c->cfg.stream, durable, &ci, parti__consumer_budget(c)) != PARTI_ERR_OK) return 0;
    changed = ci.deliver_policy != c->deliver || ci.opt_start_seq != c->start_seq;
    c->deliver = ci.deliver_policy;
    c->start_seq = ci.opt_start_seq;
    parti_consumer_info_free(&ci);
    return changed;
}

/* A group's: the worker ID was lost. The durable is another process's
 * from now on (a newcomer may take the ID): never recreated, refreshed,
 * checked or pulled from here again; the next assignment comes with the
 * next ID and creates its own. Back under the same ID, that is a durable of
 * the same name (it holds this process's instance), which may still be on
 * the server at its old position: it is deleted first (parti__consumer_apply). */
static void parti__consumer_forget_durable(parti_consumer *c) {
    c->exists = 0;
    c->forgotten = 1;
    c->need_recreate = c->need_refresh = 0;
    c->fetch_active = 0;
    c->paused = 1;
    parti_subjects_free(&c->applied);
}

/* A group's: partition i is this worker's from pos (its checkpoint) under
 * owner generation gen; it is caught up from there. */
static void parti__consumer_grant(parti_consumer *c, int i, uint64_t pos, uint64_t gen) {
    c->pt[i].gen = gen;
    parti__consumer_catch_up_from(c, i, pos);
}

/* A group's: partition i is no longer this worker's. Nothing more of it
 * reaches the handler (one running now has finished: the worker is single
 * threaded); held messages are acked without it (its next owner reads
 * them from the stream, after the checkpoint). */
static void parti__consumer_revoke(parti_consumer *c, int i) {
    parti__cpart *ps = &c->pt[i];
    parti__consumer_end_catch_up(c, i, PARTI__P_REVOKED);
    parti__consumer_drop_queue(c, i, 1);
    ps->state = PARTI__P_REVOKED;
}

/* The stream's creation time as just read: when it changed, the stream was
 * deleted and made again, its sequences start over, and every position
 * refers to the old one: the partitions held are caught up from the start. */
static void parti__consumer_saw_stream(parti_consumer *c, uint64_t created_ns) {
    int i;
    if (!created_ns || created_ns == c->stream_created) return;
    if (c->stream_created) {
        for (i = 0; i < c->cfg.partition_count; i++) {
            if (c->pt[i].state == PARTI__P_ACTIVE || c->pt[i].state == PARTI__P_CATCHUP)
                parti__consumer_catch_up_from(c, i, 0);
            else
                c->pt[i].pos = 0;
        }
        c->ack_floor = 0;
        c->durable_seen = 0;
        /* the durable went with the old stream, but what it sent may still
         * be on the way (a pulled batch in the client's buffer): none of it
         * may be taken as the new stream's. No pull until the durable is
         * made again, and the recreation drops what was pulled before */
        c->stream_changed = 1;
        if (c->exists) {
            c->need_recreate = 1;
            c->fetch_active = 0;
        }
    }
    c->stream_created = created_ns;
}

/* Applies the pending assignment: pause, no-op, or one upsert with the full set. */
static void parti__consumer_apply(parti_consumer *c, uint64_t now) {
    char name[PARTI_MAX_NAME_LEN + 1];
    parti_subjects added = {NULL, 0}, removed = {NULL, 0}, empty = {NULL, 0};
    int id_change, created, was_paused = c->paused, existed = c->exists, i, k;
    parti_err e;
    if (c->pending.count == 0) {
        if (!c->paused) {
            c->paused = 1;
            c->fetch_active = 0; /* a pull left pending ends by itself; unclaimed messages are redelivered */
            parti__consumer_event(c, PARTI_EVENT_CONSUMER_PAUSED, PARTI_ERR_OK, c->durable);
        }
        parti__consumer_clear_pending(c);
        return;
    }
    id_change = c->worker_id && strcmp(c->worker_id, c->pending_id) != 0;
    if (!id_change && c->exists && parti__consumer_sets_equal(&c->pending, &c->applied)) {
        parti_counter_add(&c->metrics.consumer_updates_noop, 1);
    } else {
        if ((e = parti_consumer_name(c->cfg.consumer_prefix, c->pending_id, name, sizeof name, NULL, 0)) ==
                PARTI_ERR_OK &&
            c->forgotten && (!c->exists || id_change) && strcmp(name, c->durable) == 0) {
            /* back under the ID it lost: its old durable of this name would
             * be kept with its position from before the loss, and deliver the
             * whole backlog since (which the catch-ups read from the
             * checkpoints) ahead of every new message. Deleted, so the new
             * one starts with new messages */
            e = c->t.vt->consumer_delete
                    ? c->t.vt->consumer_delete(c->t.self, c->cfg.stream, name, parti__consumer_budget(c))
                    : PARTI_ERR_CONSUMER_NOT_FOUND;
            if (e == PARTI_ERR_CONSUMER_NOT_FOUND || e == PARTI_ERR_STREAM_NOT_FOUND) e = PARTI_ERR_OK;
            if (e == PARTI_ERR_OK) c->forgotten = 0;
        }
        if (e == PARTI_ERR_OK) {
            /* an existing durable is updated, never made again: one deleted
             * behind this worker's back is recreated (with its catch-ups) */
            e = parti__consumer_upsert_as(c, name, &c->pending, c->exists && !id_change);
            if (e == PARTI_ERR_CONSUMER_NOT_FOUND && c->exists && !id_change) {
                c->need_recreate = 1;
                c->fetch_active = 0;
            }
            if (e == PARTI_ERR_ALREADY_EXISTS && parti__consumer_adopt_start(c, name)) /* an earlier process's */
                e = parti__consumer_upsert(c, name, &c->pending);
        }
        if (e != PARTI_ERR_OK) {
            parti_counter_add(&c->metrics.consumer_updates_failure, 1);
            parti__consumer_fail(c, e, "updating the consumer");
            parti__consumer_schedule_retry(c, now, e);
            return;
        }
        created = !c->exists || id_change;
        if (created) c->durable_seen = 0; /* (a durable of this ID an earlier process left: its deliveries come later) */
        if (parti_subjects_diff(created ? &empty : &c->applied, &c->pending, &added, &removed) == PARTI_ERR_OK) {
            parti_counter_add(&c->metrics.consumer_subject_adds, (uint64_t)added.count);
            parti_counter_add(&c->metrics.consumer_subject_removes, (uint64_t)removed.count);
        }
        parti_subjects_free(&added);
        parti_subjects_free(&removed);
        parti_counter_add(&c->metrics.consumer_updates_success, 1);
        parti_histogram_observe(&c->metrics.consumer_update_latency, (double)(now - c->pending_since) / 1000.0);
        parti_gauge_set(&c->metrics.consumer_subjects_current, (double)c->pending.count);
        if (parti_subjects_near_limit(c->pending.count, c->cfg.max_subjects, c->cfg.subjects_warn_percent))
            parti_counter_add(&c->metrics.consumer_subjects_near_limit, 1);
        if (c->stream_lost) { /* the stream is there again: whose positions count (before any catch-up reads) */
            parti__consumer_check_stream(c, NULL);
            c->stream_lost = 0;
        }
        if (created) c->stream_changed = 0; /* (a durable made just now: nothing of an old one is pulled under its name) */
        /* subjects with a first sequence given: caught up from there */
        for (i = 0; c->pending_from && i < c->pending.count; i++) {
            int k = c->pending_from[i] ? parti__consumer_partition_of(c, c->pending.items[i]) : -1;
            if (k >= 0 && (created || parti__subjects_find(&c->applied, c->pending.items[i]) < 0))
                parti__consumer_catch_up_from(c, k, c->pending_from[i] - 1);
        }
        parti_subjects_free(&c->applied);
        c->applied = c->pending;
        c->pending.items = NULL;
        c->pending.count = 0;
        /* a tail whose partition left the filter ends: the partition is
         * another consumer's now (a group revokes it before) */
        for (i = 0; c->tailing && i < c->cfg.partition_count; i++)
            if (c->pt[i].state == PARTI__P_CATCHUP && c->pt[i].tail &&
                parti__subjects_find(&c->applied, c->psubj[i]) < 0)
                parti__consumer_end_tail(c, i);
        if (id_change || !c->worker_id) {
            PARTI_FREE(c->worker_id);
            c->worker_id = c->pending_id;
            c->pending_id = NULL;
            memcpy(c->durable, name, sizeof name);
            c->fetch_active = 0; /* a pull of another durable */
            c->ack_floor = 0;    /* and another durable's floor */
            for (i = 0; i < c->cfg.partition_count; i++) /* messages of the other durable: given back */
                for (k = 0; k < (int)arrlen(c->pt[i].q); k++)
                    if (!c->pt[i].q[k].direct) {
                        parti__consumer_drop_queue(c, i, 0);
                        if (c->pt[i].state == PARTI__P_ACTIVE) parti__consumer_catch_up_from(c, i, c->pt[i].pos);
                        break;
                    }
        }
        c->exists = 1;
        c->forgotten = 0;
        c->need_recreate = 0;
        if (created) parti__consumer_read_base(c);
        parti_backoff_reset(&c->backoff);
        c->retry_at = 0;
        c->next_info_check = now + c->opts.info_interval_ms;
        parti__consumer_event(c, created ? PARTI_EVENT_CONSUMER_CREATED : PARTI_EVENT_CONSUMER_UPDATED,
                              PARTI_ERR_OK, c->durable);
        parti__consumer_set_healthy(c);
    }
    c->paused = 0;
    if (was_paused && existed) parti__consumer_event(c, PARTI_EVENT_CONSUMER_RESUMED, PARTI_ERR_OK, c->durable);
    parti__consumer_clear_pending(c);
}

/* Records a pull failure at now; 1 when unhealthy_after of them fell within
 * failure_window_ms. */
static int parti__consumer_note_failure(parti_consumer *c, uint64_t now) {
    int n = c->opts.unhealthy_after, oldest;
    c->fail_times[c->fail_next] = now;
    c->fail_next = (c->fail_next + 1) % n;
    if (c->fail_count < n) c->fail_count++;
    if (c->fail_count < n) return 0;
    oldest = c->fail_next; /* the ring is full: the next slot holds the oldest */
    return now - c->fail_times[oldest] <= c->opts.failure_window_ms;
}

/* Checks that the consumer still exists, for when no pull would notice. */
static void parti__consumer_check_exists(parti_consumer *c, uint64_t now) {
    parti_consumer_info ci;
    parti_err e;
    c->next_info_check = now + c->opts.info_interval_ms;
    memset(&ci, 0, sizeof ci);
    e = c->t.vt->consumer_info(c->t.self, c->cfg.stream, c->durable, &ci, parti__consumer_budget(c));
    if (e == PARTI_ERR_OK) {
        if (ci.ack_floor_stream_seq > c->ack_floor) c->ack_floor = ci.ack_floor_stream_seq;
        parti_consumer_info_free(&ci);
    }
    if (e == PARTI_ERR_CONSUMER_NOT_FOUND) {
        c->need_recreate = 1;
        c->fetch_active = 0;
    } else if (e == PARTI_ERR_STREAM_NOT_FOUND) { /* and the consumer with it */
        parti__consumer_fail(c, e, "checking the consumer");
        parti__consumer_set_unhealthy(c, e);
        c->stream_lost = 1;
        c->need_recreate = 1;
        c->fetch_active = 0;
    } else if (e != PARTI_ERR_OK) {
        /* the server does not answer: counts towards escalation like a failed pull */
        parti__consumer_fail(c, e, "checking the consumer");
        if (parti__consumer_note_failure(c, now)) {
            parti__consumer_set_unhealthy(c, e);
            c->need_refresh = 1;
            c->fail_count = 0;
        }
    }
}

/* Escalation after repeated pull failures: look the consumer up and put the
 * last subjects on it again, or create it again when it is gone. */
static void parti__consumer_refresh(parti_consumer *c, uint64_t now) {
    parti_consumer_info ci;
    parti_err e;
    memset(&ci, 0, sizeof ci);
    e = c->t.vt->consumer_info(c->t.self, c->cfg.stream, c->durable, &ci, parti__consumer_budget(c));
    if (e == PARTI_ERR_OK) {
        if (ci.ack_floor_stream_seq > c->ack_floor) c->ack_floor = ci.ack_floor_stream_seq;
        parti_consumer_info_free(&ci);
        e = parti__consumer_upsert_as(c, c->durable, &c->applied, 1);
        if (e == PARTI_ERR_CONSUMER_NOT_FOUND) { /* deleted since the look-up */
            c->need_refresh = 0;
            c->need_recreate = 1;
            c->fetch_active = 0;
            return;
        }
    } else if (e == PARTI_ERR_CONSUMER_NOT_FOUND || e == PARTI_ERR_STREAM_NOT_FOUND) {
        if (e == PARTI_ERR_STREAM_NOT_FOUND) c->stream_lost = 1;
        c->need_refresh = 0;
        c->need_recreate = 1;
        c->fetch_active = 0;
        parti__consumer_recreate(c, now);
        if (!c->need_recreate) parti_counter_add(&c->metrics.consumer_refreshes, 1);
        return;
    }
    if (e != PARTI_ERR_OK) {
        parti__consumer_fail(c, e, "refreshing the consumer");
        if (e == PARTI_ERR_STREAM_NOT_FOUND) parti__consumer_set_unhealthy(c, e);
        parti__consumer_schedule_retry(c, now, e);
        return;
    }
    c->need_refresh = 0;
    c->fetch_active = 0; /* start a fresh pull on the refreshed consumer */
    c->pull_retry_at = 0;
    parti_backoff_reset(&c->backoff);
    c->retry_at = 0;
    c->next_info_check = now + c->opts.info_interval_ms;
    parti_counter_add(&c->metrics.consumer_refreshes, 1);
    /* still unhealthy: that ends when a pull succeeds */
}

/* Runs the control-plane work that is due: recreation, the pending update,
 * the refresh, the existence check. */
static void parti__consumer_run_due(parti_consumer *c, uint64_t now) {
    if (now < c->retry_at) return;
    /* a group's consumer stopped (its lease ran out, its ID was lost) does
     * not touch the durable: another process may hold the ID, and the
     * durable, by now. Only a new assignment starts it again */
    if (c->group && c->paused && !c->has_pending) return;
    /* nor does one whose lease ran out before the group saw it (a pause in
     * the consumer's wait): a leader may have deleted the durable and its
     * registry key as a departed process's, and a recreation now would
     * leave it on the server with no key (seed 72671). The group's next
     * step stops it, or renews the lease, which lets this work run again */
    if (c->group && c->lease_until && now >= c->lease_until) return; /* (now: read just before) */
    if (c->need_recreate) {
        parti__consumer_recreate(c, now);
        if (c->need_recreate) return;
    }
    if (c->has_pending && now >= c->pending_due) {
        parti__consumer_apply(c, now);
        if (c->has_pending) return;
    }
    if (c->need_refresh && c->exists && !c->has_pending) {
        parti__consumer_refresh(c, now);
        if (c->need_refresh) return;
    }
    if (c->exists && !c->fetch_active && now >= c->next_info_check) {
        parti__consumer_check_exists(c, now);
        if (c->need_recreate) parti__consumer_recreate(c, now);
    }
}

/* When the control plane next has work: the end of the coalescing window or
 * the next retry. */
static uint64_t parti__consumer_next_due(const parti_consumer *c) {
    uint64_t t = PARTI__CONSUMER_NO_TIME;
    if (c->has_pending) t = c->pending_due > c->retry_at ? c->pending_due : c->retry_at;
    if ((c->need_recreate || c->need_refresh) && c->retry_at < t) t = c->retry_at;
    return t;
}

/* A pull ended with an error: restart it after a backoff; unhealthy_after
 * failures within failure_window_ms make the consumer unhealthy and force a
 * refresh. */
static void parti__consumer_pull_failed(parti_consumer *c, uint64_t now, parti_err e) {
    uint64_t delay = c->cfg.backoff_base_ms;
    c->fetch_active = 0;
    c->pull_failures++;
    if (c->opts.fail_fast) c->failed = e;
    parti_counter_add(&c->metrics.consumer_pull_restarts, 1);
    parti_gauge_set(&c->metrics.consumer_pull_consecutive_failures, (double)c->pull_failures);
    parti__consumer_fail(c, e, "pulling");
    parti_backoff_next(&c->pull_backoff, parti__consumer_rng, c, &delay);
    c->pull_retry_at = now + delay;
    if (parti__consumer_note_failure(c, now)) {
        /* N failures within T: something is wrong with the consumer itself */
        parti__consumer_set_unhealthy(c, e);
        c->need_refresh = 1;
        c->fail_count = 0;
    }
}

static void parti__consumer_pull_ok(parti_consumer *c) {
    if (c->pull_failures) {
        c->pull_failures = 0;
        parti_gauge_set(&c->metrics.consumer_pull_consecutive_failures, 0);
        parti_backoff_reset(&c->pull_backoff);
    }
    if (!c->need_recreate && !c->need_refresh && !c->has_pending) parti__consumer_set_healthy(c);
}

/* Publishes m to the dead-letter subject with its headers (minus the
 * Nats-* ones the server would act on) and where it came from. Retried a
 * few times: the Nats-Msg-Id makes the retries safe. */
static parti_err parti__consumer_dead_letter(parti_consumer *c, const parti_msg *m, const char *reason) {
    parti_header *h;
    char seq[24], dc[24], id[PARTI_MAX_NAME_LEN + 80];
    int i, n = 0, attempt;
    parti_err e = PARTI_ERR_NOMEM;
    if (!(h = (parti_header *)PARTI_MALLOC(sizeof *h * (size_t)(m->header_count + 6)))) return PARTI_ERR_NOMEM;
    for (i = 0; i < m->header_count; i++)
        if (m->headers[i].name && strncmp(m->headers[i].name, "Nats-", 5) != 0) h[n++] = m->headers[i];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)m->stream_seq);
    snprintf(dc, sizeof dc, "%u", m->delivery_count);
    /* (the stream's creation time too: a stream made again reuses sequences) */
    if (c->stream_created)
        snprintf(id, sizeof id, "parti-dlq-%s-%llx-%llu", c->cfg.stream, (unsigned long long)c->stream_created,
                 (unsigned long long)m->stream_seq);
    else
        snprintf(id, sizeof id, "parti-dlq-%s-%llu", c->cfg.stream, (unsigned long long)m->stream_seq);
    h[n].name = "Parti-Dead-Letter-Reason", h[n++].value = reason;
    h[n].name = "Parti-Original-Subject", h[n++].value = m->subject;
    h[n].name = "Parti-Original-Stream", h[n++].value = c->cfg.stream;
    h[n].name = "Parti-Original-Sequence", h[n++].value = seq;
    h[n].name = "Parti-Delivery-Count", h[n++].value = dc;
    h[n].name = "Nats-Msg-Id", h[n++].value = id;
    for (attempt = 0; attempt < 3; attempt++) {
        e = c->t.vt->publish(c->t.self, c->dead_letter, h, n, m->data, m->len, NULL, parti__consumer_budget(c));
        if (e == PARTI_ERR_OK || parti_error_category(e) == PARTI_CAT_INVALID_INPUT) break;
    }
    PARTI_FREE(h);
    return e;
}

/* The lease ran out (checked before every message, with a fresh clock):
 * nothing more reaches the handler; held messages wait. */
static int parti__consumer_lease_out(parti_consumer *c) {
    if (!c->lease_until || parti__consumer_now(c) < c->lease_until) return 0;
    if (!c->lease_lapsed || !c->paused) {
        c->lease_lapsed = 1;
        c->paused = 1;
        c->fetch_active = 0;
        parti__consumer_event(c, PARTI_EVENT_CONSUMER_PAUSED, PARTI_ERR_TIMEOUT, c->durable);
    }
    return 1;
}

/* Acks a durable message that needs no handler (done before, or its
 * partition is another worker's), or gives back a direct read. */
static void parti__consumer_skip(parti_consumer *c, parti_msg *m, int direct) {
    if (!direct) {
        parti_counter_add(&c->metrics.consumer_handoff_skipped, 1);
        if (c->t.vt->ack(c->t.self, m, PARTI_ACK_ACK, 0, parti__consumer_budget(c)) != PARTI_ERR_OK)
            parti__consumer_fail(c, PARTI_ERR_TIMEOUT, "acknowledging a message");
    }
    c->t.vt->msg_release(c->t.self, m);
}

/* Hands m to the handler, once. 1 when it is done (acked, terminated or
 * dead-lettered: settled on the server unless direct), 0 when it is to be
 * tried again, in order, after *retry_ms. */
static int parti__consumer_run_handler(parti_consumer *c, parti_msg *m, int direct, uint32_t attempt,
                                       uint32_t *retry_ms) {
    uint32_t delay = 0, delivery = m->delivery_count > attempt ? m->delivery_count : attempt;
    uint32_t saved = m->delivery_count;
    parti_ack_kind kind;
    parti_verdict verdict;
    parti_err e;
    m->delivery_count = delivery ? delivery : 1;
    verdict = c->opts.on_message(c->opts.user, m, &delay);
    /* a message terminated, or failed on its last delivery, goes to the dead
     * letters before it is settled: never dropped silently */
    if (verdict != PARTI_ACK && (verdict == PARTI_TERM || m->delivery_count >= (uint32_t)c->cfg.max_deliver)) {
        e = c->dead_letter ? parti__consumer_dead_letter(c, m, verdict == PARTI_TERM ? "terminated" : "max_deliver")
                           : PARTI_ERR_OK;
        if (e == PARTI_ERR_OK) {
            if (c->dead_letter) parti_counter_add(&c->metrics.consumer_dead_letters, 1);
            verdict = verdict == PARTI_TERM || !c->dead_letter ? PARTI_TERM : PARTI_ACK;
        } else {
            parti__consumer_fail(c, e, "publishing a dead letter");
            verdict = PARTI_NAK; /* kept, and tried again */
            delay = c->cfg.backoff_base_ms;
        }
    }
    m->delivery_count = saved;
    switch (verdict) {
    case PARTI_ACK:
        kind = PARTI_ACK_ACK;
        parti_counter_add(&c->metrics.consumer_messages_ack, 1);
        break;
    case PARTI_TERM:
        kind = PARTI_ACK_TERM;
        parti_counter_add(&c->metrics.consumer_messages_term, 1);
        break;
    case PARTI_IN_PROGRESS:
        parti_counter_add(&c->metrics.consumer_messages_in_progress, 1);
        kind = PARTI_ACK_IN_PROGRESS;
        delay = c->cfg.ack_wait_ms / 2;
        break;
    case PARTI_NAK:
    default: /* an unknown verdict is a failure: try again rather than lose the message */
        parti_counter_add(&c->metrics.consumer_messages_nak, 1);
        kind = PARTI_ACK_IN_PROGRESS;
        break;
    }
    /* ordered: a failed message is kept here, in progress on the server (so
     * ack_wait does not hand it out again), and its partition waits for it */
    if (!direct && (e = c->t.vt->ack(c->t.self, m, kind, 0, parti__consumer_budget(c))) != PARTI_ERR_OK)
        parti__consumer_fail(c, e, "acknowledging a message"); /* ack_wait brings it back: done before, skipped */
    if (kind == PARTI_ACK_IN_PROGRESS) {
        *retry_ms = delay;
        return 0;
    }
    return 1;
}

/* Hands partition i's held messages to the handler in order while it may:
 * its catch-up has read them, it is not waiting to retry its head, and the
 * lease holds. */
static void parti__consumer_drain(parti_consumer *c, int i) {
    parti__cpart *ps = &c->pt[i];
    int guard;
    for (guard = 0; guard < 100000 && arrlen(ps->q) > 0; guard++) {
        parti__held h = ps->q[0];
        uint32_t retry = 0;
        uint64_t now;
        if (ps->state == PARTI__P_CATCHUP && (!h.direct || h.m.stream_seq >= ps->cu_next)) break;
        if (c->group && ps->state != PARTI__P_ACTIVE && ps->state != PARTI__P_CATCHUP) break;
        now = ps->retry_at ? parti__consumer_now(c) : 0; /* (a clock read only when a retry waits) */
        if (now < ps->retry_at || c->paused || parti__consumer_lease_out(c)) break;
        if (h.m.stream_seq <= ps->pos) { /* done before (a redelivery): settle it */
            arrdel(ps->q, 0);
            parti__consumer_skip(c, &h.m, h.direct);
            continue;
        }
        h.m.partition = i;
        h.m.generation = ps->gen;
        ps->attempts++;
        if (!parti__consumer_run_handler(c, &h.m, h.direct, ps->attempts, &retry)) {
            ps->retry_at = parti__consumer_now(c) + retry;
            if (ps->retry_at < c->next_retry_at) c->next_retry_at = ps->retry_at;
            if (arrlen(ps->q) > 0 && ps->q[0].m.stream_seq == h.m.stream_seq) ps->q[0].m = h.m;
            break;
        }
        /* (the queue may have changed inside the handler only through this worker: it has not) */
        arrdel(ps->q, 0);
        if (ps->state == PARTI__P_CATCHUP) c->cu_due = 0; /* its next read may be due */
        ps->attempts = 0;
        ps->retry_at = 0;
        if (h.m.stream_seq > ps->pos) ps->pos = h.m.stream_seq;
        c->t.vt->msg_release(c->t.self, &h.m);
    }
}

/* Partition i's catch-up also covers everything up to end (0: up to the
 * stream's last sequence, read again): a tail becomes a catch-up with an
 * end again. Held durable messages it will read are given back. */
static void parti__consumer_extend_catch_up(parti_consumer *c, int i, uint64_t end) {
    parti__cpart *ps = &c->pt[i];
    int k;
    if (ps->state != PARTI__P_CATCHUP) return;
    parti__consumer_leave_tail(c, ps);
    if (!ps->cu_known) return; /* its end is read later: that covers everything up to now */
    if (!end) ps->cu_known = 0;
    else if (end > ps->cu_end) ps->cu_end = end;
    for (k = 0; k < (int)arrlen(ps->q);) {
        if (!ps->q[k].direct && (!ps->cu_known || ps->q[k].m.stream_seq <= ps->cu_end)) {
            parti__consumer_skip(c, &ps->q[k].m, 0); /* the catch-up reads it */
            arrdel(ps->q, k);
        } else {
            k++;
        }
    }
    c->cu_due = 0;
}

/* Deliveries were lost on the way (m's consumer sequence is not the next
 * one: a connection that dropped while a pull's messages were on the wire).
 * The server counts them delivered and sends them again only after
 * ack_wait, by when later messages of their partitions would have been
 * handled and they would count as done. Which partitions they belong to is
 * unknown, so every partition held is caught up again from its position by
 * reading the stream: up to m's sequence when m is a first delivery (the
 * lost ones come before it: first deliveries come in stream order), else up
 * to the stream's last sequence. */
static void parti__consumer_delivery_gap(parti_consumer *c, const parti_msg *m) {
    uint64_t end = m->delivery_count <= 1 && m->consumer_seq > c->cseq_seen && m->stream_seq ? m->stream_seq - 1 : 0;
    int i;
    parti_counter_add(&c->metrics.consumer_delivery_gaps, 1);
    parti__consumer_log(c, PARTI_LOG_WARN, "deliveries lost on the way (a gap in the consumer sequence)", PARTI_ERR_OK,
                        "catching up every partition again from the stream");
    for (i = 0; i < c->cfg.partition_count; i++) {
        parti__cpart *ps = &c->pt[i];
        uint64_t pos;
        if (ps->state == PARTI__P_CATCHUP) {
            parti__consumer_extend_catch_up(c, i, end);
            continue;
        }
        if (c->group ? ps->state != PARTI__P_ACTIVE : parti__subjects_find(&c->applied, c->psubj[i]) < 0) continue;
        /* (alone: at least the ack floor, never history the durable already settled) */
        pos = !c->group && c->ack_floor > ps->pos ? c->ack_floor : ps->pos;
        parti__consumer_catch_up_from(c, i, pos);
        if (end) {
            ps->cu_end = end > pos ? end : pos;
            ps->cu_known = 1;
        }
    }
}

/* The durable was created or made again by this process: its delivery
 * count now, so a gap in the first deliveries shows too. */
static void parti__consumer_read_base(parti_consumer *c) {
    parti_consumer_info ci;
    memset(&ci, 0, sizeof ci);
    c->cseq_known = 0;
    c->cseq_seen = 0;
    if (c->t.vt->consumer_info(c->t.self, c->cfg.stream, c->durable, &ci, parti__consumer_budget(c)) != PARTI_ERR_OK)
        return; /* the first delivery sets it */
    c->cseq_seen = ci.delivered_consumer_seq;
    c->cseq_known = 1;
    if (ci.ack_floor_stream_seq > c->ack_floor) c->ack_floor = ci.ack_floor_stream_seq;
    parti_consumer_info_free(&ci);
}

/* A message for partition i (from the durable, or a direct read): dropped
 * when done before or not this worker's, else queued in order and drained. */
static void parti__consumer_take(parti_consumer *c, parti_msg *m, int direct) {
    int i = parti__consumer_partition_of(c, m->subject), k;
    parti__cpart *ps;
    parti__held h;
    if (parti__consumer_lease_out(c)) {
        /* past the lease nothing is acked either: the durable may be another
         * process's by now (it took the ID); the message comes back after ack_wait */
        c->t.vt->msg_release(c->t.self, m);
        return;
    }
    if (!direct && m->consumer_seq) { /* (0: a transport that does not say) */
        if (c->cseq_known && m->consumer_seq != c->cseq_seen + 1) parti__consumer_delivery_gap(c, m);
        c->cseq_seen = m->consumer_seq;
        c->cseq_known = 1;
    }
    if (!direct && m->delivery_count <= 1 && m->stream_seq > c->durable_seen) {
        /* the durable's first deliveries come in stream order: it has delivered this far */
        c->durable_seen = m->stream_seq;
        if (c->tailing) parti__consumer_end_tails(c, m->num_pending == 0 ? m->stream_seq : 0);
    }
    if (i < 0) { /* no partition's subject: handled as it is (cannot come from a filter parti built) */
        uint32_t retry;
        m->partition = -1;
        m->generation = 0;
        if (!parti__consumer_lease_out(c)) {
            parti_counter_add(&c->metrics.consumer_foreign_redeliveries, 1);
            parti__consumer_run_handler(c, m, direct, 1, &retry);
        }
        c->t.vt->msg_release(c->t.self, m);
        return;
    }
    ps = &c->pt[i];
    if (c->group ? (ps->state != PARTI__P_ACTIVE && ps->state != PARTI__P_CATCHUP) : 0) {
        parti__consumer_skip(c, m, direct); /* another worker's (it reads it from the stream) */
        return;
    }
    if (!c->group && parti__subjects_find(&c->applied, c->psubj[i]) < 0)
        parti_counter_add(&c->metrics.consumer_foreign_redeliveries, 1); /* processed all the same */
    if (m->stream_seq <= ps->pos || (ps->state == PARTI__P_CATCHUP && !direct && ps->cu_known &&
                                     m->stream_seq <= ps->cu_end)) {
        parti__consumer_skip(c, m, direct); /* done before, or the catch-up reads it */
        return;
    }
    /* in order, one per sequence (a redelivery replaces the copy held: its reply is the current one) */
    for (k = (int)arrlen(ps->q); k > 0 && ps->q[k - 1].m.stream_seq > m->stream_seq; k--) {
    }
    if (k > 0 && ps->q[k - 1].m.stream_seq == m->stream_seq) {
        if (direct || !ps->q[k - 1].direct) {
            c->t.vt->msg_release(c->t.self, &ps->q[k - 1].m);
            ps->q[k - 1].m = *m;
            ps->q[k - 1].direct = direct;
        } else {
            parti__consumer_skip(c, m, 0); /* the catch-up has it */
        }
    } else {
        h.m = *m;
        h.direct = direct;
        arrins(ps->q, k, h);
    }
    parti__consumer_drain(c, i);
}

/* Reads the stream's last sequence for the partitions whose catch-up waits
 * for it: only once their subjects are in the filter on the server (then
 * every later message comes through the durable). */
static void parti__consumer_read_ends(parti_consumer *c, uint64_t now) {
    parti_stream_info si;
    parti_err e;
    int i, k, any = 0;
    if (!c->catching_up || c->has_pending || !c->exists || c->need_recreate || now < c->cu_retry_at) return;
    for (i = 0; i < c->cfg.partition_count && !any; i++)
        any = c->pt[i].state == PARTI__P_CATCHUP && !c->pt[i].cu_known &&
              parti__subjects_find(&c->applied, c->psubj[i]) >= 0;
    if (!any) return;
    memset(&si, 0, sizeof si);
    if (!c->t.vt->stream_info) {
        e = PARTI_ERR_UNSUPPORTED;
    } else if ((e = c->t.vt->stream_info(c->t.self, c->cfg.stream, &si, parti__consumer_budget(c))) == PARTI_ERR_OK) {
        uint64_t last = si.last_seq;
        parti__consumer_saw_stream(c, si.created_ns);
        parti_stream_info_free(&si);
        for (i = 0; i < c->cfg.partition_count; i++) {
            parti__cpart *ps = &c->pt[i];
            if (ps->state != PARTI__P_CATCHUP || ps->cu_known || parti__subjects_find(&c->applied, c->psubj[i]) < 0)
                continue;
            ps->cu_end = last;
            ps->cu_known = 1;
            c->cu_due = 0;
            /* durable messages held meanwhile that the catch-up reads */
            for (k = 0; k < (int)arrlen(ps->q);) {
                if (!ps->q[k].direct && ps->q[k].m.stream_seq <= last) {
                    parti__consumer_skip(c, &ps->q[k].m, 0);
                    arrdel(ps->q, k);
                } else {
                    k++;
                }
            }
            if (ps->cu_next > last) {
                parti__consumer_caught_up(c, i);
                parti__consumer_drain(c, i);
            }
        }
        return;
    }
    parti__consumer_catch_up_failed(c, e, "reading the stream's last sequence for a catch-up", now);
}

/* When a catch-up next has a read to do (now or earlier: now; NO_TIME:
 * nothing until something changes). Remembered in cu_due until a change
 * that can make a read due sets it to 0, so the poll loop does not look at
 * every partition for every message while a tail lasts. */
static uint64_t parti__consumer_catch_up_due(parti_consumer *c, uint64_t now) {
    uint64_t due = PARTI__CONSUMER_NO_TIME;
    int i;
    if (!c->catching_up || c->paused || c->need_recreate || c->stream_lost) return PARTI__CONSUMER_NO_TIME;
    if (now < c->cu_retry_at) return c->cu_retry_at;
    if (c->tailing && c->tail_check_at < due) due = c->tail_check_at;
    if (c->cu_due > now) return c->cu_due < due ? c->cu_due : due;
    for (i = 0; i < c->cfg.partition_count && due > now; i++) {
        const parti__cpart *ps = &c->pt[i];
        if (ps->state != PARTI__P_CATCHUP || !ps->cu_known) continue;
        if (parti__consumer_direct_held(ps)) continue; /* until its read is handled */
        if (!ps->tail || ps->tail_at <= now) return now;
        if (ps->tail_at < due) due = ps->tail_at;
    }
    c->cu_due = due;
    return due;
}

/* A catch-up read not handed over yet: a message, or "nothing more of the
 * partition up to its end" (end). from: the sequence the read started at. */
typedef struct parti__cu_read {
    int i, end, tail; /* tail: a tail's read */
    uint64_t from;
    parti_msg m;
} parti__cu_read;

#define PARTI__CU_TURN 16 /* catch-up reads per turn of the poll loop */

/* The reads of one catch-up turn, none handed over yet: up to
 * PARTI__CU_TURN, each the next message of a partition that waits for one
 * (counting its reads earlier in the turn). The number of entries in r;
 * *reads: how many went to the server; *err: the error of a failed read. */
static int parti__consumer_catch_up_read(parti_consumer *c, uint64_t now, parti__cu_read *r, int *reads,
                                         parti_err *err) {
    int n = 0, i, k;
    *reads = 0;
    *err = PARTI_ERR_OK;
    /* (not while the stream is missing: the one read next may be another,
     * whose identity the recreation reads first) */
    if (parti__consumer_catch_up_due(c, now) > now) return 0;
    while (n < PARTI__CU_TURN) {
        parti__cpart *ps = NULL;
        uint64_t from = 0;
        int found = -1, seen = 0, j;
        parti_err e;
        /* (round robin from where the last read left off: a tail that always
         * finds a message must not starve the others) */
        for (j = 0; j < c->cfg.partition_count && found < 0; j++) {
            int done = 0;
            i = (c->cu_cursor + j) % c->cfg.partition_count;
            ps = &c->pt[i];
            if (ps->state != PARTI__P_CATCHUP || !ps->cu_known || (ps->tail && ps->tail_at > now)) continue;
            if (parti__consumer_direct_held(ps)) continue; /* its last read is not handled yet (a retry waits) */
            from = ps->cu_next;
            for (k = 0, seen = 0; k < n; k++) {
                if (r[k].i != i) continue;
                seen = 1;
                if (r[k].end) done = 1;
                else from = r[k].m.stream_seq + 1;
            }
            /* past its end: the last read's handling ends the catch-up, else no read is needed to
             * (a tail has no end: it reads until nothing is there) */
            if (!done && !(seen && from > ps->cu_end && !ps->tail)) found = i;
        }
        if (found < 0) break;
        c->cu_cursor = (found + 1) % c->cfg.partition_count;
        ps = &c->pt[found];
        r[n].i = found;
        r[n].from = from;
        r[n].end = 1;
        r[n].tail = ps->tail;
        memset(&r[n].m, 0, sizeof r[n].m);
        if (from > ps->cu_end && !ps->tail) { /* nothing to read */
            n++;
            continue;
        }
        if (parti__consumer_lease_out(c)) break;
        e = c->t.vt->stream_get_next ? c->t.vt->stream_get_next(c->t.self, c->cfg.stream, c->psubj[found], from,
                                                                &r[n].m, parti__consumer_budget(c))
                                     : PARTI_ERR_UNSUPPORTED;
        if (e == PARTI_ERR_OK || e == PARTI_ERR_NO_MESSAGES) ++*reads;
        if (e == PARTI_ERR_OK && parti__consumer_lease_out(c)) {
            /* the lease ran out during the read: it is not taken, and the
             * read position stays (a later owner reads it again) */
            c->t.vt->msg_release(c->t.self, &r[n].m);
            break;
        }
        if (e == PARTI_ERR_OK && r[n].m.stream_seq >= from && (r[n].m.stream_seq <= ps->cu_end || ps->tail)) {
            r[n++].end = 0;
            continue;
        }
        if (e == PARTI_ERR_OK) c->t.vt->msg_release(c->t.self, &r[n].m);
        if (e == PARTI_ERR_OK || e == PARTI_ERR_NO_MESSAGES) { /* nothing more up to the end */
            memset(&r[n].m, 0, sizeof r[n].m);
            n++;
            continue;
        }
        *err = e;
        break;
    }
    return n;
}

/* Tails: when the durable has nothing pending, everything its filter
 * matches was delivered (what is on the way arrives in order) and every
 * later message will be: the tails end. Read at the start of each tail
 * and then less often while the durable works through its backlog. 1 when
 * the tails ended. */
static int parti__consumer_tail_check(parti_consumer *c, uint64_t now) {
    parti_consumer_info ci;
    uint64_t pending;
    parti_err e;
    if (c->paused || c->need_recreate || c->stream_lost || !c->exists) return 0;
    c->tail_check_at = now + c->tail_check_wait;
    c->tail_check_wait = parti__consumer_double_capped(c->tail_check_wait, PARTI__TAIL_CHECK_MAX_MS);
    memset(&ci, 0, sizeof ci);
    if ((e = c->t.vt->consumer_info(c->t.self, c->cfg.stream, c->durable, &ci, parti__consumer_budget(c))) !=
        PARTI_ERR_OK)
        return 0; /* the tails read on; the existence check deals with a missing durable */
    pending = ci.num_pending;
    parti_consumer_info_free(&ci);
    if (pending != 0 || parti__consumer_lease_out(c)) return 0;
    parti__consumer_end_tails(c, PARTI__CONSUMER_NO_TIME);
    return 1;
}

/* One turn of the catch-ups: the reads, then the stream's identity, then
 * the messages to the handler, in order. A read cannot tell which stream
 * answered it: one deleted and made again under the name restarts its
 * sequences, and a check before the reads may be long out of date by the
 * time one is made (the handler runs between them). A check after the reads
 * that finds the stream the positions count in means every read was
 * answered by it (a stream, once gone, never comes back); otherwise nothing
 * read is handed over (a new stream: its partitions start from its
 * beginning; no answer: read again later). 1 when it did something. */
static int parti__consumer_catch_up_turn(parti_consumer *c, uint64_t now, uint64_t deadline) {
    parti__cu_read r[PARTI__CU_TURN];
    parti_err e, re;
    int n, reads, k, handed = 0, full;
    uint64_t before = c->stream_created, created = 0, budget = deadline > now ? deadline - now : 0, hand_start = 0;
    if (c->tailing && now >= c->tail_check_at && parti__consumer_tail_check(c, now)) return 1;
    n = parti__consumer_catch_up_read(c, now, r, &reads, &re);
    if (reads > 0 && before && c->t.vt->stream_info) {
        e = parti__consumer_check_stream(c, &created);
        if (e != PARTI_ERR_OK || (created && created != before)) {
            for (k = 0; k < n; k++)
                if (!r[k].end) c->t.vt->msg_release(c->t.self, &r[k].m);
            if (e != PARTI_ERR_OK)
                parti__consumer_catch_up_failed(c, e, "checking the stream after catch-up reads", parti__consumer_now(c));
            return 1;
        }
    }
    for (k = 0; k < n; k++) {
        parti__cpart *ps = &c->pt[r[k].i];
        int i = r[k].i;
        /* (a read whose partition moved on since: an earlier one of the turn
         * was not taken; in a group, once the handler has had as long as
         * the poll's slice, after one message: slow handlers must not hold
         * off the renewals, which run between polls; what is left is read
         * again next turn) */
        if (ps->state != PARTI__P_CATCHUP || !ps->cu_known || ps->cu_next != r[k].from ||
            (!r[k].end && (parti__consumer_lease_out(c) ||
                           (c->group && handed > 0 && parti__consumer_now(c) >= hand_start + budget)))) {
            if (!r[k].end) c->t.vt->msg_release(c->t.self, &r[k].m);
            continue;
        }
        if (!r[k].end) {
            parti_counter_add(&c->metrics.consumer_catch_up_reads, 1);
            ps->cu_next = r[k].m.stream_seq + 1;
            if (ps->tail) { /* read on at once; the durable's deliveries of P up to here are done */
                ps->cu_end = r[k].m.stream_seq;
                ps->tail_at = 0;
                ps->tail_wait = PARTI__TAIL_POLL_MIN_MS;
            }
            if (!handed++) hand_start = parti__consumer_now(c);
            parti__consumer_take(c, &r[k].m, 1);
            if (ps->state == PARTI__P_CATCHUP && ps->cu_next > ps->cu_end && !arrlen(ps->q)) {
                parti__consumer_caught_up(c, i);
                parti__consumer_drain(c, i);
            }
            continue;
        }
        if (ps->tail) { /* nothing of P after cu_end yet: read again later, less often each time */
            ps->tail_at = parti__consumer_now(c) + ps->tail_wait;
            ps->tail_wait = parti__consumer_double_capped(ps->tail_wait, PARTI__TAIL_POLL_MAX_MS);
            continue;
        }
        ps->cu_next = ps->cu_end + 1;
        if (!parti__consumer_direct_held(ps)) {
            parti__consumer_caught_up(c, i);
            parti__consumer_drain(c, i);
        }
    }
    if (re != PARTI_ERR_OK)
        parti__consumer_catch_up_failed(c, re, "reading a partition's messages from the stream (catch-up)",
                                        parti__consumer_now(c));
    /* A tail reads one message per request, and the durable takes one
     * message per turn of the poll loop. Tails that find a message with
     * every read of a full turn are behind their partitions' own rates:
     * reading on, they hold the durable back (it falls behind the others'
     * rate, never reaches them, and they never end). After a few such turns
     * in a row the tails read in the last one end: the durable takes their
     * partitions, whose messages then wait behind its backlog, as they would
     * without tails. */
    for (k = 0, full = n == PARTI__CU_TURN; k < n && full; k++) full = r[k].tail && !r[k].end;
    c->tail_full_turns = full ? c->tail_full_turns + 1 : 0;
    if (c->tail_full_turns >= PARTI__TAIL_FULL_TURNS) {
        c->tail_full_turns = 0;
        for (k = 0; k < n; k++) {
            parti__cpart *ps = &c->pt[r[k].i];
            if (ps->state != PARTI__P_CATCHUP || !ps->tail) continue;
            parti__consumer_end_tail(c, r[k].i);
            if (arrlen(ps->q)) parti__consumer_drain(c, r[k].i);
        }
    }
    c->cu_due = 0;
    return n > 0;
}

/* Drains every partition whose head is due to be tried again (a scan only
 * when the earliest retry is due). */
static void parti__consumer_retry_due(parti_consumer *c, uint64_t now) {
    uint64_t t = PARTI__CONSUMER_NO_TIME;
    int i;
    if (now < c->next_retry_at) return;
    c->next_retry_at = PARTI__CONSUMER_NO_TIME;
    for (i = 0; i < c->cfg.partition_count; i++) {
        parti__cpart *ps = &c->pt[i];
        if (!arrlen(ps->q) || !ps->retry_at) continue;
        if (now >= ps->retry_at) parti__consumer_drain(c, i);
        if (arrlen(ps->q) > 0 && ps->retry_at && ps->retry_at < t) t = ps->retry_at;
    }
    if (t < c->next_retry_at) c->next_retry_at = t;
}

enum { PARTI__PULL_IDLE = 0, PARTI__PULL_WAITED, PARTI__PULL_HANDLED };

/* One step of pulling: start a pull if none is pending, wait for its next
 * message no later than deadline or the next control-plane work, handle it. */
static int parti__consumer_pull_step(parti_consumer *c, uint64_t now, uint64_t deadline) {
    uint64_t until = parti__consumer_next_due(c), wait, cu;
    parti_msg m;
    parti_err e;
    if (!c->exists || c->paused || c->need_recreate || c->need_refresh) return PARTI__PULL_IDLE;
    if (!c->fetch_active) {
        parti_fetch_opts fo;
        if (now < c->pull_retry_at) return PARTI__PULL_IDLE;
        fo.batch = c->pull_unlimited ? 1 : c->cfg.fetch_batch;
        fo.max_bytes = c->pull_unlimited ? 0 : c->cfg.fetch_max_bytes;
        fo.expires_ms = c->cfg.fetch_expires_ms;
        fo.heartbeat_ms = c->cfg.fetch_heartbeat_ms;
        if ((e = c->t.vt->fetch_start(c->t.self, c->cfg.stream, c->durable, &fo, parti__consumer_budget(c))) !=
            PARTI_ERR_OK) {
            parti__consumer_pull_failed(c, now, e);
            return PARTI__PULL_IDLE;
        }
        c->fetch_active = 1;
        c->pull_unlimited = 0;
    }
    if (deadline < until) until = deadline;
    if (c->next_retry_at < until) until = c->next_retry_at;
    cu = parti__consumer_catch_up_due(c, now); /* a catch-up has reads to do: no waiting past them */
    if (cu < until) until = cu < now ? now : cu;
    wait = until > now ? until - now : 0;
    if (wait > 0xFFFFFFFFu) wait = 0xFFFFFFFFu;
    memset(&m, 0, sizeof m);
    e = c->t.vt->fetch_next(c->t.self, c->cfg.stream, c->durable, &m, (uint32_t)wait);
    switch (e) {
    case PARTI_ERR_OK:
        parti__consumer_pull_ok(c);
        parti__consumer_take(c, &m, 0);
        return PARTI__PULL_HANDLED;
    case PARTI_ERR_TIMEOUT: /* still pending; time went by unless the transport cannot wait */
        return parti__consumer_now(c) > now ? PARTI__PULL_WAITED : PARTI__PULL_IDLE;
    case PARTI_ERR_NO_MESSAGES: /* the pull ran its course */
        c->fetch_active = 0;
        parti__consumer_pull_ok(c);
        return PARTI__PULL_WAITED;
    case PARTI_ERR_MESSAGE_TOO_LARGE: /* it would block the partition for ever: take it alone, with no limit */
        c->fetch_active = 0;
        c->pull_unlimited = 1;
        parti_counter_add(&c->metrics.consumer_oversized_messages, 1);
        parti__consumer_fail(c, e, "pulling: a message is larger than fetch_max_bytes, taking it alone without the limit");
        return PARTI__PULL_WAITED;
    case PARTI_ERR_CONSUMER_DELETED:
        c->fetch_active = 0;
        c->need_recreate = 1;
        parti_counter_add(&c->metrics.consumer_pull_restarts, 1);
        parti__consumer_fail(c, e, "pulling");
        return PARTI__PULL_WAITED;
    case PARTI_ERR_NO_RESPONDERS: /* no such consumer, or JetStream unavailable: let the check decide */
        parti__consumer_pull_failed(c, now, e);
        c->next_info_check = now;
        return PARTI__PULL_WAITED;
    default:
        parti__consumer_pull_failed(c, now, e);
        return PARTI__PULL_WAITED;
    }
}

/* The earliest moment something can be done when no pull is pending: a
 * timer of the control plane, the pull restart, the existence check, or the
 * deadline. */
static uint64_t parti__consumer_wake(parti_consumer *c, uint64_t deadline) {
    uint64_t t = parti__consumer_next_due(c), cu = parti__consumer_catch_up_due(c, parti__consumer_now(c));
    if (deadline < t) t = deadline;
    if (c->next_retry_at < t) t = c->next_retry_at;
    if (cu < t) t = cu;
    if (c->exists && !c->fetch_active) {
        if (c->next_info_check < t) t = c->next_info_check;
        if (!c->paused && !c->need_recreate && !c->need_refresh && c->pull_retry_at < t) t = c->pull_retry_at;
    }
    return t;
}

static parti_err parti__consumer_poll_until(parti_consumer *c, uint64_t now, uint64_t deadline);

PARTIDEF parti_err parti_consumer_poll(parti_consumer *c, uint32_t timeout_ms) {
    uint64_t now, outer;
    parti_err e;
    if (!c) return PARTI_ERR_INVALID_ARGUMENT;
    if (c->failed) return c->failed;
    now = parti__consumer_now(c);
    outer = c->call_deadline; /* a group's poll may have set a budget already */
    c->call_deadline = now + timeout_ms + c->opts.op_timeout_ms;
    if (outer && outer < c->call_deadline) c->call_deadline = outer;
    e = parti__consumer_poll_until(c, now, now + timeout_ms);
    c->call_deadline = outer;
    if (c->t.vt->flush) c->t.vt->flush(c->t.self); /* no ack waits for a later call */
    return e;
}

static parti_err parti__consumer_poll_until(parti_consumer *c, uint64_t now, uint64_t deadline) {
    int guard, handled = 0;
    for (guard = 0; guard < 100000 && !c->failed; guard++) {
        int r, cu;
        parti__consumer_run_due(c, now);
        parti__consumer_read_ends(c, now);
        parti__consumer_retry_due(c, now);
        /* catch-ups read a few messages per turn, so the durable's partitions
         * keep flowing; what a turn read is handed over only once the stream
         * is found to be still the one the positions count in */
        if (c->catching_up || c->tailing) {
            cu = parti__consumer_catch_up_turn(c, parti__consumer_now(c), deadline);
        } else { /* (what a turn with no catch-up does, without its clock read) */
            cu = 0;
            c->cu_due = 0;
            c->tail_full_turns = 0;
        }
        r = parti__consumer_pull_step(c, parti__consumer_now(c), deadline);
        if (r == PARTI__PULL_IDLE && cu) r = PARTI__PULL_WAITED;
        now = parti__consumer_now(c);
        if (r == PARTI__PULL_IDLE) {
            /* nothing to pull now: wait for the next timer rather than spin */
            uint64_t wake = parti__consumer_wake(c, deadline);
            if (now >= deadline || !c->t.vt->sleep_ms) break;
            c->t.vt->sleep_ms(c->t.self, (uint32_t)(wake > now ? wake - now : 1));
            now = parti__consumer_now(c);
            continue;
        }
        if (r == PARTI__PULL_HANDLED) handled++;
        /* past the deadline, keep taking messages that are already there, up
         * to one batch (not in a group: its renewals come first) */
        if (now >= deadline && (r != PARTI__PULL_HANDLED || handled >= c->cfg.fetch_batch || c->group)) break;
    }
    return c->failed; /* PARTI_ERR_OK unless fail_fast stopped it */
}

PARTIDEF const parti_subjects *parti_consumer_subjects(const parti_consumer *c) {
    if (!c) return NULL;
    return c->paused ? &c->none : &c->applied;
}

PARTIDEF int parti_consumer_is_paused(const parti_consumer *c) { return c ? c->paused : 0; }

PARTIDEF const char *parti_consumer_durable(const parti_consumer *c) { return c ? c->durable : ""; }

PARTIDEF parti_err parti_consumer_last_error(const parti_consumer *c) {
    return c ? c->last_err : PARTI_ERR_INVALID_ARGUMENT;
}

PARTIDEF const char *parti_consumer_last_message(const parti_consumer *c) { return c ? c->last_msg : ""; }

PARTIDEF parti_err parti_consumer_health(const parti_consumer *c, parti_health *out) {
    if (!c || !out) return PARTI_ERR_INVALID_ARGUMENT;
    out->live = 1;
    out->degraded = c->unhealthy || c->need_recreate;
    out->ready = c->exists && !out->degraded;
    out->last_error = c->last_err;
    out->last_error_category = parti_error_category(c->last_err);
    out->last_error_ms = c->last_err_ms;
    out->last_error_message = c->last_msg;
    return PARTI_ERR_OK;
}

PARTIDEF const parti_metrics *parti_consumer_metrics(const parti_consumer *c) { return c ? &c->metrics : NULL; }

/* ---- circuit breaker ------------------------------------------------------ */

struct parti_breaker {
    parti_breaker_options o;
    parti_transport inner;
    parti_transport_vtable vt;
    parti_breaker_state state;
    int failures;
    uint64_t opened_at, opens, fast;
};

PARTIDEF const char *parti_breaker_state_name(parti_breaker_state s) {
    return s == PARTI_BREAKER_OPEN ? "open" : s == PARTI_BREAKER_HALF_OPEN ? "half_open" : "closed";
}

PARTIDEF int parti_breaker_is_failure(parti_err e) {
    return e == PARTI_ERR_TIMEOUT || e == PARTI_ERR_NOT_CONNECTED || e == PARTI_ERR_NO_RESPONDERS ||
           e == PARTI_ERR_SERVER_SHUTDOWN;
}

static void parti__breaker_move(parti_breaker *b, parti_breaker_state to, uint64_t now) {
    parti_breaker_state from = b->state;
    if (from == to) return;
    b->state = to;
    if (to == PARTI_BREAKER_OPEN) {
        b->opened_at = now;
        b->opens++;
    }
    if (to == PARTI_BREAKER_CLOSED) b->failures = 0;
    if (b->o.on_change) b->o.on_change(b->o.user, from, to);
}

/* 1: the call may go (in half-open: it is the probe). */
static int parti__breaker_allow(parti_breaker *b) {
    uint64_t now;
    if (b->state == PARTI_BREAKER_CLOSED) return 1;
    now = b->inner.vt->now_ms(b->inner.self);
    if (b->state == PARTI_BREAKER_OPEN && now - b->opened_at >= b->o.open_ms) {
        parti__breaker_move(b, PARTI_BREAKER_HALF_OPEN, now);
        return 1;
    }
    b->fast++;
    return 0; /* open, or half-open with the probe out */
}

static parti_err parti__breaker_record(parti_breaker *b, parti_err e) {
    uint64_t now = b->inner.vt->now_ms(b->inner.self);
    if (parti_breaker_is_failure(e)) {
        b->failures++;
        if (b->state == PARTI_BREAKER_HALF_OPEN ||
            (b->state == PARTI_BREAKER_CLOSED && b->failures >= b->o.failure_threshold))
            parti__breaker_move(b, PARTI_BREAKER_OPEN, now);
    } else {
        b->failures = 0;
        if (b->state == PARTI_BREAKER_HALF_OPEN) parti__breaker_move(b, PARTI_BREAKER_CLOSED, now);
    }
    return e;
}

static parti_err parti__breaker_stream_create(void *self, const parti_stream_config *cfg, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->stream_create) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->stream_create(b->inner.self, cfg, timeout_ms));
}

static parti_err parti__breaker_stream_info(void *self, const char *stream, parti_stream_info *out, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->stream_info) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->stream_info(b->inner.self, stream, out, timeout_ms));
}

static parti_err parti__breaker_stream_delete(void *self, const char *stream, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->stream_delete) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->stream_delete(b->inner.self, stream, timeout_ms));
}

static parti_err parti__breaker_kv_open(void *self, const parti_kv_config *cfg, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_open) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_open(b->inner.self, cfg, timeout_ms));
}

static parti_err parti__breaker_kv_create(void *self, const char *bucket, const char *key, const void *value, size_t len, uint64_t *revision, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_create) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_create(b->inner.self, bucket, key, value, len, revision, timeout_ms));
}

static parti_err parti__breaker_kv_update(void *self, const char *bucket, const char *key, const void *value, size_t len, uint64_t expected, uint64_t *revision, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_update) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_update(b->inner.self, bucket, key, value, len, expected, revision, timeout_ms));
}

static parti_err parti__breaker_kv_put(void *self, const char *bucket, const char *key, const void *value, size_t len, uint64_t *revision, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_put) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_put(b->inner.self, bucket, key, value, len, revision, timeout_ms));
}

static parti_err parti__breaker_kv_get(void *self, const char *bucket, const char *key, uint64_t revision, parti_kv_entry *out, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_get) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_get(b->inner.self, bucket, key, revision, out, timeout_ms));
}

static parti_err parti__breaker_kv_delete(void *self, const char *bucket, const char *key, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_delete) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_delete(b->inner.self, bucket, key, timeout_ms));
}

static parti_err parti__breaker_kv_keys(void *self, const char *bucket, char ***keys, int *count, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_keys) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_keys(b->inner.self, bucket, keys, count, timeout_ms));
}

static parti_err parti__breaker_kv_watch(void *self, const char *bucket, const char *prefix, parti_kv_watcher **out, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_watch) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_watch(b->inner.self, bucket, prefix, out, timeout_ms));
}

static parti_err parti__breaker_consumer_upsert(void *self, const parti_consumer_config *cfg, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->consumer_upsert) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->consumer_upsert(b->inner.self, cfg, timeout_ms));
}

static parti_err parti__breaker_consumer_info(void *self, const char *stream, const char *durable, parti_consumer_info *out, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->consumer_info) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->consumer_info(b->inner.self, stream, durable, out, timeout_ms));
}

static parti_err parti__breaker_consumer_delete(void *self, const char *stream, const char *durable, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->consumer_delete) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->consumer_delete(b->inner.self, stream, durable, timeout_ms));
}

static parti_err parti__breaker_fetch_start(void *self, const char *stream, const char *durable, const parti_fetch_opts *opts, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->fetch_start) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->fetch_start(b->inner.self, stream, durable, opts, timeout_ms));
}

static parti_err parti__breaker_publish(void *self, const char *subject, const parti_header *headers, int header_count, const void *data, size_t len, parti_pub_ack *ack, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->publish) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->publish(b->inner.self, subject, headers, header_count, data, len, ack, timeout_ms));
}

static uint64_t parti__breaker_now_ms(void *self) {
    parti_breaker *b = (parti_breaker *)self;
    return b->inner.vt->now_ms(b->inner.self);
}

static uint64_t parti__breaker_random(void *self) {
    parti_breaker *b = (parti_breaker *)self;
    return b->inner.vt->random(b->inner.self);
}

static parti_err parti__breaker_kv_watch_next(void *self, parti_kv_watcher *w, parti_kv_entry *out) {
    parti_breaker *b = (parti_breaker *)self;
    return b->inner.vt->kv_watch_next ? b->inner.vt->kv_watch_next(b->inner.self, w, out) : PARTI_ERR_UNSUPPORTED;
}

static void parti__breaker_kv_watch_stop(void *self, parti_kv_watcher *w) {
    parti_breaker *b = (parti_breaker *)self;
    if (b->inner.vt->kv_watch_stop) b->inner.vt->kv_watch_stop(b->inner.self, w);
}

static parti_err parti__breaker_fetch_next(void *self, const char *stream, const char *durable, parti_msg *out,
                                           uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->fetch_next) return PARTI_ERR_UNSUPPORTED;
    return b->inner.vt->fetch_next(b->inner.self, stream, durable, out, timeout_ms);
}

static parti_err parti__breaker_ack(void *self, const parti_msg *m, parti_ack_kind kind, uint32_t delay_ms,
                                    uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    return b->inner.vt->ack ? b->inner.vt->ack(b->inner.self, m, kind, delay_ms, timeout_ms) : PARTI_ERR_UNSUPPORTED;
}

static void parti__breaker_msg_release(void *self, parti_msg *m) {
    parti_breaker *b = (parti_breaker *)self;
    if (b->inner.vt->msg_release) b->inner.vt->msg_release(b->inner.self, m);
}

static parti_err parti__breaker_kv_delete_if(void *self, const char *bucket, const char *key, uint64_t expected,
                                             uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->kv_delete_if) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->kv_delete_if(b->inner.self, bucket, key, expected, timeout_ms));
}

static parti_err parti__breaker_stream_get_next(void *self, const char *stream, const char *filter, uint64_t from_seq,
                                                parti_msg *out, uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (!b->inner.vt->stream_get_next) return PARTI_ERR_UNSUPPORTED;
    if (!parti__breaker_allow(b)) return PARTI_ERR_CIRCUIT_OPEN;
    return parti__breaker_record(b, b->inner.vt->stream_get_next(b->inner.self, stream, filter, from_seq, out, timeout_ms));
}

static void parti__breaker_sleep_ms(void *self, uint32_t ms) {
    parti_breaker *b = (parti_breaker *)self;
    if (b->inner.vt->sleep_ms) b->inner.vt->sleep_ms(b->inner.self, ms);
}

static void parti__breaker_kv_update_many(void *self, const char *bucket, parti_kv_update *u, int n,
                                          uint32_t timeout_ms) {
    parti_breaker *b = (parti_breaker *)self;
    int i;
    if (!parti__breaker_allow(b)) {
        for (i = 0; i < n; i++) u[i].err = PARTI_ERR_CIRCUIT_OPEN;
        return;
    }
    b->inner.vt->kv_update_many(b->inner.self, bucket, u, n, timeout_ms);
    for (i = 0; i < n; i++) parti__breaker_record(b, u[i].err);
}

static void parti__breaker_flush(void *self) {
    parti_breaker *b = (parti_breaker *)self;
    if (b->inner.vt->flush) b->inner.vt->flush(b->inner.self);
}

static int parti__breaker_connected(void *self) {
    parti_breaker *b = (parti_breaker *)self;
    return b->inner.vt->connected ? b->inner.vt->connected(b->inner.self) : b->state != PARTI_BREAKER_OPEN;
}

PARTIDEF parti_err parti_breaker_wrap(parti_breaker **out, parti_transport *wrapped, const parti_transport *inner,
                                      const parti_breaker_options *opts) {
    parti_breaker *b;
    if (out) *out = NULL;
    if (!out || !wrapped || !inner || !inner->vt || !inner->vt->now_ms || !inner->vt->random) return PARTI_ERR_INVALID_ARGUMENT;
    if (opts && (opts->failure_threshold < 0)) return PARTI_ERR_INVALID_ARGUMENT;
    if (!(b = (parti_breaker *)PARTI_MALLOC(sizeof *b))) return PARTI_ERR_NOMEM;
    memset(b, 0, sizeof *b);
    if (opts) b->o = *opts;
    if (!b->o.failure_threshold) b->o.failure_threshold = 5;
    if (!b->o.open_ms) b->o.open_ms = 5000;
    b->inner = *inner;
    b->vt.now_ms = parti__breaker_now_ms;
    b->vt.random = parti__breaker_random;
    b->vt.stream_create = inner->vt->stream_create ? parti__breaker_stream_create : NULL;
    b->vt.stream_info = inner->vt->stream_info ? parti__breaker_stream_info : NULL;
    b->vt.stream_delete = inner->vt->stream_delete ? parti__breaker_stream_delete : NULL;
    b->vt.kv_open = inner->vt->kv_open ? parti__breaker_kv_open : NULL;
    b->vt.kv_create = inner->vt->kv_create ? parti__breaker_kv_create : NULL;
    b->vt.kv_update = inner->vt->kv_update ? parti__breaker_kv_update : NULL;
    b->vt.kv_put = inner->vt->kv_put ? parti__breaker_kv_put : NULL;
    b->vt.kv_get = inner->vt->kv_get ? parti__breaker_kv_get : NULL;
    b->vt.kv_delete = inner->vt->kv_delete ? parti__breaker_kv_delete : NULL;
    b->vt.kv_delete_if = inner->vt->kv_delete_if ? parti__breaker_kv_delete_if : NULL;
    b->vt.kv_keys = inner->vt->kv_keys ? parti__breaker_kv_keys : NULL;
    b->vt.kv_watch = inner->vt->kv_watch ? parti__breaker_kv_watch : NULL;
    b->vt.consumer_upsert = inner->vt->consumer_upsert ? parti__breaker_consumer_upsert : NULL;
    b->vt.consumer_info = inner->vt->consumer_info ? parti__breaker_consumer_info : NULL;
    b->vt.consumer_delete = inner->vt->consumer_delete ? parti__breaker_consumer_delete : NULL;
    b->vt.fetch_start = inner->vt->fetch_start ? parti__breaker_fetch_start : NULL;
    b->vt.publish = inner->vt->publish ? parti__breaker_publish : NULL;
    b->vt.kv_watch_next = inner->vt->kv_watch_next ? parti__breaker_kv_watch_next : NULL;
    b->vt.kv_watch_stop = inner->vt->kv_watch_stop ? parti__breaker_kv_watch_stop : NULL;
    b->vt.fetch_next = inner->vt->fetch_next ? parti__breaker_fetch_next : NULL;
    b->vt.ack = inner->vt->ack ? parti__breaker_ack : NULL;
    b->vt.msg_release = inner->vt->msg_release ? parti__breaker_msg_release : NULL;
    b->vt.sleep_ms = inner->vt->sleep_ms ? parti__breaker_sleep_ms : NULL;
    b->vt.connected = parti__breaker_connected;
    b->vt.stream_get_next = inner->vt->stream_get_next ? parti__breaker_stream_get_next : NULL;
    b->vt.flush = inner->vt->flush ? parti__breaker_flush : NULL;
    b->vt.kv_update_many = inner->vt->kv_update_many ? parti__breaker_kv_update_many : NULL;
    wrapped->vt = &b->vt;
    wrapped->self = b;
    *out = b;
    return PARTI_ERR_OK;
}

PARTIDEF void parti_breaker_free(parti_breaker *b) { PARTI_FREE(b); }
PARTIDEF parti_breaker_state parti_breaker_state_of(const parti_breaker *b) { return b ? b->state : PARTI_BREAKER_CLOSED; }
PARTIDEF uint64_t parti_breaker_fast_failures(const parti_breaker *b) { return b ? b->fast : 0; }
PARTIDEF uint64_t parti_breaker_opens(const parti_breaker *b) { return b ? b->opens : 0; }


/* ======================================================================== */
/* Assignment: implementation                                                */
/* ======================================================================== */


/* ---- exact 64 x 64 -> 128-bit arithmetic -------------------------------- */

static void parti__mul128(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo) {
    uint64_t a0 = a & 0xFFFFFFFFu, a1 = a >> 32, b0 = b & 0xFFFFFFFFu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xFFFFFFFFu) + (p10 & 0xFFFFFFFFu);
    *lo = (mid << 32) | (p00 & 0xFFFFFFFFu);
    *hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

/* -1, 0 or 1 as a * b compares with c * d, exactly. */
static int parti__cmp_products(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t h1, l1, h2, l2;
    if (((a | b | c | d) >> 32) == 0) return (a * b > c * d) - (a * b < c * d);
    parti__mul128(a, b, &h1, &l1);
    parti__mul128(c, d, &h2, &l2);
    if (h1 != h2) return h1 < h2 ? -1 : 1;
    if (l1 != l2) return l1 < l2 ? -1 : 1;
    return 0;
}

/* a * b / d rounded down (round_up 0) or up, exactly; UINT64_MAX when the
 * quotient does not fit. d > 0. */
static uint64_t parti__mul_div(uint64_t a, uint64_t b, uint64_t d, int round_up) {
    uint64_t hi, lo, q = 0, r;
    int i;
    parti__mul128(a, b, &hi, &lo);
    if (hi >= d) return UINT64_MAX;
    r = hi;
    for (i = 63; i >= 0; i--) {
        uint64_t carry = r >> 63;
        r = (r << 1) | ((lo >> i) & 1u);
        q <<= 1;
        if (carry || r >= d) {
            r -= d;
            q |= 1;
        }
    }
    if (round_up && r) return q == UINT64_MAX ? q : q + 1;
    return q;
}

/* ---- hashing ------------------------------------------------------------ */

#define PARTI__FNV_OFFSET 0xcbf29ce484222325ULL

/* Continues a parti_hash64 (FNV-1a) over more bytes. */
static uint64_t parti__fnv_add(uint64_t h, const void *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t parti__fmix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint64_t parti__partition_hash(const parti_partition *p) {
    uint64_t h = PARTI__FNV_OFFSET;
    int k;
    for (k = 0; k < p->key_count; k++) {
        if (k) h = parti__fnv_add(h, ".", 1);
        h = parti__fnv_add(h, p->keys[k], strlen(p->keys[k]));
    }
    return h;
}

static uint64_t parti__fnv_u32le(uint64_t h, uint32_t v) {
    unsigned char b[4];
    b[0] = (unsigned char)(v & 0xFF);
    b[1] = (unsigned char)((v >> 8) & 0xFF);
    b[2] = (unsigned char)((v >> 16) & 0xFF);
    b[3] = (unsigned char)((v >> 24) & 0xFF);
    return parti__fnv_add(h, b, 4);
}

PARTIDEF uint64_t parti_partitions_fingerprint(const parti_partition *partitions, int count) {
    uint64_t h = PARTI__FNV_OFFSET;
    int i, k;
    if (!partitions || count < 0) count = 0;
    h = parti__fnv_u32le(h, (uint32_t)count);
    for (i = 0; i < count; i++) {
        const parti_partition *p = &partitions[i];
        int kc = p->key_count > 0 && p->keys ? p->key_count : 0;
        h = parti__fnv_u32le(h, (uint32_t)kc);
        for (k = 0; k < kc; k++) {
            const char *key = p->keys[k] ? p->keys[k] : "";
            size_t n = strlen(key);
            h = parti__fnv_u32le(h, (uint32_t)n);
            h = parti__fnv_add(h, key, n);
        }
    }
    return h;
}

/* ---- strategy names and options ----------------------------------------- */

static const char *const parti__strategy_names[] = {"sticky",     "consistent_hash", "weighted_hash",
                                                    "rendezvous", "round_robin",     "callback"};
#define PARTI__STRATEGY_COUNT ((int)(sizeof parti__strategy_names / sizeof parti__strategy_names[0]))

PARTIDEF const char *parti_strategy_name(parti_strategy s) {
    if ((int)s < 0 || (int)s >= PARTI__STRATEGY_COUNT) return "unknown";
    return parti__strategy_names[s];
}

PARTIDEF parti_err parti_strategy_parse(const char *name, parti_strategy *out) {
    int i;
    if (!name || !out) return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < PARTI__STRATEGY_COUNT; i++) {
        if (strcmp(name, parti__strategy_names[i]) == 0) {
            *out = (parti_strategy)i;
            return PARTI_ERR_OK;
        }
    }
    return PARTI_ERR_INVALID_ARGUMENT;
}

PARTIDEF parti_assign_options parti_assign_options_defaults(const parti_assign_options *opts) {
    parti_assign_options o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (o.vnodes == 0) o.vnodes = 128;
    return o;
}

/* ---- shared preparation ------------------------------------------------- */

typedef struct parti__member_ref {
    const char *id;
    int index;
} parti__member_ref;

/* Everything the strategies share, built once by parti__assign_prepare. */
typedef struct parti__actx {
    const parti_assign_input *in;
    parti_assign_options o;
    int n, p;                 /* members, partitions */
    parti__member_ref *by_id; /* members in ID order */
    int *rank;                /* rank[member index] = its position in by_id */
    uint64_t *floor, *cap, *load;
    uint64_t total_weight, total_capacity;
} parti__actx;

static uint64_t parti__weight(const parti_partition *p) { return p->weight ? p->weight : 1u; }
static uint64_t parti__capacity(const parti_member *m) { return m->capacity ? m->capacity : 1u; }

static int parti__member_ref_cmp(const void *a, const void *b) {
    const parti__member_ref *x = (const parti__member_ref *)a, *y = (const parti__member_ref *)b;
    int c = strcmp(x->id, y->id);
    if (c) return c;
    return (x->index > y->index) - (x->index < y->index);
}

static void parti__actx_free(parti__actx *c) {
    PARTI_FREE(c->by_id);
    PARTI_FREE(c->rank);
    PARTI_FREE(c->floor);
    PARTI_FREE(c->cap);
    PARTI_FREE(c->load);
    memset(c, 0, sizeof *c);
}

/* Member index of id, -1 when it is no live member. */
static int parti__find_member(const parti__actx *c, const char *id) {
    int lo = 0, hi = c->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, r = strcmp(c->by_id[mid].id, id);
        if (r == 0) return c->by_id[mid].index;
        if (r < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static void *parti__alloc_array(size_t count, size_t size) {
    if (count == 0) count = 1;
    if (count > (size_t)-1 / size) return NULL;
    return PARTI_MALLOC(count * size);
}

#define PARTI__ASSIGN_RULE(cond, ...)                                                                              \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            parti__msg(msg, msg_size, __VA_ARGS__);                                                                \
            return PARTI_ERR_INVALID_ARGUMENT;                                                                     \
        }                                                                                                          \
    } while (0)

static parti_err parti__assign_check(const parti_assign_input *in, const parti_assign_options *o, char *msg,
                                     size_t msg_size) {
    int i, k;
    PARTI__ASSIGN_RULE(in, "parti_assign: input is NULL");
    PARTI__ASSIGN_RULE((int)o->strategy >= 0 && (int)o->strategy < PARTI__STRATEGY_COUNT,
                       "options.strategy %d is not a parti_strategy", (int)o->strategy);
    PARTI__ASSIGN_RULE(o->tolerance_percent >= 0 && o->tolerance_percent <= PARTI_ASSIGN_MAX_TOLERANCE,
                       "options.tolerance_percent must be 0..%d, got %d", PARTI_ASSIGN_MAX_TOLERANCE,
                       o->tolerance_percent);
    PARTI__ASSIGN_RULE(o->vnodes >= 1 && o->vnodes <= PARTI_ASSIGN_MAX_VNODES,
                       "options.vnodes must be 1..%d (0 = 128), got %d", PARTI_ASSIGN_MAX_VNODES, o->vnodes);
    PARTI__ASSIGN_RULE(o->strategy != PARTI_STRATEGY_CALLBACK || o->callback,
                       "options.callback is required with strategy \"callback\"");
    PARTI__ASSIGN_RULE(in->partition_count >= 0 && in->partition_count <= PARTI_ASSIGN_MAX_PARTITIONS,
                       "in.partition_count must be 0..%d, got %d", PARTI_ASSIGN_MAX_PARTITIONS, in->partition_count);
    PARTI__ASSIGN_RULE(in->partitions || in->partition_count == 0, "in.partitions is NULL but partition_count is %d",
                       in->partition_count);
    PARTI__ASSIGN_RULE(in->member_count >= 1 && in->member_count <= PARTI_ASSIGN_MAX_MEMBERS,
                       "in.member_count must be 1..%d, got %d", PARTI_ASSIGN_MAX_MEMBERS, in->member_count);
    PARTI__ASSIGN_RULE(in->members, "in.members is NULL but member_count is %d", in->member_count);
    for (i = 0; i < in->partition_count; i++) {
        const parti_partition *p = &in->partitions[i];
        PARTI__ASSIGN_RULE(p->key_count >= 0 && p->key_count <= PARTI_MAX_KEYS,
                           "in.partitions[%d].key_count must be 0..%d, got %d", i, PARTI_MAX_KEYS, p->key_count);
        PARTI__ASSIGN_RULE(p->keys || p->key_count == 0, "in.partitions[%d].keys is NULL", i);
        for (k = 0; k < p->key_count; k++) PARTI__ASSIGN_RULE(p->keys[k], "in.partitions[%d].keys[%d] is NULL", i, k);
    }
    for (i = 0; i < in->member_count; i++) {
        const char *id = in->members[i].id;
        size_t n;
        PARTI__ASSIGN_RULE(id, "in.members[%d].id is NULL", i);
        n = strlen(id);
        PARTI__ASSIGN_RULE(n >= 1 && n <= PARTI_ASSIGN_MAX_ID_LEN, "in.members[%d].id must be 1..%d bytes, is %zu", i,
                           PARTI_ASSIGN_MAX_ID_LEN, n);
    }
    return PARTI_ERR_OK;
}

/* Validates, sorts the members by ID (refusing duplicates) and computes the
 * totals. with_bands also fills floor and cap and zeroes load. */
static parti_err parti__assign_prepare(parti__actx *c, const parti_assign_input *in, const parti_assign_options *opts,
                                       int with_bands, char *msg, size_t msg_size) {
    parti_err e;
    int i;
    memset(c, 0, sizeof *c);
    c->o = parti_assign_options_defaults(opts);
    if ((e = parti__assign_check(in, &c->o, msg, msg_size)) != PARTI_ERR_OK) return e;
    c->in = in;
    c->n = in->member_count;
    c->p = in->partition_count;
    c->by_id = (parti__member_ref *)parti__alloc_array((size_t)c->n, sizeof *c->by_id);
    c->rank = (int *)parti__alloc_array((size_t)c->n, sizeof *c->rank);
    if (!c->by_id || !c->rank) goto nomem;
    for (i = 0; i < c->n; i++) {
        c->by_id[i].id = in->members[i].id;
        c->by_id[i].index = i;
        c->total_capacity += parti__capacity(&in->members[i]);
    }
    qsort(c->by_id, (size_t)c->n, sizeof *c->by_id, parti__member_ref_cmp);
    for (i = 0; i < c->n; i++) {
        if (i && strcmp(c->by_id[i - 1].id, c->by_id[i].id) == 0) {
            parti__msg(msg, msg_size, "in.members[%d] and in.members[%d] have the same id \"%.80s\"",
                       c->by_id[i - 1].index, c->by_id[i].index, c->by_id[i].id);
            parti__actx_free(c);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
        c->rank[c->by_id[i].index] = i;
    }
    for (i = 0; i < c->p; i++) c->total_weight += parti__weight(&in->partitions[i]);
    if (with_bands) {
        uint64_t up = 100u + (uint64_t)c->o.tolerance_percent;
        c->floor = (uint64_t *)parti__alloc_array((size_t)c->n, sizeof *c->floor);
        c->cap = (uint64_t *)parti__alloc_array((size_t)c->n, sizeof *c->cap);
        c->load = (uint64_t *)parti__alloc_array((size_t)c->n, sizeof *c->load);
        if (!c->floor || !c->cap || !c->load) goto nomem;
        for (i = 0; i < c->n; i++) {
            uint64_t cm = parti__capacity(&in->members[i]);
            c->cap[i] = parti__mul_div(c->total_weight, cm * up, c->total_capacity * 100u, 1);
            c->floor[i] = parti__mul_div(c->total_weight, cm * 100u, c->total_capacity * up, 0);
            c->load[i] = 0;
        }
    }
    return PARTI_ERR_OK;
nomem:
    parti__actx_free(c);
    parti__msg(msg, msg_size, "out of memory");
    return PARTI_ERR_NOMEM;
}

/* ---- an indexed binary heap of member indexes --------------------------- */

typedef int (*parti__heap_less_fn)(const parti__actx *c, int a, int b);

typedef struct parti__heap {
    int *item;  /* member indexes */
    int *pos;   /* pos[member] = its slot, -1 when not in the heap */
    int count;
    parti__heap_less_fn less;
    const parti__actx *c;
} parti__heap;

static void parti__heap_swap(parti__heap *h, int i, int j) {
    int t = h->item[i];
    h->item[i] = h->item[j];
    h->item[j] = t;
    h->pos[h->item[i]] = i;
    h->pos[h->item[j]] = j;
}

static void parti__heap_up(parti__heap *h, int i) {
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!h->less(h->c, h->item[i], h->item[parent])) break;
        parti__heap_swap(h, i, parent);
        i = parent;
    }
}

static void parti__heap_down(parti__heap *h, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, best = i;
        if (l < h->count && h->less(h->c, h->item[l], h->item[best])) best = l;
        if (r < h->count && h->less(h->c, h->item[r], h->item[best])) best = r;
        if (best == i) return;
        parti__heap_swap(h, i, best);
        i = best;
    }
}

static void parti__heap_push(parti__heap *h, int m) {
    h->item[h->count] = m;
    h->pos[m] = h->count;
    h->count++;
    parti__heap_up(h, h->count - 1);
}

static int parti__heap_pop(parti__heap *h) {
    int top = h->item[0];
    h->count--;
    if (h->count > 0) {
        h->item[0] = h->item[h->count];
        h->pos[h->item[0]] = 0;
        parti__heap_down(h, 0);
    }
    h->pos[top] = -1;
    return top;
}

/* Restores order after member m's key changed. */
static void parti__heap_fix(parti__heap *h, int m) {
    int i = h->pos[m];
    if (i < 0) return;
    parti__heap_up(h, i);
    parti__heap_down(h, h->pos[m]);
}

/* ---- partition lists ------------------------------------------------------ */

typedef struct parti__pw {
    uint64_t w;
    int part;
    int member;
} parti__pw;

/* member ascending, then weight descending, then partition index descending */
static int parti__pw_by_member(const void *a, const void *b) {
    const parti__pw *x = (const parti__pw *)a, *y = (const parti__pw *)b;
    if (x->member != y->member) return x->member < y->member ? -1 : 1;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return (x->part < y->part) - (x->part > y->part);
}

/* weight descending, then partition index ascending */
static int parti__pw_heaviest_first(const void *a, const void *b) {
    const parti__pw *x = (const parti__pw *)a, *y = (const parti__pw *)b;
    if (x->w != y->w) return x->w > y->w ? -1 : 1;
    return (x->part > y->part) - (x->part < y->part);
}

/* Where a partition that fits nowhere goes: the smallest (load + w) / cap,
 * then the lowest ID. */
static int parti__least_overshoot(const parti__actx *c, uint64_t w) {
    int m, best = -1;
    for (m = 0; m < c->n; m++) {
        int r;
        if (best < 0) {
            best = m;
            continue;
        }
        r = parti__cmp_products(c->load[m] + w, c->cap[best], c->load[best] + w, c->cap[m]);
        if (r < 0 || (r == 0 && c->rank[m] < c->rank[best])) best = m;
    }
    return best;
}

/* ---- STICKY --------------------------------------------------------------- */

/* Placement order: below floor first, then the lower load / cap, then the lower ID. */
static int parti__less_placement(const parti__actx *c, int a, int b) {
    int da = c->load[a] < c->floor[a], db = c->load[b] < c->floor[b], r;
    if (da != db) return da;
    if (c->cap[a] == c->cap[b]) r = (c->load[a] > c->load[b]) - (c->load[a] < c->load[b]);
    else r = parti__cmp_products(c->load[a], c->cap[b], c->load[b], c->cap[a]);
    if (r) return r < 0;
    return c->rank[a] < c->rank[b];
}

/* Donor order: the larger surplus over the floor, then the lower ID. */
static int parti__less_donor(const parti__actx *c, int a, int b) {
    uint64_t sa = c->load[a] - c->floor[a], sb = c->load[b] - c->floor[b];
    if (sa != sb) return sa > sb;
    return c->rank[a] < c->rank[b];
}

static int parti__next_alive(int *next, int j) {
    while (next[j] != j) {
        next[j] = next[next[j]];
        j = next[j];
    }
    return j;
}

/* Places items[0..count) (sorted heaviest first) by the placement order. */
static parti_err parti__sticky_place(parti__actx *c, const parti__pw *items, int count, int *owner) {
    parti__heap h;
    int i, m;
    h.item = (int *)parti__alloc_array((size_t)c->n, sizeof(int));
    h.pos = (int *)parti__alloc_array((size_t)c->n, sizeof(int));
    h.count = 0;
    h.less = parti__less_placement;
    h.c = c;
    if (!h.item || !h.pos) {
        PARTI_FREE(h.item);
        PARTI_FREE(h.pos);
        return PARTI_ERR_NOMEM;
    }
    for (m = 0; m < c->n; m++) parti__heap_push(&h, m);
    for (i = 0; i < count; i++) {
        uint64_t w = items[i].w;
        int best = h.item[0];
        if (c->load[best] + w > c->cap[best]) {
            /* the top does not fit: the best member it fits in, else the least overshoot */
            best = -1;
            for (m = 0; m < c->n; m++)
                if (c->load[m] + w <= c->cap[m] && (best < 0 || parti__less_placement(c, m, best))) best = m;
            if (best < 0) best = parti__least_overshoot(c, w);
        }
        owner[items[i].part] = best;
        c->load[best] += w;
        parti__heap_fix(&h, best);
    }
    PARTI_FREE(h.item);
    PARTI_FREE(h.pos);
    return PARTI_ERR_OK;
}

/* Step 3: members below their floor take partitions from those above theirs. */
static parti_err parti__sticky_fill(parti__actx *c, parti__pw *items, int *owner) {
    parti__heap h;
    int *start = NULL, *next = NULL, *aside = NULL;
    int i, m, k, naside;
    parti_err e = PARTI_ERR_NOMEM;
    for (m = 0; m < c->n && c->load[m] >= c->floor[m]; m++) {}
    if (m == c->n) return PARTI_ERR_OK;
    h.item = (int *)parti__alloc_array((size_t)c->n, sizeof(int));
    h.pos = (int *)parti__alloc_array((size_t)c->n, sizeof(int));
    h.count = 0;
    h.less = parti__less_donor;
    h.c = c;
    start = (int *)parti__alloc_array((size_t)c->n + 1, sizeof(int));
    next = (int *)parti__alloc_array((size_t)c->p + 1, sizeof(int));
    aside = (int *)parti__alloc_array((size_t)c->n, sizeof(int));
    if (!h.item || !h.pos || !start || !next || !aside) goto done;
    /* each member's partitions, heaviest first, as one run of items */
    for (i = 0; i < c->p; i++) {
        items[i].part = i;
        items[i].member = owner[i];
        items[i].w = parti__weight(&c->in->partitions[i]);
    }
    qsort(items, (size_t)c->p, sizeof *items, parti__pw_by_member);
    for (m = 0, i = 0; m <= c->n; m++) {
        while (i < c->p && items[i].member < m) i++;
        start[m] = i;
    }
    for (i = 0; i <= c->p; i++) next[i] = i;
    for (m = 0; m < c->n; m++) {
        h.pos[m] = -1;
        if (c->load[m] > c->floor[m]) parti__heap_push(&h, m);
    }
    for (k = 0; k < c->n; k++) {
        int r = c->by_id[k].index;
        naside = 0;
        while (c->load[r] < c->floor[r] && h.count > 0) {
            int d = parti__heap_pop(&h), lo = start[d], hi = start[d + 1], j;
            uint64_t room = c->cap[r] - c->load[r], surplus = c->load[d] - c->floor[d];
            uint64_t limit = room < surplus ? room : surplus;
            while (lo < hi) { /* first item of d no heavier than limit */
                int mid = lo + (hi - lo) / 2;
                if (items[mid].w > limit) lo = mid + 1;
                else hi = mid;
            }
            j = parti__next_alive(next, lo);
            if (j >= start[d + 1]) {
                aside[naside++] = d; /* nothing of d fits r; it may fit the next one */
                continue;
            }
            next[j] = j + 1;
            owner[items[j].part] = r;
            c->load[r] += items[j].w;
            c->load[d] -= items[j].w;
            if (c->load[d] > c->floor[d]) parti__heap_push(&h, d);
        }
        for (i = 0; i < naside; i++) parti__heap_push(&h, aside[i]);
    }
    e = PARTI_ERR_OK;
done:
    PARTI_FREE(h.item);
    PARTI_FREE(h.pos);
    PARTI_FREE(start);
    PARTI_FREE(next);
    PARTI_FREE(aside);
    return e;
}

static parti_err parti__assign_sticky(parti__actx *c, int *owner) {
    parti__pw *items = (parti__pw *)parti__alloc_array((size_t)c->p, sizeof *items);
    int i, j, nk = 0, no = 0;
    parti_err e;
    if (!items) return PARTI_ERR_NOMEM;
    /* 1. keep */
    for (i = 0; i < c->p; i++) {
        int m = -1;
        owner[i] = -1;
        if (c->in->previous_owner && c->in->previous_owner[i]) m = parti__find_member(c, c->in->previous_owner[i]);
        if (m < 0) continue;
        items[nk].part = i;
        items[nk].member = m;
        items[nk].w = parti__weight(&c->in->partitions[i]);
        nk++;
    }
    qsort(items, (size_t)nk, sizeof *items, parti__pw_by_member);
    for (i = 0; i < nk; i = j) {
        int m = items[i].member;
        uint64_t kept = 0;
        for (j = i; j < nk && items[j].member == m; j++) kept += items[j].w;
        for (j = i; j < nk && items[j].member == m; j++) {
            if (kept > c->cap[m]) {
                kept -= items[j].w; /* shed: heaviest first, then highest index */
                continue;
            }
            owner[items[j].part] = m;
        }
        c->load[m] = kept;
    }
    /* 2. place */
    for (i = 0; i < c->p; i++) {
        if (owner[i] >= 0) continue;
        items[no].part = i;
        items[no].member = -1;
        items[no].w = parti__weight(&c->in->partitions[i]);
        no++;
    }
    qsort(items, (size_t)no, sizeof *items, parti__pw_heaviest_first);
    e = parti__sticky_place(c, items, no, owner);
    /* 3. fill */
    if (e == PARTI_ERR_OK) e = parti__sticky_fill(c, items, owner);
    PARTI_FREE(items);
    return e;
}

/* ---- CONSISTENT_HASH and WEIGHTED_HASH -------------------------------------- */

typedef struct parti__point {
    uint64_t spot;
    int rank; /* the member's position in ID order */
} parti__point;

/* Sorts by spot, keeping the order of equal spots (LSD radix, 8 bits a
 * pass): points generated in rank order come out ordered by (spot, rank). */
static void parti__points_sort(parti__point *pts, parti__point *tmp, size_t count) {
    size_t counts[256], i;
    int shift, d;
    if (count == 0) return;
    for (shift = 0; shift < 64; shift += 8) {
        size_t sum = 0;
        for (d = 0; d < 256; d++) counts[d] = 0;
        for (i = 0; i < count; i++) counts[(pts[i].spot >> shift) & 0xFFu]++;
        if (counts[pts[0].spot >> shift & 0xFFu] == count) continue; /* one digit value: nothing to do */
        for (d = 0; d < 256; d++) {
            size_t c = counts[d];
            counts[d] = sum;
            sum += c;
        }
        for (i = 0; i < count; i++) tmp[counts[(pts[i].spot >> shift) & 0xFFu]++] = pts[i];
        memcpy(pts, tmp, count * sizeof *pts);
    }
}

/* Ring point k of a member, from the hash of its "id#" prefix. */
static uint64_t parti__ring_spot(uint64_t prefix, uint64_t k) {
    char digits[24];
    int n = 0;
    uint64_t h = prefix;
    do {
        digits[n++] = (char)('0' + (int)(k % 10u));
        k /= 10u;
    } while (k);
    while (n) h = parti__fnv_add(h, &digits[--n], 1);
    return parti__fmix64(h);
}

/* The sorted ring; weighted: floor(vnodes * N * c_m / C) points, at least 1. */
static parti_err parti__ring_build(const parti__actx *c, int weighted, parti__point **ring, size_t *count) {
    size_t total = 0, at = 0;
    uint64_t k;
    int r;
    parti__point *pts, *tmp;
    uint64_t *per = (uint64_t *)parti__alloc_array((size_t)c->n, sizeof *per);
    *ring = NULL;
    *count = 0;
    if (!per) return PARTI_ERR_NOMEM;
    for (r = 0; r < c->n; r++) {
        const parti_member *m = &c->in->members[c->by_id[r].index];
        uint64_t v = (uint64_t)c->o.vnodes;
        if (weighted) {
            v = parti__mul_div((uint64_t)c->o.vnodes * (uint64_t)c->n, parti__capacity(m), c->total_capacity, 0);
            if (v < 1) v = 1;
        }
        per[r] = v;
        if (v > (uint64_t)((size_t)-1 / sizeof *pts) - total) {
            PARTI_FREE(per);
            return PARTI_ERR_NOMEM;
        }
        total += (size_t)v;
    }
    pts = (parti__point *)parti__alloc_array(total, sizeof *pts);
    tmp = (parti__point *)parti__alloc_array(total, sizeof *tmp);
    if (!pts || !tmp) {
        PARTI_FREE(per);
        PARTI_FREE(pts);
        PARTI_FREE(tmp);
        return PARTI_ERR_NOMEM;
    }
    for (r = 0; r < c->n; r++) {
        uint64_t prefix = parti__fnv_add(PARTI__FNV_OFFSET, c->by_id[r].id, strlen(c->by_id[r].id));
        prefix = parti__fnv_add(prefix, "#", 1);
        for (k = 0; k < per[r]; k++) {
            pts[at].spot = parti__ring_spot(prefix, k);
            pts[at].rank = r;
            at++;
        }
    }
    PARTI_FREE(per);
    parti__points_sort(pts, tmp, total);
    PARTI_FREE(tmp);
    *ring = pts;
    *count = total;
    return PARTI_ERR_OK;
}

/* First point at or after spot, wrapping to 0 past the end. */
static size_t parti__ring_find(const parti__point *ring, size_t count, uint64_t spot) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ring[mid].spot < spot) lo = mid + 1;
        else hi = mid;
    }
    return lo == count ? 0 : lo;
}

static parti_err parti__assign_consistent(parti__actx *c, int *owner) {
    parti__point *ring;
    size_t count;
    int i;
    parti_err e = parti__ring_build(c, 0, &ring, &count);
    if (e != PARTI_ERR_OK) return e;
    for (i = 0; i < c->p; i++) {
        size_t j = parti__ring_find(ring, count, parti__fmix64(parti__partition_hash(&c->in->partitions[i])));
        owner[i] = c->by_id[ring[j].rank].index;
    }
    PARTI_FREE(ring);
    return PARTI_ERR_OK;
}

/* Next live point at or after j on a ring of count points (count = none). */
static size_t parti__ring_alive(int *next, size_t count, size_t j) {
    j = (size_t)parti__next_alive(next, (int)j);
    if (j == count) j = (size_t)parti__next_alive(next, 0);
    return j;
}

static parti_err parti__assign_weighted_hash(parti__actx *c, int *owner) {
    parti__point *ring = NULL;
    parti__pw *items = NULL;
    int *next = NULL, *mstart = NULL, *mpoints = NULL, *dead = NULL;
    size_t count = 0, alive, j;
    int i, r;
    parti_err e = parti__ring_build(c, 1, &ring, &count);
    if (e != PARTI_ERR_OK) return e;
    e = PARTI_ERR_NOMEM;
    if (count >= (size_t)0x7FFFFFFF) goto done;
    items = (parti__pw *)parti__alloc_array((size_t)c->p, sizeof *items);
    next = (int *)parti__alloc_array(count + 1, sizeof(int));
    mstart = (int *)parti__alloc_array((size_t)c->n + 1, sizeof(int));
    mpoints = (int *)parti__alloc_array(count, sizeof(int));
    dead = (int *)parti__alloc_array((size_t)c->n, sizeof(int));
    if (!items || !next || !mstart || !mpoints || !dead) goto done;
    /* the points of each member (by rank), to retire them all once it is full */
    for (r = 0; r <= c->n; r++) mstart[r] = 0;
    for (j = 0; j < count; j++) mstart[ring[j].rank + 1]++;
    for (r = 0; r < c->n; r++) mstart[r + 1] += mstart[r];
    for (r = 0; r < c->n; r++) dead[r] = mstart[r];
    for (j = 0; j < count; j++) mpoints[dead[ring[j].rank]++] = (int)j;
    for (r = 0; r < c->n; r++) dead[r] = 0;
    for (j = 0; j <= count; j++) next[j] = (int)j;
    alive = count;
    for (i = 0; i < c->p; i++) {
        items[i].part = i;
        items[i].member = -1;
        items[i].w = parti__weight(&c->in->partitions[i]);
    }
    qsort(items, (size_t)c->p, sizeof *items, parti__pw_heaviest_first);
    for (i = 0; i < c->p; i++) {
        uint64_t w = items[i].w;
        uint64_t spot = parti__fmix64(parti__partition_hash(&c->in->partitions[items[i].part]));
        size_t steps = 0;
        int m = -1;
        j = alive ? parti__ring_alive(next, count, parti__ring_find(ring, count, spot)) : count;
        while (j < count && steps < alive) {
            int cand = c->by_id[ring[j].rank].index;
            if (c->load[cand] + w <= c->cap[cand]) {
                m = cand;
                break;
            }
            j = parti__ring_alive(next, count, j + 1);
            steps++;
        }
        if (m < 0) m = parti__least_overshoot(c, w);
        owner[items[i].part] = m;
        c->load[m] += w;
        r = c->rank[m];
        if (c->load[m] >= c->cap[m] && !dead[r]) {
            int q;
            dead[r] = 1;
            for (q = mstart[r]; q < mstart[r + 1]; q++) next[mpoints[q]] = mpoints[q] + 1;
            alive -= (size_t)(mstart[r + 1] - mstart[r]);
        }
    }
    e = PARTI_ERR_OK;
done:
    PARTI_FREE(ring);
    PARTI_FREE(items);
    PARTI_FREE(next);
    PARTI_FREE(mstart);
    PARTI_FREE(mpoints);
    PARTI_FREE(dead);
    return e;
}

/* ---- RENDEZVOUS ------------------------------------------------------------ */

/* -log2(h / 2^64) in 20-bit fixed point, from integers only: 1..64 << 20.
 * Non-increasing in h, which keeps equal capacities equal to plain HRW. */
static uint64_t parti__neglog2_q20(uint64_t h) {
    uint64_t x;
    uint32_t frac = 0;
    int e = 0, i, s;
    h |= 1u;
    for (s = 32; s; s >>= 1)
        if (h >> (e + s)) e += s;
    x = e >= 31 ? h >> (e - 31) : h << (31 - e); /* mantissa in [2^31, 2^32) */
    for (i = 0; i < 20; i++) {
        x = (x * x) >> 31;
        frac <<= 1;
        if (x >= ((uint64_t)1 << 32)) {
            x >>= 1;
            frac |= 1u;
        }
    }
    return ((uint64_t)64 << 20) - (((uint64_t)e << 20) | frac);
}

static parti_err parti__assign_rendezvous(parti__actx *c, int *owner) {
    uint64_t *mh = (uint64_t *)parti__alloc_array((size_t)c->n, sizeof *mh);
    uint64_t *mc = (uint64_t *)parti__alloc_array((size_t)c->n, sizeof *mc);
    int i, m, equal = 1;
    if (!mh || !mc) {
        PARTI_FREE(mh);
        PARTI_FREE(mc);
        return PARTI_ERR_NOMEM;
    }
    for (m = 0; m < c->n; m++) {
        const char *id = c->in->members[m].id;
        mh[m] = parti__fmix64(parti__fnv_add(PARTI__FNV_OFFSET, id, strlen(id)));
        mc[m] = parti__capacity(&c->in->members[m]);
        if (mc[m] != mc[0]) equal = 0;
    }
    for (i = 0; i < c->p; i++) {
        uint64_t ph = parti__partition_hash(&c->in->partitions[i]), best_score = 0, best_log = 0;
        int best = -1;
        for (m = 0; m < c->n; m++) {
            uint64_t s = parti__fmix64(ph ^ mh[m]), lg = 0;
            int better = best < 0;
            if (!better && equal) {
                better = s > best_score || (s == best_score && c->rank[m] < c->rank[best]);
            } else if (!better) {
                uint64_t lhs, rhs;
                lg = parti__neglog2_q20(s);
                lhs = mc[m] * best_log; /* both < 2^58 */
                rhs = mc[best] * lg;
                better = lhs > rhs || (lhs == rhs && (s > best_score || (s == best_score && c->rank[m] < c->rank[best])));
            } else if (!equal) {
                lg = parti__neglog2_q20(s);
            }
            if (better) {
                best = m;
                best_score = s;
                best_log = lg;
            }
        }
        owner[i] = best;
    }
    PARTI_FREE(mh);
    PARTI_FREE(mc);
    return PARTI_ERR_OK;
}

/* ---- ROUND_ROBIN and CALLBACK --------------------------------------------- */

static void parti__assign_round_robin(const parti__actx *c, int *owner) {
    int i;
    for (i = 0; i < c->p; i++) owner[i] = c->by_id[i % c->n].index;
}

static parti_err parti__assign_callback(const parti__actx *c, int *owner, char *msg, size_t msg_size) {
    parti_err e;
    int i;
    for (i = 0; i < c->p; i++) owner[i] = -1;
    e = c->o.callback(c->o.callback_user, c->in, owner);
    if (e != PARTI_ERR_OK) {
        parti__msg(msg, msg_size, "assignment callback failed: %s", parti_strerror(e));
        return e;
    }
    for (i = 0; i < c->p; i++) {
        if (owner[i] < 0 || owner[i] >= c->n) {
            parti__msg(msg, msg_size, "assignment callback gave partition %d owner %d, member_count is %d", i,
                       owner[i], c->n);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
    }
    return PARTI_ERR_OK;
}

/* ---- entry points ----------------------------------------------------------- */

PARTIDEF parti_err parti_assign(const parti_assign_input *in, const parti_assign_options *opts, int *owner, char *msg,
                                size_t msg_size) {
    parti__actx c;
    parti_err e;
    parti_strategy s;
    if (msg && msg_size) msg[0] = 0;
    if (in && !owner && in->partition_count > 0) {
        parti__msg(msg, msg_size, "parti_assign: owner is NULL but partition_count is %d", in->partition_count);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    s = parti_assign_options_defaults(opts).strategy;
    e = parti__assign_prepare(&c, in, opts, s == PARTI_STRATEGY_STICKY || s == PARTI_STRATEGY_WEIGHTED_HASH, msg,
                              msg_size);
    if (e != PARTI_ERR_OK) return e;
    switch (s) {
    case PARTI_STRATEGY_STICKY: e = parti__assign_sticky(&c, owner); break;
    case PARTI_STRATEGY_CONSISTENT_HASH: e = parti__assign_consistent(&c, owner); break;
    case PARTI_STRATEGY_WEIGHTED_HASH: e = parti__assign_weighted_hash(&c, owner); break;
    case PARTI_STRATEGY_RENDEZVOUS: e = parti__assign_rendezvous(&c, owner); break;
    case PARTI_STRATEGY_ROUND_ROBIN: parti__assign_round_robin(&c, owner); break;
    case PARTI_STRATEGY_CALLBACK: e = parti__assign_callback(&c, owner, msg, msg_size); break;
    }
    if (e == PARTI_ERR_NOMEM) parti__msg(msg, msg_size, "out of memory");
    parti__actx_free(&c);
    return e;
}

PARTIDEF parti_err parti_assign_bands(const parti_assign_input *in, const parti_assign_options *opts, uint64_t *floors,
                                      uint64_t *caps, char *msg, size_t msg_size) {
    parti__actx c;
    int m;
    parti_err e = parti__assign_prepare(&c, in, opts, 1, msg, msg_size);
    if (e != PARTI_ERR_OK) return e;
    for (m = 0; m < c.n; m++) {
        if (floors) floors[m] = c.floor[m];
        if (caps) caps[m] = c.cap[m];
    }
    parti__actx_free(&c);
    return PARTI_ERR_OK;
}

PARTIDEF int parti_assign_moved(const parti_assign_input *in, const int *owner) {
    int i, moved = 0;
    if (!in || (!owner && in->partition_count > 0) || in->partition_count < 0) return -1;
    if (!in->previous_owner) return 0;
    if (!in->members && in->partition_count > 0) return -1;
    for (i = 0; i < in->partition_count; i++) {
        const char *was = in->previous_owner[i];
        if (owner[i] < 0 || owner[i] >= in->member_count || !in->members[owner[i]].id) return -1;
        if (was && strcmp(was, in->members[owner[i]].id) != 0) moved++;
    }
    return moved;
}

/* ---- the assignment document ---------------------------------------------- */

static const char parti__b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int parti__b64url_value(unsigned char ch) {
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '-') return 62;
    if (ch == '_') return 63;
    return -1;
}

/* Bits per owner: the bit length of member_count, at least 1. */
static int parti__owner_bits(int member_count) {
    int b = 1;
    while (b < 31 && ((int64_t)1 << b) <= (int64_t)member_count) b++;
    return b;
}

static size_t parti__owner_bytes(int n, int bits) { return ((size_t)n * (size_t)bits + 7u) / 8u; }
static size_t parti__owner_chars(int n, int bits) { return (parti__owner_bytes(n, bits) * 8u + 5u) / 6u; }

PARTIDEF void parti_assignment_free(parti_assignment *a) {
    int i;
    if (!a) return;
    if (a->members)
        for (i = 0; i < a->member_count; i++) PARTI_FREE(a->members[i]);
    PARTI_FREE(a->members);
    PARTI_FREE(a->owner);
    memset(a, 0, sizeof *a);
}

PARTIDEF parti_err parti_assignment_build(parti_assignment *a, const parti_assign_input *in, const int *owner,
                                          uint64_t epoch, uint64_t version) {
    parti__actx c;
    parti_err e;
    int i;
    if (!a) return PARTI_ERR_INVALID_ARGUMENT;
    memset(a, 0, sizeof *a);
    if (in && !owner && in->partition_count > 0) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__assign_prepare(&c, in, NULL, 0, NULL, 0)) != PARTI_ERR_OK) return e;
    for (i = 0; i < c.p; i++) {
        if (owner[i] < -1 || owner[i] >= c.n) {
            parti__actx_free(&c);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
    }
    a->epoch = epoch;
    a->version = version;
    a->partitions_fingerprint = parti_partitions_fingerprint(in->partitions, in->partition_count);
    a->members = (char **)parti__alloc_array((size_t)c.n, sizeof *a->members);
    a->owner = (int *)parti__alloc_array((size_t)c.p, sizeof *a->owner);
    if (!a->members || !a->owner) goto nomem;
    for (i = 0; i < c.n; i++) {
        if (!(a->members[i] = parti__strdup(c.by_id[i].id))) goto nomem;
        a->member_count++;
    }
    for (i = 0; i < c.p; i++) a->owner[i] = owner[i] < 0 ? -1 : c.rank[owner[i]];
    a->partition_count = c.p;
    parti__actx_free(&c);
    return PARTI_ERR_OK;
nomem:
    parti__actx_free(&c);
    parti_assignment_free(a);
    return PARTI_ERR_NOMEM;
}

/* The rules of the format that *a must meet before it is written. */
static parti_err parti__assignment_check(const parti_assignment *a) {
    int i;
    if (a->partition_count < 0 || a->partition_count > PARTI_ASSIGN_MAX_PARTITIONS) return PARTI_ERR_INVALID_ARGUMENT;
    if (a->member_count < 0 || a->member_count > PARTI_ASSIGN_MAX_MEMBERS) return PARTI_ERR_INVALID_ARGUMENT;
    if ((!a->members && a->member_count) || (!a->owner && a->partition_count)) return PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; i < a->member_count; i++) {
        size_t n;
        if (!a->members[i]) return PARTI_ERR_INVALID_ARGUMENT;
        n = strlen(a->members[i]);
        if (n < 1 || n > PARTI_ASSIGN_MAX_ID_LEN) return PARTI_ERR_INVALID_ARGUMENT;
        if (i && strcmp(a->members[i - 1], a->members[i]) >= 0) return PARTI_ERR_INVALID_ARGUMENT;
    }
    for (i = 0; i < a->partition_count; i++)
        if (a->owner[i] < -1 || a->owner[i] >= a->member_count) return PARTI_ERR_INVALID_ARGUMENT;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_assignment_encode(const parti_assignment *a, char *out, size_t cap, size_t *needed) {
    static const char hex[] = "0123456789abcdef";
    parti_json_writer w;
    unsigned char *bytes;
    char *text, fp[16];
    size_t nbytes, nchars, bit = 0, i, o = 0;
    int bits, p, m;
    parti_err e;
    if (needed) *needed = 0;
    if (!a || (!out && cap)) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti__assignment_check(a)) != PARTI_ERR_OK) return e;
    bits = parti__owner_bits(a->member_count);
    nbytes = parti__owner_bytes(a->partition_count, bits);
    nchars = parti__owner_chars(a->partition_count, bits);
    bytes = (unsigned char *)PARTI_MALLOC(nbytes + 3);
    text = (char *)PARTI_MALLOC(nchars + 1);
    if (!bytes || !text) {
        PARTI_FREE(bytes);
        PARTI_FREE(text);
        return PARTI_ERR_NOMEM;
    }
    memset(bytes, 0, nbytes + 3);
    for (p = 0; p < a->partition_count; p++) {
        uint32_t u = (uint32_t)(a->owner[p] + 1);
        int b;
        for (b = bits - 1; b >= 0; b--, bit++)
            if ((u >> b) & 1u) bytes[bit / 8] |= (unsigned char)(0x80u >> (bit % 8));
    }
    for (i = 0; i < nbytes; i += 3) { /* the zero bytes past nbytes pad the last group */
        uint32_t g = ((uint32_t)bytes[i] << 16) | ((uint32_t)bytes[i + 1] << 8) | bytes[i + 2];
        int k;
        for (k = 0; k < 4 && o < nchars; k++) text[o++] = parti__b64url[(g >> (18 - 6 * k)) & 63u];
    }
    text[o] = 0;
    for (i = 0; i < 16; i++) fp[i] = hex[(a->partitions_fingerprint >> (60 - 4 * i)) & 15u];
    parti_json_writer_init(&w, out, cap);
    parti_json_object_begin(&w);
    parti_json_key(&w, "v");
    parti_json_uint(&w, 1);
    parti_json_key(&w, "epoch");
    parti_json_uint(&w, a->epoch);
    parti_json_key(&w, "version");
    parti_json_uint(&w, a->version);
    if (a->leader) {
        char lh[16];
        for (i = 0; i < 16; i++) lh[i] = hex[(a->leader >> (60 - 4 * i)) & 15u];
        parti_json_key(&w, "leader");
        parti_json_string_n(&w, lh, 16);
    }
    parti_json_key(&w, "fp");
    parti_json_string_n(&w, fp, 16);
    parti_json_key(&w, "n");
    parti_json_uint(&w, (uint64_t)a->partition_count);
    parti_json_key(&w, "members");
    parti_json_array_begin(&w);
    for (m = 0; m < a->member_count; m++) parti_json_string(&w, a->members[m]);
    parti_json_array_end(&w);
    parti_json_key(&w, "owners");
    parti_json_string_n(&w, text, nchars);
    parti_json_object_end(&w);
    e = parti_json_writer_finish(&w, needed);
    PARTI_FREE(bytes);
    PARTI_FREE(text);
    return e;
}

/* The byte offset of a node in the parsed text. */
static size_t parti__json_offset(const parti_json_doc *doc, int node) {
    size_t len;
    const char *raw = parti_json_raw(doc, node, &len);
    return raw ? (size_t)(raw - doc->text) : 0;
}

/* Field node, refusing a repeated one; -1 when absent. */
static parti_err parti__doc_field(const parti_json_doc *doc, int root, const char *key, int *node, char *msg,
                                  size_t msg_size) {
    int i, found = -1;
    *node = -1;
    for (i = parti_json_first(doc, root); i >= 0; i = parti_json_next(doc, i)) {
        if (!parti_json_string_eq(doc, parti_json_member_key(doc, i), key)) continue;
        if (found >= 0) {
            parti__msg(msg, msg_size, "assignment: field \"%s\" appears twice (byte %zu)", key,
                       parti__json_offset(doc, parti_json_member_key(doc, i)));
            return PARTI_ERR_INVALID_ARGUMENT;
        }
        found = i;
    }
    *node = found;
    return PARTI_ERR_OK;
}

/* A required unsigned integer field no larger than max. */
static parti_err parti__doc_uint(const parti_json_doc *doc, int root, const char *key, uint64_t max, uint64_t *out,
                                 char *msg, size_t msg_size) {
    int node;
    parti_err e = parti__doc_field(doc, root, key, &node, msg, msg_size);
    if (e != PARTI_ERR_OK) return e;
    if (node < 0) {
        parti__msg(msg, msg_size, "assignment: field \"%s\" is missing", key);
        return PARTI_ERR_JSON_MISSING;
    }
    if (parti_json_type_of(doc, node) != PARTI_JSON_NUMBER) {
        parti__msg(msg, msg_size, "assignment: field \"%s\" must be a number, is %s (byte %zu)", key,
                   parti_json_type_name(parti_json_type_of(doc, node)), parti__json_offset(doc, node));
        return PARTI_ERR_JSON_TYPE;
    }
    if (parti_json_as_uint64(doc, node, out) != PARTI_ERR_OK || *out > max) {
        size_t len;
        const char *raw = parti_json_raw(doc, node, &len);
        parti__msg(msg, msg_size, "assignment: field \"%s\" must be an integer 0..%llu, is %.*s (byte %zu)", key,
                   (unsigned long long)max, (int)(len > 40 ? 40 : len), raw ? raw : "", parti__json_offset(doc, node));
        return PARTI_ERR_JSON_RANGE;
    }
    return PARTI_ERR_OK;
}

/* A required field of the given JSON type. */
static parti_err parti__doc_typed(const parti_json_doc *doc, int root, const char *key, parti_json_type t, int *node,
                                  char *msg, size_t msg_size) {
    parti_err e = parti__doc_field(doc, root, key, node, msg, msg_size);
    if (e != PARTI_ERR_OK) return e;
    if (*node < 0) {
        parti__msg(msg, msg_size, "assignment: field \"%s\" is missing", key);
        return PARTI_ERR_JSON_MISSING;
    }
    if (parti_json_type_of(doc, *node) != t) {
        parti__msg(msg, msg_size, "assignment: field \"%s\" must be %s %s, is %s (byte %zu)", key,
                   t == PARTI_JSON_ARRAY ? "an" : "a", parti_json_type_name(t),
                   parti_json_type_name(parti_json_type_of(doc, *node)), parti__json_offset(doc, *node));
        return PARTI_ERR_JSON_TYPE;
    }
    return PARTI_ERR_OK;
}

static parti_err parti__doc_members(parti_assignment *a, const parti_json_doc *doc, int node, char *msg,
                                    size_t msg_size) {
    uint32_t count = parti_json_count(doc, node);
    int i, k = 0;
    if (count > PARTI_ASSIGN_MAX_MEMBERS) {
        parti__msg(msg, msg_size, "assignment: %u members, at most %d (byte %zu)", count, PARTI_ASSIGN_MAX_MEMBERS,
                   parti__json_offset(doc, node));
        return PARTI_ERR_JSON_RANGE;
    }
    a->members = (char **)parti__alloc_array(count, sizeof *a->members);
    if (!a->members) return PARTI_ERR_NOMEM;
    for (i = parti_json_first(doc, node); i >= 0; i = parti_json_next(doc, i), k++) {
        size_t at = parti__json_offset(doc, i), n;
        parti_err e;
        if (parti_json_type_of(doc, i) != PARTI_JSON_STRING) {
            parti__msg(msg, msg_size, "assignment: members[%d] must be a string, is %s (byte %zu)", k,
                       parti_json_type_name(parti_json_type_of(doc, i)), at);
            return PARTI_ERR_JSON_TYPE;
        }
        n = doc->nodes[i].count;
        if (n < 1 || n > PARTI_ASSIGN_MAX_ID_LEN || (doc->nodes[i].flags & PARTI_JSON_FLAG_NUL)) {
            parti__msg(msg, msg_size, "assignment: members[%d] must be 1..%d bytes without U+0000 (byte %zu)", k,
                       PARTI_ASSIGN_MAX_ID_LEN, at);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
        if ((e = parti_json_as_string_dup(doc, i, &a->members[k])) != PARTI_ERR_OK) return e;
        a->member_count++;
        if (k && strcmp(a->members[k - 1], a->members[k]) >= 0) {
            parti__msg(msg, msg_size, "assignment: members[%d] \"%.80s\" %s (byte %zu)", k, a->members[k],
                       strcmp(a->members[k - 1], a->members[k]) == 0 ? "is a duplicate" : "is out of order", at);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
    }
    return PARTI_ERR_OK;
}

static parti_err parti__doc_owners(parti_assignment *a, const parti_json_doc *doc, int node, int n, char *msg,
                                   size_t msg_size) {
    size_t len, expect, at = parti__json_offset(doc, node), i, bit = 0;
    const char *raw = parti_json_raw(doc, node, &len);
    int bits = parti__owner_bits(a->member_count), p;
    unsigned char *bytes;
    uint32_t acc = 0;
    int have = 0;
    size_t o = 0, nbytes = parti__owner_bytes(n, bits);
    expect = parti__owner_chars(n, bits);
    if (doc->nodes[node].flags & PARTI_JSON_FLAG_ESCAPED) {
        parti__msg(msg, msg_size, "assignment: owners must be plain base64url without escapes (byte %zu)", at);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (len != expect) {
        parti__msg(msg, msg_size,
                   "assignment: owners has %zu characters, %d partitions of %d bits need %zu (byte %zu)", len, n,
                   bits, expect, at);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    bytes = (unsigned char *)PARTI_MALLOC(nbytes + 1);
    a->owner = (int *)parti__alloc_array((size_t)n, sizeof *a->owner);
    if (!bytes || !a->owner) {
        PARTI_FREE(bytes);
        return PARTI_ERR_NOMEM;
    }
    for (i = 0; i < len; i++) {
        int v = parti__b64url_value((unsigned char)raw[i]);
        if (v < 0) {
            parti__msg(msg, msg_size, "assignment: owners has byte 0x%02x at %zu, outside base64url",
                       (unsigned char)raw[i], at + i);
            PARTI_FREE(bytes);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
        acc = (acc << 6) | (uint32_t)v;
        have += 6;
        if (have >= 8) {
            have -= 8;
            if (o < nbytes) bytes[o++] = (unsigned char)((acc >> have) & 0xFFu);
            acc &= ((uint32_t)1 << have) - 1u;
        }
    }
    if (acc != 0) {
        parti__msg(msg, msg_size, "assignment: owners has padding bits set in its last character (byte %zu)",
                   at + len - 1);
        PARTI_FREE(bytes);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    for (p = 0; p < n; p++) {
        uint32_t u = 0;
        int b;
        for (b = 0; b < bits; b++, bit++) u = (u << 1) | ((bytes[bit / 8] >> (7 - bit % 8)) & 1u);
        if (u > (uint32_t)a->member_count) {
            parti__msg(msg, msg_size, "assignment: owners gives partition %d member %u, there are %d members (byte %zu)",
                       p, u, a->member_count, at + bit / 6);
            PARTI_FREE(bytes);
            return PARTI_ERR_JSON_RANGE;
        }
        a->owner[p] = (int)u - 1;
    }
    for (; bit < nbytes * 8u; bit++) {
        if ((bytes[bit / 8] >> (7 - bit % 8)) & 1u) {
            parti__msg(msg, msg_size, "assignment: owners has padding bits set after the last partition (byte %zu)",
                       at + len - 1);
            PARTI_FREE(bytes);
            return PARTI_ERR_INVALID_ARGUMENT;
        }
    }
    PARTI_FREE(bytes);
    a->partition_count = n;
    return PARTI_ERR_OK;
}

static parti_err parti__doc_hex64(const parti_json_doc *doc, int node, const char *key, uint64_t *out, char *msg,
                                  size_t msg_size) {
    size_t len, i;
    const char *raw = parti_json_raw(doc, node, &len);
    uint64_t v = 0;
    int ok = len == 16 && !(doc->nodes[node].flags & PARTI_JSON_FLAG_ESCAPED);
    for (i = 0; ok && i < 16; i++) {
        char ch = raw[i];
        if (ch >= '0' && ch <= '9') v = (v << 4) | (uint64_t)(ch - '0');
        else if (ch >= 'a' && ch <= 'f') v = (v << 4) | (uint64_t)(ch - 'a' + 10);
        else ok = 0;
    }
    if (!ok) {
        parti__msg(msg, msg_size, "assignment: %s must be 16 lowercase hex digits (byte %zu)", key,
                   parti__json_offset(doc, node));
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    *out = v;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_checkpoint_encode(const parti_checkpoint *ck, char *out, size_t cap, size_t *needed) {
    parti_json_writer w;
    char hex[17];
    if (needed) *needed = 0;
    if (!ck || (!out && cap) || memchr(ck->owner, 0, sizeof ck->owner) == NULL ||
        memchr(ck->subject, 0, sizeof ck->subject) == NULL)
        return PARTI_ERR_INVALID_ARGUMENT;
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)ck->instance);
    parti_json_writer_init(&w, out, cap);
    parti_json_object_begin(&w);
    parti_json_key(&w, "owner");
    parti_json_string(&w, ck->owner);
    parti_json_key(&w, "instance");
    parti_json_string(&w, hex);
    parti_json_key(&w, "gen");
    parti_json_uint(&w, ck->generation);
    parti_json_key(&w, "seq");
    parti_json_uint(&w, ck->seq);
    parti_json_key(&w, "stream");
    parti_json_uint(&w, ck->stream_created_ns);
    parti_json_key(&w, "subject");
    parti_json_string(&w, ck->subject);
    parti_json_key(&w, "released");
    parti_json_bool(&w, ck->released != 0);
    parti_json_object_end(&w);
    return parti_json_writer_finish(&w, needed);
}

PARTIDEF parti_err parti_checkpoint_key(const char *subject, char *key, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    char out[PARTI_CHECKPOINT_KEY_SIZE];
    size_t n, i, len = 3;
    if (key && cap) key[0] = 0;
    if (!subject || !key || !subject[0]) return PARTI_ERR_INVALID_ARGUMENT;
    n = strlen(subject);
    memcpy(out, "ck.", 3);
    for (i = 0; i < n && len <= PARTI_MAX_SUBJECT_LEN; i++) {
        unsigned char c = (unsigned char)subject[i];
        if (parti__is_name_char(c) ||
            (c == '.' && i > 0 && i + 1 < n && subject[i - 1] != '.' && subject[i + 1] != '.')) {
            if (len < PARTI_MAX_SUBJECT_LEN) out[len] = (char)c;
            len++;
        } else {
            if (len + 3 <= PARTI_MAX_SUBJECT_LEN) {
                out[len] = '=';
                out[len + 1] = hex[c >> 4];
                out[len + 2] = hex[c & 15];
            }
            len += 3;
        }
    }
    if (len > PARTI_MAX_SUBJECT_LEN) return PARTI_ERR_INVALID_SUBJECT;
    if (len + 1 > cap) return PARTI_ERR_BUFFER_TOO_SMALL;
    memcpy(key, out, len);
    key[len] = 0;
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_checkpoint_decode(parti_checkpoint *ck, const char *data, size_t len) {
    parti_json_doc doc;
    char hex[24];
    size_t n = 0;
    int root, i, rel = 0;
    uint64_t x = 0;
    parti_err e;
    if (!ck) return PARTI_ERR_INVALID_ARGUMENT;
    memset(ck, 0, sizeof *ck);
    if (!data) return PARTI_ERR_INVALID_ARGUMENT;
    if ((e = parti_json_parse(&doc, data, len, NULL, NULL, 0)) != PARTI_ERR_OK) return e;
    root = parti_json_root(&doc);
    if (root < 0 || parti_json_type_of(&doc, root) != PARTI_JSON_OBJECT) e = PARTI_ERR_JSON_TYPE;
    /* (a too-long string is PARTI_ERR_BUFFER_TOO_SMALL below) */
    if (e == PARTI_ERR_OK) e = parti_json_get_string(&doc, root, "owner", ck->owner, sizeof ck->owner, &n);
    /* (needed counts the NUL) */
    if (e == PARTI_ERR_OK && n < 2) e = PARTI_ERR_INVALID_ARGUMENT;
    if (e == PARTI_ERR_OK) e = parti_json_get_string(&doc, root, "instance", hex, sizeof hex, &n);
    if (e == PARTI_ERR_OK && n != 17) e = PARTI_ERR_INVALID_ARGUMENT;
    for (i = 0; e == PARTI_ERR_OK && i < 16; i++) {
        char h = hex[i];
        if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f'))) e = PARTI_ERR_INVALID_ARGUMENT;
        else x = x << 4 | (uint64_t)(h <= '9' ? h - '0' : h - 'a' + 10);
    }
    ck->instance = x;
    if (e == PARTI_ERR_OK) e = parti_json_get_uint64(&doc, root, "gen", &ck->generation);
    if (e == PARTI_ERR_OK) e = parti_json_get_uint64(&doc, root, "seq", &ck->seq);
    if (e == PARTI_ERR_OK) e = parti_json_get_uint64(&doc, root, "stream", &ck->stream_created_ns);
    if (e == PARTI_ERR_OK) e = parti_json_get_string(&doc, root, "subject", ck->subject, sizeof ck->subject, &n);
    if (e == PARTI_ERR_OK && n < 2) e = PARTI_ERR_INVALID_ARGUMENT;
    if (e == PARTI_ERR_OK) e = parti_json_get_bool(&doc, root, "released", &rel);
    ck->released = rel != 0;
    parti_json_doc_free(&doc);
    if (e != PARTI_ERR_OK) memset(ck, 0, sizeof *ck);
    return e;
}

PARTIDEF parti_err parti_assignment_decode(parti_assignment *a, const char *data, size_t len, char *msg,
                                           size_t msg_size) {
    parti_json_doc doc;
    uint64_t v, n;
    int root, node;
    parti_err e;
    char inner[200];
    if (msg && msg_size) msg[0] = 0;
    if (!a) {
        parti__msg(msg, msg_size, "parti_assignment_decode: document is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    memset(a, 0, sizeof *a);
    if (!data) {
        parti__msg(msg, msg_size, "parti_assignment_decode: data is NULL");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if ((e = parti_json_parse(&doc, data, len, NULL, inner, sizeof inner)) != PARTI_ERR_OK) {
        parti__msg(msg, msg_size, "assignment: %s", inner);
        return e;
    }
    root = parti_json_root(&doc);
    if (parti_json_type_of(&doc, root) != PARTI_JSON_OBJECT) {
        parti__msg(msg, msg_size, "assignment: the document must be a JSON object, is %s",
                   parti_json_type_name(parti_json_type_of(&doc, root)));
        e = PARTI_ERR_JSON_TYPE;
        goto fail;
    }
    if ((e = parti__doc_uint(&doc, root, "v", UINT64_MAX, &v, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if (v != 1) {
        parti__msg(msg, msg_size, "assignment: format v%llu is not supported (this build reads v1)",
                   (unsigned long long)v);
        e = PARTI_ERR_JSON_RANGE;
        goto fail;
    }
    if ((e = parti__doc_uint(&doc, root, "epoch", UINT64_MAX, &a->epoch, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if ((e = parti__doc_uint(&doc, root, "version", UINT64_MAX, &a->version, msg, msg_size)) != PARTI_ERR_OK)
        goto fail;
    if ((e = parti__doc_typed(&doc, root, "fp", PARTI_JSON_STRING, &node, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if ((e = parti__doc_hex64(&doc, node, "fp", &a->partitions_fingerprint, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if ((e = parti__doc_field(&doc, root, "leader", &node, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if (node >= 0 && (e = parti__doc_typed(&doc, root, "leader", PARTI_JSON_STRING, &node, msg, msg_size)) != PARTI_ERR_OK)
        goto fail;
    if (node >= 0 && (e = parti__doc_hex64(&doc, node, "leader", &a->leader, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if ((e = parti__doc_uint(&doc, root, "n", PARTI_ASSIGN_MAX_PARTITIONS, &n, msg, msg_size)) != PARTI_ERR_OK)
        goto fail;
    if ((e = parti__doc_typed(&doc, root, "members", PARTI_JSON_ARRAY, &node, msg, msg_size)) != PARTI_ERR_OK)
        goto fail;
    if ((e = parti__doc_members(a, &doc, node, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    if ((e = parti__doc_typed(&doc, root, "owners", PARTI_JSON_STRING, &node, msg, msg_size)) != PARTI_ERR_OK)
        goto fail;
    if ((e = parti__doc_owners(a, &doc, node, (int)n, msg, msg_size)) != PARTI_ERR_OK) goto fail;
    parti_json_doc_free(&doc);
    return PARTI_ERR_OK;
fail:
    if (e == PARTI_ERR_NOMEM) parti__msg(msg, msg_size, "out of memory");
    parti_json_doc_free(&doc);
    parti_assignment_free(a);
    return e;
}

PARTIDEF int parti_assignment_member_index(const parti_assignment *a, const char *member_id) {
    int lo = 0, hi;
    if (!a || !member_id || !a->members) return -1;
    hi = a->member_count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, r = strcmp(a->members[mid], member_id);
        if (r == 0) return mid;
        if (r < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

PARTIDEF const char *parti_assignment_owner_id(const parti_assignment *a, int partition) {
    int m;
    if (!a || !a->owner || partition < 0 || partition >= a->partition_count) return NULL;
    m = a->owner[partition];
    if (m < 0 || m >= a->member_count || !a->members) return NULL;
    return a->members[m];
}

PARTIDEF int parti_assignment_partitions_of(const parti_assignment *a, int member, int *out, int cap) {
    int i, count = 0;
    if (!a || member < 0 || member >= a->member_count || (!out && cap > 0)) return -1;
    for (i = 0; i < a->partition_count; i++) {
        if (a->owner[i] != member) continue;
        if (count < cap) out[count] = i;
        count++;
    }
    return count;
}

#undef PARTI__ASSIGN_RULE
#undef PARTI__STRATEGY_COUNT

/* ======================================================================== */
/* The group: implementation                                                 */
/* ======================================================================== */

#define PARTI__G_NO_TIME UINT64_MAX
#define PARTI__G_MAX_ID 32

typedef struct parti__gmember {
    char *id;
    uint32_t capacity;
    uint64_t instance;           /* the process holding the ID (0: not read): its durable's name */
} parti__gmember;

/* A departed process's durable the leader deletes once its grace is over. */
typedef struct parti__gorphan {
    char durable[PARTI_MAX_NAME_LEN + 1];
    char id[PARTI__G_MAX_ID]; /* the worker ID it was made for ("": unknown) */
    uint64_t instance; /* its process: while m.<id> names it, the durable is in use */
    uint64_t due;
} parti__gorphan;

/* A partition's claim, as this worker sees it (the handoff). */
enum { PARTI__G_NONE = 0, PARTI__G_WANT, PARTI__G_HELD, PARTI__G_RELEASE, PARTI__G_DISOWN };
typedef struct parti__gpart {
    /* PARTI__G_*: not ours; assigned, to claim; claimed; revoked, to release;
     * held when the lease ran out or the ID was lost: its key still names
     * this process, which releases it once it can (if no one took it) */
    int st;
    uint64_t rev;                /* the claim key's revision this worker last wrote (0: none) */
    uint64_t gen;                /* the owner generation of its claim (the claim's revision) */
    uint64_t committed;          /* the position last written */
    uint64_t retry_at;
    uint32_t delay;              /* a waiting claim's next retry delay */
} parti__gpart;

struct parti {
    parti_transport t;
    uint64_t call_deadline;      /* KV calls end by then (0: op_timeout_ms each) */
    int renew_leader_due;        /* the leader key's renewal waits for a poll with time for it */
    int member_failed;           /* the last member key renewal did not renew the ID */
    int elect_due;               /* so does an election found necessary */
    int readback_due;            /* a renewal failed and reading the key back was inconclusive */
    parti_options opts;
    parti_consumer *c;           /* owns the copied config (c->cfg) */
    parti_metrics gm;            /* the group's rows */
    parti_metrics view;          /* gm merged with the consumer's rows, for parti_metrics_of */
    char members_bucket[PARTI_MAX_NAME_LEN + 1], assign_bucket[PARTI_MAX_NAME_LEN + 1];
    int buckets_open;
    uint64_t instance;
    char value[128];             /* this member's key value */
    parti_state state;
    /* membership */
    char id[PARTI__G_MAX_ID];    /* "" until joined */
    char key[PARTI__G_MAX_ID + 2];
    uint64_t my_rev;             /* revision of the member key this worker last wrote */
    uint64_t last_renew_ok;      /* when the member key was last renewed (or claimed) */
    uint64_t next_heartbeat;
    uint64_t retry_at;           /* joining / opening retries */
    parti_backoff backoff;
    /* leadership */
    int leader;
    uint64_t leader_rev;         /* revision of the leader key this worker last wrote */
    uint64_t epoch;              /* the highest leader epoch seen (own when leader) */
    uint64_t lease_until;        /* leader: act as leader until then unless renewed */
    int epoch_written;           /* leader: the leader key holds p->epoch (documents may be published) */
    uint64_t key_epoch;          /* the epoch the leader key held when last read or watched (0: none/unknown) */
    uint64_t key_instance;       /* and the process that held it */
    int leader_missing;          /* the leader key was seen deleted or expired */
    uint64_t next_leader_check;
    /* watchers */
    parti_kv_watcher *wm, *wa;
    /* leader's view of the members, sorted by ID */
    parti__gmember *members;     /* stb_ds array */
    uint64_t next_listing;
    /* rebalancing (leader) */
    int rb_pending, rb_fail;
    uint64_t rb_due, rb_first, rb_last, rb_change_at;
    parti_backoff rb_backoff;
    /* the assignment */
    parti_assignment doc;        /* the last applied document */
    uint64_t doc_rev;            /* its KV revision (0: none seen) */
    uint64_t kv_doc_rev;         /* the assignment key's latest revision seen, whatever it held (leader's CAS base) */
    uint64_t wrote_doc_rev;      /* leader: the revision of the document it last wrote */
    int unassignable;            /* leader: partitions its last document could not place (over capacity) */
    uint64_t applied_epoch, applied_version;
    uint64_t top_epoch, top_version; /* the highest (epoch, version) ever applied, kept across ID losses */
    int last_id;                 /* the worker number last held (-1: none): a rejoin claims it first */
    uint64_t quiet_until;        /* after an ID loss: no other number claimed, no election, until then */
    int quiet_confirm;           /* memory storage: the quiet period ran on this worker's clock only; the
                                  * buckets' age on the server's clock must confirm its end */
    uint64_t led_until;          /* it was the leader when it lost its ID: it may stand again at once until
                                  * the leader lease it held then ends (0: it was not) */
    /* memory storage: which buckets these are (the "born" key's value, unique to the worker that made it and
     * when, and its revision), as last read, and as read before this worker claimed its ID ("": unknown) */
    char born_seen[64], born[64];
    uint64_t born_seen_rev, born_rev;
    int *owned;                  /* stb_ds array of partition indexes */
    parti__gpart *gp;            /* per partition: its claim (the handoff) */
    uint64_t next_commit;        /* checkpoints are written then */
    uint64_t handoff_due;        /* the earliest claim or release to try (PARTI__G_NO_TIME: none) */
    parti__gorphan *orphans;     /* stb_ds array, leader: departed processes' durables to delete */
    char registered[PARTI__G_MAX_ID];  /* the worker ID its durable's "d." key was last written for */
    int reregister;              /* the ID was lost since: the "d." key is written again (it may be gone) */
    uint64_t register_at;        /* a failed registry write is tried again from then */
    int graceful_left;           /* leader: the watch saw a member key deleted (a leave) since the last listing */
    int sweep_due;               /* leader: the registry is still to be swept (from its election until a sweep completes) */
    int parting;                 /* leader, leaving: the next document leaves this worker out */
    uint64_t next_doc_check;
    /* degraded mode */
    int degraded, stale;
    parti_err last_err;
    uint64_t last_err_ms;
    char last_msg[256];
    parti_log_limiter limiter;
    int stream_ok;               /* the startup contract held */
    int stream_seen;             /* the stream existed once: it is never created again (an operator deleted it) */
    parti_err fatal;             /* why it stopped, when it was not a leave */
};

static const char *const parti__state_names[] = {"joining", "waiting", "stable", "rebalancing",
                                                 "degraded", "leaving", "stopped"};

PARTIDEF const char *parti_state_name(parti_state s) {
    return (unsigned)s < sizeof parti__state_names / sizeof *parti__state_names ? parti__state_names[s] : "unknown";
}

PARTIDEF const char *parti_event_name(parti_event_kind kind) {
    switch (kind) {
    case PARTI_EVENT_STATE_CHANGED: return "state_changed";
    case PARTI_EVENT_JOINED: return "joined";
    case PARTI_EVENT_ID_LOST: return "id_lost";
    case PARTI_EVENT_BECAME_LEADER: return "became_leader";
    case PARTI_EVENT_LOST_LEADERSHIP: return "lost_leadership";
    case PARTI_EVENT_ASSIGNMENT_CHANGED: return "assignment_changed";
    case PARTI_EVENT_REBALANCED: return "rebalanced";
    case PARTI_EVENT_MEMBER_JOINED: return "member_joined";
    case PARTI_EVENT_MEMBER_LEFT: return "member_left";
    }
    return "unknown";
}

static uint64_t parti__g_now(const parti *p) { return p->t.vt->now_ms(p->t.self); }

/* The timeout of the group's next KV call: op_timeout_ms, cut so the call
 * ends by the running poll's (or leave's) deadline plus one op timeout (at
 * least 1 ms), so a hung server cannot hold a poll for many timeouts. */
static uint32_t parti__g_budget(const parti *p) {
    return parti__budget(p->call_deadline ? parti__g_now(p) : 0, p->call_deadline, p->opts.op_timeout_ms);
}

/* 1 when a lease call (the member key's renewal, the leader key's, an
 * election) can have its whole op timeout within the poll's budget. Lease
 * calls are never cut short: past the poll's deadline they wait for the next
 * poll, where they come first, rather than fail for want of time. */
static int parti__g_lease_ok(const parti *p) {
    return !p->call_deadline || parti__g_now(p) + p->opts.op_timeout_ms <= p->call_deadline;
}

static uint64_t parti__g_rng(void *user) {
    parti *p = (parti *)user;
    return p->t.vt->random(p->t.self);
}

static void parti__g_log(parti *p, parti_log_level level, const char *message, parti_err e, const char *detail) {
    parti_log_field f[4];
    char ver[24];
    int n = 0;
    if (!p->opts.log) return;
    f[n].key = "worker", f[n++].value = p->id[0] ? p->id : "(joining)";
    if (e != PARTI_ERR_OK) f[n].key = "error", f[n++].value = parti_error_name(e);
    if (detail && *detail) f[n].key = "detail", f[n++].value = detail;
    if (p->applied_version) {
        snprintf(ver, sizeof ver, "%llu", (unsigned long long)p->applied_version);
        f[n].key = "assignment_version", f[n++].value = ver;
    }
    parti__log(p->opts.log, p->opts.log_user, p->opts.log_level, &p->limiter, p->t.vt->now_ms(p->t.self), level,
               message, f, n);
}

static void parti__g_event(parti *p, parti_event_kind kind, parti_err err, int moved, const char *detail) {
    parti_event ev;
    parti__g_log(p, kind == PARTI_EVENT_ID_LOST || kind == PARTI_EVENT_LOST_LEADERSHIP ? PARTI_LOG_WARN : PARTI_LOG_INFO,
                 parti_event_name(kind), err, detail);
    if (!p->opts.on_event) return;
    memset(&ev, 0, sizeof ev);
    ev.kind = kind;
    ev.state = p->state;
    ev.worker_id = p->id;
    ev.epoch = p->epoch;
    ev.version = p->applied_version;
    ev.partitions = (int)arrlen(p->owned);
    ev.moved = moved;
    ev.err = err;
    ev.detail = detail ? detail : "";
    p->opts.on_event(p->opts.user, &ev);
}

static void parti__g_set_state(parti *p, parti_state s) {
    if (p->state == s) return;
    p->state = s;
    parti__g_event(p, PARTI_EVENT_STATE_CHANGED, PARTI_ERR_OK, 0, parti_state_name(s));
}

static void parti__g_fail(parti *p, parti_err e, const char *what) {
    p->last_err = e;
    p->last_err_ms = parti__g_now(p);
    parti__msg(p->last_msg, sizeof p->last_msg, "%s: %s", what, parti_strerror(e));
    parti__g_log(p, PARTI_LOG_WARN, what, e, parti_strerror(e));
    if (p->opts.fail_fast && !p->fatal) {
        p->fatal = e;
        p->state = PARTI_STATE_STOPPED; /* set directly: no event storm from a failing call */
        parti__g_event(p, PARTI_EVENT_STATE_CHANGED, e, 0, parti_state_name(p->state));
    }
}

/* Stops pulling at once (no coalescing window): an ID lost or a stale
 * assignment must not be processed a moment longer. */
static void parti__g_stop_consumer(parti *p) {
    parti_consumer *c = p->c;
    parti__consumer_clear_pending(c);
    if (!c->paused) {
        c->paused = 1;
        c->fetch_active = 0;
        parti__consumer_event(c, PARTI_EVENT_CONSUMER_PAUSED, PARTI_ERR_OK, c->durable);
    }
}

/* ---- values ------------------------------------------------------------ */

/* The member key's value: which process, its capacity, and the highest
 * leader epoch it has seen (a leader raises its own epoch above it, so no
 * worker is left on a higher epoch after the buckets were lost). */
static void parti__g_member_value(parti *p) {
    snprintf(p->value, sizeof p->value,
             "{\"instance\":\"%016llx\",\"capacity\":%u,\"epoch\":%llu,\"applied\":[%llu,%llu]}",
             (unsigned long long)p->instance, p->opts.capacity, (unsigned long long)p->epoch,
             (unsigned long long)p->top_epoch, (unsigned long long)p->top_version);
}

/* The worker learned of a higher epoch: remember it (and say so in its
 * member key at the next renewal). */
static void parti__g_saw_epoch(parti *p, uint64_t epoch) {
    if (epoch <= p->epoch) return;
    p->epoch = epoch;
    parti_gauge_set(&p->gm.leader_epoch, (double)epoch);
    parti__g_member_value(p);
}

/* A member or leader value as read from the KV (untrusted), parsed once.
 * Absent or bad fields read as: instance 0, epoch 0, capacity 1, applied
 * (0, 0). instance is 16 lowercase hex digits. */
typedef struct parti__gvalue {
    uint64_t instance, epoch, applied_epoch, applied_version;
    uint32_t capacity;
} parti__gvalue;

static parti__gvalue parti__g_value_read(const uint8_t *value, size_t len) {
    parti__gvalue v;
    parti_json_doc doc;
    char hex[24];
    uint64_t x = 0, cap = 1;
    int i = 0, root, arr;
    memset(&v, 0, sizeof v);
    v.capacity = 1;
    if (!value || parti_json_parse(&doc, (const char *)value, len, NULL, NULL, 0) != PARTI_ERR_OK) return v;
    root = parti_json_root(&doc);
    if (parti_json_get_string(&doc, root, "instance", hex, sizeof hex, NULL) == PARTI_ERR_OK && strlen(hex) == 16)
        for (i = 0; i < 16 && parti__lhex(hex + i, 1, 0); i++)
            x = x << 4 | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
    v.instance = i == 16 ? x : 0;
    if (parti_json_get_uint64(&doc, root, "epoch", &v.epoch) != PARTI_ERR_OK) v.epoch = 0;
    if (parti_json_get_uint64(&doc, root, "capacity", &cap) == PARTI_ERR_OK && cap >= 1 && cap <= 1000000)
        v.capacity = (uint32_t)cap;
    arr = parti_json_get(&doc, root, "applied");
    if (arr >= 0 && parti_json_type_of(&doc, arr) == PARTI_JSON_ARRAY && parti_json_count(&doc, arr) == 2 &&
        (parti_json_as_uint64(&doc, parti_json_at(&doc, arr, 0), &v.applied_epoch) != PARTI_ERR_OK ||
         parti_json_as_uint64(&doc, parti_json_at(&doc, arr, 1), &v.applied_version) != PARTI_ERR_OK))
        v.applied_epoch = v.applied_version = 0;
    parti_json_doc_free(&doc);
    return v;
}

/* The leader key as read or watched (untrusted): who holds it, under which epoch. */
static void parti__g_saw_leader_key(parti *p, const parti_kv_entry *e) {
    parti__gvalue v = parti__g_value_read(e->value, e->len);
    p->key_epoch = v.epoch;
    p->key_instance = v.instance;
    parti__g_saw_epoch(p, p->key_epoch);
}

/* ---- creation ------------------------------------------------------------ */

static parti_err parti__g_check_options(const parti_options *o, char *msg, size_t msg_size) {
#define PARTI__G_CHECK(cond, ...)                                                                                  \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            parti__msg(msg, msg_size, __VA_ARGS__);                                                                \
            return PARTI_ERR_INVALID_ARGUMENT;                                                                     \
        }                                                                                                          \
    } while (0)
    PARTI__G_CHECK(o->on_message != NULL, "options.on_message is required");
    PARTI__G_CHECK(o->max_workers >= 0 && o->max_workers <= 100000, "options.max_workers must be 0 (default 1024) to "
                   "100000, got %d", o->max_workers);
    PARTI__G_CHECK(o->member_ttl_ms >= 3 * o->heartbeat_ms, "options.member_ttl_ms (%u) must be >= 3 x heartbeat_ms "
                   "(%u)", o->member_ttl_ms, o->heartbeat_ms);
    PARTI__G_CHECK(o->heartbeat_ms >= 10, "options.heartbeat_ms must be >= 10, got %u", o->heartbeat_ms);
    PARTI__G_CHECK(o->capacity <= 1000000, "options.capacity must be <= 1000000, got %u", o->capacity);
    PARTI__G_CHECK((unsigned)o->log_level <= PARTI_LOG_OFF, "options.log_level must be 0 (info) to PARTI_LOG_OFF, "
                   "got %d", (int)o->log_level);
    return PARTI_ERR_OK;
#undef PARTI__G_CHECK
}

static void parti__g_consumer_id(const char *id, uint64_t instance, char *out, size_t cap);

/* Every partition's subject has a checkpoint key (parti_checkpoint_key):
 * the group's claims and positions live there. */
static parti_err parti__g_check_keys(const parti_config *c, char *msg, size_t msg_size) {
    char subject[PARTI_MAX_SUBJECT_LEN + 1], key[PARTI_CHECKPOINT_KEY_SIZE];
    int i;
    for (i = 0; i < c->partition_count; i++) {
        if (parti_subject_expand(c->subject_template, &c->partitions[i], subject, sizeof subject, NULL, NULL, 0) !=
            PARTI_ERR_OK)
            continue; /* (parti_config_validate said so already) */
        if (parti_checkpoint_key(subject, key, sizeof key) != PARTI_ERR_OK) {
            parti__msg(msg, msg_size, "config.partitions[%d]: the subject \"%.80s...\" (%zu bytes) is too long for "
                       "its checkpoint key: \"ck.\" and the subject, bytes other than A-Z a-z 0-9 - _ spelled "
                       "=XX, must fit in %d bytes", i, subject, strlen(subject), PARTI_MAX_SUBJECT_LEN);
            return PARTI_ERR_INVALID_CONFIG;
        }
    }
    return PARTI_ERR_OK;
}

PARTIDEF parti_err parti_create(parti **out, const parti_transport *t, const parti_config *cfg,
                                const parti_options *opts, char *msg, size_t msg_size) {
    parti *p;
    parti_options o;
    parti_consumer_options co;
    parti_config d;
    parti_err e;
    char tmp[256];
    if (out) *out = NULL;
    if (!out || !t || !t->vt || !cfg || !opts) {
        parti__msg(msg, msg_size, "parti_create: NULL output, transport, config or options");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (!t->vt->kv_open || !t->vt->kv_create || !t->vt->kv_update || !t->vt->kv_get || !t->vt->kv_delete ||
        !t->vt->kv_keys || !t->vt->kv_watch || !t->vt->kv_watch_next || !t->vt->kv_watch_stop) {
        parti__msg(msg, msg_size, "parti_create: the transport lacks a key/value operation the group needs");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (!t->vt->stream_get_next || !t->vt->stream_info) {
        parti__msg(msg, msg_size, "parti_create: the transport lacks stream_get_next or stream_info (a partition "
                   "that moves in is read from the stream after its checkpoint)");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (opts->memory_storage && !t->vt->kv_put) {
        parti__msg(msg, msg_size, "parti_create: options.memory_storage needs the transport's kv_put (the buckets' "
                   "age is read from the server's clock)");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    o = *opts;
    if (!o.heartbeat_ms) o.heartbeat_ms = 1000;
    if (!o.member_ttl_ms) o.member_ttl_ms = o.heartbeat_ms * 5 > 5000 ? o.heartbeat_ms * 5 : 5000;
    if ((e = parti__g_check_options(&o, msg, msg_size)) != PARTI_ERR_OK) return e;
    if (!o.max_workers) o.max_workers = 1024;
    if (!o.capacity) o.capacity = 1;
    if (!o.cold_start_ms) o.cold_start_ms = 2000;
    if (!o.planned_window_ms) o.planned_window_ms = 500;
    if (!o.emergency_grace_ms) o.emergency_grace_ms = 100;
    if (!o.min_rebalance_interval_ms) o.min_rebalance_interval_ms = 250;
    if (!o.max_stale_ms) o.max_stale_ms = o.member_ttl_ms;
    if (!o.op_timeout_ms) o.op_timeout_ms = 2000;
    if (!o.commit_interval_ms) o.commit_interval_ms = 1000;
    if (!o.orphan_grace_ms) o.orphan_grace_ms = o.member_ttl_ms;
    o.assign = parti_assign_options_defaults(&opts->assign);
    if (o.assign.strategy == PARTI_STRATEGY_CALLBACK && !o.assign.callback) {
        parti__msg(msg, msg_size, "options.assign.callback is required with PARTI_STRATEGY_CALLBACK");
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    d = parti_config_defaults(cfg);
    if ((e = parti_config_validate(cfg, msg, msg_size)) != PARTI_ERR_OK) return e;
    if ((e = parti__g_check_keys(&d, msg, msg_size)) != PARTI_ERR_OK) return e;
    if (o.create_stream && (!o.create_stream->name || strcmp(o.create_stream->name, d.stream) != 0)) {
        parti__msg(msg, msg_size, "options.create_stream.name must be config.stream (\"%.64s\")", d.stream);
        return PARTI_ERR_INVALID_ARGUMENT;
    }
    if (!(p = (parti *)PARTI_MALLOC(sizeof *p))) return PARTI_ERR_NOMEM;
    memset(p, 0, sizeof *p);
    p->t = *t;
    p->opts = o;
    /* bucket names: "<prefix>-<stream>-members" and "-assign" */
    snprintf(tmp, sizeof tmp, "%s-%s-members", d.bucket_prefix, d.stream);
    if (parti_name_check(tmp, NULL, 0) != PARTI_ERR_OK || strlen(tmp) > PARTI_MAX_NAME_LEN) {
        parti__msg(msg, msg_size, "config.bucket_prefix and config.stream make the bucket name \"%.100s\", which is "
                   "not a valid name", tmp);
        PARTI_FREE(p);
        return PARTI_ERR_INVALID_NAME;
    }
    memcpy(p->members_bucket, tmp, strlen(tmp) + 1);
    snprintf(p->assign_bucket, sizeof p->assign_bucket, "%s-%s-assign", d.bucket_prefix, d.stream);
    co = o.consumer;
    co.on_message = o.on_message;
    co.user = o.user;
    co.on_event = o.on_consumer_event;
    co.allow_worker_id_change = 1; /* a worker that lost its ID comes back under another */
    co.fail_fast = co.fail_fast || o.fail_fast;
    if (!co.log) {
        co.log = o.log;
        co.log_user = o.log_user;
        co.log_level = o.log_level;
    }
    if ((e = parti_consumer_create(&p->c, t, cfg, &co, msg, msg_size)) != PARTI_ERR_OK) {
        PARTI_FREE(p);
        return e;
    }
    { /* every durable name the group can make must fit */
        char cid[PARTI__G_MAX_ID + 24], name[PARTI_MAX_NAME_LEN + 1], id[PARTI__G_MAX_ID];
        snprintf(id, sizeof id, "worker-%d", o.max_workers - 1);
        parti__g_consumer_id(id, UINT64_MAX, cid, sizeof cid);
        if (parti_consumer_name(d.consumer_prefix, cid, name, sizeof name, NULL, 0) != PARTI_ERR_OK) {
            parti__msg(msg, msg_size, "config.consumer_prefix \"%.64s\" is too long: durable names "
                       "\"<prefix>-worker-N-<16 hex>\" must fit in %d characters", d.consumer_prefix, PARTI_MAX_NAME_LEN);
            parti_consumer_destroy(p->c);
            PARTI_FREE(p);
            return PARTI_ERR_INVALID_CONFIG;
        }
    }
    /* a group's consumer: only claimed partitions reach the handler; a new
     * durable starts with new messages (each partition is caught up from its
     * checkpoint) */
    p->c->group = 1;
    p->c->deliver = PARTI_DELIVER_NEW;
    if (!(p->gp = (parti__gpart *)PARTI_MALLOC(sizeof *p->gp * (size_t)p->c->cfg.partition_count + 1))) {
        parti_consumer_destroy(p->c);
        PARTI_FREE(p);
        parti__msg(msg, msg_size, "out of memory");
        return PARTI_ERR_NOMEM;
    }
    memset(p->gp, 0, sizeof *p->gp * (size_t)p->c->cfg.partition_count);
    parti_metrics_init(&p->gm);
    parti_backoff_init(&p->backoff, d.backoff_base_ms, d.backoff_cap_ms, 0);
    parti_backoff_init(&p->rb_backoff, d.backoff_base_ms, d.backoff_cap_ms, 0);
    p->instance = t->vt->random(t->self);
    p->last_id = -1;
    parti__g_member_value(p);
    p->state = PARTI_STATE_JOINING;
    *out = p;
    return PARTI_ERR_OK;
}

static void parti__g_free_members(parti *p) {
    int i;
    for (i = 0; i < (int)arrlen(p->members); i++) PARTI_FREE(p->members[i].id);
    arrfree(p->members);
    p->members = NULL;
}

PARTIDEF void parti_destroy(parti *p) {
    if (!p) return;
    if (p->wm) p->t.vt->kv_watch_stop(p->t.self, p->wm);
    if (p->wa) p->t.vt->kv_watch_stop(p->t.self, p->wa);
    parti__g_free_members(p);
    parti_assignment_free(&p->doc);
    arrfree(p->owned);
    PARTI_FREE(p->gp);
    arrfree(p->orphans);
    parti_consumer_destroy(p->c);
    PARTI_FREE(p);
}

/* ---- leadership ------------------------------------------------------------ */

static void parti__g_step_down(parti *p, parti_err why, const char *detail) {
    if (!p->leader) return;
    p->leader = 0;
    p->rb_pending = 0;
    p->renew_leader_due = 0;
    parti_gauge_set(&p->gm.is_leader, 0);
    parti__g_event(p, PARTI_EVENT_LOST_LEADERSHIP, why, 0, detail);
}

static void parti__g_schedule_rebalance(parti *p, uint64_t now, uint64_t delay, int urgent) {
    uint64_t due = now + delay;
    if (!p->leader) return;
    if (!p->rb_pending) {
        p->rb_pending = 1;
        p->rb_first = now;
        p->rb_change_at = now;
        p->rb_due = due;
    } else if (urgent) {
        if (due < p->rb_due) p->rb_due = due;
    } else {
        /* debounce: each change pushes the rebalance out, up to 4 windows after the first */
        uint64_t cap = p->rb_first + 4 * (uint64_t)p->opts.planned_window_ms;
        if (due > p->rb_due) p->rb_due = due < cap ? due : (cap > p->rb_due ? cap : p->rb_due);
    }
    if (p->rb_last && p->rb_due < p->rb_last + p->opts.min_rebalance_interval_ms)
        p->rb_due = p->rb_last + p->opts.min_rebalance_interval_ms;
}

static int parti__g_still_mine(parti *p, const char *key, uint64_t *rev);
static int parti__g_quiet(parti *p, uint64_t now);
static void parti__g_lose_partitions(parti *p, int want);
static void parti__g_reconcile(parti *p);
static void parti__g_apply_held(parti *p);
static void parti__g_renew_leader(parti *p, uint64_t now);
static void parti__g_lose_id(parti *p, parti_err e);
static int parti__g_doc_unowned(const parti *p, int *first, int cap);

/* The leader key's value: who leads, which process, under which epoch. */
static void parti__g_leader_value(const parti *p, uint64_t epoch, char *v, size_t cap) {
    snprintf(v, cap, "{\"worker\":\"%s\",\"instance\":\"%016llx\",\"epoch\":%llu}", p->id,
             (unsigned long long)p->instance, (unsigned long long)epoch);
}

/* The election. The leader key is created (create-if-absent) and then
 * stamped with the epoch: above its create revision (unique while the bucket
 * lives), above every epoch this worker saw or applied (so above the last
 * document's, even when the bucket was lost and made again). Until the stamp
 * is on the server (epoch_written) the leader publishes nothing: workers only
 * apply a document whose epoch the leader key holds. */
static void parti__g_try_elect(parti *p, uint64_t now) {
    char v[160];
    uint64_t rev = 0, epoch;
    parti_err e;
    /* the exemption ends with the leader lease held at the loss: until then
     * no other process can be elected in any bucket made after the loss (each
     * waits for the buckets to be one TTL old, and they were made after that
     * lease's last renewal). Not with the quiet period, which a later loss of
     * the buckets starts again: by then another may lead (seed 25635) */
    if (now >= p->led_until) p->led_until = 0;
    if (!p->led_until && parti__g_quiet(p, now)) return; /* the old leader's lease may still hold */
    /* a missing leader key means an expired lease only while the bucket is
     * the one this worker's own key lives in: read that back first (when
     * the bucket was lost with the server, this worker's key went too, and
     * it waits a TTL like the rest; the old leader may still lead) */
    {
        int mine = parti__g_still_mine(p, p->key, &rev);
        if (mine < 0) return; /* no answer: try at the next check */
        if (mine == 0) {
            parti__g_lose_id(p, PARTI_ERR_KEY_NOT_FOUND);
            return;
        }
        if (rev != p->my_rev) p->my_rev = rev; /* a renewal whose reply was lost */
    }
    parti__g_leader_value(p, 0, v, sizeof v);
    e = p->t.vt->kv_create(p->t.self, p->members_bucket, "leader", v, strlen(v), &rev, parti__g_budget(p));
    /* a create whose reply was lost may have landed: the key names this process then */
    if ((e == PARTI_ERR_TIMEOUT || e == PARTI_ERR_KEY_EXISTS) && parti__g_still_mine(p, "leader", &rev) > 0)
        e = PARTI_ERR_OK;
    if (e == PARTI_ERR_KEY_EXISTS) {
        p->leader_missing = 0;
        return;
    }
    if (e != PARTI_ERR_OK) {
        parti__g_fail(p, e, "leader election");
        return;
    }
    /* the bucket may have been lost between the read-back above and the
     * create (a server restart): the create then made the key in a new
     * bucket, where the old leader's key is gone but its lease still runs.
     * This worker's own key, still there after the create, says the create
     * went to the bucket the read-back saw (a lost bucket never comes back,
     * and nothing but this worker writes its key) */
    {
        uint64_t mrev = 0, lrev = 0;
        int mine = parti__g_still_mine(p, p->key, &mrev);
        if (mine == 0) { /* gone: do not lead; release the key for the one who led at the loss */
            if (p->t.vt->kv_delete_if && parti__g_still_mine(p, "leader", &lrev) > 0)
                p->t.vt->kv_delete_if(p->t.self, p->members_bucket, "leader", lrev, parti__g_budget(p));
            parti__g_lose_id(p, PARTI_ERR_KEY_NOT_FOUND);
            return;
        }
        if (mine < 0) { /* no answer: do not lead on it; the key, unrenewed, expires within a TTL */
            parti__g_fail(p, PARTI_ERR_TIMEOUT, "reading the worker ID back after the election");
            return;
        }
    }
    p->led_until = 0;
    epoch = rev;
    if (p->epoch >= epoch) epoch = p->epoch + 1;
    if (p->applied_epoch >= epoch) epoch = p->applied_epoch + 1;
    p->leader = 1;
    p->leader_missing = 0;
    p->leader_rev = rev;
    p->epoch_written = 0;
    parti__g_saw_epoch(p, epoch);
    p->lease_until = now + p->opts.member_ttl_ms - p->opts.heartbeat_ms;
    parti_counter_add(&p->gm.leader_elections, 1);
    parti_gauge_set(&p->gm.is_leader, 1);
    /* the members list of an earlier leadership went stale while this worker
     * did not lead (the watch updates it only for a leader): an ID still
     * listed may be held by another process now, and a member's process is
     * read only when its ID is new to the list, so its departure would
     * orphan the durable of the process that held the ID back then, not
     * the one that left (seeds 11881, 40369: the departed one's durable
     * stayed). Start from an empty list: the first look reads every member */
    parti__g_free_members(p);
    p->next_listing = now; /* learn the members at once */
    p->sweep_due = 1;      /* and the durables of processes that left under an earlier leader */
    parti__g_event(p, PARTI_EVENT_BECAME_LEADER, PARTI_ERR_OK, 0, p->id);
    /* no assignment yet: give the group the cold-start window to gather;
     * otherwise publish one under the new epoch soon (fencing the old leader) */
    parti__g_schedule_rebalance(p, now, p->doc_rev ? p->opts.emergency_grace_ms : p->opts.cold_start_ms, 1);
    /* stamp the epoch (a failure is retried by the renewal, which writes it too) */
    parti__g_renew_leader(p, now);
}

/* A write on key failed or went unanswered: was it our own earlier write,
 * applied on the server while its reply was lost? The key names this
 * process's instance when it was: 1, with *rev its revision to renew from.
 * 0 when the key is gone or another's; -1 when the read got no answer (keep
 * the key, try again). */
static int parti__g_still_mine(parti *p, const char *key, uint64_t *rev) {
    parti_kv_entry e;
    parti_err err;
    int mine;
    memset(&e, 0, sizeof e);
    err = p->t.vt->kv_get(p->t.self, p->members_bucket, key, 0, &e, parti__g_budget(p));
    if (err == PARTI_ERR_KEY_NOT_FOUND || err == PARTI_ERR_BUCKET_NOT_FOUND) return 0;
    if (err != PARTI_ERR_OK) return -1; /* no answer: nothing can be concluded */
    mine = parti__g_value_read(e.value, e.len).instance == p->instance;
    if (mine) *rev = e.revision;
    parti_kv_entry_free(&e);
    return mine;
}

/* What a renewal of the leader key sent at now gave back: e, and the key's
 * new revision when e is PARTI_ERR_OK. */
static void parti__g_leader_renewed(parti *p, uint64_t now, parti_err e, uint64_t rev) {
    int mine;
    if ((e == PARTI_ERR_WRONG_REVISION || e == PARTI_ERR_TIMEOUT) &&
        (mine = parti__g_still_mine(p, "leader", &rev)) != 0) {
        /* 1: the key is still this process's (an earlier write landed with its
         * reply lost): renew from its revision; -1: unknown yet: keep leading
         * until the lease says otherwise, and retry */
        if (mine > 0) p->leader_rev = rev;
        else parti__g_fail(p, PARTI_ERR_TIMEOUT, "reading the leader key back");
        p->renew_leader_due = 1;
    } else if (e == PARTI_ERR_OK) {
        p->leader_rev = rev;
        p->lease_until = now + p->opts.member_ttl_ms - p->opts.heartbeat_ms;
        p->key_epoch = p->epoch;
        p->key_instance = p->instance;
        if (!p->epoch_written) {
            p->epoch_written = 1;
            parti_gauge_set(&p->gm.leader_epoch, (double)p->epoch);
        }
    } else if (e == PARTI_ERR_WRONG_REVISION || e == PARTI_ERR_KEY_NOT_FOUND) {
        parti__g_fail(p, e, "renewing the leader key");
        parti__g_step_down(p, e, "the leader key was taken or expired");
    } else {
        parti__g_fail(p, e, "renewing the leader key");
        p->renew_leader_due = !p->epoch_written; /* the epoch must reach the key before anything is published */
    }
}

/* Renews the leader key (and with it writes the leader's current epoch). */
static void parti__g_renew_leader(parti *p, uint64_t now) {
    char v[160];
    uint64_t rev = 0;
    parti_err e;
    parti__g_leader_value(p, p->epoch, v, sizeof v);
    e = p->t.vt->kv_update(p->t.self, p->members_bucket, "leader", v, strlen(v), p->leader_rev, &rev,
                           parti__g_budget(p));
    parti__g_leader_renewed(p, now, e, rev);
}

/* kv_update_many, or kv_update for each in turn. Lease calls are never cut
 * short: the turns stop before one that would not have its whole op timeout
 * within the poll's budget. Returns how many were sent. */
static int parti__g_update_many(parti *p, const char *bucket, parti_kv_update *u, int n) {
    int i;
    if (p->t.vt->kv_update_many) {
        p->t.vt->kv_update_many(p->t.self, bucket, u, n, parti__g_budget(p));
        return n;
    }
    for (i = 0; i < n; i++) {
        if (i > 0 && !parti__g_lease_ok(p)) return i;
        u[i].err = p->t.vt->kv_update(p->t.self, bucket, u[i].key, u[i].value, u[i].len, u[i].expected,
                                      &u[i].revision, parti__g_budget(p));
    }
    return n;
}

/* The member lease: the worker acts on its ID (hands messages to the
 * handler) only until the send time of its last successful renewal plus
 * max_stale_ms, and never past the TTL less half a heartbeat: the server
 * removes the key no earlier than TTL after the renewal arrived, which is
 * after it was sent, so by then this worker has stopped. */
static uint64_t parti__g_lease_end(const parti *p) {
    uint64_t span = p->opts.member_ttl_ms - p->opts.heartbeat_ms / 2;
    if (p->opts.max_stale_ms < span) span = p->opts.max_stale_ms;
    return p->last_renew_ok + span;
}

static void parti__g_renewed(parti *p, uint64_t sent) {
    p->last_renew_ok = sent;
    p->c->lease_until = parti__g_lease_end(p);
    p->c->lease_lapsed = 0;
}

/* ---- membership ------------------------------------------------------------ */

static parti_err parti__g_open(parti *p) {
    parti_kv_config kc;
    parti_err e;
    memset(&kc, 0, sizeof kc);
    kc.bucket = p->members_bucket;
    kc.ttl_ms = p->opts.member_ttl_ms;
    kc.memory_storage = p->opts.memory_storage;
    if ((e = p->t.vt->kv_open(p->t.self, &kc, parti__g_budget(p))) != PARTI_ERR_OK) return e;
    kc.bucket = p->assign_bucket;
    kc.ttl_ms = 0;
    kc.max_value_size = 4u << 20;
    if ((e = p->t.vt->kv_open(p->t.self, &kc, parti__g_budget(p))) != PARTI_ERR_OK) return e;
    if (!p->wm && (e = p->t.vt->kv_watch(p->t.self, p->members_bucket, "", &p->wm, parti__g_budget(p))) !=
                      PARTI_ERR_OK)
        return e;
    if (!p->wa && (e = p->t.vt->kv_watch(p->t.self, p->assign_bucket, "assignment", &p->wa, parti__g_budget(p))) !=
                      PARTI_ERR_OK)
        return e;
    p->buckets_open = 1;
    return PARTI_ERR_OK;
}

/* Drops what the watches buffered so far. A worker that claims an ID reads
 * the leader key and the document afresh, so nothing buffered before the
 * claim is needed; and it may be from buckets lost since (a memory-storage
 * restart while the worker waited to join): the watchers outlive a
 * re-created bucket, and a lost bucket's document can carry the epoch and
 * version that the new bucket's leader publishes next (the epochs start
 * again), so the fence would pass it and the real document would then look
 * already applied. */
static void parti__g_discard_watched(parti *p) {
    parti_kv_watcher *ws[2];
    parti_kv_entry e;
    int i, guard;
    ws[0] = p->wm;
    ws[1] = p->wa;
    for (i = 0; i < 2; i++)
        for (guard = 0; ws[i] && guard < 10000; guard++) {
            memset(&e, 0, sizeof e);
            if (p->t.vt->kv_watch_next(p->t.self, ws[i], &e) != PARTI_ERR_OK) break;
            parti_kv_entry_free(&e);
        }
}

/* Memory-storage buckets die with a server restart, and with them every
 * lease: a process that starts just after could take the ID of one that
 * still runs on its old lease. So the group's buckets carry their birth (a
 * "born" key in the assignment bucket), and no worker claims a number other
 * than its own until one member TTL after it. The bucket's age is measured
 * on the server's clock alone (a second key written now, minus the birth),
 * so clock offsets between hosts do not shorten the wait; the wait runs on
 * this worker's clock. A new memory-storage group starts one TTL later. */
static parti_err parti__g_birth(parti *p) {
    parti_kv_entry born, probe;
    parti_err err;
    uint64_t rev = 0, age, now;
    char v[64];
    snprintf(v, sizeof v, "{\"by\":\"%016llx\",\"at\":%llu}", (unsigned long long)p->instance,
             (unsigned long long)parti__g_now(p));
    err = p->t.vt->kv_create(p->t.self, p->assign_bucket, "born", v, strlen(v), &rev, parti__g_budget(p));
    if (err == PARTI_ERR_OK) { /* made just now: the whole TTL */
        now = parti__g_now(p);
        if (now + p->opts.member_ttl_ms > p->quiet_until) p->quiet_until = now + p->opts.member_ttl_ms;
        p->quiet_confirm = 1;
        memcpy(p->born_seen, v, strlen(v) + 1);
        p->born_seen_rev = rev;
        return PARTI_ERR_OK;
    }
    if (err != PARTI_ERR_KEY_EXISTS && err != PARTI_ERR_TIMEOUT) return err;
    if ((err = p->t.vt->kv_put(p->t.self, p->assign_bucket, "clock", "{}", 2, &rev, parti__g_budget(p))) !=
        PARTI_ERR_OK)
        return err;
    memset(&born, 0, sizeof born);
    memset(&probe, 0, sizeof probe);
    if ((err = p->t.vt->kv_get(p->t.self, p->assign_bucket, "born", 0, &born, parti__g_budget(p))) != PARTI_ERR_OK)
        return err;
    err = p->t.vt->kv_get(p->t.self, p->assign_bucket, "clock", 0, &probe, parti__g_budget(p));
    age = probe.created_ms > born.created_ms ? probe.created_ms - born.created_ms : 0;
    p->born_seen[0] = 0;
    if (born.value && born.len < sizeof p->born_seen) {
        memcpy(p->born_seen, born.value, born.len);
        p->born_seen[born.len] = 0;
    }
    p->born_seen_rev = born.revision;
    parti_kv_entry_free(&born);
    parti_kv_entry_free(&probe);
    if (err != PARTI_ERR_OK) return err;
    now = parti__g_now(p);
    if (age < p->opts.member_ttl_ms && now + (p->opts.member_ttl_ms - age) > p->quiet_until)
        p->quiet_until = now + (p->opts.member_ttl_ms - age);
    p->quiet_confirm = age < p->opts.member_ttl_ms; /* else the server's clock says every old lease is over */
    return PARTI_ERR_OK;
}

/* Memory storage: 1 unless the buckets are one TTL old on the server's clock,
 * read now. A worker that has not yet noticed a restart (its next renewal is
 * still due) knows of no quiet period, yet the buckets it reads may be new
 * ones: a claim key or member key absent from them says nothing about the
 * leases of the lost ones (seed 73722). So before an absent claim key is
 * created or a holder is counted gone, the buckets' age is read after the
 * read that found the key missing: buckets one TTL old then were there when
 * that read ran, and every lease from before them is over. No answer: young. */
static int parti__g_buckets_young(parti *p, uint64_t now) {
    if (!p->opts.memory_storage) return 0;
    if (now < p->quiet_until) return 1;
    if (parti__g_birth(p) != PARTI_ERR_OK) return 1;
    return parti__g_now(p) < p->quiet_until;
}

/* 1 while the quiet period after an ID loss or a lost bucket lasts. It is
 * waited on this worker's clock, which may jump ahead (or run fast); with
 * memory storage its end is confirmed on the server's clock: the buckets
 * must be one TTL old (parti__g_birth), so every lease in a lost bucket is
 * over whatever this worker's clock did. No answer: still quiet. */
static int parti__g_quiet(parti *p, uint64_t now) {
    if (now < p->quiet_until) return 1;
    if (!p->opts.memory_storage || !p->quiet_confirm) return 0;
    if (parti__g_birth(p) != PARTI_ERR_OK) return 1;
    return parti__g_now(p) < p->quiet_until;
}

/* Whether the group's buckets are still the ones this worker claimed its ID
 * in: 1 yes, 0 no (memory storage: the "born" key is another, or gone), -1
 * no answer. File-storage buckets keep their revisions across restarts. */
static int parti__g_same_buckets(parti *p) {
    parti_kv_entry born;
    parti_err err;
    int same;
    if (!p->opts.memory_storage) return 1;
    memset(&born, 0, sizeof born);
    err = p->t.vt->kv_get(p->t.self, p->assign_bucket, "born", 0, &born, parti__g_budget(p));
    if (err == PARTI_ERR_KEY_NOT_FOUND || err == PARTI_ERR_BUCKET_NOT_FOUND) return 0;
    if (err != PARTI_ERR_OK) return -1;
    same = p->born[0] && born.revision == p->born_rev && born.len == strlen(p->born) &&
           memcmp(born.value, p->born, born.len) == 0;
    parti_kv_entry_free(&born);
    return same;
}

/* The buckets and the watches are opened again before the next use: they
 * may be new ones. */
static void parti__g_reopen_buckets(parti *p) {
    if (p->wm) p->t.vt->kv_watch_stop(p->t.self, p->wm);
    if (p->wa) p->t.vt->kv_watch_stop(p->t.self, p->wa);
    p->wm = p->wa = NULL;
    p->buckets_open = 0;
}

/* Claims the lowest free worker-N. */
static void parti__g_join(parti *p, uint64_t now) {
    char **keys = NULL, key[PARTI__G_MAX_ID + 2];
    int nkeys = 0, n, tries = 0, opened = 0;
    uint64_t rev = 0, delay = 0, lost_lease_end;
    parti_err e;
    if (now < p->retry_at) return;
    if (!p->stream_ok) {
        parti_stream_info si;
        char m[300];
        memset(&si, 0, sizeof si);
        e = p->t.vt->stream_info(p->t.self, p->c->cfg.stream, &si, parti__g_budget(p));
        if (e == PARTI_ERR_STREAM_NOT_FOUND && p->opts.create_stream && !p->stream_seen) {
            e = p->t.vt->stream_create(p->t.self, p->opts.create_stream, parti__g_budget(p));
            if (e == PARTI_ERR_OK) e = p->t.vt->stream_info(p->t.self, p->c->cfg.stream, &si, parti__g_budget(p));
        }
        if (e != PARTI_ERR_OK) {
            parti__g_fail(p, e, e == PARTI_ERR_STREAM_NOT_FOUND ? "waiting for the stream" : "checking the stream");
            goto retry;
        }
        e = parti_stream_check(&si, &p->c->cfg, m, sizeof m);
        parti_stream_info_free(&si);
        if (e != PARTI_ERR_OK) { /* the user's config and the stream disagree: retrying cannot help */
            p->fatal = e;
            p->last_err = e;
            p->last_err_ms = now;
            memcpy(p->last_msg, m, sizeof p->last_msg < sizeof m ? sizeof p->last_msg : sizeof m);
            p->last_msg[sizeof p->last_msg - 1] = 0;
            parti__g_log(p, PARTI_LOG_ERROR, "the stream does not fit the configuration", e, m);
            parti__g_set_state(p, PARTI_STATE_STOPPED);
            return;
        }
        p->stream_ok = p->stream_seen = 1;
    }
open_buckets:
    if (!p->buckets_open && (opened = 1, e = parti__g_open(p)) != PARTI_ERR_OK) {
        parti__g_fail(p, e, "opening the group's buckets");
        goto retry;
    }
    if (p->opts.memory_storage && (e = parti__g_birth(p)) != PARTI_ERR_OK) {
        parti__g_fail(p, e, "reading when the group's buckets were made");
        goto retry;
    }
    if ((e = p->t.vt->kv_keys(p->t.self, p->members_bucket, &keys, &nkeys, parti__g_budget(p))) != PARTI_ERR_OK) {
        parti__g_fail(p, e, "listing the members");
        goto retry;
    }
    /* a worker that lost its ID (an expiry, a lost bucket) claims the same
     * number first: IDs stay stable, and after a lost bucket the workers do
     * not take each other's numbers while the old holders still run.
     * It claims it at once, without the quiet period, only while the lease of
     * the lost ID would still hold: no one else could claim the number before
     * then (in buckets made after the key vanished, not before they are one
     * TTL old, which is after the renewal plus TTL). Past it another process
     * may have taken the number in buckets made since, and still run on that
     * lease when they are lost too: the worker's own number then waits the
     * quiet period like any other (seed 6890) */
    lost_lease_end = parti__g_lease_end(p); /* the lost ID's: its last renewal is the last one sent */
    n = p->last_id >= 0 && p->last_id < p->opts.max_workers ? -1 : 0;
    for (; n < p->opts.max_workers && tries < 16; n++) {
        int lo = 0, hi = nkeys - 1, found = 0, num = n < 0 ? p->last_id : n;
        int exempt = n < 0 && parti__g_now(p) < lost_lease_end;
        if (n >= 0 && n == p->last_id) continue; /* tried first */
        if (!exempt && parti__g_quiet(p, now)) { /* another number (or the own one too late): not yet */
            parti_strings_free(keys, nkeys);
            p->retry_at = p->quiet_until;
            return;
        }
        snprintf(key, sizeof key, "m.worker-%d", num);
        while (lo <= hi) { /* keys are sorted */
            int mid = (lo + hi) / 2, c = strcmp(keys[mid], key);
            if (c == 0) {
                found = 1;
                break;
            }
            if (c < 0) lo = mid + 1;
            else hi = mid - 1;
        }
        if (found) continue;
        tries++;
        e = p->t.vt->kv_create(p->t.self, p->members_bucket, key, p->value, strlen(p->value), &rev,
                               parti__g_budget(p));
        /* a claim that timed out may have landed: then the key holds our own value */
        if ((e == PARTI_ERR_TIMEOUT || e == PARTI_ERR_KEY_EXISTS) && parti__g_still_mine(p, key, &rev) > 0)
            e = PARTI_ERR_OK;
        if (e == PARTI_ERR_KEY_EXISTS) continue; /* someone was faster */
        if (e != PARTI_ERR_OK) {
            parti__g_fail(p, e, "claiming a worker ID");
            break;
        }
        memcpy(p->born, p->born_seen, sizeof p->born); /* read by parti__g_birth in this attempt, before the claim */
        p->born_rev = p->born_seen_rev;
        {
            /* the quiet period was judged, and "born" read, on the buckets of
             * that read; the attempt may have stalled after it (a pause) across
             * a restart that lost memory-storage buckets, and the claim then
             * went to new ones unchecked: an old holder of the number may still
             * run, and a late renewal would compare "born" with the wrong one.
             * "born" unchanged after the claim: it landed in the buckets that
             * were checked. Otherwise give the key back and start over */
            int same = parti__g_same_buckets(p);
            /* a claim of the own number without the quiet period answered
             * past the lost lease may have landed after another process
             * could take the number: given back too, and claimed again
             * after the quiet period */
            int late = exempt && parti__g_now(p) >= lost_lease_end;
            if (same != 1 || late) {
                uint64_t cur = 0;
                if (p->t.vt->kv_delete_if && parti__g_still_mine(p, key, &cur) > 0)
                    p->t.vt->kv_delete_if(p->t.self, p->members_bucket, key, cur, parti__g_budget(p));
                e = same == 0 ? PARTI_ERR_KEY_NOT_FOUND : PARTI_ERR_TIMEOUT;
                parti__g_fail(p, e, same != 1 ? "the group's buckets changed during the claim"
                                               : "the claim of its own ID was answered after its old lease");
                parti__g_reopen_buckets(p);
                break;
            }
        }
        parti_strings_free(keys, nkeys);
        parti__g_discard_watched(p); /* what came before the claim: read afresh below */
        memcpy(p->key, key, strlen(key) + 1);
        snprintf(p->id, sizeof p->id, "worker-%d", num);
        p->last_id = num;
        p->my_rev = rev;
        parti__g_renewed(p, now);
        p->next_heartbeat = now + p->opts.heartbeat_ms;
        p->next_leader_check = now;
        p->next_doc_check = now;
        p->stale = 0;
        parti_backoff_reset(&p->backoff);
        p->retry_at = 0;
        parti__g_set_state(p, PARTI_STATE_WAITING);
        parti__g_event(p, PARTI_EVENT_JOINED, PARTI_ERR_OK, 0, p->id);
        return;
    }
    if (n >= p->opts.max_workers && e == PARTI_ERR_OK) {
        e = PARTI_ERR_INVALID_WORKER_ID;
        parti__msg(p->last_msg, sizeof p->last_msg, "no free worker ID: all %d are taken (options.max_workers)",
                   p->opts.max_workers);
        p->last_err = e;
        p->last_err_ms = now;
    }
    parti_strings_free(keys, nkeys);
retry:
    if (e == PARTI_ERR_BUCKET_NOT_FOUND) { /* lost (a restart, a delete): make them again */
        p->buckets_open = 0;
        /* opened by an earlier call: the server has answered, so it is back,
         * and it says what to do. Made again now, not after a backoff that
         * grew while it was away (once a call: buckets gone again right
         * after this call made them wait the backoff) */
        if (!opened && !p->fatal) {
            keys = NULL;
            nkeys = tries = 0;
            goto open_buckets;
        }
    }
    parti_backoff_next(&p->backoff, parti__g_rng, p, &delay);
    p->retry_at = now + delay;
}

/* Another process holds this worker's ID (or it expired): stop at once, join again. */
static void parti__g_lose_id(parti *p, parti_err e) {
    /* a key that vanished before its TTL (a lost bucket) voids every lease in
     * it: the others may still run as their IDs, the old leader may still
     * lead. For one TTL this worker takes back only its own number and stands
     * for election only if it led (both were its own), and only while the
     * leader lease it held still runs */
    uint64_t now = parti__g_now(p);
    /* (only while the leases held: a worker whose lease had run out may have
     * lost its number, or the leadership, to another before the bucket went) */
    if (p->stale || now >= parti__g_lease_end(p)) p->last_id = -1;
    p->led_until = p->leader && now < p->lease_until ? p->lease_until : 0;
    p->quiet_until = now + p->opts.member_ttl_ms;
    p->quiet_confirm = 1;
    parti_counter_add(&p->gm.worker_id_conflicts, 1);
    parti__g_stop_consumer(p);
    parti__g_lose_partitions(p, 0);
    parti__consumer_forget_durable(p->c);
    p->reregister = 1; /* its registry key may be gone (the leader deleted it, or the bucket): written again */
    { /* the buckets may be new ones, where revisions start again: a write at
       * a remembered revision could match another's key. Claims it may still
       * hold are read back (by instance) before they are released */
        int i;
        for (i = 0; i < p->c->cfg.partition_count; i++)
            if (p->gp[i].rev) p->gp[i].rev = UINT64_MAX;
    }
    parti__g_step_down(p, e, "worker ID lost");
    parti__g_fail(p, e, "renewing the worker ID");
    parti__g_event(p, PARTI_EVENT_ID_LOST, e, 0, p->id);
    arrsetlen(p->owned, 0);
    parti_gauge_set(&p->gm.partitions_owned, 0);
    p->applied_epoch = p->applied_version = 0; /* take the next document as new */
    p->id[0] = 0;
    p->key[0] = 0;
    p->degraded = p->stale = 0;
    p->elect_due = p->readback_due = 0;
    parti_gauge_set(&p->gm.degraded, 0);
    parti__g_reopen_buckets(p);
    p->stream_ok = 0;
    /* the buckets may be new ones: trust nothing read from the old ones but
     * the highest epoch seen, which the member key reports to the next
     * leader (it raises its epoch above it, so this worker is not stranded) */
    p->kv_doc_rev = p->wrote_doc_rev = 0;
    p->key_epoch = p->key_instance = 0;
    if (e == PARTI_ERR_BUCKET_NOT_FOUND) {
        parti_assignment_free(&p->doc);
        p->doc_rev = 0;
    }
    parti__g_set_state(p, PARTI_STATE_JOINING);
}

/* ---- the handoff: claims and checkpoints --------------------------------------
 *
 * Each partition has a key "ck.<subject>" (parti_checkpoint_key) in the
 * assignment bucket: who holds
 * it (worker ID and process instance), its checkpoint (every message up to
 * seq done) and whether it was released. A worker hands a partition's
 * messages to the handler only after it claimed the key (a compare-and-swap;
 * the revision is the owner generation) and only while it holds it; the
 * claim succeeds only when the key is released, or its holder's member key
 * is gone or another process's (so the holder's lease has run out). The new
 * owner starts after the checkpoint. */

/* (parti_create checked that every partition's subject has a key) */
static void parti__g_ck_key(const parti *p, int i, char *key, size_t cap) {
    parti_checkpoint_key(p->c->psubj[i], key, cap);
}

/* The consumer's worker ID: the worker ID and the process instance, so each
 * process has a durable of its own ("<prefix>-worker-3-<16 hex>"): a process
 * that lost its ID (or a late request of it) can never change the durable of
 * the process that holds the ID now. Positions live in the checkpoints, so a
 * restarted process needs no durable of its predecessor's. */
static void parti__g_consumer_id(const char *id, uint64_t instance, char *out, size_t cap) {
    snprintf(out, cap, "%s-%016llx", id, (unsigned long long)instance);
}

/* Leader: the durable of a process that left (its member key is gone, or
 * another process holds its ID now) is deleted after options.orphan_grace_ms:
 * its partitions were released or are taken over after its lease, and their
 * next owners read from the stream, not from that durable. */
static void parti__g_orphan_durable(parti *p, const char *durable, const char *id, uint64_t instance, uint64_t now) {
    parti__gorphan o;
    int i;
    if (!instance || instance == p->instance || strlen(durable) >= sizeof o.durable || strlen(id) >= sizeof o.id) return;
    for (i = 0; i < (int)arrlen(p->orphans); i++)
        if (strcmp(p->orphans[i].durable, durable) == 0) return;
    memcpy(o.durable, durable, strlen(durable) + 1);
    memcpy(o.id, id, strlen(id) + 1);
    o.instance = instance;
    o.due = now + p->opts.orphan_grace_ms;
    arrput(p->orphans, o);
}

/* This process's durable for its current worker ID. */
static parti_err parti__g_durable(parti *p, const char *id, uint64_t instance, char *out, size_t cap) {
    char cid[PARTI__G_MAX_ID + 24];
    parti__g_consumer_id(id, instance, cid, sizeof cid);
    return parti_consumer_name(p->c->cfg.consumer_prefix, cid, out, cap, NULL, 0);
}

/* Deletes a durable, then (once it is gone) its registry key when drop_key:
 * at key_rev where kv_delete_if allows and key_rev is known, else as it is.
 * The durable delete's result (CONSUMER_NOT_FOUND and STREAM_NOT_FOUND
 * count as done). */
static parti_err parti__g_drop_durable(parti *p, const char *durable, int drop_key, uint64_t key_rev) {
    char key[PARTI_MAX_NAME_LEN + 4];
    parti_err e = p->t.vt->consumer_delete
                      ? p->t.vt->consumer_delete(p->t.self, p->c->cfg.stream, durable, parti__g_budget(p))
                      : PARTI_ERR_CONSUMER_NOT_FOUND;
    if (e != PARTI_ERR_OK && e != PARTI_ERR_CONSUMER_NOT_FOUND && e != PARTI_ERR_STREAM_NOT_FOUND) return e;
    snprintf(key, sizeof key, "d.%s", durable);
    if (drop_key && key_rev && p->t.vt->kv_delete_if)
        p->t.vt->kv_delete_if(p->t.self, p->assign_bucket, key, key_rev, parti__g_budget(p));
    else if (drop_key)
        p->t.vt->kv_delete(p->t.self, p->assign_bucket, key, parti__g_budget(p)); /* (else the next sweep) */
    return e;
}

static void parti__g_orphan(parti *p, const char *id, uint64_t instance, uint64_t now) {
    char durable[PARTI_MAX_NAME_LEN + 1];
    if (parti__g_durable(p, id, instance, durable, sizeof durable) == PARTI_ERR_OK)
        parti__g_orphan_durable(p, durable, id, instance, now);
}

/* The durables' registry: before a process's durable can exist, the key
 * "d.<durable>" in the assignment bucket names its process. A leader that
 * was not leading when a process left finds its durable there (its first
 * look at the members sweeps the registry); the key goes with the durable.
 * A failed write is tried again a heartbeat later (not waited for). */
static void parti__g_register(parti *p) {
    char durable[PARTI_MAX_NAME_LEN + 1], key[PARTI_MAX_NAME_LEN + 4], v[PARTI__G_MAX_ID + 64];
    uint64_t rev = 0, now = parti__g_now(p);
    if (!p->id[0] || (!p->reregister && strcmp(p->id, p->registered) == 0) || now < p->register_at) return;
    p->register_at = now + p->opts.heartbeat_ms;
    if (parti__g_durable(p, p->id, p->instance, durable, sizeof durable) != PARTI_ERR_OK) return;
    snprintf(key, sizeof key, "d.%s", durable);
    snprintf(v, sizeof v, "{\"instance\":\"%016llx\",\"worker\":\"%s\"}", (unsigned long long)p->instance, p->id);
    if (p->t.vt->kv_put(p->t.self, p->assign_bucket, key, v, strlen(v), &rev, parti__g_budget(p)) != PARTI_ERR_OK)
        return;
    /* back under another ID: this process's durable for the old one is used by
     * no one (its name holds this process's instance): it goes now (best
     * effort: else a leader's sweep finds it) */
    if (p->registered[0] && strcmp(p->registered, p->id) != 0 &&
        parti__g_durable(p, p->registered, p->instance, durable, sizeof durable) == PARTI_ERR_OK)
        parti__g_drop_durable(p, durable, 1, 0);
    memcpy(p->registered, p->id, sizeof p->registered);
    p->reregister = 0;
}

/* Leader, from its election until one sweep completes: every registered
 * durable whose (worker ID, process) is not a live member's is an orphan
 * (deleted after the grace, if its process does not hold that ID by then:
 * checked on the server right before the delete). A durable is named by the
 * ID and the process, so a process that came back under another ID does
 * not keep its old durable alive. A sweep cut short by a failed call is
 * done again at the next listing. */
static void parti__g_sweep_registry(parti *p, uint64_t now) {
    char **keys = NULL;
    int nkeys = 0, i, j, done = 1;
    if (p->t.vt->kv_keys(p->t.self, p->assign_bucket, &keys, &nkeys, parti__g_budget(p)) != PARTI_ERR_OK) return;
    for (i = 0; i < nkeys; i++) {
        parti_kv_entry ent;
        parti_json_doc doc;
        parti_err e;
        char id[PARTI__G_MAX_ID] = "";
        uint64_t instance;
        int live = 0;
        if (strncmp(keys[i], "d.", 2) != 0 || !keys[i][2]) continue;
        memset(&ent, 0, sizeof ent);
        e = p->t.vt->kv_get(p->t.self, p->assign_bucket, keys[i], 0, &ent, parti__g_budget(p));
        if (e != PARTI_ERR_OK) {
            if (e != PARTI_ERR_KEY_NOT_FOUND) done = 0; /* no answer: the next listing sweeps again */
            continue;
        }
        instance = parti__g_value_read(ent.value, ent.len).instance;
        if (ent.value && parti_json_parse(&doc, (const char *)ent.value, ent.len, NULL, NULL, 0) == PARTI_ERR_OK) {
            if (parti_json_get_string(&doc, parti_json_root(&doc), "worker", id, sizeof id, NULL) != PARTI_ERR_OK)
                id[0] = 0;
            parti_json_doc_free(&doc);
        }
        parti_kv_entry_free(&ent);
        for (j = 0; j < (int)arrlen(p->members); j++)
            live |= p->members[j].instance == instance && (!id[0] || strcmp(p->members[j].id, id) == 0);
        if (!live) parti__g_orphan_durable(p, keys[i] + 2, id, instance, now);
    }
    parti_strings_free(keys, nkeys);
    if (done) p->sweep_due = 0;
}

static void parti__g_delete_orphans(parti *p, uint64_t now) {
    int i, j;
    for (i = 0; i < (int)arrlen(p->orphans);) {
        parti_err e;
        uint64_t dkey_rev;
        int live = 0;
        char key[PARTI_MAX_NAME_LEN + 4];
        if (now < p->orphans[i].due) {
            i++;
            continue;
        }
        /* in use while its process holds the ID it was made for (a durable is
         * named by the ID and the process: one that came back under another
         * ID does not use it). The leader's list may lag a rejoin or lack the
         * instance, so the member key is read on the server right before the
         * delete; the registry key's revision is read before that, and the key
         * is removed only at it (a process that rejoined wrote it again) */
        for (j = 0; j < (int)arrlen(p->members); j++)
            live |= p->members[j].instance == p->orphans[i].instance &&
                    (!p->orphans[i].id[0] || strcmp(p->members[j].id, p->orphans[i].id) == 0);
        if (live) {
            arrdelswap(p->orphans, i);
            continue;
        }
        {
            parti_kv_entry ent;
            snprintf(key, sizeof key, "d.%s", p->orphans[i].durable);
            memset(&ent, 0, sizeof ent);
            dkey_rev = p->t.vt->kv_get(p->t.self, p->assign_bucket, key, 0, &ent, parti__g_budget(p)) == PARTI_ERR_OK
                           ? ent.revision
                           : 0;
            parti_kv_entry_free(&ent);
        }
        if (p->orphans[i].id[0]) {
            parti_kv_entry ent;
            parti_err ge;
            char mkey[PARTI__G_MAX_ID + 2];
            snprintf(mkey, sizeof mkey, "m.%s", p->orphans[i].id);
            memset(&ent, 0, sizeof ent);
            ge = p->t.vt->kv_get(p->t.self, p->members_bucket, mkey, 0, &ent, parti__g_budget(p));
            if (ge == PARTI_ERR_OK) live = parti__g_value_read(ent.value, ent.len).instance == p->orphans[i].instance;
            parti_kv_entry_free(&ent);
            if (ge != PARTI_ERR_OK && ge != PARTI_ERR_KEY_NOT_FOUND) { /* no answer: later */
                p->orphans[i].due = now + p->opts.heartbeat_ms;
                i++;
                continue;
            }
        }
        if (live) { /* its process holds that ID (again): its durable is in use */
            arrdelswap(p->orphans, i);
            continue;
        }
        /* the lease is checked at the delete, not only at the top of the step:
         * the read's answer can come back after a pause (or a reply held while
         * this process was not scheduled) past the lease, when another leader
         * may have assigned partitions to a process that took the ID back
         * since, which made and used its durable (seed 370: read 2.5 s before
         * the delete, 1.8 s past the lease). Inside the lease only this
         * leader's documents assign partitions, and they took the departed
         * process's away when it left */
        if (!p->leader || parti__g_now(p) >= p->lease_until) return;
        e = parti__g_drop_durable(p, p->orphans[i].durable, dkey_rev != 0, dkey_rev);
        if (e == PARTI_ERR_OK || e == PARTI_ERR_CONSUMER_NOT_FOUND || e == PARTI_ERR_STREAM_NOT_FOUND) {
            if (e == PARTI_ERR_OK) parti_counter_add(&p->gm.orphans_deleted, 1);
            arrdelswap(p->orphans, i);
        } else {
            p->orphans[i].due = now + p->opts.heartbeat_ms; /* tried again */
            i++;
        }
    }
}

static void parti__g_callback(parti *p, void (*fn)(void *, const int *, int), const int *list, int n) {
    if (fn && n > 0) fn(p->opts.user, list, n);
}

/* Puts the claimed partitions on the consumer's filter, at once (the
 * group debounced the assignment already). */
static void parti__g_apply_held(parti *p) {
    int n = p->c->cfg.partition_count, i, k = 0, *held;
    char cid[PARTI__G_MAX_ID + 24];
    parti_err e;
    if (p->stale || !p->id[0]) return;
    if (!(held = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1)))) {
        parti__g_fail(p, PARTI_ERR_NOMEM, "applying the assignment");
        return;
    }
    for (i = 0; i < n; i++)
        if (p->gp[i].st == PARTI__G_HELD) held[k++] = i;
    parti__g_register(p); /* (a failure is tried again a heartbeat later) */
    parti__g_consumer_id(p->id, p->instance, cid, sizeof cid);
    e = parti_consumer_update(p->c, cid, held, k);
    PARTI_FREE(held);
    if (e != PARTI_ERR_OK) parti__g_fail(p, e, parti_consumer_last_message(p->c));
    if (p->c->has_pending) p->c->pending_due = p->c->pending_since;
}

/* Partitions this worker held that it can no longer vouch for (its lease
 * ran out, its ID was lost): nothing more of them reaches the handler.
 * want: claim them again when the lease is back (if still assigned). */
static void parti__g_lose_partitions(parti *p, int want) {
    int n = p->c->cfg.partition_count, i, k = 0, *lost;
    lost = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1));
    for (i = 0; i < n; i++) {
        parti__gpart *g = &p->gp[i];
        if (g->st == PARTI__G_HELD) {
            parti__consumer_revoke(p->c, i);
            if (lost) lost[k++] = i;
        }
        /* (its key may still name this process: claimed again if still assigned, else released later) */
        if (g->st == PARTI__G_HELD && want) g->st = PARTI__G_WANT;
        else if (g->st == PARTI__G_HELD || g->st == PARTI__G_RELEASE) g->st = PARTI__G_DISOWN;
        else if (g->st == PARTI__G_WANT && !want) g->st = g->rev ? PARTI__G_DISOWN : PARTI__G_NONE;
        g->retry_at = 0;
    }
    if (lost) parti__g_callback(p, p->opts.on_partitions_lost, lost, k);
    PARTI_FREE(lost);
}

/* After a document: partitions it gives this worker are to be claimed;
 * partitions it no longer gives are revoked at once (nothing more reaches
 * the handler) and released with their checkpoint. */
static void parti__g_reconcile(parti *p) {
    int n = p->c->cfg.partition_count, i, k = 0, nb = 0, changed = 0, *mark, *revoked, *back;
    mark = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1));
    revoked = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1));
    back = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1));
    if (!mark || !revoked || !back) {
        PARTI_FREE(mark);
        PARTI_FREE(revoked);
        PARTI_FREE(back);
        parti__g_fail(p, PARTI_ERR_NOMEM, "applying the assignment");
        return;
    }
    memset(mark, 0, sizeof(int) * (size_t)n);
    for (i = 0; i < (int)arrlen(p->owned); i++) mark[p->owned[i]] = 1;
    for (i = 0; i < n; i++) {
        parti__gpart *g = &p->gp[i];
        if (mark[i] && (g->st == PARTI__G_NONE || g->st == PARTI__G_DISOWN)) {
            g->st = PARTI__G_WANT;
            g->retry_at = 0;
            g->delay = 0;
        } else if (mark[i] && g->st == PARTI__G_RELEASE && g->rev != UINT64_MAX) {
            /* back before its release was sent: still ours, from where it stopped */
            g->st = PARTI__G_HELD;
            parti__consumer_grant(p->c, i, p->c->pt[i].pos, g->gen);
            back[nb++] = i;
            changed = 1;
        } else if (mark[i] && g->st == PARTI__G_RELEASE) {
            /* a release was sent and its answer lost: it may have landed and
             * another owner come and gone; claimed again like any other */
            g->st = PARTI__G_WANT;
            g->retry_at = 0;
            g->delay = 0;
        } else if (!mark[i] && g->st == PARTI__G_WANT) {
            g->st = g->rev ? PARTI__G_DISOWN : PARTI__G_NONE; /* its key may name this process still */
        } else if (!mark[i] && g->st == PARTI__G_HELD) {
            parti__consumer_revoke(p->c, i);
            g->st = PARTI__G_RELEASE;
            g->retry_at = 0;
            revoked[k++] = i;
            changed = 1;
        }
    }
    parti__g_callback(p, p->opts.on_partitions_revoked, revoked, k);
    parti__g_callback(p, p->opts.on_partitions_assigned, back, nb);
    p->handoff_due = 0; /* claims and releases: at once */
    PARTI_FREE(mark);
    PARTI_FREE(revoked);
    PARTI_FREE(back);
    if (changed || (arrlen(p->owned) == 0 && !parti_consumer_is_paused(p->c))) parti__g_apply_held(p);
}

/* Writes partition i's checkpoint (its consumer position) over this
 * worker's claim; released: and lets it go. PARTI_ERR_OK; WRONG_REVISION
 * when the claim is another's now (lost); else a transient error (retry). */
static parti_err parti__g_ck_write_once(parti *p, int i, int released, int *again);

/* Writes partition i's checkpoint; an earlier write of this process whose
 * reply was lost is read back (its revision learned) and the write made
 * again, once. PARTI_ERR_OK, WRONG_REVISION (another holds it now), or an
 * error after which the write may or may not have landed. */
static parti_err parti__g_ck_write(parti *p, int i, int released) {
    int again = 0;
    parti_err e = parti__g_ck_write_once(p, i, released, &again);
    if (again) e = parti__g_ck_write_once(p, i, released, &again);
    return again ? PARTI_ERR_TIMEOUT : e;
}

/* A checkpoint write's answer e (not a conflict): written at rev, with
 * everything up to seq, or failed. */
static parti_err parti__g_ck_written(parti *p, parti__gpart *g, parti_err e, uint64_t rev, uint64_t seq) {
    if (e == PARTI_ERR_OK) {
        g->rev = rev;
        g->committed = seq;
        parti_counter_add(&p->gm.checkpoint_writes, 1);
        return PARTI_ERR_OK;
    }
    parti_counter_add(&p->gm.checkpoint_failures, 1);
    parti__g_fail(p, e, "writing a checkpoint");
    return e;
}

static parti_err parti__g_ck_write_once(parti *p, int i, int released, int *again) {
    parti__gpart *g = &p->gp[i];
    parti_checkpoint ck;
    parti_kv_entry ent;
    char key[PARTI_CHECKPOINT_KEY_SIZE], buf[PARTI_MAX_NAME_LEN + PARTI_MAX_SUBJECT_LEN + 256];
    size_t len = 0;
    uint64_t rev = 0, seq = p->c->pt[i].pos;
    parti_err e;
    *again = 0;
    memset(&ck, 0, sizeof ck);
    snprintf(ck.owner, sizeof ck.owner, "%s", p->id);
    ck.instance = p->instance;
    ck.generation = g->gen;
    ck.seq = seq;
    ck.stream_created_ns = p->c->stream_created;
    snprintf(ck.subject, sizeof ck.subject, "%s", p->c->psubj[i]);
    ck.released = released;
    if ((e = parti_checkpoint_encode(&ck, buf, sizeof buf, &len)) != PARTI_ERR_OK) return e;
    parti__g_ck_key(p, i, key, sizeof key);
    e = p->t.vt->kv_update(p->t.self, p->assign_bucket, key, buf, len - 1, g->rev, &rev, parti__g_budget(p));
    if (e != PARTI_ERR_WRONG_REVISION && e != PARTI_ERR_KEY_NOT_FOUND) return parti__g_ck_written(p, g, e, rev, seq);
    /* a revision other than ours: an earlier write whose reply was lost, or another owner */
    memset(&ent, 0, sizeof ent);
    e = p->t.vt->kv_get(p->t.self, p->assign_bucket, key, 0, &ent, parti__g_budget(p));
    if (e == PARTI_ERR_OK) {
        parti_checkpoint cur;
        /* (only this process writes its instance: the key is its own, from
         * whichever of its writes landed last) */
        int mine = parti_checkpoint_decode(&cur, (const char *)ent.value, ent.len) == PARTI_ERR_OK &&
                   cur.instance == p->instance && !cur.released;
        if (mine) {
            g->rev = ent.revision;
            g->gen = cur.generation ? cur.generation : ent.revision;
        }
        parti_kv_entry_free(&ent);
        if (mine) { /* ours still: write again at the revision read */
            *again = 1;
            return PARTI_ERR_TIMEOUT;
        }
        return PARTI_ERR_WRONG_REVISION;
    }
    if (e == PARTI_ERR_KEY_NOT_FOUND || e == PARTI_ERR_BUCKET_NOT_FOUND) {
        /* the key is gone: a lost bucket (memory storage) voids every lease in it: no absent key is
         * claimed, and no holder counted gone, for one TTL */
        uint64_t now = parti__g_now(p);
        if (p->opts.memory_storage && now + p->opts.member_ttl_ms > p->quiet_until) {
            p->quiet_until = now + p->opts.member_ttl_ms;
            p->quiet_confirm = 1;
        }
        /* a partition revoked while held in this lease is still released
         * with its checkpoint, into the key made again (create-if-absent):
         * the caller holds its lease, and no other process creates an
         * absent claim key before it ends, so none handles the partition
         * (seed 37505: a leave right after a restart lost the buckets wrote
         * nothing, and the next owner started the partition from the
         * stream's first message). Not a partition disowned after a lapse,
         * nor a release that may have landed (rev unknown): another may
         * have taken it over since, and may still run on its lease */
        if (released && g->st == PARTI__G_RELEASE && g->rev != UINT64_MAX && e == PARTI_ERR_KEY_NOT_FOUND &&
            p->t.vt->kv_create) {
            e = p->t.vt->kv_create(p->t.self, p->assign_bucket, key, buf, len - 1, &rev, parti__g_budget(p));
            if (e != PARTI_ERR_KEY_EXISTS) return parti__g_ck_written(p, g, e, rev, seq);
        }
        return PARTI_ERR_WRONG_REVISION;
    }
    return e;
}

/* 1 when the holder of a claim can no longer act on it: its member key is
 * gone or another process's (its lease ran out before), 0 when it may
 * still, -1 when the read got no answer. */
static int parti__g_holder_gone(parti *p, const parti_checkpoint *ck) {
    parti_kv_entry ent;
    char key[PARTI_MAX_NAME_LEN + 4];
    parti_err e;
    int gone;
    if (ck->instance == p->instance) return 1; /* this process's own claim (a reply lost, or from before a lapse) */
    /* a memory-storage bucket lost in a restart took the member keys with it,
     * not the leases: wait one TTL as for IDs (confirmed below on the server) */
    if (p->opts.memory_storage && parti__g_now(p) < p->quiet_until) return 0;
    if (strlen(ck->owner) >= PARTI__G_MAX_ID) return 1; /* no worker ID is that long: no member holds it */
    snprintf(key, sizeof key, "m.%s", ck->owner);
    memset(&ent, 0, sizeof ent);
    e = p->t.vt->kv_get(p->t.self, p->members_bucket, key, 0, &ent, parti__g_budget(p));
    if (e != PARTI_ERR_OK && e != PARTI_ERR_KEY_NOT_FOUND) return -1;
    gone = e == PARTI_ERR_KEY_NOT_FOUND || parti__g_value_read(ent.value, ent.len).instance != ck->instance;
    if (e == PARTI_ERR_OK) parti_kv_entry_free(&ent);
    /* (the bucket read may be a new one that this worker has not yet noticed) */
    if (gone && parti__g_buckets_young(p, parti__g_now(p))) return 0;
    return gone;
}

/* Tries to claim partition i: 1 when this worker holds it now (the
 * consumer then catches it up from its checkpoint), 0 to try again later. */
static int parti__g_claim(parti *p, int i, uint64_t now) {
    parti__gpart *g = &p->gp[i];
    parti_kv_entry ent;
    parti_checkpoint ck, mine;
    char key[PARTI_CHECKPOINT_KEY_SIZE], buf[PARTI_MAX_NAME_LEN + PARTI_MAX_SUBJECT_LEN + 256];
    size_t len = 0;
    uint64_t rev = 0, seq = 0, base = 0, own_pos = 0;
    int exists, own_untouched = 0;
    parti_err e;
    parti__g_ck_key(p, i, key, sizeof key);
    memset(&ent, 0, sizeof ent);
    e = p->t.vt->kv_get(p->t.self, p->assign_bucket, key, 0, &ent, parti__g_budget(p));
    if (e != PARTI_ERR_OK && e != PARTI_ERR_KEY_NOT_FOUND) return 0;
    exists = e == PARTI_ERR_OK;
    if (!exists && parti__g_buckets_young(p, now)) return 0; /* a lost bucket voids leases: wait */
    if (exists) {
        base = ent.revision;
        /* whatever subject it names (a value no worker of this list wrote),
         * a claim that its holder may still act on is waited for */
        if (parti_checkpoint_decode(&ck, (const char *)ent.value, ent.len) == PARTI_ERR_OK &&
            (ck.released ? 1 : parti__g_holder_gone(p, &ck)) != 1) {
            parti_kv_entry_free(&ent);
            return 0; /* its holder may still act on it: it releases it, or its lease runs out */
        }
        if (ck.subject[0] && strcmp(ck.subject, p->c->psubj[i]) == 0) { /* (a failed decode zeroes ck) */
            /* written under another stream than the one this worker last
             * read: the stream may have been made again since that read (a
             * stall, seed 3068), and a claim from the older reading would
             * drop the position the holder committed in the new one. Read
             * it again first */
            if (ck.stream_created_ns && ck.stream_created_ns != p->c->stream_created &&
                parti__consumer_check_stream(p->c, NULL) != PARTI_ERR_OK) {
                parti_kv_entry_free(&ent);
                return 0;
            }
            if (ck.stream_created_ns == p->c->stream_created) seq = ck.seq; /* (else: another stream's sequence) */
            own_untouched = ck.instance == p->instance && ent.revision == g->rev;
        }
        parti_kv_entry_free(&ent);
    }
    memset(&mine, 0, sizeof mine);
    snprintf(mine.owner, sizeof mine.owner, "%s", p->id);
    mine.instance = p->instance;
    mine.seq = seq;
    mine.stream_created_ns = p->c->stream_created;
    snprintf(mine.subject, sizeof mine.subject, "%s", p->c->psubj[i]);
    if (parti_checkpoint_encode(&mine, buf, sizeof buf, &len) != PARTI_ERR_OK) return 0;
    /* the reads above may have blocked past the lease (a stall): no claim then */
    if (parti__g_now(p) >= parti__g_lease_end(p)) return 0;
    e = exists ? p->t.vt->kv_update(p->t.self, p->assign_bucket, key, buf, len - 1, base, &rev, parti__g_budget(p))
               : p->t.vt->kv_create(p->t.self, p->assign_bucket, key, buf, len - 1, &rev, parti__g_budget(p));
    if (e != PARTI_ERR_OK) {
        /* another won it; or no answer: the claim may have landed, so the
         * key may name this process now: remembered, to be released if the
         * partition goes elsewhere before the claim is read again */
        if (e != PARTI_ERR_WRONG_REVISION && e != PARTI_ERR_KEY_EXISTS) g->rev = UINT64_MAX;
        return 0;
    }
    /* this process held it last and no one wrote it since: what it handled after the checkpoint is done */
    own_pos = own_untouched && p->c->pt[i].pos > seq ? p->c->pt[i].pos : seq;
    g->st = PARTI__G_HELD;
    g->rev = rev;
    g->gen = rev;
    g->committed = seq;
    parti_counter_add(&p->gm.partition_claims, 1);
    parti__consumer_grant(p->c, i, own_pos, rev);
    return 1;
}

/* 1 while a partition assigned to this worker is not claimed yet, or one
 * revoked is not released yet. */
static int parti__g_claims_pending(const parti *p) {
    int i;
    for (i = 0; i < p->c->cfg.partition_count; i++)
        if (p->gp[i].st == PARTI__G_WANT || p->gp[i].st == PARTI__G_RELEASE || p->gp[i].st == PARTI__G_DISOWN) return 1;
    return 0;
}

/* The handoff's work, only inside the lease: releases, claims, and the
 * checkpoints every commit interval. */
static void parti__g_partitions_step(parti *p, uint64_t now) {
    int n = p->c->cfg.partition_count, i, k = 0, *got = NULL, want = 0, lost_n = 0, *lost = NULL;
    parti_stream_info si;
    if (!p->id[0] || p->stale || now >= parti__g_lease_end(p)) {
        p->handoff_due = now + 10; /* (the lease is checked again then) */
        return;
    }
    for (i = 0; i < n; i++) {
        parti__gpart *g = &p->gp[i];
        parti_err e;
        if ((g->st != PARTI__G_RELEASE && g->st != PARTI__G_DISOWN) || now < g->retry_at) continue;
        e = parti__g_ck_write(p, i, 1);
        if (e != PARTI_ERR_OK && e != PARTI_ERR_WRONG_REVISION)
            g->rev = UINT64_MAX; /* it may have landed: read back before anything else (see reconcile) */
        if (e == PARTI_ERR_OK || e == PARTI_ERR_WRONG_REVISION) {
            g->st = PARTI__G_NONE;
            g->rev = 0;
            if (e == PARTI_ERR_OK) parti_counter_add(&p->gm.partition_releases, 1);
        } else {
            g->retry_at = now + (e == PARTI_ERR_TIMEOUT ? 0 : p->opts.heartbeat_ms / 4);
        }
    }
    for (i = 0; i < n && !want; i++) want = p->gp[i].st == PARTI__G_WANT && now >= p->gp[i].retry_at;
    /* the stream a checkpoint counts in: read before claims and commits (a
     * stream made again under the name restarts its sequences) */
    if ((want || now >= p->next_commit) && p->t.vt->stream_info) {
        memset(&si, 0, sizeof si);
        if (p->t.vt->stream_info(p->t.self, p->c->cfg.stream, &si, parti__g_budget(p)) == PARTI_ERR_OK) {
            parti__consumer_saw_stream(p->c, si.created_ns);
            parti_stream_info_free(&si);
        } else {
            p->handoff_due = now + p->opts.heartbeat_ms / 4; /* positions cannot be tied to a stream now */
            return;
        }
    }
    if (want && !(got = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1)))) return;
    for (i = 0; want && i < n; i++) {
        parti__gpart *g = &p->gp[i];
        if (g->st != PARTI__G_WANT || now < g->retry_at) continue;
        if (parti__g_claim(p, i, now)) {
            got[k++] = i;
        } else { /* the holder releases it soon (a graceful move), or its lease runs out */
            g->delay = g->delay ? g->delay * 2 : 5;
            if (g->delay > p->opts.heartbeat_ms / 2) g->delay = p->opts.heartbeat_ms / 2;
            g->retry_at = now + g->delay;
        }
    }
    if (k > 0) {
        parti__g_callback(p, p->opts.on_partitions_assigned, got, k);
        parti__g_apply_held(p);
    }
    PARTI_FREE(got);
    p->handoff_due = PARTI__G_NO_TIME;
    for (i = 0; i < n; i++)
        if ((p->gp[i].st == PARTI__G_WANT || p->gp[i].st == PARTI__G_RELEASE || p->gp[i].st == PARTI__G_DISOWN) &&
            p->gp[i].retry_at < p->handoff_due)
            p->handoff_due = p->gp[i].retry_at;
    if (now < p->next_commit) return;
    p->next_commit = now + p->opts.commit_interval_ms;
    for (i = 0; i < n; i++) {
        parti__gpart *g = &p->gp[i];
        parti_err e;
        if (g->st != PARTI__G_HELD || p->c->pt[i].pos == g->committed) continue;
        e = parti__g_ck_write(p, i, 0);
        if (e == PARTI_ERR_WRONG_REVISION) { /* another took it over: this worker's lease had run out */
            if (!lost && !(lost = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1)))) continue;
            parti__consumer_revoke(p->c, i);
            g->st = PARTI__G_WANT;
            g->retry_at = now + p->opts.heartbeat_ms;
            lost[lost_n++] = i;
        }
    }
    if (lost_n) {
        parti__g_callback(p, p->opts.on_partitions_lost, lost, lost_n);
        parti__g_apply_held(p);
    }
    PARTI_FREE(lost);
}

/* What the member key's renewal sent at now gave back (e, rev; with e
 * PARTI_ERR_WRONG_REVISION and nothing sent, a read-back is due). 1 when the
 * ID is renewed. */
static int parti__g_member_renewed(parti *p, uint64_t now, parti_err e, uint64_t rev) {
    int mine;
    if (e == PARTI_ERR_WRONG_REVISION) { /* read the key back before concluding anything */
        mine = parti__g_still_mine(p, p->key, &rev);
        p->readback_due = mine < 0;
        if (mine > 0) {
            /* an earlier renewal landed and its reply was lost: the ID is still ours;
             * renew from its revision soon (the lease counts from a renewal we saw) */
            p->my_rev = rev;
            p->next_heartbeat = now;
            return 0;
        }
        if (mine < 0) e = PARTI_ERR_TIMEOUT; /* no answer: not a lost ID yet */
    }
    if (e == PARTI_ERR_WRONG_REVISION || e == PARTI_ERR_KEY_NOT_FOUND || e == PARTI_ERR_BUCKET_NOT_FOUND) {
        /* (a missing bucket: a memory-storage server restarted and lost it) */
        parti__g_lose_id(p, e);
        return 0;
    }
    if (e != PARTI_ERR_OK) {
        parti_counter_add(&p->gm.heartbeat_failures, 1);
        parti__g_fail(p, e, "heartbeat");
        return 0;
    }
    p->my_rev = rev;
    if (parti__g_now(p) >= parti__g_lease_end(p)) {
        /* answered past the lease: the write may have waited (a stall, a
         * client's buffer) until a restart lost the memory-storage buckets
         * and another process claimed this number in the new ones, where
         * the revision it carried was that process's: it overwrote that key,
         * and a read-back would name this process. No one else could claim
         * the number before this lease ran out (the quiet period after a
         * lost bucket), so an answer inside it needs no check */
        int same = parti__g_same_buckets(p);
        if (same == 0) {
            parti__g_lose_id(p, PARTI_ERR_KEY_NOT_FOUND);
            return 0;
        }
        if (same < 0) { /* the lease stays over: the key is read back, renewed and checked again */
            parti_counter_add(&p->gm.heartbeat_failures, 1);
            parti__g_fail(p, PARTI_ERR_TIMEOUT, "reading which buckets these are");
            return 0;
        }
    }
    parti__g_renewed(p, now);
    if (p->degraded) { /* the control plane is back */
        p->degraded = 0;
        parti_gauge_set(&p->gm.degraded, 0);
        if (p->stale) {
            p->stale = 0;
            parti__g_apply_held(p); /* resume the last assignment; a newer one may follow */
        }
        p->next_doc_check = now;
        parti__g_set_state(p, p->applied_version ? PARTI_STATE_STABLE : PARTI_STATE_WAITING);
    }
    return 1;
}

static void parti__g_heartbeat(parti *p, uint64_t now) {
    uint64_t rev = 0, lrev = 0;
    parti_err e = PARTI_ERR_WRONG_REVISION, le = PARTI_ERR_OK; /* (after an inconclusive read-back: read again first) */
    int leader_sent = 0, renewed;
    if (!parti__g_lease_ok(p)) return; /* still due: the next poll renews first */
    p->next_heartbeat = now + p->opts.heartbeat_ms;
    if (!p->readback_due) {
        /* a leader renews its member key and the leader key together: when
         * it dies, the server then expires both in the same pass, and the
         * election that needs the leader key gone does not wait for the
         * server's next pass (at least 250 ms later) after the member key's.
         * Only inside the member lease (a fresh reading) and after a member
         * renewal that worked: then the member key cannot have expired, and
         * a leader whose member renewals fail does not keep the leader key
         * alive past its ID (otherwise the leader key waits for the member
         * key's renewal, as it did alone; review: a leader whose member
         * writes hung renewed the leader key until it lost its ID, and the
         * group then waited a TTL for a leader) */
        parti_kv_update u[2];
        char lv[160];
        int n = 1;
        memset(u, 0, sizeof u);
        u[0].key = p->key, u[0].value = p->value, u[0].len = strlen(p->value), u[0].expected = p->my_rev;
        if (p->leader && !p->stale && !p->member_failed && parti__g_now(p) < parti__g_lease_end(p)) {
            parti__g_leader_value(p, p->epoch, lv, sizeof lv);
            u[1].key = "leader", u[1].value = lv, u[1].len = strlen(lv), u[1].expected = p->leader_rev;
            n = 2;
        }
        leader_sent = parti__g_update_many(p, p->members_bucket, u, n) == 2;
        e = u[0].err;
        rev = u[0].revision;
        le = u[1].err;
        lrev = u[1].revision;
    }
    renewed = parti__g_member_renewed(p, now, e, rev);
    p->member_failed = !renewed;
    /* the leader key's result after the member key's: an ID lost in the
     * same heartbeat is settled while this worker still leads (it keeps the
     * right to stand again at once in buckets made after a loss), and a
     * worker that no longer leads does not act on the leader key */
    if (leader_sent) {
        if (p->leader) parti__g_leader_renewed(p, now, le, lrev);
    } else if (renewed && p->leader && !p->renew_leader_due) {
        if (parti__g_lease_ok(p)) parti__g_renew_leader(p, now);
        else p->renew_leader_due = 1;
    }
}

/* Degraded mode: renewals failing. Keep processing inside the lease, then
 * stop (another worker may own the partitions by now). now must be a fresh
 * reading, taken after any call that could block. */
static void parti__g_check_staleness(parti *p, uint64_t now) {
    uint64_t silent = now - p->last_renew_ok;
    if (!p->id[0]) return;
    if (!p->degraded && silent > 2 * (uint64_t)p->opts.heartbeat_ms) {
        p->degraded = 1;
        parti_gauge_set(&p->gm.degraded, 1);
        parti__g_set_state(p, PARTI_STATE_DEGRADED);
    }
    if (!p->stale && (now >= parti__g_lease_end(p) || p->c->lease_lapsed)) {
        if (!p->degraded) {
            p->degraded = 1;
            parti_gauge_set(&p->gm.degraded, 1);
            parti__g_set_state(p, PARTI_STATE_DEGRADED);
        }
        p->stale = 1;
        parti__g_stop_consumer(p);
        parti__g_lose_partitions(p, 1);
        /* find out at once whether the ID is still this worker's, by reading
         * the key, not by a compare-and-swap: past the lease the key may be
         * another process's at the same revision (a bucket made again) */
        p->next_heartbeat = now;
        p->readback_due = 1;
    }
    if (p->leader && now >= p->lease_until) /* before anyone else can win */
        parti__g_step_down(p, PARTI_ERR_TIMEOUT, "leader key not renewed in time");
}

/* ---- the assignment --------------------------------------------------------- */

static int parti__g_cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Reads the leader key: 1 when it holds epoch and, unless instance is 0, is
 * held by that process (the key is then recorded), 0 when it is gone or
 * holds another, -1 when the read got no answer. */
static int parti__g_leader_holds(parti *p, uint64_t epoch, uint64_t instance) {
    parti_kv_entry e;
    parti_err err;
    memset(&e, 0, sizeof e);
    err = p->t.vt->kv_get(p->t.self, p->members_bucket, "leader", 0, &e, parti__g_budget(p));
    if (err == PARTI_ERR_KEY_NOT_FOUND || err == PARTI_ERR_BUCKET_NOT_FOUND) {
        p->key_epoch = p->key_instance = 0;
        return 0;
    }
    if (err != PARTI_ERR_OK) return -1;
    parti__g_saw_leader_key(p, &e);
    parti_kv_entry_free(&e);
    return p->key_epoch == epoch && p->key_instance != 0 && (!instance || p->key_instance == instance);
}

/* A document on the assignment key that is not to be applied (garbage,
 * another partition list, a stale or unfenced leader's): workers keep the
 * last good one; the leader writes a good one over it. */
static void parti__g_doc_rejected(parti *p, uint64_t rev, parti_err e, const char *why) {
    parti_counter_add(&p->gm.assignments_rejected, 1);
    parti__g_fail(p, e, why);
    if (p->leader && rev != p->wrote_doc_rev) parti__g_schedule_rebalance(p, parti__g_now(p), 0, 1);
}

/* Considers a document read from KV (untrusted). A document is applied only
 * when it is newer than the applied one AND the leader key holds its epoch
 * and its writer's instance when it is read (fencing: a leader that lost the
 * key cannot have a late write applied, also when a bucket made again after
 * a restart gave a later leader the same epoch (seed 469); the leader checks
 * its own documents too). own: written by this worker as leader. */
static void parti__g_consider(parti *p, const uint8_t *data, size_t len, uint64_t rev, int own) {
    parti_assignment a;
    char m[160];
    int me, n, changed, i, held;
    parti_err e;
    memset(&a, 0, sizeof a);
    if (rev > p->kv_doc_rev) p->kv_doc_rev = rev;
    if ((e = parti_assignment_decode(&a, (const char *)data, len, m, sizeof m)) != PARTI_ERR_OK) {
        parti__g_doc_rejected(p, rev, e, "reading the assignment");
        return;
    }
    if (a.partitions_fingerprint != parti_partitions_fingerprint(p->c->cfg.partitions, p->c->cfg.partition_count) ||
        a.partition_count != p->c->cfg.partition_count) {
        parti_assignment_free(&a);
        parti__g_doc_rejected(p, rev, PARTI_ERR_INVALID_CONFIG, "the assignment is for another partition list");
        return;
    }
    /* (top_*: what was applied before an ID loss, which resets applied_*:
     * the same document may be applied again, an older one may not) */
    if (a.epoch < p->epoch || a.epoch < p->applied_epoch ||
        (a.epoch == p->applied_epoch && a.version <= p->applied_version) ||
        (a.epoch == p->top_epoch && a.version < p->top_version)) {
        /* already applied, or an older leader's; one written over the leader's own is replaced */
        if (p->leader && rev > p->wrote_doc_rev && rev != p->doc_rev)
            parti__g_doc_rejected(p, rev, PARTI_ERR_WRONG_REVISION, "an older leader wrote the assignment");
        parti_assignment_free(&a);
        return;
    }
    if ((held = parti__g_leader_holds(p, a.epoch, a.leader)) != 1) {
        parti_assignment_free(&a);
        if (own && held == 0) { /* written, but the key is gone (a lost bucket): not a leader's document */
            parti__g_step_down(p, PARTI_ERR_KEY_NOT_FOUND, "the leader key is gone");
            return;
        }
        if (held < 0) { /* cannot tell now: keep the last one, read again soon */
            p->next_doc_check = parti__g_now(p) + p->opts.heartbeat_ms;
            parti__g_fail(p, PARTI_ERR_TIMEOUT, "checking the assignment's epoch against the leader key");
            return;
        }
        parti__g_doc_rejected(p, rev, PARTI_ERR_WRONG_REVISION,
                              "the assignment's epoch is not the leader key's (a stale or foreign writer)");
        return;
    }
    parti__g_saw_epoch(p, a.epoch);
    if (a.epoch > p->top_epoch || (a.epoch == p->top_epoch && a.version > p->top_version)) {
        p->top_epoch = a.epoch;
        p->top_version = a.version;
        parti__g_member_value(p);
    }
    parti_assignment_free(&p->doc);
    p->doc = a;
    p->doc_rev = rev;
    p->applied_epoch = a.epoch;
    p->applied_version = a.version;
    parti_gauge_set(&p->gm.assignment_version, (double)a.version);
    parti_gauge_set(&p->gm.leader_epoch, (double)p->epoch);
    me = p->id[0] ? parti_assignment_member_index(&p->doc, p->id) : -1;
    n = me >= 0 ? parti_assignment_partitions_of(&p->doc, me, NULL, 0) : 0;
    changed = n != (int)arrlen(p->owned);
    {
        int *mine = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1));
        if (!mine) {
            parti__g_fail(p, PARTI_ERR_NOMEM, "applying the assignment");
            return;
        }
        if (n) parti_assignment_partitions_of(&p->doc, me, mine, n);
        qsort(mine, (size_t)n, sizeof *mine, parti__g_cmp_int);
        for (i = 0; !changed && i < n; i++) changed = mine[i] != p->owned[i];
        arrsetlen(p->owned, n);
        for (i = 0; i < n; i++) p->owned[i] = mine[i];
        PARTI_FREE(mine);
    }
    parti_gauge_set(&p->gm.partitions_owned, (double)n);
    parti_gauge_set(&p->gm.partitions_unassigned, (double)parti__g_doc_unowned(p, NULL, 0));
    parti__g_reconcile(p);
    if (p->state == PARTI_STATE_LEAVING) return; /* (the leader's parting document) */
    if (me < 0) {
        if (p->state != PARTI_STATE_DEGRADED) parti__g_set_state(p, PARTI_STATE_WAITING);
        return;
    }
    if (changed || p->state == PARTI_STATE_WAITING) {
        if (p->state != PARTI_STATE_DEGRADED) parti__g_set_state(p, PARTI_STATE_REBALANCING);
        parti__g_event(p, PARTI_EVENT_ASSIGNMENT_CHANGED, PARTI_ERR_OK, 0, "");
    }
}

static void parti__g_read_doc(parti *p) {
    parti_kv_entry e;
    parti_err err;
    memset(&e, 0, sizeof e);
    err = p->t.vt->kv_get(p->t.self, p->assign_bucket, "assignment", 0, &e, parti__g_budget(p));
    if (err == PARTI_ERR_OK) {
        parti__g_consider(p, e.value, e.len, e.revision, 0);
        parti_kv_entry_free(&e);
    } else if (err == PARTI_ERR_KEY_NOT_FOUND) {
        p->kv_doc_rev = 0; /* deleted or never written: the leader creates it */
        if (p->leader && p->doc_rev) parti__g_schedule_rebalance(p, parti__g_now(p), 0, 1);
    } else {
        parti__g_fail(p, err, "reading the assignment");
    }
}

/* ---- the leader's view of the members and its rebalances -------------------- */

static int parti__g_member_find(const parti *p, const char *id) {
    int lo = 0, hi = (int)arrlen(p->members) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(p->members[mid].id, id);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static int parti__g_cmp_member(const void *a, const void *b) {
    return strcmp(((const parti__gmember *)a)->id, ((const parti__gmember *)b)->id);
}

/* Lists the member keys: the source of truth for who is alive. Joins and
 * leaves found here (the watch may have missed them) schedule a rebalance. */
static void parti__g_list_members(parti *p, uint64_t now) {
    char **keys = NULL;
    int nkeys = 0, i, j;
    parti__gmember *fresh = NULL;
    int joined = 0, left = 0, first = arrlen(p->members) == 0; /* a new leader's first look: no news */
    parti_err e;
    p->next_listing = now + p->opts.heartbeat_ms;
    if ((e = p->t.vt->kv_keys(p->t.self, p->members_bucket, &keys, &nkeys, parti__g_budget(p))) != PARTI_ERR_OK) {
        parti__g_fail(p, e, "listing the members");
        return;
    }
    for (i = 0; i < nkeys; i++) {
        parti__gmember m;
        if (strncmp(keys[i], "m.", 2) != 0 || !keys[i][2] || strlen(keys[i]) - 2 >= PARTI__G_MAX_ID) continue;
        m.id = parti__strdup(keys[i] + 2);
        m.capacity = 1;
        m.instance = 0;
        if (!m.id) continue;
        j = parti__g_member_find(p, m.id);
        if (j >= 0) {
            m.capacity = p->members[j].capacity;
            m.instance = p->members[j].instance;
        } else {
            parti_kv_entry ent;
            memset(&ent, 0, sizeof ent);
            if (p->t.vt->kv_get(p->t.self, p->members_bucket, keys[i], 0, &ent, parti__g_budget(p)) ==
                PARTI_ERR_OK) {
                parti__gvalue mv = parti__g_value_read(ent.value, ent.len);
                m.capacity = mv.capacity;
                m.instance = mv.instance;
                parti_kv_entry_free(&ent);
            }
            /* a new leader's first look finds every member new: those are
             * not joins to debounce (a planned window would push back the
             * rebalance that the election scheduled after a crash) */
            if (!first) joined++;
            if (!first && strcmp(m.id, p->id) != 0)
                parti__g_event(p, PARTI_EVENT_MEMBER_JOINED, PARTI_ERR_OK, 0, m.id);
        }
        arrput(fresh, m);
    }
    parti_strings_free(keys, nkeys);
    if (arrlen(fresh) > 1) qsort(fresh, (size_t)arrlen(fresh), sizeof *fresh, parti__g_cmp_member);
    for (i = 0; i < (int)arrlen(p->members); i++) {
        int lo = 0, hi = (int)arrlen(fresh) - 1, found = 0;
        while (lo <= hi) {
            int mid = (lo + hi) / 2, c = strcmp(fresh[mid].id, p->members[i].id);
            if (c == 0) {
                found = 1;
                break;
            }
            if (c < 0) lo = mid + 1;
            else hi = mid - 1;
        }
        if (!found) {
            left++;
            parti__g_event(p, PARTI_EVENT_MEMBER_LEFT, PARTI_ERR_OK, 0, p->members[i].id);
            parti__g_orphan(p, p->members[i].id, p->members[i].instance, now);
        }
    }
    parti__g_free_members(p);
    p->members = fresh;
    parti_gauge_set(&p->gm.members_current, (double)arrlen(p->members));
    if (p->sweep_due) parti__g_sweep_registry(p, now); /* durables of processes that left under an earlier leader */
    /* (a member that deleted its key left gracefully: its partitions move at once) */
    if (left) parti__g_schedule_rebalance(p, now, p->graceful_left ? 0 : p->opts.emergency_grace_ms, 1);
    else if (joined) parti__g_schedule_rebalance(p, now, p->opts.planned_window_ms, 0);
    p->graceful_left = 0;
    /* the published document must list exactly the live members */
    if (!p->rb_pending && p->doc_rev) {
        int differs = p->doc.member_count != (int)arrlen(p->members);
        for (i = 0; !differs && i < p->doc.member_count; i++) differs = strcmp(p->doc.members[i], p->members[i].id);
        if (differs) parti__g_schedule_rebalance(p, now, p->opts.planned_window_ms, 0);
    }
}

/* A worker's consumer holds at most max_subjects partitions: partitions
 * placed beyond that are left unowned (and reported) rather than given to a
 * worker whose consumer update must then fail for all of them. */
static void parti__g_cap_owners(parti *p, int *owner, int pc, int nm) {
    int *count = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(nm + 1)), i, cap = p->c->cfg.max_subjects, left = 0;
    char names[160];
    size_t used = 0;
    if (!count) return;
    memset(count, 0, sizeof(int) * (size_t)(nm + 1));
    names[0] = 0;
    for (i = 0; i < pc; i++) {
        if (owner[i] < 0 || owner[i] >= nm || cap <= 0) continue;
        if (++count[owner[i]] <= cap) continue;
        owner[i] = -1;
        if (left++ < 8 && used + 16 < sizeof names)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%d", used ? "," : "", i);
    }
    PARTI_FREE(count);
    if (left != p->unassignable) {
        char m[400];
        if (left) {
            snprintf(m, sizeof m, "%d partitions left unowned: %d workers hold at most %d each (max_subjects); "
                     "partitions %s%s", left, nm, cap, names, left > 8 ? ",..." : "");
            parti__g_fail(p, PARTI_ERR_TOO_MANY_SUBJECTS, m);
            parti__msg(p->last_msg, sizeof p->last_msg, "%.255s", m);
        }
    }
    p->unassignable = left;
}

/* Partitions the applied document leaves without an owner. */
static int parti__g_doc_unowned(const parti *p, int *first, int cap) {
    int i, n = 0;
    for (i = 0; p->doc.owner && i < p->doc.partition_count; i++)
        if (p->doc.owner[i] < 0) {
            if (n < cap) first[n] = i;
            n++;
        }
    return n;
}

/* Computes and publishes the next assignment. */
static void parti__g_rebalance(parti *p, uint64_t now) {
    parti_assign_input in;
    parti_member *mem = NULL;
    const char **prev = NULL;
    int *owner = NULL, i, moved;
    parti_assignment a;
    char m[200], *buf = NULL;
    size_t need = 0;
    uint64_t rev = 0, delay = 0;
    parti_err e;
    int pc = p->c->cfg.partition_count, nm;
    memset(&a, 0, sizeof a);
    parti__g_list_members(p, now); /* the freshest view */
    nm = (int)arrlen(p->members);
    if (!p->leader) return;
    if (nm == 0) { /* not even this worker: its key is gone; the heartbeat will sort it out */
        p->rb_due = now + p->opts.heartbeat_ms;
        return;
    }
    mem = (parti_member *)PARTI_MALLOC(sizeof *mem * (size_t)nm);
    prev = (const char **)PARTI_MALLOC(sizeof *prev * (size_t)(pc + 1));
    owner = (int *)PARTI_MALLOC(sizeof *owner * (size_t)(pc + 1));
    e = PARTI_ERR_NOMEM;
    if (!mem || !prev || !owner) goto fail;
    for (i = 0, nm = 0; i < (int)arrlen(p->members); i++) {
        if (p->parting && strcmp(p->members[i].id, p->id) == 0) continue; /* leaving: not in its own last one */
        mem[nm].id = p->members[i].id;
        mem[nm].capacity = p->members[i].capacity;
        nm++;
    }
    if (nm == 0) goto done; /* a lone leader leaving: no one to hand over to */
    for (i = 0; i < pc; i++) prev[i] = p->doc_rev ? parti_assignment_owner_id(&p->doc, i) : NULL;
    in.partitions = p->c->cfg.partitions;
    in.partition_count = pc;
    in.members = mem;
    in.member_count = nm;
    in.previous_owner = prev;
    if ((e = parti_assign(&in, &p->opts.assign, owner, m, sizeof m)) != PARTI_ERR_OK) goto fail;
    moved = parti_assign_moved(&in, owner);
    parti__g_cap_owners(p, owner, pc, nm);
    if ((e = parti_assignment_build(&a, &in, owner, p->epoch, p->doc.version + 1)) != PARTI_ERR_OK) goto fail;
    a.leader = p->instance; /* fenced with the epoch: see the wire format */
    if ((e = parti_assignment_encode(&a, NULL, 0, &need)) != PARTI_ERR_BUFFER_TOO_SMALL && e != PARTI_ERR_OK) goto fail;
    if (!(buf = (char *)PARTI_MALLOC(need))) {
        e = PARTI_ERR_NOMEM;
        goto fail;
    }
    if ((e = parti_assignment_encode(&a, buf, need, NULL)) != PARTI_ERR_OK) goto fail;
    /* the lease is checked at the write, not only at the top of the step (a
     * pause in between must not let a deposed leader write; workers also
     * check the leader key when they read the document) */
    if (!p->leader || parti__g_now(p) >= p->lease_until) goto done;
    if (p->kv_doc_rev)
        e = p->t.vt->kv_update(p->t.self, p->assign_bucket, "assignment", buf, need - 1, p->kv_doc_rev, &rev,
                               parti__g_budget(p));
    else
        e = p->t.vt->kv_create(p->t.self, p->assign_bucket, "assignment", buf, need - 1, &rev, parti__g_budget(p));
    if (e == PARTI_ERR_WRONG_REVISION || e == PARTI_ERR_KEY_EXISTS) {
        /* someone wrote since. Only the leader key says who leads: step down
         * when it is gone or shows another holder (a higher epoch under this
         * process's own key cannot be: reading it raises ours), otherwise
         * write again over what is there (an old leader's late write, garbage) */
        parti_kv_entry cur;
        parti_err ge;
        uint64_t tried = p->kv_doc_rev;
        int held;
        memset(&cur, 0, sizeof cur);
        ge = p->t.vt->kv_get(p->t.self, p->assign_bucket, "assignment", 0, &cur, parti__g_budget(p));
        if (ge == PARTI_ERR_OK) {
            p->kv_doc_rev = cur.revision; /* (lower too: a bucket made again starts over) */
            parti_kv_entry_free(&cur);
        } else if (ge == PARTI_ERR_KEY_NOT_FOUND) {
            p->kv_doc_rev = 0; /* gone (deleted, or a bucket made again): create it */
        }
        held = parti__g_leader_holds(p, p->epoch, 0);
        if (held == 0 && p->key_instance != p->instance) {
            parti__g_step_down(p, e, "another worker holds the leader key");
            goto done;
        }
        if (p->kv_doc_rev == tried) goto fail; /* nothing new learned: back off */
        parti__g_fail(p, e, "publishing the assignment (raced with an older write; writing again)");
        p->rb_due = now; /* at once, over the revision just read */
        goto done;
    }
    if (e != PARTI_ERR_OK) goto fail;
    p->wrote_doc_rev = rev;
    parti_counter_add(&p->gm.rebalances_success, 1);
    parti_counter_add(&p->gm.partitions_moved, (uint64_t)(moved > 0 ? moved : 0));
    parti_histogram_observe(&p->gm.rebalance_duration, (double)(now - p->rb_change_at) / 1000.0);
    p->rb_pending = 0;
    p->rb_fail = 0;
    p->rb_last = now;
    parti_backoff_reset(&p->rb_backoff);
    parti__g_event(p, PARTI_EVENT_REBALANCED, PARTI_ERR_OK, moved, "");
    parti__g_consider(p, (const uint8_t *)buf, need - 1, rev, 1); /* the leader is a worker too */
    goto done;
fail:
    parti_counter_add(&p->gm.rebalances_failure, 1);
    parti__g_fail(p, e, e == PARTI_ERR_WRONG_REVISION ? "publishing the assignment (raced)" : "rebalancing");
    parti_backoff_next(&p->rb_backoff, parti__g_rng, p, &delay);
    p->rb_due = now + delay;
done:
    parti_assignment_free(&a);
    PARTI_FREE(buf);
    PARTI_FREE(owner);
    PARTI_FREE((void *)prev);
    PARTI_FREE(mem);
}

/* ---- watches ------------------------------------------------------------------ */

static void parti__g_drain_watches(parti *p, uint64_t now) {
    parti_kv_entry e;
    int guard;
    for (guard = 0; p->wm && guard < 10000; guard++) {
        memset(&e, 0, sizeof e);
        if (p->t.vt->kv_watch_next(p->t.self, p->wm, &e) != PARTI_ERR_OK) break;
        if (e.key && strcmp(e.key, "leader") == 0) {
            if (p->leader && e.revision < p->leader_rev) {
                /* older than this leader's own key: history */
            } else if (e.op == PARTI_KV_PUT) {
                parti__g_saw_leader_key(p, &e);
                /* the KV decides who leads: another holder deposes this one */
                if (p->leader && p->key_instance != p->instance)
                    parti__g_step_down(p, PARTI_ERR_WRONG_REVISION, "another worker holds the leader key");
                p->leader_missing = 0;
            } else {
                p->key_epoch = p->key_instance = 0;
                p->leader_missing = 1; /* deleted (graceful) or expired: elect at once */
                p->next_leader_check = now;
            }
        } else if (e.key && strncmp(e.key, "m.", 2) == 0 && p->leader) {
            int known = parti__g_member_find(p, e.key + 2) >= 0;
            parti__gvalue mv = parti__g_value_read(e.op == PARTI_KV_PUT ? e.value : NULL, e.len);
            uint64_t seen = mv.epoch, ae = mv.applied_epoch, av = mv.applied_version;
            if (ae > seen) seen = ae;
            /* the next document is (epoch, doc.version + 1): a member that
             * applied that or more did so under a leadership in a lost bucket
             * whose epoch this one repeats */
            if (seen > p->epoch || (ae == p->epoch && av > p->doc.version)) {
                if (seen < p->epoch) seen = p->epoch;
                /* a member saw a higher epoch (the buckets were lost and made
                 * again): raise this leader's above it, stamp it, publish again */
                parti__g_saw_epoch(p, seen + 1);
                p->epoch_written = 0;
                p->renew_leader_due = 1;
                parti__g_schedule_rebalance(p, now, 0, 1);
            }
            if (e.op == PARTI_KV_PUT && known && mv.instance) {
                parti__gmember *m = &p->members[parti__g_member_find(p, e.key + 2)];
                if (m->instance && m->instance != mv.instance) parti__g_orphan(p, m->id, m->instance, now);
                m->instance = mv.instance; /* (another process holds the ID now) */
            }
            if (e.op == PARTI_KV_PUT && !known) {
                p->next_listing = now; /* a join: list and debounce */
            } else if (e.op != PARTI_KV_PUT && known) {
                p->next_listing = now; /* a leave (deleted) or a crash (expired) */
                /* a leave: the member released its partitions first; no grace needed */
                if (e.op == PARTI_KV_DELETE) p->graceful_left = 1;
            }
        }
        parti_kv_entry_free(&e);
    }
    for (guard = 0; p->wa && guard < 10000; guard++) {
        memset(&e, 0, sizeof e);
        if (p->t.vt->kv_watch_next(p->t.self, p->wa, &e) != PARTI_ERR_OK) break;
        if (e.key && strcmp(e.key, "assignment") == 0) {
            if (e.op == PARTI_KV_PUT) parti__g_consider(p, e.value, e.len, e.revision, 0);
            else if (p->leader) { /* deleted or purged: the leader writes it again */
                p->kv_doc_rev = 0;
                parti__g_schedule_rebalance(p, now, 0, 1);
            }
        }
        parti_kv_entry_free(&e);
    }
}

/* ---- poll ------------------------------------------------------------------------ */

static void parti__g_step(parti *p, uint64_t now) {
    if (p->state == PARTI_STATE_JOINING) {
        parti__g_join(p, now);
        if (p->state == PARTI_STATE_JOINING) return;
    }
    if (p->id[0]) parti__g_check_staleness(p, now); /* a pause may have outlived the lease */
    parti__g_drain_watches(p, now);
    if (!p->id[0]) return;
    /* lease work a previous poll had no time left for comes first */
    if (p->leader && p->renew_leader_due && parti__g_lease_ok(p)) {
        p->renew_leader_due = 0;
        parti__g_renew_leader(p, now);
    }
    if (!p->leader && p->elect_due && !p->degraded && parti__g_lease_ok(p)) {
        p->elect_due = 0;
        parti__g_try_elect(p, now);
        if (!p->id[0]) return;
    }
    if (now >= p->next_heartbeat) parti__g_heartbeat(p, now);
    if (!p->id[0]) return; /* lost it */
    if (p->reregister || strcmp(p->id, p->registered) != 0) parti__g_register(p);
    parti__g_check_staleness(p, parti__g_now(p)); /* fresh: the heartbeat may have blocked */
    if (!p->leader && (p->leader_missing || now >= p->next_leader_check) && !p->degraded) {
        parti_kv_entry e;
        parti_err err;
        p->next_leader_check = now + p->opts.heartbeat_ms;
        memset(&e, 0, sizeof e);
        err = p->t.vt->kv_get(p->t.self, p->members_bucket, "leader", 0, &e, parti__g_budget(p));
        if (err == PARTI_ERR_OK) {
            parti__g_saw_leader_key(p, &e);
            p->leader_missing = 0;
            parti_kv_entry_free(&e);
        } else if (err == PARTI_ERR_KEY_NOT_FOUND) {
            if (parti__g_lease_ok(p)) parti__g_try_elect(p, now);
            else p->elect_due = 1; /* first thing at the next poll */
        }
        if (!p->id[0]) return; /* the election found this worker's own key gone */
    }
    if (now >= p->next_doc_check) {
        p->next_doc_check = now + (p->state == PARTI_STATE_WAITING ? p->opts.heartbeat_ms : p->opts.member_ttl_ms);
        parti__g_read_doc(p);
    }
    if (p->leader) {
        if (now >= p->next_listing) parti__g_list_members(p, now);
        if (p->rb_pending && now >= p->rb_due && p->epoch_written) parti__g_rebalance(p, now);
        if (arrlen(p->orphans) > 0) parti__g_delete_orphans(p, parti__g_now(p));
    }
    if (now >= p->handoff_due || now >= p->next_commit) parti__g_partitions_step(p, parti__g_now(p));
    if (p->state == PARTI_STATE_REBALANCING && !p->c->has_pending && !parti__g_claims_pending(p))
        parti__g_set_state(p, PARTI_STATE_STABLE);
}

/* The next moment the group has something to do. */
static uint64_t parti__g_next(const parti *p) {
    uint64_t t = PARTI__G_NO_TIME;
    if (p->state == PARTI_STATE_JOINING) return p->retry_at;
    if (p->next_heartbeat < t) t = p->next_heartbeat;
    if (!p->leader && p->next_leader_check < t) t = p->next_leader_check;
    if (p->next_doc_check < t) t = p->next_doc_check;
    if (p->handoff_due < t) t = p->handoff_due;
    if (p->id[0] && p->next_commit < t) t = p->next_commit;
    if (p->leader) {
        if (p->next_listing < t) t = p->next_listing;
        if (p->rb_pending && p->rb_due < t) t = p->rb_due;
        if (p->lease_until < t) t = p->lease_until;
    }
    return t;
}

static void parti__g_poll_until(parti *p, uint64_t now, uint64_t deadline);

PARTIDEF parti_err parti_poll(parti *p, uint32_t timeout_ms) {
    uint64_t now, deadline;
    if (!p) return PARTI_ERR_INVALID_ARGUMENT;
    if (p->state == PARTI_STATE_STOPPED) return p->fatal ? p->fatal : PARTI_ERR_CLOSED;
    now = parti__g_now(p);
    deadline = now + timeout_ms;
    /* every server call of this poll (the group's and the consumer's) ends by
     * the deadline plus one op timeout */
    p->call_deadline = deadline + p->opts.op_timeout_ms;
    p->c->call_deadline = p->call_deadline;
    parti__g_poll_until(p, now, deadline);
    p->call_deadline = p->c->call_deadline = 0;
    return p->state == PARTI_STATE_STOPPED && p->fatal ? p->fatal : PARTI_ERR_OK;
}

static void parti__g_poll_until(parti *p, uint64_t now, uint64_t deadline) {
    int guard, overran;
    for (guard = 0; guard < 100000; guard++) {
        uint64_t next, slice;
        parti__g_step(p, now);
        if (p->state == PARTI_STATE_STOPPED) break;
        now = parti__g_now(p);
        overran = now >= deadline;
        if (overran && guard > 0) break;
        /* the consumer runs until the group's next timer, in slices short
         * enough that watch events are seen promptly. It always gets its
         * share: when the control plane's calls took the whole poll (a
         * hanging KV), it still runs one short slice (inside the lease, which
         * it checks before every message) */
        next = parti__g_next(p);
        slice = next > now ? next - now : 0;
        if (now >= deadline) slice = 10;
        else if (slice > deadline - now) slice = deadline - now;
        if (slice > 50) slice = 50;
        if (slice == 0) slice = 1;
        if (p->state == PARTI_STATE_STOPPED) break;
        if (parti_consumer_poll(p->c, (uint32_t)slice) != PARTI_ERR_OK && p->opts.fail_fast && !p->fatal) {
            parti__g_fail(p, parti_consumer_last_error(p->c), parti_consumer_last_message(p->c));
            break;
        }
        now = parti__g_now(p);
        if (now >= deadline) {
            if (!overran) parti__g_step(p, now);
            break;
        }
    }
}

/* Deletes key (of the members bucket) only while it is this process's: with
 * the revision it last wrote (read back once when that is stale: a renewal
 * whose reply was lost), so another process's key is never deleted. That
 * revision is trusted only inside the lease: past it the bucket may be a new
 * one (a memory-storage restart) where the same revision is another
 * process's key, so the key is read back first, as a renewal past the lease
 * does. Without kv_delete_if, the key is read back first (a short window
 * remains). */
static void parti__g_delete_mine(parti *p, const char *key, uint64_t rev) {
    parti_err e = PARTI_ERR_WRONG_REVISION;
    uint64_t cur = 0;
    if (p->t.vt->kv_delete_if) {
        if (rev && !p->stale && !p->readback_due && parti__g_now(p) < parti__g_lease_end(p))
            e = p->t.vt->kv_delete_if(p->t.self, p->members_bucket, key, rev, parti__g_budget(p));
        if ((e == PARTI_ERR_WRONG_REVISION || e == PARTI_ERR_TIMEOUT) && parti__g_still_mine(p, key, &cur) > 0)
            p->t.vt->kv_delete_if(p->t.self, p->members_bucket, key, cur, parti__g_budget(p));
    } else if (parti__g_still_mine(p, key, &cur) > 0) {
        p->t.vt->kv_delete(p->t.self, p->members_bucket, key, parti__g_budget(p));
    }
}

/* A leaving leader's handover: until `until`, reads back the checkpoint
 * keys of the partitions it released (list[0..n)) until each names another
 * process, i.e. its new owner applied the parting document and claimed it.
 * The leader key is kept meanwhile: workers apply a document only while the
 * leader key holds its epoch. */
static void parti__g_await_claims(parti *p, int *list, int n, uint64_t until) {
    int guard;
    for (guard = 0; n > 0 && guard < 10000 && parti__g_now(p) < until; guard++) {
        int j = 0;
        while (j < n) {
            parti_kv_entry ent;
            parti_checkpoint ck;
            char key[PARTI_CHECKPOINT_KEY_SIZE];
            int taken = 0;
            parti__g_ck_key(p, list[j], key, sizeof key);
            memset(&ent, 0, sizeof ent);
            if (p->t.vt->kv_get(p->t.self, p->assign_bucket, key, 0, &ent, parti__g_budget(p)) == PARTI_ERR_OK) {
                taken = parti_checkpoint_decode(&ck, (const char *)ent.value, ent.len) == PARTI_ERR_OK &&
                        ck.instance != p->instance;
                parti_kv_entry_free(&ent);
            }
            if (taken) list[j] = list[--n];
            else j++;
        }
        if (n > 0 && p->t.vt->sleep_ms) p->t.vt->sleep_ms(p->t.self, 2);
    }
}

/* A leave that finds the member lease run out before the poll saw it (a
 * long batch or slow handlers kept the renewals waiting): when the member
 * key is still this process's, renew it as a renewal past the lease does
 * (read back first: past the lease the remembered revision may be another
 * process's key in a bucket made again; then a compare-and-swap at the
 * revision read), so the releases are written inside a lease again. A
 * claim is taken from a holder only once it released it or its member key
 * is gone or another's, and each release is a compare-and-swap on this
 * process's claim. Without this the leave wrote no release and then deleted
 * the key, so the next owners started from the last checkpoint and repeated
 * what was handled here since. 1 when the lease holds again. */
static int parti__g_renew_to_leave(parti *p) {
    uint64_t cur = 0, rev = 0, sent;
    if (parti__g_still_mine(p, p->key, &cur) <= 0) return 0;
    sent = parti__g_now(p);
    if (p->t.vt->kv_update(p->t.self, p->members_bucket, p->key, p->value, strlen(p->value), cur, &rev,
                           parti__g_budget(p)) != PARTI_ERR_OK)
        return 0;
    p->my_rev = rev;
    p->readback_due = 0;
    parti__g_renewed(p, sent);
    return 1;
}

PARTIDEF parti_err parti_leave(parti *p, uint32_t timeout_ms) {
    uint64_t now, deadline;
    parti_consumer *c;
    int guard, renewed = 0;
    if (!p) return PARTI_ERR_INVALID_ARGUMENT;
    if (p->state == PARTI_STATE_STOPPED) return PARTI_ERR_OK;
    c = p->c;
    now = parti__g_now(p);
    deadline = now + timeout_ms;
    p->call_deadline = p->c->call_deadline = deadline; /* every call of the leave ends by then */
    parti__g_set_state(p, PARTI_STATE_LEAVING);
    /* 1. stop: nothing more reaches the handler. Every partition held is
     * revoked and released with its checkpoint, so its next owner starts
     * right after the last message handled here (no duplicate); what the
     * pending pull still brings is the next owner's, read from the stream */
    parti__consumer_clear_pending(c);
    parti__g_stop_consumer(p);
    {
        int n = c->cfg.partition_count, i, k = 0, *revoked = (int *)PARTI_MALLOC(sizeof(int) * (size_t)(n + 1));
        for (i = 0; i < n; i++) {
            if (p->gp[i].st != PARTI__G_HELD) continue;
            parti__consumer_revoke(c, i);
            p->gp[i].st = PARTI__G_RELEASE;
            if (revoked) revoked[k++] = i;
        }
        if (revoked) parti__g_callback(p, p->opts.on_partitions_revoked, revoked, k);
        k = 0;
        for (i = 0; i < n; i++) {
            parti_err e = PARTI_ERR_TIMEOUT;
            /* (inside the lease only: past it another may hold the partition;
             * a lease the poll has not seen run out is renewed first, once) */
            if (!renewed && (p->gp[i].st == PARTI__G_RELEASE || p->gp[i].st == PARTI__G_DISOWN) && p->id[0] &&
                !p->stale && parti__g_now(p) >= parti__g_lease_end(p) && parti__g_now(p) < deadline) {
                renewed = 1;
                parti__g_renew_to_leave(p);
            }
            for (guard = 0; guard < 3 && e == PARTI_ERR_TIMEOUT &&
                            (p->gp[i].st == PARTI__G_RELEASE || p->gp[i].st == PARTI__G_DISOWN) && p->id[0] &&
                            !p->stale && parti__g_now(p) < parti__g_lease_end(p) && parti__g_now(p) < deadline;
                 guard++)
                e = parti__g_ck_write(p, i, 1);
            if (e == PARTI_ERR_OK) {
                parti_counter_add(&p->gm.partition_releases, 1);
                if (revoked) revoked[k++] = i;
            }
            p->gp[i].st = PARTI__G_NONE;
        }
        /* 2. a leader hands over itself: one last document without itself,
         * published while it still holds the leader key, so the others take
         * the released partitions now, not after an election and the new
         * leader's first rebalance. It waits (up to a heartbeat) until they
         * have claimed them; the new leader then finds nothing to move */
        if (p->leader && p->epoch_written && p->id[0] && !p->stale && parti__g_now(p) < p->lease_until) {
            uint64_t until = parti__g_now(p) + p->opts.heartbeat_ms, wrote = p->wrote_doc_rev;
            if (until > deadline) until = deadline;
            if (until > parti__g_lease_end(p)) until = parti__g_lease_end(p);
            p->parting = 1;
            parti__g_rebalance(p, parti__g_now(p));
            p->parting = 0;
            if (p->wrote_doc_rev != wrote && revoked) parti__g_await_claims(p, revoked, k, until);
        }
        PARTI_FREE(revoked);
    }
    /* 3. its durable and its registry key: the partitions' next owners read
     * from the stream, nothing of this process is left on the server. The
     * durable is named by the worker ID and this process's instance: the
     * current ID's, and the last registered one's when that differs (an ID
     * lost and not taken back: no other process uses it) */
    {
        const char *ids[2];
        int n = 0, k;
        if (p->id[0]) ids[n++] = p->id;
        if (p->registered[0] && strcmp(p->registered, p->id) != 0) ids[n++] = p->registered;
        for (k = 0; k < n; k++) {
            char durable[PARTI_MAX_NAME_LEN + 1];
            if (parti__g_durable(p, ids[k], p->instance, durable, sizeof durable) == PARTI_ERR_OK)
                parti__g_drop_durable(p, durable, 1, 0);
        }
    }
    /* 4. leadership and the member key: the others see both at once. Only
     * keys still this process's are deleted: a process that was frozen may
     * find its ID and the leadership taken over by now */
    if (p->leader) { /* stop acting as leader first: the delete lets another win at once */
        parti__g_step_down(p, PARTI_ERR_OK, "leaving");
        parti__g_delete_mine(p, "leader", p->leader_rev);
    }
    if (p->id[0]) parti__g_delete_mine(p, p->key, p->my_rev);
    arrsetlen(p->owned, 0);
    parti_gauge_set(&p->gm.partitions_owned, 0);
    parti__g_set_state(p, PARTI_STATE_STOPPED);
    p->call_deadline = p->c->call_deadline = 0;
    return PARTI_ERR_OK;
}

PARTIDEF parti_state parti_state_of(const parti *p) { return p ? p->state : PARTI_STATE_STOPPED; }
PARTIDEF const char *parti_worker_id(const parti *p) { return p ? p->id : ""; }
/* Only inside the leader lease: a leader that was paused past it does not
 * report leadership, even before its next poll finds out. */
PARTIDEF int parti_is_leader(const parti *p) { return p && p->leader && parti__g_now(p) < p->lease_until; }
PARTIDEF int parti_lease_valid(const parti *p) {
    return p && p->id[0] && !p->stale && parti__g_now(p) < parti__g_lease_end(p);
}
PARTIDEF uint64_t parti_epoch(const parti *p) { return p ? p->epoch : 0; }
PARTIDEF uint64_t parti_assignment_version_of(const parti *p) { return p ? p->applied_version : 0; }
PARTIDEF uint64_t parti_assignment_epoch_of(const parti *p) { return p ? p->applied_epoch : 0; }

PARTIDEF int parti_owned(const parti *p, const int **out) {
    if (out) *out = p ? p->owned : NULL;
    return p ? (int)arrlen(p->owned) : 0;
}

PARTIDEF const parti_metrics *parti_metrics_of(parti *p) {
    const parti_metrics *cm;
    if (!p) return NULL;
    cm = parti_consumer_metrics(p->c);
    parti_gauge_set(&p->gm.circuit_breaker_state, (double)parti_breaker_state_of(p->opts.breaker));
    p->view = p->gm;
#define PARTI__G_COPY(field, kind, name, label_name, label_value, bounds, help)                                   \
    if (strncmp(#field, "consumer_", 9) == 0) memcpy(&p->view.field, &cm->field, sizeof p->view.field);
    PARTI_METRICS(PARTI__G_COPY)
#undef PARTI__G_COPY
    return &p->view;
}

PARTIDEF parti_err parti_health_of(const parti *p, parti_health *out) {
    parti_health ch;
    if (!p || !out) return PARTI_ERR_INVALID_ARGUMENT;
    memset(&ch, 0, sizeof ch); /* (filled by parti_consumer_health; some optimisers cannot tell) */
    parti_consumer_health(p->c, &ch);
    memset(out, 0, sizeof *out);
    out->live = p->state != PARTI_STATE_STOPPED;
    /* (a document that leaves partitions unowned: the group cannot hold them all) */
    out->degraded = p->degraded || ch.degraded || parti_breaker_state_of(p->opts.breaker) == PARTI_BREAKER_OPEN ||
                    parti__g_doc_unowned(p, NULL, 0) > 0;
    out->ready = out->live && p->id[0] && !p->stale && !p->degraded &&
                 (p->state == PARTI_STATE_STABLE || p->state == PARTI_STATE_WAITING ||
                  p->state == PARTI_STATE_REBALANCING) &&
                 (arrlen(p->owned) == 0 || ch.ready);
    if (p->last_err_ms >= ch.last_error_ms) {
        out->last_error = p->last_err;
        out->last_error_ms = p->last_err_ms;
        out->last_error_message = p->last_msg;
    } else {
        out->last_error = ch.last_error;
        out->last_error_ms = ch.last_error_ms;
        out->last_error_message = ch.last_error_message;
    }
    out->last_error_category = parti_error_category(out->last_error);
    return PARTI_ERR_OK;
}

PARTIDEF parti_consumer *parti_consumer_of(parti *p) { return p ? p->c : NULL; }

PARTIDEF parti_err parti_health_json(parti *p, char *buf, size_t cap, size_t *needed) {
    static const char *const breaker[] = {"closed", "open", "half_open"};
    parti_json_writer w;
    parti_health h, ch;
    uint64_t now, silent;
    int connected, kv_ok, bs;
    if (needed) *needed = 0;
    if (!p || (!buf && cap)) return PARTI_ERR_INVALID_ARGUMENT;
    memset(&ch, 0, sizeof ch); /* (filled below; some optimisers cannot tell) */
    parti_health_of(p, &h);
    parti_consumer_health(p->c, &ch);
    now = parti__g_now(p);
    silent = p->id[0] && now > p->last_renew_ok ? now - p->last_renew_ok : 0;
    kv_ok = p->id[0] && !p->degraded;
    connected = p->t.vt->connected ? p->t.vt->connected(p->t.self) != 0
                                   : !(p->last_err == PARTI_ERR_NOT_CONNECTED && p->degraded);
    bs = (int)parti_breaker_state_of(p->opts.breaker);
    parti_json_writer_init(&w, buf, cap);
    parti_json_object_begin(&w);
    parti_json_key(&w, "status");
    parti_json_string(&w, p->state == PARTI_STATE_STOPPED ? "stopped"
                          : h.ready                      ? "ready"
                          : h.degraded                   ? "degraded"
                                                         : "not_ready");
    parti_json_key(&w, "live");
    parti_json_bool(&w, h.live);
    parti_json_key(&w, "ready");
    parti_json_bool(&w, h.ready);
    parti_json_key(&w, "degraded");
    parti_json_bool(&w, h.degraded);
    parti_json_key(&w, "worker");
    parti_json_string(&w, p->id);
    parti_json_key(&w, "state");
    parti_json_string(&w, parti_state_name(p->state));
    parti_json_key(&w, "leader");
    parti_json_bool(&w, p->leader);
    parti_json_key(&w, "epoch");
    parti_json_uint(&w, p->epoch);
    parti_json_key(&w, "assignment_version");
    parti_json_uint(&w, p->applied_version);
    parti_json_key(&w, "partitions");
    parti_json_uint(&w, (uint64_t)arrlen(p->owned));
    parti_json_key(&w, "components");
    parti_json_object_begin(&w);
    parti_json_key(&w, "connection");
    parti_json_object_begin(&w);
    parti_json_key(&w, "ok");
    parti_json_bool(&w, connected);
    parti_json_object_end(&w);
    parti_json_key(&w, "kv");
    parti_json_object_begin(&w);
    parti_json_key(&w, "ok");
    parti_json_bool(&w, kv_ok);
    parti_json_key(&w, "silent_ms");
    parti_json_uint(&w, silent);
    parti_json_object_end(&w);
    parti_json_key(&w, "membership");
    parti_json_object_begin(&w);
    parti_json_key(&w, "ok");
    parti_json_bool(&w, p->id[0] && p->state != PARTI_STATE_JOINING && p->state != PARTI_STATE_STOPPED);
    parti_json_key(&w, "state");
    parti_json_string(&w, parti_state_name(p->state));
    parti_json_object_end(&w);
    parti_json_key(&w, "consumer");
    parti_json_object_begin(&w);
    parti_json_key(&w, "ok");
    parti_json_bool(&w, !ch.degraded);
    parti_json_key(&w, "ready");
    parti_json_bool(&w, ch.ready);
    parti_json_key(&w, "degraded");
    parti_json_bool(&w, ch.degraded);
    parti_json_key(&w, "durable");
    parti_json_string(&w, parti_consumer_durable(p->c));
    parti_json_object_end(&w);
    parti_json_key(&w, "assignment");
    parti_json_object_begin(&w);
    {
        int first[8], i, un = parti__g_doc_unowned(p, first, 8);
        parti_json_key(&w, "ok");
        parti_json_bool(&w, un == 0);
        parti_json_key(&w, "unowned_partitions");
        parti_json_uint(&w, (uint64_t)un);
        parti_json_key(&w, "first_unowned");
        parti_json_array_begin(&w);
        for (i = 0; i < un && i < 8; i++) parti_json_uint(&w, (uint64_t)first[i]);
        parti_json_array_end(&w);
    }
    parti_json_object_end(&w);
    parti_json_key(&w, "circuit_breaker");
    parti_json_object_begin(&w);
    parti_json_key(&w, "state");
    parti_json_string(&w, bs >= 0 && bs <= 2 ? breaker[bs] : "closed");
    parti_json_object_end(&w);
    parti_json_object_end(&w);
    parti_json_key(&w, "last_error");
    if (h.last_error == PARTI_ERR_OK) {
        parti_json_null(&w);
    } else {
        parti_json_object_begin(&w);
        parti_json_key(&w, "code");
        parti_json_string(&w, parti_error_name(h.last_error));
        parti_json_key(&w, "category");
        parti_json_string(&w, parti_category_name(h.last_error_category));
        parti_json_key(&w, "message");
        parti_json_string(&w, h.last_error_message ? h.last_error_message : "");
        parti_json_key(&w, "at_ms");
        parti_json_uint(&w, h.last_error_ms);
        parti_json_object_end(&w);
    }
    parti_json_object_end(&w);
    return parti_json_writer_finish(&w, needed);
}

#ifdef __cplusplus
}
#endif
#endif /* PARTI__IMPLEMENTED */
#endif /* PARTI_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
This software is available under 2 licenses -- choose whichever you prefer.
------------------------------------------------------------------------------
ALTERNATIVE A - MIT License
Copyright (c) 2026 the parti authors
Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies
of the Software, and to permit persons to whom the Software is furnished to do
so, subject to the following conditions:
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
ALTERNATIVE B - Public Domain (www.unlicense.org)
This is free and unencumbered software released into the public domain.
Anyone is free to copy, modify, publish, use, compile, sell, or distribute this
software, either in source code form or as a compiled binary, for any purpose,
commercial or non-commercial, and by any means.
------------------------------------------------------------------------------
*/

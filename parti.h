/* parti.h - partition assignment for NATS JetStream - v0.1.0
 * Single-file C library; MIT or public domain (see the end of the file).
 *
 * WHAT IT IS
 *   parti spreads the partitions of a JetStream stream over a changing set of
 *   worker processes and gives each worker ONE durable pull consumer whose
 *   filter_subjects are exactly its partitions' subjects. This header is the
 *   sans-I/O core: everything that needs no network. Time, randomness and I/O
 *   reach it through callbacks, so every behaviour is testable and replayable.
 *
 *   This version (0.1.0) holds the pure core the rest is built on:
 *     - errors: one table of codes with names, messages and categories
 *     - configuration: zero means default, one validation with a clear message
 *     - partitions -> subjects: template expansion, NATS subject validation,
 *       sort + deduplicate, diff, max_subjects, durable consumer names
 *     - decorrelated-jitter backoff on an injected RNG
 *     - metrics (counters, gauges, histograms) and a Prometheus text writer
 *     - a bounded JSON writer and an untrusted-input JSON reader
 *   The transport vtable, the worker consumer and membership come next.
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
 *   - No global mutable state; not thread-safe per object (the future
 *     parti_poll() runs everything on the caller's thread).
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
 *   PARTI_HISTOGRAM_MAX_BUCKETS (16).
 *
 * VERSION HISTORY
 *   0.1.0  pure core: errors, config, subjects, names, backoff, metrics, JSON
 */
#ifndef PARTI_H
#define PARTI_H

#define PARTI_VERSION_MAJOR 0
#define PARTI_VERSION_MINOR 1
#define PARTI_VERSION_PATCH 0
#define PARTI_VERSION_STRING "0.1.0"

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
    X(ALREADY_EXISTS, INVALID_INPUT, "exists already with a different configuration")

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
 *     with PARTI_MALLOC).
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
} parti_consumer_config;

typedef struct parti_consumer_info {
    char *name;
    char **filter_subjects;        /* as the server has them now */
    int filter_count;
    uint64_t delivered_stream_seq; /* the consumer's position */
    uint64_t ack_floor_stream_seq;
    uint64_t num_pending;          /* matching messages after the position */
    uint64_t num_ack_pending;      /* delivered, not yet acked */
    uint64_t num_redelivered;
} parti_consumer_info;

typedef struct parti_stream_config {
    const char *name;
    const char *const *subjects;   /* may hold wildcards */
    int subject_count;
    int memory_storage;
    uint64_t duplicate_window_ms;  /* Nats-Msg-Id dedupe window; 0 = 2 min */
    uint64_t max_msgs;             /* 0 = unlimited */
} parti_stream_config;

typedef struct parti_stream_info {
    char *name;
    char **subjects;
    int subject_count;
    int memory_storage;
    uint64_t duplicate_window_ms;
    uint64_t messages, first_seq, last_seq;
} parti_stream_info;

typedef struct parti_header {
    const char *name;
    const char *value;
} parti_header;

/* A message delivered by a pull. Every pointer stays valid until the message
 * is released with the transport's msg_release (or acked through ack, which
 * does not release). */
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

    /* pull: fetch_start sends a pull request (replacing this client's pending one
     * for that consumer); fetch_next waits up to timeout_ms for its next message:
     *   PARTI_ERR_OK             *out holds a message (release it)
     *   PARTI_ERR_TIMEOUT        nothing yet; the pull is still pending
     *   PARTI_ERR_NO_MESSAGES    the pull is over (expired or batch/bytes done): start another
     *   PARTI_ERR_CONSUMER_DELETED, PARTI_ERR_NO_RESPONDERS (no such consumer),
     *   PARTI_ERR_MISSED_HEARTBEAT (no heartbeat for 2 x heartbeat_ms),
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

/* @@METRICS_DECL@@ */

/* @@JSON_DECL@@ */


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

static char *parti__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)PARTI_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}

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

PARTIDEF const char *parti_msg_header(const parti_msg *m, const char *name) {
    int i;
    if (!m || !name || m->header_count < 0 || (m->header_count > 0 && !m->headers)) return NULL;
    for (i = 0; i < m->header_count; i++)
        if (m->headers[i].name && strcmp(m->headers[i].name, name) == 0) return m->headers[i].value;
    return NULL;
}

/* @@METRICS_IMPL@@ */

/* @@JSON_IMPL@@ */


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

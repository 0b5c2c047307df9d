/* Unit tests of the JSON writer and the untrusted-input JSON reader. */
#include "parti.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char msg[512];
static size_t off;

/* Parses n bytes through an exact-size heap copy without a NUL, so ASan
 * reports any read past the end. */
static parti_err parse_n(parti_json_doc *d, const char *s, size_t n) {
    char *copy = (char *)malloc(n ? n : 1);
    parti_err e;
    cr_assert(copy);
    memcpy(copy, s, n);
    msg[0] = 0;
    off = (size_t)-1;
    e = parti_json_parse(d, copy, n, &off, msg, sizeof msg);
    free(copy); /* the document keeps its own copy */
    return e;
}

static parti_err parse(parti_json_doc *d, const char *s) { return parse_n(d, s, strlen(s)); }

/* Asserts that s is refused with code e at byte at, and that the message
 * names that byte. */
static void reject_n(const char *s, size_t n, parti_err e, size_t at) {
    parti_json_doc d;
    char where[32];
    int shown = n < 80 ? (int)n : 80; /* of the input, in failure messages */
    parti_err got = parse_n(&d, s, n);
    cr_assert_eq(got, e, "\"%.*s\": got %s, want %s (%s)", shown, s, parti_error_name(got), parti_error_name(e),
                 msg);
    cr_assert_eq(off, at, "\"%.*s\": offset %zu, want %zu (%s)", shown, s, off, at, msg);
    snprintf(where, sizeof where, "at byte %zu", at);
    cr_assert(strstr(msg, where), "\"%.*s\": message \"%s\" lacks \"%s\"", shown, s, msg, where);
    cr_assert_null(d.nodes);
    cr_assert_eq(d.node_count, 0);
}

static void reject(const char *s, parti_err e, size_t at) { reject_n(s, strlen(s), e, at); }

typedef struct bad_case {
    const char *text;
    size_t at;
} bad_case;

static void reject_all(const bad_case *cases, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) reject(cases[i].text, PARTI_ERR_JSON_SYNTAX, cases[i].at);
}

#define REJECT_ALL(cases) reject_all(cases, sizeof cases / sizeof *cases)

/* Short name for the calls below. */
static parti_err finish(parti_json_writer *w, size_t *needed) { return parti_json_writer_finish(w, needed); }

/* ======================================================================== */
/* Writer                                                                    */
/* ======================================================================== */

Test(json_writer, nested_containers_and_automatic_commas) {
    char buf[128];
    size_t needed = 0;
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_key(&w, "a");
    parti_json_array_begin(&w);
    parti_json_int(&w, 1);
    parti_json_object_begin(&w);
    parti_json_key(&w, "b");
    parti_json_array_begin(&w);
    parti_json_array_end(&w);
    parti_json_key(&w, "c");
    parti_json_null(&w);
    parti_json_object_end(&w);
    parti_json_array_begin(&w);
    parti_json_array_end(&w);
    parti_json_bool(&w, 0);
    parti_json_array_end(&w);
    parti_json_key(&w, "d");
    parti_json_object_begin(&w);
    parti_json_object_end(&w);
    parti_json_key(&w, "e");
    parti_json_bool(&w, 7);
    parti_json_object_end(&w);
    cr_assert_eq(finish(&w, &needed), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "{\"a\":[1,{\"b\":[],\"c\":null},[],false],\"d\":{},\"e\":true}");
    cr_assert_eq(needed, strlen(buf) + 1);
}

Test(json_writer, escapes_quotes_backslash_and_every_control_char) {
    char in[40], buf[512], want[512];
    size_t i, o = 0;
    parti_json_writer w;
    for (i = 0; i < 31; i++) in[i] = (char)(i + 1); /* 0x01..0x1f; NUL is tested with string_n */
    in[31] = '"';
    in[32] = '\\';
    in[33] = '/';
    in[34] = 0x7f;
    in[35] = 0;
    want[o++] = '"';
    for (i = 1; i < 32; i++) {
        const char *e = i == '\b'   ? "\\b"
                        : i == '\f' ? "\\f"
                        : i == '\n' ? "\\n"
                        : i == '\r' ? "\\r"
                        : i == '\t' ? "\\t"
                                    : NULL;
        if (e) o += (size_t)snprintf(want + o, sizeof want - o, "%s", e);
        else o += (size_t)snprintf(want + o, sizeof want - o, "\\u%04x", (unsigned)i);
    }
    o += (size_t)snprintf(want + o, sizeof want - o, "\\\"\\\\/\x7f\"");
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_string(&w, in);
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(buf, want);
}

Test(json_writer, string_n_escapes_nul_and_keeps_utf8) {
    char buf[64];
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_begin(&w);
    parti_json_string_n(&w, "a\0b", 3);
    parti_json_string(&w, "caf\xc3\xa9 \xf0\x9f\x98\x80");
    parti_json_string(&w, NULL);
    parti_json_string(&w, "");
    parti_json_array_end(&w);
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "[\"a\\u0000b\",\"caf\xc3\xa9 \xf0\x9f\x98\x80\",null,\"\"]");
}

Test(json_writer, integer_extremes) {
    char buf[128];
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_begin(&w);
    parti_json_int(&w, INT64_MIN);
    parti_json_int(&w, INT64_MAX);
    parti_json_int(&w, 0);
    parti_json_int(&w, -1);
    parti_json_uint(&w, UINT64_MAX);
    parti_json_uint(&w, 0);
    parti_json_array_end(&w);
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "[-9223372036854775808,9223372036854775807,0,-1,18446744073709551615,0]");
}

/* The document used by the sizing tests. */
static void write_sample(parti_json_writer *w) {
    parti_json_object_begin(w);
    parti_json_key(w, "stream_name");
    parti_json_string(w, "orders\n\"x\"");
    parti_json_key(w, "filter_subjects");
    parti_json_array_begin(w);
    parti_json_string(w, "orders.eu.1");
    parti_json_string(w, "orders.us.*");
    parti_json_array_end(w);
    parti_json_key(w, "seq");
    parti_json_uint(w, 18446744073709551615u);
    parti_json_object_end(w);
}

Test(json_writer, size_only_pass_then_exact_buffer) {
    size_t needed = 0, needed2 = 0;
    char *buf;
    parti_json_writer w;
    parti_json_writer_init(&w, NULL, 0);
    write_sample(&w);
    cr_assert_eq(finish(&w, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_gt(needed, 10);
    buf = (char *)malloc(needed); /* exact: ASan sees any byte written past it */
    parti_json_writer_init(&w, buf, needed);
    write_sample(&w);
    cr_assert_eq(finish(&w, &needed2), PARTI_ERR_OK);
    cr_assert_eq(needed2, needed);
    cr_assert_eq(strlen(buf) + 1, needed);
    cr_assert_str_eq(buf, "{\"stream_name\":\"orders\\n\\\"x\\\"\",\"filter_subjects\":[\"orders.eu.1\","
                          "\"orders.us.*\"],\"seq\":18446744073709551615}");
    free(buf);
}

Test(json_writer, every_short_buffer_is_refused_without_overrun) {
    size_t needed, cap, i;
    char full[256];
    parti_json_writer w;
    parti_json_writer_init(&w, full, sizeof full);
    write_sample(&w);
    cr_assert_eq(finish(&w, &needed), PARTI_ERR_OK);
    for (cap = 0; cap < needed; cap++) {
        unsigned char *mem = (unsigned char *)malloc(cap + 8);
        size_t got = 0;
        memset(mem, 0xAA, cap + 8);
        parti_json_writer_init(&w, cap ? (char *)mem : NULL, cap);
        write_sample(&w);
        cr_assert_eq(finish(&w, &got), PARTI_ERR_BUFFER_TOO_SMALL, "cap %zu", cap);
        cr_assert_eq(got, needed, "cap %zu reports %zu, want %zu", cap, got, needed);
        for (i = cap; i < cap + 8; i++) cr_assert_eq(mem[i], 0xAA, "cap %zu: byte %zu past the buffer written", cap, i);
        if (cap) { /* a truncated prefix, still a C string */
            cr_assert_eq(strlen((char *)mem), cap - 1);
            cr_assert(memcmp(mem, full, cap - 1) == 0);
        }
        free(mem);
    }
}

Test(json_writer, depth_limit) {
    char buf[512];
    size_t needed;
    int i;
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    for (i = 0; i < PARTI_JSON_MAX_DEPTH; i++) parti_json_array_begin(&w);
    for (i = 0; i < PARTI_JSON_MAX_DEPTH; i++) parti_json_array_end(&w);
    cr_assert_eq(finish(&w, &needed), PARTI_ERR_OK);
    cr_assert_eq(needed, 2 * PARTI_JSON_MAX_DEPTH + 1);

    parti_json_writer_init(&w, buf, sizeof buf);
    for (i = 0; i < PARTI_JSON_MAX_DEPTH; i++) parti_json_object_begin(&w), parti_json_key(&w, "k");
    cr_assert_eq(w.err, PARTI_ERR_OK);
    parti_json_array_begin(&w);
    cr_assert_eq(w.err, PARTI_ERR_JSON_TOO_DEEP);
    cr_assert_eq(w.len, (size_t)PARTI_JSON_MAX_DEPTH * 5, "nothing written for the refused level");
    parti_json_null(&w); /* sticky: ignored */
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_JSON_TOO_DEEP);
}

Test(json_writer, key_outside_an_object_is_refused) {
    char buf[64];
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_key(&w, "a"); /* top level */
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(w.len, 0);
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_begin(&w);
    parti_json_key(&w, "a"); /* inside an array */
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(buf, "[");
}

Test(json_writer, object_members_need_exactly_one_key_each) {
    char buf[64];
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_int(&w, 1); /* value without a key */
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_key(&w, "a");
    parti_json_key(&w, "b"); /* two keys in a row */
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_key(&w, "a");
    parti_json_object_end(&w); /* key without a value */
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_key(&w, NULL);
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
}

Test(json_writer, unbalanced_or_unfinished_output_is_refused) {
    char buf[64];
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_end(&w); /* nothing open */
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT);

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_begin(&w);
    parti_json_object_end(&w); /* wrong kind */
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT);

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w); /* left open */
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(buf, "{");

    parti_json_writer_init(&w, buf, sizeof buf);
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT); /* nothing written */

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_int(&w, 1);
    parti_json_int(&w, 2); /* a second top-level value */
    cr_assert_eq(finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(buf, "1");
}

Test(json_writer, invalid_utf8_is_refused_and_not_written) {
    static const char *bad[] = {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc3", "\x80", "\xff"};
    char buf[64];
    size_t i;
    parti_json_writer w;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        parti_json_writer_init(&w, buf, sizeof buf);
        parti_json_array_begin(&w);
        parti_json_string(&w, bad[i]);
        cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT, "string #%zu", i);
        cr_assert_eq(w.len, 1, "string #%zu partly written", i);
    }
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_key(&w, "\xfe");
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
}

Test(json_writer, first_error_sticks_but_misuse_beats_too_small) {
    char buf[4];
    size_t needed;
    parti_json_writer w;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_begin(&w);
    parti_json_string(&w, "longer than four");
    cr_assert_eq(w.err, PARTI_ERR_BUFFER_TOO_SMALL);
    parti_json_array_end(&w);
    cr_assert_eq(finish(&w, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(needed, strlen("[\"longer than four\"]") + 1);

    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_array_begin(&w);
    parti_json_string(&w, "longer than four");
    parti_json_key(&w, "k"); /* misuse: a bigger buffer would not help */
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_key(&w, "k");
    parti_json_array_begin(&w);
    parti_json_array_end(&w);
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT, "later calls do not clear the first error");
    cr_assert_eq(w.len, 0);
}

Test(json_writer, raw_numbers_are_checked) {
    static const char *good[] = {"0", "-0", "12", "-1.5e+10", "3.25E-2", "1e5"};
    static const char *bad[] = {"", "01", "+1", ".5", "1.", "1e", "- 1", "1 ", "NaN", "0x1"};
    char buf[64];
    size_t i;
    parti_json_writer w;
    for (i = 0; i < sizeof good / sizeof *good; i++) {
        parti_json_writer_init(&w, buf, sizeof buf);
        parti_json_number_raw(&w, good[i], strlen(good[i]));
        cr_assert_eq(finish(&w, NULL), PARTI_ERR_OK, "%s", good[i]);
        cr_assert_str_eq(buf, good[i]);
    }
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        parti_json_writer_init(&w, buf, sizeof buf);
        parti_json_number_raw(&w, bad[i], strlen(bad[i]));
        cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT, "\"%s\"", bad[i]);
    }
}

Test(json_writer, null_arguments_are_safe) {
    parti_json_writer w;
    size_t needed = 99;
    parti_json_writer_init(NULL, NULL, 0);
    parti_json_object_begin(NULL);
    parti_json_object_end(NULL);
    parti_json_array_begin(NULL);
    parti_json_array_end(NULL);
    parti_json_key(NULL, "k");
    parti_json_key_n(NULL, "k", 1);
    parti_json_string(NULL, "s");
    parti_json_string_n(NULL, "s", 1);
    parti_json_int(NULL, 1);
    parti_json_uint(NULL, 1);
    parti_json_bool(NULL, 1);
    parti_json_null(NULL);
    parti_json_number_raw(NULL, "1", 1);
    cr_assert_eq(parti_json_writer_finish(NULL, &needed), PARTI_ERR_INVALID_ARGUMENT);
    parti_json_writer_init(&w, NULL, 10); /* NULL buffer with a capacity */
    parti_json_int(&w, 1);
    cr_assert_eq(parti_json_writer_finish(&w, NULL), PARTI_ERR_INVALID_ARGUMENT);
    parti_json_writer_init(&w, NULL, 0);
    parti_json_string_n(&w, NULL, 3);
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
    parti_json_writer_init(&w, NULL, 0);
    parti_json_number_raw(&w, NULL, 1);
    cr_assert_eq(w.err, PARTI_ERR_INVALID_ARGUMENT);
}

/* ======================================================================== */
/* Reader: accepted documents                                                */
/* ======================================================================== */

Test(json_reader, every_type) {
    parti_json_doc d;
    static const parti_json_type want[] = {PARTI_JSON_NULL,   PARTI_JSON_FALSE,  PARTI_JSON_TRUE,
                                           PARTI_JSON_NUMBER, PARTI_JSON_STRING, PARTI_JSON_ARRAY,
                                           PARTI_JSON_OBJECT};
    int i, n = 0, root;
    size_t len;
    cr_assert_eq(parse(&d, " [null,false,true,-1.5e3,\"s\",[],{}] \n"), PARTI_ERR_OK, "%s", msg);
    root = parti_json_root(&d);
    cr_assert_eq(root, 0);
    cr_assert_eq(parti_json_type_of(&d, root), PARTI_JSON_ARRAY);
    cr_assert_eq(parti_json_count(&d, root), 7);
    for (i = parti_json_first(&d, root); i >= 0; i = parti_json_next(&d, i), n++)
        cr_assert_eq(parti_json_type_of(&d, i), want[n], "element %d is %s", n,
                     parti_json_type_name(parti_json_type_of(&d, i)));
    cr_assert_eq(n, 7);
    cr_assert(memcmp(parti_json_raw(&d, parti_json_at(&d, root, 3), &len), "-1.5e3", 6) == 0);
    cr_assert_eq(len, 6);
    cr_assert(memcmp(parti_json_raw(&d, root, &len), "[null", 5) == 0);
    cr_assert_eq(len, strlen("[null,false,true,-1.5e3,\"s\",[],{}]"));
    cr_assert_eq(parti_json_count(&d, parti_json_at(&d, root, 5)), 0);
    cr_assert_eq(parti_json_first(&d, parti_json_at(&d, root, 6)), -1);
    cr_assert_str_eq(parti_json_type_name(PARTI_JSON_OBJECT), "object");
    cr_assert_str_eq(parti_json_type_name((parti_json_type)99), "invalid");
    parti_json_doc_free(&d);

    /* scalars are documents too */
    cr_assert_eq(parse(&d, "\"top\""), PARTI_ERR_OK);
    cr_assert(parti_json_string_eq(&d, 0, "top"));
    parti_json_doc_free(&d);
    cr_assert_eq(parse(&d, "  -0  "), PARTI_ERR_OK);
    cr_assert_eq(parti_json_type_of(&d, 0), PARTI_JSON_NUMBER);
    parti_json_doc_free(&d);
}

Test(json_reader, jetstream_error_response) {
    static const char *t = "{\"type\":\"io.nats.jetstream.api.v1.consumer_create_response\",\"error\":{\"code\":404,"
                           "\"err_code\":10059,\"description\":\"stream not found\"}}";
    parti_json_doc d;
    int err;
    int64_t code = 0;
    uint64_t err_code = 0;
    char desc[64];
    size_t needed = 0;
    cr_assert_eq(parse(&d, t), PARTI_ERR_OK, "%s", msg);
    cr_assert(parti_json_string_eq(&d, parti_json_get(&d, 0, "type"),
                                   "io.nats.jetstream.api.v1.consumer_create_response"));
    err = parti_json_get(&d, 0, "error");
    cr_assert_eq(parti_json_type_of(&d, err), PARTI_JSON_OBJECT);
    cr_assert_eq(parti_json_get_int64(&d, err, "code", &code), PARTI_ERR_OK);
    cr_assert_eq(code, 404);
    cr_assert_eq(parti_json_get_uint64(&d, err, "err_code", &err_code), PARTI_ERR_OK);
    cr_assert_eq(err_code, 10059);
    cr_assert_eq(parti_json_get_string(&d, err, "description", desc, sizeof desc, &needed), PARTI_ERR_OK);
    cr_assert_str_eq(desc, "stream not found");
    cr_assert_eq(needed, 17);
    parti_json_doc_free(&d);
}

Test(json_reader, consumer_info_filter_subjects) {
    static const char *t =
        "{\"type\":\"io.nats.jetstream.api.v1.consumer_info_response\",\"stream_name\":\"orders\","
        "\"name\":\"parti-w1\",\"created\":\"2024-01-01T00:00:00Z\",\"config\":{\"durable_name\":\"parti-w1\","
        "\"deliver_policy\":\"all\",\"ack_policy\":\"explicit\",\"ack_wait\":30000000000,\"max_deliver\":5,"
        "\"filter_subjects\":[\"a.1\",\"a.2\"],\"max_ack_pending\":1000},\"delivered\":{\"consumer_seq\":7,"
        "\"stream_seq\":42},\"ack_floor\":{\"consumer_seq\":6,\"stream_seq\":41},\"num_ack_pending\":1,"
        "\"num_redelivered\":0,\"num_waiting\":0,\"num_pending\":18446744073709551615,\"paused\":false}";
    static const char *subjects[] = {"a.1", "a.2"};
    parti_json_doc d;
    int cfg, subs, i, n = 0, paused = 1;
    uint64_t v = 0;
    int64_t ack_wait = 0;
    char buf[16];
    cr_assert_eq(parse(&d, t), PARTI_ERR_OK, "%s", msg);
    cfg = parti_json_get(&d, 0, "config");
    subs = parti_json_get(&d, cfg, "filter_subjects");
    cr_assert_eq(parti_json_count(&d, subs), 2);
    for (i = parti_json_first(&d, subs); i >= 0; i = parti_json_next(&d, i), n++) {
        cr_assert_eq(parti_json_as_string(&d, i, buf, sizeof buf, NULL), PARTI_ERR_OK);
        cr_assert_str_eq(buf, subjects[n]);
    }
    cr_assert_eq(n, 2);
    cr_assert_eq(parti_json_get_int64(&d, cfg, "ack_wait", &ack_wait), PARTI_ERR_OK);
    cr_assert_eq(ack_wait, 30000000000LL);
    cr_assert_eq(parti_json_get_uint64(&d, parti_json_get(&d, 0, "delivered"), "stream_seq", &v), PARTI_ERR_OK);
    cr_assert_eq(v, 42);
    cr_assert_eq(parti_json_get_uint64(&d, 0, "num_pending", &v), PARTI_ERR_OK);
    cr_assert_eq(v, UINT64_MAX);
    cr_assert_eq(parti_json_get_bool(&d, 0, "paused", &paused), PARTI_ERR_OK);
    cr_assert_eq(paused, 0);
    parti_json_doc_free(&d);
}

Test(json_reader, unicode_escapes_and_surrogate_pairs_become_utf8) {
    parti_json_doc d;
    char buf[64];
    size_t needed = 0;
    cr_assert_eq(parse(&d, "\"A\\u0041\\u00e9\\u20AC\\ud83d\\ude00\\uDBFF\\uDFFF\\n\\t\\/\\\\\\\"\\b\\f\\r\""),
                 PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_json_as_string(&d, 0, buf, sizeof buf, &needed), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "AA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\n\t/\\\"\b\f\r");
    cr_assert_eq(needed, strlen(buf) + 1);
    cr_assert_eq(d.nodes[0].count, strlen(buf), "count is the unescaped length");
    cr_assert(parti_json_string_eq(&d, 0, buf));
    parti_json_doc_free(&d);
}

Test(json_reader, raw_utf8_is_accepted) {
    parti_json_doc d;
    cr_assert_eq(parse(&d, "[\"caf\xc3\xa9\",\"\xe2\x82\xac\",\"\xf0\x9f\x98\x80\","
                           "\"\xf4\x8f\xbf\xbf\",\"\xed\x9f\xbf\"]"),
                 PARTI_ERR_OK, "%s", msg);
    cr_assert(parti_json_string_eq(&d, parti_json_at(&d, 0, 0), "caf\xc3\xa9"));
    cr_assert(parti_json_string_eq(&d, parti_json_at(&d, 0, 2), "\xf0\x9f\x98\x80"));
    parti_json_doc_free(&d);
}

Test(json_reader, whitespace_only_around_and_between_tokens) {
    parti_json_doc d;
    cr_assert_eq(parse(&d, " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" :\n\"x\" } \t\r\n"), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_json_count(&d, parti_json_get(&d, 0, "a")), 2);
    parti_json_doc_free(&d);
    reject("\x0b[1]", PARTI_ERR_JSON_SYNTAX, 0);  /* vertical tab is not JSON whitespace */
    reject("[1]\x0c", PARTI_ERR_JSON_SYNTAX, 3);  /* nor form feed */
    reject("\xc2\xa0[1]", PARTI_ERR_JSON_SYNTAX, 0); /* nor NBSP */
    reject("\xef\xbb\xbf[1]", PARTI_ERR_JSON_SYNTAX, 0); /* a BOM is refused */
}

/* ======================================================================== */
/* Reader: rejections                                                        */
/* ======================================================================== */

Test(json_reject, structure) {
    static const bad_case cases[] = {
        {"", 0},          {"   ", 3},          {"[1 2]", 3},     {"{\"a\":1 \"b\":2}", 7}, {"[1]x", 3},
        {"1 2", 2},       {"{} {}", 3},        {"[", 1},         {"{", 1},                 {"]", 0},
        {"[1}", 2},       {"{\"a\":1]", 6},    {"[,1]", 1},      {"[1,,2]", 3},            {"{,}", 1},
        {"{\"a\"}", 4},   {"{\"a\":}", 5},     {"{1:2}", 1},     {"{'a':1}", 1},           {"{a:1}", 1},
        {"[1]]", 3},      {"{\"a\" 1}", 5},    {"\"a\":1", 3},   {"[\"a\":1]", 4},
    };
    REJECT_ALL(cases);
}

Test(json_reject, trailing_commas) {
    static const bad_case cases[] = {{"[1,]", 3}, {"[1, ]", 4}, {"{\"a\":1,}", 7}, {"{\"a\":1 , }", 9}, {"[[],]", 4}};
    REJECT_ALL(cases);
    reject("[1,]", PARTI_ERR_JSON_SYNTAX, 3);
    cr_assert(strstr(msg, "trailing comma"), "%s", msg);
}

Test(json_reject, comments_and_extensions) {
    static const bad_case cases[] = {
        {"[1]//c", 3}, {"/*c*/[1]", 0}, {"[1/*c*/]", 2}, {"# c\n1", 0}, {"NaN", 0}, {"Infinity", 0},
        {"-Infinity", 1}, {"undefined", 0}, {"[1,2,3,]", 7}, {"(1)", 0},
    };
    REJECT_ALL(cases);
}

Test(json_reject, numbers_outside_the_grammar) {
    static const bad_case cases[] = {
        {"01", 1},  {"-01", 2},  {"00", 1},    {"+1", 0},     {".5", 0},   {"1.", 2},    {"1.e5", 2},
        {"1e", 2},  {"1e+", 3},  {"1E-", 3},   {"-", 1},      {"--1", 1},  {"0x10", 1},  {"1.5.3", 3},
        {"1e5.5", 3}, {"[-]", 2}, {"[1.]", 3}, {"- 1", 1},    {"1_000", 1}, {"[01]", 2},
    };
    REJECT_ALL(cases);
    reject("0123", PARTI_ERR_JSON_SYNTAX, 1);
    cr_assert(strstr(msg, "leading zeros"), "%s", msg);
}

Test(json_reject, bad_literals) {
    static const bad_case cases[] = {{"tru", 0}, {"nul", 0}, {"True", 0}, {"NULL", 0}, {"falsey", 5},
                                     {"[nulll]", 5}, {"[t]", 1}, {"f", 0}, {"truefalse", 4}};
    REJECT_ALL(cases);
}

Test(json_reject, raw_control_characters_in_strings) {
    char doc[8];
    unsigned c;
    for (c = 0; c < 0x20; c++) { /* every one, NUL included */
        doc[0] = '"';
        doc[1] = 'a';
        doc[2] = (char)c;
        doc[3] = '"';
        reject_n(doc, 4, PARTI_ERR_JSON_SYNTAX, 2);
    }
    {
        parti_json_doc d; /* DEL is not a control character for JSON */
        cr_assert_eq(parse(&d, "\"\x7f\""), PARTI_ERR_OK);
        parti_json_doc_free(&d);
    }
}

Test(json_reject, bad_escapes) {
    static const bad_case cases[] = {
        {"\"\\x\"", 1},       {"\"\\'\"", 1},   {"\"\\U0041\"", 1}, {"\"\\u00G1\"", 1}, {"[\"\\u12\"]", 2},
        {"\"ab\\ \"", 3},     {"\"\\0\"", 1},   {"\"\\u12", 5},     {"\"\\", 2},        {"\"\\u", 3},
    };
    REJECT_ALL(cases);
}

Test(json_reject, lone_or_misordered_surrogates) {
    static const bad_case cases[] = {
        {"\"\\ud800\"", 1},        {"\"\\udc00\"", 1},          {"\"\\ud800\\u0041\"", 1},
        {"\"\\ud800x\\udc00\"", 1}, {"\"\\ud800\\ud800\"", 1},   {"\"a\\udfff\"", 2},
        {"\"\\udc00\\ud800\"", 1}, {"\"\\ud83d\\ude00\\ude00\"", 13}, {"\"\\ud800\\", 1},
    };
    REJECT_ALL(cases);
}

Test(json_reject, invalid_utf8) {
    static const char *bad[] = {
        "\xc0\xaf",         "\xc1\xbf",         "\xe0\x80\xaf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", /* overlong */
        "\xed\xa0\x80",     "\xed\xbf\xbf",                                                     /* surrogates */
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80",                          /* > U+10FFFF */
        "\x80",             "\xbf",             "\xc3",         "\xe2\x82",     "\xc3\x28",
        "\xf0\x9f\x98",     "\xfe",             "\xff",
    };
    char doc[16];
    size_t i, n;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        n = (size_t)snprintf(doc, sizeof doc, "\"%s\"", bad[i]);
        reject_n(doc, n, PARTI_ERR_JSON_SYNTAX, 1);
        cr_assert(strstr(msg, "UTF-8"), "#%zu: %s", i, msg);
        reject_n(doc + 1, n - 2, PARTI_ERR_JSON_SYNTAX, 0); /* and outside a string */
    }
}

Test(json_reject, every_truncation_of_a_document_fails_cleanly) {
    static const char *t = "{\"type\":\"io.nats.jetstream.api.v1.consumer_info_response\","
                           "\"config\":{\"filter_subjects\":"
                           "[\"a.1\",\"a.\\u00e9\\ud83d\\ude00\"],\"max_deliver\":-5,\"ack_wait\":3.0e10},\"ok\":true,"
                           "\"none\":null,\"no\":false,\"s\":\"caf\xc3\xa9\"}";
    size_t n = strlen(t), k;
    for (k = 0; k < n; k++) {
        parti_json_doc d;
        parti_err e = parse_n(&d, t, k);
        cr_assert_eq(e, PARTI_ERR_JSON_SYNTAX, "prefix of %zu bytes: %s", k, parti_error_name(e));
        cr_assert_leq(off, k, "prefix of %zu bytes: offset %zu", k, off);
        cr_assert(strstr(msg, "at byte"), "prefix of %zu bytes: %s", k, msg);
        cr_assert_null(d.nodes);
    }
    {
        parti_json_doc d;
        cr_assert_eq(parse_n(&d, t, n), PARTI_ERR_OK, "%s", msg);
        parti_json_doc_free(&d);
    }
}

Test(json_reject, truncated_numbers_are_valid_only_where_the_grammar_says) {
    static const char *t = "-12.5e+3";
    static const int valid[] = {0, 0, 1, 1, 0, 1, 0, 0, 1}; /* by prefix length */
    size_t k;
    for (k = 0; k <= strlen(t); k++) {
        parti_json_doc d;
        parti_err e = parse_n(&d, t, k);
        cr_assert_eq(e, valid[k] ? PARTI_ERR_OK : PARTI_ERR_JSON_SYNTAX, "\"%.*s\": %s", (int)k, t, msg);
        if (!valid[k]) cr_assert_eq(off, k, "\"%.*s\": offset %zu", (int)k, t, off);
        parti_json_doc_free(&d);
    }
}

/* "[[[...]]]" or {"a":{"a":...1}} nested depth deep (malloc'd, NUL-terminated). */
static char *nest(int depth, int objects) {
    size_t cap = (size_t)depth * 6 + 2, o = 0;
    char *s = (char *)malloc(cap);
    int i;
    for (i = 0; i < depth; i++) {
        memcpy(s + o, objects ? "{\"a\":" : "[", objects ? 5 : 1);
        o += objects ? 5 : 1;
    }
    s[o++] = '1';
    for (i = 0; i < depth; i++) s[o++] = objects ? '}' : ']';
    s[o] = 0;
    return s;
}

Test(json_reject, nesting_at_and_beyond_the_depth_limit) {
    int objects;
    for (objects = 0; objects <= 1; objects++) {
        parti_json_doc d;
        char *ok = nest(PARTI_JSON_MAX_DEPTH, objects), *deep = nest(PARTI_JSON_MAX_DEPTH + 1, objects);
        int i, node = 0;
        cr_assert_eq(parse(&d, ok), PARTI_ERR_OK, "%s", msg);
        for (i = 0; i < PARTI_JSON_MAX_DEPTH; i++) node = parti_json_first(&d, node);
        cr_assert_eq(parti_json_type_of(&d, node), PARTI_JSON_NUMBER);
        parti_json_doc_free(&d);
        reject(deep, PARTI_ERR_JSON_TOO_DEEP, (size_t)PARTI_JSON_MAX_DEPTH * (objects ? 5 : 1));
        cr_assert(strstr(msg, "too deep"), "%s", msg);
        free(ok);
        free(deep);
    }
}

Test(json_reject, a_million_open_brackets_do_not_exhaust_the_stack) {
    size_t n = 1000000;
    char *s = (char *)malloc(n);
    memset(s, '[', n);
    reject_n(s, n, PARTI_ERR_JSON_TOO_DEEP, PARTI_JSON_MAX_DEPTH);
    memset(s, '{', n);
    reject_n(s, n, PARTI_ERR_JSON_SYNTAX, 1); /* '{' is not a key */
    free(s);
}

/* "[0,0,...,0]" with n zeros. */
static char *zeros(size_t n, size_t *len) {
    char *s = (char *)malloc(2 * n + 2);
    size_t i;
    s[0] = '[';
    for (i = 0; i < n; i++) {
        s[1 + 2 * i] = '0';
        s[2 + 2 * i] = ',';
    }
    s[2 * n] = ']';
    *len = 2 * n + 1;
    return s;
}

Test(json_reject, node_limit) {
    parti_json_doc d;
    size_t len;
    char *s = zeros((size_t)PARTI_JSON_MAX_NODES - 1, &len); /* plus the array: exactly the limit */
    cr_assert_eq(parse_n(&d, s, len), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(d.node_count, PARTI_JSON_MAX_NODES);
    cr_assert_eq(parti_json_count(&d, 0), (uint32_t)PARTI_JSON_MAX_NODES - 1);
    parti_json_doc_free(&d);
    free(s);
    s = zeros((size_t)PARTI_JSON_MAX_NODES, &len);
    reject_n(s, len, PARTI_ERR_JSON_TOO_LARGE, 1 + 2 * ((size_t)PARTI_JSON_MAX_NODES - 1));
    cr_assert(strstr(msg, "PARTI_JSON_MAX_NODES"), "%s", msg);
    free(s);
}

Test(json_reject, length_limit) {
    size_t n = (size_t)PARTI_JSON_MAX_LEN;
    char *s = (char *)malloc(n + 1);
    parti_json_doc d;
    memset(s, ' ', n + 1);
    s[0] = '1';
    cr_assert_eq(parti_json_parse(&d, s, n, &off, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    parti_json_doc_free(&d);
    cr_assert_eq(parti_json_parse(&d, s, n + 1, &off, msg, sizeof msg), PARTI_ERR_JSON_TOO_LARGE);
    cr_assert_eq(off, n);
    cr_assert(strstr(msg, "PARTI_JSON_MAX_LEN"), "%s", msg);
    cr_assert_null(d.nodes);
    free(s);
}

Test(json_reject, messages_say_what_and_where) {
    parti_json_doc d;
    char small[12];
    cr_assert_eq(parse(&d, "{\"a\" 1}"), PARTI_ERR_JSON_SYNTAX);
    cr_assert_str_eq(msg, "JSON syntax error at byte 5: expected ':' after object key (found '1')");
    cr_assert_eq(parse(&d, "[1,"), PARTI_ERR_JSON_SYNTAX);
    cr_assert_str_eq(msg,
                     "JSON syntax error at byte 3: unexpected end of input, expected a value (found end of input)");
    cr_assert_eq(parse(&d, "[\"\x01\"]"), PARTI_ERR_JSON_SYNTAX);
    cr_assert(strstr(msg, "at byte 2") && strstr(msg, "byte 0x01"), "%s", msg);
    /* NULL or tiny message buffers are fine */
    cr_assert_eq(parti_json_parse(&d, "[}", 2, NULL, NULL, 0), PARTI_ERR_JSON_SYNTAX);
    memset(small, 'x', sizeof small);
    cr_assert_eq(parti_json_parse(&d, "[}", 2, NULL, small, sizeof small), PARTI_ERR_JSON_SYNTAX);
    cr_assert_eq(strlen(small), sizeof small - 1);
}

/* ======================================================================== */
/* Reader: accessors                                                         */
/* ======================================================================== */

Test(json_access, integers_exact_forms_and_ranges) {
    static const struct { const char *t; parti_err e; int64_t v; } i64[] = {
        {"0", PARTI_ERR_OK, 0},
        {"-0", PARTI_ERR_OK, 0},
        {"-0.0", PARTI_ERR_OK, 0},
        {"0.000e99", PARTI_ERR_OK, 0},
        {"1e3", PARTI_ERR_OK, 1000},
        {"1E+2", PARTI_ERR_OK, 100},
        {"2.50e1", PARTI_ERR_OK, 25},
        {"100e-2", PARTI_ERR_OK, 1},
        {"12300e-2", PARTI_ERR_OK, 123},
        {"1.0", PARTI_ERR_OK, 1},
        {"-42", PARTI_ERR_OK, -42},
        {"9223372036854775807", PARTI_ERR_OK, INT64_MAX},
        {"-9223372036854775808", PARTI_ERR_OK, INT64_MIN},
        {"-9.223372036854775808e18", PARTI_ERR_OK, INT64_MIN},
        {"9223372036854775808", PARTI_ERR_JSON_RANGE, 0},
        {"-9223372036854775809", PARTI_ERR_JSON_RANGE, 0},
        {"1.5", PARTI_ERR_JSON_RANGE, 0},
        {"0.1", PARTI_ERR_JSON_RANGE, 0},
        {"1e-5", PARTI_ERR_JSON_RANGE, 0},
        {"1e19", PARTI_ERR_JSON_RANGE, 0},
        {"1e999999999999999999999", PARTI_ERR_JSON_RANGE, 0},
        {"1e-999999999999999999999", PARTI_ERR_JSON_RANGE, 0},
        {"123456789012345678901234567890", PARTI_ERR_JSON_RANGE, 0},
    };
    static const struct { const char *t; parti_err e; uint64_t v; } u64[] = {
        {"18446744073709551615", PARTI_ERR_OK, UINT64_MAX},
        {"1.8446744073709551615e19", PARTI_ERR_OK, UINT64_MAX},
        {"1e19", PARTI_ERR_OK, 10000000000000000000u},
        {"-0", PARTI_ERR_OK, 0},
        {"18446744073709551616", PARTI_ERR_JSON_RANGE, 0},
        {"1e20", PARTI_ERR_JSON_RANGE, 0},
        {"-1", PARTI_ERR_JSON_RANGE, 0},
        {"0.5", PARTI_ERR_JSON_RANGE, 0},
    };
    size_t i;
    for (i = 0; i < sizeof i64 / sizeof *i64; i++) {
        parti_json_doc d;
        int64_t v = 77;
        cr_assert_eq(parse(&d, i64[i].t), PARTI_ERR_OK, "%s: %s", i64[i].t, msg);
        cr_assert_eq(parti_json_as_int64(&d, 0, &v), i64[i].e, "%s", i64[i].t);
        cr_assert_eq(v, i64[i].e ? 77 : i64[i].v, "%s gave %lld", i64[i].t, (long long)v);
        parti_json_doc_free(&d);
    }
    for (i = 0; i < sizeof u64 / sizeof *u64; i++) {
        parti_json_doc d;
        uint64_t v = 77;
        cr_assert_eq(parse(&d, u64[i].t), PARTI_ERR_OK, "%s: %s", u64[i].t, msg);
        cr_assert_eq(parti_json_as_uint64(&d, 0, &v), u64[i].e, "%s", u64[i].t);
        cr_assert_eq(v, u64[i].e ? 77 : u64[i].v, "%s", u64[i].t);
        parti_json_doc_free(&d);
    }
}

Test(json_access, wrong_types_and_missing_keys) {
    parti_json_doc d;
    int64_t i = 5;
    uint64_t u = 5;
    int b = 5;
    char buf[8] = "canary";
    size_t needed = 9;
    cr_assert_eq(parse(&d, "{\"s\":\"12\",\"n\":null,\"t\":true,\"i\":7,\"a\":[1]}"), PARTI_ERR_OK);
    cr_assert_eq(parti_json_get_int64(&d, 0, "missing", &i), PARTI_ERR_JSON_MISSING);
    cr_assert_eq(parti_json_get_uint64(&d, 0, "missing", &u), PARTI_ERR_JSON_MISSING);
    cr_assert_eq(parti_json_get_bool(&d, 0, "missing", &b), PARTI_ERR_JSON_MISSING);
    cr_assert_eq(parti_json_get_string(&d, 0, "missing", buf, sizeof buf, &needed), PARTI_ERR_JSON_MISSING);
    cr_assert_eq(parti_json_get(&d, 0, "missing"), -1);
    cr_assert_eq(parti_json_get(&d, 0, ""), -1);
    cr_assert_eq(parti_json_get_int64(&d, 0, "s", &i), PARTI_ERR_JSON_TYPE); /* "12" is a string */
    cr_assert_eq(parti_json_get_int64(&d, 0, "n", &i), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_get_uint64(&d, 0, "t", &u), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_get_bool(&d, 0, "i", &b), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_get_string(&d, 0, "i", buf, sizeof buf, &needed), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_get_string(&d, 0, "a", buf, sizeof buf, &needed), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_as_bool(&d, parti_json_get(&d, 0, "n"), &b), PARTI_ERR_JSON_TYPE);
    /* a non-object as the container */
    cr_assert_eq(parti_json_get_int64(&d, parti_json_get(&d, 0, "a"), "x", &i), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_get(&d, parti_json_get(&d, 0, "a"), "x"), -1);
    cr_assert_eq(parti_json_at(&d, 0, 0), -1, "at() is for arrays");
    cr_assert_eq(parti_json_at(&d, parti_json_get(&d, 0, "a"), 1), -1);
    /* out-parameters untouched on failure */
    cr_assert_eq(i, 5);
    cr_assert_eq(u, 5);
    cr_assert_eq(b, 5);
    cr_assert_str_eq(buf, "canary");
    cr_assert_eq(parti_json_get_bool(&d, 0, "t", &b), PARTI_ERR_OK);
    cr_assert_eq(b, 1);
    parti_json_doc_free(&d);
}

Test(json_access, duplicate_keys_last_wins) {
    parti_json_doc d;
    int64_t v = 0;
    cr_assert_eq(parse(&d, "{\"a\":1,\"a\":2,\"b\":3,\"a\":4}"), PARTI_ERR_OK);
    cr_assert_eq(parti_json_count(&d, 0), 4);
    cr_assert_eq(parti_json_get_int64(&d, 0, "a", &v), PARTI_ERR_OK);
    cr_assert_eq(v, 4);
    parti_json_doc_free(&d);
}

Test(json_access, keys_compare_unescaped) {
    parti_json_doc d;
    int64_t v = 0;
    cr_assert_eq(parse(&d, "{\"a\\u0062\":1,\"c\\\"d\":2,\"\\u00e9\":3,\"n\\u0000ul\":4,\"\\ud83d\\ude00\":5}"),
                 PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(parti_json_get_int64(&d, 0, "ab", &v), PARTI_ERR_OK);
    cr_assert_eq(v, 1);
    cr_assert_eq(parti_json_get_int64(&d, 0, "c\"d", &v), PARTI_ERR_OK);
    cr_assert_eq(v, 2);
    cr_assert_eq(parti_json_get_int64(&d, 0, "\xc3\xa9", &v), PARTI_ERR_OK);
    cr_assert_eq(v, 3);
    cr_assert_eq(parti_json_as_int64(&d, parti_json_get_n(&d, 0, "n\0ul", 4), &v), PARTI_ERR_OK);
    cr_assert_eq(v, 4);
    cr_assert_eq(parti_json_get_int64(&d, 0, "\xf0\x9f\x98\x80", &v), PARTI_ERR_OK);
    cr_assert_eq(v, 5);
    cr_assert_eq(parti_json_get(&d, 0, "a\\u0062"), -1, "the escaped spelling is not the key");
    cr_assert_eq(parti_json_get(&d, 0, "n"), -1, "a NUL in the key is not the end of it");
    cr_assert_eq(parti_json_get(&d, 0, "a"), -1);
    cr_assert_eq(parti_json_get(&d, 0, "abc"), -1);
    parti_json_doc_free(&d);
}

Test(json_access, iteration_and_member_keys) {
    static const char *names[] = {"x", "y", "z"};
    parti_json_doc d;
    int i, n = 0, y;
    cr_assert_eq(parse(&d, "{\"x\":1,\"y\":[true,{\"k\":null}],\"z\":{}}"), PARTI_ERR_OK);
    for (i = parti_json_first(&d, 0); i >= 0; i = parti_json_next(&d, i), n++) {
        int k = parti_json_member_key(&d, i);
        cr_assert_eq(parti_json_type_of(&d, k), PARTI_JSON_STRING);
        cr_assert(d.nodes[k].flags & PARTI_JSON_FLAG_KEY);
        cr_assert(parti_json_string_eq(&d, k, names[n]));
    }
    cr_assert_eq(n, 3);
    y = parti_json_get(&d, 0, "y");
    cr_assert_eq(parti_json_member_key(&d, parti_json_at(&d, y, 0)), -1, "array elements have no key");
    cr_assert_eq(parti_json_member_key(&d, 0), -1);
    cr_assert_eq(parti_json_type_of(&d, parti_json_get(&d, parti_json_at(&d, y, 1), "k")), PARTI_JSON_NULL);
    cr_assert_eq(parti_json_next(&d, parti_json_get(&d, 0, "z")), -1);
    cr_assert_eq(parti_json_first(&d, parti_json_get(&d, 0, "x")), -1, "scalars have no children");
    parti_json_doc_free(&d);
}

Test(json_access, string_copies_and_sizes) {
    parti_json_doc d;
    char buf[16], *dup = NULL;
    size_t needed = 0, len = 0;
    cr_assert_eq(parse(&d, "[\"hello\",\"a\\u0000b\",5,\"\"]"), PARTI_ERR_OK);
    memset(buf, 'Z', sizeof buf);
    cr_assert_eq(parti_json_as_string(&d, parti_json_at(&d, 0, 0), buf, 5, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(needed, 6);
    cr_assert_eq(buf[0], 'Z', "nothing written when it does not fit");
    cr_assert_eq(parti_json_as_string(&d, parti_json_at(&d, 0, 0), NULL, 0, &needed), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(parti_json_as_string(&d, parti_json_at(&d, 0, 0), buf, 6, &needed), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "hello");
    /* U+0000 cannot be a C string */
    cr_assert_eq(parti_json_as_string(&d, parti_json_at(&d, 0, 1), buf, sizeof buf, &needed), PARTI_ERR_JSON_RANGE);
    cr_assert_eq(parti_json_as_string_dup(&d, parti_json_at(&d, 0, 1), &dup), PARTI_ERR_JSON_RANGE);
    cr_assert_null(dup);
    cr_assert_eq(parti_json_as_bytes(&d, parti_json_at(&d, 0, 1), buf, 2, &len), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(len, 3);
    cr_assert_eq(parti_json_as_bytes(&d, parti_json_at(&d, 0, 1), buf, 3, &len), PARTI_ERR_OK);
    cr_assert(memcmp(buf, "a\0b", 3) == 0);
    cr_assert(parti_json_string_eq_n(&d, parti_json_at(&d, 0, 1), "a\0b", 3));
    cr_assert_not(parti_json_string_eq(&d, parti_json_at(&d, 0, 1), "a"));
    /* not a string */
    cr_assert_eq(parti_json_as_string(&d, parti_json_at(&d, 0, 2), buf, sizeof buf, &needed), PARTI_ERR_JSON_TYPE);
    cr_assert_eq(parti_json_as_bytes(&d, parti_json_at(&d, 0, 2), buf, sizeof buf, &len), PARTI_ERR_JSON_TYPE);
    cr_assert_not(parti_json_string_eq(&d, parti_json_at(&d, 0, 2), "5"));
    /* empty */
    cr_assert_eq(parti_json_as_string(&d, parti_json_at(&d, 0, 3), buf, 1, &needed), PARTI_ERR_OK);
    cr_assert_str_eq(buf, "");
    cr_assert_eq(parti_json_as_bytes(&d, parti_json_at(&d, 0, 3), NULL, 0, &len), PARTI_ERR_OK);
    cr_assert_eq(len, 0);
    cr_assert_eq(parti_json_as_string_dup(&d, parti_json_at(&d, 0, 0), &dup), PARTI_ERR_OK);
    cr_assert_str_eq(dup, "hello");
    free(dup);
    parti_json_doc_free(&d);
}

Test(json_access, string_eq_escaped_and_plain) {
    parti_json_doc d;
    cr_assert_eq(parse(&d, "[\"orders.eu\",\"orders\\u002eeu\",\"orders.e\",\"\\u00e9\"]"), PARTI_ERR_OK);
    cr_assert(parti_json_string_eq(&d, parti_json_at(&d, 0, 0), "orders.eu"));
    cr_assert(parti_json_string_eq(&d, parti_json_at(&d, 0, 1), "orders.eu"));
    cr_assert_not(parti_json_string_eq(&d, parti_json_at(&d, 0, 1), "orders.e"));
    cr_assert_not(parti_json_string_eq(&d, parti_json_at(&d, 0, 1), "orders.euu"));
    cr_assert_not(parti_json_string_eq(&d, parti_json_at(&d, 0, 2), "orders.eu"));
    cr_assert(parti_json_string_eq(&d, parti_json_at(&d, 0, 3), "\xc3\xa9"));
    cr_assert_not(parti_json_string_eq(&d, parti_json_at(&d, 0, 3), "\xc3\xaa"));
    parti_json_doc_free(&d);
}

Test(json_access, null_arguments_everywhere) {
    parti_json_doc d;
    int64_t i;
    uint64_t u;
    int b;
    char buf[8], *dup = (char *)1;
    size_t n;
    cr_assert_eq(parti_json_parse(NULL, "1", 1, &off, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_parse(&d, NULL, 0, &off, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(msg, "NULL"), "%s", msg);
    cr_assert_null(d.nodes);
    parti_json_doc_free(NULL);
    cr_assert_eq(parti_json_root(NULL), -1);
    cr_assert_eq(parti_json_type_of(NULL, 0), PARTI_JSON_INVALID);
    cr_assert_eq(parti_json_count(NULL, 0), 0);
    cr_assert_eq(parti_json_first(NULL, 0), -1);
    cr_assert_eq(parti_json_next(NULL, 0), -1);
    cr_assert_eq(parti_json_member_key(NULL, 0), -1);
    cr_assert_eq(parti_json_get(NULL, 0, "a"), -1);
    cr_assert_eq(parti_json_get_n(NULL, 0, "a", 1), -1);
    cr_assert_eq(parti_json_at(NULL, 0, 0), -1);
    cr_assert_null(parti_json_raw(NULL, 0, &n));
    cr_assert_eq(n, 0);
    cr_assert_eq(parti_json_as_int64(NULL, 0, &i), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_uint64(NULL, 0, &u), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_bool(NULL, 0, &b), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_string(NULL, 0, buf, sizeof buf, &n), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_bytes(NULL, 0, buf, sizeof buf, &n), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_string_dup(NULL, 0, &dup), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_null(dup);
    cr_assert_not(parti_json_string_eq(NULL, 0, "a"));
    cr_assert_eq(parti_json_get_int64(NULL, 0, "a", &i), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_uint64(NULL, 0, "a", &u), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_bool(NULL, 0, "a", &b), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_string(NULL, 0, "a", buf, sizeof buf, &n), PARTI_ERR_INVALID_ARGUMENT);

    cr_assert_eq(parse(&d, "{\"a\":\"x\",\"n\":1}"), PARTI_ERR_OK);
    cr_assert_eq(parti_json_get(&d, 0, NULL), -1);
    cr_assert_eq(parti_json_get_n(&d, 0, NULL, 3), -1);
    cr_assert_not(parti_json_string_eq(&d, parti_json_get(&d, 0, "a"), NULL));
    cr_assert_eq(parti_json_as_int64(&d, parti_json_get(&d, 0, "n"), NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_uint64(&d, parti_json_get(&d, 0, "n"), NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_bool(&d, 0, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_string_dup(&d, 1, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_as_string(&d, parti_json_get(&d, 0, "a"), NULL, 5, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_int64(&d, 0, NULL, &i), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_int64(&d, 0, "n", NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_uint64(&d, 0, "n", NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_bool(&d, 0, "n", NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_json_get_string(&d, 0, NULL, buf, sizeof buf, NULL), PARTI_ERR_INVALID_ARGUMENT);
    parti_json_doc_free(&d);
}

Test(json_access, bad_node_indices_are_safe) {
    static const int bad[] = {-1, -2, 5, 6, 1000, INT_MAX, INT_MIN};
    parti_json_doc d, zero;
    size_t k, n;
    int64_t i;
    uint64_t u;
    int b;
    char buf[8];
    memset(&zero, 0, sizeof zero);
    cr_assert_eq(parti_json_root(&zero), -1);
    cr_assert_eq(parti_json_type_of(&zero, 0), PARTI_JSON_INVALID);
    cr_assert_eq(parse(&d, "{\"a\":[1]}"), PARTI_ERR_OK); /* 4 nodes: {, "a", [, 1 */
    cr_assert_eq(d.node_count, 4);
    for (k = 0; k < sizeof bad / sizeof *bad; k++) {
        int x = bad[k];
        cr_assert_eq(parti_json_type_of(&d, x), PARTI_JSON_INVALID, "%d", x);
        cr_assert_eq(parti_json_count(&d, x), 0);
        cr_assert_eq(parti_json_first(&d, x), -1);
        cr_assert_eq(parti_json_next(&d, x), -1);
        cr_assert_eq(parti_json_member_key(&d, x), -1);
        cr_assert_eq(parti_json_get(&d, x, "a"), -1);
        cr_assert_eq(parti_json_at(&d, x, 0), -1);
        cr_assert_null(parti_json_raw(&d, x, &n));
        cr_assert_eq(parti_json_as_int64(&d, x, &i), PARTI_ERR_INVALID_ARGUMENT);
        cr_assert_eq(parti_json_as_uint64(&d, x, &u), PARTI_ERR_INVALID_ARGUMENT);
        cr_assert_eq(parti_json_as_bool(&d, x, &b), PARTI_ERR_INVALID_ARGUMENT);
        cr_assert_eq(parti_json_as_string(&d, x, buf, sizeof buf, &n), PARTI_ERR_INVALID_ARGUMENT);
        cr_assert_not(parti_json_string_eq(&d, x, "a"));
        cr_assert_eq(parti_json_get_int64(&d, x, "a", &i), PARTI_ERR_INVALID_ARGUMENT);
    }
    cr_assert_eq(parti_json_at(&d, 2, 1), -1);
    cr_assert_eq(parti_json_at(&d, 2, UINT32_MAX), -1);
    parti_json_doc_free(&d);
    parti_json_doc_free(&d); /* twice is fine */
    cr_assert_eq(parti_json_root(&d), -1);
}

Test(json_access, document_keeps_its_own_copy_of_the_text) {
    parti_json_doc d;
    char *text = (char *)malloc(16);
    memcpy(text, "{\"k\":\"value\"}", 13);
    cr_assert_eq(parti_json_parse(&d, text, 13, NULL, NULL, 0), PARTI_ERR_OK);
    memset(text, 'x', 13);
    free(text);
    cr_assert(parti_json_string_eq(&d, parti_json_get(&d, 0, "k"), "value"));
    cr_assert_eq(d.len, 13);
    cr_assert_str_eq(d.text, "{\"k\":\"value\"}");
    parti_json_doc_free(&d);
}

/* ======================================================================== */
/* Round trip and speed                                                      */
/* ======================================================================== */

Test(json_roundtrip, writer_output_reads_back_the_same) {
    char buf[512], s[64];
    size_t needed, len;
    int64_t i;
    uint64_t u;
    int b, a, inner;
    parti_json_writer w;
    parti_json_doc d;
    parti_json_writer_init(&w, buf, sizeof buf);
    parti_json_object_begin(&w);
    parti_json_key(&w, "s");
    parti_json_string(&w, "q\"\\\n\x01\x1f\xc3\xa9\xf0\x9f\x98\x80/");
    parti_json_key(&w, "nul");
    parti_json_string_n(&w, "a\0b", 3);
    parti_json_key(&w, "ke\"y");
    parti_json_int(&w, INT64_MIN);
    parti_json_key(&w, "u");
    parti_json_uint(&w, UINT64_MAX);
    parti_json_key(&w, "b");
    parti_json_bool(&w, 1);
    parti_json_key(&w, "n");
    parti_json_null(&w);
    parti_json_key(&w, "a");
    parti_json_array_begin(&w);
    parti_json_array_begin(&w);
    parti_json_array_end(&w);
    parti_json_object_begin(&w);
    parti_json_object_end(&w);
    parti_json_number_raw(&w, "-1.5e-3", 7);
    parti_json_array_end(&w);
    parti_json_object_end(&w);
    cr_assert_eq(parti_json_writer_finish(&w, &needed), PARTI_ERR_OK);

    cr_assert_eq(parse_n(&d, buf, needed - 1), PARTI_ERR_OK, "%s: %s", buf, msg);
    cr_assert_eq(parti_json_count(&d, 0), 7);
    cr_assert_eq(parti_json_get_string(&d, 0, "s", s, sizeof s, NULL), PARTI_ERR_OK);
    cr_assert_str_eq(s, "q\"\\\n\x01\x1f\xc3\xa9\xf0\x9f\x98\x80/");
    cr_assert_eq(parti_json_as_bytes(&d, parti_json_get(&d, 0, "nul"), s, sizeof s, &len), PARTI_ERR_OK);
    cr_assert(len == 3 && memcmp(s, "a\0b", 3) == 0);
    cr_assert_eq(parti_json_get_int64(&d, 0, "ke\"y", &i), PARTI_ERR_OK);
    cr_assert_eq(i, INT64_MIN);
    cr_assert_eq(parti_json_get_uint64(&d, 0, "u", &u), PARTI_ERR_OK);
    cr_assert_eq(u, UINT64_MAX);
    cr_assert_eq(parti_json_get_bool(&d, 0, "b", &b), PARTI_ERR_OK);
    cr_assert_eq(b, 1);
    cr_assert_eq(parti_json_type_of(&d, parti_json_get(&d, 0, "n")), PARTI_JSON_NULL);
    a = parti_json_get(&d, 0, "a");
    cr_assert_eq(parti_json_count(&d, a), 3);
    cr_assert_eq(parti_json_type_of(&d, parti_json_at(&d, a, 0)), PARTI_JSON_ARRAY);
    cr_assert_eq(parti_json_type_of(&d, parti_json_at(&d, a, 1)), PARTI_JSON_OBJECT);
    inner = parti_json_at(&d, a, 2);
    cr_assert(memcmp(parti_json_raw(&d, inner, &len), "-1.5e-3", 7) == 0 && len == 7);
    cr_assert_eq(parti_json_as_int64(&d, inner, &i), PARTI_ERR_JSON_RANGE);
    parti_json_doc_free(&d);
}

Test(json_speed, two_megabytes_of_short_strings_parse_fast) {
    const int n = 100000;
    size_t cap = (size_t)n * 24 + 2, len = 0;
    char *s = (char *)malloc(cap);
    parti_json_doc d;
    clock_t t0;
    double secs;
    int k, i;
    s[len++] = '[';
    for (k = 0; k < n; k++)
        len += (size_t)snprintf(s + len, cap - len, "%s\"orders.eu.p%06d\"", k ? "," : "", k);
    s[len++] = ']';
    cr_assert_gt(len, (size_t)2000000);
    t0 = clock();
    cr_assert_eq(parti_json_parse(&d, s, len, NULL, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    cr_assert_eq(parti_json_count(&d, 0), (uint32_t)n);
    for (k = 0, i = parti_json_first(&d, 0); i >= 0; i = parti_json_next(&d, i)) k++;
    cr_assert_eq(k, n);
    cr_assert(parti_json_string_eq(&d, d.node_count - 1, "orders.eu.p099999"));
    /* well under 100 ms optimized; this bound holds even under ASan+UBSan and
     * still catches anything quadratic */
    cr_assert_lt(secs, 1.0, "parsing took %.3f s", secs);
    parti_json_doc_free(&d);
    free(s);
}

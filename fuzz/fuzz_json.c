#define PARTI_IMPLEMENTATION
#include "parti.h"

/* Fuzz target: the JSON reader on arbitrary bytes, and the writer on what it
 * reads back. Properties:
 *   - a refused input gets one of the reader's error codes, an offset inside
 *     the input and a message naming that offset, and leaves the doc empty;
 *   - in an accepted document every node is well formed and every accessor
 *     agrees with the others (counts, iteration, at(), keys, lookups, string
 *     copies and sizes, integers against strtoll/strtoull/strtod);
 *   - the writer re-serializes the document (size-only pass, then an exact
 *     buffer), the output parses again, is structurally equal (same types,
 *     same unescaped strings, same number text) and re-serializes to the
 *     same bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                                   \
    do {                                                                                                           \
        if (!(c)) __builtin_trap();                                                                                \
    } while (0)

/* Parses through an exact-size heap copy without a NUL, so ASan sees over-reads. */
static parti_err parse_copy(parti_json_doc *d, const void *data, size_t size, size_t *off, char *msg, size_t cap) {
    char *copy = (char *)malloc(size ? size : 1);
    parti_err e;
    CHECK(copy);
    if (size) memcpy(copy, data, size);
    e = parti_json_parse(d, copy, size, off, msg, cap);
    free(copy);
    return e;
}

static void check_failure(const parti_json_doc *d, parti_err e, size_t off, size_t size, const char *msg) {
    char where[40];
    CHECK(e == PARTI_ERR_JSON_SYNTAX || e == PARTI_ERR_JSON_TOO_DEEP || e == PARTI_ERR_JSON_TOO_LARGE);
    CHECK(off <= size);
    snprintf(where, sizeof where, "at byte %zu", off);
    CHECK(strstr(msg, where) != NULL);
    CHECK(d->nodes == NULL && d->text == NULL && d->node_count == 0);
}

/* The unescaped bytes of a string node, malloc'd (count + 1 bytes). */
static char *string_bytes(const parti_json_doc *d, int node, size_t *len) {
    size_t n = 0, n2 = 0;
    char *buf;
    CHECK(parti_json_as_bytes(d, node, NULL, 0, &n) == (d->nodes[node].count ? PARTI_ERR_BUFFER_TOO_SMALL
                                                                              : PARTI_ERR_OK));
    CHECK(n == d->nodes[node].count);
    buf = (char *)malloc(n + 1);
    CHECK(buf);
    CHECK(parti_json_as_bytes(d, node, buf, n + 1, &n2) == PARTI_ERR_OK && n2 == n && buf[n] == 0);
    *len = n;
    return buf;
}

static void check_string(const parti_json_doc *d, int node) {
    const parti_json_node *nd = &d->nodes[node];
    size_t len, needed = 0;
    char *bytes = string_bytes(d, node, &len), *dup = NULL;
    int has_nul = memchr(bytes, 0, len) != NULL;
    CHECK(has_nul == !!(nd->flags & PARTI_JSON_FLAG_NUL));
    CHECK(parti_json_string_eq_n(d, node, bytes, len));
    CHECK(!(nd->flags & PARTI_JSON_FLAG_ESCAPED) == (memchr(d->text + nd->start, '\\', nd->len) == NULL));
    if (len) CHECK(!parti_json_string_eq_n(d, node, bytes, len - 1));
    if (has_nul) {
        CHECK(parti_json_as_string(d, node, NULL, 0, &needed) == PARTI_ERR_JSON_RANGE);
        CHECK(parti_json_as_string_dup(d, node, &dup) == PARTI_ERR_JSON_RANGE && dup == NULL);
    } else {
        char *out = (char *)malloc(len + 1);
        CHECK(out);
        CHECK(parti_json_as_string(d, node, out, len, &needed) == PARTI_ERR_BUFFER_TOO_SMALL && needed == len + 1);
        CHECK(parti_json_as_string(d, node, out, len + 1, &needed) == PARTI_ERR_OK);
        CHECK(memcmp(out, bytes, len + 1) == 0);
        CHECK(parti_json_string_eq(d, node, out));
        CHECK(parti_json_as_string_dup(d, node, &dup) == PARTI_ERR_OK && strcmp(dup, out) == 0);
        free(dup);
        free(out);
    }
    free(bytes);
}

/* Integers against the C library on the same text. */
static void check_number(const parti_json_doc *d, int node) {
    size_t len;
    const char *raw = parti_json_raw(d, node, &len);
    char text[64];
    int64_t i = 0;
    uint64_t u = 0;
    parti_err ei = parti_json_as_int64(d, node, &i), eu = parti_json_as_uint64(d, node, &u);
    CHECK(ei == PARTI_ERR_OK || ei == PARTI_ERR_JSON_RANGE);
    CHECK(eu == PARTI_ERR_OK || eu == PARTI_ERR_JSON_RANGE);
    if (ei == PARTI_ERR_OK && i >= 0) CHECK(eu == PARTI_ERR_OK && u == (uint64_t)i);
    if (eu == PARTI_ERR_OK && u <= (uint64_t)INT64_MAX) CHECK(ei == PARTI_ERR_OK && (uint64_t)i == u);
    if (len >= sizeof text) return;
    memcpy(text, raw, len);
    text[len] = 0;
    if (d->nodes[node].flags & PARTI_JSON_FLAG_INTEGER) {
        long long ll;
        errno = 0;
        ll = strtoll(text, NULL, 10);
        CHECK((ei == PARTI_ERR_OK) == (errno == 0));
        if (ei == PARTI_ERR_OK) CHECK(ll == i);
        if (text[0] != '-') {
            unsigned long long ull;
            errno = 0;
            ull = strtoull(text, NULL, 10);
            CHECK((eu == PARTI_ERR_OK) == (errno == 0));
            if (eu == PARTI_ERR_OK) CHECK(ull == u);
        }
    } else if (ei == PARTI_ERR_OK && i > -(1LL << 53) && i < (1LL << 53)) {
        CHECK(strtod(text, NULL) == (double)i); /* an exact integer below 2^53 is exact in a double */
    }
    if (text[0] == '-' && eu == PARTI_ERR_OK) CHECK(u == 0);
}

/* Children agree with count, at(), keys and lookups. */
static void check_container(const parti_json_doc *d, int node) {
    const parti_json_node *nd = &d->nodes[node];
    uint32_t n = 0;
    int c;
    for (c = parti_json_first(d, node); c >= 0; c = parti_json_next(d, c), n++) {
        int k = parti_json_member_key(d, c);
        CHECK(c > node && n < nd->count);
        if (n < 8) CHECK(parti_json_at(d, node, n) == (nd->type == PARTI_JSON_ARRAY ? c : -1));
        if (nd->type == PARTI_JSON_ARRAY) {
            CHECK(k == -1);
            continue;
        }
        CHECK(k >= 0 && k < c && parti_json_type_of(d, k) == PARTI_JSON_STRING);
        CHECK(d->nodes[k].flags & PARTI_JSON_FLAG_KEY);
        if (n < 32) { /* lookups are linear: bound the quadratic part */
            size_t klen;
            char *key = string_bytes(d, k, &klen);
            int g = parti_json_get_n(d, node, key, klen);
            CHECK(g >= c && parti_json_string_eq_n(d, parti_json_member_key(d, g), key, klen));
            if (!memchr(key, 0, klen)) CHECK(parti_json_get(d, node, key) == g);
            free(key);
        }
    }
    CHECK(n == nd->count && parti_json_count(d, node) == n);
    CHECK(parti_json_at(d, node, n) == -1);
}

static void check_node(const parti_json_doc *d, int node) {
    const parti_json_node *nd = &d->nodes[node];
    size_t len;
    int b;
    int64_t i;
    parti_json_type t = parti_json_type_of(d, node);
    CHECK(t >= PARTI_JSON_NULL && t <= PARTI_JSON_OBJECT && t == nd->type);
    CHECK(parti_json_raw(d, node, &len) == d->text + nd->start && len == nd->len);
    CHECK((size_t)nd->start + nd->len <= d->len);
    CHECK((parti_json_as_bool(d, node, &b) == PARTI_ERR_OK) == (t == PARTI_JSON_TRUE || t == PARTI_JSON_FALSE));
    if (t == PARTI_JSON_STRING) check_string(d, node);
    else CHECK(parti_json_as_bytes(d, node, NULL, 0, &len) == PARTI_ERR_JSON_TYPE);
    if (t == PARTI_JSON_NUMBER) check_number(d, node);
    else CHECK(parti_json_as_int64(d, node, &i) == PARTI_ERR_JSON_TYPE);
    if (t == PARTI_JSON_ARRAY || t == PARTI_JSON_OBJECT) check_container(d, node);
    else CHECK(parti_json_first(d, node) == -1 && parti_json_count(d, node) == 0);
}

/* Writes node and everything under it (recursion bounded by PARTI_JSON_MAX_DEPTH). */
static void emit(const parti_json_doc *d, int node, parti_json_writer *w) {
    size_t len;
    const char *raw;
    char *bytes;
    int c;
    switch (parti_json_type_of(d, node)) {
    case PARTI_JSON_NULL: parti_json_null(w); break;
    case PARTI_JSON_FALSE: parti_json_bool(w, 0); break;
    case PARTI_JSON_TRUE: parti_json_bool(w, 1); break;
    case PARTI_JSON_NUMBER:
        raw = parti_json_raw(d, node, &len);
        parti_json_number_raw(w, raw, len);
        break;
    case PARTI_JSON_STRING:
        bytes = string_bytes(d, node, &len);
        parti_json_string_n(w, bytes, len);
        free(bytes);
        break;
    case PARTI_JSON_ARRAY:
        parti_json_array_begin(w);
        for (c = parti_json_first(d, node); c >= 0; c = parti_json_next(d, c)) emit(d, c, w);
        parti_json_array_end(w);
        break;
    case PARTI_JSON_OBJECT:
        parti_json_object_begin(w);
        for (c = parti_json_first(d, node); c >= 0; c = parti_json_next(d, c)) {
            bytes = string_bytes(d, parti_json_member_key(d, c), &len);
            parti_json_key_n(w, bytes, len);
            free(bytes);
            emit(d, c, w);
        }
        parti_json_object_end(w);
        break;
    default: CHECK(0);
    }
}

/* Serializes a document: size-only pass, then an exact buffer. */
static char *serialize(const parti_json_doc *d, size_t *len) {
    parti_json_writer w;
    size_t needed = 0, needed2 = 0;
    char *out;
    parti_json_writer_init(&w, NULL, 0);
    emit(d, 0, &w);
    CHECK(parti_json_writer_finish(&w, &needed) == PARTI_ERR_BUFFER_TOO_SMALL);
    out = (char *)malloc(needed);
    CHECK(out);
    parti_json_writer_init(&w, out, needed);
    emit(d, 0, &w);
    CHECK(parti_json_writer_finish(&w, &needed2) == PARTI_ERR_OK && needed2 == needed);
    CHECK(strlen(out) == needed - 1); /* NUL bytes inside strings come out as \u0000 */
    *len = needed - 1;
    return out;
}

/* Same types, same unescaped strings, same number text, same members in order. */
static int same(const parti_json_doc *a, int x, const parti_json_doc *b, int y) {
    parti_json_type t = parti_json_type_of(a, x);
    size_t la, lb;
    const char *ra, *rb;
    char *sa, *sb;
    int cx, cy, eq = 1;
    if (t != parti_json_type_of(b, y) || parti_json_count(a, x) != parti_json_count(b, y)) return 0;
    if (t == PARTI_JSON_NUMBER) {
        ra = parti_json_raw(a, x, &la);
        rb = parti_json_raw(b, y, &lb);
        return la == lb && memcmp(ra, rb, la) == 0;
    }
    if (t == PARTI_JSON_STRING) {
        sa = string_bytes(a, x, &la);
        sb = string_bytes(b, y, &lb);
        eq = la == lb && memcmp(sa, sb, la) == 0;
        free(sa);
        free(sb);
        return eq;
    }
    for (cx = parti_json_first(a, x), cy = parti_json_first(b, y); eq && cx >= 0 && cy >= 0;
         cx = parti_json_next(a, cx), cy = parti_json_next(b, cy)) {
        if (t == PARTI_JSON_OBJECT)
            eq = same(a, parti_json_member_key(a, cx), b, parti_json_member_key(b, cy));
        eq = eq && same(a, cx, b, cy);
    }
    return eq && cx < 0 && cy < 0;
}

static void check_round_trip(const parti_json_doc *d) {
    parti_json_doc d2;
    size_t len, len2, off = 0;
    char msg[256];
    char *out = serialize(d, &len), *out2;
    CHECK(len <= d->len); /* whitespace dropped, escapes never grow */
    CHECK(parse_copy(&d2, out, len, &off, msg, sizeof msg) == PARTI_ERR_OK);
    CHECK(d2.node_count == d->node_count);
    CHECK(same(d, 0, &d2, 0));
    out2 = serialize(&d2, &len2);
    CHECK(len2 == len && memcmp(out, out2, len) == 0);
    free(out2);
    free(out);
    parti_json_doc_free(&d2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parti_json_doc d;
    size_t off = (size_t)-1;
    char msg[256];
    int i;
    parti_err e;
    msg[0] = 0;
    e = parse_copy(&d, data, size, &off, msg, sizeof msg);
    if (e != PARTI_ERR_OK) {
        check_failure(&d, e, off, size, msg);
        return 0;
    }
    CHECK(d.len == size && d.text[size] == 0 && memcmp(d.text, data, size) == 0);
    CHECK(d.node_count >= 1 && parti_json_root(&d) == 0);
    CHECK(parti_json_type_of(&d, -1) == PARTI_JSON_INVALID);
    CHECK(parti_json_type_of(&d, d.node_count) == PARTI_JSON_INVALID);
    for (i = 0; i < d.node_count; i++) check_node(&d, i);
    check_round_trip(&d);
    parti_json_doc_free(&d);
    return 0;
}

/* Fuzz target: the parsers of untrusted JetStream protocol text: ack
 * subjects of delivered messages, pull status lines, server versions, and
 * the W3C traceparent header.
 * Input: a selector byte, then the text (no NUL terminator: an exact-size
 * heap copy, so ASan catches any read past the end).
 * Properties: no crash or over-read; an accepted ack subject yields names
 * that are tokens of the input and numbers that print back to the input's
 * digits; version numbers are monotone in their parts; an accepted
 * traceparent gives lowercase-hex IDs that re-encode as an accepted one. */
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static void check_ack(const char *s, size_t n) {
    parti_js_ack_meta m;
    char again[512];
    parti_err e = parti_js_ack_parse(s, n, &m);
    if (e != PARTI_ERR_OK) {
        CHECK(e == PARTI_ERR_PROTOCOL);
        CHECK(m.stream[0] == 0 && m.stream_seq == 0);
        return;
    }
    CHECK(strlen(m.stream) >= 1 && strlen(m.consumer) >= 1);
    CHECK(memmem(s, n, m.stream, strlen(m.stream)) != NULL);
    CHECK(memmem(s, n, m.consumer, strlen(m.consumer)) != NULL);
    /* re-encoding the numbers as v1 parses to the same values */
    snprintf(again, sizeof again, "$JS.ACK.%s.%s.%llu.%llu.%llu.%llu.%llu", m.stream, m.consumer,
             (unsigned long long)m.delivered, (unsigned long long)m.stream_seq, (unsigned long long)m.consumer_seq,
             (unsigned long long)m.timestamp_ns, (unsigned long long)m.pending);
    if (!strchr(m.stream, '.') && !strchr(m.consumer, '.')) {
        parti_js_ack_meta m2;
        CHECK(parti_js_ack_parse(again, strlen(again), &m2) == PARTI_ERR_OK);
        CHECK(m2.stream_seq == m.stream_seq && m2.delivered == m.delivered && m2.pending == m.pending);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s, *z;
    if (size < 1) return 0;
    s = (char *)malloc(size - 1 ? size - 1 : 1);
    z = (char *)malloc(size);
    if (!s || !z) abort();
    memcpy(s, data + 1, size - 1);
    memcpy(z, data + 1, size - 1);
    z[size - 1] = 0;
    if (data[0] % 8 == 7) { /* RFC 3339 timestamps: a parsed one formats back (libc's calendar) to itself */
        uint64_t ns = 0, again = 0;
        if (parti_rfc3339_parse(s, size - 1, &ns) == PARTI_ERR_OK) {
            time_t secs = (time_t)(ns / 1000000000u);
            struct tm tm;
            char buf[64];
            size_t n;
            CHECK(gmtime_r(&secs, &tm) != NULL);
            n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
            CHECK(n == 19);
            snprintf(buf + n, sizeof buf - n, ".%09uZ", (unsigned)(ns % 1000000000u));
            CHECK(parti_rfc3339_parse(buf, strlen(buf), &again) == PARTI_ERR_OK && again == ns);
        } else {
            CHECK(ns == 0);
        }
        free(s);
        free(z);
        return 0;
    }
    switch (data[0] % 4) {
    case 0: check_ack(s, size - 1); break;
    case 1: {
        /* "status\0description" */
        const char *desc = z + strlen(z) + 1 <= z + size - 1 ? z + strlen(z) + 1 : "";
        parti_err e = parti_js_pull_status(z, desc);
        CHECK(e == PARTI_ERR_OK || e == PARTI_ERR_NO_MESSAGES || e == PARTI_ERR_CONSUMER_DELETED ||
              e == PARTI_ERR_SERVER_SHUTDOWN || e == PARTI_ERR_NO_RESPONDERS || e == PARTI_ERR_PROTOCOL ||
              e == PARTI_ERR_MESSAGE_TOO_LARGE);
        CHECK(parti_js_api_error((int)(data[0] * 41), (int)size) != PARTI_ERR_OK);
        CHECK(parti_js_api_error_described((int)(data[0] * 41), (int)size, z) != PARTI_ERR_OK);
        break;
    }
    case 3: {
        char trace[33], parent[17], again[64];
        uint8_t flags;
        if (parti_traceparent_parse(z, trace, parent, &flags) == PARTI_ERR_OK) {
            CHECK(strlen(trace) == 32 && strlen(parent) == 16);
            CHECK(strspn(trace, "0123456789abcdef") == 32 && strspn(parent, "0123456789abcdef") == 16);
            snprintf(again, sizeof again, "00-%s-%s-%02x", trace, parent, flags);
            CHECK(parti_traceparent_parse(again, NULL, NULL, NULL) == PARTI_ERR_OK);
        } else {
            CHECK(trace[0] == 0 && parent[0] == 0 && flags == 0);
        }
        break;
    }
    default: {
        uint32_t v = parti_version_number(z);
        CHECK(v <= 999999999u);
        if (v && v / 1000000 < 999) {
            char bumped[64];
            snprintf(bumped, sizeof bumped, "%u.%u.%u", v / 1000000 + 1, (v / 1000) % 1000, v % 1000);
            CHECK(parti_version_number(bumped) > v);
        }
        break;
    }
    }
    free(s);
    free(z);
    return 0;
}

/* Unit tests of the pure core: errors, subjects, names, backoff, config. */
#include "parti.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEYS(...) ((const char *const[]){__VA_ARGS__})
#define PART(...) ((parti_partition){KEYS(__VA_ARGS__), (int)(sizeof KEYS(__VA_ARGS__) / sizeof(char *)), 1})

static char msg[512];

/* ---- errors ---- */

Test(errors, every_code_has_name_message_and_category) {
    int e;
    for (e = 0; e < PARTI_ERR__COUNT; e++) {
        cr_assert(strncmp(parti_error_name((parti_err)e), "PARTI_ERR_", 10) == 0);
        cr_assert(strlen(parti_strerror((parti_err)e)) > 3);
        if (e == PARTI_ERR_OK) cr_assert_eq(parti_error_category((parti_err)e), PARTI_CAT_NONE);
        else cr_assert_neq(parti_error_category((parti_err)e), PARTI_CAT_NONE, "%s", parti_error_name((parti_err)e));
    }
}

Test(errors, names_and_categories_match_the_table) {
    cr_assert_str_eq(parti_error_name(PARTI_ERR_INVALID_TEMPLATE), "PARTI_ERR_INVALID_TEMPLATE");
    cr_assert_str_eq(parti_strerror(PARTI_ERR_OK), "success");
    cr_assert_eq(parti_error_category(PARTI_ERR_TIMEOUT), PARTI_CAT_RETRIABLE);
    cr_assert_eq(parti_error_category(PARTI_ERR_NO_RESPONDERS), PARTI_CAT_TRANSIENT);
    cr_assert_eq(parti_error_category(PARTI_ERR_NOMEM), PARTI_CAT_FATAL);
    cr_assert_eq(parti_error_category(PARTI_ERR_INVALID_KEY), PARTI_CAT_INVALID_INPUT);
    cr_assert_str_eq(parti_category_name(PARTI_CAT_INVALID_INPUT), "invalid_input");
}

Test(errors, unknown_codes_are_safe) {
    cr_assert_str_eq(parti_strerror((parti_err)9999), "unknown parti error");
    cr_assert_str_eq(parti_strerror((parti_err)-1), "unknown parti error");
    cr_assert_str_eq(parti_error_name((parti_err)PARTI_ERR__COUNT), "PARTI_ERR_UNKNOWN");
    cr_assert_eq(parti_error_category((parti_err)12345), PARTI_CAT_FATAL);
    cr_assert_str_eq(parti_category_name((parti_category)77), "unknown");
}

/* ---- keys and subjects ---- */

Test(keys, valid_keys_pass) {
    cr_assert_eq(parti_key_check("a", msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_key_check("eu-west_1", msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_key_check("caf\xc3\xa9", msg, sizeof msg), PARTI_ERR_OK);     /* é */
    cr_assert_eq(parti_key_check("\xf0\x9f\x98\x80", msg, sizeof msg), PARTI_ERR_OK); /* emoji */
}

Test(keys, bad_keys_are_refused_with_a_reason) {
    static const char *bad[] = {"", "a.b", "*", "a*", ">", "a b", "a\tb", "a\nb", "\x7f", "\xc3", "\xc0\xaf",
                                "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff"};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        msg[0] = 0;
        cr_assert_eq(parti_key_check(bad[i], msg, sizeof msg), PARTI_ERR_INVALID_KEY, "key #%zu", i);
        cr_assert(strlen(msg) > 5, "key #%zu has no message", i);
    }
    cr_assert_eq(parti_key_check(NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
}

Test(keys, a_checkpoint_key_spells_its_subject) {
    static const char *const in[] = {"orders.eu.7", "orders.*", "orders.>", "a=b", "caf\xc3\xa9.x", "a/b c"};
    static const char *const want[] = {"ck.orders.eu.7", "ck.orders.=2A", "ck.orders.=3E", "ck.a=3Db",
                                       "ck.caf=C3=A9.x", "ck.a=2Fb=20c"};
    char key[PARTI_CHECKPOINT_KEY_SIZE], subject[PARTI_MAX_SUBJECT_LEN + 1], again[PARTI_CHECKPOINT_KEY_SIZE];
    size_t i;
    for (i = 0; i < sizeof in / sizeof *in; i++) {
        cr_assert_eq(parti_checkpoint_key(in[i], key, sizeof key), PARTI_ERR_OK);
        cr_assert_str_eq(key, want[i]);
        cr_assert_eq(parti_kv_key_check(key, msg, sizeof msg), PARTI_ERR_OK, "%s: %s", key, msg);
    }
    /* dots that would leave an empty token are spelled too */
    cr_assert_eq(parti_checkpoint_key(".a..b.", key, sizeof key), PARTI_ERR_OK);
    cr_assert_str_eq(key, "ck.=2Ea=2E=2Eb=2E");
    /* the longest subject whose key fits; one byte more has no key (plain,
     * and with a '*' spelled in three bytes) */
    for (i = 0; i < 2; i++) {
        size_t longest = PARTI_MAX_SUBJECT_LEN - 3 - 2 * i;
        memset(subject, 'x', sizeof subject);
        if (i) subject[100] = '*';
        subject[longest] = 0;
        cr_assert_eq(parti_checkpoint_key(subject, key, sizeof key), PARTI_ERR_OK);
        cr_assert_eq(strlen(key), PARTI_MAX_SUBJECT_LEN);
        subject[longest] = 'x';
        subject[longest + 1] = 0;
        cr_assert_eq(parti_checkpoint_key(subject, again, sizeof again), PARTI_ERR_INVALID_SUBJECT);
        cr_assert_eq(again[0], 0);
    }
    /* bad arguments, and a buffer one byte short: nothing but a NUL */
    cr_assert_eq(parti_checkpoint_key("", key, sizeof key), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_checkpoint_key(NULL, key, sizeof key), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_checkpoint_key("a", NULL, 0), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_checkpoint_key("orders.eu.7", key, 14), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(key[0], 0);
    cr_assert_eq(parti_checkpoint_key("orders.eu.7", key, 15), PARTI_ERR_OK);
}

Test(keys, key_length_limit) {
    char k[PARTI_MAX_KEY_LEN + 2];
    memset(k, 'x', sizeof k);
    k[PARTI_MAX_KEY_LEN] = 0;
    cr_assert_eq(parti_key_check(k, NULL, 0), PARTI_ERR_OK);
    k[PARTI_MAX_KEY_LEN] = 'x';
    k[PARTI_MAX_KEY_LEN + 1] = 0;
    cr_assert_eq(parti_key_check(k, msg, sizeof msg), PARTI_ERR_INVALID_KEY);
    cr_assert(strstr(msg, "PARTI_MAX_KEY_LEN"));
}

Test(subjects, check_accepts_valid_subjects_and_filters) {
    cr_assert_eq(parti_subject_check("orders.eu.1", 0, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_subject_check("orders.*.1", 1, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_subject_check("orders.>", 1, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_subject_check(">", 1, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_subject_check("a{b}", 0, msg, sizeof msg), PARTI_ERR_OK);
}

Test(subjects, check_refuses_every_rule_break) {
    static const struct { const char *s; int wild; } bad[] = {
        {"", 1}, {".a", 1}, {"a.", 1}, {"a..b", 1}, {"a b", 1}, {"a\rb", 1}, {"a*", 1}, {"a.b*.c", 1},
        {"a.>.c", 1}, {"a>b", 1}, {"a.*", 0}, {"a.>", 0}, {"a.\xc3", 1}, {"a.\xe2\x82", 1}};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_assert_eq(parti_subject_check(bad[i].s, bad[i].wild, msg, sizeof msg), PARTI_ERR_INVALID_SUBJECT,
                     "subject #%zu \"%s\"", i, bad[i].s);
    cr_assert_eq(parti_subject_check(NULL, 1, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
}

Test(subjects, check_length_limit) {
    char s[PARTI_MAX_SUBJECT_LEN + 2];
    memset(s, 'a', sizeof s);
    s[PARTI_MAX_SUBJECT_LEN] = 0;
    cr_assert_eq(parti_subject_check(s, 0, NULL, 0), PARTI_ERR_OK);
    s[PARTI_MAX_SUBJECT_LEN] = 'a';
    s[PARTI_MAX_SUBJECT_LEN + 1] = 0;
    cr_assert_eq(parti_subject_check(s, 0, msg, sizeof msg), PARTI_ERR_SUBJECT_TOO_LONG);
}

/* ---- templates ---- */

Test(templates, placeholders_and_escapes) {
    int max = 99;
    cr_assert_eq(parti_template_check("orders.{0}.{1}", &max, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(max, 1);
    cr_assert_eq(parti_template_check("orders.all", &max, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(max, -1);
    cr_assert_eq(parti_template_check("t.{{lit}}.{3}", &max, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(max, 3);
    cr_assert_eq(parti_template_check("t.{15}", &max, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_template_check("t.{0}.*", &max, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_template_check("t.{0}.>", &max, msg, sizeof msg), PARTI_ERR_OK);
}

Test(templates, invalid_templates_are_refused) {
    static const char *bad[] = {"",       "t.{",     "t.{0",    "t.}",  "t.{x}",    "t.{}",     "t.{16}",
                                "t.{01}", "t.{0}}",  "t..{0}",  "t.{0}.", "t {0}",  "t.>.{0}",  "t.{1234}",
                                "{0}*",   "t.{-1}"};
    size_t i;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        msg[0] = 0;
        cr_assert_eq(parti_template_check(bad[i], NULL, msg, sizeof msg), PARTI_ERR_INVALID_TEMPLATE,
                     "template #%zu \"%s\"", i, bad[i]);
        cr_assert(strstr(msg, "template"), "message for #%zu: %s", i, msg);
    }
    cr_assert_eq(parti_template_check(NULL, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
}

Test(templates, unbalanced_brace_message_names_the_byte) {
    cr_assert_eq(parti_template_check("orders.{0", NULL, msg, sizeof msg), PARTI_ERR_INVALID_TEMPLATE);
    cr_assert(strstr(msg, "byte 7"), "%s", msg);
}

Test(templates, expand) {
    char out[64];
    size_t need = 0;
    parti_partition p = PART("eu", "7");
    cr_assert_eq(parti_subject_expand("orders.{0}.{1}", &p, out, sizeof out, &need, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_eq(out, "orders.eu.7");
    cr_assert_eq(need, strlen("orders.eu.7") + 1);
    cr_assert_eq(parti_subject_expand("o.{1}-{0}.{{x}}", &p, out, sizeof out, NULL, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_eq(out, "o.7-eu.{x}");
    cr_assert_eq(parti_subject_expand("o.{0}.>", &p, out, sizeof out, NULL, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_eq(out, "o.eu.>");
}

Test(templates, expand_reports_the_size_needed) {
    char out[8];
    size_t need = 0;
    parti_partition p = PART("abcdef");
    memset(out, '#', sizeof out);
    cr_assert_eq(parti_subject_expand("orders.{0}", &p, out, 5, &need, msg, sizeof msg), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(need, 14);
    cr_assert_eq(out[4], 0);
    cr_assert_eq(out[5], '#');
    cr_assert_eq(parti_subject_expand("orders.{0}", &p, NULL, 0, &need, msg, sizeof msg), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(need, 14);
}

Test(templates, placeholder_beyond_the_keys) {
    char out[64];
    parti_partition p = PART("a");
    cr_assert_eq(parti_subject_expand("o.{0}.{2}", &p, out, sizeof out, NULL, msg, sizeof msg),
                 PARTI_ERR_INVALID_TEMPLATE);
    cr_assert(strstr(msg, "{2}") && strstr(msg, "1 key"), "%s", msg);
}

Test(templates, keys_cannot_inject_wildcards_or_tokens) {
    static const char *bad[] = {"*", ">", "a.b", "", " ", "a\nb"};
    char out[64];
    size_t i;
    for (i = 0; i < sizeof bad / sizeof *bad; i++) {
        parti_partition p = {KEYS(bad[i]), 1, 1};
        cr_assert_eq(parti_subject_expand("o.{0}", &p, out, sizeof out, NULL, msg, sizeof msg), PARTI_ERR_INVALID_KEY,
                     "key #%zu", i);
    }
}

Test(templates, expanded_subject_over_the_limit) {
    static char key[PARTI_MAX_KEY_LEN + 1];
    char out[PARTI_MAX_SUBJECT_LEN * 2];
    parti_partition p = {KEYS(key, key, key, key, key), 5, 1};
    memset(key, 'k', PARTI_MAX_KEY_LEN);
    cr_assert_eq(parti_subject_expand("{0}.{1}.{2}.{3}.{4}", &p, out, sizeof out, NULL, msg, sizeof msg),
                 PARTI_ERR_SUBJECT_TOO_LONG);
    cr_assert(strstr(msg, "PARTI_MAX_SUBJECT_LEN"), "%s", msg);
}

Test(templates, null_arguments) {
    char out[16];
    parti_partition p = PART("a");
    parti_partition nokeys = {NULL, 2, 1};
    cr_assert_eq(parti_subject_expand(NULL, &p, out, sizeof out, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subject_expand("a.{0}", NULL, out, sizeof out, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subject_expand("a.{0}", &nokeys, out, sizeof out, NULL, msg, sizeof msg),
                 PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subject_expand("a.{0}", &p, NULL, 10, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
}

/* ---- subject sets ---- */

static parti_subjects set_of(const char *const *items, int n) {
    parti_subjects s = {NULL, 0};
    int i;
    for (i = 0; i < n; i++) cr_assert_eq(parti_subjects_add(&s, items[i]), PARTI_ERR_OK);
    return s;
}

Test(sets, build_sorts_and_deduplicates) {
    parti_partition parts[] = {PART("c"), PART("a"), PART("b"), PART("a"), PART("c")};
    parti_subjects s = {NULL, 0};
    cr_assert_eq(parti_subjects_build("o.{0}", parts, 5, 10, &s, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(s.count, 3);
    cr_assert_str_eq(s.items[0], "o.a");
    cr_assert_str_eq(s.items[1], "o.b");
    cr_assert_str_eq(s.items[2], "o.c");
    cr_assert(parti_subjects_is_sorted(&s));
    parti_subjects_free(&s);
    cr_assert_eq(s.count, 0);
    cr_assert_null(s.items);
}

Test(sets, sort_is_bytewise_and_deterministic) {
    parti_partition parts[] = {PART("b"), PART("B"), PART("10"), PART("9"), PART("\xc3\xa9"), PART("_")};
    parti_subjects s = {NULL, 0};
    cr_assert_eq(parti_subjects_build("{0}", parts, 6, 0, &s, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    cr_assert_eq(s.count, 6);
    cr_assert_str_eq(s.items[0], "10");
    cr_assert_str_eq(s.items[1], "9");
    cr_assert_str_eq(s.items[2], "B");
    cr_assert_str_eq(s.items[3], "_");
    cr_assert_str_eq(s.items[4], "b");
    cr_assert_str_eq(s.items[5], "\xc3\xa9");
    parti_subjects_free(&s);
}

Test(sets, max_subjects_is_enforced_after_dedupe) {
    parti_partition parts[] = {PART("a"), PART("b"), PART("c"), PART("a")};
    parti_subjects s = {NULL, 0};
    cr_assert_eq(parti_subjects_build("o.{0}", parts, 4, 3, &s, msg, sizeof msg), PARTI_ERR_OK);
    parti_subjects_free(&s);
    cr_assert_eq(parti_subjects_build("o.{0}", parts, 4, 2, &s, msg, sizeof msg), PARTI_ERR_TOO_MANY_SUBJECTS);
    cr_assert(strstr(msg, "max_subjects (2)"), "%s", msg);
    cr_assert_eq(s.count, 0);
    cr_assert_null(s.items);
}

Test(sets, build_reports_the_bad_partition) {
    parti_partition parts[] = {PART("a"), PART("b c")};
    parti_subjects s = {NULL, 0};
    cr_assert_eq(parti_subjects_build("o.{0}", parts, 2, 10, &s, msg, sizeof msg), PARTI_ERR_INVALID_KEY);
    cr_assert(strstr(msg, "partition 1"), "%s", msg);
    cr_assert_eq(s.count, 0);
}

Test(sets, build_bad_arguments) {
    parti_partition parts[] = {PART("a")};
    parti_subjects s = {NULL, 0}, full = set_of(KEYS("x"), 1);
    cr_assert_eq(parti_subjects_build(NULL, parts, 1, 0, &s, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_build("o.{0}", NULL, 1, 0, &s, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_build("o.{0}", parts, 1, 0, NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_build("o.{0}", parts, -1, 0, &s, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_build("o.{0}", parts, 1, 0, &full, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_build("o.{0}", NULL, 0, 0, &s, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(s.count, 0);
    cr_assert_eq(parti_subjects_add(NULL, "a"), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_add(&s, NULL), PARTI_ERR_INVALID_ARGUMENT);
    parti_subjects_free(&full);
    parti_subjects_free(NULL);
}

Test(sets, near_limit_warning) {
    cr_assert_eq(parti_subjects_near_limit(79, 100, 80), 0);
    cr_assert_eq(parti_subjects_near_limit(80, 100, 80), 1);
    cr_assert_eq(parti_subjects_near_limit(100, 100, 80), 1);
    cr_assert_eq(parti_subjects_near_limit(3, 4, 80), 0);
    cr_assert_eq(parti_subjects_near_limit(4, 4, 80), 1);
    cr_assert_eq(parti_subjects_near_limit(1000, 0, 80), 0);
    cr_assert_eq(parti_subjects_near_limit(1000, 10, 0), 0);
    cr_assert_eq(parti_subjects_near_limit(2000000000, 2000000000, 100), 1);
}

Test(diff, added_and_removed) {
    parti_subjects a = set_of(KEYS("a", "b", "d", "f"), 4), b = set_of(KEYS("b", "c", "d", "g", "h"), 5);
    parti_subjects add = {NULL, 0}, rem = {NULL, 0};
    cr_assert_eq(parti_subjects_diff(&a, &b, &add, &rem), PARTI_ERR_OK);
    cr_assert_eq(add.count, 3);
    cr_assert_str_eq(add.items[0], "c");
    cr_assert_str_eq(add.items[1], "g");
    cr_assert_str_eq(add.items[2], "h");
    cr_assert_eq(rem.count, 2);
    cr_assert_str_eq(rem.items[0], "a");
    cr_assert_str_eq(rem.items[1], "f");
    parti_subjects_free(&a);
    parti_subjects_free(&b);
    parti_subjects_free(&add);
    parti_subjects_free(&rem);
}

Test(diff, identical_and_empty_sets) {
    parti_subjects a = set_of(KEYS("a", "b"), 2), e = {NULL, 0};
    parti_subjects add = {NULL, 0}, rem = {NULL, 0};
    cr_assert_eq(parti_subjects_diff(&a, &a, &add, &rem), PARTI_ERR_OK);
    cr_assert_eq(add.count + rem.count, 0);
    cr_assert_eq(parti_subjects_diff(&e, &a, &add, &rem), PARTI_ERR_OK);
    cr_assert_eq(add.count, 2);
    cr_assert_eq(rem.count, 0);
    parti_subjects_free(&add);
    cr_assert_eq(parti_subjects_diff(&a, &e, &add, &rem), PARTI_ERR_OK);
    cr_assert_eq(rem.count, 2);
    parti_subjects_free(&rem);
    parti_subjects_free(&a);
}

Test(diff, refuses_unsorted_or_duplicate_input) {
    parti_subjects uns = set_of(KEYS("b", "a"), 2), dup = set_of(KEYS("a", "a"), 2), ok = set_of(KEYS("a"), 1);
    parti_subjects add = {NULL, 0}, rem = {NULL, 0};
    cr_assert_eq(parti_subjects_diff(&uns, &ok, &add, &rem), PARTI_ERR_NOT_SORTED);
    cr_assert_eq(parti_subjects_diff(&ok, &dup, &add, &rem), PARTI_ERR_NOT_SORTED);
    cr_assert_eq(parti_subjects_diff(&ok, &ok, &add, &add), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_diff(NULL, &ok, &add, &rem), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_subjects_diff(&ok, &ok, &ok, &rem), PARTI_ERR_INVALID_ARGUMENT);
    parti_subjects_sort_unique(&uns);
    parti_subjects_sort_unique(&dup);
    cr_assert(parti_subjects_is_sorted(&uns));
    cr_assert_eq(dup.count, 1);
    parti_subjects_free(&uns);
    parti_subjects_free(&dup);
    parti_subjects_free(&ok);
}

Test(diff, randomized_apply_gives_new) {
    uint64_t seed = 42;
    int round;
    for (round = 0; round < 200; round++) {
        parti_subjects a = {NULL, 0}, b = {NULL, 0}, add = {NULL, 0}, rem = {NULL, 0}, applied = {NULL, 0};
        int i, n = (int)(parti_rng_splitmix64(&seed) % 40), m = (int)(parti_rng_splitmix64(&seed) % 40);
        char buf[16];
        for (i = 0; i < n; i++) {
            snprintf(buf, sizeof buf, "s.%d", (int)(parti_rng_splitmix64(&seed) % 50));
            parti_subjects_add(&a, buf);
        }
        for (i = 0; i < m; i++) {
            snprintf(buf, sizeof buf, "s.%d", (int)(parti_rng_splitmix64(&seed) % 50));
            parti_subjects_add(&b, buf);
        }
        parti_subjects_sort_unique(&a);
        parti_subjects_sort_unique(&b);
        cr_assert_eq(parti_subjects_diff(&a, &b, &add, &rem), PARTI_ERR_OK);
        /* applied = (a - removed) + added */
        for (i = 0; i < a.count; i++) {
            int j, gone = 0;
            for (j = 0; j < rem.count; j++) gone |= strcmp(a.items[i], rem.items[j]) == 0;
            if (!gone) parti_subjects_add(&applied, a.items[i]);
        }
        for (i = 0; i < add.count; i++) parti_subjects_add(&applied, add.items[i]);
        parti_subjects_sort_unique(&applied);
        cr_assert_eq(applied.count, b.count, "round %d", round);
        for (i = 0; i < b.count; i++) cr_assert_str_eq(applied.items[i], b.items[i]);
        parti_subjects_free(&a);
        parti_subjects_free(&b);
        parti_subjects_free(&add);
        parti_subjects_free(&rem);
        parti_subjects_free(&applied);
    }
}

/* ---- names ---- */

Test(names, check) {
    cr_assert_eq(parti_name_check("orders", msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_name_check("ORDERS_v2-x", msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_name_check("", msg, sizeof msg), PARTI_ERR_INVALID_NAME);
    cr_assert_eq(parti_name_check("a.b", msg, sizeof msg), PARTI_ERR_INVALID_NAME);
    cr_assert(strstr(msg, "0x2e"), "%s", msg);
    cr_assert_eq(parti_name_check("a b", msg, sizeof msg), PARTI_ERR_INVALID_NAME);
    cr_assert_eq(parti_name_check("a>", msg, sizeof msg), PARTI_ERR_INVALID_NAME);
    cr_assert_eq(parti_name_check(NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
}

Test(names, clean_worker_id_is_used_as_is) {
    char out[PARTI_MAX_NAME_LEN + 1];
    cr_assert_eq(parti_consumer_name("parti-", "worker-3", out, sizeof out, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_eq(out, "parti-worker-3");
    cr_assert_eq(parti_consumer_name(NULL, "w1", out, sizeof out, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_eq(out, "w1");
}

Test(names, sanitized_ids_get_a_hash_and_stay_valid) {
    char a[PARTI_MAX_NAME_LEN + 1], b[PARTI_MAX_NAME_LEN + 1];
    cr_assert_eq(parti_consumer_name("p-", "host.1", a, sizeof a, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_consumer_name("p-", "host*1", b, sizeof b, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_neq(a, b);
    cr_assert_eq(strncmp(a, "p-host_1_", 9), 0, "%s", a);
    cr_assert_eq(strlen(a), 9 + 16);
    cr_assert_eq(parti_name_check(a, msg, sizeof msg), PARTI_ERR_OK);
    /* deterministic */
    cr_assert_eq(parti_consumer_name("p-", "host.1", b, sizeof b, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_eq(a, b);
}

Test(names, a_clean_id_never_equals_a_sanitized_one) {
    char a[PARTI_MAX_NAME_LEN + 1], b[PARTI_MAX_NAME_LEN + 1];
    /* "x.y" sanitizes to "x_y_<hash>"; the literal ID "x_y_<hash>" contains '_' so it is hashed too */
    cr_assert_eq(parti_consumer_name("", "x.y", a, sizeof a, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(parti_consumer_name("", a, b, sizeof b, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_str_neq(a, b);
}

Test(names, long_ids_are_truncated_and_hashed) {
    char id[300], a[PARTI_MAX_NAME_LEN + 1], b[PARTI_MAX_NAME_LEN + 1];
    memset(id, 'w', sizeof id - 1);
    id[sizeof id - 1] = 0;
    cr_assert_eq(parti_consumer_name("parti-", id, a, sizeof a, msg, sizeof msg), PARTI_ERR_OK);
    id[250] = 'v';
    cr_assert_eq(parti_consumer_name("parti-", id, b, sizeof b, msg, sizeof msg), PARTI_ERR_OK);
    cr_assert_eq(strlen(a), PARTI_MAX_NAME_LEN);
    cr_assert_str_neq(a, b);
    cr_assert_eq(parti_name_check(a, msg, sizeof msg), PARTI_ERR_OK);
}

Test(names, many_distinct_ids_give_distinct_names) {
    char id[32], names[2000][PARTI_MAX_NAME_LEN + 1];
    int i, j;
    for (i = 0; i < 2000; i++) {
        /* IDs that sanitize identically: only the replaced byte differs */
        snprintf(id, sizeof id, "w%c%d", (i % 2) ? '.' : ' ', i / 2);
        cr_assert_eq(parti_consumer_name("", id, names[i], sizeof names[i], msg, sizeof msg), PARTI_ERR_OK);
    }
    for (i = 0; i < 2000; i++)
        for (j = i + 1; j < 2000; j++) cr_assert_str_neq(names[i], names[j]);
}

Test(names, ids_that_sanitize_to_nothing_are_refused) {
    char out[PARTI_MAX_NAME_LEN + 1];
    cr_assert_eq(parti_consumer_name("p-", "", out, sizeof out, msg, sizeof msg), PARTI_ERR_INVALID_WORKER_ID);
    cr_assert_eq(parti_consumer_name("p-", "...", out, sizeof out, msg, sizeof msg), PARTI_ERR_INVALID_WORKER_ID);
    cr_assert_eq(parti_consumer_name("p-", " \t*>", out, sizeof out, msg, sizeof msg), PARTI_ERR_INVALID_WORKER_ID);
    cr_assert_eq(parti_consumer_name("p-", "___", out, sizeof out, msg, sizeof msg), PARTI_ERR_INVALID_WORKER_ID);
    cr_assert(strlen(msg) > 10);
    cr_assert_eq(parti_consumer_name("p-", NULL, out, sizeof out, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_consumer_name("p-", "w", NULL, 10, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_consumer_name("p.", "w", out, sizeof out, msg, sizeof msg), PARTI_ERR_INVALID_NAME);
}

Test(names, small_output_buffer) {
    char out[8];
    memset(out, '#', sizeof out);
    cr_assert_eq(parti_consumer_name("parti-", "worker-1", out, 5, msg, sizeof msg), PARTI_ERR_BUFFER_TOO_SMALL);
    cr_assert_eq(out[0], 0);
    cr_assert_eq(out[5], '#');
}

Test(hash, fnv1a_reference_values) {
    cr_assert_eq(parti_hash64("", 0), 0xcbf29ce484222325ULL);
    cr_assert_eq(parti_hash64("a", 1), 0xaf63dc4c8601ec8cULL);
    cr_assert_eq(parti_hash64("foobar", 6), 0x85944171f73967e8ULL);
}

/* ---- backoff ---- */

Test(backoff, delays_stay_within_base_and_cap) {
    parti_backoff b;
    uint64_t seed = 7, d, prev = 100;
    int i;
    cr_assert_eq(parti_backoff_init(&b, 100, 5000, 0), PARTI_ERR_OK);
    for (i = 0; i < 1000; i++) {
        cr_assert_eq(parti_backoff_next(&b, parti_rng_splitmix64, &seed, &d), PARTI_ERR_OK);
        cr_assert(d >= 100 && d <= 5000, "delay %llu", (unsigned long long)d);
        cr_assert(d <= prev * 3 || d == 5000);
        prev = d;
    }
}

Test(backoff, grows_towards_the_cap) {
    parti_backoff b;
    uint64_t seed = 1, d = 0, sum_first = 0, sum_late = 0;
    int i, run;
    for (run = 0; run < 100; run++) {
        parti_backoff_init(&b, 10, 10000, 0);
        for (i = 0; i < 12; i++) {
            parti_backoff_next(&b, parti_rng_splitmix64, &seed, &d);
            if (i == 0) sum_first += d;
            if (i == 11) sum_late += d;
        }
    }
    /* first delays are in [10, 30]; after a dozen steps the mean is in the thousands */
    cr_assert(sum_first / 100 <= 30);
    cr_assert(sum_late / 100 > 1000, "late mean %llu", (unsigned long long)(sum_late / 100));
}

Test(backoff, deterministic_for_a_seed_and_different_across_seeds) {
    parti_backoff a, b, c;
    uint64_t sa = 99, sb = 99, sc = 100, da, db, dc;
    int i, differs = 0;
    parti_backoff_init(&a, 50, 60000, 0);
    parti_backoff_init(&b, 50, 60000, 0);
    parti_backoff_init(&c, 50, 60000, 0);
    for (i = 0; i < 50; i++) {
        parti_backoff_next(&a, parti_rng_splitmix64, &sa, &da);
        parti_backoff_next(&b, parti_rng_splitmix64, &sb, &db);
        parti_backoff_next(&c, parti_rng_splitmix64, &sc, &dc);
        cr_assert_eq(da, db);
        differs |= da != dc;
    }
    cr_assert(differs);
}

Test(backoff, retry_budget_and_reset) {
    parti_backoff b;
    uint64_t seed = 3, d;
    int i;
    parti_backoff_init(&b, 10, 100, 3);
    for (i = 0; i < 3; i++) cr_assert_eq(parti_backoff_next(&b, parti_rng_splitmix64, &seed, &d), PARTI_ERR_OK);
    cr_assert_eq(parti_backoff_next(&b, parti_rng_splitmix64, &seed, &d), PARTI_ERR_RETRY_BUDGET_EXHAUSTED);
    parti_backoff_reset(&b);
    cr_assert_eq(parti_backoff_next(&b, parti_rng_splitmix64, &seed, &d), PARTI_ERR_OK);
    cr_assert(d >= 10 && d <= 30);
}

Test(backoff, workers_with_different_seeds_spread_out) {
    /* 50 workers retrying after one outage must not line up on the same delay */
    uint64_t delays[50], seed;
    int i, j, same = 0;
    for (i = 0; i < 50; i++) {
        parti_backoff b;
        int k;
        seed = (uint64_t)i * 7919 + 1;
        parti_backoff_init(&b, 100, 30000, 0);
        for (k = 0; k < 5; k++) parti_backoff_next(&b, parti_rng_splitmix64, &seed, &delays[i]);
    }
    for (i = 0; i < 50; i++)
        for (j = i + 1; j < 50; j++) same += delays[i] == delays[j];
    cr_assert(same < 5, "%d equal pairs", same);
}

Test(backoff, bad_arguments) {
    parti_backoff b;
    uint64_t seed = 1, d;
    cr_assert_eq(parti_backoff_init(NULL, 1, 2, 0), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_backoff_init(&b, 0, 2, 0), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_backoff_init(&b, 10, 5, 0), PARTI_ERR_INVALID_ARGUMENT);
    parti_backoff_init(&b, 10, 50, 0);
    cr_assert_eq(parti_backoff_next(&b, NULL, &seed, &d), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_backoff_next(&b, parti_rng_splitmix64, &seed, NULL), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_backoff_next(NULL, parti_rng_splitmix64, &seed, &d), PARTI_ERR_INVALID_ARGUMENT);
    parti_backoff_reset(NULL);
}

Test(backoff, cap_near_uint64_max_does_not_overflow) {
    parti_backoff b;
    uint64_t seed = 5, d;
    int i;
    parti_backoff_init(&b, 1, UINT64_MAX, 0);
    for (i = 0; i < 200; i++) cr_assert_eq(parti_backoff_next(&b, parti_rng_splitmix64, &seed, &d), PARTI_ERR_OK);
    cr_assert(d >= 1);
}

/* ---- config ---- */

static const char *const key_0[] = {"0"}, *const key_1[] = {"1"}, *const key_2[] = {"2"};
static const char *const key_a[] = {"a"}, *const key_xy[] = {"x.y"};
static const parti_partition cfg_parts[] = {{key_0, 1, 1}, {key_1, 1, 2}, {key_2, 1, 1}};

static parti_config valid_config(void) {
    parti_config c;
    memset(&c, 0, sizeof c);
    c.stream = "orders";
    c.subject_template = "orders.{0}";
    c.partitions = cfg_parts;
    c.partition_count = 3;
    return c;
}

Test(config, defaults_fill_zero_fields_only) {
    parti_config c = valid_config(), d;
    c.max_subjects = 7;
    d = parti_config_defaults(&c);
    cr_assert_eq(d.max_subjects, 7);
    cr_assert_str_eq(d.bucket_prefix, "parti");
    cr_assert_eq(d.subjects_warn_percent, 80);
    cr_assert_eq(d.fetch_heartbeat_ms * 2 <= d.fetch_expires_ms, 1);
    cr_assert_str_eq(d.stream, "orders");
    d = parti_config_defaults(NULL);
    cr_assert_eq(d.max_subjects, 1024);
    cr_assert_null(d.stream);
}

Test(config, a_minimal_config_is_valid) {
    parti_config c = valid_config();
    cr_assert_eq(parti_config_validate(&c, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
}

Test(config, each_rule_names_its_field) {
    parti_config c;
#define EXPECT_FIELD(mutation, field)                                                                              \
    c = valid_config();                                                                                            \
    mutation;                                                                                                      \
    msg[0] = 0;                                                                                                    \
    cr_assert_neq(parti_config_validate(&c, msg, sizeof msg), PARTI_ERR_OK, "%s", #mutation);                     \
    cr_assert(strstr(msg, field), "%s: message \"%s\" lacks \"%s\"", #mutation, msg, field)
    EXPECT_FIELD(c.stream = NULL, "config.stream");
    EXPECT_FIELD(c.stream = "or.ders", "config.stream");
    EXPECT_FIELD(c.subject_template = NULL, "config.subject_template");
    EXPECT_FIELD(c.subject_template = "orders.{0", "config.subject_template");
    EXPECT_FIELD(c.subject_template = "orders.{1}", "config.partitions[0]");
    EXPECT_FIELD(c.partition_count = -1, "config.partition_count must be >= 1, got -1");
    EXPECT_FIELD(c.partitions = NULL, "config.partitions");
    EXPECT_FIELD(c.bucket_prefix = "a b", "config.bucket_prefix");
    EXPECT_FIELD(c.consumer_prefix = "a*", "config.consumer_prefix");
    EXPECT_FIELD(c.consumer_prefix = "a-very-long-prefix-that-leaves-no-room-for-ids-at-all", "config.consumer_prefix");
    EXPECT_FIELD(c.max_subjects = -3, "config.max_subjects must be >= 1, got -3");
    EXPECT_FIELD(c.subjects_warn_percent = 101, "config.subjects_warn_percent");
    EXPECT_FIELD((c.backoff_base_ms = 500, c.backoff_cap_ms = 100), "config.backoff_cap_ms");
    EXPECT_FIELD(c.fetch_batch = -1, "config.fetch_batch");
    EXPECT_FIELD(c.fetch_max_bytes = -1, "config.fetch_max_bytes");
    EXPECT_FIELD(c.fetch_expires_ms = 5, "config.fetch_expires_ms");
    EXPECT_FIELD((c.fetch_expires_ms = 1000, c.fetch_heartbeat_ms = 600), "config.fetch_heartbeat_ms");
    EXPECT_FIELD(c.ack_wait_ms = 10, "config.ack_wait_ms");
    EXPECT_FIELD(c.max_ack_pending = -1, "config.max_ack_pending");
    EXPECT_FIELD(c.max_deliver = -2, "config.max_deliver");
#undef EXPECT_FIELD
}

Test(config, partitions_with_bad_keys_or_same_subject) {
    static const parti_partition dup[] = {{key_a, 1, 1}, {key_a, 1, 1}};
    static const parti_partition badkey[] = {{key_a, 1, 1}, {key_xy, 1, 1}};
    parti_config c = valid_config();
    c.partitions = dup;
    c.partition_count = 2;
    cr_assert_eq(parti_config_validate(&c, msg, sizeof msg), PARTI_ERR_INVALID_CONFIG);
    cr_assert(strstr(msg, "same subject \"orders.a\""), "%s", msg);
    c.partitions = badkey;
    cr_assert_eq(parti_config_validate(&c, msg, sizeof msg), PARTI_ERR_INVALID_KEY);
    cr_assert(strstr(msg, "config.partitions[1]"), "%s", msg);
}

Test(config, null_config_and_tiny_message_buffer) {
    parti_config c = valid_config();
    char tiny[8];
    cr_assert_eq(parti_config_validate(NULL, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    c.stream = NULL;
    memset(tiny, '#', sizeof tiny);
    cr_assert_eq(parti_config_validate(&c, tiny, 4), PARTI_ERR_INVALID_CONFIG);
    cr_assert_eq(tiny[3], 0);
    cr_assert_eq(tiny[4], '#');
    cr_assert_eq(parti_config_validate(&c, NULL, 0), PARTI_ERR_INVALID_CONFIG);
}

Test(subjects, wildcard_matching) {
    cr_assert(parti_subject_matches("orders.eu", "orders.eu"));
    cr_assert(!parti_subject_matches("orders.eu", "orders.us"));
    cr_assert(!parti_subject_matches("orders.eu", "orders.eu.1"));
    cr_assert(!parti_subject_matches("orders.eu.1", "orders.eu"));
    cr_assert(parti_subject_matches("orders.*", "orders.eu"));
    cr_assert(!parti_subject_matches("orders.*", "orders.eu.1"));
    cr_assert(parti_subject_matches("orders.*.1", "orders.eu.1"));
    cr_assert(parti_subject_matches("orders.>", "orders.eu.1"));
    cr_assert(parti_subject_matches("orders.>", "orders.eu"));
    cr_assert(!parti_subject_matches("orders.>", "orders"));
    cr_assert(parti_subject_matches(">", "a"));
    cr_assert(parti_subject_matches("*", "a"));
    cr_assert(!parti_subject_matches("*", "a.b"));
    cr_assert(!parti_subject_matches("ord", "orders"));
    cr_assert(!parti_subject_matches("orders", "ord"));
    cr_assert(!parti_subject_matches(NULL, "a"));
    cr_assert(!parti_subject_matches("a", NULL));
}

Test(contract, subject_covers_follows_nats_wildcards) {
    cr_assert(parti_subject_covers("orders.>", "orders.eu.1"));
    cr_assert(parti_subject_covers("orders.>", "orders.eu.>"));
    cr_assert(parti_subject_covers("orders.*.1", "orders.eu.1"));
    cr_assert(parti_subject_covers("orders.*.*", "orders.*.1"));
    cr_assert(parti_subject_covers("orders.eu", "orders.eu"));
    cr_assert(!parti_subject_covers("orders.*", "orders.eu.1"));
    cr_assert(!parti_subject_covers("orders.*.1", "orders.eu.>"));
    cr_assert(!parti_subject_covers("orders.eu.1", "orders.eu.*"));
    cr_assert(!parti_subject_covers("orders.>", "orders"));
    cr_assert(!parti_subject_covers("orders.eu", "orders.eu.1"));
    cr_assert(!parti_subject_covers("orders.eu.1", "orders.eu"));
    cr_assert(!parti_subject_covers(NULL, "x"));
}

Test(contract, stream_check_names_the_setting_that_does_not_fit) {
    static const char *const k0[] = {"eu", "1"}, *const k1[] = {"us", "2"};
    static const parti_partition parts[] = {{k0, 2, 1}, {k1, 2, 1}};
    char *subjects[] = {"orders.eu.*", "audit.>"};
    char msg[300];
    parti_stream_info si;
    parti_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.stream = "orders";
    cfg.subject_template = "orders.{0}.{1}";
    cfg.partitions = parts;
    cfg.partition_count = 2;
    memset(&si, 0, sizeof si);
    si.name = "orders";
    si.subjects = subjects;
    si.subject_count = 2;
    si.duplicate_window_ms = 120000;
    cr_assert_eq(parti_stream_check(&si, &cfg, msg, sizeof msg), PARTI_ERR_STREAM_MISMATCH);
    cr_assert_str_eq(msg, "stream orders: subjects [\"orders.eu.*\", \"audit.>\"] do not cover \"orders.us.2\" "
                          "(partition 1)");
    subjects[0] = "orders.>";
    cr_assert_eq(parti_stream_check(&si, &cfg, msg, sizeof msg), PARTI_ERR_OK, "%s", msg);
    si.retention = PARTI_RETENTION_WORKQUEUE;
    cr_assert_eq(parti_stream_check(&si, &cfg, msg, sizeof msg), PARTI_ERR_STREAM_MISMATCH);
    cr_assert(strstr(msg, "retention workqueue"), "%s", msg);
    si.retention = PARTI_RETENTION_INTEREST;
    cr_assert_eq(parti_stream_check(&si, &cfg, msg, sizeof msg), PARTI_ERR_OK);
    si.memory_storage = 1;
    cfg.require_file_storage = 1;
    cr_assert_eq(parti_stream_check(&si, &cfg, msg, sizeof msg), PARTI_ERR_STREAM_MISMATCH);
    cr_assert(strstr(msg, "storage is memory"), "%s", msg);
    cfg.require_file_storage = 0;
    cfg.min_duplicate_window_ms = 300000;
    cr_assert_eq(parti_stream_check(&si, &cfg, msg, sizeof msg), PARTI_ERR_STREAM_MISMATCH);
    cr_assert(strstr(msg, "duplicate_window is 120000 ms"), "%s", msg);
    cr_assert_eq(parti_stream_check(NULL, &cfg, msg, sizeof msg), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_str_eq(parti_error_name(PARTI_ERR_STREAM_MISMATCH), "PARTI_ERR_STREAM_MISMATCH");
}

/* JetStream API errors map to what the caller should do: fix the call,
 * retry later, or give up. */
Test(core, js_api_errors_are_classified_by_what_to_do) {
    static const struct {
        int err_code, code;
        parti_err want;
    } t[] = {
        {10059, 404, PARTI_ERR_STREAM_NOT_FOUND},  {10014, 404, PARTI_ERR_CONSUMER_NOT_FOUND},
        {10071, 400, PARTI_ERR_WRONG_REVISION},    {10164, 400, PARTI_ERR_WRONG_REVISION},
        {10148, 400, PARTI_ERR_ALREADY_EXISTS},    {10058, 400, PARTI_ERR_ALREADY_EXISTS},
        {10002, 400, PARTI_ERR_LIMIT_REACHED},     {10026, 400, PARTI_ERR_LIMIT_REACHED},
        {10027, 400, PARTI_ERR_LIMIT_REACHED},     {10047, 500, PARTI_ERR_LIMIT_REACHED},
        {10028, 500, PARTI_ERR_LIMIT_REACHED},     {10023, 503, PARTI_ERR_LIMIT_REACHED},
        {10167, 429, PARTI_ERR_LIMIT_REACHED},     {99999, 429, PARTI_ERR_LIMIT_REACHED},
        {10012, 500, PARTI_ERR_PROTOCOL},          {10133, 400, PARTI_ERR_INVALID_CONFIG},
        {10138, 400, PARTI_ERR_INVALID_CONFIG},    {10093, 400, PARTI_ERR_INVALID_SUBJECT},
        {10008, 503, PARTI_ERR_NOT_CONNECTED},     {10009, 500, PARTI_ERR_NOT_CONNECTED},
        {10076, 503, PARTI_ERR_UNSUPPORTED},       {0, 403, PARTI_ERR_PERMISSION_DENIED},
        {0, 408, PARTI_ERR_TIMEOUT},               {0, 503, PARTI_ERR_NO_RESPONDERS},
        {0, 418, PARTI_ERR_INVALID_CONFIG},        {0, 500, PARTI_ERR_PROTOCOL},
    };
    size_t i;
    for (i = 0; i < sizeof t / sizeof t[0]; i++)
        cr_assert_eq(parti_js_api_error(t[i].err_code, t[i].code), t[i].want, "%d/%d: %s, want %s", t[i].err_code,
                     t[i].code, parti_error_name(parti_js_api_error(t[i].err_code, t[i].code)),
                     parti_error_name(t[i].want));
    cr_assert_eq(parti_js_api_error_described(10012, 500, "deliver policy can not be updated"),
                 PARTI_ERR_ALREADY_EXISTS);
    cr_assert_eq(parti_js_api_error_described(10012, 500, "consumer create failed"), PARTI_ERR_PROTOCOL);
    cr_assert_eq(parti_js_api_error_described(10026, 400, NULL), PARTI_ERR_LIMIT_REACHED);
    cr_assert_eq(parti_error_category(PARTI_ERR_LIMIT_REACHED), PARTI_CAT_TRANSIENT);
    cr_assert_eq(parti_error_category(PARTI_ERR_MESSAGE_TOO_LARGE), PARTI_CAT_TRANSIENT);
}

Test(core, pull_statuses_are_typed) {
    cr_assert_eq(parti_js_pull_status("100", "Idle Heartbeat"), PARTI_ERR_OK);
    cr_assert_eq(parti_js_pull_status("404", "No Messages"), PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(parti_js_pull_status("408", "Request Timeout"), PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(parti_js_pull_status("409", "Consumer Deleted"), PARTI_ERR_CONSUMER_DELETED);
    cr_assert_eq(parti_js_pull_status("409", "Server Shutdown"), PARTI_ERR_SERVER_SHUTDOWN);
    cr_assert_eq(parti_js_pull_status("409", "Message Size Exceeds MaxBytes"), PARTI_ERR_MESSAGE_TOO_LARGE);
    cr_assert_eq(parti_js_pull_status("409", "Leadership Change"), PARTI_ERR_NO_MESSAGES);
    cr_assert_eq(parti_js_pull_status("503", NULL), PARTI_ERR_NO_RESPONDERS);
    cr_assert_eq(parti_js_pull_status("999", "?"), PARTI_ERR_PROTOCOL);
    cr_assert_eq(parti_js_pull_status(NULL, NULL), PARTI_ERR_PROTOCOL);
}

Test(core, rfc3339_timestamps_parse_strictly) {
    uint64_t ns = 1;
    cr_assert_eq(parti_rfc3339_parse("1970-01-01T00:00:00Z", 20, &ns), PARTI_ERR_OK);
    cr_assert_eq(ns, 0);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T06:10:24.123456789Z", 30, &ns), PARTI_ERR_OK);
    cr_assert_eq(ns, 1796278224123456789ULL);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T07:10:24.5+01:00", 27, &ns), PARTI_ERR_OK);
    cr_assert_eq(ns, 1796278224500000000ULL);
    cr_assert_eq(parti_rfc3339_parse("2024-02-29T00:00:00Z", 20, &ns), PARTI_ERR_OK);
    cr_assert_eq(ns, 1709164800000000000ULL);
    cr_assert_eq(parti_rfc3339_parse("2023-02-29T00:00:00Z", 20, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(ns, 0);
    cr_assert_eq(parti_rfc3339_parse("2026-13-01T00:00:00Z", 20, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T24:00:00Z", 20, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T06:10:24.Z", 21, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T06:10:24.1234567890Z", 31, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("1969-12-31T23:59:59Z", 20, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T06:10:24", 19, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T06:10:24Zjunk", 24, &ns), PARTI_ERR_INVALID_ARGUMENT);
    cr_assert_eq(parti_rfc3339_parse("2026-12-03T06:10:24Z", 19, &ns), PARTI_ERR_INVALID_ARGUMENT); /* len counts */
    cr_assert_eq(parti_rfc3339_parse(NULL, 20, &ns), PARTI_ERR_INVALID_ARGUMENT);
    /* a server time 250 ms ago is 250 ms before the transport's now; the future is now */
    cr_assert_eq(parti_wall_to_transport_ms(1000000000000ULL, 1000250000000ULL, 5000), 4750);
    cr_assert_eq(parti_wall_to_transport_ms(1000500000000ULL, 1000250000000ULL, 5000), 5000);
    cr_assert_eq(parti_wall_to_transport_ms(0, 1000250000000ULL, 5000), 0);
}

/* ---- ack subjects of delivered messages (untrusted) ---------------------- */

Test(ack_subjects, both_forms_parse) {
    parti_js_ack_meta m;
    static const char v1[] = "$JS.ACK.orders.w-1.2.1234.56.1733212224123456789.7";
    static const char v2[] = "$JS.ACK.hub.ACCHASH.orders.w-1.2.1234.56.1733212224123456789.7.tok";
    cr_assert_eq(parti_js_ack_parse(v1, strlen(v1), &m), PARTI_ERR_OK);
    cr_assert_str_eq(m.stream, "orders");
    cr_assert_str_eq(m.consumer, "w-1");
    cr_assert_eq(m.delivered, 2);
    cr_assert_eq(m.stream_seq, 1234);
    cr_assert_eq(m.consumer_seq, 56);
    cr_assert_eq(m.timestamp_ns, 1733212224123456789ull);
    cr_assert_eq(m.pending, 7);
    memset(&m, 0x55, sizeof m);
    cr_assert_eq(parti_js_ack_parse(v2, strlen(v2), &m), PARTI_ERR_OK);
    cr_assert_str_eq(m.stream, "orders");
    cr_assert_str_eq(m.consumer, "w-1");
    cr_assert_eq(m.stream_seq, 1234);
    cr_assert_eq(m.pending, 7);
    /* exactly len bytes: what follows is not read */
    {
        static const char longer[] = "$JS.ACK.orders.w-1.2.1234.56.1733212224123456789.75";
        cr_assert_eq(parti_js_ack_parse(longer, strlen(longer) - 1, &m), PARTI_ERR_OK);
        cr_assert_eq(m.pending, 7);
    }
}

Test(ack_subjects, malformed_ones_are_refused_and_leave_nothing_behind) {
    static const char *const bad[] = {
        "",
        "$JS.ACK",
        "$JS.ACK.orders.w-1.2.1234.56.17",                        /* 8 tokens */
        "$JS.ACK.hub.HASH.orders.w-1.2.1234.56.1733.7",            /* 11 */
        "$JS.NAK.orders.w-1.2.1234.56.1733.7",
        "$js.ACK.orders.w-1.2.1234.56.1733.7",
        "$JS.ACK..w-1.2.1234.56.1733.7",                           /* empty stream */
        "$JS.ACK.orders..2.1234.56.1733.7",                        /* empty consumer */
        "$JS.ACK.orders.w-1.2.12x4.56.1733.7",                     /* not a number */
        "$JS.ACK.orders.w-1.2.-1.56.1733.7",
        "$JS.ACK.orders.w-1.2.18446744073709551616.56.1733.7",     /* 2^64 */
        "$JS.ACK.orders.w-1.2.1234.56.1733.",                      /* empty number */
        "$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m.n",                     /* 16 tokens, names not numbers */
        "$JS.ACK.a.b.1.2.3.4.5.6.7.8.9.10.11.12.13",               /* 17 tokens */
        "$JS.ACK.0123456789012345678901234567890123456789012345678901234567890123456789.w.2.1.5.1.7",
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parti_js_ack_meta m;
        memset(&m, 0x55, sizeof m);
        cr_assert_eq(parti_js_ack_parse(bad[i], strlen(bad[i]), &m), PARTI_ERR_PROTOCOL, "accepted: %s", bad[i]);
        cr_assert(m.stream[0] == 0 && m.consumer[0] == 0 && m.stream_seq == 0 && m.delivered == 0 &&
                      m.consumer_seq == 0 && m.timestamp_ns == 0 && m.pending == 0,
                  "left values behind: %s", bad[i]);
    }
    {
        static const char nul[] = "$JS.ACK.orders.w-1.2.1234.56.1733\0.7";
        parti_js_ack_meta m;
        cr_assert_eq(parti_js_ack_parse(nul, sizeof nul - 1, &m), PARTI_ERR_PROTOCOL);
        cr_assert_eq(parti_js_ack_parse(NULL, 4, &m), PARTI_ERR_INVALID_ARGUMENT);
        cr_assert_eq(parti_js_ack_parse(nul, 4, NULL), PARTI_ERR_INVALID_ARGUMENT);
    }
}

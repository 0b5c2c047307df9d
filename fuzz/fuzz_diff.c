/* Fuzz target: sort/dedupe and diff of subject sets.
 * Input: lines; a line "--" separates the old set from the new one.
 * Properties: sort_unique yields sorted unique sets that keep every distinct
 * input; the diff is sorted and unique; added is in new and not in old,
 * removed in old and not in new; old - removed + added == new. */
#define PARTI_IMPLEMENTATION
#include "parti.h"

#include <stdlib.h>
#include <string.h>

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int contains(const parti_subjects *s, const char *x) {
    int lo = 0, hi = s->count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(s->items[mid], x);
        if (c == 0) return 1;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    parti_subjects sets[2] = {{NULL, 0}, {NULL, 0}}, add = {NULL, 0}, rem = {NULL, 0}, applied = {NULL, 0};
    char *buf = (char *)malloc(size + 1);
    size_t i, start = 0;
    int which = 0, j, lines = 0;
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    for (i = 0; i <= size && lines < 4096; i++) {
        if (i == size || buf[i] == '\n') {
            buf[i] = 0;
            if (strcmp(buf + start, "--") == 0) which = 1;
            else CHECK(parti_subjects_add(&sets[which], buf + start) == PARTI_ERR_OK);
            start = i + 1;
            lines++;
        }
    }
    for (which = 0; which < 2; which++) {
        parti_subjects copy = {NULL, 0};
        for (j = 0; j < sets[which].count; j++) parti_subjects_add(&copy, sets[which].items[j]);
        parti_subjects_sort_unique(&sets[which]);
        CHECK(parti_subjects_is_sorted(&sets[which]));
        for (j = 0; j < copy.count; j++) CHECK(contains(&sets[which], copy.items[j]));
        parti_subjects_free(&copy);
    }
    CHECK(parti_subjects_diff(&sets[0], &sets[1], &add, &rem) == PARTI_ERR_OK);
    CHECK(parti_subjects_is_sorted(&add) && parti_subjects_is_sorted(&rem));
    for (j = 0; j < add.count; j++) CHECK(contains(&sets[1], add.items[j]) && !contains(&sets[0], add.items[j]));
    for (j = 0; j < rem.count; j++) CHECK(contains(&sets[0], rem.items[j]) && !contains(&sets[1], rem.items[j]));
    for (j = 0; j < sets[0].count; j++)
        if (!contains(&rem, sets[0].items[j])) parti_subjects_add(&applied, sets[0].items[j]);
    for (j = 0; j < add.count; j++) parti_subjects_add(&applied, add.items[j]);
    parti_subjects_sort_unique(&applied);
    CHECK(applied.count == sets[1].count);
    for (j = 0; j < applied.count; j++) CHECK(strcmp(applied.items[j], sets[1].items[j]) == 0);
    parti_subjects_free(&sets[0]);
    parti_subjects_free(&sets[1]);
    parti_subjects_free(&add);
    parti_subjects_free(&rem);
    parti_subjects_free(&applied);
    free(buf);
    return 0;
}

/* Two-translation-unit link test, part 2: a user of the declarations only.
 * Linking this with impl.c proves the header half declares what the
 * implementation half defines, with no duplicate or missing symbols. */
#include "parti.h"

#include <stdio.h>
#include <string.h>

int main(void) {
    static const char *const keys[] = {"eu"};
    parti_partition p = {keys, 1, 1};
    char subject[64], name[PARTI_MAX_NAME_LEN + 1];
    if (parti_subject_expand("orders.{0}", &p, subject, sizeof subject, NULL, NULL, 0) != PARTI_ERR_OK) return 1;
    if (strcmp(subject, "orders.eu") != 0) return 2;
    if (parti_consumer_name("parti-", "worker-1", name, sizeof name, NULL, 0) != PARTI_ERR_OK) return 3;
    if (strcmp(parti_strerror(PARTI_ERR_TIMEOUT), "operation timed out") != 0) return 4;
    printf("two translation units: %s, %s\n", subject, name);
    return 0;
}

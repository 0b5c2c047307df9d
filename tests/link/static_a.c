/* PARTI_STATIC test: two translation units each compile a private copy of
 * parti (all functions static); they link into one program without clashes.
 * stb_ds is instantiated here only (static_b.c sets PARTI_STB_DS_EXTERNAL). */
#define PARTI_STATIC
#define PARTI_IMPLEMENTATION
#include "parti.h"

#include <stdio.h>
#include <string.h>

const char *static_b_strerror(parti_err e);

int main(void) {
    if (strcmp(parti_strerror(PARTI_ERR_NOMEM), static_b_strerror(PARTI_ERR_NOMEM)) != 0) return 1;
    if (parti_name_check("ok", NULL, 0) != PARTI_ERR_OK) return 2;
    printf("PARTI_STATIC: two private copies agree: %s\n", parti_strerror(PARTI_ERR_NOMEM));
    return 0;
}

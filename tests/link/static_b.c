/* PARTI_STATIC test, second private copy (see static_a.c). */
#define PARTI_STATIC
#define PARTI_STB_DS_EXTERNAL
#define PARTI_IMPLEMENTATION
#include "parti.h"

const char *static_b_strerror(parti_err e);
const char *static_b_strerror(parti_err e) { return parti_strerror(e); }

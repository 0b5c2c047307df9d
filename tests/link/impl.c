/* Two-translation-unit link test, part 1: the implementation. */
#define PARTI_IMPLEMENTATION
#include "parti.h"

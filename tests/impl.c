/* The one translation unit of the test binary that holds the implementation. */
#define PARTI_IMPLEMENTATION
#include "parti.h"

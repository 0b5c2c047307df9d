/* The one translation unit of the unit-test binary that holds the implementation. */
#define PARTI_IMPLEMENTATION
#include "parti.h"
#include "parti_nats.h"

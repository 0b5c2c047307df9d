/* The one translation unit of the unit-test binary that holds the implementation. */
#define PARTI_IMPLEMENTATION
#define PARTI_NATS_NO_NATSC
#include "parti.h"
#include "parti_nats.h"

#!/bin/sh
# The headers build warning-free (-Wall -Wextra -Wpedantic -Werror) at every
# optimisation level with gcc and clang: a user's -O3 -Werror build must not
# fail on a "may be used uninitialized" the optimiser imagines.
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '#define PARTI_IMPLEMENTATION\n#include "parti.h"\n#include "parti_nats.h"\n' > "$dir/impl.c"
n=0
for cc in gcc clang; do
    command -v "$cc" >/dev/null 2>&1 || { echo "$cc not found"; exit 1; }
    for o in -O0 -O1 -O2 -O3 -Os; do
        if ! "$cc" -std=c99 $o -Wall -Wextra -Wpedantic -Werror -D_POSIX_C_SOURCE=200809L -I. -c "$dir/impl.c" \
            -o "$dir/impl.o" 2> "$dir/err"; then
            echo "$cc $o:"; cat "$dir/err"; exit 1
        fi
        n=$((n + 1))
    done
done
echo "$n builds (gcc and clang at -O0 -O1 -O2 -O3 -Os) without a warning"

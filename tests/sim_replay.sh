#!/bin/sh
# A seed replays byte for byte: the same seed twice gives the same event log,
# and a summary over many seeds does not depend on how they are split over jobs.
set -eu
sim=$1
a=$("$sim" --seed 11 --log | grep -v 'wall s')
b=$("$sim" --seed 11 --log | grep -v 'wall s')
[ "$a" = "$b" ] || { echo "seed 11 gave two different event logs"; exit 1; }
n=$(printf '%s\n' "$a" | wc -l)
[ "$n" -gt 100 ] || { echo "seed 11 logged only $n lines"; exit 1; }
h1=$("$sim" --seeds 12 --jobs 1 | grep 'event log hash')
h2=$("$sim" --seeds 12 --jobs 3 | grep 'event log hash')
[ "$h1" = "$h2" ] || { echo "12 seeds: $h1 with 1 job, $h2 with 3"; exit 1; }
c=$("$sim" --seed 12 | grep 'event log hash')
d=$("$sim" --seed 13 | grep 'event log hash')
[ "$c" != "$d" ] || { echo "seeds 12 and 13 gave the same log"; exit 1; }
echo "seed 11: $n identical lines twice; 12 seeds: $h1 with 1 or 3 jobs"

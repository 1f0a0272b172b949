#!/bin/sh
# Trains each named network of one model file over seeds 1, 2 and 3 and
# prints each test accuracy and the mean: the comparison behind
# examples/augment/run.sh and examples/distill/run.sh.
# Usage: examples/seeds.sh MODEL.nn NETWORK...  (NNC defaults to `nnc`, e.g.
# NNC=target/release/nnc). Runs in the model's directory; results go under
# its runs/.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 MODEL.nn NETWORK..." >&2; exit 2; }
NNC=${NNC:-nnc}
case $NNC in /*) ;; */*) NNC="$PWD/$NNC" ;; esac
cd "$(dirname "$1")"
model=$(basename "$1")
shift
mkdir -p runs
accuracy() { # network seed -> test accuracy in percent
    "$NNC" train "$model" --network "$1" --seed "$2" --out "runs/$1-$2" --overwrite --quiet \
        >"runs/$1-$2.log" 2>&1 || { cat "runs/$1-$2.log" >&2; exit 1; }
    grep -m1 '^  accuracy' "runs/$1-$2.log" | sed 's/.*accuracy \([0-9.]*\)%.*/\1/'
}
for net in "$@"; do
    sum=0
    line=""
    for seed in 1 2 3; do
        a=$(accuracy "$net" "$seed")
        line="$line $a"
        sum=$(echo "$sum + $a" | bc -l)
    done
    printf '%-8s test accuracy (seeds 1 2 3):%s  mean %.2f%%\n' "$net" "$line" "$(echo "$sum / 3" | bc -l)"
done

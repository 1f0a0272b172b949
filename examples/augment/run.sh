#!/bin/sh
# Data augmentation on the bundled MNIST subset (issue 25): LeNet-5 without
# (`LeNet`) and with (`LeNetAug`: shift 2 px, rotate 10°) augmentation, over
# seeds 1, 2 and 3, 10 epochs each; prints each test accuracy (the 2,000
# test digits, never augmented) and the means.
# Usage: examples/augment/run.sh  (from anywhere; NNC defaults to `nnc`, e.g.
# NNC=target/release/nnc). Results go under examples/augment/runs/.
set -eu
cd "$(dirname "$0")"
NNC=${NNC:-nnc}
case $NNC in /*) ;; */*) NNC="$OLDPWD/$NNC" ;; esac
mkdir -p runs
accuracy() { # network seed -> test accuracy in percent
    "$NNC" train augment.nn --network "$1" --seed "$2" --out "runs/$1-$2" --overwrite --quiet \
        >"runs/$1-$2.log" 2>&1 || { cat "runs/$1-$2.log" >&2; exit 1; }
    grep -m1 '^  accuracy' "runs/$1-$2.log" | sed 's/.*accuracy \([0-9.]*\)%.*/\1/'
}
for net in LeNet LeNetAug; do
    sum=0
    line=""
    for seed in 1 2 3; do
        a=$(accuracy "$net" "$seed")
        line="$line $a"
        sum=$(echo "$sum + $a" | bc -l)
    done
    printf '%-8s test accuracy (seeds 1 2 3):%s  mean %.2f%%\n' "$net" "$line" "$(echo "$sum / 3" | bc -l)"
done

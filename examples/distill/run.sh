#!/bin/sh
# Knowledge distillation on the bundled MNIST subset (issue 23): trains the
# LeNet-5 teacher once, then the MLP 784-32-10 on labels alone (`Mlp`) and
# distilled from LeNet (`Student`, the teacher compiled into its training
# step) over seeds 1, 2 and 3, and prints each test accuracy and the means.
# Usage: examples/distill/run.sh  (from anywhere; NNC defaults to `nnc`, e.g.
# NNC=target/release/nnc). Results go under examples/distill/runs/.
set -eu
cd "$(dirname "$0")"
NNC=${NNC:-nnc}
case $NNC in /*) ;; */*) NNC="$OLDPWD/$NNC" ;; esac
mkdir -p runs
if [ ! -f runs/LeNet/weights.safetensors ]; then
    "$NNC" train distill.nn --network LeNet --out runs/LeNet --overwrite --quiet >runs/LeNet.log 2>&1 ||
        { cat runs/LeNet.log; exit 1; }
fi
[ -f runs/LeNet.log ] && grep -m1 '^  accuracy' runs/LeNet.log | sed 's/^ */LeNet (teacher) test /'
accuracy() { # network seed -> test accuracy in percent
    "$NNC" train distill.nn --network "$1" --seed "$2" --out "runs/$1-$2" --overwrite --quiet \
        >"runs/$1-$2.log" 2>&1 || { cat "runs/$1-$2.log" >&2; exit 1; }
    grep -m1 '^  accuracy' "runs/$1-$2.log" | sed 's/.*accuracy \([0-9.]*\)%.*/\1/'
}
for net in Mlp Student; do
    sum=0
    line=""
    for seed in 1 2 3; do
        a=$(accuracy "$net" "$seed")
        line="$line $a"
        sum=$(echo "$sum + $a" | bc -l)
    done
    printf '%-8s test accuracy (seeds 1 2 3):%s  mean %.2f%%\n' "$net" "$line" "$(echo "$sum / 3" | bc -l)"
done

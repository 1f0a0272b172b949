#!/bin/sh
# Knowledge distillation on the bundled MNIST subset (issue 23): trains the
# LeNet-5 teacher once, then the MLP 784-32-10 on labels alone (`Mlp`) and
# distilled from LeNet (`Student`, the teacher compiled into its training
# step) over seeds 1, 2 and 3, and prints each test accuracy and the means.
# Usage: examples/distill/run.sh  (from anywhere; NNC defaults to `nnc`, e.g.
# NNC=target/release/nnc). Results go under examples/distill/runs/.
set -eu
NNC=${NNC:-nnc}
case $NNC in /*) ;; */*) NNC="$PWD/$NNC" ;; esac
export NNC
here=$(dirname "$0")
mkdir -p "$here/runs"
if [ ! -f "$here/runs/LeNet/weights.safetensors" ]; then
    (cd "$here" && "$NNC" train distill.nn --network LeNet --out runs/LeNet --overwrite --quiet \
        >runs/LeNet.log 2>&1) || { cat "$here/runs/LeNet.log"; exit 1; }
fi
[ -f "$here/runs/LeNet.log" ] && grep -m1 '^  accuracy' "$here/runs/LeNet.log" | sed 's/^ */LeNet (teacher) test /'
exec "$here/../seeds.sh" "$here/distill.nn" Mlp Student

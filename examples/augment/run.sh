#!/bin/sh
# Data augmentation on the bundled MNIST subset (issue 25): LeNet-5 without
# (`LeNet`) and with (`LeNetAug`: shift 2 px, rotate 10°) augmentation, over
# seeds 1, 2 and 3, 10 epochs each; prints each test accuracy (the 2,000
# test digits, never augmented) and the means.
# Usage: examples/augment/run.sh  (from anywhere; NNC defaults to `nnc`, e.g.
# NNC=target/release/nnc). Results go under examples/augment/runs/.
set -eu
NNC=${NNC:-nnc}
case $NNC in /*) ;; */*) NNC="$PWD/$NNC" ;; esac
export NNC
exec "$(dirname "$0")/../seeds.sh" "$(dirname "$0")/augment.nn" LeNet LeNetAug

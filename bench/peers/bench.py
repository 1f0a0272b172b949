#!/usr/bin/env python3
"""Python peers of the nnc benchmark: JAX, PyTorch, TensorFlow and ONNX Runtime.

One process measures one (framework, workload, threads) combination and prints
one JSON object on stdout (diagnostics go to stderr). bench/peers/run.sh runs
it in a fresh process per combination and appends the line to results.jsonl.

    python bench.py --framework torch-eager --workload W1 --threads 1 [--steps 50]

Frameworks: jax, torch-eager, torch-compile, tf-function, tf-xla, keras-fit,
onnxruntime (inference only).
Workloads (float32, bundled MNIST training split, pixels / 255):
    W1  MLP 784-128-128-10, ReLU, batch 128
    W2  MLP 784-2048-2048-10, ReLU, batch 512
    W3  LeNet-5 (conv5x5x6 pad 2, relu, maxpool2, conv5x5x16, relu, maxpool2,
        dense 120, relu, dense 84, relu, dense 10), batch 128
all trained with Adam(lr=1e-3, eps=1e-8) on sparse softmax cross-entropy from
logits, batches cycled in order through the training images (last partial
batch dropped).
    W4, W4L  transformer-encoder training (transformer.py; jax and torch only)
    W5-MLP-1, W5-MLP-256, W5-LeNet-1, W5-LeNet-256
             inference of W1's MLP and W3's LeNet at batch 1 (latency median
             and p99) and 256 (throughput) (inference.py; jax, torch, onnxruntime)
"""

import argparse
import gzip
import json
import os
import sys
import time
import traceback

from training import EPS, LR, jax_dense, jax_train, torch_train

FRAMEWORKS = ["jax", "torch-eager", "torch-compile", "tf-function", "tf-xla", "keras-fit", "onnxruntime",
              "onnxruntime-int8"]
BATCH = {"W1": 128, "W2": 512, "W3": 128,
         # W4: transformer training (transformer.py); W5: inference (inference.py)
         "W4": 64, "W4L": 32, "W5-MLP-1": 1, "W5-MLP-256": 256, "W5-LeNet-1": 1, "W5-LeNet-256": 256}
HIDDEN = {"W1": 128, "W2": 2048}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", required=True, choices=FRAMEWORKS)
    p.add_argument("--workload", required=True, choices=sorted(BATCH))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "data", "mnist-10k"))
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps, incl. the first (compiling) one")
    p.add_argument("--steps", type=int, default=0, help="exact number of timed steps (0: time for --seconds)")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed duration when --steps is 0")
    p.add_argument("--calls", type=int, default=1000, help="timed calls of a batch-1 inference workload (W5-*-1)")
    return p.parse_args()


def limit_threads(n):
    """Pin to n cores and set every thread knob to n. Must run before any framework import."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < n:
        raise SystemExit(f"asked for {n} threads but only {len(cpus)} cores are available")
    os.sched_setaffinity(0, cpus[:n])
    for var in ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"]:
        os.environ[var] = str(n)
    # XLA (JAX and TF's jit_compile) sizes its thread pools from the affinity
    # mask (it has no thread-count flag); for one thread also turn the
    # multi-threaded Eigen path off entirely.
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def load_mnist(data_dir):
    import numpy as np

    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    assert int.from_bytes(raw[0:4], "big") == 2051
    n = int.from_bytes(raw[4:8], "big")
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 784).astype(np.float32) / 255.0
    with gzip.open(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")) as f:
        raw = f.read()
    assert int.from_bytes(raw[0:4], "big") == 2049
    y = np.frombuffer(raw, np.uint8, offset=8).astype(np.int32)
    assert len(y) == n
    return x, y


def batches(x, y, bs):
    """The full batches, in order, as (images, labels) numpy pairs."""
    nb = len(x) // bs
    return [(x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs]) for i in range(nb)]


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(args, build, nb):
    """Shared protocol. build() -> (step, to_float); step(batch_index) -> loss handle.

    The clock for first_step_s starts before build() (model construction) and
    stops once the first step's loss is on the host (incl. tracing/jit). After
    the remaining warm-up steps, full training steps are timed; only the last
    loss is read back (to_float synchronises asynchronous backends like JAX).
    """
    t0 = time.perf_counter()
    step, to_float = build()
    first_loss = to_float(step(0))
    first_step_s = time.perf_counter() - t0
    b = 1 % nb
    loss = None
    for _ in range(1, max(args.warmup, 1)):
        loss = step(b)
        b = (b + 1) % nb
    if loss is not None:
        to_float(loss)
    n = 0
    t = time.perf_counter()
    while True:
        loss = step(b)
        b = (b + 1) % nb
        n += 1
        if args.steps > 0:
            if n >= args.steps:
                break
        elif n >= 10 and time.perf_counter() - t >= args.seconds:
            break
    final_loss = to_float(loss)
    secs = time.perf_counter() - t
    return dict(first_step_s=first_step_s, first_loss=first_loss, steps_timed=n,
                seconds_timed=secs, final_loss=final_loss)


# --------------------------------------------------------------------------- JAX

def bench_jax(args, data):
    import jax
    import jax.numpy as jnp
    import optax

    wl, bs = args.workload, BATCH[args.workload]
    bat = batches(*data, bs)
    conv = wl == "W3"
    xs = [jnp.asarray(x.reshape(bs, 1, 28, 28) if conv else x) for x, _ in bat]
    ys = [jnp.asarray(y) for _, y in bat]

    def conv_p(key, cin, cout, k):
        k1, k2 = jax.random.split(key)
        lim = 1.0 / (cin * k * k) ** 0.5
        return {"w": jax.random.uniform(k1, (cout, cin, k, k), jnp.float32, -lim, lim),
                "b": jax.random.uniform(k2, (cout,), jnp.float32, -lim, lim)}

    def init(key):
        ks = jax.random.split(key, 5)
        if not conv:
            h = HIDDEN[wl]
            return [jax_dense(ks[0], 784, h), jax_dense(ks[1], h, h), jax_dense(ks[2], h, 10)]
        return [conv_p(ks[0], 1, 6, 5), conv_p(ks[1], 6, 16, 5),
                jax_dense(ks[2], 400, 120), jax_dense(ks[3], 120, 84), jax_dense(ks[4], 84, 10)]

    def conv2d(x, p, pad):
        y = jax.lax.conv_general_dilated(x, p["w"], (1, 1), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + p["b"][None, :, None, None]

    def maxpool2(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def forward(params, x):
        if conv:
            x = maxpool2(jax.nn.relu(conv2d(x, params[0], 2)))
            x = maxpool2(jax.nn.relu(conv2d(x, params[1], 0)))
            x = x.reshape(x.shape[0], -1)
            params = params[2:]
        for p in params[:-1]:
            x = jax.nn.relu(x @ p["w"] + p["b"])
        return x @ params[-1]["w"] + params[-1]["b"]

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean()

    return jax_train(args, measure, init, loss_fn, lambda b: (xs[b], ys[b]), len(bat), "; NCHW conv")


# ------------------------------------------------------------------------ PyTorch

def bench_torch(args, data, compiled):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    n = args.threads
    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)
    wl, bs = args.workload, BATCH[args.workload]
    bat = batches(*data, bs)
    conv = wl == "W3"
    xs = [torch.from_numpy(x.reshape(bs, 1, 28, 28) if conv else x.copy()) for x, _ in bat]
    ys = [torch.from_numpy(y.astype("int64")) for _, y in bat]

    def make_model():
        if not conv:
            h = HIDDEN[wl]
            return nn.Sequential(nn.Linear(784, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10))
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def loss_fn(model, x, y):
        return F.cross_entropy(model(x), y)

    return torch_train(args, measure, make_model, loss_fn, lambda b: (xs[b], ys[b]), len(bat), compiled,
                       "eager, Adam(foreach)")


# --------------------------------------------------------------------- TensorFlow

def bench_tf(args, data, variant):
    import tensorflow as tf

    n = args.threads
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    import keras

    wl, bs = args.workload, BATCH[args.workload]
    conv = wl == "W3"
    x_all, y_all = data
    nb = len(x_all) // bs
    x_all, y_all = x_all[:nb * bs], y_all[:nb * bs]
    if conv:
        x_all = x_all.reshape(-1, 28, 28, 1)  # TF's CPU conv kernels want NHWC

    def make_model():
        keras.utils.set_random_seed(0)
        L = keras.layers
        if not conv:
            h = HIDDEN[wl]
            layers = [keras.Input((784,)), L.Dense(h, activation="relu"), L.Dense(h, activation="relu"), L.Dense(10)]
        else:
            layers = [keras.Input((28, 28, 1)),
                      L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
                      L.Conv2D(16, 5, padding="valid", activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                      L.Dense(120, activation="relu"), L.Dense(84, activation="relu"), L.Dense(10)]
        return keras.Sequential(layers)

    loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    version = f"tensorflow {tf.__version__}, keras {keras.__version__}"

    if variant == "keras-fit":
        return bench_keras_fit(args, tf, keras, make_model, loss_obj, x_all, y_all, bs, nb, version)

    xs = [tf.constant(x_all[i * bs:(i + 1) * bs]) for i in range(nb)]
    ys = [tf.constant(y_all[i * bs:(i + 1) * bs]) for i in range(nb)]
    jit = variant == "tf-xla"

    def build():
        model = make_model()
        opt = keras.optimizers.Adam(learning_rate=LR, epsilon=EPS)

        @tf.function(jit_compile=jit)
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_obj(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return (lambda b: train_step(xs[b], ys[b])), (lambda l: float(l))

    m = measure(args, build, nb)
    m.update(version=version, backend="xla-cpu" if jit else "tf-cpu (oneDNN/Eigen)",
             notes=f"tf.function(jit_compile={jit}) GradientTape + keras Adam; NHWC conv")
    return m


def bench_keras_fit(args, tf, keras, make_model, loss_obj, x_all, y_all, bs, nb, version):
    """model.fit on an in-memory tf.data pipeline; timing via a batch callback."""
    ds = tf.data.Dataset.from_tensor_slices((x_all, y_all)).batch(bs, drop_remainder=True).repeat()

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.first_end = None
            self.last_loss = None

        def on_train_batch_end(self, batch, logs=None):
            if self.first_end is None:
                self.first_end = time.perf_counter()
            self.last_loss = (logs or {}).get("loss")

    clock = Clock()
    t0 = time.perf_counter()
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LR, epsilon=EPS), loss=loss_obj)
    warm = max(args.warmup, 1)
    model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False, callbacks=[clock])
    first_step_s = clock.first_end - t0
    first_loss = float(clock.last_loss)
    t1 = time.perf_counter()
    if warm > 1:
        model.fit(ds, epochs=1, steps_per_epoch=warm - 1, verbose=0, shuffle=False, callbacks=[clock])
    per_step = (time.perf_counter() - t1) / max(warm - 1, 1)
    if args.steps > 0:
        steps = args.steps
    else:
        steps = max(10, int(args.seconds / max(per_step, 1e-6)) + 1)
    t = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[clock])
    secs = time.perf_counter() - t
    return dict(first_step_s=first_step_s, first_loss=first_loss, steps_timed=steps, seconds_timed=secs,
                final_loss=float(clock.last_loss), version=version,
                backend="xla-cpu" if getattr(model, "jit_compile", False) else "tf-cpu (oneDNN/Eigen)",
                notes=f"keras model.fit, tf.data from_tensor_slices, compile(jit_compile='auto' -> "
                      f"{getattr(model, 'jit_compile', '?')}); each fit() call also pays its own "
                      f"setup, timed steps estimated from warm-up speed; loss is Keras' running epoch mean")


def main():
    args = parse_args()
    limit_threads(args.threads)  # before any framework import
    record = {"framework": args.framework, "workload": args.workload, "threads": args.threads,
              "batch": BATCH[args.workload]}
    try:
        data = load_mnist(args.data)
        supported = {"W4": ("jax", "torch-eager", "torch-compile"), "W4L": ("jax", "torch-eager", "torch-compile"),
                     "W5": ("jax", "torch-eager", "torch-compile", "onnxruntime", "onnxruntime-int8")}
        family = args.workload.split("-")[0]
        if args.framework.startswith("onnxruntime") and family != "W5" or \
                family in supported and args.framework not in supported[family]:
            raise ValueError(f"{args.framework} has no {args.workload} here (W4: jax, torch; "
                             f"W5: jax, torch, onnxruntime; onnxruntime only W5)")
        if family in ("W4", "W4L"):
            import transformer

            if args.framework == "jax":
                m = transformer.bench_jax(args, measure)
            else:
                m = transformer.bench_torch(args, measure, compiled=args.framework == "torch-compile")
        elif family == "W5":
            import inference

            if args.framework == "jax":
                m = inference.bench_jax(args, data)
            elif args.framework.startswith("onnxruntime"):
                m = inference.bench_onnxruntime(args, data, int8=args.framework == "onnxruntime-int8")
            else:
                m = inference.bench_torch(args, data, compiled=args.framework == "torch-compile")
            record.update(latency_median_us=round(m["latency_median_us"], 2),
                          latency_p99_us=round(m["latency_p99_us"], 2))
        elif args.framework == "jax":
            m = bench_jax(args, data)
        elif args.framework.startswith("torch"):
            m = bench_torch(args, data, compiled=args.framework == "torch-compile")
        else:
            m = bench_tf(args, data, args.framework)
        record.update(
            version=m["version"],
            samples_per_s=round(m["steps_timed"] * BATCH[args.workload] / m["seconds_timed"], 1),
            peak_rss_mb=round(peak_rss_mb(), 1),
            first_step_s=round(m["first_step_s"], 4),
            steps_timed=m["steps_timed"],
            seconds_timed=round(m["seconds_timed"], 3),
            warmup_steps=max(args.warmup, 1),
            first_loss=m.get("first_loss"),
            final_loss=m.get("final_loss"),
            backend=m["backend"],
            notes=m["notes"],
            affinity=sorted(os.sched_getaffinity(0)),
        )
    except Exception as e:  # one failing peer must not stop the others
        traceback.print_exc(file=sys.stderr)
        record["error"] = f"{type(e).__name__}: {e}"[:2000]
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

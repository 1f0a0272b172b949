"""W5: inference, the peers' side (ONNX Runtime, PyTorch eager, torch.compile, JAX).

The W1 MLP (784-128-128-10) and LeNet-5 of W3, forward pass only, on the
bundled MNIST training images, cycled in order:

    W5-MLP-1, W5-LeNet-1      batch 1: latency of one call, median and p99
                              over at least --calls calls (default 1000)
    W5-MLP-256, W5-LeNet-256  batch 256: throughput in samples per second

Weights are the frameworks' default initialisation (speed does not depend
on their values). ONNX Runtime runs the PyTorch model exported to ONNX
(torch.onnx.export), with all graph optimisations, intra-op threads = the
thread count, sequential execution. A call returns the logits on the host.
`onnxruntime-int8` is the same ONNX model after ONNX Runtime's post-training
dynamic quantization (`quantize_dynamic`, int8 weights per channel,
activations quantized per call): the peer of nnc's int8 plan
(docs/quantization.md).
"""

import contextlib
import os
import sys
import tempfile
import time

import numpy as np

WORKLOADS = {"W5-MLP-1": ("mlp", 1), "W5-MLP-256": ("mlp", 256),
             "W5-LeNet-1": ("lenet", 1), "W5-LeNet-256": ("lenet", 256)}


def inputs(data, workload):
    """Batches of images shaped for the model, float32, in order."""
    model, bs = WORKLOADS[workload]
    x = data[0]
    nb = min(len(x) // bs, 256)
    shape = (bs, 1, 28, 28) if model == "lenet" else (bs, 784)
    return [np.ascontiguousarray(x[i * bs:(i + 1) * bs].reshape(shape)) for i in range(nb)]


def time_calls(args, call, batches):
    """Warm up, then time calls one by one. Latency workloads time at least
    args.calls calls; throughput ones run for args.seconds."""
    bs = batches[0].shape[0]
    t0 = time.perf_counter()
    call(batches[0])
    first_s = time.perf_counter() - t0
    for i in range(max(args.warmup, 1)):
        call(batches[i % len(batches)])
    lat = []
    t = time.perf_counter()
    i = 0
    while True:
        b = batches[i % len(batches)]
        s = time.perf_counter_ns()
        call(b)
        lat.append(time.perf_counter_ns() - s)
        i += 1
        if bs == 1:
            if i >= args.calls:
                break
        elif i >= 10 and time.perf_counter() - t >= args.seconds:
            break
    secs = time.perf_counter() - t
    lat = np.array(lat, dtype=np.float64) / 1e3
    return dict(first_step_s=first_s, steps_timed=i, seconds_timed=secs,
                latency_median_us=float(np.median(lat)), latency_p99_us=float(np.percentile(lat, 99)),
                samples_per_s=i * bs / secs)


def torch_model(kind):
    import torch.nn as nn

    if kind == "mlp":
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def bench_torch(args, data, compiled):
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    kind, _ = WORKLOADS[args.workload]
    batches = [torch.from_numpy(b) for b in inputs(data, args.workload)]
    torch.manual_seed(0)
    model = torch_model(kind).eval()
    fwd = torch.compile(model) if compiled else model

    def call(x):
        with torch.inference_mode():
            return fwd(x).numpy()

    m = time_calls(args, call, batches)
    m.update(version=f"torch {torch.__version__}", backend=f"cpu ({torch.backends.cpu.get_cpu_capability()})",
             notes=("torch.compile(inductor)" if compiled else "eager") + ", inference_mode, .eval()")
    return m


def export_onnx(kind, bs, path):
    """Writes the PyTorch model to `path` as ONNX; returns the exporter used."""
    import torch

    torch.manual_seed(0)
    model = torch_model(kind).eval()
    shape = (bs, 1, 28, 28) if kind == "lenet" else (bs, 784)
    example = (torch.zeros(shape),)
    # The exporter reports on stdout, which carries only the result line.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            torch.onnx.export(model, example, path, input_names=["x"], output_names=["logits"], dynamo=True)
            return f"torch {torch.__version__} dynamo exporter"
        except Exception:  # older exporters or a missing onnxscript
            torch.onnx.export(model, example, path, input_names=["x"], output_names=["logits"], dynamo=False)
            return f"torch {torch.__version__} torchscript exporter"


def bench_onnxruntime(args, data, int8=False):
    import subprocess

    import onnxruntime as ort

    kind, bs = WORKLOADS[args.workload]
    batches = inputs(data, args.workload)
    path = os.path.join(tempfile.mkdtemp(prefix="nnc-peers-"), f"{kind}.onnx")
    # Exported in another process, so PyTorch's memory does not count
    # towards ONNX Runtime's peak RSS.
    here = os.path.dirname(os.path.abspath(__file__))
    exporter = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); import inference; "
                               f"print(inference.export_onnx({kind!r}, {bs}, {path!r}))"],
        check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        qpath = path.replace(".onnx", ".int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8, per_channel=True)
        path = qpath
        exporter += ", quantize_dynamic(QInt8, per_channel)"
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def call(x):
        return sess.run(None, {name: x})[0]

    m = time_calls(args, call, batches)
    m.update(version=f"onnxruntime {ort.__version__}", backend="ort-cpu",
             notes=f"model from {exporter}, ORT_ENABLE_ALL, sequential, intra_op={args.threads}")
    return m


def bench_jax(args, data):
    import jax
    import jax.numpy as jnp

    kind, _ = WORKLOADS[args.workload]
    batches = [jnp.asarray(b) for b in inputs(data, args.workload)]
    key = iter(jax.random.split(jax.random.PRNGKey(0), 10))

    def u(shape, fan_in):
        lim = 1.0 / fan_in ** 0.5
        return jax.random.uniform(next(key), shape, jnp.float32, -lim, lim)

    if kind == "mlp":
        params = [(u((784, 128), 784), u((128,), 784)), (u((128, 128), 128), u((128,), 128)),
                  (u((128, 10), 128), u((10,), 128))]
        convs = []
    else:
        convs = [(u((6, 1, 5, 5), 25), u((6,), 25), 2), (u((16, 6, 5, 5), 150), u((16,), 150), 0)]
        params = [(u((400, 120), 400), u((120,), 400)), (u((120, 84), 120), u((84,), 120)),
                  (u((84, 10), 84), u((10,), 84))]

    @jax.jit
    def forward(x):
        for w, b, pad in convs:
            x = jax.lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)],
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            x = jax.nn.relu(x + b[None, :, None, None])
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        x = x.reshape(x.shape[0], -1)
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        return x @ params[-1][0] + params[-1][1]

    def call(x):
        return np.asarray(forward(x))

    m = time_calls(args, call, batches)
    m.update(version=f"jax {jax.__version__}", backend="xla-cpu",
             notes=f"jax.jit forward, result to numpy; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    return m

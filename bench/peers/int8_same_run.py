"""nnc's int8 plan against ONNX Runtime's dynamic int8 quantization, in one sitting.

Issue 23's target: batch-256 inference of the W1 MLP and LeNet-5 in int8 at
least as fast as ONNX Runtime's `quantize_dynamic` of the same model, in the
same run. This script:

1. starts nnc's side (`int8-serve`, examples/mnist/src/bin/int8-serve.rs):
   it trains both models on the bundled MNIST subset (their `train` blocks),
   calibrates their int8 plans on 300 training digits, writes the f32
   weights and the test digits, reports test accuracies, and then times
   rounds on request;
2. loads the same f32 weights into the PyTorch models of `inference.py`,
   exports them to ONNX (fixed batch 256) and quantizes them with
   `quantize_dynamic` (QInt8 weights per channel, activations per call);
3. runs ROUNDS rounds; in each, for each model, nnc f32, nnc int8, ORT f32
   and ORT int8 each run one timed round over the whole test batches
   (starting from a rotating position, so no contender always goes first),
   one thread each (nnc: a rayon pool of one; ORT: intra_op_num_threads=1,
   sequential);
4. prints one table: median on-CPU µs per batch of 256 (the timing thread's
   CPU time, robust against other processes on a shared machine), the ratio
   to nnc f32, median wall µs, and test accuracy on the 2,000 test digits.

Run it with bench/peers/int8_same_run.sh (builds int8-serve in release and
uses the peers' venv); see docs/quantization.md.
"""

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCH = 256
# nnc's parameter names (dense weights [in, out], conv weights [O, C, KH, KW]).
LAYERS = {"mlp": ["h1", "h2", "logits"], "lenet": ["c1", "c2", "h1", "h2", "logits"]}


def read_safetensors(path):
    """The F32 tensors of a safetensors file, by name."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(data[base + a:base + b], dtype="<f4").reshape(t["shape"]).copy()
    return out


def torch_model(kind, weights):
    """The PyTorch model of inference.py with nnc's trained weights."""
    import torch
    import torch.nn as nn

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import inference

    model = inference.torch_model(kind).eval()
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    names = LAYERS[kind]
    assert len(layers) == len(names)
    with torch.no_grad():
        for m, name in zip(layers, names):
            w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
            # nnc stores dense weights [in, out], PyTorch [out, in].
            w = w.T if isinstance(m, nn.Linear) else w
            if tuple(m.weight.shape) != w.shape or tuple(m.bias.shape) != b.shape:
                raise SystemExit(f"{kind}: {name} is {w.shape}, PyTorch wants {tuple(m.weight.shape)}")
            m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            m.bias.copy_(torch.from_numpy(b))
    return model


def export(kind, weights, path):
    import torch

    model = torch_model(kind, weights)
    shape = (BATCH, 1, 28, 28) if kind == "lenet" else (BATCH, 784)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        try:
            torch.onnx.export(model, (torch.zeros(shape),), path, input_names=["x"],
                              output_names=["logits"], dynamo=True)
        except Exception:  # older exporters or a missing onnxscript
            torch.onnx.export(model, (torch.zeros(shape),), path, input_names=["x"],
                              output_names=["logits"], dynamo=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", required=True, help="the int8-serve binary")
    ap.add_argument("--data", default=None, help="MNIST directory (default: the bundled subset)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.2, help="least duration of one round")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="nnc-int8-same-run-")
    cmd = [args.serve, work] + ([args.data] if args.data else [])
    print(f"training and calibrating with {' '.join(cmd)} …", file=sys.stderr)
    serve = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = json.loads(serve.stdout.readline())

    def nnc_round(kind, form):
        serve.stdin.write(f"{kind} {form} {args.seconds}\n")
        serve.stdin.flush()
        cpu, wall = serve.stdout.readline().split()
        return float(cpu), float(wall)

    x = np.fromfile(os.path.join(work, "test_x.f32"), dtype="<f4").reshape(-1, 784)
    y = np.fromfile(os.path.join(work, "test_y.u8"), dtype=np.uint8)
    n = len(y)

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(1)
    sessions = {}
    for kind in ("mlp", "lenet"):
        path = os.path.join(work, f"{kind}.onnx")
        export(kind, read_safetensors(os.path.join(work, f"{kind}.safetensors")), path)
        qpath = os.path.join(work, f"{kind}.int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8, per_channel=True)
        for form, p in (("f32", path), ("int8", qpath)):
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sessions[kind, form] = ort.InferenceSession(p, so, providers=["CPUExecutionProvider"])

    def shaped(kind, xs):
        return np.ascontiguousarray(xs.reshape((-1, 1, 28, 28) if kind == "lenet" else (-1, 784)))

    def ort_accuracy(kind, form):
        sess = sessions[kind, form]
        hits = 0
        for s in range(0, n, BATCH):
            b = x[s:s + BATCH]
            pad = np.zeros((BATCH, 784), np.float32)
            pad[:len(b)] = b
            logits = sess.run(None, {"x": shaped(kind, pad)})[0][:len(b)]
            hits += int((logits.argmax(1) == y[s:s + len(b)]).sum())
        return hits / n

    whole = [x[i * BATCH:(i + 1) * BATCH] for i in range(n // BATCH)]
    batches = {k: [shaped(k, b) for b in whole] for k in ("mlp", "lenet")}

    def ort_round(kind, form):
        sess, bs = sessions[kind, form], batches[kind]
        for b in bs:  # sizes the round, warms the caches
            sess.run(None, {"x": b})
        t = time.perf_counter()
        for b in bs:
            sess.run(None, {"x": b})
        passes = max(1, int(np.ceil(args.seconds / max(time.perf_counter() - t, 1e-6))))
        c, w = time.thread_time(), time.perf_counter()
        for _ in range(passes):
            for b in bs:
                sess.run(None, {"x": b})
        cpu, wall = time.thread_time() - c, time.perf_counter() - w
        k = passes * len(bs)
        return cpu / k * 1e6, wall / k * 1e6

    contenders = [("nnc f32", lambda k: nnc_round(k, "f32")), ("nnc int8", lambda k: nnc_round(k, "int8")),
                  ("ORT f32", lambda k: ort_round(k, "f32")), ("ORT int8", lambda k: ort_round(k, "int8"))]
    times = {(k, c): [] for k in ("mlp", "lenet") for c, _ in contenders}
    for r in range(args.rounds):
        for kind in ("mlp", "lenet"):
            for j in range(len(contenders)):
                name, run = contenders[(r + j) % len(contenders)]
                times[kind, name].append(run(kind))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    serve.stdin.close()
    serve.wait()

    acc = {(k, "nnc f32"): ready[k]["f32_acc"] for k in ("mlp", "lenet")}
    acc.update({(k, "nnc int8"): ready[k]["int8_acc"] for k in ("mlp", "lenet")})
    for k in ("mlp", "lenet"):
        acc[k, "ORT f32"] = ort_accuracy(k, "f32")
        acc[k, "ORT int8"] = ort_accuracy(k, "int8")

    print(f"int8 in one sitting: batch {BATCH}, one thread, {args.rounds} interleaved rounds of >= {args.seconds} s, "
          f"{len(whole)} test batches per pass; nnc int8 kernels: {ready['kernels']}; onnxruntime {ort.__version__}, "
          f"torch {torch.__version__}; accuracy on the {n} test digits")
    print("| model | contender | on-CPU µs / batch (median) | ratio to nnc f32 | wall µs / batch (median) | accuracy |")
    print("|---|---|---|---|---|---|")
    for kind, label in (("mlp", "MLP 784-128-128-10"), ("lenet", "LeNet-5")):
        base = float(np.median([t[0] for t in times[kind, "nnc f32"]]))
        for name, _ in contenders:
            cpu = float(np.median([t[0] for t in times[kind, name]]))
            wall = float(np.median([t[1] for t in times[kind, name]]))
            print(f"| {label} | {name} | {cpu:.0f} | {base / cpu:.2f}x | {wall:.0f} | {100 * acc[kind, name]:.2f}% |")
    for kind, label in (("mlp", "MLP"), ("lenet", "LeNet")):
        nnc = float(np.median([t[0] for t in times[kind, "nnc int8"]]))
        ortq = float(np.median([t[0] for t in times[kind, "ORT int8"]]))
        verdict = "met" if nnc <= ortq else "not met"
        print(f"{label}: nnc int8 / ORT int8 speed = {ortq / nnc:.2f}x (target >= 1: {verdict})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the checked-in seed corpus, fuzz/seeds/<target>/, from the
repository's models and data and from the defect cases of issue 22.

Run from anywhere: `python3 fuzz/make_seeds.py`. It rewrites seeds/ whole;
the result is checked in (keep it under 1 MB: `du -sh --apparent-size fuzz/seeds`).
Inputs that crashed a target go in seeds/<target>/ by hand after
`cargo fuzz tmin`, named `crash-<what>`; this script keeps those.
"""

import gzip
import json
import os
import random
import shutil
import struct
import sys

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")
KNOWN = os.path.join(FUZZ, "known-crashes")

# Issue 22's cases that still crash a target (stack overflow, quadratic
# parsing): they go to known-crashes/TARGET/, which `run.sh --known`
# replays, instead of seeds/, from which CI's run starts. When a fix
# lands, delete its name here and rerun this script.
KNOWN_CRASHES: set = set()  # all of issue 22's cases pass since the parser fixes


def write(target, name, data):
    d = os.path.join(KNOWN if name in KNOWN_CRASHES else SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def models():
    """(name, text) of every .nn file of the repository's models and
    diagnostics fixtures."""
    out = []
    for sub in ["examples/models", "tests/models", "compiler/tests/models"]:
        d = os.path.join(ROOT, sub)
        for f in sorted(os.listdir(d)):
            if f.endswith(".nn"):
                out.append((sub.replace("/", "_") + "_" + f, open(os.path.join(d, f)).read()))
    diag = os.path.join(ROOT, "compiler/tests/diagnostics")
    for kind in sorted(os.listdir(diag)):
        k = os.path.join(diag, kind)
        if not os.path.isdir(k):
            continue
        for f in sorted(os.listdir(k)):
            if f.endswith(".nn"):
                out.append(("diag_" + kind + "_" + f, open(os.path.join(k, f)).read()))
    return out


NET = "network N {{\n    input x: f32[batch, 4];\n    label y: class[batch] of 3;\n{body}\n}}\n"


def defects():
    """Issue 22's cases that reach the front end."""
    relu_chain = "".join(f"    h{i + 1} = relu(h{i});\n" for i in range(2500))
    return [
        ("minus_10000", NET.format(body="    h = " + "-" * 10000 + "x;\n    loss mean(h);")),
        ("lr_1e39", NET.format(body="    loss cross_entropy(dense(x, 3), y);")
         + "train N { optimizer: adam(lr: 1e39); }\n"),
        ("times_1e39", NET.format(body="    loss mean(x * 1e39);")),
        ("constant_1e39", NET.format(body="    param w: f32[4, 3] = constant(1e39);\n"
                                     "    loss cross_entropy(x @ w, y);")),
        ("l2_1e39", NET.format(body="    loss cross_entropy(dense(x, 3), y);")
         + "train N { l2: 1e39; }\n"),
        ("eps_1e-50", NET.format(body="    loss cross_entropy(dense(x, 3), y);")
         + "train N { optimizer: adam(eps: 1e-50); }\n"),
        ("batch_u64_max", NET.format(body="    loss cross_entropy(dense(x, 3), y);")
         + "train N { batch: 18446744073709551615; seed: 18446744073709551616; }\n"),
        ("bom", "\ufeff" + NET.format(body="    loss cross_entropy(dense(x, 3), y);")),
        ("empty", ""),
        ("relu_chain_2500", NET.format(body="    h0 = x;\n" + relu_chain + "    loss mean(h2500);")),
        ("plus_chain_8000", NET.format(body="    h = " + " + ".join(["x"] * 8000) + ";\n    loss mean(h);")),
        ("dense_million", "network Big {\n    input x: f32[batch, 1048576];\n"
         "    h = dense(x, 1048576);\n    loss mean(h);\n}\n"),
        ("named_vec", NET.format(body="    loss cross_entropy(dense(x, 3), y);").replace("N {", "Vec {")),
        ("two_networks", NET.format(body="    loss mean(x + x);")
         + NET.format(body="    loss mean(x + x);").replace("N {", "M {")),
        ("nested_brackets", NET.format(body="    h = " + "(" * 200 + "x" + ")" * 200 + ";\n    loss mean(h);")),
        ("class_count_max", "network C {\n    input x: f32[batch, 4];\n"
         "    label y: class[batch] of 99999999999999999999;\n    loss cross_entropy(dense(x, 3), y);\n}\n"),
    ]


def frontend():
    for name, text in models() + [("defect_" + n, t) for n, t in defects()]:
        write("frontend", name, text)
        # The same text through the macro: most models tokenize as Rust.
        if not name.startswith("diag_"):
            write("network_macro", name, text)
    # The macro's own extremes (issue 22: rustc itself crashed on these).
    write("network_macro", "defect_minus_20000",
          NET.format(body="    h = " + "-" * 20000 + "x;\n    loss mean(h);"))
    write("network_macro", "defect_relu_chain_1000",
          NET.format(body="    h0 = x;\n" + "".join(f"    h{i + 1} = relu(h{i});\n" for i in range(1000))
                     + "    loss mean(h1000);"))


def structured():
    # Any bytes make a model; a few fixed random ones start the corpus.
    rng = random.Random(22)
    for i in range(8):
        write("frontend_structured", f"random_{i}", bytes(rng.randrange(256) for _ in range(256)))


# The CSV target reads 4 option bytes first (header, delimiter, mapping
# count, file or text): zeros are auto header, comma, default mapping, text;
# a last byte of 1 reads through a file.
TEXT = b"\0\0\0\0"
FILE = b"\0\0\0\1"


def csv():
    penguins = open(os.path.join(ROOT, "data/penguins/penguins.csv"), "rb").read()
    head = b"".join(penguins.splitlines(keepends=True)[:12])
    write("csv", "penguins_head", TEXT + head)
    write("csv", "penguins_head_file", FILE + head)
    cases = {
        "numeric": b"a,b,label\n1,2,0\n3,4,1\n5.5,-6e-3,2\n",
        "no_header": b"1,2,0\n3,4,1\n",
        "bom_crlf": b"\xef\xbb\xbfa,b,label\r\n1,2,0\r\n3,4,1\r\n",
        "quotes": b'"a","b,c",label\n"1","2",x\n"3","4",y\n',
        "overflow_1e39": b"a,b,label\n1,1e39,0\n",
        "nan_inf": b"a,b,label\nNaN,inf,0\n-inf,1,1\n",
        "empty_field": b"a,b,label\n1,,0\n",
        "huge_int_label": b"a,label\n1,18446744073709551616\n2,4294967296\n",
        "ragged": b"a,b,label\n1,2\n3,4,5,6\n",
        "header_only": b"a,b,label\n",
        "empty": b"",
        "latin1": b"a,b,label\n1,2,\xe9t\xe9\n",
        "negative_label": b"a,label\n1,-1\n",
    }
    for name, body in cases.items():
        write("csv", name, TEXT + body)
    write("csv", "semicolon_file", b"\0\x02\0\1" + b"a;b;label\n1;2;0\n")
    # Mappings: one `numbers` of a range (index 0 of each choice, then the
    # select kind 2 = range 0..2).
    write("csv", "mapping_range", b"\0\0\1\2\0\2" + b"\0" * 4 + b"1,2,3\n4,5,6\n")


def idx_file(type_byte, dims, values):
    fmt = {0x08: "B", 0x09: "b", 0x0B: ">h", 0x0C: ">i", 0x0D: ">f", 0x0E: ">d"}[type_byte]
    head = bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    body = b"".join(struct.pack(fmt, v) for v in values)
    return head + body


def idx():
    images = idx_file(0x08, [3, 2, 2], list(range(0, 240, 20)))
    labels = idx_file(0x08, [3], [0, 9, 4])
    assert len(images) % 4 == 0
    write("idx", "u8_images", b"\0" + images)
    write("idx", "u8_images_parse", b"\1" + images)
    write("idx", "u8_images_gzip_here", b"\2" + images)
    write("idx", "u8_images_gzipped", b"\0" + gzip.compress(images, mtime=0))
    write("idx", "pair", b"\3" + bytes([len(images) // 4]) + images + labels)
    write("idx", "pair_i32_labels", b"\3" + bytes([len(images) // 4]) + images
          + idx_file(0x0C, [3], [1, 70000, 2]))
    write("idx", "i8", b"\1" + idx_file(0x09, [4], [-1, 0, 1, 127]))
    write("idx", "i16", b"\1" + idx_file(0x0B, [2, 2], [-300, 0, 1, 300]))
    write("idx", "f32", b"\1" + idx_file(0x0D, [3], [1.5, float("nan"), float("inf")]))
    write("idx", "f64", b"\1" + idx_file(0x0E, [2], [1e300, -0.0]))
    write("idx", "huge_dims", b"\1" + bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3)
    write("idx", "truncated", b"\1" + images[:-3])
    write("idx", "trailing", b"\1" + images + b"\0")


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def safetensors(tensors, metadata, checksums=True, dtype="F32"):
    """tensors: [(name, shape, [floats])] in order."""
    header = {}
    meta = dict(metadata)
    data = b""
    for name, shape, values in tensors:
        raw = struct.pack("<%df" % len(values), *values)
        if checksums:
            meta["nnc.fnv1a64." + name] = "%016x" % fnv1a(raw)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def checkpoint():
    weight = ("h.weight", [2, 3], [0.1, -0.2, 0.3, 0.4, -0.5, 0.6])
    bias = ("h.bias", [3], [0.0, 0.01, -0.01])
    meta = {
        "nnc.format": "1",
        "nnc.step": "57",
        "nnc.epoch": "2",
        "nnc.model_hash": "00000000deadbeef",
        "nnc.rng": "1,2,3,4",
        "nnc.loader.epoch": "2",
        "nnc.loader.position": "3",
        "nnc.loader.samples": "10",
        "nnc.loader.rng": "5,6,7,8",
        "nnc.optimizer.kind": "adam",
        "nnc.optimizer.step": "57",
        "nnc.optimizer.tensors": "exp_avg,exp_avg_sq",
    }
    moments = [("optimizer.exp_avg", [9], [0.01] * 9), ("optimizer.exp_avg_sq", [9], [0.0001] * 9)]
    write("checkpoint", "training", safetensors([weight, bias] + moments, meta))
    write("checkpoint", "training_no_checksums", safetensors([weight, bias] + moments, meta, checksums=False))
    write("checkpoint", "weights_only", safetensors([weight, bias], {"nnc.model": "N"}))
    nan = ("h.weight", [2, 3], [0.1, float("nan"), 0.3, 0.4, -0.5, 0.6])
    write("checkpoint", "nan_weight", safetensors([nan, bias], meta, checksums=False))
    negative = [moments[0], ("optimizer.exp_avg_sq", [9], [-1.0] * 9)]
    write("checkpoint", "negative_exp_avg_sq", safetensors([weight, bias] + negative, meta))
    good = safetensors([weight, bias], meta)
    flipped = bytearray(good)
    flipped[-5] ^= 0x40
    write("checkpoint", "flipped_byte", bytes(flipped))
    write("checkpoint", "wrong_shape", safetensors([("h.weight", [3, 2], weight[2]), bias], meta))
    write("checkpoint", "f16", safetensors([("h.bias", [6], [0.0] * 3)], {}, checksums=False, dtype="F16"))
    write("checkpoint", "empty", b"")
    write("checkpoint", "huge_header_len", struct.pack("<Q", 2**63) + b"{}")
    write("checkpoint", "bad_meta", safetensors([weight, bias], dict(meta, **{"nnc.step": "-1", "nnc.rng": "1,2"})))


def main():
    # Keep hand-added crash reproducers (crash-*), rewrite the rest.
    keep = {}
    if os.path.isdir(SEEDS):
        for target in os.listdir(SEEDS):
            for f in os.listdir(os.path.join(SEEDS, target)):
                if f.startswith("crash-"):
                    keep[(target, f)] = open(os.path.join(SEEDS, target, f), "rb").read()
        shutil.rmtree(SEEDS)
    if os.path.isdir(KNOWN):
        shutil.rmtree(KNOWN)
    frontend()
    structured()
    csv()
    idx()
    checkpoint()
    for (target, f), data in keep.items():
        write(target, f, data)
    total = sum(os.path.getsize(os.path.join(dp, f))
                for top in [SEEDS, KNOWN] for dp, _, fs in os.walk(top) for f in fs)
    print(f"{SEEDS} and {KNOWN}: {total} bytes")
    if total >= 1 << 20:
        sys.exit("the seed corpus must stay under 1 MB")


if __name__ == "__main__":
    main()

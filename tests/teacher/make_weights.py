"""Writes distill_pair.safetensors: fixed weights for distill_pair.nn's
teacher (safetensors written by hand: a little-endian u64 header length,
the JSON header, then the F32 data). Deterministic; rerun only if the
teacher changes."""
import json
import math
import struct

TENSORS = [
    ("h.weight", [4, 5]),
    ("h.bias", [5]),
    ("n.weight", [5]),
    ("n.bias", [5]),
    ("n.running_mean", [5]),
    ("n.running_var", [5]),
    ("logits.1.weight", [5, 3]),
    ("logits.1.bias", [3]),
]

header, data = {}, b""
for k, (name, shape) in enumerate(TENSORS):
    n = math.prod(shape)
    values = [math.sin(1.7 * i + k) * 0.8 for i in range(n)]
    if name.endswith("running_var"):
        values = [1.0 + 0.5 * abs(v) for v in values]
    start = len(data)
    data += struct.pack(f"<{n}f", *values)
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [start, len(data)]}
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open("distill_pair.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)

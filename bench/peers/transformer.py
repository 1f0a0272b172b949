"""W4: transformer-encoder training, the peers' side (PyTorch eager, torch.compile, JAX).

The model is the one nnc compiles (examples/models/transformer.nn, and
bench/models/transformer_large.nn for W4L), written out by hand:

    x   = embedding(tokens, D) + pos                       # pos: f32[T, D]
    per block:  a = x + attention(layer_norm(x))           # pre-LN, H heads
                x = a + dense(relu(dense(layer_norm(a), F)), D)
    logits = dense(layer_norm(x), V);  loss = mean token cross-entropy

attention = separate query/key/value/output projections with biases, scores
q kᵀ / √(D/H), softmax over the keys (not causal). PyTorch uses
F.scaled_dot_product_attention (its fused CPU kernel, what a PyTorch user
writes today); JAX uses jax.nn.dot_product_attention. Adam(lr=1e-3, eps=1e-8).

The task is nnc's sequence example: reverse T digits (vocabulary 10). The
data are NB fixed batches drawn once from a seeded generator and cycled in
order, as the MNIST workloads cycle the training images.
"""

import numpy as np

from training import jax_dense, jax_train, torch_train

# name -> (batch, sequence, width, heads, blocks, feed-forward width, vocabulary)
CONFIGS = {
    "W4": (64, 16, 64, 4, 2, 256, 10),
    "W4L": (32, 128, 256, 8, 4, 1024, 10),
}
NB = 32


def sequences(workload):
    """NB batches of (tokens, reversed tokens), int64, from seed 0."""
    bs, t, *_ = CONFIGS[workload]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 10, size=(NB, bs, t), dtype=np.int64)
    return [(x[i], x[i, :, ::-1].copy()) for i in range(NB)]


def bench_torch(args, measure, compiled):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    n = args.threads
    torch.set_num_threads(n)
    torch.set_num_interop_threads(n)
    bs, t, d, h, blocks, ff, vocab = CONFIGS[args.workload]
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in sequences(args.workload)]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

        def forward(self, x):
            split = lambda z: z.view(bs, t, h, d // h).transpose(1, 2)
            c = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
            return self.o(c.transpose(1, 2).reshape(bs, t, d))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.att = Attention()
            self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Linear(ff, d))

        def forward(self, x):
            a = x + self.att(self.ln1(x))
            return a + self.ff(self.ln2(a))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(t, d) * 0.02)
            self.blocks = nn.Sequential(*(Block() for _ in range(blocks)))
            self.ln = nn.LayerNorm(d)
            self.out = nn.Linear(d, vocab)

        def forward(self, tokens):
            return self.out(self.ln(self.blocks(self.emb(tokens) + self.pos)))

    def loss_fn(model, x, y):
        return F.cross_entropy(model(x).reshape(-1, vocab), y.reshape(-1))

    return torch_train(args, measure, Encoder, loss_fn, lambda b: data[b], NB, compiled,
                       "eager, F.scaled_dot_product_attention, Adam(foreach)")


def bench_jax(args, measure):
    import jax
    import jax.numpy as jnp
    import optax

    bs, t, d, h, blocks, ff, vocab = CONFIGS[args.workload]
    data = [(jnp.asarray(x, jnp.int32), jnp.asarray(y, jnp.int32)) for x, y in sequences(args.workload)]

    def norm():
        return {"g": jnp.ones((d,), jnp.float32), "b": jnp.zeros((d,), jnp.float32)}

    def init(key):
        keys = iter(jax.random.split(key, 3 + 6 * blocks))
        p = {"emb": jax.random.normal(next(keys), (vocab, d), jnp.float32),
             "pos": 0.02 * jax.random.normal(next(keys), (t, d), jnp.float32),
             "ln": norm(), "out": jax_dense(next(keys), d, vocab), "blocks": []}
        for _ in range(blocks):
            p["blocks"].append({"ln1": norm(), "ln2": norm(),
                                "q": jax_dense(next(keys), d, d), "k": jax_dense(next(keys), d, d),
                                "v": jax_dense(next(keys), d, d), "o": jax_dense(next(keys), d, d),
                                "f1": jax_dense(next(keys), d, ff), "f2": jax_dense(next(keys), ff, d)})
        return p

    def lin(p, x):
        return x @ p["w"] + p["b"]

    def layer_norm(p, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5) * p["g"] + p["b"]

    def attention(p, x):
        split = lambda z: z.reshape(bs, t, h, d // h)  # dot_product_attention takes [B, T, N, H]
        c = jax.nn.dot_product_attention(split(lin(p["q"], x)), split(lin(p["k"], x)), split(lin(p["v"], x)))
        return lin(p["o"], c.reshape(bs, t, d))

    def forward(p, tokens):
        x = p["emb"][tokens] + p["pos"]
        for b in p["blocks"]:
            a = x + attention(b, layer_norm(b["ln1"], x))
            x = a + lin(b["f2"], jax.nn.relu(lin(b["f1"], layer_norm(b["ln2"], a))))
        return lin(p["out"], layer_norm(p["ln"], x))

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean()

    return jax_train(args, measure, init, loss_fn, lambda b: data[b], NB, ", jax.nn.dot_product_attention")

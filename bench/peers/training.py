"""The training-step glue the Python peers share: bench.py (W1-W3) and
transformer.py (W4, W4L) build a model and a loss, and these run its Adam
steps under bench.py's measure protocol and label the result.

Every peer trains with Adam(lr=1e-3, eps=1e-8); batches are indexed in order
and cycled by measure().
"""

import os

LR, EPS = 1e-3, 1e-8


def jax_dense(key, fan_in, fan_out):
    """A dense layer's parameters with PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(key)
    lim = 1.0 / fan_in ** 0.5
    return {"w": jax.random.uniform(k1, (fan_in, fan_out), jnp.float32, -lim, lim),
            "b": jax.random.uniform(k2, (fan_out,), jnp.float32, -lim, lim)}


def jax_train(args, measure, init, loss_fn, batch, nb, notes):
    """Measures jax.jit(value_and_grad + optax.adam) steps of loss_fn(params, x, y)
    on batch(b) -> (x, y), b < nb, from init(PRNGKey(0)); `notes` follows the
    method in the record's notes."""
    import jax
    import optax

    opt = optax.adam(LR, eps=EPS)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {}

    def build():
        state["params"] = init(jax.random.PRNGKey(0))
        state["opt"] = opt.init(state["params"])

        def step(b):
            state["params"], state["opt"], loss = train_step(state["params"], state["opt"], *batch(b))
            return loss

        return step, lambda l: float(l.block_until_ready())

    m = measure(args, build, nb)
    m.update(version=f"jax {jax.__version__}, optax {optax.__version__}", backend="xla-cpu",
             notes=f"jax.jit(value_and_grad + optax.adam){notes}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')}")
    return m


def torch_train(args, measure, make_model, loss_fn, batch, nb, compiled, eager_notes):
    """Measures PyTorch Adam(foreach) steps of loss_fn(model, x, y) on
    batch(b) -> (x, y), b < nb, the model made by make_model() after
    torch.manual_seed(0); eager, or with forward+loss and the optimizer step
    compiled. `eager_notes` describe the eager run."""
    import torch

    notes = eager_notes

    def build():
        nonlocal notes
        torch.manual_seed(0)
        model = make_model()
        opt = torch.optim.Adam(model.parameters(), lr=LR, eps=EPS)

        def loss_of(x, y):
            return loss_fn(model, x, y)

        def opt_step():
            opt.step()

        if compiled:
            # Forward+loss compiled (backward via AOTAutograd), and the Adam
            # step compiled too, as in PyTorch's "compiling the optimizer" recipe.
            loss_of = torch.compile(loss_of)
            opt_step = torch.compile(opt_step)
            notes = "torch.compile(inductor) of forward+loss (AOTAutograd backward) and of opt.step()"

        def step(b):
            opt.zero_grad(set_to_none=True)
            loss = loss_of(*batch(b))
            loss.backward()
            opt_step()
            return loss.detach()

        return step, lambda l: float(l)

    m = measure(args, build, nb)
    m.update(version=f"torch {torch.__version__}", backend=f"cpu ({torch.backends.cpu.get_cpu_capability()})",
             notes=f"{notes}; torch.get_num_threads()={torch.get_num_threads()}")
    return m

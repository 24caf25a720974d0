"""The per-example numpy reference (benchmarks/reference_numpy.py) agrees with the JAX engine.

Both start from the same initial state (built by the engine's ``make_model`` and
extracted with ``nnx.split``) and see the same minibatches; after a few SGD
steps every parameter must agree to float32 tolerance, for the control and
the normalised network. The reference runs in float64, so the comparison
also bounds the engine's float32 rounding. One SET step of the reference must
conserve contacts and prune exactly the weakest ones.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dendnorm_flax.train import RunConfig, _Engine, cost, make_model

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_numpy.py"
_spec = importlib.util.spec_from_file_location("reference_numpy", _PATH)
ref = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("reference_numpy", ref)
_spec.loader.exec_module(ref)

M = 30
STEPS = 6
BATCH = 10


def _data(n=BATCH * STEPS, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
    x[:, rng.random(784) < 0.3] = 0.0  # blank pixels, like the borders of MNIST digits
    y = rng.integers(0, 10, n).astype(np.int32)
    return x, y


def _initial(config: RunConfig, normalise: bool, seed: int = 3):
    model = make_model(config, jax.random.key(seed), normalise=normalise, mask_in_forward=False)
    _, params, fixed = nnx.split(model, nnx.Param, ...)
    return params, fixed


def _arrays(params, fixed) -> dict:
    """The engine's state as the reference's named arrays."""
    h, o = params["hidden"][0], params["out"]
    return {
        "mask": np.asarray(fixed["hidden"][0]["mask"][...]),
        "v": np.asarray(h["v"][...]),
        "b": np.asarray(h["b"][...]),
        "s": float(h["s"][...]),
        "W_out": np.asarray(o["kernel"][...]),
        "b_out": np.asarray(o["bias"][...]),
    }


@pytest.mark.parametrize("normalise", [False, True], ids=["control", "normalised"])
def test_reference_matches_engine_sgd_steps(normalise):
    config = RunConfig(hidden=(M,), trials=1, epochs=1, n_train=BATCH * STEPS, n_test=10)
    params, fixed = _initial(config, normalise)
    start = _arrays(params, fixed)
    net = ref.Net.from_arrays(start, normalise=normalise, dtype=np.float64)
    np.testing.assert_array_equal(net.mask, start["mask"])
    assert np.all(net.v[~net.mask] == 0)

    x, y = _data()
    order = np.random.default_rng(1).permutation(len(x))
    engine = _Engine(config)
    step = jax.jit(engine._sgd_step)
    for i in range(STEPS):
        idx = order[i * BATCH:(i + 1) * BATCH]
        params = step(params, fixed, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
        net.sgd_minibatch(x[idx].astype(np.float64), y[idx], 0.05)

    got = _arrays(params, fixed)
    want = net.arrays()
    for name in ("v", "b", "W_out", "b_out"):
        # Every entry moved: the check is not passed by parameters that stayed put.
        moved = np.abs(want[name] - start[name]).max()
        assert moved > 1e-3, (name, moved)
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-5, err_msg=name)
    np.testing.assert_array_equal(got["v"][~start["mask"]], 0.0)
    if normalise:
        assert abs(want["s"] - 25.0) > 1e-4  # s learned (Eq 7's second line)
        np.testing.assert_allclose(got["s"], want["s"], rtol=1e-6, err_msg="s")
    else:
        assert got["s"] == want["s"] == 25.0


@pytest.mark.parametrize("normalise", [False, True], ids=["control", "normalised"])
def test_reference_cost_and_accuracy_match_engine(normalise):
    config = RunConfig(hidden=(M,), trials=1, epochs=1)
    model = make_model(config, jax.random.key(5), normalise=normalise)
    _, params, fixed = nnx.split(model, nnx.Param, ...)
    net = ref.Net.from_arrays(_arrays(params, fixed), normalise=normalise)
    x, y = _data(200, seed=2)
    logits = model(jnp.asarray(x))
    want_cost = float(cost(logits, jnp.asarray(y)).mean())
    want_acc = float((jnp.argmax(logits, -1) == jnp.asarray(y)).mean())
    got_cost, got_acc = net.evaluate(x.astype(np.float64), y)
    assert got_cost == pytest.approx(want_cost, rel=1e-5)
    assert got_acc == pytest.approx(want_acc, abs=1 / 200 + 1e-12)


def test_reference_eq7_against_finite_differences():
    """The reference's hand-written Eq 7 is the gradient of its own cost (central differences)."""
    rng = np.random.default_rng(0)
    net = ref.Net.init(rng, 8, normalise=True, s_init=3.0)
    x, y = _data(BATCH, seed=4)
    x = x.astype(np.float64)

    def loss(n):
        w = n.weights()
        return np.mean([n.cost_and_hit(xi, int(yi), w)[0] for xi, yi in zip(x, y)])

    lr = 1.0
    stepped = ref.Net.from_arrays(net.arrays(), normalise=True)
    stepped.sgd_minibatch(x, y, lr)
    grad_s = (net.s - stepped.s) / lr
    grad_v = (net.v - stepped.v) / lr
    h = 1e-6
    plus, minus = ref.Net.from_arrays(net.arrays(), normalise=True), ref.Net.from_arrays(net.arrays(), normalise=True)
    plus.s, minus.s = net.s + h, net.s - h
    assert grad_s == pytest.approx((loss(plus) - loss(minus)) / (2 * h), rel=1e-5, abs=1e-9)
    k, i = np.argwhere(net.mask)[3]
    plus, minus = ref.Net.from_arrays(net.arrays(), normalise=True), ref.Net.from_arrays(net.arrays(), normalise=True)
    plus.v[k, i] += h
    minus.v[k, i] -= h
    assert grad_v[k, i] == pytest.approx((loss(plus) - loss(minus)) / (2 * h), rel=1e-5, abs=1e-9)
    assert np.all(grad_v[~net.mask] == 0)


@pytest.mark.parametrize("normalise", [False, True], ids=["control", "normalised"])
def test_reference_set_conserves_contacts(normalise):
    rng = np.random.default_rng(7)
    net = ref.Net.init(rng, M, normalise=normalise)
    before_mask = net.mask.copy()
    w_before = np.abs(net.weights())
    contacts = int(before_mask.sum())
    assert contacts == round(0.2 * 784 * M)
    k = net.set_rewire(rng, zeta=0.15)
    assert k == round(0.15 * contacts)
    assert int(net.mask.sum()) == contacts  # conserved
    np.testing.assert_array_equal(net.n, net.mask.sum(0))
    assert np.all(net.v[~net.mask] == 0)
    # The survivors of the old mask are exactly the contacts that were not among the k weakest.
    order = np.argsort(np.where(before_mask, w_before, np.inf).reshape(-1), kind="stable")
    weakest = np.zeros(before_mask.size, bool)
    weakest[order[:k]] = True
    survivors = before_mask.reshape(-1) & ~weakest
    assert np.all(net.mask.reshape(-1)[survivors])
    # Exactly k contacts are new (a just-removed position may come back).
    new = net.mask.reshape(-1) & ~survivors
    assert int(new.sum()) == k

"""The vectorised trainer: masks, pairing, vectorisation, determinism, errors, learning."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dendnorm_flax import train as tr
from dendnorm_flax.train import DivergenceError, RunConfig


def _synthetic(n_train=200, n_test=100, seed=0):
    """A learnable toy problem: the label is the brightest of ten pixel blocks."""
    rng = np.random.default_rng(seed)

    def make(n):
        x = rng.random((n, 784)).astype(np.float32) * 0.5
        y = rng.integers(0, 10, n).astype(np.int32)
        for i, label in enumerate(y):
            x[i, label * 78:(label + 1) * 78] += 0.5
        return x, y

    return (*make(n_train), *make(n_test))


SMALL = dict(hidden=(20,), epochs=2, trials=2, n_train=200, n_test=100)


def test_result_shapes_and_pairing():
    cfg = RunConfig(**SMALL, snapshot_epochs=(0, 2))
    r = tr.train(cfg, data=_synthetic(), progress=False)
    assert r.train_cost.shape == r.test_accuracy.shape == (2, 2, 2)
    assert r.conditions == ("control", "normalised")
    np.testing.assert_array_equal(r.trial_seeds, [0, 1])
    assert r.snapshots["efferent_counts"].shape == (2, 2, 2, 784)
    assert r.snapshots["afferent_counts"].shape == (2, 2, 2, 20)
    assert r.snapshots["weights"].shape == (2, 2, 2, round(0.2 * 784 * 20))
    assert r.snapshots["mean_input"].shape == (2, 2, 2, 20)
    # Epoch 0: both conditions of a trial share the same initial mask (paired design)...
    eff = r.snapshots["efferent_counts"]
    np.testing.assert_array_equal(eff[0, :, 0], eff[1, :, 0])
    # ...but trials differ in every seed.
    assert not np.array_equal(eff[0, 0, 0], eff[0, 1, 0])
    # Contacts are conserved through SET.
    assert np.all(r.snapshots["afferent_counts"].sum(-1) == round(0.2 * 784 * 20))
    assert np.all(np.isfinite(r.train_cost)) and np.all((r.test_accuracy >= 0) & (r.test_accuracy <= 1))
    final = r.final()
    assert set(final) == {"control", "normalised"}
    assert final["normalised"]["test_accuracy_mean"] == pytest.approx(r.test_accuracy[1, :, -1].mean())


def test_same_seed_same_numbers_other_seed_other_numbers():
    data = _synthetic()
    a = tr.train(RunConfig(**SMALL), data=data, progress=False)
    b = tr.train(RunConfig(**SMALL), data=data, progress=False)
    c = tr.train(RunConfig(**SMALL, seed=1), data=data, progress=False)
    np.testing.assert_array_equal(a.train_cost, b.train_cost)
    np.testing.assert_array_equal(a.test_accuracy, b.test_accuracy)
    assert not np.array_equal(a.train_cost, c.train_cost)


def test_vectorised_trials_equal_trials_run_one_at_a_time():
    data = _synthetic()
    together = tr.train(RunConfig(**{**SMALL, "trials": 3}), data=data, progress=False)
    for t in range(3):
        alone = tr.train(RunConfig(**{**SMALL, "trials": 1, "first_trial": t}), data=data, progress=False)
        np.testing.assert_allclose(alone.train_cost[:, 0], together.train_cost[:, t], rtol=1e-5)
        np.testing.assert_allclose(alone.test_accuracy[:, 0], together.test_accuracy[:, t], atol=1e-6)


def test_sgd_keeps_the_mask_and_zero_off_mask():
    cfg = RunConfig(**SMALL)
    x_tr, y_tr, _, _ = (jnp.asarray(a) for a in _synthetic())
    engine = tr._Engine(cfg)
    params, fixed = engine.init_state(np.arange(2))
    keys = engine.keys(np.arange(2), 1, 1)
    new_params = jax.jit(engine.train_epoch)(params, fixed, keys, x_tr, y_tr)
    mask = np.asarray(fixed["hidden"][0]["mask"][...])
    v_old = np.asarray(params["hidden"][0]["v"][...])
    v_new = np.asarray(new_params["hidden"][0]["v"][...])
    assert np.all(v_new[~mask] == 0)
    assert np.mean(v_new[mask] != v_old[mask]) > 0.5  # training did change the contacts
    # s is trained in the normalised condition only (it has no effect on the control).
    s = np.asarray(new_params["hidden"][0]["s"][...])
    assert np.all(s[:, 0] == 25.0) and np.all(s[:, 1] != 25.0)


def test_simple_and_fast_formulation_agree():
    """The engine masks the update instead of the forward pass: same numbers."""
    cfg = RunConfig(**SMALL)
    x = jnp.asarray(_synthetic()[0][:10])
    y = jnp.asarray(_synthetic()[1][:10])
    key = jax.random.key(3)
    for normalise in (False, True):
        simple = tr.make_model(cfg, key, normalise=normalise, mask_in_forward=True)
        fast = tr.make_model(cfg, key, normalise=normalise, mask_in_forward=False)
        np.testing.assert_array_equal(simple(x), fast(x))
        engine = tr._Engine(cfg)
        _, p, f = nnx.split(fast, nnx.Param, ...)
        p_fast = engine._sgd_step(p, f, x, y)
        gd, p, f = nnx.split(simple, nnx.Param, ...)
        g = jax.grad(lambda p: tr.cost(nnx.merge(gd, p, f)(x), y).mean())(p)
        p_simple = jax.tree.map(lambda a, b: a - cfg.lr * b, p, g)
        for a, b in zip(jax.tree.leaves(p_fast), jax.tree.leaves(p_simple)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(hidden=(30,)),
        dict(hidden=(20, 15)),
        dict(hidden=(20, 15, 12), activation="threshold_linear", s_init=2.0),
        dict(hidden=(20, 15), shared_s=False),
    ],
    ids=["1-layer", "2-layer", "3-layer-threshold-linear", "per-layer-s"],
)
@pytest.mark.parametrize("trial_loop", ["vmap", "map"])
def test_packed_epoch_equals_simple_epoch(kwargs, trial_loop):
    """The packed first layer (both conditions in one V) trains exactly like vmap of one network,
    with its trials side by side (vmap) or one after another (lax.map)."""
    x_tr, y_tr, _, _ = (jnp.asarray(a) for a in _synthetic())
    cfg = RunConfig(trials=3, epochs=1, n_train=200, n_test=100, **kwargs)
    engine = tr._Engine(cfg, trial_loop=trial_loop)
    assert engine.trial_loop(3, 10**9) == trial_loop
    ids = np.arange(3)
    params, fixed = engine.init_state(ids)
    keys = engine.keys(ids, 1, 1)
    simple = jax.jit(engine.train_epoch_simple)(params, fixed, keys, x_tr, y_tr)
    packed = jax.jit(engine.train_epoch_packed)(params, fixed, keys, x_tr, y_tr)
    flat_s, flat_p = dict(nnx.to_flat_state(simple)), dict(nnx.to_flat_state(packed))
    assert flat_s.keys() == flat_p.keys()
    start = dict(nnx.to_flat_state(params))
    for path, var in flat_s.items():
        a, b = np.asarray(var[...]), np.asarray(flat_p[path][...])
        assert a.shape == b.shape, path
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6, err_msg=str(path))
        if path[-1] in ("v", "kernel"):  # the epoch did train these (the check is not vacuous)
            assert np.abs(a - np.asarray(start[path][...])).max() > 1e-3, path


def test_trial_loop_rule():
    """On the CPU, trials whose packed weights are large run one at a time (M = 300), others side by side."""
    engine = tr._Engine(RunConfig(**SMALL))
    limit = tr._Engine.MAP_TRIALS_ABOVE_BYTES
    per_trial_m300 = 784 * 2 * 300 * 4  # packed V of one trial at M = 300, both conditions, float32
    per_trial_m100 = 784 * 2 * 100 * 4
    assert jax.default_backend() == "cpu"
    assert per_trial_m300 > limit and engine.trial_loop(5, per_trial_m300) == "map"
    assert per_trial_m100 < limit and engine.trial_loop(10, per_trial_m100) == "vmap"
    assert engine.trial_loop(1, 10 * limit) == "vmap"  # a single trial has nothing to loop over
    with pytest.raises(ValueError, match="trial_loop must be"):
        tr._Engine(RunConfig(**SMALL), trial_loop="scan")


@pytest.mark.parametrize("workers", [1, 2])
def test_divergence_is_an_error_naming_condition_trial_epoch(workers):
    x_tr, y_tr, x_te, y_te = _synthetic()
    x_tr = x_tr.copy()
    x_tr[5, 0] = np.nan  # every trial meets it in epoch 1; trial 0 is the one to name
    with pytest.raises(DivergenceError, match=r"condition 'control', trial 0, epoch 1") as info:
        tr.train(RunConfig(**SMALL), data=(x_tr, y_tr, x_te, y_te), progress=False, workers=workers)
    assert (info.value.condition, info.value.trial, info.value.epoch) == ("control", 0, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(eps=0.0), "eps"),
        (dict(eps=1.2), "eps"),
        (dict(zeta=1.0), "zeta"),
        (dict(zeta=-0.5), "zeta"),
        (dict(hidden=(0,)), ">= 1"),
        (dict(hidden=()), "non-empty"),
        (dict(activation="relu6"), "unknown activation"),
        (dict(epochs=0), "epochs"),
        (dict(trials=0), "trials"),
        (dict(batch_size=7), "does not divide"),
        (dict(dataset="cifar"), "unknown dataset"),
        (dict(architecture="rnn"), "unknown architecture"),
        (dict(snapshot_epochs=(5,)), "snapshot_epochs"),
        (dict(n_train=70000), "n_train"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{**SMALL, **kwargs}).validate()


def test_bad_data_shape():
    x_tr, y_tr, x_te, y_te = _synthetic()
    with pytest.raises(ValueError, match=r"\[n, 784\]"):
        tr.train(RunConfig(**SMALL), data=(x_tr[:, :100], y_tr, x_te, y_te), progress=False)
    # Data and config must agree on the number of images: nothing is silently cut or repeated.
    with pytest.raises(ValueError, match="n_train=200"):
        tr.train(RunConfig(**{**SMALL, "n_train": None}), data=(x_tr, y_tr, x_te, y_te), progress=False)
    with pytest.raises(ValueError, match="n_test=100"):
        tr.train(RunConfig(**{**SMALL, "n_test": None}), data=(x_tr, y_tr, x_te, y_te), progress=False)


def test_deeper_and_conv_and_threshold_linear_run():
    data = _synthetic(100, 50)
    base = dict(epochs=1, trials=1, n_train=100, n_test=50)
    for cfg in (
        RunConfig(hidden=(16, 16, 16), **base),
        RunConfig(hidden=(16,), activation="threshold_linear", s_init=1.0, init_std=0.1, **base),
        RunConfig(architecture="conv", hidden=(16,), **base),
    ):
        r = tr.train(cfg, data=data, progress=False)
        assert r.train_cost.shape == (2, 1, 1) and np.all(np.isfinite(r.train_cost))


_SHARDED_SCRIPT = """
import json, sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from test_train import _synthetic, SMALL
from dendnorm_flax import train as tr
assert len(jax.local_devices()) == 2, jax.local_devices()
r = tr.train(tr.RunConfig(**SMALL), data=_synthetic(), progress=False)
print(json.dumps({{"cost": r.train_cost.tolist(), "acc": r.test_accuracy.tolist()}}))
"""


def test_trials_sharded_over_two_devices_match_unsharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    script = _SHARDED_SCRIPT.format(tests=os.path.dirname(__file__))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    sharded = json.loads(out.stdout.strip().splitlines()[-1])
    plain = tr.train(RunConfig(**SMALL), data=_synthetic(), progress=False)
    np.testing.assert_allclose(sharded["cost"], plain.train_cost, rtol=1e-5)
    np.testing.assert_allclose(sharded["acc"], plain.test_accuracy, atol=1e-6)


@pytest.mark.slow
def test_learns_mnist_above_chance_in_one_epoch():
    from dendnorm_flax import data

    x_tr, y_tr = data.load_inputs("mnist", "train")
    x_te, y_te = data.load_inputs("mnist", "test")
    cfg = RunConfig(dataset="mnist", hidden=(100,), epochs=1, trials=1, n_train=2000, n_test=2000)
    r = tr.train(cfg, data=(x_tr[:2000], y_tr[:2000], x_te[:2000], y_te[:2000]), progress=False)
    acc = r.test_accuracy[1, 0, -1]  # normalised
    assert acc > 0.2, f"normalised M=100 reached only {acc:.3f} after one epoch on 2000 images"

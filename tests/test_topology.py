"""Erdos-Renyi masks and SET rewiring: contacts conserved, weakest removed, new weights N(0, 1)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dendnorm_flax import topology


def _layer(key, n_in=60, n_out=40, eps=0.2):
    k_mask, k_v, k_w = jax.random.split(key, 3)
    mask = topology.erdos_renyi_mask(k_mask, n_in, n_out, eps)
    v = jnp.where(mask, jax.random.normal(k_v, mask.shape), 0.0)
    w = jnp.where(mask, jax.random.normal(k_w, mask.shape), 0.0)
    return mask, v, w


def _expected_removed(mask, w, k):
    flat_mask = np.asarray(mask).reshape(-1)
    score = np.where(flat_mask, np.abs(np.asarray(w)).reshape(-1), np.inf)
    order = np.argsort(score, kind="stable")
    removed = np.zeros_like(flat_mask)
    removed[order[:k]] = True
    return removed.reshape(mask.shape)


@pytest.mark.parametrize("eps", [0.05, 0.2, 1.0])
def test_erdos_renyi_exact_count(eps):
    for seed in range(3):
        mask = topology.erdos_renyi_mask(jax.random.key(seed), 784, 30, eps)
        assert mask.dtype == jnp.bool_
        assert int(mask.sum()) == round(eps * 784 * 30)


def test_erdos_renyi_is_uniform():
    # Every position is equally likely: per-input counts over many masks are flat.
    masks = jax.vmap(lambda k: topology.erdos_renyi_mask(k, 50, 20, 0.2))(
        jax.random.split(jax.random.key(0), 400))
    freq = np.asarray(masks.mean(axis=0))
    assert abs(freq.mean() - 0.2) < 1e-6
    assert freq.std() < 0.05  # binomial sd at 400 draws is 0.02


@pytest.mark.parametrize("zeta", [0.0, 0.15, 0.5])
def test_set_conserves_contacts_and_removes_the_weakest(zeta):
    for seed in range(4):
        mask, v, w = _layer(jax.random.key(seed))
        n = int(mask.sum())
        k = topology.n_rewired(n, zeta)
        assert k == round(zeta * n)
        new_mask, new_v = topology.set_rewire(jax.random.key(100 + seed), mask, v, w, n_remove=k)
        new_mask, new_v = np.asarray(new_mask), np.asarray(new_v)
        old = np.asarray(mask)
        assert new_mask.sum() == n  # conservation of contacts
        removed = _expected_removed(mask, w, k)
        assert removed.sum() == k
        survivors = old & ~removed
        # Every contact not among the k weakest is kept, with its weight unchanged.
        assert np.all(new_mask[survivors])
        np.testing.assert_array_equal(new_v[survivors], np.asarray(v)[survivors])
        # The removed are the weakest: none is stronger than any survivor.
        if k:
            absw = np.abs(np.asarray(w))
            assert absw[removed].max() <= absw[survivors].min()
        # Added contacts sit where the pruned mask was empty; exactly k of them.
        added = new_mask & ~survivors
        assert added.sum() == k
        assert np.all(~survivors[added])
        # Raw weights stay zero off the mask.
        assert np.all(new_v[~new_mask] == 0)


def test_set_ties_are_handled():
    mask, v, _ = _layer(jax.random.key(0))
    # Every weight ties at |w| = 1 except a few clearly weaker ones.
    w = jnp.where(mask, 1.0, 0.0)
    contacts = np.flatnonzero(np.asarray(mask))
    weak = contacts[[3, 10, 50]]
    w = w.reshape(-1).at[weak].set(0.5).reshape(mask.shape)
    k = 20
    new_mask, _ = topology.set_rewire(jax.random.key(1), mask, v, w, n_remove=k)
    new_mask = np.asarray(new_mask)
    assert new_mask.sum() == mask.sum()
    removed = _expected_removed(mask, w, k)
    # The three weakest are among the removed; the rest of the k are ties at 1.
    assert np.all(removed.reshape(-1)[weak])
    survivors = np.asarray(mask) & ~removed
    assert np.all(new_mask[survivors])


def test_set_new_weights_are_standard_normal():
    mask = topology.erdos_renyi_mask(jax.random.key(0), 784, 300, 0.2)
    v = jnp.where(mask, 5.0, 0.0)  # a value N(0, 1) never draws exactly
    w = jnp.where(mask, jax.random.normal(jax.random.key(1), mask.shape), 0.0)
    k = topology.n_rewired(int(mask.sum()), 0.5)
    new_mask, new_v = topology.set_rewire(jax.random.key(2), mask, v, w, n_remove=k)
    fresh = np.asarray(new_v)[np.asarray(new_mask) & (np.asarray(new_v) != 5.0)]
    assert fresh.size == k
    # k = 23,520 draws: the sd of the mean is 0.0065, of the sd about 0.0046.
    assert abs(fresh.mean()) < 0.03
    assert abs(fresh.std() - 1.0) < 0.03
    # Symmetric, with normal tails: 4.6 % beyond 2 sd.
    assert 0.035 < np.mean(np.abs(fresh) > 2) < 0.057


def test_set_added_positions_spread_over_the_layer():
    mask, v, w = _layer(jax.random.key(5), 100, 100, 0.2)
    k = topology.n_rewired(int(mask.sum()), 0.5)
    new_mask, _ = topology.set_rewire(jax.random.key(6), mask, v, w, n_remove=k)
    added = np.asarray(new_mask) & ~np.asarray(mask)
    assert (added.sum(axis=0) > 0).mean() > 0.9 and (added.sum(axis=1) > 0).mean() > 0.9


def test_set_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(0), 3)
    masks, vs, ws = jax.vmap(_layer)(keys)
    k = topology.n_rewired(int(masks[0].sum()), 0.15)
    rewire = jax.jit(jax.vmap(lambda key, m, v, w: topology.set_rewire(key, m, v, w, n_remove=k)))
    new_masks, _ = rewire(keys, masks, vs, ws)
    np.testing.assert_array_equal(new_masks.sum(axis=(1, 2)), masks.sum(axis=(1, 2)))
    one, _ = topology.set_rewire(keys[1], masks[1], vs[1], ws[1], n_remove=k)
    np.testing.assert_array_equal(new_masks[1], one)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan"), "0.2"])
def test_bad_eps(bad):
    with pytest.raises(ValueError, match="eps"):
        topology.erdos_renyi_mask(jax.random.key(0), 10, 10, bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2.0, float("nan")])
def test_bad_zeta(bad):
    with pytest.raises(ValueError, match="zeta"):
        topology.n_rewired(100, bad)


def test_eps_too_small_for_layer():
    with pytest.raises(ValueError, match="no contact"):
        topology.n_contacts(2, 2, 0.01)

"""Sparse topology: Erdos-Renyi masks and SET rewiring (Mocanu et al. 2018).

Pure functions of arrays and keys, usable under ``jit`` and ``vmap``. The
numbers of contacts and of rewired contacts are Python ints (static shapes):
SET conserves the number of contacts, so it is fixed by ``eps`` and the layer
size for the whole run.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "check_eps",
    "check_zeta",
    "check_layer_size",
    "n_contacts",
    "n_rewired",
    "erdos_renyi_mask",
    "set_rewire",
]


def check_eps(eps: float) -> float:
    """Raise a clear error unless ``0 < eps <= 1``."""
    if not isinstance(eps, (int, float)) or not (0.0 < float(eps) <= 1.0) or math.isnan(eps):
        raise ValueError(f"eps (connection probability) must be in (0, 1], got {eps!r}")
    return float(eps)


def check_zeta(zeta: float) -> float:
    """Raise a clear error unless ``0 <= zeta < 1``."""
    if not isinstance(zeta, (int, float)) or not (0.0 <= float(zeta) < 1.0) or math.isnan(zeta):
        raise ValueError(f"zeta (SET excision fraction) must be in [0, 1), got {zeta!r}")
    return float(zeta)


def check_layer_size(n: int, name: str = "layer size") -> int:
    """Raise a clear error unless ``n`` is an int >= 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    return n


def n_contacts(n_in: int, n_out: int, eps: float) -> int:
    """Contacts of an Erdos-Renyi layer: ``round(eps * n_in * n_out)`` (at least 1)."""
    check_eps(eps)
    n = int(round(eps * n_in * n_out))
    if n < 1:
        raise ValueError(
            f"eps={eps} gives no contact in a {n_in}x{n_out} layer; raise eps or the layer size"
        )
    return n


def n_rewired(contacts: int, zeta: float) -> int:
    """Contacts SET removes (and adds back) per epoch: ``round(zeta * contacts)``."""
    check_zeta(zeta)
    return int(round(zeta * contacts))


def erdos_renyi_mask(key: jax.Array, n_in: int, n_out: int, eps: float) -> jax.Array:
    """Boolean mask ``[n_in, n_out]`` with exactly ``round(eps n_in n_out)`` contacts.

    The contacts are a uniformly random subset of all ``n_in * n_out``
    positions (an Erdos-Renyi graph conditioned on its number of edges).

    Example:
      >>> m = erdos_renyi_mask(jax.random.key(0), 784, 100, 0.2)
      >>> int(m.sum())
      15680
    """
    k = n_contacts(n_in, n_out, eps)
    size = n_in * n_out
    chosen = jax.random.permutation(key, size)[:k]
    return jnp.zeros((size,), bool).at[chosen].set(True).reshape(n_in, n_out)


def set_rewire(
    key: jax.Array,
    mask: jax.Array,
    v: jax.Array,
    w: jax.Array,
    *,
    n_remove: int,
    init_std: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """One SET step on one layer: prune the weakest contacts, regrow as many at random.

    Removes the ``n_remove`` contacts with the smallest ``|w|`` (the effective
    weights; ties broken by the lower flat index), then adds ``n_remove``
    contacts at uniformly random positions that are empty after the removal
    (so a just-removed position may come back), with new raw weights
    ``v ~ N(0, init_std^2)``. The number of contacts is conserved.

    Args:
      key: PRNG key.
      mask: bool ``[n_in, n_out]``.
      v: raw weights, zero off the mask.
      w: effective weights (``v`` for the control, ``s v / n`` when normalised).
      n_remove: ``round(zeta * contacts)`` (static).

    Returns:
      ``(mask, v)`` after rewiring; ``v`` is zero off the new mask.
    """
    if n_remove == 0:
        return mask, jnp.where(mask, v, 0.0)
    shape = mask.shape
    flat_mask = mask.reshape(-1)
    score = jnp.where(flat_mask, jnp.abs(w).reshape(-1), jnp.inf)
    # top_k of -|w| picks the n_remove smallest; among equal values it takes
    # the lower index first (like a stable sort) and is ~5x faster than argsort.
    _, weakest = jax.lax.top_k(-score, n_remove)
    pruned = flat_mask.at[weakest].set(False)

    k_pos, k_val = jax.random.split(key)
    # Uniform random priorities on the empty positions: the top n_remove of
    # them are a uniform sample without replacement.
    priority = jnp.where(pruned, -1.0, jax.random.uniform(k_pos, pruned.shape))
    _, grown = jax.lax.top_k(priority, n_remove)
    new_mask = pruned.at[grown].set(True)

    flat_v = jnp.where(pruned, v.reshape(-1), 0.0)
    new_v = init_std * jax.random.normal(k_val, (n_remove,), v.dtype)
    flat_v = flat_v.at[grown].set(new_v)
    return new_mask.reshape(shape), flat_v.reshape(shape)

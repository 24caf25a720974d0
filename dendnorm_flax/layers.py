"""Sparse dense layer with optional dendritic (L0) normalisation.

One layer, two rules for its effective weights ``w`` (Bird & Cuntz, Eq 6):

* control:     ``w_ki = v_ki``
* normalised:  ``w_ki = s * v_ki / n_i`` with ``n_i = ||v_i||_0`` the number
  of afferent contacts of neuron ``i`` (its mask column count).

``s`` is one trainable scalar; a network passes the *same* :class:`flax.nnx.Param`
to all its sparse layers (one class of neurons), so the gradient of the cost
with respect to ``s`` sums over every neuron of every sparse layer (Eq 7).

The rule is stored as data (a 0-d boolean :class:`Rule` variable), not as a
Python flag, so that the control and the normalised network of a trial are the
same program with a different leaf and can be ``vmap``-ed together.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from dendnorm_flax import topology

__all__ = ["Mask", "AfferentCount", "Rule", "SparseDense"]


class Mask(nnx.Variable):
    """Connectivity mask ``[n_in, n_out]`` (bool); not trained, changed only by SET."""


class AfferentCount(nnx.Variable):
    """``n_i``: contacts received by each output neuron ``[n_out]`` (int32), kept equal to ``mask.sum(0)``."""


class Rule(nnx.Variable):
    """0-d bool: ``True`` for dendritic normalisation (Eq 6), ``False`` for the control ``w = v``."""


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _init_arrays(k_mask, k_v, k_b, n_in, n_out, eps, init_std):
    """Mask, n_i, raw weights (zero off the mask) and biases; one compiled call per shape."""
    mask = topology.erdos_renyi_mask(k_mask, n_in, n_out, eps)
    v = init_std * jax.random.normal(k_v, (n_in, n_out), jnp.float32)
    b = init_std * jax.random.normal(k_b, (n_out,), jnp.float32)
    return mask, mask.sum(axis=0, dtype=jnp.int32), jnp.where(mask, v, 0.0), b


class SparseDense(nnx.Module):
    """A sparse fully-connected layer ``z = b + x @ w`` (Eq 2), ``w`` masked.

    The raw weights ``v`` are kept exactly zero off the mask (initialisation,
    SGD and SET all preserve this), so ``x @ v`` equals ``x @ (mask * v)``.

    Args:
      n_in, n_out: numbers of presynaptic and postsynaptic neurons (>= 1).
      eps: SET connection probability in (0, 1]; the mask is an Erdos-Renyi
        graph with exactly ``round(eps * n_in * n_out)`` contacts.
      normalise: use ``w = s v / n`` (True) or ``w = v`` (False).
      s: the shared magnitude parameter; if None the layer makes its own,
        initialised to ``s_init``.
      s_init: initial ``s`` (the authors' scripts use 25).
      init_std: standard deviation of the N(0, std^2) raw weights and biases.
      mask_in_forward: multiply ``v`` by the mask in the forward pass (the
        simple formulation; gradients off the mask are then exactly zero).
        The trainer sets it False and masks the update instead, which is the
        same arithmetic and saves one pass over ``v`` per step.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Example:
      >>> from flax import nnx
      >>> layer = SparseDense(784, 30, eps=0.2, normalise=True, rngs=nnx.Rngs(0))
      >>> int(layer.mask[...].sum())
      4704
      >>> layer(jnp.ones((2, 784))).shape
      (2, 30)
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        eps: float,
        normalise: bool,
        s: nnx.Param | None = None,
        s_init: float = 25.0,
        init_std: float = 1.0,
        mask_in_forward: bool = True,
        rngs: nnx.Rngs,
    ):
        topology.check_layer_size(n_in, "n_in")
        topology.check_layer_size(n_out, "n_out")
        #: Number of contacts (static: SET conserves it).
        self.n_contacts = topology.n_contacts(n_in, n_out, eps)
        mask, n_aff, v, b = _init_arrays(rngs.params(), rngs.params(), rngs.params(),
                                         n_in, n_out, float(eps), float(init_std))
        self.mask = Mask(mask)
        self.n_aff = AfferentCount(n_aff)
        self.v = nnx.Param(v)
        self.b = nnx.Param(b)
        self.s = s if s is not None else nnx.Param(jnp.asarray(s_init, jnp.float32))
        self.normalise = Rule(jnp.asarray(normalise, bool))
        self.mask_in_forward = mask_in_forward

    def scale(self) -> jax.Array:
        """Per-neuron factor ``s / n_i`` (normalised) or 1 (control), shape ``[n_out]``.

        A neuron with no contacts (``n_i = 0``) gets a finite factor ``s``;
        its column of ``v`` is zero, so its weights are 0, never NaN.
        """
        n = jnp.maximum(self.n_aff[...], 1).astype(jnp.float32)
        return jnp.where(self.normalise[...], self.s[...] / n, jnp.ones_like(n))

    def weights(self) -> jax.Array:
        """Effective weights ``w`` ``[n_in, n_out]`` (Eq 6 or ``w = v``), zero off the mask."""
        w = jnp.where(self.mask[...], self.v[...], 0.0)
        return w * jnp.broadcast_to(self.scale(), w.shape)

    def project(self, x: jax.Array) -> jax.Array:
        """``u = x @ v`` (raw weights, masked if ``mask_in_forward``) for ``x`` ``[..., n_in]``."""
        v = self.v[...]
        if self.mask_in_forward:
            v = jnp.where(self.mask[...], v, 0.0)
        return x @ v

    def from_projection(self, u: jax.Array) -> jax.Array:
        """Eq 2 from ``u = x @ v``: ``z = u * (s / n) + b`` (or ``u + b`` for the control).

        Split from :meth:`project` so that a trainer can compute ``u`` for
        several networks in one matmul (``dendnorm_flax.train`` packs the
        control and normalised ``v`` of a trial side by side).
        """
        return u * jnp.broadcast_to(self.scale(), u.shape) + jnp.broadcast_to(self.b[...], u.shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Weighted input ``z = b + x @ w`` (Eq 2) for ``x`` of shape ``[..., n_in]``.

        Computed as ``(x @ v) * (s / n) + b``: the scale is applied per output
        neuron after the matmul, which equals ``x @ w`` up to rounding.
        """
        return self.from_projection(self.project(x))

    def set_mask(self, mask: jax.Array, v: jax.Array) -> None:
        """Install a new mask and raw weights (after SET) and recompute ``n_i``."""
        if mask.shape != self.mask[...].shape or v.shape != self.v[...].shape:
            raise ValueError(
                f"set_mask: expected mask and v of shape {self.mask[...].shape}, "
                f"got {mask.shape} and {v.shape}"
            )
        self.mask[...] = mask
        self.v[...] = jnp.where(mask, v, 0.0)
        self.n_aff[...] = mask.sum(axis=0, dtype=jnp.int32)

"""The paper's networks: sparse MLPs (Figs 1-3) and a small conv net (Fig 3D).

Every network returns output *logits*; the softmax (Eq 3) and the cost
(Eq 4) are applied by :func:`dendnorm_flax.train.cost`. The output layer is
dense and never normalised. All sparse layers of a network share one ``s``
unless ``shared_s=False``.

Initialisation follows the authors' scripts: raw weights ``v``, biases and
output weights ~ N(0, 1), ``s = 25``. The conv layer (Keras in the paper)
uses Keras' defaults: Glorot-uniform kernel, zero bias.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from dendnorm_flax import topology
from dendnorm_flax.layers import SparseDense

__all__ = ["ACTIVATIONS", "activation_fn", "SparseMLP", "SparseConvNet"]


def threshold_linear(z: jax.Array) -> jax.Array:
    """Eq 5: ``tau(z) = max(0, z)``."""
    return jnp.maximum(z, 0.0)


#: Hidden-unit activations by name: sigmoid (Eq 1) and threshold-linear (Eq 5).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "threshold_linear": threshold_linear,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """Look up a hidden activation by name, with a clear error for unknown names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def _output_layer(n_in: int, n_out: int, init_std: float, rngs: nnx.Rngs) -> nnx.Linear:
    init = nnx.initializers.normal(stddev=init_std)
    return nnx.Linear(n_in, n_out, kernel_init=init, bias_init=init, rngs=rngs)


class SparseMLP(nnx.Module):
    """``n_in - hidden[0] - ... - hidden[-1] - n_out``: sparse hidden layers, dense softmax output.

    Args:
      n_in: input size (784 for 28x28 images).
      hidden: sizes of 1 to 3 sparse hidden layers, e.g. ``(100,)``.
      n_out: number of classes.
      activation: ``"sigmoid"`` (Eq 1) or ``"threshold_linear"`` (Eq 5).
      eps: SET connection probability of every sparse layer.
      normalise: dendritic normalisation (Eq 6) or the control ``w = v``.
      shared_s: one ``s`` for all sparse layers (default) or one per layer.
      s_init, init_std, mask_in_forward: see :class:`SparseDense`.

    Example:
      >>> net = SparseMLP(784, (100,), 10, normalise=True, rngs=nnx.Rngs(0))
      >>> net(jnp.zeros((5, 784))).shape
      (5, 10)
    """

    def __init__(
        self,
        n_in: int = 784,
        hidden: tuple[int, ...] = (100,),
        n_out: int = 10,
        *,
        activation: str = "sigmoid",
        eps: float = 0.2,
        normalise: bool = True,
        shared_s: bool = True,
        s_init: float = 25.0,
        init_std: float = 1.0,
        mask_in_forward: bool = True,
        rngs: nnx.Rngs,
    ):
        hidden = tuple(hidden)
        if not 1 <= len(hidden) <= 3:
            raise ValueError(f"hidden must list 1 to 3 layer sizes, got {hidden!r}")
        for n in (n_in, *hidden, n_out):
            topology.check_layer_size(n)
        topology.check_eps(eps)
        self.activation = activation
        self._act = activation_fn(activation)
        s = nnx.Param(jnp.asarray(s_init, jnp.float32)) if shared_s else None
        sizes = (n_in, *hidden)
        self.hidden = nnx.List(
            [
                SparseDense(
                    a, b, eps=eps, normalise=normalise, s=s, s_init=s_init,
                    init_std=init_std, mask_in_forward=mask_in_forward, rngs=rngs,
                )
                for a, b in zip(sizes[:-1], sizes[1:])
            ]
        )
        self.out = _output_layer(hidden[-1], n_out, init_std, rngs)

    def sparse_layers(self) -> list[SparseDense]:
        return list(self.hidden)

    def hidden_inputs(self, x: jax.Array) -> list[jax.Array]:
        """Weighted inputs ``z`` (Eq 2) of every sparse layer for inputs ``x`` ``[B, n_in]``."""
        zs = []
        for layer in self.hidden:
            z = layer(x)
            zs.append(z)
            x = self._act(z)
        return zs

    def logits_from_projection(self, u: jax.Array) -> jax.Array:
        """Output logits from ``u = x @ v`` of the first sparse layer (see :meth:`SparseDense.project`).

        ``net(x)`` is ``net.logits_from_projection(net.hidden[0].project(x))``.
        """
        h = self._act(self.hidden[0].from_projection(u))
        for layer in list(self.hidden)[1:]:
            h = self._act(layer(h))
        return self.out(h)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.logits_from_projection(self.hidden[0].project(x))


class SparseConvNet(nnx.Module):
    """Fig 3D: conv 20 x 5x5 (valid, sigmoid), 2x2 max-pool, flatten 2880, sparse 100 sigmoid, dense 10.

    Inputs are flat ``[B, 784]`` images (reshaped to 28x28x1 inside).

    Example:
      >>> net = SparseConvNet(normalise=False, rngs=nnx.Rngs(0))
      >>> net(jnp.zeros((2, 784))).shape
      (2, 10)
    """

    def __init__(
        self,
        n_hidden: int = 100,
        n_out: int = 10,
        *,
        filters: int = 20,
        kernel: int = 5,
        eps: float = 0.2,
        normalise: bool = True,
        s_init: float = 25.0,
        init_std: float = 1.0,
        mask_in_forward: bool = True,
        rngs: nnx.Rngs,
    ):
        for n in (n_hidden, n_out, filters, kernel):
            topology.check_layer_size(n)
        self.activation = "sigmoid"
        self.conv = nnx.Conv(
            1, filters, (kernel, kernel), padding="VALID",
            kernel_init=nnx.initializers.glorot_uniform(),
            bias_init=nnx.initializers.zeros_init(), rngs=rngs,
        )
        side = (28 - kernel + 1) // 2
        self.n_flat = side * side * filters
        self.sparse = SparseDense(
            self.n_flat, n_hidden, eps=eps, normalise=normalise, s_init=s_init,
            init_std=init_std, mask_in_forward=mask_in_forward, rngs=rngs,
        )
        self.out = _output_layer(n_hidden, n_out, init_std, rngs)

    def sparse_layers(self) -> list[SparseDense]:
        return [self.sparse]

    def features(self, x: jax.Array) -> jax.Array:
        """Conv, sigmoid, 2x2 max-pool, flatten: ``[B, 784] -> [B, n_flat]``."""
        h = jax.nn.sigmoid(self.conv(x.reshape(x.shape[:-1] + (28, 28, 1))))
        h = nnx.max_pool(h, (2, 2), strides=(2, 2))
        return h.reshape(h.shape[:-3] + (self.n_flat,))

    def hidden_inputs(self, x: jax.Array) -> list[jax.Array]:
        return [self.sparse(self.features(x))]

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.out(jax.nn.sigmoid(self.sparse(self.features(x))))

"""Connectivity statistics of a trained network (Fig 2).

All functions take one network and return fixed-shape arrays, so the trainer
can ``vmap`` them over trials and conditions. They describe the *first*
sparse layer (the input-to-hidden layer in Fig 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["SNAPSHOT_FIELDS", "snapshot", "mean_hidden_input"]

#: What :func:`snapshot` returns, with the shape of each field.
SNAPSHOT_FIELDS = {
    "efferent_counts": "[n_in] contacts leaving each input unit (pixel), Fig 2A",
    "afferent_counts": "[n_hidden] contacts arriving at each hidden neuron, Fig 2B left",
    "weights": "[n_contacts] effective weights w of all contacts (SET keeps their number fixed), Fig 2B centre",
    "mean_input": "[n_hidden] weighted input z (Eq 2) averaged over the given inputs, Fig 2B right",
}


def mean_hidden_input(model: nnx.Module, x: jax.Array, chunk: int = 2000) -> jax.Array:
    """Mean over the rows of ``x`` of the first sparse layer's weighted input ``z`` ``[n_hidden]``.

    ``x`` is processed in chunks of ``chunk`` rows (padded) to bound memory.
    """
    n = x.shape[0]
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xp = jnp.pad(x, ((0, pad), (0, 0))).reshape(n_chunks, chunk, x.shape[-1])
    valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)

    def body(total, inp):
        xc, vc = inp
        z = model.hidden_inputs(xc)[0]
        return total + jnp.where(vc[:, None], z, 0.0).sum(axis=0), None

    n_hidden = model.sparse_layers()[0].b[...].shape[0]
    total, _ = jax.lax.scan(body, jnp.zeros((n_hidden,), jnp.float32), (xp, valid))
    return total / n


def snapshot(model: nnx.Module, x: jax.Array) -> dict[str, jax.Array]:
    """The Fig 2 statistics of ``model`` on inputs ``x`` (see :data:`SNAPSHOT_FIELDS`)."""
    layer = model.sparse_layers()[0]
    mask = layer.mask[...]
    # SET conserves contacts, so their number is the static one fixed at construction.
    (idx,) = jnp.nonzero(mask.reshape(-1), size=layer.n_contacts, fill_value=0)
    return {
        "efferent_counts": mask.sum(axis=1, dtype=jnp.int32),
        "afferent_counts": mask.sum(axis=0, dtype=jnp.int32),
        "weights": layer.weights().reshape(-1)[idx],
        "mean_input": mean_hidden_input(model, x),
    }

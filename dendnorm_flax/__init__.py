"""dendnorm-flax: dendritic (L0) normalisation of sparse networks, after Bird & Cuntz.

Public names are imported lazily so that ``from dendnorm_flax import data``
does not pay for importing JAX.

Example:
  >>> from dendnorm_flax import RunConfig, train
  >>> result = train(RunConfig(dataset="mnist", hidden=(100,), epochs=2, trials=2))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # layers
    "SparseDense": "dendnorm_flax.layers",
    "Mask": "dendnorm_flax.layers",
    "Rule": "dendnorm_flax.layers",
    # models
    "SparseMLP": "dendnorm_flax.models",
    "SparseConvNet": "dendnorm_flax.models",
    # topology
    "erdos_renyi_mask": "dendnorm_flax.topology",
    "set_rewire": "dendnorm_flax.topology",
    # training
    "CONDITIONS": "dendnorm_flax.train",
    "RunConfig": "dendnorm_flax.train",
    "RunResult": "dendnorm_flax.train",
    "DivergenceError": "dendnorm_flax.train",
    "make_model": "dendnorm_flax.train",
    "train": "dendnorm_flax.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dendnorm_flax' has no attribute {name!r}")

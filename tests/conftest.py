"""Shared test settings: strict JAX (rank promotion raises), headless matplotlib,
and the smoke reproduction that the notebook and book tests share."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """All three figure notebooks at smoke scale, run once through ``dendnorm reproduce``."""
    from dendnorm_flax.reproduce import run_smoke_reproduction

    return run_smoke_reproduction(tmp_path_factory.mktemp("reproduce") / "smoke")

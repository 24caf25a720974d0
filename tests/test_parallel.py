"""Trials over worker processes: the same numbers as one process, errors that name their source."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from dendnorm_flax import parallel
from dendnorm_flax import train as tr
from dendnorm_flax.train import DivergenceError, RunConfig

from test_train import SMALL, _synthetic


def test_split_trials_is_contiguous_and_balanced():
    assert parallel.split_trials(0, 10, 2) == [(0, 5), (5, 5)]
    assert parallel.split_trials(3, 5, 2) == [(3, 3), (6, 2)]
    assert parallel.split_trials(0, 1, 4) == [(0, 1)]
    with pytest.raises(ValueError, match="workers"):
        parallel.split_trials(0, 3, 0)


def test_two_workers_give_the_numbers_of_one_process():
    cfg = RunConfig(**{**SMALL, "trials": 3}, snapshot_epochs=(0, 2))
    data = _synthetic()
    one = tr.train(cfg, data=data, progress=False, workers=1)
    two = tr.train(cfg, data=data, progress=False, workers=2)
    assert two.timing["workers"] == 2 and two.timing["worker_trials"] == [2, 1]
    np.testing.assert_array_equal(one.trial_seeds, two.trial_seeds)
    # The same computation batched over 3 trials or over 2 + 1: equal up to float32 rounding,
    # as for trials run together or one at a time (test_train.py).
    np.testing.assert_allclose(one.train_cost, two.train_cost, rtol=1e-5)
    np.testing.assert_allclose(one.test_accuracy, two.test_accuracy, atol=1e-6)
    assert set(one.snapshots) == {"efferent_counts", "afferent_counts", "weights", "mean_input"}
    assert set(two.snapshots) == set(one.snapshots)
    for name in ("efferent_counts", "afferent_counts"):  # the masks: integers, exactly equal
        np.testing.assert_array_equal(one.snapshots[name], two.snapshots[name], err_msg=name)
    for name in ("weights", "mean_input"):
        np.testing.assert_allclose(one.snapshots[name], two.snapshots[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_divergence_in_every_block_names_the_lowest_trial():
    x_tr, y_tr, x_te, y_te = _synthetic()
    x_tr = x_tr.copy()
    x_tr[7, 3] = np.inf  # every trial meets it in epoch 1, in both worker processes
    with pytest.raises(DivergenceError) as info:
        tr.train(RunConfig(**{**SMALL, "trials": 4}), data=(x_tr, y_tr, x_te, y_te),
                 progress=False, workers=2)
    assert info.value.trial == 0 and info.value.epoch == 1
    assert "worker process 0, trials 0..1" in "\n".join(getattr(info.value, "__notes__", []))


def test_the_error_reported_is_the_one_a_single_process_meets_first():
    blocks = [(0, 5), (5, 5)]
    late_low = DivergenceError("late", condition="control", trial=2, epoch=7)
    early_high = DivergenceError("early", condition="normalised", trial=6, epoch=3)
    index, exc, _ = parallel._first_error({0: (late_low, ""), 1: (early_high, "")}, blocks)
    assert (index, exc) == (1, early_high)
    same_epoch = DivergenceError("same", condition="control", trial=1, epoch=3)
    index, exc, _ = parallel._first_error({0: (same_epoch, ""), 1: (early_high, "")}, blocks)
    assert (index, exc) == (0, same_epoch)


def test_a_dead_worker_is_replaced():
    pool = parallel._pool(2)
    pool.workers[1].proc.kill()
    pool.workers[1].proc.wait()
    cfg = RunConfig(**SMALL)
    r = tr.train(cfg, data=_synthetic(), progress=False, workers=2)
    assert r.timing["workers"] == 2 and np.all(np.isfinite(r.train_cost))
    assert parallel._POOL is not pool


def test_bad_worker_counts():
    with pytest.raises(ValueError, match="workers"):
        tr.train(RunConfig(**SMALL), data=_synthetic(), progress=False, workers=0)
    with pytest.raises(ValueError, match="on_epoch"):
        tr.train(RunConfig(**SMALL), data=_synthetic(), progress=False, workers=2, on_epoch=print)


def test_bad_environment_variable(monkeypatch):
    monkeypatch.setenv("DENDNORM_WORKERS", "two")
    with pytest.raises(ValueError, match="DENDNORM_WORKERS"):
        parallel.default_workers(4)
    monkeypatch.setenv("DENDNORM_WORKERS", "1")
    assert parallel.default_workers(4) == 1
    monkeypatch.setenv("DENDNORM_WORKERS", "8")
    assert parallel.default_workers(3) == 3


def test_a_script_without_a_main_guard_runs_in_parallel(tmp_path):
    """Workers are subprocesses: they never re-import the caller's script."""
    script = tmp_path / "plain_script.py"
    script.write_text(textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_train import SMALL, _synthetic
        from dendnorm_flax.train import RunConfig, train
        r = train(RunConfig(**SMALL), data=_synthetic(), progress=False, workers=2)
        print("workers", r.timing["workers"], r.test_accuracy.shape)
        """
    ))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "workers 2 (2, 2, 2)" in out.stdout


def test_workers_take_over_the_strict_jax_settings():
    env = parallel._worker_env()
    assert env["JAX_NUMPY_RANK_PROMOTION"] == "raise"  # set by conftest.py in this process
    assert "DENDNORM_WORKERS" not in env


def test_workers_die_with_their_parent(tmp_path):
    """A parent killed without cleanup (os._exit: no atexit) while its workers train leaves none running."""
    code = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_train import SMALL, _synthetic
        from dendnorm_flax import parallel
        from dendnorm_flax.train import RunConfig
        pool = parallel._pool(2)
        cfg = RunConfig(**{{**SMALL, "epochs": 100000, "trials": 1}})  # hours of work
        for i, w in enumerate(pool.workers):
            w.submit((1, cfg, _synthetic()))
        started = set()
        while len(started) < 2:  # both are training
            index, _, kind, _ = pool.inbox.get(timeout=120)
            assert kind == "epoch", kind
            started.add(index)
        print(" ".join(str(w.proc.pid) for w in pool.workers), flush=True)
        os._exit(0)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    import time

    deadline = time.monotonic() + 60
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.5)
        alive = [p for p in pids if _running(p)]
    assert not alive, f"worker processes {alive} outlived their parent"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False

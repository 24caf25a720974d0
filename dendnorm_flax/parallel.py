"""Trials spread over CPU cores: one pinned, single-threaded worker process per core.

On a CPU without an accelerator, XLA's own threading helps little with the
small matmuls of minibatch-10 SGD: measured on 2 cores (M = 100, 10 trials x 2
conditions, full Fashion-MNIST), one process running all trials takes 6.4 s
per training epoch, two processes pinned to one core each and running half of
the trials 3.6 s (1.8x; ``benchmarks/speed.py`` prints both).
:func:`dendnorm_flax.train.train` therefore hands the trials of a run to
worker processes when it runs on the CPU backend with one device; each worker
runs the same engine on a contiguous block of trials (``first_trial``,
``trials``) and the blocks are joined along the trial axis. Trial ``t`` uses
the key ``fold_in(key(seed), t)`` wherever it runs, so the results equal those
of one process running every trial up to float32 rounding (XLA may order a
sum differently for a batch of 5 trials than for 10; a test compares them).

The workers are plain subprocesses (``python -c`` importing this module), not
``multiprocessing`` children: they never re-import the caller's ``__main__``,
so a script without an ``if __name__ == "__main__"`` guard, a notebook kernel
and pytest all work the same. Each pins itself to its core with
``os.sched_setaffinity`` and sets single-threaded XLA flags before JAX starts.
Messages are length-prefixed pickles over the worker's stdin and a private
copy of its stdout (its fd 1 is pointed at stderr, so stray prints cannot
corrupt the stream). The workers are started once and reused by later runs of
the same Python process; they exit when it does.

``DENDNORM_WORKERS=1`` turns them off; ``DENDNORM_WORKERS=N`` asks for ``N``.

This module imports JAX only inside functions: a worker must pin itself and
set its XLA flags before JAX starts.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, BinaryIO

__all__ = ["default_workers", "usable_cores", "split_trials", "run_trials", "shutdown"]

#: XLA flags of a worker: one core, so one thread (no intra-op pool to contend for it).
WORKER_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
_HEADER = struct.Struct("<Q")


def usable_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity mask)."""
    return sorted(os.sched_getaffinity(0))


def _env_workers() -> int | None:
    raw = os.environ.get("DENDNORM_WORKERS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"DENDNORM_WORKERS must be a whole number >= 1 (1 turns worker processes off), got {raw!r}"
        )
    return int(raw)


def default_workers(trials: int) -> int:
    """How many worker processes ``train(..., workers="auto")`` uses for ``trials`` trials.

    ``DENDNORM_WORKERS`` if set; otherwise one per usable core on the CPU
    backend with a single device, 1 on an accelerator or with several JAX
    devices (there the trials are sharded over the devices instead). Never
    more than ``trials``.
    """
    env = _env_workers()
    if env is not None:
        return max(1, min(env, trials))
    import jax

    if jax.default_backend() != "cpu" or len(jax.local_devices()) > 1:
        return 1
    return max(1, min(len(usable_cores()), trials))


def split_trials(first_trial: int, trials: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous ``(first_trial, trials)`` blocks, sizes differing by at most one."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = min(workers, trials)
    base, extra = divmod(trials, workers)
    blocks, start = [], first_trial
    for i in range(workers):
        n = base + (1 if i < extra else 0)
        blocks.append((start, n))
        start += n
    return blocks


# --------------------------------------------------------------------------- messages


def _send(stream: BinaryIO, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(stream: BinaryIO) -> Any:
    """The next message, or ``EOFError`` when the other side has gone."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        raise EOFError
    payload = _read_exact(stream, _HEADER.unpack(header)[0])
    if payload is None:
        raise EOFError
    return pickle.loads(payload)


# --------------------------------------------------------------------------- the worker side


def _worker_main(core: int) -> None:
    """Pin to ``core``, make XLA single-threaded, then run tasks from stdin until it closes."""
    # Interrupts are the parent's business (it stops the workers itself). A worker dies with its
    # parent: at once by PR_SET_PDEATHSIG, and at the latest when its next message meets the
    # closed pipe, so a killed notebook kernel leaves no orphan training on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent was gone before the line above took effect
        return
    os.sched_setaffinity(0, {core})
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + WORKER_XLA_FLAGS).strip()
    os.environ["DENDNORM_WORKERS"] = "1"  # a worker never starts workers of its own
    out = os.fdopen(os.dup(1), "wb")  # the message stream: a private copy of stdout
    os.dup2(2, 1)  # anything printed from here on goes to stderr
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    from dendnorm_flax import train as tr

    while True:
        try:
            task_id, config, data = _recv(inp)
        except EOFError:
            return
        try:
            result = tr.train(config, data=data, progress=False, workers=1,
                              on_epoch=lambda epoch: _send(out, (task_id, "epoch", epoch)))
            _send(out, (task_id, "done", result))
        except BaseException as exc:  # reported to the parent, which re-raises it
            text = traceback.format_exc()
            try:
                pickle.dumps(exc)
            except Exception:
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            _send(out, (task_id, "error", (exc, text)))
            if isinstance(exc, KeyboardInterrupt):
                return


# --------------------------------------------------------------------------- the parent side


#: JAX settings a worker takes over from its parent (the numerics of the run must not depend
#: on where it runs; e.g. the tests' strict rank promotion holds in the workers too).
INHERITED_JAX_CONFIG = ("jax_numpy_rank_promotion", "jax_enable_x64", "jax_default_matmul_precision",
                        "jax_debug_nans", "jax_debug_infs")


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DENDNORM_WORKERS", None)
    jax = sys.modules.get("jax")
    if jax is not None:
        for name in INHERITED_JAX_CONFIG:
            value = getattr(jax.config, name, None)
            if value is not None:
                env[name.upper()] = str(value)
    return env


class _Worker:
    def __init__(self, index: int, core: int, inbox: "queue.Queue"):
        env = _worker_env()
        code = f"from dendnorm_flax.parallel import _worker_main; _worker_main({core})"
        self.index = index
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )
        self.reader = threading.Thread(target=self._read, args=(inbox,), daemon=True,
                                       name=f"dendnorm-worker-{index}-reader")
        self.reader.start()

    def _read(self, inbox: "queue.Queue") -> None:
        while True:
            try:
                message = _recv(self.proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                inbox.put((self.index, None, "exit", None))
                return
            inbox.put((self.index, *message))

    def submit(self, message) -> None:
        _send(self.proc.stdin, message)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # a worker exits when its stdin closes
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Pool:
    def __init__(self, n: int):
        cores = usable_cores()
        self.inbox: queue.Queue = queue.Queue()
        self.workers = [_Worker(i, cores[i % len(cores)], self.inbox) for i in range(n)]

    @property
    def size(self) -> int:
        return len(self.workers)

    def alive(self) -> bool:
        return all(w.alive() for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.close()


_POOL: _Pool | None = None
_TASK_COUNTER = 0


def shutdown() -> None:
    """Stop the worker processes (they are restarted by the next parallel run)."""
    global _POOL
    if _POOL is not None:
        pool, _POOL = _POOL, None
        pool.close()


atexit.register(shutdown)


def _pool(n: int) -> _Pool:
    global _POOL
    if _POOL is not None and (_POOL.size < n or not _POOL.alive()):
        shutdown()
    if _POOL is None:
        _POOL = _Pool(max(n, len(usable_cores())))
    return _POOL


def _error_epoch(exc: BaseException) -> int:
    """The epoch a worker's error happened at (a DivergenceError says; anything else counts as 0)."""
    epoch = getattr(exc, "epoch", None)
    return epoch if isinstance(epoch, int) else 0


def _first_error(errors: dict[int, tuple[BaseException, str]], blocks) -> tuple[int, BaseException, str]:
    """The error one process running every trial would have raised: earliest epoch, then lowest trial."""
    def order(i):
        return (_error_epoch(errors[i][0]), blocks[i][0])

    i = min(errors, key=order)
    return i, *errors[i]


def run_trials(config, workers: int, *, data=None, progress: bool = True, desc: str | None = None):
    """Run ``config`` with its trials split over ``workers`` processes; return one joined RunResult.

    If a block fails, the others run on until they pass the epoch it failed
    at, so that the error raised is the one a single process would raise (a
    divergence: the earliest epoch, then the lowest trial).
    """
    global _TASK_COUNTER
    import numpy as np

    from dendnorm_flax.train import RunResult, epoch_bar

    wall0 = time.perf_counter()
    blocks = split_trials(config.first_trial, config.trials, workers)
    if data is not None:
        data = tuple(np.asarray(a) for a in data)
    pool = _pool(len(blocks))
    _TASK_COUNTER += 1
    task_id = _TASK_COUNTER
    for i, (first, n) in enumerate(blocks):
        pool.workers[i].submit((task_id, dataclasses.replace(config, first_trial=first, trials=n), data))

    bar = epoch_bar(config, desc) if progress else None
    done: dict[int, Any] = {}
    errors: dict[int, tuple[BaseException, str]] = {}
    epochs = [0] * len(blocks)

    def settled() -> bool:
        if len(done) + len(errors) == len(blocks):
            return True
        if not errors:
            return False
        worst = min(_error_epoch(e) for e, _ in errors.values())
        return all(i in done or i in errors or epochs[i] >= worst for i in range(len(blocks)))

    try:
        while not settled():
            try:
                index, tid, kind, payload = pool.inbox.get(timeout=1.0)
            except queue.Empty:
                continue
            if kind == "exit":
                codes = [w.proc.poll() for w in pool.workers]
                shutdown()
                raise RuntimeError(
                    f"worker process {index} died (exit codes {codes}), e.g. out of memory; "
                    f"rerun with DENDNORM_WORKERS=1 (or train(..., workers=1)) to train in this process"
                )
            if tid != task_id or index >= len(blocks):
                continue  # left over from an interrupted earlier run
            if kind == "epoch":
                epochs[index] = payload
                if bar is not None and min(epochs) > bar.n:
                    bar.update(min(epochs) - bar.n)
            elif kind == "done":
                done[index] = payload
            else:
                errors[index] = payload
    except BaseException:
        shutdown()  # e.g. KeyboardInterrupt: do not leave workers busy with a dead run
        raise
    finally:
        if bar is not None:
            bar.close()
    if errors:
        shutdown()  # the other blocks are abandoned mid-run
        index, exc, text = _first_error(errors, blocks)
        first, n = blocks[index]
        exc.add_note(f"(raised in worker process {index}, trials {first}..{first + n - 1}; "
                     f"its traceback:)\n{text}")
        raise exc

    parts: list[RunResult] = [done[i] for i in range(len(blocks))]
    cat = lambda name: np.concatenate([getattr(r, name) for r in parts], axis=1)
    snapshots = {k: np.concatenate([r.snapshots[k] for r in parts], axis=1) for k in parts[0].snapshots}
    slowest = lambda key: np.max([r.timing[key] for r in parts], axis=0).tolist() if parts[0].timing[key] else []
    return RunResult(
        config=config,
        train_cost=cat("train_cost"),
        test_accuracy=cat("test_accuracy"),
        trial_seeds=np.concatenate([r.trial_seeds for r in parts]),
        snapshots=snapshots,
        timing={
            "compile_s": max(r.timing["compile_s"] for r in parts),
            "train_s": slowest("train_s"),
            "eval_s": slowest("eval_s"),
            "set_s": slowest("set_s"),
            "wall_s": time.perf_counter() - wall0,
            "backend": parts[0].timing["backend"],
            "devices": parts[0].timing["devices"],
            "workers": len(blocks),
            "worker_trials": [n for _, n in blocks],
            "peak_rss_mb": [r.timing["peak_rss_mb"][0] for r in parts],
        },
    )

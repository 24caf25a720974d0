#!/usr/bin/env python
"""Speed of the JAX engine against the per-example numpy reference, on this machine.

Both sides use both cores:

* reference (``benchmarks/reference_numpy.py``): a pool of 2 processes, each pinned
  to one core (``os.sched_setaffinity``), single-threaded BLAS, each training its own
  network one example at a time. For every hidden size M the control and the
  normalised network run at the same time, one per core. Each trains
  ``--ref-examples`` examples and evaluates ``--ref-eval`` examples; the times are
  extrapolated to one network-epoch: training on 60,000 images plus the evaluation
  (cost on the 60,000 training images and accuracy on the 10,000 test images).
* engine (``dendnorm_flax.train.train``): ``--trials`` trials x 2 conditions in one
  compiled program per epoch, full epochs, after compilation. Its seconds per
  network-epoch are the epoch's wall time divided by ``2 * trials`` (the two
  conditions share every program, so both rows of a size show the same engine time).

Machine time per network-epoch: wall seconds of the whole machine per network-epoch
(the reference: one process's time / 2, since two run at once). The ratio is the
engine's network-epochs per second over the reference's.

FLOPs (dense-equivalent matmul FLOPs; elementwise work not counted), per network-epoch:

* training, N = 60,000 examples: ``N * (4*784*M + 6*M*10)``: the hidden layer's
  forward ``x @ w`` and weight gradient ``x^T @ delta`` (2 * 784*M multiply-adds each),
  the output layer's forward, weight gradient and backpropagated error
  (3 * M*10 multiply-adds); 19.2 GFLOP at M = 100.
* evaluation, 70,000 examples: ``70,000 * (2*784*M + 2*M*10)``; 11.1 GFLOP at M = 100.

Peak: the best of several float32 ``jnp.dot`` of two 2048 x 2048 matrices in this
process (XLA, both cores). Memory: ``ru_maxrss`` of this process; ``VmHWM`` of each
reference worker (its own peak after exec).

Usage::

  .venv/bin/python benchmarks/speed.py                 # M = 30, 100, 300; 10 trials; ~6-10 min
  .venv/bin/python benchmarks/speed.py --sizes 100 --epochs 1
  .venv/bin/python benchmarks/speed.py --tiny          # CI smoke run: seconds, numbers mean nothing

The last line is always ``speedup M=100 normalised: <ratio>x`` (training + evaluation).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import multiprocessing as mp
import os
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_numpy  # noqa: E402  (numpy only; importable by spawned workers)

N_TRAIN, N_TEST = 60000, 10000
N_IN, N_OUT = 784, 10
FASHION_GZ = Path("/usr/share/datasets/fashion-mnist")


def train_flops(M: int, n: int = N_TRAIN) -> float:
    return n * (4 * N_IN * M + 6 * M * N_OUT)


def eval_flops(M: int, n: int = N_TRAIN + N_TEST) -> float:
    return n * (2 * N_IN * M + 2 * M * N_OUT)


# --------------------------------------------------------------------------- data


def _read_idx_gz(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_data(dataset: str, tiny: bool):
    """``(x_train, y_train, x_test, y_test, source)``; x float32 pixels/256."""
    if tiny:
        rng = np.random.default_rng(0)
        make = lambda n: ((rng.integers(0, 256, (n, N_IN)) / 256).astype(np.float32),
                          rng.integers(0, 10, n).astype(np.int32))
        return (*make(200), *make(100), "synthetic (tiny)")
    try:
        from dendnorm_flax import data

        x_tr, y_tr = data.load_inputs(dataset, "train")
        x_te, y_te = data.load_inputs(dataset, "test")
        return x_tr, y_tr, x_te, y_te, f"{dataset} via dendnorm_flax.data"
    except Exception as e:  # the data module is optional for this benchmark
        if dataset in ("fashion", "fashion-mnist") and FASHION_GZ.is_dir():
            arrs = [_read_idx_gz(FASHION_GZ / f"{n}.gz") for n in (
                "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]
            x = lambda a: (a.reshape(len(a), -1) / np.float32(256)).astype(np.float32)
            return (x(arrs[0]), arrs[1].astype(np.int32), x(arrs[2]), arrs[3].astype(np.int32),
                    f"fashion from {FASHION_GZ} (data module failed: {e})")
        raise SystemExit(f"cannot load {dataset!r}: {e}; try --dataset fashion or --tiny")


# --------------------------------------------------------------------------- reference


@contextlib.contextmanager
def _reference_env():
    """Environment the spawned reference workers inherit: no OPENBLAS_CORETYPE/L2_SIZE
    overrides (unset together: they can select a slow kernel), single-threaded BLAS."""
    saved = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(k, None)
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = "1"
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_reference(sizes, x, y, *, n_train, n_eval, dtype, seed=0, repeats=2):
    """One (control, normalised) pair per size, one process per core, concurrently.

    Each pair runs ``repeats`` times; the fastest run of each network is kept (other work
    on a shared machine only ever slows a run down)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None, None]
    cores = (cores * 2)[:2]
    n_pool = max(n_train, n_eval)
    xs, ys = x[:n_pool], y[:n_pool]
    ctx = mp.get_context("spawn")
    results = []
    with _reference_env():
        pool = ctx.Pool(2, maxtasksperchild=None)
    with pool:
        for M in sizes:
            jobs = [dict(M=M, normalise=norm, seed=seed + i, core=cores[i], dtype=dtype,
                         x_train=xs, y_train=ys, n_train=n_train, n_eval=n_eval)
                    for i, norm in enumerate((False, True))]
            runs = [pool.map(reference_numpy.timed_worker, jobs, chunksize=1) for _ in range(repeats)]
            for i in range(len(jobs)):
                best = dict(min((r[i] for r in runs), key=lambda r: r["train_s"] + r["eval_s"]))
                best["maxrss_mb"] = max(r[i]["maxrss_mb"] for r in runs)
                results.append(best)
    return results


# --------------------------------------------------------------------------- engine


def measure_peak(n: int = 2048, repeats: int = 7) -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), jnp.float32)
    f = jax.jit(jnp.dot).lower(a, b).compile()
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def run_engine(M, data, *, trials, epochs, dataset, workers="auto"):
    from dendnorm_flax.train import RunConfig, train

    x_tr, y_tr, x_te, y_te = data
    cfg = RunConfig(dataset="fashion" if dataset.startswith("fashion") else "mnist", hidden=(M,),
                    epochs=epochs, trials=trials, n_train=len(x_tr), n_test=len(x_te))
    cpu0 = time.process_time()
    r = train(cfg, data=data, progress=False, workers=workers)
    cpu = time.process_time() - cpu0
    t = r.timing
    # the fastest epoch (all run after compilation): other work on a shared machine only slows epochs down
    return {
        "workers": t["workers"], "peak_rss_mb": t["peak_rss_mb"],
        "M": M, "compile_s": t["compile_s"], "train_s": float(np.min(t["train_s"])),
        "eval_s": float(np.min(t["eval_s"])), "set_s": float(np.min(t["set_s"])) if t["set_s"] else 0.0,
        "train_s_all": t["train_s"], "eval_s_all": t["eval_s"], "wall_s": t["wall_s"], "cpu_s": cpu,
        "networks": 2 * trials, "n_train": len(x_tr), "n_test": len(x_te),
        "final_acc": r.test_accuracy[:, :, -1].mean(axis=1).tolist(),
    }


# --------------------------------------------------------------------------- report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="CI smoke run: tiny synthetic data, seconds")
    ap.add_argument("--sizes", default="30,100,300", help="hidden sizes M (comma separated)")
    ap.add_argument("--trials", type=int, default=10, help="engine trials (x 2 conditions)")
    ap.add_argument("--epochs", type=int, default=2, help="engine epochs timed (after compilation; the fastest counts)")
    ap.add_argument("--ref-examples", type=int, default=10000, help="training examples per reference network")
    ap.add_argument("--ref-eval", type=int, default=10000, help="evaluation examples per reference network")
    ap.add_argument("--ref-dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--ref-repeats", type=int, default=2, help="runs of each reference pair; the fastest is kept")
    ap.add_argument("--dataset", default="fashion", help="mnist or fashion (the data module's cache)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.tiny:
        sizes, args.trials, args.epochs = [100], 1, 1
        args.ref_examples, args.ref_eval = 50, 50
    if 100 not in sizes:
        sizes.append(100)  # the last line reports M = 100
    load0 = os.getloadavg()

    x_tr, y_tr, x_te, y_te, source = load_data(args.dataset, args.tiny)
    print(f"data: {source}: train {x_tr.shape}, test {x_te.shape}")
    print(f"machine: {os.cpu_count()} cores, affinity {sorted(os.sched_getaffinity(0))}, "
          f"load average {load0[0]:.2f} (other work on the machine inflates every time below)", flush=True)

    t0 = time.perf_counter()
    ref = run_reference(sizes, x_tr, y_tr, n_train=args.ref_examples, n_eval=args.ref_eval,
                        dtype=args.ref_dtype, repeats=1 if args.tiny else args.ref_repeats)
    ref_wall = time.perf_counter() - t0
    print(f"reference: {len(ref)} networks (fastest of {args.ref_repeats} runs) in {ref_wall:.1f} s ({args.ref_dtype}, "
          f"{args.ref_examples} training + {args.ref_eval} evaluation examples each, 2 pinned processes); "
          f"BLAS: {ref[0]['blas']}", flush=True)

    import jax

    peak = measure_peak(256 if args.tiny else 2048)
    print(f"engine: jax {jax.__version__} on {jax.default_backend()} {jax.local_devices()}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; measured float32 matmul peak {peak:.1f} GFLOP/s", flush=True)
    eng, eng_1p = {}, {}
    for M in sizes:
        # The library's default (trials over one pinned worker per core), then, as an in-process
        # reference for the workers' gain, everything in this one process (XLA's own threads).
        for store, workers in ((eng, "auto"), (eng_1p, 1)):
            store[M] = run_engine(M, (x_tr, y_tr, x_te, y_te), trials=args.trials, epochs=args.epochs,
                                  dataset=args.dataset, workers=workers)
            e = store[M]
            print(f"  M={M}, {e['workers']} process(es): {e['networks']} networks, epochs train "
                  f"{['%.2f' % s for s in e['train_s_all']]} s, eval {['%.2f' % s for s in e['eval_s_all']]} s, "
                  f"compile {e['compile_s']:.1f} s", flush=True)

    peak_start, peak_end = peak, measure_peak(256 if args.tiny else 2048)
    peak = max(peak_start, peak_end)

    # Per network-epoch, machine seconds.
    rows = []
    hdr = (f"{'M':>4} {'condition':10} | {'reference s/net-epoch':>22} | {'engine s/net-epoch':>20} | "
           f"{'ratio':>17} | {'engine GFLOP/s (%peak)':>24} | {'reference GFLOP/s (%peak)':>25}")
    sub = (f"{'':>4} {'':10} | {'train':>10} {'eval':>11} | {'train':>9} {'eval':>10} | "
           f"{'train':>5} {'eval':>5} {'all':>5} | {'train':>11} {'eval':>12} | {'train':>12} {'eval':>12}")
    if any(eng[M]["n_train"] != N_TRAIN for M in sizes):
        print("(engine epochs were shorter than 60,000 images: its times are scaled up linearly)")
    print()
    print(hdr)
    print(sub)
    print("-" * len(hdr))
    for M in sizes:
        e = eng[M]
        # Machine seconds per network-epoch, scaled to a full epoch when the data was cut (--tiny).
        e_tr = e["train_s"] / e["networks"] * N_TRAIN / e["n_train"]
        e_ev = e["eval_s"] / e["networks"] * (N_TRAIN + N_TEST) / (e["n_train"] + e["n_test"])
        for r in (r for r in ref if r["M"] == M):
            cond = "normalised" if r["normalise"] else "control"
            # One process's extrapolated time; two run at once, so machine time is half of it.
            r_tr = r["train_s"] / r["n_train"] * N_TRAIN / 2
            r_ev = r["eval_s"] / r["n_eval"] * (N_TRAIN + N_TEST) / 2
            ratio = lambda a, b: a / b if b > 0 else float("inf")
            row = {
                "M": M, "condition": cond, "ref_train_s": r_tr, "ref_eval_s": r_ev,
                "engine_train_s": e_tr, "engine_eval_s": e_ev,
                "ratio_train": ratio(r_tr, e_tr), "ratio_eval": ratio(r_ev, e_ev),
                "ratio": ratio(r_tr + r_ev, e_tr + e_ev),
                "engine_train_gflops": train_flops(M) / e_tr / 1e9, "engine_eval_gflops": eval_flops(M) / e_ev / 1e9,
                "ref_train_gflops": train_flops(M) / r_tr / 1e9, "ref_eval_gflops": eval_flops(M) / r_ev / 1e9,
            }
            rows.append(row)
            pct = lambda g: f"{g:6.1f} ({100 * g / peak:3.0f}%)"
            print(f"{M:>4} {cond:10} | {r_tr:10.3f} {r_ev:11.3f} | {e_tr:9.4f} {e_ev:10.4f} | "
                  f"{row['ratio_train']:5.0f} {row['ratio_eval']:5.0f} {row['ratio']:5.0f} | "
                  f"{pct(row['engine_train_gflops']):>11} {pct(row['engine_eval_gflops']):>12} | "
                  f"{pct(row['ref_train_gflops']):>12} {pct(row['ref_eval_gflops']):>12}")
    print()
    print("compile (train + eval + SET programs) and memory:")
    for M in sizes:
        e = eng[M]
        print(f"  M={M}: compile {e['compile_s']:.1f} s; SET {e['set_s']:.3f} s per epoch for {e['networks']} "
              f"networks; CPU time of this process {e['cpu_s']:.1f} s (worker processes not counted) over {e['wall_s']:.1f} s wall; "
              f"final test accuracy (control, normalised) {[round(a, 3) for a in e['final_acc']]}")
    for M in sizes:
        a, b = eng[M], eng_1p[M]
        gain = (b["train_s"] + b["eval_s"]) / (a["train_s"] + a["eval_s"])
        print(f"  M={M}: engine with {a['workers']} pinned worker process(es) against the engine in 1 process: "
              f"{gain:.2f}x (train {b['train_s'] / a['train_s']:.2f}x, eval {b['eval_s'] / a['eval_s']:.2f}x); "
              f"worker peak RSS {[round(m) for m in a['peak_rss_mb']]} MB")
    rss_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_ref = max(r["maxrss_mb"] for r in ref)
    print(f"  float32 matmul peak: {peak_start:.1f} GFLOP/s before the engine runs, {peak_end:.1f} after; "
          f"the table uses the larger")
    print(f"  peak RSS: this process (engine, data, jax) {rss_main:.0f} MB; reference workers up to {rss_ref:.0f} MB each")
    load1 = os.getloadavg()
    print(f"  load average before {load0[0]:.2f}, after {load1[0]:.2f} (2 cores; above ~2.5 the machine was shared)")
    if args.json:
        args.json.write_text(json.dumps({"peak_gflops": peak, "rows": rows, "engine": eng, "engine_one_process": eng_1p, "reference": ref,
                                         "load": [load0[0], load1[0]], "data": source}, indent=1, default=str))
    if all(M in eng for M in (30, 100, 300)):
        # Fig 1, paper protocol: per M two datasets (same shapes) x 10 trials x 2 conditions x 100
        # epochs, i.e. 4,000 network-epochs, each costing training + evaluation + its share of SET.
        per_net = {M: (eng[M]["train_s"] * N_TRAIN / eng[M]["n_train"]
                       + eng[M]["eval_s"] * (N_TRAIN + N_TEST) / (eng[M]["n_train"] + eng[M]["n_test"])
                       + eng[M]["set_s"]) / eng[M]["networks"] for M in (30, 100, 300)}
        hours = sum(4000 * t for t in per_net.values()) / 3600
        print(f"Fig 1 at paper scale (6 panels x 10 trials x 2 conditions x 100 epochs) on this machine: "
              f"about {hours:.2f} h of engine time (compilation and data loading not included)")
    best = next(r for r in rows if r["M"] == 100 and r["condition"] == "normalised")
    print(f"speedup M=100 normalised: {best['ratio']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Time Fig 1 on an accelerator and extrapolate the paper-scale run.

Times one epoch (after compilation; training + evaluation + SET) of Fig 1's
784-M-10 network with ``--trials`` trials x both conditions on full MNIST, for
each M in ``--sizes`` (default 30, 100, 300: every M is *timed*, not scaled by
FLOPs; ``--flops-only`` times M = 100 alone and scales the others by their
FLOPs). Fig 1 has 6 panels (M = 30, 100, 300 on MNIST and Fashion-MNIST) x 100
epochs x 10 trials; Fashion has MNIST's shapes, so its panels reuse the MNIST
times. The report ends with the extrapolated wall time of the whole figure.

Data: the accelerator machine has no network. The data module reads its cache
directory ``$DENDNORM_DATA`` (``dendnorm_flax.data.load_inputs``): carry a
folder holding ``mnist/train-images-idx3-ubyte.gz``, ``mnist/train-labels-idx1-ubyte.gz``,
``mnist/t10k-images-idx3-ubyte.gz``, ``mnist/t10k-labels-idx1-ubyte.gz``
(11.6 MB; the raw IDX files are 55 MB, too much beside the tree in a 64 MiB
carry) and point ``DENDNORM_DATA`` at it. The files are verified by sha256 there.

  DENDNORM_DATA=$PWD/.data .venv/bin/python benchmarks/gpu_check.py      # on the GPU machine
  .venv/bin/python benchmarks/gpu_check.py --tiny                        # CPU smoke check (synthetic data)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

PAPER_EPOCHS = 100
PANELS = [(ds, M) for M in (30, 100, 300) for ds in ("mnist", "fashion")]


def flops_per_network_epoch(M: int) -> float:
    """Dense-equivalent matmul FLOPs: training 60,000 x (4*784*M + 6*10*M), evaluation 70,000 x (2*784*M + 2*10*M)."""
    return 60000 * (4 * 784 * M + 60 * M) + 70000 * (2 * 784 * M + 20 * M)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="smoke check on any backend: synthetic data, seconds")
    ap.add_argument("--sizes", default="30,100,300")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--flops-only", action="store_true", help="time M=100 only; scale the other sizes by FLOPs")
    args = ap.parse_args(argv)

    import jax

    from dendnorm_flax.train import RunConfig, train

    devices = jax.local_devices()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {devices}")
    sizes = [100] if args.flops_only else [int(s) for s in args.sizes.split(",")]
    if args.tiny:
        rng = np.random.default_rng(0)
        make = lambda n: ((rng.integers(0, 256, (n, 784)) / 256).astype(np.float32),
                          rng.integers(0, 10, n).astype(np.int32))
        data = (*make(200), *make(100))
        sizes, args.trials = [30, 100] if not args.flops_only else [100], 2
        print("tiny: synthetic data, 200 training / 100 test images: the times mean nothing")
    else:
        from dendnorm_flax import data as dm

        print(f"data cache: {dm.data_dir()} (DENDNORM_DATA={os.environ.get('DENDNORM_DATA')!r})")
        x_tr, y_tr = dm.load_inputs("mnist", "train")
        x_te, y_te = dm.load_inputs("mnist", "test")
        data = (x_tr, y_tr, x_te, y_te)

    n_train, n_test = len(data[0]), len(data[2])
    timed = {}
    for M in sizes:
        cfg = RunConfig(dataset="mnist", hidden=(M,), epochs=2, trials=args.trials,
                        n_train=n_train, n_test=n_test)
        t = time.perf_counter()
        r = train(cfg, data=data, progress=False)
        wall = time.perf_counter() - t
        tm = r.timing
        # Epoch 2 (the first after the warm-up epoch) + one SET.
        set_s = tm["set_s"][-1] if tm["set_s"] else 0.0
        epoch = tm["train_s"][-1] + tm["eval_s"][-1] + set_s
        timed[M] = {"epoch_s": epoch, "train_s": tm["train_s"][-1], "eval_s": tm["eval_s"][-1],
                    "set_s": set_s, "compile_s": tm["compile_s"], "wall_s": wall}
        nets = 2 * args.trials
        gflops = flops_per_network_epoch(M) * n_train / 60000 * nets / epoch / 1e9
        print(f"M={M:>3}: one epoch of {args.trials} trials x 2 conditions: train {tm['train_s'][-1]:.3f} s, "
              f"eval {tm['eval_s'][-1]:.3f} s, SET {set_s:.3f} s "
              f"-> {epoch:.3f} s ({epoch / nets:.4f} s per network-epoch, {gflops:.0f} GFLOP/s); "
              f"compile {tm['compile_s']:.1f} s; final acc {r.test_accuracy[:, :, -1].mean(1).round(3).tolist()}",
              flush=True)
    if args.flops_only:
        base = timed[100]
        for M in (30, 300):
            f = flops_per_network_epoch(M) / flops_per_network_epoch(100)
            timed[M] = {k: v * f if k in ("epoch_s", "train_s", "eval_s") else v for k, v in base.items()}
            print(f"M={M:>3}: scaled by FLOPs (x{f:.2f}) from M=100: {timed[M]['epoch_s']:.3f} s per epoch")
    scale = 60000 / n_train
    total = 0.0
    print(f"\nFig 1 at paper scale ({len(PANELS)} panels x {PAPER_EPOCHS} epochs x {args.trials} trials x 2 conditions"
          + (f"; epochs scaled x{scale:.0f} from the tiny data" if scale != 1 else "") + "):")
    for ds, M in PANELS:
        if M not in timed:
            continue
        t = timed[M]
        panel = ((t["train_s"] + t["eval_s"]) * scale + t["set_s"]) * PAPER_EPOCHS + t["compile_s"]
        total += panel
        print(f"  {ds:8s} M={M:>3}: {panel / 60:6.1f} min")
    missing = sorted({M for _, M in PANELS} - set(timed))
    print(f"  total: {total / 60:.1f} min" + (f" (panels with M={missing} not timed)" if missing else "") + f" ({total / 3600:.2f} h) on {devices[0].device_kind}")
    for d in devices[:1]:
        stats = getattr(d, "memory_stats", lambda: None)()
        if stats:
            print(f"  device memory: peak {stats.get('peak_bytes_in_use', 0) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

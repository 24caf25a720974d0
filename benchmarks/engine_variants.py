"""Prototypes of faster training epochs for ``dendnorm_flax.train`` (measured, not used by the library).

Each variant trains the same initial state from the same minibatch order as the
engine's ``_Engine.train_epoch`` and is checked allclose against it. Usage::

  .venv/bin/python benchmarks/engine_variants.py --trials 10 --hidden 100 --steps 600
  .venv/bin/python benchmarks/engine_variants.py --variants baseline,packed_nnx --procs 2
  .venv/bin/python benchmarks/engine_variants.py --variants packed_nnx,eval,set --devices 2 --steps 6000
  .venv/bin/python benchmarks/engine_variants.py --variants baseline,packed --hlo   # compiled HLO to /tmp

Training variants (``--variants``, comma separated; times scaled to 6000 steps):

* ``baseline``    the engine's ``train_epoch`` as it is (vmap over trials and conditions). Its
                  HLO has one wide forward dot per step (conditions folded into N = 2M), but a
                  transpose-copy of all of ``v`` ([T,2,784,M] -> [T,784,2M]) before it, and the
                  weight gradient comes out as [T,2M,784], transposed back inside the update.
* ``wide_vmap``   the engine's step with ``v``/mask moved to [T,784,2,M] and vmapped on that axis:
                  XLA's layout assignment moves the carried ``v`` back to [T,2,784,M]; no gain.
* ``packed``      hand-written one-hidden-layer step on ``V[T, 784, 2M]`` (both conditions of a
                  trial side by side): one wide forward dot and one gradient dot per step in
                  the layout of ``V``, masked update, no transposes.
* ``packed_nnx``  the same packing of the first sparse layer, but everything after
                  ``u = x @ V`` is the engine's NNX model (vmapped over conditions,
                  differentiated by ``jax.grad``); any MLP depth. The proposal for train.py.
* ``packed_outer``, ``trial_outer``, ``trial_outer_outer``, ``packed_nnx_xt``: slower
                  alternatives (gradient as a fused sum of outer products; trial-outer loop order
                  for cache locality; gradient from a pre-transposed copy of the data).

Per-epoch pieces (timed whole): ``eval`` (the engine's evaluation on 60,000 + 10,000
images), ``set`` (the engine's SET; its ``lax.top_k`` pruning was prototyped here against a
stable argsort, same masks, about 5x faster, and adopted by ``topology.set_rewire``).

Modes: one process (XLA's own threading), ``--devices 2`` (``jax_num_cpu_devices``, trials
sharded as the engine's ``_shard_trials`` does), ``--procs 2`` (processes pinned to one
core each, trials split between them, started together after compiling).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dendnorm_flax.train import RunConfig, _Engine, cost


# --------------------------------------------------------------------------- packing


def pack(params, fixed):
    """Engine state ``[T, 2, ...]`` -> packed arrays (conditions side by side in the last axis)."""
    h, o = params["hidden"][0], params["out"]
    fh = fixed["hidden"][0]
    v = h["v"][...]  # [T, 2, 784, M]
    T, C, n_in, M = v.shape
    cat = lambda a: jnp.moveaxis(a, 1, -2).reshape(a.shape[0], *a.shape[2:-1], C * a.shape[-1])
    return {
        "V": cat(v),  # [T, 784, 2M]
        "mask": cat(fh["mask"][...]),  # [T, 784, 2M] bool
        "b": cat(h["b"][...]),  # [T, 2M]
        "s": h["s"][...],  # [T, 2]
        "n": cat(fh["n_aff"][...]),  # [T, 2M]
        "norm": fh["normalise"][...],  # [T, 2]
        "Wo": o["kernel"][...],  # [T, 2, M, 10]
        "bo": o["bias"][...],  # [T, 2, 10]
    }


def unpack(p, M):
    """Packed arrays -> the engine's parameter arrays ``[T, 2, ...]`` (for comparison)."""
    split = lambda a: jnp.moveaxis(a.reshape(*a.shape[:-1], 2, M), -2, 1)
    return {"v": split(p["V"]), "b": split(p["b"]), "s": p["s"], "kernel": p["Wo"], "bias": p["bo"]}


def engine_arrays(params):
    h, o = params["hidden"][0], params["out"]
    return {"v": h["v"][...], "b": h["b"][...], "s": h["s"][...],
            "kernel": o["kernel"][...], "bias": o["bias"][...]}


# --------------------------------------------------------------------------- one packed trial


def _scale(p):
    """Per-column factor [2M]: s_c / n (normalised columns) or 1 (control columns)."""
    C = p["s"].shape[-1]
    M = p["n"].shape[-1] // C
    n = jnp.maximum(p["n"], 1).astype(jnp.float32).reshape(C, M)
    sc = jnp.where(p["norm"][:, None], p["s"][:, None] / n, 1.0)
    return sc.reshape(C * M)


def _head_loss(small, U, y, const):
    """Sum over conditions of the mean cost, as a function of ``U = x @ V`` [B, 2M]."""
    C, M = small["Wo"].shape[0], small["Wo"].shape[1]
    p = {**const, **small}
    z = U * _scale(p) + small["b"]
    a = jax.nn.sigmoid(z).reshape(U.shape[0], C, M)
    logits = jnp.einsum("bcm,cmo->bco", a, small["Wo"]) + small["bo"]
    per = cost(logits, jnp.broadcast_to(y[:, None], logits.shape[:2]))  # [B, C]
    return per.mean(0).sum()


def packed_step(p, x, y, lr, outer=False):
    """One SGD step of both conditions of one trial; ``p`` packed without the trial axis."""
    const = {"n": p["n"], "norm": p["norm"]}
    small = {"b": p["b"], "s": p["s"], "Wo": p["Wo"], "bo": p["bo"]}
    U = x @ p["V"]  # [B, 2M]: one wide matmul for both conditions
    g_small, gU = jax.grad(_head_loss, argnums=(0, 1))(small, U, y, const)
    if outer:
        # dC/dV = x^T dC/dU as a sum of B outer products; fuses with the masked update.
        gV = (x[:, :, None] * gU[:, None, :]).sum(0)
    else:
        gV = x.T @ gU
    # v stays zero off the mask: mask the update, not the forward pass.
    V = p["V"] - lr * jnp.where(p["mask"], gV, 0.0)
    new = {k: small[k] - lr * g_small[k] for k in small}
    return {**p, **new, "V": V}


def make_epoch(cfg: RunConfig, variant: str):
    B, steps, lr = cfg.batch_size, cfg.steps_per_epoch, cfg.lr
    outer = variant.endswith("outer") and variant != "trial_outer"

    def one_trial(p, key, x_train, y_train):
        order = jax.random.permutation(key, x_train.shape[0])

        def step(p, i):
            idx = jax.lax.dynamic_slice_in_dim(order, i * B, B)
            return packed_step(p, x_train[idx], y_train[idx], lr, outer), None

        p, _ = jax.lax.scan(step, p, jnp.arange(steps))
        return p

    if variant.startswith("trial_outer"):
        def epoch(p, keys, x_train, y_train):
            return jax.lax.map(lambda a: one_trial(a[0], a[1], x_train, y_train), (p, keys))
    else:
        def epoch(p, keys, x_train, y_train):
            return jax.vmap(one_trial, in_axes=(0, 0, None, None))(p, keys, x_train, y_train)
    return epoch


# --------------------------------------------------------------------------- the engine, condition axis moved


def _is_wide(path) -> bool:
    """The [n_in, n_out] leaves (raw weights v and the mask)."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(keys) and keys[-1] in ("v", "mask")


def _move_wide(tree, src, dst):
    return jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.moveaxis(a, src, dst) if _is_wide(path) else a, tree)


def _cond_axes(tree):
    """vmap axes of the condition in one trial's state: 1 for v/mask ([n_in, C, n_out]), else 0."""
    return jax.tree_util.tree_map_with_path(lambda path, _: 1 if _is_wide(path) else 0, tree)


def make_wide_vmap_epoch(engine):
    """The engine's own ``_sgd_step`` (NNX model + jax.grad), with v and mask stored
    ``[T, n_in, C, n_out]`` during the epoch: vmap over the condition axis that sits next
    to ``n_out``, so the wide matmul needs no transpose of ``v`` and the gradient comes
    out in the layout of ``v``. Moved there and back once per epoch."""
    cfg = engine.config
    B, steps = cfg.batch_size, cfg.steps_per_epoch

    def train_epoch(params, fixed, keys, x_train, y_train):
        params, fixed = _move_wide(params, 1, 2), _move_wide(fixed, 1, 2)
        one = jax.tree.map(lambda a: a[0], (params, fixed))
        pa, fa = _cond_axes(one[0]), _cond_axes(one[1])
        both = jax.vmap(engine._sgd_step, in_axes=(pa, fa, None, None), out_axes=pa)

        def one_trial(p, f, key):
            order = jax.random.permutation(key, x_train.shape[0])

            def step(p, i):
                idx = jax.lax.dynamic_slice_in_dim(order, i * B, B)
                return both(p, f, x_train[idx], y_train[idx]), None

            p, _ = jax.lax.scan(step, p, jnp.arange(steps))
            return p

        params = jax.vmap(one_trial)(params, fixed, keys)
        return _move_wide(params, 2, 1)

    return train_epoch


# --------------------------------------------------------------------------- packed, NNX model kept


def _rest(model, u):
    """The network's output logits from ``u = x @ v`` of its first sparse layer (the layer's
    own scale and bias, Eq 6 and Eq 2, then every later layer as the model defines it)."""
    first = model.hidden[0]
    h = model._act(u * first.scale() + first.b[...])
    for layer in list(model.hidden)[1:]:
        h = model._act(layer(h))
    return model.out(h)


def make_packed_nnx_epoch(engine, xt=False, trial_map=False):
    """Training epoch with the first sparse layer packed ``V[T, n_in, C*M]`` (one wide matmul
    and one gradient matmul per step in the layout of ``V``); everything after ``u = x @ V``
    is the engine's NNX model, ``vmap``-ed over conditions, differentiated by ``jax.grad``.
    MLPs only (the conv net's sparse layer sees condition-specific inputs)."""
    cfg = engine.config
    B, steps = cfg.batch_size, cfg.steps_per_epoch
    V_PATH = ("hidden", 0, "v")
    M_PATH = ("hidden", 0, "mask")

    def split_first(tree, path):
        flat = dict(nnx.to_flat_state(tree))
        var = flat[path]
        big = var[...]  # [T, C, n_in, M]
        flat[path] = var.replace(jnp.zeros(big.shape[:2], big.dtype))  # placeholder, unused
        T, C, n_in, M = big.shape
        wide = jnp.moveaxis(big, 1, 2).reshape(T, n_in, C * M)
        return wide, nnx.from_flat_state(list(flat.items()))

    def join_first(tree, wide, path):
        flat = dict(nnx.to_flat_state(tree))
        T, n_in, CM = wide.shape
        C = flat[path][...].shape[1]
        big = jnp.moveaxis(wide.reshape(T, n_in, C, CM // C), 2, 1)
        flat[path] = flat[path].replace(big)
        return nnx.from_flat_state(list(flat.items()))

    def deeper_masks(grads, fixed):
        """Mask the v gradients of the sparse layers after the first (the first is packed)."""
        masks = {path[:-1]: var for path, var in nnx.to_flat_state(fixed) if path[-1] == "mask"}
        flat = []
        for path, var in nnx.to_flat_state(grads):
            if path[-1] == "v" and path != V_PATH:
                var = var.replace(var[...] * masks[path[:-1]][...].astype(var[...].dtype))
            flat.append((path, var))
        return nnx.from_flat_state(flat)

    def train_epoch(params, fixed, keys, x_train, y_train):
        V, rest_p = split_first(params, V_PATH)
        Mk, rest_f = split_first(fixed, M_PATH)
        C = jax.tree.leaves(params)[0].shape[1]
        x_train_t = x_train.T if xt else None  # [n_in, N]: minibatch columns gathered contiguous

        def one_trial(V, Mk, p, f, key):
            order = jax.random.permutation(key, x_train.shape[0])

            def loss(p, U, y):
                u = U.reshape(U.shape[0], C, -1)
                one = lambda pc, fc, uc: cost(_rest(nnx.merge(engine.graphdef, pc, fc), uc), y).mean()
                return jax.vmap(one, in_axes=(0, 0, 1))(p, f, u).sum()

            def step(carry, i):
                V, p = carry
                idx = jax.lax.dynamic_slice_in_dim(order, i * B, B)
                x, y = x_train[idx], y_train[idx]
                U = x @ V  # [B, C*M]: both conditions in one matmul
                gp, gU = jax.grad(loss, argnums=(0, 1))(p, U, y)
                xT = x_train_t[:, idx] if xt else x.T
                gV = xT @ gU  # [n_in, C*M], the layout of V
                V = V - cfg.lr * jnp.where(Mk, gV, 0.0)  # mask the update, not the forward
                gp = deeper_masks(gp, f)
                updates, _ = engine.tx.update(gp, engine.tx.init(p), p)
                return (V, optax.apply_updates(p, updates)), None

            (V, p), _ = jax.lax.scan(step, (V, p), jnp.arange(steps))
            return V, p

        if trial_map:  # one trial after the other: its V stays in cache for the whole epoch
            V, rest_p = jax.lax.map(lambda a: one_trial(*a), (V, Mk, rest_p, rest_f, keys))
        else:
            V, rest_p = jax.vmap(one_trial)(V, Mk, rest_p, rest_f, keys)
        return join_first(rest_p, V, V_PATH)

    return train_epoch


# --------------------------------------------------------------------------- driver


def _shard(tree, shard: bool):
    devices = jax.local_devices()
    if not shard or len(devices) < 2:
        return tree
    mesh = jax.sharding.Mesh(np.asarray(devices), ("trials",))
    spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("trials"))
    return jax.device_put(tree, spec)


def prepare(variant, cfg, x, y, *, shard=False, hlo=False):
    """Compile one variant's epoch; return ``(compiled, args, compile_s, to_engine_arrays)``."""
    engine = _Engine(cfg)
    trial_ids = np.arange(cfg.first_trial, cfg.first_trial + cfg.trials)
    params, fixed = engine.init_state(trial_ids)
    keys = engine.keys(trial_ids, 1, 1)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if variant == "eval":  # the engine's evaluation: cost on 60,000 + accuracy on 10,000 images
        rng = np.random.default_rng(1)
        xe = jnp.asarray((rng.integers(0, 256, (70000, 784)) / 256).astype(np.float32))
        ye = jnp.asarray(rng.integers(0, 10, 70000).astype(np.int32))
        args = _shard((params, fixed), shard)
        t = time.perf_counter()
        compiled = jax.jit(engine.evaluate).lower(*args, xe[:60000], ye[:60000], xe[60000:], ye[60000:]).compile()
        return compiled, (*args, xe[:60000], ye[:60000], xe[60000:], ye[60000:]), time.perf_counter() - t, None
    if variant == "set":  # the engine's SET (lax.top_k since this prototype was adopted)
        fn = engine.rewire
        args = _shard((params, fixed, engine.keys(trial_ids, 1, 2)), shard)
        t = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        return compiled, args, time.perf_counter() - t, lambda out: {"mask": out[1]["hidden"][0]["mask"][...],
                                                                      "v": out[0]["hidden"][0]["v"][...]}
    if variant in ("baseline", "wide_vmap", "packed_nnx", "packed_nnx_xt", "packed_nnx_map"):
        fn = jax.jit({"baseline": engine.train_epoch, "wide_vmap": make_wide_vmap_epoch(engine),
                      "packed_nnx": make_packed_nnx_epoch(engine),
                      "packed_nnx_xt": make_packed_nnx_epoch(engine, xt=True),
                      "packed_nnx_map": make_packed_nnx_epoch(engine, trial_map=True)}[variant])
        args = _shard((params, fixed, keys), shard)
        back = engine_arrays
    else:
        fn = jax.jit(make_epoch(cfg, variant))
        args = _shard((pack(params, fixed), keys), shard)
        back = lambda out: unpack(out, cfg.hidden[0])
    t = time.perf_counter()
    compiled = fn.lower(*args, x, y).compile()
    compile_s = time.perf_counter() - t
    if hlo:
        path = f"/tmp/engine_variant_{variant}.hlo.txt"
        with open(path, "w") as f:
            f.write(compiled.as_text())
        print(f"  compiled HLO -> {path}")
    return compiled, (*args, x, y), compile_s, back


def time_it(compiled, args, repeats):
    times, cpu, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall_s": min(times), "cpu_s": min(cpu)}, out


def run(variant, cfg, x, y, *, shard=False, repeats=2, hlo=False):
    compiled, args, compile_s, back = prepare(variant, cfg, x, y, shard=shard, hlo=hlo)
    timing, out = time_it(compiled, args, repeats)
    return {"compile_s": compile_s, **timing}, (jax.tree.map(np.asarray, back(out)) if back else None)


#: Pieces timed whole (once per epoch), not per SGD step.
WHOLE = ("eval", "set")


def _data(steps, seed=0):
    n = steps * 10
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
    x[:, rng.random(784) < 0.2] = 0.0
    y = rng.integers(0, 10, n).astype(np.int32)
    return x, y


def _child(args):
    """One pinned process: compile, say READY, wait for 'go', time, print a JSON line."""
    import json

    x, y = _data(args.steps)
    cfg = RunConfig(hidden=(args.hidden,), trials=args.trials, epochs=1, n_train=len(x), n_test=10,
                    first_trial=args.first_trial)
    ready = {v: prepare(v, cfg, x, y) for v in args.variants.split(",")}
    print("READY", flush=True)
    sys.stdin.readline()
    out = {v: time_it(c, a, args.repeats)[0] for v, (c, a, _, _) in ready.items()}
    print(json.dumps(out), flush=True)


def _parent_procs(args):
    """Run the variants in ``args.procs`` processes at once, each pinned to its own core."""
    import json
    import subprocess

    cores = sorted(os.sched_getaffinity(0))
    per = args.trials // args.procs
    procs = []
    for i in range(args.procs):
        cmd = ["taskset", "-c", str(cores[i % len(cores)]), sys.executable, __file__, "--child",
               "--trials", str(per), "--first-trial", str(i * per), "--hidden", str(args.hidden),
               "--steps", str(args.steps), "--variants", args.variants, "--repeats", str(args.repeats)]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      env={**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}))
    for p in procs:
        while p.stdout.readline().strip() != "READY":
            pass
    t = time.perf_counter()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    wall_all = time.perf_counter() - t
    for p in procs:
        p.wait()
    print(f"{args.procs} pinned processes x {per} trials (wall of everything timed, all variants: {wall_all:.2f} s)")
    for variant in args.variants.split(","):
        walls = [r[variant]["wall_s"] for r in results]
        cpus = [r[variant]["cpu_s"] for r in results]
        per_epoch = max(walls) * (1 if variant in WHOLE else 6000 / args.steps)
        # On a quiet machine each pinned process has its core to itself: its CPU time is its wall time.
        quiet = max(cpus) * (1 if variant in WHOLE else 6000 / args.steps)
        print(f"{variant:18s} {args.steps} steps: slowest process {max(walls):.3f} s wall, cpu per process "
              f"{' '.join('%.3f' % c for c in cpus)} s -> epoch {per_epoch:6.2f} s, "
              f"{per_epoch / (2 * args.trials):.4f} s/network-epoch (from cpu: {quiet / (2 * args.trials):.4f})",
              flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--steps", type=int, default=600, help="SGD steps timed (an epoch is 6000)")
    ap.add_argument("--variants", default="baseline,packed,trial_outer")
    ap.add_argument("--devices", type=int, default=1, help="CPU devices (jax_num_cpu_devices); >1 shards the trials")
    ap.add_argument("--procs", type=int, default=1, help="processes, each pinned to one core, trials split between them")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--hlo", action="store_true", help="write each compiled HLO to /tmp")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first-trial", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    if args.procs > 1:
        return _parent_procs(args)
    args.shard = args.devices > 1
    if args.devices > 1:
        jax.config.update("jax_num_cpu_devices", args.devices)
    x, y = _data(args.steps)
    cfg = RunConfig(hidden=(args.hidden,), trials=args.trials, epochs=1, n_train=len(x), n_test=10)
    print(f"T={args.trials} M={args.hidden} steps={args.steps} devices={len(jax.local_devices())} "
          f"shard={args.shard} XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} load={os.getloadavg()[0]:.2f}")
    ref = None
    for variant in args.variants.split(","):
        timing, res = run(variant, cfg, x, y, shard=args.shard, repeats=args.repeats, hlo=args.hlo)
        per_epoch = timing["wall_s"] * (1 if variant in WHOLE else 6000 / args.steps)
        per_net = per_epoch / (2 * args.trials)
        line = (f"{variant:18s} compile {timing['compile_s']:5.1f} s  {args.steps} steps {timing['wall_s']:.3f} s "
                f"(cpu {timing['cpu_s']:.3f} s)  -> epoch {per_epoch:6.2f} s, {per_net:.3f} s/network-epoch")
        if res is None or variant in WHOLE:
            pass
        elif ref is None:
            ref = res
            line += "  [reference]"
        else:
            ok = all(np.allclose(res[k], ref[k], rtol=1e-4, atol=1e-4) for k in ref)
            err = max(float(np.abs(res[k] - ref[k]).max()) for k in ref)
            line += f"  allclose={ok} maxabs={err:.1e}"
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Vectorised multi-trial SGD with SET: every trial and both conditions in one program.

The networks are Flax NNX modules; training runs on their split state as pure
JAX. The state carries two leading axes, ``[trial, condition]``. Within a
trial the control and the normalised network start from the same mask,
weights and biases and see the same minibatches (a paired design), so the
only difference between them is the rule of Eq 6; because they see the same
inputs, ``vmap`` over the condition axis turns their two matmuls into one
wide matmul. Trials differ in every seed (masks, weights, data order, SET).

One epoch is ``lax.scan`` over minibatches; after it come the evaluation
(cost, Eq 4, on the whole training set; accuracy on the test set), the
optional Fig 2 snapshot, and SET. Each of these is compiled once per run.

Example:
  >>> from dendnorm_flax.train import RunConfig, train
  >>> cfg = RunConfig(dataset="mnist", hidden=(100,), epochs=3, trials=2)
  >>> result = train(cfg)                       # doctest: +SKIP
  >>> result.test_accuracy.shape                # [condition, trial, epoch]
  (2, 2, 3)
"""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from dendnorm_flax import models, stats, topology

__all__ = [
    "CONDITIONS",
    "RunConfig",
    "RunResult",
    "DivergenceError",
    "make_model",
    "cost",
    "train",
]

#: Order of the condition axis of every result array.
CONDITIONS = ("control", "normalised")
DATASETS = ("mnist", "fashion")
ARCHITECTURES = ("mlp", "conv")


class DivergenceError(FloatingPointError):
    """A run produced a NaN or infinite cost; names the condition, trial and epoch.

    The three are also attributes (``None`` where unknown), so that a caller
    can report or order them without parsing the message.
    """

    def __init__(self, message: str, *, condition: str | None = None, trial: int | None = None,
                 epoch: int | None = None):
        super().__init__(message)
        self.condition, self.trial, self.epoch = condition, trial, epoch


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one panel's numbers (hashable; static under ``jit``)."""

    dataset: str = "mnist"  # "mnist" (digits) or "fashion"
    architecture: str = "mlp"  # "mlp": SparseMLP; "conv": SparseConvNet (Fig 3D)
    hidden: tuple[int, ...] = (100,)  # sparse hidden layer sizes (conv: one size)
    activation: str = "sigmoid"  # "sigmoid" (Eq 1) or "threshold_linear" (Eq 5)
    eps: float = 0.2  # SET connection probability
    zeta: float = 0.15  # SET fraction of contacts rewired after each epoch
    lr: float = 0.05  # SGD learning rate eta (for v, b, s and the output layer)
    batch_size: int = 10  # minibatch size
    epochs: int = 10  # training epochs
    trials: int = 2  # independent trials (every seed differs)
    first_trial: int = 0  # index of the first trial: trial t uses fold_in(key(seed), t)
    s_init: float = 25.0  # initial s (the authors' scripts use 25)
    init_std: float = 1.0  # sd of the N(0, sd^2) raw weights, biases, output weights, new SET weights
    shared_s: bool = True  # one s for all sparse layers of a network (Eq 7 sums over them)
    n_train: int | None = None  # use the first n_train training images (None: all 60,000)
    n_test: int | None = None  # use the first n_test test images (None: all 10,000)
    snapshot_epochs: tuple[int, ...] = ()  # epochs after which Fig 2 statistics are taken
    seed: int = 0  # base seed of the run

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` with what to do for any invalid field; return self."""
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {list(DATASETS)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; choose one of {list(ARCHITECTURES)}"
            )
        models.activation_fn(self.activation)
        topology.check_eps(self.eps)
        topology.check_zeta(self.zeta)
        if not isinstance(self.hidden, tuple) or not self.hidden:
            raise ValueError(f"hidden must be a non-empty tuple of layer sizes, got {self.hidden!r}")
        for n in self.hidden:
            topology.check_layer_size(n, "hidden layer size")
        if self.architecture == "mlp" and len(self.hidden) > 3:
            raise ValueError(f"an MLP has 1 to 3 hidden layers, got {len(self.hidden)}")
        if self.architecture == "conv" and (len(self.hidden) != 1 or self.activation != "sigmoid"):
            raise ValueError("the conv net has one sparse sigmoid layer: hidden=(M,), activation='sigmoid'")
        for name in ("epochs", "trials", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.first_trial < 0:
            raise ValueError(f"first_trial must be >= 0, got {self.first_trial}")
        for name, full in (("n_train", 60000), ("n_test", 10000)):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 1 <= value <= full):
                raise ValueError(f"{name} must be None or an integer in [1, {full}], got {value!r}")
        n_train = self.n_train or 60000
        if n_train % self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} does not divide the {n_train} training images; "
                f"choose a divisor (e.g. 10) or set n_train to a multiple of it"
            )
        bad = [e for e in self.snapshot_epochs if not (isinstance(e, int) and 0 <= e <= self.epochs)]
        if bad:
            raise ValueError(f"snapshot_epochs must lie in [0, epochs={self.epochs}], got {bad}")
        return self

    @property
    def steps_per_epoch(self) -> int:
        return (self.n_train or 60000) // self.batch_size


def make_model(config: RunConfig, key: jax.Array, *, normalise: bool = True,
               mask_in_forward: bool = True) -> nnx.Module:
    """Build the network ``config`` describes, initialised from ``key``."""
    rngs = nnx.Rngs(params=key)
    common = dict(eps=config.eps, normalise=normalise, s_init=config.s_init,
                  init_std=config.init_std, mask_in_forward=mask_in_forward, rngs=rngs)
    if config.architecture == "conv":
        return models.SparseConvNet(config.hidden[0], 10, **common)
    return models.SparseMLP(784, config.hidden, 10, activation=config.activation,
                            shared_s=config.shared_s, **common)


def cost(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Eq 4 through the softmax of Eq 3: ``-log a_correct`` per example."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


@dataclasses.dataclass
class RunResult:
    """What a run produced. Curves are ``[condition, trial, epoch]`` (conditions as :data:`CONDITIONS`)."""

    config: RunConfig
    train_cost: np.ndarray  # mean cost (Eq 4) on the training set after each epoch
    test_accuracy: np.ndarray  # fraction correct on the test set after each epoch
    trial_seeds: np.ndarray  # [trial] the fold_in index of each trial's key
    snapshots: dict[str, np.ndarray]  # field -> [condition, trial, snapshot, ...]
    timing: dict[str, Any]  # compile_s, train_s and eval_s per epoch, set_s, wall_s
    conditions: tuple[str, ...] = CONDITIONS

    def final(self) -> dict[str, dict[str, float]]:
        """Final-epoch mean and sd (over trials) of cost and accuracy, per condition."""
        out = {}
        for c, name in enumerate(self.conditions):
            cost_last = self.train_cost[c, :, -1]
            acc_last = self.test_accuracy[c, :, -1]
            out[name] = {
                "train_cost_mean": float(cost_last.mean()),
                "train_cost_sd": float(cost_last.std(ddof=1)) if cost_last.size > 1 else float("nan"),
                "test_accuracy_mean": float(acc_last.mean()),
                "test_accuracy_sd": float(acc_last.std(ddof=1)) if acc_last.size > 1 else float("nan"),
            }
        return out

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Every array of the result, keyed ``prefix + name`` (for ``np.savez``)."""
        out = {
            f"{prefix}train_cost": self.train_cost,
            f"{prefix}test_accuracy": self.test_accuracy,
            f"{prefix}trial_seeds": self.trial_seeds,
        }
        if self.snapshots:
            out[f"{prefix}snapshot_epochs"] = np.asarray(self.config.snapshot_epochs)
            for name, value in self.snapshots.items():
                out[f"{prefix}snap/{name}"] = value
        return out


# --------------------------------------------------------------------------- engine


def _load_data(config: RunConfig):
    from dendnorm_flax import data

    x_tr, y_tr = data.load_inputs(config.dataset, "train")
    x_te, y_te = data.load_inputs(config.dataset, "test")
    n_tr = config.n_train or len(x_tr)
    n_te = config.n_test or len(x_te)
    return x_tr[:n_tr], y_tr[:n_tr], x_te[:n_te], y_te[:n_te]


def _check_data(config: RunConfig, arrays) -> tuple[jax.Array, ...]:
    x_tr, y_tr, x_te, y_te = arrays
    for name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],):
            raise ValueError(
                f"{name} data must be x [n, 784] and y [n]; got {x.shape} and {y.shape}"
            )
    n_train = config.steps_per_epoch * config.batch_size
    if x_tr.shape[0] != n_train:
        raise ValueError(
            f"the training data has {x_tr.shape[0]} rows but the config asks for n_train={n_train}; "
            f"set RunConfig(n_train={x_tr.shape[0]}) or pass the first {n_train} rows"
        )
    n_test = config.n_test or 10000
    if x_te.shape[0] != n_test:
        raise ValueError(
            f"the test data has {x_te.shape[0]} rows but the config asks for n_test={n_test}; "
            f"set RunConfig(n_test={x_te.shape[0]}) or pass the first {n_test} rows"
        )
    return (jnp.asarray(x_tr, jnp.float32), jnp.asarray(y_tr, jnp.int32),
            jnp.asarray(x_te, jnp.float32), jnp.asarray(y_te, jnp.int32))


def _sparse_grad_mask(params: nnx.State, fixed: nnx.State, skip: tuple = ()) -> nnx.State:
    """A tree like ``params``: the layer mask for every raw weight ``v`` (not in ``skip``), 1 elsewhere."""
    masks = {path[:-1]: var for path, var in nnx.to_flat_state(fixed) if path[-1] == "mask"}
    flat = []
    for path, var in nnx.to_flat_state(params):
        if path[-1] == "v" and path not in skip:
            flat.append((path, var.replace(masks[path[:-1]][...].astype(var[...].dtype))))
        else:
            flat.append((path, var.replace(jnp.ones((), var[...].dtype))))
    return nnx.from_flat_state(flat)


def _padded_chunks(x: jax.Array, y: jax.Array, chunk: int):
    n = x.shape[0]
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(n_chunks, chunk, x.shape[1])
    ys = jnp.pad(y, (0, pad)).reshape(n_chunks, chunk)
    valid = (jnp.arange(n_chunks * chunk) < n).reshape(n_chunks, chunk)
    return xs, ys, valid


class _Engine:
    """The compiled pieces of one run; state leaves are shaped ``[trial, condition, ...]``."""

    #: On the CPU, the packed epoch runs its trials one after another (``lax.map``)
    #: instead of side by side (``vmap``) when one trial's packed weights ``V``
    #: (both conditions) exceed this many bytes. Every step reads ``V``, writes
    #: its gradient and rewrites ``V``; side by side, each step streams every
    #: trial's copy, and past a size it waits on memory. Measured on the 2-core
    #: EPYC (1 MB L2 per core, 32 MB L3), full epochs of 10 trials: M = 300
    #: (1.9 MB per trial) trains 2.2x faster one trial at a time, with two
    #: pinned workers and in one process; M = 100 (0.6 MB) the same either way
    #: with workers but 1.4x slower one at a time in one multi-threaded process;
    #: M = 30 about 5 % faster side by side. Accelerators always take ``vmap``.
    MAP_TRIALS_ABOVE_BYTES = 2**20

    def __init__(self, config: RunConfig, eval_chunk: int = 2000, trial_loop: str = "auto"):
        if trial_loop not in ("auto", "vmap", "map"):
            raise ValueError(f"trial_loop must be 'auto', 'vmap' or 'map', got {trial_loop!r}")
        self.config = config
        self.eval_chunk = eval_chunk
        self._trial_loop = trial_loop
        template = make_model(config, jax.random.key(0), mask_in_forward=False)
        self.graphdef, _, _ = nnx.split(template, nnx.Param, ...)
        self.tx = optax.sgd(config.lr)

    def trial_loop(self, trials: int, bytes_per_trial: int) -> str:
        """``"vmap"`` (trials side by side) or ``"map"`` (one after another) for the packed epoch.

        The two give the same numbers (a test compares them); only speed differs.
        """
        if self._trial_loop != "auto":
            return self._trial_loop
        big = bytes_per_trial > self.MAP_TRIALS_ABOVE_BYTES
        return "map" if big and trials > 1 and jax.default_backend() == "cpu" else "vmap"

    # -- state ---------------------------------------------------------------
    def init_state(self, trial_ids: np.ndarray):
        """Both conditions of every trial, from each trial's own key."""
        params, fixed = [], []
        for t in trial_ids:
            key = jax.random.fold_in(jax.random.key(self.config.seed), int(t))
            model = make_model(self.config, jax.random.fold_in(key, 0), mask_in_forward=False)
            _, p, f = nnx.split(model, nnx.Param, ...)
            flags = jnp.asarray([name == "normalised" for name in CONDITIONS])
            f_flat = []
            for path, var in nnx.to_flat_state(f):
                if path[-1] == "normalise":
                    f_flat.append((path, var.replace(flags)))
                else:
                    f_flat.append((path, var.replace(jnp.stack([var[...]] * len(CONDITIONS)))))
            params.append(jax.tree.map(lambda a: jnp.stack([a] * len(CONDITIONS)), p))
            fixed.append(nnx.from_flat_state(f_flat))
        stack = lambda *a: jnp.stack(a)
        return jax.tree.map(stack, *params), jax.tree.map(stack, *fixed)

    def keys(self, trial_ids: np.ndarray, epoch: int, stream: int) -> jax.Array:
        base = jax.random.key(self.config.seed)
        return jnp.stack([
            jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(base, int(t)), stream), epoch)
            for t in trial_ids
        ])

    # -- one network -----------------------------------------------------------
    def _loss(self, params, fixed, x, y):
        return cost(nnx.merge(self.graphdef, params, fixed)(x), y).mean()

    def _apply_sgd(self, params, grads, fixed, skip=()):
        # v stays zero off the mask: mask the update, not the forward pass.
        grads = jax.tree.map(jnp.multiply, grads, _sparse_grad_mask(grads, fixed, skip))
        updates, _ = self.tx.update(grads, self.tx.init(params), params)
        return optax.apply_updates(params, updates)

    def _sgd_step(self, params, fixed, x, y):
        """One SGD step of one network (the simple formulation)."""
        return self._apply_sgd(params, jax.grad(self._loss)(params, fixed, x, y), fixed)

    # -- compiled pieces ---------------------------------------------------------
    def train_epoch(self, params, fixed, keys, x_train, y_train):
        """One epoch of SGD for every trial and condition; returns the new params.

        MLPs take the packed path (:meth:`train_epoch_packed`); the conv net,
        whose sparse layer sees condition-specific inputs, the simple one.
        """
        if self.config.architecture == "mlp":
            return self.train_epoch_packed(params, fixed, keys, x_train, y_train)
        return self.train_epoch_simple(params, fixed, keys, x_train, y_train)

    def train_epoch_simple(self, params, fixed, keys, x_train, y_train):
        """The reference formulation: ``vmap`` of one network's SGD step over conditions and trials."""
        cfg = self.config
        B, steps = cfg.batch_size, cfg.steps_per_epoch
        both = jax.vmap(self._sgd_step, in_axes=(0, 0, None, None))  # over conditions

        def one_trial(p, f, key):
            order = jax.random.permutation(key, x_train.shape[0])

            def step(p, i):
                idx = jax.lax.dynamic_slice_in_dim(order, i * B, B)
                return both(p, f, x_train[idx], y_train[idx]), None

            p, _ = jax.lax.scan(step, p, jnp.arange(steps))
            return p

        return jax.vmap(one_trial)(params, fixed, keys)

    def train_epoch_packed(self, params, fixed, keys, x_train, y_train):
        """The same epoch as :meth:`train_epoch_simple` with the first sparse layer packed.

        Within a trial both conditions see the same minibatch, so their raw
        weights are laid side by side, ``V[trial, n_in, C*M]``, for the whole
        epoch: each step is one wide matmul ``U = x @ V``, one gradient matmul
        ``x^T dC/dU`` in the layout of ``V`` and a masked update, with no
        transposes of ``V``. Everything after ``U`` is the NNX model
        (:meth:`SparseMLP.logits_from_projection`), ``vmap``-ed over conditions
        and differentiated by ``jax.grad``, so Eq 7 is applied exactly as in the
        simple formulation (a test compares the two).
        """
        cfg = self.config
        B, steps = cfg.batch_size, cfg.steps_per_epoch
        v_path, m_path = ("hidden", 0, "v"), ("hidden", 0, "mask")
        p_flat, f_flat = dict(nnx.to_flat_state(params)), dict(nnx.to_flat_state(fixed))
        v = p_flat[v_path][...]  # [T, C, n_in, M]
        T, C, n_in, M = v.shape
        pack = lambda a: jnp.moveaxis(a, 1, 2).reshape(T, n_in, C * M)
        V, Mk = pack(v), pack(f_flat[m_path][...])
        # The packed V replaces the layer's own v during the epoch (a placeholder holds its place).
        p_flat[v_path] = p_flat[v_path].replace(jnp.zeros((T, C), v.dtype))
        rest = nnx.from_flat_state(list(p_flat.items()))

        def loss(p, f, U, y):  # summed over conditions; p, f: [C, ...], U: [B, C*M]
            u = U.reshape(U.shape[0], C, M)

            def one(pc, fc, uc):
                return cost(nnx.merge(self.graphdef, pc, fc).logits_from_projection(uc), y).mean()

            return jax.vmap(one, in_axes=(0, 0, 1))(p, f, u).sum()

        def one_trial(V, Mk, p, f, key):
            order = jax.random.permutation(key, x_train.shape[0])

            def step(carry, i):
                V, p = carry
                idx = jax.lax.dynamic_slice_in_dim(order, i * B, B)
                x, y = x_train[idx], y_train[idx]
                gp, gU = jax.grad(loss, argnums=(0, 2))(p, f, x @ V, y)
                V = V - cfg.lr * jnp.where(Mk, x.T @ gU, 0.0)  # mask the update, not the forward
                return (V, self._apply_sgd(p, gp, f, skip=(v_path,))), None

            (V, p), _ = jax.lax.scan(step, (V, p), jnp.arange(steps))
            return V, p

        if self.trial_loop(T, V[0].size * V.dtype.itemsize) == "map":
            V, rest = jax.lax.map(lambda a: one_trial(*a), (V, Mk, rest, fixed, keys))
        else:
            V, rest = jax.vmap(one_trial)(V, Mk, rest, fixed, keys)
        p_flat = dict(nnx.to_flat_state(rest))
        p_flat[v_path] = p_flat[v_path].replace(jnp.moveaxis(V.reshape(T, n_in, C, M), 2, 1))
        return nnx.from_flat_state(list(p_flat.items()))

    def evaluate(self, params, fixed, x_train, y_train, x_test, y_test):
        """Mean training cost and test accuracy, ``[trial, condition]`` each."""

        def net_sums(p, f, x, y, valid):
            logits = nnx.merge(self.graphdef, p, f)(x)
            c = jnp.where(valid, cost(logits, y), 0.0).sum()
            hit = jnp.where(valid, jnp.argmax(logits, -1) == y, False).sum()
            return c, hit

        # Every network sees the same chunk: one wide matmul per chunk.
        all_nets = jax.vmap(jax.vmap(net_sums, in_axes=(0, 0, None, None, None)),
                            in_axes=(0, 0, None, None, None))

        def total(x, y, pick):
            xs, ys, valid = _padded_chunks(x, y, self.eval_chunk)

            def body(acc, inp):
                return acc + all_nets(params, fixed, *inp)[pick].astype(jnp.float32), None

            shape = jax.tree.leaves(params)[0].shape[:2]
            acc, _ = jax.lax.scan(body, jnp.zeros(shape, jnp.float32), (xs, ys, valid))
            return acc / x.shape[0]

        return total(x_train, y_train, 0), total(x_test, y_test, 1)

    def rewire(self, params, fixed, keys):
        """SET on every sparse layer of every network (same random key within a trial)."""
        cfg = self.config

        def one_net(p, f, key):
            model = nnx.merge(self.graphdef, p, f)
            for i, layer in enumerate(model.sparse_layers()):
                n_remove = topology.n_rewired(layer.n_contacts, cfg.zeta)
                mask, v = topology.set_rewire(
                    jax.random.fold_in(key, i), layer.mask[...], layer.v[...], layer.weights(),
                    n_remove=n_remove, init_std=cfg.init_std,
                )
                layer.set_mask(mask, v)
            _, p, f = nnx.split(model, nnx.Param, ...)
            return p, f

        return jax.vmap(jax.vmap(one_net, in_axes=(0, 0, None)))(params, fixed, keys)

    def snapshot(self, params, fixed, x_test):
        def one_net(p, f):
            return stats.snapshot(nnx.merge(self.graphdef, p, f), x_test)

        return jax.vmap(jax.vmap(one_net))(params, fixed)


def _shard_trials(tree, trials: int):
    """Shard the leading (trial) axis over all local devices when they divide it."""
    devices = jax.local_devices()
    if len(devices) < 2 or trials % len(devices):
        return tree
    mesh = jax.sharding.Mesh(np.asarray(devices), ("trials",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("trials"))
    return jax.device_put(tree, sharding)


def epoch_bar(config: RunConfig, desc: str | None = None):
    """The progress bar of a run, one step per epoch (shared by in-process and worker runs)."""
    from tqdm import tqdm  # plain text: widget output would break the book build

    return tqdm(total=config.epochs, desc=desc or f"{config.dataset} {config.hidden}", unit="epoch")


def train(config: RunConfig, *, data=None, progress: bool = True, desc: str | None = None,
          workers: int | str = "auto", on_epoch=None) -> RunResult:
    """Train every trial of both conditions of ``config``; return the curves.

    Args:
      config: the run; validated first.
      data: optional ``(x_train, y_train, x_test, y_test)`` with ``x`` as
        float32 ``[n, 784]`` pixels/256; by default the dataset is loaded and
        cut to ``n_train``/``n_test``.
      progress: show a tqdm bar per epoch.
      desc: label of the progress bar.
      workers: processes the trials are split over. ``"auto"``: one per CPU
        core on the CPU backend with one device (see
        :mod:`dendnorm_flax.parallel`; ``DENDNORM_WORKERS`` overrides), else
        1. With 1 everything runs in this process. The numbers do not depend
        on it.
      on_epoch: optional callable, called with the epoch number after each
        epoch's evaluation (in-process runs only).

    Raises:
      DivergenceError: the cost of some network became NaN or infinite; the
        message names the condition, trial and epoch.
    """
    config.validate()
    from dendnorm_flax import parallel

    if workers == "auto":
        workers = parallel.default_workers(config.trials)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be 'auto' or an integer >= 1, got {workers!r}")
    if min(workers, config.trials) > 1:
        if on_epoch is not None:
            raise ValueError("on_epoch is called in-process only; pass workers=1 with it")
        return parallel.run_trials(config, workers, data=data, progress=progress, desc=desc)
    wall0 = time.perf_counter()
    x_tr, y_tr, x_te, y_te = _check_data(config, data if data is not None else _load_data(config))
    engine = _Engine(config)
    trial_ids = np.arange(config.first_trial, config.first_trial + config.trials)
    params, fixed = _shard_trials(engine.init_state(trial_ids), config.trials)

    t0 = time.perf_counter()
    k0 = engine.keys(trial_ids, 1, 1)
    train_c = jax.jit(engine.train_epoch, donate_argnums=(0,)).lower(params, fixed, k0, x_tr, y_tr).compile()
    eval_c = jax.jit(engine.evaluate).lower(params, fixed, x_tr, y_tr, x_te, y_te).compile()
    set_c = jax.jit(engine.rewire).lower(params, fixed, k0).compile()
    snap_c = (jax.jit(engine.snapshot).lower(params, fixed, x_te).compile()
              if config.snapshot_epochs else None)
    compile_s = time.perf_counter() - t0

    E = config.epochs
    costs = np.zeros((config.trials, len(CONDITIONS), E), np.float64)
    accs = np.zeros_like(costs)
    snaps: list[dict[str, np.ndarray]] = []
    train_s, eval_s, set_s = [], [], []

    def take_snapshot():
        snaps.append(jax.tree.map(np.asarray, snap_c(params, fixed, x_te)))

    if 0 in config.snapshot_epochs:
        take_snapshot()
    bar = epoch_bar(config, desc) if progress else None
    try:
        for epoch in range(1, E + 1):
            t = time.perf_counter()
            params = train_c(params, fixed, engine.keys(trial_ids, epoch, 1), x_tr, y_tr)
            jax.block_until_ready(params)
            train_s.append(time.perf_counter() - t)

            t = time.perf_counter()
            c, a = (np.asarray(v) for v in eval_c(params, fixed, x_tr, y_tr, x_te, y_te))
            eval_s.append(time.perf_counter() - t)
            costs[:, :, epoch - 1], accs[:, :, epoch - 1] = c, a
            bad = np.argwhere(~np.isfinite(c))
            if bad.size:
                t_i, c_i = bad[0]
                raise DivergenceError(
                    f"run diverged: cost is {c[t_i, c_i]} for condition {CONDITIONS[c_i]!r}, "
                    f"trial {int(trial_ids[t_i])}, epoch {epoch} "
                    f"({config.dataset}, hidden={config.hidden}, activation={config.activation}, "
                    f"lr={config.lr}); lower lr or s_init, and do not plot this run",
                    condition=CONDITIONS[c_i], trial=int(trial_ids[t_i]), epoch=epoch,
                )
            if epoch in config.snapshot_epochs:
                take_snapshot()
            if on_epoch is not None:
                on_epoch(epoch)
            if epoch < E:
                t = time.perf_counter()
                params, fixed = set_c(params, fixed, engine.keys(trial_ids, epoch, 2))
                jax.block_until_ready(fixed)
                set_s.append(time.perf_counter() - t)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(acc_control=f"{a[:, 0].mean():.3f}", acc_normalised=f"{a[:, 1].mean():.3f}")
    finally:
        if bar is not None:
            bar.close()

    to_ct = lambda a: np.swapaxes(a, 0, 1)  # [trial, condition] -> [condition, trial]
    snapshots = {}
    if snaps:
        for name in snaps[0]:
            snapshots[name] = np.stack([to_ct(s[name]) for s in snaps], axis=2)
    return RunResult(
        config=config,
        train_cost=to_ct(costs),
        test_accuracy=to_ct(accs),
        trial_seeds=trial_ids,
        snapshots=snapshots,
        timing={
            "compile_s": compile_s,
            "train_s": train_s,
            "eval_s": eval_s,
            "set_s": set_s,
            "wall_s": time.perf_counter() - wall0,
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.local_devices()],
            "workers": 1,
            "worker_trials": [config.trials],
            # peak resident memory of the process that trained (MB; Linux reports kB)
            "peak_rss_mb": [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024],
        },
    )

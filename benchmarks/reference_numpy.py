"""A straightforward per-example numpy implementation of the paper's network and protocol.

This is the *baseline* of ``benchmarks/speed.py`` and the independent check of
``tests/test_reference.py``. It is written here from the paper's equations, in
the style of the authors' scripts (one example at a time, minibatch gradients
accumulated example by example), and shares no code with ``dendnorm_flax``.

Network (784-M-10): ``z = b + x @ w`` (Eq 2), ``a = sigmoid(z)`` (Eq 1), output
logits ``a @ W_out + b_out``, softmax (Eq 3), cost ``-log a_correct`` (Eq 4),
averaged over a minibatch of 10. Effective weights (Eq 6): control ``w = v``;
normalised ``w_ki = s v_ki / n_i`` with ``n_i`` the number of contacts of
hidden neuron ``i`` (its mask column count; ``n_i = 0`` gives ``w_i = 0``).

Gradients (Eq 7), from ``g = dC/dw`` computed by ordinary backprop:
``dC/dv_ki = (s / n_i) g_ki`` on the mask (0 off it) and
``dC/ds = sum_i sum_k (v_ki / n_i) g_ki``. The control has ``dC/dv = g`` on
the mask. SGD with learning rate 0.05 updates ``v, b, s`` and the dense output
layer. ``v`` stays exactly zero off the mask.

SET (after an epoch): remove the ``round(zeta * contacts)`` contacts with the
smallest ``|w|`` (ties: lower flat index first), then add as many at uniformly
random positions that are empty after the removal, with ``v ~ N(0, 1)``.

The arithmetic runs in the dtype of the net (``float64`` by default; the
speed benchmark uses ``float32``, the engine's precision). Only numpy is
imported, so worker processes stay small.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time

import numpy as np

N_IN, N_OUT = 784, 10


def n_contacts(n_in: int, n_out: int, eps: float) -> int:
    return max(1, int(round(eps * n_in * n_out)))


def n_rewired(contacts: int, zeta: float) -> int:
    return int(round(zeta * contacts))


@dataclasses.dataclass
class Net:
    """One 784-M-10 network: raw weights on a mask, shared ``s``, dense output layer."""

    mask: np.ndarray  # bool [784, M]
    v: np.ndarray  # [784, M], zero off the mask
    b: np.ndarray  # [M]
    s: float  # shared magnitude (used only when normalised)
    W: np.ndarray  # [M, 10] output weights
    c: np.ndarray  # [10] output biases
    normalise: bool

    def __post_init__(self):
        dt = np.dtype(self.v.dtype)
        self.mask = np.asarray(self.mask, bool)
        self.v = np.where(self.mask, self.v, 0).astype(dt)
        self.b = np.asarray(self.b, dt)
        self.W = np.asarray(self.W, dt)
        self.c = np.asarray(self.c, dt)
        self.s = dt.type(self.s)
        self.n = self.mask.sum(axis=0)

    @property
    def dtype(self) -> np.dtype:
        return self.v.dtype

    @classmethod
    def init(cls, rng: np.random.Generator, M: int, *, normalise: bool, eps: float = 0.2,
             s_init: float = 25.0, std: float = 1.0, dtype=np.float64) -> "Net":
        """Erdos-Renyi mask with exactly round(eps 784 M) contacts; v, b, W, c ~ N(0, std^2)."""
        k = n_contacts(N_IN, M, eps)
        mask = np.zeros(N_IN * M, bool)
        mask[rng.permutation(N_IN * M)[:k]] = True
        mask = mask.reshape(N_IN, M)
        v = std * rng.standard_normal((N_IN, M))
        b = std * rng.standard_normal(M)
        W = std * rng.standard_normal((M, N_OUT))
        c = std * rng.standard_normal(N_OUT)
        return cls(mask, v.astype(dtype), b, s_init, W, c, normalise)

    @classmethod
    def from_arrays(cls, arrays: dict, *, normalise: bool, dtype=np.float64) -> "Net":
        """From ``mask, v, b, s, W_out, b_out`` (e.g. extracted from the engine's initial state)."""
        return cls(np.asarray(arrays["mask"], bool), np.asarray(arrays["v"], dtype),
                   np.asarray(arrays["b"]), float(arrays["s"]), np.asarray(arrays["W_out"]),
                   np.asarray(arrays["b_out"]), normalise)

    def arrays(self) -> dict:
        return {"mask": self.mask.copy(), "v": self.v.copy(), "b": self.b.copy(), "s": float(self.s),
                "W_out": self.W.copy(), "b_out": self.c.copy()}

    # -- Eq 6 ---------------------------------------------------------------
    def scale(self) -> np.ndarray:
        """``s / n_i`` per hidden neuron (normalised; 0 where ``n_i = 0``) or 1 (control)."""
        if not self.normalise:
            return np.ones(self.n.shape, self.dtype)
        out = np.zeros(self.n.shape, self.dtype)
        np.divide(self.s, self.n, out=out, where=self.n > 0)
        return out

    def weights(self) -> np.ndarray:
        """Effective weights ``w`` [784, M] (zero off the mask)."""
        return self.v * self.scale()

    # -- one example -------------------------------------------------------------
    @staticmethod
    def _sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    def _forward(self, x, w):
        a = self._sigmoid(x @ w + self.b)
        logits = a @ self.W + self.c
        e = np.exp(logits - logits.max())
        return a, e / e.sum()

    def cost_and_hit(self, x: np.ndarray, y: int, w: np.ndarray) -> tuple[float, bool]:
        _, p = self._forward(x, w)
        return -np.log(p[y]), int(np.argmax(p)) == y

    # -- SGD -------------------------------------------------------------------
    def sgd_minibatch(self, xs: np.ndarray, ys: np.ndarray, lr: float) -> None:
        """One SGD step on a minibatch, its gradient accumulated one example at a time."""
        scale = self.scale()
        w = self.v * scale
        gw = np.zeros_like(self.v)  # dC/dw summed over the examples
        gb = np.zeros_like(self.b)
        gW = np.zeros_like(self.W)
        gc = np.zeros_like(self.c)
        for x, y in zip(xs, ys):
            a, p = self._forward(x, w)
            d_out = p.copy()  # d(-log p_y)/d logits = p - onehot(y)
            d_out[y] -= 1.0
            gW += np.outer(a, d_out)
            gc += d_out
            d_hid = (self.W @ d_out) * a * (1.0 - a)
            gb += d_hid
            gw += np.outer(x, d_hid)
        k = len(xs)
        gw /= k
        # Eq 7: dC/dv = (s / n_i) dC/dw on the mask; dC/ds = sum_i sum_k (v_ki / n_i) dC/dw_ki.
        if self.normalise:
            inv_n = np.zeros(self.n.shape, self.dtype)
            np.divide(1.0, self.n, out=inv_n, where=self.n > 0)
            gs = np.sum(self.v * inv_n * gw)
            self.s = self.s - lr * gs
        self.v -= lr * np.where(self.mask, gw * scale, 0)
        self.b -= lr * gb / k
        self.W -= lr * gW / k
        self.c -= lr * gc / k

    def train_epoch(self, x: np.ndarray, y: np.ndarray, order: np.ndarray, *,
                    lr: float = 0.05, batch: int = 10) -> None:
        """Minibatches of ``batch`` consecutive entries of ``order`` (indices into x, y)."""
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            self.sgd_minibatch(x[idx], y[idx], lr)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Mean cost (Eq 4) and accuracy over ``x, y``, one example at a time."""
        w = self.weights()
        total, hits = 0.0, 0
        for xi, yi in zip(x, y):
            c, h = self.cost_and_hit(xi, int(yi), w)
            total += c
            hits += h
        return total / len(x), hits / len(x)

    # -- SET -------------------------------------------------------------------
    def set_rewire(self, rng: np.random.Generator, zeta: float = 0.15, std: float = 1.0) -> int:
        """Prune the weakest ``round(zeta * contacts)`` contacts by ``|w|``, regrow as many at random."""
        flat_mask = self.mask.reshape(-1).copy()
        k = n_rewired(int(flat_mask.sum()), zeta)
        if k == 0:
            return 0
        score = np.where(flat_mask, np.abs(self.weights()).reshape(-1), np.inf)
        weakest = np.argsort(score, kind="stable")[:k]
        flat_mask[weakest] = False
        flat_v = np.where(flat_mask, self.v.reshape(-1), 0)
        empty = np.flatnonzero(~flat_mask)
        grown = rng.choice(empty, size=k, replace=False)
        flat_mask[grown] = True
        flat_v[grown] = std * rng.standard_normal(k)
        self.mask = flat_mask.reshape(self.mask.shape)
        self.v = flat_v.reshape(self.v.shape).astype(self.dtype)
        self.n = self.mask.sum(axis=0)
        return k


# --------------------------------------------------------------------------- speed worker


def blas_info() -> str:
    """Which BLAS numpy uses and its thread settings (threadpoolctl if installed)."""
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS")}
    try:
        from threadpoolctl import threadpool_info

        pools = [f"{p.get('internal_api')} {p.get('version')} threads={p.get('num_threads')} "
                 f"arch={p.get('architecture')}" for p in threadpool_info()]
        return f"{'; '.join(pools)} env={env}"
    except ImportError:
        return f"threadpoolctl not installed; env={env}"


def peak_rss_mb() -> float:
    """This process's own peak resident memory: VmHWM (reset by exec, unlike ru_maxrss,
    which in a spawned child still counts the pages of the parent it was forked from)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_worker(job: dict) -> dict:
    """Speed task for one process: train one net on a slice, time it, extrapolate nothing.

    ``job``: M, normalise, seed, core (or None), dtype, x_train, y_train,
    n_train (examples trained), n_eval (examples evaluated), zeta.
    Returns seconds for training ``n_train`` examples, evaluating ``n_eval``,
    one SET step, and this process's peak RSS.
    """
    core = job.get("core")
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    rng = np.random.default_rng(job["seed"])
    dtype = np.dtype(job.get("dtype", "float32"))
    x = np.asarray(job["x_train"], dtype)
    y = np.asarray(job["y_train"], np.int64)
    net = Net.init(rng, job["M"], normalise=job["normalise"], dtype=dtype)
    n_tr = job["n_train"] - job["n_train"] % 10
    order = rng.permutation(len(x))[:n_tr] if n_tr <= len(x) else rng.integers(0, len(x), n_tr)
    # Warm up (first-touch allocations, code paths) on one minibatch.
    net.sgd_minibatch(x[order[:10]], y[order[:10]], 0.05)
    t = time.perf_counter()
    net.train_epoch(x, y, order)
    train_s = time.perf_counter() - t
    n_ev = min(job["n_eval"], len(x))
    t = time.perf_counter()
    cost, acc = net.evaluate(x[:n_ev], y[:n_ev])
    eval_s = time.perf_counter() - t
    t = time.perf_counter()
    net.set_rewire(rng, job.get("zeta", 0.15))
    set_s = time.perf_counter() - t
    return {
        "M": job["M"], "normalise": job["normalise"], "n_train": int(n_tr), "n_eval": int(n_ev),
        "train_s": train_s, "eval_s": eval_s, "set_s": set_s, "cost": float(cost),
        "maxrss_mb": peak_rss_mb(),
        "core": core, "pid": os.getpid(), "blas": blas_info(), "dtype": dtype.name,
    }

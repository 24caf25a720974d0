"""One frozen spec per figure panel, three scale presets, and resumable panel runs.

A *panel* is one learning-curve comparison of the paper (control against
normalised); its settings are a :class:`~dendnorm_flax.train.RunConfig`.
What a panel *is* (network, dataset) never depends on the scale; how long and
on how much data it is trained does:

* ``smoke``: proves the pipeline (CI, 2 cores, ~3 minutes for all figures);
  tiny subsets, two epochs, two trials. Its numbers mean nothing.
* ``quick``: the default of ``dendnorm reproduce``; every figure on a 2-core
  laptop CPU in about 20 minutes, still showing the effect.
* ``paper``: the protocol of Bird & Cuntz (10 trials; 100 epochs for Figs 1
  and 2, 50 for Fig 3; all 60,000/10,000 images); meant for a GPU.

:func:`run_panel` trains one panel (or reuses a finished result with the same
configuration) and saves it under ``<output_dir>/<figure>/panels/``;
:func:`write_figure_results` gathers a figure's panels into
``results.npz`` and ``results.json`` with their provenance.

Example:
  >>> from dendnorm_flax import experiments
  >>> experiments.panel_config("fig1", "digits_M100", "paper").hidden
  (100,)
  >>> r = experiments.run_panel("fig1", "digits_M30", scale="smoke",
  ...                           output_dir="/tmp/results")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dendnorm_flax.train import CONDITIONS, DivergenceError, RunConfig, RunResult

__all__ = [
    "SCALES",
    "FIGURES",
    "FigureSpec",
    "PanelSpec",
    "PanelResult",
    "figure_spec",
    "panel_names",
    "panel_spec",
    "panel_config",
    "panels",
    "apply_overrides",
    "check_overrides",
    "config_hash",
    "settings",
    "map_epochs",
    "scale_banner",
    "hyperparameter_table",
    "run_panel",
    "write_figure_results",
    "load_figure_results",
    "provenance",
    "settings_like",
]

SCALES = ("smoke", "quick", "paper")
#: Bumped when the saved panel format changes, so old files are not resumed.
RESULT_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """Figure-level metadata: title, notebook, and its panels in the paper's order."""

    figure: str  # "fig1", "fig2", "fig3"
    title: str  # the paper's figure title
    notebook: str  # book/<notebook>.md, executed to <out>/<figure>/<notebook>.ipynb
    panels: tuple[str, ...]  # panel names, in the order they are plotted


@dataclasses.dataclass(frozen=True)
class PanelSpec:
    """One panel at one scale: its name, a human title, and the full run configuration."""

    figure: str
    panel: str
    title: str  # e.g. "digits, M = 30"
    scale: str
    config: RunConfig


FIGURES: dict[str, FigureSpec] = {
    "fig1": FigureSpec(
        "fig1", "Dendritic normalisation improves learning in sparse artificial neural networks",
        "fig1_learning",
        ("digits_M30", "fashion_M30", "digits_M100", "fashion_M100", "digits_M300", "fashion_M300"),
    ),
    "fig2": FigureSpec("fig2", "Evolution of synaptic weights", "fig2_connectivity", ("mnist_M100",)),
    "fig3": FigureSpec(
        "fig3", "Improved training in deeper networks", "fig3_deeper_networks",
        ("two_layers", "three_layers", "conv", "threshold_linear"),
    ),
}

# What each panel *is*: network and dataset (the same at every scale), and its title.
_NETWORKS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "fig1": {
        f"{name}_M{m}": (f"{name}, M = {m}", dict(dataset=ds, hidden=(m,)))
        for m in (30, 100, 300)
        for name, ds in (("digits", "mnist"), ("fashion", "fashion"))
    },
    "fig2": {"mnist_M100": ("digits, M = 100", dict(dataset="mnist", hidden=(100,)))},
    "fig3": {
        "two_layers": ("2 sparse hidden layers", dict(dataset="fashion", hidden=(100, 100))),
        "three_layers": ("3 sparse hidden layers", dict(dataset="fashion", hidden=(100, 100, 100))),
        "conv": ("convolutional net", dict(dataset="fashion", architecture="conv", hidden=(100,))),
        "threshold_linear": ("threshold-linear, M = 100",
                             dict(dataset="fashion", hidden=(100,), activation="threshold_linear")),
    },
}

# The protocol shared by every panel at every scale (Methods of the paper).
_PROTOCOL = dict(eps=0.2, zeta=0.15, lr=0.05, batch_size=10)

# Per scale and figure: "all" applies to every panel, a panel name to that panel only.
_PRESETS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "smoke": {
        # CI: each panel costs a compile (~3-8 s) plus well under a second of
        # training; two epochs so that curves are lines, two trials so that an
        # sd exists. 500 images are a multiple of the batch size.
        "fig1": {"all": dict(trials=2, epochs=2, n_train=500, n_test=500)},
        "fig2": {"all": dict(trials=2, epochs=2, n_train=500, n_test=500, snapshot_epochs=(1, 2))},
        "fig3": {
            "all": dict(trials=2, epochs=2, n_train=500, n_test=500),
            # the conv net is ~10x slower per image than the MLPs on a CPU
            "conv": dict(n_train=100, n_test=100),
        },
    },
    "quick": {
        # Budget: all three figures in <= 20 minutes on 2 CPU cores. Measured
        # on the 2-core machine (2026-12-04, 3 trials x 2 conditions, 60,000
        # images, two worker processes): Fig 1 panels take 10-20 s at M = 30
        # and 100 and ~50 s at M = 300; the whole preset ran in ~8 minutes.
        "fig1": {
            # 3 trials: the smallest number that gives a mean +- sd band;
            # 8 epochs on all 60,000 images (~2.5 minutes for the figure): the
            # early epochs, where the two conditions differ most.
            "all": dict(trials=3, epochs=8),
        },
        "fig2": {
            # SET moves contacts towards the informative pixels only slowly:
            # 20 epochs on all data (~2 minutes); snapshots at 1, 2, 5, 10
            # and 20 (maps at 1, 10, 20, as the paper's 1, 10, 100).
            "all": dict(trials=3, epochs=20, snapshot_epochs=(1, 2, 5, 10, 20)),
        },
        "fig3": {
            # 3 trials x 8 epochs on all 60,000 images for the three MLPs.
            "all": dict(trials=3, epochs=8),
            # the conv net costs ~2 ms per image per epoch for 3 trials on
            # 2 cores (~2.5 minutes per full epoch): the first 10,000 training
            # and 2,000 test images keep its 8 epochs near 3.5 minutes.
            "conv": dict(n_train=10000, n_test=2000),
        },
    },
    "paper": {
        # The protocol: 10 trials, 100 epochs (Figs 1-2) or 50 (Fig 3), all
        # data; Fig 2B snapshots at epochs 1, 5, 10, 25, 100 (2A: 1, 10, 100).
        "fig1": {"all": dict(trials=10, epochs=100)},
        "fig2": {"all": dict(trials=10, epochs=100, snapshot_epochs=(1, 5, 10, 25, 100))},
        "fig3": {"all": dict(trials=10, epochs=50)},
    },
}

_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
_TUPLE_FIELDS = ("hidden", "snapshot_epochs")


# --------------------------------------------------------------------------- specs


def _check_figure(figure: str) -> FigureSpec:
    try:
        return FIGURES[figure]
    except (KeyError, TypeError):
        raise ValueError(f"unknown figure {figure!r}; valid figures are {', '.join(FIGURES)}") from None


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    return scale


def figure_spec(figure: str) -> FigureSpec:
    """The :class:`FigureSpec` of ``figure`` (``"fig1"``, ``"fig2"`` or ``"fig3"``)."""
    return _check_figure(figure)


def panel_names(figure: str) -> tuple[str, ...]:
    """The panels of ``figure`` in the paper's order."""
    return _check_figure(figure).panels


def check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate the names of ``overrides`` (RunConfig fields) and normalise their values.

    Lists become tuples for ``hidden`` and ``snapshot_epochs`` (JSON and
    papermill carry lists). Raises ``ValueError`` naming the valid fields.
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ValueError(f"overrides must be a dict of RunConfig field -> value, got {overrides!r}")
    unknown = [k for k in overrides if k not in _FIELDS]
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"valid RunConfig fields are: {', '.join(_FIELDS)}"
        )
    out = dict(overrides)
    for name in _TUPLE_FIELDS:
        if name in out and isinstance(out[name], (list, tuple)):
            out[name] = tuple(int(v) for v in out[name])
        elif name in out and isinstance(out[name], int) and not isinstance(out[name], bool):
            out[name] = (out[name],)
    return out


def apply_overrides(config: RunConfig, overrides: Mapping[str, Any] | None) -> RunConfig:
    """``config`` with ``overrides`` applied (see :func:`check_overrides`).

    If ``epochs`` is overridden but ``snapshot_epochs`` is not, snapshot
    epochs past the new last epoch are dropped and the last epoch is added,
    so a shorter run still ends with a snapshot.
    """
    overrides = check_overrides(overrides)
    new = dataclasses.replace(config, **overrides)
    if "epochs" in overrides and "snapshot_epochs" not in overrides and config.snapshot_epochs:
        kept = tuple(e for e in config.snapshot_epochs if e <= new.epochs)
        if not kept or kept[-1] != new.epochs:
            kept = kept + (new.epochs,)
        new = dataclasses.replace(new, snapshot_epochs=kept)
    return new


def panel_spec(figure: str, panel: str, scale: str = "quick", overrides: Mapping[str, Any] | None = None,
               seed: int = 0) -> PanelSpec:
    """The full :class:`PanelSpec` of one panel at ``scale``, with ``overrides`` applied last."""
    fig = _check_figure(figure)
    _check_scale(scale)
    if panel not in fig.panels:
        raise ValueError(f"unknown panel {panel!r} of {figure}; valid panels are {', '.join(fig.panels)}")
    title, network = _NETWORKS[figure][panel]
    preset = _PRESETS[scale][figure]
    fields = {**_PROTOCOL, **network, **preset.get("all", {}), **preset.get(panel, {}), "seed": int(seed)}
    config = apply_overrides(RunConfig(**fields), overrides).validate()
    return PanelSpec(figure=figure, panel=panel, title=title, scale=scale, config=config)


def panel_config(figure: str, panel: str, scale: str = "quick",
                 overrides: Mapping[str, Any] | None = None, seed: int = 0) -> RunConfig:
    """The :class:`RunConfig` of one panel (shortcut for ``panel_spec(...).config``)."""
    return panel_spec(figure, panel, scale, overrides, seed).config


def panels(figure: str, scale: str = "quick", overrides: Mapping[str, Any] | None = None,
           seed: int = 0) -> dict[str, RunConfig]:
    """``{panel: RunConfig}`` of every panel of ``figure`` at ``scale``, in the paper's order."""
    return {p: panel_config(figure, p, scale, overrides, seed) for p in panel_names(figure)}


def settings(config: RunConfig) -> dict[str, Any]:
    """``config`` as a JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_hash(config: RunConfig) -> str:
    """A short hash of every field of ``config``: equal settings, equal hash."""
    text = json.dumps({"format": RESULT_FORMAT, **settings(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def map_epochs(snapshot_epochs) -> tuple[int, ...]:
    """The snapshot epochs shown as Fig 2A maps (at most 3).

    The paper's 1, 10, 100 when all were taken; else all of them if there are
    at most three; else the first, the last and the one nearest their middle.
    """
    epochs = sorted({int(e) for e in snapshot_epochs})
    if {1, 10, 100} <= set(epochs):
        return (1, 10, 100)
    if len(epochs) <= 3:
        return tuple(epochs)
    first, last = epochs[0], epochs[-1]
    middle = min(epochs[1:-1], key=lambda e: (abs(e - (first + last) / 2), e))
    return (first, middle, last)


def scale_banner(scale: str) -> str:
    """A one-line statement of what numbers at ``scale`` are worth (notebooks print it)."""
    _check_scale(scale)
    if scale == "smoke":
        return ("!! SCALE: smoke. Tiny data subsets, 2 epochs, 2 trials: these numbers mean nothing; "
                "they only show that the pipeline runs. Use scale='quick' or 'paper' for results.")
    if scale == "quick":
        return ("SCALE: quick. 3 trials, 8-20 epochs, some panels on data subsets: the early part "
                "of training on a laptop CPU, not the paper's 100-epoch protocol (scale='paper').")
    return "SCALE: paper. The paper's protocol: 10 trials, 100 epochs (Figs 1-2) or 50 (Fig 3), all data."


def hyperparameter_table(scales=SCALES) -> list[dict[str, Any]]:
    """One row per (figure, panel, scale): every RunConfig field plus figure, panel, title, scale.

    The book's methods page renders it. Values are JSON-ready (tuples as lists).
    """
    rows = []
    for scale in scales:
        for figure in FIGURES:
            for panel in panel_names(figure):
                spec = panel_spec(figure, panel, scale)
                rows.append({"figure": figure, "panel": panel, "title": spec.title, "scale": scale,
                             **settings(spec.config)})
    return rows


# --------------------------------------------------------------------------- running


@dataclasses.dataclass
class PanelResult:
    """One panel's outcome: a finished run, or a divergence with its message."""

    spec: PanelSpec
    config_hash: str
    result: RunResult | None  # None when the run diverged
    diverged: bool
    error: str | None
    wall_time_s: float
    compile_s: float
    started: str  # ISO time the training started
    finished: str
    resumed: bool  # True when loaded from an earlier run instead of trained
    overrides: dict[str, Any]
    seed: int
    timing: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def panel(self) -> str:
        return self.spec.panel

    @property
    def figure(self) -> str:
        return self.spec.figure

    def final(self) -> dict[str, dict[str, float | None]] | None:
        """Final-epoch mean and sd over trials per condition (None if diverged); NaN -> None."""
        if self.result is None:
            return None
        return {c: {k: (v if math.isfinite(v) else None) for k, v in d.items()}
                for c, d in self.result.final().items()}

    def entry(self) -> dict[str, Any]:
        """The panel's record in ``results.json``."""
        return {
            "settings": settings(self.spec.config),
            "config_hash": self.config_hash,
            "conditions": list(CONDITIONS),
            "final": self.final(),
            "wall_time_s": float(self.wall_time_s),
            "compile_s": float(self.compile_s),
            # how the trials were spread: worker processes and trials per process (1 and [trials]
            # in one process; unknown for a diverged run)
            "workers": self.timing.get("workers"),
            "worker_trials": self.timing.get("worker_trials"),
            "diverged": bool(self.diverged),
            "error": self.error,
        }

    def summary(self) -> str:
        """One line: what ran and how it ended."""
        cfg = self.spec.config
        what = f"{self.figure}/{self.panel}: {cfg.trials} trials x {cfg.epochs} epochs"
        how = "reused" if self.resumed else f"{self.wall_time_s:.0f} s"
        if self.diverged:
            return f"{what}: DIVERGED ({how}): {self.error}"
        f = self.final()
        acc = "; ".join(
            f"{c} {f[c]['test_accuracy_mean']:.3f}" + (f" +- {f[c]['test_accuracy_sd']:.3f}"
                                                       if f[c]["test_accuracy_sd"] is not None else "")
            for c in CONDITIONS
        )
        return f"{what} ({how}); final test accuracy: {acc}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _panel_paths(output_dir, figure: str, panel: str) -> tuple[Path, Path]:
    d = Path(output_dir) / figure / "panels"
    return d / f"{panel}.npz", d / f"{panel}.json"


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _json_dump(obj) -> bytes:
    return (json.dumps(obj, indent=1, allow_nan=False) + "\n").encode()


def _load_panel(spec: PanelSpec, h: str, output_dir, overrides, seed) -> PanelResult | None:
    """The saved result of ``spec`` if complete and made with the same configuration hash."""
    npz, js = _panel_paths(output_dir, spec.figure, spec.panel)
    if not js.is_file():
        return None
    try:
        meta = json.loads(js.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("config_hash") != h or not meta.get("complete"):
        return None
    result = None
    if not meta.get("diverged"):
        if not npz.is_file():
            return None
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            snapshots = {k[len("snap/"):]: v for k, v in arrays.items() if k.startswith("snap/")}
            result = RunResult(
                config=spec.config,
                train_cost=arrays["train_cost"],
                test_accuracy=arrays["test_accuracy"],
                trial_seeds=arrays["trial_seeds"],
                snapshots=snapshots,
                timing=meta.get("timing", {}),
            )
        except (OSError, ValueError, KeyError):
            return None
    return PanelResult(
        spec=spec, config_hash=h, result=result, diverged=bool(meta.get("diverged")),
        error=meta.get("error"), wall_time_s=float(meta.get("wall_time_s", 0.0)),
        compile_s=float(meta.get("compile_s", 0.0)), started=meta.get("started", ""),
        finished=meta.get("finished", ""), resumed=True, overrides=dict(overrides), seed=seed,
        timing=meta.get("timing", {}),
    )


def _save_panel(pr: PanelResult, output_dir) -> None:
    """Arrays first, then the JSON that marks the panel complete (both written atomically).

    An older record goes first, so a run killed after writing the new arrays
    never leaves the old record (maybe of other settings) beside them.
    """
    npz, js = _panel_paths(output_dir, pr.figure, pr.panel)
    if js.exists():
        js.unlink()
    if pr.result is not None:
        arrays = pr.result.arrays()
        _atomic_write_bytes(npz, lambda f: np.savez(f, **arrays))
    elif npz.exists():
        npz.unlink()
    timing = {k: v for k, v in pr.timing.items()}
    meta = {**pr.entry(), "figure": pr.figure, "panel": pr.panel, "scale": pr.spec.scale,
            "started": pr.started, "finished": pr.finished, "timing": timing, "complete": True}
    _atomic_write_bytes(js, lambda f: f.write(_json_dump(meta)))


def run_panel(figure: str, panel: str, scale: str = "quick", overrides: Mapping[str, Any] | None = None,
              seed: int = 0, output_dir: str | os.PathLike = "results", resume: bool = True, *,
              progress: bool = False, data=None, verbose: bool = True) -> PanelResult:
    """Train one panel (both conditions, every trial) and save it, or reuse a saved result.

    The result goes to ``<output_dir>/<figure>/panels/<panel>.npz`` (the
    arrays of :meth:`RunResult.arrays`) and ``<panel>.json`` (settings,
    config hash, final numbers, timing; written last, so its presence marks
    the panel complete). With ``resume=True`` a complete saved result whose
    configuration hash equals this run's is loaded instead of training; any
    changed setting (scale, override, seed) changes the hash and retrains.

    A run whose cost becomes NaN/inf (:class:`DivergenceError`) is recorded
    as diverged with its message and returned with ``result=None``; it is not
    raised, so a notebook goes on with the other panels.

    Args:
      figure, panel: e.g. ``"fig1", "digits_M30"`` (see :data:`FIGURES`).
      scale: ``"smoke"``, ``"quick"`` or ``"paper"``.
      overrides: RunConfig field -> value, applied after the preset.
      seed: base seed (``RunConfig.seed``); an ``overrides["seed"]`` wins.
      output_dir: results root; files go to ``<output_dir>/<figure>/panels``.
      resume: reuse a complete saved result with the same configuration.
      progress: show the trainer's per-epoch progress bar.
      data: optional ``(x_train, y_train, x_test, y_test)`` passed to
        :func:`~dendnorm_flax.train.train` (tests); by default the dataset.
      verbose: print one summary line.
    """
    from dendnorm_flax.train import train

    overrides = check_overrides(overrides)
    spec = panel_spec(figure, panel, scale, overrides, seed)
    h = config_hash(spec.config)
    if resume:
        saved = _load_panel(spec, h, output_dir, overrides, seed)
        if saved is not None:
            if verbose:
                print(saved.summary(), flush=True)
            return saved
    started, t0 = _now(), time.perf_counter()
    try:
        result = train(spec.config, data=data, progress=progress, desc=f"{figure}/{panel}")
        error, diverged = None, False
    except DivergenceError as e:
        result, error, diverged = None, f"{figure}/{panel}: {e}", True
    wall = time.perf_counter() - t0
    timing = dict(result.timing) if result is not None else {}
    pr = PanelResult(
        spec=spec, config_hash=h, result=result, diverged=diverged, error=error, wall_time_s=wall,
        compile_s=float(timing.get("compile_s", 0.0)), started=started, finished=_now(),
        resumed=False, overrides=overrides, seed=int(seed), timing=timing,
    )
    _save_panel(pr, output_dir)
    if verbose:
        print(pr.summary(), flush=True)
    return pr


# --------------------------------------------------------------------------- figure results


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist, key in (("jax", "jax"), ("jaxlib", "jaxlib"), ("flax", "flax"), ("optax", "optax"),
                      ("numpy", "numpy"), ("matplotlib", "matplotlib"), ("dendnorm-flax", "dendnorm_flax")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def provenance(scale: str, seed: int, overrides: Mapping[str, Any], started: str | None = None) -> dict:
    """Where and with what the numbers were made: git state, versions, backend, host, times."""
    import jax

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain")
    return {
        "git_commit": commit,
        "git_dirty": None if status is None else bool(status),
        "versions": _versions(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.local_devices()],
        "seed": seed,
        "scale": scale,
        "overrides": settings_like(overrides),
        "hostname": socket.gethostname(),
        "started": started,
        "finished": _now(),
    }


def settings_like(values: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping with tuples turned into lists (JSON-ready)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dict(values).items()}


def write_figure_results(figure: str, panel_results: Mapping[str, PanelResult] | list[PanelResult],
                         output_dir: str | os.PathLike, scale: str) -> tuple[Path, Path]:
    """Write ``<output_dir>/<figure>/results.npz`` and ``results.json``; return their paths.

    ``results.npz`` holds ``<panel>/train_cost`` and ``<panel>/test_accuracy``
    ``[condition, trial, epoch]``, ``<panel>/trial_seeds`` and, for panels
    with snapshots, ``<panel>/snapshot_epochs`` and ``<panel>/snap/<name>``
    ``[condition, trial, snapshot, ...]``; diverged panels have no arrays.
    ``results.json`` holds one entry per panel (settings, config hash,
    final mean/sd per condition, wall and compile time, diverged, error) and
    the provenance of the run.
    """
    _check_figure(figure)
    _check_scale(scale)
    prs = list(panel_results.values()) if isinstance(panel_results, Mapping) else list(panel_results)
    if not prs:
        raise ValueError(f"no panel results to write for {figure}")
    for pr in prs:
        if pr.figure != figure:
            raise ValueError(f"panel {pr.panel} belongs to {pr.figure}, not {figure}")
        if pr.spec.scale != scale:
            raise ValueError(f"panel {pr.panel} was run at scale {pr.spec.scale!r}, not {scale!r}")
    order = {p: i for i, p in enumerate(panel_names(figure))}
    prs.sort(key=lambda pr: order[pr.panel])
    arrays: dict[str, np.ndarray] = {}
    for pr in prs:
        if pr.result is not None:
            arrays.update(pr.result.arrays(prefix=f"{pr.panel}/"))
    seeds = {pr.seed for pr in prs}
    started = min((pr.started for pr in prs if pr.started), default=None)
    meta = {
        "figure": figure,
        "scale": scale,
        "panels": {pr.panel: pr.entry() for pr in prs},
        "provenance": provenance(scale, seeds.pop() if len(seeds) == 1 else sorted(seeds),
                                 prs[0].overrides, started),
    }
    d = Path(output_dir) / figure
    npz, js = d / "results.npz", d / "results.json"
    _atomic_write_bytes(npz, lambda f: np.savez(f, **arrays))
    _atomic_write_bytes(js, lambda f: f.write(_json_dump(meta)))
    return npz, js


def load_figure_results(output_dir: str | os.PathLike, figure: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(results.json, results.npz as a dict)`` of one figure written by :func:`write_figure_results`."""
    d = Path(output_dir) / figure
    meta = json.loads((d / "results.json").read_text())
    with np.load(d / "results.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays

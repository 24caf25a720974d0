"""One look for every figure: control blue, normalised orange, mean +- 1 sd over trials.

Every function takes panel results (objects with ``.result`` — a
:class:`~dendnorm_flax.train.RunResult` or None —, ``.diverged``, ``.error``
and ``.spec.title``, such as :class:`~dendnorm_flax.experiments.PanelResult`)
and returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes
it as PNG and SVG. A diverged panel is never drawn as if it were a result:
its axes say ``diverged: <message>`` instead.

The backend is not forced: notebooks show figures inline, scripts and tests
choose theirs (``MPLBACKEND=Agg``).

Example:
  >>> fig = fig1(results, scale="quick")            # doctest: +SKIP
  >>> save_figure(fig, "results/quick/fig1", "fig1")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Mapping

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "COLORS",
    "CMAPS",
    "LABELS",
    "save_figure",
    "learning_curves",
    "show_diverged",
    "fig1",
    "fig2_maps",
    "fig2_distributions",
    "fig3",
]

#: Condition -> line colour (the paper: control blue, normalised orange).
COLORS = {"control": "tab:blue", "normalised": "tab:orange"}
#: Condition -> colormap of the Fig 2A maps.
CMAPS = {"control": "Blues", "normalised": "Oranges"}
LABELS = {"control": "control (w = v)", "normalised": "dendritic normalisation (w = s v / n)"}
_CONDITIONS = ("control", "normalised")
_DPI = 150


def save_figure(fig, output_dir: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Save ``fig`` as ``<output_dir>/<name>.png`` (150 dpi) and ``.svg``; return both paths."""
    d = Path(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    png, svg = d / f"{name}.png", d / f"{name}.svg"
    fig.savefig(png, dpi=_DPI, bbox_inches="tight", metadata={"Software": None})
    fig.savefig(svg, bbox_inches="tight", metadata={"Date": None})
    return png, svg


def _scale_note(scale: str | None) -> str:
    if scale is None:
        return ""
    if scale == "smoke":
        return "  [smoke scale: these numbers mean nothing]"
    return f"  [{scale} scale]"


def _legend(fig) -> None:
    """One legend for the whole figure, below the axes (constrained layout makes room)."""
    handles = [plt.Line2D([], [], color=COLORS[c], lw=2, label=LABELS[c]) for c in _CONDITIONS]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)


def _band(ax, curves: np.ndarray, color: str, marker: str | None) -> None:
    """Mean over trials (axis 0) as a line, +- 1 sd (ddof 1, when > 1 trial) as a band."""
    epochs = np.arange(1, curves.shape[-1] + 1)
    mean = curves.mean(axis=0)
    ax.plot(epochs, mean, color=color, lw=1.6, marker=marker, ms=3)
    if curves.shape[0] > 1:
        sd = curves.std(axis=0, ddof=1)
        ax.fill_between(epochs, mean - sd, mean + sd, color=color, alpha=0.25, lw=0)


def show_diverged(axes, message: str | None) -> None:
    """Blank ``axes`` and write ``diverged: <message>`` in them (never a curve)."""
    text = "diverged: " + (message or "cost became NaN or inf")
    for ax in np.atleast_1d(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.5, 0.5, textwrap.fill(text, 34), transform=ax.transAxes, ha="center", va="center",
                fontsize=6.5, color="tab:red", wrap=True)


def learning_curves(ax_cost, ax_acc, panel: Any, title: str | None = None,
                    cost_label: bool = True, acc_label: bool = True) -> None:
    """Training cost (top axes) and test accuracy (bottom axes) of one panel, both conditions."""
    title = title if title is not None else panel.spec.title
    ax_cost.set_title(title, fontsize=9)
    if panel.diverged or panel.result is None:
        show_diverged((ax_cost, ax_acc), panel.error)
        return
    res = panel.result
    marker = "o" if res.train_cost.shape[-1] <= 10 else None
    for c, name in enumerate(_CONDITIONS):
        _band(ax_cost, res.train_cost[c], COLORS[name], marker)
        _band(ax_acc, res.test_accuracy[c], COLORS[name], marker)
    for ax in (ax_cost, ax_acc):
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True, nbins=5))
    ax_acc.set_xlabel("epoch", fontsize=8)
    if cost_label:
        ax_cost.set_ylabel("training cost", fontsize=8)
    if acc_label:
        ax_acc.set_ylabel("test accuracy", fontsize=8)


def _curve_grid(panels: list[tuple[Any, str]], suptitle: str, width: float = 2.3):
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(width * n + 0.6, 4.9), squeeze=False,
                             layout="constrained")
    for j, (panel, title) in enumerate(panels):
        learning_curves(axes[0, j], axes[1, j], panel, title, cost_label=j == 0, acc_label=j == 0)
    fig.suptitle(suptitle, fontsize=10)
    _legend(fig)
    return fig


def _ordered(panel_results: Mapping[str, Any], names) -> list[Any]:
    missing = [n for n in names if n not in panel_results]
    if missing:
        raise ValueError(f"missing panel results: {', '.join(missing)}")
    return [panel_results[n] for n in names]


def fig1(panel_results: Mapping[str, Any], scale: str | None = None):
    """Fig 1D: training cost (top) and test accuracy (bottom) for digits and fashion at M = 30, 100, 300."""
    names = ("digits_M30", "fashion_M30", "digits_M100", "fashion_M100", "digits_M300", "fashion_M300")
    prs = _ordered(panel_results, names)
    return _curve_grid([(p, p.spec.title) for p in prs],
                       "Fig 1D: learning with (orange) and without (blue) dendritic normalisation"
                       + _scale_note(scale))


def fig3(panel_results: Mapping[str, Any], scale: str | None = None):
    """Fig 3C-E (Fashion-MNIST): 2 and 3 sparse layers (C), conv net (D), threshold-linear (E)."""
    names = ("two_layers", "three_layers", "conv", "threshold_linear")
    letters = ("C", "C", "D", "E")
    prs = _ordered(panel_results, names)
    return _curve_grid([(p, f"{k}: {p.spec.title}") for k, p in zip(letters, prs)],
                       "Fig 3: deeper networks and threshold-linear units, Fashion-MNIST"
                       + _scale_note(scale), width=2.6)


# --------------------------------------------------------------------------- Fig 2


def _snap(panel: Any, name: str, epoch: int) -> np.ndarray:
    """``[condition, trial, ...]`` of snapshot field ``name`` at ``epoch``."""
    epochs = [int(e) for e in panel.result.config.snapshot_epochs]
    if epoch not in epochs:
        raise ValueError(f"no snapshot at epoch {epoch}; snapshots were taken at {epochs}")
    return np.asarray(panel.result.snapshots[name])[:, :, epochs.index(epoch)]


def _diverged_figure(panel: Any, title: str):
    fig, ax = plt.subplots(figsize=(6, 2.5), layout="constrained")
    ax.set_title(title, fontsize=10)
    show_diverged(ax, panel.error)
    return fig


def fig2_maps(panel: Any, scale: str | None = None, epochs=None):
    """Fig 2A: contacts leaving each input pixel (28x28), mean over trials, per snapshot epoch.

    Rows are epochs (default: :func:`~dendnorm_flax.experiments.map_epochs`),
    the control on the left (blue), the normalised network on the right
    (orange); both maps of a row share one colour scale.
    """
    title = "Fig 2A: efferent contacts per input pixel" + _scale_note(scale)
    if panel.diverged or panel.result is None:
        return _diverged_figure(panel, title)
    if epochs is None:
        from dendnorm_flax.experiments import map_epochs

        epochs = map_epochs(panel.result.config.snapshot_epochs)
    epochs = list(epochs)
    fig, axes = plt.subplots(len(epochs), 2, figsize=(5.0, 2.3 * len(epochs) + 0.5), squeeze=False,
                             layout="constrained")
    for i, epoch in enumerate(epochs):
        counts = _snap(panel, "efferent_counts", epoch).mean(axis=1)  # [condition, 784]
        vmin, vmax = float(counts.min()), float(counts.max())
        for c, name in enumerate(_CONDITIONS):
            ax = axes[i, c]
            im = ax.imshow(counts[c].reshape(28, 28), cmap=CMAPS[name], vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9, color=COLORS[name])
            if c == 0:
                ax.set_ylabel(f"epoch {epoch}", fontsize=9)
            cb = fig.colorbar(im, ax=ax, shrink=0.8)
            cb.ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    return fig


def _hist_pair(ax, values: list[np.ndarray], bins) -> None:
    """Density histograms of both conditions; a peak > 3x the other's is truncated (dashed line)."""
    heights = []
    for v, name in zip(values, _CONDITIONS):
        h, edges = np.histogram(v, bins=bins, density=True)
        heights.append(h)
        ax.stairs(h, edges, color=COLORS[name], fill=True, alpha=0.35)
        ax.stairs(h, edges, color=COLORS[name], lw=1)
    peaks = [float(h.max()) if h.size else 0.0 for h in heights]
    lo, hi = min(peaks), max(peaks)
    if lo > 0 and hi > 3 * lo:
        top = 1.6 * lo
        ax.set_ylim(0, top)
        ax.axhline(top, ls="--", color=COLORS[_CONDITIONS[int(np.argmax(peaks))]], lw=1,
                   clip_on=False)
    else:
        ax.set_ylim(0, 1.05 * hi if hi > 0 else 1)
    ax.set_yticks([])
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(labelsize=7)


def _range(values: list[np.ndarray], q: float = 0.5) -> tuple[float, float]:
    both = np.concatenate([np.ravel(v) for v in values])
    lo, hi = np.percentile(both, [q, 100 - q])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


def fig2_distributions(panel: Any, scale: str | None = None):
    """Fig 2B: afferent contacts per hidden neuron, weights, and mean weighted input, per snapshot.

    Rows are the snapshot epochs; histograms are pooled over trials (the
    central 99% of the pooled values of a row set its range). A dashed line
    marks a vertical axis truncated so that the other condition stays visible.
    """
    title = "Fig 2B: afferent contacts, weights and mean input of hidden neurons" + _scale_note(scale)
    if panel.diverged or panel.result is None:
        return _diverged_figure(panel, title)
    epochs = [int(e) for e in panel.result.config.snapshot_epochs]
    columns = (("afferent_counts", "afferent contacts per neuron"),
               ("weights", "weight w"),
               ("mean_input", "mean weighted input z"))
    fig, axes = plt.subplots(len(epochs), 3, figsize=(8.0, 1.45 * len(epochs) + 1.0), squeeze=False,
                             layout="constrained")
    for i, epoch in enumerate(epochs):
        for j, (name, label) in enumerate(columns):
            data = _snap(panel, name, epoch)
            values = [np.ravel(data[c]) for c in range(len(_CONDITIONS))]
            if name == "afferent_counts":
                lo, hi = _range(values, 0.0)
                bins = np.arange(np.floor(lo) - 0.5, np.ceil(hi) + 1.5, max(1, round((hi - lo) / 40)))
            else:
                lo, hi = _range(values)
                bins = np.linspace(lo, hi, 61)
            _hist_pair(axes[i, j], values, bins)
            if i == len(epochs) - 1:
                axes[i, j].set_xlabel(label, fontsize=8)
            if j == 0:
                axes[i, j].set_ylabel(f"epoch {epoch}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    _legend(fig)
    return fig

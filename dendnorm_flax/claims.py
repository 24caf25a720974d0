"""The claims scorecard: every claim of the paper about Figs 1-3, tested on results.

Pure numpy. Input is a results directory written by ``dendnorm reproduce``
(``R/<figure>/results.json`` and ``results.npz``, curves shaped
``[condition, trial, epoch]`` with condition 0 = control, 1 = normalised).
Output is a list of :class:`Claim` rows: the claim in one sentence, the
statistic that tests it, its value with a 95% bootstrap interval, and a verdict.

Verdicts:

* ``pass`` / ``fail``: for a difference, pass when the lower end of the 95%
  percentile-bootstrap interval (over trials, fixed seed) is above 0; for a
  ratio of spreads (between neurons, or Fig 1's between trials), when its
  upper end is below 1. A claim passes only when the interval supports it; a
  point estimate on the claimed side with an interval that also covers "no
  effect" is a fail (not shown at this number of trials), and the value column
  shows how close it came.
* ``n/a (too few trials)``: fewer than 2 trials; a spread or an interval needs two.
* ``not computed (...)``: the data for the test are absent (e.g. no Fig 2
  snapshots, a diverged run), with the reason.

The control and normalised networks of a trial share their initial mask,
weights and minibatch order (a paired design), so differences are taken per
trial before averaging.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "Claim",
    "N_BOOT",
    "SEED",
    "LEVEL",
    "bootstrap_ci",
    "bootstrap_two_sample_ci",
    "mean_difference_claim",
    "sd_ratio_claim",
    "spread_ratio_claim",
    "gain_trend_claim",
    "curve_claims",
    "fig2_claims",
    "central_fraction",
    "load_figure",
    "scorecard",
    "summary",
    "render_html",
]

N_BOOT = 10_000  # bootstrap resamples
SEED = 0  # bootstrap seed: the scorecard is deterministic
LEVEL = 0.95  # interval coverage
CONTROL, NORMALISED = 0, 1

PASS, FAIL = "pass", "fail"
TOO_FEW = "n/a (too few trials)"

FIG1_PANELS = ("digits_M30", "fashion_M30", "digits_M100", "fashion_M100", "digits_M300", "fashion_M300")
FIG3_PANELS = ("two_layers", "three_layers", "conv", "threshold_linear")
FIGURE_PANELS = {"fig1": FIG1_PANELS, "fig2": ("mnist_M100",), "fig3": FIG3_PANELS}


@dataclass(frozen=True)
class Claim:
    """One row of the scorecard.

    ``estimate`` and ``ci`` are None when the claim could not be tested; then
    ``verdict`` says why (``n/a (too few trials)`` or ``not computed (...)``).
    """

    figure: str  # "fig1", "fig2", "fig3"
    panel: str  # panel id (e.g. "digits_M30"), or a short label for cross-panel claims
    claim: str  # the paper's claim, in one sentence
    statistic: str  # what is computed, and the pass rule
    estimate: float | None = None  # point value of the statistic
    ci: tuple[float, float] | None = None  # 95% percentile-bootstrap interval
    verdict: str = "not computed"  # pass, fail, n/a (too few trials), not computed (...)
    n_trials: int = 0  # trials behind the statistic (the smaller group for two-group claims)
    ratio: bool = False  # the statistic is a ratio (no effect = 1) rather than a difference (no effect = 0)

    @property
    def value(self) -> str:
        """The estimate and its interval as text, e.g. ``+0.0213 [+0.0150, +0.0290]`` or ``0.81 [0.52, 1.20]``."""
        if self.estimate is None:
            return "–"
        text = _fmt(self.estimate, signed=not self.ratio)
        if self.ci is None:
            return text
        lo, hi = (_fmt(x, signed=not self.ratio) for x in self.ci)
        return f"{text} [{lo}, {hi}]"

    @property
    def tested(self) -> bool:
        return self.verdict in (PASS, FAIL)


def _fmt(x: float, signed: bool) -> str:
    """Four decimals for the usual magnitudes (accuracies, costs, ratios); %g beyond."""
    if not np.isfinite(x):
        return str(x)
    if x != 0 and not (1e-3 <= abs(x) < 1e4):
        return f"{x:+.3g}" if signed else f"{x:.3g}"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


# --------------------------------------------------------------------------- bootstrap


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return (float(lo), float(hi))


def bootstrap_ci(
    statistic: Callable[..., np.ndarray],
    *samples: np.ndarray,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over paired samples.

    All ``samples`` share their first axis (trials) and are resampled
    *together* (the same trial indices for each), which keeps the pairing of
    control and normalised. ``statistic`` receives arrays with a leading
    resample axis, shaped ``[n_boot, n, ...]``, and must return ``[n_boot]``
    (reduce over axis 1). Non-finite resample values (e.g. a ratio whose
    denominator resampled to 0) are dropped.

    Example:
      >>> x = np.array([1.0, 2.0, 3.0, 4.0])
      >>> lo, hi = bootstrap_ci(lambda a: a.mean(axis=1), x)
      >>> bool(lo <= 2.5 <= hi)
      True
    """
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    n = samples[0].shape[0]
    if n < 1 or any(s.shape[0] != n for s in samples):
        raise ValueError(f"samples must be non-empty and share their first axis, got {[s.shape for s in samples]}")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(statistic(*(s[idx] for s in samples)), dtype=float)
    return _percentiles(values, level)


def bootstrap_two_sample_ci(
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic(x, y)`` for independent samples.

    ``x`` and ``y`` (e.g. per-trial gains of two panels, whose trials are not
    paired) are resampled separately; ``statistic`` gets ``[n_boot, n_x]`` and
    ``[n_boot, n_y]`` and returns ``[n_boot]``.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    xi = rng.integers(0, len(x), size=(n_boot, len(x)))
    yi = rng.integers(0, len(y), size=(n_boot, len(y)))
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.asarray(statistic(x[xi], y[yi]), dtype=float)
    return _percentiles(values, level)


# --------------------------------------------------------------------------- claim makers


def _not_computed(figure, panel, claim, statistic, reason, n_trials=0) -> Claim:
    return Claim(figure, panel, claim, statistic, verdict=f"not computed ({reason})", n_trials=n_trials)


def _unusable(figure, panel, claim, statistic, *arrays: np.ndarray) -> Claim | None:
    """The verdict when per-trial arrays cannot be tested (too few trials, a diverged run), else None."""
    n = arrays[0].shape[0]
    if n < 2:
        return Claim(figure, panel, claim, statistic, verdict=TOO_FEW, n_trials=n)
    if not all(np.all(np.isfinite(a)) for a in arrays):
        return _not_computed(figure, panel, claim, statistic, "non-finite values: a run diverged", n)
    return None


def mean_difference_claim(
    figure: str, panel: str, claim: str, statistic: str, diff: np.ndarray, **boot
) -> Claim:
    """A claim that a per-trial paired difference is positive on average.

    ``diff`` is ``[trial]`` (oriented so that the claim predicts > 0). The
    estimate is its mean; pass when the lower end of the bootstrap interval of
    the mean is above 0. Fewer than 2 trials: ``n/a (too few trials)``.
    """
    diff = np.asarray(diff, dtype=float)
    n = diff.shape[0]
    if (verdict := _unusable(figure, panel, claim, statistic, diff)) is not None:
        return verdict
    lo, hi = bootstrap_ci(lambda d: d.mean(axis=1), diff, **boot)
    return Claim(figure, panel, claim, statistic, float(diff.mean()), (lo, hi), PASS if lo > 0 else FAIL, n)


def _sd(a: np.ndarray, axis: int) -> np.ndarray:
    return np.std(a, axis=axis, ddof=1)


def sd_ratio_claim(
    figure: str, panel: str, claim: str, statistic: str, normalised: np.ndarray, control: np.ndarray, **boot
) -> Claim:
    """A claim that normalised runs vary less *between trials* than control runs.

    ``normalised`` and ``control`` are ``[trial]`` (one value per trial, e.g.
    the final test accuracy). The estimate is ``sd(normalised) / sd(control)``
    over trials (ddof 1); its bootstrap interval resamples trials in pairs
    (resamples whose control sd is 0 are dropped). Pass when the upper end of
    the interval is below 1, as for every other ratio: an sd from a handful of
    trials is itself noisy, so a point estimate below 1 alone shows nothing.
    """
    nrm, ctl = np.asarray(normalised, float), np.asarray(control, float)
    n = nrm.shape[0]
    if (verdict := _unusable(figure, panel, claim, statistic, nrm, ctl)) is not None:
        return verdict
    sd_c = _sd(ctl, 0)
    if sd_c == 0:
        return _not_computed(figure, panel, claim, statistic, "control sd is 0", n)
    est = float(_sd(nrm, 0) / sd_c)
    ci = bootstrap_ci(lambda a, b: _sd(a, 1) / _sd(b, 1), nrm, ctl, **boot)
    return Claim(figure, panel, claim, statistic, est, ci, PASS if ci[1] < 1 else FAIL, n, ratio=True)


def spread_ratio_claim(
    figure: str, panel: str, claim: str, statistic: str, normalised: np.ndarray, control: np.ndarray, **boot
) -> Claim:
    """A claim that a per-trial spread (e.g. sd across neurons) is smaller when normalised.

    ``normalised`` and ``control`` are ``[trial]`` values of the spread. The
    estimate is ``mean(normalised) / mean(control)``; pass when the upper end
    of its paired bootstrap interval is below 1.
    """
    nrm, ctl = np.asarray(normalised, float), np.asarray(control, float)
    n = nrm.shape[0]
    if (verdict := _unusable(figure, panel, claim, statistic, nrm, ctl)) is not None:
        return verdict
    if ctl.mean() == 0:
        return _not_computed(figure, panel, claim, statistic, "control spread is 0", n)
    est = float(nrm.mean() / ctl.mean())
    lo, hi = bootstrap_ci(lambda a, b: a.mean(axis=1) / b.mean(axis=1), nrm, ctl, **boot)
    return Claim(figure, panel, claim, statistic, est, (lo, hi), PASS if hi < 1 else FAIL, n, ratio=True)


def gain_trend_claim(
    figure: str, panel: str, claim: str, statistic: str, larger: np.ndarray, smaller: np.ndarray, **boot
) -> Claim:
    """A claim that the per-trial gain of one network exceeds that of another.

    ``larger`` and ``smaller`` are per-trial gains (normalised minus control)
    of two panels whose trials are independent. Estimate: difference of their
    means; pass when the lower end of the two-sample bootstrap interval is > 0.
    """
    a, b = np.asarray(larger, float), np.asarray(smaller, float)
    n = min(a.shape[0], b.shape[0])
    if n < 2:
        return Claim(figure, panel, claim, statistic, verdict=TOO_FEW, n_trials=n)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return _not_computed(figure, panel, claim, statistic, "non-finite values: a run diverged", n)
    lo, hi = bootstrap_two_sample_ci(lambda x, y: x.mean(axis=1) - y.mean(axis=1), a, b, **boot)
    return Claim(figure, panel, claim, statistic, float(a.mean() - b.mean()), (lo, hi), PASS if lo > 0 else FAIL, n)


# --------------------------------------------------------------------------- Figs 1 and 3

# key -> (claim, statistic and pass rule)
_CURVE_CLAIMS = {
    "accuracy": ("Normalised networks reach a higher test accuracy.",
                 "final-epoch test accuracy, normalised − control (mean over paired trials); pass if CI > 0"),
    "cost": ("Normalised networks reach a lower training cost.",
             "final-epoch training cost, control − normalised (mean over paired trials); pass if CI > 0"),
    "faster": ("Normalised networks learn faster.",
               "test accuracy averaged over all epochs (area under the learning curve), "
               "normalised − control; pass if CI > 0"),
    "variability": ("Normalised training is more reliable: it varies less between trials.",
                    "between-trial sd of final test accuracy, normalised / control; pass if CI < 1"),
}


def curve_claims(figure: str, panel: str, train_cost: np.ndarray, test_accuracy: np.ndarray,
                 *, variability: bool = True, **boot) -> list[Claim]:
    """The learning-curve claims of one panel.

    ``train_cost`` and ``test_accuracy`` are ``[condition=2, trial, epoch]``.
    Rows: higher final test accuracy, lower final training cost, faster
    learning (mean test accuracy over all epochs, i.e. the area under the
    learning curve per epoch), and, if ``variability``, a smaller
    between-trial sd of the final test accuracy.
    """
    cost, acc = np.asarray(train_cost, float), np.asarray(test_accuracy, float)
    if cost.ndim != 3 or cost.shape[0] != 2 or acc.shape != cost.shape:
        raise ValueError(
            f"{figure}/{panel}: curves must be [condition=2, trial, epoch] of equal shapes, "
            f"got {cost.shape} and {acc.shape}"
        )
    text = _CURVE_CLAIMS
    rows = [
        mean_difference_claim(figure, panel, *text["accuracy"],
                              acc[NORMALISED, :, -1] - acc[CONTROL, :, -1], **boot),
        mean_difference_claim(figure, panel, *text["cost"],
                              cost[CONTROL, :, -1] - cost[NORMALISED, :, -1], **boot),
        mean_difference_claim(figure, panel, *text["faster"],
                              acc[NORMALISED].mean(axis=-1) - acc[CONTROL].mean(axis=-1), **boot),
    ]
    if variability:
        rows.append(sd_ratio_claim(figure, panel, *text["variability"],
                                   acc[NORMALISED, :, -1], acc[CONTROL, :, -1], **boot))
    return rows


def _curve_rows_not_computed(figure: str, panel: str, reason: str, *, variability: bool) -> list[Claim]:
    keys = ["accuracy", "cost", "faster"] + (["variability"] if variability else [])
    return [_not_computed(figure, panel, *_CURVE_CLAIMS[k], reason) for k in keys]


def _final_gain(arrays: dict, panel: str, epoch: int | None = None) -> np.ndarray:
    acc = np.asarray(arrays[f"{panel}/test_accuracy"], float)
    e = -1 if epoch is None else epoch
    return acc[NORMALISED, :, e] - acc[CONTROL, :, e]


# --------------------------------------------------------------------------- Fig 2


def central_fraction(efferent_counts: np.ndarray, side: int = 28, centre: int = 14) -> np.ndarray:
    """Fraction of all contacts that leave the central ``centre x centre`` pixels.

    ``efferent_counts`` is ``[..., side*side]`` (contacts per input pixel). An
    Erdos-Renyi mask gives ``centre**2 / side**2`` (0.25 for 14 of 28) on average.
    """
    c = np.asarray(efferent_counts, float)
    img = c.reshape(c.shape[:-1] + (side, side))
    a = (side - centre) // 2
    inner = img[..., a:a + centre, a:a + centre].sum(axis=(-2, -1))
    total = img.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return inner / total


def _weights_per_trial(arrays: dict, prefix: str, snap: int):
    """(mean |w|, sd of w) per [condition, trial] at snapshot ``snap``, or None.

    Reads ``<prefix>snap/weights`` ``[condition, trial, snapshot, n_contacts]``
    (effective weights of the contacts; zeros and NaN are treated as padding),
    or a histogram ``<prefix>snap/weights_hist`` ``[condition, trial,
    snapshot, bins]`` with edges ``<prefix>snap/weights_edges`` ``[bins+1]``.
    """
    key = f"{prefix}snap/weights"
    if key in arrays and np.asarray(arrays[key]).ndim == 4:
        w = np.asarray(arrays[key], float)[:, :, snap, :]
        valid = np.isfinite(w) & (w != 0)
        n = valid.sum(-1)
        wz = np.where(valid, w, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_abs = np.abs(wz).sum(-1) / n
            mean = wz.sum(-1) / n
            sd = np.sqrt(np.maximum((wz**2).sum(-1) / n - mean**2, 0.0))
        return mean_abs, sd
    hist, edges = f"{prefix}snap/weights_hist", f"{prefix}snap/weights_edges"
    if hist in arrays and edges in arrays:
        h = np.asarray(arrays[hist], float)[:, :, snap, :]
        e = np.asarray(arrays[edges], float)
        mid = (e[:-1] + e[1:]) / 2
        n = h.sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_abs = (h * np.abs(mid)).sum(-1) / n
            mean = (h * mid).sum(-1) / n
            sd = np.sqrt(np.maximum((h * mid**2).sum(-1) / n - mean**2, 0.0))
        return mean_abs, sd
    return None


def fig2_claims(arrays: dict, panel: str = "mnist_M100", **boot) -> list[Claim]:
    """The connectivity claims of Fig 2, from the snapshot arrays.

    Uses ``<panel>/snap/<name>`` ``[condition, trial, snapshot, ...]`` and
    ``<panel>/snapshot_epochs``: ``efferent_counts`` (784 pixels),
    ``afferent_counts`` and ``mean_input`` (hidden neurons), and the weights
    if present (see :func:`_weights_per_trial`). The first and last snapshots
    are compared. Rows whose arrays are absent are ``not computed``.
    """
    p = f"{panel}/"
    fig = "fig2"
    claims_text = {
        "central_grows_c": ("SET concentrates efferent contacts on central pixels as training "
                            "proceeds (control).",
                            "fraction of contacts from the central 14×14 pixels, last − first snapshot; pass if CI > 0"),
        "central_grows_n": ("SET concentrates efferent contacts on central pixels as training "
                            "proceeds (normalised).",
                            "fraction of contacts from the central 14×14 pixels, last − first snapshot; pass if CI > 0"),
        "central_weaker": ("The central bias of efferent contacts is weaker in normalised networks.",
                           "fraction of contacts from the central 14×14 pixels at the last snapshot, "
                           "control − normalised; pass if CI > 0"),
        "afferent_sd": ("Hidden neurons' numbers of afferent contacts are less variable in normalised networks.",
                        "sd across hidden neurons of afferent counts at the last snapshot, "
                        "normalised / control; pass if CI < 1"),
        "w_abs": ("Weights are smaller in absolute value in normalised networks.",
                  "mean |w| over contacts at the last snapshot, control − normalised; pass if CI > 0"),
        "w_sd": ("Weights are less dispersed in normalised networks.",
                 "sd of w over contacts at the last snapshot, normalised / control; pass if CI < 1"),
        "input_zero": ("Mean weighted inputs to hidden neurons are closer to 0 in normalised networks.",
                       "mean over hidden neurons of |mean input over the test set| at the last snapshot, "
                       "control − normalised; pass if CI > 0"),
        "input_sd": ("Mean weighted inputs are more consistent across hidden neurons in normalised networks.",
                     "sd across hidden neurons of the mean input at the last snapshot, "
                     "normalised / control; pass if CI < 1"),
    }

    def missing(keys: Sequence[str], reason: str) -> list[Claim]:
        return [_not_computed(fig, panel, *claims_text[k], reason) for k in keys]

    rows: list[Claim] = []
    epochs_key = f"{p}snapshot_epochs"
    if epochs_key not in arrays:
        return missing(list(claims_text), "no Fig 2 snapshot arrays in results.npz")
    n_snap = len(np.atleast_1d(arrays[epochs_key]))
    last = n_snap - 1

    eff = arrays.get(f"{p}snap/efferent_counts")
    if eff is None:
        rows += missing(["central_grows_c", "central_grows_n", "central_weaker"], "no efferent_counts snapshot")
    else:
        frac = central_fraction(eff)  # [condition, trial, snapshot]
        for c, key in ((CONTROL, "central_grows_c"), (NORMALISED, "central_grows_n")):
            if n_snap < 2:
                rows += missing([key], "needs two snapshots")
            else:
                rows.append(mean_difference_claim(fig, panel, *claims_text[key],
                                                  frac[c, :, last] - frac[c, :, 0], **boot))
        rows.append(mean_difference_claim(fig, panel, *claims_text["central_weaker"],
                                          frac[CONTROL, :, last] - frac[NORMALISED, :, last], **boot))

    aff = arrays.get(f"{p}snap/afferent_counts")
    if aff is None:
        rows += missing(["afferent_sd"], "no afferent_counts snapshot")
    else:
        sd = _sd(np.asarray(aff, float)[:, :, last, :], -1)  # [condition, trial]
        rows.append(spread_ratio_claim(fig, panel, *claims_text["afferent_sd"], sd[NORMALISED], sd[CONTROL], **boot))

    w = _weights_per_trial(arrays, p, last)
    if w is None:
        rows += missing(["w_abs", "w_sd"], "weights snapshot absent or in an unknown form")
    else:
        mean_abs, sd_w = w
        rows.append(mean_difference_claim(fig, panel, *claims_text["w_abs"],
                                          mean_abs[CONTROL] - mean_abs[NORMALISED], **boot))
        rows.append(spread_ratio_claim(fig, panel, *claims_text["w_sd"], sd_w[NORMALISED], sd_w[CONTROL], **boot))

    mi = arrays.get(f"{p}snap/mean_input")
    if mi is None:
        rows += missing(["input_zero", "input_sd"], "no mean_input snapshot")
    else:
        z = np.asarray(mi, float)[:, :, last, :]  # [condition, trial, neuron]
        dist = np.abs(z).mean(-1)
        rows.append(mean_difference_claim(fig, panel, *claims_text["input_zero"],
                                          dist[CONTROL] - dist[NORMALISED], **boot))
        sd = _sd(z, -1)
        rows.append(spread_ratio_claim(fig, panel, *claims_text["input_sd"], sd[NORMALISED], sd[CONTROL], **boot))
    return rows


# --------------------------------------------------------------------------- results dir


def load_figure(results: Path, figure: str) -> tuple[dict, dict] | None:
    """``(results.json as dict, results.npz as dict of arrays)`` of one figure, or None if absent."""
    d = Path(results) / figure
    if not (d / "results.json").is_file() or not (d / "results.npz").is_file():
        return None
    meta = json.loads((d / "results.json").read_text())
    with np.load(d / "results.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


def _panel_status(meta: dict, arrays: dict, panel: str) -> str | None:
    """Why a panel cannot be tested, or None if it can."""
    info = meta.get("panels", {}).get(panel)
    if info is None or f"{panel}/test_accuracy" not in arrays:
        return f"panel {panel} not in the results"
    if info.get("diverged"):
        return "the run diverged"
    return None


def _figure_curve_rows(figure: str, meta: dict | None, arrays: dict | None, panels, *, variability, **boot):
    rows: list[Claim] = []
    for panel in panels:
        reason = f"no results for {figure}" if meta is None else _panel_status(meta, arrays, panel)
        if reason:
            rows += _curve_rows_not_computed(figure, panel, reason, variability=variability)
            continue
        rows += curve_claims(figure, panel, arrays[f"{panel}/train_cost"], arrays[f"{panel}/test_accuracy"],
                             variability=variability, **boot)
    return rows


def _trend_rows(loaded: dict, **boot) -> list[Claim]:
    rows: list[Claim] = []
    fig1, fig3 = loaded.get("fig1"), loaded.get("fig3")
    text_m = ("The improvement grows with the number of hidden neurons ({data}).",
              "final test-accuracy gain (normalised − control) at M = 300 minus at M = 30, "
              "independent trials; pass if CI > 0")
    for data in ("digits", "fashion"):
        claim, stat = text_m[0].format(data=data), text_m[1]
        big, small = f"{data}_M300", f"{data}_M30"
        if fig1 is None or _panel_status(*fig1, big) or _panel_status(*fig1, small):
            rows.append(_not_computed("fig1", f"{data}: M=300 vs M=30", claim, stat, "panels missing or diverged"))
            continue
        rows.append(gain_trend_claim("fig1", f"{data}: M=300 vs M=30", claim, stat,
                                     _final_gain(fig1[1], big), _final_gain(fig1[1], small), **boot))
    rows.append(_not_computed(
        "fig1", "all panels",
        "The improvement is greater in test accuracy than in training cost.",
        "none: accuracy and cost have no common scale", "no common scale to compare them on"))

    claim = "The improvement increases with the depth of the network (three vs two sparse hidden layers)."
    stat = "final test-accuracy gain (normalised − control), three layers minus two; pass if CI > 0"
    if fig3 is None or _panel_status(*fig3, "three_layers") or _panel_status(*fig3, "two_layers"):
        rows.append(_not_computed("fig3", "three vs two layers", claim, stat, "panels missing or diverged"))
    else:
        rows.append(gain_trend_claim("fig3", "three vs two layers", claim, stat,
                                     _final_gain(fig3[1], "three_layers"), _final_gain(fig3[1], "two_layers"),
                                     **boot))

    claim = "The improvement increases with the depth of the network (two sparse hidden layers vs one)."
    stat = ("test-accuracy gain (normalised − control) of two layers (Fig 3) minus one layer "
            "(Fig 1, Fashion, M = 100) at the last epoch both ran; pass if CI > 0")
    if (fig1 is None or fig3 is None or _panel_status(*fig1, "fashion_M100")
            or _panel_status(*fig3, "two_layers")):
        rows.append(_not_computed("fig3", "two layers vs one", claim, stat, "panels missing or diverged"))
    else:
        e1 = np.asarray(fig1[1]["fashion_M100/test_accuracy"]).shape[-1]
        e3 = np.asarray(fig3[1]["two_layers/test_accuracy"]).shape[-1]
        e = min(e1, e3) - 1
        rows.append(gain_trend_claim("fig3", "two layers vs one", claim, stat,
                                     _final_gain(fig3[1], "two_layers", e),
                                     _final_gain(fig1[1], "fashion_M100", e), **boot))
    return rows


def scorecard(results: Path, **boot) -> list[Claim]:
    """Every claim about Figs 1-3, tested on the results directory ``results``.

    Figures whose files are absent give ``not computed`` rows rather than an
    error, so a partial reproduction still gets a (partial) scorecard.
    """
    loaded = {fig: load_figure(results, fig) for fig in FIGURE_PANELS}
    rows: list[Claim] = []
    fig1 = loaded["fig1"]
    rows += _figure_curve_rows("fig1", *(fig1 or (None, None)), FIG1_PANELS, variability=True, **boot)
    fig2 = loaded["fig2"]
    if fig2 is None:
        rows += [_not_computed("fig2", r.panel, r.claim, r.statistic, "no results for fig2") for r in fig2_claims({})]
    else:
        rows += fig2_claims(fig2[1], **boot)
    fig3 = loaded["fig3"]
    rows += _figure_curve_rows("fig3", *(fig3 or (None, None)), FIG3_PANELS, variability=False, **boot)
    rows += _trend_rows(loaded, **boot)
    order = {f: i for i, f in enumerate(FIGURE_PANELS)}
    return sorted(rows, key=lambda r: order.get(r.figure, 99))  # stable: keeps the order within a figure


def summary(claims: Sequence[Claim]) -> dict[str, int]:
    """Counts of ``pass``, ``fail``, ``n/a`` and ``not computed`` rows."""
    out = {"pass": 0, "fail": 0, "n/a": 0, "not computed": 0}
    for c in claims:
        if c.verdict == PASS:
            out["pass"] += 1
        elif c.verdict == FAIL:
            out["fail"] += 1
        elif c.verdict.startswith("n/a"):
            out["n/a"] += 1
        else:
            out["not computed"] += 1
    return out


_VERDICT_STYLE = {PASS: "color:#1a7f37;font-weight:bold", FAIL: "color:#cf222e;font-weight:bold"}


def render_html(claims: Sequence[Claim]) -> str:
    """The scorecard as an HTML table (one row per claim), for a notebook output.

    The statistic and its pass rule are shown in small print under each claim;
    the table scrolls sideways on narrow screens rather than overflowing.
    """
    head = ("<tr><th>Figure</th><th>Panel</th><th>Claim <small>(statistic; pass rule)</small></th>"
            "<th>Value [95% CI]</th><th>Trials</th><th>Result</th></tr>")
    body = []
    for c in claims:
        style = _VERDICT_STYLE.get(c.verdict, "color:#57606a")
        body.append(
            "<tr>"
            f"<td>{html.escape(c.figure)}</td><td>{html.escape(c.panel)}</td>"
            f"<td>{html.escape(c.claim)}<br><small style='color:#57606a'>{html.escape(c.statistic)}</small></td>"
            f"<td style='white-space:nowrap'>{html.escape(c.value)}</td><td>{c.n_trials or '–'}</td>"
            f"<td style='{style}'>{html.escape(c.verdict)}</td>"
            "</tr>"
        )
    return (f"<div style='overflow-x:auto'><table class='table dendnorm-scorecard' style='font-size:0.9em'>"
            f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table></div>")

"""The scorecard statistics (dendnorm_flax.claims) on synthetic data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dendnorm_flax import claims

BOOT = dict(n_boot=2000)  # enough for stable intervals, fast


def curves(gain: float, trials: int = 10, epochs: int = 5, noise: float = 0.01, seed: int = 0):
    """[condition, trial, epoch] cost and accuracy; normalised better by ``gain``."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.2, 1.0, epochs)
    acc = np.empty((2, trials, epochs))
    acc[0] = 0.5 + 0.3 * t + noise * rng.standard_normal((trials, epochs))
    acc[1] = acc[0] + gain * t + noise * rng.standard_normal((trials, epochs))
    cost = 2.0 - acc  # lower cost where accuracy is higher
    return cost, acc


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_covers_true_mean_normal_sample():
    rng = np.random.default_rng(1)
    x = 3.0 + rng.standard_normal(200)
    lo, hi = claims.bootstrap_ci(lambda a: a.mean(axis=1), x)
    assert lo < 3.0 < hi
    # about 2 * 1.96 / sqrt(200) wide
    assert 0.2 < hi - lo < 0.4


def test_bootstrap_ci_coverage_close_to_nominal():
    rng = np.random.default_rng(2)
    covered = 0
    for k in range(200):
        x = rng.standard_normal(30)
        lo, hi = claims.bootstrap_ci(lambda a: a.mean(axis=1), x, n_boot=1000, seed=k)
        covered += lo < 0.0 < hi
    assert 0.88 <= covered / 200 <= 0.99


def test_bootstrap_ci_is_deterministic_and_seeded():
    x = np.random.default_rng(7).standard_normal(10)
    a = claims.bootstrap_ci(lambda d: d.mean(axis=1), x)
    b = claims.bootstrap_ci(lambda d: d.mean(axis=1), x)
    c = claims.bootstrap_ci(lambda d: d.mean(axis=1), x, seed=1)
    assert a == b
    assert a != c


def test_bootstrap_ci_resamples_pairs_together():
    # y is x shifted by 5: any joint resample has mean(y) - mean(x) = 5 exactly
    x = np.random.default_rng(3).standard_normal(20)
    lo, hi = claims.bootstrap_ci(lambda a, b: b.mean(axis=1) - a.mean(axis=1), x, x + 5.0)
    assert lo == pytest.approx(5.0) and hi == pytest.approx(5.0)


def test_bootstrap_ci_rejects_unpaired_shapes():
    with pytest.raises(ValueError, match="share their first axis"):
        claims.bootstrap_ci(lambda a, b: a.mean(1), np.ones(3), np.ones(4))


def test_two_sample_ci_difference_of_means():
    rng = np.random.default_rng(4)
    a, b = 1.0 + 0.1 * rng.standard_normal(50), 0.1 * rng.standard_normal(40)
    lo, hi = claims.bootstrap_two_sample_ci(lambda x, y: x.mean(1) - y.mean(1), a, b)
    assert lo < 1.0 < hi and lo > 0.9


# --------------------------------------------------------------------------- claim rules


def test_positive_difference_passes_negative_fails():
    up = claims.mean_difference_claim("f", "p", "c", "s", np.full(10, 0.05) + np.linspace(-0.01, 0.01, 10), **BOOT)
    down = claims.mean_difference_claim("f", "p", "c", "s", -np.full(10, 0.05) + np.linspace(-0.01, 0.01, 10), **BOOT)
    assert up.verdict == "pass" and up.ci[0] > 0 and up.estimate == pytest.approx(0.05)
    assert down.verdict == "fail" and down.ci[1] < 0


def test_noisy_zero_difference_fails():
    d = np.random.default_rng(5).standard_normal(10)
    row = claims.mean_difference_claim("f", "p", "c", "s", d - d.mean(), **BOOT)
    assert row.verdict == "fail"
    assert row.ci[0] < 0 < row.ci[1]


@pytest.mark.parametrize("maker", ["mean", "sd", "spread", "trend"])
def test_one_trial_is_not_applicable(maker):
    one = np.array([0.3])
    row = {
        "mean": lambda: claims.mean_difference_claim("f", "p", "c", "s", one),
        "sd": lambda: claims.sd_ratio_claim("f", "p", "c", "s", one, one),
        "spread": lambda: claims.spread_ratio_claim("f", "p", "c", "s", one, one),
        "trend": lambda: claims.gain_trend_claim("f", "p", "c", "s", one, np.ones(5)),
    }[maker]()
    assert row.verdict == "n/a (too few trials)"
    assert row.estimate is None and not row.tested


def test_nonfinite_values_are_not_computed():
    row = claims.mean_difference_claim("f", "p", "c", "s", np.array([0.1, np.nan, 0.2]))
    assert row.verdict.startswith("not computed")


def test_sd_ratio_needs_interval_below_one():
    rng = np.random.default_rng(6)
    ctl = rng.standard_normal(10)
    # normalised = half the control in every trial: every resample has ratio 0.5
    row = claims.sd_ratio_claim("f", "p", "c", "s", 0.5 * ctl, ctl, **BOOT)
    assert row.estimate == pytest.approx(0.5)
    assert row.ci == pytest.approx((0.5, 0.5))
    assert row.verdict == "pass"
    assert claims.sd_ratio_claim("f", "p", "c", "s", 2 * ctl, ctl, **BOOT).verdict == "fail"
    assert claims.sd_ratio_claim("f", "p", "c", "s", ctl, np.ones(10)).verdict.startswith("not computed")
    # three trials: the point estimate is below 1 but the interval covers 1, so nothing is shown
    few_n, few_c = np.array([0.90, 0.91, 0.93]), np.array([0.88, 0.95, 0.90])
    few = claims.sd_ratio_claim("f", "p", "c", "s", few_n, few_c, **BOOT)
    assert few.estimate == pytest.approx(np.std(few_n, ddof=1) / np.std(few_c, ddof=1))
    assert few.estimate < 1 and few.ci[0] < 1 < few.ci[1]
    assert few.verdict == "fail"


def test_spread_ratio_needs_interval_below_one():
    ctl = np.linspace(9, 11, 10)
    assert claims.spread_ratio_claim("f", "p", "c", "s", 0.5 * ctl, ctl, **BOOT).verdict == "pass"
    assert claims.spread_ratio_claim("f", "p", "c", "s", 1.0 * ctl, ctl, **BOOT).verdict == "fail"


def test_curve_claims_known_answers():
    cost, acc = curves(gain=0.1)
    rows = claims.curve_claims("fig1", "digits_M30", cost, acc, **BOOT)
    by = {r.claim: r for r in rows}
    assert [r.verdict for r in rows[:3]] == ["pass", "pass", "pass"]
    acc_row = by["Normalised networks reach a higher test accuracy."]
    assert acc_row.estimate == pytest.approx((acc[1, :, -1] - acc[0, :, -1]).mean())
    cost_b, acc_b = curves(gain=-0.1)
    rows_b = claims.curve_claims("fig1", "digits_M30", cost_b, acc_b, **BOOT)
    assert [r.verdict for r in rows_b[:3]] == ["fail", "fail", "fail"]
    assert len(claims.curve_claims("fig3", "conv", cost, acc, variability=False, **BOOT)) == 3


def test_curve_claims_single_trial():
    cost, acc = curves(gain=0.1, trials=1)
    rows = claims.curve_claims("fig1", "digits_M30", cost, acc)
    assert {r.verdict for r in rows} == {"n/a (too few trials)"}


def test_curve_claims_rejects_bad_shape():
    with pytest.raises(ValueError, match="condition=2"):
        claims.curve_claims("fig1", "x", np.zeros((3, 2, 2)), np.zeros((3, 2, 2)))


# --------------------------------------------------------------------------- Fig 2


def test_central_fraction_uniform_and_central():
    assert claims.central_fraction(np.ones(784)) == pytest.approx(0.25)
    img = np.zeros((28, 28))
    img[7:21, 7:21] = 3
    assert claims.central_fraction(img.reshape(-1)) == pytest.approx(1.0)
    assert claims.central_fraction(np.ones((2, 3, 784))).shape == (2, 3)


def fig2_arrays(trials: int = 6, seed: int = 0) -> dict:
    """Snapshots where every Fig 2 claim holds by construction."""
    rng = np.random.default_rng(seed)
    n_snap, m = 3, 100
    yy, xx = np.mgrid[:28, :28]
    centre = np.exp(-((yy - 13.5) ** 2 + (xx - 13.5) ** 2) / 60.0).reshape(-1)
    eff = np.empty((2, trials, n_snap, 784))
    for s in range(n_snap):
        w_c, w_n = s / 2.0, s / 4.0  # control more central, both grow with time
        eff[0, :, s] = rng.poisson(20 * (1 + 4 * w_c * centre), (trials, 784))
        eff[1, :, s] = rng.poisson(20 * (1 + 4 * w_n * centre), (trials, 784))
    aff = np.stack([rng.normal(157, 30, (trials, n_snap, m)), rng.normal(157, 10, (trials, n_snap, m))])
    weights = np.stack([rng.normal(0, 1.0, (trials, n_snap, 500)), rng.normal(0, 0.2, (trials, n_snap, 500))])
    mean_input = np.stack([rng.normal(2.0, 3.0, (trials, n_snap, m)), rng.normal(0.1, 0.5, (trials, n_snap, m))])
    p = "mnist_M100/"
    return {
        f"{p}snapshot_epochs": np.array([1, 10, 100]),
        f"{p}snap/efferent_counts": eff,
        f"{p}snap/afferent_counts": aff,
        f"{p}snap/weights": weights,
        f"{p}snap/mean_input": mean_input,
    }


def test_fig2_claims_pass_by_construction():
    rows = claims.fig2_claims(fig2_arrays(), **BOOT)
    assert len(rows) == 8
    assert [r.verdict for r in rows] == ["pass"] * 8, [(r.claim, r.value, r.verdict) for r in rows]


def test_fig2_claims_fail_when_conditions_swapped():
    arrays = {k: (v[::-1] if k.split("/")[-1] != "snapshot_epochs" else v) for k, v in fig2_arrays().items()}
    rows = claims.fig2_claims(arrays, **BOOT)
    by = {r.claim: r.verdict for r in rows}
    assert by["Weights are smaller in absolute value in normalised networks."] == "fail"
    assert by["The central bias of efferent contacts is weaker in normalised networks."] == "fail"


def test_fig2_weights_histogram_form():
    arrays = fig2_arrays()
    w = arrays.pop("mnist_M100/snap/weights")
    edges = np.linspace(-4, 4, 81)
    hist = np.apply_along_axis(lambda a: np.histogram(a, edges)[0], -1, w)
    arrays["mnist_M100/snap/weights_hist"] = hist
    arrays["mnist_M100/snap/weights_edges"] = edges
    by = {r.claim: r.verdict for r in claims.fig2_claims(arrays, **BOOT)}
    assert by["Weights are smaller in absolute value in normalised networks."] == "pass"


def test_fig2_claims_without_snapshots_are_not_computed():
    rows = claims.fig2_claims({})
    assert len(rows) == 8
    assert all(r.verdict.startswith("not computed") for r in rows)
    arrays = fig2_arrays()
    del arrays["mnist_M100/snap/weights"]
    verdicts = [r.verdict for r in claims.fig2_claims(arrays, **BOOT)]
    assert sum(v.startswith("not computed") for v in verdicts) == 2


# --------------------------------------------------------------------------- results dir


def write_results(root, figure, panels, *, trials=4, epochs=3, gain=0.1, extra=None):
    d = root / figure
    d.mkdir(parents=True)
    arrays, meta = {}, {"figure": figure, "scale": "smoke", "panels": {}, "provenance": {}}
    for i, panel in enumerate(panels):
        cost, acc = curves(gain, trials=trials, epochs=epochs, seed=i)
        arrays[f"{panel}/train_cost"], arrays[f"{panel}/test_accuracy"] = cost, acc
        meta["panels"][panel] = {"settings": {}, "conditions": ["control", "normalised"], "final": {},
                                 "wall_time_s": 1.0, "diverged": False}
    arrays.update(extra or {})
    np.savez(d / "results.npz", **arrays)
    (d / "results.json").write_text(json.dumps(meta))


def test_scorecard_from_results_dir(tmp_path):
    write_results(tmp_path, "fig1", claims.FIG1_PANELS)
    write_results(tmp_path, "fig2", ["mnist_M100"], extra=fig2_arrays(trials=4))
    write_results(tmp_path, "fig3", claims.FIG3_PANELS)
    rows = claims.scorecard(tmp_path, **BOOT)
    figs = [r.figure for r in rows]
    assert figs == sorted(figs)
    assert figs.count("fig1") == 6 * 4 + 3
    assert figs.count("fig2") == 8
    assert figs.count("fig3") == 4 * 3 + 2
    counts = claims.summary(rows)
    assert counts["not computed"] == 1  # accuracy vs cost: no common scale
    assert counts["pass"] + counts["fail"] == len(rows) - 1
    html = claims.render_html(rows)
    assert html.count("<tr>") == len(rows) + 1
    assert "−" in html and "<script" not in html


def test_scorecard_missing_figures_and_divergence(tmp_path):
    write_results(tmp_path, "fig1", claims.FIG1_PANELS, trials=1)
    meta = json.loads((tmp_path / "fig1" / "results.json").read_text())
    meta["panels"]["fashion_M300"]["diverged"] = True
    (tmp_path / "fig1" / "results.json").write_text(json.dumps(meta))
    rows = claims.scorecard(tmp_path, **BOOT)
    fig1 = [r for r in rows if r.figure == "fig1" and r.panel in claims.FIG1_PANELS]
    assert all(r.verdict == "n/a (too few trials)" for r in fig1 if r.panel != "fashion_M300")
    assert all(r.verdict == "not computed (the run diverged)" for r in fig1 if r.panel == "fashion_M300")
    assert all(r.verdict.startswith("not computed") for r in rows if r.figure in ("fig2", "fig3"))


def test_value_formatting():
    diff = claims.Claim("f", "p", "c", "s", 0.02496, (-0.008771, 0.05867), "fail", 2)
    assert diff.value == "+0.0250 [-0.0088, +0.0587]"
    ratio = claims.Claim("f", "p", "c", "s", 0.5, (0.25, 1.5), "pass", 10, ratio=True)
    assert ratio.value == "0.5000 [0.2500, 1.5000]"
    assert claims.Claim("f", "p", "c", "s", 1.2e-5).value == "+1.2e-05"
    assert claims.Claim("f", "p", "c", "s").value == "–"

"""Figures from synthetic panel results: layout, colours, diverged panels, saved files."""

from __future__ import annotations

import dataclasses

import matplotlib
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from dendnorm_flax import experiments, plotting
from dendnorm_flax.train import RunResult

BLUE, ORANGE = mcolors.to_rgba("tab:blue"), mcolors.to_rgba("tab:orange")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _panel(figure, panel, trials=3, epochs=4, diverged=False, seed=0):
    spec = experiments.panel_spec(figure, panel, "smoke", {"trials": trials, "epochs": epochs}
                                  if figure != "fig2" else {"trials": trials, "epochs": epochs,
                                                            "snapshot_epochs": list(range(1, epochs + 1))})
    result = None
    if not diverged:
        rng = np.random.default_rng(seed)
        acc = np.clip(0.5 + 0.05 * rng.random((2, trials, epochs)).cumsum(-1), 0, 1)
        acc[1] += 0.1
        snaps = {}
        if figure == "fig2":
            n_snap, m = len(spec.config.snapshot_epochs), spec.config.hidden[0]
            snaps = {
                "efferent_counts": rng.poisson(20, (2, trials, n_snap, 784)),
                "afferent_counts": rng.poisson(157, (2, trials, n_snap, m)),
                "weights": np.concatenate([rng.normal(0, 1, (1, trials, n_snap, 500)),
                                           rng.normal(0, 0.1, (1, trials, n_snap, 500))]),
                "mean_input": rng.normal(0, 1, (2, trials, n_snap, m)),
            }
        result = RunResult(config=spec.config, train_cost=2 - acc, test_accuracy=acc,
                           trial_seeds=np.arange(trials), snapshots=snaps, timing={})
    return experiments.PanelResult(
        spec=spec, config_hash=experiments.config_hash(spec.config), result=result, diverged=diverged,
        error="fig1/x: run diverged: cost is nan for condition 'control', trial 0, epoch 3" if diverged else None,
        wall_time_s=1.0, compile_s=0.5, started="", finished="", resumed=False, overrides={}, seed=0)


def _line_colors(ax):
    return [mcolors.to_rgba(line.get_color()) for line in ax.get_lines()]


def test_agg_backend_in_tests():
    assert matplotlib.get_backend().lower() == "agg"


def test_fig1_layout_colours_and_diverged_panel():
    results = {p: _panel("fig1", p, diverged=(p == "fashion_M100")) for p in experiments.panel_names("fig1")}
    fig = plotting.fig1(results, "smoke")
    axes = np.array(fig.axes).reshape(2, 6)
    titles = [ax.get_title() for ax in axes[0]]
    assert titles == ["digits, M = 30", "fashion, M = 30", "digits, M = 100", "fashion, M = 100",
                      "digits, M = 300", "fashion, M = 300"]
    for j in range(6):
        for ax in axes[:, j]:
            if j == 3:  # the diverged panel: no curve, a message
                assert ax.get_lines() == []
                texts = " ".join(t.get_text() for t in ax.texts)
                assert texts.startswith("diverged:") and "epoch 3" in texts.replace("\n", " ")
            else:
                assert _line_colors(ax) == [BLUE, ORANGE]
                assert len(ax.collections) == 2  # the two +-1 sd bands
    assert "mean nothing" in fig._suptitle.get_text()
    assert axes[0, 0].get_ylabel() == "training cost" and axes[1, 0].get_ylabel() == "test accuracy"


def test_curves_are_trial_means():
    pr = _panel("fig1", "digits_M30", trials=3, epochs=5)
    fig, (a, b) = plt.subplots(2)
    plotting.learning_curves(a, b, pr)
    ctl, nrm = b.get_lines()
    np.testing.assert_allclose(ctl.get_ydata(), pr.result.test_accuracy[0].mean(0))
    np.testing.assert_allclose(nrm.get_ydata(), pr.result.test_accuracy[1].mean(0))
    np.testing.assert_array_equal(ctl.get_xdata(), np.arange(1, 6))


def test_fig2_maps_and_distributions():
    pr = _panel("fig2", "mnist_M100", epochs=10)
    maps = plotting.fig2_maps(pr, "quick")
    images = [ax for ax in maps.axes if ax.images]
    assert len(images) == 6  # epochs 1, 5, 10 x two conditions (paper: 1, 10, 100)
    assert [ax.images[0].get_cmap().name for ax in images[:2]] == ["Blues", "Oranges"]
    assert images[0].images[0].get_array().shape == (28, 28)
    expected = pr.result.snapshots["efferent_counts"][0, :, 0].mean(0).reshape(28, 28)
    np.testing.assert_allclose(images[0].images[0].get_array(), expected)
    dist = plotting.fig2_distributions(pr, "quick")
    hist_axes = [ax for ax in dist.axes if ax.patches]
    assert len(hist_axes) == 3 * 10  # three statistics x ten snapshot epochs


def test_fig2_diverged_says_so():
    pr = _panel("fig2", "mnist_M100", diverged=True)
    for fig in (plotting.fig2_maps(pr), plotting.fig2_distributions(pr)):
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "diverged:" in text


def test_fig3_layout():
    results = {p: _panel("fig3", p) for p in experiments.panel_names("fig3")}
    fig = plotting.fig3(results, "paper")
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title()[:2] for ax in axes[0]] == ["C:", "C:", "D:", "E:"]
    assert "paper scale" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="conv"):
        plotting.fig3({k: v for k, v in results.items() if k != "conv"})


def test_save_figure_writes_png_and_svg(tmp_path):
    results = {p: _panel("fig3", p) for p in experiments.panel_names("fig3")}
    fig = plotting.fig3(results)
    png, svg = plotting.save_figure(fig, tmp_path / "out", "fig3")
    assert png == tmp_path / "out" / "fig3.png" and svg == tmp_path / "out" / "fig3.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:2000]
    height, width = plt.imread(png).shape[:2]
    w_in, h_in = fig.get_size_inches()
    assert width > 100 * w_in * 0.8  # ~150 dpi, cropped to the drawing


def test_plotting_accepts_replaced_specs():
    # PanelResult-like objects: only .result, .diverged, .error and .spec.title are used
    pr = _panel("fig1", "digits_M30")
    pr2 = dataclasses.replace(pr, spec=dataclasses.replace(pr.spec, title="custom"))
    fig, (a, b) = plt.subplots(2)
    plotting.learning_curves(a, b, pr2)
    assert a.get_title() == "custom"

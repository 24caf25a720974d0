"""Panel specs, scale presets, overrides, config hashes, and resumable panel runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dendnorm_flax import experiments
from dendnorm_flax.train import DivergenceError, RunConfig

PANELS = {
    "fig1": ("digits_M30", "fashion_M30", "digits_M100", "fashion_M100", "digits_M300", "fashion_M300"),
    "fig2": ("mnist_M100",),
    "fig3": ("two_layers", "three_layers", "conv", "threshold_linear"),
}


def _fake_data(n_train=500, n_test=500, seed=0):
    """Random images with learnable labels (class = brightest of ten pixel blocks)."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n_train + n_test, 784)) < 0.2).astype(np.float32) * rng.random((n_train + n_test, 784),
                                                                                     dtype=np.float32)
    y = x[:, :780].reshape(-1, 10, 78).sum(-1).argmax(-1).astype(np.int32)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


# --------------------------------------------------------------------------- presets


def test_every_figure_and_scale_has_its_panels():
    assert experiments.SCALES == ("smoke", "quick", "paper")
    for figure, names in PANELS.items():
        assert experiments.panel_names(figure) == names
        for scale in experiments.SCALES:
            configs = experiments.panels(figure, scale)
            assert tuple(configs) == names
            for cfg in configs.values():
                assert isinstance(cfg, RunConfig)
                cfg.validate()


def test_paper_preset_is_the_protocol():
    for figure, epochs in (("fig1", 100), ("fig2", 100), ("fig3", 50)):
        for panel, cfg in experiments.panels(figure, "paper").items():
            assert (cfg.trials, cfg.epochs) == (10, epochs), panel
            assert (cfg.eps, cfg.zeta, cfg.lr, cfg.batch_size) == (0.2, 0.15, 0.05, 10), panel
            assert cfg.n_train is None and cfg.n_test is None, panel
            assert cfg.s_init == 25.0 and cfg.init_std == 1.0, panel
    fig1 = experiments.panels("fig1", "paper")
    for panel, cfg in fig1.items():
        name, m = panel.split("_M")
        assert cfg.hidden == (int(m),)
        assert cfg.dataset == {"digits": "mnist", "fashion": "fashion"}[name]
        assert cfg.architecture == "mlp" and cfg.activation == "sigmoid"
    fig2 = experiments.panel_config("fig2", "mnist_M100", "paper")
    assert (fig2.dataset, fig2.hidden) == ("mnist", (100,))
    assert fig2.snapshot_epochs == (1, 5, 10, 25, 100)
    assert experiments.map_epochs(fig2.snapshot_epochs) == (1, 10, 100)
    fig3 = experiments.panels("fig3", "paper")
    assert all(cfg.dataset == "fashion" for cfg in fig3.values())
    assert fig3["two_layers"].hidden == (100, 100)
    assert fig3["three_layers"].hidden == (100, 100, 100)
    assert (fig3["conv"].architecture, fig3["conv"].hidden) == ("conv", (100,))
    assert (fig3["threshold_linear"].activation, fig3["threshold_linear"].hidden) == ("threshold_linear", (100,))


def test_smaller_scales_are_smaller():
    for figure in PANELS:
        for panel in PANELS[figure]:
            smoke, quick, paper = (experiments.panel_config(figure, panel, s) for s in experiments.SCALES)
            work = lambda c: c.trials * c.epochs * (c.n_train or 60000)
            assert work(smoke) < work(quick) < work(paper), (figure, panel)
            assert smoke.trials >= 2 and smoke.n_train <= 1000
            assert quick.trials >= 3
            # the network and the protocol never change with the scale
            for field in ("dataset", "architecture", "hidden", "activation", "eps", "zeta", "lr", "batch_size"):
                assert getattr(smoke, field) == getattr(quick, field) == getattr(paper, field)
    snap = experiments.panel_config("fig2", "mnist_M100", "quick").snapshot_epochs
    assert len(experiments.map_epochs(snap)) == 3 and snap[0] == 1


def test_unknown_names_are_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="fig1, fig2, fig3"):
        experiments.panels("fig4")
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        experiments.panels("fig1", "huge")
    with pytest.raises(ValueError, match="digits_M30"):
        experiments.panel_config("fig1", "digits_M1000")


# --------------------------------------------------------------------------- overrides


def test_overrides_apply_to_every_panel():
    configs = experiments.panels("fig1", "smoke", {"epochs": 3, "lr": 0.01, "n_train": 200})
    assert all((c.epochs, c.lr, c.n_train) == (3, 0.01, 200) for c in configs.values())
    # what a panel is stays as it was
    assert configs["fashion_M300"].hidden == (300,) and configs["fashion_M300"].dataset == "fashion"


def test_overrides_reject_unknown_fields_listing_valid_ones():
    with pytest.raises(ValueError) as err:
        experiments.panels("fig1", "smoke", {"epoch": 3})
    msg = str(err.value)
    assert "'epoch'" in msg
    for field in (f.name for f in dataclasses.fields(RunConfig)):
        assert field in msg


def test_overrides_take_lists_and_invalid_values_fail_clearly():
    cfg = experiments.panel_config("fig3", "two_layers", "smoke", {"hidden": [20, 30]})
    assert cfg.hidden == (20, 30)
    with pytest.raises(ValueError, match="lr"):
        experiments.panel_config("fig1", "digits_M30", "smoke", {"lr": -1.0})


def test_shorter_runs_keep_a_final_snapshot():
    cfg = experiments.panel_config("fig2", "mnist_M100", "paper", {"epochs": 7})
    assert cfg.snapshot_epochs == (1, 5, 7)
    cfg = experiments.panel_config("fig2", "mnist_M100", "paper", {"epochs": 7, "snapshot_epochs": [2]})
    assert cfg.snapshot_epochs == (2,)


def test_config_hash_follows_every_setting():
    base = experiments.panel_config("fig1", "digits_M30", "smoke")
    h = experiments.config_hash(base)
    assert h == experiments.config_hash(experiments.panel_config("fig1", "digits_M30", "smoke"))
    changes = {"epochs": 3, "lr": 0.04, "seed": 1, "n_train": 400, "hidden": (31,), "zeta": 0.1,
               "snapshot_epochs": (1,), "trials": 3, "s_init": 20.0, "dataset": "fashion"}
    hashes = {h}
    for field, value in changes.items():
        hashes.add(experiments.config_hash(dataclasses.replace(base, **{field: value})))
    assert len(hashes) == len(changes) + 1
    assert experiments.config_hash(experiments.panel_config("fig1", "digits_M30", "smoke", seed=5)) != h


def test_map_epochs():
    assert experiments.map_epochs((1, 5, 10, 25, 100)) == (1, 10, 100)
    assert experiments.map_epochs((1, 2, 5, 10)) == (1, 5, 10)
    assert experiments.map_epochs((1, 2)) == (1, 2)
    assert experiments.map_epochs((3,)) == (3,)


def test_hyperparameter_table():
    rows = experiments.hyperparameter_table()
    assert len(rows) == 3 * sum(len(p) for p in PANELS.values())
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    for row in rows:
        assert {"figure", "panel", "title", "scale"} | fields <= set(row)
        json.dumps(row)  # JSON-ready
    paper = [r for r in rows if r["scale"] == "paper" and r["figure"] == "fig3"]
    assert {r["epochs"] for r in paper} == {50}


def test_scale_banner_says_smoke_means_nothing():
    assert "mean nothing" in experiments.scale_banner("smoke")
    assert "paper" in experiments.scale_banner("paper")


# --------------------------------------------------------------------------- running and resuming


@pytest.fixture(scope="module")
def fake_data():
    return _fake_data()


def test_run_panel_saves_resumes_and_reruns_on_change(tmp_path, fake_data, monkeypatch):
    out = tmp_path / "results"
    calls = []
    from dendnorm_flax import train as train_module

    real_train = train_module.train

    def counting_train(config, **kw):
        calls.append(config)
        return real_train(config, **kw)

    monkeypatch.setattr(train_module, "train", counting_train)
    kw = dict(scale="smoke", output_dir=out, data=fake_data, verbose=False)
    first = experiments.run_panel("fig1", "digits_M30", resume=True, **kw)
    npz, js = out / "fig1" / "panels" / "digits_M30.npz", out / "fig1" / "panels" / "digits_M30.json"
    assert npz.is_file() and js.is_file() and not first.resumed and len(calls) == 1
    meta = json.loads(js.read_text())
    assert meta["config_hash"] == experiments.config_hash(first.spec.config) and meta["complete"]
    assert first.result.test_accuracy.shape == (2, 2, 2)

    again = experiments.run_panel("fig1", "digits_M30", resume=True, **kw)
    assert again.resumed and len(calls) == 1
    np.testing.assert_array_equal(again.result.test_accuracy, first.result.test_accuracy)
    np.testing.assert_array_equal(again.result.train_cost, first.result.train_cost)
    assert again.final() == first.final()

    changed = experiments.run_panel("fig1", "digits_M30", resume=True, overrides={"epochs": 1}, **kw)
    assert not changed.resumed and len(calls) == 2
    assert changed.result.test_accuracy.shape == (2, 2, 1)

    # resume=False always trains
    experiments.run_panel("fig1", "digits_M30", resume=False, **kw)
    assert len(calls) == 3


def test_incomplete_panel_is_rerun(tmp_path, fake_data):
    kw = dict(scale="smoke", output_dir=tmp_path, data=fake_data, verbose=False, overrides={"epochs": 1})
    experiments.run_panel("fig1", "digits_M30", **kw)
    js = tmp_path / "fig1" / "panels" / "digits_M30.json"
    js.unlink()  # killed after the arrays, before the record that marks completion
    assert not experiments.run_panel("fig1", "digits_M30", resume=True, **kw).resumed


def test_divergence_is_recorded_not_raised(tmp_path, fake_data, monkeypatch):
    from dendnorm_flax import train as train_module

    def diverging(config, **kw):
        raise DivergenceError("run diverged: cost is nan for condition 'control', trial 1, epoch 2")

    monkeypatch.setattr(train_module, "train", diverging)
    pr = experiments.run_panel("fig3", "threshold_linear", scale="smoke", output_dir=tmp_path,
                               data=fake_data, verbose=False)
    assert pr.diverged and pr.result is None and "trial 1, epoch 2" in pr.error
    assert "fig3/threshold_linear" in pr.error
    assert "DIVERGED" in pr.summary()
    meta = json.loads((tmp_path / "fig3" / "panels" / "threshold_linear.json").read_text())
    assert meta["diverged"] and meta["final"] is None
    # a diverged panel is complete: resuming does not train it again
    again = experiments.run_panel("fig3", "threshold_linear", scale="smoke", output_dir=tmp_path,
                                  data=fake_data, verbose=False, resume=True)
    assert again.resumed and again.diverged


def test_write_figure_results_contract(tmp_path, fake_data, monkeypatch):
    kw = dict(scale="smoke", output_dir=tmp_path, data=fake_data, verbose=False, overrides={"epochs": 1})
    ok = experiments.run_panel("fig1", "digits_M30", **kw)
    from dendnorm_flax import train as train_module

    def diverging(config, **kw):
        raise DivergenceError("run diverged: cost is inf")

    monkeypatch.setattr(train_module, "train", diverging)
    bad = experiments.run_panel("fig1", "fashion_M30", **kw)
    npz, js = experiments.write_figure_results("fig1", {"fashion_M30": bad, "digits_M30": ok}, tmp_path, "smoke")
    meta = json.loads(js.read_text())
    assert meta["figure"] == "fig1" and meta["scale"] == "smoke"
    assert list(meta["panels"]) == ["digits_M30", "fashion_M30"]  # the paper's order
    entry = meta["panels"]["digits_M30"]
    assert set(entry) == {"settings", "config_hash", "conditions", "final", "wall_time_s", "compile_s",
                          "workers", "worker_trials", "diverged", "error"}
    assert entry["conditions"] == ["control", "normalised"] and entry["diverged"] is False
    # how the trials were spread over processes: every trial in exactly one of them
    assert entry["workers"] == len(entry["worker_trials"]) >= 1
    assert sum(entry["worker_trials"]) == entry["settings"]["trials"]
    assert meta["panels"]["fashion_M30"]["workers"] is None  # unknown for the diverged run
    assert entry["error"] is None and entry["settings"]["epochs"] == 1
    for c in ("control", "normalised"):
        assert set(entry["final"][c]) == {"train_cost_mean", "train_cost_sd", "test_accuracy_mean",
                                          "test_accuracy_sd"}
    assert meta["panels"]["fashion_M30"]["diverged"] is True
    assert "inf" in meta["panels"]["fashion_M30"]["error"]
    prov = meta["provenance"]
    assert set(prov) >= {"git_commit", "git_dirty", "versions", "backend", "devices", "seed", "scale",
                         "overrides", "hostname", "started", "finished"}
    assert set(prov["versions"]) >= {"python", "jax", "jaxlib", "flax", "optax", "numpy", "matplotlib",
                                     "dendnorm_flax"}
    assert prov["overrides"] == {"epochs": 1} and prov["scale"] == "smoke" and prov["seed"] == 0
    with np.load(npz) as z:
        assert sorted(z.files) == ["digits_M30/test_accuracy", "digits_M30/train_cost", "digits_M30/trial_seeds"]
        assert z["digits_M30/test_accuracy"].shape == (2, 2, 1)


def test_write_figure_results_rejects_mixed_scales(tmp_path, fake_data):
    pr = experiments.run_panel("fig1", "digits_M30", scale="smoke", output_dir=tmp_path, data=fake_data,
                               verbose=False, overrides={"epochs": 1})
    with pytest.raises(ValueError, match="scale"):
        experiments.write_figure_results("fig1", [pr], tmp_path, "quick")

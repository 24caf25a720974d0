"""`dendnorm reproduce`: every notebook at smoke scale, resuming, failures, arguments.

The smoke reproduction runs once per session (:func:`smoke_results`, through
:func:`dendnorm_flax.reproduce.run_smoke_reproduction`, the code path of
``dendnorm reproduce``) on the real datasets (first 500 images); the resume
test reruns only Fig 1's notebook, the failure test runs two tiny stand-in
notebooks through the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dendnorm_flax import cli, reproduce
from dendnorm_flax.reproduce import ReproduceError

pytestmark = pytest.mark.slow

FIGURE_FILES = {"fig1": ("fig1",), "fig2": ("fig2a", "fig2b"), "fig3": ("fig3",)}
NOTEBOOKS = {"fig1": "fig1_learning", "fig2": "fig2_connectivity", "fig3": "fig3_deeper_networks"}
PANELS = {
    "fig1": ("digits_M30", "fashion_M30", "digits_M100", "fashion_M100", "digits_M300", "fashion_M300"),
    "fig2": ("mnist_M100",),
    "fig3": ("two_layers", "three_layers", "conv", "threshold_linear"),
}


# --------------------------------------------------------------------------- smoke results


@pytest.mark.parametrize("figure", list(PANELS))
def test_smoke_results_json(smoke_results, figure):
    meta = json.loads((smoke_results / figure / "results.json").read_text())
    assert meta["figure"] == figure and meta["scale"] == "smoke"
    assert tuple(meta["panels"]) == PANELS[figure]
    for panel, entry in meta["panels"].items():
        assert set(entry) == {"settings", "config_hash", "conditions", "final", "wall_time_s", "compile_s",
                              "workers", "worker_trials", "diverged", "error"}
        # CI has 2 cores and no accelerator: the 2 trials run in one worker process each.
        assert entry["workers"] == min(2, len(os.sched_getaffinity(0)))
        assert sum(entry["worker_trials"]) == entry["settings"]["trials"]
        assert entry["conditions"] == ["control", "normalised"]
        assert entry["diverged"] is False and entry["error"] is None
        assert entry["settings"]["trials"] == 2 and entry["settings"]["n_test"] in (100, 500)
        for cond in ("control", "normalised"):
            final = entry["final"][cond]
            assert set(final) == {"train_cost_mean", "train_cost_sd", "test_accuracy_mean", "test_accuracy_sd"}
            assert 0.0 <= final["test_accuracy_mean"] <= 1.0 and final["train_cost_mean"] > 0
        assert entry["wall_time_s"] > 0 and entry["compile_s"] > 0
    prov = meta["provenance"]
    assert set(prov) >= {"git_commit", "git_dirty", "versions", "backend", "devices", "seed", "scale",
                         "overrides", "hostname", "started", "finished"}
    assert prov["scale"] == "smoke" and prov["seed"] == 0 and prov["overrides"] == {}
    assert prov["backend"] == "cpu" and prov["versions"]["jax"]


@pytest.mark.parametrize("figure", list(PANELS))
def test_smoke_results_npz(smoke_results, figure):
    meta = json.loads((smoke_results / figure / "results.json").read_text())
    with np.load(smoke_results / figure / "results.npz") as z:
        arrays = {k: z[k] for k in z.files}
    for panel in PANELS[figure]:
        s = meta["panels"][panel]["settings"]
        shape = (2, s["trials"], s["epochs"])
        assert arrays[f"{panel}/train_cost"].shape == shape
        assert arrays[f"{panel}/test_accuracy"].shape == shape
        assert np.isfinite(arrays[f"{panel}/train_cost"]).all()
        np.testing.assert_array_equal(arrays[f"{panel}/trial_seeds"], np.arange(s["trials"]))
        final = meta["panels"][panel]["final"]["normalised"]["test_accuracy_mean"]
        assert final == pytest.approx(arrays[f"{panel}/test_accuracy"][1, :, -1].mean())
    if figure == "fig2":
        p = "mnist_M100/"
        epochs = arrays[p + "snapshot_epochs"]
        np.testing.assert_array_equal(epochs, [1, 2])
        n = len(epochs)
        assert arrays[p + "snap/efferent_counts"].shape == (2, 2, n, 784)
        assert arrays[p + "snap/afferent_counts"].shape == (2, 2, n, 100)
        assert arrays[p + "snap/mean_input"].shape == (2, 2, n, 100)
        assert arrays[p + "snap/weights"].shape == (2, 2, n, round(0.2 * 784 * 100))
        # SET conserves contacts
        assert (arrays[p + "snap/efferent_counts"].sum(-1) == round(0.2 * 784 * 100)).all()
    else:
        assert not any("snap" in k for k in arrays)


@pytest.mark.parametrize("figure", list(PANELS))
def test_smoke_figures_and_notebooks(smoke_results, figure):
    d = smoke_results / figure
    for name in FIGURE_FILES[figure]:
        png, svg = d / f"{name}.png", d / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in svg.read_bytes()[:2000]
    import nbformat

    nb = nbformat.read(d / f"{NOTEBOOKS[figure]}.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["parameters"] in tags and ["injected-parameters"] in tags
    injected = nb.cells[tags.index(["injected-parameters"])].source
    assert 'scale = "smoke"' in injected and str(smoke_results) in injected
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "mean nothing" in text  # the scale is stated
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the figure is shown
    for panel in PANELS[figure]:
        assert (d / "panels" / f"{panel}.json").is_file() and (d / "panels" / f"{panel}.npz").is_file()


def test_summary_file_and_table(smoke_results):
    summary = json.loads((smoke_results / "reproduce_summary.json").read_text())
    assert summary["ok"] and summary["failed"] == [] and summary["scale"] == "smoke"
    assert set(summary["figures"]) == set(PANELS)
    table = reproduce.format_summary(summary)
    assert "all figures ran" in table and "normalised acc" in table
    for panels in PANELS.values():
        for panel in panels:
            assert panel in table


# --------------------------------------------------------------------------- resume


def test_resume_finishes_only_what_is_missing(smoke_results, tmp_path):
    out = tmp_path / "smoke"
    shutil.copytree(smoke_results / "fig1", out / "fig1")
    panels = out / "fig1" / "panels"
    # a run killed part-way: two panels never finished, one was killed between
    # writing its arrays and the record that marks it complete
    for panel in ("digits_M300", "fashion_M300"):
        (panels / f"{panel}.npz").unlink()
        (panels / f"{panel}.json").unlink()
    (panels / "fashion_M100.json").unlink()
    (out / "fig1" / "results.json").unlink()
    (out / "fig1" / "results.npz").unlink()
    kept = {p: (panels / f"{p}.json").stat().st_mtime_ns for p in ("digits_M30", "fashion_M30", "digits_M100")}

    summary = reproduce.reproduce(scale="smoke", figures="fig1", out=out, resume=True, progress=False)
    assert summary["ok"], summary

    for panel, mtime in kept.items():
        assert (panels / f"{panel}.json").stat().st_mtime_ns == mtime, f"{panel} was retrained"
    for panel in ("digits_M300", "fashion_M300", "fashion_M100"):
        assert (panels / f"{panel}.json").is_file()
    import nbformat

    nb = nbformat.read(out / "fig1" / "fig1_learning.ipynb", as_version=4)
    (train_cell,) = [c for c in nb.cells if "run_panel(" in c.source]
    lines = "".join(o.get("text", "") for o in train_cell.outputs).splitlines()
    reused = sorted(line.split(":")[0] for line in lines if "(reused)" in line)
    assert reused == ["fig1/digits_M100", "fig1/digits_M30", "fig1/fashion_M30"]
    # the same numbers as the uninterrupted run
    with np.load(smoke_results / "fig1" / "results.npz") as a, np.load(out / "fig1" / "results.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    old = json.loads((smoke_results / "fig1" / "results.json").read_text())["panels"]
    new = json.loads((out / "fig1" / "results.json").read_text())["panels"]
    for panel in old:
        assert old[panel]["config_hash"] == new[panel]["config_hash"]
        assert old[panel]["final"] == new[panel]["final"]


# --------------------------------------------------------------------------- failures


def _stand_in_book(path: Path) -> Path:
    """fig1 raises in its third code cell (the fourth once papermill injects parameters); fig2 runs."""
    header = textwrap.dedent("""\
        ---
        jupytext:
          text_representation:
            extension: .md
            format_name: myst
        kernelspec:
          display_name: Python 3
          language: python
          name: python3
        ---

        # Stand-in

        ```{code-cell} ipython3
        :tags: [parameters]

        scale = "quick"
        overrides = {}
        seed = 0
        output_dir = "results"
        resume = False
        ```
        """)
    path.mkdir(parents=True)
    (path / "fig1_learning.md").write_text(header + textwrap.dedent("""
        ```{code-cell} ipython3
        x = 1
        ```

        ```{code-cell} ipython3
        raise RuntimeError("boom in the third cell")
        ```
        """))
    (path / "fig2_connectivity.md").write_text(header + textwrap.dedent("""
        ```{code-cell} ipython3
        print("fine", scale)
        ```
        """))
    return path


def test_failing_notebook_is_named_and_others_still_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(reproduce.BOOK_DIR_ENV, str(_stand_in_book(tmp_path / "book")))
    out = tmp_path / "out"
    code = cli.main(["reproduce", "--scale", "smoke", "--figures", "fig1,fig2", "--out", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 1
    nb_path = out / "fig1" / "fig1_learning.ipynb"
    assert f"FAILED fig1: {nb_path}, cell 4: RuntimeError: boom in the third cell" in captured.err
    assert 'raise RuntimeError("boom' in captured.err  # the failing source
    assert "FAILED: fig1" in captured.out
    summary = json.loads((out / "reproduce_summary.json").read_text())
    assert summary["failed"] == ["fig1"] and summary["figures"]["fig2"]["status"] == "ok"
    err = summary["figures"]["fig1"]["error"]
    assert err["cell"] == 4 and err["ename"] == "RuntimeError" and "boom" in err["evalue"]
    assert nb_path.is_file() and (out / "fig2" / "fig2_connectivity.ipynb").is_file()


# --------------------------------------------------------------------------- arguments


def test_bad_arguments_list_the_valid_ones(tmp_path):
    with pytest.raises(ReproduceError, match="smoke, quick, paper"):
        reproduce.reproduce(scale="huge", out=tmp_path)
    with pytest.raises(ReproduceError, match="fig1, fig2, fig3"):
        reproduce.reproduce(scale="smoke", figures="fig1,fig9", out=tmp_path)
    with pytest.raises(ReproduceError, match="unknown parameter 'epoch'.*epochs"):
        reproduce.reproduce(scale="smoke", out=tmp_path, parameters=["epoch=3"])
    with pytest.raises(ReproduceError, match="--scale"):
        reproduce.reproduce(scale="smoke", out=tmp_path, parameters=["scale=paper"])
    with pytest.raises(ReproduceError, match="lr must be > 0"):
        reproduce.reproduce(scale="smoke", out=tmp_path, parameters=["lr=-1"])
    assert not any(tmp_path.iterdir())  # nothing ran


def test_cli_reports_bad_parameters(capsys):
    assert cli.main(["reproduce", "--scale", "smoke", "-p", "nonsense=1"]) == 2
    assert "unknown parameter 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--scale", "huge"])
    assert "smoke" in capsys.readouterr().err


def test_parse_parameters():
    nb, ov = reproduce.parse_parameters(
        ["seed=3", "epochs=5", "hidden=[50]", "dataset=fashion", "n_train=None", "lr=0.1",
         'overrides={"trials": 4}', "snapshot_epochs=(1, 2)"])
    assert nb == {"seed": 3}
    assert ov == {"epochs": 5, "hidden": (50,), "dataset": "fashion", "n_train": None, "lr": 0.1,
                  "trials": 4, "snapshot_epochs": (1, 2)}
    assert reproduce.parse_parameters(None) == ({}, {})
    with pytest.raises(ReproduceError, match="KEY=VALUE"):
        reproduce.parse_parameters(["epochs"])


def test_cli_parser():
    parser = cli.build_parser()
    args = parser.parse_args(["reproduce", "--scale", "paper", "--figures", "fig2", "--out", "x", "--resume",
                              "-p", "epochs=3", "-p", "seed=1"])
    assert (args.scale, args.figures, args.out, args.resume) == ("paper", "fig2", "x", True)
    assert args.parameters == ["epochs=3", "seed=1"] and callable(args.func)
    assert parser.parse_args(["reproduce"]).scale == "quick"


def test_cli_starts_without_jax():
    code = ("import sys; from dendnorm_flax import cli; cli.build_parser(); "
            "print('jax' in sys.modules, 'papermill' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_kernel_is_available():
    assert Path(reproduce.ensure_kernel()).is_dir()

"""Batch reproduction: run the figure notebooks with papermill (``dendnorm reproduce``).

For each figure, ``book/<notebook>.md`` (Jupytext MyST) is read with
jupytext and executed by papermill with the parameters ``scale``,
``overrides``, ``seed``, ``output_dir`` and ``resume`` injected after its
``parameters`` cell. The executed notebook is written to
``<out>/<figure>/<notebook>.ipynb`` beside the figure files, ``results.npz``
and ``results.json`` that the notebook itself writes through
:mod:`dendnorm_flax.experiments`.

A failing notebook is reported with its cell and error and the others still
run; :func:`reproduce` then reports failure (the command exits 1).

Parameters given as ``-p KEY=VALUE`` (values parsed as JSON, else as a Python
literal, else kept as a string):

* ``seed``: the notebooks' base seed;
* ``overrides``: a dict of RunConfig fields (merged with the ones below);
* any :class:`~dendnorm_flax.train.RunConfig` field (``epochs``, ``trials``,
  ``n_train``, ``lr``, ...): goes into ``overrides`` and so applies to every
  panel of every figure run;
* ``scale``, ``output_dir`` and ``resume`` are set with ``--scale``, ``--out``
  and ``--resume`` instead.

No parallel processes: on a CPU, XLA already spreads each panel's program
over all cores, so running figures side by side would only split them.

The environment variable ``DENDNORM_BOOK_DIR`` points the runner at another
folder of notebooks (the tests use it to run a notebook that fails).

Example:
  >>> from dendnorm_flax.reproduce import reproduce
  >>> summary = reproduce(scale="smoke", out="/tmp/smoke")   # doctest: +SKIP
  >>> summary["ok"]                                          # doctest: +SKIP
  True
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "FIGURES",
    "SCALES",
    "NOTEBOOK_PARAMETERS",
    "ReproduceError",
    "book_dir",
    "format_summary",
    "parse_parameters",
    "ensure_kernel",
    "reproduce",
    "run_smoke_reproduction",
    "add_cli",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR_ENV = "DENDNORM_BOOK_DIR"
KERNEL = "python3"

# Kept literal (not imported from experiments) so that the CLI starts without JAX.
SCALES = ("smoke", "quick", "paper")
FIGURES = {"fig1": "fig1_learning", "fig2": "fig2_connectivity", "fig3": "fig3_deeper_networks"}
#: The notebooks' parameters cell, and which of them ``-p`` may set.
NOTEBOOK_PARAMETERS = ("scale", "overrides", "seed", "output_dir", "resume")
_FLAG_PARAMETERS = {"scale": "--scale", "output_dir": "--out", "resume": "--resume"}


class ReproduceError(ValueError):
    """Bad arguments to :func:`reproduce` (unknown scale, figure or parameter)."""


def book_dir() -> Path:
    """Where the figure notebooks are: ``$DENDNORM_BOOK_DIR`` or ``<repo>/book``."""
    env = os.environ.get(BOOK_DIR_ENV)
    return Path(env) if env else REPO_ROOT / "book"


def _run_config_fields() -> tuple[str, ...]:
    import dataclasses

    from dendnorm_flax.train import RunConfig

    return tuple(f.name for f in dataclasses.fields(RunConfig))


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_parameters(items: list[str] | Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``-p`` parameters into ``(notebook parameters, RunConfig overrides)``.

    ``items`` is a list of ``"KEY=VALUE"`` strings or a mapping. ``seed`` is a
    notebook parameter; ``overrides`` (a dict) and every RunConfig field are
    overrides. Raises :class:`ReproduceError` for unknown names, listing the
    valid ones.
    """
    if items is None:
        return {}, {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ReproduceError(f"parameter {item!r} is not KEY=VALUE (e.g. -p epochs=5)")
            pairs.append((key.strip(), _parse_value(value.strip())))
    fields = _run_config_fields()
    notebook, overrides = {}, {}
    for key, value in pairs:
        if key in _FLAG_PARAMETERS:
            raise ReproduceError(f"set {key!r} with {_FLAG_PARAMETERS[key]}, not as a parameter")
        if key == "seed" and not isinstance(value, bool) and isinstance(value, int):
            notebook["seed"] = value
        elif key == "seed":
            raise ReproduceError(f"seed must be an integer, got {value!r}")
        elif key == "overrides":
            if not isinstance(value, Mapping):
                raise ReproduceError(f"overrides must be a dict of RunConfig fields, got {value!r}")
            overrides.update(value)
        elif key in fields:
            overrides[key] = value
        else:
            raise ReproduceError(
                f"unknown parameter {key!r}; valid: seed, overrides, or a RunConfig field "
                f"({', '.join(f for f in fields if f != 'seed')}); "
                f"scale, output_dir and resume are set with --scale, --out and --resume"
            )
    from dendnorm_flax import experiments

    try:
        overrides = experiments.check_overrides(overrides)
    except ValueError as e:
        raise ReproduceError(str(e)) from None
    return notebook, overrides


def ensure_kernel(name: str = KERNEL) -> str:
    """Make sure a Jupyter kernel ``name`` runs this Python; install one into this prefix if missing.

    Returns the kernel's resource directory. A kernelspec whose command is
    ``python``/``python3`` is launched with this interpreter by jupyter_client.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = KernelSpecManager()
    try:
        spec = ksm.get_kernel_spec(name)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", name],
                       check=True, capture_output=True)
        spec = KernelSpecManager().get_kernel_spec(name)
    exe = spec.argv[0] if spec.argv else ""
    if exe not in ("python", "python3") and Path(exe).resolve() != Path(sys.executable).resolve():
        print(f"warning: Jupyter kernel {name!r} runs {exe}, not {sys.executable}; "
              f"if the notebooks cannot import dendnorm_flax, run "
              f"`{sys.executable} -m ipykernel install --sys-prefix`", file=sys.stderr)
    return spec.resource_dir


@contextlib.contextmanager
def _inline_figures():
    """Kernels started inside show figures inline even if the caller set ``MPLBACKEND=Agg``.

    A headless caller (CI exports ``MPLBACKEND=Agg``) would otherwise pass
    Agg on to the kernel, and the executed notebooks, which the book renders,
    would hold no figures. The figure files are written either way.
    """
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old


def _check_args(scale: str, figures) -> tuple[str, ...]:
    if scale not in SCALES:
        raise ReproduceError(f"unknown scale {scale!r}; valid scales are {', '.join(SCALES)}")
    if isinstance(figures, str):
        figures = [f for f in figures.split(",") if f.strip()]
    figures = tuple(f.strip() for f in figures)
    bad = [f for f in figures if f not in FIGURES]
    if bad or not figures:
        raise ReproduceError(f"unknown figure(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                             f"valid figures are {', '.join(FIGURES)}")
    return figures


def _failure(err: BaseException, notebook_out: Path) -> dict[str, Any]:
    """What failed: notebook path, cell, error name and value, the cell's source.

    ``cell`` is the failing cell's execution count, i.e. the ``In [n]`` a
    reader sees in the executed notebook (papermill's injected-parameters
    cell counts), which is also its number among the code cells there.
    """
    lines = str(err).strip().splitlines()
    info: dict[str, Any] = {"notebook": str(notebook_out), "cell": None, "cell_index": None,
                            "ename": type(err).__name__, "evalue": lines[-1] if lines else "",
                            "source": None}
    if getattr(err, "ename", None):  # papermill.PapermillExecutionError
        info["ename"], info["evalue"] = err.ename, err.evalue
        info["cell"] = getattr(err, "exec_count", None)
        info["cell_index"] = getattr(err, "cell_index", None)
        info["source"] = getattr(err, "source", None)
    return info


def _panel_rows(out: Path, figure: str) -> list[dict[str, Any]]:
    path = out / figure / "results.json"
    if not path.is_file():
        return []
    meta = json.loads(path.read_text())
    rows = []
    for panel, entry in meta.get("panels", {}).items():
        rows.append({"figure": figure, "panel": panel, "final": entry.get("final"),
                     "diverged": entry.get("diverged"), "error": entry.get("error"),
                     "wall_time_s": entry.get("wall_time_s")})
    return rows


def _fmt_acc(final: Mapping[str, Any] | None, condition: str) -> str:
    if not final:
        return "-"
    f = final[condition]
    mean, sd = f.get("test_accuracy_mean"), f.get("test_accuracy_sd")
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary table: figure, panel, final test accuracy per condition (mean ± sd), wall time."""
    head = ("figure", "panel", "control acc", "normalised acc", "wall s")
    rows = []
    for fig, info in summary["figures"].items():
        for r in info.get("panels", []):
            if r["diverged"]:
                rows.append((fig, r["panel"], "diverged", "diverged", f"{r['wall_time_s']:.0f}"))
            else:
                rows.append((fig, r["panel"], _fmt_acc(r["final"], "control"),
                             _fmt_acc(r["final"], "normalised"), f"{r['wall_time_s']:.0f}"))
        if info["status"] != "ok":
            rows.append((fig, "(notebook failed)", "-", "-", f"{info['wall_s']:.0f}"))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    out = [line(head), line("-" * w for w in widths), *map(line, rows)]
    out.append(f"scale {summary['scale']}; results in {summary['out']}; "
               f"total {summary['wall_s']:.0f} s; " + ("all figures ran" if summary["ok"]
                                                         else f"FAILED: {', '.join(summary['failed'])}"))
    return "\n".join(out)


def reproduce(scale: str = "quick", figures=("fig1", "fig2", "fig3"), out: str | os.PathLike | None = None,
              resume: bool = False, parameters: list[str] | Mapping[str, Any] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Execute the figure notebooks at ``scale`` into ``out``; return a summary dict.

    Args:
      scale: ``"smoke"``, ``"quick"`` or ``"paper"``.
      figures: figure ids (a sequence, or a comma-separated string).
      out: results root (default ``results/<scale>``); each figure writes to
        ``<out>/<figure>/``.
      resume: reuse panels already complete with identical settings.
      parameters: ``-p`` style ``KEY=VALUE`` strings or a mapping
        (see :func:`parse_parameters`).
      progress: print which figure runs and papermill's cell progress bar.

    Returns ``{"ok", "failed", "scale", "out", "wall_s", "figures": {fig:
    {"status", "notebook", "wall_s", "panels", "error"}}}``; a failed
    figure's ``error`` names the executed notebook, the cell and the error.
    """
    figures = _check_args(scale, figures)
    notebook_params, overrides = parse_parameters(parameters)
    out = Path(out if out is not None else Path("results") / scale).resolve()
    src = book_dir()
    missing = [str(src / f"{FIGURES[f]}.md") for f in figures if not (src / f"{FIGURES[f]}.md").is_file()]
    if missing:
        raise ReproduceError(f"notebook(s) not found: {', '.join(missing)}")

    from dendnorm_flax import experiments

    for fig in figures:  # a bad value fails here, once, not in every notebook
        try:
            experiments.panels(fig, scale, overrides, int(notebook_params.get("seed", 0)))
        except (ValueError, TypeError) as e:
            raise ReproduceError(f"{fig} at scale {scale!r} with overrides {overrides}: {e}") from None

    import jupytext
    import papermill

    ensure_kernel()
    params = {"scale": scale, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in overrides.items()},
              "seed": int(notebook_params.get("seed", 0)), "output_dir": str(out), "resume": bool(resume)}
    summary: dict[str, Any] = {"ok": True, "failed": [], "scale": scale, "out": str(out), "figures": {},
                               "parameters": params}
    t_all = time.perf_counter()
    for i, fig in enumerate(figures, 1):
        nb_name = FIGURES[fig]
        fig_dir = out / fig
        fig_dir.mkdir(parents=True, exist_ok=True)
        nb_out = fig_dir / f"{nb_name}.ipynb"
        if progress:
            print(f"[{i}/{len(figures)}] {fig}: {src / (nb_name + '.md')} -> {nb_out} (scale {scale})",
                  file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        info: dict[str, Any] = {"notebook": str(nb_out), "status": "ok", "error": None}
        try:
            nb = jupytext.read(src / f"{nb_name}.md")
            with _inline_figures():
                papermill.execute_notebook(
                    nb, str(nb_out), parameters=params, kernel_name=KERNEL, cwd=str(fig_dir),
                    progress_bar=progress, log_output=False,
                )
        except Exception as err:  # noqa: BLE001 - report and go on with the other figures
            failure = _failure(err, nb_out)
            info.update(status="failed", error=failure)
            summary["ok"] = False
            summary["failed"].append(fig)
            cell = f"cell {failure['cell']}" if failure["cell"] else "before any cell ran"
            print(f"FAILED {fig}: {nb_out}, {cell}: {failure['ename']}: {failure['evalue']}",
                  file=sys.stderr, flush=True)
            if failure.get("source"):
                print(textwrap.indent(failure["source"], "    | "), file=sys.stderr, flush=True)
        info["wall_s"] = time.perf_counter() - t0
        info["panels"] = _panel_rows(out, fig)
        if progress and info["status"] == "ok":
            print(f"    {fig} done in {info['wall_s']:.0f} s", file=sys.stderr, flush=True)
        summary["figures"][fig] = info
    summary["wall_s"] = time.perf_counter() - t_all
    (out / "reproduce_summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def run_smoke_reproduction(out_dir: str | os.PathLike, figures=("fig1", "fig2", "fig3")) -> Path:
    """Run every figure notebook at smoke scale into ``out_dir`` (the tests' and book's fixture).

    Raises ``RuntimeError`` naming the failed notebooks; returns ``out_dir``.
    """
    summary = reproduce(scale="smoke", figures=figures, out=out_dir, progress=False)
    if not summary["ok"]:
        errors = {f: summary["figures"][f]["error"] for f in summary["failed"]}
        raise RuntimeError(f"smoke reproduction failed: {json.dumps(errors, indent=1, default=str)}")
    return Path(out_dir)


# --------------------------------------------------------------------------- command line


def _cli(args) -> int:
    try:
        summary = reproduce(scale=args.scale, figures=args.figures, out=args.out, resume=args.resume,
                            parameters=args.parameters, progress=not args.quiet)
    except ReproduceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0 if summary["ok"] else 1


def add_cli(subparsers) -> None:
    """Register ``reproduce`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "reproduce",
        help="run the figure notebooks with papermill and collect results",
        description="Execute book/fig*.md with papermill at a scale; write executed notebooks, "
        "figures (PNG, SVG), results.npz and results.json to OUT/<figure>/.",
    )
    p.add_argument("--scale", choices=SCALES, default="quick",
                   help="smoke: pipeline check in minutes; quick: a laptop CPU in ~20 min "
                   "(default); paper: the paper's protocol (GPU)")
    p.add_argument("--figures", default=",".join(FIGURES),
                   help=f"comma-separated subset of {','.join(FIGURES)} (default: all)")
    p.add_argument("--out", default=None, help="results directory (default: results/<scale>)")
    p.add_argument("--resume", action="store_true",
                   help="skip panels already complete with identical settings (config hash)")
    p.add_argument("-p", "--parameter", dest="parameters", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="seed=N, overrides={...}, or any RunConfig field (epochs=5, trials=3, "
                   "n_train=10000, ...), applied to every panel; repeatable")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cli)

"""Build the HTML book from a results directory: ``dendnorm book ...``.

The book's figure pages are the *executed* notebooks of a reproduction
(``R/F/<notebook>.ipynb``, written by ``dendnorm reproduce``), not notebooks run
again at build time. Jupyter Book 1 cannot take a ``.ipynb`` beside a ``.md`` of
the same name, nor a page outside its source folder, so :func:`stage` copies the
book (config, toc, bibliography, pages) into a build folder, puts each executed
notebook where ``book/<notebook>.md`` was, and marks those notebooks as not to
be executed. The prose pages (biology, model, methods, scorecard) *are*
executed during the build; the scorecard finds the results directory through
the environment variable ``DENDNORM_RESULTS`` or the staged file
``book/_dendnorm_build.json`` (see :func:`locate_results`).

Pages must open offline: MathJax 3 is vendored by :func:`fetch_mathjax` into
``vendor/mathjax`` (git-ignored), shipped through ``html_extra_path`` and
loaded through ``mathjax_path`` (never from ``_static``, where every ``.js``
would become a script tag on every page). :func:`external_sources` checks the
generated HTML for script, style or image sources on another host.

Heavy imports (yaml, nbformat) stay inside functions so that ``dendnorm --help``
starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

__all__ = [
    "FIGURE_NOTEBOOKS",
    "MATHJAX_VERSION",
    "BookBuildError",
    "BuildResult",
    "fetch_mathjax",
    "check_results",
    "stage",
    "build",
    "external_sources",
    "locate_results",
    "add_cli",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

# Figure id -> executed notebook name, as written by `dendnorm reproduce`
# (R/<figure>/<notebook>.ipynb) and listed in _toc.yml as book/<notebook>.
FIGURE_NOTEBOOKS = {
    "fig1": "fig1_learning",
    "fig2": "fig2_connectivity",
    "fig3": "fig3_deeper_networks",
}

# Pin MathJax 3: 4.x has another file layout.
MATHJAX_VERSION = "3.2.2"
# What tex-chtml.js needs at run time: itself, its fonts, the TeX extensions
# it autoloads, and the lazily loaded parts of its context menu.
_MATHJAX_MEMBERS = (
    "es5/tex-chtml.js",
    "es5/output/chtml/fonts/woff-v2/",
    "es5/input/tex/extensions/",
    "es5/ui/",
    "LICENSE",
)

RESULTS_ENV = "DENDNORM_RESULTS"
BUILD_INFO = "_dendnorm_build.json"
REPRODUCE_HINT = "dendnorm reproduce --scale smoke --out {results}"


class BookBuildError(RuntimeError):
    """A book cannot be built; the message says what is missing and what to run."""


@dataclass(frozen=True)
class BuildResult:
    """Where the built book is and how long it took."""

    index: Path  # the HTML index (opens the introduction)
    html_dir: Path  # folder of the HTML pages
    seconds: float  # wall-clock time of stage + jupyter-book build


# --------------------------------------------------------------------------- MathJax


def mathjax_dir(root: Path = REPO_ROOT) -> Path:
    """The vendored MathJax folder (``<root>/vendor/mathjax``; holds ``es5/``)."""
    return Path(root) / "vendor" / "mathjax"


def fetch_mathjax(dest: Path | None = None, *, version: str = MATHJAX_VERSION, npm: str = "npm") -> Path:
    """Vendor MathJax ``version`` from the npm registry into ``dest`` (idempotent).

    Does nothing when ``dest/es5/tex-chtml.js`` exists. Otherwise runs
    ``npm pack mathjax@<version>`` in a temporary folder, and copies out of the
    tarball only what ``tex-chtml.js`` needs (about 2.5 MB, see
    ``_MATHJAX_MEMBERS``). The copy is assembled beside ``dest`` and renamed
    into place, so an interrupted fetch never leaves a half folder behind.

    Returns ``dest``.
    """
    dest = Path(dest) if dest is not None else mathjax_dir()
    if (dest / "es5" / "tex-chtml.js").is_file():
        return dest
    npm_exe = shutil.which(npm)
    if npm_exe is None:
        raise BookBuildError(
            f"`{npm}` not found: it is needed once to fetch MathJax {version} from the npm registry. "
            f"Install Node.js/npm (Debian: apt-get install npm), or copy the es5/ folder of "
            f"mathjax@{version} into {dest}/es5/."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mathjax-") as tmp:
        proc = subprocess.run(
            [npm_exe, "pack", f"mathjax@{version}", "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        tarballs = sorted(Path(tmp).glob("mathjax-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise BookBuildError(
                f"`npm pack mathjax@{version}` failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        staging = Path(tempfile.mkdtemp(prefix=".mathjax-", dir=dest.parent))
        try:
            with tarfile.open(tarballs[0], "r:gz") as tar:
                wanted = [
                    m
                    for m in tar.getmembers()
                    if (m.isfile() or m.isdir())
                    and any(
                        m.name == f"package/{p}" or (p.endswith("/") and m.name.startswith(f"package/{p}"))
                        for p in _MATHJAX_MEMBERS
                    )
                ]
                tar.extractall(staging, members=wanted, filter="data")
            src = staging / "package"
            if not (src / "es5" / "tex-chtml.js").is_file():
                raise BookBuildError(f"mathjax@{version} tarball has no es5/tex-chtml.js; is the version right?")
            if dest.exists():
                shutil.rmtree(dest)
            src.rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------- results


def _missing_message(results: Path, missing: list[str]) -> str:
    lines = "\n".join(f"  - {m}" for m in missing)
    return (
        f"cannot build the book from {results}: missing\n{lines}\n"
        f"Create the results with: {REPRODUCE_HINT.format(results=results)}"
    )


def check_results(results: Path) -> dict[str, Path]:
    """Check that ``results`` holds everything the book shows; return the notebooks.

    For each figure ``F`` (fig1, fig2, fig3) the book needs ``R/F/results.json``,
    the executed notebook ``R/F/<notebook>.ipynb`` and at least one figure
    image ``R/F/*.png``. Raises :class:`BookBuildError` listing everything
    missing and the command that creates it.

    Returns ``{figure: path of the executed notebook}``.
    """
    results = Path(results)
    if not results.is_dir():
        raise BookBuildError(_missing_message(results, [f"the results directory {results}"]))
    missing: list[str] = []
    notebooks: dict[str, Path] = {}
    for fig, nb in FIGURE_NOTEBOOKS.items():
        d = results / fig
        for need in (d / "results.json", d / f"{nb}.ipynb"):
            if not need.is_file():
                missing.append(str(need))
        if not any(d.glob("*.png")):
            missing.append(f"{d}/*.png (the figure images of {fig})")
        notebooks[fig] = d / f"{nb}.ipynb"
    if missing:
        raise BookBuildError(_missing_message(results, missing))
    return notebooks


def results_scale(results: Path) -> str:
    """The scale (smoke, quick, paper) recorded in the results' ``results.json`` files.

    Raises :class:`BookBuildError` if the figures disagree: a book shows one scale.
    """
    scales = {}
    for fig in FIGURE_NOTEBOOKS:
        with open(Path(results) / fig / "results.json") as f:
            scales[fig] = json.load(f).get("scale", "unknown")
    if len(set(scales.values())) > 1:
        raise BookBuildError(f"the figures in {results} were run at different scales: {scales}")
    return next(iter(scales.values()))


def locate_results(default: Path | None = None) -> Path:
    """The results directory a book page should read.

    In order: the environment variable ``DENDNORM_RESULTS`` (set by
    :func:`build`); the file ``_dendnorm_build.json`` in the current folder or
    a parent (written by :func:`stage`); ``default``; ``<repo>/results/quick``.
    """
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        info = d / BUILD_INFO
        if info.is_file():
            return Path(json.loads(info.read_text())["results"])
    return Path(default) if default is not None else REPO_ROOT / "results" / "quick"


# --------------------------------------------------------------------------- staging

_MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_IMAGE = re.compile(r"<img[^>]*\ssrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def _referenced_files(nb_path: Path) -> list[str]:
    """Relative image paths referenced from the markdown cells of a notebook."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    refs: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for pattern in (_MD_IMAGE, _HTML_IMAGE):
            for ref in pattern.findall(cell.source):
                if "://" in ref or ref.startswith(("data:", "/", "#")):
                    continue
                refs.append(ref)
    return refs


def _staged_config(src: Path, dest: Path, notebooks: list[str]) -> None:
    """Copy ``_config.yml``, telling myst-nb not to re-execute the executed notebooks."""
    import yaml

    config = yaml.safe_load(src.read_text())
    execute = config.setdefault("execute", {})
    patterns = list(execute.get("exclude_patterns") or [])
    execute["exclude_patterns"] = patterns + [f"{nb}.ipynb" for nb in notebooks]
    header = "# Staged by dendnorm_flax.bookbuild from the repository's _config.yml; do not edit.\n"
    dest.write_text(header + yaml.safe_dump(config, sort_keys=False))


def stage(results: Path, staged: Path, *, root: Path = REPO_ROOT) -> Path:
    """Assemble the book source for ``results`` in ``staged`` (emptied first).

    Copies ``_config.yml`` (with the executed notebooks excluded from
    execution), ``_toc.yml``, ``references.bib`` and ``book/``; replaces each
    ``book/<notebook>.md`` by the executed ``R/F/<notebook>.ipynb`` and copies
    the image files its markdown references; copies the vendored MathJax; writes
    ``book/_dendnorm_build.json`` with the results path and scale.

    Returns ``staged``.
    """
    root, results, staged = Path(root), Path(results).resolve(), Path(staged)
    notebooks = check_results(results)
    scale = results_scale(results)
    mathjax = mathjax_dir(root)
    if not (mathjax / "es5" / "tex-chtml.js").is_file():
        raise BookBuildError(f"MathJax is not vendored in {mathjax}; run: dendnorm book fetch-mathjax")

    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    _staged_config(root / "_config.yml", staged / "_config.yml", list(FIGURE_NOTEBOOKS.values()))
    for name in ("_toc.yml", "references.bib"):
        shutil.copy2(root / name, staged / name)
    shutil.copytree(
        root / "book",
        staged / "book",
        ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__", "_build", BUILD_INFO),
    )
    shutil.copytree(mathjax, staged / "vendor" / "mathjax")

    for fig, nb_path in notebooks.items():
        page = staged / "book" / f"{nb_path.stem}.md"
        page.unlink(missing_ok=True)
        shutil.copy2(nb_path, staged / "book" / nb_path.name)
        missing = []
        for ref in _referenced_files(nb_path):
            src = (nb_path.parent / ref).resolve()
            if not src.is_file():
                missing.append(f"{src} (referenced by {nb_path})")
                continue
            target = (staged / "book" / ref).resolve()
            if staged.resolve() not in target.parents:
                raise BookBuildError(f"{nb_path} references {ref}, which lies outside the book")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        if missing:
            raise BookBuildError(_missing_message(results, missing))

    info = {"results": str(results), "scale": scale}
    (staged / "book" / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return staged


# --------------------------------------------------------------------------- checks


class _SourceCollector(HTMLParser):
    """Collect the URLs a browser fetches by itself when it opens a page."""

    # tag -> attributes that load something (links <a href> are not fetched)
    _LOADING = {
        "script": ("src",),
        "img": ("src", "srcset"),
        "link": ("href",),
        "iframe": ("src",),
        "source": ("src", "srcset"),
        "video": ("src", "poster"),
        "audio": ("src",),
        "embed": ("src",),
        "object": ("data",),
    }

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link" and (attrs.get("rel") or "") in ("canonical", "alternate"):
            return  # metadata, not fetched
        for name in self._LOADING.get(tag, ()):
            value = attrs.get(name)
            if value:
                self.urls.extend(v.strip().split()[0] for v in value.split(",") if v.strip())


_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)|@import\s+['\"]([^'\"]+)['\"]")


def _is_external(url: str) -> bool:
    url = url.strip()
    if url.startswith("//"):
        return True
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", url)
    if not m or m.group(1).lower() in ("data", "blob", "about", "javascript"):
        return False
    host = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", url).split("/")[0].split(":")[0]
    return host not in ("127.0.0.1", "localhost", "")


def external_sources(html_dir: Path) -> list[str]:
    """``file: url`` for every fetched resource on another host in the built HTML.

    Scans every ``.html`` for script, stylesheet, image, frame and media
    sources, and every ``.css`` for ``url(...)`` and ``@import``. Links the
    reader may click (``<a href>``) are not requests and are not reported.
    """
    found: list[str] = []
    html_dir = Path(html_dir)
    for path in sorted(html_dir.rglob("*.html")):
        parser = _SourceCollector()
        parser.feed(path.read_text(errors="replace"))
        found += [f"{path.relative_to(html_dir)}: {u}" for u in parser.urls if _is_external(u)]
    for path in sorted(html_dir.rglob("*.css")):
        for a, b in _CSS_URL.findall(path.read_text(errors="replace")):
            u = a or b
            if _is_external(u):
                found.append(f"{path.relative_to(html_dir)}: {u}")
    return found


# --------------------------------------------------------------------------- build


def _jupyter_book_command() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise BookBuildError("jupyter-book not found; install the book extra: pip install -e '.[book]'")


def build(
    results: Path,
    out: Path = Path("_build"),
    *,
    root: Path = REPO_ROOT,
    quiet: bool = False,
) -> BuildResult:
    """Build the HTML book for ``results`` into ``out/html`` (warnings are errors).

    Stages the source in ``out/src`` (:func:`stage`), runs
    ``jupyter-book build out/src -W -n --keep-going --all`` with
    ``DENDNORM_RESULTS`` set for the executed prose pages, moves the HTML to
    ``out/html`` and checks that no page loads anything from another host.
    ``quiet`` captures the build log and shows only its tail on failure.
    """
    start = time.perf_counter()
    out = Path(out).resolve()
    results = Path(results).resolve()
    check_results(results)
    fetch_mathjax(mathjax_dir(root))
    staged = stage(results, out / "src", root=root)

    env = dict(os.environ)
    env[RESULTS_ENV] = str(results)
    # The prose pages compute small things; leave any GPU to the experiments.
    env.setdefault("JAX_PLATFORMS", "cpu")
    # An inherited MPLBACKEND (e.g. Agg from a test run) would stop the kernels
    # from using the inline backend, and the pages would lose their figures.
    env.pop("MPLBACKEND", None)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    cmd = _jupyter_book_command() + ["build", str(staged), "-W", "-n", "--keep-going", "--all"]
    proc = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if proc.returncode != 0:
        tail = ((proc.stdout or "") + (proc.stderr or ""))[-8000:] if quiet else "(see the log above)"
        raise BookBuildError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")

    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    (staged / "_build" / "html").rename(html)
    offenders = external_sources(html)
    if offenders:
        raise BookBuildError(
            "the built pages load resources from other hosts (they must open offline):\n  "
            + "\n  ".join(offenders[:20])
        )
    return BuildResult(index=html / "index.html", html_dir=html, seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------- CLI


def _cmd_fetch_mathjax(args: argparse.Namespace) -> int:
    dest = Path(args.dest) if args.dest else mathjax_dir()
    had = (dest / "es5" / "tex-chtml.js").is_file()
    fetch_mathjax(dest)
    print(f"MathJax {MATHJAX_VERSION} {'already in' if had else 'vendored into'} {dest}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    try:
        result = build(Path(args.results), Path(args.out))
    except BookBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"book built in {result.seconds:.1f} s")
    print(f"open: {result.index}")
    return 0


def add_cli(subparsers) -> None:
    """Register ``book fetch-mathjax`` and ``book build`` on the ``dendnorm`` command."""
    book = subparsers.add_parser("book", help="build the HTML book (Jupyter Book 1) from a results directory")
    sub = book.add_subparsers(dest="book_command", required=True, metavar="SUBCOMMAND")

    fetch = sub.add_parser(
        "fetch-mathjax",
        help=f"vendor MathJax {MATHJAX_VERSION} from npm into vendor/mathjax (once; idempotent)",
    )
    fetch.add_argument("--dest", default=None, help="target folder (default: <repo>/vendor/mathjax)")
    fetch.set_defaults(func=_cmd_fetch_mathjax)

    b = sub.add_parser("build", help="stage the book with the executed notebooks of DIR and build the HTML")
    b.add_argument("--results", required=True, metavar="DIR", help="results directory of `dendnorm reproduce`")
    b.add_argument("--out", default="_build", metavar="DIR", help="output folder; HTML in DIR/html (default: _build)")
    b.set_defaults(func=_cmd_build)

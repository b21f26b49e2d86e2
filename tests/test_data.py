"""Tests of prunesearch.data: IDX reading, dataset lookup and download, splits, registry."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import random
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import user_dataset

from prunesearch.data import (
    DatasetSplits,
    RawDataset,
    list_datasets,
    load_dataset,
    make_splits,
    register_dataset,
)
from prunesearch.data import registry as data_registry
from prunesearch.data.download import fetch_files
from prunesearch.data.idx import read_idx, read_images_and_labels
from prunesearch.data.idx_datasets import (
    DATA_ENV,
    FASHION_MNIST,
    IDX_STEMS,
    IdxDatasetSpec,
    find_idx_files,
    load_idx_dataset,
)
from prunesearch.errors import DataError, UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzip-compressed when `path` ends in .gz."""
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    header += b"".join(dim.to_bytes(4, "big") for dim in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_idx_dataset(
    directory: Path, label: int = 0, gz: bool = True, n_train: int = 6, n_test: int = 4
) -> Path:
    """The four files of a tiny 3x3 MNIST-like dataset whose labels all equal `label`."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    rng = np.random.default_rng(label)
    for stem, n in zip(IDX_STEMS, (n_train, n_train, n_test, n_test), strict=True):
        if "images" in stem:
            array = rng.integers(0, 256, size=(n, 3, 3), dtype=np.uint8)
        else:
            array = np.full(n, label, dtype=np.uint8)
        write_idx(directory / f"{stem}{suffix}", array)
    return directory


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's $PRUNESEARCH_DATA or writes the user's cache."""
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def spec(tmp_path: Path) -> IdxDatasetSpec:
    """Fashion-MNIST's spec with a temporary system dir instead of Debian's, and no mirrors."""
    return dataclasses.replace(FASHION_MNIST, system_dirs=(tmp_path / "system",), mirrors=())


# --- IDX files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    values = np.arange(30).reshape(2, 3, 5)
    array = (values if dtype is np.uint8 else values * 1001 - 5000).astype(dtype)
    path = write_idx(tmp_path / f"data{suffix}", array)
    result = read_idx(path)
    assert result.dtype == array.dtype
    np.testing.assert_array_equal(result, array)


def test_images_and_labels_pair(tmp_path: Path) -> None:
    images = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2)
    labels = np.array([0, 3, 9, 1], dtype=np.uint8)
    x, y = read_images_and_labels(
        write_idx(tmp_path / "i.gz", images), write_idx(tmp_path / "l", labels), num_classes=10
    )
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def _assert_helpful(error: pytest.ExceptionInfo[DataError], path: Path, *words: str) -> None:
    message = str(error.value)
    assert isinstance(error.value, UserError)
    assert str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_idx(tmp_path: Path, suffix: str) -> None:
    full = write_idx(tmp_path / "full", np.zeros((5, 4, 4), dtype=np.uint8)).read_bytes()
    path = tmp_path / f"short{suffix}"
    path.write_bytes(gzip.compress(full[:-10]) if suffix else full[:-10])
    with pytest.raises(DataError) as error:
        read_idx(path)
    _assert_helpful(error, path, "truncated", "Delete it")


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((50, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError) as error:
        read_idx(path)
    _assert_helpful(error, path, "gzip", "Delete it")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(DataError) as error:
        read_idx(path)
    _assert_helpful(error, path, "not a valid gzip file", "re-download")


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(DataError) as error:
        read_idx(path)
    _assert_helpful(error, path, "not an IDX file")


def test_wrong_magic_for_role(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        read_images_and_labels(labels, labels, num_classes=10)
    _assert_helpful(error, labels, "2049", "2051")


def test_count_mismatch(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", np.zeros((5, 2, 2), dtype=np.uint8))
    labels = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        read_images_and_labels(images, labels, num_classes=10)
    _assert_helpful(error, images, str(labels), "5 images", "4 labels")


def test_label_out_of_range(tmp_path: Path) -> None:
    images = write_idx(tmp_path / "images", np.zeros((2, 2, 2), dtype=np.uint8))
    labels = write_idx(tmp_path / "labels", np.array([1, 10], dtype=np.uint8))
    with pytest.raises(DataError) as error:
        read_images_and_labels(images, labels, num_classes=10)
    _assert_helpful(error, labels, "label 10", "10 classes")


# --- where the files are found -----------------------------------------------------------------


def _label_of(raw_train_y: torch.Tensor) -> int:
    return int(raw_train_y[0])


def test_load_idx_dataset_shapes(tmp_path: Path, spec: IdxDatasetSpec) -> None:
    write_idx_dataset(tmp_path / "d", label=3, gz=False)
    train_x, train_y, test_x, test_y, num_classes = load_idx_dataset(spec, tmp_path / "d")
    assert train_x.shape == (6, 1, 3, 3) and train_x.dtype == torch.float32
    assert float(train_x.min()) >= 0.0 and float(train_x.max()) <= 1.0
    assert test_x.shape == (4, 1, 3, 3)
    assert train_y.dtype == torch.int64 and set(train_y.tolist()) == {3}
    assert len(test_y) == 4 and num_classes == 10


def test_explicit_dir_beats_env(
    tmp_path: Path, spec: IdxDatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_dataset(tmp_path / "explicit", label=1)
    write_idx_dataset(tmp_path / "env", label=2)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert _label_of(load_idx_dataset(spec, tmp_path / "explicit").train_y) == 1
    assert _label_of(load_idx_dataset(spec).train_y) == 2


def test_env_beats_system_beats_cache(
    tmp_path: Path, spec: IdxDatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    write_idx_dataset(cache, label=5)
    assert _label_of(load_idx_dataset(spec, cache_dir=cache).train_y) == 5
    write_idx_dataset(tmp_path / "system", label=4)
    assert _label_of(load_idx_dataset(spec, cache_dir=cache).train_y) == 4
    write_idx_dataset(tmp_path / "env" / "fashion-mnist", label=3)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    assert _label_of(load_idx_dataset(spec, cache_dir=cache).train_y) == 3


def test_default_cache_is_under_xdg_cache_home(tmp_path: Path, spec: IdxDatasetSpec) -> None:
    write_idx_dataset(tmp_path / "xdg-cache" / "prunesearch" / "data" / "fashion-mnist", label=6)
    assert _label_of(load_idx_dataset(spec, download=False).train_y) == 6


def test_torchvision_raw_layout(tmp_path: Path, spec: IdxDatasetSpec) -> None:
    write_idx_dataset(tmp_path / "root" / "FashionMNIST" / "raw", label=7)
    files = find_idx_files(spec, tmp_path / "root")
    assert files is not None and files[0].parent == tmp_path / "root" / "FashionMNIST" / "raw"
    assert _label_of(load_idx_dataset(spec, tmp_path / "root").train_y) == 7


def test_plain_files_preferred_to_gz(tmp_path: Path, spec: IdxDatasetSpec) -> None:
    write_idx_dataset(tmp_path / "d", label=1, gz=True)
    write_idx_dataset(tmp_path / "d", label=2, gz=False)
    files = find_idx_files(spec, tmp_path / "d")
    assert files is not None and [f.suffix for f in files] == [""] * 4


def test_empty_explicit_dir_is_an_error(
    tmp_path: Path, spec: IdxDatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty").mkdir()
    write_idx_dataset(tmp_path / "env", label=2)  # must not be used instead
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "env"))
    with pytest.raises(DataError) as error:
        load_idx_dataset(spec, tmp_path / "empty")
    _assert_helpful(error, tmp_path / "empty", "train-images-idx3-ubyte", "data_dir")


def test_incomplete_dir_is_skipped(tmp_path: Path, spec: IdxDatasetSpec) -> None:
    write_idx_dataset(tmp_path / "system", label=4)
    (tmp_path / "system" / "t10k-labels-idx1-ubyte.gz").unlink()
    write_idx_dataset(tmp_path / "cache", label=5)
    raw = load_idx_dataset(spec, cache_dir=tmp_path / "cache")
    assert _label_of(raw.train_y) == 5


def test_nothing_found_without_download(tmp_path: Path, spec: IdxDatasetSpec) -> None:
    with pytest.raises(DataError) as error:
        load_idx_dataset(spec, download=False, cache_dir=tmp_path / "cache")
    _assert_helpful(error, tmp_path / "system", str(tmp_path / "cache"), DATA_ENV, "download")


# --- download ----------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A local HTTP server on 127.0.0.1: (the directory it serves, its base URL)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def _served_spec(spec: IdxDatasetSpec, root: Path, label: int = 8) -> IdxDatasetSpec:
    write_idx_dataset(root, label=label)
    checksums = {f"{stem}.gz": md5(root / f"{stem}.gz") for stem in IDX_STEMS}
    return dataclasses.replace(spec, checksums=checksums)


def test_download_when_nothing_is_found(
    tmp_path: Path, spec: IdxDatasetSpec, http_server: tuple[Path, str]
) -> None:
    root, url = http_server
    served = _served_spec(spec, root)
    cache = tmp_path / "cache"
    raw = load_idx_dataset(served, cache_dir=cache, mirrors=[url + "missing/", url], timeout=5)
    assert _label_of(raw.train_y) == 8
    assert sorted(p.name for p in cache.iterdir()) == sorted(served.checksums)
    for name, checksum in served.checksums.items():
        assert md5(cache / name) == checksum
    (root / "train-images-idx3-ubyte.gz").unlink()  # the cache is used from now on
    assert _label_of(load_idx_dataset(served, cache_dir=cache, mirrors=[url]).train_y) == 8


def test_download_with_sha256(tmp_path: Path, http_server: tuple[Path, str]) -> None:
    root, url = http_server
    write_idx(root / "labels.gz", np.arange(3, dtype=np.uint8))
    sha = hashlib.sha256((root / "labels.gz").read_bytes()).hexdigest()
    paths = fetch_files({"labels.gz": sha}, tmp_path / "cache", [url])
    np.testing.assert_array_equal(read_idx(paths["labels.gz"]), [0, 1, 2])


def test_download_checksum_mismatch_leaves_nothing(
    tmp_path: Path, spec: IdxDatasetSpec, http_server: tuple[Path, str]
) -> None:
    root, url = http_server
    served = _served_spec(spec, root)
    wrong = dict(served.checksums, **{"train-labels-idx1-ubyte.gz": "0" * 32})
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        load_idx_dataset(
            dataclasses.replace(served, checksums=wrong), cache_dir=cache, mirrors=[url]
        )
    _assert_helpful(error, cache, "train-labels-idx1-ubyte.gz", "checksum")
    names = [p.name for p in cache.iterdir()]
    assert "train-labels-idx1-ubyte.gz" not in names
    assert not [name for name in names if name.endswith(".part")]


def test_download_unreachable_mirror(
    tmp_path: Path, spec: IdxDatasetSpec, http_server: tuple[Path, str]
) -> None:
    _, url = http_server
    with pytest.raises(DataError) as error:
        load_idx_dataset(spec, cache_dir=tmp_path / "cache", mirrors=[url + "nowhere/"], timeout=5)
    _assert_helpful(error, tmp_path / "cache", "404", "network")
    assert list((tmp_path / "cache").iterdir()) == []


# --- splits ------------------------------------------------------------------------------------


def _indexed_splits(val_size: int = 30, seed: int = 0, n: int = 100) -> DatasetSplits:
    """Splits whose train labels are the example's index, so examples can be traced."""
    train_x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 2, 2, 2)
    test_x = torch.zeros(10, 2, 2, 2)
    return make_splits("ids", train_x, torch.arange(n), test_x, torch.zeros(10), n, val_size, seed)


def test_splits_are_disjoint_and_from_train() -> None:
    splits = _indexed_splits()
    train, val = set(splits.train_y.tolist()), set(splits.val_y.tolist())
    assert len(val) == 30 and len(train) == 70
    assert not train & val and train | val == set(range(100))
    assert splits.test_y.dtype == torch.int64 and len(splits.test_y) == 10
    # inputs travel with their labels: example i held the value i before normalization
    order = splits.train_y.argsort()
    assert bool((splits.train_x[order, 0, 0, 0].diff() > 0).all())


def test_splits_are_deterministic_per_seed() -> None:
    a, b, c = _indexed_splits(seed=1), _indexed_splits(seed=1), _indexed_splits(seed=2)
    assert torch.equal(a.val_y, b.val_y) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_y, c.val_y)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_splits_do_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _indexed_splits()
    assert torch.equal(torch.rand(3), expected)


def test_normalization_uses_train_split_per_channel() -> None:
    generator = torch.Generator().manual_seed(0)
    train_x = torch.rand(200, 3, 4, 4, generator=generator) * torch.tensor([1.0, 5.0, 9.0]).view(
        1, 3, 1, 1
    )
    splits = make_splits("img", train_x, torch.zeros(200), train_x[:10], torch.zeros(10), 2, 50, 0)
    torch.testing.assert_close(
        splits.train_x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(splits.train_x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)
    assert splits.val_x.dtype == torch.float32 and splits.input_shape == (3, 4, 4)


def test_normalization_is_global_for_flat_data() -> None:
    train_x = torch.stack([torch.zeros(100), torch.full((100,), 10.0)], dim=1)
    splits = make_splits("flat", train_x, torch.zeros(100), train_x, torch.zeros(100), 2, 10, 0)
    assert float(splits.train_x[0, 0]) < 0 < float(splits.train_x[0, 1])
    assert splits.input_shape == (2,)


@pytest.mark.parametrize("val_size", [100, 250, 0])
def test_val_size_out_of_range(val_size: int) -> None:
    with pytest.raises(DataError) as error:
        _indexed_splits(val_size=val_size)
    assert "data.val_size" in str(error.value) and "99" in str(error.value)


def test_to_and_fingerprint() -> None:
    splits = _indexed_splits()
    moved = splits.to("cpu")
    assert isinstance(moved, DatasetSplits) and moved.fingerprint() == splits.fingerprint()
    assert len(splits.fingerprint()) == 16
    assert "train=70" in repr(splits)


# --- registry ----------------------------------------------------------------------------------


def test_list_datasets() -> None:
    assert set(list_datasets()) == {"fashion-mnist", "mnist", "mnist1d", "digits", "synthetic",
                                    "stdlib-bytes", "arrays", "imagefolder", "hf-disk"}


def test_stdlib_bytes_is_next_byte_prediction_over_whole_files_split_apart():
    splits = load_dataset("stdlib-bytes")
    assert splits.train_x.dtype == torch.int64 and splits.input_shape == (64,)
    assert splits.num_classes == 256
    # labels are the inputs shifted by one byte; nothing normalized
    assert torch.equal(splits.train_x[:, 1:], splits.train_y[:, :-1])
    assert torch.equal(splits.test_x[:, 1:], splits.test_y[:, :-1])
    assert int(splits.train_x.max()) < 256 and int(splits.train_x.min()) >= 0
    train_windows = {bytes(w.tolist()) for w in splits.train_x}
    assert not any(bytes(w.tolist()) in train_windows for w in splits.test_x[:200])


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'fmnist'; available: fashion-mnist") as e:
        load_dataset("fmnist")
    assert "'package.module:factory'" in str(e.value)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Datasets registered by a test are forgotten after it."""
    monkeypatch.setattr(data_registry, "_DATASETS", dict(data_registry._DATASETS))


def test_registered_dataset_loads(scratch_registry: None) -> None:
    calls: list[dict[str, object]] = []

    @register_dataset("blobs")
    def load_blobs(download: bool, **rest: object) -> RawDataset:
        calls.append({"download": download, **rest})
        return user_dataset.blobs()

    register_dataset("blobs-5", default_val_size=5)(user_dataset.no_args)
    assert list_datasets()[-2:] == ["blobs", "blobs-5"]
    splits = load_dataset("blobs", data_dir="~/somewhere", download=False)
    assert calls == [{"download": False, "data_dir": Path.home() / "somewhere"}]
    assert splits.name == "blobs" and splits.num_classes == user_dataset.CLASSES
    assert len(splits.val_y) == user_dataset.N_TRAIN // 10  # the default: 10% of train
    assert len(load_dataset("blobs-5").val_y) == 5
    assert len(load_dataset("blobs", val_size=7).val_y) == 7


def test_duplicate_or_invalid_registration(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="dataset 'synthetic' is already registered by "
                       "prunesearch.data.synthetic.load_synthetic"):
        register_dataset("synthetic")(user_dataset.no_args)
    register_dataset("blobs")(user_dataset.no_args)
    with pytest.raises(ValueError, match="'blobs' is already registered"):
        register_dataset("blobs", default_val_size=3)(user_dataset.blobs)
    with pytest.raises(ValueError, match="without ':'"):
        register_dataset("user_dataset:blobs")
    with pytest.raises(ValueError, match="default_val_size must be at least 1"):
        register_dataset("tiny", default_val_size=0)


def test_user_dataset_spec(tmp_path: Path) -> None:
    splits = load_dataset("user_dataset:no_args", seed=1)
    assert splits.name == "user_dataset:no_args" and splits.input_shape == (6,)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (36, 4, 10)
    assert len(load_dataset("user_dataset:as_tuple", download=False, val_size=9).val_y) == 9

    user_dataset.save_blobs(tmp_path)
    from_dir = load_dataset("user_dataset:from_dir", data_dir=tmp_path, seed=1)
    assert torch.equal(from_dir.train_x, splits.train_x)
    # the fingerprint keys cached checkpoints: the same data give the same key, changed data
    # (same name, same labels) another one
    again = load_dataset("user_dataset:from_dir", data_dir=tmp_path, seed=1)
    assert from_dir.fingerprint() == again.fingerprint()
    user_dataset.save_blobs(tmp_path, shift=0.5)
    shifted = load_dataset("user_dataset:from_dir", data_dir=tmp_path, seed=1)
    assert torch.equal(shifted.train_y, from_dir.train_y)
    assert shifted.fingerprint() != from_dir.fingerprint()
    assert load_dataset("synthetic").content_digest == ""  # built-ins keep their old keys


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("garbage", "returned a int, not a RawDataset"),
        ("four_items", "returned a tuple of 4 items, not a RawDataset"),
        ("numpy_inputs", "returned a ndarray as train_x, not a torch.Tensor; convert it"),
        ("label_out_of_range", "returned train label 2 with num_classes = 2; labels must lie in "
         "0..1"),
        ("float_labels", "returned train_y of shape (40,) and dtype torch.float32; labels are a "
         "1-D integer tensor"),
        ("missing_labels", "returned 10 test inputs but 9 test labels"),
        ("mismatched_shapes", "returned train examples of shape (6,) but test examples of shape "
         "(5,)"),
        ("nan_inputs", "returned train_x holding NaN or infinite values"),
        ("string_num_classes", "returned num_classes = '3', not an int"),
        ("explodes", "calling it with no arguments raised RuntimeError: disk on fire second line"),
        ("from_dir", "calling it with ['data_dir'] raised TypeError"),
    ],
)
def test_user_dataset_returns_garbage(factory: str, message: str) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(f"user_dataset:{factory}")
    text = str(error.value)
    assert text.startswith(f"dataset spec 'user_dataset:{factory}'") and message in text, text
    assert "returns prunesearch.data.RawDataset(train_x, train_y" in text  # the contract
    assert "\n" not in text


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("surely_missing_module_xyz:load", "module 'surely_missing_module_xyz' was not found; "
         "make it importable"),
        ("user_dataset:missing", "'user_dataset' has no attribute 'missing'; it defines: "),
        ("user_dataset:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a function or class that "
         "returns a RawDataset"),
        ("broken_user_dataset:load", "importing 'broken_user_dataset' raised ValueError: "
         "bad config"),
    ],
)
def test_user_dataset_spec_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str, message: str
) -> None:
    (tmp_path / "broken_user_dataset.py").write_text("raise ValueError('bad config')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DataError) as error:
        load_dataset(spec)
    assert str(error.value).startswith(f"dataset spec '{spec}': ") and message in str(error.value)


def test_synthetic_is_deterministic_and_learnable() -> None:
    splits = load_dataset("synthetic", seed=0)
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 4
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (448, 64, 128)
    assert torch.equal(load_dataset("synthetic", seed=0).train_x, splits.train_x)
    assert set(splits.train_y.tolist()) == {0, 1, 2, 3}
    centroids = torch.stack([splits.train_x[splits.train_y == c].mean(0) for c in range(4)])
    distances = torch.cdist(splits.test_x.flatten(1), centroids.flatten(1))
    assert float((distances.argmin(1) == splits.test_y).float().mean()) > 0.95


def test_digits() -> None:
    splits = load_dataset("digits", val_size=100, seed=3)
    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10
    assert len(splits.train_y) + len(splits.val_y) + len(splits.test_y) == 1797
    assert len(splits.val_y) == 100 and len(splits.test_y) == 359
    other_seed = load_dataset("digits", val_size=100, seed=4)
    assert torch.equal(other_seed.test_y, splits.test_y)  # the test set never depends on seed


def test_mnist1d_keeps_global_rng() -> None:
    np.random.seed(7)
    random.seed(7)
    expected = (np.random.rand(), random.random())
    np.random.seed(7)
    random.seed(7)
    splits = load_dataset("mnist1d")
    assert (np.random.rand(), random.random()) == expected
    assert splits.input_shape == (40,) and splits.num_classes == 10
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (3500, 500, 1000)
    assert splits.train_x.dtype == torch.float32


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist() -> None:
    splits = load_dataset("fashion-mnist", data_dir=DEBIAN_FASHION_MNIST, val_size=5000, seed=0)
    assert (len(splits.train_y), len(splits.val_y), len(splits.test_y)) == (55000, 5000, 10000)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert set(splits.test_y.tolist()) == set(range(10))
    assert abs(float(splits.train_x.mean())) < 1e-3


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_dir_is_found_without_data_dir() -> None:
    files = find_idx_files(FASHION_MNIST)
    assert files is not None and files[0].parent == DEBIAN_FASHION_MNIST

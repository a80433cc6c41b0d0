"""MNIST loading: known facts of the standard files, and clear errors for bad ones."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from landscape_utils.study import data as D
from tests.conftest import SHARED_DATA

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist() -> D.MNIST:
    return D.load_mnist(SHARED_DATA, download=False)


@pytest.mark.parametrize("split, size, counts", [("train", 60000, TRAIN_COUNTS), ("test", 10000, TEST_COUNTS)])
def test_split_sizes_and_class_counts(mnist, split, size, counts):
    s = getattr(mnist, split)
    assert s.x.shape == (size, 1, 28, 28) and s.x.dtype == torch.float32
    assert s.y.shape == (size,) and s.y.dtype == torch.int64
    assert torch.bincount(s.y, minlength=10).tolist() == counts


def test_first_labels_and_normalisation(mnist):
    assert mnist.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # Standardised with the training set's own mean 0.1307 and std 0.3081.
    assert abs(mnist.train.x.mean().item()) < 1e-3
    assert abs(mnist.train.x.std().item() - 1.0) < 1e-3
    raw_pixel = mnist.train.x * D.MNIST_STD + D.MNIST_MEAN
    assert raw_pixel.min().item() == pytest.approx(0.0, abs=1e-6)
    assert raw_pixel.max().item() == pytest.approx(1.0, abs=1e-6)


def test_reads_read_only_folder_in_place(mnist):
    assert mnist.raw_dir == (SHARED_DATA / "MNIST" / "raw").resolve()


def _copy_raw(tmp_path, unpack: bool = False):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (SHARED_DATA / "MNIST" / "raw").glob("*.gz"):
        if unpack:
            (raw / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
        else:
            shutil.copy(f, raw / f.name)
    return raw


def test_uncompressed_files_give_the_same_data(tmp_path, mnist):
    _copy_raw(tmp_path, unpack=True)
    other = D.load_mnist(tmp_path, download=False)
    assert torch.equal(other.train.x, mnist.train.x) and torch.equal(other.test.y, mnist.test.y)


@pytest.mark.parametrize("missing", ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
def test_missing_file_is_named_with_where_to_put_it(tmp_path, missing):
    raw = _copy_raw(tmp_path)
    (raw / missing).unlink()
    with pytest.raises(D.MNISTFileError) as err:
        D.load_mnist(tmp_path, download=False)
    msg = str(err.value)
    assert missing in msg and str(raw) in msg and "LANDSCAPE_DATA" in msg
    assert sum(name in msg for name in [f + ".gz" for f in D.MNIST_FILES]) == 1


def test_failed_download_offline_says_which_files_and_where(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("network is unreachable")

    monkeypatch.setattr(D, "_download", offline)
    with pytest.raises(D.MNISTFileError, match="Download failed.*network is unreachable") as err:
        D.load_mnist(tmp_path / "empty", download=True)
    assert all(f + ".gz" in str(err.value) for f in D.MNIST_FILES)


@pytest.mark.parametrize("corrupt, match", [
    (lambda b: b[: len(b) // 2], "cannot be read or decompressed"),  # truncated gzip stream
    (lambda b: gzip.compress(gzip.decompress(b)[:-100]), "truncated or padded"),
    (lambda b: gzip.compress(b"\x00\x00\x08\x03" + gzip.decompress(b)[4:]), "header says magic 2051"),
    (lambda b: gzip.compress(gzip.decompress(b)[:-1] + b"\x07"), "sha256 mismatch"),
])
def test_corrupted_file_gets_a_clear_error(tmp_path, corrupt, match):
    raw = _copy_raw(tmp_path)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(corrupt(target.read_bytes()))
    with pytest.raises(D.MNISTFileError, match=match) as err:
        D.load_mnist(tmp_path, download=False)
    assert "t10k-labels-idx1-ubyte" in str(err.value)


def test_probe_subset_is_fixed_by_its_seed(mnist):
    a = D.probe_subset(mnist.train, 2048, seed=0)
    b = D.probe_subset(mnist.train, 2048, seed=0)
    c = D.probe_subset(mnist.train, 2048, seed=1)
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)
    assert torch.equal(a.x, mnist.train.x[a.indices]) and len(set(a.indices.tolist())) == 2048
    assert a.describe() == "2,048 training examples (seed 0)"
    assert a.to_dict()["indices_sha256"] == b.to_dict()["indices_sha256"] != c.to_dict()["indices_sha256"]


@pytest.mark.parametrize("size", [0, -1, 60001, 2.5])
def test_probe_subset_rejects_bad_sizes(mnist, size):
    with pytest.raises(ValueError, match="probe subset size"):
        D.probe_subset(mnist.train, size, seed=0)

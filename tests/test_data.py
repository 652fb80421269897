"""Data loading (IDX files the tests write, gz and raw), partitions and topologies."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from hlgym.envs import partition
from hlgym.envs.datasets import DataNotFoundError, _load_cached, load_dataset, read_idx
from hlgym.envs.topology import euclidean, hl_random, mds_positions, validate_matrix


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def make_idx_folder(folder: Path, gz: bool, n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    x_tr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    y_tr = (np.arange(n_train) % 10).astype(np.uint8)
    x_te = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_te = (np.arange(n_test) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", x_tr, gz)
    write_idx(folder / "train-labels-idx1-ubyte", y_tr, gz)
    write_idx(folder / "t10k-images-idx3-ubyte", x_te, gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", y_te, gz)
    return x_tr, y_tr, x_te, y_te


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader(tmp_path: Path, gz: bool) -> None:
    _load_cached.cache_clear()
    x_tr, y_tr, _x_te, y_te = make_idx_folder(tmp_path / "mnist", gz)
    data = load_dataset("mnist", data_dir=str(tmp_path))  # finds the 'mnist' subfolder
    assert data.x_train.shape == (60, 1, 28, 28) and data.x_train.dtype == torch.float32
    np.testing.assert_allclose(data.x_train[:, 0].numpy(), x_tr / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.y_train.numpy(), y_tr)
    np.testing.assert_array_equal(data.y_test.numpy(), y_te)
    assert data.n_classes == 10 and data.input_shape == (1, 28, 28)
    assert data.source == str(tmp_path / "mnist")


def test_a_given_data_dir_is_the_only_place_looked_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A complete set elsewhere (here $HLGYM_DATA_DIR; on a user's machine ~/.cache/hlgym) is
    # never read in place of the folder the user named.
    make_idx_folder(tmp_path / "elsewhere" / "mnist", gz=False)
    monkeypatch.setenv("HLGYM_DATA_DIR", str(tmp_path / "elsewhere"))
    (tmp_path / "mine").mkdir()
    _load_cached.cache_clear()
    with pytest.raises(DataNotFoundError, match=r"data_dir=.*mine.* holds no complete set of IDX files"):
        load_dataset("mnist", data_dir=str(tmp_path / "mine"))
    _load_cached.cache_clear()
    assert load_dataset("mnist").source == str(tmp_path / "elsewhere" / "mnist")  # without data_dir: found
    _load_cached.cache_clear()


def test_idx_loader_rejects_a_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="header says"):
        read_idx(path)
    path.write_bytes(bytes([1, 2, 3, 4]))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_fashion_mnist_env_runs_on_idx_files(tmp_path: Path) -> None:
    from hlgym.envs import PeerSelectionEnv

    _load_cached.cache_clear()
    make_idx_folder(tmp_path, gz=True, n_train=300, n_test=50)
    env = PeerSelectionEnv(
        dataset="fashion_mnist", data_dir=str(tmp_path), model="cnn", main_samples=10, other_samples=5
    )
    _obs, _info = env.reset(seed=0)
    assert env.n_params == 33580  # the reference's CNN on 28x28
    env.step(1)


def test_digits_split() -> None:
    data = load_dataset("digits")
    assert data.x_train.shape == (1297, 1, 8, 8) and data.x_test.shape == (500, 1, 8, 8)
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    assert np.bincount(data.y_test.numpy()).min() >= 40


LABELS = np.repeat(np.arange(10), 130)


def test_hl_skew_is_disjoint_and_skewed() -> None:
    parts = partition.hl_skew(LABELS, 10, 10, 50, 50, np.random.default_rng(0))
    flat = np.concatenate(parts)
    assert flat.size == np.unique(flat).size == 1000
    for n, p in enumerate(parts):
        assert p.size == 100
        assert (LABELS[p] == n).sum() >= 50  # its 50 main samples (others may add a few)
        assert np.bincount(LABELS[p], minlength=10).argmax() == n


def test_hl_reference_reproduces_the_reference_overlap() -> None:
    labels = np.tile(np.arange(10), 600)  # 600 of each class, interleaved as in MNIST
    parts = partition.hl_reference(labels, 10, 10, 400, 100)
    for n, p in enumerate(parts):
        assert p.size == 500 and (labels[p[:400]] == n).all() and (labels[p[400:]] != n).all()
        np.testing.assert_array_equal(p[:400], np.flatnonzero(labels == n)[:400])
        np.testing.assert_array_equal(p[400:], np.flatnonzero(labels != n)[:100])
    distinct = np.unique(np.concatenate(parts)).size
    assert distinct < 5000  # the "other" samples repeat across peers


@pytest.mark.parametrize("name", ["dirichlet", "shards", "iid"])
def test_other_partitions_are_disjoint_and_seeded(name: str) -> None:
    def run(seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        if name == "dirichlet":
            return partition.dirichlet(LABELS, 10, 10, 0.3, None, rng)
        if name == "shards":
            return partition.shards(LABELS, 10, 2, 100, rng)
        return partition.iid(LABELS, 10, 100, rng)

    a, b, c = run(0), run(0), run(1)
    flat = np.concatenate(a)
    assert flat.size == np.unique(flat).size
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=False))
    if name == "shards":
        assert all(np.unique(LABELS[p]).size <= 3 for p in a)
    if name == "iid":
        assert all(p.size == 100 for p in a)


def test_partition_too_large_is_refused() -> None:
    with pytest.raises(ValueError, match=r"samples_per_peer \* n_peers=2000 asks for more samples"):
        partition.iid(LABELS, 10, 200, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"dirichlet_alpha=0\.001 left a peer"):
        partition.dirichlet(LABELS[:40], 10, 10, 0.001, None, np.random.default_rng(0), max_tries=3)


def test_topologies() -> None:
    d = hl_random(10)
    assert d.shape == (10, 10) and (np.diag(d) == 0).all() and np.array_equal(d, d.T)
    e, pos = euclidean(6, np.random.default_rng(0))
    assert validate_matrix(e, 6) is not None and pos.shape == (6, 2)
    # MDS recovers Euclidean positions up to rotation: the distances match.
    p = mds_positions(e)
    rebuilt = np.linalg.norm(p[:, None] - p[None], axis=-1)
    np.testing.assert_allclose(rebuilt, e, atol=1e-9)


def test_hl_skew_never_runs_out_of_main_samples() -> None:
    # The default preset's split on the digits labels, over many seeds: "other" draws of
    # early peers must not take a later peer's main samples (a crash seen mid-training).
    from hlgym.envs import load_dataset

    labels = load_dataset("digits").y_train.numpy()
    for seed in range(300):
        parts = partition.hl_skew(labels, 10, 10, 50, 50, np.random.default_rng(seed))
        assert all((labels[p] == n).sum() >= 50 for n, p in enumerate(parts))


def test_stratified_subset_keeps_the_class_shares() -> None:
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    idx = partition.stratified_subset(labels, 100, np.random.default_rng(0))
    assert idx.size == np.unique(idx).size == 100
    np.testing.assert_array_equal(np.bincount(labels[idx]), [10, 20, 30, 40])
    idx = partition.stratified_subset(labels, 7, np.random.default_rng(0))
    assert idx.size == 7 and np.bincount(labels[idx], minlength=4).min() >= 0
    with pytest.raises(ValueError, match="eval_samples=1001 asks for more samples than the data has"):
        partition.stratified_subset(labels, 1001, np.random.default_rng(0))

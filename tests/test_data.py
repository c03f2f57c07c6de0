"""Datasets as device tensors: the offline datasets, and each torchvision dataset read from
small copies written in that dataset's real on-disk format."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import subprocess
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import _STATS, DeviceData, _mnist5k_arrays, _stratified_split, load_data, published_md5
from engine.spec import DataSpec, SpecError

N_TRAIN, N_TEST = 20, 10


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def publish(monkeypatch):
    """`publish(name, root)`: the files a test wrote under `root` become the ones whose md5 the
    loader expects (the md5 table patched to theirs), as if torchvision had published them.
    The check itself stays on: a file changed after publishing no longer matches."""

    def publish(name: str, root: Path) -> None:
        table = published_md5().get(name, {})  # MNIST and Fashion-MNIST have none
        for relative in list(table):
            path = Path(root) / relative
            if path.is_file():
                monkeypatch.setitem(table, relative, hashlib.md5(path.read_bytes()).hexdigest())

    return publish


def unnormalise(x: torch.Tensor, name: str, max_value: float = 255.0) -> np.ndarray:
    """Back from normalised float32 to the integer pixel values that were stored."""
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in _STATS[name])
    return torch.round((x.cpu() * std + mean) * max_value).to(torch.int64).numpy()


def fake_images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def fake_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    labels = rng.integers(0, num_classes, size=n)
    labels[:2] = (0, num_classes - 1)  # the extremes always appear
    return labels


# ---------------------------------------------------------------------------------------
# Writers for each dataset's on-disk format, as torchvision expects to find it in its root.
# Each returns the written (train_x, train_y, test_x, test_y) as NCHW uint8 / int labels.


def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", seed: int = 0):
    """MNIST / FashionMNIST: four uncompressed idx-ubyte files in <root>/<folder>/raw/."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = []
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images, labels = fake_images(rng, n, (28, 28)), fake_labels(rng, n, 10)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out += [images[:, None], labels]
    return tuple(out)


def write_pickle(path: Path, obj: dict) -> None:
    # The real files are Python 2 pickles with str keys, which torchvision reads with
    # encoding="latin1"; protocol 2 with str keys loads the same way.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, seed: int = 0):
    """CIFAR-10: <root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = fake_images(rng, N_TRAIN, (3, 32, 32)), fake_labels(rng, N_TRAIN, 10)
    test_x, test_y = fake_images(rng, N_TEST, (3, 32, 32)), fake_labels(rng, N_TEST, 10)
    for i, chunk in enumerate(np.array_split(np.arange(N_TRAIN), 5), start=1):
        batch = {"data": train_x[chunk].reshape(len(chunk), 3072), "labels": train_y[chunk].tolist()}
        write_pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", **batch})
    write_pickle(folder / "test_batch", {"data": test_x.reshape(N_TEST, 3072), "labels": test_y.tolist()})
    write_pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    return train_x, train_y, test_x, test_y


def write_cifar100(root: Path, seed: int = 0):
    """CIFAR-100: <root>/cifar-100-python/train, test, meta (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = []
    for name, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = fake_images(rng, n, (3, 32, 32)), fake_labels(rng, n, 100)
        write_pickle(
            folder / name,
            {"data": images.reshape(n, 3072), "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()},
        )
        out += [images, labels]
    write_pickle(
        folder / "meta",
        {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": [f"coarse{i}" for i in range(20)]},
    )
    return tuple(out)


def write_svhn_split(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """One SVHN .mat file: X is (32, 32, 3, N) uint8, y is (N, 1) with 10 meaning digit 0."""
    from scipy.io import savemat

    svhn_y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
    savemat(path, {"X": np.ascontiguousarray(images.transpose(2, 3, 1, 0)), "y": svhn_y})


def write_svhn(root: Path, seed: int = 0):
    """SVHN: <root>/train_32x32.mat and <root>/test_32x32.mat."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, n in (("train", N_TRAIN), ("test", N_TEST)):
        images, labels = fake_images(rng, n, (3, 32, 32)), fake_labels(rng, n, 10)
        write_svhn_split(root / f"{name}_32x32.mat", images, labels)
        out += [images, labels]
    return tuple(out)


WRITERS = {
    "mnist": write_mnist,
    "fashion_mnist": lambda root: write_mnist(root, "FashionMNIST"),
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
}
SHAPES = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "svhn": (3, 32, 32),
}


# ---------------------------------------------------------------------------------------
# mnist5k


def test_mnist5k_sizes_shapes_and_dtypes():
    data = load_data(DataSpec(), "cpu")
    assert isinstance(data, DeviceData) and data.name == "mnist5k"
    assert data.train_x.shape == (4000, 1, 28, 28) and data.test_x.shape == (1000, 1, 28, 28)
    assert data.train_y.shape == (4000,) and data.test_y.shape == (1000,)
    assert data.train_x.dtype == data.test_x.dtype == torch.float32
    assert data.train_y.dtype == data.test_y.dtype == torch.int64
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert data.train_x.device.type == "cpu"


def test_mnist5k_is_stratified_400_100_per_class():
    data = load_data(DataSpec(name="mnist5k"), torch.device("cpu"))
    assert torch.bincount(data.train_y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(data.test_y, minlength=10).tolist() == [100] * 10
    # The splits are not sorted by class (the raw rows are).
    assert len(torch.unique_consecutive(data.train_y)) > 100


def test_mnist5k_split_is_fixed_disjoint_and_matches_raw_rows():
    pixels, labels = _mnist5k_arrays()
    assert pixels.shape == (5000, 784) and labels.tolist() == sorted(labels.tolist())
    train, test = _stratified_split(labels, held_out=0.2)
    assert len(set(train.tolist()) & set(test.tolist())) == 0
    assert sorted(train.tolist() + test.tolist()) == list(range(5000))

    first, second = load_data(DataSpec(), "cpu"), load_data(DataSpec(), "cpu")
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    # The loaded tensors are exactly those raw rows, in that order.
    assert (unnormalise(first.train_x, "mnist5k").reshape(4000, 784) == pixels[train]).all()
    assert (unnormalise(first.test_x, "mnist5k").reshape(1000, 784) == pixels[test]).all()
    assert (first.train_y.numpy() == labels[train]).all() and (first.test_y.numpy() == labels[test]).all()


def test_mnist5k_loads_do_not_share_or_modify_the_cached_rows():
    before = _mnist5k_arrays()[0].copy()
    data = load_data(DataSpec(), "cpu")
    data.train_x.add_(1.0)  # a caller mutating its tensors ...
    assert (_mnist5k_arrays()[0] == before).all()  # ... leaves the cache alone
    assert not torch.equal(load_data(DataSpec(), "cpu").train_x, data.train_x)


def test_mnist5k_is_normalised():
    x = load_data(DataSpec(), "cpu").train_x
    assert abs(x.mean().item()) < 0.05
    assert 0.9 < x.std().item() < 1.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mnist5k_lands_on_the_requested_device():
    on_gpu, on_cpu = load_data(DataSpec(), "cuda"), load_data(DataSpec(), "cpu")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert getattr(on_gpu, field).device.type == "cuda"
        assert torch.equal(getattr(on_gpu, field).cpu(), getattr(on_cpu, field))


# ---------------------------------------------------------------------------------------
# digits


def test_digits_shapes_classes_and_values():
    data = load_data(DataSpec(name="digits"), "cpu")
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    n_train, n_test = len(data.train_y), len(data.test_y)
    assert n_train + n_test == 1797 and 340 <= n_test <= 380  # ~20 % held out
    assert data.train_x.shape == (n_train, 1, 8, 8) and data.test_x.shape == (n_test, 1, 8, 8)
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert set(data.train_y.tolist()) == set(data.test_y.tolist()) == set(range(10))
    assert torch.bincount(data.test_y).min() >= 35  # stratified: every class held out ~20 %
    pixels = unnormalise(data.train_x, "digits", max_value=16.0)
    assert pixels.min() == 0 and pixels.max() == 16  # scaled by 16, not 255
    assert abs(data.train_x.mean().item()) < 0.05 and 0.9 < data.train_x.std().item() < 1.1
    assert torch.equal(load_data(DataSpec(name="digits"), "cpu").test_x, data.test_x)  # fixed split


# ---------------------------------------------------------------------------------------
# torchvision datasets, from small copies in their real on-disk formats


@pytest.mark.parametrize("name", list(WRITERS))
def test_torchvision_dataset_round_trips(name, tmp_path, no_network, publish):
    train_x, train_y, test_x, test_y = WRITERS[name](tmp_path)
    publish(name, tmp_path)
    data = load_data(DataSpec(name=name, dir=str(tmp_path)), "cpu")

    assert data.name == name and data.input_shape == SHAPES[name]
    assert data.num_classes == (100 if name == "cifar100" else 10)
    assert data.train_x.shape == (N_TRAIN, *SHAPES[name]) and data.test_x.shape == (N_TEST, *SHAPES[name])
    assert data.train_x.dtype == data.test_x.dtype == torch.float32
    assert data.train_y.dtype == data.test_y.dtype == torch.int64
    assert data.train_y.tolist() == train_y.tolist() and data.test_y.tolist() == test_y.tolist()
    assert (unnormalise(data.train_x, name) == train_x).all()
    assert (unnormalise(data.test_x, name) == test_x).all()


def test_svhn_label_10_is_digit_0(tmp_path, publish):
    _, train_y, _, _ = write_svhn(tmp_path)
    publish("svhn", tmp_path)
    data = load_data(DataSpec(name="svhn", dir=str(tmp_path)), "cpu")
    assert 0 in data.train_y.tolist() and 10 not in data.train_y.tolist()
    assert data.train_y.tolist() == train_y.tolist()


def test_cifar_normalises_per_channel(tmp_path, publish):
    train_x, _, _, _ = write_cifar10(tmp_path)
    publish("cifar10", tmp_path)
    data = load_data(DataSpec(name="cifar10", dir=str(tmp_path)), "cpu")
    # The published CIFAR-10 constants, written out here so a swapped channel is caught.
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    expected = (torch.from_numpy(train_x).float() / 255 - mean) / std
    assert torch.allclose(data.train_x, expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Missing data


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_dataset_is_a_one_sentence_spec_error(name, tmp_path, no_network):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(SpecError) as caught:
        load_data(DataSpec(name=name, dir=str(folder), download=False), "cpu")
    message = str(caught.value)
    assert repr(name) in message and str(folder) in message
    assert "data.download=true" in message and "\n" not in message
    assert list(folder.iterdir()) == []  # nothing downloaded or created


def test_incomplete_dataset_is_a_spec_error(tmp_path, no_network, publish):
    write_svhn(tmp_path)
    publish("svhn", tmp_path)
    (tmp_path / "test_32x32.mat").unlink()  # the train split alone is not enough
    with pytest.raises(SpecError, match="'svhn' not found"):
        load_data(DataSpec(name="svhn", dir=str(tmp_path)), "cpu")


def test_download_goes_through_torchvision(tmp_path, monkeypatch, no_network, publish):
    """With download=true, a missing CIFAR-10 is fetched by torchvision's own download path."""
    import torchvision.datasets.cifar as tv_cifar

    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append((url, md5))
        write_cifar10(Path(download_root))
        publish("cifar10", Path(download_root))  # a real download extracts the published files

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    data = load_data(DataSpec(name="cifar10", dir=str(tmp_path), download=True), "cpu")
    assert len(data.train_y) == N_TRAIN
    assert calls and calls[0][1] == tv_cifar.CIFAR10.tgz_md5  # the archive is still md5-checked
    # Once the files are there, download=true does not fetch them again.
    load_data(DataSpec(name="cifar10", dir=str(tmp_path), download=True), "cpu")
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------
# Integrity: CIFAR files are pickles (unpickling runs code) and SVHN files are parsed by
# scipy, so a file whose md5 is not the published one is refused before it is opened.


class MarkerPayload:
    """Unpickling this creates `marker`: a stand-in for whatever code a planted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(MarkerPayload(marker), f, protocol=2)


def test_the_payload_runs_code_when_unpickled(tmp_path):
    """The premise of the tests below: loading the planted file unverified would run its code."""
    write_payload(tmp_path / "planted", tmp_path / "marker")
    with open(tmp_path / "planted", "rb") as f:
        pickle.load(f, encoding="latin1").close()  # how torchvision reads a CIFAR batch
    assert (tmp_path / "marker").exists()


PLANTED = {
    # id: (dataset, the file replaced by a pickle payload, how the refusal names it)
    "cifar10-train": ("cifar10", "cifar-10-batches-py/data_batch_3", "CIFAR-10's data_batch_3"),
    "cifar10-test": ("cifar10", "cifar-10-batches-py/test_batch", "CIFAR-10's test_batch"),
    "cifar10-meta": ("cifar10", "cifar-10-batches-py/batches.meta", "CIFAR-10's batches.meta"),
    "cifar100-train": ("cifar100", "cifar-100-python/train", "CIFAR-100's train"),
    "cifar100-meta": ("cifar100", "cifar-100-python/meta", "CIFAR-100's meta"),
}


def assert_refused(message: str, path: Path, names: str) -> None:
    assert f"{path} does not match the md5 torchvision publishes for {names}" in message, message
    assert "was not loaded" in message and "\n" not in message


@pytest.mark.parametrize("case", list(PLANTED))
def test_planted_pickle_is_refused_before_anything_is_unpickled(case, tmp_path, publish, no_network):
    name, relative, names = PLANTED[case]
    WRITERS[name](tmp_path)
    publish(name, tmp_path)  # every other file is the published one
    marker, planted = tmp_path / "marker", tmp_path / relative
    write_payload(planted, marker)

    with pytest.raises(SpecError) as caught:
        load_data(DataSpec(name=name, dir=str(tmp_path)), "cpu")
    assert_refused(str(caught.value), planted, names)
    assert not marker.exists()


def test_tampered_svhn_file_is_refused(tmp_path, publish, no_network):
    write_svhn(tmp_path)
    publish("svhn", tmp_path)
    tampered = tmp_path / "test_32x32.mat"
    rng = np.random.default_rng(1)  # a valid .mat file, but not the published one
    write_svhn_split(tampered, fake_images(rng, N_TEST, (3, 32, 32)), fake_labels(rng, N_TEST, 10))

    with pytest.raises(SpecError) as caught:
        load_data(DataSpec(name="svhn", dir=str(tmp_path)), "cpu")
    assert_refused(str(caught.value), tampered, "SVHN's test_32x32.mat")


def test_mismatched_file_is_refused_even_with_download(tmp_path, publish, monkeypatch, no_network):
    """download=true does not overwrite a file that is there (it may be someone's own); it is refused."""
    import torchvision.datasets.cifar as tv_cifar

    write_cifar10(tmp_path)
    publish("cifar10", tmp_path)
    planted = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    write_payload(planted, tmp_path / "marker")
    downloads = []
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", lambda *a, **k: downloads.append(a))

    with pytest.raises(SpecError) as caught:
        load_data(DataSpec(name="cifar10", dir=str(tmp_path), download=True), "cpu")
    assert_refused(str(caught.value), planted, "CIFAR-10's data_batch_1")
    assert downloads == [] and not (tmp_path / "marker").exists()


def test_each_file_is_hashed_once_per_process_until_it_changes(tmp_path, publish, monkeypatch, no_network):
    import torchvision.datasets.utils as tv_utils

    write_cifar10(tmp_path)
    publish("cifar10", tmp_path)
    hashed = []
    real_md5 = tv_utils.calculate_md5
    monkeypatch.setattr(tv_utils, "calculate_md5", lambda path, **kw: hashed.append(Path(path).name) or real_md5(path, **kw))

    load_data(DataSpec(name="cifar10", dir=str(tmp_path)), "cpu")
    load_data(DataSpec(name="cifar10", dir=str(tmp_path)), "cpu")
    assert sorted(hashed) == sorted(Path(relative).name for relative in published_md5()["cifar10"])  # 7 files, once each

    # Rewritten in place (same inode, same size) with its modification time set back: the
    # change time, which no one can set back, still tells.
    changed = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    before = changed.stat()
    with open(changed, "r+b") as f:
        f.seek(-2, os.SEEK_END)
        last = f.read(2)
        f.seek(-2, os.SEEK_END)
        f.write(bytes(b ^ 0xFF for b in last))
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = changed.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    with pytest.raises(SpecError) as caught:
        load_data(DataSpec(name="cifar10", dir=str(tmp_path)), "cpu")
    assert_refused(str(caught.value), changed, "CIFAR-10's data_batch_2")


def test_planted_pickle_through_the_cli_is_exit_2_and_no_run(cli, tmp_path, experiments_file, logs_dir, publish):
    write_cifar10(tmp_path / "data")
    publish("cifar10", tmp_path / "data")
    marker, planted = tmp_path / "marker", tmp_path / "data" / "cifar-10-batches-py" / "data_batch_4"
    write_payload(planted, marker)

    result = cli(
        "run", "baseline", "--headless", "--experiments", experiments_file, "--logs-dir", logs_dir,
        "--set", "data.name=cifar10", "--set", f"data.dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    assert_refused(line, planted, "CIFAR-10's data_batch_4")
    assert not marker.exists()
    assert not logs_dir.exists() or not any(p.is_dir() for p in logs_dir.iterdir())


def test_planted_pickle_in_a_real_process_is_exit_2_and_no_run(workbench_exe, tmp_path, experiments_file, logs_dir):
    """The same refusal from the console script, against torchvision's real md5 table."""
    data = tmp_path / "data"
    write_cifar10(data)
    marker, planted = tmp_path / "marker", data / "cifar-10-batches-py" / "data_batch_1"
    write_payload(planted, marker)
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_LOGS"}

    result = subprocess.run(
        [str(workbench_exe), "run", "baseline", "--headless", "--experiments", str(experiments_file),
         "--logs-dir", str(logs_dir), "--set", "data.name=cifar10", "--set", f"data.dir={data}"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert_refused(line, planted, "CIFAR-10's data_batch_1")
    assert not marker.exists()
    assert not logs_dir.exists() or not any(p.is_dir() for p in logs_dir.iterdir())

"""A resumed Hessian-guided run reads its partition from masks.pt: it measures nothing and
ends bit-identical to a run never interrupted."""

from __future__ import annotations

import pytest
import torch

import engine.hessian as hessian
import engine.strategies.hessian as strategy
from engine.run_folder import RunFolder
from engine.train import prepare, train
from test_hessian import hessian_spec


def forbid_measuring(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run measured the Hessian again")

    monkeypatch.setattr(strategy, "gauss_newton", refuse)
    monkeypatch.setattr(strategy, "per_coordinate", refuse)
    monkeypatch.setattr(hessian.HessianProbe, "products", refuse)


@pytest.mark.parametrize("strategy_name", ["hessian_interaction", "obd"])
def test_a_resumed_hessian_run_reads_its_masks_and_ends_bit_identical(tmp_path, monkeypatch, strategy_name):
    spec = hessian_spec(strategy=strategy_name, freeze=True, train__steps=8, checkpoint__every=2)
    straight, broken = RunFolder.create(tmp_path), RunFolder.create(tmp_path)
    train(prepare(spec), straight, experiment="t")
    steps: list[int] = []
    train(prepare(spec), broken, experiment="t", on_step=steps.append, should_stop=lambda: len(steps) >= 3)
    assert broken.summary()["status"] == "cancelled"
    hessian_file = (broken.path / "hessian.pt").read_bytes()
    forbid_measuring(monkeypatch)
    with pytest.raises(AssertionError, match="measured the Hessian again"):
        prepare(spec, resuming=RunFolder(tmp_path / "no-such-run"))  # no masks.pt: it would measure
    resumed = prepare(spec, resuming=broken)
    assert resumed.files == {}  # nothing measured, nothing to write
    train(resumed, broken, experiment="t", resume=True)
    a, b = (f.load_tensors(f.checkpoint_path("final")) for f in (straight, broken))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (broken.path / "hessian.pt").read_bytes() == hessian_file  # the first start's, kept


def test_a_damaged_masks_file_is_chosen_again(tmp_path):
    spec = hessian_spec(strategy="obd")
    folder = RunFolder.create(tmp_path)
    first = prepare(spec)
    train(first, folder, experiment="t")
    folder.masks_path.write_bytes(b"damaged")
    again = prepare(spec, resuming=folder)
    assert "hessian.pt" in again.files  # measured again, not trusted
    for subset in ("subset", "fixed"):
        assert all(torch.equal(again.masks[subset][n], m) for n, m in first.masks[subset].items())


def test_the_worker_resumes_from_masks_pt(tmp_path, monkeypatch):
    """`workbench resume`'s worker (here in this process) hands the run folder to prepare."""
    from workbench import worker

    logs = tmp_path / "logs"
    spec = hessian_spec(freeze=True, train__steps=8, checkpoint__every=2)
    folder = RunFolder.create(logs)
    steps: list[int] = []
    train(prepare(spec), folder, experiment="t", on_step=steps.append, should_stop=lambda: len(steps) >= 3)
    forbid_measuring(monkeypatch)
    threads = torch.get_num_threads()
    try:
        code = worker.main([str(folder.path), "--experiment", "t", "--resume", "--no-slot-queue"])
    finally:
        torch.set_num_threads(threads)  # the worker splits the cores; this test process keeps its own
    assert code == 0, (folder.path / "worker.log")
    assert folder.summary()["status"] == "completed" and folder.summary()["steps"] == 8

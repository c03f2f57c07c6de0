"""`track.snapshots`: the compact weights saved every k steps equal what the checkpoints of
the same steps give when recomputed independently (kernels, histograms, projection)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec
from engine.train import prepare, train
from engine.weights_record import SNAPSHOTS_FILE, read_snapshots
from factories import tiny_spec


def test_snapshots_match_the_checkpoints_of_the_same_steps(tmp_path):
    spec = tiny_spec(freeze=True, track={"every": 10, "snapshots": 10}, checkpoint={"every": 10},
                     train={"steps": 20, "eval_every": 0})
    prep = prepare(spec)
    folder = RunFolder.create(tmp_path)
    train(prep, folder, experiment="t")
    snapshots = read_snapshots(folder.path / SNAPSHOTS_FILE)
    assert [s["step"] for s in snapshots] == [0, 10, 20]
    masks = folder.load_tensors(folder.masks_path)
    checkpoints = {0: folder.load_tensors(folder.checkpoint_path("init")),
                   10: folder.load_tensors(folder.checkpoint_path("step_000010")),
                   20: folder.load_tensors(folder.checkpoint_path("final"))}
    for record in snapshots:
        weights = checkpoints[record["step"]]
        kernels = record["kernels"]
        # the kernel grid: the first conv weight, whole (to the 5 decimals saved)
        assert torch.tensor(kernels["values"]) == pytest.approx(weights[kernels["param"]], abs=1e-5)
        fixed = masks["fixed"][kernels["param"]]
        assert kernels["fixed_kernels"] == [bool(k.any()) for k in fixed]
        # a histogram, recomputed with numpy-free arithmetic from the checkpoint
        layer = kernels["layer"]
        low, high = record["edges"][layer]
        for subset in ("subset", "fixed"):
            names = [n for n in masks[subset] if n.startswith(layer + ".")]
            values = torch.cat([weights[n][masks[subset][n]].flatten() for n in names]).double()
            counts = [0] * record["bins"]
            width = (high - low) / record["bins"]
            for v in values.clamp(low, high).tolist():
                counts[min(int((v - low) / width), record["bins"] - 1)] += 1
            assert record["hist"][subset][layer] == counts, (subset, record["step"])
    # frozen kernels do not move: their histogram is the same at every step
    first_layer = snapshots[0]["kernels"]["layer"]
    assert len({tuple(s["hist"]["fixed"][first_layer]) for s in snapshots}) == 1
    # the projection moves as the weights do, and from the same point for the same init
    assert snapshots[0]["proj"] != snapshots[-1]["proj"] and all(math.isfinite(v) for v in snapshots[-1]["proj"])


def test_snapshots_leave_the_digest_alone_when_off():
    assert ExperimentSpec().digest() == ExperimentSpec(track={"every": 10, "snapshots": 0}).digest()
    assert ExperimentSpec().digest() != ExperimentSpec(track={"snapshots": 5}).digest()


def test_the_report_writes_the_weights_as_pngs_and_a_gif(tmp_path):
    """Real snapshots of two arms -> kernels, histograms and trajectory PNGs, and a GIF with
    one frame per snapshot."""
    from PIL import Image

    from workbench.weights_report import write_weights

    runs = {}
    for arm, freeze in (("baseline", False), ("half-fixed", True)):
        prep = prepare(tiny_spec(freeze=freeze, track={"every": 5, "snapshots": 5}, train={"steps": 10, "eval_every": 0}))
        folder = RunFolder.create(tmp_path / "logs")
        train(prep, folder, experiment=arm)
        runs[arm] = {0: folder.path}
    out = tmp_path / "report"
    out.mkdir()
    written = write_weights(runs, out)
    assert written == ["kernels.png", "histograms.png", "trajectory.png", "kernels-baseline.gif", "kernels-half-fixed.gif"]
    for name in written[:3]:
        assert Image.open(out / name).format == "PNG"
    gif = Image.open(out / "kernels-half-fixed.gif")
    assert gif.format == "GIF" and gif.n_frames == 3  # steps 0, 5, 10
    assert write_weights({"baseline": {0: tmp_path}}, out) == []  # no snapshots: nothing

import math

import pytest
import torch

from engine.events import iter_events
from engine.models import model_layers
from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec


def finished_run(tmp_path, **overrides):
    prep = prepare(tiny_spec(**overrides))
    folder = RunFolder.create(tmp_path)
    summary = train(prep, folder, experiment="t")
    return prep, folder, summary


def independent_movement(init, final, masks, names):
    """dist, rel and cos of each subset over the named parameters, in float64, from checkpoints."""
    out = {}
    for subset, subset_masks in masks.items():
        w0 = torch.cat([init[n][subset_masks[n]].double() for n in names])
        w = torch.cat([final[n][subset_masks[n]].double() for n in names])
        dist = (w - w0).norm().item()
        out[subset] = {"dist": dist, "rel": dist / w0.norm().item(), "cos": (w @ w0 / (w.norm() * w0.norm())).item()}
    return out


@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("model", ["lenet", "vgg"])
def test_reported_movement_matches_the_checkpoints(tmp_path, freeze, model):
    prep, folder, summary = finished_run(
        tmp_path, freeze=freeze, model={"name": model, "width": 4}, partition={"strategy": "random_elements", "include_fc": True}
    )
    init = folder.load_tensors(folder.checkpoint_path("init"))
    final = folder.load_tensors(folder.checkpoint_path("final"))
    masks = folder.load_tensors(folder.masks_path)
    expected = independent_movement(init, final, masks, list(masks["fixed"]))
    for subset in ("subset", "fixed"):
        for metric in ("dist", "rel", "cos"):
            assert summary["movement"][subset][metric] == pytest.approx(expected[subset][metric], rel=1e-4, abs=1e-6)
    for layer in model_layers(prep.model):
        per_layer = independent_movement(init, final, masks, list(layer.params))
        for subset in ("subset", "fixed"):
            assert summary["movement"][subset]["layers"][layer.name]["dist"] == pytest.approx(per_layer[subset]["dist"], rel=1e-4, abs=1e-6)
    if freeze:
        assert summary["movement"]["fixed"]["dist"] == 0.0
        assert summary["movement"]["fixed"]["path"] == 0.0


def test_speed_and_path_follow_the_records(tmp_path):
    _, folder, summary = finished_run(tmp_path, track={"every": 1}, train={"steps": 9, "eval_every": 0})
    records = list(iter_events(folder.events_path, "movement"))
    assert [r["step"] for r in records] == list(range(10))
    for subset in ("subset", "fixed"):
        speeds = [r["subsets"][subset]["speed"] for r in records[1:]]
        paths = [r["subsets"][subset]["path"] for r in records]
        # every 1 step: path is the running sum of per-step displacements (= speed * 1)
        assert paths[-1] == pytest.approx(sum(speeds), rel=1e-5)
        assert all(b >= a for a, b in zip(paths, paths[1:]))
        # the triangle inequality: distance travelled is never less than the displacement
        assert paths[-1] >= records[-1]["subsets"][subset]["dist"] * (1 - 1e-6)
    assert records[0]["subsets"]["subset"]["dist"] == 0.0
    assert records[0]["subsets"]["subset"]["cos"] == pytest.approx(1.0)


def test_speed_is_per_step_between_sparse_records(tmp_path):
    _, folder, _ = finished_run(tmp_path, track={"every": 4}, train={"steps": 8, "eval_every": 0})
    first, second = [r for r in iter_events(folder.events_path, "movement")][1:3]
    assert (first["step"], second["step"]) == (4, 8)
    # with 4 steps between records, speed is the displacement / 4, and the path adds the displacement
    displacement = second["subsets"]["subset"]["path"] - first["subsets"]["subset"]["path"]
    assert second["subsets"]["subset"]["speed"] == pytest.approx(displacement / 4, rel=1e-5)


def test_tracking_off_still_summarises_the_movement(tmp_path):
    _, folder, summary = finished_run(tmp_path, track={"every": 0})
    assert [r["step"] for r in iter_events(folder.events_path, "movement")] == [0, 12]
    assert summary["movement"]["subset"]["dist"] > 0


def test_empty_subset_has_no_relative_figures(tmp_path):
    _, _, summary = finished_run(tmp_path, partition={"strategy": "none"})
    fixed = summary["movement"]["fixed"]
    assert fixed["dist"] == 0 and fixed["rel"] is None and fixed["cos"] is None
    assert fixed["layers"] == {}
    assert not math.isnan(summary["movement"]["subset"]["rel"])

"""A Hessian partition resampled every phase (schedule.mode resample with hessian_interaction
or obd): measured again at the weights each phase starts from, saved per phase, recomputable
from the boundary checkpoints, and flagged by the verdict when the arms chose differently."""

from __future__ import annotations

import pytest
import torch

from engine.events import read_events
from engine.models import model_layers
from engine.partition_context import PartitionContext
from engine.phases import phase_hessian_path, phase_masks_path, phase_start_name
from engine.run_folder import RunFolder
from engine.spec import SpecError
from engine.subsets import partition_masks
from engine.train import prepare, train
from factories import tiny_spec
from workbench.verdict import study_verdict

EVERY, STEPS = 4, 12  # three phases


def resampled(strategy: str = "hessian_interaction", **more):
    settings = dict(
        data__name="digits", model__width=2, partition__strategy=strategy, partition__hessian__samples=32,
        partition__hessian__batch_size=16, freeze=True, schedule__every=EVERY, schedule__mode="resample",
        train__steps=STEPS, train__eval_every=0, track__every=2,
    )
    return tiny_spec(**{**settings, **more})


@pytest.mark.parametrize("strategy", ["hessian_interaction", "obd"])
def test_each_phase_measures_the_weights_it_starts_from(tmp_path, strategy):
    spec = resampled(strategy)
    folder = RunFolder.create(tmp_path)
    train(prepare(spec), folder, experiment="t")
    fresh = prepare(spec)
    layers = model_layers(fresh.model)
    saved = [folder.load_tensors(phase_masks_path(folder, n)) for n in range(STEPS // EVERY)]
    for phase in (1, 2):
        # an independent measurement: a model at the phase's start weights, the same strategy
        start = folder.load_tensors(folder.checkpoint_path(phase_start_name(phase)))
        fresh.model.load_state_dict(start, strict=False)
        context = PartitionContext(fresh.model, fresh.data, fresh.device, None)
        expected = partition_masks(dict(fresh.model.named_parameters()), layers, spec.partition, spec.seed, context)
        assert all(torch.equal(saved[phase]["fixed"][n], expected["fixed"][n]) for n in expected["fixed"]), phase
        measured = folder.load_tensors(phase_hessian_path(folder, phase))
        for name, record in context.files["hessian.pt"]["layers"].items():
            assert torch.allclose(measured["layers"][name]["S"], record["S"], rtol=1e-12, atol=0), (phase, name)
            assert torch.equal(measured["layers"][name]["fixed"], record["fixed"])
    assert not phase_hessian_path(folder, 0).exists()  # phase 0's is the run's hessian.pt
    # the weights moved, so some phase chose another split than phase 0 (else this test shows nothing)
    assert any(not torch.equal(saved[n]["fixed"][k], saved[0]["fixed"][k]) for n in (1, 2) for k in saved[0]["fixed"])


def test_a_resumed_run_ends_bit_identical_across_a_remeasured_boundary(tmp_path):
    spec = resampled(checkpoint__every=3)
    straight, broken = RunFolder.create(tmp_path), RunFolder.create(tmp_path)
    train(prepare(spec), straight, experiment="t")
    steps: list[int] = []
    train(prepare(spec), broken, experiment="t", on_step=steps.append, should_stop=lambda: len(steps) >= 6)
    train(prepare(spec), broken, experiment="t", resume=True)
    a, b = (f.load_tensors(f.checkpoint_path("final")) for f in (straight, broken))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_verdict_says_when_the_arms_trained_different_kernels(tmp_path):
    runs: dict[str, dict[int, object]] = {"tracked": {}, "frozen": {}}
    for arm, freeze in (("tracked", False), ("frozen", True)):
        folder = RunFolder.create(tmp_path)
        train(prepare(resampled(seed=0, freeze=freeze)), folder, experiment=arm)
        runs[arm][0] = folder.path
    digests = {arm: [e["masks"] for e in read_events(RunFolder(path[0]).events_path)[0] if e["type"] == "phase"]
               for arm, path in runs.items()}
    verdict = study_verdict("resample-hessian", runs, "tracked")
    phases = verdict["comparisons"][0]["phases"]
    differ = [int(digests["frozen"][p] != digests["tracked"][p]) for p in range(STEPS // EVERY)]
    assert [entry["masks_differ"] for entry in phases] == differ
    assert differ[0] == 0 and any(differ)  # phase 0 is measured at the shared initial weights
    assert any("trained different coordinates" in note and "phase" in note for note in verdict["notes"])


def test_resample_with_hessian_at_is_refused_in_one_sentence():
    with pytest.raises((SpecError, ValueError)) as error:
        resampled(partition__hessian__at={"run": "abcdefgh", "checkpoint": "final"})
    assert "partition.hessian.at" in str(error.value) and "resample" in str(error.value)

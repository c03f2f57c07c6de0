"""Changing subsets (spec.schedule; engine/phases.py, engine/phase_masks.py): exact freezing in
every phase, masks recomputable from the seed, movement per phase from the boundary
checkpoints, and a resume across a phase boundary that changes nothing."""

from __future__ import annotations

import math

import pytest
import torch

from engine.events import read_events
from engine.loop import Hook
from engine.models import model_layers
from engine.phase_masks import masks_digest, phase_masks, phase_seed
from engine.phases import phase_masks_path, phase_start_name
from engine.run_folder import RunFolder
from engine.spec import ExperimentSpec, SpecError
from engine.train import prepare, train
from factories import tiny_spec

EVERY, STEPS = 4, 12  # three phases: steps 1-4, 5-8, 9-12

OPTIMIZERS = {
    "sgd": {"optimizer__name": "sgd", "optimizer__momentum": 0.9, "optimizer__nesterov": True, "optimizer__weight_decay": 0.01},
    "adam": {"optimizer__name": "adam", "optimizer__lr": 0.01, "optimizer__weight_decay": 0.01},
    "adamw": {"optimizer__name": "adamw", "optimizer__lr": 0.01, "optimizer__weight_decay": 0.1},
}
# Each mode on a strategy that exercises another level of freezing: whole kernels (split
# forward) with FC layers too, random kernels, scattered elements (copy-back only).
MODES = {
    "alternate": {"partition__strategy": "first_kernels", "partition__include_fc": True},
    "rotate": {"partition__strategy": "random_kernels", "partition__fraction": 0.75},
    "resample": {"partition__strategy": "random_elements", "partition__seed": "run"},
}


def phased(mode: str, optimizer: str = "sgd", **more) -> ExperimentSpec:
    settings = {"freeze": True, "schedule__every": EVERY, "schedule__mode": mode, "train__steps": STEPS}
    return tiny_spec(**{**settings, **MODES[mode], **OPTIMIZERS[optimizer], **more})


def boundaries(folder: RunFolder) -> list[dict[str, torch.Tensor]]:
    """The weights at the start of every phase, then the final weights."""
    phases = STEPS // EVERY
    starts = [folder.load_tensors(folder.checkpoint_path(phase_start_name(n))) for n in range(phases)]
    return [*starts, folder.load_tensors(folder.checkpoint_path("final"))]


def saved_masks(folder: RunFolder, phase: int) -> dict:
    return folder.load_tensors(phase_masks_path(folder, phase))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("mode", list(MODES))
def test_every_coordinate_fixed_in_a_phase_keeps_its_value_through_the_phase(tmp_path, mode, optimizer):
    folder = RunFolder.create(tmp_path)
    train(prepare(phased(mode, optimizer)), folder, experiment="t")
    weights = boundaries(folder)
    for phase in range(STEPS // EVERY):
        fixed = saved_masks(folder, phase)["fixed"]
        before, after = weights[phase], weights[phase + 1]
        assert sum(int(m.sum()) for m in fixed.values()) > 0
        for name, mask in fixed.items():
            assert torch.equal(before[name][mask], after[name][mask]), (phase, name)
        # ...while the coordinates it trained did move
        trained = saved_masks(folder, phase)["subset"]
        assert any(not torch.equal(before[n][m], after[n][m]) for n, m in trained.items() if m.any()), phase
    # and the phases really differ: a coordinate fixed in phase 0 trained in phase 1
    first, second = saved_masks(folder, 0)["fixed"], saved_masks(folder, 1)["fixed"]
    assert any((first[n] & ~second[n]).any() for n in first)


def test_a_reset_optimizer_state_still_freezes_exactly(tmp_path):
    folder = RunFolder.create(tmp_path)
    train(prepare(phased("alternate", "adam", schedule__optimizer_state="reset")), folder, experiment="t")
    weights = boundaries(folder)
    for phase in range(STEPS // EVERY):
        for name, mask in saved_masks(folder, phase)["fixed"].items():
            assert torch.equal(weights[phase][name][mask], weights[phase + 1][name][mask]), (phase, name)


@pytest.mark.parametrize("mode", list(MODES))
def test_the_saved_masks_of_every_phase_are_recomputed_from_the_spec(tmp_path, mode):
    spec = phased(mode, seed=3)
    folder = RunFolder.create(tmp_path)
    prep = prepare(spec)
    masks0 = {s: {n: m.clone() for n, m in sub.items()} for s, sub in prep.masks.items()}
    train(prep, folder, experiment="t")
    fresh = prepare(spec)  # params only give shapes here (no strategy reads the weights)
    params, layers = dict(fresh.model.named_parameters()), model_layers(fresh.model)
    digests = [e["masks"] for e in read_events(folder.events_path)[0] if e["type"] == "phase"]
    assert len(digests) == STEPS // EVERY
    for phase in range(STEPS // EVERY):
        expected = phase_masks(masks0, params, layers, spec, phase)
        saved = saved_masks(folder, phase)
        assert all(torch.equal(saved[s][n], expected[s][n]) for s in saved for n in saved[s]), phase
        assert digests[phase] == masks_digest(saved)


def test_resample_draws_from_a_per_phase_seed_that_both_arms_share():
    assert phase_seed(3, 1) == phase_seed(3, 1) != phase_seed(3, 2) != phase_seed(4, 2)
    frozen, tracked = prepare(phased("resample", seed=5)), prepare(phased("resample", seed=5, freeze=False))
    layers = model_layers(frozen.model)
    a = phase_masks(frozen.masks, dict(frozen.model.named_parameters()), layers, frozen.spec, 2)
    b = phase_masks(tracked.masks, dict(tracked.model.named_parameters()), layers, tracked.spec, 2)
    assert all(torch.equal(a["fixed"][n], b["fixed"][n]) for n in a["fixed"])


def test_rotate_moves_the_one_trained_block_on_by_one_block_a_phase():
    prep = prepare(phased("rotate", partition__strategy="first_kernels"))  # fraction 0.75: 4 blocks, one trains
    layers = model_layers(prep.model)
    conv = layers[0]
    trained_blocks = []
    for phase in range(5):
        fixed = phase_masks(prep.masks, dict(prep.model.named_parameters()), layers, prep.spec, phase)["fixed"]
        kernels = fixed[conv.params[0]].flatten(1).all(1)
        trained_blocks.append((~kernels).nonzero().flatten().tolist())
    block = math.ceil(conv.kernels / 4)
    assert [len(b) for b in trained_blocks] == [conv.kernels - math.ceil(0.75 * conv.kernels)] * 5
    assert [b[0] for b in trained_blocks[:4]] == [(conv.kernels - block + p * block) % conv.kernels for p in range(4)]
    assert trained_blocks[4] == trained_blocks[0]


@pytest.mark.parametrize("freeze", [True, False])
def test_movement_per_phase_equals_the_distance_between_the_boundary_checkpoints(tmp_path, freeze):
    folder = RunFolder.create(tmp_path)
    summary = train(prepare(phased("alternate", freeze=freeze)), folder, experiment="t")
    weights = boundaries(folder)
    records = [e for e in read_events(folder.events_path)[0] if e["type"] == "phase_movement"]
    assert [r["phase"] for r in records] == [0, 1, 2] and [r["step"] for r in records] == [4, 8, 12]
    assert summary["phases"] == records
    for record in records:
        phase, masks = record["phase"], saved_masks(folder, record["phase"])
        for subset in ("subset", "fixed"):
            moved = [(weights[phase + 1][n] - weights[phase][n]).double()[m] for n, m in masks[subset].items()]
            dist = torch.cat([t.flatten() for t in moved]).norm().item()
            assert record["subsets"][subset]["dist"] == pytest.approx(dist, rel=1e-9, abs=1e-12)
            assert record["subsets"][subset]["speed"] == pytest.approx(dist / EVERY, rel=1e-9, abs=1e-12)
            assert record["subsets"][subset]["size"] == sum(int(m.sum()) for m in masks[subset].values())
        assert (record["subsets"]["fixed"]["dist"] == 0) == freeze


def stop_after(count: int) -> dict:
    steps: list[int] = []
    return {"on_step": steps.append, "should_stop": lambda: len(steps) >= count}


@pytest.mark.parametrize(("mode", "optimizer", "stop"), [("alternate", "adam", 4), ("resample", "sgd", 6), ("rotate", "adamw", 5)])
def test_a_run_resumed_across_a_phase_boundary_ends_bit_identical(tmp_path, mode, optimizer, stop):
    spec = phased(mode, optimizer, checkpoint__every=3)
    straight, broken = RunFolder.create(tmp_path), RunFolder.create(tmp_path)
    train(prepare(spec), straight, experiment="t")
    train(prepare(spec), broken, experiment="t", **stop_after(stop))
    train(prepare(spec), broken, experiment="t", resume=True)
    a, b = (f.load_tensors(f.checkpoint_path("final")) for f in (straight, broken))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert broken.summary()["phases"] == straight.summary()["phases"] or _same_but_time(broken, straight)


def _same_but_time(one: RunFolder, other: RunFolder) -> bool:
    strip = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]  # noqa: E731
    return strip(one.summary()["phases"]) == strip(other.summary()["phases"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"schedule__every": 12}, "schedule.every 12 must be below train.steps 12"),
        ({"schedule__mode": "resample", "partition__strategy": "first_kernels"}, "draws nothing"),
        ({"schedule__mode": "rotate", "partition__fraction": 1.0}, "0 < partition.fraction < 1"),
        ({"partition__strategy": "none"}, "needs a partition"),
        ({"schedule__mode": "shuffle"}, "schedule.mode"),
        ({"schedule__optimizer_state": "zero"}, "optimizer_state"),
    ],
)
def test_a_bad_schedule_is_one_sentence_naming_it(overrides, words):
    with pytest.raises((SpecError, ValueError)) as error:
        tiny_spec(**{"schedule__every": 4, **overrides})
    assert words in str(error.value)


def test_the_schedule_is_part_of_the_digest_only_when_it_is_set():
    # (the digests of every shipped experiment are pinned in test_input_bounds / test_partition_seed)
    plain = tiny_spec()
    assert plain.digest() != tiny_spec(schedule__every=4).digest() != tiny_spec(schedule__every=4, schedule__mode="rotate").digest()
    assert "schedule" not in plain.model_dump(mode="json", exclude_defaults=True)


def test_with_freeze_false_and_keep_a_schedule_changes_no_weight(tmp_path):
    """The reference arm of a schedule study trains exactly as plain training: only what is
    recorded differs (the "fixed" coordinates of a phase train, and so does their momentum)."""
    finals = []
    for schedule in ({"schedule__every": EVERY, "schedule__mode": "alternate"}, {}):
        folder = RunFolder.create(tmp_path)
        train(prepare(tiny_spec(freeze=False, train__steps=STEPS, **OPTIMIZERS["adam"], **schedule)), folder, experiment="t")
        finals.append(folder.load_tensors(folder.checkpoint_path("final")))
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[1])


class OptimizerStates(Hook):
    """Copies of the optimizer's per-coordinate state after the steps in `at`."""

    def __init__(self, at: set[int]) -> None:
        self.at, self.seen = at, {}

    def after_step(self, state) -> None:
        if state.step in self.at:
            self.seen[state.step] = {
                name: {k: v.clone() for k, v in state.optimizer.state.get(p, {}).items() if v.dim()}
                for name, p in state.model.named_parameters()
            }


def test_keep_holds_a_fixed_coordinates_adam_moments_for_the_whole_phase(tmp_path):
    folder = RunFolder.create(tmp_path)
    peek = OptimizerStates({4, 5, 8})
    train(prepare(phased("alternate", "adam")), folder, experiment="t", hooks=[peek])
    fixed = saved_masks(folder, 1)["fixed"]  # phase 1: steps 5-8
    partial = [name for name, mask in fixed.items() if mask.any() and not mask.all()]
    assert partial
    for name in partial:
        mask = fixed[name]
        for key in ("exp_avg", "exp_avg_sq"):
            start, later, end = (peek.seen[step][name][key][mask] for step in (4, 5, 8))
            assert torch.equal(start, later) and torch.equal(start, end), (name, key)
            assert start.abs().sum() > 0  # they trained in phase 0: real moments, held
    trained = saved_masks(folder, 1)["subset"][partial[0]]
    assert not torch.equal(peek.seen[4][partial[0]]["exp_avg"][trained], peek.seen[8][partial[0]]["exp_avg"][trained])


def test_reset_starts_every_phase_with_a_fresh_optimizer_state(tmp_path):
    peek = OptimizerStates({4, 5})
    folder = RunFolder.create(tmp_path)
    train(prepare(phased("alternate", "sgd", schedule__optimizer_state="reset")), folder, experiment="t", hooks=[peek])
    keep = OptimizerStates({5})
    train(prepare(phased("alternate", "sgd")), RunFolder.create(tmp_path), experiment="t", hooks=[keep])
    assert all(not state for state in peek.seen[4].values())  # cleared at the switch that ends step 4
    # step 5's momentum is then its own gradient alone (SGD's first step), unlike with keep
    name = next(n for n, s in peek.seen[5].items() if s)
    assert not torch.equal(peek.seen[5][name]["momentum_buffer"], keep.seen[5][name]["momentum_buffer"])


def test_the_cli_refuses_a_bad_schedule_before_any_folder(cli, experiments_file, tmp_path):
    logs = tmp_path / "logs"
    result = cli("run", "--headless", "half-fixed", "--set", "schedule.every=5", "--set", "schedule.mode=resample",
                 "--experiments", experiments_file, "--logs-dir", logs)
    assert result.exit_code == 2 and "Traceback" not in result.stdout + result.stderr
    assert "schedule.mode 'resample'" in result.stderr and "first_kernels" in result.stderr
    assert not logs.exists() or not [p for p in logs.iterdir() if p.is_dir()]

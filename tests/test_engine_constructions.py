"""Runs of the constructions beyond one plain model, end to end through prepare + train:
seeded fixed groups, ensembles, and fusions of trained runs (average, head, mutant)."""

from __future__ import annotations

import pytest
import torch

from engine.events import iter_events
from engine.run_folder import RunFolder
from engine.spec import SpecError
from engine.train import prepare, train
from factories import tiny_spec
from workbench.tui.feed import EventsTail

FUSED_HALVES = {
    "model": {"name": "lenet", "width": 4, "groups": 2},
    "partition": {"strategy": "groups", "groups": [0]},
    "seeding": {"groups": [0], "seed": 1000},
}


def run(logs, **overrides):
    folder = RunFolder.create(logs)
    summary = train(prepare(tiny_spec(**overrides), runs_dir=logs), folder, experiment="t")
    return folder, summary


def final(folder, name="final"):
    return folder.load_tensors(folder.checkpoint_path(name))


def evals(folder):
    return [e for e in iter_events(folder.events_path) if e["type"] == "eval"]


def start_event(folder):
    return next(e for e in iter_events(folder.events_path) if e["type"] == "start")


def group_keys(state, group):
    return [k for k in state if k.endswith(f"_g{group}")]


# --- seeded, fixed groups -----------------------------------------------------------


def test_fused_halves_fix_the_seeded_group_whatever_the_run_seed(tmp_path):
    a, _ = run(tmp_path, seed=1, freeze=True, **FUSED_HALVES)
    b, _ = run(tmp_path, seed=2, freeze=True, **FUSED_HALVES)
    fixed_keys = [k for k in group_keys(final(a), 0) if k.startswith("features.")]
    assert fixed_keys, "the conv layers hold per-group tensors"
    for key in fixed_keys:
        # seeded from seeding.seed: the same in both runs, and never moved
        assert torch.equal(final(a)[key], final(b)[key]), key
        assert torch.equal(final(a)[key], final(a, "init")[key]), key
    trained = [k for k in group_keys(final(a), 1) if k.startswith("features.")]
    assert any(not torch.equal(final(a)[k], final(a, "init")[k]) for k in trained)
    assert not torch.equal(final(a, "init")[trained[0]], final(b, "init")[trained[0]])  # the run seed still counts
    head = "classifier.fc2.weight"
    assert not torch.equal(final(a, "init")[head], final(b, "init")[head])  # the head is never seeded
    assert start_event(a)["seeded_groups"] == [0]


def test_fused_halves_baseline_starts_where_the_frozen_run_starts(tmp_path):
    frozen, _ = run(tmp_path, seed=1, freeze=True, **FUSED_HALVES)
    baseline, summary = run(tmp_path, seed=1, freeze=False, **FUSED_HALVES)
    for key, value in final(frozen, "init").items():
        assert torch.equal(value, final(baseline, "init")[key]), key
    assert summary["movement"]["fixed"]["dist"] > 0  # nothing frozen: the seeded group moves too


def test_groups_seeded_from_another_runs_checkpoint(tmp_path):
    donor, _ = run(tmp_path, seed=5, model={"name": "lenet", "width": 4, "groups": 2}, partition={"strategy": "none"})
    seeded = {**FUSED_HALVES, "seeding": {"groups": [0], "run": donor.run_id}}
    child, _ = run(tmp_path, seed=1, freeze=True, **seeded)
    for key in group_keys(final(donor), 0):
        if key.startswith("features."):
            assert torch.equal(final(child, "init")[key], final(donor)[key]), key


def test_seeding_from_a_missing_run_fails_before_writing_anything(tmp_path):
    with pytest.raises(SpecError, match="nosuchrun"):
        prepare(tiny_spec(**{**FUSED_HALVES, "seeding": {"groups": [0], "run": "nosuchrun"}}), runs_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- ensembles ----------------------------------------------------------------------


def test_an_ensemble_trains_each_member_and_scores_their_average(tmp_path):
    folder, summary = run(tmp_path, ensemble={"members": 3, "implementation": "sequential"}, partition={"strategy": "none"})
    last = evals(folder)[-1]
    assert len(last["member_acc"]) == 3 and all(0 <= acc <= 1 for acc in last["member_acc"])
    tail = EventsTail(folder.path)
    tail.poll()
    members = tail.family("member_acc.")
    assert list(members) == ["0", "1", "2"] and members["1"].values[-1] == last["member_acc"][1]
    assert not tail.prunes
    assert summary["status"] == "completed" and summary["params"] > 0


def test_auto_implementation_is_measured_and_recorded(tmp_path):
    folder, _ = run(tmp_path, ensemble={"members": 2, "implementation": "auto"}, partition={"strategy": "none"})
    chosen = folder.spec()["ensemble"]["implementation"]
    start = start_event(folder)
    assert chosen in ("grouped", "vmap", "sequential") and start["implementation"] == chosen
    assert "sequential" in start["implementation_step_seconds"]  # never slower than the loop: it was a candidate


# --- fusion -------------------------------------------------------------------------


@pytest.fixture()
def members(tmp_path):
    """Two trained VGG runs (BatchNorm included) of different seeds."""
    return [run(tmp_path, seed=seed, model={"name": "vgg", "width": 4})[0].run_id for seed in (0, 1)]


def fuse(tmp_path, members, mode, steps=0, **fusion):
    return run(
        tmp_path,
        model={"name": "vgg", "width": 4},
        partition={"strategy": "none"},
        train={"steps": steps, "eval_every": 0},
        fusion={"mode": mode, "runs": members, **fusion},
    )


def test_mutant_scores_exactly_the_average_at_step_0(tmp_path, members):
    average, _ = fuse(tmp_path, members, "average")
    mutant, _ = fuse(tmp_path, members, "mutant")
    (avg_eval,), (mut_eval,) = evals(average), evals(mutant)
    assert avg_eval["step"] == mut_eval["step"] == 0
    assert mut_eval["eval_acc"] == avg_eval["eval_acc"]
    assert mut_eval["eval_loss"] == pytest.approx(avg_eval["eval_loss"], rel=1e-5)
    assert start_event(mutant)["width"] == 8  # two members of width 4 side by side


def test_mutant_pruning_narrows_the_model_and_logs_it(tmp_path, members):
    folder, summary = fuse(
        tmp_path, members, "mutant", steps=12, prune={"every": 4, "fraction": 0.25, "min_fraction": 0.5}
    )
    prunes = [e for e in iter_events(folder.events_path) if e["type"] == "prune"]
    assert [e["step"] for e in prunes] == [4, 8, 12]
    assert summary["params"] < start_event(folder)["params"]
    assert summary["status"] == "completed"
    # what the TUI charts: the size from step 0 on, and each conv layer's width
    start = start_event(folder)
    assert set(start["widths"]) == set(prunes[0]["widths"])
    tail = EventsTail(folder.path)
    tail.poll()
    assert tail.prunes and tail.series["params"].steps == [0, 4, 8, 12]
    params = tail.series["params"].values
    assert params[0] == start["params"] and params[-1] == summary["params"] and params == sorted(params, reverse=True)
    layer, width = next(iter(start["widths"].items()))
    assert tail.family("width.")[layer].values[0] == width > tail.family("width.")[layer].values[-1]


def test_head_fusion_keeps_frozen_trunks_and_trains_a_new_head(tmp_path, members):
    folder, summary = fuse(tmp_path, members, "head", steps=6)
    before, after = final(folder, "init"), final(folder)
    trunk = [k for k in before if k.startswith("trunks.") and before[k].is_floating_point()]
    assert trunk and all(torch.equal(before[k], after[k]) for k in trunk)
    head = [k for k in before if k.startswith("head.")]
    assert head and any(not torch.equal(before[k], after[k]) for k in head)


def test_fusing_runs_of_different_widths_is_refused(tmp_path, members):
    other = run(tmp_path, seed=2, model={"name": "vgg", "width": 8})[0].run_id
    with pytest.raises(SpecError, match=other):
        prepare(
            tiny_spec(model={"name": "vgg", "width": 4}, partition={"strategy": "none"},
                      fusion={"mode": "mutant", "runs": [members[0], other]}),
            runs_dir=tmp_path,
        )


@pytest.mark.parametrize("implementation", ["grouped", "sequential"])
def test_an_ensemble_run_fuses_into_a_mutant_that_scores_what_it_scored(tmp_path, implementation):
    """`workbench fuse ENSEMBLE_RUN --mode mutant`: its K members become the mutant's, and the
    mutant's step-0 eval is the ensemble's final eval (whichever implementation trained it)."""
    ensemble, _ = run(tmp_path, model={"name": "vgg", "width": 4}, partition={"strategy": "none"},
                      ensemble={"members": 3, "implementation": implementation})
    mutant, _ = fuse(tmp_path, [ensemble.run_id], "mutant")
    (at_zero,), trained = evals(mutant), evals(ensemble)[-1]
    assert start_event(mutant)["width"] == 12 and start_event(mutant)["members"] == 3
    assert at_zero["eval_acc"] == trained["eval_acc"]
    assert at_zero["eval_loss"] == pytest.approx(trained["eval_loss"], rel=1e-5)


def test_an_ensemble_and_a_plain_run_fuse_together(tmp_path, members):
    ensemble, _ = run(tmp_path, model={"name": "vgg", "width": 4}, partition={"strategy": "none"},
                      ensemble={"members": 2, "implementation": "sequential"})
    average, _ = fuse(tmp_path, [ensemble.run_id, members[0]], "average")
    assert start_event(average)["members"] == 3

"""Continuing another run's weights (spec.init; engine/init_run.py, engine/basin.py): the
loaded weights, the carried optimizer state, the basin records, and refusals before any file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.basin import INTERPOLATION_POINTS
from engine.events import run_events
from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec


@pytest.fixture(scope="module")
def converged(tmp_path_factory) -> tuple[Path, str, str]:
    """A logs dir with a finished lenet-4 run trained with nothing frozen, and one with half frozen."""
    logs = tmp_path_factory.mktemp("logs")
    ids = []
    for freeze in (False, True):
        folder = RunFolder.create(logs)
        train(prepare(tiny_spec(freeze=freeze, train__steps=8, train__eval_every=4)), folder, experiment="baseline")
        ids.append(folder.run_id)
    return logs, ids[0], ids[1]


def test_a_run_starts_from_the_source_runs_final_weights_and_measures_movement_from_them(converged):
    logs, source, _ = converged
    spec = tiny_spec(freeze=True, partition__fraction=0.75, seed=1, train__steps=6, train__eval_every=3, init__run=source)
    prep = prepare(spec, logs)
    final = RunFolder(logs / source).load_tensors(RunFolder(logs / source).checkpoint_path("final"))
    assert all(torch.equal(prep.model.state_dict()[k], final[k]) for k in final)

    folder = RunFolder.create(logs)
    summary = train(prep, folder, experiment="escape")
    init = folder.load_tensors(folder.checkpoint_path("init"))
    assert all(torch.equal(init[k], final[k]) for k in final)  # movement (dist) is from the converged weights
    assert summary["movement"]["fixed"]["dist"] == 0 and summary["movement"]["subset"]["dist"] > 0
    basin = run_events(folder.events_path, "basin")
    assert [e["step"] for e in basin] == [0, 3, 6]
    (line,) = run_events(folder.events_path, "interpolation")
    assert len(line["train_loss"]) == len(line["alpha"]) == INTERPOLATION_POINTS
    # the line's ends are the start and end weights: their losses are the basin records at steps 0 and 6
    assert line["train_loss"][0] == pytest.approx(basin[0]["train_loss"], rel=1e-6)
    assert line["train_loss"][-1] == pytest.approx(basin[-1]["train_loss"], rel=1e-5)
    # and the run ends on its own final weights (the interpolation put them back)
    saved = folder.load_tensors(folder.checkpoint_path("final"))
    assert all(torch.equal(saved[k], v) for k, v in prep.model.state_dict().items())


def test_carry_starts_with_the_source_runs_optimizer_state(converged):
    logs, source, _ = converged
    spec = tiny_spec(train__steps=1, train__eval_every=0, init__run=source, init__optimizer="carry")
    prep = prepare(spec, logs)
    carried = RunFolder(logs / source).load_tensors(RunFolder(logs / source).train_state_path)["optimizer"]["state"]
    seen = {}

    from engine.loop import Hook

    class Peek(Hook):
        def on_start(self, state, fresh):
            seen.update({name: state.optimizer.state[p]["momentum_buffer"].clone() for name, p in state.model.named_parameters()})

    train(prep, RunFolder.create(logs), experiment="carry", hooks=[Peek()])
    names = [name for name, _ in prep.model.named_parameters()]
    assert names and all(torch.equal(seen[name], carried[i]["momentum_buffer"]) for i, name in enumerate(names))


# id: (--set overrides, fragments the one sentence must name)
REFUSED = {
    "missing-run": ({"init.run": "zzzzzzzz"}, ["init.run", "zzzzzzzz"]),
    "not-an-id": ({"init.run": "../x"}, ["init.run", "run id"]),
    "other-model": ({"init.run": "{source}", "model.width": 8}, ["init.run", "width 4", "width 8", "same model"]),
    "missing-checkpoint": ({"init.run": "{source}", "init.checkpoint": "step_000099"}, ["init.run", "step_000099", "final"]),
    "carry-from-frozen": ({"init.run": "{frozen}", "init.optimizer": "carry"}, ["carry", "froze", "fresh"]),
    "init-and-ensemble": ({"init.run": "{source}", "ensemble.members": 2, "partition.strategy": "none"}, ["init.run", "ensemble"]),
}


@pytest.mark.parametrize("command", [["run", "--headless"], ["submit"]])  # submit: through engine/preflight.py
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_bad_init_is_one_sentence_exit_2_and_no_folder(case, command, cli, experiments_file, converged):
    logs, source, frozen = converged
    overrides, fragments = REFUSED[case]
    before = sorted(p for p in logs.iterdir() if p.is_dir())
    sets = [a for key, value in overrides.items()
            for a in ("--set", f"{key}={json.dumps(value).replace('{source}', source).replace('{frozen}', frozen)}")]
    result = cli(*command, "baseline", *sets, "--experiments", experiments_file, "--logs-dir", logs)
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not named in {result.stderr!r}"
    assert sorted(p for p in logs.iterdir() if p.is_dir()) == before

"""Checkpoints from elsewhere: a file torch.load(weights_only=True) refuses, or that is no
torch file at all, is a one-sentence SpecError naming it, never torch's advice to set
weights_only=False, and nothing in it runs: for resume state, seeding and fusion members."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from engine.run_folder import RunFolder
from engine.spec import SpecError
from engine.train import load_train_state, prepare, train
from factories import tiny_spec
from test_data import MarkerPayload  # a pickle whose unpickling creates a marker file


def torch_saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def plain_checkpoint() -> bytes:
    return torch_saved({"conv.weight": torch.ones(2, 3), "conv.bias": torch.zeros(2)})


# id: (the file's bytes given the marker path, what the sentence must say)
NOT_PLAIN = "is not a plain tensor checkpoint"
NOT_TORCH = "is not a torch checkpoint"
BAD_FILES = {
    "torch.save of a payload": (lambda marker: torch_saved({"conv.weight": MarkerPayload(marker)}), NOT_PLAIN),
    "bare pickle payload": (lambda marker: pickle.dumps(MarkerPayload(marker), protocol=2), NOT_PLAIN),
    "truncated": (lambda marker: plain_checkpoint()[:200], NOT_TORCH),
    "garbage": (lambda marker: b"\x00\x17not a checkpoint at all" * 20, NOT_TORCH),
    "empty": (lambda marker: b"", NOT_TORCH),
}


def assert_one_refusal(message: str, path: Path, what: str) -> None:
    assert message.startswith(f"{path} {what}") and message.endswith("it was not loaded"), message
    assert "weights_only" not in message and "\n" not in message


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_sentence_naming_it(case, tmp_path):
    content, what = BAD_FILES[case]
    marker, path = tmp_path / "marker", tmp_path / "final.pt"
    path.write_bytes(content(marker))
    with pytest.raises(SpecError) as caught:
        RunFolder(tmp_path).load_tensors(path)
    assert_one_refusal(str(caught.value), path, what)
    assert not marker.exists()


def test_a_plain_checkpoint_loads(tmp_path):
    path = tmp_path / "final.pt"
    path.write_bytes(plain_checkpoint())
    state = RunFolder(tmp_path).load_tensors(path)
    assert torch.equal(state["conv.weight"], torch.ones(2, 3)) and torch.equal(state["conv.bias"], torch.zeros(2))


def test_a_missing_file_stays_an_os_error(tmp_path):
    """Unreadable is not the same as untrusted: the caller's own handling of a missing file applies."""
    with pytest.raises(FileNotFoundError):
        RunFolder(tmp_path).load_tensors(tmp_path / "nothere.pt")


# ---------------------------------------------------------------------------------------
# Through the places that read other runs' checkpoints


def replace_with_payload(path: Path, marker: Path) -> None:
    path.write_bytes(torch_saved({"features.conv1.weight": MarkerPayload(marker)}))


def test_seeding_from_a_replaced_checkpoint_is_refused(tmp_path):
    grouped = {"model": {"name": "lenet", "width": 4, "groups": 2}, "partition": {"strategy": "none"}}
    donor = RunFolder.create(tmp_path)
    train(prepare(tiny_spec(**grouped), runs_dir=tmp_path), donor, experiment="donor")
    marker = tmp_path / "marker"
    replace_with_payload(donor.checkpoint_path("final"), marker)

    seeded = {**grouped, "partition": {"strategy": "groups", "groups": [0]}, "seeding": {"groups": [0], "run": donor.run_id}}
    with pytest.raises(SpecError) as caught:
        prepare(tiny_spec(**seeded), runs_dir=tmp_path)
    assert_one_refusal(str(caught.value), donor.checkpoint_path("final"), NOT_PLAIN)
    assert not marker.exists()


def test_resume_from_a_replaced_training_state_is_refused(tmp_path):
    folder = RunFolder.create(tmp_path)
    folder.write_spec(tiny_spec().model_dump(mode="json"))
    folder.train_state_path.write_bytes(plain_checkpoint()[:-40])  # cut short, as by a full disk
    with pytest.raises(SpecError) as caught:
        load_train_state(folder)
    assert_one_refusal(str(caught.value), folder.train_state_path, NOT_TORCH)


def test_fusion_with_a_replaced_member_checkpoint_exits_2_through_the_cli(cli, experiments_file, logs_dir, tmp_path):
    trained = cli("run", "baseline", "--headless", "--json", "--experiments", experiments_file, "--logs-dir", logs_dir)
    assert trained.exit_code == 0, trained.stderr
    good = json.loads(trained.stdout)["run_id"]
    bad = "zzzzzzzz"  # a copy of the trained run whose final checkpoint someone replaced
    shutil.copytree(logs_dir / good, logs_dir / bad)
    marker, replaced = tmp_path / "marker", logs_dir / bad / "checkpoints" / "final.pt"
    replace_with_payload(replaced, marker)
    before = sorted(p.name for p in logs_dir.iterdir())

    result = cli(
        "run", "baseline", "--headless", "--experiments", experiments_file, "--logs-dir", logs_dir,
        "--set", "fusion.mode=average", "--set", f'fusion.runs=["{good}", "{bad}"]',
        "--set", "train.steps=0", "--set", "partition.strategy=none",
    )  # fmt: skip
    assert result.exit_code == 2, (result.stdout, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.stderr
    assert_one_refusal(line.removeprefix("error: "), replaced, NOT_PLAIN)
    assert not marker.exists()
    assert sorted(p.name for p in logs_dir.iterdir()) == before  # no run folder for the refused fusion

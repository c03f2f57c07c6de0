"""engine.experiments_file: saving one experiment keeps the rest of experiments.json as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.experiments_file import format_experiments, minimal_entry, save_experiment
from engine.spec import Experiments, ExperimentSpec, SpecError
from workbench.tui import devices

SHIPPED = Path(__file__).resolve().parents[1] / "experiments.json"


@pytest.fixture
def shipped_copy(tmp_path: Path) -> Path:
    path = tmp_path / "experiments.json"
    shutil.copyfile(SHIPPED, path)
    return path


def test_shipped_file_is_in_the_canonical_layout():
    text = SHIPPED.read_text()
    assert format_experiments(json.loads(text)) == text


def test_resaving_an_unchanged_entry_is_byte_identical(shipped_copy: Path):
    before = shipped_copy.read_bytes()
    entry = json.loads(before)["experiments"]["half-fixed"]
    save_experiment(shipped_copy, "half-fixed", entry, overwrite=True)
    assert shipped_copy.read_bytes() == before


def test_adding_an_entry_keeps_every_other_line(shipped_copy: Path):
    before = shipped_copy.read_text()
    save_experiment(shipped_copy, "quarter", {"base": "baseline", "freeze": True, "partition": {"fraction": 0.25}})
    after = shipped_copy.read_text()
    old_end = '    }\n  },\n  "studies"'  # the last experiment's closing brace, then the studies
    assert before.count(old_end) == 1
    expected = before.replace(old_end, (
        '    },\n'
        '    "quarter": {\n'
        '      "base": "baseline",\n'
        '      "freeze": true,\n'
        '      "partition": {"fraction": 0.25}\n'
        '    }\n  },\n  "studies"'
    ))
    assert after == expected
    raw = json.loads(after)
    assert list(raw) == ["$schema", "experiments", "studies"]
    assert list(raw["experiments"]) == [*json.loads(before)["experiments"], "quarter"]
    assert raw["studies"] == json.loads(before)["studies"]
    catalog = Experiments.load(shipped_copy)
    assert catalog.errors() == []
    spec = catalog.resolve("quarter")
    assert (spec.freeze, spec.partition.fraction, spec.model.width) == (True, 0.25, 32)
    # Removing the new entry again gives back the original text.
    del raw["experiments"]["quarter"]
    assert format_experiments(raw) == before


def test_invalid_entry_rejected_and_nothing_written(shipped_copy: Path):
    before = shipped_copy.read_bytes()
    with pytest.raises(SpecError) as err:
        save_experiment(shipped_copy, "bad", {"base": "baseline", "partition": {"fraction": 1.5}, "lr_": 1})
    message = str(err.value)
    assert "experiments.bad.partition.fraction" in message
    assert "lr_" in message
    with pytest.raises(SpecError, match="unknown experiment 'nope'"):
        save_experiment(shipped_copy, "orphan", {"base": "nope"})
    with pytest.raises(SpecError, match="itself"):
        save_experiment(shipped_copy, "loop", {"base": "loop"})
    assert shipped_copy.read_bytes() == before
    assert [p.name for p in shipped_copy.parent.iterdir()] == ["experiments.json"]  # no temp file left


def test_existing_name_refused_unless_overwrite(shipped_copy: Path):
    before = shipped_copy.read_bytes()
    with pytest.raises(SpecError, match="'half-fixed' already exists"):
        save_experiment(shipped_copy, "half-fixed", {"base": "baseline"})
    assert shipped_copy.read_bytes() == before
    save_experiment(shipped_copy, "half-fixed", {"base": "baseline", "freeze": True, "seed": 4}, overwrite=True)
    raw = json.loads(shipped_copy.read_text())
    assert list(raw["experiments"]) == list(json.loads(before)["experiments"])  # replaced in place
    assert raw["experiments"]["half-fixed"] == {"base": "baseline", "freeze": True, "seed": 4}


def test_missing_file_is_created(tmp_path: Path):
    path = tmp_path / "sub" / "experiments.json"
    save_experiment(path, "mine", {"freeze": True})
    raw = json.loads(path.read_text())
    assert raw == {"$schema": "./experiments.schema.json", "experiments": {"mine": {"freeze": True}}, "studies": {}}
    assert path.read_text() == format_experiments(raw)


def test_minimal_entry_against_base_and_defaults(shipped_copy: Path):
    catalog = Experiments.load(shipped_copy)
    frozen = catalog.resolve("baseline").model_copy(update={"freeze": True})
    assert minimal_entry(frozen, "baseline", catalog=catalog) == {"base": "baseline", "freeze": True}
    same = catalog.resolve("baseline")
    assert minimal_entry(same, "baseline", catalog=catalog) == {"base": "baseline"}
    spec = ExperimentSpec.model_validate({"partition": {"fraction": 0.25, "layers": ["conv1"]}, "seed": 2})
    assert minimal_entry(spec, None) == {"seed": 2, "partition": {"fraction": 0.25, "layers": ["conv1"]}}
    # What minimal_entry returns, saved and resolved, is the spec again.
    save_experiment(shipped_copy, "tweak", minimal_entry(spec, "half-fixed", catalog=catalog))
    assert Experiments.load(shipped_copy).resolve("tweak") == spec


# devices (torch-free) ------------------------------------------------------------------

FAKE_SMI = "0, NVIDIA H100 80GB HBM3, 72908, 81559\n1, NVIDIA A100-SXM4-40GB, 1024, 40960\nbogus line\n"


def test_available_devices_parses_nvidia_smi(monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return subprocess.CompletedProcess(cmd, 0, stdout=FAKE_SMI, stderr="")

    monkeypatch.setattr(devices.subprocess, "run", fake_run)
    monkeypatch.setattr(devices, "has_mps", lambda: False)
    choices = devices.available_devices()
    assert [c.value for c in choices] == ["auto", "cpu", "cuda:0", "cuda:1"]
    assert choices[2].label.startswith("cuda:0  NVIDIA H100 80GB HBM3  71.2 GiB free")
    assert "1.0 GiB free" in choices[3].label
    assert calls[0][0][0] == "nvidia-smi" and calls[0][1]["timeout"] == 2.0


@pytest.mark.parametrize("failure", ["missing", "error", "timeout"])
def test_no_gpus_when_nvidia_smi_fails(monkeypatch, failure):
    def fake_run(cmd, **kwargs):
        if failure == "missing":
            raise FileNotFoundError("nvidia-smi")
        if failure == "timeout":
            raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])
        return subprocess.CompletedProcess(cmd, 9, stdout="", stderr="NVIDIA-SMI has failed")

    monkeypatch.setattr(devices.subprocess, "run", fake_run)
    monkeypatch.setattr(devices, "has_mps", lambda: True)
    assert [c.value for c in devices.available_devices()] == ["auto", "cpu", "mps"]


def test_ui_modules_do_not_import_torch():
    code = ("import sys, workbench.tui.screens.compose, engine.experiments_file; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_experiments_table_names_each_construction_in_full_at_80_columns(cli):
    """The shipped constructions read as what they are, and no name is cut (users type them)."""
    out = cli("experiments", "--experiments", SHIPPED).stdout  # CliRunner renders at 80 columns
    rows: dict[str, str] = {}  # a row's first line names it; its wrapped lines follow, name column blank
    for line in out.split("studies")[0].splitlines():
        if line[2:3].strip():
            name = line.split()[0]
            rows[name] = ""
        if line.strip() and rows:
            rows[name] += " " + line
    catalog = Experiments.load(SHIPPED)
    assert set(catalog.names) <= set(rows)
    assert max(len(line) for line in out.splitlines()) <= 80
    words = {name: set(row.split()) for name, row in rows.items()}  # cells wrap: compare words
    assert {"x4", "none"} <= words["ensemble-4"] and "first_kernels" not in words["ensemble-4"]
    assert {"groups", "0", "g2", "dense"} <= words["fused-halves"]
    assert {"g2", "grouped"} <= words["two-trunks-joint-head"] and "x2" in words["two-half-width"]

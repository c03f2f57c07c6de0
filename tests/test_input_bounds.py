"""Bad input is refused with exit 2 and one sentence, in every command that reads it (issue 11,
items 7 and 11): malformed experiments files, values outside the schema's bounds, typos (with a
"did you mean"), errors told once where they are written; plus `--version`, `show` on a pruned
run and `report` finding the runs of a study that ran with --seeds/--set."""

from __future__ import annotations

import copy
import json
import os
import re
import time
from pathlib import Path

import pytest

from conftest import TINY_EXPERIMENTS
from engine.spec import MAX_SEEDS, SEED_MAX, Experiments, SpecError, json_schema

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------
# Malformed files and out-of-bounds values: every command that reads the file says so.


def _tiny(**changes) -> dict:
    """TINY_EXPERIMENTS with `changes` applied: {"experiments.baseline.seed": 7} style keys."""
    raw = copy.deepcopy(TINY_EXPERIMENTS)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value
    return raw


def _utf16(path: Path) -> None:
    path.write_bytes(json.dumps(TINY_EXPERIMENTS).encode("utf-16"))


def _random_50mb(path: Path) -> None:
    path.write_bytes(os.urandom(50 * 2**20))


def _deep(path: Path) -> None:
    path.write_text("[" * 50_000 + "]" * 50_000)


def _json(raw: dict):
    return lambda path: path.write_text(json.dumps(raw))


# name -> (writes the file, a fragment of the error that names the bad value)
MALFORMED = {
    "utf16": (_utf16, "UTF-16"),
    "random-50mb": (_random_50mb, f"{50 * 2**20:,} bytes"),
    "nested-50k": (_deep, "nested 50,000 levels"),
    "base-list": (_json(_tiny(**{"experiments.half-fixed.base": ["baseline"]})), '["baseline"]'),
    "base-object": (_json(_tiny(**{"experiments.half-fixed.base": {"name": "baseline"}})), '{"name": "baseline"}'),
    "data-x": (_json(_tiny(**{"experiments.baseline.data": "x"})), 'experiments.baseline.data: must be an object of settings (got "x")'),
    "seed-2^70": (_json(_tiny(**{"experiments.baseline.seed": 2**70})), str(2**70)),
    "seed-minus-2^70": (_json(_tiny(**{"experiments.baseline.seed": -(2**70)})), str(-(2**70))),
    "study-seed-2^70": (_json(_tiny(**{"studies.half-fixed-vs-baseline.seeds": [0, 2**70]})), str(2**70)),
    "seeds-10M": (_json(_tiny(**{"studies.half-fixed-vs-baseline.seeds": 10_000_000})), "10000000"),
}

COMMANDS = {
    "validate": lambda path, logs: ("validate", path),
    "run": lambda path, logs: ("run", "--headless", "half-fixed", "-e", path, "--logs-dir", logs),
    "submit": lambda path, logs: ("submit", "half-fixed", "-e", path, "--logs-dir", logs),
    "study": lambda path, logs: ("study", "half-fixed-vs-baseline", "-e", path, "--logs-dir", logs),
    "experiments": lambda path, logs: ("experiments", "-e", path),
}

# Which commands a case does not apply to: `run` and `submit` of an experiment do not read
# the studies; a study gives every run its own seed, so an experiment's bad `seed` is not
# the study's (`validate` and `experiments` still refuse the file).
NOT_READ = {
    "study-seed-2^70": {"run", "submit"},
    "seeds-10M": {"run", "submit"},
    "seed-2^70": {"study"},
    "seed-minus-2^70": {"study"},
}


def assert_refused(result, fragment: str, logs: Path) -> None:
    """Exit 2, exactly one `error:` line and it names the bad value, no traceback, nothing written."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in result.stdout + result.stderr
    assert "unexpected" not in result.stderr
    run_folders = [p for p in logs.iterdir() if p.is_dir()] if logs.exists() else []
    assert run_folders == []


@pytest.fixture(scope="module")
def malformed_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("malformed")
    files = {}
    for name, (write, _) in MALFORMED.items():
        files[name] = root / f"{name}.json"
        write(files[name])
    return files


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_input_exits_2_with_one_sentence(cli, malformed_files, tmp_path, case, command):
    if command in NOT_READ.get(case, ()):
        pytest.skip(f"{command} does not read what {case} breaks")
    logs = tmp_path / "logs"
    result = cli(*COMMANDS[command](malformed_files[case], logs))
    assert_refused(result, MALFORMED[case][1], logs)


def test_ten_million_seeds_are_refused_at_once(cli, malformed_files):
    # Before the bound, resolving ten million specs took minutes and ~100 GB. "At once" is
    # checked as "well under a minute" so that a loaded machine cannot fail it.
    started = time.monotonic()
    result = cli("validate", malformed_files["seeds-10M"])
    assert result.exit_code == 2 and f"1..{MAX_SEEDS}" in result.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("seed", [2**70, -(2**70), SEED_MAX + 1, -1])
@pytest.mark.parametrize("how", ["--seed", "--set"])
@pytest.mark.parametrize("command", ["run", "submit"])
def test_seeds_outside_0_to_2_32_from_the_command_line_exit_2(cli, experiments_file, tmp_path, seed, how, command):
    logs = tmp_path / "logs"
    option = ("--seed", str(seed)) if how == "--seed" else ("--set", f"seed={seed}")
    args = ("run", "--headless") if command == "run" else ("submit",)
    result = cli(*args, "half-fixed", *option, "-e", experiments_file, "--logs-dir", logs)
    assert_refused(result, str(seed), logs)
    assert f"0..{SEED_MAX}" in result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("submit", "half-fixed", "--seeds", "10000000"), "--seeds 10000000"),
        (("study", "half-fixed-vs-baseline", "--seeds", "10000000"), "--seeds 10000000"),
        (("submit", "half-fixed", "--set", "train.steps=100000000000"), "100000000000"),
        (("submit", "half-fixed", "--set", "model.width=100000"), "100000"),
        (("submit", "half-fixed", "--set", "data.batch_size=10000000"), "10000000"),
    ],
)
def test_command_line_values_beyond_the_bounds_exit_2(cli, experiments_file, tmp_path, args, fragment):
    logs = tmp_path / "logs"
    result = cli(*args, "-e", experiments_file, "--logs-dir", logs)
    assert_refused(result, fragment, logs)


def test_the_schema_shows_the_bounds():
    schema = json.dumps(json_schema())
    defs = json_schema()["$defs"]
    assert defs["ExperimentEntry"]["properties"]["seed"]["maximum"] == SEED_MAX
    assert defs["ExperimentEntry"]["properties"]["seed"]["minimum"] == 0
    assert defs["TrainSpec"]["properties"]["steps"]["maximum"] > 0
    assert defs["ModelSpec"]["properties"]["width"]["maximum"] > 0
    assert defs["DataSpec"]["properties"]["batch_size"]["maximum"] > 0
    seeds = defs["StudySpec"]["properties"]["seeds"]["anyOf"]
    assert {branch.get("maximum") for branch in seeds} >= {MAX_SEEDS}
    assert {branch.get("maxItems") for branch in seeds} >= {MAX_SEEDS}
    assert '"maxItems"' in schema


# ---------------------------------------------------------------------------------------
# Adding bounds must not change what a spec is: its digest decides which runs a study
# re-uses and which runs resume. These digests were computed by main's engine/spec.py
# (commit be7efec) before any bound existed; a change here orphans every existing run.

EXPERIMENT_DIGESTS = {
    "baseline": "92e0e7ba6e3f9b88",
    "half-fixed": "8eca2231ca80fad0",
    "fused-halves-baseline": "d6e2c0f0a0d74aff",
    "fused-halves": "da4affbfd5522f47",
    "two-half-width": "86fff38ab6ed2ed8",
    "two-trunks-joint-head": "628ea3b77f15d570",
    "ensemble-4": "8c93ca7d7752d951",
}
STUDY_DIGESTS = {  # study -> arm -> the digests of its seeds 0, 1, 2
    "half-fixed-vs-baseline": {
        "baseline": "7d4465cb145e3846 c5a1875ee56270e7 4755a9680deb8f1b",
        "half-fixed": "514d420bcd9d991d 856ada2f30279c04 06f149b36fa8c394",
    },
    "fc-included": {
        "baseline": "c1993cbb79d16e08 747eb4913a386d68 eada7094ba820e09",
        "half-fixed": "d4af87cd5352a662 ba547f53284772fb 6a173666ba068a8a",
    },
}


def test_bounds_leave_the_digests_of_the_shipped_experiments_unchanged():
    catalog = Experiments.load(REPO / "experiments.json")
    assert {name: catalog.resolve(name).digest() for name in EXPERIMENT_DIGESTS} == EXPERIMENT_DIGESTS
    for study, arms in STUDY_DIGESTS.items():
        resolved = catalog.study(study, seeds=3)  # the shipped studies now default to 10 seeds; 0..2 are the same runs
        got = {arm: " ".join(spec.digest() for spec in resolved.specs[arm].values()) for arm in arms}
        assert got == arms, study


def test_every_seed_of_a_study_is_the_spec_resolve_gives():
    # study() resolves one seed per arm and copies it for the others: the copies must be
    # exactly what resolving each seed gives.
    catalog = Experiments.load(REPO / "experiments.json")
    resolved = catalog.study("fc-included", seeds=4)
    for arm, seeds in resolved.specs.items():
        for seed, spec in seeds.items():
            expected = catalog.resolve(
                resolved.experiments[arm], {"train.steps": 1000, "partition.include_fc": True, "seed": seed}
            )
            assert spec == expected and spec.digest() == expected.digest()


# ---------------------------------------------------------------------------------------
# Did you mean, and errors told once where they are written.


def test_unknown_keys_and_names_get_a_did_you_mean(cli, tmp_path):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(_tiny(**{"experiments.baseline.optimizer.lr_": 0.1})))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert "experiments.baseline.optimizer.lr_: unknown key; did you mean 'lr'?" in result.stderr

    good = tmp_path / "good.json"
    good.write_text(json.dumps(TINY_EXPERIMENTS))
    logs = tmp_path / "logs"
    result = cli("run", "--headless", "half-fixd", "-e", good, "--logs-dir", logs)
    assert_refused(result, f"no experiment 'half-fixd' in {good}; did you mean 'half-fixed'?", logs)
    result = cli("study", "half-fixed-vs-baselin", "-e", good, "--logs-dir", logs)
    assert_refused(result, "no study 'half-fixed-vs-baselin'", logs)
    assert "did you mean 'half-fixed-vs-baseline'?" in result.stderr
    result = cli("submit", "baseline", "--set", "optimizer.momentun=0.5", "-e", good, "--logs-dir", logs)
    assert_refused(result, "--set 'optimizer.momentun': unknown key; did you mean 'optimizer.momentum'?", logs)
    # Nothing close: the allowed choices are listed instead.
    result = cli("run", "--headless", "zzz", "-e", good, "--logs-dir", logs)
    assert_refused(result, "it has: baseline, half-fixed", logs)


def test_a_mistyped_base_gets_a_did_you_mean():
    catalog = Experiments({"experiments": {"baseline": {}, "child": {"base": "baselne"}}}, "e.json")
    with pytest.raises(SpecError, match=r"experiments.child.base: unknown experiment 'baselne'; did you mean 'baseline'\?"):
        catalog.resolve("child")


def test_an_error_in_baseline_is_reported_once_where_it_is_written(cli, tmp_path):
    raw = _tiny(**{"experiments.baseline.optimizer.lr_": 0.1, "experiments.baseline.data": "x"})
    raw["experiments"]["grandchild"] = {"base": "half-fixed", "description": "inherits the errors twice over"}
    raw["experiments"]["own-error"] = {"base": "half-fixed", "train": {"steps": -1}}
    path = tmp_path / "inherited.json"
    path.write_text(json.dumps(raw))
    result = cli("validate", path)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f'error: {path}: experiments.baseline.data: must be an object of settings (got "x")',
        f"error: {path}: experiments.baseline.optimizer.lr_: unknown key; did you mean 'lr'?",
        f"error: {path}: experiments.own-error.train.steps: Input should be greater than or equal to 0 (got -1)",
    ], result.stderr
    # Running an experiment that inherits the error names it where it is written too.
    result = cli("run", "--headless", "grandchild", "-e", path, "--logs-dir", tmp_path / "logs")
    assert result.exit_code == 2 and "experiments.baseline.optimizer.lr_" in result.stderr
    assert "experiments.grandchild" not in result.stderr


def test_a_study_override_is_blamed_on_the_study(tmp_path):
    raw = _tiny(**{"studies.half-fixed-vs-baseline.set": {"train.steps": -5}})
    with pytest.raises(SpecError) as err:
        Experiments(raw, "e.json").study("half-fixed-vs-baseline")
    assert str(err.value).startswith("e.json: studies.half-fixed-vs-baseline.set.train.steps: ")
    assert "(got -5)" in str(err.value)


# ---------------------------------------------------------------------------------------
# --version


def test_version_prints_the_installed_version(cli):
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"workbench {version('workbench')}"


# ---------------------------------------------------------------------------------------
# show on a pruned mutant, and report after a study run with --seeds/--set: real tiny runs.


def test_show_on_a_pruned_mutant_run_shows_its_channels(cli, experiments_file, tmp_path):
    from engine.events import run_events
    from workbench.fuse import fused_spec
    from workbench.headless import run_headless

    logs = tmp_path / "logs"
    members = []
    for seed in (0, 1):
        result = cli("run", "--headless", "baseline", "--seed", seed, "--set", "train.steps=4", "--json",
                     "-e", experiments_file, "--logs-dir", logs)
        assert result.exit_code == 0, result.stderr
        members.append(json.loads(result.stdout))
    spec = fused_spec(members, "mutant", steps=6, overrides={"device": "cpu"},
                      fusion={"prune": {"every": 2, "fraction": 0.25}})
    outcome = run_headless(spec, "fuse-mutant", logs)
    assert outcome.status == "completed" and outcome.summary["movement"] is None  # what a pruning run writes
    prunes = run_events(outcome.folder.events_path, "prune")
    assert prunes

    result = cli("show", outcome.folder.run_id, "--logs-dir", logs)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert "channel pruning" in result.stdout and "Traceback" not in result.stderr
    first, last = prunes[0], prunes[-1]
    for layer, width in last["widths"].items():
        before = width + sum(p["removed"][layer] for p in prunes)
        assert first["widths"][layer] + first["removed"][layer] == before
        row = rf"{re.escape(layer)}[\s│]+{before}[\s│]+{width}[\s│]+{before - width}\b"
        assert re.search(row, result.stdout), (row, result.stdout)
    before, after = first["params_before"], last["params_after"]
    params = rf"parameters[\s│]+{before:,}[\s│]+{after:,}[\s│]+{before - after:,}"
    assert re.search(params, result.stdout), (params, result.stdout)


def test_report_finds_the_runs_of_a_study_run_with_seeds_and_set(cli, experiments_file, tmp_path):
    logs = tmp_path / "logs"
    where = ("-e", experiments_file, "--logs-dir", logs)
    study = cli("study", "half-fixed-vs-baseline", "--seeds", "2", "--set", "train.steps=20", "--json", *where)
    assert study.exit_code == 0, (study.stderr, study.exception)
    run_ids = {run_id for seeds in json.loads(study.stdout)["runs"].values() for run_id in seeds.values()}
    assert len(run_ids) == 4

    # No options: the study's own are used, and said so.
    result = cli("report", "half-fixed-vs-baseline", *where)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert (
        "using the options of the last `workbench study half-fixed-vs-baseline --seeds 2 --set train.steps=20`"
        in result.stderr
    )
    text = Path(result.stdout.strip()).read_text()
    assert all(run_id in text for run_id in run_ids)

    # Other options: the error says which options the study ran with.
    result = cli("report", "half-fixed-vs-baseline", "--seeds", "3", *where)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no runs yet for" in error
    assert "the last `workbench study` here was `workbench study half-fixed-vs-baseline --seeds 2 --set train.steps=20`" in error

    # Without the memory, report cannot guess, and says that the options must match.
    memory = logs / "studies" / "half-fixed-vs-baseline.json"
    assert json.loads(memory.read_text()) == {"study": "half-fixed-vs-baseline", "seeds": 2, "set": ["train.steps=20"]}
    memory.unlink()
    result = cli("report", "half-fixed-vs-baseline", *where)
    assert result.exit_code == 2 and "must match the study's" in result.stderr

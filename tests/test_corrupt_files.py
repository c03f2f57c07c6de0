"""Damaged run files: every reader skips a bad events line, and a run whose spec, summary or
end event cannot be read shows as `corrupt` with the reason, while `runs`, `show`, `study`
and `report` go on with every other run.

One real tiny run is trained once; each case copies its folder under a new id and damages
one file the way a crash, a full disk or a careless edit would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.events import read_events, run_events
from engine.run_folder import CorruptFile, RunFolder, read_json, read_json_object
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.feed import STATUSES, EventsTail, matches
from cli_support import assert_clean_exit

BAD_LINES = [b"\xff\xfe\x00garbage\n", b"[1,2]\n", b"3\n", b'"x"\n', b"null\n", b"[" * 5000 + b"\n",
             b'{"type":"movement","subsets":{}}\n', b'{"type":"start","step":0,"resumed_from":"x"}\n']  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli, write_experiments):
    """One completed tiny `baseline` run (20 steps): its folder is the template of every case."""
    root = tmp_path_factory.mktemp("trained")
    experiments, logs = write_experiments(root), root / "logs"
    result = cli("run", "--headless", "baseline", "--json", "--experiments", experiments, "--logs-dir", logs)
    assert_clean_exit(result, 0)
    return Path(json.loads(result.stdout)["run_dir"])


def copy_run(template: Path, logs: Path, run_id: str) -> Path:
    folder = logs / run_id
    shutil.copytree(template, folder)
    return folder


def insert_lines(events: Path, lines: list[bytes]) -> None:
    """The bad lines in the middle of the file and at its end (before the end event too)."""
    original = events.read_bytes().splitlines(keepends=True)
    middle = len(original) // 2
    events.write_bytes(b"".join(original[:middle] + lines + original[middle:-1] + lines + original[-1:]))


def without_end_status(events: Path) -> None:
    lines = events.read_bytes().splitlines(keepends=True)
    end = json.loads(lines[-1])
    assert end["type"] == "end"
    del end["status"]
    events.write_bytes(b"".join(lines[:-1]) + json.dumps(end).encode() + b"\n")


# What each damage does to the run: (file, how, the reason the run shows, or None: the run stays completed)
DAMAGE = {
    "events-bad-lines": ("events.jsonl", lambda p: insert_lines(p, BAD_LINES), None),
    "end-without-status": ("events.jsonl", without_end_status, "events.jsonl: the end event at step 20 has no status"),
    "summary-binary": ("summary.json", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xd8"), "summary.json is not UTF-8 text"),
    "summary-list": ("summary.json", lambda p: p.write_text("[1, 2]"), "summary.json is not a JSON object (it holds a list)"),
    "summary-torn": ("summary.json", lambda p: p.write_text('{"steps": 2'), "summary.json is not valid JSON"),
    "spec-binary": ("spec.json", lambda p: p.write_bytes(bytes(range(256))), "spec.json is not UTF-8 text"),
    "spec-list": ("spec.json", lambda p: p.write_text('["lenet"]'), "spec.json is not a JSON object (it holds a list)"),
    "spec-number": ("spec.json", lambda p: p.write_text("3"), "spec.json is not a JSON object (it holds a number)"),
    "spec-directory": ("spec.json", lambda p: (p.unlink(missing_ok=True), p.mkdir()), "spec.json is a directory, not a file"),
}


@pytest.fixture(scope="module")
def damaged(trained, tmp_path_factory):
    """A logs dir with the intact run and one damaged copy per DAMAGE case (ids case0000, case0001...),
    indexed the way the worker and a store rebuild index them: record_from_folder."""
    logs = tmp_path_factory.mktemp("damaged") / "logs"
    logs.mkdir()
    intact = copy_run(trained, logs, "intact00")
    cases = {}
    for i, (case, (name, damage, _)) in enumerate(DAMAGE.items()):
        folder = copy_run(trained, logs, f"case{i:04d}")
        damage(folder / name)
        cases[case] = folder
    store = Store(logs)
    for folder in [intact, *cases.values()]:
        store.put(record_from_folder(folder))
    return {"logs": logs, "intact": intact, "cases": cases}


# --- the readers ------------------------------------------------------------------------------
def test_read_events_skips_every_bad_line_and_keeps_the_rest(trained, tmp_path):
    good, _ = read_events(trained / "events.jsonl")
    events = tmp_path / "events.jsonl"
    shutil.copy(trained / "events.jsonl", events)
    insert_lines(events, BAD_LINES)
    found, offset = read_events(events)
    assert found == good and offset == events.stat().st_size
    assert run_events(events, "movement") == run_events(trained / "events.jsonl", "movement")
    # tailing from the middle of the file reads the same events
    middle = events.read_bytes().index(BAD_LINES[0])
    tail, at = read_events(events, middle)
    assert tail == good[len(good) // 2:] and at == offset


def test_the_tuis_events_tail_skips_bad_lines(trained, tmp_path):
    clean = EventsTail(trained)
    clean.poll()
    events = tmp_path / "events.jsonl"
    shutil.copy(trained / "events.jsonl", events)
    insert_lines(events, BAD_LINES)
    tail = EventsTail(events)
    assert tail.poll()
    assert tail.end == clean.end and tail.end["status"] == "completed"
    assert {k: (s.steps, s.values) for k, s in tail.series.items()} == {k: (s.steps, s.values) for k, s in clean.series.items()}
    with open(events, "ab") as file:  # appended while followed: skipped too
        file.write(b"".join(BAD_LINES))
    tail.poll()
    assert tail.end == clean.end and tail.step == clean.step == 20


@pytest.mark.parametrize("case", [c for c, (name, _, _) in DAMAGE.items() if name != "events.jsonl"])
def test_a_json_file_that_is_not_an_object_raises_corrupt_file_naming_it(case, trained, tmp_path):
    name, damage, reason = DAMAGE[case]
    path = tmp_path / name
    damage(path)
    with pytest.raises(CorruptFile) as raised:
        read_json_object(path)
    assert raised.value.reason.startswith(reason) and str(path) in str(raised.value)
    assert read_json(path) is None  # the tolerant reader: launch.json, specs shown beside others'
    assert read_json_object(tmp_path / "missing.json") is None


# --- runs and show ----------------------------------------------------------------------------
def test_runs_lists_every_run_with_the_damaged_ones_corrupt_and_why(damaged, cli):
    result = cli("runs", "--json", "--logs-dir", damaged["logs"])
    assert_clean_exit(result, 0)
    records = {r["run_id"]: r for r in json.loads(result.stdout)}
    assert set(records) == {"intact00", *(f.name for f in damaged["cases"].values())}
    assert records["intact00"]["status"] == "completed" and records["intact00"]["error"] is None
    for case, folder in damaged["cases"].items():
        record, reason = records[folder.name], DAMAGE[case][2]
        if reason is None:  # bad lines skipped: the run reads as it was
            assert {k: v for k, v in record.items() if k != "run_id"} == {
                k: v for k, v in records["intact00"].items() if k != "run_id"
            } | {"run_dir": str(folder.resolve())}
        else:
            assert record["status"] == "corrupt", (case, record)
            assert record["error"].startswith(reason), (case, record["error"])

    table = cli("runs", "--logs-dir", damaged["logs"])
    assert_clean_exit(table, 0)
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), table.stdout
    for case, folder in damaged["cases"].items():
        rows = [line for line in lines if line.split()[:1] == [folder.name]]
        if DAMAGE[case][2] is None:
            assert len(rows) == 1 and "completed" in rows[0]
        else:  # its row in the table, and a line with the reason (cut to fit)
            assert len(rows) == 2 and all("corrupt" in row for row in rows), rows
            assert DAMAGE[case][2][:30] in rows[1], rows


@pytest.mark.parametrize("case", list(DAMAGE))
def test_show_tells_the_reason_of_a_corrupt_run_in_full(case, damaged, cli):
    folder, reason = damaged["cases"][case], DAMAGE[case][2]
    result = cli("show", folder.name, "--logs-dir", damaged["logs"])
    assert_clean_exit(result, 0)
    text = " ".join(result.stdout.split())
    assert folder.name in text
    payload = json.loads(cli("show", folder.name, "--json", "--logs-dir", damaged["logs"]).stdout)
    if reason is None:
        assert "completed" in text and payload["record"]["status"] == "completed"
        assert payload["summary"] == json.loads((damaged["intact"] / "summary.json").read_text())
    else:
        assert "corrupt" in text and reason in text
        assert payload["record"]["status"] == "corrupt" and payload["record"]["error"].startswith(reason)
        damaged_file = DAMAGE[case][0]
        if damaged_file != "events.jsonl":
            assert payload[damaged_file.removesuffix(".json")] is None


def test_show_reads_the_folder_even_when_the_index_says_completed(trained, tmp_path, cli):
    """Damaged after the index recorded it completed: `show` tells, and `runs` goes on."""
    logs = tmp_path / "logs"
    folder = copy_run(trained, logs, "later000")
    Store(logs).put(record_from_folder(folder))
    (folder / "summary.json").write_text("[]")
    result = cli("show", "later000", "--logs-dir", logs)
    assert_clean_exit(result, 0)
    assert "corrupt" in result.stdout and "summary.json is not a JSON object" in " ".join(result.stdout.split())
    assert_clean_exit(cli("runs", "--logs-dir", logs), 0)


def test_a_store_rebuilt_over_damaged_folders_indexes_every_run(damaged, tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(damaged["logs"], logs)
    (logs / "store.json").write_text("not json")  # an unreadable index is rebuilt from the folders
    records = {r["run_id"]: r for r in Store(logs).all()}
    assert len(records) == 1 + len(DAMAGE)
    assert sum(r["status"] == "corrupt" for r in records.values()) == sum(reason is not None for _, _, reason in DAMAGE.values())


@pytest.mark.parametrize("beat", [b"\xff\xfe", b"[1, 2]", b"null"])
def test_a_live_runs_damaged_heartbeat_reads_as_no_heartbeat(beat, trained, tmp_path):
    folder = copy_run(trained, tmp_path, "live0000")
    lines = (folder / "events.jsonl").read_bytes().splitlines(keepends=True)
    (folder / "events.jsonl").write_bytes(b"".join(lines[:-1]))  # no end event: still running
    (folder / "heartbeat.json").write_bytes(beat)
    record = record_from_folder(folder)
    assert record["status"] in ("running", "lost") and record["heartbeat"] is None


def test_the_tui_filters_by_corrupt():
    record = {"run_id": "case0001", "experiment": "baseline", "status": "corrupt", "device": "cpu"}
    assert "corrupt" in STATUSES
    assert matches(record, "", "corrupt") and not matches(record, "", "failed")
    assert matches(record, "corrupt")  # typed into the text filter too


# --- study and report -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def study_runs(tmp_path_factory, cli, write_experiments):
    """`half-fixed-vs-baseline` with one seed: its two runs, trained with `run --headless`."""
    root = tmp_path_factory.mktemp("study")
    experiments, logs = write_experiments(root), root / "logs"
    runs = {}
    for arm in ("baseline", "half-fixed"):
        result = cli("run", "--headless", arm, "--json", "--seed", "0", "--set", "train.steps=30",
                     "--experiments", experiments, "--logs-dir", logs)  # fmt: skip
        assert_clean_exit(result, 0)
        runs[arm] = Path(json.loads(result.stdout)["run_dir"])
    return {"experiments": experiments, "logs": logs, "runs": runs}


STUDY = ("half-fixed-vs-baseline", "--seeds", "1")


def copy_logs(source: Path, logs: Path) -> Path:
    """A copy of a logs dir, indexed anew (the index holds absolute run folder paths)."""
    shutil.copytree(source, logs, ignore=shutil.ignore_patterns("store.json*"))
    Store(logs).put_many([r for r in map(record_from_folder, sorted(logs.iterdir())) if r])
    return logs


@pytest.mark.parametrize("case", ["summary-list", "spec-binary", "end-without-status"])
def test_study_and_report_name_the_corrupt_run_in_one_sentence(case, study_runs, cli, tmp_path):
    logs = copy_logs(study_runs["logs"], tmp_path / "logs")
    where = ("--experiments", study_runs["experiments"], "--logs-dir", logs)
    assert_clean_exit(cli("report", *STUDY, *where, "-o", tmp_path / "before"), 0)  # intact: a report

    folder = logs / study_runs["runs"]["half-fixed"].name
    name, damage, reason = DAMAGE[case]
    reason = reason.replace("step 20", "step 30")  # the study's runs are 30 steps long
    damage(folder / name)
    for command in (("study", *STUDY), ("report", *STUDY, "-o", tmp_path / "after")):
        result = cli(*command, *where)
        assert_clean_exit(result, 2)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        assert folder.name in errors[0] and "corrupt" in errors[0] and reason in errors[0], errors[0]
        assert "half-fixed seed 0" in errors[0]
    assert not (tmp_path / "after").exists()


def test_bad_events_lines_do_not_change_a_studys_verdict(study_runs, cli, tmp_path):
    logs = copy_logs(study_runs["logs"], tmp_path / "logs")
    where = ("--experiments", study_runs["experiments"], "--logs-dir", logs)
    before = cli("study", *STUDY, "--json", *where)
    assert_clean_exit(before, 0)
    for folder in study_runs["runs"].values():
        insert_lines(logs / folder.name / "events.jsonl", BAD_LINES)
    after = cli("study", *STUDY, "--json", *where)
    assert_clean_exit(after, 0)
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert_clean_exit(cli("report", *STUDY, *where, "-o", tmp_path / "report"), 0)
    assert RunFolder(logs / study_runs["runs"]["baseline"].name).summary()["status"] == "completed"


def test_the_verdict_and_report_refuse_a_corrupt_run_naming_its_file(study_runs, tmp_path):
    """What the TUI's Studies screen calls directly, without the CLI's check of run statuses."""
    from engine.spec import SpecError
    from workbench.report import write_report
    from workbench.verdict import study_verdict

    logs = copy_logs(study_runs["logs"], tmp_path / "logs")
    runs = {arm: {0: logs / folder.name} for arm, folder in study_runs["runs"].items()}
    verdict = study_verdict("s", runs, "baseline")  # intact: a verdict
    summary = runs["half-fixed"][0] / "summary.json"
    summary.write_text("[]")
    with pytest.raises(SpecError, match=f"{summary} is not a JSON object"):
        study_verdict("s", runs, "baseline")
    with pytest.raises(SpecError, match=f"{summary} is not a JSON object"):
        write_report(verdict, runs, tmp_path / "report")
    assert not (tmp_path / "report").exists()

"""The one reader of events.jsonl (engine.events.EventsFold): what the store records, the
TUI's charts and the verdict read agrees with folding the whole file at once, it reads
only new bytes, and a kind of event added in one place reaches every reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine.events as events_module
from engine.events import KINDS, EventsFold, Stepped, read_events, run_events, survives_resume
from workbench import records
from workbench.tui.feed import EventsTail
from workbench.verdict import read_run


def movement(step: int, value: float) -> dict:
    figures = {"dist": value, "speed": value / 2, "cos": 1 - value, "layers": {"conv1.weight": {"dist": value / 3}}}
    return {"type": "movement", "step": step, "subsets": {"subset": figures, "fixed": {**figures, "dist": value / 4}}}


def evaluation(step: int, acc: float) -> dict:
    return {"type": "eval", "step": step, "train_loss": 1.0 - acc / 2, "eval_loss": 1.0 - acc, "eval_acc": acc}


def start(step: int = 0, **extra: Any) -> dict:
    return {"type": "start", "step": step, "run_id": "r", "experiment": "e", "device": "cpu",
            "subset_sizes": {"subset": 10, "fixed": 30}, **extra}


def attempt(first: int, last: int, scale: float) -> list[dict]:
    """What one attempt writes from step `first` to `last` (movement every 5, eval every 10)."""
    out: list[dict] = []
    for step in range(first, last + 1, 5):
        out.append(movement(step, scale * step))
        if step % 10 == 0 and step:
            out.append(evaluation(step, scale * step / 100))
    return out


# a run cancelled at 30, resumed from its checkpoint at 20, failed at 40, restarted from
# scratch, and completed at 25: every resume rule at once, with the lines a crash leaves
RESUMED = [
    {"type": "queued", "time": 1.0}, start(), *attempt(0, 30, 0.1),
    {"type": "end", "step": 30, "status": "cancelled"},
    {"type": "queued", "time": 2.0}, start(20, resumed_from=20), *attempt(20, 40, 0.2),
    {"type": "end", "step": 40, "status": "failed", "error": "boom"},
    {"type": "queued", "time": 3.0}, start(0, resumed_from=0), *attempt(0, 25, 0.3),
    {"type": "end", "step": 25, "status": "completed"},
]
BAD = [b"\xff\xfe{\n", b"[1, 2]\n", b'{"type": "movement", "step": "7"}\n', b'{"type": "eval"}\n']


def old_run_events(events: list[dict]) -> list[dict]:
    """The resume rule as run_events applied it before the fold, over a whole file (the oracle)."""
    kept: list[dict] = []
    for event in events:
        if event.get("type") == "start" and event.get("resumed_from") is not None:
            cut = event["resumed_from"]
            kept = [e for e in kept if e.get("type") == "start"
                    or (e.get("type") != "end" and survives_resume(e.get("step", 0), cut))]
        kept.append(event)
    return kept


def write_lines(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as file:
        file.write(b"".join(lines))


def encoded(events: list[dict]) -> list[bytes]:
    return [(json.dumps(e) + "\n").encode() for e in events]


def chunks(lines: list[bytes], size: int) -> list[list[bytes]]:
    return [lines[i:i + size] for i in range(0, len(lines), size)]


def expected(events: list[dict], kind: str) -> list[dict]:
    return [e for e in old_run_events(events) if e["type"] == kind]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])  # appended a line at a time ... all at once
def test_every_reader_agrees_with_the_whole_file_fold_on_a_resumed_run(tmp_path, size):
    path = tmp_path / "events.jsonl"
    lines = encoded(RESUMED)
    lines[5:5] = BAD  # garbage in the middle: skipped, never fatal
    tail = EventsTail(path)
    whole = EventsFold(path)
    written: list[dict] = []
    for chunk in chunks(lines, size):
        write_lines(path, chunk)
        written += [json.loads(line) for line in chunk if line not in BAD]
        tail.poll(), whole.poll()
        for kind in ("movement", "eval", "start", "queued", "end"):
            assert whole.standing(kind) == tail.standing(kind) == run_events(path, kind) == expected(written, kind)
        standing = old_run_events(written)
        newest = [e for e in standing if e["type"] == "movement"]
        fold = records.fold_events(path)
        assert fold.movement == tail.latest_movement == (newest[-1] if newest else None)
        assert (fold.status, fold.start, fold.end) == records.lifecycle(standing)
        assert fold.first_start == next((e for e in written if e["type"] == "start"), {})
        assert tail.series["subset.dist"].steps == [e["step"] for e in newest]
        assert tail.series["fixed.dist"].values == pytest.approx([e["subsets"]["fixed"]["dist"] for e in newest])
        assert tail.series["eval_acc"].steps == [e["step"] for e in standing if e["type"] == "eval"]
    # the end state: restarted from scratch, steps 0..25 of the third attempt stand
    assert fold.status == "completed" and tail.step == 25
    assert tail.series["subset.dist"].values == pytest.approx([0.3 * s for s in range(0, 26, 5)])
    run = read_run(tmp_path)
    assert sorted(run.movement) == list(range(0, 26, 5)) and sorted(run.evals) == [10, 20]
    assert run.movement[20]["subset"]["dist"] == pytest.approx(6.0) and run.subset_sizes == {"subset": 10, "fixed": 30}


def test_a_resume_from_n_keeps_the_records_up_to_n(tmp_path):
    path = tmp_path / "events.jsonl"
    write_lines(path, encoded([start(), *attempt(0, 30, 0.1), start(20, resumed_from=20)]))
    fold = EventsFold(path)
    fold.poll()
    assert [e["step"] for e in fold.standing("movement")] == [0, 5, 10, 15, 20]  # 20 from the first attempt
    assert [e["step"] for e in fold.standing("eval")] == [10, 20]
    write_lines(path, encoded([movement(25, 9.0)]))
    fold.poll()
    assert fold.movement == movement(25, 9.0) and fold.status == "running"


def test_the_newest_only_fold_refolds_when_a_resume_reaches_back(tmp_path):
    """The records' fold keeps the newest movement only: a resume that drops it folds the
    file again from the top to find the one that stands, and counts the bytes it read."""
    path = tmp_path / "events.jsonl"
    reads: list[tuple[int, int]] = []

    def counting(path, offset=0):
        found, end = read_events(path, offset)
        reads.append((offset, end))
        return found, end

    fold = EventsFold(path, whole=())
    write_lines(path, encoded([start(), *attempt(0, 30, 0.1)]))
    fold.poll(read=counting)
    assert [e["type"] for e in fold.kept] == ["start", "movement", "eval"] and fold.movement["step"] == 30  # no series
    size = path.stat().st_size
    write_lines(path, encoded([start(15, resumed_from=15)]))
    fold.poll(read=counting)
    assert reads[-2:] == [(size, path.stat().st_size), (0, path.stat().st_size)]
    assert fold.movement == movement(15, 0.1 * 15)
    assert fold.first_start == start() and fold.start == start(15, resumed_from=15)


def test_a_truncated_or_replaced_file_is_folded_again_from_the_top(tmp_path):
    path = tmp_path / "events.jsonl"
    write_lines(path, encoded([start(), *attempt(0, 30, 0.1)]))
    tail = EventsTail(path)
    tail.poll()
    version = tail.version
    path.write_bytes(b"".join(encoded([start(), movement(0, 0.0)])))  # truncated in place
    assert tail.poll() and tail.version > version
    assert tail.standing("movement") == [movement(0, 0.0)] and tail.series["subset.dist"].steps == [0]
    other = tmp_path / "other.jsonl"  # a new file (new inode), longer than the old one
    other.write_bytes(b"".join(encoded([start(), *attempt(0, 15, 0.5)])))
    other.replace(path)
    assert tail.poll()
    assert tail.series["subset.dist"].values == pytest.approx([0.0, 2.5, 5.0, 7.5])
    path.unlink()  # the folder was removed: nothing stands
    assert tail.poll() and tail.standing("movement") == [] and tail.movement is None


def test_a_fold_reads_each_byte_once(tmp_path, monkeypatch):
    """Followed as it grows, a file is read once in all, whatever the number of polls."""
    path = tmp_path / "events.jsonl"
    read = 0

    class Counting:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def seek(self, offset):
            return self.file.seek(offset)

        def read(self):
            nonlocal read
            data = self.file.read()
            read += len(data)
            return data

    monkeypatch.setattr(events_module, "open", lambda *a, **k: Counting(open(*a, **k)), raising=False)
    tail = EventsTail(path)
    lines = encoded(RESUMED)
    for line in lines:
        write_lines(path, [line[:10]])  # a line being written: read again when complete
        tail.poll()
        write_lines(path, [line[10:]])
        tail.poll()
        tail.poll()  # nothing new: nothing read
    size = path.stat().st_size
    assert tail.offset == size and size <= read <= size + 10 * len(lines)


class Sharpness(Stepped, total=False):
    """A kind of event a future engine might write (the Hessian issue's)."""

    top_eigenvalue: float


def test_a_new_kind_registered_in_one_place_reaches_every_reader(tmp_path, monkeypatch):
    monkeypatch.setitem(KINDS, "sharpness", Sharpness)
    path = tmp_path / "events.jsonl"
    sharp = [{"type": "sharpness", "step": s, "top_eigenvalue": s / 10} for s in (0, 10, 20)]
    write_lines(path, encoded([start(), *sharp]))
    write_lines(path, [b'{"type": "sharpness", "step": 2.5}\n'])  # a step that is not whole: skipped
    write_lines(path, encoded([start(10, resumed_from=10), {"type": "sharpness", "step": 20, "top_eigenvalue": 9.0}]))
    standing = [*sharp[:2], {"type": "sharpness", "step": 20, "top_eigenvalue": 9.0}]
    tail = EventsTail(path)
    tail.poll()
    assert run_events(path, "sharpness") == tail.standing("sharpness") == standing
    assert records.fold_events(path).newest("sharpness") == standing[-1]
    # unregistered (an older workbench reading a newer run), the lines pass through
    # untouched: the step is not checked, and a resume still drops what was redone
    monkeypatch.delitem(KINDS, "sharpness")
    assert run_events(path, "sharpness") == [*sharp[:2], {"type": "sharpness", "step": 2.5}, standing[-1]]
    write_lines(path, [b'{"type": "sharpness", "step": "late"}\n', *encoded([start(0, resumed_from=0)])])
    assert run_events(path, "sharpness") == [] and run_events(path, "start")[-1]["resumed_from"] == 0

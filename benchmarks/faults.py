"""Fault injection: kill the index mid-rebuild, corrupt it, resume twice, plant a pickle,
fill the disk, corrupt run files, kill a submit, mount the logs read-only. Prints one line
per case and "N cases, N held"; exits 1 if any case did not hold.

    python benchmarks/faults.py            # about two minutes on 2 CPU cores

Every case runs the real `workbench` console script (beside this Python) in a scratch
folder with a tiny experiments file, as a user would. The full-disk and read-only cases
need private mounts (`unshare -rm`, no root needed where user namespaces are allowed);
where that is refused they are reported as skipped, not held.
"""

from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Callable

EXE = Path(sys.executable).parent / "workbench"
TINY = {
    "experiments": {
        "baseline": {
            "seed": 0, "device": "cpu", "data": {"name": "mnist5k", "batch_size": 64},
            "model": {"name": "lenet", "width": 4}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "train": {"steps": 20, "eval_every": 10},
            "partition": {"strategy": "first_kernels", "fraction": 0.5, "include_fc": False},
            "freeze": False, "track": {"every": 5}, "checkpoint": {"every": 0},
        },
        "half-fixed": {"base": "baseline", "freeze": True},
    }
}


class Case:
    def __init__(self, name: str, held: bool | None, detail: str = "") -> None:
        self.name, self.held, self.detail = name, held, detail


def wb(cwd: Path, *args: object, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def private_mount(mount: str, *command: object) -> subprocess.CompletedProcess:
    script = f"{mount} && exec \"$@\""
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *map(str, command)],
                          capture_output=True, text=True, timeout=600)


def listed(cwd: Path, logs: Path) -> tuple[int, set[str], str]:
    result = wb(cwd, "runs", "--json", "--logs-dir", logs)
    ids = {r["run_id"] for r in json.loads(result.stdout)} if result.returncode == 0 else set()
    return result.returncode, ids, result.stderr.strip()


def wait_done(cwd: Path, logs: Path, run_id: str, patience: float = 600) -> str:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        status = {r["run_id"]: r["status"] for r in json.loads(wb(cwd, "runs", "--json", "--logs-dir", logs).stdout)}
        if status.get(run_id) not in ("queued", "running"):
            return status.get(run_id, "missing")
        time.sleep(0.5)
    return "still running"


# ---------------------------------------------------------------------------------------


def fake_runs(logs: Path, count: int) -> set[str]:
    ids = set()
    for i in range(count):
        run_id = f"f{i:07d}"
        folder = logs / run_id
        folder.mkdir(parents=True)
        (folder / "spec.json").write_text("{}")
        events = [{"type": "start", "step": 0, "time": 1.0}, {"type": "end", "step": 1, "status": "completed", "time": 2.0}]
        (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        ids.add(run_id)
    return ids


REBUILD = "import sys; from workbench.store import Store; print('ready', flush=True); Store(sys.argv[1]).all()"


def kill_during_rebuild(work: Path) -> list[Case]:
    logs = work / "rebuild" / "logs"
    ids = fake_runs(logs, 1000)
    cases = []
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
        for delay in (0.0, 0.1, 0.3, 0.8):
            (logs / "store.json").write_bytes(b'{"runs": {"1": {"run_id": tr')
            proc = subprocess.Popen([sys.executable, "-c", REBUILD, str(logs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            proc.stdout.readline()
            time.sleep(delay)
            proc.send_signal(sig)
            proc.wait(timeout=120)
            code, seen, _ = listed(work, logs)
            cases.append(Case(f"{sig.name} {delay:.1f}s into a rebuild of 1,000 runs", code == 0 and seen == ids,
                              f"{len(seen)} of {len(ids)} runs listed"))
    return cases


def corrupt_store(work: Path) -> list[Case]:
    variants = {
        "missing": None, "empty": b"", "whitespace": b" \n", "null": b"null", "{}": b"{}",
        '{"runs": []}': b'{"runs": []}', "a string": b'"runs"', "ints as records": b'{"runs": {"1": 1, "2": 2}}',
        "deep nesting": b"[" * 100_000 + b"]" * 100_000, "binary": bytes(range(256)) * 8,
    }
    cases = []
    for name, content in variants.items():
        logs = work / "store" / name.replace(" ", "_").replace('"', "").replace(":", "").replace("[", "").replace("]", "") / "logs"
        ids = fake_runs(logs, 3)
        if content is not None:
            (logs / "store.json").write_bytes(content)
        code, seen, err = listed(work, logs)
        cases.append(Case(f"store.json {name}", code == 0 and seen == ids and "unexpected" not in err, err[:80]))
    logs = work / "store" / "directory" / "logs"
    fake_runs(logs, 1)
    (logs / "store.json").mkdir()
    code, _, err = listed(work, logs)
    cases.append(Case("store.json a directory", code == 2 and err.count("\n") == 0 and "is a folder" in err, err[:80]))
    return cases


def duplicate_resume(work: Path) -> list[Case]:
    cwd = work / "resume"
    cwd.mkdir()
    (cwd / "experiments.json").write_text(json.dumps(TINY))
    out = wb(cwd, "submit", "baseline", "--set", "train.steps=200000", "--set", "track.every=0", "--json")
    run_id = json.loads(out.stdout)["run_ids"][0]
    folder = cwd / "logs" / run_id
    deadline = time.monotonic() + 300
    while not (folder / "heartbeat.json").exists() or json.loads((folder / "heartbeat.json").read_text())["phase"] != "running":
        if time.monotonic() > deadline:
            return [Case("second resume of a running run", False, "the run never started")]
        time.sleep(0.2)
    (folder / "heartbeat.json").unlink()
    status = {r["run_id"]: r["status"] for r in json.loads(wb(cwd, "runs", "--json").stdout)}[run_id]
    again = wb(cwd, "resume", run_id)
    second = subprocess.run([sys.executable, "-m", "workbench.worker", str(folder), "--experiment", "baseline", "--resume"],
                            cwd=cwd, capture_output=True, text=True, timeout=120)
    wb(cwd, "cancel", run_id)
    ends = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    ends = [e for e in ends if e.get("type") == "end"]
    return [
        Case("a running run whose heartbeat was deleted", status == "running", f"status {status}"),
        Case("second resume of a running run", again.returncode == 2 and "cancel it first" in again.stderr, again.stderr.strip()[:80]),
        Case("second worker on a running run", second.returncode == 1 and len(ends) == 1, f"{len(ends)} end events"),
    ]


class Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickle_payload(work: Path) -> list[Case]:
    cwd = work / "pickle"
    batches = cwd / "data" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    marker = cwd / "payload-ran"
    (cwd / "experiments.json").write_text(json.dumps(TINY))
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"):
        (batches / name).write_bytes(pickle.dumps(Payload(str(marker))))
    result = wb(cwd, "run", "--headless", "baseline", "--set", "data.name=cifar10", "--set", "data.dir=data")
    submitted = wb(cwd, "submit", "baseline", "--set", "data.name=cifar10", "--set", "data.dir=data")
    no_folder = not (cwd / "logs").exists() or not [p for p in (cwd / "logs").iterdir() if len(p.name) == 8]
    return [Case("CIFAR-10 batches that are pickle payloads",
                 result.returncode == 2 and submitted.returncode == 2 and not marker.exists() and no_folder,
                 result.stderr.strip()[:90])]


def disk_full(work: Path) -> list[Case]:
    cwd = work / "full"
    logs = cwd / "logs"
    logs.mkdir(parents=True)
    (cwd / "experiments.json").write_text(json.dumps(TINY))
    # 96 KiB: the spec and first events fit, the checkpoints do not.
    mount = f"mount -t tmpfs -o size=96k tmpfs {logs}"
    probe = private_mount(mount, "true")
    if probe.returncode != 0:
        return [Case("a run on a full disk", None, f"skipped: no private mounts ({probe.stderr.strip()[:60]})")]
    script = f"cd {cwd} && {EXE} run --headless baseline --json; echo \"exit $?\"; {EXE} runs --json"
    result = private_mount(mount, "sh", "-c", script)
    lines = result.stdout.strip().splitlines()
    exit_line = next((line for line in lines if line.startswith("exit ")), "exit ?")
    said = "no space left on" in result.stderr
    return [Case("a run on a full disk ends failed, saying so", said and exit_line != "exit 0" and "unexpected" not in result.stderr,
                 result.stderr.strip().splitlines()[-1][:90] if result.stderr.strip() else exit_line)]


def corrupt_run_files(work: Path) -> list[Case]:
    cwd = work / "runfiles"
    cwd.mkdir()
    (cwd / "experiments.json").write_text(json.dumps(TINY))
    good = json.loads(wb(cwd, "run", "--headless", "baseline", "--json").stdout)["run_id"]
    variants: dict[str, Callable[[Path], None]] = {
        "events line of invalid UTF-8": lambda f: f.joinpath("events.jsonl").open("ab").write(b"\xff\xfe{\n"),
        "events line that is a list": lambda f: f.joinpath("events.jsonl").open("a").write("[1, 2]\n"),
        "end event without status": lambda f: f.joinpath("events.jsonl").open("a").write('{"type": "end", "step": 3}\n'),
        "binary summary.json": lambda f: f.joinpath("summary.json").write_bytes(bytes(range(256))),
        "list summary.json": lambda f: f.joinpath("summary.json").write_text("[1]"),
        "binary spec.json": lambda f: f.joinpath("spec.json").write_bytes(b"\x00\xff" * 50),
        "list spec.json": lambda f: f.joinpath("spec.json").write_text("[]"),
    }
    cases = []
    for name, corrupt in variants.items():
        logs = cwd / "logs"
        copy = logs / f"{name[:4].replace(' ', 'x'):x<4}{len(cases):04d}"
        shutil.copytree(logs / good, copy)
        corrupt(copy)
        runs, shown = wb(cwd, "runs", "--json"), wb(cwd, "show", copy.name)
        seen = {r["run_id"] for r in json.loads(runs.stdout)} if runs.returncode == 0 else set()
        ok = runs.returncode == 0 and {good, copy.name} <= seen and shown.returncode in (0, 2)
        ok = ok and "unexpected" not in runs.stderr + shown.stderr
        cases.append(Case(name, ok, (runs.stderr + shown.stderr).strip()[:80]))
        shutil.rmtree(copy)
        wb(cwd, "runs")  # the index forgets the removed copy's folder
    return cases


GHOST = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from engine.spec import Experiments
    from workbench import runner

    class Killed:
        def launch(self, folder, worker_args, pass_fds=()):
            print(folder.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    spec = runner.resolve_spec_device(Experiments.load("experiments.json").resolve("baseline"))
    runner.submit(spec, "baseline", Path("logs"), launcher=Killed())
    """
)


def killed_submit(work: Path) -> list[Case]:
    cwd = work / "ghost"
    cwd.mkdir()
    (cwd / "experiments.json").write_text(json.dumps(TINY))
    run_id = subprocess.run([sys.executable, "-c", GHOST], cwd=cwd, capture_output=True, text=True).stdout.strip()
    status = {r["run_id"]: r["status"] for r in json.loads(wb(cwd, "runs", "--json").stdout)}.get(run_id)
    resumed = wb(cwd, "resume", run_id)
    final = wait_done(cwd, cwd / "logs", run_id) if resumed.returncode == 0 else "not resumed"
    complete = all((cwd / "logs" / run_id / name).exists() for name in ("masks.pt", "checkpoints/init.pt", "summary.json"))
    return [Case("a submit killed before its worker started", status == "lost" and final == "completed" and complete,
                 f"read {status}, resumed to {final}")]


def read_only_logs(work: Path) -> list[Case]:
    logs = work / "readonly" / "logs"
    ids = fake_runs(logs, 3)
    mount = f"mount --bind {logs} {logs} && mount -o remount,ro,bind {logs}"
    probe = private_mount(mount, "touch", logs / "probe")
    if "Read-only" not in probe.stderr:
        return [Case("read-only logs dir", None, f"skipped: no private mounts ({probe.stderr.strip()[:60]})")]
    result = private_mount(mount, EXE, "runs", "--json", "--logs-dir", logs)
    seen = {r["run_id"] for r in json.loads(result.stdout)} if result.returncode == 0 else set()
    return [Case("`runs` on a read-only logs dir with no store yet", seen == ids, result.stderr.strip()[:80])]


def main() -> int:
    if not EXE.exists():
        print(f"no workbench console script beside {sys.executable}; install workbench first", file=sys.stderr)
        return 2
    groups = [kill_during_rebuild, corrupt_store, duplicate_resume, pickle_payload, disk_full, corrupt_run_files,
              killed_submit, read_only_logs]
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="workbench-faults-") as scratch:
        for group in groups:
            work = Path(scratch) / group.__name__
            work.mkdir()
            for case in group(work):
                mark = {True: "held", False: "FAILED", None: "skipped"}[case.held]
                print(f"{mark:8} {case.name}" + (f"  ({case.detail})" if case.detail else ""), flush=True)
                cases.append(case)
    ran = [c for c in cases if c.held is not None]
    held = sum(c.held for c in ran)
    skipped = len(cases) - len(ran)
    print(f"{len(ran)} cases, {held} held" + (f" ({skipped} skipped)" if skipped else ""))
    return 0 if held == len(ran) else 1


if __name__ == "__main__":
    sys.exit(main())

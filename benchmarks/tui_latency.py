"""TUI latency while real runs train: how soon the first useful screen appears, and how
fast the runs table answers keys.

    .venv/bin/python benchmarks/tui_latency.py [--runs 4] [--presses 30]

Starts `--runs` tiny background runs (`workbench submit baseline ...`) in a temporary logs
folder, then measures, headless at 80x24:
  (a) the time from launching WorkbenchApp to the runs table holding rows, and the wall
      time of a cold `python -c "import workbench.tui.app"` (interpreter start included);
  (b) for `--presses` presses of down/up in the runs table, the time from pilot.press until
      the cursor row changes (median and max), and until pilot.press returns;
  (c) for the keys that open a screen or change the table (sort, status filter, filter,
      open a run, Compose, Studies, help), the time until what they open is shown;
then cancels the runs, measures (a), (b) and (c) again with nothing training (for reference),
and removes the folder. Goals: first useful screen <= 1 s, keys <= 100 ms, Compose open
<= 300 ms idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKBENCH = str(Path(sys.executable).parent / "workbench")
EXPERIMENTS = ROOT / "experiments.json"
SIZE = (80, 24)
GOAL_FIRST_SCREEN_S = 1.0
GOAL_KEY_MS = 100.0
GOAL_COMPOSE_MS = 300.0  # Compose open, idle


def submit(logs: Path, runs: int) -> list[str]:
    done = subprocess.run(
        [WORKBENCH, "submit", "baseline", "--seeds", str(runs), "--set", "train.steps=3000", "--set", "model.width=8",
         "--max-per-device", str(runs), "--logs-dir", str(logs), "--experiments", str(EXPERIMENTS), "--json"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )
    return json.loads(done.stdout)["run_ids"]


def statuses(logs: Path) -> dict[str, tuple[str, int]]:
    from workbench.tui.feed import RunFeed

    return {r["run_id"]: (r.get("status") or "?", r.get("step") or 0) for r in RunFeed(logs).poll()}


def wait_for(logs: Path, predicate, timeout: float) -> dict[str, tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        now = statuses(logs)
        if predicate(now) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def cancel(logs: Path, run_ids: list[str]) -> None:
    subprocess.run([WORKBENCH, "cancel", *run_ids, "--logs-dir", str(logs)], capture_output=True, cwd=ROOT)
    final = wait_for(logs, lambda s: not any(status in ("running", "queued") for status, _ in s.values()), 60)
    print("cancelled:", ", ".join(f"{i} {status}" for i, (status, _) in sorted(final.items())))


def cold_import_s() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import workbench.tui.app"], cwd=ROOT, check=True)
    return time.perf_counter() - start


async def measure(logs: Path, presses: int) -> tuple[float, list[float], list[float]]:
    """(seconds to the first useful screen, key -> cursor moved in ms, key -> pilot.press returned in ms).

    The cursor's move is timed by a watcher on the table's cursor_coordinate, at the moment it
    changes; pilot.press itself returns only after Textual's wait_for_idle (a ~60 ms floor
    even on a bare DataTable app), so that second figure is an upper bound."""
    from textual.widgets import DataTable

    from workbench.tui.app import WorkbenchApp
    from workbench.tui.screens.runs import RunsScreen

    start = time.perf_counter()
    app = WorkbenchApp(logs, EXPERIMENTS)
    async with app.run_test(size=SIZE) as pilot:
        while not (isinstance(app.screen, RunsScreen) and app.screen.query_one("#runs-table", DataTable).row_count):
            await asyncio.sleep(0.002)
        first_screen = time.perf_counter() - start
        table = app.screen.query_one("#runs-table", DataTable)
        table.focus()
        await pilot.pause(0.2)
        moved: list[float] = []
        app.screen.watch(table, "cursor_coordinate", lambda: moved.append(time.perf_counter()), init=False)
        latencies, returned = [], []
        direction = "down"
        for _ in range(presses):
            if table.cursor_row >= table.row_count - 1:
                direction = "up"
            elif table.cursor_row <= 0:
                direction = "down"
            before = table.cursor_row
            moved.clear()
            pressed = time.perf_counter()
            await pilot.press(direction)
            while table.cursor_row == before or not moved:
                await asyncio.sleep(0.0005)
            returned.append((time.perf_counter() - pressed) * 1000)
            latencies.append((moved[0] - pressed) * 1000)
            await asyncio.sleep(0.15)  # spread the presses over several 1 s polls of the store
        await pilot.press("q")
    return first_screen, latencies, returned


async def measure_screens(logs: Path) -> list[tuple[str, float]]:
    """(what, ms) from a key press until the screen it opens (or the change it makes) shows:
    every key of the Runs screen that does more than move the cursor, and Compose's opening."""
    from textual.widgets import DataTable

    from workbench.tui.app import WorkbenchApp
    from workbench.tui.screens.compose import ComposeScreen
    from workbench.tui.screens.help import HelpScreen
    from workbench.tui.screens.run import RunScreen
    from workbench.tui.screens.runs import RunsScreen
    from workbench.tui.screens.studies import StudiesScreen

    app = WorkbenchApp(logs, EXPERIMENTS)
    timings: list[tuple[str, float]] = []
    async with app.run_test(size=SIZE) as pilot:
        while not (isinstance(app.screen, RunsScreen) and app.screen.query_one("#runs-table", DataTable).row_count):
            await asyncio.sleep(0.002)
        runs = app.screen

        def shown(kind, selector: str | None = None):
            def check() -> bool:
                if not isinstance(app.screen, kind):
                    return False
                if selector is None:
                    return True
                found = app.screen.query(selector)
                return bool(found) and found.first().region.height > 0
            return check

        steps = [
            ("o (sort by the next column)", "o", lambda: runs.sort_key is not None),
            ("O (reverse the sort)", "O", lambda: runs.sort_reverse),
            ("s (status filter)", "s", lambda: runs.status_filter != "all"),
            ("s x7 back to all", None, None),
            ("/ (focus the filter)", "slash", lambda: app.focused is runs.query_one("#runs-filter")),
            ("escape (back to the table)", "escape", lambda: isinstance(app.focused, DataTable)),
            ("enter (open the Run screen)", "enter", shown(RunScreen, "#chart-dist")),
            ("escape (back)", "escape", lambda: app.screen is runs),
            ("n (open Compose: first field shown)", "n", shown(ComposeScreen, "#field-partition-strategy")),
            ("escape (back)", "escape", lambda: app.screen is runs),
            ("t (open Studies)", "t", shown(StudiesScreen, "#studies-table")),
            ("escape (back)", "escape", lambda: app.screen is runs),
            ("? (help)", "question_mark", shown(HelpScreen)),
            ("escape (back)", "escape", lambda: app.screen is runs),
        ]
        for what, key, done in steps:
            if key is None:
                await pilot.press(*["s"] * 7)
                await pilot.pause(0.2)
                continue
            await pilot.pause(0.3)
            pressed = time.perf_counter()
            await pilot.press(key)
            while not done():
                await asyncio.sleep(0.001)
            timings.append((what, (time.perf_counter() - pressed) * 1000))
        await pilot.press("q")
    return timings


def print_screens(timings: list[tuple[str, float]]) -> None:
    for what, ms in timings:
        goal = GOAL_COMPOSE_MS if what.startswith("n ") else GOAL_KEY_MS
        print(f"    {what:<40} {ms:7.1f} ms   goal <= {goal:.0f} ms  {'OK' if ms <= goal else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--presses", type=int, default=30)
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="workbench-tui-latency-"))
    run_ids: list[str] = []
    try:
        run_ids = submit(logs, args.runs)
        print(f"submitted {len(run_ids)} runs: {' '.join(run_ids)} (logs in {logs})")
        state = wait_for(logs, lambda s: sum(status == "running" and step > 0 for status, step in s.values()) == len(run_ids), 120)
        print("before:", ", ".join(f"{i} {status} step {step}" for i, (status, step) in sorted(state.items())))

        cold = cold_import_s()
        first_screen, latencies, returned = asyncio.run(measure(logs, args.presses))
        state = statuses(logs)
        print("after: ", ", ".join(f"{i} {status} step {step}" for i, (status, step) in sorted(state.items())))
        print()
        print(f"(a) first useful screen (WorkbenchApp launch -> runs table with rows): {first_screen * 1000:7.1f} ms"
              f"   goal <= {GOAL_FIRST_SCREEN_S * 1000:.0f} ms  {'OK' if first_screen <= GOAL_FIRST_SCREEN_S else 'MISSED'}")
        print(f"    cold `python -c 'import workbench.tui.app'` (wall):            {cold * 1000:7.1f} ms")
        print(f"    cold import + first screen:                                   {(cold + first_screen) * 1000:7.1f} ms"
              f"   goal <= {GOAL_FIRST_SCREEN_S * 1000:.0f} ms  {'OK' if cold + first_screen <= GOAL_FIRST_SCREEN_S else 'MISSED'}")
        median, worst = statistics.median(latencies), max(latencies)
        print(f"(b) key -> cursor moved, {len(latencies)} presses of down/up while {len(run_ids)} runs train:"
              f" median {median:.1f} ms, max {worst:.1f} ms   goal <= {GOAL_KEY_MS:.0f} ms"
              f"  {'OK' if worst <= GOAL_KEY_MS else 'MISSED'}")
        print(f"    key -> pilot.press returned (adds Textual's idle wait):           median {statistics.median(returned):.1f} ms,"
              f" max {max(returned):.1f} ms")
        print(f"(c) key -> what it opens or changes shown, while {len(run_ids)} runs train (press returned included):")
        print_screens(asyncio.run(measure_screens(logs)))
        cancel(logs, run_ids)
        run_ids = []
        # the same, with the runs stopped: what the UI costs on its own on this machine
        cold = cold_import_s()
        first_screen, latencies, returned = asyncio.run(measure(logs, args.presses))
        print(f"    for reference, no run training: first screen {first_screen * 1000:.1f} ms, cold import"
              f" {cold * 1000:.1f} ms, keys median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
              f" (press returned: median {statistics.median(returned):.1f} ms)")
        print("    for reference, (c) with no run training:")
        print_screens(asyncio.run(measure_screens(logs)))
    finally:
        if run_ids:
            cancel(logs, run_ids)
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()

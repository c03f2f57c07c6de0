"""The Run screen's charts follow the readability rules: legends outside the plot, integer
step ticks labelled "step", a colour of its own for every series, one x range for every
chart of a run, a placeholder before the first eval, and a run with nothing to chart says so."""

from __future__ import annotations

import io
import time
from pathlib import Path

from rich.console import Console

from test_tui import SPEC, append, app_for, logs, make_run, sleeper, start, table_ids  # noqa: F401  (fixtures)
from tui_support import SIZE, settle, sync
from engine.run_folder import atomic_write_json
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.feed import Series
from workbench.tui.screens.run import RunScreen
from workbench.tui.widgets.chart import OKABE_ITO, MetricChart, chart_colours, step_ticks


def rendered(chart: MetricChart) -> list[str]:
    """The chart's rows as plain text, as the screen shows them."""
    console = Console(width=chart.size.width, file=io.StringIO(), record=True, color_system=None)
    console.print(chart.render())
    return console.export_text().rstrip("\n ").splitlines()


def charts(screen) -> dict[str, MetricChart]:
    return {c.id: c for c in screen.query(MetricChart)}


async def open_run(pilot, app, run_id: str) -> RunScreen:
    await settle(pilot, lambda: run_id in table_ids(app))
    while app.screen.highlighted_id() != run_id:
        await pilot.press("j")
    await pilot.press("enter")
    await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.step > 0)
    return app.screen


@sync
async def test_legends_sit_above_the_plot_and_ticks_are_whole_steps(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_run(pilot, app, "done0001")
        await settle(pilot, lambda: charts(screen)["chart-loss"].points > 0)
        for chart in charts(screen).values():
            rows = rendered(chart)
            frame = next(i for i, row in enumerate(rows) if "┌" in row)  # the plot's top edge
            legend, plot = "\n".join(rows[:frame]), "\n".join(rows[frame:])
            assert legend.startswith(chart.chart_title)
            for label in chart.lines:  # every line named above the plot, none inside it
                name = {"train_loss": "train loss", "eval_loss": "eval loss", "eval_acc": "eval acc"}.get(label, label)
                assert name in legend and name not in plot
            assert all(isinstance(t, int) for t in chart.ticks) and chart.ticks
            tick_row = rows[-2]  # the tick labels, then the axis label
            assert rows[-1].strip() == "step" and "." not in tick_row
            assert [int(t) for t in tick_row.split()] == chart.ticks


@sync
async def test_every_chart_of_a_run_spans_the_same_steps_in_distinct_colours(logs: Path):
    app = app_for(logs)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await open_run(pilot, app, "live0001")  # 10 of 100 steps done: x still 0-100
        await settle(pilot, lambda: charts(screen)["chart-loss"].points > 0)
        ranges = {chart.x_range for chart in charts(screen).values()}
        assert ranges == {(0, 100)}
        for chart in charts(screen).values():
            colours = list(chart.colours.values())
            assert len(set(colours)) == len(colours) and set(colours) <= set(OKABE_ITO)


def test_colours_stay_distinct_for_many_lines_and_ticks_stay_round():
    labels = ["subset", "fixed", "conv1", "conv2", "fc1", "fc2"]
    colours = chart_colours(labels)
    assert len(set(colours.values())) == len(labels) and colours["subset"] != colours["fixed"]
    assert chart_colours(["ratio", "lo", "hi", "1"])["lo"] == chart_colours(["ratio", "lo", "hi", "1"])["hi"]
    assert step_ticks(0, 100) == [0, 50, 100] and step_ticks(0, 7) == [0, 2, 4, 6]
    assert step_ticks(0, 1) == [0, 1] and step_ticks(0, 1000) == [0, 500, 1000]


@sync
async def test_before_the_first_eval_the_loss_chart_says_so(logs: Path, sleeper):
    folder = make_run(logs, "new00001", "baseline", "running", time.time(), pid=sleeper.pid)
    (folder / "events.jsonl").write_text("")  # nothing recorded yet but its start
    append(folder / "events.jsonl", {"type": "queued", "time": time.time()}, start("new00001", "baseline"))
    Store(logs).put(record_from_folder(folder))
    app = app_for(logs, "new00001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.start)
        loss = charts(app.screen)["chart-loss"]
        await pilot.pause(0.2)
        assert loss.points == 0 and any("waiting for the first eval" in row for row in rendered(loss))
        assert not any("┌" in row for row in rendered(loss))  # no empty box from -1 to 1


@sync
async def test_a_run_with_nothing_to_chart_says_so_and_shows_its_figures(logs: Path):
    folder = logs / "avg00001"
    folder.mkdir()
    atomic_write_json(folder / "spec.json", {**SPEC, "train": {"steps": 0}})
    append(folder / "events.jsonl", {"type": "queued", "time": time.time()}, start("avg00001", "fused"),
           {"type": "eval", "step": 0, "train_loss": 0.2, "eval_loss": 0.125, "eval_acc": 0.9712},
           {"type": "end", "step": 0, "status": "completed"})
    Store(logs).put(record_from_folder(folder))
    app = app_for(logs, "avg00001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.end)
        dist = charts(app.screen)["chart-dist"]
        await settle(pilot, lambda: "nothing to chart" in "\n".join(rendered(dist)))
        text = "\n".join(rendered(dist))
        assert "eval acc 97.12%" in text and "eval loss 0.125" in text and "┌" not in text


def test_a_chart_draws_the_line_at_1_under_the_ratio():
    chart = MetricChart("ratio")
    chart.show({"ratio": Series([0, 10], [1.2, 1.3]), "1": Series([0, 10], [1.0, 1.0])})
    assert list(chart.lines) == ["1", "ratio"]  # plotext draws later lines on top


def snapshot_record(step: int, shift: float) -> dict:
    """A snapshots.jsonl line: 3 kernels of 1x4x4 (the last fixed), histograms of one layer."""
    kernels = [[[[round(shift * (k + 1) * (x - y) / 4, 4) for x in range(4)] for y in range(4)]] for k in range(3)]
    return {"step": step, "bins": 4, "edges": {"features.conv1": [-1, 1]},
            "kernels": {"layer": "features.conv1", "param": "features.conv1.weight", "values": kernels,
                        "fixed_kernels": [False, False, True]},
            "hist": {"subset": {"features.conv1": [1, 2 + step // 10, 3, 0]}, "fixed": {"features.conv1": [0, 4, 4, 0]}},
            "proj": [shift, -shift]}


@sync
async def test_the_weights_tab_shows_kernels_histograms_and_trajectory_over_time(logs: Path):
    from engine.weights_record import SNAPSHOTS_FILE
    from workbench.tui.widgets.weights import TrajectoryPlot, diverging
    from textual.widgets import Static

    append(logs / "done0001" / SNAPSHOTS_FILE, *(snapshot_record(step, step / 100) for step in (0, 50, 100)))
    app = app_for(logs, "done0001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and len(app.screen.snapshots) == 3)
        screen = app.screen
        await pilot.press("4")
        await settle(pilot, lambda: "step 100" in str(screen.query_one("#weights-step").render()))
        grid = screen.query_one("#weights-kernels", Static).render()
        text = str(grid).split("\n", 1)[1]  # below the title
        assert text.count("┊") == 2 * 2 and text.count("│") == 2 * 2 * 2  # 2 text rows: fixed 1 kernel, subset 2
        # the top-left pixel of kernel 1 at step 100: value 0 (x = y) -> the scale's middle
        top_left = next(span for span in grid.spans if grid.plain[span.start] == "▀")
        assert str(diverging(0.0, 1.0)[0]) in str(top_left.style)
        await pilot.press("left_square_bracket", "left_square_bracket")
        assert screen.snapshot_at == 0 and "step 0" in str(screen.query_one("#weights-step").render())
        hist = str(screen.query_one("#weights-hist", Static).render())
        assert hist.count("▕") == 2  # one row per snapshot so far, subset and fixed
        await pilot.press("p")
        await settle(pilot, lambda: screen.snapshot_at == 2 and screen._player is None)  # played to the newest
        trajectory = screen.query_one("#weights-trajectory", TrajectoryPlot)
        assert trajectory.tracks["done0001"] == [(0.0, -0.0), (0.5, -0.5), (1.0, -1.0)]

"""The Run screen's Hessian tab: shown for a Hessian-guided run only; its heatmap's cells are
S from hessian.json, in split order, on the fixed diverging scale its legend states."""

from __future__ import annotations

import io
import random
from pathlib import Path

from rich.console import Console
from rich.style import Style
from textual.widgets import Static, Tabs

from engine.run_folder import atomic_write_json
from test_tui import app_for, logs, make_run, sleeper  # noqa: F401  (fixtures)
from tui_support import SIZE, settle, sync
from workbench.tui.screens.run import RunScreen
from workbench.tui.widgets.weights import diverging

LAYERS = {"features.conv1": (5, [1, 3]), "features.conv2": (8, [0, 2, 5, 7])}  # K, the fixed kernels


def saved_hessian() -> dict:
    """A hessian.json as engine/strategies/hessian.py writes it, with irregular S (symmetric,
    a large diagonal, signed off-diagonal entries of several sizes)."""
    rng = random.Random(3)
    layers = {}
    for name, (k, fixed) in LAYERS.items():
        s = [[0.0] * k for _ in range(k)]
        for i in range(k):
            s[i][i] = rng.uniform(5, 9)
            for j in range(i):
                s[i][j] = s[j][i] = rng.choice([-1, 1]) * rng.uniform(0, 2) ** 2
        layers[name] = {"S": s, "saliency": [rng.uniform(0, 1) for _ in range(k)], "fixed": [i in fixed for i in range(k)]}
    return {"layers": layers, "strategy": "hessian_interaction", "samples": 1000, "at": "init", "matrix": "signed",
            "objective": "decouple", "saliency_form": "block", "fix": "low", "dtype": "float64"}


def expected_colour(s: list[list[float]], i: int, j: int) -> str:
    """An independent render of cell (i, j): 4 steps each side of 0 over the largest |S| off the diagonal."""
    reach = max(abs(s[a][b]) for a in range(len(s)) for b in range(len(s)) if a != b)
    step = max(-4, min(4, round(s[i][j] / reach * 4)))
    r, g, b = diverging(step / 4, 1.0)
    return f"#{r:02x}{g:02x}{b:02x}"


def cells(rendered) -> dict[tuple[int, int], tuple[str, str | None]]:
    """(row kernel, column position) -> (colour, background) of every half-block cell shown."""
    plain, found = rendered.plain, {}
    styles = {}
    for span in rendered.spans:
        for at in range(span.start, span.end):
            styles[at] = Style.parse(str(span.style)) if isinstance(span.style, str) else span.style
    offset = 0
    for line in plain.split("\n"):
        if "▀" in line:
            pair = [int(k) for k in line.rsplit(" ", 1)[1].split(",")]
            column = 0
            for at, char in enumerate(line):
                if char == "▀":
                    style = styles[offset + at]
                    found[(pair[0], column)] = style.color.triplet.hex if style.color else None
                    if len(pair) == 2:
                        found[(pair[1], column)] = style.bgcolor.triplet.hex if style.bgcolor else None
                    column += 1
        offset += len(line) + 1
    return found


@sync
async def test_the_hessian_tab_draws_s_in_split_order_on_the_stated_scale(logs: Path):
    make_run(logs, "hess0001", "hessian-decouple", "completed", 0)
    saved = saved_hessian()
    atomic_write_json(logs / "hess0001" / "hessian.json", saved)
    app = app_for(logs, "hess0001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen._hessian_shown)
        screen = app.screen
        assert screen.query_one("#run-tabs", Tabs).query("#hessian")  # the tab is there
        await pilot.press("6")
        assert screen.query_one("#run-hessian").has_class("-shown")
        for index, (name, (k, fixed)) in enumerate(LAYERS.items()):
            if index:  # the layer selector: the second layer's tab
                screen.query_one("#hessian-layers", Tabs).active = f"hessian-layer-{index}"
                await settle(pilot, lambda: screen.query_one("#run-hessian").shown_layer == name)
            s = saved["layers"][name]["S"]
            order = fixed + [i for i in range(k) if i not in fixed]
            shown = cells(screen.query_one("#hessian-map", Static).content)  # the rich Text drawn
            assert len(shown) == k * k
            for (row, position), colour in shown.items():
                assert colour == expected_colour(s, row, order[position]), (name, row, position)
            legend = str(screen.query_one("#hessian-legend", Static).render())
            reach = max(abs(s[a][b]) for a in range(k) for b in range(k) if a != b)
            assert "1_i^T H 1_j" in legend and f"+{reach:.3g}" in legend and "diagonal" in legend
        console = Console(width=160, file=io.StringIO(), record=True, color_system=None)
        console.print(screen.query_one("#hessian-summary", Static).content)
        summary = console.export_text()
        assert "within fixed" in summary and "cross share" in summary
        for name, (k, fixed) in LAYERS.items():  # the cross-set sum of |S|, as `workbench hessian` prints it
            s = saved["layers"][name]["S"]
            cross = sum(abs(s[i][j]) for i in fixed for j in range(k) if j not in fixed)
            row = next(line for line in summary.splitlines() if line.startswith(name))
            assert f"{len(fixed)}/{k}" in row and f"{cross:.3g}" in row.split()


@sync
async def test_no_hessian_tab_for_other_runs(logs: Path):
    app = app_for(logs, "done0001")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.step > 0)
        screen = app.screen
        await pilot.press("6")
        await pilot.pause()
        assert not screen._hessian_shown and not screen.query_one("#run-tabs", Tabs).query("#hessian")
        assert not screen.query_one("#run-hessian").has_class("-shown")


def test_the_engine_writes_hessian_json_beside_hessian_pt(tmp_path):
    """What the tab reads is hessian.pt's contents, exactly (float64 round-trips through JSON)."""
    from engine.train import prepare, train
    from engine.run_folder import RunFolder, read_json
    from test_hessian import hessian_spec
    from workbench.tui.widgets.hessian import read_hessian

    folder = RunFolder.create(tmp_path / "logs")
    train(prepare(hessian_spec()), folder, experiment="t")
    tensors = folder.load_tensors(folder.path / "hessian.pt")
    plain = read_json(folder.path / "hessian.json")
    assert read_hessian(folder.path) == plain
    assert {k: v for k, v in plain.items() if k != "layers"} == {k: v for k, v in tensors.items() if k != "layers"}
    for name, record in tensors["layers"].items():
        assert plain["layers"][name] == {key: value.tolist() for key, value in record.items()}
    (folder.path / "hessian.json").write_text("{not json")
    assert read_hessian(folder.path) == {}  # the tab says so, pointing at `workbench hessian`

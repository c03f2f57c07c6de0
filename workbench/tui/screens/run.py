"""One run, live: movement charts (subset vs fixed), loss/accuracy, per-layer movement and
the worker's log, all followed incrementally once a second.

Narrow terminals (80x24) show one pane at a time under a tab bar (keys 1 2 3); from
WIDE_COLUMNS on, the tab bar goes and every pane shows at once: the four charts in a grid,
the per-layer table and the log beside them (a Textual breakpoint class, `-wide`, and CSS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual import on
from textual.containers import Container, Grid, Vertical, VerticalScroll
from textual.widgets import DataTable, Footer, RichLog, Static, Tab, Tabs

from engine.events import EVENTS_FILE
from workbench.records import record_from_folder
from workbench.tables import STATUS_STYLE
from workbench.tui.feed import (
    MEMBER_ACC, PARAMS, SUBSETS, WIDTH, EventsTail, LogTail, LOG_FILE, progress_bar, short_number,
)
from workbench.tui.screens.polling import PollingScreen
from workbench.tui.screens.actions import confirm_cancel, resume_run
from workbench.tui.widgets.chart import MetricChart, rich_colour
from workbench.tui.widgets.mixture import MixturePlot, mixture_caption, mixture_records
from workbench.tui.widgets.hessian import HESSIAN_MISSING, HessianPane, read_hessian
from workbench.tui.widgets.weights import (
    NEGATIVE, POSITIVE, TrajectoryPlot, histogram_strips, kernel_grid, track_legend,
)
from engine.weights_record import SNAPSHOTS_FILE, kernel_range, read_snapshots
from workbench.tui.live_ratio import METRICS as LIVE_METRICS, LiveRatio, live_ratio, paired_reference
from workbench.store import Store
from engine.run_folder import read_json

LAYER_METRICS = ("dist", "rel", "speed", "cos")
TABS = Binding.Group("Tabs", compact=True)
WIDE_COLUMNS = 140  # from here on every pane shows at once
CHART_TITLES = {"dist": "dist from init", "speed": "speed", "cos": "cos to init"}  # the movement charts
PANES = {"charts": "#run-charts", "layers": "#run-layers", "log": "#run-log", "weights": "#run-weights"}  # tab id -> pane
PANES["mixture"] = "#run-mixture"  # soft weight sharing only: its tab is added once the spec says so
PANES["hessian"] = "#run-hessian"  # Hessian-guided runs only
PLAY_SECONDS = 0.4  # one snapshot per tick while the step slider plays


class RunScreen(PollingScreen):
    READ_ERROR = "cannot read run"
    HELP_EXTRA = [("← →", "Previous / next tab (tab bar focused)"),
                  ("[ ]", "Weights: previous / next snapshot"), ("p", "Weights: play / pause the snapshots over time")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (WIDE_COLUMNS, "-wide")]
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("c", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume"),
        Binding("e", "rerun", "Re-run", tooltip="Compose a new experiment from this run's spec"),
        Binding("l", "by_layer", "Layer", tooltip="Movement charts: whole subsets, each layer of subset, of fixed"),
        # One footer entry for the four (80 columns): `?` and the palette name each.
        Binding("1", "tab('charts')", "Charts", group=TABS),
        Binding("2", "tab('layers')", "Layers", group=TABS),
        Binding("3", "tab('log')", "Log", group=TABS),
        Binding("4", "tab('weights')", "Weights", group=TABS),
        Binding("5", "tab('mixture')", "Mixture", group=TABS),
        Binding("6", "tab('hessian')", "Hessian", show=False),  # Hessian-guided runs only: `?` lists it
        Binding("left_square_bracket", "snapshot(-1)", "Earlier snapshot", show=False),
        Binding("right_square_bracket", "snapshot(1)", "Later snapshot", show=False),
        Binding("p", "play", "Play snapshots", show=False),
    ]

    def __init__(self, record: dict[str, Any], logs_dir: Path) -> None:
        super().__init__(id="run-screen")
        self.record = record
        self.run_id = record["run_id"]
        self.logs_dir = Path(logs_dir)
        self.run_dir = Path(record.get("run_dir") or self.logs_dir / self.run_id)
        self.tail = EventsTail(self.run_dir / EVENTS_FILE)
        self.log_tail = LogTail(self.run_dir / LOG_FILE)
        self._drawn_version: tuple = ()
        # The paired reference run when this one is a study's arm: its movement overlaid.
        self.reference: EventsTail | None = None
        self.reference_arm = self.reference_run = ""
        self._reference_sought = False
        self.spec: dict[str, Any] = {}  # spec.json, read once in the read thread
        self.ratio = LiveRatio()  # this run against its reference, at the latest shared step
        self._ratio_version: tuple = ()
        self.by_layer: str | None = None  # None: whole subsets; else the subset charted layer by layer
        self.snapshots: list[dict[str, Any]] = []  # snapshots.jsonl, when the run saves its weights
        self.reference_snapshots: list[dict[str, Any]] = []
        self._snapshot_sizes: tuple = ()
        self._weights_drawn: tuple = ()
        self.snapshot_at: int | None = None  # the index the step slider shows
        self._player = None
        self._layers_step: int | None = None
        self.mixture_at: int | None = None  # the Mixture tab's eval record (None: the newest)
        self.hessian: dict[str, Any] | None = None  # hessian.json of a Hessian-guided run, read once
        self._hessian_shown = False

    def compose(self) -> ComposeResult:
        yield Static("", id="run-header")
        yield Tabs(Tab("Charts", id="charts"), Tab("Layers", id="layers"), Tab("Log", id="log"),
                   Tab("Weights", id="weights"), id="run-tabs")
        with Container(id="run-body"):
            # first: wide, the grid places it where the charts are (they hide while it shows)
            with Vertical(id="run-mixture", classes="run-pane"):
                yield Static("", id="mixture-step")
                yield MixturePlot(id="mixture-plot")
            with Grid(id="run-charts", classes="run-pane -shown"):
                for metric, title in CHART_TITLES.items():
                    yield MetricChart(title, id=f"chart-{metric}")
                yield MetricChart("loss / acc", right=("eval_acc",), id="chart-loss", waiting="waiting for the first eval")
            yield DataTable(id="run-layers", cursor_type="row", zebra_stripes=True, classes="run-pane")
            # RichLog, not Log: a long line (a traceback's) wraps instead of running off the pane
            yield RichLog(id="run-log", max_lines=2000, wrap=True, markup=False, highlight=False, classes="run-pane")
            with VerticalScroll(id="run-weights", classes="run-pane"):
                yield Static("", id="weights-step")
                yield Static("", id="weights-kernels")
                yield Static("", id="weights-trajectory-legend")
                yield TrajectoryPlot(id="weights-trajectory")
                yield Static("", id="weights-hist")
            yield HessianPane(id="run-hessian", classes="run-pane")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#run-layers", DataTable)
        table.add_column("subset", key="subset")
        table.add_column("layer", key="layer")
        for metric in LAYER_METRICS:
            table.add_column(metric, key=metric)
        for metric in LIVE_METRICS:  # this run / its reference, filled when it has one
            table.add_column(f"{metric} ÷ref", key=f"{metric}-ratio")
        table.border_title = "per layer"  # the titles show where the panes stand side by side
        self.query_one("#run-log", RichLog).border_title = "worker log"
        self.show_header()
        self.start_polling()

    # polling ------------------------------------------------------------------------------
    def read(self) -> tuple[list[str], dict[str, Any] | None]:
        if not self._reference_sought:
            self._reference_sought = True
            self.find_reference()
        self.tail.poll()
        if self.reference:
            self.reference.poll()
            version = (self.tail.version, self.reference.version)
            if version != self._ratio_version:  # the ratio follows both runs' records, off the UI thread
                self._ratio_version = version
                self.ratio = live_ratio(self.spec, self.tail.standing("movement"), self.reference.standing("movement"))
        self.read_snapshots()
        if self.hessian is None:
            self.hessian = read_hessian(self.run_dir)
        lines = self.log_tail.poll()
        # The folder is the truth (and carries a fresh heartbeat): a stored record of a
        # live run can be seconds old, and judging liveness from it would say lost.
        return lines, record_from_folder(self.run_dir)

    def apply(self, result: tuple[list[str], dict[str, Any] | None] | None, error: str) -> None:
        lines, record = result or ([], None)
        if record:
            self.record = record
        if lines:
            log = self.query_one("#run-log", RichLog)
            for line in lines:
                log.write(line)
        version = (self.tail.version, self.reference.version if self.reference else -1)
        if version != self._drawn_version:
            self._drawn_version = version
            self.draw()
        if self._weights_drawn != (len(self.snapshots), len(self.reference_snapshots)):
            self._weights_drawn = (len(self.snapshots), len(self.reference_snapshots))
            if self.snapshot_at is None or self.snapshot_at >= len(self.snapshots) - 2:
                self.snapshot_at = len(self.snapshots) - 1  # following the newest unless looking back
            self.draw_weights()
        if self.hessian is not None and not self._hessian_shown:
            self._hessian_shown = True  # the tab appears once the run has measured its Hessian
            self.query_one("#run-tabs", Tabs).add_tab(Tab("Hessian", id="hessian"))
            self.query_one("#run-hessian", HessianPane).show(self.hessian or None, HESSIAN_MISSING)
        self.show_header(error)

    def find_reference(self) -> None:
        """Once, in the read thread: the study run this one is compared with, if any."""
        from workbench.tui.screens.studies import StudyMatcher

        self.spec = read_json(self.run_dir / "spec.json") or {}
        experiments = getattr(self.app, "experiments", None)
        found = None
        if experiments and Path(experiments).exists():
            try:
                found = StudyMatcher(Path(experiments), self.logs_dir).reference_of(
                    {**self.record, "run_dir": str(self.run_dir)})
            except Exception:  # an unreadable experiments file only costs the overlay
                found = None
        if not found and self.logs_dir.is_dir():  # in no study: the same run with nothing frozen
            partner = paired_reference(self.record, self.spec, Store(self.logs_dir).all(),
                                       lambda r: read_json(Path(r["run_dir"]) / "spec.json"))
            found = partner and ("unfrozen", partner)
        if found:
            arm, record = found
            self.reference_arm, self.reference_run = arm, record["run_id"]
            self.reference = EventsTail(Path(record["run_dir"]) / EVENTS_FILE)

    def read_snapshots(self) -> None:
        """In the read thread: this run's snapshots.jsonl (and its reference's), when grown."""
        paths = [self.run_dir / SNAPSHOTS_FILE]
        if self.reference:
            paths.append(Path(self.reference.path).parent / SNAPSHOTS_FILE)
        sizes = tuple(p.stat().st_size if p.exists() else 0 for p in paths)
        if sizes != self._snapshot_sizes:
            self._snapshot_sizes = sizes
            self.snapshots = read_snapshots(paths[0])
            self.reference_snapshots = read_snapshots(paths[1]) if len(paths) > 1 else []

    def draw_weights(self) -> None:
        step_line = self.query_one("#weights-step", Static)
        if not self.snapshots:
            step_line.update(Text("no weight snapshots: this run does not save them (track.snapshots: k saves "
                                  "them every k steps)", style="dim"))
            return
        at = max(0, min(self.snapshot_at or 0, len(self.snapshots) - 1))
        record = self.snapshots[at]
        done = round(20 * (at + 1) / len(self.snapshots))
        playing = "  ▶ playing" if self._player else ""
        step_line.update(Text.assemble(("step ", "bold"), (f"{record['step']}", "bold"),
                                       f"  snapshot {at + 1}/{len(self.snapshots)}  ▕" + "█" * done + "░" * (20 - done) + "▏",
                                       ("  [ ] earlier/later, p play" + playing, "dim")))
        kernels = record.get("kernels") or {}
        title = Text(f"{kernels.get('layer', 'first conv layer')} kernels (mean over input channels), colour: "
                     f"-{self.kernel_reach:.3g} ", style="bold")
        title.append("■", style=rich_colour(NEGATIVE)).append(" 0 ").append("■", style=rich_colour(POSITIVE))
        title.append(f" +{self.kernel_reach:.3g}, the same at every step; │ subset ┊ fixed\n")
        width = self.query_one("#run-weights").size.width or 78
        self.query_one("#weights-kernels", Static).update(title.append_text(kernel_grid(record, self.kernel_reach, width)))
        tracks = {self.run_id: [tuple(s["proj"]) for s in self.snapshots[: at + 1] if s.get("proj")]}
        if self.reference_snapshots:
            step = record["step"]
            tracks[f"{self.reference_arm} {self.reference_run}"] = [
                tuple(s["proj"]) for s in self.reference_snapshots if s.get("proj") and s["step"] <= step]
        self.query_one("#weights-trajectory-legend", Static).update(track_legend(list(tracks)))
        self.query_one("#weights-trajectory", TrajectoryPlot).show(tracks)
        layer = kernels.get("layer") or next(iter(record.get("edges") or {}), "")
        self.query_one("#weights-hist", Static).update(histogram_strips(self.snapshots, layer, at))

    @property
    def kernel_reach(self) -> float:
        return kernel_range(self.snapshots)

    def action_snapshot(self, delta: int) -> None:
        if self.query_one("#run-tabs", Tabs).active == "mixture":  # the keys step the Mixture tab's evals there
            self.step_mixture(delta)
            return
        if self.snapshots:
            self.snapshot_at = max(0, min(len(self.snapshots) - 1, (self.snapshot_at or 0) + delta))
            self.draw_weights()

    def action_play(self) -> None:
        """Play the snapshots from the first (or from where the slider is) to the newest."""
        if self._player:
            self._player.stop()
            self._player = None
        elif self.snapshots:
            if (self.snapshot_at or 0) >= len(self.snapshots) - 1:
                self.snapshot_at = 0
            self._player = self.set_interval(PLAY_SECONDS, self._tick)
        self.draw_weights()

    def _tick(self) -> None:
        if (self.snapshot_at or 0) >= len(self.snapshots) - 1:
            self.action_play()  # at the newest: stop
            return
        self.action_snapshot(1)

    # drawing --------------------------------------------------------------------------------
    def status(self) -> str:
        if self.tail.end:  # the events file is the newest word on a finished run
            return self.tail.end.get("status", "?")
        return self.record.get("status") or "?"

    def show_header(self, error: str = "") -> None:
        record, status = self.record, self.status()
        step = max(self.tail.step, record.get("step") or 0)
        header = Text.assemble(
            (self.run_id, "bold"), " ", (record.get("experiment") or "-"), "  ",
            (status, STATUS_STYLE.get(status, "")), "  ",
            progress_bar(step, record.get("steps"), width=10), "  ",
            ("on ", "dim"), record.get("device") or self.tail.start.get("device") or "-",
        )
        if self.reference:
            header.append(f"  vs {self.reference_run}", style="dim")  # its arm is in the legends
            header.append("\n").append_text(self.ratio_text())
        if error or record.get("error"):
            header.append("\n" + (error or record["error"]), style="red")
        self.query_one("#run-header", Static).update(header)

    def x_range(self) -> tuple[int, int]:
        """Every chart of the run spans the same steps: 0 to the run's last step (the planned
        one while it trains), so a point at the same x is the same moment on each."""
        return 0, max(self.record.get("steps") or 0, self.tail.step, 1)

    def figures(self) -> str:
        """The run's latest eval figures in one line (what a run with nothing to chart shows)."""
        series, record = self.tail.series, self.record
        latest = {name: (series[name].values[-1] if len(series[name]) else record.get(name))
                  for name in ("eval_acc", "eval_loss", "train_loss")}
        acc = latest["eval_acc"]
        return "  ".join([f"eval acc {100 * acc:.2f}%" if isinstance(acc, (int, float)) else "eval acc -",
                          f"eval loss {short_number(latest['eval_loss'])}",
                          f"train loss {short_number(latest['train_loss'])}"])

    def ratio_text(self) -> Text:
        """`subset (conv kernels) ÷ baseline, step 300:  dist 1.27x  speed 1.31x`."""
        ratio = self.ratio
        if ratio.step is None:
            return Text(f"vs {self.reference_arm}: waiting for both runs' movement records", style="dim")
        text = Text(f"subset ({ratio.scope}) ÷ {self.reference_arm}, step {ratio.step}:", style="bold")
        for metric in LIVE_METRICS:
            value = ratio.ratios.get(metric)
            text.append(f"  {metric} ")
            text.append("-" if value is None else f"{value:.2f}x", style="bold")
        return text

    def draw(self) -> None:
        series = self.tail.series
        if self.tail.prunes:
            self.draw_pruning()
        else:
            self.draw_movement()
        members = {f"member {m} acc": line for m, line in self.tail.family(MEMBER_ACC).items()}
        loss = self.query_one("#chart-loss", MetricChart)
        loss.right = ("eval_acc", *members)
        loss.show({**{name: series[name] for name in ("train_loss", "eval_loss", "eval_acc")}, **members},
                  self.x_range())
        latest = self.tail.latest_movement
        step = (latest["step"] if latest else None, self.ratio.step)
        if step != self._layers_step:
            self._layers_step = step
            self.show_layers(latest)
        self.draw_mixture()

    def draw_pruning(self) -> None:
        """A pruned run's charts: its size over time (movement needs fixed shapes, so it is not tracked)."""
        charts = {
            "dist": ("parameters (channel pruning)", {"params": self.tail.series[PARAMS]}),
            "speed": ("channels per conv layer", self.tail.family(WIDTH)),
            "cos": ("movement: not tracked while pruning", {}),
        }
        for metric, (title, lines) in charts.items():
            chart = self.query_one(f"#chart-{metric}", MetricChart)
            chart.retitle(title, "movement needs fixed shapes: pruning changes them" if not lines else None)
            chart.show(lines, self.x_range())

    def draw_movement(self) -> None:
        series = self.tail.series
        # A run that ended with no movement recorded (a fused `average` run only evaluates)
        # says so where the charts would be, with its figures.
        ended_bare = self.tail.end is not None and not any(len(series[f"{s}.dist"]) for s in SUBSETS)
        waiting = (f"nothing to chart: this run recorded no weight movement\n{self.figures()}" if ended_bare
                   else "waiting for the first movement record")
        for metric in ("dist", "speed", "cos"):
            chart = self.query_one(f"#chart-{metric}", MetricChart)
            chart.retitle(CHART_TITLES[metric] + (f": {self.by_layer} by layer" if self.by_layer else ""), waiting)
            if self.by_layer:
                chart.show(self.tail.layer_series(self.by_layer, metric), self.x_range())
                continue
            lines = {s: series[f"{s}.{metric}"] for s in SUBSETS}
            if self.reference:
                reference = self.reference.series
                lines.update({f"{s} ({self.reference_arm})": reference[f"{s}.{metric}"] for s in SUBSETS})
            chart.show(lines, self.x_range())

    def show_layers(self, movement: dict[str, Any] | None) -> None:
        table = self.query_one("#run-layers", DataTable)
        cursor = table.cursor_row
        table.clear()
        ratio = self.ratio

        def against(subset: str, layer: str | None) -> list[str]:
            """This run's dist and speed over the reference's (subset side, at ratio.step)."""
            # per layer only: the whole-subset row covers FC weights too, the header's ratio the partitioned layers
            found = ratio.layers.get(layer, {}) if subset == "subset" and layer else {}
            return [f"{found[m]:.2f}x" if found.get(m) is not None else "" for m in LIVE_METRICS]

        for subset, figures in ((movement or {}).get("subsets") or {}).items():
            table.add_row(Text(subset, style="bold"), "all", *(short_number(figures.get(m)) for m in LAYER_METRICS),
                          *against(subset, None))
            for layer, layer_figures in (figures.get("layers") or {}).items():
                table.add_row("", layer, *(short_number(layer_figures.get(m)) for m in LAYER_METRICS),
                              *against(subset, layer))
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1), animate=False)

    # actions --------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    @property
    def wide(self) -> bool:
        return self.has_class("-wide")

    @on(Tabs.TabActivated, "#run-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        for tab, pane in PANES.items():
            self.query_one(pane).set_class(tab == event.tab.id, "-shown")

    def action_tab(self, tab: str) -> None:
        """Show the pane (narrow), or move the focus to it (wide: every pane shows)."""
        if tab == "mixture" and not self.mixture_run:
            return
        if tab == "hessian" and not self._hessian_shown:
            self.notify("this run has no Hessian tab: only hessian_interaction and obd runs measure the Hessian")
            return
        self.query_one("#run-tabs", Tabs).active = tab
        self.set_class(tab == "mixture", "-mixture")  # wide: the mixture takes the charts' place
        self.set_class(tab == "weights", "-weights")  # wide: the weights take the charts' place
        self.set_class(tab == "hessian", "-hessian")  # ... and so does the Hessian
        if self.wide:
            self.query_one(PANES[tab]).focus()

    def action_by_layer(self) -> None:
        """Cycle the movement charts: whole subsets, each layer of subset, each layer of fixed."""
        modes = (None, *SUBSETS)
        self.by_layer = modes[(modes.index(self.by_layer) + 1) % len(modes)]
        self.draw()
        self.notify(f"movement charts: {'each layer of ' + self.by_layer if self.by_layer else 'whole subsets'}")

    def action_cancel_run(self) -> None:
        confirm_cancel(self, {**self.record, "status": self.status()}, self.logs_dir)

    def action_resume_run(self) -> None:
        self.notify(resume_run({**self.record, "status": self.status()}, self.logs_dir))

    def action_rerun(self) -> None:
        """Compose a new experiment starting from exactly this run's spec."""
        from workbench.tui.screens.compose import ComposeScreen

        spec = read_json(self.run_dir / "spec.json") or {}
        spec.pop("description", None)
        base = self.record.get("experiment")
        screen = ComposeScreen(self.app.experiments, self.logs_dir, base=base, initial=spec)
        self.app.push_screen(screen, lambda ids: ids and self.notify(f"launched {', '.join(ids)}"))

    # the Mixture tab (soft weight sharing: workbench/tui/widgets/mixture.py) ------------------
    @property
    def mixture_run(self) -> bool:
        return (self.spec.get("regularizer") or {}).get("name") == "soft_weight_sharing"

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Key 5 (the Mixture tab) exists for soft-weight-sharing runs only: hidden elsewhere."""
        return not (action == "tab" and parameters == ("mixture",) and not self.mixture_run)

    def draw_mixture(self) -> None:
        if not self.mixture_run:
            return
        tabs = self.query_one("#run-tabs", Tabs)
        if not tabs.query("#mixture"):
            tabs.add_tab(Tab("Mixture", id="mixture"))
            self.refresh_bindings()  # key 5 shows now
        records = mixture_records(self.tail.standing("eval"))
        at = len(records) - 1 if self.mixture_at is None else max(0, min(self.mixture_at, len(records) - 1))
        record = records[at] if records else None
        self.query_one("#mixture-step", Static).update(mixture_caption(record, at, len(records)))
        self.query_one("#mixture-plot", MixturePlot).show(record)

    def step_mixture(self, delta: int) -> None:
        count = len(mixture_records(self.tail.standing("eval")))
        if count:
            at = count - 1 if self.mixture_at is None else self.mixture_at
            at = max(0, min(count - 1, at + delta))
            self.mixture_at = None if at == count - 1 else at  # at the newest: follow new evals
            self.draw_mixture()

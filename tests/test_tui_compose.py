"""ComposeScreen and SpecForm, driven through Textual's pilot at 80x24 with real keys."""

from __future__ import annotations

import json
import time
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, Field
from textual.app import App
from textual.widgets import Input, Select, Static

from engine.spec import ExperimentSpec, Experiments, settable_keys
from workbench.tui.devices import DeviceChoice
from workbench.tui.screens.compose import ComposeScreen
from workbench.tui.spec_form import SpecForm, field_id

from tui_support import FormHost, sync

DEVICES = [DeviceChoice("auto", "auto"), DeviceChoice("cpu", "cpu"), DeviceChoice("cuda:0", "cuda:0  Fake GPU")]


class Host(App):
    """Pushes a ComposeScreen and keeps what it was dismissed with."""

    def __init__(self, screen: ComposeScreen) -> None:
        super().__init__()
        self.compose_screen = screen
        self.result: object = "not dismissed"

    def on_mount(self) -> None:
        self.push_screen(self.compose_screen, callback=self._done)

    def _done(self, result: object) -> None:
        self.result = result


@pytest.fixture(autouse=True)
def no_nvidia_smi(monkeypatch):
    """The device list comes from a fake, not from this machine's GPUs."""
    monkeypatch.setattr("workbench.tui.spec_form.available_devices", lambda: list(DEVICES))


async def _type_into(pilot, widget: Input, text: str) -> None:
    await pilot.pause()  # a field of a closed section is built when asked for: let it mount
    widget.focus()
    await pilot.pause()
    await pilot.press("end", *["backspace"] * len(widget.value), *text)
    await pilot.pause()


def _message(screen, key: str) -> str:
    return str(screen.query_one(f"#error-{field_id(key)}", Static).render())


@sync
async def test_form_has_a_widget_for_every_settable_key_built_from_the_models():
    form = SpecForm(devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert form.keys == [k for k in form.keys if k in settable_keys()]
        assert sorted(form.keys) == sorted(settable_keys())
        assert isinstance(form.widget_for("freeze"), Input)  # true, false or {"mode": "elastic", "rho": R}
        strategy = form.widget_for("partition.strategy")
        assert isinstance(strategy, Select)
        strategies = typing.get_args(ExperimentSpec.model_fields["partition"].annotation.model_fields["strategy"].annotation)
        assert "first_kernels" in strategies and "none" in strategies
        assert [value for _, value in strategy._options if value is not Select.NULL] == list(strategies)
        assert isinstance(form.widget_for("optimizer.lr"), Input) and form.widget_for("optimizer.lr").type == "number"
        assert form.widget_for("train.steps").type == "integer"
        assert form.widget_for("optimizer.lr").tooltip == "Learning rate."
        device = form.widget_for("device")
        assert [value for _, value in device._options if value is not Select.NULL] == ["auto", "cpu", "cuda:0"]
        assert form.value() == ExperimentSpec().model_dump(mode="json")
        assert form.errors() == {}
        await pilot.pause()  # the sections built on demand above mount (a collapsed section is built when asked for)
        assert form.value() == ExperimentSpec().model_dump(mode="json")


@sync
async def test_form_offers_the_grouped_ensemble_and_fusion_options_and_their_rules():
    """Issue 5's options appear from the models: their choices, and the cross-section rule
    (an ensemble member is a whole model) shown inline until it is met."""
    form = SpecForm(devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        choices = lambda key: [v for _, v in form.widget_for(key)._options if v is not Select.NULL]
        assert choices("model.connectivity") == ["dense", "grouped"]
        assert choices("ensemble.implementation") == ["auto", "grouped", "vmap", "sequential"]
        assert choices("fusion.mode") == ["none", "average", "head", "mutant"]
        assert set(choices("fusion.prune.criterion")) == {"bn_scale", "channel_norm"}
        assert "groups" in choices("partition.strategy")
        await _type_into(pilot, form.widget_for("freeze"), "true")
        await _type_into(pilot, form.widget_for("ensemble.members"), "4")
        assert "ensemble.members > 1 needs" in form.errors()[""]
        assert "freeze false" in str(pilot.app.screen.query_one("#form-error", Static).render())
        assert "got" not in form.errors()[""]  # the rule, not a dump of the whole spec
        await _type_into(pilot, form.widget_for("freeze"), "false")
        form.widget_for("partition.strategy").value = "none"
        await pilot.pause()
        assert form.errors() == {} and form.spec().ensemble.members == 4


class WarmupSpec(BaseModel):  # a section the engine does not have (the real `schedule` is taken)
    warmup: int = Field(5, ge=0, description="Warm-up steps.")


class ExtendedSpec(ExperimentSpec):
    temperature: float = Field(1.0, gt=0, description="A field the screen code has never heard of.")
    warmup_plan: WarmupSpec = Field(default_factory=WarmupSpec)


@sync
async def test_a_field_added_to_the_models_appears_without_screen_changes():
    form = SpecForm({"warmup_plan": {"warmup": 3}}, model=ExtendedSpec, devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "temperature" in form.keys and "warmup_plan.warmup" in form.keys
        assert form.widget_for("warmup_plan.warmup").value == "3"
        await _type_into(pilot, form.widget_for("temperature"), "-2")
        assert form.errors() == {"temperature": "Input should be greater than 0 (got -2.0)"}
        assert "greater than 0" in _message(pilot.app.screen, "temperature")
        await _type_into(pilot, form.widget_for("temperature"), "0.5")
        assert form.value()["temperature"] == 0.5 and form.value()["warmup_plan"] == {"warmup": 3}
        assert form.errors() == {} and _message(pilot.app.screen, "temperature") == ""


@sync
async def test_compose_edit_validate_and_save(experiments_file: Path, logs_dir: Path):
    before = json.loads(experiments_file.read_text())
    screen = ComposeScreen(experiments_file, logs_dir, base="baseline")
    app = Host(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        form = screen.form
        assert form.value()["model"]["width"] == 4  # filled from the tiny baseline
        await pilot.press(*"quarter")  # the name input has focus
        assert screen.experiment_name == "quarter"

        # An invalid value shows inline, under its field, and save refuses.
        await _type_into(pilot, form.widget_for("partition.fraction"), "1.5")
        assert "less than or equal to 1" in _message(screen, "partition.fraction")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert json.loads(experiments_file.read_text()) == before
        assert "partition.fraction" in str(screen.query_one("#compose-status", Static).render())

        # Fixed: 0.25, and freeze on, typed.
        await _type_into(pilot, form.widget_for("partition.fraction"), "0.25")
        assert _message(screen, "partition.fraction") == ""
        await _type_into(pilot, form.widget_for("freeze"), "true")
        assert form.value()["freeze"] is True
        assert form.errors() == {}

        await pilot.press("ctrl+s")
        await pilot.pause()
    raw = json.loads(experiments_file.read_text())
    assert raw["experiments"]["quarter"] == {"base": "baseline", "freeze": True, "partition": {"fraction": 0.25}}
    assert raw["experiments"]["baseline"] == before["experiments"]["baseline"]
    assert raw["experiments"]["half-fixed"] == before["experiments"]["half-fixed"]
    assert raw["studies"] == before["studies"]
    catalog = Experiments.load(experiments_file)
    assert catalog.errors() == []
    assert catalog.resolve("quarter").partition.fraction == 0.25
    assert app.result == "not dismissed"  # saving keeps the screen open


@sync
async def test_copy_from_and_overwrite_needs_confirmation(experiments_file: Path, logs_dir: Path):
    screen = ComposeScreen(experiments_file, logs_dir)
    app = Host(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert screen.form.value()["model"]["width"] == 16  # defaults: nothing chosen
        base = screen.query_one("#compose-base", Select)
        base.focus()
        await pilot.press("enter", "down", "down", "enter")  # (defaults) -> baseline -> half-fixed
        await pilot.pause()
        assert base.value == "half-fixed"
        assert screen.form.value()["freeze"] is True and screen.form.value()["model"]["width"] == 4
        screen.query_one("#compose-name", Input).focus()
        await pilot.press(*"half-fixed")
        await _type_into(pilot, screen.form.widget_for("seed"), "7")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "press ctrl+s again" in str(screen.query_one("#compose-status", Static).render())
        assert json.loads(experiments_file.read_text())["experiments"]["half-fixed"].get("seed") is None
        await pilot.press("ctrl+s")
        await pilot.pause()
    raw = json.loads(experiments_file.read_text())
    assert raw["experiments"]["half-fixed"] == {
        "base": "baseline", "description": "tiny frozen run for tests", "seed": 7, "freeze": True}
    assert list(raw["experiments"]) == ["baseline", "half-fixed"]


@sync
async def test_escape_cancels(experiments_file: Path, logs_dir: Path):
    app = Host(ComposeScreen(experiments_file, logs_dir, base="baseline"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.result is None
        assert not isinstance(app.screen, ComposeScreen)


@sync
async def test_escape_with_unsaved_edits_asks_first(experiments_file: Path, logs_dir: Path):
    from workbench.tui.screens.confirm import ConfirmScreen

    app = Host(ComposeScreen(experiments_file, logs_dir, base="baseline"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*"mine", "escape")  # a name typed: an edit
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep editing: the edit is still there
        assert isinstance(app.screen, ComposeScreen) and app.screen.experiment_name == "mine"
        await pilot.press("escape", "y")
        await pilot.pause()
        assert app.result is None and not isinstance(app.screen, (ComposeScreen, ConfirmScreen))


@sync
async def test_launch_unsaved_submits_a_real_run(experiments_file: Path, logs_dir: Path, workbench_exe: Path):
    before = experiments_file.read_bytes()
    screen = ComposeScreen(experiments_file, logs_dir, base="baseline", initial={"train": {"steps": 5}})
    app = Host(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*"try-it")
        await _type_into(pilot, screen.form.widget_for("partition.fraction"), "0.25")
        await pilot.press("ctrl+l")
        deadline = time.monotonic() + 300  # a guard, not a goal: submit imports torch and checks the spec
        while app.result == "not dismissed" and time.monotonic() < deadline:
            await pilot.pause(0.2)
        status = [str(w.render()) for w in screen.query("#compose-status")]  # empty once dismissed
        assert isinstance(app.result, list) and len(app.result) == 1, status
    run_id = app.result[0]
    run_dir = logs_dir / run_id
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["partition"]["fraction"] == 0.25 and spec["train"]["steps"] == 5 and spec["model"]["width"] == 4
    assert experiments_file.read_bytes() == before  # an unsaved experiment is not written into the file
    # The run is tiny: let it finish so no worker outlives the test.
    deadline = time.monotonic() + 300  # a guard, not a goal: submit imports torch and checks the spec
    while not (run_dir / "summary.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (run_dir / "summary.json").exists(), (run_dir / "worker.log").read_text() if (run_dir / "worker.log").exists() else ""


@sync
async def test_save_and_launch_submits_from_the_saved_file(experiments_file: Path, logs_dir: Path, workbench_exe: Path):
    screen = ComposeScreen(experiments_file, logs_dir, base="half-fixed", initial={"train": {"steps": 4}})
    app = Host(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*"short-frozen", "ctrl+g")
        deadline = time.monotonic() + 300  # a guard, not a goal: submit imports torch and checks the spec
        while app.result == "not dismissed" and time.monotonic() < deadline:
            await pilot.pause(0.2)
    assert isinstance(app.result, list) and len(app.result) == 1
    raw = json.loads(experiments_file.read_text())
    assert raw["experiments"]["short-frozen"] == {"base": "half-fixed", "train": {"steps": 4}}
    run_dir = logs_dir / app.result[0]
    assert json.loads((run_dir / "spec.json").read_text()) == Experiments.load(experiments_file).resolve(
        "short-frozen").model_dump(mode="json")
    deadline = time.monotonic() + 300  # a guard, not a goal: submit imports torch and checks the spec
    while not (run_dir / "summary.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (run_dir / "summary.json").exists()


@sync
async def test_launch_failure_shows_the_first_line_of_stderr(experiments_file: Path, logs_dir: Path, monkeypatch):
    import subprocess

    calls = []

    def failing_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 2, stdout="", stderr="error: no GPU cuda:3 here\nmore detail\n")

    monkeypatch.setattr("workbench.tui.screens.actions.subprocess.run", failing_run)
    screen = ComposeScreen(experiments_file, logs_dir, base="baseline")
    app = Host(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+l")
        deadline = time.monotonic() + 60
        while (screen.launching or not calls) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        await pilot.pause()
        status = str(screen.query_one("#compose-status", Static).render())
        assert status == "launch failed: error: no GPU cuda:3 here"
        assert app.result == "not dismissed" and not screen.launching
    cmd = calls[0]
    assert Path(cmd[0]).name == "workbench" and cmd[1:3] == ["submit", "unsaved"]
    assert cmd[cmd.index("--logs-dir") + 1] == str(logs_dir) and cmd[-1] == "--json"
    assert not Path(cmd[cmd.index("--experiments") + 1]).exists()  # the temporary copy is gone


@sync
async def test_the_questions_choices_come_first_and_show_at_80x24(experiments_file: Path, logs_dir: Path):
    """Strategy, fraction, freeze and device are on the first screen at 80x24, above the rest;
    an ensemble's section follows the partition when the spec has one."""
    app = Host(ComposeScreen(experiments_file, logs_dir, base="baseline"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        form = app.screen.query_one(SpecForm)
        order = list(form.layout_sections())
        assert order[:2] == ["question", "partition"] and "ensemble" not in order[:3]
        for key in ("partition.strategy", "partition.fraction", "freeze", "device"):
            widget = form.widget_for(key)
            assert 0 <= widget.region.y and widget.region.bottom <= 23, key  # above the footer, unscrolled
    app = Host(ComposeScreen(experiments_file, logs_dir, initial={"ensemble": {"members": 4}}))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert list(app.screen.query_one(SpecForm).layout_sections())[:3] == ["question", "partition", "ensemble"]

"""Compose an experiment: fill a form built from the spec models, save it into
experiments.json, or launch it at once as background runs.

Launching goes through `workbench submit` in a subprocess, from a thread worker: the UI
process never imports torch and never blocks, and no multiprocessing child is started
from inside the running Textual app (DESIGN.md).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Input, Label, Select

from engine.experiments_file import minimal_entry, save_experiment
from engine.spec import Experiments, ExperimentSpec, SpecError
from workbench.backends import BACKENDS
from workbench.tui.screens.actions import run_workbench
from workbench.tui.widgets.keys_footer import KeysFooter
from workbench.tui.widgets.busy_line import BusyLine
from workbench.tui.widgets.spec_form import SpecForm

UNSAVED_NAME = "unsaved"


def run_submit(name: str, experiments_path: Path, logs_dir: Path, backend: str = "local") -> tuple[list[str] | None, str]:
    """`workbench submit NAME --json` as a subprocess: (run ids, "") or (None, why it failed).
    `backend` ray: on the Ray cluster at $RAY_ADDRESS (or the one started on this machine)."""
    return run_workbench(["submit", name, "--experiments", str(experiments_path), "--backend", backend], logs_dir)


class ComposeScreen(Screen):
    """Dismissed with the list of launched run ids, or None when cancelled."""

    # Focus the name at once: focusing the first widget and then the name restyled the
    # screen and rebuilt the footer twice while Compose opened.
    AUTO_FOCUS = "#compose-name"

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("ctrl+l", "launch", "Launch"),
        # Not ctrl+b: tmux's prefix key, which never reaches an app running inside tmux.
        Binding("ctrl+g", "save_launch", "Save+launch"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, experiments_path: Path, logs_dir: Path, base: str | None = None,
                 initial: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.experiments_path = Path(experiments_path)
        self.logs_dir = Path(logs_dir)
        self.catalog = self._load_catalog()
        self.base = base if base in self.catalog.entries else None
        self._load_error = "" if base is None or self.base else f"unknown experiment {base!r}: starting from defaults"
        values = self._resolved(self.base)
        if initial:
            values = _merge(values, initial)
        self._initial_values = values
        self._copied_from = self.base  # what the form was last filled from
        self._confirm_overwrite: str | None = None
        self._saved: tuple[str, dict[str, Any]] | None = None  # (name, form value) last saved
        self.launching = False

    # building ---------------------------------------------------------------------------
    def _load_catalog(self) -> Experiments:
        if not self.experiments_path.exists():
            return Experiments({"experiments": {}}, str(self.experiments_path))
        return Experiments.load(self.experiments_path)

    def _resolved(self, name: str | None) -> dict[str, Any]:
        if name is None:
            return ExperimentSpec().model_dump(mode="json")
        try:
            return self.catalog.resolve(name).model_dump(mode="json")
        except SpecError as exc:
            self._load_error = str(exc).splitlines()[0]
            return ExperimentSpec().model_dump(mode="json")

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="compose-form-scroll"):
            with Horizontal(classes="top-row", id="compose-top"):
                yield Label("name", classes="top-label")
                yield Input(placeholder="name to save as", id="compose-name", compact=True)
            with Horizontal(classes="top-row"):
                yield Label(" copy from", classes="top-label")
                yield Select([(n, n) for n in self.catalog.names], prompt="(defaults)", allow_blank=True,
                             value=self.base if self.base else Select.NULL, id="compose-base", compact=True)
            with Horizontal(classes="top-row"):
                yield Label(" launch on", classes="top-label")
                yield Select([(n, n) for n in BACKENDS.names], allow_blank=False, value="local", id="compose-backend",
                             compact=True, tooltip=BACKENDS.help())
            yield SpecForm(self._initial_values, id="compose-form")
        yield BusyLine(self._load_error, id="compose-status")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.title = f"compose experiment: {self.experiments_path}"
        self._pristine: tuple | None = None
        self.call_after_refresh(self._take_pristine)  # once the fields have settled

    def _take_pristine(self) -> None:
        self._pristine = self._edited_state()

    def _edited_state(self) -> tuple:
        """What esc would throw away: the name, the base and every field of the form."""
        return self.experiment_name, self.chosen_base, json.dumps(self.form.value(), sort_keys=True, default=str)

    @property
    def unsaved(self) -> bool:
        state = self._edited_state()
        saved = self._saved and (self._saved[0], self.chosen_base, json.dumps(self._saved[1], sort_keys=True, default=str))
        return self._pristine is not None and state != self._pristine and state != saved
        if self._load_error:
            self._status(self._load_error, error=True)

    # helpers ----------------------------------------------------------------------------
    @property
    def form(self) -> SpecForm:
        return self.query_one("#compose-form", SpecForm)

    @property
    def experiment_name(self) -> str:
        return self.query_one("#compose-name", Input).value.strip()

    @property
    def chosen_base(self) -> str | None:
        value = self.query_one("#compose-base", Select).value
        return None if value is Select.NULL else value

    def _status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#compose-status", BusyLine)
        status.say(text)
        status.set_class(error, "-error")

    def _valid_spec(self) -> ExperimentSpec | None:
        errors = self.form.refresh_errors()
        if errors:
            listed = "; ".join(f"{key or 'spec'}: {message}" for key, message in errors.items())
            self._status(f"{len(errors)} problem(s): {listed}", error=True)
            return None
        return ExperimentSpec.model_validate(self.form.value())

    @on(Select.Changed, "#compose-base")
    def _copy_from(self, event: Select.Changed) -> None:
        name = None if event.value is Select.NULL else str(event.value)
        if name == self._copied_from:  # e.g. the Changed the Select posts when it mounts
            return
        self._copied_from = name
        self.form.set_values(self._resolved(name))
        self._status(f"copied from {name}" if name else "defaults")

    @on(Input.Changed, "#compose-name")
    def _name_changed(self) -> None:
        self._confirm_overwrite = None

    # actions ----------------------------------------------------------------------------
    def save(self) -> bool:
        """Save the form as experiment `name`; True when it was written."""
        name = self.experiment_name
        if not name:
            self._status("name: required to save; type a name at the top", error=True)
            self.query_one("#compose-name", Input).focus()
            return False
        spec = self._valid_spec()
        if spec is None:
            return False
        exists = name in self.catalog.entries
        if exists and self._confirm_overwrite != name:
            self._confirm_overwrite = name
            self._status(f"experiment {name!r} exists: press ctrl+s again to overwrite it", error=True)
            return False
        base = self.chosen_base
        if base == name:  # re-saving an experiment over itself: keep inheriting from its own base
            own_base = self.catalog.entries[name].get("base")
            base = own_base if own_base in self.catalog.entries else None
        try:
            entry = minimal_entry(spec, base, catalog=self.catalog)
            save_experiment(self.experiments_path, name, entry, overwrite=exists)
        except SpecError as exc:
            self._status(str(exc), error=True)
            return False
        self._confirm_overwrite = None
        self._saved = (name, self.form.value())
        self.catalog = self._load_catalog()
        select = self.query_one("#compose-base", Select)
        current = select.value
        with select.prevent(Select.Changed):
            select.set_options([(n, n) for n in self.catalog.names])
            select.value = current
        self._status(f"saved {name} to {self.experiments_path}")
        self.notify(f"saved {name}: {json.dumps(entry)}", title="experiment saved")
        return True

    def action_save(self) -> None:
        self.save()

    def action_launch(self) -> None:
        spec = self._valid_spec()
        if spec is None or self.launching:
            return
        name = self.experiment_name or UNSAVED_NAME
        if self._saved == (name, self.form.value()):  # saved as it stands: submit from the file
            self._start_submit(name, self.experiments_path, None)
            return
        # Not saved (or edited since): launch from a temporary copy of the experiments file
        # holding the composed spec whole (so it depends on no base): the run gets exactly
        # what the form shows. The run folder keeps the resolved spec, so the
        # copy can go once submit has returned.
        scratch = Path(tempfile.mkdtemp(prefix="workbench-compose-"))
        path = scratch / "experiments.json"
        try:
            if self.experiments_path.exists():
                shutil.copyfile(self.experiments_path, path)
            save_experiment(path, name, spec.model_dump(mode="json"), overwrite=True)
        except SpecError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            self._status(str(exc), error=True)
            return
        self._start_submit(name, path, scratch)

    def _start_submit(self, name: str, path: Path, scratch: Path | None) -> None:
        self.launching = True
        backend = str(self.query_one("#compose-backend", Select).value)  # read here: the thread never touches widgets
        self._status("")
        self.query_one("#compose-status", BusyLine).start(f"submitting {name}" + (" to Ray" if backend == "ray" else "")
                                                          + ": checking the spec and queuing (a few seconds)")
        self._submit(name, path, scratch, backend)

    def action_save_launch(self) -> None:
        if self.save():
            self.action_launch()

    def action_cancel(self) -> None:
        if self.launching:
            return
        if not self.unsaved:
            self.dismiss(None)
            return
        from workbench.tui.screens.confirm import ConfirmScreen

        self.app.push_screen(ConfirmScreen("Throw away the edits of this experiment (not saved)?"),
                             lambda yes: yes and self.dismiss(None))

    @work(thread=True, group="compose-launch")
    def _submit(self, name: str, path: Path, scratch: Path | None, backend: str) -> None:
        try:
            ids, problem = run_submit(name, path, self.logs_dir, backend)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        self.app.call_from_thread(self._launch_done, name, ids, problem)

    def _launch_done(self, name: str, ids: list[str] | None, problem: str) -> None:
        self.launching = False
        self.query_one("#compose-status", BusyLine).stop()
        if ids is None:
            self._status(f"launch failed: {problem}", error=True)
            self.notify(problem, title="launch failed", severity="error")
            return
        self.notify(f"{name}: {', '.join(ids)}", title="runs queued")
        self.dismiss(ids)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged

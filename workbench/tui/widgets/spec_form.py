"""A form for an experiment spec, built from the pydantic models themselves.

Every leaf field of `ExperimentSpec` (recursing into its sections, as
`engine.spec.settable_keys` does) gets an input chosen from its type: `Literal[...]` (or a
registry of names, engine/registry.py) a
Select of the allowed values, `bool` a checkbox, int/float/str an Input (typed where
Textual can), `list[str]` a comma-separated Input, `device` a Select of the devices this
machine has, anything else an Input that takes JSON. A field added to the models shows up
here with no change to this file. Each field's pydantic `description` is its tooltip and
a dim help line; the validation message for a field is shown under it on every change.

Only the sections the user sees first (the question's choices, an ensemble or fusion in
use) are built when the form opens. Every other section is a line of one list below them
(`#form-sections`, with its problems under its name); enter on a line builds that section
and opens it in its place (so does asking for one of its widgets). The whole form is about
500 widgets, and building them all made Compose take seconds to open; until a section is
built, its fields' values are kept in a plain dict and read from there.
"""

from __future__ import annotations

import functools
import json
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.content import Content
from textual.widgets import Checkbox, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from engine.registry import choices as registered_choices
from engine.spec import ExperimentSpec
from workbench.tui.devices import DeviceChoice, available_devices
from workbench.tui.widgets.section_title import SectionTitle

GENERAL = ""  # the section of the top-level fields
QUESTION = "question"  # the first section shown: the research question's main choices
QUESTION_KEYS = ("partition.strategy", "partition.fraction", "freeze", "device")
DEVICE_KEY = "device"


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def field_id(key: str) -> str:
    """The widget id of a dotted key (`partition.fraction` -> `field-partition-fraction`)."""
    return "field-" + key.replace(".", "-")


def _kind(key: str, annotation: Any) -> str:
    if key == DEVICE_KEY:
        return "device"
    origin = typing.get_origin(annotation)
    if origin is Literal:  # a plain Literal, or a registry's names (see _choices)
        return "choice"
    if annotation is bool:
        return "bool"
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    if annotation is str:
        return "str"
    if origin is list and typing.get_args(annotation) in ((str,), ()):
        return "list_str"
    return "json"


def _choices(info: FieldInfo) -> tuple[Any, ...]:
    """A choice field's allowed values: its registry's names as they are now (a strategy
    registered after start-up is offered too), else its Literal's values."""
    names = registered_choices(info.field)
    return tuple(names) if names is not None else typing.get_args(info.annotation)


class FieldInfo(typing.NamedTuple):
    key: str  # dotted key
    section: str  # GENERAL or the section's dotted prefix
    name: str  # the last part of the key
    kind: str
    annotation: Any
    description: str
    field: Any = None  # pydantic's FieldInfo (its metadata names a registry, if any)


def form_fields(model: type[BaseModel] = ExperimentSpec, prefix: str = "") -> list[FieldInfo]:
    """Every leaf field of `model`, in model order, top-level fields first then each section."""
    return list(_walk_fields(model, prefix))


@functools.cache  # the models do not change while the app runs: walk them once, not per Compose
def _walk_fields(model: type[BaseModel], prefix: str) -> tuple[FieldInfo, ...]:
    leaves: list[FieldInfo] = []
    sections: list[FieldInfo] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_section(field.annotation):
            sections += _walk_fields(field.annotation, f"{key}.")
        else:
            leaves.append(
                FieldInfo(key, prefix.rstrip(".") or GENERAL, name, _kind(key, field.annotation),
                          field.annotation, field.description or "", field)
            )
    return tuple(leaves + sections)


@functools.cache
def _model_defaults(model: type[BaseModel]) -> str:
    """The model's defaults as JSON text (a fresh copy is parsed per form), or "{}" when the
    model has required fields."""
    try:
        return json.dumps(model.model_validate({}).model_dump(mode="json"))
    except ValidationError:  # a model with required fields: those start empty
        return "{}"


def _text(kind: str, value: Any) -> str:
    if kind == "list_str":
        return ", ".join(str(v) for v in value or [])
    if kind == "json":
        return json.dumps(value)
    if value is None:
        return ""
    return str(value)


def _parse(kind: str, text: str) -> Any:
    """The value typed into an Input; text that does not parse is passed on as it is, so the
    model says what is wrong with it."""
    text = text.strip()
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "list_str":
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key in a nested dict, in place (a section that is not a dict is left
    alone: validating names the section, as engine.spec.apply_override does)."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return
    node[leaf] = value


def _get(tree: dict[str, Any], key: str, default: Any = None) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


class SpecForm(Vertical):
    """Inputs for every field of `model`, grouped by section, with inline validation."""

    DEFAULT_CSS = """
    SpecForm { height: auto; padding-top: 1; }
    /* a blank line around an open section's fields */
    SpecForm .section-body { height: auto; padding: 1 0 1 4; }
    SpecForm #form-sections { border: none; padding: 0; max-height: 100; }
    SpecForm #form-sections > .option-list--option { padding: 0 1; }
    SpecForm .field-row { height: auto; }
    /* the field being edited stands out: its row tinted, its name bold in the accent colour */
    SpecForm .field-row:focus-within { background: $accent 20%; }
    SpecForm .field-row:focus-within .field-label { color: $accent; text-style: bold; }
    /* a dropdown that would run off the bottom (over the footer) opens upwards instead */
    SpecForm Select > SelectOverlay { constrain: none inflect; max-height: 8; }
    SpecForm .field-label { width: 18; padding: 0 1 0 0; }
    SpecForm .field-input { width: 1fr; }
    SpecForm .field-help { color: $text-muted; padding-left: 18; }
    SpecForm .field-error, SpecForm .section-error { color: $error; display: none; }
    SpecForm .field-error { padding-left: 18; }
    SpecForm .field-error.-shown, SpecForm .section-error.-shown { display: block; }
    """

    class Changed(Message):
        """Posted after any field changed; `errors` is the form's errors() at that moment."""

        def __init__(self, form: SpecForm, errors: dict[str, str]) -> None:
            super().__init__()
            self.form = form
            self.errors = errors

        @property
        def control(self) -> SpecForm:
            return self.form

    def __init__(
        self,
        values: dict[str, Any] | None = None,
        *,
        model: type[BaseModel] = ExperimentSpec,
        devices: list[DeviceChoice] | None = None,
        show_help: bool = True,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.model = model
        self.fields = form_fields(model)
        self._devices = devices
        self._show_help = show_help
        self._initial = self._lenient_defaults(values or {})
        self._inputs: dict[str, Widget] = {}
        self._messages: dict[str, Static | None] = {}  # None: a section (see _show_problems)
        self._loading = False
        self._sections = self.layout_sections()
        self._section_of = {info.key: section for section, infos in self._sections.items() for info in infos}
        self._built: set[str] = set()
        # every field's value as its widget would give it back, read while the widget is
        # not built or not mounted yet (an unmounted Select reads as blank)
        self._kept: dict[str, Any] = {info.key: self._as_widget_gives(info, _get(self._initial, info.key))
                                         for info in self.fields}
        self._recheck_due = False
        self._problems: dict[str, str] = {}  # a section's own problems, or its unbuilt fields'

    def _lenient_defaults(self, values: dict[str, Any]) -> dict[str, Any]:
        """Defaults of the model with `values` laid over them (values need not be valid)."""
        full = json.loads(_model_defaults(self.model))
        for info in self.fields:
            value = _get(values, info.key, _MISSING)
            if value is not _MISSING:
                _set(full, info.key, value)
        return full

    # building ---------------------------------------------------------------------------
    def _device_options(self, current: Any) -> list[tuple[str, str]]:
        devices = self._devices if self._devices is not None else available_devices()
        options = [(d.label, d.value) for d in devices]
        if isinstance(current, str) and current not in {value for _, value in options}:
            options.append((current, current))  # e.g. "cuda" or a GPU this machine lacks
        return options

    def _make_input(self, info: FieldInfo, value: Any) -> Widget:
        wid = field_id(info.key)
        if info.kind == "device":
            return Select(self._device_options(value), value=value, allow_blank=False, compact=True,
                          id=wid, classes="field-input")
        if info.kind == "choice":
            choices = _choices(info)
            return Select([(str(c), c) for c in choices], value=value if value in choices else choices[0],
                          allow_blank=False, compact=True, id=wid, classes="field-input")
        if info.kind == "bool":
            return Checkbox("", bool(value), compact=True, id=wid, classes="field-input")
        input_type = {"int": "integer", "float": "number"}.get(info.kind, "text")
        placeholder = {"list_str": "comma-separated names", "json": "JSON value"}.get(info.kind, "")
        return Input(_text(info.kind, value), type=input_type, placeholder=placeholder, compact=True,
                     id=wid, classes="field-input", select_on_focus=False)

    def _as_widget_gives(self, info: FieldInfo, value: Any) -> Any:
        """What `value` reads back as once it is in its field's widget (see value()): a
        choice not on offer becomes the first choice, typed text is parsed, and so on."""
        if info.kind == "choice":
            choices = _choices(info)
            return value if value in choices else choices[0]
        if info.kind == "device":
            return value
        if info.kind == "bool":
            return bool(value)
        return _parse(info.kind, _text(info.kind, value))

    def layout_sections(self) -> dict[str, list[FieldInfo]]:
        """The fields by section in the order they show: the question's main choices first
        (what is frozen, how much, on which device), then the rest of the partition, then an
        ensemble or fusion when the spec has one, then every other section in model order."""
        first = [info for key in QUESTION_KEYS for info in self.fields if info.key == key]
        sections: dict[str, list[FieldInfo]] = {QUESTION: first} if first else {}
        for info in self.fields:
            if info not in first:
                sections.setdefault(info.section, []).append(info)
        leading = [QUESTION, "partition", *self._present(sections)]
        return {name: sections[name] for name in [*leading, *sections] if name in sections}

    def _present(self, sections: dict[str, list[FieldInfo]]) -> list[str]:
        return [name for name in ("ensemble", "fusion", "fusion.prune") if name in sections and self._has(name)]

    def opened_first(self) -> list[str]:
        """The sections built and expanded when the form opens: the question's main choices
        and an ensemble or fusion in use. The rest (the partition's finer settings too) start
        closed and are built on first open: every widget built costs time as Compose opens."""
        return [name for name in (QUESTION, *self._present(self._sections)) if name in self._sections]

    def _has(self, section: str) -> bool:
        """Whether the spec uses `section` (an ensemble of 2+ members, a fusion of runs)."""
        if section == "ensemble":
            return (_get(self._initial, "ensemble.members") or 1) > 1
        return bool(_get(self._initial, "fusion.runs"))

    @staticmethod
    def _section_dom_id(section: str) -> str:
        return f"section-{section.replace('.', '-') or 'general'}"

    @staticmethod
    def _title(section: str) -> str:
        return {QUESTION: "what is frozen, where it runs", GENERAL: "experiment"}.get(section, section)

    def compose(self) -> ComposeResult:
        opened = self.opened_first()
        for section in self._sections:
            if section and section != QUESTION:
                self._messages[section] = None  # a section's problems: under its title, or its line in the list
        for section in opened:
            yield self._heading(section)
            yield self._section_body(section)
        # One widget for all the closed sections: a title line each cost as much as a field.
        closed = [Option(self._closed_line(section), id=self._section_dom_id(section))
                  for section in self._sections if section not in opened]
        yield OptionList(*closed, id="form-sections", markup=False)
        message = Static("", classes="section-error", id="form-error", markup=False)
        self._messages[GENERAL] = message
        yield message

    def _heading(self, section: str) -> SectionTitle:
        return SectionTitle(self._title(section), section, expanded=True, problems=self._problems.get(section, ""),
                            id=self._section_dom_id(section))

    def _closed_line(self, section: str) -> Content:
        line = Content(f"▶ {self._title(section)}")
        problems = self._problems.get(section)
        return Content.assemble(line, "\n", (problems, "$text-error")) if problems else line

    def _section_body(self, section: str) -> Widget:
        """The widgets of one section's fields (label and input, help line, error line),
        filled from the values kept for them until now."""
        self._built.add(section)
        rows: list[Widget] = []
        for info in self._sections[section]:
            widget = self._make_input(info, self._kept[info.key])
            widget.tooltip = info.description or None
            self._inputs[info.key] = widget
            label = Label(info.name, classes="field-label")
            label.tooltip = info.description or None
            rows.append(Horizontal(label, widget, classes="field-row"))
            if self._show_help and info.description:
                rows.append(Static(info.description, classes="field-help", markup=False))
            message = Static("", classes="field-error", id=f"error-{field_id(info.key)}", markup=False)
            self._messages[info.key] = message
            rows.append(message)
        return Vertical(*rows, classes="section-body", id=f"{self._section_dom_id(section)}-body")

    def build_section(self, section: str) -> SectionTitle:
        """Build the fields of `section` (once: it leaves the list of closed sections and
        takes its place among the open ones, in layout order), and open it."""
        if section in self._built:
            heading = self.query_one(f"#{self._section_dom_id(section)}", SectionTitle)
            heading.expanded = True
            return heading
        order = list(self._sections)
        later = [s for s in order[order.index(section) + 1:] if s in self._built]
        anchor = self.query_one(f"#{self._section_dom_id(later[0])}") if later else self.query_one("#form-sections")
        heading = self._heading(section)
        self.mount(heading, self._section_body(section), before=anchor)
        closed = self.query_one("#form-sections", OptionList)
        closed.remove_option(self._section_dom_id(section))
        closed.display = closed.option_count > 0
        self._schedule_recheck()  # the new fields' own error lines
        return heading

    @on(OptionList.OptionSelected, "#form-sections")
    def _open_closed(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        section = next(s for s in self._sections if self._section_dom_id(s) == event.option.id)
        self.build_section(section).focus()

    def on_section_title_toggled(self, event: SectionTitle.Toggled) -> None:
        event.stop()
        self.query_one(f"#{self._section_dom_id(event.title.section)}-body").display = event.title.expanded

    def on_mount(self) -> None:
        self.refresh_errors()

    # reading and writing ----------------------------------------------------------------
    def widget_for(self, key: str) -> Widget:
        """The input of `key`; its section is built and expanded first if it was not (the
        widget is mounted by the next pause of the event loop)."""
        if key not in self._inputs and key in self._section_of:
            self.build_section(self._section_of[key])
        return self._inputs[key]

    @property
    def keys(self) -> list[str]:
        return [info.key for info in self.fields]

    def value(self) -> dict[str, Any]:
        """The form's values as a nested dict (not validated: see errors())."""
        tree: dict[str, Any] = {}
        for info in self.fields:
            widget = self._inputs.get(info.key)
            if widget is None or not widget.is_mounted:
                value = self._kept[info.key]
            elif isinstance(widget, Select):
                value = widget.value
                value = None if value is Select.NULL else value
            elif isinstance(widget, Checkbox):
                value = widget.value
            else:
                value = _parse(info.kind, widget.value)  # type: ignore[attr-defined]
            _set(tree, info.key, value)
        return tree

    def spec(self) -> BaseModel:
        """The validated spec; raises pydantic's ValidationError when the form has errors."""
        return self.model.model_validate(self.value())

    def errors(self) -> dict[str, str]:
        """{dotted key: message} for every problem; a whole-section problem (e.g. nesterov
        without momentum) is keyed by the section, a whole-form one by ""."""
        try:
            self.model.model_validate(self.value())
        except ValidationError as exc:
            found: dict[str, str] = {}
            for error in exc.errors():
                key = ".".join(str(part) for part in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                # a field's own value helps; a section's or the whole spec's is a wall of JSON
                if error["type"] not in ("extra_forbidden", "missing") and not isinstance(error.get("input", {}), dict):
                    message += f" (got {json.dumps(error['input'], default=str)})"
                found.setdefault(key, message)
            return found
        return {}

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill every field named in `values` (a nested dict, e.g. a resolved spec's dump)."""
        self._loading = True
        try:
            for info in self.fields:
                value = _get(values, info.key, _MISSING)
                if value is _MISSING:
                    continue
                self._kept[info.key] = self._as_widget_gives(info, value)
                widget = self._inputs.get(info.key)
                if widget is None:
                    continue
                if isinstance(widget, Select):
                    if info.kind == "device":
                        widget.set_options(self._device_options(value))
                    widget.value = value
                elif isinstance(widget, Checkbox):
                    widget.value = bool(value)
                else:
                    widget.value = _text(info.kind, value)  # type: ignore[attr-defined]
        finally:
            self._loading = False
        self.refresh_errors()

    def refresh_errors(self) -> dict[str, str]:
        """Show each error under its field (or its section, for a field not built yet or a
        whole-section problem); clear the rest. Returns them."""
        errors = self.errors()
        shown: dict[str, str] = {key: "" for key in self._messages}
        for key, message in errors.items():
            target = key
            while target not in self._messages and target:
                target = target.rpartition(".")[0]
            line = message if target == key else f"{key or 'spec'}: {message}"
            shown[target] = f"{shown[target]}\n{line}".strip()
        for key, text in shown.items():
            widget = self._messages[key]
            if widget is None:
                self._show_problems(key, text)
                continue
            widget.update(text)
            widget.set_class(bool(text), "-shown")
        return errors

    def _show_problems(self, section: str, text: str) -> None:
        """A section's problems under its title, or on its line in the list of closed ones."""
        if self._problems.get(section, "") == text:
            return
        self._problems[section] = text
        if section in self._built:
            self.query_one(f"#{self._section_dom_id(section)}", SectionTitle).problems = text
        else:
            self.query_one("#form-sections", OptionList).replace_option_prompt(
                self._section_dom_id(section), self._closed_line(section))

    # events -----------------------------------------------------------------------------
    def _schedule_recheck(self) -> None:
        """Validate once for a burst of changes: every field posts a Changed as it mounts,
        and validating the whole spec per field made opening the form slow."""
        if not self._recheck_due:
            self._recheck_due = True
            self.call_later(self._recheck)

    def _recheck(self) -> None:
        self._recheck_due = False
        errors = self.refresh_errors()
        self.post_message(self.Changed(self, errors))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._schedule_recheck()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._schedule_recheck()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._schedule_recheck()


_MISSING = object()

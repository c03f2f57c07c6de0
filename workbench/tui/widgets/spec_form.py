"""A form for an experiment spec, built from the pydantic models themselves.

Every leaf field of `ExperimentSpec` (recursing into its sections, as
`engine.spec.settable_keys` does) gets an input chosen from its type: `Literal[...]` (or a
registry of names, engine/registry.py) a
Select of the allowed values, `bool` a checkbox, int/float/str an Input (typed where
Textual can), `list[str]` a comma-separated Input, `device` a Select of the devices this
machine has, anything else an Input that takes JSON. A field added to the models shows up
here with no change to this file. Each field's pydantic `description` is its tooltip and
a dim help line; the validation message for a field is shown under it on every change.
"""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Collapsible, Input, Label, Select, Static

from engine.registry import choices as registered_choices
from engine.spec import ExperimentSpec, apply_override
from workbench.tui.devices import DeviceChoice, available_devices

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
    leaves: list[FieldInfo] = []
    sections: list[FieldInfo] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        if _is_section(field.annotation):
            sections += form_fields(field.annotation, f"{key}.")
        else:
            leaves.append(
                FieldInfo(key, prefix.rstrip(".") or GENERAL, name, _kind(key, field.annotation),
                          field.annotation, field.description or "", field)
            )
    return leaves + sections


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
    SpecForm { height: auto; }
    SpecForm Collapsible { padding-bottom: 0; }
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
        self._messages: dict[str, Static] = {}
        self._loading = False

    def _lenient_defaults(self, values: dict[str, Any]) -> dict[str, Any]:
        """Defaults of the model with `values` laid over them (values need not be valid)."""
        try:
            full = self.model.model_validate({}).model_dump(mode="json")
        except ValidationError:  # a model with required fields: those start empty
            full = {}
        for info in self.fields:
            value = _get(values, info.key, _MISSING)
            if value is not _MISSING:
                full = apply_override(full, info.key, value)
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

    def layout_sections(self) -> dict[str, list[FieldInfo]]:
        """The fields by section in the order they show: the question's main choices first
        (what is frozen, how much, on which device), then the rest of the partition, then an
        ensemble or fusion when the spec has one, then every other section in model order."""
        first = [info for key in QUESTION_KEYS for info in self.fields if info.key == key]
        sections: dict[str, list[FieldInfo]] = {QUESTION: first} if first else {}
        for info in self.fields:
            if info not in first:
                sections.setdefault(info.section, []).append(info)
        present = [name for name in ("ensemble", "fusion", "fusion.prune") if name in sections and self._has(name)]
        leading = [QUESTION, "partition", *present]
        return {name: sections[name] for name in [*leading, *sections] if name in sections}

    def _has(self, section: str) -> bool:
        """Whether the spec uses `section` (an ensemble of 2+ members, a fusion of runs)."""
        if section == "ensemble":
            return (_get(self._initial, "ensemble.members") or 1) > 1
        return bool(_get(self._initial, "fusion.runs"))

    def compose(self) -> ComposeResult:
        for section, infos in self.layout_sections().items():
            title = {QUESTION: "what is frozen, where it runs", GENERAL: "experiment"}.get(section, section)
            with Collapsible(title=title, collapsed=False, id=f"section-{section.replace('.', '-') or 'general'}"):
                for info in infos:
                    widget = self._make_input(info, _get(self._initial, info.key))
                    widget.tooltip = info.description or None
                    self._inputs[info.key] = widget
                    with Horizontal(classes="field-row"):
                        label = Label(info.name, classes="field-label")
                        label.tooltip = info.description or None
                        yield label
                        yield widget
                    if self._show_help and info.description:
                        yield Static(info.description, classes="field-help", markup=False)
                    message = Static("", classes="field-error", id=f"error-{field_id(info.key)}", markup=False)
                    self._messages[info.key] = message
                    yield message
                if section and section != QUESTION:
                    message = Static("", classes="section-error", markup=False)
                    self._messages[section] = message
                    yield message
        message = Static("", classes="section-error", id="form-error", markup=False)
        self._messages[GENERAL] = message
        yield message

    def on_mount(self) -> None:
        self.refresh_errors()

    # reading and writing ----------------------------------------------------------------
    def widget_for(self, key: str) -> Widget:
        return self._inputs[key]

    @property
    def keys(self) -> list[str]:
        return [info.key for info in self.fields]

    def value(self) -> dict[str, Any]:
        """The form's values as a nested dict (not validated: see errors())."""
        tree: dict[str, Any] = {}
        for info in self.fields:
            widget = self._inputs[info.key]
            if isinstance(widget, Select):
                value = widget.value
                value = None if value is Select.NULL else value
            elif isinstance(widget, Checkbox):
                value = widget.value
            else:
                value = _parse(info.kind, widget.value)  # type: ignore[attr-defined]
            tree = apply_override(tree, info.key, value)
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
                widget = self._inputs[info.key]
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
        """Show each error under its field (or its section); clear the rest. Returns them."""
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
            widget.update(text)
            widget.set_class(bool(text), "-shown")
        return errors

    # events -----------------------------------------------------------------------------
    def _changed(self) -> None:
        errors = self.refresh_errors()
        self.post_message(self.Changed(self, errors))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._changed()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._changed()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self._changed()


_MISSING = object()

"""Registries: a named choice of the spec (a partition strategy, an optimizer, ...) -> its entry.

Imports no torch. An entry is split in two so that the spec, the CLI and the TUI can know
every allowed name without importing torch:
- its *declaration* (name, one-line description, the settings it reads, its validation),
  made where engine.spec can import it (engine/choices.py for the shipped ones), and
- its *implementation*, attached on the torch side with `implement` (engine/strategies/,
  engine/optimizers.py, ...).

A spec field typed `registry.field_type()` accepts exactly the declared names, shows them
as the JSON schema's enum and the Compose form's choices, and dumps as the plain string it
always was, so the digests of existing specs do not change.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from pydantic import GetJsonSchemaHandler, PlainValidator
from pydantic_core import PydanticCustomError, core_schema


@dataclass(frozen=True)
class Declaration:
    """The torch-free half of an entry."""

    name: str
    description: str  # one line: `--help`, the Compose form and the JSON schema show it
    reads: tuple[str, ...] = ()  # the section's settings it uses (tables show only these)
    # Raises ValueError (one sentence) when the section's other settings do not suit it.
    check: Callable[[Any], None] | None = None


class Registry:
    """Declarations and implementations of one kind of choice, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # the spec key it fills, e.g. "partition.strategy": names it in errors
        self._declared: dict[str, Declaration] = {}
        self._implemented: dict[str, Any] = {}

    def declare(
        self, name: str, description: str, reads: tuple[str, ...] = (), check: Callable[[Any], None] | None = None
    ) -> Declaration:
        if name in self._declared:
            raise ValueError(f"{self.kind} {name!r} is declared twice")
        self._declared[name] = Declaration(name, description, reads, check)
        return self._declared[name]

    def implement(self, name: str, implementation: Any) -> Any:
        """Attach the implementation of a declared name; returns it, so it works as a decorator's body."""
        if name not in self._declared:
            raise ValueError(f"{self.kind} {name!r} has no declaration; declare it first")
        self._implemented[name] = implementation
        return implementation

    def remove(self, name: str) -> None:
        """Forget `name` (a test's own entry, once the test is done)."""
        self._declared.pop(name, None)
        self._implemented.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._declared)

    def __contains__(self, name: object) -> bool:
        return name in self._declared

    def __getitem__(self, name: str) -> Declaration:
        return self._declared[name]

    def implementation(self, name: str) -> Any:
        if name not in self._implemented:
            raise ValueError(f"{self.kind} {name!r} has no implementation; known: {', '.join(self._implemented)}")
        return self._implemented[name]

    def allowed(self) -> str:
        """The names as pydantic words a Literal's error: `'a', 'b' or 'c'`."""
        quoted = [repr(name) for name in self.names]
        return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"

    def help(self, skip: tuple[str, ...] = ()) -> str:
        """`name: description` for each entry (less `skip`), for `--help` and field descriptions."""
        return "; ".join(f"{d.name}: {d.description}" for d in self._declared.values() if d.name not in skip) + "."

    def choice_enum(self, name: str, skip: tuple[str, ...] = ()) -> type[enum.Enum]:
        """The names (less `skip`) as a str Enum: a typer option of this type lists them in
        `--help` and refuses any other value with exit code 2."""
        return enum.Enum(name, {n: n for n in self.names if n not in skip}, type=str)  # type: ignore[return-value]

    def check(self, name: str, section: Any) -> None:
        """The entry's own validation of the section that chose it."""
        declaration = self._declared[name]
        if declaration.check is not None:
            declaration.check(section)

    def field_type(self) -> Any:
        """A pydantic type for a field holding one of the names: validated against the registry
        at validation time (so later registrations count), the names as the schema's enum.

        The annotation stays `Literal[<the names declared so far>]` (what the field held before
        registries, and what readers of the models see); the validator, not the Literal, decides."""

        def known(value: Any) -> str:
            if not isinstance(value, str) or value not in self._declared:
                # The same words and error type as a Literal field, so messages stay as they were.
                raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": self.allowed()})
            return value

        return Annotated[Literal[tuple(self.names)], PlainValidator(known, json_schema_input_type=str), _Choices(self)]


@dataclass(frozen=True)
class _Choices:
    """Field metadata: the registry whose names the field takes (the schema and the form read it)."""

    registry: Registry

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["enum"] = self.registry.names
        # One description per name, in enum order (editors such as VS Code show them as completions).
        json_schema["enumDescriptions"] = [self.registry[name].description for name in self.registry.names]
        return json_schema


def choices(field: Any) -> list[Any] | None:
    """The allowed values of a pydantic field that holds a registered name, else None."""
    for meta in getattr(field, "metadata", ()):
        if isinstance(meta, _Choices):
            return meta.registry.names
    return None

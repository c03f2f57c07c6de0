"""Which runs a typed filter selects (the Runs screen's `/`).

Words are ANDed, case aside. A plain word is looked for in the run's id, experiment, status,
device and tags. A word `FIELD:VALUE` looks in one field only:
  tag:T      a tag equal to T            exp:X     experiment name containing X
  status:S   status starting with S      host:H    host name containing H
An unknown prefix (`lr:0.1`) is a plain word, so text with a colon still finds what it did.
"""

from __future__ import annotations

from typing import Any, Callable

from workbench.tags import has_tags

FIELDS: dict[str, Callable[[dict[str, Any], str], bool]] = {
    "tag": lambda record, value: has_tags(record, [value]),
    "exp": lambda record, value: value in str(record.get("experiment") or "").lower(),
    "status": lambda record, value: str(record.get("status") or "").startswith(value),
    "host": lambda record, value: value in str(record.get("host") or "").lower(),
}
PLAIN = ("run_id", "experiment", "status", "device")


def word_matches(record: dict[str, Any], word: str) -> bool:
    """Whether one lowercase word of a filter selects `record`."""
    field, colon, value = word.partition(":")
    if colon and field in FIELDS and value:
        return FIELDS[field](record, value)
    haystack = " ".join([*(str(record.get(k) or "") for k in PLAIN), *(record.get("tags") or ())]).lower()
    return word in haystack


def matches(record: dict[str, Any], text: str = "", status: str = "all") -> bool:
    """Whether a run passes the filter: `status` exactly (unless "all"), and every word of
    `text` (see the module's doc)."""
    if status != "all" and record.get("status") != status:
        return False
    return all(word_matches(record, word) for word in text.lower().split())

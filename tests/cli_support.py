"""Assertions shared by the CLI tests."""

from __future__ import annotations


def assert_clean_exit(result, code: int) -> None:
    """The exit code, reached by a deliberate exit rather than an escaped exception."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stdout + result.stderr

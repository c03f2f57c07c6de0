"""Screens of the workbench TUI."""

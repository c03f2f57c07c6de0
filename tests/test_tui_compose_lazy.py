"""The Compose form builds only the sections shown first; the others are built on first open,
keep their values until then, and still show their problems while closed."""

from __future__ import annotations

from textual.widgets import Input

from engine.spec import ExperimentSpec
from workbench.tui.spec_form import SpecForm, field_id
from workbench.tui.widgets.section_title import SectionTitle

from test_tui_compose import DEVICES
from tui_support import FormHost, sync


@sync
async def test_closed_sections_are_built_on_first_open_and_keep_their_values():
    form = SpecForm({"optimizer": {"lr": 0.125}, "train": {"steps": 7}}, devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = pilot.app.screen
        assert form.opened_first() == ["question"]
        assert screen.query(f"#{field_id('partition.strategy')}") and screen.query(f"#{field_id('device')}")
        assert not screen.query(f"#{field_id('optimizer.lr')}")  # a closed section has no widgets yet
        # its values are there all the same
        assert form.value()["optimizer"]["lr"] == 0.125 and form.value()["train"]["steps"] == 7
        assert form.errors() == {}

        title = screen.query_one("#section-optimizer", SectionTitle)
        assert str(title.render()).startswith("▶ optimizer")
        title.focus()
        await pilot.press("enter")
        await pilot.pause()
        lr = screen.query_one(f"#{field_id('optimizer.lr')}", Input)
        assert lr.value == "0.125" and lr.region.height > 0 and str(title.render()).startswith("▼ optimizer")
        assert form.value()["optimizer"]["lr"] == 0.125

        await pilot.press("enter")  # closed again: hidden, not thrown away
        await pilot.pause()
        assert lr.region.height == 0 and form.value()["optimizer"]["lr"] == 0.125
        assert form.value() == ExperimentSpec.model_validate(form.value()).model_dump(mode="json")


@sync
async def test_a_problem_in_a_closed_section_shows_under_its_title():
    form = SpecForm(devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        form.set_values({"optimizer": {"lr": -1}})  # e.g. copied from an experiment
        await pilot.pause()
        title = pilot.app.screen.query_one("#section-optimizer", SectionTitle)
        assert "optimizer.lr" in form.errors() and not pilot.app.screen.query(f"#{field_id('optimizer.lr')}")
        assert "optimizer.lr: Input should be greater than 0" in str(title.render())
        form.set_values({"optimizer": {"lr": 0.1}})
        await pilot.pause()
        assert str(title.render()) == "▶ optimizer" and form.errors() == {}

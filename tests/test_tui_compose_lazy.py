"""The Compose form builds only the sections shown first; the others are lines of one list,
built and opened in their place on enter, keeping their values until then and showing
their problems while closed."""

from __future__ import annotations

from textual.widgets import Input, OptionList

from engine.spec import ExperimentSpec
from workbench.tui.spec_form import SpecForm, field_id
from workbench.tui.widgets.section_title import SectionTitle

from test_tui_compose import DEVICES
from tui_support import FormHost, sync


def closed_lines(screen) -> list[str]:
    listed = screen.query_one("#form-sections", OptionList)
    return [str(listed.get_option_at_index(i).prompt) for i in range(listed.option_count)]


@sync
async def test_closed_sections_are_built_on_first_open_and_keep_their_values():
    form = SpecForm({"optimizer": {"lr": 0.125}, "train": {"steps": 7}}, devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = pilot.app.screen
        assert form.opened_first() == ["question"]
        assert screen.query(f"#{field_id('partition.strategy')}") and screen.query(f"#{field_id('device')}")
        assert not screen.query(f"#{field_id('optimizer.lr')}")  # a closed section has no widgets yet
        assert closed_lines(screen)[:3] == ["▶ partition", "▶ experiment", "▶ data"]
        # its values are there all the same
        assert form.value()["optimizer"]["lr"] == 0.125 and form.value()["train"]["steps"] == 7
        assert form.errors() == {}

        listed = screen.query_one("#form-sections", OptionList)
        listed.focus()
        listed.highlighted = listed.get_option_index("section-optimizer")
        await pilot.press("enter")
        await pilot.pause()
        lr = screen.query_one(f"#{field_id('optimizer.lr')}", Input)
        title = screen.query_one("#section-optimizer", SectionTitle)
        assert lr.value == "0.125" and lr.region.height > 0 and str(title.render()) == "▼ optimizer"
        assert pilot.app.focused is title and "▶ optimizer" not in closed_lines(screen)
        assert title.region.y < listed.region.y  # opened in its place: above the closed ones
        assert form.value()["optimizer"]["lr"] == 0.125

        await pilot.press("enter")  # closed again: hidden, not thrown away
        await pilot.pause()
        assert lr.region.height == 0 and str(title.render()) == "▶ optimizer" and form.value()["optimizer"]["lr"] == 0.125
        await pilot.press("space")
        await pilot.pause()
        assert lr.region.height > 0
        form.widget_for("partition.layers")  # a section before it: built above it
        await pilot.pause()
        assert screen.query_one("#section-partition").region.y < title.region.y
        assert form.value() == ExperimentSpec.model_validate(form.value()).model_dump(mode="json")


@sync
async def test_a_problem_in_a_closed_section_shows_on_its_line():
    form = SpecForm(devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        form.set_values({"optimizer": {"lr": -1}})  # e.g. copied from an experiment
        await pilot.pause()
        screen = pilot.app.screen
        assert "optimizer.lr" in form.errors() and not screen.query(f"#{field_id('optimizer.lr')}")
        [line] = [line for line in closed_lines(screen) if line.startswith("▶ optimizer")]
        assert "optimizer.lr: Input should be greater than 0" in line
        form.build_section("optimizer")  # opened: the problem moves to its field
        await pilot.pause()
        assert "greater than 0" in str(screen.query_one(f"#error-{field_id('optimizer.lr')}").render())
        form.set_values({"optimizer": {"lr": 0.1}})
        await pilot.pause()
        assert form.errors() == {} and str(screen.query_one(f"#error-{field_id('optimizer.lr')}").render()) == ""

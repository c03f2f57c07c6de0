"""The Compose form offers elastic freezing, EASGD coupling and soft weight sharing, from the models."""

from __future__ import annotations

from textual.widgets import Select

from test_tui_compose import DEVICES, _type_into
from tui_support import FormHost, sync
from workbench.tui.spec_form import SpecForm


@sync
async def test_form_offers_elastic_freezing_coupling_and_the_weight_prior():
    form = SpecForm(devices=DEVICES)
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        choices = lambda key: [v for _, v in form.widget_for(key)._options if v is not Select.NULL]  # noqa: E731
        assert choices("ensemble.coupling.mode") == ["none", "easgd"]
        assert choices("regularizer.name") == ["none", "soft_weight_sharing"]
        assert choices("regularizer.on") == ["subset", "all"]
        await _type_into(pilot, form.widget_for("freeze"), '{"mode": "elastic", "rho": -2}')
        assert "rho" in form.errors()["freeze"]
        await _type_into(pilot, form.widget_for("freeze"), '{"mode": "elastic", "rho": 2}')
        form.widget_for("regularizer.name").value = "soft_weight_sharing"
        await _type_into(pilot, form.widget_for("regularizer.components"), "1")
        assert "regularizer.components" in form.errors()
        await _type_into(pilot, form.widget_for("regularizer.components"), "8")
        assert form.errors() == {}
        spec = form.spec()
        assert spec.elastic.rho == 2 and spec.regularizer.components == 8

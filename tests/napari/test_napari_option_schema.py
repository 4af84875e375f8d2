"""The reconstruct widget agrees with the option schema (:mod:`mrisr.reconstruct.options`): a widget
per option (or the option named as left out), the schema's defaults, choices, bounds and help."""

from __future__ import annotations

import pytest
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox

from mrisr.reconstruct import ReconstructOptions
from mrisr.reconstruct.options import DEVICES, option_bounds, option_choices, option_default, option_help


@pytest.fixture
def widget(make_napari_viewer):
    from mrisr.napari._reconstruct import ReconstructWidget

    return ReconstructWidget(make_napari_viewer())


def test_every_option_has_a_widget_with_the_schema_default_and_help(widget):
    from mrisr.napari._reconstruct import NOT_SHOWN

    shown = [name for name in ReconstructOptions.model_fields if name not in NOT_SHOWN]
    for name in shown:
        field = getattr(widget, name)
        assert isinstance(field, CheckBox | ComboBox | FloatSpinBox), name
        assert field.tooltip == option_help(name), name
        if name != "factor":  # its "auto" (None) is the spin box's 0
            assert field.value == option_default(name), name
        if option_choices(name):
            assert tuple(field.choices) == option_choices(name), name
    assert tuple(widget.device.choices) == DEVICES
    # the widget's defaults are the library's defaults
    assert widget.options() == ReconstructOptions()


def test_spin_boxes_stop_at_the_schema_bounds(widget):
    from mrisr.napari._reconstruct import FACTOR_AUTO

    low, _, high = option_bounds("factor")
    assert (widget.factor.value, widget.factor.min, widget.factor.max) == (FACTOR_AUTO, FACTOR_AUTO, high)
    assert widget.options().factor is None
    widget.factor.value = low
    assert widget.options().factor == low
    low, included, high = option_bounds("finetune_minutes")
    assert widget.finetune_minutes.max == high
    assert widget.finetune_minutes.min > low and not included
    widget.finetune_minutes.value = high
    assert widget.options().finetune_minutes == high

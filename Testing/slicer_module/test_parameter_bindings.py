"""Our side of the contract with Slicer's parameter-node GUI connectors, which no test here can run.

Slicer binds each widget with a ``SlicerParameterName`` in the ``.ui`` file to the parameter node field of
that name. Its slider connector accepts only a bounded number: a bare ``float`` on a ``ctkSliderWidget``
raises, and ``connectGui`` then binds nothing at all (``Base/Python/slicer/parameterNodeWrapper/
guiConnectors.py``, Slicer v5.12.3 line 380, v5.6.2 line 319; the Scripted module template declares
``Annotated[float, WithinRange(...)]``, ``Utilities/Templates/Modules/Scripted/TemplateKey.py`` v5.12.3).
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ElementTree
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "UNETRPPSegment"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "UNETRPPSegment.ui"
SLIDERS = {"ctkSliderWidget", "QSlider", "ctkDoubleSlider", "qMRMLSliderWidget"}


def _bound_widgets() -> dict[str, tuple[str, dict[str, float]]]:
    """Parameter name -> (widget class, numeric properties) for every widget the .ui binds."""
    bound = {}
    for widget in ElementTree.parse(UI_FILE).getroot().iter("widget"):
        properties = {p.get("name"): p for p in widget.findall("property")}
        name = properties.get("SlicerParameterName")
        if name is None:
            continue
        numbers = {
            key: float(element[0].text)
            for key, element in properties.items()
            if len(element) and element[0].tag in ("double", "number")
        }
        bound[name.findtext("string")] = (widget.get("class"), numbers)
    return bound


def _parameter_fields() -> dict[str, ast.expr]:
    tree = ast.parse((MODULE_DIR / "UNETRPPSegment.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "UNETRPPSegmentParameterNode":
            return {
                item.target.id: item.annotation
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
    raise AssertionError("no UNETRPPSegmentParameterNode class in UNETRPPSegment.py")


def _within_range(annotation: ast.expr) -> tuple[str, float, float] | None:
    """(type name, low, high) of ``Annotated[T, WithinRange(low, high)]``, else None."""
    if not (isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated"):
        return None
    base, *extras = annotation.slice.elts
    for extra in extras:
        if isinstance(extra, ast.Call) and getattr(extra.func, "id", "") == "WithinRange":
            low, high = (ast.literal_eval(argument) for argument in extra.args)
            return base.id, float(low), float(high)
    return None


def test_every_bound_widget_has_a_parameter_field():
    fields = _parameter_fields()
    bound = _bound_widgets()
    assert bound, "the .ui binds no widget"
    assert set(bound) <= set(fields), f"widgets bound to no parameter: {set(bound) - set(fields)}"


def test_every_slider_parameter_is_bounded_like_its_slider():
    fields = _parameter_fields()
    sliders = {name: numbers for name, (cls, numbers) in _bound_widgets().items() if cls in SLIDERS}
    assert "overlap" in sliders
    for name, numbers in sliders.items():
        bounded = _within_range(fields[name])
        assert bounded is not None, f"{name}: a slider needs Annotated[float, WithinRange(...)]"
        type_name, low, high = bounded
        assert type_name == "float"
        assert (low, high) == (numbers["minimum"], numbers["maximum"]), f"{name}: bounds differ from the .ui"


def test_every_widget_the_module_uses_is_in_the_ui_file():
    """``self.ui.<name>`` comes from ``slicer.util.childWidgetVariables``: a name missing from the .ui is
    an AttributeError only when that line runs inside Slicer."""
    tree = ast.parse((MODULE_DIR / "UNETRPPSegment.py").read_text(encoding="utf-8"))
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    names = {widget.get("name") for widget in ElementTree.parse(UI_FILE).getroot().iter("widget")}
    assert "openEditorButton" in used
    assert used <= names, f"not in {UI_FILE.name}: {sorted(used - names)}"

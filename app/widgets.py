"""Widgets generated from a stage's config schema, two-way bound to ``calib.<stage>.<path>`` keys.

Every leaf of a stage's ``Config`` dataclass (declared with
:func:`calib_core.config.base.opt`) becomes one widget.  The field's type and
metadata choose the widget and its limits, so no bound or choice list is
re-stated here:

=====================  ============================================
field                  widget
=====================  ============================================
``bool``               :class:`panel.widgets.Checkbox`
``choices`` (scalar)   :class:`panel.widgets.Select`
``choices`` (list)     :class:`panel.widgets.MultiChoice`
``int``                :class:`panel.widgets.IntInput`
``float``              :class:`panel.widgets.FloatInput`
``int | None``, ...     :class:`panel.widgets.TextInput`, YAML scalar (empty = null)
``list``               :class:`panel.widgets.TextInput`, YAML flow list
``str``                :class:`panel.widgets.TextInput`
anything else          :class:`panel.widgets.TextInput`, YAML scalar
=====================  ============================================

A nullable field accepts an empty input as ``null``.  Values typed in a text
field are parsed as YAML, exactly like a Hydra override on the command line.

Binding: a widget change calls :meth:`spectramind_app.state.AppState.set_key`, which
validates the whole profile with the engine; a refused value is reverted in
the widget and the engine's one-line message is shown.  The numeric boxes get no
``start``/``end`` of their own: the browser would silently clamp or drop an
out-of-range number before the server sees it, so every value goes to the server,
which judges it with the schema's bounds (shown in each box's tooltip) and says why
it refuses one.  When the profile is
replaced (another profile or an uploaded YAML), :meth:`StageForm.refresh`
writes the profile's values back into the widgets.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import panel as pn
import yaml

if TYPE_CHECKING:  # pragma: no cover
    from .state import AppState

__all__ = ["COMMON_SECTIONS", "FieldSpec", "StageForm", "field_specs", "format_value", "parse_value",
           "widget_css_class"]

#: sections every stage has (``calib_core.config.base.StageConfig``); shown in a collapsed card
COMMON_SECTIONS = ("io", "validation", "logging", "cache")

_EMPTY = ""


@dataclass(frozen=True)
class FieldSpec:
    """How one config leaf is edited.

    Attributes
    ----------
    key : str
        Dotted path inside the stage section, e.g. ``"pairing.window_s"``.
    kind : str
        ``bool``, ``choice``, ``multichoice``, ``int``, ``float``, ``list``, ``text`` or ``yaml``.
    doc, unit : str
        The field's documentation and physical unit (may be empty).
    choices : tuple or None
        Allowed values.
    start, end : float or None
        The schema's numeric limits (``ge``/``gt`` and ``le``/``lt``); the engine enforces them on the server.
    bounds : str
        The limits as text, e.g. ``"> 0"`` or ``">= 1 and <= 100000"`` (shown in the tooltip).
    nullable : bool
        Whether ``null`` is allowed.
    """

    key: str
    kind: str
    doc: str = ""
    unit: str = ""
    choices: tuple | None = None
    start: float | None = None
    end: float | None = None
    nullable: bool = False
    bounds: str = ""

    @property
    def section(self) -> str:
        """The sub-section path (``""`` for a top-level field of the stage)."""
        return self.key.rpartition(".")[0]

    @property
    def label(self) -> str:
        """Leaf name with its unit, e.g. ``window_s [s]``."""
        leaf = self.key.rpartition(".")[2]
        return f"{leaf} [{self.unit}]" if self.unit else leaf


def _kind(hint: Any, meta: dict, value: Any) -> str:
    """The widget kind of a field from its resolved type hint (``typing.get_type_hints``) and metadata."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = typing.get_origin(hint) or hint
    if base in (typing.Union, types.UnionType) and len(args) == 1:      # Optional[X] / X | None
        hint = args[0]
        base = typing.get_origin(hint) or hint
        if base in (int, float) and meta.get("choices") is None:
            # a number box cannot show null (Bokeh draws NaN once it held a value): a text box, empty = null
            return "yaml"
    if meta.get("choices") is not None:
        return "multichoice" if base in (list, tuple) or isinstance(value, list) else "choice"
    if base in (bool, int, float):
        return base.__name__
    if base in (list, tuple):
        return "list"
    if base is str:
        return "text"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "list"
    return "yaml"


def _walk(schema: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any, Any]]:
    """``(dotted key, field, resolved type hint, default)`` of every leaf, in declaration order."""
    hints = typing.get_type_hints(schema)
    defaults = schema()
    out = []
    for f in dataclasses.fields(schema):
        value = getattr(defaults, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            out.extend(_walk(type(value), key))
        else:
            out.append((key, f, hints[f.name], value))
    return out


def field_specs(schema: type) -> list[FieldSpec]:
    """Describe every leaf of a stage config dataclass, in declaration order.

    Parameters
    ----------
    schema : type
        The stage's ``Config`` dataclass.

    Returns
    -------
    list of FieldSpec
    """
    specs = []
    for key, f, hint, value in _walk(schema):
        meta = dict(f.metadata)
        low = meta.get("ge") if meta.get("ge") is not None else meta.get("gt")
        high = meta.get("le") if meta.get("le") is not None else meta.get("lt")
        bounds = " and ".join(f"{op} {meta[name]:g}" for name, op in (("gt", ">"), ("ge", ">="), ("lt", "<"),
                                                                       ("le", "<=")) if meta.get(name) is not None)
        specs.append(FieldSpec(key=key, kind=_kind(hint, meta, value), doc=meta.get("doc") or "",
                               unit=meta.get("unit") or "", choices=meta.get("choices"), start=low, end=high,
                               nullable=bool(meta.get("nullable")), bounds=bounds))
    return specs


def format_value(spec: FieldSpec, value: Any) -> Any:
    """The widget value that shows config value ``value``."""
    if spec.kind in ("list", "yaml"):
        if value is None:
            return _EMPTY
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    if spec.kind == "text":
        return _EMPTY if value is None else str(value)
    if spec.kind == "multichoice":
        return list(value or [])
    return value


def parse_value(spec: FieldSpec, widget_value: Any) -> Any:
    """The config value a widget value stands for.

    Raises
    ------
    ValueError
        The text is not valid YAML, or not a list where a list is expected.
    """
    if spec.kind in ("list", "yaml", "text"):
        text = (widget_value or "").strip()
        if not text:
            return None if spec.nullable or spec.kind != "text" else ""
        if spec.kind == "text":
            return text
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML ({str(exc).splitlines()[0]})") from None
        if spec.kind == "list" and not isinstance(value, list):
            raise ValueError("must be a list, e.g. [1, 2]")
        return value
    if widget_value is None:
        return None
    if spec.kind == "float":
        return float(widget_value)
    if spec.kind == "int":
        return int(widget_value)
    if spec.kind == "multichoice":
        return list(widget_value)
    return widget_value


def _make_widget(spec: FieldSpec, value: Any, css: str) -> pn.widgets.Widget:
    kwargs: dict[str, Any] = {}
    if spec.kind == "bool":
        cls, kwargs["value"] = pn.widgets.Checkbox, bool(value)
    elif spec.kind == "choice":
        options = {str(c): c for c in spec.choices}
        cls, kwargs["options"], kwargs["value"] = pn.widgets.Select, (
            {"(none)": None, **options} if spec.nullable else options), value
    elif spec.kind == "multichoice":
        cls, kwargs["options"], kwargs["value"] = pn.widgets.MultiChoice, list(spec.choices), format_value(spec, value)
    elif spec.kind in ("int", "float"):
        # no start/end: the browser would stop an out-of-range value unseen; the server refuses it visibly
        cls = pn.widgets.IntInput if spec.kind == "int" else pn.widgets.FloatInput
        kwargs["value"] = value
    else:
        cls = pn.widgets.TextInput
        kwargs["value"] = format_value(spec, value)
        kwargs["placeholder"] = "empty = null" if spec.nullable else ("[a, b]" if spec.kind == "list" else "")
    doc = " ".join(p for p in (spec.doc, f"(allowed: {spec.bounds})" if spec.bounds else "") if p)
    if doc and "description" in cls.param:
        kwargs["description"] = doc
    return cls(label=spec.label, css_classes=["cfg-widget", css], sizing_mode="stretch_width", **kwargs)


def widget_css_class(stage: str, key: str) -> str:
    """The css class of the widget editing ``calib.<stage>.<key>`` (a stable hook for tests)."""
    return f"cfg-{stage}-{key.replace('.', '-').replace('_', '-')}"


class StageForm(pn.viewable.Viewer):
    """All config widgets of one stage, grouped by sub-section and bound to the session's profile.

    Parameters
    ----------
    state : AppState
        The session state holding the profile being edited.
    stage : str
        Stage name (a section ``calib.<stage>`` of the profile).
    """

    def __init__(self, state: "AppState", stage: str, **params: Any):
        super().__init__(**params)
        from calib_core.stages import stage_schema

        self._state = state
        self._stage = stage
        self._specs = field_specs(stage_schema(stage))
        self._syncing = False
        self.widgets: dict[str, pn.widgets.Widget] = {}
        for spec in self._specs:
            w = _make_widget(spec, self._config_value(spec), widget_css_class(stage, spec.key))
            w.param.watch(lambda event, spec=spec: self._on_change(spec, event), "value")
            self.widgets[spec.key] = w
        self._layout = self._build_layout()

    def _config_value(self, spec: FieldSpec) -> Any:
        return self._state.value(f"calib.{self._stage}.{spec.key}")

    def _build_layout(self) -> pn.layout.ListLike:
        groups: dict[str, list] = {}
        for spec in self._specs:
            top = spec.key.split(".")[0] if "." in spec.key else ""
            group = "common" if top in COMMON_SECTIONS else spec.section
            groups.setdefault(group, []).append(self.widgets[spec.key])
        cards = []
        for group, widgets in groups.items():
            if group == "common":
                continue
            if group == "":
                cards.append(pn.Column(*widgets, sizing_mode="stretch_width", margin=(0, 0, 6, 0)))
            else:
                cards.append(pn.Card(*widgets, title=group, collapsed=False, sizing_mode="stretch_width",
                                     margin=(4, 0), css_classes=["cfg-section"]))
        if "common" in groups:
            cards.append(pn.Card(*groups["common"], title="io · validation · logging · cache",
                                 collapsed=True, sizing_mode="stretch_width", margin=(4, 0),
                                 css_classes=["cfg-section"]))
        return pn.Column(*cards, sizing_mode="stretch_width", css_classes=["stage-form"])

    def _on_change(self, spec: FieldSpec, event: Any) -> None:
        if self._syncing:
            return
        full_key = f"calib.{self._stage}.{spec.key}"
        try:
            value = parse_value(spec, event.new)
        except ValueError as exc:
            self._state.report_error(f"{full_key} = {event.new!r}: {exc}")
            self._set_widget(spec, self._config_value(spec))
            return
        if not self._state.set_key(full_key, value):
            self._set_widget(spec, self._config_value(spec))

    def _set_widget(self, spec: FieldSpec, value: Any) -> None:
        self._syncing = True
        try:
            self.widgets[spec.key].value = format_value(spec, value)
        finally:
            self._syncing = False

    def refresh(self) -> None:
        """Write the profile's current values into the widgets (after a profile was loaded)."""
        for spec in self._specs:
            shown = format_value(spec, self._config_value(spec))
            if self.widgets[spec.key].value != shown:
                self._set_widget(spec, self._config_value(spec))

    def __panel__(self) -> pn.layout.ListLike:
        return self._layout

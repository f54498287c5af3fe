"""Plain-dict builders for the few Grafana objects the dashboards use.

Why not grafana-foundation-sdk: the SDK release that pip resolves today targets Grafana 10.1
(schemaVersion 36), gives every panel id 0 and every query refId "", and writes ``"options":
null``; a newer SDK release changes the output, and the drift check would then fail for reasons
that have nothing to do with this repository. Thirty lines of dicts give byte-stable JSON in the
current schema that the tests (and a reviewer) can read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Schema 38, the one Grafana 10.0 writes (table cells as `cellOptions`): Grafana 10.0 and later read
# it as it is. Newer Grafanas migrate it on load to their own schema (39: the timeSeriesTable
# transformation, 40: a non-string `refresh`, 41: the timepicker's `time_options`), and the
# dashboards use none of those, so the migration changes nothing but the number
# (tests/test_dashboards.py checks it on every panel).
SCHEMA_VERSION = 38
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

Panel = dict[str, Any]


def query(expr: str, legend: str = "__auto", *, instant: bool = False, exemplar: bool = False, heatmap: bool = False) -> dict[str, Any]:
    """A Prometheus query of a panel (refIds are assigned by :func:`layout`)."""
    target: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
    }
    if exemplar:
        target["exemplar"] = True
    if heatmap:
        target["format"] = "heatmap"
    return target


def thresholds(*steps: tuple[float | None, str]) -> dict[str, Any]:
    """Absolute threshold steps; the first step's value is None (``-Infinity``)."""
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


@dataclass
class Cell:
    """A panel and the grid cell it occupies (width in 24ths, height in rows of 30 px)."""

    panel: Panel
    width: int = 12
    height: int = 8


@dataclass
class Section:
    """A row header and the panels under it, laid out left to right."""

    title: str
    cells: list[Cell] = field(default_factory=list)


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    minimum: float | None = 0,
    maximum: float | None = None,
    threshold: float | None = None,
    stack: bool = False,
) -> Panel:
    """A time series panel; ``threshold`` draws a red dashed line (the alert threshold)."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if threshold is not None else "off"},
    }
    defaults: dict[str, Any] = {"unit": unit, "custom": custom, "color": {"mode": "palette-classic"}}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    defaults["thresholds"] = thresholds((None, "transparent"), (threshold, "red")) if threshold is not None else thresholds((None, "green"))
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "table", "placement": "right", "calcs": ["mean", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title: str, description: str, target: dict[str, Any], unit: str, steps: dict[str, Any], *, decimals: int | None = None) -> Panel:
    """A single big number, coloured by ``steps``."""
    defaults: dict[str, Any] = {"unit": unit, "thresholds": steps, "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "area",
            "justifyMode": "auto",
            "textMode": "auto",
            "orientation": "auto",
        },
    }


def heatmap(title: str, description: str, target: dict[str, Any], unit: str) -> Panel:
    """A heatmap of a Prometheus histogram's buckets, with its exemplars drawn on top."""
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [target],
        "fieldConfig": {"defaults": {"custom": {"scaleDistribution": {"type": "linear"}}}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "fill": "dark-orange",
                "scale": "exponential",
                "exponent": 0.5,
                "steps": 64,
                "reverse": False,
            },
            "exemplars": {"color": "rgba(0,160,255,0.9)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "unit": unit, "reverse": False},
            "showValue": "never",
        },
    }


def noted(sections: list[Section], note: str) -> list[Section]:
    """The sections, ``note`` appended to every panel's description (e.g. how old its data is)."""
    for section in sections:
        for cell in section.cells:
            cell.panel["description"] = f"{cell.panel['description']} {note}"
    return sections


def layout(sections: list[Section]) -> list[Panel]:
    """Rows and panels with ids, refIds and grid positions, flowing left to right."""
    panels: list[Panel] = []
    y = 0
    next_id = 1
    for section in sections:
        panels.append(
            {
                "type": "row",
                "title": section.title,
                "collapsed": False,
                "id": next_id,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        row_height = 0
        for cell in section.cells:
            if x + cell.width > GRID_WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panel = {"id": next_id, "gridPos": {"h": cell.height, "w": cell.width, "x": x, "y": y}, **cell.panel}
            panel["targets"] = [{**target, "refId": chr(ord("A") + index)} for index, target in enumerate(panel["targets"])]
            panels.append(panel)
            next_id += 1
            x += cell.width
            row_height = max(row_height, cell.height)
        y += row_height
    return panels


def datasource_variable() -> dict[str, Any]:
    """The Prometheus datasource picker every panel refers to."""
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name: str, expr: str, *, label: str | None = None) -> dict[str, Any]:
    """A multi-value label filter, ``All`` by default (matching series without the label too)."""
    return {
        "type": "query",
        "name": name,
        "label": label or name,
        "datasource": DATASOURCE,
        "definition": expr,
        "query": {"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "sort": 1,
        "hide": 0,
    }


def custom_variable(name: str, values: tuple[str, ...], *, label: str, description: str) -> dict[str, Any]:
    """A single-value choice among fixed ``values``, the first selected."""
    return {
        "type": "custom",
        "name": name,
        "label": label,
        "description": description,
        "query": ",".join(values),
        "multi": False,
        "includeAll": False,
        "current": {"selected": True, "text": values[0], "value": values[0]},
        "options": [{"selected": index == 0, "text": value, "value": value} for index, value in enumerate(values)],
        "hide": 0,
    }


def dashboard(
    *, uid: str, title: str, description: str, generated: str, variables: list[dict[str, Any]], sections: list[Section], tags: list[str]
) -> dict[str, Any]:
    """A whole dashboard; ``generated`` is the header saying where it comes from."""
    return {
        "__generated": generated,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": ["twilio-insights"],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "title": "Twilio Insights",
                "icon": "external link",
                "targetBlank": False,
            }
        ],
        "templating": {"list": variables},
        "panels": layout(sections),
    }


def table(
    title: str, description: str, target: dict[str, Any], unit: str, steps: dict[str, Any], *, sort_by: str, hide: tuple[str, ...] = ()
) -> Panel:
    """A table of an instant query's series (one row each), sorted by ``sort_by``, cells coloured by ``steps``."""
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [{**target, "format": "table"}],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": steps,
                "color": {"mode": "thresholds"},
                "custom": {"align": "auto", "cellOptions": {"type": "auto"}},
            },
            "overrides": [
                {"matcher": {"id": "byName", "options": sort_by}, "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}}]}
            ],
        },
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "sortBy": [{"displayName": sort_by, "desc": True}],
            "footer": {"show": False, "reducer": ["sum"], "fields": ""},
        },
        "transformations": [
            {"id": "organize", "options": {"excludeByName": {name: True for name in ("Time", *hide)}, "renameByName": {"Value": sort_by}}}
        ],
    }

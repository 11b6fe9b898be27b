"""Jinja2 rendering for the console: autoescape on for every template, strict undefined,
and a few formatting helpers. Templates never mark data `|safe`; the only markup built in
Python is the sparkline's list of numbers."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass(frozen=True)
class Spark:
    """An SVG polyline of a series (coordinates only: numbers, nothing user-supplied)."""

    points: str
    first: float
    last: float
    low: float
    high: float
    count: int
    width: int
    height: int


def spark(values: Sequence[float], width: int = 160, height: int = 32) -> Spark | None:
    if not values:
        return None
    low, high = min(values), max(values)
    span = high - low or 1.0
    pad = 2.0
    n = len(values)
    step = (width - 2 * pad) / max(n - 1, 1)
    pts = []
    for i, v in enumerate(values):
        x = pad + i * step
        y = height - pad - (v - low) / span * (height - 2 * pad)
        pts.append(f"{x:.1f},{y:.1f}")
    if n == 1:
        pts.append(f"{width - pad:.1f},{pts[0].split(',')[1]}")
    return Spark(" ".join(pts), values[0], values[-1], low, high, n, width, height)


def fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%H:%M:%S") if value is not None else "—"


def fmt_utc(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def fmt_pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def fmt_num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def short(value: str | None, n: int = 12) -> str:
    return (value or "")[:n]


def digest(html: str) -> str:
    return hashlib.sha256(html.encode()).hexdigest()[:16]


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        age=fmt_age, time=fmt_time, utc=fmt_utc, pct=fmt_pct, num=fmt_num, iso=iso, short=short
    )
    env.globals.update(spark=spark)
    return env


class Renderer:
    def __init__(self) -> None:
        self.env = environment()

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

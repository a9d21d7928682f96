"""Unit conversion for length, mass, time, speed and temperature, and spotting it in a sentence.

Every unit is a frozen :class:`Unit`: a dimension and an affine map to the dimension's SI base
unit (``base = value * scale + offset``), which covers the temperature scales too. Units are
named by many aliases (``km``, ``kilometre``, ``kilometers``…), matched case-insensitively.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import MappingProxyType

from corral.agents.calculator import format_number


class UnitError(ValueError):
    """An unknown unit, or two units of different dimensions; the message says which."""


@dataclass(frozen=True, slots=True)
class Unit:
    symbol: str
    dimension: str
    scale: float
    offset: float = 0.0

    def to_base(self, value: float) -> float:
        return value * self.scale + self.offset

    def from_base(self, value: float) -> float:
        return (value - self.offset) / self.scale


_MILE = 1609.344  # exact, by the international yard and pound agreement of 1959
_HOUR = 3600.0
# symbol, dimension, scale, offset, aliases separated by "|" (plurals written out).
_TABLE: tuple[tuple[str, str, float, float, str], ...] = (
    # length, base metre
    ("mm", "length", 1e-3, 0.0, "millimetre|millimetres|millimeter|millimeters"),
    ("cm", "length", 1e-2, 0.0, "centimetre|centimetres|centimeter|centimeters"),
    ("m", "length", 1.0, 0.0, "metre|metres|meter|meters"),
    ("km", "length", 1e3, 0.0, "kilometre|kilometres|kilometer|kilometers"),
    ("in", "length", 0.0254, 0.0, "inch|inches"),
    ("ft", "length", 0.3048, 0.0, "foot|feet"),
    ("yd", "length", 0.9144, 0.0, "yard|yards"),
    ("mi", "length", _MILE, 0.0, "mile|miles"),
    ("nmi", "length", 1852.0, 0.0, "nautical mile|nautical miles"),
    ("au", "length", 149_597_870_700.0, 0.0, "astronomical unit|astronomical units"),
    ("ly", "length", 9_460_730_472_580_800.0, 0.0, "light-year|light-years|light year|light years"),
    # mass, base kilogram
    ("mg", "mass", 1e-6, 0.0, "milligram|milligrams"),
    ("g", "mass", 1e-3, 0.0, "gram|grams"),
    ("kg", "mass", 1.0, 0.0, "kilogram|kilograms|kilo|kilos"),
    ("t", "mass", 1e3, 0.0, "tonne|tonnes|metric ton|metric tons"),
    ("oz", "mass", 0.028349523125, 0.0, "ounce|ounces"),
    ("lb", "mass", 0.45359237, 0.0, "lbs|pound|pounds"),
    ("st", "mass", 6.35029318, 0.0, "stone|stones"),
    # time, base second
    ("ms", "time", 1e-3, 0.0, "millisecond|milliseconds"),
    ("s", "time", 1.0, 0.0, "sec|secs|second|seconds"),
    ("min", "time", 60.0, 0.0, "mins|minute|minutes"),
    ("h", "time", _HOUR, 0.0, "hr|hrs|hour|hours"),
    ("d", "time", 86_400.0, 0.0, "day|days"),
    ("wk", "time", 604_800.0, 0.0, "week|weeks"),
    ("yr", "time", 31_557_600.0, 0.0, "year|years"),  # a Julian year, 365.25 days
    # speed, base metre per second
    ("m/s", "speed", 1.0, 0.0, "mps|metre per second|metres per second|meters per second"),
    ("km/h", "speed", 1e3 / _HOUR, 0.0, "kph|kmh|kilometres per hour|kilometers per hour"),
    ("mph", "speed", _MILE / _HOUR, 0.0, "mi/h|miles per hour|mile per hour"),
    ("kn", "speed", 1852.0 / _HOUR, 0.0, "kt|knot|knots"),
    ("ft/s", "speed", 0.3048, 0.0, "fps|feet per second|foot per second"),
    # temperature, base kelvin: base = value * scale + offset
    ("°C", "temperature", 1.0, 273.15, "c|degc|celsius|degrees celsius|centigrade"),
    ("°F", "temperature", 5 / 9, 273.15 - 32 * 5 / 9, "f|degf|fahrenheit|degrees fahrenheit"),
    ("K", "temperature", 1.0, 0.0, "k|kelvin|kelvins|degrees kelvin"),
)
_UNITS_IN_ORDER = tuple(
    Unit(symbol, dim, scale, offset) for symbol, dim, scale, offset, _ in _TABLE
)
UNITS: MappingProxyType[str, Unit] = MappingProxyType(
    {
        alias.lower(): unit
        for unit, row in zip(_UNITS_IN_ORDER, _TABLE, strict=True)
        for alias in (unit.symbol, *row[4].split("|"))
    }
)
DIMENSIONS = ("length", "mass", "time", "speed", "temperature")


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


def lookup_unit(name: str) -> Unit:
    """The unit called ``name`` (any alias, any case), or :class:`UnitError` listing options."""
    unit = UNITS.get(_key(name)) or UNITS.get(_key(name).removeprefix("°"))
    if unit is None:
        known = ", ".join(known_unit.symbol for known_unit in _UNITS_IN_ORDER)
        raise UnitError(f"unknown unit {name!r}; known units are {known}")
    return unit


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``; :class:`UnitError` if impossible."""
    source, target = lookup_unit(from_unit), lookup_unit(to_unit)
    if not math.isfinite(value):
        raise UnitError(f"the value to convert must be a finite number, got {value}")
    if source.dimension != target.dimension:
        raise UnitError(
            f"cannot convert {source.dimension} ({source.symbol}) to "
            f"{target.dimension} ({target.symbol}); both units must measure the same thing"
        )
    if source.dimension == "temperature" and source.to_base(value) < -1e-9:
        raise UnitError(f"{format_number(value)} {source.symbol} is below absolute zero")
    return target.from_base(source.to_base(value))


def format_quantity(value: float, unit: str) -> str:
    """``6.21371 mi``: six significant digits, then the unit's symbol."""
    symbol = lookup_unit(unit).symbol
    separator = "" if symbol.startswith("°") else " "
    return f"{format_number(value, significant=6)}{separator}{symbol}"


# -- finding conversions in a sentence ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversionRequest:
    value: float
    from_unit: str
    to_unit: str


# Longest aliases first so that "km/h" wins over "km" and "nautical miles" over "miles".
_UNIT_ALT = "|".join(re.escape(alias) for alias in sorted(UNITS, key=lambda a: (-len(a), a)))
_U = rf"(?:°\s*)?(?:{_UNIT_ALT})(?![\w/])"
_NUM = r"-?\d+(?:,\d{3})*(?:\.\d+)?"
_CONVERSION_PATTERNS: tuple[re.Pattern[str], ...] = (
    # "how many miles is 10 km", "how many seconds are in 3 hours"
    re.compile(
        rf"how\s+many\s+(?P<to>{_U})\s+(?:is|are|in|make|makes)\s+(?:there\s+in\s+|in\s+)?"
        rf"(?P<value>{_NUM})\s*(?P<from>{_U})",
        re.IGNORECASE,
    ),
    # "convert 5 km to miles", "10 kg in pounds", "100 °F into celsius"
    re.compile(
        rf"(?<![\w.])(?P<value>{_NUM})\s*(?P<from>{_U})\s+(?:to|in|into|as)\s+(?P<to>{_U})",
        re.IGNORECASE,
    ),
)
MAX_CONVERSIONS = 3
# "convert 100 degrees to kelvin": a temperature with no scale (Celsius? Fahrenheit?).
_BARE_DEGREES = re.compile(
    rf"(?<![\w.])(?P<value>{_NUM})\s*(?:degrees?|deg)\b"
    r"(?!\s*(?:c|f|k|celsius|fahrenheit|kelvins?|centigrade)\b)"
    rf"\s+(?:to|in|into|as)\s+(?P<to>{_U})",
    re.IGNORECASE,
)


def find_conversions(text: str, limit: int = MAX_CONVERSIONS) -> list[ConversionRequest]:
    """The unit conversions asked for in ``text``, in order of appearance, at most ``limit``.

    Recognised phrasings: ``convert 5 km to miles``, ``10 kg in pounds``, ``how many miles is
    10 km``, ``how many seconds are in 3 hours``. Units are returned as written (any alias);
    pass them to :func:`convert`.
    """
    hits: dict[int, ConversionRequest] = {}
    for pattern in _CONVERSION_PATTERNS:
        for match in pattern.finditer(text):
            start = match.start("value")
            if start in hits:
                continue
            number = match.group("value").replace(",", "")
            hits[start] = ConversionRequest(
                value=float(number),
                from_unit=_key(match.group("from")).replace("° ", "°"),
                to_unit=_key(match.group("to")).replace("° ", "°"),
            )
    found: list[ConversionRequest] = []
    for _, request in sorted(hits.items()):
        if request not in found:
            found.append(request)
    return found[:limit]


def find_bare_degrees(text: str, limit: int = MAX_CONVERSIONS) -> list[tuple[float, str]]:
    """Temperature conversions whose source scale is missing (``convert 100 degrees to
    kelvin``), as ``(value, target unit)`` in order of appearance, at most ``limit``."""
    found: list[tuple[float, str]] = []
    for match in _BARE_DEGREES.finditer(text):
        target = _key(match.group("to")).replace("° ", "°")
        if lookup_unit(target).dimension != "temperature":
            continue
        item = (float(match.group("value").replace(",", "")), target)
        if item not in found:
            found.append(item)
    return found[:limit]


def conversion_result(value: float, from_unit: str, to_unit: str) -> dict[str, object]:
    """The ``convert_units`` tool's result: ``{"value", "from_unit", "to_unit", "result", "text"}``.

    Units come back as canonical symbols; ``text`` reads ``5 km = 3.10686 mi``. Raises
    :class:`UnitError` like :func:`convert`.
    """
    result = convert(value, from_unit, to_unit)
    source, target = lookup_unit(from_unit).symbol, lookup_unit(to_unit).symbol
    return {
        "value": value,
        "from_unit": source,
        "to_unit": target,
        "result": result,
        "text": f"{format_quantity(value, source)} = {format_quantity(result, target)}",
    }

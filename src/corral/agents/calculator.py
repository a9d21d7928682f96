"""Safe arithmetic: an ``ast`` walker over numbers and a few operators, never ``eval``.

:func:`evaluate` accepts integers and decimals, ``+ - * / // % **`` (``^`` is read as ``**``,
the multiplication and division signs as ``*`` and ``/``), unary ``+``/``-`` and parentheses.
Everything else — names, calls, attributes, strings, comparisons, bit operations — is refused
with a :class:`CalculatorError` that says what was found and what is allowed. Sizes are capped
(expression length, exponent, result magnitude) so that no input can make the evaluator spend
noticeable CPU or memory. :func:`find_expressions` picks arithmetic out of a sentence.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType

MAX_EXPRESSION_LENGTH = 256
MAX_EXPONENT = 10_000
# Results (and every intermediate value) must stay within ±10**100: big enough for any
# demonstration, small enough that big-integer arithmetic stays instant.
MAX_MAGNITUDE = 10**100
MAX_LOG10 = 100.0
# Integers beyond 2**53 lose precision in JSON consumers (browsers); they are returned as floats
# next to their exact decimal text.
MAX_SAFE_INTEGER = 2**53

Number = int | float

_BINARY: Mapping[type[ast.operator], Callable[[Number, Number], Number]] = MappingProxyType(
    {
        ast.Add: operator.add,
        ast.Sub: operator.sub,
        ast.Mult: operator.mul,
        ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv,
        ast.Mod: operator.mod,
        ast.Pow: operator.pow,
    }
)
_UNARY: Mapping[type[ast.unaryop], Callable[[Number], Number]] = MappingProxyType(
    {
        ast.UAdd: operator.pos,
        ast.USub: operator.neg,
    }
)
_SYMBOLS = MappingProxyType({"×": "*", "÷": "/", "−": "-", "^": "**"})
_REFUSED: tuple[tuple[type[ast.AST], str], ...] = (
    (ast.Name, "names and variables are not allowed"),
    (ast.Call, "function calls are not allowed"),
    (ast.Attribute, "attribute access is not allowed"),
    (ast.Subscript, "indexing is not allowed"),
    (ast.Compare, "comparisons are not allowed"),
    (ast.BoolOp, "'and'/'or' are not allowed"),
    (ast.Lambda, "lambdas are not allowed"),
    (ast.JoinedStr, "strings are not allowed"),
)
ALLOWED = "numbers, + - * / // % ** (or ^), unary + and -, and parentheses"


class CalculatorError(ValueError):
    """An expression the calculator will not or cannot evaluate; the message says why."""


def evaluate(expression: str) -> Number:
    """The value of ``expression``, or :class:`CalculatorError` saying why there is none.

    Pure and synchronous; bounded in time and memory by the caps in this module.
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"expected the expression as text, got {type(expression).__name__}")
    text = expression.strip()
    for symbol, replacement in _SYMBOLS.items():
        text = text.replace(symbol, replacement)
    if not text:
        raise CalculatorError("the expression is empty; write arithmetic such as 12*7")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise CalculatorError(
            f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculatorError(
            f"{expression.strip()!r} is not a valid arithmetic expression; allowed: {ALLOWED}"
        ) from None
    return _eval(tree.body)


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "strings" if isinstance(value, str | bytes) else f"{value!r} values"
            raise CalculatorError(f"{kind} are not allowed; allowed: {ALLOWED}")
        return _checked(value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero is undefined") from None
        except OverflowError:
            raise CalculatorError("the result is too large to compute") from None
        return _checked(result)
    for node_type, message in _REFUSED:
        if isinstance(node, node_type):
            raise CalculatorError(f"{message}; allowed: {ALLOWED}")
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        raise CalculatorError(f"that operator is not supported; allowed: {ALLOWED}")
    raise CalculatorError(f"{type(node).__name__} is not arithmetic; allowed: {ALLOWED}")


def _check_power(base: Number, exponent: Number) -> None:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponents are limited to ±{MAX_EXPONENT}")
    if exponent > 0 and abs(base) > 1 and exponent * math.log10(abs(base)) > MAX_LOG10:
        raise CalculatorError(f"the result would exceed 10**{int(MAX_LOG10)}")


def _checked(value: object) -> Number:
    """``value`` if it is a finite real number within the magnitude cap."""
    if isinstance(value, complex):
        raise CalculatorError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError("the result is not a finite number")
    assert isinstance(value, int | float)
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError(f"the result would exceed 10**{int(MAX_LOG10)}")
    return value


def format_number(value: Number, significant: int = 12) -> str:
    """``value`` as a person would write it: ``84``, ``0.333333333333``, ``1.5e+20``.

    Whole floats lose their ``.0``; floats are rounded to ``significant`` digits, which hides
    binary noise such as ``0.1 + 0.2 == 0.30000000000000004``.
    """
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    text = f"{value:.{significant}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        if abs(int(exponent)) < 16:  # a whole number or a short decimal: write it out
            text = f"{float(text):.{max(0, significant - 1 - int(exponent))}f}"
        else:
            return _trim(mantissa) + "e" + exponent
    return _trim(text)


def _trim(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def json_value(value: Number) -> Number:
    """``value`` in a form every JSON consumer reads exactly or, past 2**53, as a float."""
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return float(value)
    return value


# -- finding arithmetic in a sentence ------------------------------------------------------------

_WORD_OPERATORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"(?<=[\d)])\s+{words}\s+(?=[-+(]?\s*\d)", re.IGNORECASE), symbol)
    for words, symbol in (
        (r"to\s+the\s+power\s+of", " ** "),
        (r"multiplied\s+by", " * "),
        (r"divided\s+by", " / "),
        (r"times", " * "),
        (r"plus", " + "),
        (r"minus", " - "),
        (r"mod(?:ulo)?", " % "),
    )
)
# Dates, times and version-like numbers look like arithmetic but are not.
_NOT_ARITHMETIC = re.compile(
    r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}:\d{2}(?::\d{2})?\b|\b\d+(?:\.\d+){2,}\b"
)
_CANDIDATE = re.compile(r"(?:(?<![\w.)])-\s*)?[(\d](?:[\d.\s()+\-*/%^×÷−]|\*\*|//)*[\d)]")
_HAS_OPERATOR = re.compile(r"[\d.)]\s*(?:\*\*|//|[-+*/%^×÷−])\s*[-+]?\s*[(\d]")
MAX_EXPRESSIONS = 5


def find_expressions(text: str, limit: int = MAX_EXPRESSIONS) -> list[str]:
    """The arithmetic expressions in ``text``, in order, at most ``limit``, without repeats.

    ``"What is 12*7 and (3 + 4) ^ 2?"`` → ``["12*7", "(3 + 4) ^ 2"]``. Spelled-out operators
    (``plus``, ``times``, ``divided by``, ``to the power of``…) become symbols. A candidate
    must hold at least one binary operator between two operands, so ``"5 km"`` or ``"-40"``
    are not arithmetic; ISO dates, clock times and version numbers are skipped. The result
    is not guaranteed to evaluate (``"1/0"`` is found): :func:`evaluate` decides that.
    """
    for pattern, symbol in _WORD_OPERATORS:
        text = pattern.sub(symbol, text)
    text = _NOT_ARITHMETIC.sub(" ; ", text)
    found: list[str] = []
    for match in _CANDIDATE.finditer(text):
        candidate = _balance(match.group().strip())
        candidate = re.sub(r"\s+", " ", candidate)
        if _HAS_OPERATOR.search(candidate) and candidate not in found:
            found.append(candidate)
            if len(found) >= limit:
                break
    return found


def _balance(candidate: str) -> str:
    """Drop unmatched parentheses at the ends: ``"(see 2+3)"`` yields ``"2+3)"`` → ``"2+3"``."""
    while candidate.startswith("(") and candidate.count("(") > candidate.count(")"):
        candidate = candidate[1:].lstrip()
    while candidate.endswith(")") and candidate.count(")") > candidate.count("("):
        candidate = candidate[:-1].rstrip()
    return candidate


def calculate(expression: str) -> dict[str, object]:
    """The ``calculator`` tool's result: ``{"expression", "value", "formatted"}``.

    ``value`` is a JSON number (a float past 2**53); ``formatted`` is exact for integers.
    Raises :class:`CalculatorError` like :func:`evaluate`.
    """
    value = evaluate(expression)
    return {
        "expression": expression.strip(),
        "value": json_value(value),
        "formatted": format_number(value),
    }

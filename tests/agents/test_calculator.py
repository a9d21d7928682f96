"""The safe calculator: what it evaluates, what it refuses, how it formats, what it finds."""

from __future__ import annotations

import time

import pytest

from corral.agents.calculator import (
    MAX_EXPRESSION_LENGTH,
    MAX_SAFE_INTEGER,
    CalculatorError,
    calculate,
    evaluate,
    find_expressions,
    format_number,
    json_value,
)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("12*7", 84),
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("2 ^ 10", 1024),
        ("2 ** -1", 0.5),
        ("-3 + 4", 1),
        ("+5", 5),
        ("--5", 5),
        ("1.5 * 4", 6.0),
        ("6 × 7", 42),
        ("84 ÷ 2", 42.0),
        ("1_000 + 1", 1001),
        ("  12 * 7  ", 84),
        ("10 ** 100", 10**100),
    ],
)
def test_evaluates_arithmetic(expression: str, expected: float) -> None:
    """Numbers, the seven binary operators, unary signs and parentheses evaluate as in Python."""
    assert evaluate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("x + 1", "names"),
        ("__import__('os').system('true')", "function calls"),
        ("abs(-3)", "function calls"),
        ("(1).real", "attribute"),
        ("'a' * 3", "strings"),
        ("b'a'", "strings"),
        ("1 < 2", "comparisons"),
        ("1 and 2", "'and'/'or'"),
        ("True + 1", "True values"),
        ("None", "None values"),
        ("1j * 2", "1j values"),
        ("[1, 2][0]", "indexing"),
        ("[1, 2]", "List is not arithmetic"),
        ("(1, 2)", "Tuple is not arithmetic"),
        ("lambda: 1", "lambdas"),
        ("5 & 3", "operator is not supported"),
        ("~5", "operator is not supported"),
        ("1 +", "not a valid arithmetic expression"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_refuses_anything_but_arithmetic(expression: str, fragment: str) -> None:
    """Names, calls, attributes, strings and other syntax are refused with a reason."""
    with pytest.raises(CalculatorError) as excinfo:
        evaluate(expression)
    assert fragment in str(excinfo.value)


def test_refuses_non_string_input() -> None:
    """A non-string expression is a CalculatorError, not a TypeError from deep inside."""
    with pytest.raises(CalculatorError, match="as text"):
        evaluate(12)  # type: ignore[arg-type]


def test_refuses_overlong_expressions() -> None:
    """Expressions past the length cap are refused before parsing."""
    with pytest.raises(CalculatorError, match="limit is"):
        evaluate("1+" * MAX_EXPRESSION_LENGTH + "1")


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("1 / 0", "division by zero"),
        ("1 // 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("0 ** -1", "division by zero"),
        ("(-8) ** 0.5", "not a real number"),
        ("10 ** 101", "exceed"),
        ("10 ** 100 * 10", "exceed"),
        ("1e308 * 10", "exceed"),
        ("2 ** 100000", "exponents are limited"),
        ("9 ** 9 ** 9", "exponents are limited"),
        ("1.5 ** 5000", "exceed"),
    ],
)
def test_refuses_undefined_or_huge_results(expression: str, fragment: str) -> None:
    """Division by zero, complex results and results past the magnitude cap are refused."""
    with pytest.raises(CalculatorError) as excinfo:
        evaluate(expression)
    assert fragment in str(excinfo.value)


def test_huge_powers_are_refused_without_computing_them() -> None:
    """The exponent check runs before the power, so a hostile input costs no CPU."""
    started = time.perf_counter()
    for expression in ("9**9999", "(10**50)**(10**3)", "99999**9999"):
        with pytest.raises(CalculatorError):
            evaluate(expression)
    assert time.perf_counter() - started < 0.5


def test_deepest_nesting_within_the_length_cap_evaluates() -> None:
    """The length cap keeps nesting inside what the parser and the walker handle."""
    assert evaluate("(" * 127 + "1" + ")" * 127) == 1
    assert evaluate("-" * (MAX_EXPRESSION_LENGTH - 1) + "1") == -1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (84, "84"),
        (84.0, "84"),
        (-3, "-3"),
        (0.0, "0"),
        (3.5, "3.5"),
        (1 / 3, "0.333333333333"),
        (0.1 + 0.2, "0.3"),
        (1e-5, "0.00001"),
        (1.5e15, "1500000000000000"),
        (1e20, "1e+20"),
        (2**100, "1267650600228229401496703205376"),
    ],
)
def test_format_number(value: float, expected: str) -> None:
    """Numbers are written as a person would: no trailing .0, no binary noise."""
    assert format_number(value) == expected


def test_json_value_keeps_small_ints_exact_and_floats_big_ones() -> None:
    """Integers past 2**53 become floats so that every JSON reader can take them."""
    assert json_value(MAX_SAFE_INTEGER) == MAX_SAFE_INTEGER
    assert isinstance(json_value(MAX_SAFE_INTEGER), int)
    assert isinstance(json_value(2**100), float)


def test_calculate_returns_the_tool_result() -> None:
    """The calculator tool's result names the expression, its value and its formatted text."""
    assert calculate(" 12*7 ") == {"expression": "12*7", "value": 84, "formatted": "84"}
    big = calculate("2**100")
    assert big["formatted"] == str(2**100)
    assert big["value"] == float(2**100)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 12*7?", ["12*7"]),
        ("What is 12 * 7 and (3 + 4) ^ 2?", ["12 * 7", "(3 + 4) ^ 2"]),
        ("Compute 2*3.", ["2*3"]),
        ("what is 12 times 7 plus 1", ["12 * 7 + 1"]),
        ("100 divided by 8", ["100 / 8"]),
        ("2 to the power of 10", ["2 ** 10"]),
        ("-3 + 4 please", ["-3 + 4"]),
        ("(see 2+3)", ["2+3"]),
        ("1/0", ["1/0"]),
        ("12*7 and again 12*7", ["12*7"]),
        ("convert 5 km to miles", []),
        ("it was -40 degrees", []),
        ("on 2024-01-15 at 10:30 I ran version 1.2.3", []),
        ("In 1969 Apollo 11 landed", []),
        ("no numbers here", []),
    ],
)
def test_find_expressions(text: str, expected: list[str]) -> None:
    """Arithmetic is picked out of sentences; dates, times, lone numbers and units are not."""
    assert find_expressions(text) == expected


def test_find_expressions_respects_the_limit() -> None:
    """At most ``limit`` expressions are returned, in order of appearance."""
    text = " and ".join(f"{n}+{n}" for n in range(1, 10))
    assert find_expressions(text, limit=3) == ["1+1", "2+2", "3+3"]


def test_found_expressions_evaluate() -> None:
    """What find_expressions returns is what evaluate accepts."""
    found = find_expressions("What is 12 times 7, and 2^10 + 3, and (1.5 + 2.5) / 2?")
    assert [format_number(evaluate(e)) for e in found] == ["84", "1027", "2"]

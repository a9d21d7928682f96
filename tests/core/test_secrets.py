"""SecretRedactor: resolved secret values become [REDACTED] anywhere in a JSON value, and in a
stream of text deltas however a secret is split across them."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from corral.core.secrets import MIN_SECRET_CHARS, REDACTED, SecretRedactor

TOKEN = "ghp_9f8e7d6c5b4a"
PASSWORD = "hunter2-correct-horse"


def test_every_occurrence_in_a_string_is_masked() -> None:
    r = SecretRedactor([TOKEN])
    text = f"token={TOKEN}; again:{TOKEN}{TOKEN}!"
    # Two adjacent occurrences touch, so they are one masked stretch.
    assert r.redact_text(text) == f"token={REDACTED}; again:{REDACTED}!"


def test_nested_values_and_keys_are_masked_and_the_input_is_unchanged() -> None:
    """Strings in dicts and lists at any depth, and dict keys; other values kept as they are."""
    r = SecretRedactor([TOKEN, PASSWORD])
    value: dict[str, Any] = {
        "args": {"query": f"login with {PASSWORD}", "limit": 5, "ok": True, "none": None},
        "results": [[f"Bearer {TOKEN}", {"nested": [TOKEN]}], 3.5],
        f"key-{TOKEN}": "value",
    }
    snapshot = json.dumps(value)
    assert r.redact(value) == {
        "args": {"query": f"login with {REDACTED}", "limit": 5, "ok": True, "none": None},
        "results": [[f"Bearer {REDACTED}", {"nested": [REDACTED]}], 3.5],
        f"key-{REDACTED}": "value",
    }
    assert json.dumps(value) == snapshot


def test_keys_that_mask_to_the_same_text_keep_every_value() -> None:
    """Two masked keys, and a key that already read [REDACTED]: three items stay three."""
    r = SecretRedactor([TOKEN, PASSWORD])
    assert r.redact({TOKEN: 1, PASSWORD: 2, REDACTED: 0}) == {
        f"{REDACTED} (2)": 1,
        f"{REDACTED} (3)": 2,
        REDACTED: 0,
    }


def test_a_number_holding_a_numeric_secret_is_masked() -> None:
    """A PIN resolved as "73914625" does not leak as the integer 73914625."""
    r = SecretRedactor(["73914625"])
    assert r.redact({"pin": 73914625, "other": 12, "float": 73914625.0}) == {
        "pin": REDACTED,
        "other": 12,
        "float": REDACTED,
    }


def test_overlapping_secrets_leave_no_character_of_either() -> None:
    """abcdef and cdefgh overlap in abcdefgh: one [REDACTED] for the whole stretch."""
    r = SecretRedactor(["abcdef", "cdefgh"])
    assert r.redact_text("xxabcdefghyy") == f"xx{REDACTED}yy"
    assert r.redact_text("abcdef cdefgh") == f"{REDACTED} {REDACTED}"
    # A secret inside another: the longer one is masked whole.
    r2 = SecretRedactor(["password123", "word"])
    assert r2.redact_text("my password123 and a word") == f"my {REDACTED} and a {REDACTED}"


def test_overlapping_occurrences_of_one_secret_are_found() -> None:
    r = SecretRedactor(["abab"])
    assert r.redact_text("xababab") == f"x{REDACTED}"


def test_json_escaped_forms_are_masked_too() -> None:
    """A tool that returns JSON text holding the secret: its escaped form is masked."""
    secret = 'pa"ss\\wörd'
    r = SecretRedactor([secret])
    assert r.redact_text(json.dumps({"p": secret})) == '{"p": "' + REDACTED + '"}'
    assert r.redact_text(json.dumps({"p": secret}, ensure_ascii=False)) == (
        '{"p": "' + REDACTED + '"}'
    )


def test_short_values_are_not_secrets() -> None:
    """Values under MIN_SECRET_CHARS characters are ignored (masking them would shred the
    output), and add() says so."""
    r = SecretRedactor()
    assert MIN_SECRET_CHARS == 4
    assert r.add("abc") is False
    assert r.add("") is False
    assert not r
    assert r.redact({"a": "abc abc"}) == {"a": "abc abc"}
    assert r.add("abcd") is True
    assert r.redact_text("abcd") == REDACTED


def test_a_lone_surrogate_secret_is_still_masked() -> None:
    r = SecretRedactor(["ab\ud800cd"])
    assert r.redact_text("x ab\ud800cd y") == f"x {REDACTED} y"


# -- streaming -----------------------------------------------------------------------------


def stream(r: SecretRedactor, deltas: list[str]) -> tuple[list[str], str]:
    s = r.stream()
    out = [s.feed(d) for d in deltas]
    return out, "".join(out) + s.flush()


@pytest.mark.parametrize("secret", [TOKEN, "abcd", 'q"uo\\te-secret'])
def test_a_secret_split_at_every_position_never_leaks(secret: str) -> None:
    """For every pair of cut points in and around the secret: whatever was emitted after each
    delta is a prefix of the masked text (so no piece of the secret ever went out, to be
    "taken back" later), and everything emitted equals redact_text of the whole."""
    r = SecretRedactor([secret])
    text = f"before {secret} after"
    expected = f"before {REDACTED} after"
    start = text.index(secret)
    for i in range(start - 1, start + len(secret) + 2):
        for j in range(i, start + len(secret) + 2):
            deltas = [text[:i], text[i:j], text[j:]]
            out, whole = stream(r, deltas)
            assert whole == r.redact_text(text) == expected
            for n in range(1, len(out) + 1):
                assert expected.startswith("".join(out[:n])), (deltas, out)


def test_character_by_character_streaming_holds_back_at_most_longest_minus_one() -> None:
    r = SecretRedactor([TOKEN, PASSWORD])
    longest = max(len(TOKEN), len(PASSWORD))
    text = f"Your token is {TOKEN} and your password is {PASSWORD}. Done."
    s = r.stream()
    emitted = ""
    for n, ch in enumerate(text, 1):
        emitted += s.feed(ch)
        held = n - len(emitted.replace(REDACTED, ""))  # characters fed but not yet emitted
        assert held <= longest - 1 or REDACTED in emitted
    emitted += s.flush()
    assert emitted == f"Your token is {REDACTED} and your password is {REDACTED}. Done."


def test_text_that_cannot_start_a_secret_passes_through_at_once() -> None:
    """No secrets, or text ending in nothing secret-like: each delta goes out whole."""
    s = SecretRedactor().stream()
    assert s.feed("hello ") == "hello "
    assert s.feed("world") == "world"
    assert s.flush() == ""
    s = SecretRedactor([TOKEN]).stream()
    assert s.feed("plain words, ") == "plain words, "
    assert s.feed("more words") == "more words"
    assert s.feed(" and g") == " and "  # "g" may start ghp_...
    assert s.feed("o on") == "go on"
    assert s.flush() == ""


def test_flush_emits_the_held_tail_and_resets() -> None:
    r = SecretRedactor(["secret-value"])
    s = r.stream()
    assert s.feed("the end: secr") == "the end: "  # "secr" may be the start of the secret
    assert s.feed("e") == ""
    assert s.flush() == "secre"
    assert s.feed("secret-value") == REDACTED  # starts afresh; a whole secret goes out masked
    assert s.feed("secret-value!") == "!"  # adjacent to the last one: the same [REDACTED]
    assert s.flush() == ""


def test_a_secret_added_mid_stream_is_masked_from_the_held_text_on() -> None:
    r = SecretRedactor(["first-secret"])
    s = r.stream()
    first = s.feed("one first-secret two ")
    r.add("late-secret")
    rest = s.feed("late-secret three") + s.flush()
    assert first + rest == f"one {REDACTED} two {REDACTED} three"


@pytest.mark.parametrize("seed", range(30))
def test_random_splits_equal_redact_text_of_the_whole(seed: int) -> None:
    """Overlapping, adjacent and repeated secrets in random text cut at random places: the
    concatenated stream always equals redact_text of the whole."""
    rng = random.Random(seed)
    secrets = ["abcdef", "cdefgh", "xyxy", "k9k9k9k9k9", "qwer"]
    r = SecretRedactor(secrets)
    alphabet = "abcdefghkqwxy9 "
    pieces = [rng.choice([*secrets, rng.choice(alphabet) * rng.randint(1, 3)]) for _ in range(40)]
    text = "".join(pieces)
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 25))))
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    _, whole = stream(r, deltas)
    assert whole == r.redact_text(text)
    for secret in secrets:
        assert secret not in whole

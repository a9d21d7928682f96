"""The rules' edges, on small sources: scoping, import time versus run time, closures that do
or do not outlive a run, columns, and what the acceptance comment is (``check_source``)."""

from __future__ import annotations

import textwrap

import pytest

from corral.check import check_source


def codes(source: str) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in check_source(textwrap.dedent(source))]


def test_a_mutation_at_import_time_is_not_run_time_state() -> None:
    """Module level, class bodies and ``if __name__ == "__main__"`` run once, before users."""
    assert (
        codes(
            """
            HANDLERS = []
            HANDLERS.append(print)

            class Plugin:
                HANDLERS.append("plugin")

            if __name__ == "__main__":
                HANDLERS.clear()
            """
        )
        == []
    )


def test_a_mutation_in_a_class_made_at_run_time_is_found() -> None:
    assert codes(
        """
        SEEN = set()

        def make():
            class Local:
                SEEN.add("made")
            return Local
        """
    ) == [(2, "CR001")]


def test_a_comprehension_variable_hides_the_module_name() -> None:
    assert (
        codes(
            """
            row = {}

            def fill(rows):
                return [row.update(seen=True) for row in rows]
            """
        )
        == []
    )


def test_a_name_bound_in_an_enclosing_function_is_not_the_module_object() -> None:
    assert (
        codes(
            """
            cache = {}

            def outer():
                cache = {}
                def inner(key):
                    cache[key] = True
                return inner
            """
        )
        == []
    )


def test_a_mutation_through_a_nested_attribute_or_item_counts() -> None:
    """``STATE.users[k].append(x)`` changes the module's object as much as
    ``STATE.append`` does; a call result in between (``f().x``) is something else."""
    assert codes(
        """
        STATE = {"users": {}}
        OTHER = {}

        def add(user_id, item):
            STATE["users"][user_id].append(item)
            OTHER.copy().update(x=1)
        """
    ) == [(2, "CR001")]


def test_a_safe_shared_object_is_never_reported_even_when_configured() -> None:
    assert (
        codes(
            """
            import logging
            log = logging.getLogger(__name__)

            def setup(handler):
                log.handlers.append(handler)
                log.level = 10
            """
        )
        == []
    )


def test_a_lazy_import_through_global_is_not_state() -> None:
    assert (
        codes(
            """
            yaml = None

            def load(text):
                global yaml
                import yaml
                return yaml.safe_load(text)
            """
        )
        == []
    )


def test_a_closure_stored_on_an_object_outlives_its_run() -> None:
    assert codes(
        """
        def install(app):
            hits = 0
            def on_request():
                nonlocal hits
                hits += 1
            app.on_request = on_request
        """
    ) == [(5, "CR003")]


def test_a_closure_handed_to_a_call_is_not_counted_as_escaping() -> None:
    """``return await attempt(deliver)``: the call ends before the variable's frame does."""
    assert (
        codes(
            """
            async def complete(attempt):
                delivered = False
                async def deliver(text):
                    nonlocal delivered
                    delivered = True
                return await attempt(deliver)
            """
        )
        == []
    )


@pytest.mark.parametrize(
    "signature",
    [
        "def lookup(self, user_id)",
        "def lookup(session)",
        "def lookup(*, access_token)",
        "def lookup(run_id, limit)",
        "def lookup(ctx: RunContext)",
        "def lookup(who: 'corral.Identity')",
        "def lookup(messages)",
    ],
)
def test_a_cache_is_found_for_each_kind_of_user_data(signature: str) -> None:
    source = f"from functools import lru_cache\n@lru_cache\n{signature}:\n    return 1\n"
    expected_line = 2
    if signature.startswith("def lookup(self"):
        source = "from functools import lru_cache\nclass C:\n    @lru_cache\n    " + (
            f"{signature}:\n        return 1\n"
        )
        expected_line = 3
    assert codes(source) == [(expected_line, "CR004")]


def test_a_cache_keyed_by_what_is_not_user_data_is_not_reported() -> None:
    assert (
        codes(
            """
            import functools
            from functools import lru_cache, cached_property

            @lru_cache(maxsize=64)
            def unit_factor(unit: str, precision: int) -> float:
                return 1.0

            class Profile:
                @cached_property
                def user(self):
                    return 1

            def cache(user_id):
                return user_id

            @cache
            def not_a_cache(user_id):
                return user_id
            """
        )
        == []
    )


def test_columns_count_characters_from_1() -> None:
    """``ast`` counts UTF-8 bytes from 0; the report counts characters from 1."""
    source = "def grüße(größe, x=[]):\n    return x\n"
    [finding] = check_source(source)
    assert (finding.line, finding.col, finding.code) == (1, source.index("[]") + 1, "CR005")


def test_the_acceptance_marker_inside_a_string_is_not_a_comment() -> None:
    source = 'DONE = []; NOTE = "# corral: shared-ok not a comment"\n'
    source += "def finish(x):\n    DONE.append(x)\n"
    assert codes(source) == [(1, "CR001")]


def test_a_reason_must_hold_words_not_just_punctuation() -> None:
    source = "def f(x=[]):  # corral: shared-ok -- \n    return x\n"
    [finding] = check_source(source)
    assert "only with a reason" in finding.message
    assert check_source(source.replace("-- ", "-- read only")) == []


def test_a_file_that_does_not_parse_raises_syntax_error() -> None:
    with pytest.raises(SyntaxError):
        check_source("def f(:\n")
    with pytest.raises(SyntaxError):
        check_source("x = 1\x00\n")


def test_a_model_whose_base_is_imported_gets_a_hint_and_field_default_factory_is_clean() -> None:
    """A pydantic model deriving from a base of another module cannot be recognised; the
    finding says how to make that explicit, and doing so clears it."""
    source = textwrap.dedent(
        """
        from pydantic import Field
        from myapp.models import Base

        class Order(Base):
            items: list[str] = []
            tags: list[str] = Field(default_factory=list)
        """
    )
    [finding] = check_source(source)
    assert (finding.line, finding.code) == (6, "CR002")
    assert "if `Order` is a pydantic model, write `Field(default_factory=…)`" in finding.message


def test_attrs_factories_are_per_instance_fields() -> None:
    assert (
        codes(
            """
            from attrs import Factory, define

            @define
            class Basket:
                items: list[str] = Factory(list)

                def add(self, item):
                    self.items.append(item)
            """
        )
        == []
    )

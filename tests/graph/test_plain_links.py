"""The loader's one-pass reading of the most common link gives what its general path gives, for any link."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aioflow.graph._normalise import normalise_link
from aioflow.graph._report import _Report

LEVEL: dict[Any, dict[str, Any]] = {name: {"id": name} for name in ("a", "b", "c")}


class _Dict(dict):  # type: ignore[type-arg]
    """A dict the one-pass reading does not take: what the general path makes of the same link."""


names = st.one_of(
    st.sampled_from(["a", "b", "c", "z", "x", "0", "007", "return_value"]),
    st.integers(-2, 3),
    st.booleans(),
    st.none(),
    st.lists(st.sampled_from(["a", "b"]), max_size=2),
)
ends = st.one_of(st.sampled_from(["a", "b", "c"]), names)  # mostly nodes of the level
plain_names = st.sampled_from(["x", "return_value", "0", "007", "1"])
items = st.one_of(
    st.fixed_dictionaries({"source_output": plain_names, "target_input": plain_names}),
    st.fixed_dictionaries({"source_output": names, "target_input": names}),
    st.fixed_dictionaries({"source_output": names}, optional={"target_input": names, "extra": names}),
    names,
)
# Links in the shape the one-pass reading takes (or nearly), and any link.
level_node = st.sampled_from(["a", "b", "c"])
plain_shaped = st.fixed_dictionaries(
    {"source": level_node, "target": level_node, "data_mapping": st.lists(items, min_size=1, max_size=3)}
)
near_plain = st.fixed_dictionaries(
    {"source": ends, "target": ends},
    optional={"data_mapping": st.one_of(st.none(), st.lists(items, max_size=3))},
)
any_link = st.fixed_dictionaries(
    {},
    optional={
        "source": ends,
        "target": ends,
        "data_mapping": st.one_of(st.none(), st.lists(items, max_size=3), names),
        "required": st.one_of(st.booleans(), st.none()),
        "comment": names,
    },
)
links = st.one_of(plain_shaped, near_plain, any_link)


def _normalised(raw: dict[str, Any]) -> tuple[Any, list[str]]:
    report = _Report("g")
    link = normalise_link(report, raw, 0, "", LEVEL)
    return link, report.problems


@settings(max_examples=2000, deadline=None)
@given(links)
def test_the_one_pass_reading_agrees_with_the_general_path(raw: dict[str, Any]) -> None:
    assert _normalised(raw) == _normalised(_Dict(raw))


def test_the_common_link_is_read_in_one_pass() -> None:
    raw = {"source": "a", "target": "b", "data_mapping": [{"source_output": "return_value", "target_input": "x"}]}
    link, problems = _normalised(raw)
    assert problems == []
    assert link == raw
    assert link is not raw
    assert link["data_mapping"] is not raw["data_mapping"]  # the caller's lists are never kept
    assert link["data_mapping"][0] is not raw["data_mapping"][0]

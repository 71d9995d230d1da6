"""The rule every state machine here shares: a move not in its table answers 409."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from app.core.errors import IllegalTransition

State = TypeVar("State", bound=StrEnum)


def check_allowed(
    allowed: Mapping[State, frozenset[State]],
    source: State,
    target: State,
    *,
    noun: str,
    when_final: str,
) -> None:
    """Raise ``IllegalTransition`` (HTTP 409) unless ``source → target`` is in ``allowed``; the
    message names what ``source`` can become (``when_final`` says why when nothing)."""
    if target not in allowed[source]:
        options = ", ".join(sorted(allowed[source])) or f"nothing ({when_final})"
        raise IllegalTransition(
            f"A {source.value} {noun} cannot become {target.value}; it can become {options}.",
            details={"from": source.value, "to": target.value},
        )

"""Words the app shows (Qt-free)."""

from __future__ import annotations


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """'1 box', '2 boxes', '0 images': the count with its noun in the right number."""
    if count == 1:
        return f"1 {noun}"
    return f"{count} {plural_noun or (noun + 'es' if noun.endswith(('s', 'x', 'ch', 'sh')) else noun + 's')}"

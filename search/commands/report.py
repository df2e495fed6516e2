"""`tabslim report`: the front of a stored study, as `search.front.study_text` writes it."""

from __future__ import annotations

from search.front import study_text
from search.study import find_study

__all__ = ["study_report"]


def study_report(name: str, storage_url: str | None) -> str:
    """The report of study `name` in `storage_url` (default: the journal under mlruns/)."""
    return study_text(find_study(name, storage_url))

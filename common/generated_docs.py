"""A part of a Markdown document that code renders, between two marker lines.

``python -m <module>`` rewrites the part from the code it documents; a test checks the file
holds what the code renders, so the document always matches the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GeneratedPart:
    doc: Path
    begin: str  # the marker line before the part (the part includes both markers)
    end: str  # the marker line after it

    def current(self, text: str | None = None) -> str:
        """The part as the document holds it now (markers and the end's newline included),
        or "" when the markers are missing."""
        text = self.doc.read_text() if text is None else text
        start, end = text.find(self.begin), text.find(self.end)
        return text[start : end + len(self.end) + 1] if 0 <= start < end else ""

    def main(self, render: Callable[[], str]) -> int:
        """Rewrite the part with ``render()``; 1 when the document lacks the markers."""
        text = self.doc.read_text()
        old = self.current(text)
        if not old:
            print(f"{self.doc} has no generated part (markers {self.begin!r} missing)")
            return 1
        self.doc.write_text(text.replace(old, render()))
        print(f"wrote {self.doc}")
        return 0

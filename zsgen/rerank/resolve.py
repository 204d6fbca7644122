"""Matching what an LLM's answer named — labels, 1-based positions, titles — to the candidates it was shown.

:mod:`zsgen.rerank.parse` extracts the elements of an answer in whichever shape the model used; this module turns
those elements into candidate indices, the same way for every shape, and records each repair it had to make
(an unknown label dropped, a repeat ignored, a title matched loosely), so that a ranking says how it was read.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from zsgen.catalog import normalise_title

Format = Literal["json", "list", "chain", "labels", "titles"]
FUZZY_CUTOFF = 0.8
MIN_SCAN_TITLE = 4  # shorter titles ("Up", "It", "M") are ordinary words in prose
#: Characters of an element considered when matching it to a title ("Toy Story (1995) - a family film ...").
MAX_TITLE_TEXT = 512
MARKUP = re.compile(r"\*\*|__|`+")
PREFIX_WORDS = re.compile(r"^(?:option|candidate|label|item|choice|movie|number|no\.?|#)\s*", re.IGNORECASE)


@dataclass
class Extraction:
    format: Format
    elements: list[str | int]
    notes: list[str] = field(default_factory=list)
    loose: bool = False  # scanned from prose: unknown tokens and repeats are ordinary words, not faults


@dataclass
class Reading:
    picked: list[int]
    notes: list[str]


class Candidates:
    """Looks up labels, 1-based positions and titles of the shown candidates."""

    def __init__(self, labels: Sequence[str], titles: Sequence[str] | None) -> None:
        self.labels = [str(label) for label in labels]
        self.n = len(self.labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.letters = all(len(label) == 1 and label.isascii() and label.isalpha() for label in self.labels)
        self.upper_index = {label.upper(): i for i, label in enumerate(self.labels)} if self.letters else {}
        self.numeric = all(label.isdigit() for label in self.labels)
        self.titles = [str(t) for t in titles] if titles is not None else [""] * self.n
        self.norm_titles = [normalise_title(t) for t in self.titles]
        self.by_title: dict[str, list[int]] = {}
        for i, norm in enumerate(self.norm_titles):
            if norm:
                self.by_title.setdefault(norm, []).append(i)
        specific = "|".join(re.escape(label) for label in sorted(self.labels, key=len, reverse=True) if label)
        self.token = f"(?:{specific}|[A-Za-z]|\\d{{1,4}})" if specific else r"(?:[A-Za-z]|\d{1,4})"
        # Possessive quantifiers (``*+``) and no lazy ``.+?`` before a ``\s*``: a run of spaces must never be split in
        # every possible way, which made answers with long runs of spaces quadratic.
        self.whole_token = re.compile(rf"^[\[(<{{]?\s*+(?P<tok>{self.token})\s*+[\])>}}]?[.:)]?$")
        self.leading_bracketed = re.compile(
            rf"^[\[(]\s*+(?P<tok>{self.token})\s*+[\])]\s*+[.:\-–—]?\s*+(?P<rest>.+)$", re.DOTALL
        )
        self.leading_punctuated = re.compile(rf"^(?P<tok>{self.token})\s*+[.):\-–—]\s++(?P<rest>.+)$", re.DOTALL)
        # Searched, not matched from the start: "Toy Story (A)" is whatever precedes the last bracketed label.
        self.trailing_bracketed = re.compile(rf"[\[(]\s*+(?P<tok>{self.token})\s*+[\])]\Z")

    def label(self, token: str, *, strict_case: bool = False) -> int | None:
        if token in self.index:
            return self.index[token]
        if not strict_case and self.letters:
            return self.upper_index.get(token.upper())
        return None


class Resolver:
    """Turns extracted elements into candidate indices, collecting the repairs it had to make."""

    def __init__(self, cands: Candidates) -> None:
        self.c = cands
        self.picked: list[int] = []
        self.taken: set[int] = set()
        self.notes: list[str] = []
        self._noted: set[str] = set()  # a list scan per note was quadratic in the number of distinct unknown labels
        self._titles: dict[str, int | None] = {}  # fuzzy lookups, by normalised text
        self.used_positions = False

    def note(self, message: str) -> None:
        if message not in self._noted:
            self._noted.add(message)
            self.notes.append(message)

    def take(self, index: int, *, loose: bool) -> None:
        if index in self.taken:
            if not loose:
                self.note(f"dropped duplicate label {self.c.labels[index]}")
            return
        self.taken.add(index)
        self.picked.append(index)

    def number(self, value: int, *, loose: bool) -> int | None:
        as_label = self.c.label(str(value))
        if as_label is not None:
            return as_label
        if self.c.numeric:
            if not loose:
                self.note(f"dropped unknown label {value}")
            return None
        if 1 <= value <= self.c.n:
            self.used_positions = True
            return value - 1
        if not loose:
            self.note(f"dropped out-of-range position {value}")
        return None

    def token(self, tok: str, *, loose: bool) -> int | None:
        found = self.c.label(tok, strict_case=loose)
        if found is not None:
            return found
        if tok.isdigit():
            return self.number(int(tok), loose=loose)
        if not loose:
            self.note(f"dropped unknown label {tok}")
        return None

    def title(self, text: str) -> int | None:
        # Whitespace squeezed and length bounded first: no title is that long, and normalise_title's regexes are
        # not linear on long runs of spaces.
        norm = normalise_title(" ".join(text.split())[:MAX_TITLE_TEXT])
        if not norm:
            return None
        exact = self.c.by_title.get(norm)
        if exact:
            free = [i for i in exact if i not in self.taken]
            return free[0] if free else exact[0]
        if norm in self._titles:
            index = self._titles[norm]
            if index is not None:
                self.note(f"matched title {short(text)!r} fuzzily to {self.c.titles[index]!r}")
            return index
        found = self._fuzzy_title(norm)
        self._titles[norm] = found
        if found is not None:
            self.note(f"matched title {short(text)!r} fuzzily to {self.c.titles[found]!r}")
        return found

    def _fuzzy_title(self, norm: str) -> int | None:
        close = difflib.get_close_matches(norm, list(self.c.by_title), n=1, cutoff=FUZZY_CUTOFF)
        if not close:  # "Toy Story (1995) - a family film": the longest title that starts the text
            prefixes = [t for t in self.c.by_title if len(t) >= MIN_SCAN_TITLE and norm.startswith(t + " ")]
            close = sorted(prefixes, key=len, reverse=True)[:1]
        return self.c.by_title[close[0]][0] if close else None

    def element(self, element: str | int, *, loose: bool = False) -> None:
        """Resolve one element: a label in any dress, a number, or a title."""
        if isinstance(element, int):
            found = self.number(element, loose=loose)
            if found is not None:
                self.take(found, loose=loose)
            return
        text = MARKUP.sub("", element).strip().strip("\"'“”‘’").strip()
        text = text.rstrip(",;").strip()
        if not text:
            return
        bare = PREFIX_WORDS.sub("", text) if len(text) <= 20 else text
        c = self.c
        whole = c.whole_token.match(bare)
        if whole:
            found = self.token(whole.group("tok"), loose=loose)
            if found is not None:
                self.take(found, loose=loose)
            return
        for pattern in (c.leading_bracketed, c.leading_punctuated):
            lead = pattern.match(text)
            if not lead:
                continue
            tok = lead.group("tok")
            labelled = c.label(tok)
            if labelled is not None:
                self.take(labelled, loose=loose)
                return
            if tok.isdigit():  # "3. Heat" with letter labels: a rank, or a position if the title is unknown
                by_title = self.title(lead.group("rest"))
                found = by_title if by_title is not None else self.number(int(tok), loose=loose)
                if found is not None:
                    self.take(found, loose=loose)
                return
        trail = c.trailing_bracketed.search(text)  # "Toy Story (A)"; never "Heat (1995)"
        trail = trail if trail is not None and trail.start() > 0 else None
        trailing = c.label(trail.group("tok"), strict_case=True) if trail and trail.group("tok").isalpha() else None
        if trailing is not None:
            self.take(trailing, loose=loose)
            return
        found = self.title(text)
        if found is not None:
            self.take(found, loose=loose)
        elif not loose:
            self.note(f"dropped unknown title {short(text)!r}")


def short(text: str, limit: int = 60) -> str:
    text = " ".join(text[: limit * 8].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

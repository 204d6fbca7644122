"""Reading an LLM's answer as a ranking of the candidates it was shown.

Models answer in many shapes even when asked for one: JSON (bare, fenced, wrapped in prose, cut off), numbered lists,
``C > A > B`` chains, lines of labels, titles instead of labels. :func:`parse_ranking` tries the structured readings
first and loose scanning of prose last, because loose scanning is where the article "A" or the pronoun "I" could be
mistaken for a label. Whatever it reads is repaired the same way: unknown labels and duplicates are dropped, missing
candidates are appended in the caller's fallback order, and every repair is reported. The result is always a
permutation of the candidates, or :class:`~zsgen.errors.ParseError` when nothing usable was said.

Answers are untrusted input, so the cost of reading one is bounded: every reading is a single pass or a regex that
cannot backtrack quadratically (possessive quantifiers, no lazy ``.*?`` before a run it could split), and the answer
is cut at :data:`MAX_ANSWER_CHARS` before it is read (``evaluation/perf/bench_parser.py`` measures both).
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from zsgen.errors import ParseError
from zsgen.rerank.resolve import MARKUP, MIN_SCAN_TITLE, Candidates, Extraction, Format, Reading, Resolver, short

#: Keys under which models put the ranked list, most specific first.
_RANKING_KEYS = (
    "ranking",
    "ranked",
    "rankings",
    "recommendations",
    "recommended",
    "order",
    "labels",
    "items",
    "answer",
    "result",
    "results",
    "candidates",
    "movies",
    "picks",
)
_LABEL_KEYS = ("label", "letter", "option", "candidate", "choice", "id", "index", "rank_label")
_TITLE_KEYS = ("title", "name", "item", "movie")
_MAX_JSON_STARTS = 400

#: Longest answer (after any ``<think>`` block is removed) that is read; the rest is cut off, and the cut is reported
#: as a repair. A ranking of a hundred candidates, explained line by line, is a few thousand characters: the cap
#: leaves ten times that, and bounds the work a hostile or runaway answer can cause (every reading is linear, but
#: fuzzy title matching is not free).
MAX_ANSWER_CHARS = 32_768
#: Elements read from one extraction, per candidate shown (plus a little slack): a model that lists more has long
#: stopped ranking, and each unknown element costs a fuzzy title lookup.
_ELEMENTS_PER_CANDIDATE = 3
_ELEMENTS_SLACK = 20

_THINK_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_LIST_LINE = re.compile(
    r"^\s*+(?:\d{1,3}\s*+[.):]|[-*•+]|#\s*+\d{1,3}\s*+[.):]?|(?:rank|top)\s*+\d{1,3}\s*+[.:)\-])\s*+(?P<rest>\S.*)$",
    re.IGNORECASE,
)
# A string that runs to the end of the text is consumed too (and skipped by the caller): were it left unmatched, every
# later quote would rescan to the end, which is quadratic on answers like '["' + '\\"' * n.
_STRING_OR_NUMBER = re.compile(r'"((?:[^"\\]++|\\.)*+)("|\Z)|(?<![\w.])(\d{1,4})(?![\w.])', re.DOTALL)
_TRUNCATED_JSON = re.compile(r'(?:"[A-Za-z_]+"\s*+:\s*+|\A\s*+)\[(?P<rest>[^\]]*+)\Z', re.DOTALL)
_ABBREVIATION = re.compile(r"\.[A-Za-z]")
_NEXT_LOWER_WORD = re.compile(r"\s+([a-z]+)")
_NEXT_CAPITAL = re.compile(r"\s+[A-Z][a-z]")
_PREVIOUS_WORD = re.compile(r"([A-Za-z]+)[ \t]+\Z")
# After a bare capital letter in prose, these words still read as "the label ... ": "C is", "A and B", "B then".
_LABEL_FOLLOWERS = frozenset(
    {"and", "or", "then", "is", "was", "as", "comes", "followed", "because", "since", "seems", "would", "should",
     "might", "may", "fits", "matches", "has", "over", "before", "after", "vs", "ranks", "looks", "stands"}
)  # fmt: skip


class ParsedRanking(BaseModel):
    """A validated reading of one answer.

    ``order`` is always a permutation of ``range(len(labels))``; its first ``from_llm`` positions are what the model
    said, the rest were appended in fallback order.
    """

    model_config = ConfigDict(frozen=True)

    order: list[int]
    from_llm: int
    status: Literal["ok", "repaired"]
    repairs: list[str]
    format: Format
    raw_text: str


def _strip_thinking(text: str) -> str:
    """The answer without its reasoning: ``<think>...</think>`` blocks removed, everything before a closing tag whose
    opening tag was part of the prompt dropped, and everything from an unclosed opening tag on dropped (the model ran
    out of tokens while thinking: nothing after it is an answer).

    One pass over the tags. A regex pairing each ``<think>`` with the next ``</think>`` rescans the rest of the text
    from every unclosed tag, which made answers repeating ``<think>`` quadratic.
    """
    kept: list[str] = []
    position = 0  # start of the text not yet kept or dropped
    opened: int | None = None  # where the block being skipped opened
    for tag in _THINK_TAG.finditer(text):
        if tag.group(1):  # </think>
            if opened is None:  # its <think> was in the prompt: all before it was thinking
                kept = []
            opened = None
            position = tag.end()
        elif opened is None:
            kept.append(text[position : tag.start()])
            opened = tag.start()
    if opened is None:
        kept.append(text[position:])
    return "".join(kept).strip()


# -- extractors: each finds one kind of structure, or returns None -------------------------------------------------


def _json_values(text: str) -> Iterator[tuple[Any, bool]]:
    """Decoded JSON values in the text, each with whether it stood alone (whole answer or a fenced block)."""
    blocks = [m.group(1).strip() for m in _FENCE.finditer(text)]
    for block in [text.strip(), *blocks]:
        try:
            value = json.loads(block)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder's stack ('[' * 5000)
            continue
        yield value, True
    decoder = json.JSONDecoder()
    # Each failed attempt may read to the end of the text; a budget of a few text lengths keeps the scan linear.
    budget = 4 * len(text) + 4096
    end = -1
    for found in itertools.islice(re.finditer(r"[\[{]", text), _MAX_JSON_STARTS):
        start = found.start()
        if start < end:
            continue
        if budget <= 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            budget -= max(exc.pos - start, 1)
            continue
        except (ValueError, RecursionError):
            budget -= min(len(text) - start, 4096)
            continue
        budget -= end - start
        yield value, False


def _json_list(value: Any, depth: int = 0) -> list[Any] | str | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and depth < 2:
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in _RANKING_KEYS:
            if isinstance(lowered.get(key), list | str):
                found: list[Any] | str = lowered[key]
                return found
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
        for inner in value.values():
            nested = _json_list(inner, depth + 1)
            if nested is not None:
                return nested
    return None


def _json_element(value: Any) -> str | int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in (*_LABEL_KEYS, *_TITLE_KEYS):
            inner = lowered.get(key)
            if isinstance(inner, str | int) and not isinstance(inner, bool):
                return inner
    return None


def _from_json(text: str, c: Candidates) -> Extraction | None:
    for value, alone in _json_values(text):
        found = _json_list(value)
        if isinstance(found, str):  # {"ranking": "C, A, B"}
            line = _from_label_line(found, c)
            if line is not None:
                return Extraction("json", line.elements)
            return Extraction("json", [found])
        if found is None or not found:
            continue
        if isinstance(value, list) and not alone and len(found) < 2:
            continue  # "[3]" inside prose is a bracketed label, not a JSON answer
        elements: list[str | int] = []
        unreadable = 0
        for item in found:
            element = _json_element(item)
            if element is None:
                unreadable += 1
                continue
            several = _from_label_line(element, c) if isinstance(element, str) else None
            if several is not None and len(several.elements) > 1:  # ["C A B"]: one string holding the ranking
                elements.extend(several.elements)
            else:
                elements.append(element)
        notes = [f"dropped {unreadable} unreadable JSON element{'s' if unreadable != 1 else ''}"] if unreadable else []
        return Extraction("json", elements, notes)
    unfenced = _FENCE.sub(lambda m: m.group(1), text)
    # A truncated list runs to the end, so it opens after the last "]": searching from there keeps the scan linear.
    salvage = _TRUNCATED_JSON.search(unfenced, unfenced.rfind("]") + 1)
    if salvage:
        elements = []
        for m in _STRING_OR_NUMBER.finditer(salvage.group("rest")):
            if m.group(1) is not None:
                if not m.group(2):
                    continue  # a string cut off by the truncation
                try:
                    elements.append(json.loads(f'"{m.group(1)}"'))
                except ValueError:
                    elements.append(m.group(1))
            else:
                elements.append(int(m.group(3)))
        if elements:
            return Extraction("json", elements, ["salvaged truncated JSON"])
    return None


def _from_chain(text: str, c: Candidates) -> Extraction | None:
    tok = rf"(?:\[\s*+{c.token}\s*+\]|\(\s*+{c.token}\s*+\)|(?<![\w'’]){c.token}(?![\w'’]))"
    chain = re.compile(rf"{tok}(?:\s*+(?:->|→|>>?)\s*+{tok})+")
    best = max((m.group(0) for m in chain.finditer(text)), key=lambda s: len(re.split(r"->|→|>>?", s)), default=None)
    if best is None:
        return None
    parts = [p.strip() for p in re.split(r"->|→|>>?", best)]
    return Extraction("chain", [p for p in parts if p])


def _from_list(text: str, c: Candidates) -> Extraction | None:
    elements: list[str | int] = []
    for line in text.splitlines():
        match = _LIST_LINE.match(line)
        if match:
            elements.append(match.group("rest"))
        elif c.leading_bracketed.match(line.strip()) or c.leading_punctuated.match(line.strip()):
            elements.append(line.strip())  # "(B) Toy Story" / "B. Toy Story" lines
    return Extraction("list", elements) if elements else None


def _from_label_line(text: str, c: Candidates) -> Extraction | None:
    """Lines made only of labels ("C, A, B", "Answer: C A B"); consecutive such lines read as one answer."""
    shape = re.compile(rf"^[\[(]?\s*{c.token}\s*[\])]?[.)]?$")
    best: list[str] = []
    run: list[str] = []
    for line in [*text.splitlines(), ""]:
        body = MARKUP.sub("", line).strip()
        if ":" in body:
            body = body.rsplit(":", 1)[1]
        tokens = [t for t in re.split(r"[,;|/\s]+|>|\band\b|\bthen\b", body.strip().rstrip(".")) if t]
        if tokens and all(shape.match(t) for t in tokens):
            run.extend(tokens)
            continue
        if len(run) > len(best):
            best = run
        run = []
    return Extraction("labels", list(best)) if best else None


def _from_loose_labels(text: str, c: Candidates, *, bare: bool = True) -> Extraction | None:
    """Labels mentioned in prose: bracketed ones anywhere, bare capitals only where they cannot be words.

    ``bare=False`` skips bare capitals altogether: inside a JSON answer whose list named no candidate, a capital in
    "Not A Candidate" is a word of a string the model wrote, not a label it chose.
    """
    found: list[str | int] = []
    pattern = re.compile(
        rf"[\[(]\s*(?P<br>{c.token})\s*[\])]"
        rf"|\b(?:option|candidate|label|choice)\s+(?P<named>{c.token})\b"
        rf"|(?<![\w'’.\-])(?P<bare>[A-Z])(?![\w'’\-])",
        re.IGNORECASE,
    )
    for m in pattern.finditer(text):
        if m.group("br"):
            tok = m.group("br")
            if tok.isalpha() and tok != tok.upper():
                continue  # "(a)" in prose is an enumeration, not label A
            found.append(int(tok) if tok.isdigit() and not c.numeric else tok)
            continue
        tok = m.group("named") or m.group("bare")
        if tok.isdigit():
            found.append(tok if c.numeric else int(tok))
            continue
        if tok != tok.upper() or not c.letters or not bare or _reads_as_word(tok, text, m.end(), m.start()):
            continue
        found.append(tok)
    return Extraction("labels", found, ["read labels from free text"], loose=True) if found else None


def _reads_as_word(letter: str, text: str, after: int, before: int | None = None) -> bool:
    """Whether the capital letter ending at ``text[after]`` is more likely a word than a label: "A great film",
    "I think", "E.T.", or a letter inside a Title Case phrase ("Not A Candidate"). Positions, not slices: slicing
    the rest of the text at every capital was quadratic."""
    if _ABBREVIATION.match(text, after):  # "E.T." and other abbreviations
        return True
    word = _NEXT_LOWER_WORD.match(text, after)
    if word is not None:
        return letter == "I" or word.group(1) not in _LABEL_FOLLOWERS
    if before is None or _NEXT_CAPITAL.match(text, after) is None:
        return False
    previous = _PREVIOUS_WORD.search(text, max(before - 40, 0), before)
    return previous is not None and previous.group(1)[0].isupper() and len(previous.group(1)) > 1


def _from_title_scan(text: str, c: Candidates) -> Extraction | None:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    haystack = " " + re.sub(r"[^0-9a-zA-Z]+", " ", folded).lower() + " "
    hits: list[tuple[int, int, int]] = []
    for norm, indices in c.by_title.items():
        if len(norm) < MIN_SCAN_TITLE:
            continue
        pos = haystack.find(f" {norm} ")
        if pos >= 0:
            hits.append((pos, -len(norm), indices[0]))
    hits.sort()
    covered_until = -1
    order: list[str | int] = []
    for pos, neg_len, index in hits:
        if pos < covered_until:
            continue  # "Toy Story" inside "Toy Story 2"
        covered_until = pos - neg_len
        order.append(c.titles[index])
    return Extraction("titles", order, ["read titles from free text"], loose=True) if order else None


_Extractor = Callable[[str, Candidates], Extraction | None]
#: Tried group by group; within a group the reading that names the most candidates wins.
_EXTRACTOR_GROUPS: tuple[tuple[_Extractor, ...], ...] = (
    (_from_json,),
    (_from_chain, _from_list, _from_label_line),
    (_from_loose_labels,),
    (_from_title_scan,),
)


def _resolve(extraction: Extraction, c: Candidates) -> Reading:
    resolver = Resolver(c)
    limit = _ELEMENTS_PER_CANDIDATE * c.n + _ELEMENTS_SLACK
    for element in extraction.elements[:limit]:
        resolver.element(element, loose=extraction.loose)
    notes = [*extraction.notes, *resolver.notes]
    if len(extraction.elements) > limit and not extraction.loose:
        notes.append(f"ignored {len(extraction.elements) - limit} elements past the first {limit}")
    if resolver.used_positions:
        notes.append("read numbers as 1-based positions")
    return Reading(resolver.picked, notes)


def _read(text: str, c: Candidates) -> tuple[Extraction, Reading]:
    """The best reading of an answer: JSON if any, else the richest structured one, else loose scans of prose.

    Answers longer than :data:`MAX_ANSWER_CHARS` (once thinking is removed) are cut there first, and the cut is the
    first repair reported.
    """
    body = _strip_thinking(text)
    if not body:
        raise ParseError("the answer is empty", raw_text=text)
    cut: list[str] = []
    if len(body) > MAX_ANSWER_CHARS:
        cut = [f"cut the answer from {len(body)} to its first {MAX_ANSWER_CHARS} characters"]
        body = body[:MAX_ANSWER_CHARS]
    failures: list[str] = []
    json_list_named_nothing = False
    for group in _EXTRACTOR_GROUPS:
        readings: list[tuple[Extraction, Reading]] = []
        for extractor in group:
            if extractor is _from_loose_labels and json_list_named_nothing:
                extraction = _from_loose_labels(body, c, bare=False)
            else:
                extraction = extractor(body, c)
            if extraction is None:
                continue
            reading = _resolve(extraction, c)
            if reading.picked:
                readings.append((extraction, reading))
            else:
                json_list_named_nothing = json_list_named_nothing or extraction.format == "json"
                failures.append(f"{extraction.format}: {'; '.join(reading.notes) or 'nothing usable'}")
        if readings:  # max keeps the first of equals, so ties go to the earlier (more structured) reading
            extraction, reading = max(readings, key=lambda pair: len(pair[1].picked))
            return extraction, Reading(reading.picked, [*cut, *reading.notes])
    detail = f" ({short(' | '.join(failures), 2000)})" if failures else ""
    raise ParseError(f"no candidate label or title found in the answer{detail}", raw_text=text)


def parse_ranking(
    text: str,
    labels: Sequence[str],
    titles: Sequence[str],
    *,
    fallback_order: Sequence[int] | None = None,
    expected: int | None = None,
) -> ParsedRanking:
    """Read ``text`` as a ranking of the candidates labelled ``labels`` (titles in the same order).

    ``fallback_order`` decides where candidates the model left out go (default: shown order). ``expected`` is how
    many labels the prompt asked for: once the model gave that many, appending the rest is not counted as a repair.
    Raises :class:`ParseError` when the answer names no candidate at all.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("parse_ranking needs at least one candidate label")
    if len(titles) != n:
        raise ValueError(f"{n} labels but {len(titles)} titles")
    if len({str(label) for label in labels}) != n:
        raise ValueError("candidate labels must be distinct")
    fallback = list(range(n)) if fallback_order is None else [int(i) for i in fallback_order]
    if sorted(fallback) != list(range(n)):
        raise ValueError("fallback_order must be a permutation of range(len(labels))")
    raw = text if isinstance(text, str) else ""
    extraction, reading = _read(raw, Candidates(labels, titles))
    taken = set(reading.picked)
    rest = [i for i in fallback if i not in taken]
    repairs = list(reading.notes)
    if rest and (expected is None or len(reading.picked) < min(expected, n)):
        repairs.append(f"appended {len(rest)} missing candidate{'s' if len(rest) != 1 else ''}")
    return ParsedRanking(
        order=[*reading.picked, *rest],
        from_llm=len(reading.picked),
        status="repaired" if repairs else "ok",
        repairs=repairs,
        format=extraction.format,
        raw_text=raw,
    )


def parse_single_label(text: str, labels: Sequence[str]) -> int:
    """The index of the one label a verbalizer-style answer gives ("C", " (C)", "C. Toy Story", "The answer is C")."""
    if not labels:
        raise ValueError("parse_single_label needs at least one label")
    raw = text if isinstance(text, str) else ""
    c = Candidates(labels, None)
    body = _strip_thinking(raw)
    lead = re.match(rf"^\W{{0,3}}(?P<tok>{c.token})(?![\w'’])", body)
    if lead:
        tok, after = lead.group("tok"), body[lead.end() :]
        alone = not after.strip(" .)]:")
        found = c.label(tok, strict_case=not alone)
        if found is not None and (alone or not _reads_as_word(tok, body, lead.end())):
            return found
    _, reading = _read(raw, c)
    return reading.picked[0]

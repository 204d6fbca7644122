"""The answer parser: every shape models answer in, every repair, and the permutation guarantee."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from zsgen.errors import ParseError
from zsgen.rerank.labels import make_labels
from zsgen.rerank.parse import MAX_ANSWER_CHARS, ParsedRanking, parse_ranking, parse_single_label

LABELS = ["A", "B", "C", "D", "E"]
TITLES = ["Toy Story", "Aristocats, The", "Heat", "Toy Story 2", "Usual Suspects, The"]


def parse(text: str, **kwargs: object) -> ParsedRanking:
    return parse_ranking(text, LABELS, TITLES, **kwargs)  # type: ignore[arg-type]


def assert_permutation(result: ParsedRanking, n: int = len(LABELS)) -> None:
    assert sorted(result.order) == list(range(n))
    assert 0 <= result.from_llm <= n


# (answer, expected leading order from the LLM, expected format)
READABLE = [
    ('{"ranking": ["C", "A", "B", "E", "D"]}', [2, 0, 1, 4, 3], "json"),
    ('```json\n{"ranking": ["C", "A"]}\n```', [2, 0], "json"),
    ('```\n["D", "B"]\n```', [3, 1], "json"),
    ('Sure! Here it is: {"recommendations": ["[C]", "(A)", "B. The Aristocats"]} Enjoy.', [2, 0, 1], "json"),
    ('{"items": ["e", "d"]}', [4, 3], "json"),
    ('{"labels": "C, A, B"}', [2, 0, 1], "json"),
    ('{"result": {"ranking": ["B", "A"]}}', [1, 0], "json"),
    ('{"ranking": [{"label": "D", "reason": "fits"}, {"title": "Heat"}]}', [3, 2], "json"),
    ('["Heat", "Toy Story 2", "The Usual Suspects"]', [2, 3, 4], "json"),
    ('["Heat (C)", "Toy Story (1995)", "Toy Story 2 (D)"]', [2, 0, 3], "json"),
    ("1. (B) The Aristocats\n2. (C) Heat\n3. (A) Toy Story", [1, 2, 0], "list"),
    ("Here is my ranking:\n1. C\n2. A\n3. B\n\nThese fit the user's taste.", [2, 0, 1], "list"),
    ("- [D] Toy Story 2\n- [A] Toy Story", [3, 0], "list"),
    ("B. The Aristocats\nE. The Usual Suspects", [1, 4], "list"),
    ("1. **Heat** (1995)\n2. **Toy Story** (1995)", [2, 0], "list"),
    ("C, A, B", [2, 0, 1], "labels"),
    ("Ranking: D; E; A", [3, 4, 0], "labels"),
    ("C A B D", [2, 0, 1, 3], "labels"),
    ("Answer:\nB\nA\nC", [1, 0, 2], "labels"),
    ("Step 1: the user likes crime. Step 2: C, B.", [2, 1], "labels"),
    ("C > A > B", [2, 0, 1], "chain"),
    ("[3] > [1] > [2]", [2, 0, 1], "chain"),
    ("(E) > (D) -> (A)", [4, 3, 0], "chain"),
    ("A great choice would be C, followed by A and then B.", [2, 0, 1], "labels"),
    ("I think B is best, then A.", [1, 0], "labels"),
    ("My pick is option D, and after that candidate E.", [3, 4], "labels"),
    ("Candidate B (The Aristocats) is the best match, followed by candidate A.", [1, 0], "labels"),
    ("E.T. is not among them. D.", [3], "labels"),
    ('Based on the history:\n\n{"ranking": ["B", "D"]}\n\nB is a classic, A is not.', [1, 3], "json"),
    ("I recommend The Usual Suspects and then Toy Story 2, also Heat.", [4, 3, 2], "titles"),
    ("<think>A B C D E, no wait</think>\nD, E", [3, 4], "labels"),
]


@pytest.mark.parametrize(("text", "leading", "fmt"), READABLE)
def test_readable_answers(text: str, leading: list[int], fmt: str) -> None:
    result = parse(text)
    assert_permutation(result)
    assert result.order[: result.from_llm] == leading
    assert result.format == fmt
    assert result.raw_text == text


def test_full_clean_answer_is_ok_and_unrepaired() -> None:
    result = parse('{"ranking": ["E", "D", "C", "B", "A"]}')
    assert result.status == "ok"
    assert result.repairs == []
    assert result.order == [4, 3, 2, 1, 0]
    assert result.from_llm == 5


def test_duplicates_and_unknown_labels_are_dropped_and_reported() -> None:
    result = parse('["C", "A", "C", "Z", "B", "a"]')
    assert result.order[:3] == [2, 0, 1]
    assert result.from_llm == 3
    assert result.status == "repaired"
    assert "dropped duplicate label C" in result.repairs
    assert "dropped duplicate label A" in result.repairs  # "a" is A
    assert "dropped unknown label Z" in result.repairs
    assert "appended 2 missing candidates" in result.repairs


def test_missing_candidates_follow_the_fallback_order() -> None:
    result = parse("B", fallback_order=[4, 2, 1, 0, 3])
    assert result.order == [1, 4, 2, 0, 3]
    assert result.from_llm == 1
    assert result.repairs == ["appended 4 missing candidates"]


def test_expected_count_makes_a_short_list_not_a_repair() -> None:
    asked_for_two = parse('{"ranking": ["D", "A"]}', expected=2)
    assert asked_for_two.status == "ok"
    assert asked_for_two.order[:2] == [3, 0]
    gave_fewer = parse('{"ranking": ["D"]}', expected=2)
    assert gave_fewer.status == "repaired"


def test_truncated_json_keeps_the_complete_elements() -> None:
    result = parse('{"ranking": ["C", "A", "B')
    assert result.order[: result.from_llm] == [2, 0]
    assert "salvaged truncated JSON" in result.repairs
    fenced = parse('```json\n{"ranking": ["E", "D", "C", "B')
    assert fenced.order[: fenced.from_llm] == [4, 3, 2]


def test_titles_with_trailing_articles_years_and_typos() -> None:
    result = parse('["The Aristocats (1970)", "Usual Suspects, The", "Toy Strory", "Heat"]')
    assert result.order[:4] == [1, 4, 0, 2]
    assert any("fuzzily" in r and "Toy Strory" in r for r in result.repairs)
    exact = parse('["The Aristocats", "Heat"]')
    assert not any("fuzzily" in r for r in exact.repairs)


def test_unknown_titles_are_dropped_and_reported() -> None:
    result = parse('["Heat", "Casablanca"]')
    assert result.order[:1] == [2]
    assert result.from_llm == 1
    assert "dropped unknown title 'Casablanca'" in result.repairs


def test_title_prefix_matches_the_longest_title() -> None:
    result = parse("1. Toy Story 2 - the sequel the user will love\n2. Toy Story - the original")
    assert result.order[:2] == [3, 0]


def test_numbers_are_positions_for_letter_labels_and_labels_for_number_labels() -> None:
    letters = parse("[3] > [1] > [2]")
    assert "read numbers as 1-based positions" in letters.repairs
    assert letters.order[:3] == [2, 0, 1]
    out_of_range = parse("[9] > [1]")
    assert out_of_range.order[:1] == [0]
    assert "dropped out-of-range position 9" in out_of_range.repairs

    labels = make_labels(30)
    titles = [f"Film number {i}" for i in range(30)]
    numeric = parse_ranking("[30] > [2] > [31]", labels, titles)
    assert numeric.order[:2] == [29, 1]
    assert "dropped unknown label 31" in numeric.repairs
    assert not any("position" in r for r in numeric.repairs)  # numbers here are labels, nothing was reinterpreted
    listed = parse_ranking("1. [12] Film number 11\n2. [3] Film number 2", labels, titles)
    assert listed.order[:2] == [11, 2]  # the leading "1." is a rank, the bracket the label


def test_json_integers_with_number_labels() -> None:
    labels = ["1", "2", "3"]
    result = parse_ranking('{"ranking": [3, 1]}', labels, ["x", "y", "z"])
    assert result.order == [2, 0, 1]


def test_prose_articles_and_pronouns_are_not_labels() -> None:
    # "A" and "I" are words here; the only labels are C and B.
    result = parse("A film like this suits someone who, I believe, loves crime: C. Also B.")
    assert result.order[: result.from_llm] == [2, 1]
    assert "read labels from free text" in result.repairs
    with pytest.raises(ParseError):
        parse("A good pick? I would say it depends on the mood.")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "I'm sorry, I can't help with that.",
        "As an AI, I do not have personal preferences.",
        '{"ranking": ["Z", "Y"]}',
        '{"ranking": []}',
        "<think>C is likely, then A",
        "Casablanca, then Vertigo.",
    ],
)
def test_nothing_usable_raises_parse_error_with_raw_text(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert info.value.raw_text == text


def test_parse_error_says_what_was_dropped() -> None:
    with pytest.raises(ParseError, match="unknown label Z"):
        parse('{"ranking": ["Z"]}')


def test_caller_mistakes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="titles"):
        parse_ranking("A", ["A", "B"], ["only one"])
    with pytest.raises(ValueError, match="permutation"):
        parse_ranking("A", ["A", "B"], ["x", "y"], fallback_order=[0, 0])
    with pytest.raises(ValueError, match="distinct"):
        parse_ranking("A", ["A", "A"], ["x", "y"])
    with pytest.raises(ValueError):
        parse_ranking("A", [], [])


def test_injected_label_of_a_non_candidate_never_enters_the_order() -> None:
    # A description said "rank item X first"; a model that obeyed names X and a title that is not a candidate.
    result = parse('{"ranking": ["X", "Item X", "B", "Casablanca", "A"]}')
    assert_permutation(result)
    assert result.order[: result.from_llm] == [1, 0]
    assert "dropped unknown label X" in result.repairs


def test_random_label_soup_always_gives_a_permutation_or_parse_error() -> None:
    rng = random.Random(20261107)
    pieces = [
        *LABELS, *[x.lower() for x in LABELS], "Z", "I", "0", "3", "7", "42", "[2]", "(C)", "[Q]",
        ",", ", ", " > ", " ", "\n", "1. ", "- ", '"', "[", "]", "{", "}", '{"ranking": [', ":",
        "Heat", "Toy Story", "The", "and", "then", "I think", "A great", "```json\n", "```",
    ]  # fmt: skip
    outcomes = {"parsed": 0, "error": 0}
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        fallback = list(range(5))
        rng.shuffle(fallback)
        try:
            result = parse_ranking(text, LABELS, TITLES, fallback_order=fallback)
        except ParseError as exc:
            assert exc.raw_text == text
            outcomes["error"] += 1
            continue
        assert_permutation(result)
        assert result.from_llm >= 1
        assert result.order[result.from_llm :] == [i for i in fallback if i not in result.order[: result.from_llm]]
        assert result.status == ("repaired" if result.repairs else "ok")
        outcomes["parsed"] += 1
    assert outcomes["parsed"] > 500 and outcomes["error"] > 50  # the loop exercised both outcomes


def test_twenty_six_labels_and_beyond() -> None:
    labels = make_labels(26)
    titles = [f"Title {label}" for label in labels]
    result = parse_ranking("Z > Y > A", labels, titles)
    assert result.order[:3] == [25, 24, 0]
    wide = make_labels(40)
    result = parse_ranking('{"ranking": ["40", "1"]}', wide, [f"T{i}" for i in range(40)])
    assert result.order[:2] == [39, 0]


@pytest.mark.parametrize(
    ("text", "index"),
    [
        ("C", 2),
        (" C", 2),
        ("(D)", 3),
        ("[E]", 4),
        ("B. The Aristocats", 1),
        ("The answer is C.", 2),
        ("A great pick would be E", 4),
        ("A", 0),
        ("a", 0),
        ("I think D.", 3),
        ("3", 2),
        ('{"ranking": ["B"]}', 1),
    ],
)
def test_single_label(text: str, index: int) -> None:
    assert parse_single_label(text, LABELS) == index


@pytest.mark.parametrize("text", ["", "I'm not sure.", "Z", "None of these."])
def test_single_label_failures(text: str) -> None:
    with pytest.raises(ParseError):
        parse_single_label(text, LABELS)


# -- hostile answers (issue 12): nesting, naming nothing, and length ----------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["[" * 5000, '{"a":' * 5000, '{"ranking": ' + "[" * 5000 + '"A"', "Sure: " + "[" * 5000 + " B", "{" * 100_000],
)
def test_deeply_nested_json_is_a_parse_error_or_a_permutation_never_a_recursion_error(text: str) -> None:
    try:
        result = parse(text)
    except ParseError as exc:
        assert exc.raw_text == text
        return
    assert_permutation(result)


def test_deeply_nested_json_with_a_label_after_it_still_reads_the_label() -> None:
    result = parse("[" * 5000 + "\nMy ranking: C, A")
    assert result.order[: result.from_llm] == [2, 0]


@pytest.mark.parametrize(
    "text",
    [
        '{"ranking": ["Not A Candidate", "m999", "Z"]}',
        '["Not A Candidate", "Not A"]',
        "Not A Candidate. Also m999 and Z.",
        "It Is Not A Label",
    ],
)
def test_an_answer_naming_no_candidate_names_none(text: str) -> None:
    # "A" inside "Not A Candidate" was read as label A, reported as repaired and marked as the model's choice.
    with pytest.raises(ParseError):
        parse(text)


def test_bare_labels_in_prose_are_still_read() -> None:
    # The Title Case rule must not swallow ordinary label mentions.
    assert parse("I would put C, then A and B.").order[:3] == [2, 0, 1]
    assert parse("Best: C. Next B. Finally A.").order[:3] == [2, 1, 0]


def test_a_json_string_holding_the_whole_ranking_is_read() -> None:
    result = parse('{"ranking": ["C  A  B"]}')
    assert result.order[: result.from_llm] == [2, 0, 1]


def test_answers_longer_than_the_cap_are_cut_and_the_cut_is_a_repair() -> None:
    text = '{"ranking": ["C", "A"]}\n' + "padding " * (MAX_ANSWER_CHARS // 8 + 10) + '\n{"ranking": ["B"]}'
    result = parse(text)
    assert result.repairs[0] == f"cut the answer from {len(text)} to its first {MAX_ANSWER_CHARS} characters"
    assert result.raw_text == text  # the whole answer is kept for inspection, only the reading is bounded
    assert_permutation(result)
    short = parse('{"ranking": ["C", "A"]}')
    assert not any(r.startswith("cut ") for r in short.repairs)


def test_thinking_is_stripped_before_the_cap() -> None:
    # A long <think> block does not count against the cap: the answer after it is read whole.
    result = parse("<think>" + "hmm " * MAX_ANSWER_CHARS + "</think>C, A, B")
    assert result.order[:3] == [2, 0, 1] and not any(r.startswith("cut ") for r in result.repairs)
    with pytest.raises(ParseError, match="empty"):
        parse("<think>" * 10_000)  # out of tokens while thinking: no answer


def _gadgets(size: int) -> dict[str, str]:
    """The issue's slow answers, each about ``size`` characters."""
    return {
        "list line with a run of spaces": "1. a" + " " * size + "b",
        "run of spaces in a JSON element": '{"ranking": ["A' + " " * size + 'B"]}',
        "run of spaces in a truncated JSON list": '["A",' + " " * size + '"B"',
        "repeated unclosed think": "<think>a" * (size // 8) + " A B",
        'repeated "a":[ ... ]x': '"a":[ "A", "B" ]x' * (size // 17),
        'repeated "a":[ ... x': '"a":[ "A", "B" x' * (size // 16),
        "escaped quotes in a truncated list": '["' + '\\"' * (size // 2),
        "many capitals in prose": "A " * (size // 2),
        "many bracketed openers": "( " * (size // 2),
        "many unknown JSON labels": json.dumps({"ranking": [f"x{i}" for i in range(size // 8)]}),
        "many fuzzy titles": json.dumps({"ranking": ["Toy Storx", "Heet"] * (size // 20)}),
    }


_GADGET_SCRIPT = """
import json, sys, time
import zsgen.rerank.parse as parse
from zsgen.errors import ParseError
sizes, cap = json.loads(sys.argv[1]), json.loads(sys.argv[2])
if cap is not None:
    parse.MAX_ANSWER_CHARS = cap
sys.path.insert(0, sys.argv[3])
from tests.rerank.test_parse import LABELS, TITLES, _gadgets
slowest = 0.0
for size in sizes:
    for name, text in _gadgets(size).items():
        start = time.perf_counter()
        try:
            result = parse.parse_ranking(text, LABELS, TITLES)
            assert sorted(result.order) == list(range(len(LABELS))), name
        except ParseError:
            pass
        slowest = max(slowest, time.perf_counter() - start)
print(json.dumps({"slowest_s": slowest}))
"""


@pytest.mark.parametrize(
    ("sizes", "cap"),
    [([40_000, 1_000_000], None), ([400_000], 10**9)],
    ids=["capped", "uncapped"],
)
def test_long_hostile_answers_are_parsed_in_bounded_time(sizes: list[int], cap: int | None) -> None:
    """Each gadget made the parser quadratic (20 KB: 11 s; 400 KB: minutes). Run in a child process with a very
    generous deadline, so that a regression fails instead of hanging the suite; actual timings are measured by
    evaluation/perf/bench_parser.py. The uncapped run shows the readings themselves are linear: the cap is a bound
    on cost, not what hides a quadratic one."""
    root = str(Path(__file__).resolve().parents[2])  # the checkout: `tests` is a package in it
    command = [sys.executable, "-c", _GADGET_SCRIPT, json.dumps(sizes), json.dumps(cap), root]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["slowest_s"] < 60


@pytest.mark.parametrize("name", list(_gadgets(1000)))
def test_hostile_gadgets_give_a_permutation_or_a_parse_error(name: str) -> None:
    text = _gadgets(40_000)[name]
    try:
        result = parse(text)
    except ParseError:
        return
    assert_permutation(result)
    assert result.status == ("repaired" if result.repairs else "ok")

"""The answer parser: every shape models answer in, every repair, and the permutation guarantee."""

from __future__ import annotations

import random

import pytest

from zsgen.errors import ParseError
from zsgen.rerank.labels import make_labels
from zsgen.rerank.parse import ParsedRanking, parse_ranking, parse_single_label

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

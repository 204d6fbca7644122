"""VerbalizerBackend with the real SmolLM2: label scores, label checks, and prefix-reused yes/no scoring."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from zsgen.errors import LabelTokenError
from zsgen.llm import LocalChatBackend, VerbalizerBackend
from zsgen.llm.verbalizer import common_prefix_length

pytestmark = pytest.mark.slow

LABELS = [chr(ord("A") + i) for i in range(20)]
TITLES = [
    "Toy Story (1995)",
    "Heat",
    "Fargo (1996)",
    "Casino",
    "Babe",
    "Twelve Monkeys (1995)",
    "Jumanji",
    "Star Wars (1977)",
    "Apollo 13",
    "Braveheart (1995)",
    "Clueless",
    "Se7en",
    "The Usual Suspects",
    "Dead Man Walking (1995)",
    "Crimson Tide",
    "Batman Forever",
    "Waterworld",
    "GoldenEye (1995)",
    "Sense and Sensibility",
    "Richard III",
]


@pytest.fixture(scope="session")
def verbalizer(local_model_dir: Path) -> VerbalizerBackend:
    return VerbalizerBackend(local_model_dir, batch_size=4)


def listwise(titles: list[str], labels: list[str]) -> list[dict[str, str]]:
    options = "\n".join(f"{label}. {title}" for label, title in zip(labels, titles, strict=True))
    return [
        {"role": "system", "content": "You recommend movies."},
        {
            "role": "user",
            "content": f"I watched Heat and Casino. Which one next?\n{options}\nAnswer with the letter only.",
        },
    ]


def pointwise(title: str, history: str = "Heat, Casino, Fargo") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"You judge movie tastes. The user watched: {history}."},
        {"role": "user", "content": f"Will the user enjoy {title}? Answer Yes or No."},
    ]


def test_label_logprobs_are_a_distribution_over_labels(verbalizer: VerbalizerBackend) -> None:
    messages = listwise(TITLES, LABELS)
    scores = verbalizer.label_logprobs(messages, LABELS)
    assert verbalizer.last_prompt_tokens == verbalizer.count_tokens(messages)
    assert len(scores) == 20
    assert all(math.isfinite(s) and s <= 0 for s in scores)
    assert math.fsum(math.exp(s) for s in scores) == pytest.approx(1.0, abs=1e-9)
    assert max(scores) - min(scores) > 0.1  # the model does prefer some labels


def test_best_label_is_what_greedy_generation_writes_first(
    verbalizer: VerbalizerBackend, local_model_dir: Path
) -> None:
    labels = LABELS[:5]
    messages = listwise(TITLES[:5], labels)
    first_word = LocalChatBackend(local_model_dir, max_new_tokens=2).chat(messages).text
    assert first_word[0] in labels  # the prompt makes SmolLM2 answer with a label
    scores = verbalizer.label_logprobs(messages, labels)
    assert labels[scores.index(max(scores))] == first_word[0]


@pytest.mark.parametrize(
    "labels",
    [["A", "10"], ["A", "B", "A"], [" A", "B"], ["(A)", "(B)"], ["Movie A", "Movie B"], []],
    ids=["multi-digit", "duplicate", "leading-space", "parenthesised", "words", "none"],
)
def test_labels_that_are_not_single_distinct_tokens_fail_loudly(
    verbalizer: VerbalizerBackend, labels: list[str]
) -> None:
    with pytest.raises(LabelTokenError):
        verbalizer.label_logprobs(listwise(TITLES[:3], ["A", "B", "C"]), labels)


def test_digit_labels_up_to_nine_work(verbalizer: VerbalizerBackend) -> None:
    labels = [str(i) for i in range(1, 10)]
    assert len(verbalizer.label_logprobs(listwise(TITLES[:9], labels), labels)) == 9


def test_prefix_reuse_matches_separate_runs(verbalizer: VerbalizerBackend) -> None:
    conversations = [pointwise(t) for t in TITLES[:10]]  # titles of different token lengths: padding is exercised
    reused = verbalizer.yes_probabilities(conversations)
    reused_tokens = verbalizer.last_prompt_tokens
    separate = verbalizer.yes_probabilities(conversations, reuse_prefix=False)
    assert verbalizer.last_prompt_tokens == sum(verbalizer.count_tokens(c) for c in conversations)
    assert reused_tokens < verbalizer.last_prompt_tokens / 2  # the shared prefix ran once
    assert all(0.0 < p < 1.0 for p in reused)
    assert reused == pytest.approx(separate, abs=1e-4)
    assert max(reused) - min(reused) > 1e-3  # each candidate's own text matters


def test_yes_probabilities_do_not_depend_on_order_or_batching(verbalizer: VerbalizerBackend) -> None:
    conversations = [pointwise(t) for t in TITLES[:9]]
    reference = verbalizer.yes_probabilities(conversations)
    order = list(range(9))
    random.Random(7).shuffle(order)
    shuffled = verbalizer.yes_probabilities([conversations[i] for i in order])
    assert [shuffled[order.index(i)] for i in range(9)] == pytest.approx(reference, abs=1e-4)
    wide = VerbalizerBackend(verbalizer._loaded.path, batch_size=16).yes_probabilities(conversations)
    assert wide == pytest.approx(reference, abs=1e-4)


def test_conversations_sharing_almost_nothing(verbalizer: VerbalizerBackend) -> None:
    conversations = [pointwise("Heat", history="Babe"), pointwise("Casino", history="Richard III, Se7en, Clueless")]
    assert verbalizer.yes_probabilities(conversations) == pytest.approx(
        verbalizer.yes_probabilities(conversations, reuse_prefix=False), abs=1e-4
    )
    single = verbalizer.yes_probabilities(conversations[:1])
    assert single == pytest.approx(verbalizer.yes_probabilities(conversations[:1], reuse_prefix=False), abs=1e-4)
    assert verbalizer.yes_probabilities([]) == []


def test_yes_no_words_must_be_single_tokens(verbalizer: VerbalizerBackend) -> None:
    with pytest.raises(LabelTokenError):
        verbalizer.yes_probabilities([pointwise("Heat")], yes="Absolutely", no="No")


def test_common_prefix_length() -> None:
    assert common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_length([[1, 2, 3]]) == 3
    assert common_prefix_length([[5], [6]]) == 0
    assert common_prefix_length([]) == 0


def test_labels_the_model_cannot_produce_are_a_config_error_before_any_user(verbalizer: VerbalizerBackend) -> None:
    from zsgen.errors import ConfigError
    from zsgen.loaders import load_demo
    from zsgen.rerank import RerankConfig, Reranker
    from zsgen.types import Candidate, History

    catalog = load_demo().catalog
    # Numbers past 9 are two tokens ("1", "0") for SmolLM2: logits of one token cannot score them.
    config = RerankConfig(method="verbalizer", backend="verbalizer", label_style="numbers", window=12, candidates=12)
    reranker = Reranker(config, catalog=catalog, backend=verbalizer)
    candidates = [Candidate(id=i, score=1.0 - n / 100) for n, i in enumerate(catalog.ids[:12])]
    with pytest.raises(ConfigError, match="'10' is not a single token"):
        reranker.rerank(History.from_ids(catalog.ids[20:23]), candidates)
    assert issubclass(LabelTokenError, ConfigError)
    # Letters fit: the same reranker settings otherwise rank without any fallback.
    letters = Reranker(config.model_copy(update={"label_style": "letters"}), catalog=catalog, backend=verbalizer)
    ranking = letters.rerank(History.from_ids(catalog.ids[20:23]), candidates)
    assert not ranking.fallback and sorted(ranking.item_ids) == sorted(c.id for c in candidates)

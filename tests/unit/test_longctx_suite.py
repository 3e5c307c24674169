"""The long-context benchmark suite (benchmarks/longctx_suite): generator invariants, scorers,
and one scripted task per family end to end through the RLM (no timing assertions)."""

import collections
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from rlm_integrations import RLM, RLMConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
suite = importlib.import_module("longctx_suite")
text_pools = importlib.import_module("longctx_suite._text")
messages_mod = importlib.import_module("longctx_suite._messages")
scoring = importlib.import_module("longctx_suite.scoring")
scripted = importlib.import_module("longctx_suite.scripted")

FAMILIES = list(suite.FAMILIES)
SPLITS = ("train", "heldout")


@pytest.fixture(scope="module")
def small_tasks():
    return {(f, s): suite.make_task(f, "8K", s, 0) for f in FAMILIES for s in SPLITS}


def test_there_are_at_least_six_families_with_the_intended_shapes():
    assert len(FAMILIES) >= 6
    assert {"single_needle", "multikey_needle", "multi_value", "variable_tracking"} <= set(FAMILIES)
    assert {"count_records", "count_reading", "pairs"} <= set(FAMILIES)


# --------------------------------------------------------------------------- determinism, sizes, splits


@pytest.mark.parametrize("family", FAMILIES)
def test_tasks_are_deterministic_and_exactly_the_size_asked(family, small_tasks):
    for split in SPLITS:
        first = small_tasks[family, split]
        again = suite.make_task(family, "8K", split, 0)
        assert again.context == first.context and again.gold == first.gold and again.question == first.question
        assert len(first.context) == 8_000
        other = suite.make_task(family, "8K", split, 1)
        assert other.context != first.context
    for size, chars in (("32K", 32_000), ("20K", 20_000)):
        assert len(suite.make_task(family, size, "train", 2).context) == chars


@pytest.mark.parametrize("family", FAMILIES)
def test_a_million_characters_are_generated_exactly(family):
    task = suite.make_task(family, "1M", "heldout", 3)
    assert len(task.context) == 1_000_000
    assert task.score(_solve_independently(task)) == 1.0


def test_held_out_seeds_never_meet_train_seeds():
    train = {suite.seed_for("train", i) for i in range(100_000)}
    heldout = {suite.seed_for("heldout", i) for i in range(100_000)}
    assert not train & heldout
    with pytest.raises(ValueError, match="unknown split"):
        suite.seed_for("dev", 0)
    with pytest.raises(ValueError, match="unknown family"):
        suite.make_task("nope", "8K", "train", 0)
    with pytest.raises(ValueError, match="bad size"):
        suite.parse_size("big")


def test_held_out_vocabulary_and_templates_are_disjoint_from_train():
    pools = [
        text_pools.FILLER,
        text_pools.ADJECTIVES,
        text_pools.NOUNS,
        text_pools.FIRST_NAMES,
        text_pools.LAST_NAMES,
        text_pools.CITIES,
        text_pools.PRODUCTS,
        text_pools.STATUSES,
    ]
    train = set().union(*(set(p["train"]) for p in pools))
    heldout = set().union(*(set(p["heldout"]) for p in pools))
    assert not train & heldout, train & heldout
    assert not set(text_pools.VAR_LETTERS["train"]) & set(text_pools.VAR_LETTERS["heldout"])
    train_templates = set().union(*messages_mod.templates("train").values())
    heldout_templates = set().union(*messages_mod.templates("heldout").values())
    assert not train_templates & heldout_templates


@pytest.mark.parametrize("family", FAMILIES)
def test_held_out_questions_are_worded_differently(family, small_tasks):
    train_q, heldout_q = small_tasks[family, "train"].question, small_tasks[family, "heldout"].question
    assert train_q != heldout_q
    train_words = set(re.findall(r"[a-z]+", train_q.lower()))
    heldout_words = set(re.findall(r"[a-z]+", heldout_q.lower()))
    assert len(train_words & heldout_words) < 0.7 * min(len(train_words), len(heldout_words))


def test_filler_words_never_occur_in_keys_so_needles_are_counted_exactly():
    for split in SPLITS:
        filler = set(text_pools.FILLER[split])
        assert not filler & set(text_pools.ADJECTIVES[split]) and not filler & set(text_pools.NOUNS[split])


# --------------------------------------------------------------------------- gold answers derivable from the context


def _solve_independently(task: Any) -> Any:
    """Recompute the gold answer from the context with this test's own parsing (not the generator's)."""
    context = task.context
    if task.family in ("single_needle", "multikey_needle", "multi_value"):
        key = task.meta["key"]
        sentences = [s for s in re.split(r"(?<=\.) ", context) if re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", s)]
        values = [cast(re.Match[str], re.search(r"\d{7}", s)).group(0) for s in sentences]
        return values[0] if task.family != "multi_value" else values
    if task.family == "variable_tracking":
        edges = {}
        for name, source in re.findall(r"(?:VAR |Let )([A-Z]{5}) (?:=|equal) (?:VAR )?(\w+)\.", context):
            edges[name] = source
        value = task.meta["value"]

        def resolve(name: str) -> str:
            while name in edges:
                name = edges[name]
            return name

        return sorted(n for n in edges if resolve(n) == value)
    if task.family == "count_records":
        count = 0
        for line in context.splitlines():
            words = set(re.findall(r"\w+", line))
            if task.meta["city"] in words and task.meta["status"] in words:
                count += 1
        return count
    if task.family == "count_reading":
        labels = task.meta["labels"]
        lines = [line for line in context.splitlines() if not line.startswith("=")]
        found = [
            cast(re.Match[str], re.fullmatch(r"(?:\[msg \d+\] \S+: |Review #\d+ by \S+ - )(.*)", line)).group(1)
            for line in lines
        ]
        assert len(found) == task.meta["messages"]
        return sum(labels[t] == "complaint" for t in found)
    if task.family == "pairs":
        by_code = collections.defaultdict(list)
        for line in context.splitlines():
            names = re.findall(r"[a-z]+\.[a-z]+\d{2,3}", line)
            codes = re.findall(r"(?<!\d)\d{6}(?!\d)", line)
            if names:
                by_code[codes[-1]].append(names[0])
        return [sorted(v) for v in by_code.values() if len(v) > 1]
    raise AssertionError(task.family)


@pytest.mark.parametrize("family", FAMILIES)
def test_gold_answer_is_derivable_from_the_context(family, small_tasks):
    for split in SPLITS:
        task = small_tasks[family, split]
        independent = _solve_independently(task)
        if task.scorer == "list":
            assert sorted(independent) == sorted(task.gold)
        elif task.scorer == "pairs":
            assert sorted(independent) == sorted(task.gold)
            assert 2 <= len(task.gold) <= 4
        else:
            assert independent == task.gold
        assert task.score(independent if task.scorer != "pairs" else str(independent)) == 1.0


@pytest.mark.parametrize("family", ["single_needle", "multikey_needle", "multi_value", "variable_tracking"])
def test_each_needle_is_present_exactly_once(family, small_tasks):
    for split in SPLITS:
        task = small_tasks[family, split]
        for needle, times in task.meta["needles"].items():
            assert task.context.count(needle) == times == 1, needle


def test_multikey_distractors_look_like_the_target(small_tasks):
    task = small_tasks["multikey_needle", "heldout"]
    adjective, noun = task.meta["key"].split("-")
    keys = list(task.meta["distractors"])
    assert sum(k.startswith(adjective + "-") for k in keys) >= 2
    assert sum(k.endswith("-" + noun) for k in keys) >= 2
    assert task.gold not in task.meta["distractors"].values()
    for value in task.meta["distractors"].values():
        assert value in task.context


def test_count_records_has_at_least_one_match_and_both_conditions_matter(small_tasks):
    for split in SPLITS:
        assert small_tasks["count_records", split].gold >= 1
    big = suite.make_task("count_records", "128K", "train", 4)
    lines = big.context.splitlines()
    assert sum(re.search(rf"\b{big.meta['city']}\b", line) is not None for line in lines) > big.gold
    assert sum(re.search(rf"\b{big.meta['status']}\b", line) is not None for line in lines) > big.gold


# --------------------------------------------------------------------------- the reading family


def test_reading_labels_follow_the_known_distribution():
    task = suite.make_task("count_reading", "128K", "heldout", 5)
    fraction = task.gold / task.meta["messages"]
    assert 0.15 <= fraction <= 0.55
    assert abs(fraction - task.meta["rate"]) < 0.1


@pytest.mark.parametrize("split", SPLITS)
def test_reading_messages_carry_no_keyword_that_gives_the_label_away(split):
    task = suite.make_task("count_reading", "128K", split, 6)
    by_label = collections.defaultdict(list)
    for text, label in task.meta["labels"].items():
        by_label[label].append(set(re.findall(r"[a-z]+", text.lower())))
    assert set(by_label) == {"complaint", "praise"}
    everything = set().union(*by_label["complaint"], *by_label["praise"])
    assert not everything & set(messages_mod.LABEL_WORDS)
    assert not everything & set(messages_mod.SENTIMENT_WORDS)
    question_words = set(re.findall(r"[a-z]+", task.question.lower())) - {"the", "of", "a", "is", "with", "or", "in"}
    assert not everything & question_words & {"complaints", "unhappy", "dissatisfied"}
    # No single word marks one class: its rate in one class minus the other stays under one half.
    for word in everything:
        rates = [sum(word in m for m in by_label[c]) / len(by_label[c]) for c in ("complaint", "praise")]
        assert abs(rates[0] - rates[1]) < 0.5, (word, rates)


# --------------------------------------------------------------------------- scorers


def test_exact_scorer():
    assert scoring.score_exact("4821930", "4821930", scoring_pattern()) == 1.0
    assert scoring.score_exact("The number is 4821930.", "4821930", scoring_pattern()) == 1.0
    assert scoring.score_exact("'4821930'", "4821930") == 1.0
    assert scoring.score_exact("4821930 or 1234567", "4821930", scoring_pattern()) == 0.0
    assert scoring.score_exact("48219301", "4821930", scoring_pattern()) == 0.0
    assert scoring.score_exact(None, "4821930", scoring_pattern()) == 0.0


def scoring_pattern() -> str:
    return r"(?<!\d)\d{7}(?!\d)"


def test_list_scorer_is_recall_times_precision():
    gold = ["1111111", "2222222", "3333333"]
    pattern = scoring_pattern()
    assert scoring.score_list("1111111, 2222222 and 3333333", gold, pattern) == 1.0
    assert scoring.score_list(["3333333", "1111111", "2222222"], gold, pattern) == 1.0
    assert scoring.score_list("1111111", gold, pattern) == pytest.approx(1 / 3)
    assert scoring.score_list("1111111 2222222 3333333 4444444", gold, pattern) == pytest.approx(0.75)
    assert scoring.score_list("nothing found", gold, pattern) == 0.0


def test_numeric_scorer_gives_oolong_partial_credit():
    assert scoring.score_numeric(12, 12) == 1.0
    assert scoring.score_numeric("There are 12 complaints.", 12) == 1.0
    assert scoring.score_numeric("1,204", 1204) == 1.0
    assert scoring.score_numeric("10", 12) == pytest.approx(0.75**2)
    assert scoring.score_numeric(0, 12) == pytest.approx(0.75**12)
    assert scoring.score_numeric("no idea", 12) == 0.0
    assert scoring.score_numeric(True, 1) == 0.0


def test_pairs_scorer():
    gold = [["ana.silva12", "bo.tanaka34"], ["cy.ortiz56", "di.novak78"]]
    assert scoring.score_pairs("[('bo.tanaka34', 'ana.silva12'), ('cy.ortiz56', 'di.novak78')]", gold) == 1.0
    assert scoring.score_pairs("ana.silva12 & bo.tanaka34; cy.ortiz56 & di.novak78", gold) == 1.0
    assert scoring.score_pairs("ana.silva12 & bo.tanaka34", gold) == 0.5
    assert scoring.score_pairs("ana.silva12 & cy.ortiz56; bo.tanaka34 & di.novak78", gold) == 0.0
    with pytest.raises(ValueError, match="unknown scorer"):
        scoring.score("fuzzy", "x", "y")


# --------------------------------------------------------------------------- end to end through the RLM


@pytest.mark.parametrize("family", FAMILIES)
def test_one_task_per_family_end_to_end_with_a_scripted_model(family):
    split = "heldout" if FAMILIES.index(family) % 2 else "train"
    task = suite.make_task(family, "8K", split, 7)
    root, reader = scripted.scripted_models(task)
    rlm = RLM(root, reader, config=RLMConfig(max_iterations=3, max_llm_calls=400))
    result = rlm.completion(task.question, context=task.context)
    assert result.status == "completed", (result.status, result.error)
    assert task.score(result.answer) == 1.0, (result.answer, task.gold)
    if family == "count_reading":
        assert len(reader.calls) == task.meta["messages"]  # every message was read by a sub-call


def test_runner_smoke_mode_scores_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    runner = Path(__file__).resolve().parents[2] / "benchmarks" / "longctx.py"
    command = [sys.executable, str(runner), "--model", "scripted", "--families", "count_records,pairs"]
    command += ["--sizes", "8K", "--tasks-per-cell", "1", "--split", "train", "--json", str(out)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [(r["family"], r["row"], r["split"]) for r in results] == [
        ("count_records", "rlm-scripted", "train"),
        ("pairs", "rlm-scripted", "train"),
    ]
    assert all(r["score"] == 1.0 for r in results)
    assert "| count_records | 8K | 100% (1)" in run.stdout
    bad = subprocess.run(
        [sys.executable, str(runner), "--families", "nope"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "nope" in bad.stderr

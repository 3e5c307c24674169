"""The loop's helpers for questions beyond lookup: grep / llm_map / llm_filter, the question probe,
the worked example chosen by shape, and the check of an empty answer after an empty search."""

from __future__ import annotations

import re
from typing import Any, get_args

import pytest
from engine_helpers import block, config, conversation, make_rlm, run
from pydantic import ValidationError

from rlm_integrations import RLM, RLMConfig
from rlm_integrations.core.events import SubCallFinished
from rlm_integrations.core.parsing import is_typed_answer
from rlm_integrations.core.question_shape import Shape, probe_question, question_shape, question_terms
from rlm_integrations.core.repl_helpers import TEXT_ARG_CHARS, HelperNotes, ReplHelpers, find_lines, split_items
from rlm_integrations.core.routing import choose_route
from rlm_integrations.core.worked_examples import example_for, worked_example
from rlm_integrations.lm import Message, ScriptedLM

RECORDS = "\n".join(
    f"Order {n}: city {city}; status {status}."
    for n, (city, status) in enumerate(
        [("oslo", "paid"), ("lima", "unpaid"), ("oslo", "unpaid"), ("rome", "late"), ("lima", "paid")] * 4
    )
)
"""20 records: oslo 8 times (4 of them unpaid), unpaid 8 times."""


# --------------------------------------------------------------------------- grep, pure


def test_find_lines_needs_every_word_whole_and_case_insensitive() -> None:
    lines = ["Alpha beta", "alphabet soup", "BETA then alpha", "gamma"]
    assert find_lines(lines, ["alpha", "beta"]) == ["Alpha beta", "BETA then alpha"]
    assert find_lines(lines, ["alpha"]) == ["Alpha beta", "BETA then alpha"]  # not "alphabet"


def test_find_lines_treats_hyphenated_keys_as_one_word() -> None:
    lines = ["code for blue-fox is 1", "code for blue-foxes is 2", "code for red blue-fox-x is 3"]
    assert find_lines(lines, ["blue-fox"]) == ["code for blue-fox is 1"]


def test_find_lines_cuts_a_long_line_to_a_window_around_the_match() -> None:
    line = "x " * 1_000 + "needle 42 " + "y " * 1_000
    [hit] = find_lines([line], ["needle"])
    assert "needle 42" in hit and len(hit) < 400 and hit.startswith("...") and hit.endswith("...")


def test_find_lines_refuses_no_words() -> None:
    with pytest.raises(ValueError, match="at least one"):
        find_lines(["a"], ["  "])


def test_split_items_by_context_type() -> None:
    assert split_items("a\n\n b \nc") == ["a", " b ", "c"]
    assert split_items(["x", 3]) == ["x", "3"]
    assert split_items({"k": "v", "n": 1}) == ["v", "1"]
    assert split_items(None) == []


# --------------------------------------------------------------------------- probe and shape


def grep_lines(text: str, words: list[str]) -> list[str]:
    return find_lines(split_items(text), words)


def test_probe_counts_lines_per_question_word_and_singular_forms() -> None:
    probe = probe_question("How many orders from oslo are unpaid?", RECORDS)
    assert probe.lines == 20
    assert probe.found == {"order": 20, "oslo": 8, "unpaid": 8}  # "orders" matches "Order" lines: named as written
    assert len(grep_lines(RECORDS, ["order"])) == 20  # so grep of the word the probe names finds those lines
    assert probe.missing == []
    assert probe.selective == ["oslo", "unpaid"]
    assert probe.literal()
    assert "'oslo' in 8" in probe.describe()


def test_probe_of_a_judgement_question_is_not_literal() -> None:
    reviews = "\n".join(["Review 1: the kettle broke twice.", "Review 2: works fine, thanks!"] * 5)
    probe = probe_question("How many writers are dissatisfied?", reviews)
    assert probe.found == {}
    assert probe.missing == ["writers", "dissatisfied"]
    assert question_shape("How many writers are dissatisfied?", probe) == "count_reading"


@pytest.mark.parametrize(
    ("question", "shape"),
    [
        ("How many orders from oslo are unpaid?", "count"),
        ("What is the number of unpaid orders from oslo?", "count"),
        ("List every city with an unpaid order.", "list"),
        ("What are all the codes for oslo?", "list"),
        ("Which code is assigned to oslo?", "lookup"),
        ("What status does order 3 have?", "lookup"),
        ("Which two orders share the same city? List each pair.", "group"),
        ("Find every two people whose badge PIN is the same.", "group"),
        ("Which accounts are paid for, directly or through other accounts, by oslo?", "chain"),
        ("List the teams that report to Ana directly or indirectly.", "chain"),
    ],
)
def test_question_shape(question: str, shape: str) -> None:
    assert question_shape(question, probe_question(question, RECORDS)) == shape


def test_question_terms_drop_stopwords_and_repeats() -> None:
    assert question_terms("What is the code for blue-fox? The code, please!") == ["code", "blue-fox"]


def test_each_shape_has_its_own_worked_example_ending_in_final() -> None:
    examples = {shape: example_for(shape) for shape in get_args(Shape)}
    assert len({str(example) for example in examples.values()}) == len(get_args(Shape)) == 6
    for example in examples.values():
        assert [m["role"] for m in example][:2] == ["user", "assistant"]
        assert example[-1]["role"] == "assistant" and example[-1]["content"].startswith(("FINAL(", "FINAL_VAR("))
    assert "llm_filter(" in str(examples["count_reading"]) and "len(hits)" in str(examples["count"])


# The examples' code must do what their printed output claims: a small model copies it.
_GROUP_LINES = [
    "On 4 May ana.silva12 came; the room number given was 214.",
    "On 9 May li.wong30 came; the room number given was 508.",
    "On 2 June tom.berg7 came; the room number given was 214.",
    "On 3 June kim.dahl3 came; the room number given was 311.",
    "On 5 June eva.roth4 came; the room number given was 508.",
]
_CHAIN_LINES = [
    "The road bent north. Town BEX draws its water from Lake Orva. Fog lay on the hills.",
    "Town DUNE draws its water from Lake Mirn, far to the east.",
    "Carts passed the gate at dawn; Town KELL draws its water from town BEX since the drought.",
    "Town ARNO draws its water from town KELL. Town OSK draws its water from town DUNE.",
    "Town HOLM draws its water from town BEXLEY, which is not BEX.",
]


@pytest.mark.parametrize(
    ("shape", "lines", "printed", "answer"),
    [
        ("group", _GROUP_LINES, "groups", [["ana.silva12", "tom.berg7"], ["li.wong30", "eva.roth4"]]),
        ("chain", _CHAIN_LINES, "found", ["BEX", "KELL", "ARNO"]),
    ],
)
async def test_worked_example_code_gives_the_answer_it_shows(
    shape: Shape, lines: list[str], printed: str, answer: list[Any]
) -> None:
    example = example_for(shape)
    replies = [m["content"] for m in example if m["role"] == "assistant"]
    code = "\n".join(re.sub(r"^```repl\n|\n```$", "", reply) for reply in replies[:-1])
    rlm, _, _ = make_rlm([block(f"{code}\nFINAL({printed})")])
    result = await run(rlm, "the example's question", "\n".join(lines))
    assert result.status == "completed", result.error
    assert result.answer == answer
    last_output = next(m["content"] for m in reversed(example) if m["role"] == "user")
    for part in answer:  # what the example shows is what its code prints
        assert str(part) in last_output
    final = replies[-1]
    if shape == "group":  # the answer is submitted as computed, not retyped
        assert final == 'FINAL_VAR("groups")'
    else:
        assert str(answer).replace("'", '"') in final


def test_each_examples_probe_names_the_question_words_as_the_real_probe_would() -> None:
    """One name per question word, and a word the example's visible text holds is named as that text writes it."""
    for shape in get_args(Shape):
        example = worked_example(shape)
        found = set(re.findall(r"'([^']+)' in [\d,]+", example.probe))
        missing_line = (
            example.probe.split("Not in the text:")[1].split("\n")[0] if "Not in the text:" in example.probe else ""
        )
        missing = set(re.findall(r"'([^']+)'", missing_line))
        terms = question_terms(example.question)
        assert len(found) + len(missing) == len(terms) and set(terms) >= missing, shape
        visible = "\n".join([example.context.preview, *(turn.output for turn in example.turns)])
        real = probe_question(example.question, visible)
        assert set(real.found) <= found, shape  # e.g. 'invoice' for "invoices" when the records say "Invoice"
        assert not missing & set(real.found), shape


# --------------------------------------------------------------------------- in a run


def _first_user(messages: list[Message]) -> str:
    return next(m["content"] for m in conversation(messages) if m["role"] == "user")


async def test_grep_counts_records_in_the_repl_and_the_probe_is_in_the_first_message() -> None:
    code = "hits = grep('oslo', 'unpaid')\nFINAL(len(hits))"
    rlm, root, _ = make_rlm([block(code)])
    result = await run(rlm, "How many orders from oslo are unpaid?", RECORDS)
    assert result.answer == 4
    first = _first_user(root.calls[0])
    assert "'oslo' in 8" in first and "20 non-empty lines" in first


async def test_small_models_see_the_worked_example_for_the_question_shape() -> None:
    root = ScriptedLM([block("FINAL(len(grep('oslo')))")], name="root")
    root.prefers_worked_example = True
    rlm, _, _ = make_rlm(root)
    await run(rlm, "How many orders from oslo are unpaid?", RECORDS)
    sent = root.calls[0]
    assert sent[1 : 1 + len(example_for("count"))] == example_for("count")


async def test_llm_filter_and_llm_map_make_one_recorded_sub_call_per_item() -> None:
    def judge(messages: list[Message]) -> str:
        text = messages[-1]["content"]
        return "Yes." if "broke" in text.split("Text:", 1)[1] else "no"

    sub = ScriptedLM(judge, name="sub")
    reviews = "Review 1: the kettle broke.\nReview 2: lovely.\n\nReview 3: it broke again."
    code = (
        "items = context.splitlines()\n"
        "bad = llm_filter(items, 'Is the writer unhappy?')\n"
        "lengths = llm_map(['ab', 'abcd'], 'How long is this?')\n"
        "FINAL([bad, len(lengths)])"
    )
    rlm, _, _ = make_rlm([block(code)], sub)
    result = await run(rlm, "How many writers are unhappy?", reviews)
    assert result.answer == [["Review 1: the kettle broke.", "Review 3: it broke again."], 2]
    calls = [e for e in result.trajectory.events if isinstance(e, SubCallFinished)]
    assert sorted(e.function for e in calls) == ["llm_filter"] * 3 + ["llm_map"] * 2  # the blank line costs nothing
    assert result.usage.by_model["sub"].calls == 5
    assert all(call[-1]["content"].startswith("Is the writer unhappy? Answer yes or no.") for call in sub.calls[:3])


async def test_an_empty_answer_after_an_empty_search_is_questioned_once() -> None:
    replies = [
        block("hits = grep('dissatisfied')\nprint(len(hits))"),
        block("FINAL(0)"),
        block("FINAL(0)"),
    ]
    rlm, root, _ = make_rlm(replies)
    result = await run(rlm, "How many writers are dissatisfied?", "Review 1: it broke.\nReview 2: fine.")
    assert result.answer == 0 and result.status == "completed"
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "grep('dissatisfied') found no line" in feedback
    challenge = [m["content"] for m in root.calls[2] if m["role"] == "user"][-1]
    assert "found nothing" in challenge and "FINAL again" in challenge
    assert len(root.calls) == 3  # asked once: the same answer again is accepted


async def test_an_empty_answer_after_code_that_printed_nothing_is_questioned_once() -> None:
    silent = "same = [line for line in grep('oslo') if re.search(r'town (\\w+)', line)]"
    rlm, root, _ = make_rlm([block(silent), "FINAL([])", "FINAL([])"])
    result = await run(rlm, "Which orders from oslo are unpaid?", RECORDS)
    assert result.answer == [] and result.status == "completed"
    challenge = [m["content"] for m in root.calls[2] if m["role"] == "user"][-1]
    assert "printed nothing" in challenge and "FINAL again" in challenge
    assert len(root.calls) == 3  # asked once: the same answer again is accepted


@pytest.mark.parametrize(
    ("cell", "answer"),
    [
        ("print(len(grep('oslo')))", "FINAL([])"),  # the turn printed something: the model saw it
        ("x = grep('oslo')", "FINAL(['Order 0'])"),  # silent, but the answer is not empty
    ],
)
async def test_answers_after_a_turn_are_questioned_only_when_empty_and_silent(cell: str, answer: str) -> None:
    rlm, root, _ = make_rlm([block(cell), answer, answer])
    result = await run(rlm, "Which orders from oslo are unpaid?", RECORDS)
    assert result.status == "completed" and len(root.calls) == 2


async def test_a_list_answer_given_before_any_code_ran_is_questioned_once() -> None:
    rlm, root, _ = make_rlm([block("FINAL(['Order 0'])"), block("FINAL(['Order 0'])")])
    result = await run(rlm, "List every order from oslo.", RECORDS)
    assert result.answer == ["Order 0"] and result.status == "completed"
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "comes before any code ran" in feedback and "FINAL again" in feedback
    assert len(root.calls) == 2  # asked once: the same answer again is accepted


@pytest.mark.parametrize(
    ("question", "replies", "calls"),
    [
        ("Which code is assigned to oslo?", ["FINAL('7')"], 1),  # a lookup may be read off the probe
        ("List every order from oslo.", ["print(len(grep('oslo')))", "FINAL(['Order 0'])"], 2),  # code ran first
        ("List every order from oslo.", ["FINAL(grep('oslo'))"], 1),  # computed, not typed in
    ],
)
async def test_answers_that_are_not_questioned(question: str, replies: list[str], calls: int) -> None:
    rlm, root, _ = make_rlm([block(reply) for reply in replies])
    result = await run(rlm, question, RECORDS)
    assert result.status == "completed" and len(root.calls) == calls


@pytest.mark.parametrize(
    ("code", "typed"),
    [
        (None, True),
        ("FINAL(['MBHCI'])", True),
        ("FINAL(3)", True),
        ("FINAL(len(grep('x')))", False),
        ("x = 3\nFINAL(x)", False),
        ("FINAL_VAR('x')", False),
        ("FINAL(", False),
        ("FINAL(answer='Oslo', count=3)", True),  # the DSPy face's several outputs
        ("FINAL(answer=grep('oslo'))", False),
        ("FINAL(**outputs)", False),
    ],
)
def test_typed_in_answers_are_told_from_computed_ones(code: str | None, typed: bool) -> None:
    assert is_typed_answer(code) is typed


@pytest.mark.parametrize(
    ("question", "context"),
    [
        ("List the first three prime numbers.", None),  # no context: nothing for code to check
        ("List every order from oslo.", "Order 0: city oslo.\nOrder 1: city lima."),  # shown whole in the preview
    ],
)
async def test_a_typed_in_answer_is_not_questioned_when_nothing_is_hidden(question: str, context: Any) -> None:
    rlm, root, _ = make_rlm([block("FINAL(['Order 0'])")])
    result = await run(rlm, question, context)
    assert result.status == "completed" and result.answer == ["Order 0"] and len(root.calls) == 1


def test_a_session_follow_up_may_type_in_an_earlier_answer() -> None:
    replies = [block("FINAL(grep('oslo'))"), block("FINAL(['Order 0'])")]
    rlm, root, _ = make_rlm(replies)
    with rlm.session(RECORDS) as session:
        session.ask("List every order from oslo.")
        second = session.ask("List the first of those orders.")
    assert second.status == "completed" and second.answer == ["Order 0"]
    assert len(root.calls) == 2  # the digest of the first ask is output the model has seen


async def test_a_one_turn_run_keeps_its_unchecked_answer() -> None:
    rlm, root, _ = make_rlm([block("FINAL(['Order 0'])")], max_iterations=1)
    result = await run(rlm, "List every order from oslo.", RECORDS)
    assert result.answer == ["Order 0"] and len(root.calls) == 1


async def test_a_user_tool_named_grep_wins_over_the_helper() -> None:
    def grep(*words: Any) -> str:
        """The user's own grep."""
        return "mine"

    rlm = RLM(ScriptedLM([block("FINAL(grep('x'))")]), config=config(), tools=[grep])
    result = await run(rlm, "q?", "x")
    assert result.answer == "mine"


def test_helper_notes_challenge_only_empty_answers() -> None:
    notes = HelperNotes()
    assert notes.challenge(0) is None  # no empty search yet
    notes.record_empty(["x"])
    assert notes.take() and notes.take() == []
    assert notes.challenge(12) is None and notes.challenge("Lutz") is None
    assert notes.challenge("not found") is not None
    assert notes.challenge([]) is None  # once per run


class _ParamsRecorder(ScriptedLM):
    """A scripted sub-model that also keeps the parameters of each call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params: list[dict[str, Any]] = []

    async def acomplete(self, messages: Any, **params: Any) -> Any:
        self.params.append(params)
        return await super().acomplete(messages, **params)


async def test_llm_filter_caps_replies_short_and_never_raises_the_configured_cap() -> None:
    sub = _ParamsRecorder(lambda m: "no", name="sub")
    code = "bad = llm_filter(['a', 'b'], 'Is it bad?')\nanswers = llm_map(['c'], 'What is it?')\nFINAL(len(bad))"
    rlm, _, _ = make_rlm([block(code)], sub)
    await run(rlm, "How many are bad?", "a\nb")
    assert [p.get("max_tokens") for p in sub.params] == [8, 8, None]  # llm_map keeps the configured (no) cap

    sub2 = _ParamsRecorder(lambda m: "no", name="sub")
    rlm2, _, _ = make_rlm([block(code)], sub2, sub_max_tokens=4)
    await run(rlm2, "How many are bad?", "a\nb")
    assert [p.get("max_tokens") for p in sub2.params] == [4, 4, 4]


# --------------------------------------------------------------------------- routing


class _Windowed(ScriptedLM):
    """A scripted model that reports a context window (tokens: characters / 4)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context_window = 40_000

    def count_tokens(self, text: str) -> int:
        return len(text) // 4


def test_choose_route_rules() -> None:
    model = _Windowed(["x"])
    small, large = "word " * 100, "word " * 2_000  # 125 and 2,500 tokens
    assert choose_route("rlm", "What is x?", small, model, "lookup") == "rlm"
    assert choose_route("auto", "What is x?", small, model, "lookup") == "direct"
    assert choose_route("auto", "How many?", small, model, "count") == "rlm"  # code counts exactly
    assert choose_route("auto", "What is x?", large, model, "lookup") == "rlm"  # does not fit comfortably
    assert choose_route("direct", "What is x?", "word " * 500, model, "count") == "direct"  # fits: as asked
    assert choose_route("direct", "What is x?", "word " * 40_000, model, "lookup") == "rlm"  # would overflow
    assert choose_route("direct", "What is x?", ["a", "b"], model, "lookup") == "rlm"  # not a str
    assert choose_route("auto", "What is x?", small, ScriptedLM(["x"]), "lookup") == "rlm"  # no window known


async def test_the_direct_route_makes_one_call_with_the_context_and_no_repl() -> None:
    root = _Windowed(['FINAL("Lutz")'], name="root")
    rlm = RLM(root, config=config(route="auto"))
    result = await run(rlm, "What is the capital of Zubrowka?", "The capital of Zubrowka is Lutz.")
    assert result.answer == "Lutz" and result.status == "completed"
    assert len(root.calls) == 1
    sent = "\n".join(m["content"] for m in root.calls[0])
    assert "The capital of Zubrowka is Lutz." in sent and "```repl" not in sent
    assert not any(e.kind.startswith("cell_") for e in result.trajectory.events)
    assert result.usage.by_model["root"].calls == 1


async def test_auto_keeps_counting_questions_in_the_loop() -> None:
    root = _Windowed([block("FINAL(len(grep('oslo')))")], name="root")
    rlm = RLM(root, config=config(route="auto"))
    result = await run(rlm, "How many orders from oslo are unpaid?", RECORDS)
    assert result.answer == 8
    assert any(e.kind == "cell_end" for e in result.trajectory.events)


def test_route_is_validated() -> None:
    with pytest.raises(ValidationError, match="route"):
        RLMConfig(route="sometimes")


async def test_a_long_llm_filter_packs_items_into_about_32_calls() -> None:
    def judge(messages: list[Message]) -> str:
        prompt = messages[-1]["content"]
        numbered = re.findall(r"^(\d+)\. (.*)$", prompt, re.M)
        yes = [number for number, text in numbered if "broke" in text]
        return ", ".join(yes) if yes else "none"

    sub = ScriptedLM(judge, name="sub")
    lines = [f"Review {n}: it broke." if n % 3 == 0 else f"Review {n}: fine." for n in range(200)]
    code = "bad = llm_filter(context.splitlines(), 'Is the writer unhappy?')\nFINAL(bad)"
    rlm, _, _ = make_rlm([block(code)], sub)
    result = await run(rlm, "Which reviews are unhappy?", "\n".join(lines))
    assert result.answer == [line for line in lines if "broke" in line]  # all 67, in order
    assert len(sub.calls) == 29  # ceil(200 / 7) groups of 7: within MAX_PACKED_CALLS
    assert all("Reply with the numbers" in call[-1]["content"] for call in sub.calls)


async def test_items_whose_packed_call_failed_are_reported_not_silently_dropped() -> None:
    def flaky(messages: list[Message]) -> str:
        if "Review 0:" in messages[-1]["content"]:
            raise RuntimeError("provider down")
        return "1"

    sub = ScriptedLM(flaky, name="sub")
    lines = [f"Review {n}: text" for n in range(64)]
    replies = [block("bad = llm_filter(context.splitlines(), 'Bad?')\nprint(len(bad))"), block("FINAL(1)")]
    rlm, root, _ = make_rlm(replies, sub)
    await run(rlm, "Which reviews are bad?", "\n".join(lines))
    feedback = [m["content"] for m in root.calls[1] if m["role"] == "user"][-1]
    assert "llm_filter could not judge 2 of 64 items" in feedback


def test_a_very_large_context_is_probed_on_its_beginning_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_integrations.core import question_shape

    monkeypatch.setattr(question_shape, "PROBE_CHARS", 200)
    probe = probe_question("How many orders from oslo are unpaid?", RECORDS)
    assert probe.sampled_chars is not None and probe.sampled_chars <= 200
    assert probe.lines < 20 and RECORDS[: probe.sampled_chars].count("\n") == probe.lines
    assert probe.describe().startswith(f"The first {probe.sampled_chars:,} characters of `context` have")


def test_probe_counts_a_line_once_and_the_first_line_too() -> None:
    probe = probe_question("Where is oslo?", "oslo oslo oslo\nlima\noslo")
    assert probe.found == {"oslo": 2} and probe.lines == 3


# --------------------------------------------------------------------------- first mentions in the probe


def test_probe_shows_the_sentence_of_a_rare_words_first_mention() -> None:
    text = "Filler words here. More filler.\nThe boat left. The code for kestrel-9 is 4471. Rain fell.\nEnd."
    probe = probe_question("What is the code for kestrel-9?", text)
    assert probe.samples == {"code": "The code for kestrel-9 is 4471."}  # both words are on that line: shown once
    assert "First mention of 'code': The code for kestrel-9 is 4471." in probe.describe_for("lookup")


def test_probe_shows_the_least_common_words_line_when_no_word_is_rare() -> None:
    probe = probe_question("How many orders from oslo are unpaid?", RECORDS)
    assert min(probe.found.values()) > 3  # nothing rare in these records
    (word,) = probe.samples
    assert probe.found[word] == min(probe.found.values())
    assert probe.samples[word] in RECORDS.splitlines()  # a whole short record line, as written


def test_probe_shows_each_line_once_and_no_first_mentions_for_a_list_question() -> None:
    text = "x\nThe special magic number for amber-fox is 12. Then more.\ny"
    probe = probe_question("What is the special magic number for amber-fox?", text)
    assert len(probe.samples) == 1  # 'special', 'magic' and 'amber-fox' share the line
    assert "First mention" in probe.describe_for("lookup")
    assert "First mention" not in probe.describe_for("list")


def test_probe_cuts_a_long_sentence_around_the_word() -> None:
    text = "a " * 400 + "the code for kestrel-9 is 4471 " + "b " * 400
    (sample,) = probe_question("code for kestrel-9?", text).samples.values()
    assert sample.startswith("...") and sample.endswith("...") and "kestrel-9 is 4471" in sample
    assert len(sample) <= 2 * 120 + len("kestrel-9") + 6


@pytest.mark.parametrize(
    ("question", "quoted"), [("Which code is assigned to oslo?", True), ("List every code for oslo.", False)]
)
async def test_the_first_message_quotes_a_first_mention_except_for_a_list_question(question: str, quoted: bool) -> None:
    rlm, root, _ = make_rlm([block("FINAL('x')")])
    await run(rlm, question, RECORDS)
    assert ("First mention of" in _first_user(root.calls[0])) is quoted


# --------------------------------------------------------------------------- grep('word', context)


async def _no_sub_call(function: str, prompt: str, max_tokens: int | None = None) -> str:
    raise AssertionError("grep makes no model call")


async def test_grep_with_a_multi_line_text_as_last_argument_searches_that_text() -> None:
    helpers = ReplHelpers("nothing to see here", _no_sub_call, max_prompt_chars=1_000)
    short = "a paid bill\nan unpaid bill\nno bill"
    assert len(short) < TEXT_ARG_CHARS
    assert await helpers.grep("paid", short) == ["a paid bill"]
    assert len(await helpers.grep("oslo", "unpaid", RECORDS)) == 4  # the words before the text are all words
    assert helpers.notes.take() == []  # nothing was searched for in vain


async def test_grep_with_a_long_single_line_as_last_argument_searches_that_text() -> None:
    helpers = ReplHelpers(RECORDS, _no_sub_call, max_prompt_chars=1_000)
    line = "x " * 300 + "needle 42 " + "y " * 300
    assert "\n" not in line and len(line) > TEXT_ARG_CHARS
    [hit] = await helpers.grep("needle", line)
    assert "needle 42" in hit
    assert await helpers.grep("oslo", line) == []  # the line, not the context, was searched


async def test_a_short_last_argument_is_still_a_word() -> None:
    helpers = ReplHelpers(RECORDS, _no_sub_call, max_prompt_chars=1_000)
    assert len(await helpers.grep("oslo", "unpaid")) == 4
    assert len(await helpers.grep("unpaid\n")) == 8  # a trailing newline does not make a text
    as_word = "z" * TEXT_ARG_CHARS  # at the limit: a word, found nowhere
    assert await helpers.grep("oslo", as_word) == []
    assert helpers.notes.empty_searches == [f"'oslo', {as_word!r}"]


async def test_a_long_argument_is_a_word_when_text_is_given() -> None:
    helpers = ReplHelpers("unrelated", _no_sub_call, max_prompt_chars=1_000)
    assert await helpers.grep("oslo", "q" * (TEXT_ARG_CHARS + 1), text=RECORDS) == []
    assert len(await helpers.grep("oslo", text=RECORDS)) == 8


async def test_grep_of_a_word_in_context_passed_as_an_argument_counts_in_a_run() -> None:
    rlm, _, _ = make_rlm([block("FINAL(len(grep('unpaid', context)))")])
    result = await run(rlm, "How many orders are unpaid?", RECORDS)
    assert result.status == "completed" and result.answer == 8


def test_a_long_line_gives_a_window_where_every_word_is_near_the_rarest_not_at_the_first_word() -> None:
    filler = " ".join(["the cart went by the mill"] * 20)
    line = (
        f"{filler} One more access code assigned to ivory-orchid is 4770746. {filler} "
        f"One more access code assigned to misty-beaver is 6619605. {filler} "
        f"One more access code assigned to misty-beaver is 5510558. {filler}"
    )
    hits = find_lines([line], ["access", "code", "misty-beaver"])
    assert len(hits) == 2  # one window per mention of the rarest word, each with every word near it
    assert "6619605" in hits[0] and "5510558" in hits[1]
    assert not any("4770746" in hit for hit in hits)


def test_a_long_line_whose_words_are_far_apart_still_comes_back_once() -> None:
    filler = " ".join(["the cart went by the mill"] * 40)
    line = f"invoice {filler} unpaid"
    hits = find_lines([line], ["invoice", "unpaid"])
    assert len(hits) == 1 and hits[0].startswith("invoice")

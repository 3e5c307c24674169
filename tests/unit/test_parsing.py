"""`parse_reply`: code blocks and textual FINAL / FINAL_VAR in a root model's reply."""

from __future__ import annotations

import pytest

from rlm_integrations.core.parsing import ParsedReply, parse_reply


def test_plain_prose_has_nothing() -> None:
    parsed = parse_reply("I need to think about this some more.")
    assert parsed == ParsedReply([], None, None)
    assert not parsed.has_final


def test_empty_reply() -> None:
    assert parse_reply("") == ParsedReply([], None, None)


@pytest.mark.parametrize("language", ["repl", "python", "python3", "py", "", "Python", "REPL", "PY"])
def test_code_fence_languages(language: str) -> None:
    parsed = parse_reply(f"Let me look.\n```{language}\nx = 1\nprint(x)\n```\nDone.")
    assert parsed.code_blocks == ["x = 1\nprint(x)"]
    assert not parsed.has_final


@pytest.mark.parametrize("language", ["bash", "json", "text", "output", "sql"])
def test_other_languages_are_not_run(language: str) -> None:
    assert parse_reply(f"```{language}\nrm -rf /\n```").code_blocks == []


def test_a_non_python_fence_keeps_the_fences_paired() -> None:
    reply = "Output looked like:\n```text\n42 lines\n```\nNext step:\n```repl\nprint(len(context))\n```\n"
    assert parse_reply(reply).code_blocks == ["print(len(context))"]


def test_fence_with_an_info_string_after_the_language() -> None:
    assert parse_reply("```python title='step'\nx = 2\n```").code_blocks == ["x = 2"]


def test_several_blocks_keep_their_order_and_empty_blocks_are_dropped() -> None:
    reply = "```repl\na = 1\n```\ntext\n```repl\n\n```\n```python\nb = a + 1\n```"
    assert parse_reply(reply).code_blocks == ["a = 1", "b = a + 1"]


def test_inner_blank_lines_and_indentation_are_kept() -> None:
    code = "def f(x):\n    y = x * 2\n\n    return y\nprint(f(2))"
    assert parse_reply(f"```repl\n\n{code}\n\n```").code_blocks == [code]


def test_unterminated_fence_runs_to_the_end() -> None:
    assert parse_reply("```repl\nprint('cut off')\nx = 3").code_blocks == ["print('cut off')\nx = 3"]


def test_crlf_line_endings() -> None:
    assert parse_reply("```repl\r\nx = 1\r\nprint(x)\r\n```\r\n").code_blocks == ["x = 1\nprint(x)"]


def test_inline_backticks_are_not_a_block() -> None:
    assert parse_reply("Use ```print(x)``` to see it.").code_blocks == []


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ('FINAL("Paris")', "Paris"),
        ("FINAL('Paris')", "Paris"),
        ("FINAL(42)", 42),
        ("FINAL(-1.5)", -1.5),
        ("FINAL([1, 'a', None])", [1, "a", None]),
        ("FINAL({'k': (1, 2)})", {"k": (1, 2)}),
        ("FINAL(True)", True),
        ('FINAL("a (b) c")', "a (b) c"),
        ('FINAL("it\'s \\"quoted\\" (really)")', 'it\'s "quoted" (really)'),
        ("FINAL(The capital is Paris)", "The capital is Paris"),
        ("FINAL(f(x) + (1))", "f(x) + (1)"),
        ("FINAL(  7  )", 7),
    ],
)
def test_textual_final_values(reply: str, value: object) -> None:
    parsed = parse_reply(reply)
    assert parsed.has_final
    assert parsed.final_text == value
    assert type(parsed.final_text) is type(value)
    assert parsed.final_variable is None


def test_textual_final_after_prose_lines() -> None:
    assert parse_reply("I counted them.\nThe answer is below.\nFINAL(12)").final_text == 12


def test_textual_final_with_markdown_emphasis() -> None:
    assert parse_reply("**FINAL(12)**").final_text == 12
    assert parse_reply("  FINAL('x')").final_text == "x"


def test_a_mention_of_final_inside_a_sentence_is_not_an_answer() -> None:
    parsed = parse_reply("```repl\nprint(len(context))\n```\nWhen I know more I will call FINAL(answer).")
    assert parsed.code_blocks == ["print(len(context))"]
    assert not parsed.has_final


@pytest.mark.parametrize("reply", ["FINAL()", "FINAL(   )", "FINAL(", "MY_FINAL(3)", "FINAL 3"])
def test_not_a_final(reply: str) -> None:
    assert not parse_reply(reply).has_final


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        ('FINAL("x",)', "x"),
        ("FINAL('x' , )", "x"),
        ("FINAL(42,)", 42),
        ("FINAL([1, 2],)", [1, 2]),
        ('FINAL(("a", "b"),)', ("a", "b")),  # a tuple only when the model writes one
        ("FINAL(1, 2)", (1, 2)),  # several arguments read as before: a tuple
        ("FINAL(x=1)", "x=1"),  # a keyword argument is not an answer value: the text as written
    ],
)
def test_textual_final_is_read_as_call_arguments(reply: str, value: object) -> None:
    parsed = parse_reply(reply)
    assert parsed.final_text == value
    assert type(parsed.final_text) is type(value)


@pytest.mark.parametrize(
    ("reply", "value"),
    [("final('Paris')", "Paris"), ("Final(42)", 42), ("**final(3)**", 3), ('I know it.\nfInAl("x",)', "x")],
)
def test_textual_final_is_case_insensitive(reply: str, value: object) -> None:
    assert parse_reply(reply).final_text == value


@pytest.mark.parametrize("reply", ["final_var(answer)", "Final_Var('answer')", "FINAL_var( answer )"])
def test_textual_final_var_is_case_insensitive(reply: str) -> None:
    assert (parse_reply(reply).final_variable, parse_reply(reply).final_text) == ("answer", None)


@pytest.mark.parametrize(
    "reply", ["then I will call final(answer)", "finally(3)", "my_final(3)", "```repl\nfinal(3)\n```"]
)
def test_lowercase_final_still_needs_the_textual_form(reply: str) -> None:
    assert not parse_reply(reply).has_final


def test_unclosed_final_takes_the_rest() -> None:
    assert parse_reply("FINAL('unterminated'").final_text == "unterminated"


@pytest.mark.parametrize("reply", ["FINAL_VAR(answer)", "FINAL_VAR('answer')", 'FINAL_VAR( "answer" )'])
def test_final_var_as_text(reply: str) -> None:
    parsed = parse_reply(reply)
    assert parsed.final_variable == "answer"
    assert parsed.final_text is None
    assert parsed.has_final


def test_final_var_wins_over_final() -> None:
    parsed = parse_reply("FINAL(1)\nFINAL_VAR(result)")
    assert (parsed.final_variable, parsed.final_text) == ("result", None)


@pytest.mark.parametrize("reply", ["FINAL_VAR(1abc)", "FINAL_VAR(a.b)", "FINAL_VAR()"])
def test_final_var_needs_an_identifier(reply: str) -> None:
    assert parse_reply(reply).final_variable is None


def test_final_inside_code_is_code_not_text() -> None:
    parsed = parse_reply("```repl\nFINAL(len(context))\n```")
    assert parsed.code_blocks == ["FINAL(len(context))"]
    assert not parsed.has_final
    parsed = parse_reply("```repl\nx = 2\nFINAL_VAR('x')\n```")
    assert parsed.final_variable is None


def test_code_and_textual_final_var_in_one_reply() -> None:
    parsed = parse_reply("```repl\ntotal = sum(range(10))\n```\nFINAL_VAR(total)")
    assert parsed.code_blocks == ["total = sum(range(10))"]
    assert parsed.final_variable == "total"


def test_final_right_after_a_closing_fence() -> None:
    parsed = parse_reply("```repl\nx = 1\n```FINAL(3)")
    assert parsed.code_blocks == ["x = 1"] and parsed.final_text == 3


def test_first_textual_final_wins() -> None:
    assert parse_reply("FINAL(1)\nFINAL(2)").final_text == 1


def test_multiline_final_literal() -> None:
    assert parse_reply('FINAL("""line one\nline two""")').final_text == "line one\nline two"


def test_huge_reply_parses_quickly() -> None:
    import time

    reply = ("prose line\n" * 50_000) + "```repl\nx = 1\n```\n" * 200 + "FINAL(" + "9" * 1000 + ")"
    started = time.perf_counter()
    parsed = parse_reply(reply)
    assert time.perf_counter() - started < 1.0
    assert len(parsed.code_blocks) == 200
    assert parsed.final_text == int("9" * 1000)

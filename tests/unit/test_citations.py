"""Citations: spans of the context behind an answer, found after the run and checked against the context."""

from __future__ import annotations

import json
import re
import time
from typing import Any, cast

import pytest
from engine_helpers import block, make_rlm, router

from rlm_integrations import Citation, RLMResult
from rlm_integrations.cli import main
from rlm_integrations.core.citations import MAX_CITATION_CHARS, MAX_CITATIONS, CiteLog, find_citations
from rlm_integrations.core.events import CellFinished
from rlm_integrations.core.trajectory import Trajectory
from rlm_integrations.viewer import render_html


def _search(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    """`re.search` for a match the test relies on (None fails the test at `.group`, as before)."""
    return cast(re.Match[str], re.search(pattern, text, flags))


FILLER = "The weather was mild and the market was busy that day. "
NEEDLE = "the vault access code is 7401-XQ, written on the back of the map"


def haystack(repeat: int = 500) -> str:
    return FILLER * repeat + "Note: " + NEEDLE + ". " + FILLER * repeat


def quotes(context: Any, citation: Citation) -> str:
    """What the citation's coordinates select in the context."""
    text = context if citation.item is None else context[citation.item]
    return str(text[citation.start : citation.end])


def assert_verified(context: Any, result: RLMResult) -> None:
    for citation in result.citations:
        assert quotes(context, citation) == citation.text
        assert 0 < len(citation.text) <= MAX_CITATION_CHARS


def run(replies: list[str], context: Any, question: str = "What is the vault access code?", **fields: Any) -> RLMResult:
    rlm, _, _ = make_rlm(replies, **fields)
    return rlm.completion(question, context)


def cell(stdout: str) -> CellFinished:
    return CellFinished(run_id="run-1", cell_id="cell-1", iteration=1, stdout=stdout, duration=0.0)


def test_a_needle_answer_cites_the_printed_window_that_holds_it() -> None:
    context = haystack()
    result = run(
        [block("i = context.find('access code')\nprint(context[i - 60 : i + 80])"), block("FINAL('7401-XQ')")],
        context,
    )
    assert result.answer == "7401-XQ"
    assert_verified(context, result)
    assert [c.source for c in result.citations] == ["printed"]
    (citation,) = result.citations
    assert "7401-XQ" in citation.text and citation.item is None
    assert citation.start <= context.index("7401-XQ") < citation.end


def test_an_explicit_cite_call_is_recorded_and_checked() -> None:
    context = haystack()
    code = (
        "i = context.find('access code')\n"
        "cite(context[i : i + 40])\n"  # text copied from the context
        "cite(i - 10, i + 5)\n"  # offsets
        "cite('a sentence that is nowhere in the text')\n"  # dropped: not in the context
        "FINAL('7401-XQ')"
    )
    result = run([block(code)], context)
    at = context.index("access code")
    assert_verified(context, result)
    assert [(c.start, c.end, c.source) for c in result.citations] == [(at, at + 40, "cite"), (at - 10, at + 5, "cite")]


def test_a_child_run_cites_quotes_into_the_top_level_context() -> None:
    context = haystack()
    parent = "i = context.find('access code')\nr = rlm_query('Find the code.', context[i - 200 : i + 200])\nFINAL(r)"
    child = "cite(0, 30)\ncite(context[context.find('vault') :][:40])\nFINAL('7401-XQ')"  # offsets: into its own slice
    scripts = {"What is the vault access code?": [block(parent)], "Find the code.": [block(child)]}
    rlm, _, _ = make_rlm(router(scripts), max_depth=1)
    result = rlm.completion("What is the vault access code?", context)
    assert result.answer == "7401-XQ"
    assert_verified(context, result)
    assert [(c.start, c.source) for c in result.citations] == [(context.index("vault access"), "cite")]


def test_a_bad_cite_argument_is_an_error_the_model_sees() -> None:
    result = run([block("cite(3.5)"), block("FINAL('done')")], haystack(5), question="q?")
    ends = cast(list[CellFinished], list(result.trajectory.iter_events("cell_end")))
    errors = [e.error for e in ends if getattr(e, "error", None)]
    assert errors and "cite() takes the quoted text" in str(errors[0])
    assert result.answer == "done" and result.citations == []


def test_a_list_context_cites_the_item_index_and_offsets_within_it() -> None:
    context = [FILLER * 20, FILLER * 10 + "The treaty was signed by Alvarez Montoya in 1742 at Cadiz. " + FILLER, "end"]
    look = "for i, doc in enumerate(context):\n    if 'treaty' in doc:\n        print(i, doc[doc.find('The t'):][:90])"
    result = run([block(look), block("FINAL('Alvarez Montoya')")], context, question="Who signed the treaty?")
    assert_verified(context, result)
    assert result.citations and all(c.item == 1 for c in result.citations)
    assert "The treaty was signed by Alvarez Montoya in 1742" in result.citations[0].text
    # the printed window, matched back into item 1 (the space print() put after the index matches too)
    assert context[1].index("The treaty") - result.citations[0].start in (0, 1)


def test_a_dict_context_cite_with_item_uses_that_value() -> None:
    context = {"a.txt": "alpha " * 50, "b.txt": "beta " * 20 + "The budget for 2031 is 4.2 million euros. " + "beta"}
    code = "cite('The budget for 2031 is 4.2 million euros', item='b.txt')\nFINAL('4.2 million euros')"
    result = run([block(code)], context, question="What is the 2031 budget?")
    assert_verified(context, result)
    assert result.citations[0].item == "b.txt" and result.citations[0].source == "cite"
    assert result.citations[0].start == context["b.txt"].index("The budget")


def test_a_derived_count_cites_the_evidence_it_printed() -> None:
    lines = [f"2026-01-0{n} INFO job {n} finished without trouble" for n in range(1, 8)]
    errors = ["2026-01-02 ERROR disk full on node alpha", "2026-01-04 ERROR disk full on node beta"]
    errors.append("2026-01-06 ERROR disk full on node gamma")
    context = "\n".join(lines[:2] + errors[:1] + lines[2:4] + errors[1:2] + lines[4:] + errors[2:]) + "\n"
    code = "print(context[:120])\n"  # an exploratory look: not the evidence for the count
    count = "hits = [l for l in context.splitlines() if 'ERROR' in l]\nfor l in hits:\n    print(l)\nFINAL(len(hits))"
    result = run([block(code), block(count)], context, question="How many disk-full errors are there?")
    assert result.answer == 3
    assert_verified(context, result)
    assert [c.text for c in result.citations] == errors
    assert {c.source for c in result.citations} == {"evidence"}


def test_an_answer_that_is_not_in_the_context_gets_no_citation() -> None:
    context = haystack()
    result = run(
        [
            block("print('my guess: Atlantis Harbour 9931')\nprint(context[:200])"),
            block("FINAL('Atlantis Harbour 9931')"),
        ],
        context,
        question="Where is the vault?",
    )
    assert result.citations == []


def test_a_printed_line_that_only_shares_a_name_with_the_answer_is_not_cited() -> None:
    first = "Incident 2291: on 14 March the cooling pump at the Tromso hall failed and was replaced."
    second = "Incident 2307: on 2 May a power feed at the Tromso hall tripped for 40 seconds."
    context = FILLER * 50 + first + " " + FILLER * 50 + second + " " + FILLER
    answer = "The cooling pump at the Tromso hall failed on 14 March (incident 2291)."
    citations = find_citations(context, answer, [cell(f"{first}\n{second}\n")])
    assert [c.text for c in citations] == [first]
    assert context[citations[0].start : citations[0].end] == first


def test_overlapping_printed_windows_become_one_citation() -> None:
    context = haystack()
    at = context.index("7401-XQ")
    printed = f"{context[at - 80 : at + 20]}\n{context[at - 10 : at + 70]}\n"
    (citation,) = find_citations(context, "7401-XQ", [cell(printed)])
    assert citation.start == at - 80
    assert citation.text == context[at - 80 : at + 70].rstrip()  # printed lines are compared stripped
    assert context[citation.start : citation.end] == citation.text


def test_a_long_verbatim_answer_is_cited_directly() -> None:
    context = haystack()
    result = run([block(f"FINAL({NEEDLE!r})")], context, question="Quote the note.")
    assert_verified(context, result)
    assert result.citations[0].source == "answer"
    assert result.citations[0].start == context.index(NEEDLE)


def test_citations_can_be_switched_off() -> None:
    context = haystack()
    result = run([block(f"cite({NEEDLE!r})\nFINAL({NEEDLE!r})")], context, citations=False)
    assert result.citations == []
    assert not list(result.trajectory.iter_events("citations"))


def test_a_saved_trajectory_keeps_the_citations(tmp_path) -> None:
    context = haystack()
    code = "i = context.find('access code')\nprint(context[i - 60 : i + 80])\ncite(i, i + 11)\nFINAL('7401-XQ')"
    result = run([block(code)], context)
    assert len(result.citations) == 2
    result.save(tmp_path / "run.jsonl")
    loaded = Trajectory.load(tmp_path / "run.jsonl")
    assert loaded.citations == result.citations == result.trajectory.citations
    for citation in loaded.citations:
        assert quotes(context, citation) == citation.text
    (event,) = loaded.iter_events("citations")
    assert loaded.root is not None
    assert event.run_id == loaded.root.run_id and loaded.events[-1] is event  # after the root's run_end
    # `rlm view run.jsonl` lists them, from the file alone
    page = render_html(tmp_path / "run.jsonl")
    found = re.search(r'<script id="rlm-data" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None
    data = json.loads(found.group(1))
    assert [c["text"] for c in data["citations"]] == [c.text for c in result.citations]


def test_a_ten_million_character_context_stays_fast_and_bounded() -> None:
    context = "lorem ipsum dolor sit amet 12 " * 340_000  # about 10.2M characters, "12" everywhere
    place = len(context) // 2
    context = context[:place] + "The reactor serial is ZX-99812 and it was built in Oslo. " + context[place:]
    printed = "\n".join([context[place - 30 : place + 90]] + [context[i : i + 80] for i in range(0, 400_000, 997)])
    log = CiteLog()
    log.function()(context[place : place + 30])
    log.function()("not in the context at all, anywhere")
    began = time.perf_counter()
    citations = find_citations(context, "ZX-99812, 12 of them, built in Oslo", [cell(printed)], log)
    elapsed = time.perf_counter() - began
    assert citations and len(citations) <= MAX_CITATIONS
    assert citations[0].source == "cite"
    for citation in citations:
        assert context[citation.start : citation.end] == citation.text
    assert any("ZX-99812" in c.text for c in citations)
    print(f"10M-character context: {len(citations)} citations in {elapsed * 1000:.0f} ms")


def test_cite_calls_are_capped_and_type_checked() -> None:
    log = CiteLog()
    cite = log.function()
    with pytest.raises(TypeError, match="both offsets"):
        cite(3)
    with pytest.raises(TypeError, match="list index or dict key"):
        cite("x", item=[1])
    for _ in range(500):
        cite("x")
    assert len(log.requests) == 200


def test_the_viewer_shows_a_citations_panel() -> None:
    context = haystack()
    result = run([block("i = context.find('access code')\nprint(context[i - 60 : i + 80])\nFINAL('7401-XQ')")], context)
    page = render_html(result)
    data = json.loads(_search(r'<script id="rlm-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert [c["text"] for c in data["citations"]] == [c.text for c in result.citations]
    assert data["citations"][0]["start"] == result.citations[0].start
    assert "sum-citations" in page and "renderCitations" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "sum-citations" in str(result._repr_html_())  # the notebook frame carries them too


def test_the_result_json_round_trip_keeps_citations() -> None:
    context = haystack()
    result = run([block("cite('access code is 7401-XQ')\nFINAL('7401-XQ')")], context)
    again = RLMResult.model_validate_json(result.model_dump_json())
    assert again.citations == result.citations and again.citations
    assert isinstance(again.citations[0], Citation)


def test_rlm_run_prints_sources_after_the_answer(tmp_path, capfd) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("alpha " * 300 + "The secret code is 123456. " + "beta " * 300)
    code = main(["run", "-q", "What is the secret code?", "-c", str(path), "--model", "scripted-demo"])
    out, err = capfd.readouterr()
    assert code == 0 and "123456" in out
    assert "Sources:" in err
    start, end = (int(n.replace(",", "")) for n in _search(r"\[1\] chars ([\d,]+)-([\d,]+):", err).groups())
    assert "The secret code is 123456" in path.read_text()[start:end]


def test_rlm_run_json_carries_the_citations(tmp_path, capfd) -> None:
    path = tmp_path / "notes.txt"
    text = "alpha " * 300 + "The secret code is 123456. " + "beta " * 300
    path.write_text(text)
    code = main(["run", "-q", "What is the secret code?", "-c", str(path), "--model", "scripted-demo", "--json"])
    out, _ = capfd.readouterr()
    assert code == 0
    data = json.loads(out.strip().splitlines()[-1])
    assert data["answer"] == "123456" and data["citations"]
    for citation in data["citations"]:
        assert text[citation["start"] : citation["end"]] == citation["text"]

"""The DSPy module against real worker REPLs: inputs, typed outputs, robustness, budgets, LMs, usage."""

from __future__ import annotations

import subprocess
import sys
import typing

import pydantic
import pytest

pytest.importorskip("dspy")
import dspy

from rlm_integrations import RLMConfig
from rlm_integrations.core.config import ModelPrice
from rlm_integrations.dspy import RLM, OutputError
from rlm_integrations.dspy.testing import ScriptedDSPyLM, chat_reply, rlm_replies
from rlm_integrations.errors import BudgetConfigError, ConfigError, MissingExtraError, UsageError
from rlm_integrations.repl import LocalREPL

CELL_TIMEOUT_S = 20.0


def config(**fields: typing.Any) -> RLMConfig:
    fields.setdefault("cell_timeout_s", CELL_TIMEOUT_S)
    return RLMConfig(**fields)


def generate_requests(lm: ScriptedDSPyLM) -> list[str]:
    """The last user message of every `generate_code` request, in order."""
    return [c[-1]["content"] for c in lm.calls if "[[ ## iteration ## ]]" in c[-1]["content"]]


def extract_requests(lm: ScriptedDSPyLM) -> list[str]:
    return [
        c[-1]["content"]
        for c in lm.calls
        if "[[ ## repl_history ## ]]" in c[-1]["content"] and "[[ ## iteration ## ]]" not in c[-1]["content"]
    ]


# -- inputs ---------------------------------------------------------------------------------------
def test_every_input_is_a_repl_variable_and_outputs_come_from_final():
    lm = ScriptedDSPyLM(
        rlm_replies(
            [
                "print(isinstance(context, str), len(context), question, isinstance(docs, list), len(docs), k + 1)",
                "FINAL(answer=question.upper() + docs[k])",
            ]
        )
    )
    program = RLM("context, question, docs: list[str], k: int -> answer", config=config())
    with dspy.context(lm=lm):
        pred = program(context="some text", question="hi", docs=["a", "b"], k=1)
    assert pred.answer == "HIb"
    assert pred.status == "completed"
    assert pred.trajectory[0]["output"].endswith("True 9 hi True 2 2")
    assert pred.trajectory[-1]["code"] == "FINAL(answer=question.upper() + docs[k])"
    first = generate_requests(lm)[0]
    assert "Variable `docs`: list, 2 items." in first
    assert "Variable `k`: int." in first


def test_a_big_input_never_enters_the_prompt():
    context = "x" * 2_000_000 + "NEEDLE"
    lm = ScriptedDSPyLM(rlm_replies(["print(len(context))", "FINAL(answer=str(context.index('NEEDLE')))"]))
    program = RLM("context, question -> answer", config=config(), preview_chars=100)
    with dspy.context(lm=lm):
        pred = program(context=context, question="where is the needle?")
    assert pred.answer == "2000000"
    assert max(len(m["content"]) for call in lm.calls for m in call) < 12_000


class CountingREPL(LocalREPL):
    loads: typing.ClassVar[list[str]] = []

    async def load(self, name: str, value: typing.Any) -> None:
        CountingREPL.loads.append(name)
        await super().load(name, value)


def test_inputs_are_loaded_once_per_call_not_per_turn():
    CountingREPL.loads = []
    lm = ScriptedDSPyLM(rlm_replies(["print(1)", "print(2)", "print(3)", "FINAL(answer=question)"]))
    program = RLM(
        "context, question -> answer",
        config=config(),
        repl=lambda cfg: CountingREPL(cell_timeout_s=cfg.cell_timeout_s),
    )
    with dspy.context(lm=lm):
        pred = program(context="c" * 100_000, question="q")
    assert pred.answer == "q"
    assert len(pred.trajectory) == 4
    assert sorted(CountingREPL.loads) == ["context", "question"]


class Item(pydantic.BaseModel):
    name: str
    size: int


def test_pydantic_and_list_inputs_arrive_as_plain_data():
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=item['name'] * item['size'] + str(sum(numbers)))"]))
    program = RLM("item: Item, numbers: list[int] -> answer", config=config())
    with dspy.context(lm=lm):
        pred = program(item=Item(name="ab", size=2), numbers=[1, 2, 3])
    assert pred.answer == "abab6"


def test_missing_inputs_and_missing_lm_are_usage_errors():
    program = RLM("context, question -> answer", config=config())
    with dspy.context(lm=ScriptedDSPyLM([])), pytest.raises(UsageError, match="missing input"):
        program(context="c")
    with dspy.context(lm=None), pytest.raises(UsageError, match="no language model"):
        program(context="c", question="q")


def test_names_that_clash_with_the_repl_are_refused():
    with pytest.raises(ConfigError, match="llm_query"):
        RLM("llm_query -> answer")
    with pytest.raises(ConfigError, match="status"):
        RLM("question -> status")
    with pytest.raises(ConfigError, match="FINAL"):
        RLM("question -> answer", tools={"FINAL": print})


# -- typed outputs ---------------------------------------------------------------------------------
class Person(pydantic.BaseModel):
    name: str
    age: int


class Typed(dspy.Signature):
    """Describe the text."""

    text: str = dspy.InputField()
    count: int = dspy.OutputField()
    ratio: float = dspy.OutputField()
    flag: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    kind: typing.Literal["short", "long"] = dspy.OutputField()
    person: Person = dspy.OutputField()


def test_typed_outputs_are_validated_and_a_type_error_is_fed_back():
    wrong = "FINAL(count='many', ratio=0.5, flag=True, tags=['a'], kind='medium', person={'name': 'Al'})"
    right = "FINAL(count='3', ratio='0.5', flag='true', tags=('a', 'b'), kind='short', person={'name': 'Al', 'age': 3})"
    lm = ScriptedDSPyLM(rlm_replies([wrong, right]))
    program = RLM(Typed, config=config())
    with dspy.context(lm=lm):
        pred = program(text="abc")
    assert pred.status == "completed"
    assert (pred.count, pred.ratio, pred.flag, pred.tags, pred.kind) == (3, 0.5, True, ["a", "b"], "short")
    assert pred.person == Person(name="Al", age=3)
    feedback = generate_requests(lm)[1]
    assert "FINAL was not accepted" in feedback
    assert "`count`: expected int, got 'many'" in feedback
    assert "`kind`: expected one of 'short', 'long'" in feedback
    assert "`person`: expected a dict matching the JSON schema of Person" in feedback
    assert "age" in feedback
    assert "`ratio`" not in feedback.split("FINAL was not accepted")[1].split("[[ ## iteration")[0]


def test_one_output_accepts_a_plain_final_value():
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(6 * 7)"]))
    program = RLM("question -> answer: int", config=config())
    with dspy.context(lm=lm):
        assert program(question="q").answer == 42


def test_several_outputs_need_names():
    lm = ScriptedDSPyLM(rlm_replies(["FINAL('x')", "FINAL(a='x', b=2)"]))
    program = RLM("question -> a, b: int", config=config())
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert (pred.a, pred.b) == ("x", 2)
    assert "submit each one by name" in generate_requests(lm)[1]
    assert issubclass(OutputError, ValueError)


# -- robustness -----------------------------------------------------------------------------------
def test_an_unparseable_reply_is_retried_with_a_correction():
    def reply(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        if "could not be read" in last:
            return chat_reply(reasoning="fixed", code="FINAL(answer='ok')")
        return "I refuse to use the format."

    lm = ScriptedDSPyLM(reply)
    program = RLM("question -> answer", config=config())
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.answer == "ok"
    assert pred.status == "completed"
    assert len(pred.trajectory) == 1


def test_replies_that_never_parse_end_with_a_status_not_a_crash():
    lm = ScriptedDSPyLM(
        lambda messages: chat_reply(answer="salvaged") if "ended (out of" in messages[0]["content"] else "nonsense"
    )
    program = RLM("question -> answer", config=config(max_iterations=2), parse_retries=1)
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.status == "max_iterations"
    assert pred.answer == "salvaged"
    assert [step["reasoning"] for step in pred.trajectory] == ["(the reply could not be parsed)"] * 2


def test_a_cell_error_goes_back_to_the_model():
    lm = ScriptedDSPyLM(rlm_replies(["x = 1 / 0", "FINAL(answer='recovered')"]))
    program = RLM("question -> answer", config=config())
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.answer == "recovered"
    assert "ZeroDivisionError" in generate_requests(lm)[1]


def test_a_model_failure_raises_the_original_error():
    class ProviderDown(Exception):
        pass

    lm = ScriptedDSPyLM([ProviderDown("the provider is down")])
    program = RLM("question -> answer", config=config())
    with dspy.context(lm=lm), pytest.raises(Exception, match="the provider is down"):
        program(question="q")


# -- budgets ----------------------------------------------------------------------------------------
def test_max_iterations_ends_with_one_extraction_and_a_status():
    lm = ScriptedDSPyLM(rlm_replies(["print('still looking')"], extract=chat_reply(answer="best guess", n="4")))
    program = RLM("question -> answer, n: int", config=config(max_iterations=3))
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.status == "max_iterations"
    assert (pred.answer, pred.n) == ("best guess", 4)
    assert len(pred.trajectory) == 3
    assert len(extract_requests(lm)) == 1
    assert "still looking" in extract_requests(lm)[0]
    assert pred.rlm_result.limit == "max_iterations"


def test_extract_is_not_called_when_the_run_submits():
    lm = ScriptedDSPyLM(rlm_replies(["print(1)", "FINAL(answer='done')"]))
    program = RLM("question -> answer", config=config())
    with dspy.context(lm=lm):
        program(question="q")
    assert extract_requests(lm) == []


def test_the_call_budget_covers_sub_calls_and_ends_the_run():
    lm = ScriptedDSPyLM(rlm_replies(["print(llm_query('more?'))"]))
    program = RLM("question -> answer", config=config(max_llm_calls=5, max_iterations=10))
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.status == "budget_exhausted"
    assert pred.rlm_result.limit == "max_llm_calls"
    assert pred.answer == "extracted"
    assert len(pred.trajectory) < 10
    assert "model calls left" in generate_requests(lm)[1]


# -- LMs and usage ----------------------------------------------------------------------------------
def test_sub_lm_answers_llm_query_and_usage_includes_every_model():
    root = ScriptedDSPyLM(
        rlm_replies(["r = llm_query_batched(['one', 'two'])\nprint(r)", "FINAL(answer=' + '.join(r))"]), model="root/lm"
    )
    sub = ScriptedDSPyLM(lambda messages: "sub:" + messages[-1]["content"], model="sub/lm")
    program = RLM("question -> answer", sub_lm=sub, config=config())
    with dspy.context(lm=root, track_usage=True):
        pred = program(question="q")
    assert pred.answer == "sub:one + sub:two"
    assert len(sub.calls) == 2
    assert set(pred.usage.by_model) == {"root/lm", "sub/lm"}
    assert pred.usage.by_model["sub/lm"].calls == 2
    usage = pred.get_lm_usage()
    assert set(usage) == {"root/lm", "sub/lm"}
    assert usage["sub/lm"]["prompt_tokens"] == pred.usage.by_model["sub/lm"].prompt_tokens


def test_the_modules_own_lm_wins_over_the_settings():
    own = ScriptedDSPyLM(rlm_replies(["FINAL(answer='own')"]), model="own/lm")
    program = RLM("question -> answer", config=config())
    program.set_lm(own)
    with dspy.context(lm=ScriptedDSPyLM([], model="global/lm")):
        assert program(question="q").answer == "own"


def test_rlm_query_runs_a_child_rlm_whose_usage_counts():
    def reply(messages: list[dict[str, str]]) -> str:
        if "Question: how long" in messages[-1]["content"]:  # the child's turn, through `generate_code` too
            return chat_reply(reasoning="count", code="FINAL(str(len(context)))")
        return rlm_replies(["print(rlm_query('how long is it?', context='abcd'))", "FINAL(answer='child said 4')"])(
            messages
        )

    lm = ScriptedDSPyLM(reply)
    program = RLM("question -> answer", config=config(max_depth=1))
    with dspy.context(lm=lm, track_usage=True):
        pred = program(question="q")
    assert pred.trajectory[0]["output"].endswith("4")
    runs = pred.rlm_result.trajectory.runs()
    assert [run.depth for run in runs] == [0, 1]
    assert pred.usage.calls == 3
    assert pred.get_lm_usage()["scripted/dspy"]["prompt_tokens"] == pred.usage.total.prompt_tokens


def test_tools_are_callable_from_code():
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return {"a": "apple"}[key]

    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=lookup('a'))"]))
    program = RLM("question -> answer", tools=[lookup], config=config())
    with dspy.context(lm=lm):
        assert program(question="q").answer == "apple"
    assert "`lookup(...)`: Look a key up in the host's table." in program.repl_guide


def test_missing_dspy_raises_missing_extra_error():
    code = (
        "import sys; sys.modules['dspy'] = None\n"
        "try:\n    import rlm_integrations.dspy\n"
        "except ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith(MissingExtraError.__name__)
    assert 'pip install "rlm-integrations[dspy]"' in out


class PricedLM(ScriptedDSPyLM):
    """A scripted LM whose every call DSPy records at $0.01."""

    def update_history(self, entry):
        entry["cost"] = 0.01
        super().update_history(entry)


def test_costs_are_counted_and_the_cost_budget_ends_the_run():
    lm = PricedLM(rlm_replies(["print(llm_query('x'))"]))
    # DSPy prices a call only after it is made: a cost limit needs the price up front (here $0.01 per reply)
    price = ModelPrice(input_usd_per_token=0, output_usd_per_token=0.01 / 4096)
    cfg = config(max_cost_usd=0.045, max_iterations=10, prices={lm.model: price}, reply_reserve_tokens=4096)
    program = RLM("question -> answer", config=cfg)
    with dspy.context(lm=lm):
        pred = program(question="q")
    assert pred.status == "budget_exhausted"
    assert pred.rlm_result.limit == "max_cost_usd"
    assert pred.usage.cost_complete
    assert pred.usage.cost_usd == pytest.approx(0.01 * pred.usage.calls)
    assert pred.usage.calls == 4  # 2 turns + 1 sub-call, then the extraction reserved from the start
    assert pred.usage.cost_usd <= 0.045


def test_a_cost_limit_over_an_unpriced_dspy_lm_is_refused_up_front():
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer='x')"]))
    program = RLM("question -> answer", config=config(max_cost_usd=1.0))
    with dspy.context(lm=lm), pytest.raises(BudgetConfigError, match="prices"):
        program(question="q")
    assert lm.history == []


def test_the_feedback_history_carries_no_chat_nudges():
    lm = ScriptedDSPyLM(rlm_replies(["print('seen')", "print('again')", "FINAL(answer='x')"]))
    program = RLM("question -> answer", config=config(max_iterations=5))
    with dspy.context(lm=lm):
        pred = program(question="q")
    history = generate_requests(lm)[2].split("[[ ## repl_history ## ]]")[1].split("[[ ## iteration ## ]]")[0]
    assert "seen" in history and "again" in history
    assert "turns left" not in history
    assert "Question:" not in history
    assert [step["output"] for step in pred.trajectory[:2]] == [
        "Output (5 characters):\nseen",
        "Output (6 characters):\nagain",
    ]


def test_a_call_logs_no_warnings(caplog):
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=question)"]))
    with dspy.context(lm=lm), caplog.at_level("WARNING"):
        assert RLM("question -> answer", config=config())(question="q").answer == "q"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []


def test_an_input_named_like_a_prelude_module_keeps_its_value():
    program = RLM(dspy.Signature({"re": dspy.InputField(), "answer": dspy.OutputField()}), config=config())
    lm = ScriptedDSPyLM(rlm_replies(["FINAL(answer=re)"]))
    with dspy.context(lm=lm):
        assert program(re="a pattern").answer == "a pattern"

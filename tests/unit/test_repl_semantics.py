"""Notebook semantics of the local REPL and the Python syntax LM-written code relies on."""

from __future__ import annotations

import asyncio

import pytest

from rlm_integrations.errors import REPLClosedError, UnsupportedContextError, WorkerCrashedError
from rlm_integrations.repl import CellResult, LocalREPL


@pytest.fixture
async def repl():
    instance = LocalREPL(cell_timeout_s=10.0)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


async def run_ok(repl: LocalREPL, code: str) -> CellResult:
    cell = await repl.execute(code)
    assert cell.error is None, f"{code!r} failed: {cell.error}"
    assert cell.ok
    return cell


# -- notebook semantics -------------------------------------------------------------------------------


async def test_one_namespace_across_cells(repl: LocalREPL) -> None:
    await run_ok(repl, "x = 41")
    await run_ok(repl, "def bump(v):\n    return v + 1")
    cell = await run_ok(repl, "bump(x)")
    assert cell.value == "42"


async def test_trailing_expression_repr(repl: LocalREPL) -> None:
    assert (await run_ok(repl, "'a' + 'b'")).value == "'ab'"
    assert (await run_ok(repl, "x = [1, 'two', 3.5]\nx")).value == "[1, 'two', 3.5]"
    assert (await run_ok(repl, "{'k': (1, 2)}")).value == "{'k': (1, 2)}"


async def test_trailing_none_shows_nothing(repl: LocalREPL) -> None:
    assert (await run_ok(repl, "None")).value is None
    assert (await run_ok(repl, "x = 1")).value is None
    assert (await run_ok(repl, "[].append(1)")).value is None


async def test_only_the_last_statement_is_the_value(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "1 + 1\n2 + 2")
    assert cell.value == "4"
    assert cell.stdout == ""


async def test_print_as_the_only_statement(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "print('hello', 42)")
    assert cell.stdout == "hello 42\n"
    assert cell.value is None


async def test_print_as_the_trailing_statement(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "x = 5\nprint(f'x is {x}')")
    assert cell.stdout == "x is 5\n"
    assert cell.value is None


async def test_print_options(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "print('a', 'b', sep='-', end='!')\nprint()\nprint(1, 2, 3)\nx = 1")
    assert cell.stdout == "a-b!\n1 2 3\n"


async def test_print_inside_functions_and_classes(repl: LocalREPL) -> None:
    code = "def f():\n    print('in f')\nclass C:\n    def m(self):\n        print('in m')\nf()\nC().m()\nprint('top')"
    cell = await run_ok(repl, code)
    assert cell.stdout == "in f\nin m\ntop\n"


async def test_stdout_is_per_cell(repl: LocalREPL) -> None:
    await run_ok(repl, "print('first')\nx = 1")
    cell = await run_ok(repl, "print('second')\ny = 2")
    assert cell.stdout == "second\n"
    assert cell.output_chars == len("second\n")


async def test_syntax_error_runs_nothing(repl: LocalREPL) -> None:
    cell = await repl.execute("y = 1\nprint('ran')\nx = = 2")
    assert cell.error_type == "SyntaxError" and cell.error is not None
    assert "line 3" in cell.error
    assert cell.stdout == ""
    missing = await repl.execute("y")
    assert missing.error_type == "NameError"


async def test_policy_error_in_trailing_expression_runs_nothing(repl: LocalREPL) -> None:
    cell = await repl.execute("z = 1\nprint('ran')\n().__class__")
    assert not cell.ok
    assert cell.stdout == ""
    assert (await repl.execute("z")).error_type == "NameError"


async def test_runtime_error_keeps_earlier_assignments(repl: LocalREPL) -> None:
    cell = await repl.execute("a = 1\nb = 2\nc = 1 / 0\nd = 4")
    assert cell.error_type == "ZeroDivisionError" and cell.error is not None
    assert "line 3" in cell.error
    assert "c = 1 / 0" in cell.error
    assert (await run_ok(repl, "(a, b)")).value == "(1, 2)"
    assert (await repl.execute("d")).error_type == "NameError"


async def test_runtime_error_traceback_names_the_function_line(repl: LocalREPL) -> None:
    cell = await repl.execute("def inner(v):\n    return v['missing']\n\ndef outer():\n    return inner({})\nouter()")
    assert cell.error_type == "KeyError" and cell.error is not None
    assert "line 6" in cell.error
    assert "line 2" in cell.error
    assert "inner" in cell.error
    assert "missing" in cell.error
    assert "_worker" not in cell.error and "_notebook" not in cell.error  # no REPL internals in the traceback


async def test_output_before_an_error_is_kept(repl: LocalREPL) -> None:
    cell = await repl.execute("print('before')\nraise ValueError('bad value')")
    assert cell.stdout == "before\n"
    assert cell.error_type == "ValueError"
    assert "bad value" in (cell.error or "")


async def test_duration_and_output_chars(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "total = 0\nfor i in range(300000):\n    total = total + i\nprint(total)")
    assert cell.stdout == f"{sum(range(300000))}\n"
    assert cell.output_chars == len(cell.stdout)
    assert 0.0 < cell.duration < 10.0
    assert not cell.timed_out and not cell.restarted and cell.lost_variables == []


# -- syntax LM code uses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param("[x * x for x in range(5) if x % 2 == 0]", "[0, 4, 16]", id="list_comprehension"),
        pytest.param("{k: len(k) for k in ['a', 'bb']}", "{'a': 1, 'bb': 2}", id="dict_comprehension"),
        pytest.param("sorted({c for c in 'banana'})", "['a', 'b', 'n']", id="set_comprehension"),
        pytest.param("sum(x for x in range(10))", "45", id="generator_expression"),
        pytest.param("[(i, j) for i in range(2) for j in range(2) if i != j]", "[(0, 1), (1, 0)]", id="nested_comp"),
        pytest.param(
            "name = 'Ada'\nn = 3.14159\nf'{name!r:>7}|{n:.2f}|{n=:.1f}'", "\"  'Ada'|3.14|n=3.1\"", id="fstring"
        ),
        pytest.param("w = 'x'\nf'{w * 3}{{literal}}'", "'xxx{literal}'", id="fstring_braces"),
        pytest.param("'{} and {name}'.format(1, name='two')", "'1 and two'", id="str_format_plain"),
        pytest.param("'{0[k]} {1[0]}'.format({'k': 'v'}, [9])", "'v 9'", id="str_format_items"),
        pytest.param("'%s=%d' % ('a', 5)", "'a=5'", id="percent_format"),
        pytest.param("f = lambda x, y=2: x * y\n(f(3), f(3, 3))", "(6, 9)", id="lambda"),
        pytest.param(
            "def gen(n):\n    for i in range(n):\n        yield i * i\ng = gen(4)\n(next(g), list(g))",
            "(0, [1, 4, 9])",
            id="generator",
        ),
        pytest.param(
            "def inner():\n    yield 1\n    yield 2\ndef outer():\n    yield from inner()\n    yield 3\nlist(outer())",
            "[1, 2, 3]",
            id="yield_from",
        ),
        pytest.param(
            "def g():\n    x = yield 1\n    yield x * 2\nit = g()\nnext(it)\nit.send(21)",
            "42",
            id="generator_send",
        ),
        pytest.param(
            "try:\n    {}['k']\nexcept (KeyError, ValueError) as e:\n    r = 'caught ' + str(e)\nelse:\n    r = 'no'\n"
            "finally:\n    done = True\n(r, done)",
            "(\"caught 'k'\", True)",
            id="try_except_else_finally",
        ),
        pytest.param(
            "class MyError(Exception):\n    pass\n"
            "try:\n    raise MyError('custom')\nexcept MyError as e:\n    r = e.args\nr",
            "('custom',)",
            id="custom_exception",
        ),
        pytest.param("data = [5, 1, 7]\nif (n := len(data)) > 2:\n    r = n\nr", "3", id="walrus_if"),
        pytest.param("[y for x in range(5) if (y := x * 2) > 4]", "[6, 8]", id="walrus_comprehension"),
        pytest.param("first, *rest = [1, 2, 3]\n(first, rest)", "(1, [2, 3])", id="star_unpack"),
        pytest.param("a, (b, c) = 1, (2, 3)\na + b + c", "6", id="nested_unpack"),
        pytest.param("[*range(2), *'ab']", "[0, 1, 'a', 'b']", id="star_in_list"),
        pytest.param("d1 = {'a': 1}\nd2 = {'b': 2}\n{**d1, **d2}", "{'a': 1, 'b': 2}", id="double_star_dict"),
        pytest.param(
            "def f(*args, **kwargs):\n    return (args, kwargs)\nf(*[1, 2], **{'k': 3})",
            "((1, 2), {'k': 3})",
            id="star_call",
        ),
        pytest.param("[a + b for a, *bs in [(1, 2, 3)] for b in bs]", "[3, 4]", id="star_in_for_target"),
        pytest.param(
            "for i, (k, v) in enumerate({'x': 1}.items()):\n    r = (i, k, v)\nr", "(0, 'x', 1)", id="for_unpack"
        ),
        pytest.param(
            "words = ['bb', 'a', 'ccc', 'dd']\nsorted(words, key=lambda w: (-len(w), w))",
            "['ccc', 'bb', 'dd', 'a']",
            id="sorted_key",
        ),
        pytest.param(
            "d = {'a': 3, 'b': 1, 'c': 2}\nsorted(d.items(), key=lambda kv: kv[1], reverse=True)",
            "[('a', 3), ('c', 2), ('b', 1)]",
            id="sorted_items_reverse",
        ),
        pytest.param("l = [3, 1, 2]\nl.sort(key=lambda v: -v)\nl", "[3, 2, 1]", id="list_sort"),
        pytest.param("max(['aa', 'b', 'cccc'], key=len)", "'cccc'", id="max_key"),
        pytest.param(
            "counts = {}\nfor w in 'a b a'.split():\n    counts[w] = counts.get(w, 0) + 1\ncounts",
            "{'a': 2, 'b': 1}",
            id="dict_counting",
        ),
        pytest.param("c = {'n': 1}\nc['n'] += 5\nc", "{'n': 6}", id="augmented_item"),
        pytest.param("l = [1]\nl += [2]\nl", "[1, 2]", id="augmented_name"),
        pytest.param("x = 10\nx -= 3\nx *= 2\nx", "14", id="augmented_arithmetic"),
        pytest.param("s = {1}\ns.add(2)\ns |= {3}\nsorted(s)", "[1, 2, 3]", id="set_ops"),
        pytest.param("list(zip('ab', range(2)))", "[('a', 0), ('b', 1)]", id="zip"),
        pytest.param("list(map(str.upper, ['a', 'b']))", "['A', 'B']", id="map_unbound_method"),
        pytest.param("list(filter(None, [0, 1, '', 'x']))", "[1, 'x']", id="filter"),
        pytest.param("list(reversed(range(3)))", "[2, 1, 0]", id="reversed"),
        pytest.param("(isinstance(1, int), isinstance('s', (int, float)))", "(True, False)", id="isinstance"),
        pytest.param(
            "(min(3, 1), abs(-2), round(2.567, 2), divmod(7, 2))", "(1, 2, 2.57, (3, 1))", id="numeric_builtins"
        ),
        pytest.param(
            "'  Hello World  '.strip().lower().replace('world', 'there').split()",
            "['hello', 'there']",
            id="str_methods",
        ),
        pytest.param(
            "text = 'line1\\nline2'\n[l for l in text.splitlines() if l]", "['line1', 'line2']", id="splitlines"
        ),
        pytest.param("x = 0\nwhile True:\n    x = x + 1\n    if x >= 3:\n        break\nx", "3", id="while_break"),
        pytest.param(
            "def outer():\n    k = 2\n    def inner(v):\n        return v * k\n    return inner\nouter()(21)",
            "42",
            id="closure",
        ),
        pytest.param(
            "def deco(fn):\n    def wrapper(*a):\n        return fn(*a) + 1\n    return wrapper\n"
            "@deco\ndef f(x):\n    return x\nf(1)",
            "2",
            id="decorator",
        ),
        pytest.param("def f(a, /, b, *, c=3):\n    return a + b + c\nf(1, b=2)", "6", id="param_kinds"),
        pytest.param("x = 5\n'big' if x > 3 else 'small'", "'big'", id="conditional_expression"),
        pytest.param("assert 1 + 1 == 2, 'math'\n'ok'", "'ok'", id="assert"),
        pytest.param("b = b'abc'\n(b[0], b.decode())", "(97, 'abc')", id="bytes"),
        pytest.param("x = None\nx is None and not []", "True", id="bool_logic"),
    ],
)
async def test_python_syntax(repl: LocalREPL, code: str, expected: str) -> None:
    cell = await run_ok(repl, code)
    assert cell.value == expected


async def test_classes_with_methods_and_attribute_writes(repl: LocalREPL) -> None:
    code = (
        "class Counter2:\n"
        "    kind = 'counter'\n"
        "    def __init__(self, start):\n"
        "        self.n = start\n"
        "        self.items = []\n"
        "    def inc(self, by=1):\n"
        "        self.n += by\n"
        "        self.items.append(by)\n"
        "        return self\n"
        "    @property\n"
        "    def double(self):\n"
        "        return self.n * 2\n"
        "    @staticmethod\n"
        "    def make():\n"
        "        return Counter2(10)\n"
        "    @classmethod\n"
        "    def named(cls):\n"
        "        return cls.kind\n"
        "c = Counter2(1).inc().inc(5)\n"
        "c.label = 'mine'\n"
        "Counter2.kind = 'changed'\n"
        "(c.n, c.items, c.double, c.label, Counter2.make().n, Counter2.named())"
    )
    cell = await run_ok(repl, code)
    assert cell.value == "(7, [1, 5], 14, 'mine', 10, 'changed')"


async def test_inheritance_and_comparison_methods(repl: LocalREPL) -> None:
    code = (
        "class Base:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n"
        "    def describe(self):\n"
        "        return 'base ' + str(self.v)\n"
        "    def __lt__(self, other):\n"
        "        return self.v < other.v\n"
        "    def __eq__(self, other):\n"
        "        return self.v == other.v\n"
        "class Child(Base):\n"
        "    def describe(self):\n"
        "        return 'child of ' + Base.describe(self)\n"
        "items = sorted([Child(3), Base(1), Child(2)])\n"
        "([i.v for i in items], items[0].describe(), items[1].describe(), Child(2) == Base(2))"
    )
    cell = await run_ok(repl, code)
    assert cell.value == "([1, 2, 3], 'base 1', 'child of base 2', True)"


async def test_user_class_instances_survive_across_cells(repl: LocalREPL) -> None:
    await run_ok(repl, "class Box:\n    def __init__(self):\n        self.things = []\nbox = Box()")
    await run_ok(repl, "box.things.append('a')\nbox.extra = 1")
    assert (await run_ok(repl, "(box.things, box.extra)")).value == "(['a'], 1)"


async def test_with_statement_on_a_host_object(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import decimal\n"
        "with decimal.localcontext(prec=4):\n"
        "    third = decimal.Decimal(1) / decimal.Decimal(3)\n"
        "(str(third), str(decimal.Decimal(1) / decimal.Decimal(3))[:12])",
    )
    assert cell.value == "('0.3333', '0.3333333333')"


async def test_regular_expressions(repl: LocalREPL) -> None:
    code = (
        "import re\n"
        "text = 'Paris 2024, Rome 1999, paris 2001'\n"
        "pattern = re.compile(r'([A-Za-z]+) (\\d{4})')\n"
        "pairs = [(m.group(1), int(m.group(2))) for m in pattern.finditer(text)]\n"
        "(pairs, re.findall(r'paris', text, re.IGNORECASE), re.sub(r'\\d+', '#', 'a1b22'),\n"
        " re.split(r',\\s*', text)[1], bool(re.search('Rome', text)), re.match('x', text))"
    )
    cell = await run_ok(repl, code)
    assert cell.value == (
        "([('Paris', 2024), ('Rome', 1999), ('paris', 2001)], ['Paris', 'paris'], 'a#b#', 'Rome 1999', True, None)"
    )


async def test_json(repl: LocalREPL) -> None:
    code = (
        "import json\n"
        'doc = json.loads(\'{"a": [1, 2, {"b": null}], "c": true}\')\n'
        "(doc['a'][2], json.dumps({'z': 1, 'y': [1.5]}, sort_keys=True), json.dumps('é', ensure_ascii=False))"
    )
    cell = await run_ok(repl, code)
    assert cell.value == "({'b': None}, '{\"y\": [1.5], \"z\": 1}', '\"é\"')"
    bad = await repl.execute("import json\njson.loads('{broken')")
    assert bad.error_type == "JSONDecodeError"


async def test_collections(repl: LocalREPL) -> None:
    code = (
        "from collections import Counter, defaultdict, deque, OrderedDict, namedtuple\n"
        "import collections\n"
        "c = Counter('abracadabra')\n"
        "groups = defaultdict(list)\n"
        "for w in ['apple', 'avocado', 'banana']:\n"
        "    groups[w[0]].append(w)\n"
        "q = deque([1, 2, 3], maxlen=3)\n"
        "q.append(4)\n"
        "Point = namedtuple('Point', 'x y')\n"
        "p = Point(1, 2)\n"
        "(c.most_common(2), dict(groups), list(q), p.x + p.y, collections.Counter([1, 1]).total(),\n"
        " list(OrderedDict(b=1, a=2)))"
    )
    cell = await run_ok(repl, code)
    assert cell.value == (
        "([('a', 5), ('b', 2)], {'a': ['apple', 'avocado'], 'b': ['banana']}, [2, 3, 4], 3, 2, ['b', 'a'])"
    )


async def test_other_allowed_modules(repl: LocalREPL) -> None:
    code = (
        "import math, statistics, itertools, heapq, bisect, string, textwrap, difflib, datetime, random\n"
        "import unicodedata, fractions, decimal\n"
        "random.seed(1)\n"
        "(math.sqrt(16), statistics.mean([1, 2, 3]), list(itertools.islice(itertools.count(), 3)),\n"
        " heapq.nsmallest(2, [5, 1, 3]), bisect.bisect([1, 3], 2), string.ascii_lowercase[:3],\n"
        " textwrap.shorten('a b c d e f', 7), round(difflib.SequenceMatcher(None, 'abc', 'abd').ratio(), 2),\n"
        " datetime.date(2024, 1, 31).isoformat(), random.randint(1, 1), unicodedata.name('a'),\n"
        " str(fractions.Fraction(1, 3) * 3), str(decimal.Decimal('1.10') + decimal.Decimal('2.20')))"
    )
    cell = await run_ok(repl, code)
    assert cell.value == (
        "(4.0, 2, [0, 1, 2], [1, 3], 1, 'abc', 'a [...]', 0.67, '2024-01-31', 1, 'LATIN SMALL LETTER A', '1', '3.30')"
    )


async def test_import_forms(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "import json as j\nfrom math import floor as fl, ceil\n(j.dumps(1), fl(1.5), ceil(1.5))")
    assert cell.value == "('1', 1, 2)"


# -- FINAL ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param("FINAL(42)", 42, id="int"),
        pytest.param("FINAL([1, 'a', None, 2.5])", [1, "a", None, 2.5], id="list"),
        pytest.param("FINAL({'answer': 'Paris', 'n': [1, 2]})", {"answer": "Paris", "n": [1, 2]}, id="dict"),
        pytest.param("FINAL('Paris')", "Paris", id="str"),
        pytest.param("FINAL((1, 2))", (1, 2), id="tuple"),
        pytest.param("FINAL(True)", True, id="bool"),
        pytest.param("FINAL('')", "", id="empty_str"),
        pytest.param("FINAL(None)", None, id="none"),
    ],
)
async def test_final_with_plain_values(repl: LocalREPL, code: str, expected: object) -> None:
    cell = await run_ok(repl, code)
    assert cell.final is not None
    assert cell.final.value == expected
    assert type(cell.final.value) is type(expected)
    assert cell.final.exact is True
    assert cell.final.variable is None


async def test_final_var(repl: LocalREPL) -> None:
    await run_ok(repl, "answer = {'city': 'Rome', 'count': 3}")
    cell = await run_ok(repl, "FINAL_VAR('answer')")
    assert cell.final is not None
    assert cell.final.value == {"city": "Rome", "count": 3}
    assert cell.final.exact is True
    assert cell.final.variable == "answer"


async def test_final_var_of_missing_name_is_an_error(repl: LocalREPL) -> None:
    cell = await repl.execute("FINAL_VAR('nope')")
    assert not cell.ok
    assert cell.final is None
    assert "nope" in (cell.error or "")


async def test_final_of_a_non_plain_object(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "class Thing:\n    pass\nFINAL(Thing())")
    assert cell.final is not None
    assert cell.final.exact is False
    assert isinstance(cell.final.value, str)
    assert "Thing" in cell.final.value


async def test_final_of_a_list_holding_a_non_plain_object(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "def f():\n    pass\nFINAL([1, f])")
    assert cell.final is not None
    assert cell.final.exact is False
    assert "function" in cell.final.value


async def test_final_survives_a_swallowing_except(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "try:\n    FINAL(1)\nexcept BaseException:\n    pass\nx = 2")
    assert cell.final is not None
    assert cell.final.value == 1


async def test_final_inside_a_function(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "def finish(v):\n    FINAL(v * 2)\nfinish(21)")
    assert cell.final is not None and cell.final.value == 42


async def test_final_is_per_cell(repl: LocalREPL) -> None:
    await run_ok(repl, "FINAL(1)")
    cell = await run_ok(repl, "x = 1")
    assert cell.final is None


async def test_final_with_printed_output(repl: LocalREPL) -> None:
    cell = await run_ok(repl, "print('working')\nFINAL('done')")
    assert cell.stdout == "working\n"
    assert cell.final is not None and cell.final.value == "done"


# -- host callbacks -------------------------------------------------------------------------------------


async def test_callbacks_receive_arguments_and_return_values(repl: LocalREPL) -> None:
    seen: list[tuple[str, str | None]] = []

    async def llm_query(prompt: str, model: str | None = None) -> str:
        seen.append((prompt, model))
        return f"reply to {prompt}"

    def add(a: int, b: int) -> int:
        return a + b

    def batch(prompts: list[str]) -> list[str]:
        return [p.upper() for p in prompts]

    def echo(value):
        return value

    repl.register("llm_query", llm_query)
    repl.register("add", add)
    repl.register("batch", batch)
    repl.register("echo", echo)
    cell = await run_ok(
        repl,
        "r1 = llm_query('hi')\n"
        "r2 = llm_query('there', model='small')\n"
        "(r1, r2, add(2, b=3), batch(['x', 'y']), echo({'k': [1, 2.5, None, True]}))",
    )
    assert cell.value == "('reply to hi', 'reply to there', 5, ['X', 'Y'], {'k': [1, 2.5, None, True]})"
    assert seen == [("hi", None), ("there", "small")]


async def test_callbacks_registered_after_start_and_in_loops(repl: LocalREPL) -> None:
    await run_ok(repl, "x = 1")
    repl.register("double", lambda v: v * 2)
    cell = await run_ok(repl, "[double(i) for i in range(20)]")
    assert cell.value == str([i * 2 for i in range(20)])


async def test_callback_errors_are_exceptions_in_the_cell(repl: LocalREPL) -> None:
    def broken(prompt: str) -> str:
        raise ValueError(f"cannot answer {prompt}")

    repl.register("broken", broken)
    cell = await repl.execute("broken('q')")
    assert cell.error_type == "ValueError"
    assert "cannot answer q" in (cell.error or "")
    caught = await run_ok(repl, "try:\n    broken('z')\nexcept Exception as e:\n    msg = str(e)\nmsg")
    assert "cannot answer z" in (caught.value or "")
    assert (await run_ok(repl, "1+1")).value == "2"


async def test_callback_with_unserialisable_argument(repl: LocalREPL) -> None:
    repl.register("echo", lambda value: value)
    cell = await repl.execute("echo(lambda: 1)")
    assert not cell.ok
    assert cell.error_type == "TypeError"
    assert (await run_ok(repl, "echo([1])")).value == "[1]"


async def test_concurrent_cells_on_one_repl_are_serialised(repl: LocalREPL) -> None:
    cells = await asyncio.gather(*(repl.execute(f"v{i} = {i}\nv{i} * 2") for i in range(5)))
    assert [c.value for c in cells] == [str(i * 2) for i in range(5)]


# -- contexts --------------------------------------------------------------------------------------------


async def test_large_string_context(repl: LocalREPL) -> None:
    size = 50 * 1024 * 1024
    big = "abcdefghij" * (size // 10)
    await repl.load("context", big)
    cell = await run_ok(repl, "len(context)")
    assert cell.value == str(size)
    assert (await run_ok(repl, "context[:5] + context[-3:]")).value == "'abcdehij'"
    assert (await run_ok(repl, "context.count('j')")).value == str(size // 10)


async def test_unicode_string_context(repl: LocalREPL) -> None:
    text = "naïve café — 東京 🙂\n" * 3
    await repl.load("context", text)
    assert (await run_ok(repl, "len(context)")).value == str(len(text))
    assert (await run_ok(repl, "context.splitlines()[0]")).value == repr(text.splitlines()[0])


async def test_list_context(repl: LocalREPL) -> None:
    await repl.load("context", ["doc one", "doc two", "doc three"])
    cell = await run_ok(repl, "(len(context), context[1], [d.split()[1] for d in context])")
    assert cell.value == "(3, 'doc two', ['one', 'two', 'three'])"


async def test_dict_context(repl: LocalREPL) -> None:
    await repl.load("context", {"title": "T", "chunks": [{"id": 1, "text": "a"}], "score": 0.5, "ok": None})
    cell = await run_ok(repl, "(context['title'], context['chunks'][0]['text'], context['score'], context['ok'])")
    assert cell.value == "('T', 'a', 0.5, None)"


async def test_bytes_context(repl: LocalREPL) -> None:
    await repl.load("data", b"\x00\x01binary")
    assert (await run_ok(repl, "(len(data), data[2:])")).value == "(8, b'binary')"


async def test_several_loaded_names_and_reload(repl: LocalREPL) -> None:
    await repl.load("context", "first")
    await repl.load("other", [1, 2])
    await repl.load("context", "second")
    assert (await run_ok(repl, "(context, other)")).value == "('second', [1, 2])"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param(lambda: 1, id="function"),
        pytest.param({1, 2}, id="set"),
        pytest.param([1, object()], id="list_with_object"),
    ],
)
async def test_unsupported_context_type(repl: LocalREPL, value: object) -> None:
    with pytest.raises(UnsupportedContextError):
        await repl.load("context", value)
    assert (await run_ok(repl, "1+1")).value == "2"


async def test_context_loaded_after_the_first_cell_must_fit_the_hard_limit() -> None:
    repl = LocalREPL(cell_timeout_s=10.0, memory_limit_mb=64)
    try:
        await repl.start()
        await run_ok(repl, "x = 1")  # the memory limit is in force, hard, from here on
        with pytest.raises(WorkerCrashedError, match="hard memory limit"):
            await repl.load("context", "z" * (80 * 1024 * 1024))
        cell = await run_ok(repl, "x + 1")  # refused clearly; the worker and its variables are intact
        assert cell.value == "2"
        await repl.load("small", "z" * 1024)  # what fits still loads
        assert (await run_ok(repl, "len(small)")).value == "1024"
    finally:
        await repl.close()


# -- get, lifecycle, sync API -----------------------------------------------------------------------------


async def test_get(repl: LocalREPL) -> None:
    await run_ok(repl, "x = {'a': [1, (2, 3)], 'b': None}\nclass K:\n    pass\nk = K()")
    assert await repl.get("x") == {"a": [1, (2, 3)], "b": None}
    got = await repl.get("k")
    assert isinstance(got, str) and "K" in got
    with pytest.raises(KeyError):
        await repl.get("missing")


async def test_async_context_manager() -> None:
    async with LocalREPL(cell_timeout_s=5.0) as repl:
        assert (await repl.execute("6 * 7")).value == "42"
    with pytest.raises(REPLClosedError):
        await repl.execute("1")


async def test_start_and_close_are_idempotent() -> None:
    repl = LocalREPL(cell_timeout_s=5.0)
    await repl.start()
    pid = repl.pid
    await repl.start()
    assert repl.pid == pid
    await repl.close()
    await repl.close()


async def test_use_after_close_raises(repl: LocalREPL) -> None:
    await repl.close()
    with pytest.raises(REPLClosedError):
        await repl.execute("1")
    with pytest.raises(REPLClosedError):
        await repl.load("context", "x")
    with pytest.raises(REPLClosedError):
        await repl.get("x")
    with pytest.raises(REPLClosedError):
        repl.register("f", lambda: 1)
    with pytest.raises(REPLClosedError):
        await repl.start()


async def test_execute_starts_the_worker_lazily() -> None:
    repl = LocalREPL(cell_timeout_s=5.0)
    try:
        assert (await repl.execute("'lazy'")).value == "'lazy'"
    finally:
        await repl.close()


def test_sync_api() -> None:
    repl = LocalREPL(cell_timeout_s=5.0)
    repl.start_sync()
    try:
        repl.load_sync("context", "sync context")
        cell = repl.execute_sync("n = len(context)\nprint('n =', n)\nn")
        assert cell.value == "12"
        assert cell.stdout == "n = 12\n"
        assert repl.execute_sync("n + 1").value == "13"  # one namespace across separate event loops
    finally:
        repl.close_sync()
    with pytest.raises(REPLClosedError):
        repl.execute_sync("1")


def test_sync_context_manager() -> None:
    with LocalREPL(cell_timeout_s=5.0) as repl:
        assert repl.execute_sync("2 ** 10").value == "1024"


async def test_execute_sync_inside_a_running_event_loop() -> None:
    repl = LocalREPL(cell_timeout_s=5.0)
    repl.start_sync()
    try:
        repl.load_sync("context", "in a loop")
        assert repl.execute_sync("len(context)").value == "9"
        assert (await repl.execute("context.upper()")).value == "'IN A LOOP'"
        assert repl.execute_sync("context.split()").value == "['in', 'a', 'loop']"
    finally:
        await repl.close()


async def test_sync_callbacks_work_from_execute_sync_in_a_loop() -> None:
    repl = LocalREPL(cell_timeout_s=5.0)
    try:
        await repl.start()
        repl.register("llm_query", lambda prompt: f"<{prompt}>")
        assert repl.execute_sync("llm_query('x')").value == "'<x>'"
    finally:
        await repl.close()


async def test_callback_returning_an_unserialisable_value(repl: LocalREPL) -> None:
    repl.register("bad_result", lambda: object())
    cell = await repl.execute("bad_result()")
    assert not cell.ok
    assert "bad_result" in (cell.error or "")
    assert (await run_ok(repl, "1+1")).value == "2"


async def test_unicode_and_surrogates_round_trip(repl: LocalREPL) -> None:
    text = "snow ☃ 😀 lone \udc80"
    await repl.load("context", text)
    cell = await run_ok(repl, "print(context)\ncontext")
    assert cell.stdout == text + "\n"
    assert cell.value == repr(text)
    assert await repl.get("context") == text


# -- the allowed modules as honest LM code uses them (wall 1 must not get in the way) ---------------------------------


async def test_datetime_formatting_and_parsing(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import datetime\n"
        "d = datetime.datetime(2024, 3, 5, 14, 30, tzinfo=datetime.timezone.utc)\n"
        "(d.strftime('%A %d %B %Y %H:%M %Z'), f'{d:%Y/%m/%d}', '{:%H:%M}'.format(d), d.isoformat(),\n"
        " datetime.datetime.strptime('05/03/2024 14:30', '%d/%m/%Y %H:%M').isoformat(),\n"
        " datetime.date.fromisoformat('2024-02-28').strftime('%j'), d.timetuple().tm_yday)",
    )
    assert cell.value == (
        "('Tuesday 05 March 2024 14:30 UTC', '2024/03/05', '14:30', '2024-03-05T14:30:00+00:00', "
        "'2024-03-05T14:30:00', '059', 65)"
    )
    refused = await repl.execute("import time")  # C code may import it for itself; a cell still may not
    assert refused.error_type == "ImportError"


async def test_collections_as_lm_code_uses_them(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import collections\n"
        "counts = collections.Counter('the cat the hat the end'.split())\n"
        "groups = collections.defaultdict(list)\n"
        "for word in ['apple', 'avocado', 'banana']:\n"
        "    groups[word[0]].append(word)\n"
        "Point = collections.namedtuple('Point', ['x', 'y'])\n"
        "p = Point(1, y=2)\n"
        "od = collections.OrderedDict([('b', 1), ('a', 2)])\n"
        "od.move_to_end('b')\n"
        "ud = collections.UserDict({'k': 1})\n"
        "copied = ud.copy()\n"
        "copied['k'] = 2\n"
        "(counts.most_common(1), counts['the'], (counts + collections.Counter(['cat'])).total(), dict(groups),\n"
        " p, p.x + p.y, list(od), ud['k'], copied['k'], collections.deque([1, 2], maxlen=2).maxlen)",
    )
    assert cell.value == (
        "([('the', 3)], 3, 7, {'a': ['apple', 'avocado'], 'b': ['banana']}, Point(x=1, y=2), 3, ['a', 'b'], 1, 2, 2)"
    )


async def test_subclasses_of_library_classes_keep_their_methods(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import collections, json, string\n"
        "class Tally(collections.Counter):\n"
        "    def top(self):\n"
        "        return self.most_common(1)[0][0]\n"
        "class Settings(collections.UserDict):\n"
        "    pass\n"
        "t = Tally('abb')\n"
        "s = Settings(a=1)\n"
        "s.note = 'kept'\n"
        "c = s.copy()\n"
        "class Encoder(json.JSONEncoder):\n"
        "    def default(self, o):\n"
        "        return {'set': sorted(o)}\n"
        "class Loud(string.Formatter):\n"
        "    def format_field(self, value, spec):\n"
        "        return str(value).upper()\n"
        "(t.top(), isinstance(t.copy(), Tally), isinstance(c, Settings), c.note, dict(c),\n"
        " json.dumps({'s': {2, 1}}, cls=Encoder), Loud().format('{0}-{1}', 'a', 'b'))",
    )
    assert cell.value == "('b', True, True, 'kept', {'a': 1}, '{\"s\": {\"set\": [1, 2]}}', 'A-B')"


async def test_str_format_with_plain_fields_still_works(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import collections\n"
        "row = {'name': 'x', 'n': 3}\n"
        "('{} has {:>3}'.format('a', 7), '{name}: {n:.1f}'.format(**row), '{0[name]}'.format(row),\n"
        " '{x.real}'.format_map({'x': 2}), str.format('{0}{0}', 'ab'), collections.UserString('{0}!').format('hi'))",
    )
    assert cell.value == "('a has   7', 'x: 3.0', 'x', '2', 'abab', 'hi!')"


async def test_text_and_number_modules_as_lm_code_uses_them(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import statistics, textwrap, difflib, decimal, fractions, json, re\n"
        "data = [2, 4, 4, 4, 5, 5, 7, 9]\n"
        "(statistics.mean(data), statistics.median(data), statistics.pstdev(data), statistics.quantiles(data, n=4),\n"
        " textwrap.fill('one two three four', width=9), textwrap.shorten('a b c d e f', width=7, placeholder='..'),\n"
        " difflib.get_close_matches('pyton', ['python', 'java']), decimal.Decimal('0.1') + decimal.Decimal('0.2'),\n"
        " fractions.Fraction(3, 4) * 2, json.loads(json.dumps({'a': [1, None]})), re.split(r'[,;]', 'a,b;c'))",
    )
    assert cell.value == (
        "(5, 4.5, 2.0, [4.0, 4.5, 6.5], 'one two\\nthree\\nfour', 'a b c..', ['python'], Decimal('0.3'), "
        "Fraction(3, 2), {'a': [1, None]}, ['a', 'b', 'c'])"
    )


async def test_decimal_context_changes_do_not_outlive_the_cell(repl: LocalREPL) -> None:
    cell = await run_ok(
        repl,
        "import decimal\ndecimal.getcontext().clear_traps()\nstr(decimal.Decimal(1) / decimal.Decimal(0))",
    )
    assert cell.value == "'Infinity'"
    after = await repl.execute("decimal.Decimal(1) / decimal.Decimal(0)")
    assert after.error_type == "DivisionByZero"


async def test_decimal_precision_is_set_with_localcontext(repl: LocalREPL) -> None:
    refused = await repl.execute("import decimal\ndecimal.getcontext().prec = 50")
    assert refused.error_type == "TypeError"
    assert "decimal.localcontext(prec=50)" in (refused.error or "")  # the refusal names the way that works
    cell = await run_ok(repl, "with decimal.localcontext(prec=50):\n    x = decimal.Decimal(1) / 7\nlen(str(x))")
    assert cell.value == "52"


async def test_final_var_with_a_str_subclass_name(repl: LocalREPL) -> None:
    await run_ok(repl, "answer = [1, 2]\nclass Name(str):\n    pass")
    cell = await repl.execute("FINAL_VAR(Name('answer'))")
    assert cell.error is None, cell.error
    assert cell.final is not None
    assert cell.final.value == [1, 2]

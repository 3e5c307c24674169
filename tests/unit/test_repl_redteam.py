"""Red-team round 2 against wall 1 (the RestrictedPython policy), beyond tests/unit/test_repl_escapes.py.

Each `Attempt` is hostile cell code. Under the restricted policy it must end in an error
that contains `refusal`, print no ``PWNED`` marker, and leave the worker's shared state
(library classes, the REPL's callbacks) exactly as before. `test_attempts_escape_as_plain_python`
runs every attempt marked ``control=True`` with the policy off, each in a worker of its own,
and checks that it really does print the marker there: the refusals below can fail.

What round 2 found (all now refused):
- objects that pass attribute reads on to another object -- a generic alias
  (``ChainMap[int]``, no ``type()`` needed) and a bound method (``type(FINAL)(cls, x)``) --
  handed out a class's unbound methods with no check on their first argument:
  ``ChainMap.new_child(K, 'X')`` with ``K.maps = [bases, namespace]`` is three-argument
  `type`, and ``Random.setstate(json.JSONEncoder, ...)`` writes on a library class;
- ``type(list[int])`` handed out the `GenericAlias` constructor, whose instances wrap any
  callable and write ``__orig_class__`` on whatever it returns (a library class);
- containers a library class holds were copied when read from the class or an instance,
  not when read through ``super()`` or a forwarding object: the cell mutated them.
The attempts that held are kept at the end, each with the error it must end in.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rlm_integrations.repl import LocalREPL

MARKER = "PWNED"


@dataclass(frozen=True)
class Attempt:
    id: str
    code: str
    refusal: str  # a fragment of the error the restricted cell must end with
    control: bool = True  # with the policy off, the same code prints MARKER


# A class body whose `maps` make ChainMap.new_child(K, name) call type(name, bases, namespace).
_THREE_ARG_TYPE = "class K:\n    maps = [(), {'__getattr__': lambda self, name: 'PWNED ' + name}]\n"

FINDINGS: list[Attempt] = [
    Attempt(
        "generic_alias_unbound_method_builds_a_class_with_any_dunder",
        "import collections\n"
        + _THREE_ARG_TYPE
        + "X = collections.ChainMap[int].new_child(K, 'X')\nprint(X().anything)",
        "no class to check its first argument against",
    ),
    Attempt(
        "generic_alias_unbound_copy_is_the_real_type",
        "import collections\n"
        "T = collections.UserList[int].copy(int)\n"
        "print('PWNED', T('X', (), {'__getattr__': lambda self, name: name})().anything)",
        "no class to check its first argument against",
    ),
    Attempt(
        "bound_method_forwards_to_a_class_unbound_method",
        "import collections\n" + _THREE_ARG_TYPE + "M = type(FINAL)\n"
        "X = M(collections.ChainMap, 1).new_child(K, 'X')\nprint(X().anything)",
        "no class to check its first argument against",
    ),
    Attempt(
        "bound_method_forwards_setstate_onto_a_library_class",
        "import random, json\n"
        "try:\n"
        "    type(FINAL)(random.Random, 1).setstate(json.JSONEncoder, (3, (), 5))\n"
        "except TypeError:\n"
        "    pass\n"
        "print('PWNED', json.JSONEncoder.gauss_next)",
        "no class to check its first argument against",
    ),
    Attempt(
        "generic_alias_constructor_setstate_onto_a_library_class",
        "import random, json\n"
        "R = type(list[int])(random.Random, ())\n"
        "try:\n"
        "    R.setstate(json.JSONEncoder, (3, (), 5))\n"
        "except TypeError:\n"
        "    pass\n"
        "print('PWNED', json.JSONEncoder.gauss_next)",
        "type() of a generic alias",
    ),
    Attempt(
        # Calling an alias sets __orig_class__ on what its origin returns: here, a library class.
        "generic_alias_call_writes_on_a_library_class",
        "import json\n"
        "def give():\n"
        "    return json.JSONEncoder\n"
        "type(list[int])(give, ())()\n"
        "print('PWNED', getattr(json.JSONEncoder, '__orig' + '_class__'))",
        "type() of a generic alias",
    ),
    Attempt(
        "generic_alias_constructor_reads_shared_class_state",
        "import textwrap\n"
        "W = type(list[int])(textwrap.TextWrapper, ())\n"
        "W.unicode_whitespace_trans[120] = 'PWNED'\n"
        "print(textwrap.TextWrapper.unicode_whitespace_trans[120])",
        "type() of a generic alias",
    ),
    Attempt(
        "super_of_an_instance_reads_shared_class_state",
        "import textwrap\n"
        "class W(textwrap.TextWrapper):\n"
        "    pass\n"
        "super(W, W()).unicode_whitespace_trans[120] = 'PWNED'\n"
        "print(textwrap.TextWrapper.unicode_whitespace_trans[120])",
        "KeyError: 120",  # the cell wrote to its own copy: the library's table has no 120
    ),
    Attempt(
        "super_of_a_class_reads_shared_class_state",
        "import textwrap\n"
        "class W(textwrap.TextWrapper):\n"
        "    pass\n"
        "super(W, W).unicode_whitespace_trans[120] = 'PWNED'\n"
        "print(textwrap.TextWrapper.unicode_whitespace_trans[120])",
        "KeyError: 120",
    ),
    Attempt(
        "zero_argument_super_reads_shared_class_state",
        "import textwrap\n"
        "class W(textwrap.TextWrapper):\n"
        "    def table(self):\n"
        "        return super().unicode_whitespace_trans\n"
        "W().table()[120] = 'PWNED'\n"
        "print(textwrap.TextWrapper.unicode_whitespace_trans[120])",
        "KeyError: 120",
    ),
]

# Routes tried in round 2 that the policy already refused; kept so they stay refused.
HELD: list[Attempt] = [
    Attempt(
        "map_applies_an_unbound_copy_to_int",
        "import collections\n"
        "T = list(map(collections.UserList.copy, [int]))[0]\n"
        "print('PWNED', T('X', (), {'__getattr__': lambda self, name: name})().anything)",
        "needs a UserList instance",
    ),
    Attempt(
        "starmap_applies_new_child_to_a_cell_class",
        "import collections, itertools\n"
        + _THREE_ARG_TYPE
        + "X = list(itertools.starmap(collections.ChainMap.new_child, [(K, 'X')]))[0]\n"
        "print(X().anything)",
        "needs a ChainMap instance",
    ),
    Attempt(
        "json_object_hook_is_an_unbound_new_child",
        "import collections, json\n"
        + _THREE_ARG_TYPE
        + "X = json.loads('{\"a\": 1}', object_hook=lambda d: collections.ChainMap.new_child(K, 'X'))\n"
        "print(X().anything)",
        "needs a ChainMap instance",
    ),
    Attempt(
        "sorted_key_is_an_unbound_host_method",
        "import random, json\n"
        "try:\n"
        "    sorted([json.JSONEncoder], key=lambda c: random.Random.setstate(c, (3, (), 5)))\n"
        "except TypeError as error:  # raised after the write, by setstate's super() call\n"
        "    if 'super' not in str(error):\n"
        "        raise\n"
        "print('PWNED', json.JSONEncoder.gauss_next)",
        "needs a Random instance",
    ),
    Attempt(
        "format_field_reaches_the_notebook_behind_final",
        "print('PWNED {0.__self__.namespace}'.format(FINAL))",
        "private",
    ),
    Attempt(
        "format_map_reaches_the_callback_closure",
        "print('PWNED {f.__closure__}'.format_map({'f': llm_query}))",
        "private",
    ),
    Attempt(
        "getattr_with_a_str_subclass_name",
        "class S(str):\n    pass\nprint('PWNED', getattr(FINAL, S('__self__')))",
        "attribute name must be a string",
    ),
    Attempt(
        "type_of_an_abc_subclass_is_the_metaclass",
        "import collections\nclass D(collections.UserDict):\n    pass\nM = type(D)\nprint('PWNED', M('X', (), {}))",
        "type() of a class",
    ),
    Attempt(
        "user_class_defines_a_format_hook",
        "class A:\n    def __format__(self, spec):\n        return 'PWNED'\nprint(f'{A():x}')",
        "invalid variable name",
    ),
    Attempt(
        "walrus_rebinds_the_attribute_guard",
        "print('PWNED', [(_getattr_ := getattr), ().__class__])",
        "invalid",
    ),
]

ATTEMPTS = FINDINGS + HELD
assert len({attempt.id for attempt in ATTEMPTS}) == len(ATTEMPTS), "attempt ids must be unique"

# Shared state the attempts go after; a follow-up cell reads it back after every attempt.
STATE_CHECK = (
    "import json, textwrap, collections, random\n"
    "(hasattr(json.JSONEncoder, 'gauss_next'), textwrap.TextWrapper.unicode_whitespace_trans.get(120),\n"
    " json.dumps({'a': [1]}), collections.ChainMap({'a': 1}).new_child({'b': 2})['a'],\n"
    " random.Random(3).randint(1, 10) == random.Random(3).randint(1, 10), llm_query('ping'))"
)
STATE_VALUE = repr((False, None, '{"a": [1]}', 1, True, "pong:ping"))


def _pong(prompt: str) -> str:
    return f"pong:{prompt}"


@pytest.fixture
async def repl():
    instance = LocalREPL(cell_timeout_s=5.0, memory_limit_mb=512)
    await instance.start()
    try:
        instance.register("llm_query", _pong)
        yield instance
    finally:
        await instance.close()


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[attempt.id for attempt in ATTEMPTS])
async def test_attempt_is_refused(repl: LocalREPL, attempt: Attempt) -> None:
    cell = await repl.execute(attempt.code + "\nattempt_finished = True")
    assert not cell.ok, f"the attempt ran; stdout={cell.stdout!r} value={cell.value!r}"
    assert attempt.refusal in (cell.error or ""), cell.error
    assert MARKER not in cell.stdout and MARKER not in (cell.value or ""), cell.stdout
    state = await repl.execute(STATE_CHECK)
    assert state.error is None, state.error
    assert state.value == STATE_VALUE


async def test_attempts_escape_as_plain_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with the policy off (and wall 2's file view off), each attempt prints the marker."""
    monkeypatch.setenv("RLM_BWRAP", "none")
    not_escaping: list[str] = []
    for attempt in ATTEMPTS:
        if not attempt.control:
            continue
        plain = LocalREPL(cell_timeout_s=10.0, policy="unrestricted", pool=False)  # most attempts write shared state
        await plain.start()
        try:
            plain.register("llm_query", _pong)
            cell = await plain.execute(attempt.code)
        finally:
            await plain.close()
        if MARKER not in cell.stdout:
            not_escaping.append(f"{attempt.id}: {cell.error or cell.stdout}")
    assert not_escaping == [], "\n".join(not_escaping)


# -- honest code around the fixes keeps working -------------------------------------------------------------


async def test_generic_aliases_and_super_still_serve_honest_code(repl: LocalREPL) -> None:
    cell = await repl.execute(
        "import collections, textwrap, json\n"
        "class Wide(textwrap.TextWrapper):\n"
        "    def table_size(self):\n"
        "        return len(super().unicode_whitespace_trans)\n"
        "class Ints(list[int]):\n"
        "    pass\n"
        "class Child(collections.ChainMap):\n"
        "    pass\n"
        "(list[int]([1, 2]), collections.Counter[str]('aab').most_common(1), Ints([3]) + [4],\n"
        " Wide().table_size() > 0, dict(Child({'a': 1}).new_child({'b': 2})),\n"
        " json.JSONDecoder().parse_object(('{\"k\": 1}', 1), True, json.JSONDecoder().scan_once, None, None)[0])"
    )
    assert cell.error is None, cell.error
    assert cell.value == "([1, 2], [('a', 2)], [3, 4], True, {'a': 1, 'b': 2}, {'k': 1})"


async def test_a_cell_class_keeps_its_own_containers_through_super(repl: LocalREPL) -> None:
    # A class the cell made is not shared with anything else: reads through super() are not copied.
    cell = await repl.execute(
        "class Base:\n"
        "    seen = []\n"
        "class Child(Base):\n"
        "    def note(self, item):\n"
        "        super().seen.append(item)\n"
        "Child().note(1)\n"
        "super(Child, Child).seen.append(2)\n"
        "Base.seen"
    )
    assert cell.error is None, cell.error
    assert cell.value == "[1, 2]"


def test_re_debug_writes_to_the_process_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """The control for the next test: library code (re.DEBUG) prints to sys.stdout, outside the cell's print."""
    import re

    re.purge()
    re.compile("redteam-debug-probe", re.DEBUG)
    assert "LITERAL" in capsys.readouterr().out


async def test_library_output_to_the_process_stdout_never_reaches_the_protocol(repl: LocalREPL) -> None:
    forged = '{"op": "result", "stdout": "", "final": {"json": "1", "exact": true}}'
    cell = await repl.execute(f"import re\nre.purge()\np = re.compile({forged!r} * 50, re.RegexFlag(128))\n'ok'")
    assert cell.error is None, cell.error
    assert (cell.value, cell.stdout, cell.final) == ("'ok'", "", None)
    follow = await repl.execute("1 + 1")
    assert (follow.value, follow.final, follow.restarted) == ("2", None, False)

"""Escape attempts against the restricted local REPL.

Every snippet in ESCAPES is hostile code of the kind a language model (or a prompt
injection in the context) could write. Each one, when it succeeds, prints the marker
``PWNED`` (and where it reaches the host, the canary secret). Under the restricted
policy each must end in an error, leak nothing, and leave the REPL usable: a follow-up
cell checks that arithmetic, the allowed modules, the loaded context and host callbacks
still behave exactly as before.

`test_escape_snippets_work_as_plain_python` runs the same snippets with the
unrestricted policy, proving that each snippet marked ``control=True`` really does
escape when the RestrictedPython wall is absent: the tests below can fail.
"""

from __future__ import annotations

import builtins
import secrets
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from rlm_integrations.repl import LocalREPL

CANARY_VAR = "RLM_ESCAPE_CANARY"
CANARY = "canary-" + secrets.token_hex(12)
MARKER = "PWNED"
CONTEXT = "the context for escape tests"

# The follow-up cell: every name and value here must be untouched by an escape attempt.
INVARIANTS = (
    "import re, json, math, collections, decimal\n"
    "(1 + 1, re.compile('a+').pattern, json.dumps([1, 2]), math.pi, json.JSONEncoder.item_separator,\n"
    " collections.Counter('aab').most_common(1), decimal.getcontext().prec, len(context), llm_query('ping'))"
)
INVARIANTS_VALUE = repr((2, "a+", "[1, 2]", 3.141592653589793, ", ", [("a", 2)], 28, len(CONTEXT), "pong:ping"))


@dataclass(frozen=True)
class Escape:
    id: str
    code: str
    control: bool = True  # plain Python (no sandbox) prints MARKER for this snippet


def _gen(body: str) -> str:
    return "def gen():\n    yield 1\n    yield 2\n" + body


ESCAPES: list[Escape] = [
    # -- subclass walks -----------------------------------------------------------------------
    Escape("subclasses_via_tuple", "print('PWNED', ().__class__.__bases__[0].__subclasses__())"),
    Escape("subclasses_via_base_comprehension", "print('PWNED', [c for c in ().__class__.__base__.__subclasses__()])"),
    Escape(
        "subclasses_via_getattr_built_strings",
        "u = '_' * 2\n"
        "c = getattr((), u + 'class' + u)\n"
        "b = getattr(c, u + 'bases' + u)[0]\n"
        "print('PWNED', getattr(b, u + 'subclasses' + u)())",
    ),
    Escape("subclasses_via_object", "print('PWNED', object.__subclasses__())"),
    Escape("subclasses_via_object_getattr", "print('PWNED', getattr(object, '__subcl' + 'asses__')())"),
    Escape("subclasses_via_type_of_type", "t = type(type(0))\nprint('PWNED', getattr(t, '__subcl' + 'asses__')(t))"),
    Escape("mro_attribute", "print('PWNED', int.mro())"),
    Escape("mro_via_getattr", "print('PWNED', getattr(int, 'm' + 'ro')())"),
    # Identifiers are NFKC-normalised by the parser: fullwidth letters spell the same dunder.
    Escape("fullwidth_letters_normalise_to_dunder", "print('PWNED', ().__\uff43\uff4c\uff41\uff53\uff53__)"),
    Escape(
        "str_subclass_overriding_startswith",
        "class S(str):\n"
        "    def startswith(self, *args):\n"
        "        return False\n"
        "print('PWNED', getattr((), S('__class__')))",
    ),
    Escape(
        # A metaclass (made with the real `type`) whose __eq__/__hash__ make a sandbox class look equal to a
        # host class, so a membership test of "classes the sandbox made" says yes for the host class.
        "write_via_eq_hash_spoofing_a_sandbox_class",
        "import json\n"
        "T = type(type(0))\n"
        "M = T('M', (T,), {'__eq__': lambda cls, other: True, '__hash__': lambda cls: hash(json.JSONEncoder)})\n"
        "Base = M('Base', (), {})\n"
        "class Mine(Base):\n"
        "    pass\n"
        "json.JSONEncoder.item_separator = ';'\n"
        "print('PWNED', json.JSONEncoder.item_separator)",
    ),
    Escape(
        # The same spoof against `object`, which is in every class's MRO: every host object becomes writable.
        "write_via_eq_hash_spoofing_object",
        "import decimal\n"
        "T = type(type(0))\n"
        "M = T('M', (T,), {'__eq__': lambda cls, other: True, '__hash__': lambda cls: hash(object)})\n"
        "Base = M('Base', (), {})\n"
        "class Mine(Base):\n"
        "    pass\n"
        "decimal.getcontext().prec = 3\n"
        "print('PWNED', decimal.getcontext().prec)",
    ),
    # -- frame walks ----------------------------------------------------------------------------
    Escape("generator_gi_frame", _gen("g = gen()\nnext(g)\nprint('PWNED', g.gi_frame.f_globals)")),
    Escape(
        "running_generator_f_back_getattr",
        "def walk():\n"
        "    yield getattr(getattr(g, 'gi_' + 'frame'), 'f_' + 'back')\n"
        "g = walk()\n"
        "print('PWNED', next(g))",
    ),
    Escape("generator_gi_frame_getattr", _gen("g = gen()\nnext(g)\nprint('PWNED', getattr(g, 'gi_' + 'frame'))")),
    Escape(
        "generator_frame_f_back_getattr",
        _gen("g = gen()\nnext(g)\nf = getattr(g, 'gi_' + 'frame')\nprint('PWNED', getattr(f, 'f_' + 'globals'))"),
    ),
    Escape("generator_gi_code_getattr", _gen("print('PWNED', getattr(gen(), 'gi_' + 'code').co_consts)")),
    Escape("genexp_gi_frame_getattr", "g = (x for x in [1, 2])\nprint('PWNED', getattr(g, 'gi_' + 'frame'))"),
    Escape(
        "generator_gi_yieldfrom_getattr",
        _gen(
            "def outer():\n    yield from gen()\no = outer()\nnext(o)\nprint('PWNED', getattr(o, 'gi_' + 'yieldfrom'))"
        ),
    ),
    Escape(
        "traceback_tb_frame",
        "try:\n    1 / 0\nexcept Exception as e:\n    print('PWNED', e.__traceback__.tb_frame.f_globals)",
    ),
    Escape(
        "traceback_via_getattr_built_strings",
        "try:\n"
        "    1 / 0\n"
        "except Exception as e:\n"
        "    tb = getattr(e, '__trace' + 'back__')\n"
        "    print('PWNED', getattr(tb, 'tb_' + 'frame'))",
    ),
    Escape("coroutine_cr_frame", "async def f():\n    return 1\nc = f()\nprint('PWNED', c.cr_frame)\nc.close()"),
    Escape("async_generator_ag_frame", "async def ag():\n    yield 1\nprint('PWNED', ag().ag_frame)"),
    Escape(
        "decorator_grabs_frame",
        "def grab(fn):\n"
        "    try:\n"
        "        raise ValueError('x')\n"
        "    except ValueError as e:\n"
        "        tb = getattr(e, '__trace' + 'back__')\n"
        "    return getattr(tb, 'tb_' + 'frame')\n"
        "@grab\n"
        "def target():\n"
        "    return 1\n"
        "print('PWNED', getattr(target, 'f_' + 'back'))",
    ),
    Escape(
        "decorator_grabs_function_globals",
        "def grab(fn):\n"
        "    return getattr(fn, '__glob' + 'als__')\n"
        "@grab\n"
        "def target():\n"
        "    return 1\n"
        "print('PWNED', target['__builtins__'])",
    ),
    # -- str.format attribute walks ---------------------------------------------------------------
    Escape("format_class", "print('PWNED {0.__class__}'.format(1))"),
    Escape("format_gi_frame", _gen("print('PWNED {0.gi_frame}'.format(gen()))")),
    Escape("format_unbound_str_format", "print(str.format('PWNED {0.__class__.__mro__}', 1))"),
    Escape("format_map_attribute", "print('PWNED {x.__class__}'.format_map({'x': 1}))"),
    Escape("format_map_unbound", "print(str.format_map('PWNED {x.__class__}', {'x': 1}))"),
    Escape("format_method_stored_then_called", "f = 'PWNED {0.__class__}'.format\nprint(f(1))"),
    Escape("format_nested_spec_walk", "print('PWNED {0:{1.__class__.__basicsize__}}'.format('x', 1))"),
    Escape("format_globals_of_final", "print('PWNED {0.__globals__}'.format(FINAL))"),
    Escape("format_via_getattr", "print(getattr('PWNED {0.__class__}', 'for' + 'mat')(1))"),
    Escape("format_via_map_unbound", "print(list(map(str.format, ['PWNED {0.__class__}'], [1])))"),
    Escape("format_via_type_of_str", "print(type('').format('PWNED {0.__class__}', 1))"),
    Escape("format_via_str_subclass_unbound", "class S(str):\n    pass\nprint(S.format('PWNED {0.__class__}', 1))"),
    Escape(
        "format_map_via_str_subclass_unbound",
        "class S(str):\n    pass\nprint(S.format_map('PWNED {x.__class__}', {'x': 1}))",
    ),
    Escape(
        "format_via_super_of_str_subclass",
        "class S(str):\n    pass\ns = S('PWNED {0.__class__}')\nprint(super(S, s).format(1))",
    ),
    Escape(
        "format_via_getattr_on_str_subclass",
        "class S(str):\n    pass\nprint(getattr(S, 'for' + 'mat')('PWNED {0.__class__}', 1))",
    ),
    Escape(
        "format_via_zero_argument_super_in_a_method",
        "class S(str):\n    def leak(self):\n        return super().format(1)\nprint(S('PWNED {0.__class__}').leak())",
    ),
    Escape(
        "string_formatter_get_field",
        "import string\nprint('PWNED', string.Formatter().get_field('0.__class__', (1,), {}))",
    ),
    Escape("string_formatter_format", "import string\nprint(string.Formatter().format('PWNED {0.__class__}', 1))"),
    Escape(
        "string_formatter_via_getattr",
        "import string\nF = getattr(string, 'Form' + 'atter')\nprint(F().vformat('PWNED {0.__class__}', (1,), {}))",
    ),
    Escape(
        "from_string_import_formatter",
        "from string import Formatter\nprint(Formatter().format('PWNED {0.__class__}', 1))",
    ),
    # -- module-to-module hops ----------------------------------------------------------------------
    Escape("re_enum", "import re\nprint('PWNED', re.enum)"),
    Escape("re_enum_sys_modules", f"import re\nprint('PWNED', re.enum.sys.modules['os'].environ.get('{CANARY_VAR}'))"),
    Escape("re_functools", "import re\nprint('PWNED', re.functools.partial)"),
    Escape(
        "statistics_sys",
        f"import statistics\nprint('PWNED', statistics.sys.modules['os'].environ.get('{CANARY_VAR}'))",
    ),
    Escape("statistics_random_real_module", "import statistics\nprint('PWNED', statistics.random)"),
    # The controls write into the worker's scratch directory: wall 2 hides host files from plain Python too.
    Escape("json_codecs_open", "import json\nprint('PWNED', json.codecs.open('escape_probe.txt', 'w').write('x'))"),
    Escape("json_decoder", "import json\nprint('PWNED', json.decoder)"),
    Escape("from_json_import_decoder", "from json import decoder\nprint('PWNED', decoder)"),
    Escape("from_json_import_scanner", "from json import scanner\nprint('PWNED', scanner)"),
    Escape("import_json_decoder_dotted", "import json.decoder\nprint('PWNED', json.decoder)"),
    Escape("collections_abc", "import collections\nprint('PWNED', collections.abc)"),
    Escape("from_collections_import_abc", "from collections import abc\nprint('PWNED', abc)"),
    Escape("import_collections_abc_dotted", "import collections.abc\nprint('PWNED', collections.abc)"),
    Escape("random_private_os", "import random\nprint('PWNED', random._os.environ)"),
    Escape("random_private_os_getattr", "import random\nprint('PWNED', getattr(random, '_' + 'os').environ)"),
    Escape("datetime_sys", "import datetime\nprint('PWNED', datetime.sys.modules['os'])"),
    Escape("textwrap_re_module", "import textwrap\nprint('PWNED', textwrap.re)"),
    Escape(
        "fractions_operator_attrgetter",
        "import fractions\nprint('PWNED', fractions.operator.attrgetter('__class__')(1))",
    ),
    Escape("decimal_module_loader", "import decimal\nprint('PWNED', getattr(decimal, '__loa' + 'der__'))"),
    Escape(
        "decimal_context_write",
        "import decimal\ndecimal.getcontext().prec = 2\nprint('PWNED', decimal.getcontext().prec)",
    ),
    Escape("decimal_default_context_write", "import decimal\ndecimal.DefaultContext.prec = 3\nprint('PWNED')"),
    Escape("heapq_builtin_self_is_module", "import heapq\nprint('PWNED', getattr(heapq.heappush, '__se' + 'lf__'))"),
    Escape("builtin_function_self_is_builtins", "print('PWNED', getattr(len, '__se' + 'lf__'))"),
    Escape(
        "module_function_globals",
        "import json\nprint('PWNED', getattr(json.dumps, '__glob' + 'als__')['codecs'])",
    ),
    Escape("from_re_import_private", "from re import _compiler\nprint('PWNED', _compiler)"),
    Escape("from_re_import_enum", "from re import enum\nprint('PWNED', enum)"),
    Escape("import_re_enum_dotted", "import re.enum\nprint('PWNED', re)", control=False),  # not a package
    Escape("star_import", "from re import *\nprint('PWNED', purge)"),
    Escape("getattr_built_module_hop", "import re\nm = getattr(re, 'en' + 'um')\nprint('PWNED', m)"),
    Escape(
        "getattr_default_swallows_refusal",
        "import re\nm = getattr(re, 'en' + 'um', None)\nprint('PWNED', m.sys)",
    ),
    Escape("hasattr_probe_then_use", "import re\nif hasattr(re, 'enum'):\n    print('PWNED')\nre.enum"),
    Escape(
        "attribute_error_obj_leak",
        "import re\n"
        "try:\n"
        "    re.enum.nothing_here\n"
        "except AttributeError as e:\n"
        "    leaked = e.obj\n"
        "print('PWNED', leaked.sys)",
    ),
    Escape(
        "attribute_error_obj_leak_private",
        "import random\n"
        "try:\n"
        "    getattr(random, '_' + 'os').nothing_here\n"
        "except AttributeError as e:\n"
        "    leaked = e.obj\n"
        "print('PWNED', leaked.environ)",
    ),
    # -- dangerous builtins ---------------------------------------------------------------------------
    Escape("vars", "print('PWNED', vars())"),
    Escape("dir_of_namespace", "print('PWNED', dir())"),
    Escape("globals", "print('PWNED', globals())"),
    Escape("globals_builtins", "print('PWNED', globals()['__builtins__'])"),
    Escape("locals", "print('PWNED', locals())"),
    Escape("read_builtins_name", "print('PWNED', __builtins__)"),
    Escape("open", "print('PWNED', open('escape_probe.txt', 'w').write('x'))"),
    Escape("eval", "print('PWNED', eval('1 + 1'))"),
    Escape("exec", "exec(\"print('PWNED')\")"),
    Escape("exec_by_name_alias", "run = exec\nrun(\"print('PWNED')\")"),
    Escape("compile", "print('PWNED', compile('1', 'x', 'eval'))"),
    Escape("dunder_import", f"print('PWNED', __import__('os').environ.get('{CANARY_VAR}'))"),
    Escape("breakpoint", "breakpoint()\nprint('PWNED')", control=False),  # pdb would read stdin
    Escape("input", "print('PWNED', input())", control=False),  # stdin is /dev/null
    Escape("help", "help(len)\nprint('PWNED')", control=False),  # site's help() is not installed in the worker
    Escape("setattr_on_module_proxy", "import re\nsetattr(re, 'compile', None)\nprint('PWNED')"),
    Escape("delattr_on_module_proxy", "import re\ndelattr(re, 'compile')\nprint('PWNED')"),
    Escape(
        "print_to_a_file_object",
        "class W:\n    def write(self, s):\n        pass\nprint('x', file=W())\nprint('PWNED')",
        control=False,  # the REPL's print refuses file= under both policies
    ),
    Escape(
        "three_argument_type_defines_dunders",
        "T = type(type(0))\nX = T('X', (), {'__getattr__': lambda self, name: name})\nprint('PWNED', X().anything)",
    ),
    Escape("type_of_a_class_is_the_metaclass", "print('PWNED', type(int)('X', (), {'__getattr__': None}))"),
    Escape(
        "metaclass_of_a_user_subclass_of_an_abc",
        "import fractions\nclass F(fractions.Fraction):\n    pass\nprint('PWNED', type(F))",
    ),
    # -- guard names shadowed by parameters and assignments -------------------------------------------------
    Escape(
        "posonly_param_shadows_getattr",
        "def f(_getattr_=getattr, /):\n    return ().__class__\nprint('PWNED', f())",
    ),
    Escape(
        "kwonly_param_shadows_getattr",
        "def f(*, _getattr_=getattr):\n    return ().__class__\nprint('PWNED', f())",
    ),
    Escape("lambda_default_shadows_getattr", "f = lambda _getattr_=getattr: ().__class__\nprint('PWNED', f())"),
    Escape(
        "posonly_param_shadows_write_guard",
        "import re\ndef f(_write_=lambda o: o, /):\n    re.compile = None\nf()\nprint('PWNED')",
    ),
    Escape("assign_to_guard_name", "_getattr_ = getattr\nprint('PWNED', ().__class__)"),
    Escape("vararg_named_like_a_guard", "def f(*_getiter_):\n    return 1\nprint('PWNED', f())"),
    # -- class bodies defining dunders ------------------------------------------------------------------
    Escape(
        "class_defines_getattr",
        "class A:\n    def __getattr__(self, name):\n        return name\nprint('PWNED', A().anything)",
    ),
    Escape(
        "class_defines_del",
        "class A:\n    def __del__(self):\n        print('PWNED')\na = A()\ndel a\nprint('PWNED')",
    ),
    Escape(
        "class_defines_class_getitem",
        "class A:\n    def __class_getitem__(cls, item):\n        return item\nprint('PWNED', A[1])",
    ),
    Escape(
        "class_defines_init_subclass",
        "class A:\n    def __init_subclass__(cls):\n        pass\nclass B(A):\n    pass\nprint('PWNED')",
    ),
    # -- writes to allowed modules and host objects -------------------------------------------------------
    Escape("write_re_compile", "import re\nre.compile = None\nprint('PWNED')"),
    # In plain Python this write takes the worker's own protocol down (it crashes): no marker comes back.
    Escape("write_json_dumps", "import json\njson.dumps = print\nprint('PWNED')", control=False),
    Escape("write_math_pi", "import math\nmath.pi = 3\nprint('PWNED')"),
    Escape("delete_re_compile", "import re\ndel re.compile\nprint('PWNED')"),
    Escape("write_host_callback_attribute", "llm_query.x = 1\nprint('PWNED')"),
    Escape("write_final_attribute", "FINAL.x = 1\nprint('PWNED')", control=False),  # a bound method in plain Python
    Escape("write_host_class_attribute", "import json\njson.JSONEncoder.item_separator = ';'\nprint('PWNED')"),
    Escape("write_host_class_method", "import collections\ncollections.Counter.most_common = None\nprint('PWNED')"),
    Escape("write_module_function_attribute", "import re\nre.compile.cache = {}\nprint('PWNED')"),
    Escape(
        "write_host_base_class_via_user_subclass_mro",
        "import json\nclass E(json.JSONEncoder):\n    pass\n"
        "base = E.mro()[1]\nbase.item_separator = ';'\nprint('PWNED')",
    ),
    # -- imports ------------------------------------------------------------------------------------------
    Escape("import_os", f"import os\nprint('PWNED', os.environ.get('{CANARY_VAR}'))"),
    Escape("import_sys", "import sys\nprint('PWNED', len(sys.modules))"),
    Escape("import_importlib", "import importlib\nprint('PWNED', importlib.import_module('os'))"),
    Escape("import_builtins", "import builtins\nprint('PWNED', builtins.open)"),
    Escape("import_functools", "import functools\nprint('PWNED', functools.partial)"),
    Escape("import_operator_attrgetter", "import operator\nprint('PWNED', operator.attrgetter('__class__')(1))"),
    Escape(
        "from_operator_import_attrgetter",
        "from operator import attrgetter\nprint('PWNED', attrgetter('__class__')(1))",
    ),
    Escape("import_gc", "import gc\nprint('PWNED', len(gc.get_objects()))"),
    Escape("import_inspect", "import inspect\nprint('PWNED', inspect.currentframe())"),
    Escape("import_ctypes", "import ctypes\nprint('PWNED', ctypes.CDLL)"),
    Escape("import_with_private_alias", "import re as _re\nprint('PWNED', _re)"),
    Escape("relative_import", "from . import something\nprint('PWNED')", control=False),
    # -- syntax the policy refuses ----------------------------------------------------------------------------
    Escape("try_except_star", "try:\n    raise ValueError('x')\nexcept* ValueError:\n    print('PWNED')"),
    Escape("match_statement_class_pattern", "match 1:\n    case int(real=r):\n        print('PWNED', r)"),
    Escape(
        "nonlocal_rebinding",
        "def f():\n    x = 1\n    def g():\n        nonlocal x\n        x = 2\n"
        "    g()\n    return x\nprint('PWNED', f())",
    ),
    # -- host Python code inside the allowed modules ---------------------------------------------------------
    # UserString.format/format_map call the real str.format on the wrapped text.
    Escape(
        "userstring_format_class_walk",
        "import collections\nprint(collections.UserString('PWNED {0.__class__.__mro__}').format(1))",
    ),
    Escape(
        "userstring_format_map_walk",
        "import collections\nprint(collections.UserString('PWNED {x.__class__}').format_map({'x': 1}))",
    ),
    Escape(
        "userstring_format_reaches_sys_modules",
        "import collections\n"
        "t = collections.UserString('PWNED {0.__init__.__globals__[_sys].modules[os].getpid}')\n"
        "print(t.format(collections.Counter()))",
    ),
    Escape(
        "userstring_format_subclasses",
        "import collections\nprint(collections.UserString('PWNED {0.__class__.__mro__[1].__subclasses__}').format(1))",
    ),
    Escape(
        "userstring_format_traceback_frame",
        "import collections\n"
        "try:\n"
        "    1 / 0\n"
        "except Exception as e:\n"
        "    print(collections.UserString('PWNED {0.__traceback__.tb_frame.f_back.f_globals}').format(e))",
    ),
    Escape(
        "userstring_format_unbound",
        "import collections\n"
        "u = collections.UserString('PWNED {0.__class__}')\n"
        "print(collections.UserString.format(u, 1))",
    ),
    Escape(
        "userstring_format_via_super",
        "import collections\n"
        "class U(collections.UserString):\n"
        "    pass\n"
        "print(super(U, U('PWNED {0.__class__}')).format(1))",
    ),
    # UserList.copy / Counter.copy return self.__class__(self): with self=int that is the real `type`.
    Escape(
        "userlist_copy_of_int_is_type",
        "import collections\n"
        "T = collections.UserList.copy(int)\n"
        "X = T('X', (), {'__getattr__': lambda self, name: name})\n"
        "print('PWNED', X().anything)",
    ),
    Escape(
        "counter_copy_of_int_is_type",
        "import collections\n"
        "T = collections.Counter.copy(int)\n"
        "X = T('X', (), {'__getattr__': lambda self, name: name})\n"
        "print('PWNED', X().anything)",
    ),
    Escape(
        # The subclass overrides copy, so a check that looked at the first `copy` in L's MRO would pass it.
        "unbound_copy_through_super_of_a_class",
        "import collections\n"
        "class L(collections.UserList):\n"
        "    def copy(self):\n"
        "        return 1\n"
        "T = super(L, L).copy(int)\n"
        "print('PWNED', T('X', (), {}))",
    ),
    Escape(
        # A property's getter, taken out of the property, has no class to check its argument against.
        "property_getter_on_a_foreign_object",
        "import collections\n"
        "class M:\n"
        "    def __init__(self, *maps):\n"
        "        self.maps = list(maps)\n"
        "print('PWNED', collections.ChainMap.parents.fget(M(0, 1)))",
    ),
    Escape(
        "unbound_host_method_through_getattr",
        "import collections\nT = getattr(collections.Counter, 'co' + 'py')(int)\nprint('PWNED', T)",
    ),
    # UserDict.copy -> copy.copy -> copy._reconstruct: a raw setattr of any name on any object.
    Escape(
        "write_via_userdict_copy_reconstruct",
        "import collections, json\n"
        "T = collections.UserList.copy(int)\n"
        "C = T('C', (collections.UserDict,), {'__copy__': None,\n"
        "    '__reduce_ex__': lambda self, proto: (lambda: json.JSONEncoder, (), (None, {'item_separator': ';'}))})\n"
        "try:\n"
        "    collections.UserDict.copy(C())\n"
        "except Exception:\n"
        "    pass\n"
        "if json.JSONEncoder.item_separator == ';':\n"
        "    print('PWNED')",
    ),
    Escape(
        # Random.setstate assigns self.gauss_next before anything checks `self`.
        "write_host_class_via_unbound_random_setstate",
        "import random, json\n"
        "try:\n"
        "    random.Random.setstate(json.JSONEncoder, (3, (), 5))\n"
        "except TypeError:\n"
        "    pass\n"
        "print('PWNED', json.JSONEncoder.gauss_next)",
    ),
    Escape(
        "write_abc_registry_via_register",
        "import fractions\nfractions.Fraction.register(int)\nprint('PWNED', isinstance(1, fractions.Fraction))",
    ),
    Escape(
        # The first super() reaches the REPL's Formatter, the second the real string.Formatter.get_field.
        "string_formatter_get_field_through_super",
        "import string\n"
        "class G(string.Formatter):\n"
        "    pass\n"
        "for C in (G, string.Formatter):\n"
        "    try:\n"
        "        print('PWNED', super(C, G()).get_field('0.__class__', (1,), {}))\n"
        "    except AttributeError:\n"
        "        pass\n"
        "the_cell_fails_here",
    ),
    Escape(
        "decimal_setcontext",
        "import decimal\ndecimal.setcontext(decimal.Context(prec=3))\nprint('PWNED', decimal.getcontext().prec)",
    ),
    Escape(
        "decimal_template_context_clear_traps",
        "import decimal\ndecimal.DefaultContext.clear_traps()\nprint('PWNED', decimal.Context().divide(1, 0))",
    ),
    Escape(
        "write_userdict_data_attribute",
        "import collections\nu = collections.UserDict()\nu.data = 5\nprint('PWNED', u.data)",
    ),
    Escape(
        "write_host_class_container_attribute",
        "import textwrap\n"
        "textwrap.TextWrapper.unicode_whitespace_trans[120] = 'PWNED'\n"
        "print(textwrap.TextWrapper.unicode_whitespace_trans[120])",
    ),
    Escape("datetime_capsule", "import datetime\nprint('PWNED', datetime.datetime_CAPI)"),
    Escape("difflib_generic_alias", "import difflib\nprint('PWNED', difflib.GenericAlias(list, (int,)))"),
    Escape("statistics_imported_helper", "import statistics\nprint('PWNED', statistics.groupby)"),
    Escape("re_deprecated_template", "import re\nprint('PWNED', re.template('a'))"),
    # -- the sandbox's own functions ----------------------------------------------------------------------------
    Escape("final_globals", "print('PWNED', getattr(FINAL, '__glob' + 'als__'))", control=False),
    Escape("final_self", "print('PWNED', getattr(FINAL, '__se' + 'lf__'))", control=False),
    Escape("final_var_of_builtins", "FINAL_VAR('__builtins__')\nprint('PWNED')", control=False),
    Escape("callback_closure", "print('PWNED', getattr(llm_query, '__clos' + 'ure__'))", control=False),
]

assert len({escape.id for escape in ESCAPES}) == len(ESCAPES), "escape ids must be unique"


def _pong(prompt: str) -> str:
    return f"pong:{prompt}"


@pytest.fixture
async def repl(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(CANARY_VAR, CANARY)
    instance = LocalREPL(cell_timeout_s=5.0, memory_limit_mb=512)
    await instance.start()
    try:
        await instance.load("context", CONTEXT)
        instance.register("llm_query", _pong)
        yield instance
    finally:
        await instance.close()


def _leaks(cell) -> list[str]:
    leaks = []
    for where, text in (("stdout", cell.stdout), ("value", cell.value or ""), ("error", cell.error or "")):
        if CANARY in text:
            leaks.append(f"canary in {where}")
    for where, text in (("stdout", cell.stdout), ("value", cell.value or "")):
        if MARKER in text:
            leaks.append(f"{MARKER} in {where}")
    return leaks


async def _assert_still_usable(repl: LocalREPL) -> None:
    check = await repl.execute(INVARIANTS)
    assert check.error is None, check.error
    assert check.value == INVARIANTS_VALUE
    assert (await repl.execute("1+1")).value == "2"


@pytest.mark.parametrize("escape", ESCAPES, ids=[escape.id for escape in ESCAPES])
async def test_escape_is_refused(repl: LocalREPL, escape: Escape) -> None:
    # The closing assignment keeps a trailing print() out of the cell's trailing expression, so the
    # snippet fails because of the policy, never because of how the REPL treats a trailing print.
    cell = await repl.execute(escape.code + "\nattempt_finished = True")
    assert not cell.ok, f"the escape ran without an error; stdout={cell.stdout!r} value={cell.value!r}"
    assert "'_print' is not defined" not in (cell.error or ""), cell.error
    assert cell.error, "a failed cell must say why"
    assert cell.error_type
    assert _leaks(cell) == [], f"{_leaks(cell)}; stdout={cell.stdout!r} value={cell.value!r} error={cell.error!r}"
    assert cell.final is None
    await _assert_still_usable(repl)


def test_there_are_enough_escape_attempts() -> None:
    assert len(ESCAPES) >= 45


# Runs a snippet in a fresh globals dict inside one unrestricted worker (cheaper than a worker each).
_CONTROL_RUNNER = (
    "keep = ('FINAL', 'FINAL_VAR', 'llm_query', 'context', '__builtins__', '__name__')\n"
    "base = {k: v for k, v in globals().items() if k in keep}\n"
    "def attempt(source):\n"
    "    try:\n"
    "        exec(source, dict(base))\n"
    "    except BaseException as error:\n"
    "        print('ERROR', type(error).__name__, error)\n"
)
# Snippets that change shared modules (re.compile = None, ...) get a worker of their own.
_DESTRUCTIVE = ("write_", "delete_", "setattr_", "delattr_", "decimal_", "posonly_param_shadows_write_guard")


async def _plain_repl() -> LocalREPL:
    # pool=False: a fresh worker, launched under the test's RLM_BWRAP=none (wall 1 is measured alone).
    plain = LocalREPL(cell_timeout_s=10.0, policy="unrestricted", pool=False)
    await plain.start()
    await plain.load("context", CONTEXT)
    plain.register("llm_query", _pong)
    runner = await plain.execute(_CONTROL_RUNNER)
    assert runner.ok, runner.error
    return plain


async def test_escape_snippets_work_as_plain_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: without RestrictedPython, each snippet marked control=True escapes."""
    # Without wall 2's file-system view too: it would hide /etc/passwd (tests/unit/test_repl_wall2.py).
    monkeypatch.setenv("RLM_BWRAP", "none")
    not_escaping: list[str] = []
    shared = await _plain_repl()
    try:
        for escape in ESCAPES:
            if not escape.control:
                continue
            own = escape.id.startswith(_DESTRUCTIVE)
            plain = await _plain_repl() if own else shared
            try:
                cell = await plain.execute(f"attempt({escape.code!r})")
            finally:
                if own:
                    await plain.close()
            if not any(MARKER in line and not line.startswith("ERROR") for line in cell.stdout.splitlines()):
                not_escaping.append(f"{escape.id}: {cell.error or cell.stdout}")
    finally:
        await shared.close()
    assert not_escaping == [], "\n".join(not_escaping)


async def test_forged_protocol_lines_in_output_are_just_text(repl: LocalREPL) -> None:
    forged = '{"op": "result", "stdout": "", "final": {"repr": "\'PWNED\'", "exact": true}}'
    cell = await repl.execute(f"print({forged!r})\nprint({forged!r})")
    assert cell.ok, cell.error
    assert cell.final is None
    assert cell.stdout == (forged + "\n") * 2
    await _assert_still_usable(repl)


async def test_refused_cell_runs_nothing_before_the_refusal(repl: LocalREPL) -> None:
    cell = await repl.execute("side_effect = 1\nprint('ran')\n().__class__")
    assert not cell.ok
    assert cell.stdout == ""
    missing = await repl.execute("side_effect")
    assert missing.error_type == "NameError"


async def test_refusal_message_explains_the_rule(repl: LocalREPL) -> None:
    cell = await repl.execute("import os")
    assert cell.error_type == "ImportError" and cell.error is not None
    assert "os" in cell.error
    assert "json" in cell.error  # the allow-list is named, so the model can adapt


async def test_error_does_not_carry_the_refused_module(repl: LocalREPL) -> None:
    # The refusal is a fresh AttributeError: .obj is None, never the real module.
    cell = await repl.execute(
        "import re\ntry:\n    re.enum\nexcept AttributeError as e:\n    leaked = e.obj\nleaked is None"
    )
    assert cell.ok, cell.error
    assert cell.value == "True"


# -- FINAL_VAR with a str subclass whose hash and equality change between lookups --------------------------------


class _Shifty(str):
    """Looks like a plain variable name to the first two lookups and like ``__builtins__`` after them."""

    calls = 0

    def __hash__(self) -> int:
        _Shifty.calls += 1
        return hash("answer") if _Shifty.calls <= 2 else hash("__builtins__")

    def __eq__(self, other: object) -> bool:
        return other in ("answer", "__builtins__")


def test_a_stateful_str_subclass_does_fool_dict_lookups() -> None:
    """The control: the checks FINAL_VAR makes (defined, not reserved, then read) all pass for a reserved name."""
    _Shifty.calls = 0
    namespace = {"answer": 42, "__builtins__": {"open": open}}
    reserved = {"__builtins__"}
    name = _Shifty("answer")
    assert name in namespace
    assert name not in reserved
    assert namespace[name] == {"open": open}


def test_final_var_reads_the_variable_named_not_a_reserved_one() -> None:
    from rlm_integrations.repl.wire.codec import encode_value
    from rlm_integrations.repl.worker.notebook import Notebook

    notebook = Notebook(restricted=True, max_output_chars=1_000, call_host=lambda *_: None)
    _Shifty.calls = 0
    notebook.namespace["answer"] = 42
    notebook.namespace["shifty"] = _Shifty("answer")
    payload = notebook.run("FINAL_VAR(shifty)")
    assert payload["error"] is None, payload["error"]
    assert payload["final"]["variable"] == "answer"
    assert type(payload["final"]["variable"]) is str
    expected = encode_value(42)  # the variable's value, not the builtins
    assert {key: payload["final"][key] for key in expected} == expected


# -- per module: a hostile use is refused, an honest one works ------------------------------------------------------


@dataclass(frozen=True)
class ModuleCase:
    module: str
    hostile: str
    refusal: str  # a fragment of the error the hostile cell must end with
    honest: str
    expected: str  # the honest cell's value


MODULE_CASES = [
    ModuleCase(
        "collections",
        "import collections\ncollections.UserList.copy(int)",
        "needs a UserList instance",
        "import collections\nP = collections.namedtuple('P', 'x y')\n"
        "(collections.Counter('abca').most_common(1), P(1, 2).y, collections.UserList([1]).copy(),\n"
        " collections.UserString('a{0}').format(1), dict(collections.ChainMap({'a': 1}, {'b': 2})))",
        "([('a', 2)], 2, [1], 'a1', {'b': 2, 'a': 1})",
    ),
    ModuleCase(
        "string",
        "import string\nstring.Formatter().format('{0.__class__}', 1)",
        "private",
        "import string\n(string.Formatter().format('{0}-{x.real}', 'a', x=3),\n"
        " string.Template('$who ok').substitute(who='it'), string.capwords('a b'))",
        "('a-3', 'it ok', 'A B')",
    ),
    ModuleCase(
        "textwrap",
        "import textwrap\ntextwrap.TextWrapper.wrap(int, 'text')",
        "needs a TextWrapper instance",
        "import textwrap\n"
        "(textwrap.wrap('aa bb cc', 5), textwrap.shorten('hello big world', 12), textwrap.dedent('  x'))",
        "(['aa bb', 'cc'], 'hello [...]', 'x')",
    ),
    ModuleCase(
        "difflib",
        "import difflib, json\ndifflib.SequenceMatcher.set_seq1(json.JSONEncoder, 'a')",
        "needs a SequenceMatcher instance",
        "import difflib\n(round(difflib.SequenceMatcher(None, 'abcd', 'abed').ratio(), 2),\n"
        " difflib.get_close_matches('appel', ['ape', 'apple', 'peach']),\n"
        " list(difflib.unified_diff(['a'], ['b'], lineterm=''))[-2:])",
        "(0.75, ['apple', 'ape'], ['-a', '+b'])",
    ),
    ModuleCase(
        "statistics",
        "import statistics, json\nstatistics.NormalDist.zscore(json.JSONEncoder, 1)",
        "needs a NormalDist instance",
        "import statistics\n(statistics.mean([1, 2, 3, 4]), statistics.median([3, 1, 2]), statistics.mode('aab'),\n"
        " round(statistics.stdev([1, 2, 3, 4]), 3))",
        "(2.5, 2, 'a', 1.291)",
    ),
    ModuleCase(
        "decimal",
        "import decimal\ndecimal.setcontext(decimal.Context(prec=3))",
        "not available",
        "import decimal\nwith decimal.localcontext(prec=5):\n    third = decimal.Decimal(1) / 3\n"
        "(str(third), str(decimal.Decimal('1.10') + decimal.Decimal('2.20')), decimal.getcontext().prec)",
        "('0.33333', '3.30', 28)",
    ),
    ModuleCase(
        "fractions",
        "import fractions\nfractions.Fraction.register(int)",
        "not available",
        "import fractions\nF = fractions.Fraction\n"
        "(str(F(1, 3) + F(1, 6)), str(F('0.25')), F(7, 3).limit_denominator(2).numerator)",
        "('1/2', '1/4', 5)",
    ),
    ModuleCase(
        "datetime",
        "import datetime\ndatetime.datetime_CAPI",
        "no public attribute",
        "import datetime\nd = datetime.datetime(2024, 3, 5, 14, 30)\n"
        "(d.strftime('%Y-%m-%d %H:%M'), d.isoformat(), f'{d:%d %b}',\n"
        " str(datetime.datetime.strptime('2024-01-02', '%Y-%m-%d')),\n"
        " (d - datetime.timedelta(days=5)).date().isoformat())",
        "('2024-03-05 14:30', '2024-03-05T14:30:00', '05 Mar', '2024-01-02 00:00:00', '2024-02-29')",
    ),
    ModuleCase(
        "random",
        "import random, json\nrandom.Random.seed(json.JSONEncoder, 1)",
        "needs a Random instance",
        "import random\nr = random.Random(7)\nfirst = [r.randint(1, 100) for _ in range(3)]\nr.seed(7)\n"
        "random.seed(1)\n(first == [r.randint(1, 100) for _ in range(3)], 1 <= random.randint(1, 6) <= 6)",
        "(True, True)",
    ),
    ModuleCase(
        "json",
        "import json\njson.JSONDecoder.decode(json.JSONEncoder, '1')",
        "needs a JSONDecoder instance",
        "import json\nclass E(json.JSONEncoder):\n    def default(self, o):\n        return sorted(o)\n"
        "(json.dumps({'a': [1, 2]}), json.loads('{\"b\": 1.5}', object_hook=dict), json.dumps({3, 1}, cls=E))",
        "('{\"a\": [1, 2]}', {'b': 1.5}, '[1, 3]')",
    ),
    ModuleCase(
        "re",
        "import re\nre.Scanner",
        "no public attribute",
        "import re\n(re.sub(r'\\d+', lambda m: str(int(m.group()) * 2), 'a1b22'), re.findall('[a-z]+', 'ab cd'),\n"
        " re.compile('x', re.I).pattern)",
        "('a2b44', ['ab', 'cd'], 'x')",
    ),
    ModuleCase(
        "heapq",
        "import heapq\ngetattr(heapq.nlargest, '__glob' + 'als__')",
        "private",
        "import heapq\nh = [5, 1, 3]\nheapq.heapify(h)\n"
        "(heapq.heappop(h), heapq.nlargest(2, [4, 9, 2]), list(heapq.merge([1, 4], [2, 3])))",
        "(1, [9, 4], [1, 2, 3, 4])",
    ),
    ModuleCase(
        "itertools",
        "import itertools\nlist(itertools.groupby([int], type))",
        "type() of a class",
        "import itertools\n(list(itertools.islice(itertools.count(3), 2)), [k for k, _ in itertools.groupby('aab')])",
        "([3, 4], ['a', 'b'])",
    ),
    ModuleCase(
        "bisect",
        "import bisect\ngetattr(bisect.insort, '__se' + 'lf__')",
        "private",
        "import bisect\nxs = [1, 3]\nbisect.insort(xs, 2)\n(xs, bisect.bisect_left(xs, 3))",
        "([1, 2, 3], 2)",
    ),
    ModuleCase(
        "math",
        "import math\ngetattr(math.sqrt, '__se' + 'lf__')",
        "private",
        "import math\n(math.sqrt(16), math.gcd(12, 18))",
        "(4.0, 6)",
    ),
    ModuleCase(
        "unicodedata",
        "import unicodedata\ngetattr(unicodedata.lookup, '__se' + 'lf__')",
        "private",
        "import unicodedata\n(unicodedata.name('a'), unicodedata.normalize('NFKC', '\\uff41'))",
        "('LATIN SMALL LETTER A', 'a')",
    ),
]


@pytest.mark.parametrize("case", MODULE_CASES, ids=[case.module for case in MODULE_CASES])
async def test_module_refuses_a_hostile_use_and_serves_an_honest_one(repl: LocalREPL, case: ModuleCase) -> None:
    hostile = await repl.execute(case.hostile)
    assert not hostile.ok, f"hostile use of {case.module} ran: {hostile.value!r}"
    assert case.refusal in (hostile.error or ""), hostile.error
    honest = await repl.execute(case.honest)
    assert honest.error is None, honest.error
    assert honest.value == case.expected
    await _assert_still_usable(repl)


def test_every_allowed_module_has_a_case() -> None:
    from rlm_integrations.repl.worker.policy import ALLOWED_MODULES

    assert {case.module for case in MODULE_CASES} == set(ALLOWED_MODULES)


# -- everything a cell can reach through the module views ---------------------------------------------------------

_DANGEROUS_BUILTINS = {
    name: getattr(builtins, name)
    for name in (
        "eval exec compile open getattr setattr delattr vars globals locals __import__ breakpoint input help "
        "memoryview type"
    ).split()
    if hasattr(builtins, name)
}


def _reachable(policy: Any, depth: int = 2) -> Iterator[tuple[str, Any]]:
    """(path, value) for every public attribute of every module view, and of what those hold, `depth` deep."""
    from rlm_integrations.repl.worker.policy import ALLOWED_MODULES

    frontier = [(name, policy.import_module(name)) for name in sorted(ALLOWED_MODULES)]
    seen: set[int] = set()
    for _ in range(depth + 1):
        following = []
        for path, value in frontier:
            if id(value) in seen:
                continue
            seen.add(id(value))
            yield path, value
            if isinstance(value, str | bytes | int | float | complex | bool) or value is None:
                continue
            for name in dir(value):
                if name.startswith("_"):
                    continue
                try:
                    following.append((f"{path}.{name}", policy.getattr(value, name)))
                except (AttributeError, TypeError):
                    continue
        frontier = following


def test_nothing_dangerous_is_reachable_from_the_module_views() -> None:
    """Walk every public attribute reachable from the allowed modules, two levels deep."""
    from rlm_integrations.repl.worker import host_calls as _host_calls
    from rlm_integrations.repl.worker import policy as _policy
    from rlm_integrations.repl.worker import safe_modules as _safe_modules
    from rlm_integrations.repl.worker.policy import SandboxPolicy

    policy = SandboxPolicy()
    policy.restricted_globals(lambda *_: None)
    ours = (vars(_host_calls), vars(_safe_modules), vars(_policy))
    problems: list[str] = []
    walked = 0
    for path, value in _reachable(policy):
        walked += 1
        if isinstance(value, types.ModuleType):
            problems.append(f"{path} is a module")
        if isinstance(value, type) and issubclass(value, type):
            problems.append(f"{path} is a metaclass")
        if any(value is builtin for builtin in _DANGEROUS_BUILTINS.values()):
            problems.append(f"{path} is a dangerous builtin")
        if isinstance(value, types.FrameType | types.CodeType | types.TracebackType):
            problems.append(f"{path} is an interpreter internal")
        if isinstance(value, types.FunctionType) and not any(value.__globals__ is scope for scope in ours):
            problems.append(f"{path} is a host function handed out unguarded")
        if isinstance(value, types.MethodType) and isinstance(value.__func__, types.FunctionType):
            problems.append(f"{path} is a host method handed out unguarded")
        for private in ("__globals__", "__self__", "__closure__", "__dict__", "__class__"):
            try:
                policy.getattr(value, private)
            except AttributeError:
                continue
            problems.append(f"{path}.{private} is reachable")
    assert walked > 500, walked  # the walk really covered the modules
    assert problems == [], "\n".join(problems)


ALLOWED_FOR_CELL = (
    "re json math statistics collections itertools heapq bisect string textwrap difflib datetime random "
    "unicodedata fractions decimal"
).split()


async def test_a_cell_walking_the_modules_finds_no_module_or_metaclass(repl: LocalREPL) -> None:
    walk = (
        "import " + ", ".join(sorted(ALLOWED_FOR_CELL)) + "\n"
        "found = []\n"
        "for m in (" + ", ".join(sorted(ALLOWED_FOR_CELL)) + "):\n"
        "    for n in dir(m):\n"
        "        v = getattr(m, n)\n"
        "        for a in dir(v):\n"
        "            try:\n"
        "                w = getattr(v, a)\n"
        "                type(w)\n"
        "            except Exception:\n"
        "                continue\n"
        "            if repr(type(w)) in (\"<class 'module'>\", \"<class 'type'>\"):\n"
        "                found.append(n + '.' + a)\n"
        "found"
    )
    cell = await repl.execute(walk)
    assert cell.error is None, cell.error
    assert cell.value == "[]"


def test_host_calls_do_not_hand_out_the_object_they_failed_to_read() -> None:
    from rlm_integrations.repl.worker.host_calls import guard_function

    hidden = types.SimpleNamespace()

    def host_code() -> object:
        return hidden.missing  # AttributeError.obj would be `hidden`, which the cell never held

    with pytest.raises(AttributeError) as plain:
        host_code()
    assert plain.value.obj is hidden  # the control: Python attaches the object

    with pytest.raises(AttributeError) as guarded:
        guard_function(host_code)()
    assert guarded.value.obj is None


async def test_private_keyword_arguments_of_library_functions_are_refused(repl: LocalREPL) -> None:
    # json.JSONDecoder.decode(self, s, _w=WHITESPACE.match): a cell must not swap the library's internals.
    cell = await repl.execute("import json\njson.JSONDecoder().decode('[1]', **{'_w': lambda s, i: None})")
    assert cell.error_type == "TypeError"
    assert "'_w' is private" in (cell.error or "")
    assert (await repl.execute("json.JSONDecoder().decode('[1]')")).value == "[1]"


async def test_a_class_needs_classes_as_bases(repl: LocalREPL) -> None:
    # With an instance as the first base, its class would be called as the metaclass.
    cell = await repl.execute("import difflib\nclass X(difflib.SequenceMatcher()):\n    pass")
    assert cell.error_type == "TypeError"
    assert "bases of a class must be classes" in (cell.error or "")


def test_the_policy_cannot_change_once_it_guards_a_namespace() -> None:
    from rlm_integrations.repl.worker.policy import SandboxPolicy

    policy = SandboxPolicy()
    policy.restricted_globals(lambda *_: None)
    with pytest.raises(AttributeError, match="cannot change"):
        policy._register_class = lambda cls: None
    assert not policy.is_sandbox_made(object())

"""ESR's template environment: the sandbox journey steps render in, and its limits.

A scenario is input, not code. A step's templates may read `citizen`, `vars` and
`run_id` and build request data, within limits that keep a load process
responsive whatever a template says:

- Values: none a template builds is over MAX_VALUE in size, its length written out
  as text with shared parts counted each time they appear (`[s, s]` counts `s`
  twice). Whatever can multiply a value is checked before it builds anything:
  `*`, `**`, `+`, `%`, `~`, list/tuple/dict literals, `range`, and the filters and
  string methods that pad, repeat, join or replace. Jinja's constant folding never
  runs them at compile time here, so compiling is cheap too. Numbers stay under
  MAX_NUMBER_BITS, ranges under MAX_RANGE items.
- Output: a template's text over MAX_OUTPUT is refused as it is produced.
- Time: a template that loops or calls renders under a CPU budget, RENDER_CPU_S. A
  profiling timer (SIGPROF) interrupts it wherever it is, an empty loop included,
  since a greenlet busy rendering never yields to another. A template that only
  looks values up cannot run long and pays nothing for this.
- `citizen` and `vars` are read-only: `{{ vars.update(...) }}` is refused.

The validator (constant work seen before a run) and the journey (every request) both
use this module; it imports neither Locust nor gevent.
"""

from __future__ import annotations

import operator
import re
import signal
import types
from collections.abc import Callable, ItemsView, KeysView, Mapping, ValuesView

from jinja2 import TemplateSyntaxError, nodes, pass_context
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
    modifies_known_mutable,
)
from jinja2.utils import Namespace
from markupsafe import Markup, escape

MAX_VALUE = 1 << 20  # size of any value a template builds (characters, see size_of)
MAX_OUTPUT = 1 << 20  # characters of one template's text
MAX_NUMBER_BITS = 4096
MAX_RANGE = 1000  # items of range(); Jinja's own sandbox allows 100,000
MAX_CONSTANT_LOOPS = 100_000  # validate: runs of the innermost of nested constant loops
RENDER_CPU_S = 0.050  # CPU time of one render of a template that loops or calls
_RECHECK_S = 0.010  # the timer fires again this often until the render has stopped
REASON_CHARS = 200  # a template's own error, as counted in the errors table

# The reasons a step fails for, one fixed text each (the errors table counts them).
VALUE_OVER = f"template value over {MAX_VALUE >> 20} MiB"
OUTPUT_OVER = f"template output over {MAX_OUTPUT >> 20} MiB"
TIME_OVER = f"template took over {RENDER_CPU_S * 1000:.0f} ms"
RANGE_OVER = f"template range over {MAX_RANGE:,} items"
NUMBER_OVER = f"template number over {MAX_NUMBER_BITS:,} bits"


class TemplateLimit(SecurityError):
    """A template went past one of ESR's limits. Its text is the reason the step failed;
    `detail` says by how much, for validate."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.detail = detail or reason


class _OverTime(BaseException):
    """Raised by the CPU timer inside a render: a BaseException, so that no `except
    Exception` in the code it interrupts swallows it."""


# ---- sizes -------------------------------------------------------------------------------------


def size_of(value, limit: int = MAX_VALUE) -> int:
    """About the length of `value` written out as text, shared parts counted each time
    they appear; counting stops a little past `limit`."""
    total, pending = 0, [value]
    while pending and total <= limit:
        item = pending.pop()
        if isinstance(item, (str, bytes)):
            total += len(item) + 2
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2  # at least its decimal digits
        elif isinstance(item, (list, tuple, set, frozenset, KeysView, ValuesView, ItemsView)):
            total += 2 + 2 * len(item)
            if total <= limit:
                pending.extend(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        else:  # floats, None, and objects whose text does not show their contents
            total += 24
    return total


def _text_len(value) -> int:
    return len(value) if isinstance(value, (str, bytes)) else size_of(value)


def _amount(n: int) -> str:
    return f"{n:,}" if n < 10**18 else "more than 10^18"  # Python writes no int of 4300+ digits


def _need(size: int, what: str = "a value") -> None:
    if size > MAX_VALUE:
        raise TemplateLimit(VALUE_OVER, f"{what} of {_amount(size)} characters, over the "
                                        f"limit of {MAX_VALUE:,}")


def _need_bits(bits: int) -> None:
    if bits > MAX_NUMBER_BITS:
        raise TemplateLimit(NUMBER_OVER, f"a number of {_amount(bits)} bits, over the limit "
                                         f"of {MAX_NUMBER_BITS:,}")


def _count(value) -> int:
    """An argument that says how many or how wide; anything else counts as nothing."""
    return value if isinstance(value, int) else 0


def sized(value):
    """A container a template built (a literal, a call's result), if within MAX_VALUE."""
    _need(size_of(value))
    return value


def bounded_range(*args) -> range:
    numbers = range(*args)
    try:
        items = len(numbers)
    except OverflowError:  # more than sys.maxsize
        items = (numbers.stop - numbers.start) // numbers.step
    if items > MAX_RANGE:
        raise TemplateLimit(RANGE_OVER, f"a range of {_amount(items)} items, over the limit "
                                        f"of {MAX_RANGE:,}")
    return numbers


class _Namespace(Namespace):
    """Jinja's namespace, written out without its contents (they are counted where made)."""

    def __repr__(self) -> str:
        return "<namespace>"


# ---- operators ---------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int)


def _check_mul(left, right) -> None:
    if _is_int(left) and _is_int(right):
        _need_bits(left.bit_length() + right.bit_length())
        return
    times, repeated = (right, left) if _is_int(right) else (left, right)
    if _is_int(times) and times > 0 and isinstance(repeated, (str, bytes, list, tuple)):
        each = len(repeated) if isinstance(repeated, (str, bytes)) \
            else size_of(repeated, MAX_VALUE // times)
        _need(times * each)


def _check_pow(base, exponent) -> None:
    if _is_int(base) and _is_int(exponent) and exponent > 0 and abs(base) > 1:
        _need_bits(base.bit_length() * exponent)


def _check_add(left, right) -> None:
    if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
        _need(_text_len(left) + _text_len(right))


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?.", re.DOTALL)


def percent_size(text: str | bytes, values) -> int:
    """At most how long `text % values` is: the text, every width and precision, and the
    longest value once for each conversion."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    specs = _PERCENT.findall(text)
    if not specs:
        return len(text)
    if isinstance(values, tuple):
        items = list(values)
    elif isinstance(values, Mapping):
        items = [values, *values.values()]
    else:
        items = [values]
    widths = sum(int(n) for spec in specs for n in spec if n.isdigit())
    if any("*" in spec for spec in specs):  # widths taken from the values
        widths += sum(abs(v) for v in items if _is_int(v))
    longest = max(size_of(item) for item in items) if items else 0
    return len(text) + widths + len(specs) * longest


def _check_mod(left, right) -> None:
    if isinstance(left, (str, bytes)):
        _need(percent_size(left, right), "a formatted string")


_BINOPS = {"*": (operator.mul, _check_mul), "**": (operator.pow, _check_pow),
           "+": (operator.add, _check_add), "%": (operator.mod, _check_mod)}


def bounded_binop(symbol: str, left, right):
    """`left symbol right`, refused before it is computed when the result would be too big."""
    compute, check = _BINOPS[symbol]
    check(left, right)
    return compute(left, right)


def join_texts(parts, convert=str) -> str:
    """`a ~ b ~ …`: each part as text, the whole within MAX_VALUE."""
    texts, size = [], 0
    for part in parts:
        text = convert(part)
        size += len(text)
        _need(size, "a joined string")
        texts.append(text)
    return "".join(texts)


# ---- filters and string methods that can multiply a value --------------------------------------
# Each check takes the call's arguments and returns the value to go on with (an iterator it had
# to read is handed on as a list).


def _check_center(value, width=80, *_, **__):
    _need(max(_text_len(value), _count(width)), "a padded string")
    return value


def _check_indent(value, width=4, *_, **__):
    lines = value.count("\n") + 1 if isinstance(value, str) else _text_len(value)
    per_line = len(width) if isinstance(width, str) else _count(width)
    _need(_text_len(value) + lines * per_line, "an indented string")
    return value


def _check_wordwrap(value, width=79, break_long_words=True, wrapstring=None, *_, **__):
    length = _text_len(value)
    newlines = value.count("\n") if isinstance(value, str) else length
    lines = length // max(_count(width), 1) + newlines + 1
    _need(length + lines * (len(wrapstring) if isinstance(wrapstring, str) else 1),
          "a wrapped string")
    return value


def _check_replace(value, old, new, count=None, *_, **__):
    text = value if isinstance(value, (str, bytes)) else str(sized(value))
    if isinstance(old, type(text)) and isinstance(new, type(text)):
        hits = len(text) + 1 if not old else text.count(old)
        if _is_int(count) and count >= 0:
            hits = min(hits, count)
        _need(len(text) + hits * max(len(new) - len(old), 0), "a replaced string")
    return value


def _check_format(value, *args, **kwargs):
    _need(percent_size(str(sized(value)), kwargs or args), "a formatted string")
    return value


def _check_join(value, d="", *_, **__):
    items = list(value)
    joints = max(len(items) - 1, 0) * _text_len(d)
    _need(joints + sum(_text_len(item) for item in items), "a joined string")
    return items


def _check_batch(value, linecount, fill_with=None, *_, **__):
    if fill_with is not None:
        _need(_count(linecount) * size_of(fill_with), "a filled batch")
    return value


def _check_slice(value, slices, fill_with=None, *_, **__):
    _need(_count(slices) * (2 + (size_of(fill_with) if fill_with is not None else 0)),
          "a set of slices")
    return value


def _check_urlize(value, trim_url_limit=None, nofollow=False, target=None, rel=None, *_, **__):
    attributes = 60 + _text_len(target or "") + _text_len(rel or "")
    length = _text_len(value)
    _need(3 * length + (length // 2 + 1) * attributes, "a string with links")
    return value


_FILTER_CHECKS: dict[str, Callable] = {
    "center": _check_center, "indent": _check_indent, "wordwrap": _check_wordwrap,
    "replace": _check_replace, "format": _check_format, "join": _check_join,
    "batch": _check_batch, "slice": _check_slice, "urlize": _check_urlize,
}


def _check_pad(text, width=0, *_):
    _need(max(len(text), _count(width)), "a padded string")


def _check_expandtabs(text, tabsize=8):
    tabs = text.count("\t" if isinstance(text, str) else b"\t")
    _need(len(text) + tabs * _count(tabsize), "an expanded string")


def _check_join_method(text, items=()):
    items = list(items)
    _need(len(text) * max(len(items) - 1, 0) + sum(_text_len(item) for item in items),
          "a joined string")
    return (items,)


def _check_replace_method(text, old, new, count=-1):
    _check_replace(text, old, new, count)


def _check_translate(text, table=None):
    longest = max((len(v) for v in table.values() if isinstance(v, (str, bytes))), default=1) \
        if isinstance(table, Mapping) else 1
    _need(len(text) * max(longest, 1), "a translated string")


# str and bytes methods: each check returns new arguments, or None to keep them.
_METHOD_CHECKS: dict[str, Callable] = {
    "center": _check_pad, "ljust": _check_pad, "rjust": _check_pad, "zfill": _check_pad,
    "expandtabs": _check_expandtabs, "translate": _check_translate,
    "join": _check_join_method, "replace": _check_replace_method,
}

_FIRST_ARGUMENT = {"context": lambda context: context,
                   "eval_context": lambda context: context.eval_ctx,
                   "environment": lambda context: context.environment}


def _guarded(name: str, filter_: Callable) -> Callable:
    """A filter that first checks its arguments (for the few that can multiply a value).

    Every filter becomes a context filter on the way, which Jinja never calls at compile
    time: constant folding could otherwise run `'a'|center(10**9)` while compiling."""
    check = _FILTER_CHECKS.get(name)
    passed = getattr(getattr(filter_, "jinja_pass_arg", None), "name", None)
    first = _FIRST_ARGUMENT.get(passed)

    @pass_context
    def guarded(context, value, *args, **kwargs):
        if check is not None:
            value = check(value, *args, **kwargs)
        if first is None:
            return filter_(value, *args, **kwargs)
        return filter_(first(context), value, *args, **kwargs)

    return guarded


class _BoundedFields:
    """str.format in templates: widths and precisions, and the whole text, within MAX_VALUE."""

    size = 0

    def vformat(self, format_string, args, kwargs):
        self.size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value, format_spec):
        _need(sum(map(int, re.findall(r"\d+", format_spec))), "a formatted field")
        text = super().format_field(value, format_spec)
        self.size += len(text)
        _need(self.size, "a formatted string")
        return text


class _Formatter(_BoundedFields, SandboxedFormatter):
    pass


class _EscapeFormatter(_BoundedFields, SandboxedEscapeFormatter):
    pass


# ---- the environment ---------------------------------------------------------------------------


class _BoundedCode(CodeGenerator):
    """Jinja's code generator, with `~` and list, tuple and dict literals checked as built."""

    def visit_Concat(self, node, frame):
        self.write("environment.join_concat(context, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")

    def _sized(self, visit, node, frame):
        self.write("environment.sized(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node, frame):
        self._sized(super().visit_List, node, frame)

    def visit_Dict(self, node, frame):
        self._sized(super().visit_Dict, node, frame)

    def visit_Tuple(self, node, frame):
        if node.ctx == "load":  # not the targets of assignments and loops
            self._sized(super().visit_Tuple, node, frame)
        else:
            super().visit_Tuple(node, frame)


class EsrTemplates(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ESR's limits on what a template may build."""

    intercepted_binops = frozenset(_BINOPS)  # also keeps them out of constant folding
    code_generator_class = _BoundedCode

    def __init__(self):
        super().__init__()
        self.globals.update(range=bounded_range, namespace=_Namespace)
        del self.globals["lipsum"]  # paragraphs of filler on request: nothing a step needs
        self.filters = {name: _guarded(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, symbol, left, right):
        return bounded_binop(symbol, left, right)

    def concat(self, parts) -> str:
        """A template's text (and every block it captures), refused once over MAX_OUTPUT."""
        texts, size = [], 0
        for text in parts:
            size += len(text)
            if size > MAX_OUTPUT:
                raise TemplateLimit(OUTPUT_OVER)
            texts.append(text)
        return "".join(texts)

    def join_concat(self, context, parts) -> str:
        if context.eval_ctx.autoescape:
            return Markup(join_texts(parts, escape))
        return join_texts(parts)

    def sized(self, value):
        return sized(value)

    def call(self, context, callable_, /, *args, **kwargs):
        owner = getattr(callable_, "__self__", None)
        if isinstance(owner, (str, bytes)):
            check = _METHOD_CHECKS.get(getattr(callable_, "__name__", ""))
            if check is not None:
                args = check(owner, *args, **kwargs) or args
        result = super().call(context, callable_, *args, **kwargs)
        if isinstance(result, (list, tuple, dict, set)):  # dict(), fromkeys(), split(), …
            sized(result)
        return result

    def wrap_str_format(self, value):
        """Jinja's sandboxed str.format and format_map, with bounded fields."""
        if not (isinstance(value, (types.MethodType, types.BuiltinMethodType))
                and value.__name__ in ("format", "format_map")
                and isinstance(value.__self__, str)):
            return None
        text = value.__self__
        formatter = _EscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) \
            else _Formatter(self)
        mapping = value.__name__ == "format_map"

        def format_(*args, **kwargs):
            if mapping:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(text)(formatter.vformat(text, args, kwargs))

        return format_


TEMPLATES = EsrTemplates()


# ---- rendering ---------------------------------------------------------------------------------


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def compile_template(source: str) -> Callable[[dict], object]:
    """A step's template as a function of its scope (citizen, vars, run_id), within ESR's
    limits. A lone {{ expression }} keeps its type: a number stays a number in JSON."""
    inner = source.strip()
    if inner.startswith("{{") and inner.endswith("}}") and inner.count("{{") == 1:
        expression = TEMPLATES.compile_expression(inner[2:-2].strip())

        def render(scope):
            return check_output(expression(**scope))
    else:
        template = TEMPLATES.from_string(source)

        def render(scope):
            return template.render(**scope)
    return _budgeted(render) if _can_run_long(TEMPLATES.parse(source)) else render


def check_output(value):
    """A value a step sends (an expression's, or an encoded body), if within MAX_OUTPUT."""
    if not isinstance(value, (int, float)) and _text_len(value) > MAX_OUTPUT:
        raise TemplateLimit(OUTPUT_OVER)
    return value


def failure_reason(error: BaseException) -> str:
    """What a step whose templates failed is counted under in the errors table."""
    if isinstance(error, TemplateLimit):
        return str(error)
    text = " ".join(str(error).split())
    return f"template error: {type(error).__name__}: {text}"[:REASON_CHARS]


def _can_run_long(tree: nodes.Template) -> bool:
    """Loops, macros and calls can take any time; looking values up cannot."""
    return next(tree.find_all((nodes.For, nodes.Macro, nodes.CallBlock, nodes.Call,
                               nodes.Filter, nodes.FilterBlock)), None) is not None


def _budgeted(render: Callable[[dict], object]) -> Callable[[dict], object]:
    """`render` under the CPU budget: the profiling timer interrupts it when it is spent."""
    if signal.getsignal(signal.SIGPROF) is not _on_cpu_timer:
        signal.signal(signal.SIGPROF, _on_cpu_timer)

    def budgeted(scope):
        signal.setitimer(signal.ITIMER_PROF, RENDER_CPU_S, _RECHECK_S)
        try:
            return _within_budget(render, scope)
        except _OverTime:
            raise TemplateLimit(TIME_OVER) from None
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)

    return budgeted


def _within_budget(render, scope):
    return render(scope)


def _on_cpu_timer(signum, frame) -> None:
    # Only a render on the interrupted stack is stopped: a signal that arrives late, in
    # another greenlet or after the render returned, finds none and is ignored.
    while frame is not None:
        if frame.f_code is _within_budget.__code__:
            raise _OverTime
        frame = frame.f_back


# ---- validate: what a run would refuse, seen before it ----------------------------------------

_MUTATORS = frozenset(name for example in ({}, [], set()) for name in dir(example)
                      if modifies_known_mutable(example, name))
_INCLUDES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_UNKNOWN = object()
_OTHER_BINOPS = {"-": operator.sub, "/": operator.truediv, "//": operator.floordiv}
SYNTAX_HINT = "templates look like {{ citizen.age }}"
LIMITS_HINT = (f"a template may build values up to {MAX_VALUE >> 20} MiB, numbers up to "
               f"{MAX_NUMBER_BITS:,} bits and ranges up to {MAX_RANGE:,} items")


def template_problems(source: str) -> list[tuple[str, str]]:
    """What validate says about a template, as (message, hint): syntax errors, unknown
    filters, and the constant work, in-place changes and includes a run would refuse."""
    try:
        tree = TEMPLATES.parse(source)
    except TemplateSyntaxError as error:
        return [(f"template error: {error.message}", SYNTAX_HINT)]
    except ValueError:  # Python reads no integer of more than 4300 digits
        return [("template error: a number too long to read", SYNTAX_HINT)]
    problems = _ConstantWork(multiline="\n" in source.strip())
    problems.visit(tree, 1)
    try:
        TEMPLATES.compile(tree)  # unknown filters and tests
    except TemplateSyntaxError as error:
        problems.found.append((f"template error: {error.message}", SYNTAX_HINT))
    return problems.found


class _ConstantWork:
    """One pass over a template's tree, computing what is constant bottom-up (each node
    once) with the run's own bounded operations."""

    def __init__(self, multiline: bool):
        self.multiline = multiline
        self.found: list[tuple[str, str]] = []

    def problem(self, node: nodes.Node, message: str, hint: str = LIMITS_HINT) -> None:
        where = f" (template line {node.lineno})" if self.multiline else ""
        self.found.append((message + where, hint))

    def visit(self, node: nodes.Node, loops: int):
        if isinstance(node, nodes.For):
            return self._loop(node, loops)
        values = [self.visit(child, loops) for child in node.iter_child_nodes()]
        if isinstance(node, _INCLUDES):
            self.problem(node, "templates cannot include, import or extend other templates",
                         "write the text in the step itself")
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) \
                and node.node.attr in _MUTATORS:
            self.problem(node, f"the template calls .{node.node.attr}(), which would change a "
                               "value in place; templates only read citizen and vars",
                         "build a new value instead, e.g. with a dict or list literal")
        try:
            return self._constant(node, values)
        except TemplateLimit as limit:
            self.problem(node, f"the template would build {limit.detail}")
        except Exception:  # 1/0, 'a' * 'b': left for the run to report, if ever reached
            pass
        return _UNKNOWN

    def _loop(self, node: nodes.For, loops: int):
        iterable = self.visit(node.iter, loops)
        runs = loops
        if iterable is not _UNKNOWN and hasattr(iterable, "__len__"):
            runs = loops * len(iterable)
            if runs > MAX_CONSTANT_LOOPS >= loops:
                self.problem(node, f"the template's nested loops run {runs:,} times, over the "
                                   f"limit of {MAX_CONSTANT_LOOPS:,}",
                             "loop less: the template is rendered again for every request")
        for child in (*node.body, *node.else_, *([node.test] if node.test else [])):
            self.visit(child, runs)
        return _UNKNOWN

    @staticmethod
    def _constant(node: nodes.Node, values: list):
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, (nodes.Call, nodes.Filter)) and (
                node.kwargs or node.dyn_args or node.dyn_kwargs):
            return _UNKNOWN
        if isinstance(node, nodes.Call):  # range(…) only; its callee is no constant
            values = values[1:]
            if not (isinstance(node.node, nodes.Name) and node.node.name == "range"):
                return _UNKNOWN
        if any(value is _UNKNOWN for value in values):
            return _UNKNOWN
        if isinstance(node, nodes.Call):
            return bounded_range(*values)
        if isinstance(node, nodes.List):
            return sized(values)
        if isinstance(node, nodes.Tuple) and node.ctx == "load":
            return sized(tuple(values))
        if isinstance(node, nodes.Neg):
            return -values[0]
        if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
            return bounded_binop(node.operator, *values)
        if isinstance(node, nodes.BinExpr) and node.operator in _OTHER_BINOPS:
            return _OTHER_BINOPS[node.operator](*values)
        if isinstance(node, nodes.Concat):
            return join_texts(values)
        if isinstance(node, nodes.Filter) and node.name in _FILTER_CHECKS and node.node:
            _FILTER_CHECKS[node.name](*values)  # the check only: filters run at run time
        return _UNKNOWN

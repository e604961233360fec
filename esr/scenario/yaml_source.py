"""YAML read with every value's place in the file, so problems can name a line.

PyYAML's composer gives nodes with marks; we build plain Python values from
them ourselves and keep a table from key path to (line, column). Duplicate
keys, which PyYAML would silently overwrite, are reported here.

Every file is input from someone else, so its size is bounded before it is parsed
(MAX_FILE_BYTES), and its values while they are parsed (MAX_VALUES, counted as the
parser streams them, and again as aliases are expanded) and nested (MAX_DEPTH).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from esr.errors import Problem

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    """("citizens", 1, "template") -> "citizens[1].template"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class Document:
    """A parsed YAML file: its data and where each value and key stands."""

    file: str
    data: object
    values: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    built: int = 0  # values built so far, aliases counted each time they are expanded
    text: str = ""  # the source, as read (within the caps)

    def place(self, path: KeyPath, at_key: bool = False) -> tuple[int, int]:
        """The line and column of a value (or its key), or of its nearest known parent."""
        table = self.keys if at_key else self.values
        while path:
            if path in table:
                return table[path]
            table, path = self.values, path[:-1]
        return self.values.get((), (1, 1))

    def problem(self, path: KeyPath, message: str, hint: str = "", at_key: bool = False) -> None:
        line, column = self.place(path, at_key)
        self.problems.append(Problem(self.file, line, column, format_path(path), message, hint))


MAX_FILE_BYTES = 1024 * 1024  # 1 MiB: scenarios and templates are a few KB; more is refused
MAX_DEPTH = 50  # no scenario nests this deep; a file that does is a mistake or an attack
MAX_VALUES = 100_000  # values once aliases are expanded: stops a "billion laughs" at once


def read_yaml(path: Path | str, display: str | None = None) -> Document:
    """Parse one YAML file; unreadable files and syntax errors become problems, not exceptions."""
    name = display or str(path)
    doc = Document(name, None)
    try:
        with open(path, "rb") as file:  # never more than the cap, whatever the file claims
            data = file.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                _too_large(doc, os.fstat(file.fileno()).st_size)
                return doc
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        doc.problems.append(Problem(name, 0, 0, "", f"cannot read the file: {reason}"))
        return doc
    return parse_yaml(text, name)


def _too_large(doc: Document, size: int) -> None:
    """size: as the file system tells (0 for a pipe or a device: then it is not known)."""
    what = f"{size:,} bytes" if size > MAX_FILE_BYTES else "larger than that"
    doc.problems.append(Problem(doc.file, 0, 0, "", f"ESR reads files of at most "
                                f"{MAX_FILE_BYTES:,} bytes (1 MiB); this one is {what}",
                                "a scenario or template this large is a mistake"))


def parse_yaml(text: str, name: str) -> Document:
    doc = Document(name, None, text=text)
    if len(text) > MAX_FILE_BYTES:  # characters: at least as many bytes
        _too_large(doc, len(text))
        return doc
    try:
        _count_values(text)
        node = yaml.compose(text, Loader=_CountingLoader)
    except _TooManyValues as error:
        _too_many_values(doc, "", error.mark.line + 1, error.mark.column + 1)
        return doc
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = " ".join(filter(None, [error.context, error.problem]))
        doc.problems.append(Problem(name, line, column, "", f"invalid YAML: {what}"))
        return doc
    except yaml.YAMLError as error:  # e.g. a byte order mark in the wrong place
        doc.problems.append(Problem(name, 0, 0, "", f"invalid YAML: {error}"))
        return doc
    except RecursionError:  # PyYAML's composer recurses once per level of nesting
        line, column = _too_deep(text)
        doc.problems.append(Problem(name, line, column, "",
                                    f"nested more than {MAX_DEPTH} levels deep"))
        return doc
    if node is not None:
        doc.data = _build(node, (), doc)
    return doc


def _too_deep(text: str) -> tuple[int, int]:
    """Where nesting first goes past MAX_DEPTH, found with the (flat) token scanner."""
    depth = 0
    opening = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken,
               yaml.BlockSequenceStartToken, yaml.BlockMappingStartToken)
    closing = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            depth += isinstance(token, opening) - isinstance(token, closing)
            if depth > MAX_DEPTH:
                return token.start_mark.line + 1, token.start_mark.column + 1
    except yaml.YAMLError:
        pass
    return 0, 0


class _TooManyValues(Exception):
    def __init__(self, mark: yaml.Mark):
        super().__init__()
        self.mark = mark


class _CountingLoader(yaml.SafeLoader):
    """SafeLoader's composer, counting values as the parser streams them: a file with more
    than MAX_VALUES is given up at the first one too many, before the rest is read. (Keys
    and aliases are not counted here, as in _build; _build counts each alias expanded.)"""

    def __init__(self, stream):
        super().__init__(stream)
        self.values = 0

    def compose_node(self, parent, index):
        is_key = isinstance(parent, yaml.MappingNode) and index is None
        if not is_key and not self.check_event(yaml.AliasEvent):
            self.values += 1
            if self.values > MAX_VALUES:
                raise _TooManyValues(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _count_values(text: str) -> None:
    """Give up on a file with too many values before composing it, counting its values as
    libyaml's parser (C, some 30 times faster) streams them, as _CountingLoader counts."""
    if not yaml.__with_libyaml__:
        return  # _CountingLoader alone, as it composes
    values = 0
    keys: list[bool | None] = []  # per open collection: a mapping's next node is a key (True)
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                keys.pop()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue  # stream and document boundaries
            is_key = bool(keys) and keys[-1] is True
            if keys and keys[-1] is not None:
                keys[-1] = not keys[-1]  # a mapping's nodes alternate: key, value
            if not is_key and not isinstance(event, yaml.AliasEvent):
                values += 1
                if values > MAX_VALUES:
                    raise _TooManyValues(event.start_mark)
            if isinstance(event, yaml.CollectionStartEvent):
                keys.append(True if isinstance(event, yaml.MappingStartEvent) else None)
    except yaml.YAMLError:
        return  # reported by the composer, in PyYAML's words


def _too_many_values(doc: Document, path: str, line: int, column: int) -> None:
    doc.problems.append(Problem(doc.file, line, column, path,
                                f"more than {MAX_VALUES:,} values once its aliases are expanded",
                                "a scenario this large is a mistake, or an alias bomb"))


_scalars = yaml.SafeLoader("")  # only its constructor is used, for YAML 1.1 scalar rules


def _build(node: yaml.Node, path: KeyPath, doc: Document, active: frozenset = frozenset()
           ) -> object:
    doc.built += 1
    if doc.built > MAX_VALUES:
        if doc.built == MAX_VALUES + 1:
            _too_many_values(doc, format_path(path), *doc.place(path))
        return None
    doc.values[path] = _mark(node)
    if id(node) in active:
        doc.problem(path, "this alias refers to itself", "YAML anchors cannot contain themselves")
        return None
    if len(path) > MAX_DEPTH:
        doc.problem(path, f"nested more than {MAX_DEPTH} levels deep")
        return None
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(node, path, doc, active | {id(node)})
    if isinstance(node, yaml.SequenceNode):
        inner = active | {id(node)}
        return [_build(item, (*path, i), doc, inner) for i, item in enumerate(node.value)]
    value = _scalar(node, path, doc)
    return None if value is _UNREADABLE else value


_UNREADABLE = object()


def _scalar(node: yaml.Node, path: KeyPath, doc: Document) -> object:
    """A scalar by YAML's rules; impossible ones (2026-13-01, !!int abc) become problems."""
    try:
        return _scalars.construct_object(node, deep=True)
    except yaml.YAMLError as error:
        doc.problem(path, f"cannot read this value: {getattr(error, 'problem', error)}")
    except (ValueError, KeyError, TypeError, OverflowError, AttributeError) as error:
        what = f"'{node.value[:40]}'" if isinstance(node.value, str) else "this value"
        doc.problem(path, f"cannot read {what} as {node.tag.rsplit(':', 1)[-1]}: {error}"[:200],
                    "quote it to keep it as text")
    return _UNREADABLE


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build_mapping(node: yaml.MappingNode, path: KeyPath, doc: Document,
                   active: frozenset) -> dict:
    result: dict = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            doc.problem(path, "YAML merge keys (<<) are not supported in ESR files",
                        "write the keys out")
            continue
        if not isinstance(key_node, yaml.ScalarNode):
            doc.values[path] = _mark(key_node)
            doc.problem(path, "a key must be a plain word, not a list or mapping")
            continue
        key_path = (*path, str(key_node.value))
        doc.keys[key_path] = doc.values[key_path] = _mark(key_node)
        key = _scalar(key_node, key_path, doc)
        if key is _UNREADABLE:
            continue
        key_path = (*path, str(key))
        doc.keys[key_path] = _mark(key_node)
        if str(key) in result:
            doc.problem(key_path, f"duplicate key '{key}'", "keep only one of them", at_key=True)
            continue
        result[str(key)] = _build(value_node, key_path, doc, active)
    return result

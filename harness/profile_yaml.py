"""The YAML of a profile, read defensively: a key repeated in a mapping (YAML would keep the
last silently), aliases that expand past MAX_YAML_NODES (an "alias bomb" would take hours to
validate) and bad tags fail with the file and line; `key_lines` maps each key path to its
line for the messages of later checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

MAX_YAML_NODES = 100_000  # values a profile may hold once its aliases are expanded


class ConfigError(ValueError):
    """A profile that cannot be used; the message names file, line, key and a fix."""


def compose(text: str, source: str, numbered: bool = True) -> yaml.Node | None:
    """The YAML node tree of `text`, refused when a key repeats in a mapping (YAML would keep
    the last value silently) or aliases expand past MAX_YAML_NODES (an "alias bomb" that
    would take hours to validate)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_nodes(root, source if not numbered else None, source)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, numbered) from None
    except RecursionError:
        raise ConfigError(f"{source}: not a profile: values nested too deeply") from None
    return root


def construct(root: yaml.Node, source: str, numbered: bool = True) -> Any:
    """Python values of a checked node tree; a bad tag (`!!int x`) names its line."""
    try:
        return yaml.SafeLoader("").construct_document(root)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, numbered) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None


def _yaml_error(exc: yaml.YAMLError, source: str, numbered: bool) -> ConfigError:
    """`file:line: not valid YAML: problem` (PyYAML's own text names no file)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None and numbered else source
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return ConfigError(f"{where}: not valid YAML: {context + ', ' if context else ''}{problem}")


def _check_nodes(root: yaml.Node, fixed: str | None, source: str) -> None:
    """`fixed`: the place to name in errors (a `--set`), else `source:line` of the node."""

    def at(node: yaml.Node) -> str:
        return fixed or f"{source}:{_line(node)}"

    sizes: dict[int, int] = {}  # expanded size of each node already seen (aliases share nodes)
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise ConfigError(f"{at(node)}: an alias refers to the node containing it")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            _no_repeated_keys(node, at)
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        if total > MAX_YAML_NODES:
            raise ConfigError(
                f"{at(node)}: aliases expand this value to more than "
                f"{MAX_YAML_NODES:,} items; a profile needs far fewer (an alias bomb?)"
            )
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)


def _no_repeated_keys(node: yaml.MappingNode, at: Callable[[yaml.Node], str]) -> None:
    first: dict[str, yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue  # keys brought in by `<<: *base` may be overridden; that is what it is for
        if key.value in first:
            earlier = first[key.value].start_mark
            where = f"line {earlier.line + 1}" + (
                f", column {earlier.column + 1}" if earlier.line == key.start_mark.line else ""
            )
            raise ConfigError(
                f"{at(key)}: key {key.value!r} repeats the one on {where} "
                "(YAML would keep only the last); remove one"
            )
        first[key.value] = key


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"the value {node.value!r}" if isinstance(node, yaml.ScalarNode) else "a mapping"


def key_lines(root: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map each key path of a YAML document to its 1-based line."""
    index: dict[tuple[Any, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                index[path + (key_node.value,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key_node.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                index[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    walk(root, ())
    return index

"""YAML for configs, strict: duplicate keys, alias bombs, huge or undecodable files are refused.

PyYAML's safe loader keeps the last of two equal keys and expands aliases without limit
(a few hundred bytes can stand for billions of values). Here the document is composed
first, its size with every alias expanded is counted (each shared node counted once per
use, memoised), and only a document within MAX_NODES is turned into Python values.
Every failure is one YAMLInputError line naming the file and, where known, the line.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, SequenceNode

MAX_BYTES = 1 << 20  # a sweep config is a page of text
MAX_NODES = 100_000  # values after alias expansion


class YAMLInputError(ValueError):
    """The file is not a config-sized, well-formed YAML document."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults` may be overridden by the keys written beside it
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a mapping key must be a plain value", key_node.start_mark
                    ) from None
                if duplicate:
                    raise YAMLInputError(
                        f"line {key_node.start_mark.line + 1}: duplicate key {str(key)[:60]!r} "
                        f"(first given on line {seen[key]}); give each key once"
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root) -> int:
    """Number of nodes with every alias expanded; shared nodes are counted per use, memoised."""
    memo: dict[int, int] = {}

    def size(node) -> int:
        if id(node) in memo:
            return memo[id(node)]
        memo[id(node)] = 1  # a recursive alias counts once instead of looping
        if isinstance(node, SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        memo[id(node)] = total
        return total

    return size(root)


def load_yaml(path: Path):
    """The document in `path` as Python values, or YAMLInputError with a one-line reason."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YAMLInputError(f"file is {size} bytes, more than the {MAX_BYTES} a config may have")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLInputError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as UTF-8"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise YAMLInputError(f"line {line}: NUL byte in the file; a config is plain text")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = _expanded_size(node)
        if n > MAX_NODES:
            raise YAMLInputError(
                f"the document expands to {n} values (aliases counted per use), more than {MAX_NODES}; "
                "is an alias repeated many times?"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise YAMLInputError(f"not valid YAML: {' '.join(str(exc).split())[:300]}") from None
    except RecursionError:
        raise YAMLInputError("the document is nested too deeply") from None
    finally:
        loader.dispose()

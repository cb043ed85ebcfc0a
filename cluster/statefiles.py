"""Cluster state and manifests from files: YAML or JSON files and directories (read
recursively), multi-document YAML, `kind: List` and typed `<Kind>List` objects, or `-`
for standard input — what `kubectl get ... -o yaml` prints (SPEC 3, "Cluster state").

Every document keeps its file, index and line so that errors and SARIF/GitHub output can
point at it. Bad input raises `InputError` with one line naming the file and document;
it never escapes as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies import kinds, limits
from policies.models import MODELS, KubeObject
from policies.view import InMemoryView

try:  # the C parser is several times faster on large dumps
    _Base: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Base = yaml.SafeLoader


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """The safe loader, stricter where silence would mislead: a key given twice in one
    mapping is an error (YAML forbids it; PyYAML keeps the last), and an integer too
    long for Python to convert becomes `limits.OversizedInt` for the limit check to
    name its field, instead of a ValueError from deep inside the constructor."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base constructor reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {json.dumps(key, default=str)}", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            return limits.OversizedInt(node.value)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

SUFFIXES = (".yaml", ".yml", ".json")


class InputError(Exception):
    """Input that cannot be used; str() is one line naming the file and document."""


@dataclass(frozen=True)
class Document:
    """One object read from a file, with where it came from."""

    path: str
    index: int
    line: int
    obj: dict[str, Any]
    item: int | None = None

    @property
    def source(self) -> str:
        base = f"{self.path}#{self.index}"
        return base if self.item is None else f"{base}.items[{self.item}]"

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") or {}
        return str(meta.get("name") or meta.get("generateName") or "")

    @property
    def namespace(self) -> str:
        meta = self.obj.get("metadata") or {}
        namespace = meta.get("namespace")
        if namespace:
            return str(namespace)
        return "default" if kinds.is_namespaced(self.kind) else ""


def _directory_files(root: Path) -> list[Path]:
    """Files with a manifest suffix under `root`, recursively, sorted. Symlinked
    subdirectories are followed (a loop is an error); a directory that cannot be listed
    and a broken symlink are errors, never silently fewer files."""
    found: list[Path] = []
    visited: set[str] = set()

    def walk(directory: Path) -> None:
        real = os.path.realpath(directory)
        if real in visited:
            raise InputError(f"{directory}: symlink loop (already read as {real})")
        visited.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            raise InputError(f"{directory}: cannot read directory: {error.strerror or error}") from None
        for entry in entries:
            path = directory / entry.name
            try:
                is_dir = entry.is_dir()
                is_file = entry.is_file()
            except OSError as error:
                raise InputError(f"{path}: cannot read: {error.strerror or error}") from None
            if is_dir:
                walk(path)
            elif is_file:
                if path.suffix in SUFFIXES:
                    found.append(path)
            elif entry.is_symlink() and path.suffix in SUFFIXES:
                raise InputError(f"{path}: broken symlink")

    walk(root)
    visited.clear()
    return found


def expand_paths(paths: Iterable[str]) -> Iterator[str]:
    """Files in the given order; directories recursively, sorted, by suffix."""
    for raw in paths:
        if raw == "-":
            yield raw
            continue
        path = Path(raw)
        if path.is_dir():
            yield from (str(p) for p in _directory_files(path))
        elif path.exists():
            yield str(path)
        elif path.is_symlink():
            raise InputError(f"{raw}: broken symlink")
        else:
            raise InputError(f"{raw}: no such file or directory")


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read: {error.strerror or error}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: ` line N: <problem>` (PyYAML's str() spans several lines)."""
    mark = getattr(error, "problem_mark", None)
    where = f" line {mark.line + 1}:" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where} invalid YAML: {problem}"


def _yaml_documents(path: str, text: str) -> Iterator[tuple[int, int, Any, list[int]]]:
    """(index, line, data, item lines) per YAML document."""
    loader = _Loader(text)
    index = 0
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.YAMLError as error:
                raise InputError(f"{path}#{index}:{_yaml_problem(error)}") from None
            if node is None:
                index += 1
                continue
            item_lines: list[int] = []
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == "items" and isinstance(value, yaml.SequenceNode):
                        item_lines = [child.start_mark.line + 1 for child in value.value]
            try:
                data = loader.construct_document(node)
            except yaml.YAMLError as error:
                raise InputError(f"{path}#{index}:{_yaml_problem(error)}") from None
            except RecursionError:
                raise InputError(f"{path}#{index}: nested deeper than {limits.MAX_DEPTH} levels") from None
            yield index, node.start_mark.line + 1, data, item_lines
            index += 1
    finally:
        loader.dispose()


def _json_documents(path: str, text: str) -> Iterator[tuple[int, int, Any, list[int]]]:
    if not text.strip():
        return  # an empty .json holds no documents, as an empty .yaml does
    try:
        data = json.loads(text, parse_int=limits.parse_int)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}#0: line {error.lineno}: invalid JSON: {error.msg}") from None
    except RecursionError:
        raise InputError(f"{path}#0: nested deeper than {limits.MAX_DEPTH} levels") from None
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield index, 1, item, []
    else:
        yield 0, 1, data, []


def _parse(path: str, text: str) -> Iterator[tuple[int, int, Any, list[int]]]:
    """Every document of a file's text, each within `policies.limits`."""
    parse = _json_documents if path.endswith(".json") else _yaml_documents
    if path == "-" and text.lstrip().startswith(("{", "[")):
        parse = _json_documents
    for index, line, data, item_lines in parse(path, text):
        problem = limits.find_problem(data)
        if problem is not None:
            raise InputError(f"{path}#{index}: {problem}")
        yield index, line, data, item_lines


def read_data(path: str) -> Any:
    """The one document of a file that is not a manifest (a policy, an AdmissionReview):
    JSON or YAML, within the limits, errors as `InputError`. None when it is empty."""
    text = _read(path)
    documents = list(_parse(path, text))
    if len(documents) > 1:
        raise InputError(f"{path}#1: expected one document, found {len(documents)}")
    return documents[0][2] if documents else None


def _check_object(path: str, index: int, item: int | None, data: Any) -> dict[str, Any]:
    where = f"{path}#{index}" + ("" if item is None else f".items[{item}]")
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a Kubernetes object (a mapping), got {type(data).__name__}")
    kind = data.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InputError(f"{where}: object has no kind")
    meta = data.get("metadata")
    if kind.endswith("List") and "items" in data:
        return data
    if meta is not None and not isinstance(meta, dict):
        raise InputError(f"{where}: {kind}: metadata must be a mapping, got {_type(meta)}")
    meta = meta or {}
    for key in ("name", "generateName", "namespace"):
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: {kind}: metadata.{key} must be a string, got {_type(value)}")
    if not meta.get("name") and meta.get("generateName") is None:
        raise InputError(f"{where}: {kind} has no metadata.name")
    return data


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, dict):
        return "a mapping"
    return "a list" if isinstance(value, list) else type(value).__name__


def read_documents(paths: Iterable[str]) -> list[Document]:
    """Every object in the given files and directories, lists expanded, in order.
    A `<Kind>List` with no items is returned as a document of its own so the view can
    mark the kind as given."""
    documents: list[Document] = []
    for path in expand_paths(paths):
        text = _read(path)
        for index, line, data, item_lines in _parse(path, text):
            if data is None:
                continue
            obj = _check_object(path, index, None, data)
            if obj["kind"].endswith("List") and "items" in obj:
                items = obj.get("items") or []
                if not isinstance(items, list):
                    raise InputError(f"{path}#{index}: items of a {obj['kind']} must be a list")
                if not items:
                    documents.append(Document(path, index, line, obj))
                for position, item in enumerate(items):
                    item_obj = _check_object(path, index, position, item)
                    item_line = item_lines[position] if position < len(item_lines) else line
                    documents.append(Document(path, index, item_line, item_obj, position))
            else:
                documents.append(Document(path, index, line, obj))
    return documents


def parse_document(document: Document) -> KubeObject | None:
    """The model of a document of a kind the rules read, None for other kinds."""
    model = MODELS.get(document.kind)
    if model is None:
        return None
    obj = dict(document.obj)
    if kinds.is_namespaced(document.kind) and not (obj.get("metadata") or {}).get("namespace"):
        obj["metadata"] = {**obj.get("metadata", {}), "namespace": "default"}
    try:
        return model.model_validate(obj)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise InputError(
            f'{document.source}: {document.kind} "{document.name}": {location}: {first["msg"]}'
        ) from None


def list_kind(document: Document) -> str | None:
    """For an empty `<Kind>List` document, the kind it declares present."""
    kind = document.kind
    if kind.endswith("List") and "items" in document.obj and kind[: -len("List")] in MODELS:
        return kind[: -len("List")]
    return None


def build_view(documents: Iterable[Document], view: InMemoryView | None = None) -> InMemoryView:
    """An in-memory view of the documents; unknown kinds are ignored (SPEC 3)."""
    view = view or InMemoryView()
    for document in documents:
        given = list_kind(document)
        if given is not None:
            view.mark_given(given)
            continue
        obj = parse_document(document)
        if obj is not None:
            view.put(obj)
    return view


def load_state(paths: Iterable[str]) -> InMemoryView:
    """The view of the state files and directories given with `--state`."""
    return build_view(read_documents(paths))

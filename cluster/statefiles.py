"""Cluster state and manifests from files: YAML or JSON files and directories (read
recursively), multi-document YAML, `kind: List` and typed `<Kind>List` objects, or `-`
for standard input — what `kubectl get ... -o yaml` prints (SPEC 3, "Cluster state").

Every document keeps its file, index and line so that errors and SARIF/GitHub output can
point at it. Bad input raises `InputError` with one line naming the file and document;
it never escapes as a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies import kinds
from policies.models import MODELS, KubeObject
from policies.view import InMemoryView

try:  # the C loader is several times faster on large dumps
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

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


def expand_paths(paths: Iterable[str]) -> Iterator[str]:
    """Files in the given order; directories recursively, sorted, by suffix."""
    for raw in paths:
        if raw == "-":
            yield raw
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            yield from (str(p) for p in files)
        elif path.exists():
            yield str(path)
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
                mark = getattr(error, "problem_mark", None)
                where = f" line {mark.line + 1}" if mark is not None else ""
                problem = getattr(error, "problem", None) or str(error).splitlines()[0]
                raise InputError(f"{path}#{index}:{where}: invalid YAML: {problem}") from None
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
                raise InputError(f"{path}#{index}: invalid YAML: {error}") from None
            yield index, node.start_mark.line + 1, data, item_lines
            index += 1
    finally:
        loader.dispose()


def _json_documents(path: str, text: str) -> Iterator[tuple[int, int, Any, list[int]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}#0: line {error.lineno}: invalid JSON: {error.msg}") from None
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield index, 1, item, []
    else:
        yield 0, 1, data, []


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
    if not isinstance(meta, dict) or not (
        (isinstance(meta.get("name"), str) and meta["name"]) or isinstance(meta.get("generateName"), str)
    ):
        raise InputError(f"{where}: {kind} has no metadata.name")
    return data


def read_documents(paths: Iterable[str]) -> list[Document]:
    """Every object in the given files and directories, lists expanded, in order.
    A `<Kind>List` with no items is returned as a document of its own so the view can
    mark the kind as given."""
    documents: list[Document] = []
    for path in expand_paths(paths):
        text = _read(path)
        parse = _json_documents if path.endswith(".json") else _yaml_documents
        if path == "-" and text.lstrip().startswith(("{", "[")):
            parse = _json_documents
        for index, line, data, item_lines in parse(path, text):
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

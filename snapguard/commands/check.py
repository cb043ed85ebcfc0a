"""`snapguard check`: decide manifests offline, as `kubectl apply -f` of the same files
would be decided, with CI-friendly output and exit codes (SPEC section 3).

Objects are applied in order: every object that is not denied (governed or not) joins
the view for the ones after it; an object whose kind, namespace and name the state
already holds is decided as an UPDATE of it.
"""

from __future__ import annotations

import argparse
from typing import Any

import jsonpatch

from cluster.statefiles import (
    Document,
    InputError,
    build_view,
    list_kind,
    parse_document,
    read_documents,
)
from policies.catalogue import Operation
from policies.engine import Engine, EngineRequest
from policies.models import MODELS

from ..errors import UsageError, report
from ..output import FORMATS, Result, render, summarise
from ..policyfile import add_policy_arguments, policy_from_args

EXIT_OK, EXIT_DENIED, EXIT_INPUT = 0, 1, 2


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="decide manifests offline against a state dump (CI)",
        description="Decide each object in PATH as the admission webhook would: as a CREATE, "
        "or an UPDATE when the state already has it. Exit 0 when nothing is denied, 1 when "
        "something is (with --strict also on a warning or unknown), 2 on bad input.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories, or - for stdin")
    parser.add_argument("--state", action="append", default=[], metavar="PATH", help="cluster state (repeatable)")
    add_policy_arguments(parser, "policy file setting rule actions")
    parser.add_argument("--output", "-o", choices=FORMATS, default="text")
    parser.add_argument("--mutate", action="store_true", help="apply the defaults first and print their JSON Patch (text: a PATCH line per operation)")
    parser.add_argument("--strict", action="store_true", help="also fail on warnings and unknown outcomes")
    parser.set_defaults(func=run)


def _key(kind: str, namespace: str, name: str) -> tuple[str, str, str]:
    return (kind, namespace, name)


def check_documents(
    engine: Engine,
    state: list[Document],
    inputs: list[Document],
    *,
    mutate: bool,
) -> tuple[list[Result], int]:
    view = build_view(state)
    raw_objects = {_key(d.kind, d.namespace, d.name): d.obj for d in state if list_kind(d) is None}
    results: list[Result] = []
    skipped = 0
    for document in inputs:
        if list_kind(document) is not None:
            continue
        key = _key(document.kind, document.namespace, document.name)
        old = raw_objects.get(key)
        operation = Operation.UPDATE if old is not None else Operation.CREATE
        obj = document.obj
        patch: list[dict[str, Any]] = []
        request = EngineRequest(operation, document.kind, document.namespace, document.name, obj, old)
        if mutate:
            patch = engine.defaults(request)
            if patch:
                obj = jsonpatch.apply_patch(obj, patch)
                request = EngineRequest(operation, document.kind, document.namespace, document.name, obj, old)
        decision = engine.decide(request, view)
        if decision.governed and not decision.exempt:
            results.append(
                Result(
                    document.source,
                    document.path,
                    document.line,
                    document.kind,
                    document.namespace,
                    document.name,
                    operation.value,
                    decision,
                    tuple(patch),
                )
            )
        else:
            skipped += 1
        if decision.allowed:
            applied = Document(document.path, document.index, document.line, obj, document.item)
            model = parse_document(applied) if document.kind in MODELS else None
            if model is not None:
                view.put(model)
            raw_objects[key] = obj
    return results, skipped


def run(args: argparse.Namespace) -> int:
    try:
        engine = Engine(policy_from_args(args))
        state = read_documents(args.state)
        inputs = read_documents(args.paths)
        results, skipped = check_documents(engine, state, inputs, mutate=args.mutate)
    except (InputError, UsageError) as error:
        report(error)
        return EXIT_INPUT
    summary = summarise(results, skipped, engine.platform)
    print(render(args.output, results, summary))
    if summary.denied:
        return EXIT_DENIED
    if args.strict and any(r.decision.warnings for r in results):
        return EXIT_DENIED
    return EXIT_OK

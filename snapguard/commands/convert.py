"""`snapguard convert`: rewrite VirtualMachineRestore manifests into what replaces them on
platform v1.1+ (SPEC "Platform versions"; docs/convert.md).

* `restoreMode: Forced`, or `Safe` over an existing VM without `nameReplacements`,
  becomes a VirtualMachineOperation `type: Restore` (mode `Strict`): in place, no
  renaming.
* `Safe` with `nameReplacements`, or without the VM, becomes a
  VirtualMachineSnapshotOperation `type: CreateVirtualMachine` (mode `Strict`) with the
  same entries under the singular `nameReplacement`.

Whether the VM exists, and which VM a snapshot is of (a VirtualMachineRestore does not
name it, a VirtualMachineOperation must), come from the `--state` files and from the
objects of the input that come before the restore, as `kubectl apply -f` of the same
files would have them. Every other document is passed through unchanged, so a whole
manifest directory can be piped through `convert` into `kubectl apply -f -`. Whatever
has no equivalent in the new API is said in a `#` comment above the converted document;
what changes the outcome is also said on stderr. Bad input exits 2 with one line naming
the file and document.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from cluster.statefiles import (
    Document,
    InputError,
    build_view,
    list_kind,
    parse_document,
    read_documents,
)
from policies import kinds
from policies.models import (
    MODELS,
    NameReplacement,
    Secret,
    VirtualMachine,
    VirtualMachineRestore,
    VirtualMachineSnapshot,
)
from policies.restore import (
    SnapshotContent,
    apply_name_replacements,
    decode_snapshot_secret,
    metadata_name,
)
from policies.view import InMemoryView

EXIT_OK, EXIT_INPUT = 0, 2

# The CEL rules of `spec.createVirtualMachine` (crds/v1.10): each `to` 1..59 characters.
MAX_TO_LENGTH = 59
# What a clone (and so a vmsop) creates, the only kinds its `from.kind` may name: it
# makes no VirtualMachineIPAddress or VirtualMachineMACAddress, the copy gets new ones.
CLONED_KINDS = (
    kinds.VIRTUAL_MACHINE,
    kinds.VIRTUAL_DISK,
    kinds.VIRTUAL_MACHINE_BLOCK_DEVICE_ATTACHMENT,
    kinds.SECRET,
)
RESTORE_MODES = ("Safe", "Forced")
MODE = "Strict"
# Metadata of the restore that its replacement keeps; uid, resourceVersion, status and
# the like belong to the old object. kubectl's last-applied copy is the restore's own.
KEPT_METADATA = ("name", "generateName", "namespace", "labels", "annotations")
DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="rewrite VirtualMachineRestore manifests into VirtualMachineOperation / "
        "VirtualMachineSnapshotOperation",
        description="Print the replacement of each VirtualMachineRestore in PATH for platform "
        "v1.1+: a VirtualMachineOperation Restore (restoreMode Forced, or Safe over an existing "
        "VM without nameReplacements) or a VirtualMachineSnapshotOperation CreateVirtualMachine "
        "(Safe with nameReplacements or without the VM). Other documents are printed unchanged, "
        "all in input order. --state tells which VM a snapshot is of and whether it exists. "
        "Exit 0 on success, 2 on bad input.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="manifest files or directories, or - for stdin")
    parser.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="PATH",
        help="cluster state with the VirtualMachineSnapshots and VirtualMachines (repeatable)",
    )
    parser.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml")
    parser.set_defaults(func=run)


@dataclass
class Converted:
    """One output document: the object; for a converted restore, where it came from and
    the comments above it, and which of those change what the platform does (repeated
    on stderr, where a pipe into kubectl does not lose them)."""

    obj: dict[str, Any]
    origin: str = ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def warn(self, text: str) -> None:
        self.notes.append(text)
        self.warnings.append(text)


def _metadata(raw: dict[str, Any]) -> dict[str, Any]:
    meta = raw.get("metadata") or {}
    kept: dict[str, Any] = {key: meta[key] for key in KEPT_METADATA if meta.get(key) not in (None, "", {})}
    annotations = {k: v for k, v in (kept.get("annotations") or {}).items() if k not in DROPPED_ANNOTATIONS}
    if annotations:
        kept["annotations"] = annotations
    else:
        kept.pop("annotations", None)
    return kept


def _entry(replacement: NameReplacement) -> dict[str, Any]:
    source: dict[str, Any] = {}
    if replacement.from_.kind:
        source["kind"] = replacement.from_.kind
    source["name"] = replacement.from_.name or ""
    return {"from": source, "to": replacement.to or ""}


def _show(replacement: NameReplacement) -> str:
    source = replacement.from_
    kind = f"{source.kind} " if source.kind else ""
    return f'{kind}"{source.name or ""}" -> "{replacement.to or ""}"'


class _Context:
    """What convert knows about the cluster: the state, then the input's objects as they
    go by. A VM's existence is known only when the view holds VirtualMachines at all (an
    empty VirtualMachineList says there are none)."""

    def __init__(self, view: InMemoryView) -> None:
        self.view = view

    def snapshot(self, namespace: str, name: str) -> VirtualMachineSnapshot | None:
        return self.view.get(VirtualMachineSnapshot, namespace, name)

    def vm_of(self, snapshot: VirtualMachineSnapshot | None) -> str:
        """The VM a snapshot is of: its spec.virtualMachineName, else the stored VM's."""
        if snapshot is None:
            return ""
        if snapshot.spec.virtual_machine_name:
            return snapshot.spec.virtual_machine_name
        secret_name = snapshot.status.virtual_machine_snapshot_secret_name
        secret = self.view.get(Secret, snapshot.namespace, secret_name) if secret_name else None
        if secret is None:
            return ""
        content = decode_snapshot_secret(secret.name, secret.data)
        return metadata_name(content.vm) if isinstance(content, SnapshotContent) else ""

    def vm_exists(self, namespace: str, name: str) -> bool | None:
        if not self.view.has_kind(kinds.VIRTUAL_MACHINE):
            return None
        return self.view.get(VirtualMachine, namespace, name) is not None


def _restore_of(document: Document) -> VirtualMachineRestore:
    model = parse_document(document)
    assert isinstance(model, VirtualMachineRestore)
    where = f'{document.source}: VirtualMachineRestore "{document.name}"'
    if not model.spec.virtual_machine_snapshot_name:
        raise InputError(f"{where}: spec.virtualMachineSnapshotName is empty")
    mode = model.spec.restore_mode or "Safe"
    if mode not in RESTORE_MODES:
        raise InputError(f'{where}: spec.restoreMode "{mode}" is neither Safe nor Forced')
    return model


def _needs_vm(document: Document, snapshot_name: str, context: _Context, why: str) -> str:
    """The snapshot's VM, or an input error saying how to tell it."""
    namespace = document.namespace
    snapshot = context.snapshot(namespace, snapshot_name)
    vm = context.vm_of(snapshot)
    if vm:
        return vm
    where = f'{document.source}: VirtualMachineRestore "{document.name}"'
    if snapshot is not None:
        missing = (
            f'VirtualMachineSnapshot "{namespace}/{snapshot_name}" has no spec.virtualMachineName '
            "and its Secret is not in the state: add the Secret to --state"
        )
    elif context.view.has_kind(kinds.VIRTUAL_MACHINE_SNAPSHOT):
        missing = f'the state has no VirtualMachineSnapshot "{namespace}/{snapshot_name}": add it to --state'
    else:
        missing = f'pass --state with the VirtualMachineSnapshot "{namespace}/{snapshot_name}"'
    raise InputError(f"{where}: {why}, which a VirtualMachineRestore does not name: {missing}")


def _operation(document: Document, restore: VirtualMachineRestore, vm: str) -> Converted:
    snapshot_name = restore.spec.virtual_machine_snapshot_name or ""
    obj = {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.VIRTUAL_MACHINE_OPERATION,
        "metadata": _metadata(document.obj),
        "spec": {
            "type": "Restore",
            "virtualMachineName": vm,
            "restore": {"mode": MODE, "virtualMachineSnapshotName": snapshot_name},
        },
    }
    return Converted(obj)


def _snapshot_operation(
    document: Document, restore: VirtualMachineRestore, replacements: Sequence[dict[str, Any]]
) -> Converted:
    obj = {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION,
        "metadata": _metadata(document.obj),
        "spec": {
            "type": "CreateVirtualMachine",
            "virtualMachineSnapshotName": restore.spec.virtual_machine_snapshot_name or "",
            "createVirtualMachine": {"mode": MODE, "nameReplacement": list(replacements)},
        },
    }
    return Converted(obj)


def _kept_replacements(
    restore: VirtualMachineRestore, notes: list[tuple[bool, str]]
) -> list[NameReplacement]:
    """The entries a vmsop can carry, in order; each dropped one is a note (True: it
    changes a name, False: it never applied anyway)."""
    kept: list[NameReplacement] = []
    seen: set[tuple[str, str]] = set()
    for index, replacement in enumerate(restore.spec.name_replacements):
        source = replacement.from_
        label = f"nameReplacements[{index}] ({_show(replacement)})"
        key = (source.kind or "", source.name or "")
        if not source.name:
            notes.append((False, f"{label} dropped: an empty from.name renames nothing"))
        elif key in seen:
            notes.append((False, f"{label} dropped: an earlier entry has the same from, so it never applied"))
        elif not replacement.to:
            notes.append((True, f"{label} dropped: an empty to is not a name"))
        elif len(replacement.to) > MAX_TO_LENGTH:
            notes.append(
                (
                    True,
                    f"{label} dropped: the new API allows a to of at most {MAX_TO_LENGTH} characters "
                    f"(this one has {len(replacement.to)}); the object keeps its stored name unless "
                    "you add a shorter entry",
                )
            )
        elif source.kind and source.kind not in CLONED_KINDS:
            reason = (
                "the new VM gets new addresses, a VirtualMachineSnapshotOperation creates no "
                f"{source.kind}"
                if source.kind in (kinds.VIRTUAL_MACHINE_IP_ADDRESS, kinds.VIRTUAL_MACHINE_MAC_ADDRESS)
                else f"{source.kind} is not a kind a VirtualMachineSnapshotOperation creates"
            )
            notes.append((True, f"{label} dropped: {reason}"))
        else:
            kept.append(replacement)
        seen.add(key)
    return kept


def convert_restore(document: Document, context: _Context) -> Converted:
    """The replacement of one VirtualMachineRestore, with its comments."""
    restore = _restore_of(document)
    namespace = document.namespace
    snapshot_name = restore.spec.virtual_machine_snapshot_name or ""
    mode = restore.spec.restore_mode or "Safe"
    replacements = restore.spec.name_replacements
    origin = f"VirtualMachineRestore {namespace}/{document.name} ({document.source})"

    if mode == "Forced" or not replacements:
        vm = _needs_vm(document, snapshot_name, context, "a VirtualMachineOperation needs the VM's name")
        exists = context.vm_exists(namespace, vm)
        if mode == "Forced" or exists is not False:
            converted = _operation(document, restore, vm)
            converted.origin = origin
            _explain_operation(converted, mode, vm, exists, replacements)
            return converted
        # Safe, no replacements, and the state says the VM is gone: create it anew. The
        # platform needs a non-empty prefix, suffix or nameReplacement (CEL), so the VM
        # is mapped to its own name, which renames nothing.
        if len(vm) > MAX_TO_LENGTH:
            raise InputError(
                f'{document.source}: VirtualMachineRestore "{document.name}": VirtualMachine "{vm}" '
                f"does not exist and a VirtualMachineSnapshotOperation that keeps its name needs a "
                f"nameReplacement to \"{vm}\", which is over {MAX_TO_LENGTH} characters: add a "
                "nameReplacements entry with a shorter name"
            )
        identity = {"from": {"kind": kinds.VIRTUAL_MACHINE, "name": vm}, "to": vm}
        converted = _snapshot_operation(document, restore, [identity])
        converted.origin = origin
        converted.note(
            f'restoreMode Safe and VirtualMachine "{vm}" does not exist: a VirtualMachineSnapshotOperation '
            "creates it from the snapshot; the nameReplacement maps it to its own name because the "
            "platform needs at least one of namePrefix, nameSuffix or nameReplacement"
        )
        _explain_snapshot_operation(converted)
        return converted

    dropped: list[tuple[bool, str]] = []
    kept = _kept_replacements(restore, dropped)
    entries = [_entry(r) for r in kept]
    vm = context.vm_of(context.snapshot(namespace, snapshot_name))
    if not entries:
        if not vm or len(vm) > MAX_TO_LENGTH:
            lines = "; ".join(text for _, text in dropped)
            raise InputError(
                f'{document.source}: VirtualMachineRestore "{document.name}": no nameReplacements entry '
                f"has an equivalent ({lines}) and the platform needs at least one: fix the entries"
                + ("" if vm else " or pass --state with the VirtualMachineSnapshot")
            )
        entries = [{"from": {"kind": kinds.VIRTUAL_MACHINE, "name": vm}, "to": vm}]
    converted = _snapshot_operation(document, restore, entries)
    converted.origin = origin
    for changes, text in dropped:
        (converted.warn if changes else converted.note)(text)
    if not kept:
        converted.note(
            f'no entry was left: the nameReplacement maps VirtualMachine "{vm}" to its own name because '
            "the platform needs at least one of namePrefix, nameSuffix or nameReplacement"
        )
    if vm and apply_name_replacements(kept, kinds.VIRTUAL_MACHINE, vm) == vm and context.vm_exists(namespace, vm):
        converted.warn(
            f'VirtualMachine "{vm}" exists and no entry renames it: the platform will refuse this '
            "operation (the VM already exists), as it refused the restore"
        )
    _explain_snapshot_operation(converted)
    return converted


def _explain_operation(
    converted: Converted, mode: str, vm: str, exists: bool | None, replacements: Sequence[NameReplacement]
) -> None:
    if mode == "Forced":
        converted.note(
            f'restoreMode Forced: the VirtualMachineOperation restores VirtualMachine "{vm}" in place; it '
            "stops a running VM for the restore and starts it again after"
        )
        if exists is False:
            converted.warn(
                f'VirtualMachine "{vm}" does not exist in the state: the operation will fail (VirtualMachine '
                "not found), as the Forced restore would have"
            )
    elif exists:
        converted.warn(
            f'restoreMode Safe over the existing VirtualMachine "{vm}" without nameReplacements: the '
            "VirtualMachineRestore stopped at the name conflict, this VirtualMachineOperation overwrites the VM "
            "in place with the snapshot"
        )
    else:
        converted.warn(
            f'assumes VirtualMachine "{vm}" exists, which the state does not say (--state with the '
            "VirtualMachines decides it): if it does not, the replacement is a VirtualMachineSnapshotOperation "
            "CreateVirtualMachine"
        )
    if replacements:
        shown = ", ".join(_show(r) for r in replacements)
        converted.warn(
            f"nameReplacements dropped ({shown}): a VirtualMachineOperation Restore renames nothing, the objects "
            "are restored under their stored names; a VirtualMachineSnapshotOperation creates renamed copies instead"
        )
    converted.note(
        f"mode {MODE}: restores exactly what the snapshot holds (a device whose image is gone leaves the VM "
        "Pending; BestEffort would drop it)"
    )


def _explain_snapshot_operation(converted: Converted) -> None:
    converted.note(
        "a VirtualMachineSnapshotOperation gives the new VM new IP and MAC addresses: the stored "
        "VirtualMachineIPAddress and VirtualMachineMACAddresses are not restored, and the VM's labels are not copied"
    )


def convert_documents(state: list[Document], inputs: list[Document]) -> list[Converted]:
    """The output documents, in input order: each VirtualMachineRestore converted, every
    other document unchanged (and known, like the state, to the restores after it)."""
    context = _Context(build_view(state))
    output: list[Converted] = []
    for document in inputs:
        if document.kind == kinds.VIRTUAL_MACHINE_RESTORE:
            output.append(convert_restore(document, context))
            continue
        output.append(Converted(document.obj))
        given = list_kind(document)
        if given is not None:
            context.view.mark_given(given)
        elif document.kind in MODELS:
            model = parse_document(document)
            if model is not None:
                context.view.put(model)
    return output


class _Dumper(yaml.SafeDumper):
    """Block YAML without anchors: a reader should see every value written out."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _comment(text: str) -> str:
    return "\n".join(f"# {line}" for line in textwrap.wrap(text, 96, break_on_hyphens=False))


def render_yaml(documents: Sequence[Converted]) -> str:
    parts = []
    for document in documents:
        body = yaml.dump(document.obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
        notes = [f"converted from {document.origin}", *document.notes] if document.origin else []
        comments = "".join(f"{_comment(note)}\n" for note in notes)
        parts.append(f"---\n{comments}{body}")
    return "".join(parts)


def render_json(documents: Sequence[Converted]) -> str:
    listing = {"apiVersion": "v1", "kind": "List", "items": [d.obj for d in documents]}
    return json.dumps(listing, indent=2, ensure_ascii=False, default=str) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        state = read_documents(args.state)
        inputs = read_documents(args.paths)
        documents = convert_documents(state, inputs)
    except InputError as error:
        print(f"snapguard: error: {error}", file=sys.stderr)
        return EXIT_INPUT
    if args.output == "json":
        sys.stdout.write(render_json(documents))
    else:
        sys.stdout.write(render_yaml(documents))
    # Comments do not survive `| kubectl apply -f -` (nor JSON): what changes the outcome
    # goes to stderr as well, all notes when the output has no comments.
    for document in documents:
        for text in document.notes:
            if text in document.warnings:
                print(f"snapguard: warning: {document.origin}: {text}", file=sys.stderr)
            elif args.output == "json":
                print(f"snapguard: note: {document.origin}: {text}", file=sys.stderr)
    if not any(d.origin for d in documents):
        print("snapguard: note: no VirtualMachineRestore in the input; nothing was converted", file=sys.stderr)
    return EXIT_OK

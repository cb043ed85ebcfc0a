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
    CLONED_KINDS,
    MAX_CUSTOMIZATION_LENGTH,
    SnapshotContent,
    apply_name_replacements,
    decode_snapshot_secret,
    metadata_name,
)
from policies.view import InMemoryView

EXIT_OK, EXIT_INPUT = 0, 2

# The CEL rules of `spec.createVirtualMachine` (crds/v1.10): each `to` 1..59 characters.
MAX_TO_LENGTH = MAX_CUSTOMIZATION_LENGTH
RESTORE_MODES = ("Safe", "Forced")
# The operation's mode (no VirtualMachineRestore field has one): Strict, as SPEC says,
# unless --mode asks for another.
DEFAULT_MODE = "Strict"
MODE_NOTES = {
    "Strict": "mode Strict: the snapshot is restored exactly (a device whose image is gone leaves the VM "
    "Pending; --mode BestEffort would drop it)",
    "BestEffort": "mode BestEffort: devices whose image is gone are dropped, and a provisioning Secret "
    "with other data is kept as it is",
    "DryRun": "mode DryRun: changes nothing; the operation's status.resources says what would conflict",
}
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
    parser.add_argument(
        "--mode",
        choices=tuple(MODE_NOTES),
        default=DEFAULT_MODE,
        help="mode of the operations written (default: %(default)s; DryRun to try them first)",
    )
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


class _Conversion:
    """What convert knows: the mode to write, and the cluster (the state, then the
    input's objects as they go by). A VM's existence is known only when the view holds
    VirtualMachines at all (an empty VirtualMachineList says there are none)."""

    def __init__(self, view: InMemoryView, mode: str = DEFAULT_MODE) -> None:
        self.view = view
        self.mode = mode

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

    def learn(self, document: Document) -> None:
        """A document of the input, applied before the ones after it."""
        given = list_kind(document)
        if given is not None:
            self.view.mark_given(given)
        elif document.kind in MODELS:
            model = parse_document(document)
            if model is not None:
                self.view.put(model)


def _where(document: Document) -> str:
    return f'{document.source}: VirtualMachineRestore "{document.name}"'


def _restore_of(document: Document) -> VirtualMachineRestore:
    model = parse_document(document)
    assert isinstance(model, VirtualMachineRestore)
    if not model.spec.virtual_machine_snapshot_name:
        raise InputError(f"{_where(document)}: spec.virtualMachineSnapshotName is empty")
    mode = model.spec.restore_mode or "Safe"
    if mode not in RESTORE_MODES:
        raise InputError(f'{_where(document)}: spec.restoreMode "{mode}" is neither Safe nor Forced')
    return model


def _needs_vm(document: Document, snapshot_name: str, conversion: _Conversion) -> str:
    """The snapshot's VM, or an input error saying how to tell it."""
    namespace = document.namespace
    snapshot = conversion.snapshot(namespace, snapshot_name)
    vm = conversion.vm_of(snapshot)
    if vm:
        return vm
    qualified = f'VirtualMachineSnapshot "{namespace}/{snapshot_name}"'
    if snapshot is not None:
        missing = f"{qualified} has no spec.virtualMachineName and its Secret is not in the state: add the Secret to --state"
    elif conversion.view.has_kind(kinds.VIRTUAL_MACHINE_SNAPSHOT):
        missing = f"the state has no {qualified}: add it to --state"
    else:
        missing = f"pass --state with the {qualified}"
    raise InputError(
        f"{_where(document)}: cannot tell which VM the snapshot is of (a VirtualMachineRestore does not "
        f"name it, its replacement must): {missing}"
    )


def _keep_name(document: Document, vm: str, why: str) -> dict[str, Any]:
    """The nameReplacement entry that keeps the VM's name: the platform needs at least
    one of prefix, suffix or nameReplacement (CEL), and this one renames nothing."""
    if len(vm) > MAX_TO_LENGTH:
        raise InputError(
            f'{_where(document)}: {why}, and the nameReplacement that keeps the name of VirtualMachine "{vm}" '
            f"would be over {MAX_TO_LENGTH} characters: add a nameReplacements entry with a shorter name"
        )
    return {"from": {"kind": kinds.VIRTUAL_MACHINE, "name": vm}, "to": vm}


KEEP_NAME_NOTE = (
    'the nameReplacement maps VirtualMachine "{vm}" to its own name because the platform needs at '
    "least one of namePrefix, nameSuffix or nameReplacement"
)


def _header(document: Document, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": kinds.API_VERSION, "kind": kind, "metadata": _metadata(document.obj), "spec": spec}


def _operation(document: Document, restore: VirtualMachineRestore, vm: str, mode: str) -> dict[str, Any]:
    restore_spec = {"mode": mode, "virtualMachineSnapshotName": restore.spec.virtual_machine_snapshot_name}
    spec = {"type": "Restore", "virtualMachineName": vm, "restore": restore_spec}
    return _header(document, kinds.VIRTUAL_MACHINE_OPERATION, spec)


def _snapshot_operation(
    document: Document, restore: VirtualMachineRestore, replacements: Sequence[dict[str, Any]], mode: str
) -> dict[str, Any]:
    spec = {
        "type": "CreateVirtualMachine",
        "virtualMachineSnapshotName": restore.spec.virtual_machine_snapshot_name,
        "createVirtualMachine": {"mode": mode, "nameReplacement": list(replacements)},
    }
    return _header(document, kinds.VIRTUAL_MACHINE_SNAPSHOT_OPERATION, spec)


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


def convert_restore(document: Document, conversion: _Conversion) -> Converted:
    """The replacement of one VirtualMachineRestore, with its comments."""
    restore = _restore_of(document)
    namespace = document.namespace
    snapshot_name = restore.spec.virtual_machine_snapshot_name or ""
    restore_mode = restore.spec.restore_mode or "Safe"
    replacements = restore.spec.name_replacements
    mode = conversion.mode
    origin = f"VirtualMachineRestore {namespace}/{document.name} ({document.source})"

    if restore_mode == "Forced" or not replacements:
        vm = _needs_vm(document, snapshot_name, conversion)
        exists = conversion.vm_exists(namespace, vm)
        if restore_mode == "Forced" or exists is not False:
            converted = Converted(_operation(document, restore, vm, mode), origin)
            _explain_operation(converted, restore_mode, vm, exists, replacements)
        else:
            # Safe, no replacements, and the VM is gone: create it anew, under its name.
            entry = _keep_name(document, vm, f'VirtualMachine "{vm}" does not exist')
            converted = Converted(_snapshot_operation(document, restore, [entry], mode), origin)
            converted.note(
                f'restoreMode Safe and VirtualMachine "{vm}" does not exist: a VirtualMachineSnapshotOperation '
                "creates it from the snapshot; " + KEEP_NAME_NOTE.format(vm=vm)
            )
            _explain_snapshot_operation(converted)
    else:
        dropped: list[tuple[bool, str]] = []
        kept = _kept_replacements(restore, dropped)
        entries = [_entry(r) for r in kept]
        vm = conversion.vm_of(conversion.snapshot(namespace, snapshot_name))
        if not entries:
            why = "no nameReplacements entry has an equivalent (" + "; ".join(t for _, t in dropped) + ")"
            if not vm:
                raise InputError(
                    f"{_where(document)}: {why} and the platform needs at least one: fix the entries, or "
                    "pass --state with the VirtualMachineSnapshot to keep the VM's name"
                )
            entries = [_keep_name(document, vm, why)]
        converted = Converted(_snapshot_operation(document, restore, entries, mode), origin)
        for changes, text in dropped:
            (converted.warn if changes else converted.note)(text)
        if not kept:
            converted.note("no entry was left: " + KEEP_NAME_NOTE.format(vm=vm))
        renamed = apply_name_replacements(kept, kinds.VIRTUAL_MACHINE, vm) != vm
        if vm and not renamed and conversion.vm_exists(namespace, vm):
            converted.warn(
                f'VirtualMachine "{vm}" exists and no entry renames it: the platform will refuse this '
                "operation (the VM already exists), as it refused the restore"
            )
        _explain_snapshot_operation(converted)
    converted.note(MODE_NOTES[mode])
    phase = restore.status.phase
    if phase in ("Ready", "Failed"):
        converted.warn(f"the restore has already run (phase {phase}): applying this runs it again")
    return converted


def _explain_operation(
    converted: Converted, restore_mode: str, vm: str, exists: bool | None, replacements: Sequence[NameReplacement]
) -> None:
    if restore_mode == "Forced":
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


def _explain_snapshot_operation(converted: Converted) -> None:
    converted.note(
        "a VirtualMachineSnapshotOperation gives the new VM new IP and MAC addresses: the stored "
        "VirtualMachineIPAddress and VirtualMachineMACAddresses are not restored, and the VM's labels are not copied"
    )


def convert_documents(
    state: list[Document], inputs: list[Document], mode: str = DEFAULT_MODE
) -> list[Converted]:
    """The output documents, in input order: each VirtualMachineRestore converted, every
    other document unchanged (and known, like the state, to the restores after it)."""
    conversion = _Conversion(build_view(state), mode)
    output: list[Converted] = []
    for document in inputs:
        if document.kind == kinds.VIRTUAL_MACHINE_RESTORE:
            output.append(convert_restore(document, conversion))
        else:
            output.append(Converted(document.obj))
            conversion.learn(document)
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
        documents = convert_documents(state, inputs, args.mode)
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

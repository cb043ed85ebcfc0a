"""`snapguard webhook-config`: print the ValidatingWebhookConfiguration and the
MutatingWebhookConfiguration (multi-document YAML) that route admission calls for the
governed resources to the webhook's Service.

The objects come from the pure generator `webhook.configuration`; this module reads the
CA bundle, formats YAML and maps errors to one line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from certs.bundle import split_pem_bundle
from certs.errors import CertificateError
from certs.inspect import load_certificate
from webhook.configuration import FAILURE_POLICIES, webhook_configurations


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "webhook-config",
        help="print the Validating/MutatingWebhookConfiguration for the webhook's Service",
        description=(
            "Print (multi-document YAML) the ValidatingWebhookConfiguration and "
            "MutatingWebhookConfiguration for the governed resources, pointing at "
            "Service S in namespace N, port 443, paths /validate and /mutate."
        ),
    )
    parser.add_argument("--service", required=True, metavar="S", help="the webhook's Service name")
    parser.add_argument("--namespace", required=True, metavar="N", help="the Service's namespace (exempted)")
    parser.add_argument(
        "--ca-bundle", metavar="FILE",
        help="PEM CA certificate(s) the API server verifies the webhook with (ca.crt)",
    )
    parser.add_argument(
        "--validating-failure-policy", choices=FAILURE_POLICIES, default="Fail",
        help="what the API server does when validation cannot be called (default Fail)",
    )
    parser.add_argument(
        "--mutating-failure-policy", choices=FAILURE_POLICIES, default="Ignore",
        help="what the API server does when defaulting cannot be called (default Ignore)",
    )
    parser.add_argument("--name", default="snapguard", metavar="PREFIX", help="name prefix (default snapguard)")
    parser.set_defaults(func=run)


def _read_ca_bundle(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise CertificateError(path, f"cannot read CA bundle: {error.strerror or error}") from None
    load_certificate(path)  # names the file when it holds no usable certificate
    if not split_pem_bundle(data):
        raise CertificateError(path, "no PEM certificate in the CA bundle")
    return data


def run(args: argparse.Namespace) -> int:
    try:
        ca_bundle = _read_ca_bundle(args.ca_bundle) if args.ca_bundle else None
        documents = webhook_configurations(
            service=args.service,
            namespace=args.namespace,
            ca_bundle=ca_bundle,
            name=args.name,
            validating_failure_policy=args.validating_failure_policy,
            mutating_failure_policy=args.mutating_failure_policy,
        )
    except (CertificateError, ValueError) as error:
        print(f"snapguard: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True))
    return 0

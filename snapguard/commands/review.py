"""`snapguard review FILE`: print the response the webhook would send for a recorded
AdmissionReview, deciding from `--state` files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cluster.statefiles import InputError, load_state, read_data
from policies.admission import ReviewError, answer_review
from policies.engine import Engine

from ..errors import UsageError, report
from ..policyfile import add_policy_arguments, policy_from_args


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "review",
        help="print the webhook's response to a recorded AdmissionReview",
    )
    parser.add_argument("file", metavar="FILE", help="an admission.k8s.io/v1 AdmissionReview (JSON or YAML), or -")
    parser.add_argument("--state", action="append", default=[], metavar="PATH")
    add_policy_arguments(parser, "policy file setting rule actions")
    parser.add_argument("--mutate", action="store_true", help="answer as /mutate (defaults) instead of /validate")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        engine = Engine(policy_from_args(args))
        view = load_state(args.state)
        body = read_data(args.file)
        response, _, _ = answer_review(engine, view, body, mutate=args.mutate)
    except (InputError, UsageError) as error:
        report(error)
        return 2
    except ReviewError as error:
        report(f"{args.file}: not an AdmissionReview: {error}")
        return 2
    # The AdmissionReview on stdout stays exactly what the webhook sends; the release it
    # was decided for goes to stderr.
    print(f"snapguard: decided for DVP platform {engine.platform.label}", file=sys.stderr)
    print(json.dumps(response, indent=2, ensure_ascii=False))
    return 0

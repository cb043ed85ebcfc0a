"""dvp-snapguard's pure validation engine: models, the read-only ClusterView, the rule
catalogue, defaults and the AdmissionReview codec.

Imports only the standard library and pydantic: no sockets, files, clocks or
environment (an import-linter contract and a test keep it so). Every front-end (the
webhook, `snapguard check`, `snapguard audit`, the reconciler) decides through here.
"""

from . import rules as _rules  # noqa: F401  (registers every rule in the catalogue)

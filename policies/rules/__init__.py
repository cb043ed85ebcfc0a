"""Every rule of SPEC section 2, one module per kind of request. Importing this package
registers them in `policies.catalogue.CATALOGUE`; registration order is catalogue order,
which follows SPEC section 2 (so `snapguard rules` and docs/rules.md read like it)."""

# isort: off
from . import vds  # noqa: F401
from . import vms  # noqa: F401
from . import vmr  # noqa: F401
from . import vd  # noqa: F401
from . import op  # noqa: F401
from . import update  # noqa: F401
from . import versions  # noqa: F401
# isort: on

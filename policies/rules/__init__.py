"""Every rule of SPEC section 2, one module per kind of request. Importing this package
registers them in `policies.catalogue.CATALOGUE`, in catalogue order."""

from . import vds, vms, vmr, vd, update  # noqa: F401

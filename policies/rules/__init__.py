"""Every rule of SPEC section 2, one module per kind of request. Importing this package
registers them in `policies.catalogue.CATALOGUE`, in catalogue order."""

from . import update, vd, vds, vmr, vms  # noqa: F401

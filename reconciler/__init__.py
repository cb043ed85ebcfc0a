"""The minimal reconciler: executes VirtualDiskSnapshots, VirtualMachineSnapshots and
VirtualMachineRestores with the platform's phases, conditions and reasons, re-checking
each with the engine right before it acts (docs/reconciler.md). The only writer of
cluster objects; it reaches the API through `cluster/` only."""

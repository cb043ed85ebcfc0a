"""The `snapguard` command line: the composition root that wires the engine
(`policies`), the state sources (`cluster`), certificates (`certs`), the webhook and
the reconciler into commands. Output formats live here too."""

__version__ = "0.1.0"

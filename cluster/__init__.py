"""Where the engine's view of the cluster comes from: state files (`statefiles`) or a
live API server through a list+watch cache. The only package that imports the
`kubernetes` client."""

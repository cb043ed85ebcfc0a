"""An in-process Kubernetes API server (and HTTPS admission webhook) for tests."""

"""Tests of the cluster adapter against the in-process Kubernetes API server."""

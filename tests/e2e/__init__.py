"""End-to-end tests: kubectl, the in-process API server and a real `snapguard serve`."""

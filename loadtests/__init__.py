"""Load tests and benchmarks for Visor. Never imported by the service; never run by `make test`."""

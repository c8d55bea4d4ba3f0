"""Experiments: measurements that chose a setting or checked a design, each run by hand and
quoted in docs/ with its command (``python -m loadtests.experiments.NAME --help``)."""

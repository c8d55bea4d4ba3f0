"""Offline scoring (``python -m service score``): the server's preprocessing, model and
thresholds over a folder, a glob or a Parquet table, locally or on Spark, resumable."""

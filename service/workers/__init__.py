"""Worker processes: how many (``count``)."""

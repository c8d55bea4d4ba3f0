"""Worker processes: how many (``count``) and how they share calls (``siblings``)."""

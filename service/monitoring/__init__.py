"""Live verification of a served model: predictions kept for feedback, rolling per-class
precision/recall with confidence bounds, and drift of the served predictions (PSI).

``VersionMonitor`` (one per loaded model version) is the engine's entry point; ``stats`` holds the
statistics, ``windows`` the bounded stores they are computed over.
"""

from service.monitoring.monitor import FeedbackResult, VersionMonitor

__all__ = ["FeedbackResult", "VersionMonitor"]

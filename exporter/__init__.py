"""twilio-insights-exporter: Twilio Voice Insights summaries (participants, calls, conferences), joined to TaskRouter, as Prometheus metrics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("twilio-insights-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

"""Grafana dashboards and Prometheus rules for the exporter, generated from one Python source.

Metric names, bucket edges and Twilio's thresholds come from :mod:`exporter.metrics`; the
alert-only tunables (windows, minimum sample counts, shares) live in :mod:`dashboards.settings`.
Run ``python -m dashboards.generate`` to rewrite the committed JSON and YAML.
"""

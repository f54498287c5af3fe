"""The REST door: the Voice Insights API polled (its transport in api.py), its summaries handed to the pipeline."""

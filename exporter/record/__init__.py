"""The recording machinery every subject shares: label policies (labels.py), metric families (families.py), plans applied all or nothing (recorder.py)."""

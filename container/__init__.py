"""The entry script the job image runs (container/byoc_entry.py), shipped inside the package."""

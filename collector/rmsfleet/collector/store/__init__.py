"""The store: every line of SQL in rmsfleet lives in this package."""

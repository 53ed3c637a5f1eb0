"""Process tuning: paced garbage collection, malloc thresholds, the open-files limit."""

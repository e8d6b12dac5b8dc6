"""dno: Direct Nash Optimization as offline, data-centric stages over versioned Parquet."""

__version__ = "0.1.0"

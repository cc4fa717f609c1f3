"""lakeloop: PySpark engine for production ML pipelines over Delta tables."""

__version__ = "0.1.0"

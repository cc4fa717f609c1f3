"""Delta Lake tables on Spark over delta-rs: the modules behind :mod:`lakeloop.tables`.

* :mod:`~lakeloop.delta.log` -- locations, storage options, snapshots, protocol checks, schemas
* :mod:`~lakeloop.delta.files` -- listing written files, partition values, parquet footer statistics
* :mod:`~lakeloop.delta.read` -- snapshot reads with Spark's native parquet reader
* :mod:`~lakeloop.delta.write` -- Spark-native writes committed with delta-rs
* :mod:`~lakeloop.delta.maintain` -- merge, history, optimize, vacuum, restore
* :mod:`~lakeloop.delta.stream` -- Structured Streaming source (``lakeloop_delta``) and sink
"""

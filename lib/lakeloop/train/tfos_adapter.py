"""A thin adapter over TensorFlowOnSpark 2.2.5 (the last release, 2022) for Spark 4 / TF 2.21.

Only this module imports ``tensorflowonspark``.  :func:`train_cluster` runs one
``TFCluster.run(..., input_mode=InputMode.SPARK)`` cluster, feeds it an RDD for a number of epochs
and shuts it down, with these patches applied (docs/training.md lists them with the versions
they were run with):

1. ``pkg_resources`` shim.  TFoS imports ``pkg_resources`` to read the TensorFlow version;
   setuptools >= 81 no longer ships it.  :func:`install` registers a minimal module answering
   ``get_distribution(name).version`` from :mod:`importlib.metadata`.
2. Host address lookup.  ``tensorflowonspark.util.get_ip_address`` finds the host address by
   connecting a UDP socket to 8.8.8.8.  No traffic to outside addresses may ever be attempted, so
   :func:`install` replaces it with a lookup that stays on the host (``SPARK_LOCAL_IP``, the
   address given by the driver, or the host name's resolved address).
3. Every process that runs TFoS code gets both patches before TFoS code runs: the driver calls
   :func:`install` itself, and every function TFoS ships to executors (node start, data feeding,
   shutdown) is wrapped in :class:`_Guarded`, which installs the patches in the Python worker and
   only then unpickles and calls TFoS's own function.  TensorFlow processes are forked from those
   workers and inherit the patches.
4. ``executor_id`` file.  TFoS keeps each executor's id in a file in the working directory; in
   ``local`` mode that is the driver's working directory (the source tree).  :class:`_Guarded`
   runs each TFoS function inside the Spark files root of the executor instead.
5. Fatal error handling.  On a TensorFlow failure ``TFCluster.shutdown`` stops the
   SparkContext and calls ``sys.exit``; it also arms a ``SIGALRM`` it never disarms.  The cluster
   is given a context proxy whose ``stop`` does nothing, shutdown runs without the alarm, and a
   failure surfaces as :class:`TFoSError` with the session intact.
6. Stale status.  TFoS keeps a module-level error status across clusters; it is cleared before
   each run.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import socket
import sys
import types
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext

__all__ = ["TFoSError", "install", "host_for_master", "local_address", "train_cluster"]

_LOOPBACK = "127.0.0.1"
_HOST_ENV = "LAKELOOP_TFOS_HOST"


class TFoSError(RuntimeError):
    """TensorFlowOnSpark training failed (the message says where)."""


class _DistributionNotFound(Exception):
    pass


class _Distribution:
    def __init__(self, name: str) -> None:
        try:
            self.version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise _DistributionNotFound(name) from None
        self.project_name = name


def _install_pkg_resources_shim() -> None:
    try:
        import pkg_resources  # noqa: F401

        return
    except ImportError:
        pass
    shim = types.ModuleType("pkg_resources")
    shim.__doc__ = "lakeloop shim: the part of pkg_resources TensorFlowOnSpark uses"
    shim.DistributionNotFound = _DistributionNotFound
    shim.get_distribution = _Distribution
    sys.modules["pkg_resources"] = shim


def local_address(host: str | None = None) -> str:
    """The address TFoS advertises for this process, found without any network traffic.

    ``host`` (chosen by the driver), else ``$SPARK_LOCAL_IP``, else the host name's address from
    the resolver (``/etc/hosts``), else loopback.
    """
    chosen = host or os.environ.get(_HOST_ENV) or os.environ.get("SPARK_LOCAL_IP")
    if chosen:
        return chosen
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return _LOOPBACK


def host_for_master(master: str) -> str | None:
    """Loopback for single-host masters (``local``, ``local-cluster``); None (per-host lookup) otherwise."""
    return _LOOPBACK if master.startswith("local") else None


def install(host: str | None = None) -> None:
    """Apply the ``pkg_resources`` shim and the host-address patch in this process (idempotent)."""
    _install_pkg_resources_shim()
    if host:
        os.environ[_HOST_ENV] = host
    from tensorflowonspark import util

    util.get_ip_address = local_address


class _Guarded:
    """A TFoS function shipped to executors, unpickled only after :func:`install` ran there."""

    def __init__(self, fn: Callable[[Iterator[Any]], Any], host: str | None) -> None:
        from pyspark import cloudpickle

        self._payload = cloudpickle.dumps(fn)
        self._host = host

    def __call__(self, iterator: Iterator[Any]) -> Iterator[Any]:
        # a generator, so that the working directory also holds while a lazy result is consumed
        # (foreachPartition consumes it too)
        import pickle

        from pyspark import SparkFiles

        install(self._host)
        fn = pickle.loads(self._payload)
        previous = os.getcwd()
        os.chdir(SparkFiles.getRootDirectory())
        try:
            result = fn(iterator)
            if result is not None:
                yield from result
        finally:
            os.chdir(previous)


@contextlib.contextmanager
def _guarded_node_functions(host: str | None) -> Iterator[None]:
    """Make ``TFSparkNode.run/train/shutdown`` return :class:`_Guarded` functions while TFCluster runs."""
    from tensorflowonspark import TFSparkNode

    originals = {name: getattr(TFSparkNode, name) for name in ("run", "train", "shutdown")}

    def wrap(factory: Callable[..., Callable]) -> Callable[..., _Guarded]:
        return lambda *args, **kwargs: _Guarded(factory(*args, **kwargs), host)

    for name, factory in originals.items():
        setattr(TFSparkNode, name, wrap(factory))
    try:
        yield
    finally:
        for name, factory in originals.items():
            setattr(TFSparkNode, name, factory)


class _NoStopContext:
    """The SparkContext as TFoS sees it: everything but ``stop`` (TFoS stops it on failures)."""

    def __init__(self, sc: SparkContext) -> None:
        self._sc = sc

    def stop(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sc, name)


def train_cluster(sc: SparkContext, map_fun: Callable[[Any, Any], None], tf_args: Any, num_executors: int,
                  data: RDD, epochs: int, *, feed_timeout: int = 600, reservation_timeout: int = 300) -> None:
    """Start a TFoS cluster of ``num_executors`` workers, feed ``data`` ``epochs`` times, shut it down.

    ``map_fun(tf_args, ctx)`` runs once per executor in a TensorFlow process (TFoS background
    mode) and reads its rows with ``ctx.get_data_feed()``; it must call ``terminate()`` on the
    feed when done.  Raises :class:`TFoSError` when TensorFlow or the feeding fails.
    """
    host = host_for_master(sc.master)
    install(host)
    from tensorflowonspark import TFCluster

    TFCluster.tf_status.clear()
    with _guarded_node_functions(host):
        try:
            cluster = TFCluster.run(_NoStopContext(sc), map_fun, tf_args, num_executors, 0,
                                    input_mode=TFCluster.InputMode.SPARK,
                                    reservation_timeout=reservation_timeout)
        except (Exception, SystemExit) as exc:
            # TFoS exits (SystemExit) when a node fails while reservations are awaited
            sc.cancelAllJobs()
            reason = TFCluster.tf_status.get("error") or exc
            raise TFoSError(f"TensorFlowOnSpark cluster did not start: {reason}") from None
        try:
            cluster.train(data, epochs, feed_timeout=feed_timeout)
        except Exception as exc:
            sc.cancelAllJobs()
            cluster.server.stop()
            raise TFoSError(f"feeding the TensorFlowOnSpark cluster failed: {exc}") from exc
        try:
            cluster.shutdown(timeout=-1)
        except SystemExit:
            cluster.server.stop()
            raise TFoSError("a TensorFlow node failed: "
                            f"{TFCluster.tf_status.get('error', 'see the executor logs')}") from None

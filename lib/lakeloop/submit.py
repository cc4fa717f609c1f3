"""Build the ``spark-submit`` command line for a job from the env's conf.

``spark-submit.sh`` is a thin shell wrapper around ``python -m lakeloop.submit``; all the
decisions (master, deploy mode, ``--conf`` properties, shipped files, Python environment)
are made here so that they are unit-tested.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lakeloop.conf import Conf, ConfError, load_conf
from lakeloop.errors import EXIT_USAGE
from lakeloop.job import job_names
from lakeloop.jvm import connector, delta_runtime_python
from lakeloop.paths import project_root
from lakeloop.runtime import (
    LOG4J_CONF,
    arg_value,
    bigdl_jars,
    bigdl_properties,
    needs_spark35,
    spark35_python,
)
from lakeloop.session import LOG4J2_CONF, jvm_properties, log_dir, spark_log_options

__all__ = ["SubmitCommand", "build_command", "list_jobs", "package_library", "main"]

PROJECT_ROOT = project_root()
ENV_DIR = "environment"  # where --archives unpacks the shipped Python environment


@dataclass
class SubmitCommand:
    """The environment variables and argv of one spark-submit invocation."""

    env: dict[str, str]
    argv: list[str]

    def render(self) -> str:
        prefix = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        return " ".join(prefix + [shlex.quote(a) for a in self.argv])


def list_jobs(root: Path = PROJECT_ROOT) -> list[str]:
    """The jobs of the project at ``root`` (its ``jobs/`` entry files); outside a checkout, every job of
    :data:`lakeloop.job.JOBS`."""
    if not (root / "jobs").is_dir():
        return job_names()
    return sorted(p.stem for p in (root / "jobs").glob("*.py") if not p.stem.startswith("_"))


def entry_file(job: str, root: Path = PROJECT_ROOT) -> tuple[str, list[str]]:
    """The primary file spark-submit runs for ``job`` and the arguments before the job's own: the project's
    ``jobs/<job>.py`` in a checkout, else the installed package's ``lakeloop/__main__.py JOB``."""
    in_checkout = root / "jobs" / f"{job}.py"
    if in_checkout.is_file():
        return str(in_checkout), []
    return str(Path(__file__).resolve().parent / "__main__.py"), [job]


def _sources_digest(lib: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(lib.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(lib)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def package_library(root: Path = PROJECT_ROOT, build_dir: Path | None = None) -> Path:
    """Zip ``lib/lakeloop`` for ``--py-files``; rebuilt only when a source file changed."""
    lib = root / "lib"
    build_dir = build_dir or root / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    target = build_dir / "lakeloop.zip"
    stamp = build_dir / "lakeloop.zip.sha256"
    digest = _sources_digest(lib / "lakeloop")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return target
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted((lib / "lakeloop").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(str(path.relative_to(lib)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    os.replace(tmp, target)
    stamp.write_text(digest + "\n")
    return target


def find_spark_submit(conf: Conf) -> str:
    """pip-installed pyspark's spark-submit for local masters; ``$SPARK_HOME``'s on a cluster if set."""
    master = conf["spark.master"]
    spark_home = os.environ.get("SPARK_HOME")
    if spark_home and not master.startswith("local"):
        return str(Path(spark_home) / "bin" / "spark-submit")
    try:
        import pyspark
    except ImportError:
        raise ConfError("pyspark is not installed in this Python; run ./setup.sh") from None
    return str(Path(pyspark.__file__).resolve().parent / "bin" / "spark-submit")


@dataclass(frozen=True)
class _Spark35:
    """The Spark 3.5 runtime a job was routed to: its interpreter, Spark installation and BigDL jars."""

    python: Path
    spark_home: Path
    jars: list[Path]


def _spark35_runtime(conf: Conf, root: Path, on_cluster: bool, check: bool) -> _Spark35:
    """The Spark 3.5 runtime of ``runtime.spark35.*``; ConfError when it was not built (and ``check``)."""
    python = spark35_python(conf, root)
    venv_pyspark = sorted(python.parent.parent.glob("lib/python3*/site-packages/pyspark"))
    jars = bigdl_jars(python)
    if check and (not python.exists() or not venv_pyspark or not jars):
        raise ConfError(f"runtime.spark35.python: no Spark 3.5 runtime with BigDL at {python.parent.parent}; "
                        "build it with ./setup.sh spark35")
    home = conf.get("runtime.spark35.spark_home")
    if home and on_cluster:
        spark_home = Path(home)
    else:
        spark_home = venv_pyspark[0] if venv_pyspark else python.parent.parent / "pyspark"
    return _Spark35(python=python, spark_home=spark_home, jars=jars)


@dataclass(frozen=True)
class _DeltaRuntime:
    """The delta-spark runtime (``.venv-delta``) a ``delta.engine: delta-spark`` job runs in when the Delta jars
    do not load into the installed Spark."""

    python: Path
    spark_home: Path
    spark_version: str


def _delta_runtime(conf: Conf, root: Path) -> _DeltaRuntime | None:
    if conf.get("delta.engine") != "delta-spark" or connector("delta").usable:
        return None
    python = delta_runtime_python(root)
    if python is None:
        return None  # jvm_properties then names what is missing
    homes = sorted(python.parent.parent.glob("lib/python3*/site-packages/pyspark"))
    version = connector("delta").versions.get("spark.version", "")
    return _DeltaRuntime(python, homes[0], version) if homes and version else None


def _is_cluster_master(master: str) -> bool:
    return master == "yarn" or master.startswith(("spark://", "k8s://"))


def build_command(job: str, env: str = "local", overrides: list[str] | None = None,
                  job_args: list[str] | None = None, *, conf_dir: str | None = None,
                  root: Path = PROJECT_ROOT, python: str | None = None,
                  check_files: bool = True) -> SubmitCommand:
    """The spark-submit invocation for ``job`` in ``env``.

    Raises :class:`ConfError` for invalid conf and :class:`LookupError` for an unknown job.
    """
    jobs = list_jobs(root)
    if job not in jobs:
        raise LookupError(f"unknown job {job!r}; jobs: {', '.join(jobs)}")
    overrides = list(overrides or [])
    job_args = list(job_args or [])
    conf = load_conf(env, overrides, conf_dir)
    master = conf["spark.master"]
    deploy_mode = conf.get("spark.submit.deployMode", "client")
    on_cluster = _is_cluster_master(master)
    remote_driver = on_cluster and deploy_mode == "cluster"
    spark35 = _spark35_runtime(conf, root, on_cluster, check_files) if needs_spark35(conf, job, job_args) else None
    delta_runtime = None if spark35 else _delta_runtime(conf, root)
    if spark35:
        python = str(spark35.python)
    elif delta_runtime:
        python = str(delta_runtime.python)
    else:
        python = python or sys.executable
    assert conf.conf_dir is not None

    run_date = arg_value(job_args, "--date")
    name = f"lakeloop-{job}" + (f"-{run_date}" if run_date else "")
    if spark35 or delta_runtime:
        submit = str((spark35 or delta_runtime).spark_home / "bin" / "spark-submit")  # type: ignore[union-attr]
    else:
        submit = find_spark_submit(conf)
    argv = [submit, "--master", master, "--deploy-mode", deploy_mode, "--name", name]

    files = [conf.conf_dir / "base.yaml", conf.conf_dir / f"{env}.yaml", *_schema_files(conf, root)]
    # the connector jars of ./setup.sh jvm that load into this Spark (none into the Spark 3.5 runtime)
    props = conf.spark_properties() if spark35 else jvm_properties(
        conf, delta_runtime.spark_version if delta_runtime else None)
    connector_jars = props.pop("spark.jars", None)
    if connector_jars:
        argv += ["--jars", connector_jars]
    props.pop("spark.master", None)
    props.pop("spark.submit.deployMode", None)
    pools = props.get("spark.scheduler.allocation.file")
    if pools:
        local_pools = Path(pools) if Path(pools).is_absolute() else conf.conf_dir / pools
        if not local_pools.is_file():
            raise ConfError(f"{conf.origin('spark.scheduler.allocation.file')}: spark.scheduler.allocation.file: "
                            f"{local_pools} not found")
        files.append(local_pools)
        props["spark.scheduler.allocation.file"] = local_pools.name if remote_driver else str(local_pools)
    if conf.get("gpu.enabled"):
        script = Path(conf.gpu_discovery_script())
        files.append(script)
        props["spark.executor.resource.gpu.discoveryScript"] = f"./{script.name}" if on_cluster else str(script)

    env_vars: dict[str, str] = {}
    if spark35:
        props = bigdl_properties(spark35.jars, props, on_cluster=on_cluster, remote_driver=remote_driver)
        files.append(LOG4J_CONF)
        if spark35.jars:
            argv += ["--jars", ",".join(str(j) for j in spark35.jars)]
        env_vars.update({"SPARK_HOME": str(spark35.spark_home), "KMP_SETTINGS": "0"})
    else:  # lakeloop's log4j2 configuration: Spark's warnings on the console, everything in a log file
        props = spark_log_options(props, log_directory=log_dir(conf), verbose="--verbose" in job_args,
                                  remote_driver=remote_driver)
        files[2:2] = [LOG4J2_CONF] if remote_driver else []  # after the conf files
    if delta_runtime:
        env_vars["SPARK_HOME"] = str(delta_runtime.spark_home)
    archive = conf.get("runtime.spark35.archive") if spark35 else conf.get("python.archive")
    if archive and on_cluster:
        key = "runtime.spark35.archive" if spark35 else "python.archive"
        archive = _local_archive(archive, root, check_files, key)
        argv += ["--archives", f"{archive}#{ENV_DIR}"]
        shipped = f"./{ENV_DIR}/bin/python"
        props["spark.executorEnv.PYSPARK_PYTHON"] = shipped
        if master == "yarn":
            props["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = shipped
        env_vars["PYSPARK_PYTHON"] = shipped
        if not remote_driver:
            env_vars["PYSPARK_DRIVER_PYTHON"] = python
    else:
        worker_python = python if spark35 else (conf["python.executable"] or python)
        env_vars["PYSPARK_PYTHON"] = worker_python
        env_vars["PYSPARK_DRIVER_PYTHON"] = python

    for key in sorted(props):
        argv += ["--conf", f"{key}={props[key]}"]
    argv += ["--files", ",".join(str(f) for f in files)]
    argv += ["--py-files", str(package_library(root))]
    primary, leading = entry_file(job, root)
    argv += [primary, *leading, "--env", env]
    for item in overrides:
        argv += ["--set", item]
    if remote_driver:
        argv += ["--conf-dir", "."]
    argv += job_args
    return SubmitCommand(env_vars, argv)


def _schema_files(conf: Conf, root: Path) -> list[Path]:
    """The source schema files, shipped so a driver in the cluster finds them in its working directory."""
    directory = Path(conf["schema_dir"] or conf.conf_dir.parent / "schemas")  # type: ignore[union-attr]
    if not directory.is_dir():
        directory = root / "schemas"
    return sorted(directory.glob("*.yaml"))


def _local_archive(archive: str, root: Path, check: bool, key: str) -> str:
    """A relative archive path is relative to the project; a local one must exist."""
    if "://" in archive:
        return archive
    path = Path(archive) if Path(archive).is_absolute() else root / archive
    if check and not path.is_file():
        build = "EXTRAS=spark35 scripts/pack-env.sh" if key.startswith("runtime.spark35") else "scripts/pack-env.sh"
        raise ConfError(f"{key}: {path} not found; build it with {build}")
    return str(path)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="spark-submit.sh", add_help=True,
                                usage="spark-submit.sh JOB [--env ENV] [--set k=v ...] [--dry-run] [job args]")
    p.add_argument("job", nargs="?")
    p.add_argument("--env", default=os.environ.get("LAKELOOP_ENV", "local"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--conf-dir", default=None)
    p.add_argument("--dry-run", action="store_true", help="print the command line and exit")
    p.add_argument("--print0", action="store_true", help=argparse.SUPPRESS)
    return p.parse_known_args(argv)


def command_from_args(argv: list[str]) -> SubmitCommand:
    """The command of ``JOB [--env ENV] [--set k=v ...] [--conf-dir DIR] [job args]`` (the console script)."""
    args, job_args = _parse(list(argv))
    return build_command(args.job, args.env, args.overrides, job_args, conf_dir=args.conf_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m lakeloop.submit JOB ...``: print the command (``--dry-run``) or emit it for exec."""
    args, job_args = _parse(list(sys.argv[1:] if argv is None else argv))
    if not args.job or args.job not in list_jobs():
        if args.job:
            print(f"spark-submit.sh: unknown job {args.job!r}", file=sys.stderr)
        print("jobs: " + " ".join(list_jobs()), file=sys.stderr)
        return EXIT_USAGE
    try:
        cmd = build_command(args.job, args.env, args.overrides, job_args, conf_dir=args.conf_dir,
                            check_files=not args.dry_run)
    except ConfError as exc:
        print(f"spark-submit.sh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(cmd.render())
    elif args.print0:
        # env assignments then argv, NUL-separated, consumed by spark-submit.sh
        out = [f"{k}={v}" for k, v in sorted(cmd.env.items())] + ["--"] + cmd.argv
        sys.stdout.write("\0".join(out) + "\0")
    else:
        print(cmd.render())
    return 0


if __name__ == "__main__":
    sys.exit(main())

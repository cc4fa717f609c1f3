"""Build the ``spark-submit`` command line for a job from the env's conf.

``spark-submit.sh`` is a thin shell wrapper around ``python -m lakeloop.submit``; all the
decisions (master, deploy mode, ``--conf`` properties, shipped files, Python environment)
are made here so that they are unit-tested.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from lakeloop import deploy_checks, job_status
from lakeloop.conf import Conf, ConfError, load_conf
from lakeloop.errors import EXIT_USAGE
from lakeloop.job import build_parser, job_names
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

__all__ = ["SubmitCommand", "build_command", "list_jobs", "package_library", "launch", "job_help", "wrapper_help",
           "java_problem", "main"]

PROJECT_ROOT = project_root()
ENV_DIR = "environment"  # where --archives unpacks the shipped Python environment


PRIVATE_PROPERTIES = "<private-properties-file>"  # replaced at launch by a 0600 file, see launch()
# Spark's redaction pattern (spark.redaction.regex) plus credentials: such properties never go on a command line
_SENSITIVE = re.compile(r"secret|password|token|access[.]?key|credential", re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


@dataclass
class SubmitCommand:
    """The environment variables and argv of one launch.

    ``private`` holds properties that must not appear on a command line (the driver's secrets in
    cluster deploy mode): :func:`launch` writes them to a file readable by the user only and passes
    it with ``--properties-file`` in place of :data:`PRIVATE_PROPERTIES`.  ``status_uri`` is set in
    cluster deploy mode: the driver writes its exit code there (:mod:`lakeloop.job_status`) and
    :func:`launch` returns it.  ``java`` says whether the command starts a JVM.
    """

    env: dict[str, str]
    argv: list[str]
    private: dict[str, str] = field(default_factory=dict)
    status_uri: str | None = None
    java: bool = True

    def render(self) -> str:
        prefix = [f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        shown = f"<0600 file: {', '.join(sorted(self.private))}>"
        return " ".join(prefix + [shlex.quote(shown if a == PRIVATE_PROPERTIES else a) for a in self.argv])


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


# the packages shipped with --py-files: the engine and the apps built on it
_PACKAGES = ("lakeloop", "lakeloop_apps")


def _sources_digest(lib: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(lib.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(lib)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def package_library(root: Path = PROJECT_ROOT, build_dir: Path | None = None) -> Path:
    """Zip ``lib/lakeloop`` and ``lib/lakeloop_apps`` (the apps' code, which executors import too) for
    ``--py-files``; rebuilt only when a source file changed."""
    lib = root / "lib"
    build_dir = build_dir or root / "build"
    build_dir.mkdir(parents=True, exist_ok=True)
    target = build_dir / "lakeloop.zip"
    stamp = build_dir / "lakeloop.zip.sha256"
    packages = [lib / name for name in _PACKAGES if (lib / name).is_dir()]
    digest = "".join(_sources_digest(p) for p in packages)
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # two submits at once each write their own
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for package in packages for p in package.rglob("*")):
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
    if job == "serve":
        return _serve_command(env, overrides, job_args, conf_dir, root, python or sys.executable)
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
        # Spark opens it with Hadoop's FileSystem: a bare path would be on the cluster's default file system
        here = local_pools.resolve().as_uri() if on_cluster else str(local_pools)
        props["spark.scheduler.allocation.file"] = local_pools.name if remote_driver else here
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
    # a driver in the cluster reads the conf folder's spec folders (features/, models/, ...) in its working
    # directory: each travels as a zip that YARN unpacks under its own name (--files would flatten it)
    archives = [f"{z}#{name}" for name, z in conf_folder_zips(conf.conf_dir, root)] if remote_driver else []
    if archive and on_cluster:
        key = "runtime.spark35.archive" if spark35 else "python.archive"
        archive = _local_archive(archive, root, check_files, key)
        archives.insert(0, f"{archive}#{ENV_DIR}")
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
    if archives:
        argv += ["--archives", ",".join(archives)]  # one option: spark-submit keeps only the last --archives

    private = {key: props.pop(key) for key in sorted(props) if _SENSITIVE.search(key)}
    if not remote_driver:
        private = {}  # the driver's session builder sets them from the same conf (lakeloop.session)
    status = None
    if remote_driver:
        prefix = _driver_env_prefix(master)
        private.update({prefix + n: os.environ[n] for n in _driver_env_names(conf, overrides) if n in os.environ})
        tag = f"{name}-{uuid.uuid4().hex[:8]}"
        status = job_status.status_uri(conf.path("warehouse"), tag)
        props[prefix + job_status.ENV_VAR] = status
        if master == "yarn":
            props["spark.yarn.tags"] = ",".join(filter(None, [props.get("spark.yarn.tags"), tag]))
    for key in sorted(props):
        argv += ["--conf", f"{key}={props[key]}"]
    if private:
        argv += ["--properties-file", PRIVATE_PROPERTIES]
    argv += ["--files", ",".join(str(f) for f in files)]
    argv += ["--py-files", str(package_library(root))]
    primary, leading = entry_file(job, root)
    argv += [primary, *leading, "--env", env]
    for item in overrides:
        argv += ["--set", item]
    if remote_driver:
        argv += ["--conf-dir", "."]
    elif conf_dir:
        argv += ["--conf-dir", str(Path(conf_dir).resolve())]
    argv += job_args
    return SubmitCommand(env_vars, argv, private=private, status_uri=status)


def _serve_command(env: str, overrides: list[str], job_args: list[str], conf_dir: str | None, root: Path,
                   python: str) -> SubmitCommand:
    """``serve`` is a plain Python service: its interpreter runs ``jobs/serve.py`` (an installed package's
    ``lakeloop/__main__.py serve``), no spark-submit, no JVM; :func:`launch` execs it, so the launcher's PID
    is the server's and a signal sent to the launcher reaches the server."""
    primary, leading = entry_file("serve", root)
    argv = [python, primary, *leading, "--env", env]
    for item in overrides:
        argv += ["--set", item]
    if conf_dir:
        argv += ["--conf-dir", str(conf_dir)]
    return SubmitCommand({}, argv + job_args, java=False)


def _driver_env_prefix(master: str) -> str:
    """The properties that set environment variables of a driver running in the cluster."""
    return "spark.kubernetes.driverEnv." if master.startswith("k8s://") else "spark.yarn.appMasterEnv."


def _driver_env_names(conf: Conf, overrides: list[str]) -> list[str]:
    """Variables a driver in the cluster needs from here: the forwarded ones and those the conf refers to.

    The driver loads the same conf files again, in its container: ``${NAME}`` references must resolve
    to the same values there.
    """
    from lakeloop.session import forwarded_names

    assert conf.conf_dir is not None
    texts = [(conf.conf_dir / "base.yaml").read_text(), (conf.conf_dir / f"{conf.env}.yaml").read_text(), *overrides]
    referenced = [m.group(1) for text in texts for m in _ENV_REF.finditer(text)]
    return list(dict.fromkeys([*forwarded_names(conf), *referenced]))


def conf_folder_zips(conf_dir: Path, root: Path = PROJECT_ROOT) -> list[tuple[str, Path]]:
    """``(folder, zip)`` for each subfolder of ``conf_dir`` that holds files: ``build/conf-<digest>-<folder>.zip``
    with the folder's files at its top level, for ``--archives ZIP#<folder>``; rewritten only when a file changed."""
    build = root / "build"
    digest = hashlib.sha256(str(conf_dir.resolve()).encode()).hexdigest()[:12]  # one set of zips per conf folder
    out = []
    for folder in sorted(p for p in conf_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        if not files:
            continue
        target = build / f"conf-{digest}-{folder.name}.zip"
        _write_zip(target, [(str(f.relative_to(folder)), f.read_bytes()) for f in files])
        out.append((folder.name, target))
    return out


def _write_zip(target: Path, entries: list[tuple[str, bytes]]) -> None:
    """``target`` holding ``entries`` (name, bytes) with fixed timestamps; left alone when already the same."""
    body = b"".join(name.encode() + b"\0" + data for name, data in entries)
    stamp = target.with_suffix(".zip.sha256")
    digest = hashlib.sha256(body).hexdigest()
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    os.replace(tmp, target)
    stamp.write_text(digest + "\n")


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


USAGE = "spark-submit.sh JOB [--env ENV] [--set KEY=VALUE ...] [--conf-dir DIR] [--dry-run] [job options]"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spark-submit.sh", add_help=False, usage=USAGE,
                                description="Run a lakeloop job with spark-submit, settings from conf/<env>.yaml "
                                            "(serve runs as a plain Python service).")
    p.add_argument("job", nargs="?", help="the job to run (`spark-submit.sh JOB --help`: its own options)")
    p.add_argument("--env", default=os.environ.get("LAKELOOP_ENV", "local"),
                   help="conf/<env>.yaml merged over conf/base.yaml (default: $LAKELOOP_ENV or local)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a conf key (repeatable)")
    p.add_argument("--conf-dir", default=None, help="directory holding base.yaml (default: ./conf)")
    p.add_argument("--dry-run", action="store_true", help="print the command line and exit")
    p.add_argument("-h", "--help", action="store_true", help="this help; after JOB: the job's options")
    return p


def wrapper_help(root: Path = PROJECT_ROOT) -> str:
    """The wrapper's ``--help``: options, jobs and exit codes (never anything from the environment)."""
    text = _parser().format_help()
    return (text + "\njobs: " + " ".join(list_jobs(root)) + "\n"
            "exit codes: 0 ok, 1 error, 2 usage/configuration (or refused, docs/deploy.md), "
            "3 data-quality gate, 4 model gate refused\n")


def job_help(job: str, root: Path = PROJECT_ROOT) -> int:
    """Print ``job``'s own ``--help`` (its argparse parser) without starting Spark; the exit code."""
    if job not in list_jobs(root):
        return EXIT_USAGE
    print(build_parser(job).format_help(), end="")
    return 0


def java_problem(env: dict[str, str] | None = None) -> str | None:
    """Why the JVM Spark 4 needs cannot start (no Java, or older than 17); None when it can."""
    env = dict(os.environ if env is None else env)
    java = str(Path(env["JAVA_HOME"]) / "bin" / "java") if env.get("JAVA_HOME") else "java"
    found = shutil.which(java, path=env.get("PATH"))
    if found is None:
        return ("Java not found. lakeloop needs Java 17 or newer (e.g. apt install openjdk-17-jre-headless) on "
                "PATH or in JAVA_HOME.")
    out = subprocess.run([found, "-version"], capture_output=True, text=True, check=False)
    m = re.search(r'version "([^"]*)"', out.stderr + out.stdout)
    version = m.group(1) if m else "unknown"
    parts = version.split(".")
    major = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
    if not major.isdigit() or int(major) < 17:
        return f"Java {version} found at {found}; Spark 4 needs Java 17 or newer."
    return None


def _properties_text(private: dict[str, str], spark_home: Path) -> str:
    """``spark-defaults.conf`` (which ``--properties-file`` would replace) followed by ``private``."""
    conf_dir = Path(os.environ.get("SPARK_CONF_DIR") or spark_home / "conf")
    defaults = conf_dir / "spark-defaults.conf"
    head = defaults.read_text() + "\n" if defaults.is_file() else ""

    def esc(text: str, key: bool = False) -> str:
        text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return re.sub(r"([=: ])", r"\\\1", text) if key else text

    return head + "".join(f"{esc(k, key=True)}={esc(v)}\n" for k, v in sorted(private.items()))


def _forwarding(proc: subprocess.Popen) -> dict[int, object]:
    """Pass SIGTERM, SIGINT and SIGHUP on to ``proc``; the previous handlers, to restore."""
    def forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    return {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def launch(cmd: SubmitCommand) -> int:
    """Run ``cmd``: exec it in place (client deploy mode, serve), or wait for it and return the job's code.

    In cluster deploy mode spark-submit exits 1 for every failed application; the job's own exit
    code is read from the status file its driver wrote (:mod:`lakeloop.job_status`).
    """
    env = {**os.environ, **cmd.env}
    if cmd.status_uri is None and not cmd.private:
        os.execvpe(cmd.argv[0], cmd.argv, env)
    spark_home = Path(cmd.argv[0]).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="lakeloop-submit-") as tmp:  # a 0700 directory
        argv = list(cmd.argv)
        if cmd.private:
            path = Path(tmp) / "private.properties"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(_properties_text(cmd.private, spark_home))
            argv[argv.index(PRIVATE_PROPERTIES)] = str(path)
        proc = subprocess.Popen(argv, env=env)
        previous = _forwarding(proc)
        try:
            rc = proc.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
    return _job_exit_code(cmd, rc, str(spark_home))


def _job_exit_code(cmd: SubmitCommand, rc: int, spark_home: str) -> int:
    if cmd.status_uri is None:
        return rc
    try:
        status = job_status.read_status(cmd.status_uri, spark_home)
    except OSError as exc:
        print(f"spark-submit.sh: could not read the job status: {exc}; exit code {rc} of spark-submit",
              file=sys.stderr)
        return rc
    if status is None:
        print(f"spark-submit.sh: no job status at {cmd.status_uri} (the driver did not start or was killed); "
              f"exit code {rc} of spark-submit", file=sys.stderr)
        return rc
    job_status.remove_status(cmd.status_uri, spark_home)
    code = int(status["exit_code"])
    print(f"spark-submit.sh: {status.get('job')} exit code {code} (spark-submit: {rc})", file=sys.stderr)
    return code


def command_from_args(argv: list[str]) -> SubmitCommand:
    """The command of ``JOB [--env ENV] [--set k=v ...] [--conf-dir DIR] [job args]`` (the console script)."""
    args, job_args = _parser().parse_known_args(list(argv))
    return build_command(args.job, args.env, args.overrides, job_args, conf_dir=args.conf_dir)


def main(argv: list[str] | None = None) -> int:
    """``spark-submit.sh JOB ...`` (``python -m lakeloop.submit``): help, ``--dry-run``, or run the job."""
    args, job_args = _parser().parse_known_args(list(sys.argv[1:] if argv is None else argv))
    jobs = list_jobs()
    if args.help and not args.job:
        print(wrapper_help(), end="")
        return 0
    if not args.job or args.job not in jobs:
        if args.job:
            print(f"spark-submit.sh: unknown job {args.job!r}", file=sys.stderr)
        print(f"usage: {USAGE}\njobs: " + " ".join(jobs), file=sys.stderr)
        return EXIT_USAGE
    if args.help:
        return job_help(args.job)
    try:
        cmd = build_command(args.job, args.env, args.overrides, job_args, conf_dir=args.conf_dir,
                            check_files=not args.dry_run)
        deploy_checks.enforce(load_conf(args.env, args.overrides, args.conf_dir), args.job,
                              argparse.Namespace(state_dir=arg_value(job_args, "--state-dir")))
    except ConfError as exc:
        print(f"spark-submit.sh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(cmd.render())
        return 0
    problem = java_problem() if cmd.java else None
    if problem:
        print(f"spark-submit.sh: {problem}", file=sys.stderr)
        return EXIT_USAGE
    return launch(cmd)


if __name__ == "__main__":
    sys.exit(main())

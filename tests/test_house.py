"""The structure the engine promises: one job convention, one way in, no global table settings, no cycles."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lakeloop import cli
from lakeloop.job import JOBS, JobResult, job_module

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"


# -- one convention for every job ------------------------------------------------------------------------------

@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_is_a_library_module_with_one_convention(job):
    module = job_module(job)
    assert isinstance(module.DESCRIPTION, str) and module.DESCRIPTION
    assert list(inspect.signature(module.add_arguments).parameters) == ["parser"]
    assert list(inspect.signature(module.run).parameters)[:3] == ["ctx", "spark", "args"]
    assert "JobResult" in str(inspect.signature(module.run).return_annotation)
    help_text = cli.build_parser(job).format_help()
    assert module.DESCRIPTION in " ".join(help_text.split()) and "--env" in help_text and "--date" in help_text


@pytest.mark.parametrize("job", sorted(JOBS))
def test_job_entry_files_only_call_the_library(job):
    """``jobs/<name>.py`` holds a docstring, imports, ``main`` calling ``cli.main(name)`` and the main guard."""
    tree = ast.parse((ROOT / "jobs" / f"{job}.py").read_text())
    kinds = [type(node).__name__ for node in tree.body]
    assert kinds == ["Expr", "ImportFrom", "Import", "ImportFrom", "FunctionDef", "If"]
    (ret,) = tree.body[4].body
    call = ret.value
    assert ast.unparse(call) == f"cli.main('{job}', argv)"


def test_every_entry_file_is_a_registered_job():
    files = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if not p.stem.startswith("_"))
    assert files == sorted(JOBS)


def test_a_result_carries_summary_and_exit_code_to_the_caller(spark, tmp_path):
    outcome = cli.execute("validate", ["--date", "2026-11-01", "--conf-dir", str(ROOT / "conf"),
                                       "--set", f"warehouse={tmp_path / 'w'}", "--set", "validate.enabled=false"])
    assert outcome.exit_code == 0 and isinstance(outcome.result, JobResult)
    assert outcome.summary == {"enabled": False}
    assert cli.execute("ingest", ["--date", "2026-13-01"]).exit_code == 2  # bad date: usage error, no exception


# -- the console script -----------------------------------------------------------------------------------------

def _console() -> Path:
    script = Path(sys.executable).parent / "lakeloop"
    assert script.is_file(), "the lakeloop console script is not installed: run ./setup.sh"
    return script


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LAKELOOP_HOME", "PYTHONPATH")}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_console_script_help_lists_jobs_and_prints_each_jobs_options(tmp_path):
    top = _run([str(_console()), "--help"], tmp_path)
    assert top.returncode == 0 and all(job in top.stdout for job in JOBS)
    train = _run([str(_console()), "train", "--help"], tmp_path)
    assert train.returncode == 0 and "--backend" in train.stdout and "--shuffle-labels" in train.stdout
    unknown = _run([str(_console()), "nope"], tmp_path)
    assert unknown.returncode == 2 and "unknown job 'nope'" in unknown.stderr


def test_console_script_builds_the_same_command_as_the_wrapper(tmp_path):
    args = ["ingest", "--dry-run", "--date", "2026-11-01", "--conf-dir", str(ROOT / "conf")]
    console = _run([str(_console()), *args], tmp_path)
    wrapper = _run([str(ROOT / "spark-submit.sh"), *args], tmp_path)
    assert console.returncode == wrapper.returncode == 0
    assert console.stdout == wrapper.stdout and "jobs/ingest.py --env local" in console.stdout


# -- the import graph ------------------------------------------------------------------------------------------

def _modules() -> dict[str, Path]:
    out = {}
    for path in [*(LIB / "lakeloop").rglob("*.py"), *(LIB / "lakeloop_apps").rglob("*.py")]:
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every lakeloop (or lakeloop_apps) module ``name`` imports, lazily inside functions included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            found.update(subs if all(s in modules for s in subs) else [node.module, *subs])
    resolved = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_module_graph_has_no_cycle():
    graph = _graph()
    cycles = sorted(m for m in graph if m in _reachable(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_the_engine_never_imports_the_sample_data_generator():
    """The app's generator runs as the ``datagen`` job (by its name in the job map), never as an import."""
    graph = _graph()
    engine = [m for m in graph if m.split(".")[0] == "lakeloop"]
    for start in engine:
        assert not {m for m in _reachable(graph, start) if m.startswith("lakeloop_apps.recommender.datagen")}, start


def test_the_engine_names_no_column_of_the_recommender_app():
    """Column names and event types of the built-in app live in conf/ and lakeloop_apps, not in the engine."""
    import re

    domain = re.compile(r"user_id|item_id|purchase|category")
    engine = LIB / "lakeloop"
    hits = [f"{p.relative_to(engine)}:{i}: {line.strip()}" for p in sorted(engine.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if domain.search(line)]
    assert not hits, hits


def test_no_module_global_table_settings():
    from lakeloop.delta import log

    assert not hasattr(log, "configure") and not hasattr(log, "_DEFAULTS")
    from lakeloop import tables

    assert not hasattr(tables, "configure")


def test_fault_injection_is_not_a_production_conf_key():
    from lakeloop.conf import SPEC

    assert not [k for k in SPEC if "fail" in k]


def test_code_reads_defaults_from_the_conf_spec_only():
    """No ``conf.get(key) or literal`` / ``conf.get(key, literal)``: the default lives in ``DEFAULTS``.
    (A Spark property that is not set keeps Spark's own default, so ``spark.*`` keys are left out.)"""
    import re

    pattern = re.compile(r"conf\.get\(\"(?!spark\.)[^)]*\)\s+or\s+[\"'{\[0-9]|conf\.get\(\"(?!spark\.)[^\"]+\",\s")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (LIB / "lakeloop").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits


def test_base_yaml_repeats_no_default():
    import yaml
    from lakeloop.conf import DEFAULTS, SPEC, _flatten

    base = dict(_flatten(yaml.safe_load((ROOT / "conf" / "base.yaml").read_text()), "base.yaml"))
    assert not [k for k, v in base.items() if k in DEFAULTS and DEFAULTS[k] == v]
    assert set(DEFAULTS) <= set(SPEC)


# -- table settings travel with the lake -----------------------------------------------------------------------

@pytest.fixture
def opened_with(monkeypatch):
    """Records the storage options of every table location opened, per job (the real tables still open)."""
    from dataclasses import dataclass

    from lakeloop.delta import log

    seen: list[dict[str, str]] = []

    @dataclass(frozen=True)
    class Recorded(log.TableLocation):
        def __post_init__(self) -> None:
            seen.append(dict(self.storage_options))

    monkeypatch.setattr(log, "TableLocation", Recorded)
    return seen


@pytest.mark.slow
def test_storage_options_from_conf_reach_every_job(spark, tmp_path, opened_with):
    """``delta.storage_options`` from the command line reaches every table each job opens."""
    from tests.test_pipeline import job_args

    options = ["--set", "delta.storage_options.timeout=120s"]
    args = [*job_args(tmp_path), *options, "--set", "train.gate_margin=-1.0"]
    date = "2026-11-03"
    assert cli.execute("datagen", ["--date", date, "--events", "1500", *args]).exit_code == 0
    for job in ("ingest", "curate", "features", "train", "infer", "stream"):
        opened_with.clear()
        extra = ["--trigger", "availableNow"] if job == "stream" else []
        assert cli.execute(job, ["--date", date, *args, *extra]).exit_code == 0, job
        assert opened_with, f"{job} opened no table"
        assert all(o == {"timeout": "120s"} for o in opened_with), (job, opened_with)

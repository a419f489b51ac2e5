"""Watching a real `automl search`: Ray's dashboard API during it, Optuna's dashboard and MLflow after it.

One short search on real photos (the `cats_and_dogs` fixture: 60 animals10 photos, EfficientNet-Lite0 with its
real weights, cut `all`, a fresh cache so the features are extracted), run by the CLI in a subprocess with its
own local Ray (token authentication on, as users get it) and MLflow on (a SQLite store in a temporary folder).
While it runs, a thread reads the Ray dashboard's API with the token: the actors, and the node's Prometheus
export. Afterwards a real `optuna-dashboard` server is started on loopback over the run's study file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from automl.monitoring.optuna_study import study_path
from automl.runs import RunFolder
from automl.search import tune_state

pytestmark = pytest.mark.slow

TRIALS = 6
STATES = {"complete": "Complete", "pruned": "Pruned", "failed": "Fail"}


def read_trials(run_dir: Path) -> pd.DataFrame:
    """The run's trials as one table (the typed records flattened), for comparisons with the study."""
    return tune_state.read_trials(RunFolder(Path(run_dir))).to_frame()


@dataclass
class Seen:
    """What the dashboard's API showed during the search."""

    actors: dict[str, dict] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Search:
    run_dir: Path
    stderr: str
    seen: Seen
    mlflow_uri: str
    summary: dict


def _token() -> str:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).read_text().strip()


def _get(url: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.read()


def _watch(process: subprocess.Popen, stderr_path: Path, seen: Seen) -> None:
    """Poll the dashboard API while the search runs: actors by id, automl metrics by their Prometheus line."""
    dashboard = None
    while process.poll() is None:
        time.sleep(1.0)
        if dashboard is None:
            found = re.search(r"dashboard (http://[\d.:]+)", stderr_path.read_text(errors="replace"))
            dashboard = found and found.group(1)
            continue
        try:
            token = _token()
            actors = json.loads(_get(f"{dashboard}/api/v0/actors?detail=1&limit=1000", token))
            for actor in actors["data"]["result"]["result"]:
                seen.actors[actor["actor_id"]] = actor
            nodes = json.loads(_get(f"{dashboard}/nodes?view=summary", token))["data"]["summary"]
            for node in nodes:
                text = _get(
                    f"http://{node['raylet']['nodeManagerAddress']}:{node['raylet']['metricsExportPort']}/metrics"
                )
                for line in text.decode().splitlines():
                    if line.startswith("ray_automl_"):
                        name, value = line.rsplit(" ", 1)
                        seen.metrics[name] = float(value)
        except (OSError, KeyError, ValueError) as exc:  # the search is starting or ending: try again
            seen.errors.append(repr(exc))


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory, cats_and_dogs: Path) -> Search:
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'automl[mlflow]')")
    root = tmp_path_factory.mktemp("watched")
    recipe = root / "cats_and_dogs.yaml"
    recipe.write_text(
        f"data: {{folder: {cats_and_dogs}}}\n"
        "search: {backbones: efficientnet_lite0, cuts: all, heads: [softmax, svm], epochs: 6, scheduler: asha}\n"
        f"budget: {{time: 5m, trials: {TRIALS}}}\n"
        f"output: {{folder: {root / 'runs'}}}\n"
    )
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {
        **os.environ,
        "AUTOML_CACHE": str(root / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "RAY_metrics_report_interval_ms": "2000",  # Ray exports custom metrics every 10 s by default
    }
    env.pop("RAY_AUTH_MODE", None)  # token authentication, Ray's default
    stderr_path = root / "stderr.txt"
    seen = Seen()
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "automl", "search", str(recipe), "--json"],
            env=env,
            cwd=root,  # MLflow's SQLite store keeps artifacts under ./mlruns
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        watcher = threading.Thread(target=_watch, args=(process, stderr_path, seen), daemon=True)
        watcher.start()
        stdout, _ = process.communicate(timeout=600)
        watcher.join(timeout=30)
    text = stderr_path.read_text(errors="replace")
    assert process.returncode == 0, text[-3000:]
    summary = json.loads(stdout)
    return Search(Path(summary["run_dir"]), text, seen, mlflow_uri, summary)


def test_the_search_prints_the_optuna_dashboard_command_next_to_the_ray_dashboard(search: Search) -> None:
    assert re.search(r"dashboard http://[\d.:]+", search.stderr)
    assert f"optuna-dashboard {study_path(search.run_dir)}" in search.stderr


def test_trial_actors_are_named_by_the_configuration_they_run(search: Search) -> None:
    trials = read_trials(search.run_dir)
    labels = _study_labels(search.run_dir)
    named = [a for a in search.seen.actors.values() if a["class_name"] == "AutomlTrial"]
    assert named, f"no trial actor seen in the dashboard's API (errors: {search.seen.errors[-3:]})"
    for actor in named:
        assert actor["repr_name"] in labels, f"{actor['repr_name']!r} is not the configuration of a trial"
    assert all(re.fullmatch(r"lite0/all (softmax|svm C=\S+) (sgd|adam) lr=\S+", a["repr_name"]) for a in named)
    assert len(trials) > 1


def test_the_search_exports_its_progress_as_ray_metrics(search: Search) -> None:
    metrics = search.seen.metrics
    run = search.run_dir.name

    def value(name: str, **tags: str) -> float | None:
        for line, number in metrics.items():
            if line.startswith(name + "{") and all(f'{key}="{tag}"' in line for key, tag in tags.items()):
                return number
        return None

    assert value("ray_automl_search_trials", run=run, state="complete"), f"seen: {sorted(metrics)[:10]}"
    assert value("ray_automl_search_trials", run=run, state="running") is not None
    best = value("ray_automl_search_best_score", run=run, metric="val_accuracy")
    assert best is not None and 0 < best <= 1
    assert value("ray_automl_extraction_images_per_second", backbone="efficientnet_lite0") > 0
    assert value("ray_automl_extraction_images_total", backbone="efficientnet_lite0") >= 40


def test_optuna_dashboard_serves_the_runs_study_with_states_and_parameters(search: Search) -> None:
    trials = read_trials(search.run_dir)
    trials = trials[~trials["baseline"]].set_index("trial_id")
    port = _free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    server = subprocess.Popen(
        [str(dashboard), "--host", "127.0.0.1", "--port", str(port), str(study_path(search.run_dir))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        studies = json.loads(_wait_for(f"http://127.0.0.1:{port}/api/studies", server))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["cats_and_dogs"]
        detail = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}"))
    finally:
        server.terminate()
        server.wait(timeout=30)
    shown = {_attr(t, "tune_trial"): t for t in detail["trials"]}
    assert set(shown) == set(trials.index), "every trial of the search, and only those"
    for trial_id, row in trials.iterrows():
        trial = shown[trial_id]
        assert trial["state"] == STATES[row["status"]], (trial_id, row["status"], trial["state"])
        params = {p["name"]: p["param_external_value"] for p in trial["params"]}
        assert params["head"] == row["param_head"] and params["optimizer"] == row["param_optimizer"]
        assert float(params["learning_rate"]) == pytest.approx(row["param_learning_rate"])
        assert _attr(trial, "backbone") == "efficientnet_lite0" and _attr(trial, "status") == row["status"]
        if row["status"] == "complete":
            assert trial["values"] == [pytest.approx(row["val_accuracy"])]
        assert len(trial["intermediate_values"]) == row["epochs"]


def test_mlflow_has_a_parent_run_a_child_per_trial_and_the_model(search: Search) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(search.mlflow_uri)
    experiment = client.get_experiment_by_name("cats_and_dogs")
    parents = client.search_runs([experiment.experiment_id], filter_string=f"run_name = '{search.run_dir.name}'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["test_top1"] == pytest.approx(search.summary["best"]["test_top1"])
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    trials = read_trials(search.run_dir)
    trials = trials[~trials["baseline"]].set_index("name")
    assert sorted(run.info.run_name for run in children) == sorted(trials.index), "one child run per trial"
    for run in children:
        row = trials.loc[run.info.run_name]
        assert run.data.tags["automl.status"] == row["status"]
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == list(range(1, row["epochs"] + 1)), "one value per epoch"
    model = [a.path for a in client.list_artifacts(parent.info.run_id, "model")]
    assert "model/model.keras" in model and "model/automl.json" in model
    files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.html", "metrics.json", "summary.json", "trials.parquet", "optuna.log"} <= files


def _study_labels(run_dir: Path) -> set[str]:
    import optuna

    from automl.monitoring.optuna_study import journal_storage

    study = optuna.load_study(study_name="cats_and_dogs", storage=journal_storage(study_path(run_dir)))
    return {trial.user_attrs["label"] for trial in study.trials}


def _attr(trial: dict, key: str) -> str | None:
    return next((a["value"] for a in trial["user_attrs"] if a["key"] == key), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, timeout: float = 60) -> bytes:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.poll() is None, server.stderr.read().decode()[-2000:]
        try:
            return _get(url)
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"optuna-dashboard did not answer {url} within {timeout} s")

"""The one module that reads Ray Tune's on-disk state: the trials of a running or killed search as records.

A Ray upgrade that changes Tune's files changes this module only. It reads files alone, so it works on a
running search, a finished one, and one whose driver was killed: Tune's experiment state
(`experiment_state-*.json`, saved every second) gives each trial's status and error, and each trial
folder's `result.json` (one line per report) its per-epoch metrics. Until Tune first saves its state,
the trial folders alone are read.

How Tune's states map to `TrialStatus`: TERMINATED with a final checkpoint is `complete`, TERMINATED
without one `pruned` (the scheduler or the end of the search stopped it), ERROR `failed`, RUNNING
`running`, PENDING and PAUSED `pending`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from automl.dimensions import params_of
from automl.runs.folder import RESULT_FILE, RunFolder
from automl.runs.trials import Epoch, TrialRecord, TrialStatus, TrialTable
from automl.search.budget import METRIC

_TUNE_STATUS = {
    "PENDING": TrialStatus.PENDING,
    "RUNNING": TrialStatus.RUNNING,
    "PAUSED": TrialStatus.PENDING,
    "ERROR": TrialStatus.FAILED,
}


def read_trials(folder: RunFolder) -> TrialTable:
    """A run's trials, best first: trials.parquet once the search has finished (baseline included), else live."""
    if folder.trials.is_file():
        return TrialTable.read(folder.trials)
    return collect_trials(folder)


def can_resume(folder: RunFolder) -> bool:
    """Whether the run folder holds a Tune experiment that `Tuner.restore` can continue."""
    from ray.tune import Tuner

    return bool(Tuner.can_restore(str(folder.experiment)))


def collect_trials(folder: RunFolder) -> TrialTable:
    """One record per Tune trial, best first (by `val_accuracy`, then the faster); empty before the first trial."""
    experiment = folder.experiment
    states = _trial_states(experiment)
    names = set(states) | {path.name for path in experiment.glob("*") if (path / "params.json").is_file()}
    return TrialTable(tuple(_trial_record(experiment / name, states.get(name)) for name in sorted(names))).ranked()


def _trial_states(folder: Path) -> dict[str, dict[str, Any]]:
    """Tune's saved view of each trial, by trial folder name: status, failures, error file."""
    # one state file per driver session, named by its start time (a resume adds one): the last name is current
    saved = sorted(folder.glob("experiment_state-*.json"))
    if not saved:
        return {}
    try:
        state = json.loads(saved[-1].read_text())
    except (OSError, json.JSONDecodeError):  # being rewritten: the trial folders still tell most
        return {}
    trials = {}
    for trial_json, runtime_json in state.get("trial_data", []):
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        name = trial.get("custom_dirname") or trial.get("relative_logdir")
        trials[name] = {"status": trial["status"], "failures": runtime.get("num_failures", 0)}
    return trials


def _trial_record(trial_dir: Path, state: dict[str, Any] | None) -> TrialRecord:
    params = _read_json(trial_dir / "params.json") or {}
    reports = _read_results(trial_dir / "result.json")
    epochs = [r for r in reports if not r.get("final")]
    final = next((r for r in reversed(reports) if r.get("final")), None)
    checkpoint = final.get("checkpoint_dir_name") if final else None
    tune_status = (state or {}).get("status", "RUNNING" if reports else "PENDING")
    if tune_status == "TERMINATED":
        status = TrialStatus.COMPLETE if checkpoint else TrialStatus.PRUNED
    else:
        status = _TUNE_STATUS.get(tune_status, TrialStatus.FAILED)
    last = reports[-1] if reports else {}
    return TrialRecord(
        trial_id=str(last.get("trial_id") or trial_dir.name.rsplit("-", 1)[-1]),
        name=trial_dir.name,
        status=status,
        params=params_of(params),
        val_accuracy=final[METRIC] if final else max((r[METRIC] for r in epochs), default=None),
        val_top5=final["val_top5"] if final else max((r["val_top5"] for r in epochs), default=None),
        epochs=len(epochs),
        best_epoch=final["best_epoch"] if final else None,
        seconds=final["train_seconds"] if final else last.get("time_total_s"),
        finished_at=last.get("timestamp") if status.finished else None,
        node_id=last.get("node_id"),
        cache_hits=final.get("cache_hits") if final else None,
        failures=(state or {}).get("failures", 0),
        error=_error(trial_dir) if status == TrialStatus.FAILED else None,
        checkpoint=str(trial_dir / checkpoint / RESULT_FILE) if checkpoint else None,
        history=tuple(Epoch.from_report(r) for r in epochs),
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_results(path: Path) -> list[dict[str, Any]]:
    """Tune's result.json: one JSON object per line; a line being written is skipped.

    A trial restarted (after a worker died or a resume) starts again at `training_iteration` 1: only the
    reports of its last attempt count.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    reports: list[dict[str, Any]] = []
    for line in lines:
        try:
            report = json.loads(line)
        except json.JSONDecodeError:
            continue
        if report.get("training_iteration") == 1:
            reports = []
        reports.append(report)
    return reports


def _error(trial_dir: Path) -> str | None:
    """The last line of the trial's error (the exception), as Tune wrote it in error.txt."""
    try:
        lines = [line for line in (trial_dir / "error.txt").read_text().splitlines() if line.strip()]
    except OSError:
        return "failed (no error file)"
    if len(lines) >= 2 and lines[-1].strip().startswith("hint:"):  # an AutomlError: its message, then its hint
        return f"{lines[-2]} ({lines[-1].strip()})"[:500]
    return lines[-1][:500] if lines else None

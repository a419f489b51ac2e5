"""Every trial of a search, read from the run folder: for `automl status`, the live line and trials.parquet.

It reads only files, so it works on a running search, a finished one, and one whose driver was killed:
Tune's experiment state (`experiment_state-*.json`, saved every second) gives each trial's status and
error, and each trial folder's `result.json` (one line per report) its per-epoch metrics. Until Tune
first saves its state, the trial folders alone are read.

Statuses: `complete` (training ended and left its weights), `pruned` (stopped early by the scheduler
or by the end of the search, so no weights), `failed` (raised or its worker died, retries used up),
`running`, `pending`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from automl.search.layout import METRIC, RESULT_FILE, RunLayout

PARAM_PREFIX = "param_"
EPOCH_METRICS = ("val_accuracy", "val_top5", "train_loss", "train_accuracy", "val_loss", "epoch_seconds")
_TUNE_STATUS = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "pending", "ERROR": "failed"}
_IGNORED_CONFIG = ("epochs", "seed")


def read_trials(run_dir: Path) -> pd.DataFrame:
    """The search's table: trials.parquet once the search has finished (baseline included), else live."""
    layout = RunLayout(run_dir)
    if layout.trials.is_file():
        return _ranked(pd.read_parquet(layout.trials, engine="fastparquet"))
    return collect_trials(run_dir)


def collect_trials(run_dir: Path) -> pd.DataFrame:
    """One row per Tune trial, best first (by `val_accuracy`, then the faster); empty before the first trial."""
    folder = RunLayout(run_dir).experiment
    states = _trial_states(folder)
    names = set(states) | {path.name for path in folder.glob("*") if (path / "params.json").is_file()}
    rows = [_trial_row(folder / name, states.get(name)) for name in sorted(names)]
    return _ranked(pd.DataFrame(rows))


def _ranked(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame.sort_values([METRIC, "seconds"], ascending=[False, True], na_position="last").reset_index(drop=True)


def best_trial(trials: pd.DataFrame) -> pd.Series | None:
    """The complete trial with the highest validation accuracy; ties go to the faster one."""
    complete = trials[trials["status"] == "complete"] if not trials.empty else trials
    if complete.empty:
        return None
    return complete.sort_values([METRIC, "seconds"], ascending=[False, True]).iloc[0]


def counts(trials: pd.DataFrame) -> dict[str, int]:
    """Trials by status: done (complete + pruned), running, pending, failed."""
    status = trials["status"] if not trials.empty else pd.Series(dtype=str)
    return {
        "done": int(status.isin(["complete", "pruned"]).sum()),
        "complete": int((status == "complete").sum()),
        "pruned": int((status == "pruned").sum()),
        "running": int((status == "running").sum()),
        "pending": int((status == "pending").sum()),
        "failed": int((status == "failed").sum()),
    }


def describe_config(row: pd.Series) -> str:
    """`efficientnet_lite0/all softmax adam lr=0.003 eps=1e-07 bs=32`: a trial's configuration in one line."""
    p = {key.removeprefix(PARAM_PREFIX): value for key, value in row.items() if key.startswith(PARAM_PREFIX)}
    text = f"{p.get('backbone')}/{p.get('cut')} {p.get('head')}"
    if p.get("head") == "mlp":
        text += f"({_short(p.get('mlp_hidden'))}, dropout {_short(p.get('dropout'))})"
    elif p.get("head") == "svm":
        text += f"(C={_short(p.get('svm_c'))})"
    text += f" {p.get('optimizer')} lr={_short(p.get('learning_rate'))}"
    if p.get("optimizer") == "adam":
        text += f" eps={_short(p.get('epsilon'))}"
    return f"{text} bs={_short(p.get('batch_size'))}"


def _short(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


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


def _trial_row(trial_dir: Path, state: dict[str, Any] | None) -> dict[str, Any]:
    params = _read_json(trial_dir / "params.json") or {}
    reports = _read_results(trial_dir / "result.json")
    epochs = [r for r in reports if not r.get("final")]
    final = next((r for r in reversed(reports) if r.get("final")), None)
    checkpoint = final and final.get("checkpoint_dir_name")
    tune_status = (state or {}).get("status", "RUNNING" if reports else "PENDING")
    if tune_status == "TERMINATED":
        status = "complete" if checkpoint else "pruned"
    else:
        status = _TUNE_STATUS.get(tune_status, tune_status.lower())
    last = reports[-1] if reports else {}
    error = _error(trial_dir) if status == "failed" else None
    row: dict[str, Any] = {
        "trial_id": last.get("trial_id") or trial_dir.name.rsplit("-", 1)[-1],
        "name": trial_dir.name,
        "status": status,
        METRIC: final[METRIC] if final else max((r[METRIC] for r in epochs), default=math.nan),
        "val_top5": final["val_top5"] if final else max((r["val_top5"] for r in epochs), default=math.nan),
        "epochs": len(epochs),
        "best_epoch": final["best_epoch"] if final else None,
        "seconds": final["train_seconds"] if final else last.get("time_total_s", math.nan),
        "finished_at": last.get("timestamp") if status in ("complete", "pruned", "failed") else None,
        "node_id": last.get("node_id"),
        "cache_hits": final.get("cache_hits") if final else None,
        "failures": (state or {}).get("failures", 0),
        "error": error,
        "checkpoint": str(trial_dir / checkpoint / RESULT_FILE) if checkpoint else None,
    }
    for key, value in params.items():
        if "@" not in key and key not in _IGNORED_CONFIG:
            row[PARAM_PREFIX + key] = value
    for metric in EPOCH_METRICS:
        row[f"epoch_{metric}"] = json.dumps([r.get(metric) for r in epochs])
    return row


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
    reports = []
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

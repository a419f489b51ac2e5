"""The trials of a search as typed records, and trials.parquet, the table a finished search leaves.

Modelled on Optuna's `FrozenTrial` / `TrialState`: a `TrialRecord` is one trial frozen at the time it
was read, with a `TrialStatus`; callers filter by status (`TrialTable.get(states=...)`) and take the best
with one `max` (`TrialTable.best()`). The records come from two places: Ray Tune's files while a search
runs (`automl.search.tune_state`, the only reader of those) and trials.parquet once it has finished.

trials.parquet, schema 2 (the version is in the file's key-value metadata, `automl.trials.schema`): one
row per trial, the scalar fields as columns, `params` a JSON object (so an MLP width stays an int: a
Parquet column shared with trials that lack it would make it a float), `history` a JSON list of epochs.
Schema 1 (no version; runs written before 2026-11-30) had one `param_<dimension>` column per
dimension and one `epoch_<metric>` JSON list per metric; it is still read.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, SupportsFloat, cast

from automl.atomic import staging_file
from automl.dimensions import BY_NAME, CONTINUOUS, Value, describe, params_of
from automl.runs.folder import RunFolderError

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_KEY = "automl.trials.schema"
SCHEMA = 2
PARAM_PREFIX = "param_"
"""Schema 1's parameter columns, and the columns of `TrialTable.to_frame()`."""
BASELINE = "baseline"
"""Name of the baseline's record: the default configuration trained alone before the search."""


class TrialStatus(StrEnum):
    COMPLETE = "complete"
    """Training ended and left its weights (a checkpoint)."""
    PRUNED = "pruned"
    """Stopped early by the scheduler or by the end of the search: no weights."""
    FAILED = "failed"
    """Raised, or its worker died, with its retries used up."""
    RUNNING = "running"
    PENDING = "pending"

    @property
    def finished(self) -> bool:
        return self in (TrialStatus.COMPLETE, TrialStatus.PRUNED, TrialStatus.FAILED)


def ended_status(last_result: Mapping[str, object]) -> TrialStatus:
    """How a trial that ended without an error ended: COMPLETE when its final report (with its weights) came in,
    PRUNED when the scheduler or the end of the search stopped it before."""
    return TrialStatus.COMPLETE if last_result.get("final") else TrialStatus.PRUNED


@dataclass(frozen=True)
class Epoch:
    """What a trial reported after one epoch (`automl.train.train_trial`'s report)."""

    val_accuracy: float | None = None
    val_top5: float | None = None
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    epoch_seconds: float | None = None

    @classmethod
    def from_report(cls, report: Mapping[str, object]) -> Epoch:
        return cls(**{name: _float(report.get(name)) for name in EPOCH_METRICS})


EPOCH_METRICS: tuple[str, ...] = tuple(spec.name for spec in fields(Epoch))


@dataclass(frozen=True)
class TrialRecord:
    """One trial (or the baseline), as read at one moment."""

    trial_id: str
    name: str
    status: TrialStatus
    params: Mapping[str, Value] = field(default_factory=dict)
    """Its value of each search dimension it has (`automl.dimensions`)."""
    val_accuracy: float | None = None
    """Best epoch's validation accuracy: what the search maximises."""
    val_top5: float | None = None
    epochs: int = 0
    best_epoch: int | None = None
    seconds: float | None = None
    """Training time; wall time so far for an unfinished trial."""
    finished_at: float | None = None
    node_id: str | None = None
    cache_hits: int | None = None
    """Cached rows the trial read."""
    failures: int = 0
    error: str | None = None
    checkpoint: str | None = None
    """Path of its `TrialResult` (weights), for complete trials."""
    history: tuple[Epoch, ...] = ()
    baseline: bool = False

    def describe(self) -> str:
        """Its configuration in one line (`automl.dimensions.describe`)."""
        return describe(self.params)

    def to_row(self) -> dict[str, object]:
        """A flat row: scalar fields, then `param_<dimension>` and `epoch_<metric>` (lists)."""
        row: dict[str, object] = {
            spec.name: getattr(self, spec.name) for spec in fields(self) if spec.name not in ("params", "history")
        }
        row["status"] = str(self.status)
        row.update({PARAM_PREFIX + key: value for key, value in self.params.items()})
        row.update({f"epoch_{metric}": [getattr(e, metric) for e in self.history] for metric in EPOCH_METRICS})
        return row


class TrainedResult(Protocol):
    """What a finished training leaves (`automl.train.TrialResult`), as far as its record needs."""

    @property
    def config(self) -> Mapping[str, object]: ...
    @property
    def best_val_accuracy(self) -> float: ...
    @property
    def best_val_top5(self) -> float: ...
    @property
    def best_epoch(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def history(self) -> Sequence[Mapping[str, object]]: ...


def record_of(result: TrainedResult, trial_id: str, name: str, *, baseline: bool = False) -> TrialRecord:
    """The record of a training that ran outside Tune (the baseline, a test's own trials)."""
    return TrialRecord(
        trial_id=trial_id,
        name=name,
        status=TrialStatus.COMPLETE,
        params=params_of(result.config),
        val_accuracy=result.best_val_accuracy,
        val_top5=result.best_val_top5,
        epochs=len(result.history),
        best_epoch=result.best_epoch,
        seconds=result.seconds,
        finished_at=time.time(),
        history=tuple(Epoch.from_report(epoch) for epoch in result.history),
        baseline=baseline,
    )


@dataclass(frozen=True)
class TrialCounts:
    """Trials by status; `done` = complete + pruned."""

    done: int = 0
    complete: int = 0
    pruned: int = 0
    running: int = 0
    pending: int = 0
    failed: int = 0


@dataclass(frozen=True)
class TrialTable:
    """Every trial of a search, best first once `ranked`."""

    trials: tuple[TrialRecord, ...] = ()

    def __iter__(self) -> Iterator[TrialRecord]:
        return iter(self.trials)

    def __len__(self) -> int:
        return len(self.trials)

    def get(self, states: Iterable[TrialStatus] | None = None, *, baseline: bool = True) -> list[TrialRecord]:
        """The trials in one of `states` (all when None); `baseline=False` leaves the baseline out."""
        wanted = set(states) if states is not None else set(TrialStatus)
        return [t for t in self.trials if t.status in wanted and (baseline or not t.baseline)]

    def best(self) -> TrialRecord | None:
        """The complete trial with the highest validation accuracy; ties go to the faster one."""
        scored = [t for t in self.get([TrialStatus.COMPLETE]) if t.val_accuracy is not None]
        return min(scored, key=_rank, default=None)

    def counts(self) -> TrialCounts:
        """Trials by status, the baseline left out (it is no trial of the search)."""
        statuses = [t.status for t in self.trials if not t.baseline]
        tally = {status: statuses.count(status) for status in TrialStatus}
        return TrialCounts(
            done=tally[TrialStatus.COMPLETE] + tally[TrialStatus.PRUNED],
            **{str(status): n for status, n in tally.items()},
        )

    def ranked(self) -> TrialTable:
        """Best first: by validation accuracy, then the faster; trials without an accuracy last."""
        return TrialTable(tuple(sorted(self.trials, key=_rank)))

    def plus(self, record: TrialRecord) -> TrialTable:
        return TrialTable((*self.trials, record))

    def first_error(self) -> str | None:
        failed = self.get([TrialStatus.FAILED])
        return failed[0].error if failed else None

    def to_frame(self) -> pd.DataFrame:
        """One row per trial (`TrialRecord.to_row`), for the report's statistics."""
        import pandas as pd

        frame = pd.DataFrame([t.to_row() for t in self.trials])
        numeric = [c for c in frame if c in _NUMERIC or c.removeprefix(PARAM_PREFIX) in CONTINUOUS]
        return frame.assign(**{c: pd.to_numeric(frame[c], errors="coerce") for c in numeric})

    def write(self, path: str | os.PathLike[str]) -> None:
        """trials.parquet (schema `SCHEMA`), atomically."""
        import fastparquet
        import pandas as pd

        rows = [_parquet_row(t) for t in self.trials]
        frame = pd.DataFrame(rows, columns=_COLUMNS).astype(_DTYPES)
        with staging_file(path) as temp:
            fastparquet.write(str(temp), frame, custom_metadata={SCHEMA_KEY: str(SCHEMA)}, stats=False)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> TrialTable:
        """A trials.parquet of any schema this version knows; `RunFolderError` naming the file otherwise."""
        import fastparquet

        try:
            parquet = fastparquet.ParquetFile(str(path))
            schema = int(parquet.key_value_metadata.get(SCHEMA_KEY, "1"))
            if schema > SCHEMA:
                raise RunFolderError(
                    f"{path}: trials table schema {schema}, newer than this automl reads ({SCHEMA})",
                    hint="read it with the automl version that wrote it, or upgrade automl",
                )
            rows = cast("list[dict[str, object]]", parquet.to_pandas().to_dict(orient="records"))
            read_row = _from_row if schema == SCHEMA else _from_schema1_row
            return cls(tuple(read_row(row) for row in rows)).ranked()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunFolderError(
                f"{path}: not a readable trials table ({type(exc).__name__}: {exc})",
                hint="it may be damaged; `automl status` of a finished run reads only this file",
            ) from exc


def _rank(trial: TrialRecord) -> tuple[bool, float, float]:
    accuracy = trial.val_accuracy
    seconds = trial.seconds if trial.seconds is not None else math.inf
    return (accuracy is None, -(accuracy or 0.0), seconds)


_SCALARS: dict[str, str] = {
    "trial_id": "object",
    "name": "object",
    "status": "object",
    "val_accuracy": "float64",
    "val_top5": "float64",
    "epochs": "int64",
    "best_epoch": "Int64",
    "seconds": "float64",
    "finished_at": "float64",
    "node_id": "object",
    "cache_hits": "Int64",
    "failures": "int64",
    "error": "object",
    "checkpoint": "object",
    "baseline": "bool",
}
_COLUMNS = [*_SCALARS, "params", "history"]
_NUMERIC = frozenset(name for name, dtype in _SCALARS.items() if dtype != "object" and dtype != "bool")
_DTYPES = {**_SCALARS, "params": "object", "history": "object"}


def _parquet_row(trial: TrialRecord) -> dict[str, object]:
    row: dict[str, object] = {name: getattr(trial, name) for name in _SCALARS}
    row["status"] = str(trial.status)
    row["params"] = json.dumps(dict(trial.params))
    row["history"] = json.dumps([asdict(epoch) for epoch in trial.history])
    return row


def _from_row(row: Mapping[str, object]) -> TrialRecord:
    params = json.loads(str(row["params"]))
    history = json.loads(str(row["history"]))
    return _record(row, {k: BY_NAME[k].coerce(v) if k in BY_NAME else v for k, v in params.items()}, history)


def _from_schema1_row(row: Mapping[str, object]) -> TrialRecord:
    """A row of a table written before schema 2: `param_<dim>` columns (NaN where a trial lacked it)."""
    params: dict[str, Value] = {}
    for key, value in row.items():
        name = key.removeprefix(PARAM_PREFIX)
        if key.startswith(PARAM_PREFIX) and not _missing(value):
            params[name] = BY_NAME[name].coerce(value) if name in BY_NAME else str(value)
    lists = {m: _json_list(row.get(f"epoch_{m}")) for m in EPOCH_METRICS}
    count = max((len(values) for values in lists.values()), default=0)
    history = [{m: values[i] if i < len(values) else None for m, values in lists.items()} for i in range(count)]
    return _record(row, params, history)


def _record(row: Mapping[str, object], params: dict[str, Value], history: list[dict[str, object]]) -> TrialRecord:
    name = _str(row.get("name")) or _str(row.get("trial_id")) or "?"
    epochs = _int(row.get("epochs"))
    return TrialRecord(
        trial_id=_str(row.get("trial_id")) or name,
        name=name,
        status=TrialStatus(_str(row.get("status")) or TrialStatus.COMPLETE),
        params=params,
        val_accuracy=_float(row.get("val_accuracy")),
        val_top5=_float(row.get("val_top5")),
        epochs=epochs if epochs is not None else len(history),
        best_epoch=_int(row.get("best_epoch")),
        seconds=_float(row.get("seconds")),
        finished_at=_float(row.get("finished_at")),
        node_id=_str(row.get("node_id")),
        cache_hits=_int(row.get("cache_hits")),
        failures=_int(row.get("failures")) or 0,
        error=_str(row.get("error")),
        checkpoint=_str(row.get("checkpoint")),
        history=tuple(Epoch.from_report(epoch) for epoch in history),
        baseline=bool(row.get("baseline")) if not _missing(row.get("baseline")) else name == BASELINE,
    )


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, and pandas' NA (whose comparison raises)
    except TypeError:
        return True


def _float(value: object) -> float | None:
    if _missing(value) or isinstance(value, bool) or not isinstance(value, SupportsFloat):
        return None
    return float(value)


def _int(value: object) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _str(value: object) -> str | None:
    return None if _missing(value) else str(value)


def _json_list(value: object) -> list[object]:
    if _missing(value):
        return []
    loaded = json.loads(str(value))
    return list(loaded) if isinstance(loaded, list) else []

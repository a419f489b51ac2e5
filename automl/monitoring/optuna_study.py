"""The search's Optuna study, kept in a journal file of the run folder where Optuna's own tools read it.

Ray Tune's `OptunaSearch` holds its study in memory (pickled into Tune's searcher state), so nothing but
Tune can read it, and it tells Optuna that a trial ASHA stopped is COMPLETE with its last epoch's value:
the sampler then takes a pruned trial's early accuracy for a finished one's. `RunStudySearch` is that
searcher with four changes:

- **storage**: the study lives in `<run>/optuna.log` (Optuna's `JournalStorage`, one JSON line per change,
  appended by the driver as trials report). It is the very study the sampler asks, so
  `optuna-dashboard <run>/optuna.log` shows the search live and afterwards (history, intermediate values,
  parameter importances, parallel coordinates).
- **how a trial ended**: COMPLETE only with the trial's final report (it carries the best epoch's value and
  the weights); a trial stopped before it (by ASHA at a rung, or by the end of the search) is PRUNED, its
  epochs kept as intermediate values, which is how Optuna's samplers rank pruned trials; a trial that
  raised is FAIL.
- **each epoch reaches the study once**: Tune hands the searcher the last result a second time when a
  function trainable returns, and a retried or resumed trial reports its epochs again from 1; Optuna
  would warn "The reported value is ignored because this step is already reported" for each.
- **user attributes** for the dashboard: the trial's `label` (`lite1/all svm C=9.2 adam lr=0.003`),
  `tune_trial`, `backbone`, `cut`, `head` (also when the recipe fixes them, so they are not parameters),
  and at the end `status` (complete|pruned|failed, as in trials.parquet), `epochs`, `seconds`, `node_id`.

The end of an experiment (budget, target, Ctrl-C) stops the running trials without telling the searcher;
`settle` (called by `StudyEnd`, a Tune callback) tells Optuna how each ended, so no trial of a finished
search stays RUNNING.

Resume: Tune unpickles this searcher with its storage, which replays the same journal file, so a resumed
search goes on in the same study. A trial Tune runs again (it was running when the driver stopped) gets a
new Optuna trial with the same parameters (user attribute `rerun_of`); the earlier attempt keeps its end.
Trials the killed driver had asked Optuna for after Tune's last save of the searcher's state are in the
journal but unknown to the restored searcher: they are marked FAIL.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.trial import TrialState
from ray.tune import Callback
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from automl.monitoring.trial_names import trial_label
from automl.runs.folder import RunFolder
from automl.runs.trials import TrialStatus

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

LABEL_KEYS = ("backbone", "cut", "head")
"""Configuration keys kept as user attributes, so the dashboard shows them even when the recipe fixes them."""

DefineByRun = Callable[[optuna.Trial], dict[str, Any] | None]

logger = logging.getLogger(__name__)


def study_path(run_dir: Path) -> Path:
    return RunFolder(Path(run_dir).resolve()).study


def dashboard_command(run_dir: Path) -> str:
    """The shell command that serves the run's study in Optuna's dashboard (http://127.0.0.1:8080 by default)."""
    return f"optuna-dashboard {shlex.quote(str(study_path(run_dir)))}"


def journal_storage(path: Path) -> optuna.storages.JournalStorage:
    """The journal storage optuna-dashboard opens for a file path (same backend, same lock)."""
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


class RunStudySearch(OptunaSearch):
    """Tune's Optuna searcher writing its study to the run folder and telling Optuna how each trial ended.

    A trial's value is `metric` from its final report (a report with `final: True`); `space` is Optuna
    define-by-run, as for `OptunaSearch`.
    """

    @property
    def _study(self) -> optuna.Study:
        """The study Tune's searcher set up (it exists once the searcher has its space and metric)."""
        study = self._ot_study
        assert study is not None, "the searcher has no study yet"
        return study

    def __init__(
        self,
        space: Callable[[optuna.Trial], dict[str, Any]],
        *,
        metric: str,
        mode: str,
        sampler: optuna.samplers.BaseSampler,
        run_dir: Path,
        study_name: str,
    ) -> None:
        self._steps: dict[str, set[int]] = {}
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            sampler=sampler,
            study_name=study_name,
            storage=journal_storage(study_path(run_dir)),
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            trial = self._ot_trials[trial_id]
            trial.set_user_attr("label", trial_label(config))
            trial.set_user_attr("tune_trial", trial_id)
            for key in LABEL_KEYS:
                if key in config:
                    trial.set_user_attr(key, config[key])
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Report an epoch's value as an intermediate value, once per epoch; the final report is told at the end."""
        step = result.get(TRAINING_ITERATION)
        if step is None:  # a trial stopped before its first report
            return
        if trial_id in self._completed_trials and step == 1:
            self._rerun(trial_id)  # Tune runs it again after a resume: a new attempt, a new Optuna trial
        if result.get("final") or trial_id in self._completed_trials or self.metric not in result:
            return
        reported = self._steps.setdefault(trial_id, set())
        if step in reported:
            return
        self._ot_trials[trial_id].report(result[self.metric], step)
        reported.add(step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        trial = self._ot_trials[trial_id]
        final = bool(result and result.get("final"))
        if result and not final:  # Tune does not pass on the result it stops a trial at: the epoch ASHA judged
            self.on_trial_result(trial_id, result)
        status = TrialStatus.FAILED if error else TrialStatus.COMPLETE if final else TrialStatus.PRUNED
        trial.set_user_attr("status", status)
        for key, name in (("epochs_run", "epochs"), ("train_seconds", "seconds"), ("node_id", "node_id")):
            if result and result.get(key) is not None:
                trial.set_user_attr(name, result[key])
        state = {
            TrialStatus.COMPLETE: TrialState.COMPLETE,
            TrialStatus.PRUNED: TrialState.PRUNED,
            TrialStatus.FAILED: TrialState.FAIL,
        }[status]
        try:
            self._study.tell(trial, result[self.metric] if final and result else None, state=state)
        except Exception as exc:  # as OptunaSearch: a value Optuna refuses (NaN) must not stop the search
            logger.warning("trial %s: Optuna refused its result: %s", trial_id, exc)
        self._completed_trials.add(trial_id)
        self._steps.pop(trial_id, None)

    def settle(self, trials: list[Trial]) -> None:
        """At the end of the experiment, tell how the trials it stopped ended (Tune stops them without telling)."""
        for trial in trials:
            if trial.trial_id in self._ot_trials and trial.trial_id not in self._completed_trials:
                self.on_trial_complete(trial.trial_id, result=trial.last_result or None, error=trial.status == "ERROR")

    def _rerun(self, trial_id: str) -> None:
        """A new Optuna trial with the same parameters for a Tune trial run again; the old one keeps its end."""
        old = self._ot_trials[trial_id]
        attrs = {key: value for key, value in old.user_attrs.items() if key in ("label", "tune_trial", *LABEL_KEYS)}
        self._study.enqueue_trial(old.params, user_attrs={**attrs, "rerun_of": old.number})
        trial = self._study.ask()
        self._suggest_from_define_by_run_func(cast("DefineByRun", self._space), trial)  # takes the enqueued values
        self._ot_trials[trial_id] = trial
        self._completed_trials.discard(trial_id)
        self._steps[trial_id] = set()

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved searcher state, then the journal's view: trials told or epochs reported after that save,
        and trials lost with the driver."""
        super().restore(checkpoint_path)
        known = {trial.number: trial_id for trial_id, trial in self._ot_trials.items()}
        for frozen in self._study.get_trials(deepcopy=False):
            trial_id = known.get(frozen.number)
            if trial_id is not None and frozen.state.is_finished():
                self._completed_trials.add(trial_id)  # told just before the driver stopped
            elif trial_id is not None:
                self._steps[trial_id] = set(frozen.intermediate_values)
            elif frozen.state == TrialState.RUNNING:
                self._study.tell(frozen.number, state=TrialState.FAIL)


class StudyEnd(Callback):
    """Tune callback: at the end of the experiment, `searcher.settle` the trials Tune stopped."""

    def __init__(self, searcher: RunStudySearch) -> None:
        self.searcher = searcher

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.searcher.settle(trials)

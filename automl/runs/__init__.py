"""What a search leaves in a run folder, as typed records: every producer and consumer goes through here.

`RunFolder` names every path (and says what makes a folder a run); `TrialTable` / `TrialRecord` /
`TrialStatus` are the trials (trials.parquet, or Ray Tune's live files through
`automl.search.tune_state`); `Summary` and `TestMetrics` are summary.json and metrics.json. Light to
import: no Ray, no Keras.
"""

from automl.runs.folder import RunFolder, RunFolderError, latest
from automl.runs.records import BestTrial, Summary, TestMetrics
from automl.runs.trials import BASELINE, Epoch, TrialCounts, TrialRecord, TrialStatus, TrialTable

__all__ = [
    "BASELINE",
    "BestTrial",
    "Epoch",
    "RunFolder",
    "RunFolderError",
    "Summary",
    "TestMetrics",
    "TrialCounts",
    "TrialRecord",
    "TrialStatus",
    "TrialTable",
    "latest",
]

"""No code runs from a file a user hands the product: recipes, exported models, trial weights, backbone weights.

Two kinds of evidence. An audit of the product's own sources (automl/ and the plugins, tests excluded): no
call that can execute serialized code (pickle, cloudpickle, dill, joblib, torch.load, marshal, eval/exec,
numpy with allow_pickle=True, YAML's unsafe loaders, Keras with safe_mode=False). And a real file
that would run code if unpickled, planted where a search reads its trial weights back: it is refused and
its code never runs. The other doors have their own tests: Keras safe mode
(test_exported::test_a_keras_file_with_a_lambda_layer_is_refused_in_safe_mode), the Lite plugin's restricted
unpickler (test_torch_legacy::test_refuses_a_file_that_would_run_code), YAML tags
(test_recipe::test_yaml_is_loaded_safely).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from automl.train import TrialResult

REPO = Path(__file__).resolve().parents[1]
UNSAFE_CALLS = {
    r"\bpickle\.loads?\(": "pickle.load runs code from the file",
    r"\b(cloudpickle|dill|joblib|marshal)\b": "these unpicklers run code from the file",
    r"\btorch\.load\(": "torch.load unpickles",
    r"allow_pickle\s*=\s*True": "numpy object arrays are pickles",
    r"\byaml\.(load|unsafe_load|full_load|load_all)\(": "YAML loaders other than safe_load build Python objects",
    r"Loader\s*=\s*yaml\.(Loader|UnsafeLoader|FullLoader)\b": "an unsafe YAML loader",
    r"safe_mode\s*=\s*False": "Keras outside safe mode deserializes Lambda code",
    r"(?<![\w.])(eval|exec)\(": "evaluates text as code",
}
RESTRICTED_UNPICKLER = "plugins/automl-efficientnet-lite/automl_efficientnet_lite/torch_legacy.py"
"""The one pickle reader allowed: its `find_class` admits tensors and dicts only (tested in the plugin)."""


def _product_sources() -> list[Path]:
    sources = [*REPO.glob("automl/**/*.py"), *REPO.glob("plugins/*/*/**/*.py")]
    return sorted(path for path in sources if "tests" not in path.relative_to(REPO).parts)


def test_no_product_code_can_execute_a_serialized_file() -> None:
    sources = _product_sources()
    assert len(sources) > 30 and any(str(p.relative_to(REPO)) == RESTRICTED_UNPICKLER for p in sources)
    found = []
    for path in sources:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            code = line.split("#", 1)[0]
            found += [
                f"{path.relative_to(REPO)}:{number}: {why}"
                for pattern, why in UNSAFE_CALLS.items()
                if re.search(pattern, code)
            ]
    assert not found, "\n".join(found)
    unpicklers = [str(p.relative_to(REPO)) for p in sources if "pickle.Unpickler" in p.read_text(encoding="utf-8")]
    assert unpicklers == [RESTRICTED_UNPICKLER]


class _RunsCode:
    """Unpickling this calls os.system: what a malicious trial_result.npz or baseline.npz would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_trial_weights_holding_a_pickle_are_refused_and_run_nothing(tmp_path: Path) -> None:
    """The search reads `baseline.npz` and each checkpoint's `trial_result.npz` back from the run folder."""
    marker = tmp_path / "ran"
    planted = tmp_path / "baseline.npz"
    np.savez(planted, meta=np.array([_RunsCode(marker)], dtype=object), w0=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        TrialResult.load(planted)
    assert not marker.exists(), "the planted code ran"

"""The frozen part of a backbone on OpenVINO: its IR converted once per backbone + weights (+ preprocessing).

The IR lives beside the converted weights in the user cache folder,
`<user cache>/openvino/<backbone>-<weights id>-<preprocessing id>-ov<release>/`, so every search,
`automl cache build` and benchmark on this machine reuses it; once it is there, extraction needs neither the
Keras model nor TensorFlow (about 5 s and 600 MB saved per process).

The bottleneck cache key does not name the engine: OpenVINO's features are those of Keras to float32
rounding, far below what the cache's float16 storage rounds anyway. Checked on 16 real photos of
natural_images for every cut the engine serves (EfficientNet-Lite0; `none` is raw pixels and runs no engine) by
`tests/test_cache_engines.py`: the largest |OpenVINO − Keras| is 1.1e-5 on `all` (float16 storage itself
rounds those activations by up to 1.5e-3), 1.2e-4 on `top` (1.6e-2) and 1.4e-4 on `half` (1.5e-2); on
every activation above 1/64 of its cut's largest, the relative difference is at most 1.3e-4, below float16's
relative rounding 2^-11 = 4.9e-4. Caches filled by either engine load the same values to one float16 step.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from automl.backbones.base import CUT_NAMES
from automl.paths import user_cache_dir

if TYPE_CHECKING:
    from automl.backbones.base import Backbone
    from automl.engines.openvino import CompiledIR

log = logging.getLogger(__name__)
IR_ROOT = "openvino"
_warned: set[str] = set()
_compiled: dict[Path, CompiledIR] = {}
"""The last IR compiled in this process: repeated `ensure` calls (train and val, a growing dataset) compile once."""


def served_cuts(backbone: Backbone) -> list[str]:
    """The cuts one IR gives: all but `none` (raw pixels). Named without building the Keras model."""
    return [cut for cut in CUT_NAMES if cut == "all" or cut in backbone.cut_at]


def frozen_ir_folder(backbone: Backbone, weights: str) -> Path:
    """Where the IR of `backbone`'s frozen part is kept (whether or not it exists yet)."""
    from automl.engines import openvino as ov_engine

    parts = [backbone.name, backbone.weights_id(weights), backbone.preprocessing_id, f"ov{ov_engine.version()}"]
    return user_cache_dir() / IR_ROOT / "-".join(parts)


def openvino_frozen(
    backbone: Backbone, weights: str, cuts: Sequence[str], model: Callable[[], object]
) -> CompiledIR | None:
    """The frozen part compiled on OpenVINO (uint8 pixels in, every served cut out), or None (warned once) when
    it cannot give `cuts`: conversion failed, or the IR lacks a cut. `model()` gives the built Keras model; it is
    called only when the IR must be converted.

    One IR gives every cut but `none`, whichever the caller needs now: the cuts are tensors on the way to the
    pooled vector, so asking for all of them costs only their copies, and a later search asking for another
    cut converts nothing (a conversion takes 10-30 s here). Callers take the outputs they need.
    """
    from automl.engines import openvino as ov_engine

    try:
        folder = frozen_ir_folder(backbone, weights)
        served = served_cuts(backbone)
        if ov_engine.ensure_ir(folder, lambda target: _export_frozen(backbone, model(), served, target)):
            log.info("converted %s (cuts %s) to OpenVINO in %s", backbone.name, ",".join(served), folder)
        compiled = _compiled.get(folder)
        if compiled is None:
            compiled = ov_engine.CompiledIR(folder, uint8_input=True, config=ov_engine.STREAM_CONFIG)
            _compiled.clear()  # one at a time, as `extract.built_model` keeps one Keras model
            _compiled[folder] = compiled
        if not set(cuts) <= set(compiled.names):
            raise ov_engine.ConversionError(f"the IR has outputs {compiled.names}, not {list(cuts)}")
    except Exception as exc:  # any failure of the fast path leaves the correct (TensorFlow) one
        _warn_once(backbone.name, f"OpenVINO cannot run {backbone.name} ({exc}); extracting with TensorFlow")
        return None
    return compiled


def _export_frozen(backbone: Backbone, model: object, cuts: Sequence[str], target: Path) -> None:
    """The frozen part (pixels → {cut: activation}) as a SavedModel taking float32 batches of any size."""
    import tensorflow as tf

    size = backbone.input_size
    spec = tf.TensorSpec((None, size, size, 3), tf.float32, name="pixels")
    backbone.extractor(model, cuts).export(str(target), format="tf_saved_model", verbose=False, input_signature=[spec])


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)

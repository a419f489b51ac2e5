"""The backbone conformance check: what the search silently relies on, proved on the real model.

scikit-learn's `check_estimator` is the model. Plugin authors run it in their own tests::

    from automl.backbones.testing import check_backbone

    def test_my_backbone_conforms():
        check_backbone(my_backbone(), weights="none")  # or "default" where the weights are on the machine

Each check proves one property (`CHECKS`, in the order they run); the first that fails raises
`BackboneCheckFailed`, an AssertionError whose message names the backbone, the property and what was
found. Properties, and what breaks in a search without them:

- `fields`: name, feature size and cut names are usable (`cut_at` names only `top` and `half`).
- `preprocessing_id`: the id is the one derived from `resize` and `preprocessing_mode`, and changes
  with `resize` (else a changed resize reads activations cached under the old one).
- `input`: the model takes float32 pixels of `resize.size` square and gives `feature_size` features
  (else the cache feeds it photos of the wrong size).
- `preprocessing`: the model's one `Preprocess` layer, right after its input, has the declared mode
  (`raw`: none), so the id describes what the model does.
- `safe_mode`: the model saved as `.keras` loads with `safe_mode=True` and computes the same (exported
  models are loaded that way; a Lambda layer would be refused).
- `cut_points`: every offered cut is a single-tensor block boundary of the built model and its
  activation has the shape `cut_points()` announces.
- `extractor_then_rest`: for every cut, the extractor's activation fed to `trainable_rest` equals the
  whole model, `none` gives the raw pixels, and the rest owns its weights (training it leaves the
  frozen part as cached).
- `weights_id`: the id is a stable string, and building the same weights again gives the same model
  (cache keys use it: one id must mean one set of activations).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from automl.backbones.base import CUT_NAMES, Backbone, preprocessing_id, shared_submodel
from automl.data.resize import Resize
from automl.errors import InputError

if TYPE_CHECKING:
    import keras

CHECKS = (
    "fields",
    "preprocessing_id",
    "input",
    "preprocessing",
    "safe_mode",
    "cut_points",
    "extractor_then_rest",
    "weights_id",
)
RELATIVE_TOLERANCE = 1e-4
"""Of the largest output value: float32 graphs cut in two reorder a few sums, nothing more."""


class BackboneCheckFailed(AssertionError):
    """A backbone breaks one property of the contract; `check` names it (one of `CHECKS`)."""

    def __init__(self, backbone: str, check: str, problem: str) -> None:
        super().__init__(f"backbone {backbone!r} fails check {check!r}: {problem}")
        self.backbone = backbone
        self.check = check
        self.problem = problem


def check_backbone(backbone: Backbone, *, weights: str = "default", images: int = 2) -> None:
    """Run every check of `CHECKS` on `backbone` built with `weights`, on `images` random photos.

    Builds the model twice (the second proves `weights_id`) and saves it once to a temporary folder.
    Raises `BackboneCheckFailed` at the first broken property; returns None when all hold.
    """
    _BackboneChecks(backbone, weights, images).run()


class _BackboneChecks:
    """The checks of one backbone, sharing one built model and one batch of pixels."""

    def __init__(self, backbone: Backbone, weights: str, images: int) -> None:
        self.backbone = backbone
        self.weights = weights
        self.images = images
        self._model: keras.Model | None = None
        self._pixels: np.ndarray | None = None
        self._output: np.ndarray | None = None

    def run(self) -> None:
        for name in CHECKS:
            check: Callable[[], None] = getattr(self, name)
            try:
                check()
            except BackboneCheckFailed:
                raise
            except Exception as exc:  # any error inside a check breaks that check's property
                raise BackboneCheckFailed(self.backbone.name, name, f"{type(exc).__name__}: {exc}") from exc

    def fail(self, check: str, problem: str) -> BackboneCheckFailed:
        return BackboneCheckFailed(self.backbone.name, check, problem)

    # --- shared state ------------------------------------------------------------------------------

    @property
    def model(self) -> keras.Model:
        if self._model is None:
            self._model = self.backbone.build(self.weights)
        return self._model

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            size = self.backbone.input_size
            self._pixels = np.random.default_rng(0).uniform(0, 255, (self.images, size, size, 3)).astype("float32")
        return self._pixels

    @property
    def output(self) -> np.ndarray:
        """The whole model's features of `pixels`; must not be all zeros, or comparisons prove nothing."""
        if self._output is None:
            self._output = np.asarray(self.model(self.pixels))
            if not np.isfinite(self._output).all() or not np.abs(self._output).max() > 0:
                raise self.fail("input", "the model's features of random photos are all zero or not finite")
        return self._output

    def _assert_close(self, check: str, what: str, got: np.ndarray, expected: np.ndarray) -> None:
        tolerance = RELATIVE_TOLERANCE * float(np.abs(expected).max())
        if got.shape != expected.shape:
            raise self.fail(check, f"{what}: shape {got.shape}, expected {expected.shape}")
        worst = float(np.abs(got - expected).max())
        if not worst <= tolerance:
            raise self.fail(
                check, f"{what}: differs from the whole model by up to {worst:.3g} (tolerance {tolerance:.3g})"
            )

    # --- the checks ----------------------------------------------------------------------------------

    def fields(self) -> None:
        backbone = self.backbone
        if not isinstance(backbone.name, str) or not backbone.name:
            raise self.fail("fields", f"name {backbone.name!r} must be a non-empty string")
        if not isinstance(backbone.resize, Resize):
            raise self.fail("fields", f"resize is {type(backbone.resize).__name__}, not automl.data.resize.Resize")
        if not isinstance(backbone.feature_size, int) or backbone.feature_size < 1:
            raise self.fail("fields", f"feature_size {backbone.feature_size!r} must be a positive int")
        unknown = sorted(set(backbone.cut_at) - {"top", "half"})
        if unknown:
            raise self.fail(
                "fields", f"cut_at names {', '.join(map(repr, unknown))}; only 'top' and 'half' are set there"
            )

    def preprocessing_id(self) -> None:
        backbone = self.backbone
        derived = preprocessing_id(backbone.resize, backbone.preprocessing_mode)
        if backbone.preprocessing_id != derived:
            raise self.fail(
                "preprocessing_id",
                f"{backbone.preprocessing_id!r} is not {derived!r}, the id of its resize and preprocessing_mode "
                "(do not override preprocessing_id: it is derived so that cached activations follow the resize)",
            )
        if dataclasses.is_dataclass(backbone):
            resize = backbone.resize
            other = dataclasses.replace(backbone, resize=dataclasses.replace(resize, size=resize.size + 1))
            if other.preprocessing_id == backbone.preprocessing_id:
                raise self.fail("preprocessing_id", "does not change when resize.size changes")

    def input(self) -> None:
        size, features = self.backbone.input_size, self.backbone.feature_size
        inputs, outputs = self.model.inputs, self.model.outputs
        if len(inputs) != 1 or tuple(inputs[0].shape[1:]) != (size, size, 3):
            shapes = [tuple(i.shape[1:]) for i in inputs]
            raise self.fail("input", f"model inputs {shapes}; expected one of ({size}, {size}, 3) from resize.size")
        if len(outputs) != 1 or tuple(outputs[0].shape[1:]) != (features,):
            shapes = [tuple(o.shape[1:]) for o in outputs]
            raise self.fail("input", f"model outputs {shapes}; expected one of ({features},) (feature_size)")
        if str(inputs[0].dtype) != "float32":
            raise self.fail("input", f"model input dtype {inputs[0].dtype}; expected float32 pixels in [0, 255]")
        _ = self.output

    def preprocessing(self) -> None:
        from automl.backbones.layers import Preprocess

        mode = self.backbone.preprocessing_mode
        found = [layer for layer in _all_layers(self.model) if isinstance(layer, Preprocess)]
        modes = [layer.mode for layer in found]
        if mode == "raw":
            if found:
                raise self.fail("preprocessing", f"preprocessing_mode is 'raw' but the model has Preprocess {modes}")
            return
        if modes != [mode]:
            raise self.fail(
                "preprocessing",
                f"preprocessing_mode is {mode!r} but the model's Preprocess layers are {modes} "
                "(start _build from preprocessed_input())",
            )
        if found[0].input is not self.model.inputs[0]:
            raise self.fail("preprocessing", "the Preprocess layer does not read the model's input pixels directly")

    def safe_mode(self) -> None:
        import keras

        import automl.backbones.layers  # noqa: F401  (registers automl>Preprocess, as ExportedModel.load does)

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            self.model.save(path)
            try:
                loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
            except Exception as exc:
                raise self.fail("safe_mode", f"the saved model does not load in Keras safe mode: {exc}") from exc
        self._assert_close("safe_mode", "the loaded model", np.asarray(loaded(self.pixels)), self.output)

    def cut_points(self) -> None:
        backbone = self.backbone
        points = backbone.cut_points()
        offered = [cut for cut in CUT_NAMES if cut in ("all", "none") or cut in backbone.cut_at]
        if list(points) != offered:
            raise self.fail("cut_points", f"cut_points() gives {list(points)}; expected {offered}")
        size = backbone.input_size
        expected = {"all": (backbone.feature_size,), "none": (size, size, 3)}
        for cut, shape in expected.items():
            if points[cut].output_shape != shape:
                raise self.fail(
                    "cut_points", f"cut {cut!r} announces shape {points[cut].output_shape}; expected {shape}"
                )
        for cut in backbone.cut_at:
            tensor = backbone.extractor(self.model, [cut]).outputs[0]
            try:
                shared_submodel(self.model, tensor, name=f"{backbone.name}_check_{cut}")
            except InputError as exc:
                raise self.fail(
                    "cut_points", f"cut {cut!r} ({backbone.cut_at[cut]}) is not a single-tensor block boundary: {exc}"
                ) from exc
            if tuple(tensor.shape[1:]) != points[cut].output_shape:
                raise self.fail(
                    "cut_points",
                    f"cut {cut!r}: activation shape {tuple(tensor.shape[1:])}, announced {points[cut].output_shape}",
                )

    def extractor_then_rest(self) -> None:
        backbone, model = self.backbone, self.model
        cuts = list(backbone.cut_points())
        activations = {cut: np.asarray(a) for cut, a in backbone.extractor(model, cuts)(self.pixels).items()}
        if not np.array_equal(activations["none"], self.pixels):
            raise self.fail("extractor_then_rest", "cut 'none' does not give the raw input pixels")
        self._assert_close("extractor_then_rest", "cut 'all'", activations["all"], self.output)
        frozen = {id(variable) for variable in model.weights}
        for cut in cuts:
            rest = backbone.trainable_rest(model, cut)
            if cut != "all" and not rest.trainable_weights:
                raise self.fail("extractor_then_rest", f"cut {cut!r}: the rest has no trainable weights")
            if any(id(variable) in frozen for variable in rest.weights):
                raise self.fail("extractor_then_rest", f"cut {cut!r}: the rest shares weights with the whole model")
            rebuilt = np.asarray(rest(activations[cut]))
            self._assert_close("extractor_then_rest", f"cut {cut!r}: extractor then rest", rebuilt, self.output)

    def weights_id(self) -> None:
        backbone = self.backbone
        first = backbone.weights_id(self.weights)
        if not isinstance(first, str) or not first:
            raise self.fail("weights_id", f"{first!r} is not a non-empty string")
        again = backbone.weights_id(self.weights)
        if again != first:
            raise self.fail("weights_id", f"changes between two calls ({first!r}, then {again!r})")
        if self.weights != "none" and backbone.weights_id("none") == first:
            raise self.fail("weights_id", f"weights {self.weights!r} and random weights share the id {first!r}")
        rebuilt = backbone.build(self.weights)
        paths = [variable.path for variable in self.model.weights]
        for path, mine, theirs in zip(paths, self.model.get_weights(), rebuilt.get_weights(), strict=True):
            if not np.array_equal(mine, theirs):
                raise self.fail(
                    "weights_id",
                    f"building weights {self.weights!r} (id {first!r}) twice gives different values in {path}",
                )
        if backbone.weights_id(self.weights) != first:
            raise self.fail("weights_id", "changes after building the model")


def _all_layers(model: keras.Model) -> list[keras.Layer]:
    """Every layer of `model`, nested models' included."""
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if hasattr(layer, "layers"):
            layers.extend(_all_layers(layer))
    return layers

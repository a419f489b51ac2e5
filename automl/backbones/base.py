"""The backbone contract every plugin fulfils, the core's Keras applications included.

A backbone is an ImageNet network cut in two at a named *cut point*: the frozen part (pixels to the
cut's activation, computed once per image and cached) and the trainable rest (activation to the pooled
feature vector). Cut names are shared by all backbones so that recipes can name them:

- `all`: everything frozen; the activation *is* the pooled feature vector, the rest is the identity.
- `top`: the last block (and the final 1x1 conv, where there is one) is trainable.
- `half`: roughly the second half of the network is trainable.
- `none`: nothing frozen; the "activation" is the raw input pixels (float32 in [0, 255], before the
  backbone's preprocessing), so the cache stores decoded pixels exactly and the rest is the whole model.

Weights are named by a string: `default` (the backbone's own pretrained weights), `imagenet`,
`none` (random, reproducible: seeded; for plumbing tests only) or a path to a weights file.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from automl.data.resize import Resize
from automl.errors import InputError

if TYPE_CHECKING:
    import keras

CutName = Literal["all", "top", "half", "none"]
CUT_NAMES: tuple[CutName, ...] = get_args(CutName)
PreprocessingMode = Literal["raw", "tf", "torch", "caffe", "lite"]
PREPROCESSING_MODES: tuple[PreprocessingMode, ...] = get_args(PreprocessingMode)
"""What `automl.backbones.layers.Preprocess` does to pixels in [0, 255] (see there); `raw` adds no layer."""
NAMED_WEIGHTS = ("default", "imagenet", "none")
RANDOM_WEIGHTS_SEED = 20240501


@dataclass(frozen=True)
class CutAt:
    """Where a `top`/`half` cut lies: the output of `layer`, or its input (`side="input"`).

    The input side names cuts whose tensor comes from an unnamed layer (e.g. a residual `add`), by the
    named layer that starts the next block. The tensor must be a single-tensor block boundary: no
    later layer may use anything computed before it.
    """

    layer: str
    side: Literal["output", "input"] = "output"


@dataclass(frozen=True)
class CutPoint:
    """A named cut with the shape of its activation for one image (no batch axis)."""

    name: CutName
    at: CutAt | None
    output_shape: tuple[int, ...]


def preprocessing_id(resize: Resize, mode: PreprocessingMode) -> str:
    """Names everything between a photo's bytes and the network's first layer: cache keys use it.

    Derived, never written by hand, so that a backbone cannot change its resize or preprocessing and
    keep reading activations cached under the old one (timm's `PretrainedCfg` is the model: the
    preprocessing is data). Keras applications keep their former ids (`caffe-crop0.875-bilinear-224`).
    """
    return f"{mode}-crop{resize.crop_fraction!r}-{resize.resample}-{resize.size}"


@dataclass
class Backbone(abc.ABC):
    """One registered backbone. Subclasses set the fields and implement the three abstract methods.

    Models built here take float32 RGB pixels in [0, 255], shape (size, size, 3), and include the
    backbone's own preprocessing as layers (`preprocessed_input` makes both), so that an exported model
    takes raw pixels. `automl.backbones.testing.check_backbone` checks the whole contract.
    """

    name: str
    resize: Resize
    feature_size: int
    preprocessing_mode: PreprocessingMode
    """The `Preprocess` layer `preprocessed_input` puts first; `raw` for a network that normalises by itself."""
    description: str = ""
    cut_at: dict[str, CutAt] = field(default_factory=dict)
    """Where `top` and `half` lie (set by each backbone); `all` and `none` need no layer."""

    def __post_init__(self) -> None:
        if self.preprocessing_mode not in PREPROCESSING_MODES:
            raise InputError(
                f"backbone {self.name}: unknown preprocessing mode {self.preprocessing_mode!r}",
                hint=f"use one of {', '.join(PREPROCESSING_MODES)}",
            )

    @property
    def input_size(self) -> int:
        return self.resize.size

    @property
    def preprocessing_id(self) -> str:
        """`preprocessing_id(resize, preprocessing_mode)`: follows both fields (never override it)."""
        return preprocessing_id(self.resize, self.preprocessing_mode)

    # --- what each backbone implements -------------------------------------------------------------

    @abc.abstractmethod
    def _build(self, weights: str) -> keras.Model:
        """The whole network (pixels to pooled features) with `default`, `imagenet` or a file's weights.

        Random weights (`none`) come here too, inside a seeded context; a file path arrives resolved.
        """

    @abc.abstractmethod
    def _pretrained_id(self, weights: str) -> str:
        """The id of the named pretrained weights (`default` or `imagenet`); see `weights_id`."""

    @abc.abstractmethod
    def _pretrained_offline(self, weights: str) -> bool:
        """Whether the named pretrained weights (`default` or `imagenet`) are on this machine now."""

    # --- the contract ------------------------------------------------------------------------------

    def build(self, weights: str = "default") -> keras.Model:
        """The whole network: float32 pixels (size, size, 3) in [0, 255] to the pooled feature vector."""
        weights = self._checked(weights)
        if weights == "none":
            with _seeded(RANDOM_WEIGHTS_SEED):
                return self._build("none")
        return self._build(weights)

    def preprocessed_input(self) -> tuple[keras.KerasTensor, keras.KerasTensor]:
        """The model's input (float32 RGB pixels, `resize.size` square) and it after `preprocessing_mode`.

        `_build` starts from these, so the input size and the preprocessing are the declared ones.
        """
        import keras

        from automl.backbones.layers import Preprocess

        pixels = keras.Input(shape=(self.input_size, self.input_size, 3), name="pixels")
        if self.preprocessing_mode == "raw":
            return pixels, pixels
        return pixels, Preprocess(self.preprocessing_mode, name="preprocess")(pixels)

    @staticmethod
    def random_weights(weights: str) -> bool:
        """True when `weights` means random weights: results are meaningless and must say so loudly."""
        return weights == "none"

    def weights_id(self, weights: str) -> str:
        """Identifies the weights' content: it changes whenever the weights change (cache keys use it)."""
        weights = self._checked(weights)
        if weights == "none":
            return f"random-seed{RANDOM_WEIGHTS_SEED}"
        if weights in NAMED_WEIGHTS:
            return self._pretrained_id(weights)
        return f"file-{file_digest(Path(weights))}"

    def weights_offline(self, weights: str = "default") -> bool:
        """Whether these weights can be had right now without the internet."""
        if weights == "none":
            return True
        if weights in NAMED_WEIGHTS:
            return self._pretrained_offline(weights)
        return Path(weights).expanduser().is_file()

    def cut_points(self) -> dict[str, CutPoint]:
        """Every cut this backbone offers, in `CUT_NAMES` order, with its activation's shape.

        Shapes depend on the architecture only, so they come from one model with random weights,
        built once per backbone object (no weights are loaded, converted or downloaded). Each cut is
        checked there to be a single-tensor block boundary (InputError otherwise).
        """
        return dict(self._architecture()[0])

    def parameter_count(self) -> int:
        """Parameters of the whole network (as built by `build`), from the same architecture model."""
        return self._architecture()[1]

    def extractor(self, model: keras.Model, cuts: Iterable[str]) -> keras.Model:
        """Pixels to {cut: activation} for every cut asked: one forward pass computes them all."""
        import keras

        outputs = {cut: self._cut_tensor(model, cut) for cut in cuts}
        if not outputs:
            raise InputError(f"backbone {self.name}: no cut points asked", hint=f"use some of {', '.join(CUT_NAMES)}")
        return keras.Model(model.inputs[0], outputs, name=f"{self.name}_frozen")

    def trainable_rest(self, model: keras.Model, cut: str) -> keras.Model:
        """The cut's activation to the pooled features, with its own trainable copy of `model`'s weights.

        The identity for `all`; the whole model (preprocessing included) for `none`.
        """
        import keras

        start = self._cut_tensor(model, cut)
        if cut == "all":
            features = keras.Input(shape=(self.feature_size,), name=f"{self.name}_features")
            return keras.Model(features, keras.layers.Identity()(features), name=f"{self.name}_rest_all")
        rest = copied_submodel(model, start, name=f"{self.name}_rest_{cut}")
        rest.trainable = True
        return rest

    # --- helpers -----------------------------------------------------------------------------------

    def _checked(self, weights: str) -> str:
        """`weights` as given when named, else an existing file's absolute path; InputError otherwise."""
        if weights in NAMED_WEIGHTS:
            return weights
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(
                f"backbone {self.name}: weights {weights!r} is neither {', '.join(NAMED_WEIGHTS)} nor an existing file",
                hint="give a path to a weights file for this backbone, or `default`",
            )
        return str(path.resolve())

    def _cut_tensor(self, model: keras.Model, cut: str) -> keras.KerasTensor:
        if cut == "all":
            return model.outputs[0]
        if cut == "none":
            return model.inputs[0]
        if cut not in self.cut_at:
            offered = ", ".join(c for c in CUT_NAMES if c in ("all", "none") or c in self.cut_at)
            raise InputError(f"backbone {self.name} has no cut point {cut!r}", hint=f"choose one of {offered}")
        at = self.cut_at[cut]
        layer = model.get_layer(at.layer)
        return layer.output if at.side == "output" else layer.input

    def _architecture(self) -> tuple[dict[str, CutPoint], int]:
        cached = self.__dict__.get("_architecture_cache")
        if cached is None:
            model = self.build("none")
            cuts: dict[str, CutPoint] = {}
            for name in CUT_NAMES:
                if name in ("all", "none") or name in self.cut_at:
                    tensor = self._cut_tensor(model, name)
                    if name in self.cut_at:
                        shared_submodel(model, tensor, name=f"{self.name}_rest_{name}")
                    cuts[name] = CutPoint(name, self.cut_at.get(name), tuple(int(d) for d in tensor.shape[1:]))
            cached = self.__dict__["_architecture_cache"] = (cuts, int(model.count_params()))
        return cached


def shared_submodel(model: keras.Model, start: keras.KerasTensor, *, name: str) -> keras.Model:
    """The part of functional `model` from intermediate tensor `start` to its output, sharing its layers.

    Keras re-creates the graph from `start` (as a new Input) to the output. Raises InputError when a
    later layer also uses a tensor computed before `start` (a residual connection crossing the cut).
    """
    import keras

    try:
        return keras.Model(start, model.outputs[0], name=name)
    except ValueError as exc:
        raise InputError(
            f"model {model.name}: cannot cut at {start.name}: later layers use tensors from before it ({exc})",
            hint="cut points must be single-tensor block boundaries",
        ) from exc


def copied_submodel(model: keras.Model, start: keras.KerasTensor, *, name: str) -> keras.Model:
    """Like `shared_submodel`, but with its own layers: cloned, then given copies of the weights."""
    import keras

    shared = shared_submodel(model, start, name=name)
    copy = keras.models.clone_model(shared)
    copy.set_weights(shared.get_weights())
    return copy


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Keras draws its initializers' seeds from Python's `random`: seed it, then restore the caller's state."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def file_digest(path: Path) -> str:
    """First 16 hex digits of the SHA-256 of a file, memoised per (path, size, mtime)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:16]

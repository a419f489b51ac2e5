"""Recipes: YAML files validated into typed models, with errors that point at file:line and the key.

A recipe has five sections (`data`, `search`, `budget`, `resources`, `output`) plus an optional `cache`
folder; every field has a default, so `data: {folder: animals10}` alone is a valid recipe.
Search dimensions take either one value (fixed), a list (categorical choices) or, for continuous
ones, a `{low, high, log}` range.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from automl.data.files import is_system_folder
from automl.errors import RecipeError

Head = Literal["softmax", "mlp", "svm"]
Optimizer = Literal["sgd", "adam"]
Cut = Literal["all", "top", "half", "none"]
Sampler = Literal["tpe", "random", "grid"]
Scheduler = Literal["asha", "fifo"]

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_duration(value: Any) -> float | None:
    """Seconds from `90`, `"90s"`, `"10m"`, `"1h30m"`; `None` stays `None` (no limit)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a duration; write it like 90s, 10m or 1h30m")
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None if value is None else float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and any(match.groups()):
            hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds
    raise ValueError(f"{value!r} is not a duration; write it like 90s, 10m or 1h30m")


Duration = Annotated[float | None, BeforeValidator(parse_duration)]


def _as_list(value: Any) -> Any:
    """Let a categorical dimension be written as one value (fixed) or a list of choices."""
    return value if isinstance(value, list) else [value]


MAX_SEED = 2**32 - 1
"""Seeds go to NumPy, Optuna and TensorFlow, which take at most 32 unsigned bits."""
MAX_RECIPE_BYTES = 1024 * 1024
MAX_NESTING = 20
"""A recipe is 3 levels deep; deeper YAML is refused before it is built (PyYAML recurses per level)."""
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FloatRange(_Section):
    """A continuous search dimension: sampled in [low, high], on a log scale by default."""

    low: float = Field(ge=0)
    high: float = Field(ge=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low == 0 and not self.fixed:
            raise ValueError("a log-scale range needs low > 0 (or set log: false)")
        return self

    @property
    def fixed(self) -> bool:
        return self.low == self.high


def _as_range(value: Any) -> Any:
    """A number fixes a continuous dimension: `learning_rate: 0.01` means low = high = 0.01."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return {"low": value, "high": value}
    return value


RangeDim = Annotated[FloatRange, BeforeValidator(_as_range)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class DataSection(_Section):
    """Which photos, and how they are split. The split is a function of each image's SHA-1 and `seed`."""

    folder: str = Field(description="One sub-folder per class; relative to $AUTOML_DATA (default ./data) or absolute.")
    train: float = Field(0.7, gt=0, lt=1, description="Fraction of each class used for training.")
    val: float = Field(0.15, gt=0, lt=1, description="Fraction used to choose between trials.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction used once, on the best model.")
    seed: Seed = Field(0, description="Changes the split; the same seed always gives the same split.")
    max_per_class: int | None = Field(None, gt=0, description="Cap on images per class (null: all).")
    imagenet_classes: list[str] = Field(
        default_factory=list, description="Classes that are ImageNet-1k classes ('internal'), for reports."
    )
    group_near_duplicates: bool = Field(
        False,
        description="Keep near-duplicate photos (the same picture re-encoded, resized or cropped: cosine of their "
        "pooled features above the audit's threshold) in one split and fold, so the test split holds no near-copy "
        "of a training photo. Needs the pooled features of every photo (test included).",
    )

    @field_validator("folder")
    @classmethod
    def _not_a_system_folder(cls, folder: str) -> str:
        if not folder.strip():
            raise ValueError("must name the dataset folder")
        if folder.startswith("/") and is_system_folder(folder):  # also `/data/../proc` and links into /proc
            raise ValueError(f"{folder!r} is a system folder, not a dataset; give the folder of class sub-folders")
        return folder

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> DataSection:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1, got {total:g}")
        return self


class SearchSection(_Section):
    """The search space and how it is explored. Any dimension can be fixed by giving one value."""

    backbones: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: ["efficientnet_lite0"],
        min_length=1,
        description="Registered backbone names (`automl backbones` lists them).",
    )
    weights: str = Field(
        "default",
        description="`default` (each backbone's own: offline for EfficientNet-Lite, download for Keras "
        "applications), `imagenet`, `none` (random: plumbing tests only) or a path to a weights file.",
    )
    cuts: Annotated[list[Cut], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: list[Cut](["all"]),
        min_length=1,
        description="Freeze points: all = everything frozen (train a head on cached vectors), top = last "
        "block trainable, half = second half trainable, none = nothing frozen (trains on pixels, slow).",
    )
    heads: Annotated[list[Head], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: list[Head](["softmax", "mlp", "svm"]), min_length=1
    )
    optimizers: Annotated[list[Optimizer], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: list[Optimizer](["sgd", "adam"]), min_length=1
    )
    learning_rate: RangeDim = Field(default_factory=lambda: FloatRange(low=1e-4, high=1e-1))
    epsilon: RangeDim = Field(default_factory=lambda: FloatRange(low=1e-8, high=1.0), description="Adam's epsilon.")
    momentum: RangeDim = Field(default_factory=lambda: FloatRange(low=0.9, high=0.9), description="SGD's.")
    mlp_hidden: Annotated[list[PositiveInt], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: [256, 512, 1024], description="Hidden width of the MLP head."
    )
    dropout: Annotated[list[Fraction], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: [0.0, 0.2, 0.5], description="Dropout before the head's output layer."
    )
    svm_c: RangeDim = Field(
        default_factory=lambda: FloatRange(low=1e-3, high=10.0),
        description="Inverse L2 strength of the linear SVM head (squared hinge loss).",
    )
    batch_size: Annotated[list[PositiveInt], BeforeValidator(_as_list)] = Field(default_factory=lambda: [32, 64])
    epochs: int = Field(20, gt=0, description="Most epochs per trial; the scheduler may stop earlier.")
    sampler: Sampler = Field("tpe", description="Optuna sampler: tpe, random or grid.")
    scheduler: Scheduler = Field("asha", description="Tune scheduler stopping poor trials early.")
    seed: Seed = 0
    folds: int = Field(
        5, ge=2, le=20, description="Cross-validation folds of train + val: every candidate is judged out of fold."
    )
    ensemble: bool = Field(True, description="Allow a weighted ensemble when it beats the best single model.")
    ensemble_max_members: int = Field(
        3, ge=1, le=10, description="Most distinct models in an ensemble (each costs its backbone's inference)."
    )
    finetune: bool = Field(
        True,
        description="After the frozen-feature selection, fine-tune up to three backbones' layers after `cuts`' "
        "`top`/`half` from their linear probes (LP-FT), exported (alone, averaged or blended with the chosen model) "
        "only when that wins on a held-out fold; Tune then explores cut `all` only.",
    )
    finetune_share: float = Field(
        0.25,
        ge=0.0,
        le=0.6,
        description="Share of budget.time kept for the fine-tuning stage (it also takes what the trials leave).",
    )
    augment: bool = Field(
        True, description="Horizontally flipped views (cached) as extra fine-tuning rows, and flip test-time averaging."
    )

    @field_validator("learning_rate", "epsilon", "svm_c")
    @classmethod
    def _positive(cls, bounds: FloatRange) -> FloatRange:
        if bounds.low <= 0:
            raise ValueError(f"must be > 0, got low = {bounds.low:g}")
        return bounds

    @field_validator("momentum")
    @classmethod
    def _below_one(cls, bounds: FloatRange) -> FloatRange:
        if bounds.high >= 1:
            raise ValueError(f"SGD momentum must lie in [0, 1), got high = {bounds.high:g}")
        return bounds


class BudgetSection(_Section):
    """When the search stops: the first budget reached ends it cleanly."""

    time: Duration = Field(600.0, description="Wall time for the whole search, cache included (10m).")
    trials: int | None = Field(200, gt=0, description="Most trials (null: no limit).")
    target_accuracy: float | None = Field(
        None, gt=0, le=1, description="Stop when a trial's validation accuracy reaches it."
    )
    trial_time: Duration = Field(120.0, description="Most wall time for one trial.")

    @field_validator("time", "trial_time")
    @classmethod
    def _positive_duration(cls, seconds: float | None) -> float | None:
        if seconds is not None and seconds <= 0:
            raise ValueError(f"must be positive (e.g. 90s, 10m, 1h30m), got {seconds:g} s")
        return seconds


class ResourcesSection(_Section):
    """Where trials run: local Ray by default, or an existing cluster."""

    address: str | None = Field(None, description="Ray address (null: local Ray, or $RAY_ADDRESS if set).")
    cpus_per_trial: float = Field(1.0, gt=0)
    concurrent_trials: int = Field(2, gt=0)
    engine: Literal["auto", "openvino", "tensorflow"] = Field(
        "auto",
        description="Runs the frozen backbone when extracting features: auto (OpenVINO when installed, "
        "about 2-3x TensorFlow on CPUs), openvino or tensorflow. The features are the same either way.",
    )


class OutputSection(_Section):
    """Where the run folder goes; each search makes `<folder>/<recipe name>-<timestamp>`."""

    folder: str = Field("runs", description="Parent folder of run folders.")


class Recipe(_Section):
    """A whole recipe. `name` defaults to the file's stem."""

    name: str | None = Field(None, description="Names the run folders (default: the file's stem).")
    data: DataSection
    search: SearchSection = Field(default_factory=SearchSection)
    budget: BudgetSection = Field(default_factory=BudgetSection)
    resources: ResourcesSection = Field(default_factory=ResourcesSection)
    output: OutputSection = Field(default_factory=OutputSection)
    cache: str | None = Field(None, description="Bottleneck cache folder (null: $AUTOML_CACHE, else ~/.cache/automl).")

    @field_validator("name")
    @classmethod
    def _a_folder_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", value):
            raise ValueError(f"{value!r} must be a plain folder name: letters, digits, '_', '.', '-'")
        return value

    @field_validator("cache")
    @classmethod
    def _a_folder(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith("file://"):
            raise ValueError("URLs are not supported yet; give a local or shared (NFS, SMB) folder path")
        return value


def json_schema() -> dict[str, Any]:
    """The recipe's JSON Schema, for editors (`# yaml-language-server: $schema=...`)."""
    schema = Recipe.model_json_schema()
    schema["title"] = "automl recipe"
    return schema


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe; any problem raises `RecipeError` naming file:line and the key."""
    from automl.data.files import read_bounded

    path = Path(path)
    try:
        data = read_bounded(path, MAX_RECIPE_BYTES)
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="save the recipe as UTF-8",
        ) from None
    return parse_recipe(text, source=str(path))


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = _compose_bounded(loader, source)
            if root is not None:
                _refuse_duplicate_keys(root, source)
            raw = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}:1: a recipe is a mapping with at least `data: {{folder: ...}}`")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(
            _describe(exc, root, source),
            hint="recipes/animals10.yaml documents every key; `automl recipe schema` prints the JSON Schema",
        ) from None
    return recipe if recipe.name else recipe.model_copy(update={"name": Path(source).stem})


def _compose_bounded(loader: yaml.SafeLoader, source: str) -> yaml.Node | None:
    """The document's node tree, refusing nesting deeper than MAX_NESTING from the token stream, before
    PyYAML's recursive composer would overflow Python's stack on a few kilobytes of brackets."""
    depth = 0
    for token in _peek_tokens(loader):
        if isinstance(
            token,
            yaml.BlockMappingStartToken
            | yaml.BlockSequenceStartToken
            | yaml.FlowMappingStartToken
            | yaml.FlowSequenceStartToken,
        ):
            depth += 1
            if depth > MAX_NESTING:
                raise RecipeError(
                    f"{source}:{token.start_mark.line + 1}: nested more than {MAX_NESTING} levels deep; "
                    "a recipe is a few sections of keys"
                )
        elif isinstance(token, yaml.BlockEndToken | yaml.FlowMappingEndToken | yaml.FlowSequenceEndToken):
            depth -= 1
    return loader.get_single_node()


def _peek_tokens(loader: yaml.SafeLoader) -> Any:
    """Every token of the text, scanned by a second loader (the first one still composes from the start)."""
    scanner = yaml.SafeLoader(loader.buffer.rstrip("\0"))
    try:
        while scanner.check_token():
            yield scanner.get_token()
    finally:
        scanner.dispose()


def _refuse_duplicate_keys(node: yaml.Node, source: str) -> None:
    """YAML keeps the last of two equal keys silently; a recipe saying `epochs` twice is a mistake to show."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name in seen:
                raise RecipeError(
                    f"{source}:{key.start_mark.line + 1}: key {name!r} appears twice (first on line {seen[name]}); "
                    "keep one"
                )
            seen[name] = key.start_mark.line + 1
            _refuse_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, source)


def _describe(exc: ValidationError, root: yaml.Node | None, source: str) -> str:
    lines = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_validator_tag(part)]
        key = _dotted(loc)
        line = _line_of(root, loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            message = f"unknown key; allowed keys here: {', '.join(allowed)}"
        elif error["type"] == "literal_error":
            message = f"{error['input']!r} is not allowed; allowed values: {error['ctx']['expected']}"
        elif error["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{source}:{line}: {key}: {message}")
    return "invalid recipe\n" + "\n".join(lines)


def _is_validator_tag(part: Any) -> bool:
    """Pydantic puts union/validator names ('list[...]', 'function-before[...]') into locations."""
    return isinstance(part, str) and ("[" in part or part in {"float", "int", "str", "FloatRange"})


def _dotted(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_of(root: yaml.Node | None, loc: list[Any]) -> int:
    """The 1-based line of the YAML node at `loc`, or of its nearest existing parent."""
    node, line = root, 1 if root is None else root.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    child, line = value_node, key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _allowed_keys(loc: list[Any]) -> list[str]:
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe (defaults filled in) as YAML, saved next to each run."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)

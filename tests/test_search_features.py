"""Which features a recipe needs (`FeaturePlan`): what the search reads, `cache build` fills, curve and bench use."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from automl.backbones import get_backbone
from automl.cache import BottleneckCache
from automl.cache.extract import built_model
from automl.data.dataset import scan_dataset
from automl.errors import AutomlError, RecipeError
from automl.recipe import parse_recipe
from automl.search.features import (
    TRIAL_SPLITS,
    BackbonePart,
    ExtractionLog,
    FeaturePlan,
    FeatureReport,
    FeatureSet,
    describe_extraction,
    extraction_cost,
    read_extraction,
)
from automl.search.space import build_space


def _search(search: str):
    return parse_recipe(f"data: {{folder: unused}}\nsearch: {search}\n").search


def test_the_search_plan_is_the_offered_cuts_plus_pooled_vectors_of_train_and_val() -> None:
    search = _search("{backbones: [lite_a, lite_b], cuts: [top, half], finetune: false}")
    plan = FeaturePlan.for_search(search, {"lite_a": ["all", "top", "none"], "lite_b": ["all", "top", "half"]})
    # `all` for every backbone: the selection fits LR-CV on each one's pooled vectors
    assert plan.cuts == {"lite_a": ("all", "top"), "lite_b": ("all", "top", "half")}
    assert plan.splits == ("train", "val"), "no trial reads the test split"
    assert plan.stage == {}, "no fine-tuning stage, nothing planned for it"
    assert FeaturePlan.pooled("lite_b", ("train", "test")).cuts == {"lite_b": ("all",)}


def test_with_fine_tuning_the_plan_leaves_tune_the_pooled_cut_and_plans_the_stage_cut_in_both_views() -> None:
    cut_points = {"lite_a": ["all", "top", "none"], "lite_b": ["all", "top", "half"]}
    plan = FeaturePlan.for_search(_search("{backbones: [lite_a, lite_b], cuts: [all, half, top]}"), cut_points)
    assert plan.cuts == {"lite_a": ("all",), "lite_b": ("all",)}, "Tune leaves top and half to the stage"
    # the first of the recipe's cuts each backbone offers; any backbone may be chosen, so each has its entry
    assert plan.stage["lite_a"].entries() == [("top", "orig"), ("top", "hflip")]
    assert plan.stage["lite_b"].entries() == [("half", "orig"), ("half", "hflip")]
    plain = FeaturePlan.for_search(_search("{backbones: lite_a, cuts: [all, top], augment: false}"), cut_points)
    assert plain.stage["lite_a"].entries() == [("top", "orig")], "no flips without search.augment"


def test_a_backbone_offering_none_of_the_cuts_is_refused_naming_both_lists() -> None:
    with pytest.raises(RecipeError, match=r"search\.cuts: backbone lite_a offers none of \['half'\]"):
        FeaturePlan.for_search(_search("{backbones: lite_a, cuts: half}"), {"lite_a": ["all", "top"]})


def test_backbones_are_planned_cheapest_first_each_with_its_pooled_vectors() -> None:
    lite0, mobilenet = get_backbone("efficientnet_lite0"), get_backbone("mobilenet_v2")
    costs = {"efficientnet_lite0": extraction_cost(lite0), "mobilenet_v2": extraction_cost(mobilenet)}
    assert costs["mobilenet_v2"] < costs["efficientnet_lite0"], "3.5 M parameters against 4.7 M, both at 224 px"
    search = _search("{backbones: [efficientnet_lite0, mobilenet_v2], cuts: [top], finetune: false}")
    cut_points = {"efficientnet_lite0": ["all", "top"], "mobilenet_v2": ["all", "top"]}
    plan = FeaturePlan.for_search(search, cut_points, costs)
    assert list(plan.cuts) == ["mobilenet_v2", "efficientnet_lite0"], "the cheapest first"
    assert plan.cuts == {"mobilenet_v2": ("all", "top"), "efficientnet_lite0": ("all", "top")}
    assert list(FeaturePlan.for_search(search, cut_points).cuts) == ["efficientnet_lite0", "mobilenet_v2"]


class _StallingLog(ExtractionLog):
    """The run folder's extraction log, waiting for the deadline once `backbone` has handled `after` images,
    so the deadline passes mid-way through that backbone at a known batch."""

    def __init__(self, path: Path, backbone: str, after: int, deadline: float) -> None:
        super().__init__(path)
        self.stall = (backbone, after, deadline)

    def advance(self, name: str, count: int) -> None:
        super().advance(name, count)
        backbone, after, deadline = self.stall
        if name == backbone and self.backbones[name]["done"] >= after:
            time.sleep(max(0.0, deadline - time.time()) + 0.05)


def test_a_deadline_mid_way_keeps_the_finished_backbone_and_the_next_search_extracts_only_the_rest(
    tmp_path: Path, animals10: Path
) -> None:
    dataset = scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=3)
    backbones = {name: get_backbone(name) for name in ("mobilenet_v2", "efficientnet_lite0")}
    plan = FeaturePlan(cuts={"mobilenet_v2": ("all",), "efficientnet_lite0": ("all", "top")}, splits=TRIAL_SPLITS)
    images = len(plan.records(dataset))
    cache = BottleneckCache(tmp_path / "cache")
    built_model(backbones["efficientnet_lite0"], "none")  # built before the clock starts (seconds here)
    cache.ensure(backbones["mobilenet_v2"], "none", ["all"], plan.records(dataset), progress=False)
    deadline = time.time() + 5.0
    log = _StallingLog(tmp_path / "extraction.json", "efficientnet_lite0", after=16, deadline=deadline)
    options = {"progress": False, "engine": "tensorflow", "batch_size": 8}
    parts = dict(plan.extract(cache, backbones, "none", dataset, deadline=deadline, state=log, **options))

    assert [parts[name].state for name in parts] == ["done", "interrupted"]
    report = FeatureReport()
    for part in parts.values():
        report.add(part)
    assert report.to_record().backbones == {"mobilenet_v2": "done", "efficientnet_lite0": "interrupted"}
    assert (report.finished, report.computed, report.reused) == (["mobilenet_v2"], 8, images)
    assert parts["efficientnet_lite0"].stats.computed == 8 and parts["efficientnet_lite0"].arrays == {}
    features = FeatureSet.from_parts(parts.values(), len(dataset.classes))
    assert features.backbones() == ["mobilenet_v2"] and features.trial_data("mobilenet_v2", "all").x_train.shape[0] > 0
    assert pickle.loads(pickle.dumps(features)).arrays.keys() == features.arrays.keys(), "Tune pickles it"
    state = read_extraction(tmp_path / "extraction.json")
    assert (
        state["efficientnet_lite0"]["state"] == "interrupted" and state["efficientnet_lite0"]["remaining"] == images - 8
    )
    assert (
        describe_extraction(state)[1]
        == f"efficientnet_lite0 interrupted at the deadline, {images - 8} images left (parts kept)"
    )

    search = _search("{backbones: [mobilenet_v2, efficientnet_lite0], cuts: [all, top]}")
    space = build_space(search, {name: ["all", "top"] for name in backbones})
    narrowed = space.only(features.backbones())
    assert narrowed.search.backbones == ["mobilenet_v2"] and list(narrowed.cuts_by_backbone) == ["mobilenet_v2"]

    again = dict(plan.extract(cache, backbones, "none", dataset, **options))
    assert [part.state for part in again.values()] == ["done", "done"]
    assert again["efficientnet_lite0"].stats.computed == images - 8 and again["mobilenet_v2"].stats.computed == 0
    both = FeatureSet.from_parts(again.values(), len(dataset.classes))
    assert both.backbones() == ["mobilenet_v2", "efficientnet_lite0"]
    assert both.arrays["efficientnet_lite0/top"]["x_val"].shape[0] == both.arrays["mobilenet_v2/all"]["x_val"].shape[0]
    assert both.sha1s["val"] == [r.sha1 for r in dataset.split("val")], "every photo readable: all rows, in order"


def test_a_backbone_that_cannot_finish_at_the_measured_rate_is_not_started(tmp_path: Path, animals10: Path) -> None:
    dataset = scan_dataset(animals10, train=0.7, val=0.15, test=0.15, seed=0, max_per_class=3)
    backbones = {name: get_backbone(name) for name in ("mobilenet_v2", "efficientnet_lite0")}
    plan = FeaturePlan(cuts={"mobilenet_v2": ("all",), "efficientnet_lite0": ("all",)}, splits=TRIAL_SPLITS)
    images = len(plan.records(dataset))
    built_model(backbones["mobilenet_v2"], "none")
    deadline = time.time() + 5.0
    # The first backbone's last images wait until 1 s before the deadline: its measured rate is then about
    # images / 4 s, and the second (1.3x the cost) would need about 5 s, with 1 s left.
    log = _StallingLog(tmp_path / "extraction.json", "mobilenet_v2", after=images, deadline=deadline - 1.0)
    options = {"progress": False, "engine": "tensorflow", "batch_size": 8}
    parts = dict(
        plan.extract(BottleneckCache(tmp_path), backbones, "none", dataset, deadline=deadline, state=log, **options)
    )

    assert parts["mobilenet_v2"].state == "done" and parts["mobilenet_v2"].stats.computed == images
    skipped = parts["efficientnet_lite0"]
    assert skipped.state == "skipped" and skipped.stats is None, "not started: no model built, nothing computed"
    state = read_extraction(tmp_path / "extraction.json")["efficientnet_lite0"]
    assert state["state"] == "skipped" and state["reason"].startswith("estimated ")
    assert state["reason"].endswith(" s left") and "s of extraction, " in state["reason"]


def test_a_feature_set_keeps_only_the_rows_every_finished_backbone_could_read() -> None:
    def part(name: str, train_rows: list[int]) -> BackbonePart:
        x = np.array(train_rows, dtype=np.float32)[:, None]  # each row's value is its position in the split
        arrays = {
            f"{name}/all": {
                "x_train": x,
                "y_train": np.zeros(len(x), np.int32),
                "x_val": x[:1],
                "y_val": np.zeros(1, np.int32),
            }
        }
        rows = {"train": train_rows, "val": train_rows[:1]}
        return BackbonePart(name, "done", arrays, rows, {s: [f"sha{i}" for i in r] for s, r in rows.items()}, None)

    late = BackbonePart("c", "interrupted", {}, {}, {}, None)
    features = FeatureSet.from_parts([part("a", [0, 1, 2, 3]), part("b", [0, 2, 3]), late], num_classes=2)
    assert features.backbones() == ["a", "b"], "the interrupted backbone is left out"
    assert (
        features.arrays["a/all"]["x_train"][:, 0].tolist()
        == [0, 2, 3]
        == features.arrays["b/all"]["x_train"][:, 0].tolist()
    )
    assert features.sha1s["train"] == ["sha0", "sha2", "sha3"]
    with pytest.raises(AutomlError, match="no backbone's features were extracted"):
        FeatureSet.from_parts([late], num_classes=2)

"""The block layout of EfficientNet-Lite: stage boundaries come from the same blocks the model is built from."""

from __future__ import annotations

import pytest
from automl_efficientnet_lite.model import BASE_STAGES, CONFIGS, HALF_STAGE


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_stage_starts_where_the_previous_one_ends(name: str) -> None:
    config = CONFIGS[name]
    blocks = config.blocks()
    firsts = [config.first_block_of_stage(stage) for stage in range(len(BASE_STAGES))]
    assert firsts[0] == 0 and firsts == sorted(set(firsts))
    for stage, first in enumerate(firsts):
        assert blocks[first].stage == stage and (first == 0 or blocks[first - 1].stage == stage - 1)
        assert blocks[first].stride == BASE_STAGES[stage].stride  # only a stage's first block strides
    with pytest.raises(ValueError, match="not 7"):
        config.first_block_of_stage(len(BASE_STAGES))


def test_half_of_lite0_trains_its_last_eight_blocks() -> None:
    config = CONFIGS["efficientnet_lite0"]
    assert len(config.blocks()) == 16 and config.first_block_of_stage(HALF_STAGE) == 8

"""Exact ERNIE-THU mode: each KeptConfig / MaskingConfig option that selects the original's behaviour,
and the ``ernie_thu`` preset checked against an independent float64 implementation of the equations."""

from __future__ import annotations

import pytest
import torch

from masking import MaskingConfig, MaskingError
from masking.dea import corrupt_alignments


# ------------------------------------------------------------------------------------ dEA replacement
def _replacements(replace_from: str) -> torch.Tensor:
    """Replacement values of a batch where entity 7 holds 99 aligned positions and entity 3 one."""
    entity_ids = torch.full((4, 100), -1)
    entity_ids[0, :99] = 7
    entity_ids[1, 0] = 3
    corrupted, labels = corrupt_alignments(entity_ids, 1.0, 0.0, torch.Generator().manual_seed(0),
                                           replace_from=replace_from)
    assert torch.equal(labels[entity_ids >= 0], entity_ids[entity_ids >= 0])  # labels stay the truth
    return corrupted[entity_ids >= 0]  # [100], every one replaced


def test_dea_replace_distinct_draws_each_batch_entity_alike():
    by_position = _replacements("positions")
    distinct = _replacements("distinct")
    assert set(distinct.tolist()) <= {3, 7}
    assert (by_position == 3).float().mean() < 0.1  # frequency-weighted: entity 7 takes nearly all
    assert 0.35 < (distinct == 3).float().mean() < 0.65  # uniform over the 2 distinct entities


def test_dea_replace_is_a_masking_option():
    assert MaskingConfig().dea_replace == "positions"
    assert MaskingConfig(dea_replace="distinct").validate().dea_replace == "distinct"
    with pytest.raises(MaskingError, match="dea_replace"):
        MaskingConfig(dea_replace="nope").validate()

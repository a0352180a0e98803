"""Rank checks and barriers: the launcher's environment before the process group starts, accelerate's
PartialState once it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kept.processes import is_main_process, wait_for_everyone, world_size


def test_before_the_process_group_the_launch_environment_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert is_main_process() and world_size() == 1
    wait_for_everyone()  # a plain process has nobody to wait for
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert not is_main_process() and world_size() == 4


def test_a_running_process_group_answers_through_partial_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist
    from accelerate import PartialState
    from accelerate.state import AcceleratorState

    # the environment says rank 3 of 8; the group started below is rank 0 of 1 and is what counts
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert is_main_process() and world_size() == 1
        wait_for_everyone()
    finally:
        dist.destroy_process_group()
        AcceleratorState._reset_state(reset_partial_state=True)  # later Trainers must not see this group
        assert not PartialState._shared_state
    assert not is_main_process() and world_size() == 8  # the environment again

"""Which process this is, how many there are, and waiting for the others (torchrun / accelerate launch).

accelerate's ``PartialState`` answers once the process group is up: the Trainer's arguments create it
with the run's backend and timeout. Before that (the CLI, configuration checks, data stages) the
launcher's environment (``RANK``, ``WORLD_SIZE``) answers, as accelerate itself reads it: creating
``PartialState`` that early would start the process group with default settings first.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _started_state() -> Any | None:
    """accelerate's state when a process group is running, else None (nothing is created here)."""
    dist = sys.modules.get("torch.distributed")  # not imported yet: no process group can exist
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    from accelerate import PartialState

    return PartialState()  # adopts the running group


def is_main_process() -> bool:
    """True on the process that writes run-dir artifacts and prints (rank 0)."""
    state = _started_state()
    return bool(state.is_main_process) if state is not None else int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes of the launch (1 for a plain process)."""
    state = _started_state()
    return int(state.num_processes) if state is not None else max(int(os.environ.get("WORLD_SIZE", "1")), 1)


def wait_for_everyone() -> None:
    """A barrier across the launch's processes; nothing to wait for in a plain process."""
    state = _started_state()
    if state is not None:
        state.wait_for_everyone()

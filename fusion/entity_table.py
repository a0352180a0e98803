"""The entity table: KG embeddings read from kg's safetensors export, memory-mapped, kept on the CPU.

A frozen table is a plain CPU tensor held outside the module's parameters and buffers, so
``model.to("cuda")`` leaves it where it is; only the rows of the batch's entities are gathered and
moved to the device. With ``mmap=True`` the tensor is a numpy memmap over the file's data section,
so millions of entities cost only the pages that batches touch.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusion.errors import FusionError

ENTITY_TABLE_FILE = "entity_table.safetensors"
DEFAULT_KEY = "entity_embeddings"

_NUMPY_DTYPES: dict[str, tuple[type, torch.dtype | None]] = {
    "F64": (np.float64, None),
    "F32": (np.float32, None),
    "F16": (np.float16, None),
    "BF16": (np.uint16, torch.bfloat16),  # numpy has no bfloat16: map as uint16, view as bf16
}


def read_safetensors_header(path: str | Path) -> tuple[dict, int]:
    """Return (header dict, byte offset of the data section) of a safetensors file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise FusionError(
                    "file is too short to be safetensors", where=path, fix="Export the table with kg.save_embeddings."
                )
            (length,) = struct.unpack("<Q", raw)
            header = json.loads(handle.read(length))
    except FileNotFoundError:
        raise FusionError(
            "entity table file not found",
            where=path,
            fix="Pass the path of kg/embeddings.safetensors (run the kg embed stage first).",
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError, struct.error):
        raise FusionError(
            "not a safetensors file (bad header)", where=path, fix="Export the table with kg.save_embeddings."
        ) from None
    return header, 8 + length


def open_table(path: str | Path, key: str = DEFAULT_KEY, mmap: bool = True) -> torch.Tensor:
    """Open tensor ``key`` of a safetensors file as a 2-D CPU tensor (memory-mapped when ``mmap``)."""
    path = Path(path)
    header, data_start = read_safetensors_header(path)
    if key not in header:
        keys = sorted(k for k in header if k != "__metadata__")
        raise FusionError(
            f"tensor {key!r} not in the file (has: {', '.join(keys) or 'nothing'})",
            where=path,
            fix="Pass key= with the name of the entity embedding tensor.",
        )
    info = header[key]
    shape = tuple(int(s) for s in info["shape"])
    if len(shape) != 2:
        raise FusionError(
            f"tensor {key!r} has shape {list(shape)}, expected [num_entities, dim]",
            where=path,
            fix="Export a 2-D entity embedding matrix.",
        )
    dtype = info["dtype"]
    if dtype not in _NUMPY_DTYPES:
        raise FusionError(
            f"tensor {key!r} has dtype {dtype}, expected a float type",
            where=path,
            fix="Export the table as F32, F16 or BF16.",
        )
    np_dtype, view_as = _NUMPY_DTYPES[dtype]
    begin, end = (int(x) for x in info["data_offsets"])
    expected = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
    if end - begin != expected:
        raise FusionError(
            f"tensor {key!r} data has {end - begin} bytes, expected {expected}",
            where=path,
            fix="The file is truncated or corrupt: export it again.",
        )
    array: np.ndarray
    if shape[0] == 0:
        array = np.zeros(shape, dtype=np_dtype)
    else:
        # mode "c" (copy-on-write) gives a writable view without copying: torch needs no warning
        array = np.memmap(path, dtype=np_dtype, mode="c", offset=data_start + begin, shape=shape)
        if not mmap:
            array = np.array(array)
        else:
            advise_random(array)
    tensor = torch.from_numpy(array)
    if view_as is not None:
        tensor = tensor.view(view_as)
    return tensor


def advise_random(array: np.memmap) -> None:
    """Rows are read at random: no read-ahead, so resident memory tracks the rows actually used."""
    handle = getattr(array, "_mmap", None)
    advice = getattr(mmap, "MADV_RANDOM", None)
    if handle is not None and advice is not None:
        try:
            handle.madvise(advice)
        except (OSError, ValueError):  # not supported here: only a memory-use hint
            pass


@dataclass
class EntityTable:
    """A frozen CPU entity table; ``gather`` moves only the requested rows to the device."""

    weight: torch.Tensor  # [num_entities, dim], CPU, possibly a memmap
    path: Path | None = None
    key: str = DEFAULT_KEY

    @property
    def num_entities(self) -> int:
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    @classmethod
    def open(cls, path: str | Path, key: str = DEFAULT_KEY, mmap: bool = True) -> EntityTable:
        return cls(weight=open_table(path, key=key, mmap=mmap), path=Path(path), key=key)

    @torch.compiler.disable
    def gather(self, ids: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Rows ``ids`` (any device, any shape) -> tensor [*ids.shape, dim] on ``device`` in ``dtype``."""
        flat = ids.reshape(-1).to("cpu", torch.long)
        check_ids(flat, self.num_entities)
        rows = self.weight.index_select(0, flat).to(dtype)
        if device.type != "cpu":
            rows = rows.pin_memory().to(device, non_blocking=True)
        return rows.view(*ids.shape, self.dim)

    def gather_traceable(self, ids: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``gather`` inside a torch.compile / torch.export graph: the table is a graph input (exported:
        a constant of the program), the id check an async assert, no pinned staging buffer.
        ``gather`` stays outside graphs in eager-compiled code (pinned, non-blocking copies)."""
        flat = ids.reshape(-1).to(self.weight.device, torch.long)  # [n]
        check_ids(flat, self.num_entities)
        rows = self.weight.index_select(0, flat).to(device=device, dtype=dtype)  # [n, dim]
        return rows.view(*ids.shape, self.dim)

    def save(self, path: str | Path) -> None:
        """Write the table as safetensors tensor "entity_embeddings", atomically.

        An unchanged table read from a file under the default key is linked (or copied) rather than
        re-serialised, so saving a memory-mapped table of millions of rows costs no memory.
        """
        from safetensors.torch import save_file

        path = Path(path)
        if self.path is not None and self.path.exists() and path.exists() and os.path.samefile(self.path, path):
            return
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            if self.path is not None and self.key == DEFAULT_KEY and self.path.exists():
                try:
                    os.link(self.path, tmp)
                except OSError:
                    shutil.copyfile(self.path, tmp)
            else:
                save_file({DEFAULT_KEY: self.weight.contiguous()}, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, path)
        finally:
            if tmp.exists():  # a failed write leaves no partial file behind
                tmp.unlink()


def check_ids(flat_ids: torch.Tensor, num_entities: int) -> None:
    """FusionError when an entity id falls outside the table."""
    if flat_ids.numel() == 0:
        return
    if torch.compiler.is_compiling():  # in a graph: no host sync, no data-dependent branch
        torch._assert_async(((flat_ids >= 0) & (flat_ids < num_entities)).all(), "entity id outside the entity table")
        return
    low, high = int(flat_ids.min()), int(flat_ids.max())
    if low < 0 or high >= num_entities:
        raise FusionError(
            f"entity id {high if high >= num_entities else low} outside the entity table (0..{num_entities - 1})",
            where="entity_ids/entity_labels",
            fix="Encode the corpus with the same KG whose embeddings the model loaded.",
        )


__all__ = ["ENTITY_TABLE_FILE", "EntityTable", "open_table", "read_safetensors_header", "check_ids"]

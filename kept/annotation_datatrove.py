"""Annotation of a run directory on datatrove's executors (``kept annotate RUN --engine datatrove --workers N``).

Each datatrove task annotates one contiguous shard of ``corpus/documents.jsonl`` into
``corpus/annotated.shards/`` (the same shard files as ``kept annotate --num-shards``); when the executor is
done the shards are merged into ``corpus/annotated/``, which equals a single-process annotation. Locally,
``LocalPipelineExecutor`` runs ``tasks`` shards on ``workers`` processes. Beyond one machine, give
:class:`AnnotateShards` to datatrove's ``SlurmPipelineExecutor`` (``tasks=K``) and merge afterwards with
``kept annotate RUN --num-shards K --merge``. datatrove is the optional extra ``kept[datatrove]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kept.errors import KeptError

try:
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # the optional extra is not installed: annotate_with_datatrove says how to get it
    PipelineStep = object  # type: ignore[assignment,misc,unused-ignore]
    HAVE_DATATROVE = False
else:
    HAVE_DATATROVE = True


class AnnotateShards(PipelineStep):  # type: ignore[misc,valid-type,unused-ignore]
    """A datatrove pipeline step: task ``rank`` of ``world_size`` annotates shard ``rank`` of the run's corpus."""

    name = "kept annotate"
    type = "ANNOTATE"

    def __init__(self, run_dir: str | Path, config: Any) -> None:
        super().__init__()
        self.run_dir = str(run_dir)
        self.config = config  # masking.AnnotationConfig (pydantic: pickles to forkserver/Slurm workers)

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Any]:
        from kept.annotation import annotate_run_dir

        stats = annotate_run_dir(self.run_dir, self.config, num_shards=world_size, shard_index=rank, merge=False)
        self.stat_update("documents", value=int(stats.get("documents", 0)))
        self.stat_update("spans", value=int(stats.get("spans", 0)))
        return iter(())  # the shard is on disk; no documents flow to a next step


def annotate_with_datatrove(
    run_dir: str | Path, config: Any, *, workers: int = 2, tasks: int | None = None
) -> dict[str, Any]:
    """Annotate ``RUN_DIR`` as ``tasks`` shards (default: ``workers``) on ``workers`` local processes, then merge.

    The caller holds the run directory's exclusive lock (the workers are its children). Returns the merged
    statistics, as ``kept.annotation.annotate_run_dir`` does.
    """
    if not HAVE_DATATROVE:
        raise KeptError(
            "the datatrove engine needs the datatrove package",
            where="--engine datatrove",
            fix="pip install 'kept[datatrove]' (or use the default engine, --num-proc for local workers)",
        )
    if workers < 1 or (tasks is not None and tasks < 1):
        raise KeptError(
            f"--workers must be at least 1, got {workers}", where="--workers", fix="pass --workers 2 or more"
        )
    from datatrove.executor import LocalPipelineExecutor

    from kept.annotation import merge_annotated_shards

    run_dir = Path(run_dir)
    tasks = tasks or workers
    executor = LocalPipelineExecutor(
        pipeline=[AnnotateShards(run_dir, config)],
        tasks=tasks,
        workers=workers,
        logging_dir=str(run_dir / "logs" / "datatrove-annotate"),
        skip_completed=False,
    )
    try:
        executor.run()
    except Exception as error:  # noqa: BLE001 - datatrove re-raises a worker's failure wrapped; show ours
        cause: BaseException | None = error
        while (
            cause is not None
            and not isinstance(cause, (KeptError,))
            and type(cause).__name__ not in ("MaskingError", "KGError")
        ):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        raise
    if tasks == 1:  # one shard is the whole corpus: annotate_run_dir wrote corpus/annotated itself
        from kept.rundir import read_json, run_paths

        return dict(read_json(run_paths(run_dir).annotation_stats, "annotation statistics"))
    return merge_annotated_shards(run_dir, tasks)


__all__ = ["HAVE_DATATROVE", "AnnotateShards", "annotate_with_datatrove"]

"""EmbeddingConfig: what KG embedding to train with PyKEEN (the ``kg:`` section of a run configuration)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from kg.config_model import ConfigModel
from kg.errors import KGError


class EmbeddingConfig(ConfigModel):
    """What to train. Anything PyKEEN's ``pipeline`` takes by name can be named here."""

    error_class: ClassVar[type[KGError]] = KGError
    section: ClassVar[str] = "kg"

    model: str = "TransE"
    dim: int = Field(100, gt=0)
    epochs: int = Field(100, gt=0)
    batch_size: int = Field(256, gt=0)
    learning_rate: float = 0.01
    optimizer: str = "Adam"
    loss: str | None = None  # None: the model's default
    training_loop: str = "sLCWA"
    negative_sampler: str | None = None  # None: PyKEEN's default for sLCWA ("basic")
    num_negs_per_pos: int | None = None
    seed: int = 42
    split: Literal["auto", "random", "predefined", "none"] = "auto"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # training, testing, validation
    min_triples_to_split: int = 50
    min_test_triples: int = 200  # a random split holds out at least min(this, triples // 10) when coverage allows
    device: str | None = None  # None: cuda when available, else cpu
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    evaluation_batch_size: int | None = (
        None  # None: min(256, what keeps a [batch, entities, dim] score tensor <= 512 MB)
    )
    max_evaluation_triples: int | None = 5000  # cap when evaluating on training triples (no split)
    use_tqdm: bool = False

    @field_validator("ratios")
    @classmethod
    def _fractions(cls, ratios: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
            raise ValueError(
                f"ratios must be three non-negative fractions summing to 1 (training > 0), got "
                f"{list(ratios)}; e.g. [0.8, 0.1, 0.1] for training, testing, validation"
            )
        return ratios

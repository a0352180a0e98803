"""Link a mention string to a KG entity through the alias index (best candidate by prior)."""

from __future__ import annotations

from typing import Any

from masking.detectors.base import AliasIndexLike


class MentionLinker:
    """Caches ``alias_index.lookup`` per mention text; ``link(text) -> (entity_id or -1, ambiguous)``.

    ``min_prior``: a best candidate with a lower prior is not trusted (stays unlinked).
    """

    def __init__(
        self,
        alias_index: AliasIndexLike | None,
        *,
        min_prior: float = 0.0,
        exact: bool = False,
        cache_size: int = 200_000,
    ) -> None:
        self.alias_index = alias_index
        self.min_prior = float(min_prior)
        self.exact = exact
        self.cache_size = cache_size
        self._cache: dict[str, tuple[int, bool]] = {}

    def link(self, mention: str) -> tuple[int, bool]:
        if self.alias_index is None:
            return -1, False
        hit = self._cache.get(mention)
        if hit is not None:
            return hit
        candidates: list[Any] = self.alias_index.lookup(mention, exact=self.exact) or []
        result = (-1, False)
        if candidates:
            best = candidates[0]
            prior = float(getattr(best, "prior", 1.0))
            if prior >= self.min_prior:
                result = (int(best.entity_id), len(candidates) > 1)
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[mention] = result
        return result

"""Masking strategies as batched tensor code: which tokens of a padded batch to predict.

Every strategy reduces to the same two steps:

1. ``selection_units``: map each token to a *selection unit* local to its row ([B, L] long, -1 for
   tokens that can never be masked) and give each unit a *tier* (lower tiers are chosen first);
2. ``choose_units``: shuffle the units of each row inside their tiers and take a prefix whose token
   count fills the row's budget (``mlm_probability`` x non-special tokens).

The prefix rule takes unit k when ``tokens before it + size_k / 2 < quota`` (a row with a positive
budget and nothing taken gets its first unit), so a quota is met within half the largest unit and no
unit is split. The budget is spent in three passes: tier 0 up to its quota (``first_share`` x the
row's budget), the other tiers up to the rest of the budget (plus what tier 0 left unused when it ran
out of units), then any unit still free up to what is left (tier 0 again when the others ran out).
With one quota (``first_share`` 1, or a single tier) the masked count is within half the largest unit
of the budget, with two within the largest. All work is sort / cumsum / gather / scatter over [B, U]
tensors.

Strategies: ``token`` (each token), ``whole_word`` (words), ``span`` (SpanBERT: words grouped in
consecutive spans of geometric length, p=0.2, max 10 words, then spans drawn until the budget),
``phrase`` (phrase units up to ``phrase_share`` of the budget, words/entities fill the rest),
``entity`` (entity units up to ``entity_share`` of the budget, the rest fills the remainder).
"""

from __future__ import annotations

import math

import torch

from masking.spans import KIND_ENTITY, KIND_PHRASE, KIND_WORD

__all__ = [
    "selection_units",
    "choose_units",
    "first_tier_share",
    "unit_actions",
    "KIND_WORD",
    "KIND_PHRASE",
    "KIND_ENTITY",
]

_EMPTY_TIER = 3  # ids that no token uses sort last


def _scatter_max(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Number of units per row (max local id + 1; 0 for rows without units)."""
    return torch.where(valid, ids, -1).amax(dim=1) + 1 if ids.shape[1] else torch.zeros(ids.shape[0], dtype=torch.long)


def _truncated_geometric(shape: tuple[int, ...], p: float, max_len: int, generator: torch.Generator) -> torch.Tensor:
    """Lengths in 1..max_len with P(l) proportional to p (1-p)^(l-1) (SpanBERT's clipped geometric)."""
    if p >= 1.0 or max_len == 1:
        return torch.ones(shape, dtype=torch.long)
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    q = 1.0 - p
    tail = 1.0 - q**max_len
    lengths = torch.ceil(torch.log1p(-u * tail) / math.log(q)).long()
    return lengths.clamp_(1, max_len)


def selection_units(
    strategy: str,
    content: torch.Tensor,
    unit_ids: torch.Tensor | None,
    unit_kind: torch.Tensor | None,
    word_ids: torch.Tensor | None,
    generator: torch.Generator,
    span_p: float = 0.2,
    span_max: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token -> local selection unit ([B, L], -1 never masked) and tiers ([B, U]).

    ``content`` marks maskable tokens (non-special, non-padding). ``word_ids`` falls back to
    ``unit_ids`` when absent.
    """
    batch, length = content.shape
    if strategy == "token":
        ids = torch.arange(length).expand(batch, length)
        ids = torch.where(content, ids, -1)
        tiers = torch.where(content, 0, _EMPTY_TIER)
        return ids, tiers
    if strategy in ("whole_word", "span"):
        base = word_ids if word_ids is not None else unit_ids
        assert base is not None
        ids = torch.where(content, base, -1)
        if strategy == "span":
            n_words = _scatter_max(ids, ids >= 0)  # [B]
            w_max = int(n_words.max()) if batch else 0
            if w_max > 0:
                lengths = _truncated_geometric((batch, w_max), span_p, span_max, generator)
                starts = torch.cumsum(lengths, dim=1) - lengths  # word index where each segment starts
                is_start = torch.zeros(batch, w_max + 1, dtype=torch.long)
                is_start.scatter_(1, starts.clamp_(max=w_max), 1)
                segment_of_word = torch.cumsum(is_start[:, :w_max], dim=1) - 1  # [B, W]
                ids = torch.where(ids >= 0, segment_of_word.gather(1, ids.clamp(min=0)), -1)
        n_units = int(_scatter_max(ids, ids >= 0).max()) if batch and length else 0
        tiers = _tiers_from_presence(ids, n_units, tier_of_token=None)
        return ids, tiers
    if strategy in ("phrase", "entity"):
        assert unit_ids is not None and unit_kind is not None
        ids = torch.where(content, unit_ids, -1)
        n_units = int(_scatter_max(ids, ids >= 0).max()) if batch and length else 0
        preferred = KIND_PHRASE if strategy == "phrase" else KIND_ENTITY
        tier_of_token = (unit_kind != preferred).long()  # 0 preferred, 1 the rest
        tiers = _tiers_from_presence(ids, n_units, tier_of_token=tier_of_token)
        return ids, tiers
    raise ValueError(f"unknown strategy {strategy!r}")


def _tiers_from_presence(ids: torch.Tensor, n_units: int, tier_of_token: torch.Tensor | None) -> torch.Tensor:
    batch = ids.shape[0]
    width = max(n_units, 1)
    # one spare column receives the writes of tokens without a unit, then is dropped
    tiers = torch.full((batch, width + 1), _EMPTY_TIER, dtype=torch.long)
    if n_units == 0:
        return tiers[:, :width]
    index = torch.where(ids >= 0, ids, width)
    src = tier_of_token if tier_of_token is not None else torch.zeros_like(ids)
    # all tokens of a unit share its kind, so any writer gives the unit's tier
    tiers.scatter_(1, index, src)
    return tiers[:, :width].contiguous()


def first_tier_share(strategy: str, entity_share: float, phrase_share: float) -> float:
    """Share of a row's budget reserved for tier 0 of ``strategy`` (its preferred units); 1 for the others."""
    return {"entity": entity_share, "phrase": phrase_share}.get(strategy, 1.0)


def _fill(sizes: torch.Tensor, pool: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Prefix rule over the ``pool`` units of each row, in sorted order: take while before + size/2 < quota.

    sizes: [B, U] float (sorted order), pool: [B, U] bool, quota: [B] float. Returns the taken units [B, U].
    """
    pool_sizes = torch.where(pool, sizes, torch.zeros_like(sizes))  # [B, U]
    before = torch.cumsum(pool_sizes, dim=1) - pool_sizes  # [B, U] pool tokens ahead of each unit
    return pool & ((before + 0.5 * sizes) < quota.unsqueeze(1))


def choose_units(
    ids: torch.Tensor, tiers: torch.Tensor, budget: torch.Tensor, generator: torch.Generator, first_share: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill each row's ``budget`` (float tokens, [B]) with whole units.

    Tier-0 units get ``first_share`` x budget (per row); the later tiers the rest, plus what tier 0 left
    when it ran out of units; units still free fill what the later tiers left when they ran out too.
    ``first_share=1`` spends the budget on tier 0 first (the later tiers only once it is exhausted).
    Returns ``(masked [B, L] bool, chosen [B, U] bool)``.
    """
    batch, n_units = tiers.shape
    valid = ids >= 0
    safe = ids.clamp(min=0)
    sizes = torch.zeros(batch, n_units, dtype=torch.float32)
    sizes.scatter_add_(1, safe, valid.float())
    key = tiers.float() + torch.rand(batch, n_units, generator=generator)
    order = torch.argsort(key, dim=1)
    sorted_sizes = sizes.gather(1, order)  # [B, U]
    present = sorted_sizes > 0  # [B, U]
    first = (tiers.gather(1, order) == 0) & present  # [B, U]
    budget = budget.float()
    first_quota = budget * float(first_share)  # [B]
    take = _fill(sorted_sizes, first, first_quota)
    spent = (sorted_sizes * take).sum(dim=1)  # [B]
    # tier 0 keeps its quota unless it ran out of units; then what it did not use goes to the rest
    exhausted = ~(first & ~take).any(dim=1)  # [B]
    take |= _fill(sorted_sizes, present & ~first, budget - torch.where(exhausted, spent, first_quota))
    # when the rest ran out too, whatever is still free (tier 0 beyond its share) fills the budget
    spent = (sorted_sizes * take).sum(dim=1)
    take |= _fill(sorted_sizes, present & ~take, budget - spent)
    take[:, 0] |= (budget > 0) & ~take.any(dim=1) & present[:, 0]  # at least one unit in a row with a budget
    chosen = torch.zeros(batch, n_units, dtype=torch.bool)
    chosen.scatter_(1, order, take)
    masked = chosen.gather(1, safe) & valid
    return masked, chosen


def unit_actions(
    ids: torch.Tensor, n_units: int, mask_prob: float, random_prob: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit: replace with [MASK] (prob ``mask_prob``), with random tokens (``random_prob``), or keep.

    Decided once per unit and broadcast to its tokens: returns ``(to_mask [B, L], to_random [B, L])``.
    """
    u = torch.rand(ids.shape[0], max(n_units, 1), generator=generator)
    per_token = u.gather(1, ids.clamp(min=0))
    to_mask = per_token < mask_prob
    to_random = (per_token >= mask_prob) & (per_token < mask_prob + random_prob)
    return to_mask, to_random

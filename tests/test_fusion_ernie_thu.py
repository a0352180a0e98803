"""Exact ERNIE-THU mode: each KeptConfig / MaskingConfig option that selects the original's behaviour,
and the ``ernie_thu`` preset checked against an independent float64 implementation of the equations."""

from __future__ import annotations

import pytest
import torch

from fusion import EntityTable, FusionError, KeptConfig, KeptForPreTraining, KeptModel
from fusion.modeling_kept import align_entities
from masking import MaskingConfig, MaskingError
from masking.dea import corrupt_alignments


# ------------------------------------------------------------------------------------ dEA replacement
def _replacements(replace_from: str) -> torch.Tensor:
    """Replacement values of a batch where entity 7 holds 99 aligned positions and entity 3 one."""
    entity_ids = torch.full((4, 100), -1)
    entity_ids[0, :99] = 7
    entity_ids[1, 0] = 3
    corrupted, labels = corrupt_alignments(
        entity_ids, 1.0, 0.0, torch.Generator().manual_seed(0), replace_from=replace_from
    )
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
    assert MaskingConfig(dea_replace="distinct").dea_replace == "distinct"
    with pytest.raises(MaskingError, match="dea_replace"):
        MaskingConfig(dea_replace="nope")


# ------------------------------------------------------------------------ fusion model: shared pieces
NUM_ENTITIES = 12
SMALL = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_knowledge_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    entity_dim=16,
    num_entity_attention_heads=4,
    max_position_embeddings=32,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def build(cls=KeptForPreTraining, preset: str = "tiny", **overrides) -> torch.nn.Module:
    """A float64 model in eval mode with every parameter random (biases and LayerNorms too, so each
    bias a variant moves shows), and a float64 frozen entity table."""
    config = KeptConfig.from_preset(preset, **{**SMALL, **overrides})
    config._attn_implementation = "eager"
    model = cls(config).double().eval()
    generator = torch.Generator().manual_seed(1)
    state = {
        name: 0.3 * torch.randn(value.shape, generator=generator, dtype=torch.float64)
        for name, value in model.state_dict().items()
        if value.is_floating_point()
    }
    model.load_state_dict(state, strict=False)
    model.set_entity_table(EntityTable(weight=torch.randn(NUM_ENTITIES, 16, generator=generator, dtype=torch.float64)))
    return model


def batch_with_entities() -> dict[str, torch.Tensor]:
    """3 sequences of 12: repeated entities, a row without entities, right padding; one dEA replacement
    (by an entity of the batch) and one removal in the input."""
    generator = torch.Generator().manual_seed(2)
    input_ids = torch.randint(5, 100, (3, 12), generator=generator)
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[2, 9:] = 0
    truth = torch.full((3, 12), -1)
    truth[0, [2, 5, 6]] = torch.tensor([4, 9, 4])
    truth[2, [1, 3, 7]] = torch.tensor([0, 11, 9])
    entity_ids = truth.clone()
    entity_ids[0, 6] = 11  # replaced by another entity of the batch
    entity_ids[2, 3] = -1  # alignment removed
    labels = torch.full((3, 12), -100)
    labels[:, [2, 4, 8]] = input_ids[:, [2, 4, 8]]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "entity_ids": entity_ids,
        "entity_labels": torch.where(truth >= 0, truth, torch.full_like(truth, -100)),
        "labels": labels,
    }


# --------------------------------------------------------------------------------- the options, one each
def test_first_knowledge_layer_mix_has_no_entity_attention():
    model = build(KeptModel, first_knowledge_layer="mix")
    layers = model.knowledge_encoder.layer
    assert layers[0].entity_attention is None and layers[1].entity_attention is not None
    assert not any(".0.entity_attention." in name for name in model.state_dict())
    assert build(KeptModel).knowledge_encoder.layer[0].entity_attention is not None  # default: "norm"
    with pytest.raises(FusionError, match="first_knowledge_layer"):
        KeptConfig(first_knowledge_layer="sim")


def test_entity_bias_at_all_adds_b_e_at_every_token():
    """Without any entity, "all" is a BERT layer whose intermediate bias is b_t + b_e."""
    batch = batch_with_entities()
    batch.pop("entity_ids")
    everywhere = build(KeptModel, entity_bias_at="all")
    shifted = build(KeptModel)  # same weights, default "aligned"
    with torch.no_grad():
        for layer in shifted.knowledge_encoder.layer:
            layer.intermediate.dense.bias += layer.entity_intermediate.bias
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    got = everywhere(**inputs).last_hidden_state
    assert torch.allclose(got, shifted(**inputs).last_hidden_state, atol=1e-10)
    assert not torch.allclose(got, build(KeptModel)(**inputs).last_hidden_state, atol=1e-3)


def test_entity_mask_cls_gives_cls_an_entity_slot():
    entity_ids = torch.full((2, 6), -1)
    entity_ids[0, 3] = 5
    with_cls = align_entities(entity_ids, None, 2, 6, torch.device("cpu"), include_cls=True)
    assert with_cls.slots == 2 and with_cls.token_index.tolist() == [0, 3, 6]
    assert with_cls.slot_ids.tolist() == [-1, 5, -1]  # [CLS]: no entity, a zero vector
    batch = batch_with_entities()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "entity_ids")}
    model = build(KeptModel, entity_mask_cls=True)
    out = model(**inputs)
    assert (out.entity_last_hidden_state[:, 0].abs().sum(-1) > 0).all()  # every row, with entities or not
    default = build(KeptModel)(**inputs)
    assert (default.entity_last_hidden_state[:, 0] == 0).all()
    # the entities of row 0 attend to [CLS]'s slot: their states change
    assert not torch.allclose(out.entity_last_hidden_state[0, 2], default.entity_last_hidden_state[0, 2])
    model(input_ids=inputs["input_ids"])  # no entities, no table needed: only [CLS]'s zero slot


def test_dea_null_candidate_is_a_zero_score_in_front():
    batch = batch_with_entities()
    out = build(dea_null_candidate=True, dea_num_negatives=0)(**batch)
    batch_entities = sorted(set(batch["entity_labels"][batch["entity_labels"] >= 0].tolist()))
    assert out.entity_candidate_ids.tolist() == [-1] + batch_entities
    assert (out.entity_logits[:, 0] == 0).all()
    default = build(dea_num_negatives=0)(**batch)
    assert default.entity_candidate_ids.tolist() == batch_entities


def test_ernie_thu_preset_is_base_with_the_original_everywhere():
    config = KeptConfig.from_preset("ernie_thu")
    base = KeptConfig.from_preset("base")
    assert (config.hidden_size, config.num_hidden_layers, config.num_knowledge_layers, config.entity_dim) == (
        base.hidden_size,
        base.num_hidden_layers,
        base.num_knowledge_layers,
        base.entity_dim,
    )
    assert (
        config.first_knowledge_layer,
        config.entity_bias_at,
        config.entity_mask_cls,
        config.dea_null_candidate,
        config.dea_num_negatives,
    ) == ("mix", "all", True, True, 0)
    assert (base.first_knowledge_layer, base.entity_bias_at, base.entity_mask_cls, base.dea_null_candidate) == (
        "norm",
        "aligned",
        False,
        False,
    )


# ------------------------------------------------------------- the paper's equations, written out again
def _ln(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-12) * state[prefix + "weight"] + state[prefix + "bias"]


def _dense(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return x @ state[prefix + "weight"].T + state[prefix + "bias"]


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / 2.0**0.5))


def _attention(
    x: torch.Tensor, additive_mask: torch.Tensor, heads: int, state: dict, q: str, k: str, v: str
) -> torch.Tensor:
    """Multi-head scaled dot-product self-attention; additive_mask [B, 1, 1, L] (0 or -10000)."""
    batch, length, width = x.shape
    split = lambda t: t.view(batch, length, heads, width // heads).transpose(1, 2)  # noqa: E731
    scores = split(_dense(x, state, q)) @ split(_dense(x, state, k)).transpose(-1, -2) / (width // heads) ** 0.5
    context = torch.softmax(scores + additive_mask, dim=-1) @ split(_dense(x, state, v))
    return context.transpose(1, 2).reshape(batch, length, width)


def reference(
    state: dict, table: torch.Tensor, batch: dict[str, torch.Tensor], cfg: KeptConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ERNIE-THU as in the paper and the original code, per token: T-encoder = BERT layers; each aggregator:
    w̃ = MHA(w), ẽ = MHA(e) (the first layer "mix": ẽ = e), h = GELU(W_t w̃ + b_t + W_e ẽ + b_e) with ẽ = 0 off
    the entity mask (so b_e at every token), w' = LN(W'_t h + b + w̃), e' = LN(W'_e h + b + ẽ); entity mask =
    aligned tokens and [CLS]. -> (token states [B, L, H], entity states [B, L, E], loss = MLM + dEA with the
    batch's distinct entities plus a zero vector as candidates)."""
    ids, attention_mask, entity_ids = batch["input_ids"], batch["attention_mask"], batch["entity_ids"]
    length = ids.shape[1]
    x = (
        state["kept.embeddings.word_embeddings.weight"][ids]
        + state["kept.embeddings.position_embeddings.weight"][:length]
        + state["kept.embeddings.token_type_embeddings.weight"][batch["token_type_ids"]]
    )
    x = _ln(x, state, "kept.embeddings.LayerNorm.")
    token_mask = (1.0 - attention_mask[:, None, None, :].double()) * -10000.0  # [B, 1, 1, L]

    def token_attention(p: str, x: torch.Tensor) -> torch.Tensor:
        context = _attention(
            x,
            token_mask,
            cfg.num_attention_heads,
            state,
            p + "attention.self.query.",
            p + "attention.self.key.",
            p + "attention.self.value.",
        )
        return _ln(_dense(context, state, p + "attention.output.dense.") + x, state, p + "attention.output.LayerNorm.")

    for i in range(cfg.num_hidden_layers):
        p = f"kept.encoder.layer.{i}."
        a = token_attention(p, x)
        x = _ln(
            _dense(_gelu(_dense(a, state, p + "intermediate.dense.")), state, p + "output.dense.") + a,
            state,
            p + "output.LayerNorm.",
        )

    ent_mask = (entity_ids >= 0).double()
    ent_mask[:, 0] = 1.0  # [CLS], as the original's run scripts
    e = torch.where((entity_ids >= 0)[..., None], table[entity_ids.clamp(min=0)], 0.0)  # [B, L, E]
    entity_additive = (1.0 - ent_mask[:, None, None, :]) * -10000.0
    for k in range(cfg.num_knowledge_layers):
        p = f"kept.knowledge_encoder.layer.{k}."
        w_att = token_attention(p, x)
        if k == 0:  # "mix"
            e_att = e * ent_mask[..., None]
        else:
            context = _attention(
                e,
                entity_additive,
                cfg.num_entity_attention_heads,
                state,
                p + "entity_attention.query.",
                p + "entity_attention.key.",
                p + "entity_attention.value.",
            )
            e_att = (
                _ln(_dense(context, state, p + "entity_attention.dense.") + e, state, p + "entity_attention.LayerNorm.")
                * ent_mask[..., None]
            )
        h = _gelu(_dense(w_att, state, p + "intermediate.dense.") + _dense(e_att, state, p + "entity_intermediate."))
        x = _ln(_dense(h, state, p + "output.dense.") + w_att, state, p + "output.LayerNorm.")
        e = _ln(_dense(h, state, p + "entity_output.dense.") + e_att, state, p + "entity_output.LayerNorm.")

    transformed = _ln(
        _gelu(_dense(x, state, "cls.predictions.transform.dense.")), state, "cls.predictions.transform.LayerNorm."
    )
    logits = transformed @ state["kept.embeddings.word_embeddings.weight"].T + state["cls.predictions.bias"]
    mlm = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100
    )
    truth = batch["entity_labels"]
    distinct = torch.unique(truth[truth >= 0])
    candidates = torch.cat([torch.zeros(1, table.shape[1], dtype=table.dtype), table[distinct]])  # null first
    projected = _ln(_gelu(_dense(x, state, "entity_head.dense.")), state, "entity_head.LayerNorm.")
    scores = projected[truth >= 0] @ candidates.T  # [N_labelled, 1 + D]
    dea = torch.nn.functional.cross_entropy(scores, 1 + torch.searchsorted(distinct, truth[truth >= 0]))
    return x, e, mlm + dea


def test_ernie_thu_mode_matches_the_equations():
    model = build(preset="ernie_thu")
    batch = batch_with_entities()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    state = model.state_dict()
    tokens, entities, loss = reference(state, model.entity_table.weight, batch, model.config)
    valid = batch["attention_mask"].bool()
    assert torch.allclose(out.hidden_states[-1][valid], tokens[valid], atol=1e-5, rtol=0)
    # entity states on the entity mask (KEPT keeps zeros elsewhere)
    ent_mask = (batch["entity_ids"] >= 0) & valid
    ent_mask[:, 0] = True
    kept_entities = model.kept(
        **{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids", "entity_ids")}
    ).entity_last_hidden_state
    assert torch.allclose(kept_entities[ent_mask], entities[ent_mask], atol=1e-5, rtol=0)
    assert abs(out.loss.item() - loss.item()) < 1e-5  # KEPT's losses are float32
    # KEPT's defaults (no random negatives either) differ from it: the check can tell them apart
    default = build(dea_num_negatives=0)
    with torch.no_grad():
        assert abs(default(**batch).loss.item() - loss.item()) > 1e-3

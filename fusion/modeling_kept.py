"""KEPT fusion model (ERNIE-THU): T-encoder of BERT layers, K-encoder of aggregator layers, heads.

Shapes: B batch, L tokens, H hidden, I intermediate, E entity dim, S entity slots per sequence
(the most aligned entities of any sequence in the batch), N aligned entities in the whole batch,
C dEA candidate entities.

Why one file of ~1,150 lines (ruff format lays signatures and calls out one argument per line): this
follows the Hugging Face one-model-file convention (transformers' ``modeling_<model>.py`` beside
``configuration_<model>.py``): the outputs, the layers, the entity
alignment, the base model and every head are read top to bottom in one place, in the order a forward pass
uses them, as in ``modeling_bert.py``. The parts that are not the model proper already live beside it:
the configuration (``configuration_kept``), the entity table (``entity_table``), checkpoint loading
(``loading``), export (``export``), the optional ELECTRA generator/discriminator pair (``electra``) and the
joint-KG and WKLM heads (``kg_link``, ``wklm``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput
from transformers.modeling_utils import PreTrainedModel
from transformers.models.bert.modeling_bert import (
    BertAttention,
    BertEmbeddings,
    BertIntermediate,
    BertLMPredictionHead,
    BertOnlyMLMHead,
    BertOutput,
    BertPooler,
)
from transformers.utils import ModelOutput

from fusion.configuration_kept import KeptConfig
from fusion.entity_table import DEFAULT_KEY, ENTITY_TABLE_FILE, EntityTable, check_ids, open_table
from fusion.errors import FusionError
from fusion.kg_link import KeptKGLinkHead
from fusion.wklm import KeptReplacedEntityHead, parameters_times_zero, replaced_entity_loss

IGNORE_INDEX = -100


# --------------------------------------------------------------------------------------------- outputs
@dataclass
class KeptModelOutput(ModelOutput):
    """last_hidden_state [B, L, H]; entity_last_hidden_state [B, L, E] (zeros where no entity is aligned; with
    config.entity_mask_cls [CLS] has a state);
    pooler_output [B, H] or None; hidden_states: embeddings + every T and K layer; attentions (eager only)."""

    last_hidden_state: torch.Tensor | None = None
    entity_last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class KeptForPreTrainingOutput(ModelOutput):
    """loss = mlm_weight*mlm_loss + dea_weight*dea_loss (+ sop_weight*sop_loss) (+ joint_kg_weight*kg_loss, the
    link-prediction loss of the batch's kg_triples, fusion.kg_link); logits [B, L, vocab];
    entity_logits [N_labelled, C] scores of the dEA-labelled positions (row order = ``entity_labels >= 0``
    in row-major order) against ``entity_candidate_ids`` [C] (sorted KG ids, CPU; -1 first = the "no entity"
    candidate of config.dea_null_candidate, score 0); under torch.compile C is a padded pool (device tensor,
    see ``dea_candidates_padded``) whose non-candidate columns score -inf; sop_logits [B, 2].
    When ``labels`` are given the MLM loss is computed on the labelled positions only and ``logits`` are
    returned detached (for metrics) in eval mode, None in training mode (see ``mlm_logits_and_loss``)."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    dea_loss: torch.Tensor | None = None
    sop_loss: torch.Tensor | None = None
    kg_loss: torch.Tensor | None = None
    red_loss: torch.Tensor | None = None  # replaced-entity detection (config.red_weight > 0; fusion.wklm)
    red_accuracy: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    entity_logits: torch.Tensor | None = None
    entity_candidate_ids: torch.Tensor | None = None
    sop_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------- layers
class KeptLayer(GradientCheckpointingLayer):
    """A BERT layer (T-encoder); same parameter names as transformers' BertLayer."""

    def __init__(self, config: KeptConfig, layer_idx: int | None = None) -> None:
        super().__init__()
        self.attention = BertAttention(config, layer_idx=layer_idx)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(hidden_states, attention_mask)  # [B, L, H]
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, weights


class KeptEntitySelfAttention(nn.Module):
    """Multi-head self-attention among one sequence's aligned entities (SDPA), then dense+dropout+LN residual
    (ERNIE-THU's ``self_ent``/``output_ent``)."""

    def __init__(self, config: KeptConfig) -> None:
        super().__init__()
        dim = config.entity_dim
        self.num_heads = config.num_entity_attention_heads
        self.head_dim = dim // self.num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.attention_dropout = float(config.attention_probs_dropout_prob)
        self.dense = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)

    def forward(self, entity_states: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
        # entity_states [B, S, E]; entity_mask [B, 1, S, S] bool (True = may attend)
        batch, slots, dim = entity_states.shape
        shape = (batch, slots, self.num_heads, self.head_dim)
        q = self.query(entity_states).view(shape).transpose(1, 2)  # [B, heads, S, d]
        k = self.key(entity_states).view(shape).transpose(1, 2)
        v = self.value(entity_states).view(shape).transpose(1, 2)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=entity_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(batch, slots, dim)  # [B, S, E]
        return self.LayerNorm(self.dropout(self.dense(context)) + entity_states)


class KeptEntityOutput(nn.Module):
    """e' = LN(dropout(W'_e h) + ẽ) on the aligned positions (ERNIE-THU's BertOutput_ent)."""

    def __init__(self, config: KeptConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.entity_dim)
        self.LayerNorm = nn.LayerNorm(config.entity_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, fused: torch.Tensor, entity_input: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(fused)) + entity_input)


@dataclass
class EntityAlignment:
    """Index plumbing between token positions and entity slots, computed once per batch.

    token_index [N] flat index into B*L of each listed slot's token; slot_index [N] flat index into B*S
    (None: every slot in order, N = B*S); entity_mask [B, 1, S, S] bool attention mask among slots
    (padding slots attend only to themselves); slot_ids [N] KG ids in slot order.
    Two layouts give the same results: the dynamic one (``slot_valid`` None) lists only the N aligned
    entities and S is the batch's most; the static one (config.max_entity_slots) lists all B*S slots,
    S fixed, ``slot_valid`` [N, 1] False on padding slots, whose values are zeroed wherever they would
    reach a token (their token_index is the row's first token, to which they add exact zeros)."""

    slots: int
    token_index: torch.Tensor
    slot_index: torch.Tensor | None
    entity_mask: torch.Tensor
    slot_ids: torch.Tensor
    slot_valid: torch.Tensor | None = None

    def select(self, states: torch.Tensor) -> torch.Tensor:
        """[B, S, E] -> [N, E], the listed slots' states."""
        flat = states.reshape(-1, states.shape[-1])
        return flat if self.slot_index is None else flat.index_select(0, self.slot_index)

    def _real(self, values: torch.Tensor) -> torch.Tensor:
        """[N, X] with padding slots' rows zeroed (static layout): they must reach no token or slot."""
        return values if self.slot_valid is None else values.masked_fill(~self.slot_valid, 0.0)

    def to_slots(self, values: torch.Tensor, batch: int) -> torch.Tensor:
        """[N, E] -> [B, S, E], zeros on padding slots."""
        if self.slot_index is None:
            return self._real(values).view(batch, self.slots, -1)
        return (
            values.new_zeros(batch * self.slots, values.shape[-1])
            .index_copy(0, self.slot_index, values)
            .view(batch, self.slots, -1)
        )

    def add_to_tokens(self, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """rows [B*L, X] + values [N, X] at each slot's token (padding slots add exact zeros)."""
        return rows.index_add(0, self.token_index, self._real(values))

    def to_tokens(self, values: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """[N, E] -> [B, L, E], zeros where no entity is aligned."""
        zeros = values.new_zeros(batch * length, values.shape[-1])
        if self.slot_valid is None:
            return zeros.index_copy(0, self.token_index, values).view(batch, length, -1)
        # static layout: padding slots share token indices; index_add of zeros keeps the result exact
        return self.add_to_tokens(zeros, values).view(batch, length, -1)


def aligned_positions(
    entity_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    batch: int,
    length: int,
    device: torch.device,
    include_cls: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (KG ids [B, L] long, -1 where none; aligned [B, L] bool: the positions that get an entity slot)."""
    if entity_ids is None:
        ids = torch.full((batch, length), -1, dtype=torch.long, device=device)
    else:
        if entity_ids.shape != (batch, length):
            raise FusionError(
                f"entity_ids has shape {list(entity_ids.shape)}, expected {[batch, length]}",
                where="entity_ids",
                fix="Give one KG id (or -1) per token.",
            )
        ids = entity_ids.to(device=device, dtype=torch.long)
    aligned = ids >= 0  # [B, L]
    if include_cls and length:
        aligned[:, 0] = True
    if attention_mask is not None and attention_mask.dim() == 2:
        aligned = aligned & attention_mask.to(device).bool()
    return ids, aligned


def slot_attention_mask(valid: torch.Tensor) -> torch.Tensor:
    """valid [B, S] -> [B, 1, S, S] bool: real slots attend to real slots, padding slots to themselves
    (so no softmax row is empty)."""
    eye = torch.eye(valid.shape[1], dtype=torch.bool, device=valid.device)
    return (valid[:, None, None, :] | eye[None, None]).contiguous()


def align_entities(
    entity_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    batch: int,
    length: int,
    device: torch.device,
    include_cls: bool = False,
    max_slots: int | None = None,
) -> EntityAlignment:
    """Gather each sequence's aligned positions into S padded slots (no Python loop over tokens).

    ``include_cls``: position 0 ([CLS]) is a slot too, KG id -1 (a zero vector) unless an entity is linked
    there (ERNIE-THU's entity mask). ``max_slots`` None: S = the batch's most aligned entities (dynamic
    shapes, fastest eager); an int: S = max_slots (static shapes for torch.export / torch.compile
    fullgraph; a sequence with more entities raises)."""
    if max_slots is not None:
        return align_entities_static(entity_ids, attention_mask, batch, length, device, include_cls, max_slots)
    if torch.compiler.is_exporting():  # fail with the fix, not with a data-dependent-shape trace
        raise FusionError(
            "the entity slot count depends on the data and cannot be exported",
            where="config.max_entity_slots",
            fix="Set model.config.max_entity_slots (e.g. 64) before torch.export/ONNX export.",
        )
    return align_entities_dynamic(entity_ids, attention_mask, batch, length, device, include_cls)


@torch.compiler.disable  # data-dependent S and N: runs eagerly between compiled graphs
def align_entities_dynamic(
    entity_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    batch: int,
    length: int,
    device: torch.device,
    include_cls: bool = False,
) -> EntityAlignment:
    """S = the batch's most aligned entities; only the N aligned slots are listed."""
    ids, aligned = aligned_positions(entity_ids, attention_mask, batch, length, device, include_cls)
    counts = aligned.sum(dim=1)  # [B]
    slots = max(int(counts.max()) if batch else 0, 1)  # at least one (padding) slot: the path always runs
    order = torch.argsort((~aligned).to(torch.int32), dim=1, stable=True)[:, :slots]  # aligned first, in order
    slot_range = torch.arange(slots, device=device)
    valid = slot_range[None, :] < counts[:, None]  # [B, S]
    rows = torch.arange(batch, device=device)[:, None]
    token_index = (rows * length + order)[valid]  # [N]
    slot_index = (rows * slots + slot_range[None, :])[valid]  # [N]
    slot_ids = ids.gather(1, order)[valid]  # [N]
    return EntityAlignment(slots, token_index, slot_index, slot_attention_mask(valid), slot_ids)


def check_slot_count(counts: torch.Tensor, max_slots: int) -> None:
    """Every sequence's aligned entities must fit the static slots (an async check when traced)."""
    if torch.compiler.is_compiling():  # no host sync, no data-dependent branch in a graph
        torch._assert_async((counts <= max_slots).all(), "more aligned entities than config.max_entity_slots")
    elif counts.numel() and int(counts.max()) > max_slots:
        raise FusionError(
            f"a sequence has {int(counts.max())} aligned entities, more than config.max_entity_slots={max_slots}",
            where="entity_ids",
            fix="Raise config.max_entity_slots (at most the sequence length is ever needed).",
        )


def align_entities_static(
    entity_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    batch: int,
    length: int,
    device: torch.device,
    include_cls: bool,
    max_slots: int,
) -> EntityAlignment:
    """S = max_slots; all B*S slots listed (N = B*S), no data-dependent shape: a cumulative count gives
    each aligned token its slot, a scatter gives each slot its token (no sort)."""
    if max_slots < 1:
        raise FusionError(
            f"max_entity_slots is {max_slots}",
            where="config.max_entity_slots",
            fix="Use a positive slot count, or None for the dynamic layout.",
        )
    ids, aligned = aligned_positions(entity_ids, attention_mask, batch, length, device, include_cls)
    counts = aligned.sum(dim=1)  # [B]
    check_slot_count(counts, max_slots)
    rank = aligned.long().cumsum(dim=1) - 1  # [B, L] slot of each aligned token, in token order
    target = torch.where(aligned, rank, max_slots)  # [B, L]; column S collects the unaligned tokens (dropped)
    positions = torch.arange(length, device=device).expand(batch, length)  # [B, L]
    order = torch.zeros(batch, max_slots + 1, dtype=torch.long, device=device).scatter(1, target, positions)[
        :, :max_slots
    ]  # [B, S] token of each slot; padding slots: token 0
    valid = torch.arange(max_slots, device=device)[None, :] < counts[:, None]  # [B, S]
    rows = torch.arange(batch, device=device)[:, None]
    token_index = (rows * length + order).reshape(-1)  # [B*S]
    slot_ids = torch.where(valid, ids.gather(1, order), -1).reshape(-1)  # [B*S]; -1: a zero vector
    return EntityAlignment(
        max_slots, token_index, None, slot_attention_mask(valid), slot_ids, slot_valid=valid.reshape(-1, 1)
    )


class KeptAggregatorLayer(GradientCheckpointingLayer):
    """ERNIE-THU aggregator (K-encoder layer).

    w̃ = BertAttention(w);  ẽ = EntitySelfAttention(e) over the aligned slots;
    h = GELU(W_t·w̃ + b_t + W_e·ẽ + b_e)  (W_e·ẽ + b_e added only at aligned tokens, or b_e at every token
    when config.entity_bias_at == "all"; h has BERT's intermediate size);
    w' = LN(dropout(W'_t·h) + w̃);  e' = LN(dropout(W'_e·h) + ẽ).
    ``entity_attention=False`` is ERNIE-THU's "mix" layer: ẽ = e, no entity self-attention.
    The token side has BertLayer's parameter names, so BERT weights load into it and, with no
    entities (and the default entity_bias_at), the layer computes exactly a BertLayer.
    """

    def __init__(self, config: KeptConfig, layer_idx: int | None = None, entity_attention: bool = True) -> None:
        super().__init__()
        self.attention = BertAttention(config, layer_idx=layer_idx)
        self.intermediate = BertIntermediate(config)  # W_t, b_t and the activation
        self.output = BertOutput(config)  # W'_t, dropout, LN
        self.entity_attention = KeptEntitySelfAttention(config) if entity_attention else None
        self.entity_bias_everywhere = config.entity_bias_at == "all"
        self.entity_intermediate = nn.Linear(config.entity_dim, config.intermediate_size)  # W_e, b_e
        self.entity_output = KeptEntityOutput(config)  # W'_e, dropout, LN

    def forward(
        self,
        hidden_states: torch.Tensor,
        entity_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        alignment: EntityAlignment,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        # hidden_states [B, L, H]; entity_states [B, S, E]
        batch, length, _ = hidden_states.shape
        attention_output, weights = self.attention(hidden_states, attention_mask)  # w̃ [B, L, H]
        entity_attended = (
            entity_states
            if self.entity_attention is None  # "mix": fuse the input entities
            else self.entity_attention(entity_states, alignment.entity_mask)
        )  # ẽ [B, S, E]
        entity_selected = alignment.select(entity_attended)  # [N, E]

        pre = self.intermediate.dense(attention_output)  # [B, L, I]
        inter = pre.shape[-1]
        weight, entity_bias = self.entity_intermediate.weight, self.entity_intermediate.bias
        bias: torch.Tensor | None = entity_bias
        if self.entity_bias_everywhere:  # ERNIE-THU: a token without entity gets W_e·0 + b_e = b_e
            pre = pre + entity_bias.to(pre.dtype)
            bias = None
        entity_term = F.linear(entity_selected, weight, bias).to(pre.dtype)  # [N, I]
        pre = alignment.add_to_tokens(pre.reshape(-1, inter), entity_term).view(batch, length, inter)
        fused = self.intermediate.intermediate_act_fn(pre)  # h [B, L, I]

        layer_output = self.output(fused, attention_output)  # w' [B, L, H]
        fused_selected = fused.reshape(-1, inter).index_select(0, alignment.token_index)  # [N, I]
        entity_out = self.entity_output(fused_selected, entity_selected)  # e' [N, E]
        new_entities = alignment.to_slots(entity_out.to(entity_attended.dtype), batch)  # [B, S, E]
        return layer_output, new_entities, weights


# ----------------------------------------------------------------------------------------------- model
class KeptPreTrainedModel(PreTrainedModel):
    config_class = KeptConfig
    config: KeptConfig
    base_model_prefix = "kept"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = True
    _no_split_modules = ["BertEmbeddings", "KeptLayer", "KeptAggregatorLayer"]
    # losses are means over this batch's labelled positions: the Trainer must not pass num_items_in_batch
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)

    # ---- entity table
    def _kept(self) -> KeptModel:
        return self if isinstance(self, KeptModel) else getattr(self, self.base_model_prefix)

    @property
    def entity_table(self) -> EntityTable | None:
        """The frozen CPU entity table (None when none is loaded or the table is trainable)."""
        return self._kept()._entity_table

    def load_entity_table(
        self, path: str | Path, key: str = DEFAULT_KEY, mmap: bool = True, trainable: bool = False
    ) -> None:
        """Attach KG embeddings (safetensors tensor ``key`` [num_entities, entity_dim], row = KG id).

        Frozen (default): a CPU tensor outside the parameters (memory-mapped when ``mmap``) of which
        only the batch's rows travel to the device. ``trainable=True``: an ``nn.Embedding`` parameter
        (sparse gradients when ``config.entity_table_sparse_grad``; use SGD/SparseAdam/Adagrad then)."""
        self._kept()._attach_table(Path(path), key=key, mmap=mmap, trainable=trainable)
        self.config.entity_vocab_size = self._kept().config.entity_vocab_size
        self.config.freeze_entity_table = not trainable

    def set_entity_table(self, table: EntityTable) -> None:
        """Use an already opened frozen table (e.g. one memory-mapped table shared by several models)."""
        if table.dim != self.config.entity_dim:
            raise FusionError(
                f"entity table dim {table.dim} != config.entity_dim {self.config.entity_dim}",
                where=table.path or "set_entity_table",
                fix="Use a table of the model's entity_dim.",
            )
        kept = self._kept()
        kept.entity_embeddings = None
        kept._entity_table = table
        for config in {id(self.config): self.config, id(kept.config): kept.config}.values():
            config.entity_vocab_size = table.num_entities
            config.freeze_entity_table = True

    def save_pretrained(self, save_directory: str | os.PathLike[str], *args: Any, **kwargs: Any) -> None:
        """Hugging Face save plus, for a frozen table, ``entity_table.safetensors`` next to the weights."""
        super().save_pretrained(save_directory, *args, **kwargs)
        table = self.entity_table
        if table is not None and kwargs.get("is_main_process", True):
            table.save(Path(save_directory) / ENTITY_TABLE_FILE)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str] | None, *args: Any, **kwargs: Any):
        """Hugging Face load; a local directory's ``entity_table.safetensors`` is memory-mapped back.
        With ``output_loading_info=True`` returns (model, loading info) as transformers does."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_untrained_parts()  # loading replaces the parameters, and their requires_grad with them
        table_path = Path(str(pretrained_model_name_or_path)) / ENTITY_TABLE_FILE
        if model.config.freeze_entity_table and table_path.is_file():
            model.load_entity_table(table_path, mmap=True, trainable=False)
        return loaded

    def freeze_untrained_parts(self) -> None:
        """Set requires_grad False on parameters that no loss of this model reaches (none by default)."""

    @classmethod
    def from_bert(cls, bert_dir: str | Path, *, min_loaded_fraction: float = 0.9, **config_overrides: Any):
        """Initialise from a local BERT checkpoint directory -> (model, BertLoadReport).

        BERT's embeddings, pooler (when the model has one) and layers load; BERT layer i becomes T layer i
        for i < num_hidden_layers (T), then the token side of K layer i - T; entity parts and new heads
        start fresh. Only ``num_knowledge_layers`` given: T = N - K, so ``num_knowledge_layers=0`` gives
        exactly BERT's encoder; neither given: T = ceil(N/2), K = floor(N/2). Raises FusionError when less
        than ``min_loaded_fraction`` of the encoder's tensors load (0 disables). See fusion.loading."""
        from fusion.loading import load_from_bert

        return load_from_bert(cls, bert_dir, min_loaded_fraction=min_loaded_fraction, **config_overrides)

    def entity_path_anchor(self, entity_states: torch.Tensor | None) -> torch.Tensor | float:
        """0 * sum of the last entity states: keeps every entity-path parameter in the autograd graph
        (DDP without find_unused_parameters) without changing the loss."""
        if entity_states is None:
            return 0.0
        return entity_states.sum() * 0.0


class LayerStack(nn.Module):
    """``layer``: a list of layers, under BERT's names (``encoder.layer.N``), so BERT weights load by name."""

    def __init__(self, layers: Iterable[nn.Module]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class KeptModel(KeptPreTrainedModel):
    """Embeddings -> T-encoder (BERT layers) -> K-encoder (aggregators) -> token and entity states."""

    def __init__(self, config: KeptConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = LayerStack(KeptLayer(config, i) for i in range(config.num_hidden_layers))
        mix_first = config.first_knowledge_layer == "mix"  # ERNIE-THU: the first K layer has no entity attention
        self.knowledge_encoder = LayerStack(
            KeptAggregatorLayer(config, config.num_hidden_layers + i, entity_attention=not (mix_first and i == 0))
            for i in range(config.num_knowledge_layers)
        )
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self._entity_table: EntityTable | None = None
        self.entity_embeddings: nn.Embedding | None
        if not config.freeze_entity_table and config.entity_vocab_size > 0:
            self.entity_embeddings = nn.Embedding(
                config.entity_vocab_size, config.entity_dim, sparse=config.entity_table_sparse_grad
            )
        else:
            self.entity_embeddings = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = cast(nn.Embedding, value)  # transformers passes the word embeddings

    # ---- entity table
    def _attach_table(self, path: Path, key: str, mmap: bool, trainable: bool) -> None:
        weight = open_table(path, key=key, mmap=mmap and not trainable)
        if weight.shape[1] != self.config.entity_dim:
            raise FusionError(
                f"entity table dim {weight.shape[1]} != config.entity_dim {self.config.entity_dim}",
                where=path,
                fix=f"Build the model with entity_dim={weight.shape[1]}.",
            )
        self.config.entity_vocab_size = int(weight.shape[0])
        self.config.freeze_entity_table = not trainable
        if trainable:
            device = self.embeddings.word_embeddings.weight.device
            embedding = nn.Embedding(
                weight.shape[0], weight.shape[1], sparse=self.config.entity_table_sparse_grad, device=device
            )
            with torch.no_grad():
                embedding.weight.copy_(weight.float())
            self.entity_embeddings = embedding
            self._entity_table = None
        else:
            self.entity_embeddings = None
            self._entity_table = EntityTable(weight=weight, path=path, key=key)

    def has_entity_table(self) -> bool:
        return self.entity_embeddings is not None or self._entity_table is not None

    def entity_vectors(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Entity embeddings of KG ids ``ids`` (any shape) on the model's device -> [*ids.shape, E].

        Id -1 means "no entity" and gives a zero vector ([CLS]'s slot with config.entity_mask_cls, the null
        dEA candidate); other ids outside the table raise."""
        device = self.embeddings.word_embeddings.weight.device
        null = ids == -1  # [*ids.shape]
        known = torch.where(null, torch.zeros_like(ids), ids)  # row 0 stands in; zeroed below
        if self.entity_embeddings is not None:
            # check where the ids are (dEA candidates arrive on the CPU: no device sync for them)
            check_ids(known.reshape(-1), self.entity_embeddings.num_embeddings)
            vectors = self.entity_embeddings(known.to(device)).to(dtype)
        elif self._entity_table is not None:
            table = self._entity_table
            vectors = (
                table.gather_traceable(known, device, dtype)
                if torch.compiler.is_compiling()
                else table.gather(known, device, dtype)
            )
        elif torch.compiler.is_compiling():  # traced without a table: only "no entity" slots may come
            torch._assert_async(null.all(), "the batch has aligned entities but the model has no entity table")
            return torch.zeros(*ids.shape, self.config.entity_dim, device=device, dtype=dtype)
        elif bool(null.all()):  # no table and nothing to look up (an empty batch, or only [CLS] slots)
            return torch.zeros(*ids.shape, self.config.entity_dim, device=device, dtype=dtype)
        else:
            raise FusionError(
                "the batch has aligned entities but the model has no entity table",
                where="entity_ids",
                fix="Call model.load_entity_table('kg/embeddings.safetensors').",
            )
        return vectors.masked_fill(null.to(device).unsqueeze(-1), 0.0)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> KeptModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise FusionError(
                "give exactly one of input_ids or inputs_embeds",
                where="KeptModel.forward",
                fix="Pass input_ids [batch, length].",
            )
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        output_attentions = bool(output_attentions if output_attentions is not None else False)
        if output_attentions and self.config._attn_implementation != "eager":
            raise FusionError(
                f"attention weights need the eager attention, not {self.config._attn_implementation}",
                where="output_attentions",
                fix="Load the model with attn_implementation='eager' to get attentions.",
            )
        embedding_output = self.embeddings(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )  # [B, L, H]
        batch, length, _ = embedding_output.shape
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=embedding_output, attention_mask=attention_mask
        )
        all_hidden: list[torch.Tensor] = [embedding_output] if output_hidden_states else []
        all_attn: list[torch.Tensor] = []

        hidden = embedding_output
        for layer in self.encoder.layer:
            hidden, weights = layer(hidden, mask)
            if output_hidden_states:
                all_hidden.append(hidden)
            if output_attentions:
                all_attn.append(weights)

        entity_last = None
        if len(self.knowledge_encoder.layer):
            alignment = align_entities(
                entity_ids,
                attention_mask,
                batch,
                length,
                hidden.device,
                include_cls=self.config.entity_mask_cls,
                max_slots=self.config.max_entity_slots,
            )
            first = cast(KeptAggregatorLayer, self.knowledge_encoder.layer[0])
            ent_dtype = first.entity_intermediate.weight.dtype
            vectors = self.entity_vectors(alignment.slot_ids, ent_dtype)  # [N, E]
            entities = alignment.to_slots(vectors, batch)  # [B, S, E]
            for layer in self.knowledge_encoder.layer:
                hidden, entities, weights = layer(hidden, entities, mask, alignment)
                if output_hidden_states:
                    all_hidden.append(hidden)
                if output_attentions:
                    all_attn.append(weights)
            entity_last = alignment.to_tokens(alignment.select(entities), batch, length)  # [B, L, E]
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return KeptModelOutput(
            last_hidden_state=hidden,
            entity_last_hidden_state=entity_last,
            pooler_output=pooled,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attn) if output_attentions else None,
        )


# ----------------------------------------------------------------------------------------------- heads
class KeptEntityPredictionHead(nn.Module):
    """dEA head (ERNIE-THU BertEntPredictionHead): token state -> entity dim -> dot with candidates."""

    def __init__(self, config: KeptConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.entity_dim)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.entity_dim, eps=config.layer_norm_eps)

    def forward(self, token_states: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        # token_states [N, H]; candidates [C, E] -> [N, C]
        projected = self.LayerNorm(self.act(self.dense(token_states)))
        return projected @ candidates.to(projected.dtype).t()


def mlm_logits_and_loss(
    head: nn.Module, sequence: torch.Tensor, labels: torch.Tensor | None, full_logits: bool = True
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """-> (logits [B, L, V] or None, MLM loss or None).

    Without labels the logits carry gradients as usual. With labels the loss runs the head on the
    labelled positions only ([M, H] -> [M, V], M ~ 15% of the tokens: the vocabulary projection and its
    softmax dominate a small model's step), and the full logits are returned detached (computed without
    autograd, for metrics) when ``full_logits``, else None. The models pass ``full_logits=not self.training``:
    a training step with labels (the Trainer's, which reads only the loss) skips the [B, L, V] projection;
    in eval mode (``model.eval()``, Trainer evaluation, kept evaluate) or without labels logits come as in
    transformers. Mean over labelled positions; 0 with a graph when there are none."""
    if labels is None:
        return head(sequence), None
    logits = None
    if full_logits:
        with torch.no_grad():
            logits = head(sequence)  # [B, L, V]
    labels = labels.to(sequence.device)
    selected = labels != IGNORE_INDEX  # [B, L]
    scores = head(sequence[selected])  # [M, V]
    targets = labels[selected]
    return logits, mean_cross_entropy(scores, targets)


def mean_cross_entropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of scores [M, C] against targets [M]; 0 with a graph when M == 0.

    In a torch.compile graph M is data-dependent: no branch on it there (sum / max(M, 1), the same value)."""
    if torch.compiler.is_compiling():
        total = F.cross_entropy(scores.float(), targets, reduction="sum")
        return total / torch.sym_max(targets.numel(), 1)
    if targets.numel() == 0:
        return scores.float().sum() * 0.0
    return F.cross_entropy(scores.float(), targets)


def dea_candidates_padded(
    entity_labels: torch.Tensor,
    entity_ids: torch.Tensor | None,
    num_negatives: int,
    num_entities: int,
    null_candidate: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dea_candidates`` without data-dependent shapes (for torch.compile): -> (candidate ids [P], with
    repeats; is_candidate [P] bool, True on each distinct id's first column; labelled [B, L]; targets
    [N_labelled] into P). P = 2*B*L + num_negatives (+1): the pool of labels, ids and negatives, sorted;
    scoring the non-candidate columns -inf gives ``dea_candidates``' softmax. Stays on the device."""
    labels = entity_labels.long()  # [B, L]
    labelled = labels >= 0
    absent = num_entities  # sorts after every KG id; never a candidate
    pieces = [torch.where(labelled, labels, absent).reshape(-1)]
    if entity_ids is not None:
        ids = entity_ids.to(labels.device, torch.long)
        pieces.append(torch.where(ids >= 0, ids, absent).reshape(-1))
    if num_negatives > 0 and num_entities > 0:
        pieces.append(torch.randint(0, num_entities, (num_negatives,), device=labels.device))
    pool = torch.sort(torch.cat(pieces)).values  # [P]
    distinct = torch.cat([pool.new_ones(1, dtype=torch.bool), pool[1:] != pool[:-1]])  # first of each run
    is_candidate = distinct & (pool < absent)
    check_ids(torch.where(is_candidate, pool, 0), max(num_entities, 1))
    pool = torch.where(is_candidate, pool, -1)  # non-candidates look up the zero vector
    if null_candidate:  # -1 in front, a real candidate (score 0), still sorted
        pool = torch.cat([pool.new_full((1,), -1), pool])
        is_candidate = torch.cat([is_candidate.new_ones(1), is_candidate])
    # leftmost match of each label among the candidates: sorted ids with the non-candidates masked
    keys = torch.cummax(torch.where(is_candidate, pool, -2), dim=0).values  # [P] non-decreasing
    targets = torch.searchsorted(keys, labels[labelled])  # first column with key >= label: the candidate
    return pool, is_candidate, labelled, targets


@torch.compiler.disable
def dea_candidates(
    entity_labels: torch.Tensor,
    entity_ids: torch.Tensor | None,
    num_negatives: int,
    num_entities: int,
    null_candidate: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (candidate KG ids [C] sorted, CPU; labelled positions mask [B, L]; targets [N_labelled] into C).

    Candidates = unique entities of entity_labels and entity_ids + ``num_negatives`` ids drawn uniformly
    from the table (torch's global RNG), and with ``null_candidate`` the id -1 ("no entity", a zero
    vector; never a target) in front, as ERNIE-THU."""
    labels_cpu = entity_labels.to("cpu", torch.long)
    labelled = labels_cpu >= 0
    pieces = [labels_cpu[labelled]]
    if entity_ids is not None:
        ids_cpu = entity_ids.to("cpu", torch.long)
        pieces.append(ids_cpu[ids_cpu >= 0])
    if num_negatives > 0 and num_entities > 0:
        pieces.append(torch.randint(0, num_entities, (num_negatives,)))
    candidates = torch.unique(torch.cat(pieces))  # sorted
    check_ids(candidates, num_entities)
    if null_candidate:
        candidates = torch.cat([candidates.new_full((1,), -1), candidates])  # still sorted: -1 first
    targets = torch.searchsorted(candidates, labels_cpu[labelled])
    return candidates, labelled, targets


class KeptForPreTraining(KeptPreTrainedModel):
    """KeptModel + MLM head (tied to the word embeddings) + dEA head (+ SOP head when config.use_sop).

    The pooler is always there so that a checkpoint carries it to classification fine-tuning; without
    SOP no loss reaches it, so it is frozen (requires_grad False) and stays as loaded (BERT's, from_bert).
    """

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "kept.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: KeptConfig) -> None:
        super().__init__(config)
        self.kept = KeptModel(config, add_pooling_layer=True)
        self.cls = BertOnlyMLMHead(config)  # BERT's MLM head, named as in BERT: cls.predictions
        self.entity_head = KeptEntityPredictionHead(config)
        self.sop_classifier = nn.Linear(config.hidden_size, 2) if config.use_sop else None
        self.kg_head = (
            KeptKGLinkHead(
                config.relation_vocab_size,
                config.entity_dim,
                config.joint_kg_interaction,
                config.joint_kg_loss,
                config.joint_kg_margin,
                config.joint_kg_norm,
            )
            if float(config.joint_kg_weight) > 0
            else None
        )  # joint KG link prediction (fusion.kg_link)
        self.red_head = KeptReplacedEntityHead(config.hidden_size) if float(config.red_weight) > 0 else None  # WKLM
        self.post_init()
        self.freeze_untrained_parts()

    def freeze_untrained_parts(self) -> None:
        """No SOP: nothing trains the pooler; freeze it (DDP needs a gradient for every trainable parameter)."""
        assert self.kept.pooler is not None  # KeptModel(add_pooling_layer=True)
        self.kept.pooler.requires_grad_(bool(self.config.use_sop))

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        entity_labels: torch.Tensor | None = None,
        sentence_order_label: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        kg_triples: torch.Tensor | None = None,
        kg_negatives: torch.Tensor | None = None,
        mention_spans: torch.Tensor | None = None,
        mention_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> KeptForPreTrainingOutput:
        out = self.kept(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        sequence = out.last_hidden_state  # [B, L, H]
        logits, mlm_loss = mlm_logits_and_loss(self.cls.predictions, sequence, labels, full_logits=not self.training)
        cfg = self.config
        dea_loss = sop_loss = kg_loss = red_loss = red_accuracy = None
        entity_logits = candidate_ids = sop_logits = None
        if entity_labels is not None:
            if entity_labels.shape != sequence.shape[:2]:
                raise FusionError(
                    f"entity_labels has shape {list(entity_labels.shape)}, expected {list(sequence.shape[:2])}",
                    where="entity_labels",
                    fix="Give one KG id (or -100) per token.",
                )
            kept = self.kept
            num_entities = (
                kept.entity_embeddings.num_embeddings
                if kept.entity_embeddings is not None
                else kept._entity_table.num_entities
                if kept._entity_table is not None
                else 0
            )
            is_candidate = None
            if torch.compiler.is_compiling():  # static shapes: padded candidate columns, scored -inf
                candidate_ids, is_candidate, labelled, targets = dea_candidates_padded(
                    entity_labels.to(sequence.device),
                    entity_ids,
                    cfg.dea_num_negatives,
                    num_entities,
                    cfg.dea_null_candidate,
                )
            else:
                candidate_ids, labelled, targets = dea_candidates(
                    entity_labels, entity_ids, cfg.dea_num_negatives, num_entities, cfg.dea_null_candidate
                )
            labelled = labelled.to(sequence.device)
            states = sequence[labelled]  # [N_labelled, H] (zero rows is fine: the head still runs)
            candidates = kept.entity_vectors(candidate_ids, self.entity_head.dense.weight.dtype)  # [C, E]
            entity_logits = self.entity_head(states, candidates)  # [N_labelled, C]
            if is_candidate is not None:
                entity_logits = entity_logits.masked_fill(~is_candidate, float("-inf"))
            # no labelled entity: defined as 0, the head stays in the graph (zero gradients)
            dea_loss = mean_cross_entropy(entity_logits, targets.to(entity_logits.device))
        if self.sop_classifier is not None:
            sop_logits = self.sop_classifier(out.pooler_output)  # [B, 2]
            if sentence_order_label is not None:
                sop_loss = F.cross_entropy(sop_logits.float(), sentence_order_label.reshape(-1).to(sop_logits.device))
        loss: torch.Tensor | None = None
        if mlm_loss is not None or dea_loss is not None or sop_loss is not None:
            total = self.entity_path_anchor(out.entity_last_hidden_state)
            if mlm_loss is not None:
                total = total + cfg.mlm_weight * mlm_loss
            if dea_loss is not None:
                total = total + cfg.dea_weight * dea_loss
            else:  # no dEA targets in this batch: keep the dEA head in the graph for DDP
                total = total + parameters_times_zero(self.entity_head)
            if sop_loss is not None:
                total = total + cfg.sop_weight * sop_loss
            elif sop_logits is not None:
                total = total + sop_logits.sum() * 0.0
            if self.kg_head is not None:  # kg_triples [T, 3], kg_negatives [T, K, 3]: the batch's training triples
                if kg_triples is not None and kg_negatives is not None:
                    kg_loss = self.kg_head(
                        kg_triples, kg_negatives, lambda ids: self.kept.entity_vectors(ids, torch.float32)
                    )
                    total = total + cfg.joint_kg_weight * kg_loss
                else:  # keep the relation embeddings in the graph for DDP
                    total = total + self.kg_head.relation_embeddings.weight.sum() * 0.0
            if self.red_head is not None:  # mention_spans [B, M, 2], mention_labels [B, M] (masking.replaced_entity)
                red_loss, red_accuracy, _ = replaced_entity_loss(self.red_head, sequence, mention_spans, mention_labels)
                total = total + cfg.red_weight * red_loss
                red_loss = red_loss if red_accuracy is not None else None  # no labelled mention: nothing to log
            loss = cast(torch.Tensor, total)  # a tensor: the dEA term (or the head's zero) is one
        return KeptForPreTrainingOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            dea_loss=dea_loss,
            sop_loss=sop_loss,
            kg_loss=kg_loss,
            red_loss=red_loss,
            red_accuracy=red_accuracy,
            logits=logits,
            entity_logits=entity_logits,
            entity_candidate_ids=candidate_ids,
            sop_logits=sop_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class KeptForMaskedLM(KeptPreTrainedModel):
    """KeptModel + tied MLM head; entities optional (fill-mask pipelines pass none)."""

    _tied_weights_keys = {
        "cls.predictions.decoder.weight": "kept.embeddings.word_embeddings.weight",
        "cls.predictions.decoder.bias": "cls.predictions.bias",
    }

    def __init__(self, config: KeptConfig) -> None:
        super().__init__(config)
        self.kept = KeptModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)  # BERT's MLM head, named as in BERT: cls.predictions
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        entity_ids=None,
        labels=None,
        position_ids=None,
        inputs_embeds=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
        **kwargs: Any,
    ) -> MaskedLMOutput:
        out = self.kept(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits, loss = mlm_logits_and_loss(
            self.cls.predictions, out.last_hidden_state, labels, full_logits=not self.training
        )
        if loss is not None:
            loss = loss + self.entity_path_anchor(out.entity_last_hidden_state)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


def classification_loss(config: KeptConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BERT's rule: regression for 1 label, single-label CE for integer labels, else multi-label BCE."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return (
            F.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
            if num_labels == 1
            else F.mse_loss(logits.float(), labels.float())
        )
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, cast(int, num_labels)).float(), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class KeptForSequenceClassification(KeptPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear (config.num_labels)."""

    def __init__(self, config: KeptConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.kept = KeptModel(config, add_pooling_layer=True)
        drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(config.hidden_size, cast(int, config.num_labels))  # set (default 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        entity_ids=None,
        labels=None,
        position_ids=None,
        inputs_embeds=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        out = self.kept(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        logits = self.classifier(self.dropout(out.pooler_output))  # [B, num_labels]
        loss = None
        if labels is not None:
            loss = classification_loss(self.config, logits, labels.to(logits.device)) + self.entity_path_anchor(
                out.entity_last_hidden_state
            )
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


class KeptForRelationClassification(KeptPreTrainedModel):
    """FewRel-style entity-marker pooling: [state at head_start ; state at tail_start] -> dropout -> linear."""

    def __init__(self, config: KeptConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.kept = KeptModel(config, add_pooling_layer=False)
        drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(2 * config.hidden_size, cast(int, config.num_labels))  # set (default 2)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        entity_ids=None,
        head_start: torch.Tensor | None = None,
        tail_start: torch.Tensor | None = None,
        labels=None,
        position_ids=None,
        inputs_embeds=None,
        output_hidden_states=None,
        output_attentions=None,
        return_dict=None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if head_start is None or tail_start is None:
            raise FusionError(
                "relation classification needs head_start and tail_start",
                where="forward",
                fix="Pass the token index of the head and tail entity start markers, shape [batch].",
            )
        out = self.kept(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        sequence = out.last_hidden_state  # [B, L, H]
        batch, length, _ = sequence.shape
        starts = torch.stack([head_start.reshape(-1), tail_start.reshape(-1)], dim=1).to(sequence.device).long()
        if starts.shape[0] != batch:
            raise FusionError(
                f"head_start/tail_start have {starts.shape[0]} rows, the batch has {batch}",
                where="head_start",
                fix="Give one head and one tail index per example.",
            )
        outside = ((starts < 0) | (starts >= length)).any()
        if torch.compiler.is_compiling():  # in a graph: an async check, no data-dependent branch
            torch._assert_async(~outside, "a head/tail marker index is outside the sequence")
        elif bool(outside):
            raise FusionError(
                f"a head/tail marker index is outside 0..{length - 1}",
                where="head_start/tail_start",
                fix="Check that the entity markers survived truncation.",
            )
        rows = torch.arange(batch, device=sequence.device)[:, None]
        pair = sequence[rows, starts].reshape(batch, -1)  # [B, 2H]
        logits = self.classifier(self.dropout(pair))  # [B, num_labels]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.reshape(-1).to(logits.device)) + self.entity_path_anchor(
                out.entity_last_hidden_state
            )
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


__all__ = [
    "KeptModel",
    "KeptPreTrainedModel",
    "KeptForPreTraining",
    "KeptForMaskedLM",
    "KeptForSequenceClassification",
    "KeptForRelationClassification",
    "KeptModelOutput",
    "KeptForPreTrainingOutput",
    "KeptAggregatorLayer",
    "KeptLayer",
    "align_entities",
    "dea_candidates",
]

"""Entity typing: a short multi-label fine-tune of the run's model, scored as in ERNIE-THU.

Each item is a sentence, a mention span (character offsets) and its type labels. The mention is put
between the entity markers ``[E1] … [/E1]``; :class:`KeptForEntityTyping` classifies from the state at
the start marker and the mean of the mention's pieces (sigmoid per type, BCE), fine-tuned through
``transformers.Trainer`` (:mod:`kept.evaluate.finetune`: seeds, warm-up, dev split, best epoch).
Scores on the test items: loose micro-F1 (the headline), loose macro-F1 and strict accuracy
(ERNIE-THU's ``eval_typing``/``eval_figer`` figures); a type is predicted when its probability is
above ``threshold``, and the top type always (every mention has a type).

Data, in this order:

* ``eval.typing.data``: a file in the OpenEntity/FIGER format of ERNIE-THU (a JSON array, as in its
  ``train.json``/``dev.json``/``test.json``) or JSON lines, one item per line::

      {"sent": "He moved to Paris in 1923 .", "start": 12, "end": 17, "labels": ["location", "city"],
       "ents": [["Q90", 12, 17, 0.81]], "id": "optional"}

  ``ents`` (optional, ERNIE-THU): linked mentions ``[KB id, start, end, score]``; those above
  ``link_threshold`` whose KB id is a KG entity name enter fusion models as entity ids. ``entity``
  (optional) names the mention's own KG entity. A directory holding ``train.json`` and ``test.json``
  (``dev.json`` optional) is read as those splits; a single file is split (seeded).
* otherwise, items derived from the run itself: every gold entity link of the annotated corpus whose
  entity has types in the run's KG. Types come from an ``instance of`` relation (``P31``,
  ``instance_of``, ``rdf:type``, ``is_a``, ``infobox type``) when the KG has one, else from the roles the
  entity plays in the KG's facts (Wikipedia infobox fields): the object of ``birth_place`` is typed
  ``birth place``, the subject ``has birth place``; ``links_to`` carries no type. Test mentions come
  only from the documents that the encode step held out for validation (never from pretraining
  text); training and dev mentions from the training documents (dev: a seeded share of them).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from fusion import KeptModel, KeptPreTrainedModel
from kept.errors import KeptError
from kept.evaluate.common import pad, quiet_from_pretrained, uses_fusion
from kept.evaluate.finetune import FinetuneSettings, finetune, predict_logits
from kept.evaluate.relation import MARKERS, add_markers, finetune_defaults

#: Relations whose tails are the types of their heads (names or labels, compared case- and separator-free).
TYPE_RELATIONS = frozenset({"p31", "instanceof", "rdftype", "isa", "infoboxtype", "entitytype"})
#: Relations that say nothing about the type of either end.
UNTYPED_RELATIONS = frozenset({"linksto", "relatedto", "seealso"})
#: ERNIE-THU's typing scripts keep linked mentions (``ents``) with a score above this.
DEFAULT_LINK_THRESHOLD = 0.3
START_MARKER, END_MARKER = MARKERS[0], MARKERS[1]


@dataclass(frozen=True)
class TypingItem:
    """A mention ``sent[start:end]`` with its type labels; ``entities`` = linked mentions of ``sent``
    as (start, end, KG id), the mention itself included when it is linked."""

    id: str
    sent: str
    start: int
    end: int
    labels: tuple[str, ...]
    entities: tuple[tuple[int, int, int], ...] = ()
    doc_id: str | None = None


@dataclass
class TypingData:
    """Train/dev/test items, the type vocabulary (column order of the model's outputs) and provenance."""

    train: list[TypingItem]
    dev: list[TypingItem]
    test: list[TypingItem]
    types: list[str]
    info: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ reading the OpenEntity/FIGER format

def _json_records(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` of a JSON array file (ERNIE-THU) or of a JSON-lines file."""
    decoder = json.JSONDecoder()

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    def fail(what: str, position: int) -> KeptError:
        return KeptError(what, where=path, line=line_of(position),
                         fix="write a JSON array of typing items or one JSON object per line")

    stripped = text.lstrip()
    if stripped.startswith("["):
        position = len(text) - len(stripped) + 1
        expect_item = True
        while True:
            while position < len(text) and text[position].isspace():
                position += 1
            if position >= len(text):
                raise fail("the JSON array is not closed (no ']')", position)
            if text[position] == "]":
                rest = text[position + 1:].strip()
                if rest:
                    raise fail("text after the closing ']'", position + 1 + text[position + 1:].index(rest[0]))
                return
            if text[position] == ",":
                if expect_item:
                    raise fail("a ',' without an item before it", position)
                position, expect_item = position + 1, True
                continue
            if not expect_item:
                raise fail("a ',' is missing between two items", position)
            try:
                record, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise fail(f"not valid JSON ({error.msg})", error.pos) from None
            yield line_of(position), record
            position, expect_item = end, False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise KeptError(f"not valid JSON ({error.msg}, column {error.colno})", where=path, line=number,
                            fix="write one JSON object per line, or a JSON array of items") from None


def _typing_record(record: Any, path: Path, line: int, entity_index: Mapping[str, int] | None,
                   link_threshold: float) -> TypingItem:
    """One item of the OpenEntity/FIGER format, checked; KeptError naming ``path:line`` otherwise."""
    def bad(what: str, fix: str) -> KeptError:
        return KeptError(what, where=path, line=line, fix=fix)

    if not isinstance(record, dict):
        raise bad(f"expected a JSON object, found {type(record).__name__}",
                  'write {"sent": ..., "start": ..., "end": ..., "labels": [...]}')
    missing = [key for key in ("sent", "start", "end", "labels") if key not in record]
    if missing:
        raise bad(f"missing field(s) {', '.join(missing)}",
                  'every item needs "sent" (text), "start" and "end" (character offsets) and "labels"')
    sent, start, end, labels = record["sent"], record["start"], record["end"], record["labels"]
    if not isinstance(sent, str) or not sent.strip():
        raise bad('"sent" must be a non-empty string', "give the sentence text")
    offsets_ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
    if not offsets_ok or not 0 <= start < end <= len(sent):
        raise bad(f'"start"/"end" ({start!r}, {end!r}) are not a character span of "sent" (length {len(sent)})',
                  "give 0 <= start < end <= len(sent), character offsets of the mention")
    if not isinstance(labels, list) or not all(isinstance(label, str) and label.strip() for label in labels):
        raise bad('"labels" must be a list of non-empty strings', 'e.g. "labels": ["person", "politician"]')
    entities: list[tuple[int, int, int]] = []
    if entity_index is not None:
        own = record.get("entity")
        if isinstance(own, str) and own in entity_index:
            entities.append((start, end, int(entity_index[own])))
        links = record.get("ents") or []
        if not isinstance(links, list):
            raise bad('"ents" must be a list of [KB id, start, end, score]', "drop the field or fix its shape")
        for link in links:
            if not (isinstance(link, list) and len(link) >= 3 and all(isinstance(v, int) for v in link[1:3])):
                raise bad(f'"ents" entry {link!r} is not [KB id, start, end, score]', "fix or drop the entry")
            score = float(link[3]) if len(link) > 3 and isinstance(link[3], (int, float)) else 1.0
            kb_id = str(link[0])
            if score > link_threshold and kb_id in entity_index and 0 <= link[1] < link[2] <= len(sent):
                entities.append((link[1], link[2], int(entity_index[kb_id])))
    item_id = record.get("id")
    return TypingItem(id=str(item_id) if item_id is not None else f"{path.name}:{line}", sent=sent, start=start,
                      end=end, labels=tuple(dict.fromkeys(label.strip() for label in labels)),
                      entities=tuple(sorted(set(entities))))


def read_typing_file(path: str | Path, *, entity_index: Mapping[str, int] | None = None,
                     link_threshold: float = DEFAULT_LINK_THRESHOLD) -> list[TypingItem]:
    """Items of an OpenEntity/FIGER-format file: a JSON array (ERNIE-THU) or JSON lines.

    ``entity_index`` (KG entity name -> KG id): linked mentions (``ents`` above ``link_threshold``,
    ``entity``) found in it are kept for fusion models. Bad input raises KeptError naming file:line.
    """
    path = Path(path)
    if not path.is_file():
        raise KeptError("typing data file not found", where=path,
                        fix="set eval.typing.data to an OpenEntity/FIGER-format JSON or JSON-lines file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise KeptError(f"not UTF-8 text (byte {error.start})", where=path, fix="save the file as UTF-8") from None
    items = [_typing_record(record, path, line, entity_index, link_threshold)
             for line, record in _json_records(text, path)]
    if not items:
        raise KeptError("no typing items in the file", where=path,
                        fix='add items {"sent": ..., "start": ..., "end": ..., "labels": [...]}')
    return items


# ------------------------------------------------------------------ types from the KG, items from the corpus

def _key(name: str) -> str:
    return re.sub(r"[\s_\-:]+", "", name.strip().lower())


def _relation_type(label: str) -> str:
    """Readable type from a relation (infobox field) name: ``leader_name1`` -> ``leader name``."""
    text = re.sub(r"[_\s]+", " ", label).strip().lower()
    return re.sub(r"\s*\d+$", "", text) or text


def kg_entity_types(entity_labels: Mapping[str, str], relation_labels: Mapping[str, str],
                    triples: Iterable[tuple[str, str, str]]) -> tuple[dict[str, frozenset[str]], str]:
    """Types of the KG's entities (by name) and where they come from.

    With an ``instance of`` relation (:data:`TYPE_RELATIONS`, by name or label): the labels of its
    tails. Otherwise the entity's roles in the facts: object of relation R -> ``R``, subject ->
    ``has R`` (R's label, separators as spaces, trailing digits dropped); :data:`UNTYPED_RELATIONS` skipped.
    """
    triples = list(triples)
    type_relations = {name for name, label in relation_labels.items()
                      if _key(name) in TYPE_RELATIONS or _key(label or "") in TYPE_RELATIONS}
    types: dict[str, set[str]] = {}
    if any(relation in type_relations for _, relation, _ in triples):
        for head, relation, tail in triples:
            if relation in type_relations:
                types.setdefault(head, set()).add((entity_labels.get(tail) or tail).strip().lower())
        used = sorted(type_relations & {relation for _, relation, _ in triples})
        return {k: frozenset(v) for k, v in types.items()}, f"instance-of relation ({', '.join(used)})"
    for head, relation, tail in triples:
        label = relation_labels.get(relation) or relation
        if _key(relation) in UNTYPED_RELATIONS or _key(label) in UNTYPED_RELATIONS:
            continue
        name = _relation_type(label)
        types.setdefault(tail, set()).add(name)
        types.setdefault(head, set()).add(f"has {name}")
    return {k: frozenset(v) for k, v in types.items()}, "roles in the KG's facts (object: R, subject: has R)"


def _window(text: str, start: int, end: int, context_chars: int) -> tuple[int, int]:
    """Character window around ``text[start:end]``, cut at whitespace."""
    lo, hi = max(0, start - context_chars), min(len(text), end + context_chars)
    if lo > 0:
        space = text.find(" ", lo, start)
        lo = space + 1 if space >= 0 else lo
    if hi < len(text):
        space = text.rfind(" ", end, hi)
        hi = space if space >= 0 else hi
    return lo, hi


def derive_typing_items(documents: Iterable[Mapping[str, Any]], entity_types: Mapping[int, frozenset[str]], *,
                        context_chars: int = 200, gold_only: bool = True,
                        max_per_entity: int | None = None) -> list[TypingItem]:
    """One item per linked mention (``spans`` with ``entity_id`` >= 0; ``source`` "gold" when
    ``gold_only``) whose entity has types; the sentence is a window of ``context_chars`` around it, and
    the other linked mentions inside the window come along as entities. Document order; at most
    ``max_per_entity`` mentions of one entity (the first ones)."""
    items: list[TypingItem] = []
    per_entity: dict[int, int] = {}
    for document in documents:
        text, doc_id = document["text"], str(document["id"])
        linked = [s for s in (document.get("spans") or [])
                  if s.get("entity_id") is not None and s["entity_id"] >= 0 and s["end"] > s["start"]
                  and (not gold_only or s.get("source") == "gold")]
        for span in linked:
            entity = int(span["entity_id"])
            labels = entity_types.get(entity)
            if not labels or not text[span["start"]:span["end"]].strip():
                continue
            if max_per_entity is not None and per_entity.get(entity, 0) >= max_per_entity:
                continue
            per_entity[entity] = per_entity.get(entity, 0) + 1
            lo, hi = _window(text, span["start"], span["end"], context_chars)
            entities = tuple((s["start"] - lo, s["end"] - lo, int(s["entity_id"])) for s in linked
                             if s["start"] >= lo and s["end"] <= hi)
            items.append(TypingItem(id=f"{doc_id}:{span['start']}-{span['end']}", sent=text[lo:hi],
                                    start=span["start"] - lo, end=span["end"] - lo, labels=tuple(sorted(labels)),
                                    entities=entities, doc_id=doc_id))
    return items


def type_vocabulary(items: Sequence[TypingItem], *, min_count: int = 1, max_types: int | None = None) -> list[str]:
    """Types with at least ``min_count`` items, most frequent first (ties by name), at most ``max_types``."""
    counts: dict[str, int] = {}
    for item in items:
        for label in item.labels:
            counts[label] = counts.get(label, 0) + 1
    kept = sorted((label for label, count in counts.items() if count >= min_count), key=lambda t: (-counts[t], t))
    return kept[:max_types] if max_types is not None else kept


def type_frequency(items: Sequence[TypingItem], types: Sequence[str]) -> torch.Tensor:
    """Share of the items that carry each type [T] (0 for an empty list)."""
    column = {t: i for i, t in enumerate(types)}
    counts = torch.zeros(len(types))
    for item in items:
        for label in item.labels:
            if label in column:
                counts[column[label]] += 1
    return counts / max(1, len(items))


def restrict_types(items: Sequence[TypingItem], types: Sequence[str]) -> list[TypingItem]:
    """Items with their labels cut to ``types``; items left without a label are dropped."""
    allowed = set(types)
    out = []
    for item in items:
        labels = tuple(label for label in item.labels if label in allowed)
        if labels:
            out.append(replace(item, labels=labels))
    return out


def _sample(items: Sequence[TypingItem], limit: int, rng: random.Random) -> list[TypingItem]:
    """At most ``limit`` items, a seeded choice kept in the original order."""
    if len(items) <= limit:
        return list(items)
    chosen = sorted(rng.sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def split_by_document(items: Sequence[TypingItem], fraction: float, seed: int
                      ) -> tuple[list[TypingItem], list[TypingItem]]:
    """(rest, held) where ``held`` holds the items of a seeded ``fraction`` of the documents
    (items without a document count as their own document)."""
    docs = sorted({item.doc_id or item.id for item in items})
    if len(docs) < 2 or fraction <= 0:
        return list(items), []
    count = min(len(docs) - 1, max(1, int(round(fraction * len(docs)))))
    held_docs = set(random.Random(seed).sample(docs, count))
    held = [item for item in items if (item.doc_id or item.id) in held_docs]
    return [item for item in items if (item.doc_id or item.id) not in held_docs], held


# ------------------------------------------------------------------ metrics

def predict_types(logits: torch.Tensor, threshold: float = 0.5, at_least_one: bool = True) -> torch.Tensor:
    """Predicted type sets [N, T] (bool) from logits [N, T]: probability > ``threshold``, plus the
    top type of each row when ``at_least_one`` (ERNIE-THU's FIGER rule)."""
    predicted = torch.sigmoid(logits.float()) > threshold  # [N, T]
    if at_least_one and logits.numel():
        top = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).bool()  # [N, T]
        predicted = predicted | top
    return predicted


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def typing_scores(gold: torch.Tensor, predicted: torch.Tensor) -> dict[str, float]:
    """ERNIE-THU's typing figures of gold and predicted type sets (bool [N, T]):

    * strict accuracy: share of items whose predicted set equals the gold set;
    * loose micro: precision/recall over all (item, type) pairs pooled, and their F1;
    * loose macro: precision/recall averaged over items (an item without predictions / gold types
      adds 0), and the F1 of those averages.
    """
    if gold.shape[0] == 0:
        names = ("strict_accuracy", "micro_precision", "micro_recall", "micro_f1",
                 "macro_precision", "macro_recall", "macro_f1")
        return {name: math.nan for name in names}
    gold, predicted = gold.bool(), predicted.bool()
    correct = (gold & predicted).sum(dim=1).double()  # [N]
    n_pred, n_gold = predicted.sum(dim=1).double(), gold.sum(dim=1).double()  # [N]
    micro_p = float(correct.sum() / n_pred.sum()) if n_pred.sum() > 0 else 0.0
    micro_r = float(correct.sum() / n_gold.sum()) if n_gold.sum() > 0 else 0.0
    macro_p = float(torch.where(n_pred > 0, correct / n_pred.clamp(min=1), torch.zeros_like(correct)).mean())
    macro_r = float(torch.where(n_gold > 0, correct / n_gold.clamp(min=1), torch.zeros_like(correct)).mean())
    return {
        "strict_accuracy": float((gold == predicted).all(dim=1).double().mean()),
        "micro_precision": micro_p, "micro_recall": micro_r, "micro_f1": _f1(micro_p, micro_r),
        "macro_precision": macro_p, "macro_recall": macro_r, "macro_f1": _f1(macro_p, macro_r),
    }


# ------------------------------------------------------------------ model and features

class KeptForEntityTyping(KeptPreTrainedModel):
    """[state at the start marker ; mean state of the mention's pieces] -> dropout -> linear (one logit
    per type); multi-label BCE. ``config.num_labels`` = number of types."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.kept = KeptModel(config, add_pooling_layer=False)
        drop = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(drop)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def init_type_prior(self, frequency: torch.Tensor) -> None:
        """Start each type's logit at the log-odds of its training frequency [T] (the prior
        initialisation of imbalanced multi-label heads): the first steps then learn from the context
        instead of pushing every rare type towards 0."""
        p = frequency.float().clamp(1e-3, 1 - 1e-3)  # [T]
        with torch.no_grad():
            self.classifier.bias.copy_(torch.log(p / (1 - p)).to(self.classifier.bias))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                entity_ids: torch.Tensor | None = None, mention_start: torch.Tensor | None = None,
                mention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        if mention_start is None or mention_mask is None:
            raise KeptError("entity typing needs mention_start [B] and mention_mask [B, L]", where="forward",
                            fix="collate the items with TypingCollator")
        out = self.kept(input_ids=input_ids, attention_mask=attention_mask, entity_ids=entity_ids)
        sequence = out.last_hidden_state  # [B, L, H]
        rows = torch.arange(sequence.shape[0], device=sequence.device)
        marker = sequence[rows, mention_start.to(sequence.device).long()]  # [B, H]
        weights = mention_mask.to(sequence.device, sequence.dtype).unsqueeze(-1)  # [B, L, 1]
        mean = (weights * sequence).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # [B, H]
        logits = self.classifier(self.dropout(torch.cat([marker, mean], dim=-1)))  # [B, T]
        loss = None
        if labels is not None:
            loss = F.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device).float()) \
                + self.entity_path_anchor(out.entity_last_hidden_state)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def encode_typing_items(tokenizer: Any, items: Sequence[TypingItem], types: Sequence[str], max_length: int, *,
                        entity_input: bool = False) -> list[dict[str, Any]]:
    """Features of the items: ``[CLS] left [E1] mention [/E1] right [SEP]`` word pieces (a
    ``max_length`` window around the mention), the start-marker index, the mention-piece mask, the
    multi-hot labels over ``types`` and, with ``entity_input``, KG ids on the first piece of every
    linked mention (-1 elsewhere). The tokenizer must be fast (offsets) and know the markers."""
    if not getattr(tokenizer, "is_fast", False):
        raise KeptError("entity typing needs a fast tokenizer (character offsets of word pieces)",
                        where="tokenizer", fix="save the run's tokenizer with a tokenizer.json")
    start_id, end_id = tokenizer.convert_tokens_to_ids([START_MARKER, END_MARKER])
    cls_ids = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    sep_ids = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    budget = max_length - len(cls_ids) - len(sep_ids)
    column = {t: i for i, t in enumerate(types)}
    encoded = tokenizer([item.sent for item in items], add_special_tokens=False, return_offsets_mapping=True)
    features = []
    for item, ids, offsets in zip(items, encoded["input_ids"], encoded["offset_mapping"]):
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < item.end and b > item.start]
        if not inside:
            continue  # the mention produced no word piece (e.g. only characters the tokenizer drops)
        first, last = inside[0], inside[-1]
        body = ids[:first] + [start_id] + ids[first:last + 1] + [end_id] + ids[last + 1:]
        mention = [0] * (first + 1) + [1] * (last + 1 - first) + [0] * (len(ids) - last)
        entities = [-1] * len(body)
        if entity_input:
            for s, e, kg_id in item.entities:
                hit = next((i for i, (a, b) in enumerate(offsets) if b > a and a < e and b > s), None)
                if hit is not None:
                    entities[hit + (hit >= first) + (hit > last)] = kg_id
        start = first
        if len(body) > budget:  # keep a window of ``budget`` pieces with the mention in the middle
            span = last + 3 - first
            lo = max(0, min(first - max(0, (budget - span) // 2), len(body) - budget))
            lo = min(lo, first)
            body, mention, entities = body[lo:lo + budget], mention[lo:lo + budget], entities[lo:lo + budget]
            start = first - lo
        offset = len(cls_ids)
        feature = {
            "id": item.id,
            "input_ids": cls_ids + body + sep_ids,
            "mention_start": start + offset,
            "mention_mask": [0] * offset + mention + [0] * len(sep_ids),
            "labels": [0.0] * len(types),
        }
        for label in item.labels:
            if label in column:
                feature["labels"][column[label]] = 1.0
        if entity_input:
            feature["entity_ids"] = [-1] * offset + entities + [-1] * len(sep_ids)
        features.append(feature)
    return features


@dataclass(frozen=True)
class TypingCollator:
    """Pads typing features into a batch: input_ids/attention_mask/mention_mask [B, L], entity_ids
    [B, L] (when the features have them), mention_start [B], labels [B, T] (float multi-hot)."""

    pad_id: int

    def __call__(self, features: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [f["input_ids"] for f in features]
        batch = {
            "input_ids": pad(ids, self.pad_id),
            "attention_mask": pad([[1] * len(row) for row in ids], 0),
            "mention_mask": pad([f["mention_mask"] for f in features], 0),
            "mention_start": torch.tensor([f["mention_start"] for f in features], dtype=torch.long),
            "labels": torch.tensor([f["labels"] for f in features], dtype=torch.float),
        }
        if "entity_ids" in features[0]:
            batch["entity_ids"] = pad([f["entity_ids"] for f in features], -1)
        return batch


# ------------------------------------------------------------------ data of a run

def held_out_documents(run_dir: Path, doc_ids: Sequence[str], validation_fraction: float, seed: int) -> set[str]:
    """The documents that the encode step held out for validation (the same seeded split as
    :func:`kept.encode.split_documents`); KeptError when the encoded training split contradicts it."""
    from kept.encode import split_documents
    from kept.rundir import run_paths

    _, validation = split_documents(list(doc_ids), validation_fraction, seed)
    train_path = run_paths(run_dir).encoded_train
    if validation and train_path.exists():
        import datasets

        encoded = datasets.load_from_disk(str(train_path))
        if "doc_id" in encoded.column_names:
            leaked = validation & {str(d) for d in encoded.unique("doc_id")}
            if leaked:
                raise KeptError(f"document {sorted(leaked)[0]!r} is in the encoded training split but the encode "
                                "settings hold it out", where=train_path,
                                fix="re-run the encode step (`kept run CONFIG --force encode`)")
    return validation


def run_typing_data(run_dir: str | Path, tables: Mapping[str, Any], *, validation_fraction: float, split_seed: int,
                    config: Any, seed: int) -> TypingData | str:
    """Typing items derived from the run (see the module doc), or the reason why there are none.

    ``tables``: :func:`kept.analysis.load_kg_tables` of the run; ``validation_fraction``/``split_seed``:
    the run's ``encode`` settings; ``config``: :class:`~kept.evaluate.config.TypingEvalConfig`."""
    from kept.encode import load_annotated
    from kept.rundir import run_paths

    run_dir = Path(run_dir)
    if not run_paths(run_dir).annotated.exists():
        return "no annotated corpus (corpus/annotated) to take entity links from; set eval.typing.data"
    entities, relations = tables["entities"], tables["relations"]
    labels = dict(zip(entities["name"], entities["label"]))
    by_name, source = kg_entity_types(labels, dict(zip(relations["name"], relations["label"])),
                                      tables["triples"].itertuples(index=False, name=None))
    ids = dict(zip(entities["name"], entities["id"].astype(int)))
    entity_types = {int(ids[name]): types for name, types in by_name.items() if name in ids}
    if not entity_types:
        return "the run's KG gives no entity types (no instance-of relation and no typed facts)"
    documents = load_annotated(run_dir)
    validation = held_out_documents(run_dir, [str(d) for d in documents["id"]], validation_fraction, split_seed)
    if not validation:
        return "no held-out documents (encode.validation_fraction is 0): test mentions must not be pretraining text"
    common = dict(entity_types=entity_types, context_chars=config.context_chars, gold_only=config.gold_only,
                  max_per_entity=config.max_per_entity)
    pool = derive_typing_items((d for d in documents if str(d["id"]) not in validation), **common)
    test = derive_typing_items((d for d in documents if str(d["id"]) in validation), **common)
    info = {"data": "derived from the run's entity links", "type_source": source,
            "test_documents": len({item.doc_id for item in test})}
    return _finish(pool, test, config, seed, info, dev_by_document=True)


def file_typing_data(data: str | Path, *, entity_index: Mapping[str, int] | None, config: Any,
                     seed: int) -> TypingData | str:
    """Typing items of ``eval.typing.data``: a file (split seeded into train/dev/test) or an
    ERNIE-THU directory with ``train.json``, ``test.json`` and optionally ``dev.json``."""
    data = Path(data)
    if not data.exists():
        return f"typing data not available: {data} does not exist"
    read = dict(entity_index=entity_index, link_threshold=config.link_threshold)
    info: dict[str, Any] = {"data": str(data)}
    if data.is_dir():
        if not (data / "train.json").is_file() or not (data / "test.json").is_file():
            return f"{data} holds no train.json and test.json (the OpenEntity/FIGER layout of ERNIE-THU)"
        pool, test = read_typing_file(data / "train.json", **read), read_typing_file(data / "test.json", **read)
        if (data / "dev.json").is_file():
            dev = read_typing_file(data / "dev.json", **read)
            return _finish(pool, test, config, seed, info, dev=dev)
        return _finish(pool, test, config, seed, info)
    items = read_typing_file(data, **read)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_test = min(len(items) - 1, max(1, int(round(config.test_fraction * len(items)))))
    held = set(order[:n_test])
    test = [item for i, item in enumerate(items) if i in held]
    pool = [item for i, item in enumerate(items) if i not in held]
    return _finish(pool, test, config, seed, info)


def typing_data(run_dir: str | Path, config: Any, *, tables: Callable[[], Mapping[str, Any]], encode: Any,
                seed: int) -> TypingData | str:
    """The typing items of a run's evaluation, or the reason there are none: ``config.data`` when set
    (KG entity names link its mentions), else items derived from the run (:func:`run_typing_data`).
    ``tables``: returns the run's KG tables (read once by the caller); ``encode``: the run's ``encode`` section."""
    has_kg = (Path(run_dir) / "kg" / "entities.tsv").is_file()
    entities = tables()["entities"] if has_kg else None
    if config.data is not None:
        index = dict(zip(entities["name"], entities["id"].astype(int))) if entities is not None else None
        return file_typing_data(config.data, entity_index=index, config=config, seed=seed)
    if not has_kg:
        return "no typing data: set eval.typing.data, or give the run a KG to type its entity links"
    return run_typing_data(run_dir, tables(), validation_fraction=encode.validation_fraction, split_seed=encode.seed,
                           config=config, seed=seed)


def _finish(pool: list[TypingItem], test: list[TypingItem], config: Any, seed: int, info: dict[str, Any], *,
            dev: list[TypingItem] | None = None, dev_by_document: bool = False) -> TypingData | str:
    """Dev split, caps, the type vocabulary (from the training items) and its restriction."""
    rng = random.Random(seed)
    if dev is None:
        if dev_by_document:
            pool, dev = split_by_document(pool, config.dev_fraction, seed)
        else:
            order = list(range(len(pool)))
            rng.shuffle(order)
            n_dev = int(round(config.dev_fraction * len(pool))) if len(pool) >= 2 else 0
            held = set(order[:n_dev])
            pool, dev = [x for i, x in enumerate(pool) if i not in held], [x for i, x in enumerate(pool) if i in held]
    train = _sample(pool, config.max_train_items, rng)
    types = type_vocabulary(train, min_count=config.min_type_count, max_types=config.max_types)
    if not types:
        return f"no type has {config.min_type_count}+ training mentions ({len(train)} training items)"
    train = restrict_types(train, types)
    dev = restrict_types(_sample(dev, max(1, config.max_train_items // 4), rng), types)
    test = restrict_types(_sample(test, config.max_test_items, rng), types)
    if not train or not test:
        return f"too few typed mentions: {len(train)} for training, {len(test)} for testing"
    train_entities = {e[2] for item in train for e in item.entities if (e[0], e[1]) == (item.start, item.end)}
    test_entities = [next((e[2] for e in item.entities if (e[0], e[1]) == (item.start, item.end)), None)
                     for item in test]
    linked = [e for e in test_entities if e is not None]
    info["test_entities_seen_in_training"] = sum(e in train_entities for e in linked) / len(linked) if linked else None
    return TypingData(train=train, dev=dev, test=test, types=types, info=info)


# ------------------------------------------------------------------ the task

def finetune_typing(model: torch.nn.Module, tokenizer: Any, data: TypingData, *, epochs: int = 3,
                    learning_rate: float = 5e-5, batch_size: int = 16, max_length: int = 96, threshold: float = 0.5,
                    seed: int = 0, device: torch.device | str = "cpu", entity_input: bool = False) -> dict[str, Any]:
    """Fine-tune a :class:`KeptForEntityTyping` (tokenizer with the markers) on ``data.train``, keep the
    best dev epoch, and score ``data.test``: ERNIE-THU's figures plus per-item ``items``."""
    def features(items: Sequence[TypingItem]) -> list[dict[str, Any]]:
        return encode_typing_items(tokenizer, items, data.types, max_length, entity_input=entity_input)

    train, dev, test = features(data.train), features(data.dev), features(data.test)

    def compute_metrics(prediction: Any) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        gold = torch.as_tensor(prediction.label_ids) > 0.5
        return typing_scores(gold, predict_types(torch.as_tensor(logits), threshold))

    settings = FinetuneSettings(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                                device=str(device))
    result = finetune(model, train, dev, collate=TypingCollator(tokenizer.pad_token_id or 0),
                      compute_metrics=compute_metrics, metric="micro_f1", settings=settings)
    logits = predict_logits(result.trainer, test)  # [N, T]
    gold = torch.tensor([f["labels"] for f in test]) > 0.5  # [N, T]
    predicted = predict_types(logits, threshold) if len(test) else torch.zeros_like(gold)
    label_counts = gold.sum(dim=1).double()
    return {
        **typing_scores(gold, predicted),
        "num_types": len(data.types), "num_train": len(train), "num_dev": len(dev), "num_test": len(test),
        "mean_labels_per_item": float(label_counts.mean()) if len(test) else math.nan,
        "best_epoch": result.best_epoch, "dev_micro_f1": result.best_metric, "final_train_loss": result.train_loss,
        "epochs": epochs, "learning_rate": learning_rate, "threshold": threshold, "entity_input": entity_input,
        "types": list(data.types), **data.info,
        "items": {"ids": [f["id"] for f in test],
                  "gold": [torch.nonzero(row).flatten().tolist() for row in gold],
                  "pred": [torch.nonzero(row).flatten().tolist() for row in predicted]},
    }


def evaluate_typing(model_dir: str | Path, tokenizer_dir: str | Path, data: TypingData | str, *, config: Any,
                    seed: int = 0, device: torch.device | str = "cpu", fusion: bool = False) -> dict[str, Any]:
    """Fine-tune a fresh :class:`KeptForEntityTyping` from ``model_dir`` on ``data`` and score it
    (``config``: :class:`~kept.evaluate.config.TypingEvalConfig`). ``data`` given as a string is the
    reason there is no data: ``{"skipped": reason}``."""
    if isinstance(data, str):
        return {"skipped": data}
    from transformers import AutoTokenizer, set_seed

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    model = quiet_from_pretrained(KeptForEntityTyping, str(model_dir), num_labels=len(data.types),
                                  problem_type="multi_label_classification")
    add_markers(tokenizer, model)
    model.init_type_prior(type_frequency(data.train, data.types))
    size = finetune_defaults(model)
    entity_input = bool(fusion and config.entity_input and uses_fusion(model)
                        and any(item.entities for item in data.train))
    return finetune_typing(model, tokenizer, data, epochs=config.epochs or size.epochs,
                           learning_rate=config.learning_rate or size.learning_rate,
                           batch_size=config.batch_size, max_length=config.max_length, threshold=config.threshold,
                           seed=seed, device=device, entity_input=entity_input)

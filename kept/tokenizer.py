"""The run's tokenizer: a WordPiece trained on the corpus, or the base model's own tokenizer.

* ``tokenizer.base_model`` set: ``AutoTokenizer.from_pretrained`` of a local directory or a hub
  name (hub names work only with the network; this module never forces a download).
* ``model.init_from`` set and no base model: the tokenizer saved beside that checkpoint, so a
  stage continues with the vocabulary of the stage before it.
* otherwise: a BERT-style WordPiece (``tokenizers``: BertNormalizer lowercase, BertPreTokenizer,
  ``[CLS] $A [SEP]``) trained on the corpus texts.

The result is saved with ``save_pretrained`` to ``RUN_DIR/tokenizer`` (atomically).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kept.errors import KeptError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(
    texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2, lowercase: bool = True
) -> Any:
    """Train a BERT-style WordPiece tokenizer; returns a fast HF tokenizer.

    Every character of the corpus (after normalisation) is in the vocabulary, however rare
    (``initial_alphabet``, no ``limit_alphabet``): a character seen once is never [UNK]. BERT's
    pre-tokenizer splits CJK characters one word each, so a Chinese corpus gives a vocabulary of its
    characters (plus the subwords of its non-CJK text), often fewer tokens than ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    texts = texts if isinstance(texts, (list, tuple)) else list(texts)  # read twice: alphabet, then training
    alphabet = corpus_alphabet(texts, tokenizer.normalizer)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet) + 1,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batches(texts), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        do_lower_case=lowercase,
    )
    return fast


def corpus_alphabet(texts: Iterable[str], normalizer: Any) -> list[str]:
    """The distinct non-space characters of ``texts`` after ``normalizer`` (sorted)."""
    chars: set[str] = set()
    for batch in _batches(texts, size=1024):
        chars.update("".join(batch))
    return sorted(c for c in set(normalizer.normalize_str("".join(sorted(chars)))) if not c.isspace())


def _batches(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_pretrained_tokenizer(name_or_path: str | Path, where: str = "tokenizer.base_model") -> Any:
    """AutoTokenizer of a local dir or hub name (offline: local files only); must be a fast tokenizer."""
    from transformers import AutoTokenizer

    path = Path(str(name_or_path)).expanduser()
    looks_local = path.exists() or str(name_or_path).startswith((".", "/", "~"))
    if looks_local and not path.exists():
        raise KeptError(f"tokenizer directory '{name_or_path}' does not exist", where=where)
    if path.is_dir():
        from kept.config import refuse_remote_code

        refuse_remote_code(path, where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path) if path.exists() else str(name_or_path), trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise KeptError(
            f"cannot load a tokenizer from '{name_or_path}': {str(error).splitlines()[0]}",
            where=where,
            fix="give a local model directory (hub names need the network and no HF_HUB_OFFLINE)",
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise KeptError(
            f"the tokenizer of '{name_or_path}' is not a fast tokenizer",
            where=where,
            fix="alignment needs character offsets: use a model with tokenizer.json",
        )
    if tokenizer.mask_token is None:
        raise KeptError(
            f"the tokenizer of '{name_or_path}' has no mask token",
            where=where,
            fix="masked-LM pretraining needs a [MASK] token",
        )
    return tokenizer


def build_tokenizer(
    texts: Iterable[str],
    *,
    base_model: str | None,
    init_from: Path | None,
    vocab_size: int,
    min_frequency: int = 2,
    lowercase: bool = True,
) -> tuple[Any, str]:
    """The run's tokenizer and where it came from (``trained``, a base model, or init_from)."""
    if base_model:
        return load_pretrained_tokenizer(base_model), f"base_model:{base_model}"
    if init_from is not None:
        if not (init_from / "tokenizer_config.json").exists() and not (init_from / "tokenizer.json").exists():
            raise KeptError(
                f"init_from '{init_from}' has no tokenizer saved beside the model",
                where="model.init_from",
                fix="set tokenizer.base_model to the tokenizer that checkpoint was trained with",
            )
        return load_pretrained_tokenizer(init_from, where="model.init_from"), f"init_from:{init_from}"
    return train_wordpiece(texts, vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase), "trained"


def saved_vocabulary(directory: str | Path, where: str = "model.init_from") -> list[str | None] | None:
    """The tokens by id of the tokenizer saved in a model directory (tokenizer files, or a BERT
    ``vocab.txt``); None when the directory holds no tokenizer. Ids no token has are None."""
    directory = Path(directory)
    if (directory / "tokenizer.json").exists() or (directory / "tokenizer_config.json").exists():
        return vocabulary_by_id(load_pretrained_tokenizer(directory, where=where).get_vocab())
    vocab_file = directory / "vocab.txt"
    if vocab_file.is_file():
        try:
            return list[str | None](vocab_file.read_text(encoding="utf-8").splitlines())
        except UnicodeDecodeError:
            raise KeptError(
                f"'{vocab_file}' is not UTF-8 text", where=where, fix="re-save the tokenizer with save_pretrained"
            ) from None
    return None


def vocabulary_by_id(vocab: dict[str, int]) -> list[str | None]:
    """``{token: id}`` → the token of each id (None for an id no token has)."""
    tokens: list[str | None] = [None] * (max(vocab.values(), default=-1) + 1)
    for token, index in vocab.items():
        tokens[index] = token
    return tokens


def vocabulary_differences(ours: list[str | None], theirs: list[str | None], limit: int = 3) -> list[int]:
    """The first ``limit`` token ids whose token differs between two vocabularies (by id)."""
    differing = []
    for index in range(max(len(ours), len(theirs))):
        mine = ours[index] if index < len(ours) else None
        other = theirs[index] if index < len(theirs) else None
        if mine != other:
            differing.append(index)
            if len(differing) == limit:
                break
    return differing


def save_tokenizer(tokenizer: Any, path: str | Path) -> Path:
    from kept.rundir import atomic_dir

    with atomic_dir(path) as tmp:
        tokenizer.save_pretrained(str(tmp))
    return Path(path)


def load_run_tokenizer(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise KeptError("tokenizer not found", where=path, fix="run `kept encode RUN_DIR` first")
    return load_pretrained_tokenizer(path, where=str(path))

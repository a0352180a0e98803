"""A catalogue of bad inputs: each gives one line that names the file/line/field and what to do.

Every case is a row of ``CASES``: a name, a setup that builds the bad input in a fresh directory
and returns the command line (``argv`` for ``kept``) or an API call, and the substrings the
message must hold. For each case the test checks:

* the CLI exits with code 2 and prints exactly one ``error:`` line and no traceback (API cases:
  one of our error types, whose message is one line);
* nothing that existed before is damaged: every file keeps its content hash and mtime, and no
  ``*.tmp-<pid>`` / ``*.old-<pid>`` leftovers remain (nor the paths a row lists in ``absent``).

``--debug`` shows the traceback instead (checked once, in a subprocess). Two real processes on
one run directory are checked in ``test_two_processes_are_refused_by_the_lock``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fusion.errors import FusionError
from kept.errors import KeptError
from kg.errors import KGError
from masking.errors import MaskingError

OUR_ERRORS = (KeptError, KGError, MaskingError, FusionError)
REPO = Path(__file__).resolve().parent.parent
KEPT = [sys.executable, "-m", "kept"]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run directory (kept.tiny) with encoded/ and tokenizer/, built once and copied per case."""
    from kept.commands.common import quiet_libraries
    from kept.config import load_run_config
    from kept.encode import encode_run
    from kept.rundir import write_run_format
    from kept.tiny import make_tiny_run

    quiet_libraries()
    run = make_tiny_run(tmp_path_factory.mktemp("template") / "tiny")
    encode_run(run, load_run_config(run))
    write_run_format(run)  # as a command holding the lock would have
    return run


@dataclass
class Env:
    """What a setup gets: a fresh working directory, a way to copy the tiny run, monkeypatch."""

    tmp: Path
    template: Path
    monkeypatch: pytest.MonkeyPatch
    cleanups: list[Callable[[], Any]] = dataclasses.field(default_factory=list)

    def tiny(self, name: str = "run") -> Path:
        target = self.tmp / name
        shutil.copytree(self.template, target, symlinks=True)
        return target

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def with_config(self, command: str, name: str, content: str | bytes) -> list[str]:
        """``kept COMMAND RUN --config FILE``: a copy of the tiny run, FILE (``name``) holding ``content``."""
        run = self.tiny()
        return [command, str(run), "--config", str(self.write(name, content))]

    def load_corpus(self, corpus: Path) -> list[str]:
        """``kept corpus`` of the files source ``corpus`` into a new run directory."""
        return ["corpus", str(self.tmp / "run"), "--source", "files", "--corpus", str(corpus)]


@dataclass
class Case:
    name: str
    setup: Callable[[Env], list[str] | Callable[[], Any]]  # argv for `kept`, or an API call
    expect: tuple[str, ...]
    absent: tuple[str, ...] = ()  # paths under the working directory the failed command must not leave


def _doc(text: str, spans: list[dict[str, Any]] | None = None, doc_id: str = "d") -> str:
    return json.dumps({"id": doc_id, "title": "", "text": text, "spans": spans or []})


def _span(start: int, end: int, entity_id: int = -1) -> dict[str, Any]:
    return {"start": start, "end": end, "kind": "entity", "label": "", "entity_id": entity_id, "source": "gold"}


# ------------------------------------------------------------------------------------------ corpus


def corpus_invalid_json(env: Env) -> list[str]:
    bad = env.write("bad.jsonl", _doc("Paris is nice.") + "\n" + '{"text": "no closing brace"\n')
    return env.load_corpus(bad)


def corpus_latin1(env: Env) -> list[str]:
    bad = env.write("latin.jsonl", b'{"text": "ok"}\n' + '{"text": "caf\u00e9"}\n'.encode("latin-1"))
    return env.load_corpus(bad)


def corpus_utf16_txt(env: Env) -> list[str]:
    bad = env.write("corpus.txt", "A first document.\n\nA second one.\n".encode("utf-16"))
    return env.load_corpus(bad)


def corpus_empty_documents(env: Env) -> list[str]:
    bad = env.write("empty.jsonl", _doc("", doc_id="a") + "\n" + _doc("   ", doc_id="b") + "\n\n")
    return env.load_corpus(bad)


def corpus_huge_document(env: Env) -> list[str]:
    from kept.corpus import MAX_DOCUMENT_CHARS

    bad = env.write("huge.jsonl", _doc("word " * (MAX_DOCUMENT_CHARS // 5 + 1)) + "\n")
    return env.load_corpus(bad)


def corpus_span_outside_text(env: Env) -> list[str]:
    bad = env.write(
        "spans.jsonl", _doc("Paris is nice.", [_span(0, 5)]) + "\n" + _doc("Rome.", [_span(0, 40)], doc_id="e") + "\n"
    )
    return env.load_corpus(bad)


def corpus_text_not_string(env: Env) -> list[str]:
    bad = env.write("types.jsonl", json.dumps({"id": "a", "text": 42}) + "\n")
    return env.load_corpus(bad)


def corpus_parquet_corrupt(env: Env) -> list[str]:
    bad = env.write("corpus.parquet", b"PAR1 this was cut off in the middle of a download")
    return env.load_corpus(bad)


def corpus_dataset_dir_corrupt(env: Env) -> list[str]:
    directory = env.tmp / "saved"
    directory.mkdir()
    (directory / "dataset_info.json").write_text("{not json", encoding="utf-8")
    (directory / "state.json").write_text("{}", encoding="utf-8")
    return env.load_corpus(directory)


def corpus_overwrite_disk_full(env: Env) -> list[str]:
    """Re-writing documents.jsonl of an existing run on a full disk: the old file stays."""
    run = env.tiny()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    env.monkeypatch.setattr(os, "fsync", full)
    assert real_fsync is not full
    return ["corpus", str(run), "--source", "files", "--corpus", str(run / "source" / "corpus.jsonl")]


# ------------------------------------------------------------------------------------------ annotation


def annotate_unknown_entity_id(env: Env) -> list[str]:
    run = env.tiny()
    (run / "corpus" / "documents.jsonl").write_text(
        _doc("Paris is nice.", [_span(0, 5, entity_id=999)]) + "\n", encoding="utf-8"
    )
    return ["annotate", str(run), "--detectors", "gold"]


def annotate_corpus_bad_line(env: Env) -> list[str]:
    run = env.tiny()
    (run / "corpus" / "documents.jsonl").write_text(
        _doc("One.", doc_id="1") + "\n" + _doc("Two.", doc_id="2") + "\n" + '{"id": "3", "text": \n', encoding="utf-8"
    )
    return ["annotate", str(run), "--detectors", "gold"]


def annotate_config_bad_yaml(env: Env) -> list[str]:
    return env.with_config("annotate", "annotation.yaml", "detectors: [{type: gold\nbatch_size: 4\n")


def annotate_disk_full(env: Env) -> list[str]:
    """Saving corpus/annotated fails (disk full): the previous corpus/annotated stays intact."""
    import datasets

    run = env.tiny()

    def full(self: Any, path: str, *args: Any, **kwargs: Any) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "data-00000-of-00001.arrow").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(path) / "data-00000-of-00001.arrow"))

    env.monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    return ["annotate", str(run), "--detectors", "gold"]


def encode_disk_full(env: Env) -> list[str]:
    """The disk fills while encoded/ is saved: tokenizer/ and encoded/ both stay as they were."""
    import datasets

    run = env.tiny()

    def full(self: Any, path: str, *args: Any, **kwargs: Any) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(path) / "data-00000-of-00001.arrow"))

    env.monkeypatch.setattr(datasets.Dataset, "save_to_disk", full)
    return ["encode", str(run)]


# ------------------------------------------------------------------------------------------ configuration


def config_yaml_syntax(env: Env) -> list[str]:
    return env.with_config("encode", "bad.yaml", "name: tiny\ntrain: {max_steps: 5\nencode: {max_length: 32}\n")


def config_unknown_key(env: Env) -> list[str]:
    return env.with_config("encode", "typo.yaml", "name: tiny\ntrain:\n  max_step: 5\n")


def config_wrong_type(env: Env) -> list[str]:
    return env.with_config("encode", "type.yaml", "name: tiny\nencode:\n  max_length: many\n")


def config_not_utf8(env: Env) -> list[str]:
    return env.with_config("encode", "latin.yaml", "name: tiny\n# caf\u00e9\n".encode("latin-1"))


def config_not_a_mapping(env: Env) -> list[str]:
    return env.with_config("encode", "list.yaml", "- name: tiny\n- train: {}\n")


def run_config_yaml_corrupt(env: Env) -> list[str]:
    """The run directory's own config.yaml was damaged (e.g. a merge conflict)."""
    run = env.tiny()
    text = (run / "config.yaml").read_text(encoding="utf-8")
    (run / "config.yaml").write_text(text + "<<<<<<< HEAD\n  : [\n", encoding="utf-8")
    return ["encode", str(run)]


# ------------------------------------------------------------------------------------------ knowledge graph


def triples_wrong_columns(env: Env) -> list[str]:
    bad = env.write("triples.tsv", "head\trelation\ttail\nParis\tcapital_of\tFrance\nRome\tcapital_of\n")
    return ["data", "triples", str(bad), "--out", str(env.tmp / "run")]


def triples_latin1(env: Env) -> list[str]:
    bad = env.write("triples.tsv", "head\trelation\ttail\nCaf\u00e9\tin\tParis\n".encode("latin-1"))
    return ["data", "triples", str(bad), "--out", str(env.tmp / "run")]


def labels_unknown_entity(env: Env) -> list[str]:
    triples = env.write("triples.tsv", "head\trelation\ttail\nParis\tcapital_of\tFrance\n")
    labels = env.write("labels.tsv", "Paris\tParis, France\nAtlantis\tLost city\n")
    return ["data", "triples", str(triples), "--labels", str(labels), "--strict", "--out", str(env.tmp / "run")]


def kg_embeddings_corrupt(env: Env) -> list[str]:
    run = env.tiny()
    (run / "kg" / "embeddings.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    return ["encode", str(run)]


def encode_unknown_entity_id(env: Env) -> list[str]:
    """An annotated corpus linked to another KG (ids past the entity table)."""
    from kept.corpus import documents_to_dataset
    from kept.rundir import atomic_dir

    run = env.tiny()
    with atomic_dir(run / "corpus" / "annotated") as tmp:
        documents_to_dataset(
            [{"id": "x", "title": "", "text": "Paris is nice.", "spans": [_span(0, 5, entity_id=10_000)]}]
        ).save_to_disk(str(tmp))
    return ["encode", str(run)]


# ------------------------------------------------------------------------------------------ models and run dirs


def init_from_not_a_checkpoint(env: Env) -> list[str]:
    run = env.tiny()
    notes = env.tmp / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not a model", encoding="utf-8")
    return ["pretrain", str(run), "--init-from", str(notes)]


def init_from_escapes_runs_dir(env: Env) -> list[str]:
    run = env.tiny()
    return ["pretrain", str(run), "--init-from", "run:../../elsewhere"]


def tokenizer_model_mismatch(env: Env) -> list[str]:
    """init_from a checkpoint whose vocabulary is not the run's tokenizer."""
    run = env.tiny()
    model = env.tmp / "other_model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "kept", "vocab_size": 30522}), encoding="utf-8")
    import numpy as np
    from safetensors.numpy import save_file

    save_file(
        {"kept.embeddings.word_embeddings.weight": np.zeros((4, 2), dtype=np.float32)}, str(model / "model.safetensors")
    )
    return ["pretrain", str(run), "--init-from", str(model)]


def init_from_swapped_tokens(env: Env) -> list[str]:
    """init_from a checkpoint whose tokenizer has the run's size but two tokens swapped (ids 10 and 11)."""
    run = env.tiny()
    model = env.tmp / "swapped_model"
    shutil.copytree(run / "tokenizer", model)
    data = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    first, second = (token for token, index in vocab.items() if index in (10, 11))
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (model / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    (model / "vocab.txt").unlink(missing_ok=True)
    (model / "config.json").write_text(json.dumps({"model_type": "kept", "vocab_size": len(vocab)}), encoding="utf-8")
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"unused": np.zeros((4, 2), dtype=np.float32)}, str(model / "model.safetensors"))
    return ["pretrain", str(run), "--init-from", str(model)]


def init_from_damaged_weights(env: Env) -> list[str]:
    """A checkpoint whose model.safetensors was truncated (copy interrupted)."""
    run = env.tiny()
    model = env.tmp / "truncated_model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "kept", "vocab_size": 190}), encoding="utf-8")
    (model / "model.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": ')
    return ["pretrain", str(run), "--init-from", str(model)]


def run_dir_from_other_version(env: Env) -> list[str]:
    run = env.tiny()
    (run / ".kept-run.json").write_text(
        json.dumps({"format": "kept.run", "format_version": 99, "kept_version": "9.0.0"}), encoding="utf-8"
    )
    return ["encode", str(run)]


def run_dir_locked(env: Env) -> list[str]:
    from kept.rundir import RunLock

    run = env.tiny()
    lock = RunLock(run, "kept pretrain").acquire()  # a second open file description: flock conflicts
    env.cleanups.append(lock.release)
    return ["encode", str(run)]


def evaluate_without_model(env: Env) -> list[str]:
    run = env.tiny()
    return ["evaluate", str(run)]


def evaluate_on_a_missing_gpu(env: Env) -> Callable[[], Any]:
    from kept.evaluate.common import resolve_device

    return lambda: resolve_device("cuda:99")  # no machine here has a hundredth GPU


def report_missing_dir(env: Env) -> list[str]:
    return ["report", str(env.tmp / "no_such_run")]


# ------------------------------------------------------------------------------------------ hardening (issue 14)


def _auto_map_dir(run: Path, env: Env, name: str, file: str) -> Path:
    """A copy of the run's tokenizer (plus a kept config.json) whose ``file`` carries an ``auto_map``."""
    directory = env.tmp / name
    shutil.copytree(run / "tokenizer", directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "kept", "vocab_size": 190}), encoding="utf-8")
    data = json.loads((directory / file).read_text(encoding="utf-8"))
    data["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None], "AutoModel": "evil.EvilModel"}
    (directory / file).write_text(json.dumps(data), encoding="utf-8")
    (directory / "evil.py").write_text("raise SystemExit('custom code ran')\n", encoding="utf-8")
    return directory


def tokenizer_base_model_auto_map(env: Env) -> list[str]:
    """tokenizer.base_model: a directory whose tokenizer_config.json asks transformers to run its code."""
    run = env.tiny()
    directory = _auto_map_dir(run, env, "evil_tokenizer", "tokenizer_config.json")
    config = env.write("evil.yaml", f"name: run\ntokenizer:\n  base_model: {directory}\n")
    return ["encode", str(run), "--config", str(config)]


def init_from_auto_map(env: Env) -> list[str]:
    """model.init_from: a checkpoint whose config.json has an auto_map (custom modelling code)."""
    import numpy as np
    from safetensors.numpy import save_file

    run = env.tiny()
    model = _auto_map_dir(run, env, "evil_model", "config.json")
    save_file(
        {"kept.embeddings.word_embeddings.weight": np.zeros((4, 2), dtype=np.float32)}, str(model / "model.safetensors")
    )
    return ["pretrain", str(run), "--init-from", str(model)]


def config_duplicate_section(env: Env) -> list[str]:
    return env.with_config(
        "encode",
        "twice.yaml",
        "name: tiny\ntrain:\n  max_steps: 5\nencode: {max_length: 32}\ntrain:\n  batch_size: 2\n",
    )


def config_yaml_alias_bomb(env: Env) -> list[str]:
    """A "billion laughs" file: a few lines whose aliases expand into 10^9 strings."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    return env.with_config("encode", "bomb.yaml", "\n".join(lines) + "\n")


def annotate_config_alias(env: Env) -> list[str]:
    """kept annotate --config reads YAML with the same loader (aliases refused there too)."""
    return env.with_config("annotate", "annotation.yaml", "base: &gold {type: gold}\ndetectors: [*gold]\n")


def config_learning_rate_inf(env: Env) -> list[str]:
    return env.with_config("pretrain", "inf.yaml", "name: tiny\ntrain:\n  max_steps: 5\n  learning_rate: .inf\n")


def config_learning_rate_nan(env: Env) -> list[str]:
    run = env.tiny()
    return ["pretrain", str(run), "--set", "train.learning_rate=.nan"]


def config_max_steps_boolean(env: Env) -> list[str]:
    return env.with_config("pretrain", "bool.yaml", "name: tiny\ntrain:\n  max_steps: true\n")


def corpus_span_float_offsets(env: Env) -> list[str]:
    bad = env.write(
        "floats.jsonl",
        _doc("Paris is nice.", [_span(0, 5)])
        + "\n"
        + _doc("Rome is old.", [{**_span(0, 4), "end": 4.0}], doc_id="e")
        + "\n",
    )
    return env.load_corpus(bad)


def corpus_span_boolean_offsets(env: Env) -> list[str]:
    bad = env.write("bools.jsonl", _doc("Rome is old.", [{**_span(0, 4), "start": False}]) + "\n")
    return env.load_corpus(bad)


def pretrain_entity_dim_mismatch(env: Env) -> list[str]:
    """Refused while the model is built (after the first checks): config.yaml must stay as it was."""
    run = env.tiny()
    return ["pretrain", str(run), "--set", "model.overrides.entity_dim=8"]


def config_overrides_unknown_key(env: Env) -> list[str]:
    """A misspelt KeptConfig field in model.overrides (it would land in model/config.json unused)."""
    return env.with_config("pretrain", "typo.yaml", "name: tiny\nmodel:\n  overrides:\n    hiden_size: 8\n")


def config_overrides_wrong_type(env: Env) -> list[str]:
    """A string where a KeptConfig number belongs (was a TypeError traceback while building the model)."""
    return env.with_config(
        "pretrain", "type.yaml", "name: tiny\nmodel:\n  overrides: {hidden_size: 32,\n    num_hidden_layers: two}\n"
    )


def pretrain_empty_config(env: Env) -> list[str]:
    """An empty --config file is refused, not read as "all defaults"."""
    return env.with_config("pretrain", "empty.yaml", "# nothing here yet\n\n")


# ------------------------------------------------------------------------------------------ tracebacks once (issue 14)


def cli_missing_argument(env: Env) -> list[str]:
    return ["evaluate"]


def cli_unknown_option(env: Env) -> list[str]:
    return ["evaluate", str(env.tiny()), "--bogus"]


def cli_unknown_command(env: Env) -> list[str]:
    return ["frobnicate", str(env.tmp)]


def run_dir_is_a_file(env: Env) -> list[str]:
    file = env.write("afile", "not a directory\n")
    return ["encode", str(file)]


def runs_dir_is_a_file(env: Env) -> list[str]:
    file = env.write("runs", "not a directory\n")
    config = env.write("runs_file.yaml", f"name: tiny\nruns_dir: {file}\n")
    return ["run", str(config), "--stages", "data"]


def run_name_too_long(env: Env) -> list[str]:
    config = env.write("long.yaml", "name: " + "a" * 300 + f"\nruns_dir: {env.tmp}\n")
    return ["run", str(config), "--stages", "data"]


def run_dir_name_too_long(env: Env) -> list[str]:
    corpus = env.write("c.jsonl", _doc("Paris is nice.") + "\n")
    return ["corpus", str(env.tmp / ("b" * 300)), "--source", "files", "--corpus", str(corpus)]


def corpus_lone_surrogate(env: Env) -> list[str]:
    """JSON may escape half of a UTF-16 pair ("\\ud800"): no Unicode text, so nothing can write it."""
    bad = env.write("surrogate.jsonl", _doc("Paris is nice.") + "\n" + '{"text": "bad \\ud800 here"}\n')
    return env.load_corpus(bad)


def corpus_entity_id_too_large(env: Env) -> list[str]:
    bad = env.write("huge_id.jsonl", _doc("Paris is nice.", [_span(0, 5, entity_id=10**30)]) + "\n")
    return env.load_corpus(bad)


def annotate_entity_id_too_large(env: Env) -> list[str]:
    """An id past int64 used to crash in Arrow while annotating; it is refused when the corpus is read."""
    run = env.tiny()
    (run / "corpus" / "documents.jsonl").write_text(
        _doc("Rome.", doc_id="r") + "\n" + _doc("Paris is nice.", [_span(0, 5, entity_id=10**30)]) + "\n",
        encoding="utf-8",
    )
    return ["annotate", str(run), "--detectors", "gold"]


def triples_delimiter_empty(env: Env) -> list[str]:
    triples = env.write("triples.tsv", "head\trelation\ttail\nParis\tcapital_of\tFrance\n")
    return ["data", "triples", str(triples), "--delimiter", "", "--out", str(env.tmp / "run")]


def triples_delimiter_two_characters(env: Env) -> list[str]:
    triples = env.write("triples.csv", "head,relation,tail\nParis,capital_of,France\n")
    return ["data", "triples", str(triples), "--delimiter", "ab", "--out", str(env.tmp / "run")]


def init_from_pickle_bin(env: Env) -> list[str]:
    """A kept checkpoint whose weights are a pickle (pytorch_model.bin): kept loads safetensors only."""
    run = env.tiny()
    model = env.tmp / "pickled_model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "kept", "vocab_size": 190}), encoding="utf-8")
    (model / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a pickled state dict")
    return ["pretrain", str(run), "--init-from", str(model)]


def _damaged_checkpoint(env: Env, file: str) -> list[str]:
    run = env.tiny()
    checkpoint = run / "checkpoints" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 5}), encoding="utf-8")
    (checkpoint / file).write_bytes(b"\x80\x02 cut off by a full disk")
    return ["pretrain", str(run)]


def resume_damaged_rng_state(env: Env) -> list[str]:
    return _damaged_checkpoint(env, "rng_state.pth")


def resume_damaged_scheduler(env: Env) -> list[str]:
    return _damaged_checkpoint(env, "scheduler.pt")


def run_force_unknown_stage(env: Env) -> list[str]:
    run = env.tiny()
    return ["run", str(run / "config.yaml"), "--out", str(run), "--force", "pretrian"]


def run_bad_name_flag(env: Env) -> list[str]:
    """--name a/b is the command line's value, not the YAML's line 1."""
    run = env.tiny()
    return ["run", str(run / "config.yaml"), "--name", "a/b"]


# ------------------------------------------------------------------------------------------ API calls


def api_fewrel_corrupt(env: Env) -> Callable[[], Any]:
    from kept.fewrel import load_fewrel

    bad = env.write(
        "fewrel.json", '{"P17": [{"tokens": ["a", "b"], "h": ["a", "Q1", [[0]]], "t": ["b", "Q2", [[5]]]}]}'
    )
    return lambda: load_fewrel(bad)


def api_check_spans_outside(env: Env) -> Callable[[], Any]:
    from masking.spans import check_spans

    return lambda: check_spans("short", [_span(2, 10)], doc_id="doc7")


def api_load_triples_missing(env: Env) -> Callable[[], Any]:
    from kg import load_triples

    return lambda: load_triples(env.tmp / "missing.tsv")


def api_aliases_bad_row(env: Env) -> Callable[[], Any]:
    from kg import AliasIndex

    bad = env.write("aliases.tsv", "alias\tentity_id\tcount\nParis\t0\t3\nRome\tone\t2\n")
    return lambda: AliasIndex.load(bad)


def api_config_output_escape(env: Env) -> Callable[[], Any]:
    from kept.rundir import inside_run_dir

    run = env.tiny()
    return lambda: inside_run_dir(run, "../../etc/passwd", "eval.figures")


CASES: list[Case] = [
    Case("corpus_invalid_json", corpus_invalid_json, ("bad.jsonl:2", "not valid JSON", "one JSON object per line")),
    Case("corpus_latin1_jsonl", corpus_latin1, ("latin.jsonl:2", "not UTF-8", "re-encode")),
    Case("corpus_utf16_txt", corpus_utf16_txt, ("corpus.txt:1", "not UTF-8", "re-encode")),
    Case("corpus_empty_documents", corpus_empty_documents, ("empty.jsonl", "no documents with text")),
    Case("corpus_huge_document", corpus_huge_document, ("huge.jsonl:1", "characters, more than", "split it")),
    Case("corpus_span_outside_text", corpus_span_outside_text, ("spans.jsonl:2", "outside the text")),
    Case("corpus_text_not_string", corpus_text_not_string, ("types.jsonl:1", "'text' is a int", "JSON string")),
    Case("corpus_parquet_corrupt", corpus_parquet_corrupt, ("corpus.parquet", "not a readable Parquet file")),
    Case(
        "corpus_dataset_dir_corrupt",
        corpus_dataset_dir_corrupt,
        ("saved", "cannot read the saved dataset", "save_to_disk"),
    ),
    Case("corpus_disk_full", corpus_overwrite_disk_full, ("documents.jsonl", "No space left", "free disk space")),
    Case(
        "annotate_unknown_entity_id",
        annotate_unknown_entity_id,
        ("documents.jsonl", "spans[0] links to entity id 999", "entities", "kg/entities.tsv"),
    ),
    Case("annotate_corpus_bad_line", annotate_corpus_bad_line, ("documents.jsonl:3", "invalid JSON")),
    Case("annotate_config_bad_yaml", annotate_config_bad_yaml, ("annotation.yaml:", "not valid YAML")),
    Case("annotate_disk_full", annotate_disk_full, ("annotated", "No space left", "free disk space")),
    Case("encode_disk_full", encode_disk_full, ("encoded", "No space left", "free disk space")),
    Case("config_yaml_syntax", config_yaml_syntax, ("bad.yaml:", "not valid YAML")),
    Case("config_unknown_key", config_unknown_key, ("typo.yaml:3", "unknown key 'train.max_step'")),
    Case("config_wrong_type", config_wrong_type, ("type.yaml:3", "encode.max_length", "fix the value")),
    Case("config_not_utf8", config_not_utf8, ("latin.yaml:2", "not UTF-8", "UTF-8")),
    Case("config_not_a_mapping", config_not_a_mapping, ("list.yaml", "YAML mapping")),
    Case("run_config_corrupt", run_config_yaml_corrupt, ("config.yaml:", "not valid YAML")),
    Case("triples_wrong_columns", triples_wrong_columns, ("triples.tsv:3", "columns, expected 3")),
    Case("triples_latin1", triples_latin1, ("triples.tsv:2", "not valid utf-8", "re-save")),
    Case("labels_unknown_entity", labels_unknown_entity, ("labels.tsv:2", "Atlantis")),
    Case("kg_embeddings_corrupt", kg_embeddings_corrupt, ("embeddings.safetensors", "kept kg embed")),
    Case("encode_unknown_entity_id", encode_unknown_entity_id, ("annotated", "entity id 10000", "KG has")),
    Case("init_from_not_a_checkpoint", init_from_not_a_checkpoint, ("model.init_from", "no config.json")),
    Case("init_from_escapes_runs_dir", init_from_escapes_runs_dir, ("model.init_from", "not a run name")),
    Case(
        "tokenizer_model_mismatch",
        tokenizer_model_mismatch,
        ("model.init_from", "30522 tokens", "tokenizer", "kept encode"),
    ),
    Case(
        "init_from_swapped_tokens",
        init_from_swapped_tokens,
        ("model.init_from", "differs from the run's tokenizer at token ids 10, 11", "kept encode"),
    ),
    Case(
        "init_from_damaged_weights",
        init_from_damaged_weights,
        ("model.init_from", "model.safetensors' is not a readable safetensors file", "damaged"),
    ),
    Case("run_dir_other_version", run_dir_from_other_version, ("kept 9.0.0", "run format 99", "new run directory")),
    Case("run_dir_locked", run_dir_locked, ("in use by `kept pretrain`", "wait for that command")),
    Case("evaluate_without_model", evaluate_without_model, ("run/model", "model not found", "pretrain the run first")),
    Case("evaluate_on_a_missing_gpu", evaluate_on_a_missing_gpu, ("eval.device", "cuda:99", "not available")),
    Case("report_missing_dir", report_missing_dir, ("no_such_run", "not found")),
    Case("api_fewrel_entity_past_tokens", api_fewrel_corrupt, ("fewrel.json", "points past the 2 tokens")),
    Case("api_check_spans_outside", api_check_spans_outside, ("doc7", "outside the text of 5 characters")),
    Case("api_load_triples_missing", api_load_triples_missing, ("missing.tsv", "not found")),
    Case("api_aliases_bad_row", api_aliases_bad_row, ("aliases.tsv:3",)),
    Case("api_output_path_escape", api_config_output_escape, ("eval.figures", "outside the run directory")),
    Case(
        "tokenizer_base_model_auto_map",
        tokenizer_base_model_auto_map,
        ("tokenizer.base_model", "tokenizer_config.json", "`auto_map`", "trust_remote_code"),
    ),
    Case("init_from_auto_map", init_from_auto_map, ("model.init_from", "evil_model/config.json", "`auto_map`")),
    Case(
        "config_duplicate_section", config_duplicate_section, ("twice.yaml:5", "duplicate key 'train'", "lines 2 and 5")
    ),
    Case("config_yaml_alias_bomb", config_yaml_alias_bomb, ("bomb.yaml:2", "alias '*a'", "not allowed")),
    Case("annotate_config_alias", annotate_config_alias, ("annotation.yaml:2", "alias '*gold'")),
    Case("config_learning_rate_inf", config_learning_rate_inf, ("inf.yaml:4", "train.learning_rate", "finite")),
    Case("config_learning_rate_nan", config_learning_rate_nan, ("train.learning_rate", "not a finite number")),
    Case("config_max_steps_boolean", config_max_steps_boolean, ("bool.yaml:3", "train.max_steps", "boolean true")),
    Case("corpus_span_float_offsets", corpus_span_float_offsets, ("floats.jsonl:2", "integers", "end=4.0")),
    Case("corpus_span_boolean_offsets", corpus_span_boolean_offsets, ("bools.jsonl:1", "integers", "start=False")),
    Case(
        "pretrain_entity_dim_mismatch",
        pretrain_entity_dim_mismatch,
        ("model.overrides.entity_dim", "KG embedding dim 16"),
    ),
    Case(
        "config_overrides_unknown_key",
        config_overrides_unknown_key,
        ("typo.yaml:4", "unknown key 'model.overrides.hiden_size'", "did you mean 'hidden_size'", "KeptConfig"),
    ),
    Case(
        "config_overrides_wrong_type",
        config_overrides_wrong_type,
        ("type.yaml:4", "model.overrides.num_hidden_layers", "valid integer"),
    ),
    Case("pretrain_empty_config", pretrain_empty_config, ("empty.yaml", "empty", "config.yaml")),
    Case("cli_missing_argument", cli_missing_argument, ("kept evaluate", "Missing argument", "kept evaluate --help")),
    Case("cli_unknown_option", cli_unknown_option, ("No such option: --bogus", "kept evaluate --help")),
    Case("cli_unknown_command", cli_unknown_command, ("No such command 'frobnicate'", "kept --help")),
    Case("run_dir_is_a_file", run_dir_is_a_file, ("afile: is a file, not a directory",)),
    Case("runs_dir_is_a_file", runs_dir_is_a_file, ("runs: is a file", "cannot be made inside it")),
    Case("run_name_too_long", run_name_too_long, ("long.yaml:1", "'name'", "at most 200 characters")),
    Case("run_dir_name_too_long", run_dir_name_too_long, ("300 characters long", "at most 255", "shorter")),
    Case(
        "corpus_lone_surrogate",
        corpus_lone_surrogate,
        ("surrogate.jsonl:2", "'text'", "lone surrogate '\\ud800'"),
        absent=("run/corpus",),
    ),
    Case(
        "corpus_entity_id_too_large",
        corpus_entity_id_too_large,
        ("huge_id.jsonl:1", "spans[0]", "entity_id 1000000000000000000000000000000", "or -1"),
    ),
    Case(
        "annotate_entity_id_too_large",
        annotate_entity_id_too_large,
        ("documents.jsonl:2", "spans[0]", "entity_id 1000000000000000000000000000000"),
    ),
    Case("triples_delimiter_empty", triples_delimiter_empty, ("delimiter", "'' is not one character")),
    Case(
        "triples_delimiter_two_characters", triples_delimiter_two_characters, ("delimiter", "'ab' is not one character")
    ),
    Case(
        "init_from_pickle_bin",
        init_from_pickle_bin,
        ("model.init_from", "pytorch_model.bin' is a pickle file", "model.safetensors only"),
    ),
    Case(
        "resume_damaged_rng_state",
        resume_damaged_rng_state,
        ("checkpoint-5/rng_state.pth", "damaged", "delete that checkpoint", "--restart"),
    ),
    Case(
        "resume_damaged_scheduler",
        resume_damaged_scheduler,
        ("checkpoint-5/scheduler.pt", "damaged", "delete that checkpoint", "--restart"),
    ),
    Case("run_force_unknown_stage", run_force_unknown_stage, ("error: --force: unknown stage 'pretrian'",)),
    Case("run_bad_name_flag", run_bad_name_flag, ("error: command line: invalid value for 'name'",)),
]


# ------------------------------------------------------------------------------------------ the test


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file under ``root`` (the lock file is not an artifact)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != ".kept.lock":
            out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
    return out


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from kept.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(
    case: Case, tmp_path: Path, tiny_template: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    env = Env(tmp_path, tiny_template, monkeypatch)
    call = case.setup(env)
    before = snapshot(tmp_path)
    if isinstance(call, list):
        code, output = run_cli(call, capsys)
        assert code == 2, output
        assert "Traceback" not in output, output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, output
        message = errors[0]
        assert output.rstrip().endswith(message), f"the error is not the last line:\n{output}"
    else:
        with pytest.raises(OUR_ERRORS) as error_info:
            call()
        message = str(error_info.value)
        assert "\n" not in message
    for expected in case.expect:
        assert expected in message, f"{expected!r} not in {message!r}"
    monkeypatch.undo()  # restore patched writers before looking at the files
    for cleanup in env.cleanups:
        cleanup()
    after = snapshot(tmp_path)
    damaged = [name for name, stamp in before.items() if after.get(name) != stamp]
    assert not damaged, f"{case.name} changed existing files: {damaged}"
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert not leftovers, leftovers
    half_written = [name for name in case.absent if (tmp_path / name).exists()]
    assert not half_written, f"{case.name} left {half_written} behind"


def test_catalogue_is_big_enough() -> None:
    assert len(CASES) >= 20
    assert len({case.name for case in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------ real processes


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    return env


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": \n', encoding="utf-8")
    argv = ["corpus", str(tmp_path / "run"), "--source", "files", "--corpus", str(bad)]
    quiet = subprocess.run(KEPT + argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert quiet.returncode == 2
    assert "Traceback" not in quiet.stderr and quiet.stderr.count("error:") == 1
    loud = subprocess.run(KEPT + ["--debug"] + argv, capture_output=True, text=True, env=_env(), timeout=120)
    assert loud.returncode != 0
    assert "Traceback" in loud.stderr and "KeptError" in loud.stderr


@pytest.mark.slow
def test_two_processes_are_refused_by_the_lock(tmp_path: Path, tiny_template: Path) -> None:
    """A real second process (`kept encode`) is refused while another holds the run directory."""
    run = tmp_path / "run"
    shutil.copytree(tiny_template, run)
    before = snapshot(run)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from kept.rundir import RunLock
            with RunLock({str(run)!r}, "kept pretrain"):
                print("locked", flush=True)
                sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = subprocess.run(KEPT + ["encode", str(run)], capture_output=True, text=True, env=_env(), timeout=120)
        assert second.returncode == 2, second.stderr
        assert "in use by `kept pretrain` (pid" in second.stderr and "Traceback" not in second.stderr
        assert snapshot(run) == before
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    # once the first process is gone the lock is free again (the kernel dropped it)
    from kept.rundir import RunLock

    with RunLock(run, "test"):
        pass


def test_every_writing_command_takes_the_lock(
    tmp_path: Path, tiny_template: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command that writes a run directory is refused while the directory is locked."""
    from kept.rundir import RunLock

    run = tmp_path / "run"
    shutil.copytree(tiny_template, run)
    triples = run / "source" / "triples.tsv"
    commands = [
        ["corpus", str(run), "--source", "files", "--corpus", str(run / "source" / "corpus.jsonl")],
        ["annotate", str(run), "--detectors", "gold"],
        ["kg", "embed", str(run), "--epochs", "1", "--dim", "8"],
        ["encode", str(run)],
        ["pretrain", str(run)],
        ["evaluate", str(run)],
        ["report", str(run)],
        ["data", "triples", str(triples), "--out", str(run)],
        ["run", str(run / "config.yaml"), "--out", str(run)],
    ]
    before = snapshot(run)
    with RunLock(run, "holder"):
        for argv in commands:
            code, output = run_cli(argv, capsys)
            assert code == 2 and "in use by `holder`" in output, (argv, output)
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------------ safe loading


def test_weights_load_safely() -> None:
    """No unpickling loads and no remote code in the product: safetensors or torch.load(weights_only=True)."""
    import re

    problems = []
    for package in ("kg", "masking", "fusion", "kept"):
        for path in sorted((REPO / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for number, line in enumerate(text.splitlines(), start=1):
                code = line.split("#", 1)[0]
                if "torch.load(" in code and "weights_only=True" not in code:
                    problems.append(f"{path.relative_to(REPO)}:{number}: torch.load without weights_only=True")
                if re.search(r"trust_remote_code\s*=\s*True", code):
                    problems.append(f"{path.relative_to(REPO)}:{number}: trust_remote_code=True")
                # the one allowed unpickling: objects handed from the parent process to its own
                # datasets workers in memory (masking.annotate), marked "# in-process" on the line
                in_process = line.rstrip().endswith("# in-process") and "pickle.loads(" in code
                if re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True", code) and not in_process:
                    problems.append(f"{path.relative_to(REPO)}:{number}: unpickling")
    assert not problems, problems


def test_every_from_pretrained_refuses_remote_code() -> None:
    """Each ``from_pretrained(...)`` call in the product passes ``trust_remote_code=False`` (an override
    of ``from_pretrained`` that forwards its own arguments to ``super()`` is exempt)."""
    import ast

    problems = []
    for package in ("kg", "masking", "fusion", "kept"):
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            overrides = {
                id(node)
                for function in ast.walk(tree)
                if isinstance(function, ast.FunctionDef) and function.name == "from_pretrained"
                for node in ast.walk(function)
            }
            for node in ast.walk(tree):
                if (
                    not (
                        isinstance(node, ast.Call)
                        and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "from_pretrained"
                    )
                    or id(node) in overrides
                ):
                    continue
                flags = [k.value for k in node.keywords if k.arg == "trust_remote_code"]
                if not (flags and isinstance(flags[0], ast.Constant) and flags[0].value is False):
                    problems.append(
                        f"{path.relative_to(REPO)}:{node.lineno}: from_pretrained without trust_remote_code=False"
                    )
    assert not problems, problems


def test_legacy_bin_checkpoint_is_loaded_without_unpickling_code(tmp_path: Path) -> None:
    """A pytorch_model.bin that carries a pickled object (not tensors) is refused, not executed."""
    import torch

    from fusion.bert_checkpoint import read_bert_state_dict

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (print, ("this must never run",))

    torch.save({"weight": Payload()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(FusionError, match="refusing to load") as error_info:
        read_bert_state_dict(tmp_path)
    assert "pytorch_model.bin" in str(error_info.value) and "\n" not in str(error_info.value)
    assert "\x1b" not in str(error_info.value)  # torch's colour codes stripped: one plain line
    assert "damaged: Weights only load failed)" in str(error_info.value)

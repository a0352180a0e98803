"""`kept export RUN_DIR --to bert OUT`: a KEPT model as a plain transformers BertForMaskedLM directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kept.cli import app
from kept.config import load_run_config
from kept.encode import encode_run
from kept.errors import KeptError
from kept.export import NOTE_FILE, UNKNOWN_ARCHITECTURE, export_run
from kept.pretrain import pretrain_run
from kept.tiny import make_tiny_run

TEXTS = ["Paris is the capital city of France .", "The river Rhine flows through Germany every day ."]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_tiny_run(tmp_path_factory.mktemp("export") / "template", steps=2, save_steps=2)
    encode_run(run_dir, load_run_config(run_dir))
    return run_dir


def _pretrained(encoded: Path, target: Path, overrides: list[str]) -> Path:
    run_dir = shutil.copytree(encoded, target)
    pretrain_run(run_dir, load_run_config(run_dir, overrides), progress=False)
    return run_dir


@pytest.fixture(scope="module")
def text_run(encoded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pretrained without fusion (its knowledge layers never saw an entity)."""
    return _pretrained(
        encoded, tmp_path_factory.mktemp("text") / "run", ["model.fusion=false", "masking.strategy=token"]
    )


@pytest.fixture(scope="module")
def fusion_run(encoded: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pretrained(encoded, tmp_path_factory.mktemp("fusion") / "run", [])


def _same_logits(run_dir: Path, out: Path) -> None:
    """The exported BERT's logits equal the KEPT model's on a padded batch without entities."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from fusion import KeptForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(str(out))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    kept = KeptForPreTraining.from_pretrained(str(run_dir / "model")).eval()
    bert = AutoModelForMaskedLM.from_pretrained(str(out)).eval()
    assert type(bert).__name__ == "BertForMaskedLM"
    with torch.no_grad():
        expected, got = kept(**batch).logits, bert(**batch).logits
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)


def test_export_without_fusion_is_a_bert_with_the_same_logits(text_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bert"
    result = CliRunner().invoke(app, ["export", str(text_run), "--to", "bert", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForMaskedLM"]
    assert config["num_hidden_layers"] == 2  # T 1 + K 1
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(tmp_path.glob("bert.tmp-*"))
    note = json.loads((out / NOTE_FILE).read_text())
    assert note["fusion"] is False and note["text_only"] is False
    _same_logits(text_run, out)
    # an earlier export is replaced whole; a directory that is not one is refused
    export_run(text_run, out)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(KeptError, match="not an earlier kept export"):
        export_run(text_run, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_transformers_alone_loads_the_export_and_not_the_kept_directory(text_run: Path, tmp_path: Path) -> None:
    """A fresh interpreter that never imports fusion/kept: the export loads (AutoModel, fill-mask pipeline);
    the KEPT directory fails with the message the KEPT hint (kept.export.outside_kept_fix) looks for."""
    out = export_run(text_run, tmp_path / "bert").out
    script = (
        "import sys\n"
        "from transformers import AutoModelForMaskedLM, pipeline\n"
        "try:\n"
        "    AutoModelForMaskedLM.from_pretrained(sys.argv[1])\n"
        "    print('KEPT-LOADED')\n"
        "except ValueError as error:\n"
        "    print('KEPT-FAILED', ' '.join(str(error).split()))\n"
        "model = AutoModelForMaskedLM.from_pretrained(sys.argv[2])\n"
        "fill = pipeline('fill-mask', model=sys.argv[2])\n"
        "print('FILLED', type(model).__name__, len(fill('paris is the capital city of [MASK] .')))\n"
        "assert not any(name.split('.')[0] in ('fusion', 'kept') for name in sys.modules)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(text_run / "model"), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "KEPT-FAILED" in done.stdout and UNKNOWN_ARCHITECTURE in done.stdout
    assert "FILLED BertForMaskedLM 5" in done.stdout


def test_a_fusion_model_is_refused_unless_text_only(fusion_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bert"
    result = CliRunner().invoke(app, ["export", str(fusion_run), "--to", "bert", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, KeptError)
    message = str(result.exception)
    assert "entity path" in message and "--text-only" in message and "\n" not in message
    assert not out.exists()

    result = CliRunner().invoke(app, ["export", str(fusion_run), "--to", "bert", str(out), "--text-only"])
    assert result.exit_code == 0, result.output
    assert "dropped" in result.output and "entity table" in result.output
    note = json.loads((out / NOTE_FILE).read_text())
    assert note["fusion"] is True and note["text_only"] is True and "entity path was dropped" in note["note"]
    assert any(line.startswith("entity table (22 entities") for line in note["dropped"])
    assert any("entity attention" in line for line in note["dropped"])
    _same_logits(fusion_run, out)  # the text path: what KEPT computes without linked entities


def test_unknown_target_and_missing_model_are_clear_errors(encoded: Path, tmp_path: Path) -> None:
    with pytest.raises(KeptError, match="unknown export target 'gpt2'.*bert"):
        export_run(encoded, tmp_path / "out", to="gpt2")
    with pytest.raises(KeptError, match=r"model/config.json.*kept pretrain"):
        export_run(encoded, tmp_path / "out")


@pytest.mark.parametrize("tie", [True, False])
def test_tied_and_untied_decoders_convert(tie: bool) -> None:
    from fusion import KeptConfig, KeptForPreTraining
    from fusion.export import to_bert_for_masked_lm

    torch.manual_seed(0)
    model = KeptForPreTraining(
        KeptConfig.from_preset("tiny", vocab_size=300, entity_dim=32, tie_word_embeddings=tie)
    ).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
        if not tie:
            model.cls.predictions.decoder.weight.normal_()
    exported = to_bert_for_masked_lm(model)
    bert = exported.model
    assert bert.config.tie_word_embeddings is tie
    assert (bert.cls.predictions.decoder.weight is bert.bert.embeddings.word_embeddings.weight) is tie
    ids = torch.randint(5, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    with torch.no_grad():
        assert torch.allclose(
            bert(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits, atol=1e-5
        )
    assert "dEA head (4 tensors)" in exported.dropped_summary()


def test_export_inverts_from_bert_on_the_real_checkpoint(minilm_dir: Path) -> None:
    """MiniLM-L6 -> KEPT (T 3 + K 3) -> BERT gives MiniLM's encoder back, tensor for tensor."""
    from transformers import BertModel

    from fusion import KeptForPreTraining
    from fusion.export import to_bert_for_masked_lm

    model, _ = KeptForPreTraining.from_bert(str(minilm_dir))
    assert (model.config.num_hidden_layers, model.config.num_knowledge_layers) == (3, 3)
    exported = to_bert_for_masked_lm(model).model.bert.state_dict()
    original = BertModel.from_pretrained(str(minilm_dir)).state_dict()
    names = [name for name in original if not name.startswith("pooler.")]  # BertForMaskedLM has no pooler
    assert len(names) > 90 and all(torch.equal(exported[name], original[name]) for name in names)


def test_a_failed_load_of_a_kept_directory_hints_at_import_fusion(text_run: Path) -> None:
    from kept.analysis import load_model

    class Unregistered:  # what AutoModel* does when fusion was never imported
        @classmethod
        def from_pretrained(cls, path: str, **kwargs: object) -> None:
            raise ValueError(
                f"The checkpoint you are trying to load has model type `kept` but Transformers {UNKNOWN_ARCHITECTURE}."
            )

    with pytest.raises(KeptError, match=r"`import fusion`.*kept export RUN_DIR --to bert OUT"):
        load_model(text_run, Unregistered)

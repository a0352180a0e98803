"""KEPT fusion model (Tsinghua-ERNIE): config, model classes, entity table, BERT initialisation.

Importing the package registers the model with the transformers Auto classes (model_type "kept").
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from fusion.configuration_kept import PRESETS, KeptConfig
from fusion.entity_table import ENTITY_TABLE_FILE, EntityTable, open_table
from fusion.errors import FusionError
from fusion.loading import BertLoadReport, LoadReport, load_from_bert
from fusion.modeling_kept import (
    KeptForMaskedLM,
    KeptForPreTraining,
    KeptForPreTrainingOutput,
    KeptForRelationClassification,
    KeptForSequenceClassification,
    KeptModel,
    KeptModelOutput,
    KeptPreTrainedModel,
)


def _register() -> None:
    AutoConfig.register("kept", KeptConfig, exist_ok=True)
    AutoModel.register(KeptConfig, KeptModel, exist_ok=True)
    AutoModelForPreTraining.register(KeptConfig, KeptForPreTraining, exist_ok=True)
    AutoModelForMaskedLM.register(KeptConfig, KeptForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(KeptConfig, KeptForSequenceClassification, exist_ok=True)


_register()

__all__ = [
    "BertLoadReport",
    "ENTITY_TABLE_FILE",
    "EntityTable",
    "FusionError",
    "KeptConfig",
    "KeptForMaskedLM",
    "KeptForPreTraining",
    "KeptForPreTrainingOutput",
    "KeptForRelationClassification",
    "KeptForSequenceClassification",
    "KeptModel",
    "KeptModelOutput",
    "KeptPreTrainedModel",
    "load_from_bert",
    "LoadReport",
    "open_table",
    "PRESETS",
]

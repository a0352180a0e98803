from masking.align import AlignedUnits, align_spans, encode_with_units  # alignment (masking/align.py)
from masking.masking_config import STRATEGIES, MaskingConfig  # masking strategies config
from masking.collator import ErnieStageCallback, KnowledgeMaskingCollator  # MLM + dEA collator

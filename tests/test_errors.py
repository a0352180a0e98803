"""One error base: KGError, MaskingError and KeptError share kg.errors.InputError; FusionError matches it."""

from __future__ import annotations

import pickle

import pytest

from fusion.errors import FusionError
from kept.errors import KeptError
from kg.errors import InputError, KGError, one_line_message
from masking.errors import MaskingError

CASES = [
    ("bad value", {}),
    ("bad value.", {"where": "kg/triples.tsv", "line": 4, "fix": "fix the row"}),
    ("two\nlines", {"line": 2}),
    ("x", {"where": "masking.strategy", "fix": "use one of\r\n token, span"}),
]


@pytest.mark.parametrize(("what", "kwargs"), CASES)
def test_every_error_formats_one_line_the_same_way(what: str, kwargs: dict) -> None:
    expected = one_line_message(what, kwargs.get("where"), kwargs.get("line"), kwargs.get("fix"))
    assert "\n" not in expected and "\r" not in expected
    for cls in (KGError, MaskingError, KeptError, FusionError):
        error = cls(what, **kwargs)
        assert str(error) == expected and error.what == what and error.fix == kwargs.get("fix")


def test_the_public_names_keep_their_bases() -> None:
    assert all(issubclass(cls, InputError) for cls in (KGError, MaskingError, KeptError))
    assert all(issubclass(cls, ValueError) for cls in (KGError, MaskingError, FusionError))
    assert not issubclass(KeptError, ValueError)  # pydantic must not wrap it into a ValidationError
    assert not issubclass(MaskingError, KGError) and not issubclass(KGError, MaskingError)


def test_errors_survive_pickling_for_worker_processes() -> None:
    error = pickle.loads(pickle.dumps(MaskingError("bad span", where="doc 3", fix="drop it")))
    assert isinstance(error, MaskingError) and str(error) == "doc 3: bad span. drop it"

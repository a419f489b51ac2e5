"""Resize: a value no photo could be resized by is refused where it is made, naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from automl.data.resize import Resize


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"size": 0}, "Resize.size: 0"),
        ({"size": 224.0}, "Resize.size: 224.0"),
        ({"size": 224, "crop_fraction": 0.0}, "Resize.crop_fraction: 0.0"),
        ({"size": 224, "crop_fraction": 1.5}, "Resize.crop_fraction: 1.5"),
        ({"size": 224, "resample": "lanczos"}, "Resize.resample: 'lanczos'"),
    ],
)
def test_bad_values_are_refused_naming_the_field(arguments: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        Resize(**arguments)  # type: ignore[arg-type]


def test_it_imports_without_keras_or_the_backbones() -> None:
    code = "import sys, automl.data.resize; print(sorted(m for m in ('keras', 'automl.backbones') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

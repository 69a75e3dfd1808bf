"""The cases of a cohort: from a folder (one image file or DICOM sub-folder per case) or a CSV.

Everything that makes a case list unusable (no cases, two cases that would write the same output, a
CSV without a ``case`` column or with the wrong number of input columns) is refused here, before any
case runs, so a mistake costs seconds, not a night. What is wrong with one case's images is
found when that case runs, and fails it alone.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from unetrpp.errors import BatchInputError
from unetrpp.models.cards import ModelCard

__all__ = ["Case", "IMAGE_SUFFIXES", "find_cases"]

# Longest first, so "ct.nii.gz" loses ".nii.gz", not ".gz". Segmentations are outputs, never cases.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_NOT_CASES = (".seg.nrrd",)


@dataclass(frozen=True)
class Case:
    """One case: its name (the output's stem) and one input path per model input, in the model's order."""

    name: str
    inputs: tuple[Path, ...]


def find_cases(source: str | os.PathLike[str], card: ModelCard, output_dir: Path | None = None) -> list[Case]:
    """The cases of ``source``, sorted by name: a folder of cases or a CSV listing them.

    Args:
        source: a folder (each image file and each sub-folder, a DICOM series, is one case named after
            it without its image extension) or a ``.csv`` with a ``case`` column and one column per
            model input (named as the model's inputs, or in their order); relative paths in it are read
            from the CSV's folder.
        card: the model's card (how many inputs a case needs, and their names).
        output_dir: left out of a folder's cases when it lies inside it.

    Raises:
        BatchInputError: no cases, two cases of the same name (also differing only in case), a bad
            name or CSV.
    """
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() == ".csv":
        cases = _from_csv(path, card)
    elif path.is_dir():
        cases = _from_folder(path, card, output_dir)
    elif path.exists():
        raise BatchInputError(f"{path} is neither a folder of cases nor a .csv listing them")
    else:
        raise BatchInputError(f"{path} does not exist")
    if not cases:
        raise BatchInputError(
            f"{path} holds no cases (image files {', '.join(IMAGE_SUFFIXES)} or DICOM sub-folders)"
        )
    _check_unique(cases, path)
    return sorted(cases, key=lambda case: case.name)


def _from_folder(folder: Path, card: ModelCard, output_dir: Path | None) -> list[Case]:
    if card.num_inputs != 1:
        raise BatchInputError(
            f"model {card.name!r} needs {card.num_inputs} inputs per case "
            f"({', '.join(card.input_channels)}): list them in a CSV with a 'case' column and one column "
            "per input"
        )
    skip = output_dir.resolve() if output_dir is not None else None
    cases = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue  # hidden files, and the temporaries of a write under way
        if entry.is_dir():
            if skip is None or entry.resolve() != skip:
                cases.append(Case(_checked_name(entry.name, entry), (entry,)))
            continue
        lower = entry.name.lower()
        suffix = next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)
        if suffix is not None and not lower.endswith(_NOT_CASES):
            cases.append(Case(_checked_name(entry.name[: -len(suffix)], entry), (entry,)))
    return cases


def _from_csv(path: Path, card: ModelCard) -> list[Case]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise BatchInputError(f"cannot read {path}: {error}") from error
    if not rows:
        raise BatchInputError(f"{path} is empty; its first row must name a 'case' column and the inputs")
    header = [name.strip() for name in rows[0]]
    if "case" not in header:
        raise BatchInputError(f"{path} has no 'case' column (its columns: {', '.join(header)})")
    columns = _input_columns(header, card, path)
    cases = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        empty = [name for name in ("case", *columns) if not cells.get(name)]
        if empty:
            raise BatchInputError(f"{path} row {number}: no value in column(s) {', '.join(empty)}")
        inputs = tuple(path.parent / Path(cells[name]).expanduser() for name in columns)
        cases.append(Case(_checked_name(cells["case"], f"{path} row {number}"), inputs))
    return cases


def _input_columns(header: list[str], card: ModelCard, path: Path) -> list[str]:
    """The input columns in the model's input order: by name when they carry its input names, else as
    they come after ``case``."""
    columns = [name for name in header if name != "case" and name]
    if len(columns) != card.num_inputs:
        raise BatchInputError(
            f"{path} has {len(columns)} input column(s) ({', '.join(columns) or 'none'}) but model "
            f"{card.name!r} needs {card.num_inputs} ({', '.join(card.input_channels)})"
        )
    by_name = {name.casefold(): name for name in columns}
    if all(channel.casefold() in by_name for channel in card.input_channels):
        return [by_name[channel.casefold()] for channel in card.input_channels]
    return columns


def _checked_name(name: str, where: object) -> str:
    """A case name that makes one file in the output folder and no hidden one."""
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise BatchInputError(
            f"{where}: case name {name!r} cannot name a file in the output folder (empty, hidden or with a "
            "path separator)"
        )
    return name


def _check_unique(cases: list[Case], source: Path) -> None:
    """Two cases that would write the same output (also on a case-insensitive disk) are refused."""
    seen: dict[str, Case] = {}
    for case in cases:
        other = seen.setdefault(case.name.casefold(), case)
        if other is not case:
            raise BatchInputError(
                f"{source}: cases {other.name!r} ({other.inputs[0].name}) and {case.name!r} "
                f"({case.inputs[0].name}) would write the same output; rename one"
            )

"""The labels CSV users put in an archive: forgiving about delimiters, strict about defects.

(The manifest a ready dataset gets is the engine's, ``foprokd.manifest``.)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from app.datasets.problems import ProblemCode, ProblemLog
from foprokd.splits import normalize_split

_DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class LabelColumns:
    """Column names of a user's labels CSV (matched case-insensitively); ``group``: the names a
    patient column may have, the first present is used."""

    image: str = "image"
    label: str = "label"
    split: str = "split"
    group: tuple[str, ...] = ("patient_id", "group")


@dataclass(frozen=True)
class LabelRow:
    """One usable row of a labels CSV: ``line`` is its 1-based line number in the file."""

    line: int
    image: str
    label: str
    split: str | None
    group: str | None = None


def csv_header(data: bytes) -> list[str] | None:
    """The lower-cased column names of a CSV's first line, or None when it is not UTF-8 text."""
    first = data.split(b"\n", 1)[0]
    try:
        line = first.decode("utf-8-sig").strip("\r")
    except UnicodeDecodeError:
        return None
    return [name.strip().lower() for name in line.split(_delimiter(line))]


def parse_label_csv(
    data: bytes, *, entry: str, columns: LabelColumns, log: ProblemLog
) -> list[LabelRow] | None:
    """Rows of a labels CSV (``,``, ``;`` or tab separated, UTF-8 with or without BOM).

    Every defect is logged against ``entry:<line>``: non-UTF-8 bytes, broken quoting, rows with
    the wrong number of fields, missing labels, unknown split names. Returns None when the file
    cannot be read at all (encoding, header), else the rows that are usable.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        log.error(
            f"{entry}:{line}",
            ProblemCode.manifest_encoding,
            f"byte 0x{data[exc.start]:02x} on line {line} is not UTF-8; save the CSV as UTF-8",
        )
        return None
    first_line = text.split("\n", 1)[0].strip("\r")
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter=_delimiter(first_line), strict=True
    )
    try:
        header = [name.strip().lower() for name in next(reader, [])]
    except csv.Error as exc:
        log.error(f"{entry}:1", ProblemCode.manifest_malformed, f"unreadable header: {exc}")
        return None
    positions = _column_positions(header, columns, entry, log)
    if positions is None:
        return None
    rows: list[LabelRow] = []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            log.error(
                f"{entry}:{reader.line_num}",
                ProblemCode.manifest_malformed,
                f"line {reader.line_num} is not valid CSV ({exc}); check its quotes",
            )
            return None
        row = _label_row(fields, reader.line_num, len(header), positions, entry, log)
        if row is not None:
            rows.append(row)
    return rows


def _delimiter(header_line: str) -> str:
    # Spreadsheets in many locales export ';' or tabs; the header line tells which one.
    return max(_DELIMITERS, key=header_line.count)


def _column_positions(
    header: list[str], columns: LabelColumns, entry: str, log: ProblemLog
) -> tuple[int, int, int | None, int | None] | None:
    found = {name: i for i, name in enumerate(header) if name}
    missing = [c for c in (columns.image, columns.label) if c.lower() not in found]
    if missing:
        log.error(
            f"{entry}:1",
            ProblemCode.manifest_malformed,
            f"the header has no column {' or '.join(map(repr, missing))} (columns: {header}); "
            "rename the columns or set image_column/label_column in the upload",
        )
        return None
    group_at = next((found[g.lower()] for g in columns.group if g.lower() in found), None)
    return (
        found[columns.image.lower()],
        found[columns.label.lower()],
        found.get(columns.split.lower()),
        group_at,
    )


def _label_row(
    fields: list[str],
    line: int,
    width: int,
    positions: tuple[int, int, int | None, int | None],
    entry: str,
    log: ProblemLog,
) -> LabelRow | None:
    if not any(field.strip() for field in fields):
        return None  # blank lines are common at the end of exported files
    where = f"{entry}:{line}"
    if len(fields) != width:
        log.error(
            where,
            ProblemCode.manifest_malformed,
            f"line {line} has {len(fields)} fields, the header has {width}",
        )
        return None
    image_at, label_at, split_at, group_at = positions
    image, label = fields[image_at].strip(), fields[label_at].strip()
    if not image:
        log.error(where, ProblemCode.manifest_malformed, f"line {line} names no image")
        return None
    if not label:
        log.error(where, ProblemCode.missing_label, f"line {line} ({image}) has no label")
        return None
    split = None
    if split_at is not None and fields[split_at].strip():
        split = normalize_split(fields[split_at])
        if split is None:
            log.error(
                where,
                ProblemCode.invalid_split,
                f"line {line} ({image}) has split {fields[split_at].strip()!r}; "
                "use train, val or test",
            )
            return None
    group = fields[group_at].strip() or None if group_at is not None else None
    return LabelRow(line, image, label, split, group)

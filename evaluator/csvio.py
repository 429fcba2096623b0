"""Reading untrusted CSV files: encoding and delimiter detection, located errors; safe CSV writing."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ValidationError


@dataclass
class CsvTable:
    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line number of the row's start, cells)
    encoding: str
    delimiter: str
    warnings: list[str] = field(default_factory=list)


def read_text(path: Path) -> tuple[str, str, list[str]]:
    raw = Path(path).read_bytes()
    for enc in ("utf-8-sig",):
        try:
            return raw.decode(enc), "utf-8", []
        except UnicodeDecodeError:
            pass
    # A UTF-8 byte-order mark in front of a cp1252 body (a file saved by several tools) is not text.
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("cp1252")
        enc = "cp1252"
    except UnicodeDecodeError:
        text, enc = raw.decode("latin-1"), "latin-1"
    return text, enc, [f"{path}: not UTF-8; read as {enc}. Save the file as UTF-8 to be sure of every character."]


def read_csv(path: Path) -> CsvTable:
    path = Path(path)
    if not path.exists():
        raise ValidationError(f"{path}: file not found")
    text, enc, warnings = read_text(path)
    if not text.strip():
        raise ValidationError(f"{path}: the file is empty; it needs a header row and data rows")
    sample = text[:20000]
    try:
        delim = csv.Sniffer().sniff(sample.split("\n", 1)[0] + "\n", delimiters=",;\t|").delimiter
    except csv.Error:
        delim = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = [h.strip() for h in next(reader)]
        rows = []
        line = reader.line_num
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((line + 1, cells))
            line = reader.line_num
    except csv.Error as e:
        raise ValidationError(f"{path}:{reader.line_num}: malformed CSV ({e}); check the quoting on that line") from e
    return CsvTable(path, header, rows, enc, delim, warnings)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value) -> str:
    """Neutralises spreadsheet formula injection: a leading quote makes the cell plain text."""
    s = "" if value is None else str(value)
    if s.startswith(_FORMULA_START):
        # Plain negative numbers are data, not formulas.
        try:
            float(s)
            return s
        except ValueError:
            return "'" + s
    return s


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([safe_cell(c) for c in r])

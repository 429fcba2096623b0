"""Reading untrusted CSV files: encoding and delimiter detection, located errors; safe CSV writing."""

from __future__ import annotations

import codecs
import csv
import io
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataValidationError


@dataclass
class CsvTable:
    path: Path
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line number of the row's start, cells)
    encoding: str
    delimiter: str
    warnings: list[str] = field(default_factory=list)


# Longest BOM first: UTF-32-LE's BOM begins with UTF-16-LE's.
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]


def read_text(path: Path) -> tuple[str, str, list[str]]:
    raw = Path(path).read_bytes()
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(enc), enc, []
            except UnicodeDecodeError as e:
                raise DataValidationError(
                    f"{path}: starts with a {enc.upper()} byte-order mark but byte {e.start} is not {enc.upper()}; "
                    "save the file as UTF-8"
                ) from e
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
        raise DataValidationError(f"{path}: file not found")
    text, enc, warnings = read_text(path)
    if "\x00" in text:
        # NUL bytes are never text (a file of another encoding, a binary pasted in): dropped, so that an answer of
        # NULs counts as empty and none reaches an output or the terminal.
        warnings.append(f"{path}: {text.count(chr(0))} NUL bytes removed; is the file really {enc} text?")
        text = text.replace("\x00", "")
    if not text.strip():
        raise DataValidationError(f"{path}: the file is empty; it needs a header row and data rows")
    sample = text[:20000]
    try:
        delim = csv.Sniffer().sniff(sample.split("\n", 1)[0] + "\n", delimiters=",;\t|").delimiter
    except csv.Error:
        delim = ","
    # The csv module refuses fields over 128 KiB by default, which refused a whole file for one long answer; the
    # length of an answer is checked per row instead (--max-chars), with its line number.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    lines = io.StringIO(text, newline="").readlines()  # the physical lines, split as the reader splits them
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = [h.strip() for h in next(reader)]
        rows = []
        line = reader.line_num
        for cells in reader:
            if any(c.strip() for c in cells):
                rows.append((line + 1, cells))
                if reader.line_num > line + 1:
                    warnings += _swallowed_rows(path, lines, line + 1, reader.line_num, len(header), delim)
            line = reader.line_num
    except csv.Error as e:
        raise DataValidationError(
            f"{path}:{reader.line_num}: malformed CSV ({e}); check the quoting on that line"
        ) from e
    return CsvTable(path, header, rows, enc, delim, warnings)


def _swallowed_rows(path: Path, lines: list[str], first: int, last: int, width: int, delim: str) -> list[str]:
    """A record spanning lines `first`..`last` is suspect when one of its later lines reads, on its own, as a full
    row: a quote left open on an earlier line then swallowed that row into a cell."""
    for n in range(first + 1, last + 1):
        piece = lines[n - 1].rstrip("\r\n")
        try:
            cells = next(csv.reader([piece], delimiter=delim), [])
        except csv.Error:
            continue
        if len(cells) == width and cells[0].strip():
            return [
                f"{path}:{first}: the row starting on line {first} runs to line {last}, and line {n} looks like a row "
                "of its own: a quote opened on an earlier line may be unbalanced. Check the quotes on line "
                f"{first}; if line {n} is meant as a new row, close the quote before it."
            ]
    return []


# Full-width forms too: spreadsheets in some locales read them as the ASCII ones.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value) -> str:
    """Neutralises spreadsheet formula injection: a leading quote makes the cell plain text. NULs are dropped."""
    s = "" if value is None else str(value).replace("\x00", "")
    if s.startswith(_FORMULA_START):
        # Plain negative numbers are data, not formulas.
        try:
            float(s)
            return s
        except ValueError:
            return "'" + s
    return s


@contextmanager
def atomic_open(path: Path, newline: str | None = None) -> Iterator[io.TextIOWrapper]:
    """A text file written beside `path` and renamed over it once complete: a process killed while writing leaves
    the previous file (or none), never a partial one."""
    path = Path(path)
    # Named by process and thread (not mkstemp, whose files are private to the owner): the file keeps the usual
    # permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with atomic_open(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([safe_cell(c) for c in r])

"""Finds and loads the data folders (rubrics/, prompts/, eval_sets/) and validates them.

Search order: an explicit directory (--data-dir or EVALUATOR_DATA_DIR), the copy packaged inside the
wheel (evaluator/_data), then the source checkout. Errors name every path tried.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .errors import DataNotFoundError, DataValidationError, UnknownQuestionError
from .models import EvalSet, Question, Rubric

DATA_FOLDERS = ("rubrics", "prompts", "eval_sets")
_PACKAGE_DIR = Path(__file__).resolve().parent


def candidate_data_dirs(explicit: str | os.PathLike | None = None) -> list[Path]:
    dirs: list[Path] = []
    if explicit:
        dirs.append(Path(explicit))
    env = os.environ.get("EVALUATOR_DATA_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(_PACKAGE_DIR / "_data")
    dirs.append(_PACKAGE_DIR.parent)
    return dirs


def find_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    tried = candidate_data_dirs(explicit)
    # An explicit choice is never silently replaced by another location.
    if explicit or os.environ.get("EVALUATOR_DATA_DIR"):
        tried = tried[:1]
    for d in tried:
        if all((d / f).is_dir() for f in DATA_FOLDERS):
            return d
    listing = "\n".join(f"  - {d}" for d in tried)
    raise DataNotFoundError(
        f"could not find the data folders {', '.join(DATA_FOLDERS)} in any of:\n{listing}\n"
        "Pass --data-dir DIR (or set EVALUATOR_DATA_DIR) to a folder that holds them."
    )


def file_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- YAML with line numbers


def _node_at(node: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """Walks a composed YAML node along a pydantic error location; returns the deepest node found."""
    best = node
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == str(part)), None)
            if nxt is None:
                # The key itself may be the problem (unknown key): point at it.
                key = next((k for k, _ in node.value if k.value == str(part)), None)
                return key or best
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return best
        best = node
    return best


def _question_id_at(data: Any, loc: tuple) -> str | None:
    if len(loc) >= 2 and loc[0] == "questions" and isinstance(loc[1], int):
        try:
            return str(data["questions"][loc[1]].get("id"))
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
    return None


def _located_problems(path: Path, text: str, data: Any, err: pydantic.ValidationError) -> list[str]:
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        root = None
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        node = _node_at(root, loc) if root is not None else None
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        qid = _question_id_at(data, loc)
        where = f"{path}{line}"
        if qid:
            where += f" (question {qid})"
        field_path = ".".join(str(p) for p in loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}' (check the spelling; see the JSON Schema in schemas/)"
        problems.append(f"{where}: {field_path}: {msg}")
    return problems


def load_yaml(path: Path) -> tuple[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataValidationError(f"{path}: not UTF-8 text ({e}); save the file as UTF-8") from e
    try:
        # libyaml's loader when present: the bank parses several times faster.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise DataValidationError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from e
    return text, data


def parse_model(path: Path, model: type[pydantic.BaseModel]) -> tuple[Any, str]:
    text, data = load_yaml(path)
    try:
        return model.model_validate(data), text
    except pydantic.ValidationError as e:
        raise DataValidationError(
            f"{path}: {len(e.errors())} problem(s)", _located_problems(path, text, data, e)
        ) from e


# ---------------------------------------------------------------- the loaded data


@dataclass
class LoadedRubric:
    rubric: Rubric
    path: Path
    hash: str


@dataclass
class LoadedEvalSet:
    eval_set: EvalSet
    path: Path
    hash: str

    @cached_property
    def by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.eval_set.questions}

    def rubric_id_for(self, q: Question) -> str:
        return q.rubric or self.eval_set.rubric


REDFLAG_SET_SUFFIX = ".redflags"


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


@dataclass
class Resources:
    root: Path
    _rubrics: dict[str, LoadedRubric] | None = field(default=None, repr=False)

    @classmethod
    def locate(cls, data_dir: str | os.PathLike | None = None) -> Resources:
        return cls(find_data_dir(data_dir))

    @property
    def prompts_dir(self) -> Path:
        return self.root / "prompts"

    def rubrics(self) -> dict[str, LoadedRubric]:
        if self._rubrics is None:
            found: dict[str, LoadedRubric] = {}
            for p in _yaml_files(self.root / "rubrics"):
                rubric, text = parse_model(p, Rubric)
                if rubric.id in found:
                    raise DataValidationError(f"{p}: rubric id '{rubric.id}' is also used by {found[rubric.id].path}")
                if rubric.calibration and not (p.parent / rubric.calibration).is_file():
                    raise DataValidationError(
                        f"{p}: calibration file {p.parent / rubric.calibration} not found; put the mapping from "
                        "`evaluator calibrate` there or remove the calibration key"
                    )
                # The shipped mapping is part of the rubric: refitting it changes the hash (and the cache key).
                extra = (p.parent / rubric.calibration).read_text(encoding="utf-8") if rubric.calibration else ""
                found[rubric.id] = LoadedRubric(rubric, p, file_hash(text + extra))
            self._rubrics = found
        return self._rubrics

    def rubric(self, rubric_id: str) -> LoadedRubric:
        rubrics = self.rubrics()
        if rubric_id not in rubrics:
            raise DataValidationError(
                f"rubric '{rubric_id}' does not exist; known rubrics: {', '.join(sorted(rubrics)) or 'none'} "
                f"(in {self.root / 'rubrics'})"
            )
        return rubrics[rubric_id]

    def rubric_for(self, les: LoadedEvalSet, q: Question) -> LoadedRubric:
        """The rubric a question of this eval set is graded with (its own, else the set's)."""
        return self.rubric(les.rubric_id_for(q))

    def eval_set_paths(self) -> list[Path]:
        # NAME.redflags.yaml beside a bank is its red-flag test set (answers, not questions), not an eval set.
        return [p for p in _yaml_files(self.root / "eval_sets") if not p.stem.endswith(REDFLAG_SET_SUFFIX)]

    def eval_set_path(self, name: str) -> Path:
        p = Path(name)
        if p.suffix in (".yaml", ".yml") and p.exists():
            return p
        for cand in self.eval_set_paths():
            if cand.stem == name:
                return cand
        known = ", ".join(c.stem for c in self.eval_set_paths())
        raise DataNotFoundError(f"no eval set named '{name}' in {self.root / 'eval_sets'} (known: {known})")

    def load_eval_set(self, name_or_path: str | Path, rubrics: dict[str, LoadedRubric] | None = None) -> LoadedEvalSet:
        path = self.eval_set_path(str(name_or_path))
        es, text = parse_model(path, EvalSet)
        validate_eval_set(path, text, es, rubrics if rubrics is not None else self.rubrics())
        return LoadedEvalSet(es, path, file_hash(text))

    def find_question(self, question_id: str, eval_set: str | None = None) -> tuple[LoadedEvalSet, Question]:
        names = [eval_set] if eval_set else [p.stem for p in self.eval_set_paths()]
        all_ids: list[str] = []
        for name in names:
            les = self.load_eval_set(name)
            if question_id in les.by_id:
                return les, les.by_id[question_id]
            all_ids.extend(les.by_id)
        raise UnknownQuestionError(unknown_question_message(question_id, all_ids))


def unknown_question_message(question_id: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(question_id, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown question id '{question_id}'.{hint} List the ids with `evaluator questions list`."


def validate_eval_set(path: Path, text: str, es: EvalSet, rubrics: dict[str, LoadedRubric]) -> None:
    """Checks that need more than one question or file: duplicate ids, rubric references."""
    ids = [q.id for q in es.questions]
    bad_rubric = [i for i, q in enumerate(es.questions) if (q.rubric or es.rubric) not in rubrics]
    if len(set(ids)) == len(ids) and not bad_rubric and es.rubric in rubrics:
        return
    # Only now compose the YAML node tree (pure Python, slow on a large bank) to give line numbers.
    root = yaml.compose(text)
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, q in enumerate(es.questions):
        node = _node_at(root, ("questions", i))
        line = node.start_mark.line + 1 if node is not None else 0
        if q.id in seen:
            problems.append(f"{path}:{line} (question {q.id}): duplicate id, first used at line {seen[q.id]}")
        else:
            seen[q.id] = line
        if i in bad_rubric:
            problems.append(
                f"{path}:{line} (question {q.id}): rubric '{q.rubric or es.rubric}' does not exist "
                f"(known: {', '.join(sorted(rubrics)) or 'none'})"
            )
    if es.rubric not in rubrics:
        problems.append(f"{path}: rubric '{es.rubric}' does not exist (known: {', '.join(sorted(rubrics))})")
    raise DataValidationError(f"{path}: {len(problems)} problem(s)", sorted(set(problems)))


def export_schemas(rubric_dir: Path, eval_set_dir: Path | None = None) -> list[Path]:
    """Writes JSON Schemas for the rubric and eval-set files so editors can validate them."""
    out = []
    for folder, name, model in ((rubric_dir, "rubric", Rubric), (eval_set_dir or rubric_dir, "eval_set", EvalSet)):
        folder.mkdir(parents=True, exist_ok=True)
        p = folder / f"{name}.schema.json"
        schema = model.model_json_schema(by_alias=True)
        p.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
        out.append(p)
    return out

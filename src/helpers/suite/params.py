"""Notebook parameters and presets: parse, layer, validate -- all before anything executes.

Why this exists: papermill injects whatever it is given and silently ignores keys a notebook
does not declare, so a typo in a preset (`epoch: 3` for `epochs`) would run the whole suite
with the default. Here every key must be declared in some selected notebook's `parameters`
cell, and its value must have the declared literal's type.

Layering, later wins:  params/<preset>.yml  <  --params FILE ...  <  --set key=value ...
Reserved preset key `notebooks`: the stage stems to run, in order (absent = all, sorted).
`run_dir` and `preset` are declared by every notebook but always injected by the runner.
"""
from __future__ import annotations

import ast
import difflib
import io
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

RESERVED = "notebooks"  # runner key: which stages, in order
RUNNER_INJECTED = ("run_dir", "preset")  # every notebook declares them; only the runner sets them


class ParamError(ValueError):
    """A parameter problem found before executing anything; the message says how to fix it."""


@dataclass(frozen=True)
class Param:
    """One `name = literal  # help` line of a notebook's parameters cell."""
    name: str
    default: Any
    help: str = ""


@dataclass
class NotebookSpec:
    """A notebook stage: its stem (= stage name), file, and declared parameters."""
    stem: str
    path: Path
    params: dict[str, Param]
    parameters_cell: int  # index of the parameters cell (papermill injects right after it)


@dataclass
class Value:
    """A layered parameter value and where it came from (for error messages and run.json)."""
    value: Any
    source: str  # e.g. "params/smoke.yml", "--params extra.yml", "--set"
    raw: str | None = None  # the --set text, so `--set name=007` can stay a string


@dataclass
class Plan:
    """Everything validated: which stages run and what each receives."""
    preset: str
    values: dict[str, Value]
    notebooks: list[NotebookSpec]  # selected stages, in run order
    per_notebook: dict[str, dict[str, Any]] = field(default_factory=dict)  # stem -> injected


# ---------------------------------------------------------------- notebook parameters cells
def _comments_by_line(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except tokenize.TokenError:
        pass
    return out


def parse_parameters_cell(source: str, where: str = "<cell>") -> dict[str, Param]:
    """`name = literal  # help` lines -> Params. Anything but literal assignments is an error,
    because the runner must know every default's type without executing the notebook."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ParamError(f"{where}: parameters cell is not valid Python: {e}") from None
    comments = _comments_by_line(source)
    params: dict[str, Param] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring / bare string is harmless
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
            node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None)
        if not isinstance(target, ast.Name):
            raise ParamError(f"{where}, line {node.lineno}: the parameters cell may only hold "
                             f"`name = literal  # comment` lines, got: {ast.unparse(node)}")
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ParamError(f"{where}, line {node.lineno}: default of '{target.id}' must be a "
                             f"Python literal (int, float, str, bool, list, dict, None), got "
                             f"`{ast.unparse(node.value)}`") from None
        help_ = comments.get(node.end_lineno) or comments.get(node.lineno) or ""
        if not help_:  # comment lines directly above
            above, ln = [], node.lineno - 1
            while ln in comments and source.splitlines()[ln - 1].lstrip().startswith("#"):
                above.insert(0, comments[ln]); ln -= 1
            help_ = " ".join(above)
        if "=" in (comments.get(node.lineno) or ""):
            # papermill's own parser then fails to read the line and silently keeps the default
            raise ParamError(f"{where}, line {node.lineno}: the help comment of '{target.id}' contains '=', "
                             f"which makes papermill ignore this parameter; reword it (e.g. ':' instead)")
        params[target.id] = Param(target.id, default, help_)
    return params


def notebook_spec(path: str | Path) -> NotebookSpec:
    """Read a notebook's parameters cell (the code cell tagged `parameters`)."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            params = parse_parameters_cell(cell.source, where=f"notebook {path.stem}")
            missing = [k for k in RUNNER_INJECTED if k not in params]
            if missing:
                raise ParamError(f"notebook {path.stem}: its parameters cell must declare "
                                 f"{', '.join(missing)} (str) -- the runner injects them")
            return NotebookSpec(path.stem, path, params, i)
    raise ParamError(f"notebook {path.stem} ({path}) has no code cell tagged 'parameters'")


def discover_notebooks(notebooks_dir: str | Path) -> list[NotebookSpec]:
    """All `notebooks/*.ipynb` in sorted order (stems are numbered by stage)."""
    paths = sorted(Path(notebooks_dir).glob("*.ipynb"))
    return [notebook_spec(p) for p in paths if not p.name.startswith(".")]


# ---------------------------------------------------------------- presets and layering
def available_presets(params_dir: str | Path) -> list[str]:
    d = Path(params_dir)
    return sorted({p.stem for p in d.glob("*.y*ml") if not p.name.startswith("_")}) if d.is_dir() else []


def preset_path(name: str, params_dir: str | Path) -> Path:
    """`params/<name>.yml` (or .yaml); a clear error listing the presets that do exist."""
    for ext in (".yml", ".yaml"):
        p = Path(params_dir) / f"{name}{ext}"
        if p.is_file():
            return p
    have = available_presets(params_dir)
    hint = difflib.get_close_matches(name, have, n=1)
    raise ParamError(f"preset '{name}' not found: no {Path(params_dir) / (name + '.yml')}. "
                     + (f"Did you mean '{hint[0]}'? " if hint else "")
                     + f"Available presets: {', '.join(have) or '(none)'}")


def load_mapping(path: str | Path) -> dict[str, Any]:
    """A flat YAML mapping (empty file = {})."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path}: must be a flat YAML mapping of key: value, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def parse_set(items: list[str]) -> dict[str, Value]:
    """`key=value` strings; values typed by YAML (`3` int, `0.1` float, `[a, b]` list, `true`)."""
    out: dict[str, Value] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ParamError(f"--set {item!r}: expected key=value")
        try:
            val = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            val = text  # not YAML -> keep the text
        out[key.strip()] = Value(val, "--set", raw=text)
    return out


def layer(preset: str, params_dir: str | Path, params_files: list | None = None,
          overrides: list[str] | dict | None = None) -> dict[str, Value]:
    """Preset, then each --params file, then --set; later wins. Records each key's source."""
    values: dict[str, Value] = {}
    path = preset_path(preset, params_dir)
    for f, label in [(path, _label(path))] + [(Path(f), f"--params {f}") for f in params_files or []]:
        if not Path(f).is_file():
            raise ParamError(f"--params {f}: file not found")
        values.update({k: Value(v, label) for k, v in load_mapping(f).items()})
    if isinstance(overrides, dict):
        values.update({k: Value(v, "--set") for k, v in overrides.items()})
    else:
        values.update(parse_set(overrides or []))
    for k in RUNNER_INJECTED:
        if k in values:
            raise ParamError(f"'{k}' (from {values[k].source}) is set by the runner; "
                             + ("use --out DIR" if k == "run_dir" else "use --preset NAME"))
    return values


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- validation
def type_ok(value: Any, default: Any) -> bool:
    """Does `value` fit the declared literal? None default = anything; int is fine for float;
    bool is never an int here (True for `epochs` is a mistake, not 1)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _typename(x: Any) -> str:
    return "None" if x is None else type(x).__name__


def select(specs: list[NotebookSpec], values: dict[str, Value]) -> list[NotebookSpec]:
    """Apply the reserved `notebooks` key (stage stems, in order)."""
    if RESERVED not in values:
        return list(specs)
    wanted, src = values[RESERVED].value, values[RESERVED].source
    if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
        raise ParamError(f"'{RESERVED}' (from {src}) must be a list of notebook stems")
    by_stem = {s.stem: s for s in specs}
    bad = [w for w in wanted if w not in by_stem]
    if bad:
        raise ParamError("; ".join(f"'{RESERVED}' (from {src}) names unknown notebook '{b}'"
                                   + _hint(b, by_stem) for b in bad)
                         + f". Notebooks: {', '.join(by_stem)}")
    return [by_stem[w] for w in wanted]


def _hint(key: str, names) -> str:
    m = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return f" (did you mean '{m[0]}'?)" if m else ""


def validate(preset: str, values: dict[str, Value], specs: list[NotebookSpec]) -> Plan:
    """Check every key against the selected notebooks; collect ALL problems into one error."""
    selected = select(specs, values)
    declared: dict[str, list[NotebookSpec]] = {}
    for s in selected:
        for k in s.params:
            if k not in RUNNER_INJECTED:
                declared.setdefault(k, []).append(s)
    problems = []
    for key, v in values.items():
        if key == RESERVED:
            continue
        if key not in declared:
            elsewhere = [s.stem for s in specs if key in s.params and s not in selected]
            if elsewhere and RESERVED in values and values[RESERVED].source != v.source:
                continue   # a later layer narrowed the selection: the preset's keys for the stages it left out go unused
            msg = f"unknown parameter '{key}' (from {v.source}): not declared by any selected notebook"
            msg += (f"; it is declared by {', '.join(elsewhere)}, which '{RESERVED}' does not select"
                    if elsewhere else _hint(key, declared))
            problems.append(msg)
            continue
        for s in declared[key]:
            default = s.params[key].default
            if isinstance(default, str) and v.raw is not None and not isinstance(v.value, str):
                v.value = v.raw  # --set name=007 for a str parameter means the text
            if not type_ok(v.value, default):
                problems.append(f"parameter '{key}' (from {v.source}) is {_typename(v.value)} "
                                f"{v.value!r}, but notebook {s.stem} declares {_typename(default)} "
                                f"(default {default!r})")
    if problems:
        keys = sorted(declared)
        raise ParamError("invalid parameters:\n  - " + "\n  - ".join(problems)
                         + f"\nValid keys for {', '.join(s.stem for s in selected) or '(no notebooks)'}: "
                         + (", ".join(keys) or "(none)") + f", plus '{RESERVED}'")
    plan = Plan(preset, values, selected)
    for s in selected:
        inj = {k: _coerce(values[k].value, s.params[k].default) for k in s.params if k in values}
        plan.per_notebook[s.stem] = inj
    return plan


def _coerce(value: Any, default: Any) -> Any:
    """int given where float declared -> float, so the notebook sees the declared type."""
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return list(value) if isinstance(value, tuple) else value


def plan_run(preset: str, notebooks_dir: str | Path, params_dir: str | Path,
             params_files: list | None = None, overrides: list[str] | dict | None = None) -> Plan:
    """Discover notebooks, layer the parameters, validate: the one call the runner needs."""
    specs = discover_notebooks(notebooks_dir)
    return validate(preset, layer(preset, params_dir, params_files, overrides), specs)

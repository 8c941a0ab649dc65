"""The site's generated pages and tables, from the code itself (a mkdocs hook, mkdocs.yml).

- ``reference/cli/<command>.md``: one page per subcommand of ``carbonbench.cli.build_parser()``
  (usage, description, a table of arguments per group); the nav's ``reference/cli/index.md``
  entry is expanded to the index and every command, so a new command gets its page and nav
  entry without an edit here;
- ``index.md``: README.md, with its ``docs/`` links made relative to the site;
- ``<!-- generated: NAME -->`` in a page: a table built from the code (``GENERATORS``);
- ``<!-- include: PATH -->`` in a page: a Markdown file of the repository (measured figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import io
import re
import shutil
import sqlite3
import textwrap
import tokenize
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
CLI_INDEX = "reference/cli/index.md"
WIDTH = 88  # usage lines, as a terminal of this width shows them


# --- the command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from carbonbench.cli import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """Command name -> (its one-line help, its parser), in the order ``carbonbench -h`` lists."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {name: (helps.get(name, ""), sub) for name, sub in action.choices.items()}


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return parser.formatter_class(prog=parser.prog, width=WIDTH)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _cell(text: str) -> str:
    """Text as one Markdown table cell: its ``code`` (or `code`) as code, nothing else in it
    read as markup."""
    parts = re.split(r"``(.+?)``|`(.+?)`", " ".join(text.split()))
    cells = []
    for i, part in enumerate(parts):
        if part is None:
            continue
        if i % 3:
            cells.append(_code(part))
        else:
            plain = html.escape(part, quote=False)
            cells.append(re.sub(r"([\\`*_\[\]|{}])", r"\\\1", plain))
    return "".join(cells)


def _code(text: str) -> str:
    return "<code>" + html.escape(text, quote=False).replace("|", "&#124;") + "</code>"


def _default(action: argparse.Action) -> str:
    if action.required:
        return "required"
    value = action.default
    if value is None or value is argparse.SUPPRESS or isinstance(action.const, bool):
        return ""
    if isinstance(action, argparse._CountAction) and value == 0:
        return ""
    if isinstance(value, list | tuple):
        return _code(" ".join(str(v) for v in value)) if value else ""
    return _code(str(value))


def _arguments_table(parser: argparse.ArgumentParser, group: argparse._ArgumentGroup) -> str:
    formatter = _formatter(parser)
    rows = []
    for action in group._group_actions:
        if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        invocation = formatter._format_action_invocation(action)
        text = formatter._expand_help(action) if action.help else ""
        notes = []
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            notes.append("one of " + ", ".join(_code(str(c)) for c in action.choices))
        if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
            notes.append("repeatable")
        cell = "; ".join(filter(None, [_cell(text), *notes]))
        default = action.default
        forms = {str(default), f"{default:g}"} if isinstance(default, int | float) else set()
        if isinstance(default, str | Path):
            forms = {str(default)}
        said = any(form in text for form in forms)  # the help says it already
        rows.append(f"| {_code(invocation)} | {cell} | {'' if said else _default(action)} |")
    if not rows:
        return ""
    return "| argument | what it does | default |\n| --- | --- | --- |\n" + "\n".join(rows)


def _exclusive(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for group in parser._mutually_exclusive_groups:
        names = [_code(a.option_strings[0]) for a in group._group_actions if a.option_strings]
        lines.append(f"At most one of {', '.join(names)}.")
    return lines


def _groups(parser: argparse.ArgumentParser, level: str = "##") -> str:
    titles = {"positional arguments": "Arguments", "options": "Options"}
    parts = []
    for group in parser._action_groups:
        table = _arguments_table(parser, group)
        if table:
            title = titles.get(group.title or "", group.title or "")
            parts.append(f"{level} {title[:1].upper()}{title[1:]}\n\n{table}")
    parts.extend(_exclusive(parser))
    return "\n\n".join(parts)


def command_page(name: str, help_text: str, parser: argparse.ArgumentParser) -> str:
    description = textwrap.dedent(parser.description or "").strip()
    return (
        f"# carbonbench {name}\n\n{help_text[:1].upper()}{help_text[1:]}.\n\n"
        f"```text\n{_usage(parser)}\n```\n\n{description}\n\n{_groups(parser)}\n\n"
        "Every command also takes the [global options](index.md#global-options); exit "
        "statuses are listed in [Exit statuses and errors](../exit-statuses.md).\n"
    )


def commands_table() -> str:
    """The top-level usage, the commands with their pages, and the global options."""
    parser = _parser()
    commands = _subcommands(parser)
    table = "\n".join(f"| [`{n}`]({n}.md) | {_cell(h)} |" for n, (h, _) in commands.items())
    return (
        f"```text\n{_usage(parser)}\n```\n\n{parser.description}\n\n"
        f"| command | what it does |\n| --- | --- |\n{table}\n\n"
        "## Global options\n\nGiven before the command, as in `carbonbench -v run`.\n\n"
        f"{_arguments_table(parser, parser._optionals)}"
    )


def _expand_nav(nav: Any, entries: list[dict[str, str]]) -> Any:
    """The nav with its ``reference/cli/index.md`` entry replaced by a section of commands."""
    if isinstance(nav, list):
        return [_expand_nav(item, entries) for item in nav]
    if isinstance(nav, dict):
        return {k: entries if v == CLI_INDEX else _expand_nav(v, entries) for k, v in nav.items()}
    return nav


# --- fields of the code's records -------------------------------------------------------------


def _comments(cls: type) -> tuple[dict[str, str], dict[str, str]]:
    """A dataclass's comments in its source: field -> the comment on its line, and field -> the
    comment lines just above it (a heading for the fields that follow)."""
    import inspect

    source = textwrap.dedent(inspect.getsource(cls))
    on_line: dict[int, str] = {}
    alone: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            before = token.line[: token.start[1]]
            (alone if not before.strip() else on_line)[token.start[0]] = text
    trailing: dict[str, str] = {}
    above: dict[str, str] = {}
    for number, line in enumerate(source.splitlines(), 1):
        match = re.match(r"    (\w+):", line)
        if not match:
            continue
        name = match.group(1)
        if number in on_line:
            trailing[name] = on_line[number]
        lines, n = [], number - 1
        while n in alone:
            lines.insert(0, alone[n])
            n -= 1
        if lines:
            above[name] = " ".join(lines)
    return trailing, above


def _value(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return f"{type(value).__name__}()"
    return repr(value)


def fields_table(cls: type, *, defaults: bool = True) -> str:
    trailing, above = _comments(cls)
    head = "| field | type | default | notes |\n| --- | --- | --- | --- |"
    rows = [head if defaults else "| field | type | notes |\n| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.name in above:
            rows.append(f"| *{_cell(above[f.name])}* |" + " |" * (3 if defaults else 2))
        if f.default is not dataclasses.MISSING:
            default = _code(_value(f.default))
        elif f.default_factory is not dataclasses.MISSING:
            default = _code(_value(f.default_factory()))
        else:
            default = "required"
        kind = _code(str(f.type))
        note = _cell(trailing.get(f.name, ""))
        if defaults:
            rows.append(f"| `{f.name}` | {kind} | {default} | {note} |")
        else:
            rows.append(f"| `{f.name}` | {kind} | {note} |")
    return "\n".join(rows)


# --- suites -----------------------------------------------------------------------------------


def _suite_module():
    from carbonbench.suites import suite

    return suite


def _example_toml() -> str:
    doc = _suite_module().__doc__ or ""
    return re.search(r"```toml\n(.*?)```", doc, re.S).group(1)


def _example_notes() -> dict[tuple[str, str], str]:
    """(table, key) -> the comment on the key's line in the module's example, with the
    comment lines continuing it; keys shown commented out count too."""
    notes: dict[tuple[str, str], str] = {}
    table, last = "", None
    for line in _example_toml().splitlines():
        header = re.match(r"\[(\w+)\]", line)
        if header:
            table, last = header.group(1), None
            continue
        entry = re.match(r"#?\s*(\w+) = [^#]*(?:#\s*(.*))?$", line)
        if entry and not line.startswith(" "):
            last = (table, entry.group(1))
            notes[last] = (entry.group(2) or "").strip()
        elif last and re.match(r"\s+#", line):
            notes[last] = f"{notes[last]} {line.strip().lstrip('#').strip()}".strip()
    return notes


def _toml(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return _code(f'"{value}"')
    if isinstance(value, list):
        shown = [v for v in value if v is not None]
        return _code("[" + ", ".join(_toml_literal(v) for v in shown) + "]") if shown else ""
    return _code(_toml_literal(value))


def _toml_literal(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def suite_table(table: str) -> str:
    suite = _suite_module()
    cls = {"measure": suite.Measure, "target": suite.Target, "carbon": suite.Carbon}[table]
    notes = _example_notes()
    rows = ["| key | type | default | notes |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        default = "not set" if f.default is None else _toml(f.default)
        note = _cell(notes.get((table, f.name), ""))
        rows.append(f"| `{f.name}` | {_code(str(f.type))} | {default} | {note} |")
    return "\n".join(rows)


def matrix_table() -> str:
    suite = _suite_module()
    notes = _example_notes()
    rows = ["| key | type | valid values | default | notes |", "| --- | --- | --- | --- | --- |"]
    for key, (kind, choices) in suite.MATRIX.items():
        values = choices() if callable(choices) else choices
        valid = ", ".join(_code(v) for v in values) if values else ""
        if key in suite.MATRIX_DEFAULTS:
            default = _toml(suite.MATRIX_DEFAULTS[key]) or "not set"
        else:
            default = "required"
        note = _cell(notes.get(("matrix", key), ""))
        rows.append(f"| `{key}` | list of {_code(kind.__name__)} | {valid} | {default} | {note} |")
    return "\n".join(rows)


def architectures_list() -> str:
    from carbonbench.models import ARCHITECTURES

    return ", ".join(f"`{name}`" for name in ARCHITECTURES)


def thresholds_list() -> str:
    from carbonbench.suites import thresholds

    noisy = ", ".join(f"`{m}`" for m in thresholds.STATISTICAL)
    exact = ", ".join(f"`{m}`" for m in thresholds.EXACT)
    return (
        f"Metrics judged statistically: {noisy}. Judged exactly (any difference counts): "
        f"{exact}. A metric without a threshold takes {thresholds.DEFAULT_THRESHOLD:g} "
        f"({thresholds.DEFAULT_THRESHOLD:.0%})."
    )


def builtin_suites() -> str:
    suite = _suite_module()
    parts = ["| suite | cases | what it is |\n| --- | ---: | --- |"]
    files = []
    for name in suite.BUILTIN:
        loaded = suite.load(name)
        parts.append(f"| `{name}` | {len(loaded.cases)} | {_cell(loaded.description)} |")
        body = textwrap.indent(loaded.text.strip(), "    ")
        files.append(f'??? note "{name}.toml"\n\n    ```toml\n{body}\n    ```')
    return "\n".join(parts) + "\n\n" + "\n\n".join(files)


# --- the store --------------------------------------------------------------------------------


def store_tables() -> str:
    """The SQLite schema the migrations build, read back from a database built with them."""
    from carbonbench.results import store

    db = sqlite3.connect(":memory:")
    for migration in store.MIGRATIONS:
        for statement in migration.split(";"):
            if statement.strip():
                db.execute(statement)
    parts = [f"Schema version {store.SCHEMA_VERSION} (`PRAGMA user_version`)."]
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for name in names:
        if name.startswith("sqlite_"):
            continue
        columns = db.execute(f"PRAGMA table_info({name})").fetchall()
        cells = ", ".join(f"`{c[1]}` {c[2]}" for c in columns)
        parts.append(f"- `{name}`: {cells}")
    return "\n".join(parts)


def _record(module: str, name: str) -> Callable[[], str]:
    def table() -> str:
        import importlib

        return fields_table(getattr(importlib.import_module(module), name))

    return table


GENERATORS: dict[str, Callable[[], str]] = {
    "commands": commands_table,
    "suite-example": lambda: f"```toml\n{_example_toml()}```",
    "suite-matrix": matrix_table,
    "suite-measure": lambda: suite_table("measure"),
    "suite-target": lambda: suite_table("target"),
    "suite-carbon": lambda: suite_table("carbon"),
    "suite-thresholds": thresholds_list,
    "suite-builtin": builtin_suites,
    "architectures": architectures_list,
    "store-tables": store_tables,
    "result-row": _record("carbonbench.results.store", "ResultRow"),
    "run-record": _record("carbonbench.results.store", "RunRecord"),
    "run-metadata": _record("carbonbench.results.metadata", "RunMetadata"),
    "stored-options": _record("carbonbench.results.metadata", "StoredOptions"),
    "sampler-cost": _record("carbonbench.results.metadata", "SamplerCost"),
    "process": _record("carbonbench.results.metadata", "Process"),
    "ab-tag": _record("carbonbench.results.metadata", "AbTag"),
    "sweep": _record("carbonbench.results.metadata", "Sweep"),
}


def _include(path: str) -> str:
    """A Markdown file of the repository under the page's own heading: its title dropped, its
    other headings one level down."""
    text = (ROOT / path).read_text(encoding="utf-8")
    text = re.sub(r"\A# .*\n", "", text)
    return re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M).strip()


def results_files() -> str:
    folder = ROOT / "benchmarks" / "results"
    rows = ["| file | size |", "| --- | ---: |"]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
        rows.append(f"| `{path.relative_to(ROOT)}` | {shown} |")
    return "\n".join(rows)


GENERATORS["results-files"] = results_files


# --- the package, as mkdocstrings reads it ---------------------------------------------------


def package_tree() -> Path:
    """``build/docs-api/carbonbench``: the package's folders as one tree of symbolic links,
    for mkdocstrings (``paths`` in mkdocs.yml). Its loader reads source files and finds a
    package by its folder's name, but ``carbonbench`` is ``bench/``, ``carbonbench.models``
    ``models/`` and ``carbonbench.reports`` ``reports/`` (``[tool.setuptools.package-dir]``)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = pyproject["tool"]["setuptools"]["package-dir"]
    tree = ROOT / "build" / "docs-api"
    shutil.rmtree(tree, ignore_errors=True)
    for name in sorted(folders, key=lambda n: n.count(".")):
        target = tree.joinpath(*name.split("."))
        if target.is_symlink():  # linked as a folder of its parent: a package of its own here
            target.unlink()
        target.mkdir(parents=True)
        for entry in (ROOT / folders[name]).iterdir():
            if entry.name != "__pycache__":
                (target / entry.name).symlink_to(entry)
    return tree


# --- mkdocs events ----------------------------------------------------------------------------


def on_startup(command, dirty) -> None:
    package_tree()  # before mkdocstrings looks for its ``paths`` (in its on_config)


def on_config(config):
    commands = _subcommands(_parser())
    entries: list[Any] = [CLI_INDEX]  # the section's own page (navigation.indexes)
    entries += [{f"carbonbench {name}": f"reference/cli/{name}.md"} for name in commands]
    config["nav"] = _expand_nav(config["nav"], entries)
    return config


def on_files(files: Files, config) -> Files:
    pages = {}
    for name, (help_text, sub) in _subcommands(_parser()).items():
        pages[f"reference/cli/{name}.md"] = command_page(name, help_text, sub)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages["index.md"] = re.sub(r"\]\(docs/", "](", readme)
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    def generated(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"{page.file.src_uri}: no generated table {name!r}")
        return GENERATORS[name]()

    markdown = re.sub(r"<!-- generated: ([\w-]+) -->", generated, markdown)
    return re.sub(r"<!-- include: (\S+) -->", lambda m: _include(m.group(1)), markdown)

"""The documentation names only settings and commands that exist, and documents every setting.

* ``docs/configuration.md``: every variable in its tables (first column, one per row) is a field of
  :class:`orderbot.config.Settings`, with the default the code has; every field has a row.
* ``.env.example`` sets exactly the settings, no more, no fewer.
* README.md and ``docs/*.md``: every ``orderbot ...`` command written as code (an inline code span
  or a line of a fenced block) is a command of the Typer app, sub-commands and ``--options`` too;
  and every command of the app is named somewhere.
* Links between the pages lead to a page and a heading that exist; the source files the docs name
  exist (checked once the layout of DESIGN.md is merged: the docs name its modules).

Each check reports every problem at once, by file and line, so a branch that adds a setting or a
command sees exactly which document to update. The ``..._is_caught`` tests feed the checkers
made-up settings, commands, options, links and files, to show that they fail when a document
goes stale.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from orderbot.cli import app
from orderbot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# -- settings --------------------------------------------------------------------------------

VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*)`")


@dataclass(frozen=True)
class Row:
    """One row of a settings table: the variable, its documented default (no backticks), where."""

    variable: str
    default: str
    line: int


def setting_rows(text: str) -> Iterator[Row]:
    """The rows of every ``| variable | default | meaning |`` table in ``text``."""
    in_table = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            in_table = False
            continue
        # A pipe escaped as \| belongs to its cell.
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if cells[0] == "variable":
            in_table = True
            continue
        if not in_table or set(cells[0]) <= set("-: "):
            continue
        for name in VARIABLE.findall(cells[0]):
            yield Row(name, cells[1].replace("`", "").strip() if len(cells) > 1 else "", number)


def documented_default(value: object) -> str:
    """How a default of :class:`Settings` is written in the table (unset = an empty cell)."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_problems(text: str, where: str) -> list[str]:
    """What ``text`` (a settings page) gets wrong about :class:`Settings`, one line each."""
    fields = {name.upper(): info.default for name, info in Settings.model_fields.items()}
    problems: list[str] = []
    seen: set[str] = set()
    for row in setting_rows(text):
        seen.add(row.variable)
        if row.variable not in fields:
            problems.append(
                f"{where}:{row.line}: `{row.variable}` is not a setting "
                "(no such field in orderbot.config.Settings): remove the row or add the field"
            )
        elif row.default != documented_default(fields[row.variable]):
            problems.append(
                f"{where}:{row.line}: `{row.variable}` defaults to "
                f"{documented_default(fields[row.variable])!r} in orderbot.config.Settings, "
                f"the table says {row.default!r}"
            )
    problems.extend(
        f"{where}: no table row for the setting `{name}` (field of orderbot.config.Settings)"
        for name in sorted(set(fields) - seen)
    )
    return problems


def env_example_problems(text: str, where: str) -> list[str]:
    """What ``text`` (an ``.env`` file) sets that is not a setting, and which settings it lacks."""
    fields = {name.upper() for name in Settings.model_fields}
    problems: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        found = re.match(r"([A-Z][A-Z0-9_]*)=", line)
        if found is None:
            continue
        seen.add(found.group(1))
        if found.group(1) not in fields:
            problems.append(f"{where}:{number}: `{found.group(1)}` is not a setting")
    problems.extend(f"{where}: no line for the setting `{name}`" for name in sorted(fields - seen))
    return problems


def test_configuration_documents_every_setting_and_nothing_else() -> None:
    problems = settings_problems(CONFIGURATION.read_text(), "docs/configuration.md")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_env_example_sets_every_setting_and_nothing_else() -> None:
    problems = env_example_problems((ROOT / ".env.example").read_text(), ".env.example")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# -- commands --------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# `orderbot` as a command: at the start, after a space or a path (.venv/bin/orderbot).
INVOCATION = re.compile(r"(?:^|(?<=[\s/]))orderbot[ \t]+")
WORD = re.compile(r"[a-z][a-z0-9-]*(?:[|/][a-z][a-z0-9-]*)*")
# A shell command line ends at these; a comment starts at #.
END = {"&&", "||", ";", "|", "#", "\\"}


@dataclass(frozen=True)
class Invocation:
    """``orderbot`` and what follows it in one piece of code, and where it was found."""

    words: tuple[str, ...]
    where: str


def code_pieces(text: str) -> Iterator[tuple[int, str]]:
    """(line number, code) for every line of a fenced block and every inline code span."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            yield number, line
        else:
            for span in CODE_SPAN.findall(line):
                yield number, span


def invocations(text: str, where: str) -> Iterator[Invocation]:
    """Every ``orderbot ...`` written as code in ``text``."""
    for number, code in code_pieces(text):
        for found in INVOCATION.finditer(code):
            # Markdown tables escape a pipe inside code as \|: here it separates alternatives.
            words = code[found.end() :].replace("\\|", " ").split()
            kept: list[str] = []
            for word in words:
                if word in END or word.startswith("#"):
                    break
                kept.append(word)
            yield Invocation(tuple(kept), f"{where}:{number}: `{code.strip()}`")


def command_problems(invocation: Invocation, root: Any) -> list[str]:
    """What ``invocation`` names that the CLI does not have: a command, a sub-command, an option.

    Words are followed down the command groups; at a command that is not a group the rest are
    its arguments and options. ``a|b`` (or ``a/b``) names each of ``a`` and ``b``.
    """
    problems: list[str] = []
    commands: list[tuple[str, Any]] = [("orderbot", root)]
    words = list(invocation.words)
    while words and WORD.fullmatch(words[0]) and is_group(commands[0][1]):
        word = words.pop(0)
        following: list[tuple[str, Any]] = []
        for path, group in commands:
            for name in re.split(r"[|/]", word):
                command = group.commands.get(name)
                if command is None:
                    problems.append(
                        f"{invocation.where}: `{path} {name}` is not a command "
                        f"(`{path}` has: {', '.join(sorted(group.commands))})"
                    )
                else:
                    following.append((f"{path} {name}", command))
        if not following:
            return problems
        commands = following
    for word in words:
        option = word.strip("[]()").split("=")[0]
        if not option.startswith("--") or option == "--help":
            continue
        for path, command in commands:
            known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
            if option not in known:
                problems.append(
                    f"{invocation.where}: `{path}` has no option `{option}` "
                    f"(it has: {', '.join(sorted(known)) or 'none'})"
                )
    return problems


def cli() -> Any:
    """The command tree of the Typer app (click's, as vendored by Typer: typed loosely)."""
    return typer.main.get_command(app)


def is_group(command: Any) -> bool:
    return hasattr(command, "commands")


def test_every_command_in_the_docs_exists() -> None:
    root = cli()
    problems: list[str] = []
    named = 0
    for document in DOCUMENTS:
        where = str(document.relative_to(ROOT))
        for invocation in invocations(document.read_text(), where):
            named += 1
            problems.extend(command_problems(invocation, root))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    assert named > 20, "the checker found almost no commands: is the pattern broken?"


def test_the_docs_name_every_command() -> None:
    """The other way round: every command the CLI has is named somewhere in the docs."""
    named: set[str] = set()
    for document in DOCUMENTS:
        for invocation in invocations(document.read_text(), document.name):
            path = "orderbot"
            for word in invocation.words:
                if not WORD.fullmatch(word):
                    break
                for name in re.split(r"[|/]", word):
                    named.add(f"{path} {name}")
                path = f"{path} {re.split(r'[|/]', word)[0]}"
    missing = sorted(leaf for leaf in leaves(cli(), "orderbot") if leaf not in named)
    if missing:
        pytest.fail(
            "commands the CLI has that no document names (add them to docs/operators.md "
            "#commands): " + ", ".join(missing),
            pytrace=False,
        )


def leaves(command: Any, path: str) -> Iterator[str]:
    if is_group(command):
        for name, sub in command.commands.items():
            yield from leaves(sub, f"{path} {name}")
    else:
        yield path


# -- the checkers fail when a document goes stale --------------------------------------------


def test_a_setting_that_does_not_exist_is_caught() -> None:
    page = (
        "| variable | default | meaning |\n|---|---|---|\n"
        "| `PORT` | `3000` | the port |\n| `QUEUE_SHARDZ` | `8` | a typo |\n"
    )
    problems = settings_problems(page, "page.md")
    assert any("page.md:4: `QUEUE_SHARDZ` is not a setting" in p for p in problems), problems
    # ... and so is every real setting the page leaves out.
    assert any("`QUEUE_SHARDS`" in p and "no table row" in p for p in problems), problems
    assert not any("`PORT`" in p for p in problems), problems


def test_a_stale_default_is_caught() -> None:
    page = "| variable | default | meaning |\n|---|---|---|\n| `PORT` | `8080` | the port |\n"
    problems = settings_problems(page, "page.md")
    assert any("`PORT` defaults to '3000'" in p and "'8080'" in p for p in problems), problems


def test_an_env_file_with_an_unknown_variable_is_caught() -> None:
    problems = env_example_problems("PORT=3000\nPORTT=1\n", ".env.example")
    assert ".env.example:2: `PORTT` is not a setting" in problems
    assert ".env.example: no line for the setting `HOST`" in problems


def test_a_command_that_does_not_exist_is_caught() -> None:
    page = (
        "Run `orderbot orders list --status new` and `orderbot ordrs list`, then\n"
        "`orderbot dlq list|replay|purge` and `orderbot dlq relpay ID`.\n"
        "```sh\n.venv/bin/orderbot serve --workerz 2   # a typo\norderbot run --port 1\n```\n"
    )
    problems = [p for inv in invocations(page, "page.md") for p in command_problems(inv, cli())]
    assert len(problems) == 3, problems
    assert problems[0].startswith("page.md:1: `orderbot ordrs list`: `orderbot ordrs` is not")
    assert "`orderbot dlq relpay` is not a command" in problems[1]
    assert "page.md:4:" in problems[2]
    assert "`orderbot serve` has no option `--workerz`" in problems[2]


# -- files the docs point to -----------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")
# Code spans that name a file or folder of the repository, or a module under src/orderbot/.
REPO_PATH = re.compile(r"(?:src|tests|bench|deploy)/[\w./-]*")
MODULE_PATH = re.compile(r"[a-z_]+(?:/[a-z_]+)*(?:\.py|/)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """The anchors of a page's headings (a ``#`` inside a fenced block is not a heading)."""
    text = document.read_text()
    code = set(code_pieces(text))
    return {
        slug(line.lstrip("#"))
        for number, line in enumerate(text.splitlines(), 1)
        if line.startswith("#") and (number, line) not in code
    }


def link_problems(document: Path, root: Path) -> list[str]:
    """Links from ``document`` to a Markdown page (or a heading in one) that is not there."""
    where = str(document.relative_to(root))
    problems: list[str] = []
    for number, line in enumerate(document.read_text().splitlines(), 1):
        for target in LINK.findall(line):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            page, _, anchor = target.partition("#")
            path = (document.parent / page).resolve() if page else document
            if path.suffix != ".md":
                continue
            if not path.exists():
                problems.append(f"{where}:{number}: link to {target}: no such page")
            elif anchor and anchor not in anchors(path):
                problems.append(f"{where}:{number}: link to {target}: no heading #{anchor} there")
    return problems


def test_every_link_between_the_docs_leads_somewhere() -> None:
    problems = [p for document in DOCUMENTS for p in link_problems(document, ROOT)]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_a_link_to_a_missing_heading_is_caught(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\n## Choosing and changing QUEUE_SHARDS\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#choosing-and-changing-queue_shards) [bad](a.md#changing) [gone](c.md)\n"
    )
    assert link_problems(page, tmp_path) == [
        "b.md:1: link to a.md#changing: no heading #changing there",
        "b.md:1: link to c.md: no such page",
    ]


def path_problems(document: Path, root: Path) -> list[str]:
    """Relative links and code spans naming repository paths that do not exist under ``root``.

    A link is resolved from the document's folder; ``src/...``, ``tests/...``, ``bench/...`` and
    ``deploy/...`` from the repository; a bare module path such as ``queues/rabbitmq/inbound.py``
    or ``runtime/`` from ``src/orderbot/`` (how the docs name modules).
    """
    where = str(document.relative_to(root))
    problems: list[str] = []
    text = document.read_text()
    for number, line in enumerate(text.splitlines(), 1):
        for target in LINK.findall(line):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (document.parent / target.split("#")[0]).resolve()
            if not path.exists():
                problems.append(f"{where}:{number}: link to {target}, which does not exist")
    for number, code in code_pieces(text):
        for word in code.split():
            word = word.strip("`(),;:")
            if REPO_PATH.fullmatch(word):
                path = root / word
            elif MODULE_PATH.fullmatch(word):
                path = root / "src" / "orderbot" / word
            else:
                continue
            if not path.exists() and "*" not in word:
                problems.append(f"{where}:{number}: `{word}` does not exist ({path})")
    return problems


def test_every_file_the_docs_name_exists() -> None:
    if not (ROOT / "src" / "orderbot" / "runtime").is_dir():
        pytest.skip("the docs name the modules of the target layout (DESIGN.md); not merged yet")
    problems = [p for document in DOCUMENTS for p in path_problems(document, ROOT)]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_a_link_to_a_missing_file_is_caught(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "src" / "orderbot").mkdir(parents=True)
    (tmp_path / "src" / "orderbot" / "worker.py").touch()
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "See [the worker](../src/orderbot/worker.py), `worker.py` and [gone](../src/gone.py);\n"
        "`queues/sqlite.py` and `tests/test_nothing.py`.\n"
    )
    problems = path_problems(page, tmp_path)
    assert len(problems) == 3, problems
    assert problems[0] == "docs/page.md:1: link to ../src/gone.py, which does not exist"
    assert problems[1].startswith("docs/page.md:2: `queues/sqlite.py` does not exist")
    assert problems[2].startswith("docs/page.md:2: `tests/test_nothing.py` does not exist")

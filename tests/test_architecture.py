"""The layout's rules (DESIGN.md, "Layout"; STYLE.md rule 1), checked on the source (AST).

Each rule names what it protects: a failure here means a change broke the layout, not that the
rule should be relaxed. The checks read files; nothing is imported except in the subprocess that
measures what a package ``__init__`` loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "orderbot"


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path, ast.parse(path.read_text(), str(path))


def imports(tree: ast.AST) -> Iterator[tuple[str, ast.ImportFrom | ast.Import]]:
    """Every module a file imports, at the top or inside a function."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node
            for alias in node.names:  # `from orderbot import x` imports orderbot.x
                yield f"{node.module}.{alias.name}", node
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(rule: dict[str, tuple[str, ...]]) -> list[str]:
    """``rule``: module prefix -> module prefixes it must not import."""
    found = []
    for name, path, tree in modules():
        for owner, banned in rule.items():
            if not under(name, owner):
                continue
            for imported, node in imports(tree):
                if under(imported, *banned):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} imports {imported}")
    return sorted(set(found))


# I/O and the layers above it: the dialog is pure and sits at the bottom.
IO = (
    "asyncio",
    "socket",
    "sqlite3",
    "subprocess",
    "threading",
    "httpx",
    "aiohttp",
    "sqlalchemy",
    "alembic",
    "redis",
    "aio_pika",
    "aiormq",
    "fastapi",
    "uvicorn",
)
ABOVE_DIALOG = tuple(
    f"orderbot.{name}"
    for name in (
        "channels",
        "cli",
        "desk",
        "files",
        "queues",
        "runtime",
        "state",
        "storage",
        "web",
        "worker",
        "sender",
        "ratelimit",
        "retry",
        "metrics",
        "orders.alerts",
        "orders.repository",
    )
)
BACKENDS = (
    "orderbot.queues",
    "orderbot.state",
    "orderbot.storage",
    "orderbot.desk.sqlite",
    "orderbot.desk.postgres",
    "orderbot.desk.postgres_admin",
    "orderbot.desk.sqlite_topics",
    "orderbot.desk.redis_topics",
    "orderbot.orders.repository",
)
HEAVY = ("sqlalchemy", "alembic", "redis", "aio_pika", "aiormq", "asyncpg")


def test_the_dialog_imports_no_io_and_nothing_above_it() -> None:
    assert violations({"orderbot.dialog": IO + ABOVE_DIALOG}) == []


def test_web_does_not_import_the_dialog() -> None:
    assert violations({"orderbot.web": ("orderbot.dialog",)}) == []


def test_backends_never_import_the_front_desk_or_a_runtime() -> None:
    banned = ("orderbot.desk.front", "orderbot.runtime", "orderbot.cli", "orderbot.web")
    assert violations(dict.fromkeys(BACKENDS, banned)) == []


def test_storage_and_queues_know_nothing_of_orders_desk_or_dialog() -> None:
    banned = ("orderbot.dialog", "orderbot.desk", "orderbot.orders", "orderbot.channels")
    assert violations({"orderbot.storage": banned, "orderbot.queues": banned}) == []


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for _, path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orderbot"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(SRC)}:{node.lineno} {alias.name}")
    assert found == []


def test_no_mixins_a_class_has_at_most_one_orderbot_base() -> None:
    found = []
    for _, path, tree in modules():
        local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("orderbot")
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                ours = [
                    b.id for b in node.bases if isinstance(b, ast.Name) and b.id in local | imported
                ]
                if len(ours) > 1:
                    found.append(f"{path.relative_to(SRC)}: {node.name}({', '.join(ours)})")
    assert found == [], "fold a mixin into its host or make it a collaborator"


def test_no_module_re_exports_another_modules_names() -> None:
    found = []
    for _, path, tree in modules():
        defined = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Assign):
                defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
        for node in tree.body:
            if (
                isinstance(node, ast.Assign | ast.AnnAssign)
                and isinstance(node.value, ast.List | ast.Tuple)
                and any(
                    isinstance(t, ast.Name) and t.id == "__all__"
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                )
            ):
                for element in node.value.elts:
                    assert isinstance(element, ast.Constant)
                    if element.value not in defined:
                        found.append(f"{path.relative_to(SRC)}: {element.value}")
    assert found == []


def test_package_inits_import_nothing_but_the_standard_library() -> None:
    """A package ``__init__`` runs whenever any module of the package is imported: it imports no
    orderbot module and no third-party package at import time (a profile's modules are imported
    inside the functions that pick the profile, or under ``TYPE_CHECKING``)."""
    found = []
    for name, path, tree in modules():
        # orderbot.cli's __init__ is the Typer app (the `orderbot.cli:main` entry point).
        if path.name != "__init__.py" or name in ("orderbot", "orderbot.cli"):
            continue
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                top = (
                    node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                ) or ""
                if top.split(".")[0] not in sys.stdlib_module_names | {"__future__"}:
                    found.append(f"{name}: {top}")
    assert found == []


def test_every_side_effect_key_is_built_in_outbound() -> None:
    """A key written as an f-string outside orderbot.outbound is a second copy of a format."""
    found = []
    for name, path, tree in modules():
        if name == "orderbot.outbound":
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg in ("key", "idempotency_key")
                and isinstance(node.value, ast.JoinedStr)
            ):
                found.append(f"{path.relative_to(SRC)}:{node.value.lineno}")
    assert found == []


def test_the_top_level_holds_the_shared_vocabulary_and_the_data_path() -> None:
    top = sorted(p.stem for p in SRC.glob("*.py") if p.stem not in ("__init__", "__main__"))
    assert len(top) <= 14, top


@pytest.mark.parametrize(
    "module",
    [
        "orderbot.cli",
        "orderbot.runtime.embedded",
        "orderbot.web.app",
        *sorted(
            name
            for name, path, _ in modules()
            if path.name == "__init__.py" and name not in ("orderbot.cli",)
        ),
    ],
)
def test_importing_the_embedded_side_loads_no_heavy_package(module: str) -> None:
    # The embedded server never loads SQLAlchemy, Alembic, redis or aio_pika (migrations run in
    # a child process); neither does importing a package.
    code = (
        "import importlib, sys; importlib.import_module(sys.argv[1]); "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, module], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout

"""The ``orderbot`` command. Settings are read here, once, and passed down.

This module is the one Typer app: it adds every command and command group, in the order
``orderbot --help`` lists them, and :func:`main` turns errors a user can fix into one line and an
exit code. The commands live in modules named after what they work on: :mod:`orderbot.cli.processes`
(run, serve, worker, sender, chat), :mod:`orderbot.cli.orders` (orders, handback),
:mod:`orderbot.cli.dead_letters` (dlq), :mod:`orderbot.cli.channels` (chat2desk, telegram) and
:mod:`orderbot.cli.console` (operators, stats, orders export);
the two small groups below (db, flow) stay here. What they share (settings, exit codes) is in
:mod:`orderbot.cli.common`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from orderbot import __version__
from orderbot.cli.channels import chat2desk_app, telegram_app
from orderbot.cli.common import read_settings
from orderbot.cli.console import operators_app, orders_export, stats
from orderbot.cli.dead_letters import dlq_app
from orderbot.cli.orders import handback, orders_app
from orderbot.cli.processes import chat, run, sender, serve, worker
from orderbot.errors import ChannelError, ConfigError, FlowError, OrderbotError

__all__ = ["app", "main"]

app = typer.Typer(
    name="orderbot",
    help="Takes shop orders through chat (Chat2Desk, Telegram, a terminal). Settings come from the "
    "environment and .env; see docs/configuration.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: flags without a type (rich help showed `--json <bool>`), and help text
    # in brackets ("[env PORT, 3000]") printed as written instead of read as rich markup.
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
flow_app = typer.Typer(help="Dialog flows.", no_args_is_help=True)
orders_app.command("export")(orders_export)
app.add_typer(orders_app, name="orders")
app.add_typer(operators_app, name="operators")
app.add_typer(dlq_app, name="dlq")
app.add_typer(chat2desk_app, name="chat2desk")
app.add_typer(telegram_app, name="telegram")
app.add_typer(db_app, name="db")
app.add_typer(flow_app, name="flow")
# Typer lists top-level commands in the order they are added, before the groups.
app.command()(run)
app.command()(serve)
app.command()(worker)
app.command()(sender)
app.command()(chat)
app.command()(handback)
app.command()(stats)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orderbot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """orderbot: takes shop orders through chat."""


# -- db, flow --------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations (Alembic) to DATABASE_URL."""
    from orderbot.storage import sql as db

    settings = read_settings()
    db.upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@flow_app.command("check")
def flow_check(
    file: Annotated[str, typer.Argument(help="Flow YAML file, or a shipped flow name.")],
) -> None:
    """Load and validate a flow file; print its steps."""
    from orderbot.dialog.loader import load_flow

    flow = load_flow(file)
    typer.echo(f"flow {flow.name}: ok")
    for name in flow.steps:
        typer.echo(f"  {name}")


def main() -> None:
    """Entry point: errors a user can fix are one line and an exit code, never a traceback."""
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (FlowError, ChannelError, OrderbotError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

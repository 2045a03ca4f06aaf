"""The ``orderbot dlq`` commands: the dead-letter queue of either profile, listed, replayed or
purged.

Replies that could not be sent and inbound messages that kept failing are set aside there
rather than retried without end; what happens to them next is an operator's call, made here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import orjson
import typer

from orderbot.cli.common import fail, read_settings, require_database, require_sqlite, run_async

__all__ = ["dlq_app", "dlq_list", "dlq_purge", "dlq_replay"]

T = TypeVar("T")

dlq_app = typer.Typer(
    help="Replies that could not be sent, and messages that kept failing.", no_args_is_help=True
)


async def _with_dead_letters(fn: Callable[[Any], Awaitable[T]]) -> T:
    from orderbot.runtime import open_dead_letters

    settings = read_settings()
    if not settings.is_distributed:
        require_sqlite(settings)
        require_database(settings)
    async with open_dead_letters(settings) as queue:
        return await fn(queue)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[
        int, typer.Option(min=1, metavar="N", help="At most this many, oldest first.")
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """What could not be sent (or processed), with the last error and the text: the reply
    the customer did not get, or what they wrote."""
    letters = run_async(_with_dead_letters(lambda q: q.list(limit)))
    if as_json:
        rows = [
            {
                "id": d.id,
                "kind": d.kind,
                "key": d.key,
                "channel": d.channel,
                "client_id": d.client_id,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "created_at": d.created_at,
                "text": d.text,
            }
            for d in letters
        ]
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not letters:
        typer.echo("the dead-letter queue is empty")
        return
    for d in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.created_at))
        typer.echo(
            f"{d.id:>6}  {when}  {d.kind:<7} {d.channel}:{d.client_id}  "
            f"attempts={d.attempts}  {d.last_error}"
        )
        if d.text:  # what the customer did not get (or what they wrote)
            typer.echo("        " + d.text.replace("\n", "\n        "))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[
        list[int] | None, typer.Argument(metavar="[ID]...", help="Dead letters to replay.")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Send dead replies again (fresh retries) and requeue dead inbound messages. A dead
    letter whose payload cannot be read stays in the queue (see `dlq list`)."""
    if not ids and not all_:
        raise fail("give one or more IDs, or --all", 2)
    if ids and all_:
        raise fail("give IDs or --all, not both", 2)
    count = run_async(_with_dead_letters(lambda q: q.replay(None if all_ else list(ids or []))))
    if ids and count < len(ids):
        typer.echo(
            f"replayed {count} of {len(ids)} (the others were not in the queue, or unreadable"
            " and kept there)"
        )
    else:
        typer.echo(f"replayed {count}")


@dlq_app.command("purge")
def dlq_purge(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete every dead letter for good."""
    if not yes and not typer.confirm("Delete every dead letter?"):
        raise typer.Exit(1)
    count = run_async(_with_dead_letters(lambda q: q.purge()))
    typer.echo(f"purged {count}")

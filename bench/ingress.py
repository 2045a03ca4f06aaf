"""Webhook ingress throughput and latency of `orderbot run`, with its worker and sender busy
answering a fast fake Chat2Desk, and two references on the same machine:

* a default FastAPI route that only parses the payload (pydantic model), on uvicorn;
* a bare ASGI app on uvicorn that commits each request to SQLite before answering (the limit).

    python bench/ingress.py [--runs 3] [--seconds 10] [--connections 64]

Every run uses fresh message ids, so each request is a new message the worker must handle.
Prints medians over the runs; asserts nothing.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from _common import (
    ROOT,
    cpu_probe,
    fake_chat2desk,
    free_port,
    median,
    orderbot,
    rss_mb,
    run_wrk,
    wait_port,
)

# -- reference servers (run as `python bench/ingress.py --serve fastapi|asgi-sqlite --port N`) --


class Payload(BaseModel):
    client_id: int | str
    message_id: int | str
    text: str | None = None
    type: str | None = None
    transport: str | None = None
    channel_id: int | str | None = None


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/webhook/chat2desk")
    async def webhook(payload: Payload) -> dict[str, bool]:
        return {"success": True}

    return app


def asgi_sqlite_app(path: str) -> Any:
    import orjson

    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS inbound (id INTEGER PRIMARY KEY, key TEXT UNIQUE, body BLOB)"
    )

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:  # the readiness probe's GET
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        conn.execute("BEGIN")
        conn.execute(
            "INSERT OR IGNORE INTO inbound (key, body) VALUES (?, ?)",
            (str(data["message_id"]), body),
        )
        conn.execute("COMMIT")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"success":true}'})

    return app


def serve(kind: str, port: int, path: str) -> None:
    import uvicorn

    app = fastapi_app() if kind == "fastapi" else asgi_sqlite_app(path)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


def reference(kind: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            kind,
            "--port",
            str(port),
            "--db",
            str(workdir / f"{kind}.db"),
        ],
        cwd=ROOT,
    )
    try:
        wait_port(port)
        run_wrk(
            f"http://127.0.0.1:{port}/webhook/chat2desk",
            seconds=2,
            connections=args.connections,
            run_id=f"{kind}-warm",
        )
        return [
            run_wrk(
                f"http://127.0.0.1:{port}/webhook/chat2desk",
                seconds=args.seconds,
                connections=args.connections,
                run_id=f"{kind}-{i}",
            )
            for i in range(args.runs)
        ]
    finally:
        proc.terminate()
        proc.wait(10)


def report(name: str, runs: list[dict[str, Any]]) -> None:
    rps = median([r["rps"] for r in runs])
    p50 = median([r["p50_us"] for r in runs]) / 1000
    p99 = median([r["p99_us"] for r in runs]) / 1000
    errors = sum(r["errors_status"] + r["errors_connect"] + r["errors_timeout"] for r in runs)
    each = ", ".join(f"{r['rps']:.0f}" for r in runs)
    print(
        f"{name:<44} {rps:>8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  errors {errors}  (runs: {each})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--serve", choices=["fastapi", "asgi-sqlite"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.db)
        return

    print(
        f"ingress: {args.runs} runs x {args.seconds} s, {args.connections} connections, wrk -t1, medians"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with fake_chat2desk() as fake_url, orderbot(fake_url, workdir) as bot:
            run_wrk(
                bot.url + "/webhook/chat2desk",
                seconds=2,
                connections=args.connections,
                run_id="warm",
            )
            runs = []
            for i in range(args.runs):
                runs.append(
                    run_wrk(
                        bot.url + "/webhook/chat2desk",
                        seconds=args.seconds,
                        connections=args.connections,
                        run_id=f"run{i}",
                    )
                )
                runs[-1]["rss"] = rss_mb(bot.process.pid)  # type: ignore[union-attr]
            time.sleep(0.5)
            db = sqlite3.connect(workdir / "orderbot.db")
            stored = db.execute("SELECT count(*) FROM inbound_queue").fetchone()[0]
            handled = db.execute("SELECT count(*) FROM inbound_queue WHERE done = 1").fetchone()[0]
            db.close()
            acked = sum(r["requests"] - r["errors_status"] for r in runs)
            report("orderbot run (worker + sender busy)", runs)
            print(
                f"  durable: {stored} messages stored for {acked} answered requests (warm-up included in stored)"
            )
            print(
                f"  worker handled {handled} of them meanwhile; RSS {max(r['rss'] for r in runs):.0f} MB"
            )
        report("reference: default FastAPI route, parse only", reference("fastapi", args, workdir))
        report(
            "reference: bare ASGI + SQLite commit/request", reference("asgi-sqlite", args, workdir)
        )
    print(cpu_probe())


if __name__ == "__main__":
    main()

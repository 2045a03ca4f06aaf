"""The fake Chat2Desk with a *mix* of failures drawn per send, for fault runs::

    python -m tests.distributed.flaky_chat2desk --port N

then ``POST /_control`` with ``{"mix": {"500": 0.2, "429": 0.05, "hang": 0.02}, "seed": 1,
"retry_after": 1, "hang_seconds": 5}`` (every other control of the fake works too). A hung send
is answered after ``hang_seconds`` without being recorded, as the base fake does.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from tests.fakes.chat2desk import FakeState, _Action, _bind, _config, _start, build_app

__all__ = ["FlakyState", "main"]


class FlakyState(FakeState):
    def __init__(self, *, token: str | None = None) -> None:
        super().__init__(token=token)
        self._mix: list[tuple[float, _Action]] = []
        self._draw = random.Random(0)

    def control(self, command: dict[str, Any]) -> None:
        super().control(command)
        if "mix" in command:
            self._draw = random.Random(int(command.get("seed", 0)))
            retry_after = float(command.get("retry_after", 1))
            hang = float(command.get("hang_seconds", 30))
            edge = 0.0
            self._mix = []
            for kind, rate in dict(command["mix"]).items():
                edge += float(rate)
                if kind == "hang":
                    action = _Action("hang", seconds=hang)
                elif kind == "429":
                    action = _Action("rate_limit", retry_after=retry_after)
                else:
                    action = _Action("fail", status=int(kind))
                self._mix.append((edge, action))
        if command.get("reset"):
            self._mix = []

    def _failure_for(self, client_id: str) -> _Action | None:
        found = super()._failure_for(client_id)
        if found is not None or not self._mix:
            return found
        x = self._draw.random()
        for edge, action in self._mix:
            if x < edge:
                return action
        return None


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fake Chat2Desk with mixed failures")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=None)
    args = parser.parse_args(argv)
    state = FlakyState(token=args.token)
    sock = _bind(args.host, args.port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(build_app(state)))

    async def serve() -> None:
        state.closing = asyncio.Event()
        task = await _start(server, sock)
        print(f"fake chat2desk listening on http://{args.host}:{port}/v1", flush=True)
        await task
        state.closing.set()

    import uvloop

    uvloop.run(serve())
    sys.exit(0)


if __name__ == "__main__":
    main()

"""The Python ceiling: a raw ASGI callable answering every request with the same 100 bytes of JSON, under uvicorn.

Not a benchmark itself: ``bench/peers/run.py`` starts it. No framework, no
JSON parsing, no model: what is left is uvicorn's event loop and HTTP parser
(uvloop and httptools when installed), the most any Python server on them
can answer.

    python asgi_hello.py PORT [WORKERS]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PREFIX = b'{"predictions": [0], "probabilities": [[0.75, 0.25]], "pad": "'
BODY = PREFIX + b"x" * (100 - len(PREFIX) - 2) + b'"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    import uvicorn

    port, workers = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    uvicorn.run("asgi_hello:app", app_dir=str(Path(__file__).parent), host="127.0.0.1", port=port, workers=workers,
                loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
                http="httptools" if importlib.util.find_spec("httptools") else "h11",
                lifespan="off", log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""The floor: a bare Starlette endpoint that parses JSON and calls ``model.predict``.

Not a benchmark itself: ``bench/gateway.py`` starts it as the baseline.
It serves the same model file as the gateway (loaded and verified the same
way), with the same event loop, HTTP parser and one OpenMP thread, and
does nothing else: no routing, no validation, no metrics, no batching.

    python bench/_bare_app.py PROJECT_DIR PORT
"""

from __future__ import annotations

import sys

import orjson
import pandas as pd
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from threadpoolctl import threadpool_limits

from rung.project import Project


def main() -> None:
    project = Project.open(sys.argv[1])
    record = project.store.list_model_versions(project.settings.model_name)[-1]
    estimator = project.models_loader.load(record).estimator
    threadpool_limits(1)

    async def invocations(request: Request) -> Response:
        body = orjson.loads(await request.body())
        predictions = estimator.predict(pd.DataFrame(body["dataframe_records"]))
        return Response(orjson.dumps({"predictions": predictions.tolist()}), media_type="application/json")

    app = Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools", log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

"""A hand-written FastAPI endpoint, as one would write it: the body as JSON, a DataFrame, ``predict``.

Not a benchmark itself: ``bench/peers/run.py`` starts it with the Python of
its own venv (fastapi, uvicorn[standard], the scikit-learn of rung's venv).
No pydantic model for the body: ``await request.json()``; the model is the
joblib of the churn pipeline that rung serves.

    python fastapi_app.py MODEL.joblib PORT
"""

from __future__ import annotations

import sys

import joblib
import pandas as pd
import uvicorn
from fastapi import FastAPI, Request

model = joblib.load(sys.argv[1])
app = FastAPI()


@app.get("/ping")
async def ping() -> dict:
    return {}


@app.post("/invocations")
async def invocations(request: Request) -> dict:
    frame = pd.DataFrame((await request.json())["dataframe_records"])
    return {"predictions": model.predict(frame).tolist(), "probabilities": model.predict_proba(frame).tolist()}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)

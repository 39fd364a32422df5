"""LitServe serving the churn pipeline: its defaults, or (``--batch``) its batching of up to 64 requests within 1 ms.

Not a benchmark itself: ``bench/peers/run.py`` starts it with the Python of
its own venv (litserve, the scikit-learn of rung's venv). It takes MLflow's
``{"dataframe_records": [...]}`` and answers labels and probabilities, like
rung's ``/invocations``. With ``--batch``, ``batch`` puts the rows of every
request in the batch into one DataFrame and ``unbatch`` hands each request
back its own rows' answers.

    python litserve_app.py MODEL.joblib PORT [--batch]
"""

import sys
from typing import Any

import joblib
import litserve as ls
import pandas as pd


class Churn(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = joblib.load(sys.argv[1])

    def decode_request(self, request):  # unannotated: LitServe reads an annotation as a pydantic model of the body
        return request["dataframe_records"]

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, list]:
        frame = pd.DataFrame(rows)
        return {"predictions": self.model.predict(frame).tolist(), "probabilities": self.model.predict_proba(frame).tolist()}

    def encode_response(self, output: dict[str, list]) -> dict[str, list]:
        return output


class BatchedChurn(Churn):
    def batch(self, inputs: list[list[dict[str, Any]]]) -> tuple[list[int], list[dict[str, Any]]]:
        return [len(rows) for rows in inputs], [row for rows in inputs for row in rows]

    def predict(self, batch: tuple[list[int], list[dict[str, Any]]]) -> tuple[list[int], dict[str, list]]:
        sizes, rows = batch
        return sizes, super().predict(rows)

    def unbatch(self, output: tuple[list[int], dict[str, list]]) -> list[dict[str, list]]:
        sizes, answer = output
        answers, start = [], 0
        for size in sizes:
            answers.append({key: values[start:start + size] for key, values in answer.items()})
            start += size
        return answers


def main() -> None:
    api = BatchedChurn(max_batch_size=64, batch_timeout=0.001) if "--batch" in sys.argv else Churn()
    server = ls.LitServer(api, accelerator="cpu")
    server.run(host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()

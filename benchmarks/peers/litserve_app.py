"""The same model and preprocessing behind LitServe: ``python litserve_app.py PORT`` (LIVT_MODEL set).

LitServe's own batching at livt-serve's defaults (32 images, 5 ms), one inference worker; the
multipart field ``files`` as livt-serve reads it.
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls
from common import MAX_BATCH, MAX_DELAY_S, Classifier


class LivtAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = Classifier()

    def decode_request(self, request) -> bytes:  # unannotated: LitServe then passes the parsed form
        return request["files"].file.read()

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return inputs

    def predict(self, images: list[bytes]) -> list[dict[str, Any]]:
        return self.model.predict(images)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"predictions": [prediction]}


def main() -> None:
    api = LivtAPI(max_batch_size=MAX_BATCH, batch_timeout=MAX_DELAY_S, api_path="/v1/predict")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    # The benchmark client reads /metrics for livt's batch counters; a peer has none to report.
    server.app.add_api_route("/metrics", lambda: "", methods=["GET"])
    server.run(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()

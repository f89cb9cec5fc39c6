"""The same model and preprocessing behind BentoML: ``bentoml serve bentoml_app:Livt --port PORT``
(LIVT_MODEL set), from this folder.

One service, one image per model call: the multipart field ``files`` as livt-serve reads it, the
sync API run in BentoML's thread pool. BentoML's adaptive batching needs its two-service pattern
(an HTTP service awaiting a batchable one, ``bentoml.depends``); with BentoML 1.4.40 here that
answered 37 requests/s at concurrency 1 and failed at 32 (500s: aiohttp's "Cannot write to
closing transport" between the two services), so it is not what is measured. BentoML serves its own
``/metrics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
from common import Classifier


@bentoml.service(workers=1, logging={"access": {"enabled": False}})  # as livt-serve: no access log
class Livt:
    def __init__(self) -> None:
        self.model = Classifier()

    @bentoml.api(route="/v1/predict")
    def predict(self, files: Path) -> dict[str, Any]:
        return {"predictions": self.model.predict([files.read_bytes()])}

"""``livt-serve``: run the prediction service on one artifact.

Flags override ``LIVT_*`` environment variables. The API key is read only from ``LIVT_API_KEY``
(a secret on the command line would show in the process list). Exit code 2, with one line on
stderr, when the settings are invalid or the model cannot be loaded.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping

from pydantic import ValidationError

from livt import __version__
from livt.serving.artifact import ArtifactError
from livt.serving.settings import ServeSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livt-serve",
        description="Serve a livt ONNX artifact (or TensorRT engine) over HTTP. Every flag can also be "
        "set as an environment variable LIVT_<FLAG> (e.g. LIVT_MODEL, LIVT_MAX_BATCH, LIVT_API_KEY).",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--version", action="version", version=f"%(prog)s {__version__}")
    add("--model", help="the artifact: model.onnx, or model.plan with model.plan.json")
    add("--model-name", help="name under /v2/models/{name} (default: livt)")
    add("--sha256", help="expected sha256 of the artifact (default: ARTIFACT.sha256 if present)")
    add(
        "--require-checksum",
        action=argparse.BooleanOptionalAction,
        help="refuse to start without a checksum to verify (default: off, a missing one is logged; on in "
        "the Docker images)",
    )
    add("--providers", help="comma-separated ONNX Runtime providers, in order")
    add("--intra-op-threads", type=int, help="ONNX Runtime intra-op threads (default: its own)")
    add(
        "--intra-op-spinning",
        action=argparse.BooleanOptionalAction,
        help="let idle ONNX Runtime threads busy-wait: lower latency when idle, less throughput under "
        "load (default: off)",
    )
    add("--host", help="address to bind (default: 127.0.0.1)")
    add("--port", type=int, help="port (default: 8000)")
    add("--max-batch", type=int, help="most images per model call (default: 32)")
    add("--max-delay-ms", type=float, help="longest a batch waits for more requests (default: 5)")
    add("--max-queue", type=int, help="requests waiting before 503 (default: 256)")
    add("--timeout-s", type=float, help="inference deadline per request, else 504 (default: 30)")
    add("--max-body-bytes", type=int, help="largest request body, else 413 (default: 32 MiB)")
    add("--max-images", type=int, help="most images per request, else 413 (default and most: --max-batch)")
    add("--max-image-pixels", type=int, help="largest image in pixels, else 413 (default: 40M)")
    add(
        "--default-prior",
        choices=["model", "balanced", "train", "estimated"],
        help="prior of requests that name none (default: model, the artifact's own)",
    )
    add(
        "--prior-window", type=int, help="recent images the estimated prior rests on, 0 = off (default: 2000)"
    )
    add("--prior-min-images", type=int, help="images before 'estimated' is applied (default: 500)")
    add("--prior-interval-s", type=float, help="seconds between re-estimates of the prior (default: 5)")
    add("--prior-bootstrap", type=int, help="bootstrap resamples for the estimate's spread (default: 20)")
    add("--metrics-max-classes", type=int, help="per-class Prometheus series up to this many classes (200)")
    add(
        "--max-request-pixels",
        type=int,
        help="most pixels in all of a request's images, from their headers, else 413 (default: 64M)",
    )
    add("--decode-threads", type=int, help="threads decoding large images (default: half the CPUs)")
    add(
        "--allowed-hosts",
        help="comma-separated Host names to answer, '*' for any (default: loopback names when bound to "
        "loopback, else any)",
    )
    add("--log-level", choices=["critical", "error", "warning", "info", "debug"], help="(default: info)")
    add(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        help="log one line per request (default: off; /metrics counts requests)",
    )
    return parser


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """``LIVT_*`` variables that name no setting (a typo such as ``LIVT_MAX_BATCHES`` is otherwise silent).

    Kubernetes' service links for a Service named "livt" (``LIVT_SERVICE_HOST``, ``LIVT_PORT_8000_TCP``...)
    are left out: the pod did not choose them.
    """
    prefix = ServeSettings.model_config["env_prefix"]
    known = {prefix + name.upper() for name in ServeSettings.model_fields}
    links = re.compile(rf"^{prefix}(SERVICE_(HOST|PORT)(_.*)?|PORT_\d+_(TCP|UDP|SCTP)(_.*)?)$")
    return sorted(k for k in environ if k.startswith(prefix) and k not in known and not links.match(k))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = ServeSettings(**vars(args))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
        print(f"livt-serve: {where}: {err['msg']} (flag or LIVT_ environment variable)", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    unknown = unknown_environment(os.environ)
    if unknown:
        logging.getLogger("livt.serving").warning(
            "ignoring environment variables that name no setting: %s", ", ".join(unknown)
        )

    # Load before the server starts so a bad artifact is one line and exit code 2, not a traceback.
    from livt.serving.app import create_app
    from livt.serving.model import load_model

    try:
        model = load_model(settings)
    except ArtifactError as exc:
        print(f"livt-serve: cannot serve the model: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    _exit_cleanly_on_stop_signals()
    print(
        f"livt-serve: {settings.model} at http://{settings.host}:{settings.port}/ (API docs at /docs)",
        flush=True,
    )
    uvicorn.run(
        create_app(settings, model=model),
        access_log=settings.access_log,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep the root logger's format for uvicorn's lines too
    )
    return 0


def _exit_cleanly_on_stop_signals() -> None:
    """Make SIGTERM and SIGINT end the process with exit code 0 once uvicorn has shut down gracefully.

    uvicorn handles both while it serves (stop accepting, finish the requests in flight, run the
    lifespan's shutdown), then restores the handlers it found and raises the signal again, which
    by default kills the process (SIGTERM: exit code 143, what `docker stop` and Kubernetes report as
    a failure; SIGINT: a KeyboardInterrupt traceback). The handlers it finds are these: a stop that
    was asked for and carried out is a normal exit. A signal before uvicorn takes over stops at once.
    """

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


if __name__ == "__main__":
    sys.exit(main())

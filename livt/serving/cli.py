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
from livt.flags import add_settings_flags
from livt.inference.artifact import ArtifactError
from livt.serving.settings import ServeSettings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livt-serve",
        description="Serve a livt ONNX artifact (or TensorRT engine) over HTTP. Every flag can also be "
        "set as an environment variable LIVT_<FLAG> (e.g. LIVT_MODEL, LIVT_MAX_BATCH, LIVT_API_KEY).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # The key is read from LIVT_API_KEY only: a flag would show it in the process list.
    add_settings_flags(parser, ServeSettings, skip=("api_key",))
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
        if tuple(err["loc"]) == ("api_key",):  # no flag: the key is read from the environment only
            print(f"livt-serve: LIVT_API_KEY: {err['msg']}", file=sys.stderr)
            return 2
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
    from livt.serving.state import load_model

    try:
        model = load_model(settings)
    except ArtifactError as exc:
        print(f"livt-serve: cannot serve the model: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from livt.serving.server import uvicorn_config

    _exit_cleanly_on_stop_signals()
    print(
        f"livt-serve: {settings.model} at http://{settings.host}:{settings.port}/ (API docs at /docs)",
        flush=True,
    )
    uvicorn.Server(uvicorn_config(create_app(settings, model=model), settings)).run()
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

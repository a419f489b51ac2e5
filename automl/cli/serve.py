"""`automl serve RUN_DIR|MODEL`: the HTTP API for an exported model (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from automl.cli.evaluate import ENGINE_OPTION
from automl.errors import InputError
from automl.serve.settings import MIB, ServeSettings

API_KEY_ENV = "AUTOML_API_KEY"
DEFAULTS = ServeSettings()


def serve(
    model: Path = typer.Argument(..., help="Run folder a search wrote, its model/ folder, or a .keras file."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback unless you mean to expose the API."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    api_key: str | None = typer.Option(
        None,
        envvar=API_KEY_ENV,
        help=f"Require this key as 'X-API-Key' or 'Authorization: Bearer'; prefer ${API_KEY_ENV} (ps shows args).",
    ),
    max_batch: int = typer.Option(DEFAULTS.max_batch, min=1, help="Most images per model call."),
    batch_window_ms: float = typer.Option(
        DEFAULTS.batch_window_ms, min=0.0, help="How long a batch waits for more requests."
    ),
    max_body_mb: float = typer.Option(
        DEFAULTS.max_body_bytes / MIB, min=0.001, help="Largest upload accepted (413 above)."
    ),
    upload_timeout_s: float = typer.Option(
        DEFAULTS.upload_timeout_s, min=0.1, help="Slowest upload accepted (408 after)."
    ),
    header_timeout_s: float = typer.Option(
        DEFAULTS.header_timeout_s, min=0.1, help="A connection not done sending request headers by then is closed."
    ),
    max_pixels: int = typer.Option(
        DEFAULTS.max_pixels, min=1, help="Most pixels decoded per photo (after JPEG scaling; 422 above)."
    ),
    decode_threads: int = typer.Option(
        DEFAULTS.decode_threads, min=1, help="Threads decoding photos (default: this container's CPUs, at most 4)."
    ),
    max_in_flight: int = typer.Option(
        DEFAULTS.max_in_flight, min=1, help="Predictions handled at once (503 with Retry-After beyond)."
    ),
    max_upload_mb_in_flight: float = typer.Option(
        DEFAULTS.max_upload_bytes_in_flight / MIB, min=0.001, help="Upload bytes held at once (503 beyond)."
    ),
    max_connections: int = typer.Option(
        DEFAULTS.max_connections, min=1, help="Open connections (default: the descriptor limit less 64, at most 1000)."
    ),
    log_level: str = typer.Option("info", help="Uvicorn log level: critical, error, warning, info, debug."),
    engine: str = ENGINE_OPTION,
) -> None:
    """Serve MODEL over HTTP: POST /v1/predict, GET /v1/labels, /healthz, /metrics, docs at /docs."""
    if not model.exists():
        raise InputError(f"{model}: no such run folder or model file", hint="give the run folder a search wrote")
    if api_key is not None and not api_key.strip():
        raise InputError(f"--api-key / ${API_KEY_ENV} is empty", hint="unset it to serve without a key")
    if not api_key and not _is_loopback(host):
        typer.secho(
            f"warning: serving on {host} without an API key: anyone who can reach it can use the model",
            err=True,
            fg=typer.colors.YELLOW,
        )

    import uvicorn

    from automl.exported import ExportedModel
    from automl.serve.app import create_app, self_check
    from automl.serve.connections import guarded_h11

    settings = ServeSettings(
        max_body_bytes=int(max_body_mb * MIB),
        upload_timeout_s=upload_timeout_s,
        header_timeout_s=header_timeout_s,
        max_batch=max_batch,
        batch_window_ms=batch_window_ms,
        decode_threads=decode_threads,
        max_pixels=max_pixels,
        max_in_flight=max_in_flight,
        max_upload_bytes_in_flight=int(max_upload_mb_in_flight * MIB),
        max_connections=max_connections,
        api_key=api_key,
    )
    loaded = ExportedModel.load(model, engine=engine)
    self_check(loaded, settings.max_pixels)  # a model that cannot serve stops here, in one line, not at start-up
    uvicorn.run(
        create_app(loaded, settings),
        host=host,
        port=port,
        log_level=log_level,
        server_header=False,
        http=guarded_h11(settings.header_timeout_s, settings.max_connections),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

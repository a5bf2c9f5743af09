"""`blueprint serve`: the API and the web map."""

from __future__ import annotations


def register(commands) -> None:
    serve_p = commands.add_parser("serve", help="serve the web map and the HTTP API")
    serve_p.add_argument("--host", help="default BLUEPRINT_HOST or 127.0.0.1")
    serve_p.add_argument("--port", type=int, help="default BLUEPRINT_PORT or 8000")
    serve_p.add_argument("--workers", type=int, default=1)
    serve_p.set_defaults(handler=serve)


def serve(args) -> int:
    import uvicorn

    from layers.settings import Settings

    settings = Settings()
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    print(f"serving One Blueprint at http://{host}:{port}/ (API at /api/v1, docs at /docs)", flush=True)
    if args.workers > 1:
        uvicorn.run("api.asgi:app", host=host, port=port, workers=args.workers, log_level="warning")
    else:
        from api.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
    return 0

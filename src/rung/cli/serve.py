"""``rung serve``, ``rung routes`` and ``rung token``: the gateway, its routing and its API tokens."""

from __future__ import annotations

from pathlib import Path

import typer

from rung.cli.context import JSON_OPTION, PROJECT_OPTION, open_project
from rung.cli.output import console, fmt_time, print_json

__all__ = ["register"]

token_app = typer.Typer(help="API tokens for the gateway's control API.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Attach ``serve``, ``routes`` and ``token`` to the root app."""
    app.command("serve")(serve)
    app.command("routes")(routes)
    app.add_typer(token_app, name="token")


def serve(
    project_dir: Path | None = PROJECT_OPTION,
    host: str | None = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1: this machine only)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8700)."),
    grpc_port: int | None = typer.Option(None, "--grpc-port", min=0, max=65535,
                                         help="Port of the OIP gRPC service, on the same host (default serve.grpc_port, "
                                              "8702; 0 turns it off)."),
    processes: str | None = typer.Option(None, "--processes",
                                         help="Gateway processes sharing the ports, or auto: one per core, up to 8 "
                                              "(default serve.processes, 1)."),
) -> None:
    """Serve the project's models over HTTP (OIP v2 and MLflow scoring) and gRPC (OIP v2), routed by the routing tables."""
    overrides = {"serve.processes": processes} if processes is not None else None
    project = open_project(project_dir, overrides)
    count = project.settings.serve.process_count()
    if count == 1:
        from rung.serving.server import run_gateway

        run_gateway(project, host=host, port=port, grpc_port=grpc_port)
        return
    from rung.serving.processes import run_processes

    code = run_processes(project, processes=count, host=host, port=port, grpc_port=grpc_port)
    if code:
        raise typer.Exit(code)


def routes(project_dir: Path | None = PROJECT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """The routing tables: which versions serve which share of traffic."""
    from rich.table import Table

    from rung.delivery.routing import RoutingTable

    project = open_project(project_dir)
    tables = [RoutingTable.from_record(r) for r in project.store.routes()]
    if as_json:
        print_json([t.to_dict() for t in tables])
        return
    table = Table(title="Routing tables")
    for column in ("model", "revision", "variant", "version", "share", "updated", "by", "reason"):
        table.add_column(column)
    for t in tables:
        rows = [(v.name, v.version, f"{t.share(v.name):.0%}") for v in t.variants]
        rows += [(f"{v.name} (shadow)", v.version, "copy") for v in t.shadows]
        for i, (name, version, share) in enumerate(rows):
            first = i == 0
            table.add_row(t.model if first else "", str(t.revision) if first else "", name, str(version), share,
                          fmt_time(t.updated_at) if first else "", t.updated_by if first else "", (t.reason or "") if first else "")
    console.print(table)
    if not tables:
        console.print("No routing tables yet: [bold]rung serve[/] serves the champion and creates one.")


@token_app.command("create")
def token_create(
    role: str = typer.Option(..., "--role", help="viewer, deployer or admin."),
    name: str = typer.Option("", "--name", help="A label to recognise the token by."),
    project_dir: Path | None = PROJECT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create an API token. It is printed once and only its hash is kept."""
    from rung.serving.auth import create_token

    project = open_project(project_dir)
    record, secret = create_token(project.store, role=role, name=name)
    if as_json:
        print_json({"id": record.id, "name": record.name, "role": record.role, "token": secret})
        return
    console.print(f"Token [bold]{record.id}[/] ({record.role}): copy it now, it is not shown again:")
    console.print(secret, highlight=False, soft_wrap=True)


@token_app.command("list")
def token_list(project_dir: Path | None = PROJECT_OPTION, as_json: bool = JSON_OPTION) -> None:
    """API tokens (ids, names, roles; never the secrets)."""
    from rich.table import Table

    project = open_project(project_dir)
    tokens = project.store.tokens()
    if as_json:
        print_json([{"id": t.id, "name": t.name, "role": t.role, "created_at": t.created_at, "revoked_at": t.revoked_at} for t in tokens])
        return
    table = Table(title="API tokens")
    for column in ("id", "name", "role", "created", "revoked"):
        table.add_column(column)
    for t in tokens:
        table.add_row(t.id, t.name, t.role, fmt_time(t.created_at), fmt_time(t.revoked_at))
    console.print(table)


@token_app.command("revoke")
def token_revoke(token_id: str = typer.Argument(..., help="The token's id."), project_dir: Path | None = PROJECT_OPTION) -> None:
    """Revoke a token: the control API refuses it at once, prediction and feedback routes within a second."""
    from rung.errors import NotFound
    from rung.serving.auth import revoke_token

    project = open_project(project_dir)
    if not revoke_token(project.store, token_id):
        raise NotFound(f"no active token {token_id}; list them with `rung token list`")
    console.print(f"Token {token_id} revoked.")

"""``rung assess``: a scorecard on the MLOps maturity models, with evidence and next steps."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from rung.cli.context import PROJECT_OPTION
from rung.cli.output import console, err_console, print_json

__all__ = ["register"]

FORMATS = ("table", "json", "md", "html")
_STYLE = {"met": "[green]✔ met[/]", "partial": "[yellow]◐ partly[/]", "not_met": "[red]✖ not met[/]",
          "unknown": "[dim]? unknown[/]"}


def register(app: typer.Typer) -> None:
    app.command("assess")(assess)


def assess(
    repo: Path | None = typer.Option(None, "--repo", help="Assess any repository from its files (rung or not)."),
    answers: Path | None = typer.Option(None, "--answers", help="YAML answers for what code cannot show (people, process)."),
    ask: bool = typer.Option(False, "--ask", help="Ask the unanswered people and process questions (saved to --answers FILE)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, json, md or html."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report to this file."),
    history: bool = typer.Option(False, "--history", help="How the levels moved over the stored assessments."),
    list_criteria: bool = typer.Option(False, "--list", help="Print the models' criteria and their ids, then exit."),
    budget: float = typer.Option(8.0, "--budget", min=0.5, help="Seconds the file scan may take before it stops (partial)."),
    save: bool = typer.Option(True, "--save/--no-save", help="Keep the result for --history."),
    project_dir: Path | None = PROJECT_OPTION,
) -> None:
    """Where the team stands on the Azure, Google, AWS and GigaOm maturity models, the evidence, and what to do next."""
    from rung.assess import assessment as api
    from rung.assess.answers import load_answers, save_answers
    from rung.assess.report import to_html, to_markdown
    from rung.errors import AssessError

    if fmt not in FORMATS:
        raise AssessError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if list_criteria:
        _print_catalogue(fmt)
        return
    project = None if repo is not None else _open_project(project_dir)
    store = project.store if project is not None else api.user_store()
    target = str(project.root if project is not None else repo.expanduser().resolve())  # type: ignore[union-attr]
    if history:
        _print_history(store.assessments(target), fmt, target)
        return
    given = load_answers(answers) if answers is not None else {}
    if ask:
        given |= _ask(given)
        if answers is not None:
            save_answers(answers, given)
            err_console.print(f"answers saved to {answers}")
    source = str(answers) if answers is not None else "prompts"
    with console.status("Assessing: reading records and files…" if project else f"Scanning {repo}…"):
        if project is not None:
            result = api.assess_project(project, given, budget_s=budget, answers_source=source)
        else:
            result = api.assess_repo(repo, given, budget_s=budget, answers_source=source)  # type: ignore[arg-type]
    doc = result.to_dict()
    if save:
        api.save(store, doc)
    past = store.assessments(target) if fmt == "html" else []
    if fmt == "json":
        _emit(_json_text(doc), output)
    elif fmt == "md":
        _emit(to_markdown(doc), output)
    elif fmt == "html":
        path = output or Path("rung-assessment.html")
        path.write_text(to_html(doc, [{"time": p["time"], "levels": p["levels"]} for p in past]), encoding="utf-8")
        console.print(f"Report written to {path} (open it in a browser; it needs no network)")
    else:
        _scorecard(doc)
        if output is not None:
            output.write_text(_json_text(doc), encoding="utf-8")


def _open_project(project_dir: Path | None) -> Any:
    from rung.errors import AssessError, ProjectNotFound
    from rung.project import Project

    try:
        return Project.open(project_dir)
    except ProjectNotFound as exc:
        raise AssessError(f"{exc}; to assess any repository, run: rung assess --repo PATH") from exc


def _json_text(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=2, default=str) + "\n"


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"Report written to {output}")


def _ask(given: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    from rung.assess.answers import ANSWERS, ask_answers
    from rung.assess.catalogue import CRITERIA, Criterion
    from rung.errors import AssessError

    if not sys.stdin.isatty():
        raise AssessError("--ask needs a terminal; write the answers in a YAML file and pass --answers FILE")
    pending = [c for c in CRITERIA if c.answer_only and c.id not in given]
    console.print(f"{len(pending)} questions only the team can answer: yes, partly, no, or Enter to leave unknown, "
                  "q to stop.")

    def one(c: Criterion) -> str | None:
        console.print(f"\n[bold]{c.title}[/] [dim]({c.id})[/]\n  yes: {c.met}\n  partly: {c.partial}")
        while True:
            reply = typer.prompt("  answer", default="unknown", show_default=False).strip().lower()
            if reply == "q":
                return None
            if reply in ANSWERS or reply in ("y", "n", "partial"):
                return reply
            console.print("  [red]answer yes, partly, no, or press Enter[/]")

    return ask_answers(pending, one)


def _scorecard(doc: dict[str, Any]) -> None:
    from rich.table import Table

    from rung.assess.report import level_text

    for note in doc["partial"]:
        console.print(f"[yellow]partial:[/] {note}")
    table = Table(title=f"MLOps maturity of {doc['target']}", title_justify="left")
    for column in ("model", "level", "by dimension", "unknown", "stops the next level"):
        table.add_column(column, overflow="fold")
    for m in doc["models"]:
        dims = ", ".join(f"{d['name']} {'-' if d['level'] is None else d['level']}" for d in m["dimensions"]
                         if d["name"] != "overall")
        gaps = ", ".join(g["criterion"] for g in m["gaps"] if g["status"] != "unknown") or "-"
        table.add_row(m["title"], f"[bold]{level_text(m)}[/]", dims or "-", str(len(m["unknown"])), gaps)
    console.print(table)
    criteria = Table(title="Criteria", title_justify="left", show_lines=False)
    for column in ("criterion", "status", "confidence", "found", "evidence"):
        criteria.add_column(column, overflow="fold")
    for c in doc["criteria"]:
        first = c["evidence"][0] if c["evidence"] else None
        criteria.add_row(c["title"], _STYLE[c["status"]], c["confidence"], c["summary"],
                         f"{first['kind']} {first['ref']}" + (f" (+{len(c['evidence']) - 1})" if len(c["evidence"]) > 1 else "")
                         if first else "-")
    console.print(criteria)
    if doc["next_steps"]:
        console.print("[bold]Next steps[/]")
        for i, step in enumerate(doc["next_steps"][:8], 1):
            console.print(f" {i}. {step['title']}: {step['next_step']} [dim](unblocks {', '.join(step['unblocks'])})[/]")
    console.print("[dim]--format html writes a report with charts; --answers FILE adds people and process; "
                  "--history shows progress[/]")


def _print_history(items: list[dict[str, Any]], fmt: str, target: str) -> None:
    from rich.table import Table

    from rung.assess.assessment import MODEL_KEYS
    from rung.cli.output import fmt_time

    if fmt == "json":
        print_json([{"time": i["time"].isoformat(), "mode": i["mode"], "levels": i["levels"]} for i in items])
        return
    if not items:
        console.print(f"No stored assessments of {target} yet: run `rung assess` first.")
        return
    table = Table(title=f"Assessments of {target}", title_justify="left")
    table.add_column("time")
    for key in MODEL_KEYS:
        table.add_column(key, justify="right")
    previous: dict[str, Any] = {}
    for item in items:
        cells = []
        for key in MODEL_KEYS:
            level, before = item["levels"].get(key), previous.get(key)
            arrow = "" if before is None or level is None or level == before else (" [green]▲[/]" if level > before else " [red]▼[/]")
            cells.append(("-" if level is None else str(level)) + arrow)
        table.add_row(fmt_time(item["time"]), *cells)
        previous = item["levels"]
    console.print(table)


def _print_catalogue(fmt: str) -> None:
    from rich.table import Table

    from rung.assess.catalogue import CRITERIA

    if fmt == "json":
        print_json([{"id": c.id, "title": c.title, "answer_only": c.answer_only, "optional": c.optional,
                     "placements": [p.__dict__ for p in c.placements]} for c in CRITERIA])
        return
    table = Table(title="rung assess criteria (answer any id in --answers FILE)", title_justify="left")
    for column in ("id", "criterion", "counts in", "source"):
        table.add_column(column, overflow="fold")
    for c in CRITERIA:
        where = ", ".join(f"{p.model}{'' if p.dimension == 'overall' else ' ' + p.dimension} L{p.level}" for p in c.placements)
        table.add_row(c.id, c.title, where, "answers" if c.answer_only else "records, files" + (" (optional)" if c.optional else ""))
    console.print(table)

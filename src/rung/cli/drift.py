"""``rung drift REFERENCE CURRENT``: which features of a data set have drifted, from two files.

Works on any two CSV or Parquet files, with no project. The exit code says
whether the comparison ran, not whether data drifted: 0 with or without
drift, so a scheduled job can keep the report and decide with ``--json``
(``dataset_drifted``, ``drifted_features``); 1 when an input is bad (a file
missing or unreadable, an unknown format, no column in common).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rung.cli.output import console, err_console, print_json

if TYPE_CHECKING:
    import pandas as pd

    from rung.config.drift import DriftSettings
    from rung.monitor.drift import DriftReport

__all__ = ["register", "read_frame", "show_report"]

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
METHOD_NAMES = ("ks", "chisquare", "wasserstein", "jensenshannon", "psi")


def register(app: typer.Typer) -> None:
    """Attach ``drift`` to the root app."""
    app.command("drift")(drift)


def read_frame(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file; errors name the file and say what is wrong.

    Parquet is read one column at a time, so memory holds the frame and one
    column's pages, never the whole file's pages and the frame together
    (on 20 columns of a million rows: about 270 MiB less peak memory than
    ``pd.read_parquet`` for two files).
    """
    from rung.errors import DriftError

    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DriftError(f"{path}: unknown format '{path.suffix or '(no extension)'}'; use .csv, .tsv or .parquet")
    if not path.exists():
        raise DriftError(f"{path}: file not found")
    if not path.is_file():
        raise DriftError(f"{path}: not a file")
    try:
        frame = _read_parquet(path, columns) if kind == "parquet" else _read_text(path, kind, columns)
    except DriftError:
        raise
    except Exception as exc:  # pandas and pyarrow raise many types for a bad file
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DriftError(f"{path}: cannot be read as {kind}: {first}") from None
    return frame


def _read_parquet(path: Path, columns: list[str] | None) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rung.errors import DriftError

    source = pq.ParquetFile(path, memory_map=False, pre_buffer=False)
    index = (source.schema_arrow.pandas_metadata or {}).get("index_columns", [])
    names = [n for n in source.schema_arrow.names if n not in {i for i in index if isinstance(i, str)}]
    if columns is not None:
        absent = [c for c in columns if c not in names]
        if absent:
            raise DriftError(f"{path}: no column named {', '.join(absent)}")
        names = [c for c in names if c in set(columns)]
    # on this thread: a one-column read gains little from the reader's threads, which hold their own buffers
    table = pa.table({name: source.read(columns=[name], use_threads=False).column(0) for name in names})
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _read_text(path: Path, kind: str, columns: list[str] | None) -> pd.DataFrame:
    import pandas as pd

    from rung.errors import DriftError

    sep = "\t" if kind == "tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, engine="pyarrow")
    except Exception:  # the fast reader is strict about quoting and ragged rows; the C reader is not
        frame = pd.read_csv(path, sep=sep)
    if columns is not None:
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise DriftError(f"{path}: no column named {', '.join(absent)}")
        frame = frame[columns]
    return frame


def drift(
    reference: Path = typer.Argument(..., help="Reference data (training data or a known-good period): CSV or Parquet."),
    current: Path = typer.Argument(..., help="Current data (recent production inputs): CSV or Parquet."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of a table."),
    html: Path | None = typer.Option(None, "--html", help="Also write a self-contained HTML report to this file."),
    method: str | None = typer.Option(
        None, "--method", help=f"One of {', '.join(METHOD_NAMES)}, for every feature it applies to (default: by size)."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", min=0.0, help="Drift threshold for every feature (default: the method's)."
    ),
    features: list[str] = typer.Option([], "--feature", "-f", help="Compare only this column (repeatable)."),
    categorical: list[str] = typer.Option([], "--categorical", help="Compare this column as categories (repeatable)."),
    multivariate: bool = typer.Option(
        True, "--multivariate/--no-multivariate", help="Also train a domain classifier (reference vs current rows)."
    ),
) -> None:
    """Compare two data sets feature by feature; exit 0 whether or not they drifted."""
    from rung.errors import DriftError

    if method is not None and method not in METHOD_NAMES:
        raise DriftError(f"unknown method '{method}'; use one of {', '.join(METHOD_NAMES)}")
    from rung.config.drift import DriftSettings

    settings = DriftSettings(method=method, threshold=threshold, multivariate=multivariate)  # type: ignore[arg-type]
    columns = list(dict.fromkeys(features)) or None
    if as_json:
        report, ref_frame, cur_frame = _run(reference, current, columns, settings, categorical)
    else:
        with err_console.status("comparing"):
            report, ref_frame, cur_frame = _run(reference, current, columns, settings, categorical)
    if html is not None:
        from rung.monitor.report import html_report

        page = html_report(report, ref_frame, cur_frame, title=f"Drift: {current.name} vs {reference.name}")
        try:
            html.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise DriftError(f"{html}: cannot write the HTML report: {exc.strerror}") from None
    if as_json:
        print_json(report.to_dict())
    else:
        show_report(report)
        if html is not None:
            console.print(f"HTML report: {html}", highlight=False, soft_wrap=True)


def _run(
    reference: Path, current: Path, columns: list[str] | None, settings: DriftSettings, categorical: list[str]
) -> tuple[DriftReport, pd.DataFrame, pd.DataFrame]:
    from rung.monitor.drift import compare

    ref_frame = read_frame(reference, columns)
    cur_frame = read_frame(current, columns)
    report = compare(ref_frame, cur_frame, settings=settings, categorical=categorical)
    return report, ref_frame, cur_frame


def show_report(report: DriftReport) -> None:
    """The per-feature table, then one line for the data set."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Drift: {report.current_rows:,} current rows vs {report.reference_rows:,} reference rows")
    table = Table(title=table.title, show_edge=False)
    for name, justify in (("feature", "left"), ("kind", "left"), ("method", "left"), ("value", "right"),
                          ("threshold", "right"), ("drift", "left"), ("missing %", "right")):
        table.add_column(name, justify=justify, no_wrap=name != "method")  # type: ignore[arg-type]
    table.add_column("notes", ratio=1)
    ordered = sorted(report.features, key=lambda f: (not f.drifted, not f.all_missing))
    for f in ordered:
        if f.method is None:
            value, limit, verdict = "-", "-", "[yellow]-[/]"
        elif f.p_value is not None:
            value, limit = f"p={_number(f.p_value)}", f"p < {f.threshold:g}"
            verdict = "[bold red]drift[/]" if f.drifted else "[green]no[/]"
        else:
            value, limit = _number(f.statistic), f">= {f.threshold:g}"
            verdict = "[bold red]drift[/]" if f.drifted else "[green]no[/]"
        missing = f"{100 * f.missing_current:.1f}"
        if f.missing_reference:
            missing += f" (ref {100 * f.missing_reference:.1f})"
        kind = "num" if f.kind == "numeric" else "cat"
        table.add_row(escape(f.name), kind, f.method or "-", value, limit, verdict, missing, escape("; ".join(f.notes)))
    console.print(table)
    for label, names in (("in the reference only", report.missing_columns), ("in current only", report.extra_columns)):
        if names:
            console.print(f"[yellow]not compared, {label}:[/] {escape(', '.join(names))}", highlight=False, soft_wrap=True)
    for name, reason in report.skipped.items():
        console.print(f"[yellow]not compared:[/] {escape(name)} ({escape(reason)})", highlight=False, soft_wrap=True)
    console.print(verdict_line(report), highlight=False, soft_wrap=True)


def verdict_line(report: DriftReport) -> str:
    """One line: the data set's verdict, the share behind it and the domain classifier's AUC."""
    compared = report.compared
    drifted = len(report.drifted_features)
    share = f"{drifted} of {len(compared)} features drifted ({report.drift_share:.0%}; dataset drift at {report.dataset_share:.0%})"
    head = "[bold red]dataset drift[/]" if report.dataset_drifted else "[bold green]no dataset drift[/]"
    line = f"{head}: {share}"
    mv = report.multivariate
    if mv is not None and mv.auc is not None:
        word = "[bold red]drift[/]" if mv.drifted else "no drift"
        line += f"; domain classifier AUC {mv.auc:.3f} ({word} above {mv.threshold:g})"
    elif mv is not None:
        line += f"; domain classifier not run ({mv.reason})"
    return line


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.4f}"

"""`clinalign rate` sub-commands: create campaigns, issue tokens, serve the app, export the results."""

from __future__ import annotations

from pathlib import Path

import typer

from clinalign.errors import ConfigError

app = typer.Typer(no_args_is_help=True)

_DB = typer.Option(Path("ratings.sqlite"), "--db", help="ratings database (SQLite)")


def _load_items(items: Path | None, study: Path | None, kind: str | None, task: str, systems: str | None,
                from_samples: Path | None = None):
    from clinalign.rate.items import items_from_samples, items_from_study, read_items

    if sum(x is not None for x in (items, study, from_samples)) != 1:
        raise ConfigError("give exactly one of --items FILE, --study DIR or --from-samples PAIRS.jsonl")
    if from_samples is not None:
        if kind not in (None, "pairwise"):
            raise ConfigError("--from-samples makes pairwise items")
        return "pairwise", items_from_samples(from_samples)
    if kind not in (None, "likert", "pairwise"):
        raise ConfigError(f"--kind must be likert or pairwise, got {kind!r}")
    if items is not None:
        found, rows = read_items(items)
        if kind and kind != found:
            raise ConfigError(f"{items}: holds {found} items, but --kind {kind} was asked for")
        return found, rows
    names = [s.strip() for s in systems.split(",") if s.strip()] if systems else None
    k = kind or "likert"
    return k, items_from_study(study, k, task=task, systems=names)  # type: ignore[arg-type]


@app.command("create-campaign")
def create_campaign(
    name: str = typer.Argument(..., help="campaign name shown to raters"),
    items: Path | None = typer.Option(None, help="items JSONL/CSV (Likert or pairwise; see clinalign.rate.items)"),
    study: Path | None = typer.Option(None, help="a study output folder to build items from"),
    kind: str | None = typer.Option(None, help="likert | pairwise (with --study; default likert)"),
    task: str = typer.Option("discharge_summary", help="task whose predictions to rate (with --study)"),
    systems: str | None = typer.Option(None, help="comma-separated systems (with --study; pairwise needs two)"),
    rubric: Path | None = typer.Option(None, help="text file with the Likert rubric shown to raters"),
    from_samples: Path | None = typer.Option(
        None, "--from-samples", help="pairs JSONL from `clinalign data pairs --from-model`: blinded pairwise items"),
    raters: list[str] = typer.Option([], "--rater", help="assign this (existing) rater; repeat for more"),
    db_path: Path = _DB,
) -> None:
    """Create a Likert or pairwise campaign from an items file, a study folder or on-policy samples.

    Only raters assigned to it see it: here with --rater, or later with `clinalign rate assign`."""
    from clinalign.rate import db

    k, rows = _load_items(items, study, kind, task, systems, from_samples)
    rubric_text = rubric.read_text(encoding="utf-8") if rubric else None
    con = db.init_db(db_path)
    cid = db.create_campaign(con, name, k, rows, rubric_text, raters=raters)
    who = f"; assigned to {', '.join(raters)}" if raters else "; no rater assigned yet (clinalign rate assign)"
    typer.echo(f"campaign {cid} {name!r}: {len(rows)} {k} items in {db_path}{who}")


@app.command("add-rater")
def add_rater(
    name: str = typer.Argument(..., help="rater's name (shown on the admin page)"),
    admin: bool = typer.Option(False, "--admin", help="an admin token (progress and agreement page)"),
    campaigns: list[str] = typer.Option([], "--campaign", help="assign this campaign (name); repeat for more"),
    db_path: Path = _DB,
) -> None:
    """Issue a personal sign-in token. It is printed once; only its hash is stored.

    A new rater sees no campaign until assigned one: here with --campaign, or with `clinalign rate assign`."""
    from clinalign.rate import db

    token = db.add_rater(db.init_db(db_path), name, admin=admin, campaigns=campaigns)
    scope = f", rates {', '.join(map(repr, campaigns))}" if campaigns else "" if admin else ", no campaign yet"
    typer.echo(f"{'admin' if admin else 'rater'} {name!r}{scope}; token (shown once, give it privately):", err=True)
    typer.echo(token)


@app.command()
def assign(
    campaign: str = typer.Argument(..., help="campaign name (or number, as the admin page shows it)"),
    raters: list[str] = typer.Argument(..., help="rater names"),
    db_path: Path = _DB,
) -> None:
    """Let raters see and rate a campaign."""
    from clinalign.rate import db

    n = db.assign(db.open_db(db_path), campaign, raters)
    typer.echo(f"campaign {campaign!r}: {n} rater(s) assigned, {len(raters) - n} already were")


@app.command()
def unassign(
    campaign: str = typer.Argument(..., help="campaign name (or number)"),
    raters: list[str] = typer.Argument(..., help="rater names"),
    db_path: Path = _DB,
) -> None:
    """Stop raters seeing a campaign; the ratings they already gave are kept and exported."""
    from clinalign.rate import db

    n = db.unassign(db.open_db(db_path), campaign, raters)
    typer.echo(f"campaign {campaign!r}: {n} rater(s) unassigned (their ratings are kept), "
               f"{len(raters) - n} were not assigned")


@app.command("revoke-rater")
def revoke_rater(
    name: str = typer.Argument(..., help="the rater whose token stops working (their ratings are kept)"),
    db_path: Path = _DB,
) -> None:
    """Revoke a rater's token and end their signed-in sessions at once; issue a new one with add-rater
    under another name if they should rate again."""
    from clinalign.rate import db

    ended = db.revoke_rater(db.open_db(db_path), name)
    typer.echo(f"rater {name!r}: token revoked, {ended} session(s) ended")


@app.command()
def serve(
    db_path: Path = _DB,
    items: Path | None = typer.Option(None, help="also create a campaign from this items file if new"),
    study: Path | None = typer.Option(None, help="also create a campaign from this study folder if new"),
    kind: str | None = typer.Option(None, help="likert | pairwise (with --study)"),
    task: str = typer.Option("discharge_summary", help="task to rate (with --study)"),
    systems: str | None = typer.Option(None, help="comma-separated systems (with --study)"),
    host: str = typer.Option("127.0.0.1", help="interface; the default keeps the app on this machine"),
    port: int = typer.Option(8000, help="port (0 picks a free one)"),
    allowed_hosts: str = typer.Option(
        "", help="comma-separated Host names the app answers to besides 127.0.0.1, localhost and ::1 "
                 "(the name raters type, e.g. ratings.hospital.org behind a reverse proxy)"),
) -> None:
    """Run the rating app with uvicorn (loopback only unless --host says otherwise)."""
    import uvicorn

    from clinalign.rate import db
    from clinalign.rate.app import GuardedH11Protocol, create_app

    if items is not None or study is not None:
        k, rows = _load_items(items, study, kind, task, systems)
        con = db.init_db(db_path)
        name = (items.stem if items else f"{Path(study).name}-{task}-{k}")  # type: ignore[arg-type]
        if not any(c["name"] == name for c in db.campaigns(con)):
            db.create_campaign(con, name, k, rows)
            typer.echo(f"created campaign {name!r} ({len(rows)} {k} items); raters see it once assigned "
                       f"(clinalign rate assign)", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host}: anyone who can reach it may try tokens; use TLS in front", err=True)
    hosts = [h.strip() for h in allowed_hosts.split(",") if h.strip()]
    if host not in ("0.0.0.0", "::"):
        hosts.append(host)
    uvicorn.run(create_app(db_path, allowed_hosts=hosts), host=host, port=port, log_level="info", server_header=False,
                http=GuardedH11Protocol, h11_max_incomplete_event_size=64 * 1024)


@app.command()
def export(
    db_path: Path = _DB,
    likert: Path | None = typer.Option(None, help="write Likert ratings CSV (for the study report)"),
    pairs: Path | None = typer.Option(None, help="write DPO pairs JSONL (prompt/chosen/rejected)"),
    kto: Path | None = typer.Option(None, "--kto", help="write KTO rows JSONL (prompt/completion/label)"),
) -> None:
    """Export Likert ratings (one row per item and rater) and/or majority pairwise picks as DPO pairs.

    A file with nothing to hold is never written. When no requested file has anything (nobody has rated
    yet, or no pairwise item has a majority) the command says so in one line and exits 1, so a script stops
    before training on nothing; otherwise it writes the others and names each file it left out."""
    from clinalign.data.io import check_output_file
    from clinalign.rate import db
    from clinalign.rate.export import NothingToExport, export_kto, export_likert_csv, export_pairs

    if likert is None and pairs is None and kto is None:
        raise ConfigError("nothing to export: give --likert FILE.csv, --pairs FILE.jsonl and/or --kto FILE.jsonl")
    for out in (likert, pairs, kto):
        if out is not None:
            check_output_file(out)
    con = db.open_db(db_path)
    asked = [(out, write, what) for out, write, what in ((likert, export_likert_csv, "Likert ratings"),
                                                         (pairs, export_pairs, "DPO pairs"), (kto, export_kto, "KTO rows"))
             if out is not None]
    empty: list[tuple[str, NothingToExport]] = []
    for out, write, what in asked:
        try:
            typer.echo(f"{write(con, out)} {what} -> {out}")
        except NothingToExport as e:
            empty.append((what, e))
    if len(empty) == len(asked):  # one line: the files left out for the same reason together
        by_reason: dict[str, list[str]] = {}
        for _, e in empty:
            by_reason.setdefault(e.reason, []).extend(e.paths)
        raise NothingToExport("; ".join(str(NothingToExport(r, tuple(p))) for r, p in by_reason.items()))
    for what, e in empty:
        typer.echo(f"0 {what}: {e}")

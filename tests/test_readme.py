"""The README's commands, run in order as one sequence in a fresh copy of the repository (#18).

Every ```bash block of README.md is run, top to bottom, through the same entry point as the
``clinalign`` command, in a temporary folder holding the tracked files of this working tree (so an
edit to README.md is tested before it is committed). A block preceded by
``<!-- readme-test: skip (why) -->`` is not run (GPUs, servers, outside tools); every line of the
other blocks must be a ``clinalign`` command. Stand-ins keep it to the quick parts, each the
smallest change that lets the real command run here:

- the embedded default model is replaced by the tiny test model (``--model default`` and a study's
  ``model:``), with LoRA on its last layer where the README says the last 6 (it has 2);
- before ``rate export``, a stand-in rater rates every item of the database (the clinicians' part);
- the data are smaller: ``data generate --n 400`` makes 80 records, a study's tasks 40 records each,
  with 200 bootstrap draws.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from clinalign.cli import run

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<why>.*?)\) -->\n)?```bash\n(?P<body>.*?)```", re.S)


def readme_blocks(text: str) -> list[tuple[str | None, list[list[str]]]]:
    """(skip reason or None, commands) per bash block; a command is its argv, comments dropped."""
    blocks = []
    for m in BLOCK.finditer(text):
        body = m["body"].replace("\\\n", " ")
        cmds = [shlex.split(line, comments=True) for line in body.splitlines()]
        blocks.append((m["why"], [c for c in cmds if c]))
    return blocks


def clinalign_args(cmd: list[str]) -> list[str]:
    """The arguments after ``clinalign`` / ``python -m clinalign``; anything else is an error."""
    if cmd[:1] == ["clinalign"]:
        return cmd[1:]
    if cmd[:3] == ["python", "-m", "clinalign"]:
        return cmd[3:]
    raise AssertionError(f"README: {shlex.join(cmd)!r} is not a clinalign command: mark its block "
                         "<!-- readme-test: skip (why) --> or move it out of the block")


def on_tiny(args: list[str], tiny: Path) -> list[str]:
    """The stand-in for the embedded default model: the tiny test model, LoRA on its last layer."""
    args = [str(tiny) if a == "default" and i and args[i - 1] == "--model" else a for i, a in enumerate(args)]
    args = [a.replace("lora_layers=6", "lora_layers=1") for a in args]
    if args[:2] == ["data", "generate"] and "--n" in args:
        args[args.index("--n") + 1] = "80"
    if args[:2] == ["study", "run"]:
        args += [f"model={tiny}", "sft.lora_layers=1", "dpo.lora_layers=1", "eval.n_boot=200"]
        if not any(a.startswith("tasks=") for a in args):
            ids = [t["id"] for t in yaml.safe_load(Path(args[2]).read_text(encoding="utf-8"))["tasks"]]
            args.append("tasks=[" + ", ".join(f"{{id: {i}, n: 40}}" for i in ids) + "]")
    return args


def rate_everything(db: Path) -> int:
    """The clinicians' stand-in: one rater scores every Likert item 4 and picks the first answer of every pair."""
    from clinalign.rate import db as rdb

    con = rdb.open_db(db)
    rater = rdb.rater_for_token(con, rdb.add_rater(con, "readme-test rater"))
    n = 0
    for c in rdb.campaigns(con):
        for slot in rdb.rater_order(con, rater.id, c["id"]):
            likert = c["kind"] == "likert"
            rdb.save_rating(con, rater.id, slot, 4 if likert else None, None if likert else "a", "")
            n += 1
    con.close()
    return n


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [rel for rel in out.decode().split("\0") if rel]


def copy_of_worktree(dest: Path) -> Path:
    for rel in tracked_files():
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def test_readme_blocks_parse():
    blocks = readme_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    assert all(why for why, cmds in blocks if any(c[0] not in ("clinalign", "python") for c in cmds))
    assert blocks[0][0] and "make demo" in shlex.join(blocks[0][1][0])  # the two commands: not run by it
    with pytest.raises(AssertionError, match="not a clinalign command"):
        clinalign_args(["ollama", "run", "x"])
    assert on_tiny(["train", "sft", "--model", "default", "--lora", "lora_layers=6"], Path("/t")) == [
        "train", "sft", "--model", "/t", "--lora", "lora_layers=1"]
    assert on_tiny(["study", "run", str(ROOT / "configs/quick.yaml")], Path("/t"))[-1] == (
        "tasks=[{id: uti_classification, n: 40}, {id: message_triage, n: 40}]")


@pytest.mark.slow  # the README's whole sequence: training, studies, export
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the tracked files")
def test_readme_commands_run_in_order(tmp_path, tiny_model_dir, monkeypatch, capsys):
    repo = copy_of_worktree(tmp_path / "clone")
    monkeypatch.chdir(repo)
    tiny = Path(tiny_model_dir)
    ran: list[str] = []
    seconds: list[tuple[float, str]] = []  # printed with -s: where the test's time goes

    def clinalign(args: list[str]) -> None:
        t0 = time.perf_counter()
        rc = run(args)
        seconds.append((round(time.perf_counter() - t0, 1), shlex.join(args)[:90]))
        out = capsys.readouterr()
        assert rc == 0, f"README command failed (exit {rc}): clinalign {shlex.join(args)}\n{out.out[-1500:]}{out.err[-1500:]}"
        ran.append(shlex.join(args))

    for why, cmds in readme_blocks((repo / "README.md").read_text(encoding="utf-8")):
        if why:
            continue
        for cmd in cmds:
            args = on_tiny(clinalign_args(cmd), tiny)
            if args[:2] == ["rate", "export"]:
                assert rate_everything(repo / args[args.index("--db") + 1]) > 0
            clinalign(args)
    print(*sorted(seconds, reverse=True)[:8], sep="\n")
    assert len(ran) >= 24
    # the sequence's files are where the README says, and nothing was written outside runs/
    for f in ("runs/data/uti/test.jsonl", "runs/dpo/final", "runs/data/picks-kto.jsonl", "runs/kto/final",
              "runs/quick/results.json", "runs/merged/README.md", "runs/audit.json", "runs/gguf/Modelfile",
              "runs/vertex-preference.jsonl", "runs/likert.csv"):
        assert (repo / f).exists(), f
    tracked = set(tracked_files())
    strays = [p for p in repo.rglob("*") if p.is_file() and p.relative_to(repo).parts[0] != "runs"
              and p.relative_to(repo).as_posix() not in tracked]
    assert not strays, strays


def test_readme_says_what_make_test_installs():
    """`make test` runs scripts/setup-browser.sh, which installs a system package with apt (sudo when
    not root): the README says so, in the words of the script's own commands."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    test_target = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/setup-browser.sh" in test_target
    script = (ROOT / "scripts" / "setup-browser.sh").read_text(encoding="utf-8")
    assert "apt-get update" in script and "apt-get install" in script and "--no-install-recommends chromium" in script
    assert 'SUDO="sudo"' in script and "[ -x /usr/bin/chromium ]" in script
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # line breaks as spaces
    for words in ("`make test` installs itself: it first runs `scripts/setup-browser.sh`", "`apt-get update`",
                  "`apt-get install --no-install-recommends chromium`", "through `sudo` when you are not root",
                  "when `/usr/bin/chromium` is missing", "the browser tests are skipped"):
        assert words in readme, words

"""The README stays true to the CLI: every ``mrisr ...`` example parses, every command is toured,
every ``--help`` works and lists its options, and the files the README links to exist.

Examples are parsed with the real click command behind the typer app (``make_context``, which
converts and checks every argument and option) but never executed. Shell line continuations
(``\\``), comments, ``&&`` / ``;`` / ``|`` chains and ``<placeholder>`` words are handled; square
bracket synopses are not: the README's shell blocks hold runnable commands.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from mrisr.cli import app

# typer >= 0.2x vendors click (typer._click), older typer uses click itself: take the classes from typer
UsageError = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "zsh"}
CHAIN_OPERATORS = {";", "&&", "||", "|", "&"}

runner = CliRunner()


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return [(m.group(1).strip().lower(), m.group(2)) for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, re.M | re.S)]


def logical_lines(body: str) -> list[str]:
    """Join backslash continuations, drop a leading ``$ `` prompt."""
    lines, current = [], ""
    for raw in body.splitlines():
        stripped = raw.rstrip()
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(re.sub(r"^\s*\$\s+", "", current))
        current = ""
    if current:
        lines.append(current)
    return lines


def shell_commands(line: str) -> list[list[str]]:
    """Words of each simple command in a shell line (comments and placeholders handled)."""
    line = re.sub(r"<[^<>\s]+>", "PLACEHOLDER", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    commands, words = [], []
    for token in lexer:
        if token in CHAIN_OPERATORS:
            commands.append(words)
            words = []
        else:
            words.append(token)
    commands.append(words)
    return [words for words in commands if words]


def readme_mrisr_commands(text: str | None = None) -> list[list[str]]:
    """The arguments (after ``mrisr``) of every mrisr command in the README's shell code blocks."""
    found = []
    for language, body in code_blocks(_readme() if text is None else text):
        if language not in SHELL_LANGUAGES:
            continue
        for line in logical_lines(body):
            for words in shell_commands(line):
                if words[0] == "mrisr" or words[0].endswith("/mrisr"):
                    found.append(words[1:])
    return found


def _group():
    group = typer.main.get_command(app)
    assert hasattr(group, "commands"), "the mrisr app is not a command group"
    return group


def visible_commands() -> dict:
    group = _group()
    return {name: cmd for name, cmd in group.commands.items() if not getattr(cmd, "hidden", False)}


def parse(args: list[str]):
    """Parse ``mrisr ARGS`` like the shell would run it, without running it."""
    group = _group()
    assert args, "a bare `mrisr` in the README"
    root = typer.Context(group, info_name="mrisr")
    name = args[0]
    command = group.get_command(root, name)
    assert command is not None, f"README uses `mrisr {name}`, which is not a command ({', '.join(group.commands)})"
    return command.make_context(name, list(args[1:]), parent=root)


# --------------------------------------------------------------------------- the parser itself


def test_shell_line_handling():
    text = (
        "```bash\n"
        "$ mrisr reconstruct a.nii.gz --prior b.nii.gz \\\n"
        "    --finetune -o c.nii.gz   # a comment\n"
        "mrisr info && mrisr simulate <hr>.nii.gz -o lr.nii.gz; echo done | tee log\n"
        "pip install mrisr\n"
        "```\n"
        "```python\nmrisr demo\n```\n"
    )
    assert readme_mrisr_commands(text) == [
        ["reconstruct", "a.nii.gz", "--prior", "b.nii.gz", "--finetune", "-o", "c.nii.gz"],
        ["info"],
        ["simulate", "PLACEHOLDER.nii.gz", "-o", "lr.nii.gz"],
    ]


def test_parse_rejects_what_the_shell_would():
    with pytest.raises(UsageError):
        parse(["reconstruct", "a.nii.gz", "--no-such-option"])
    with pytest.raises(UsageError):
        parse(["evaluate", "only_one.nii.gz"])  # GROUND_TRUTH missing
    with pytest.raises(UsageError):
        parse(["phantom", "-o", "out/", "--frames", "many"])
    with pytest.raises(AssertionError):
        parse(["resolve-everything", "x"])


# --------------------------------------------------------------------------- the README


def test_readme_has_examples():
    commands = readme_mrisr_commands()
    assert len(commands) >= 15, f"expected a CLI tour in {README}, found {len(commands)} mrisr commands"


@pytest.mark.parametrize("args", readme_mrisr_commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(args):
    if "--help" in args:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        return
    try:
        ctx = parse(args)
    except UsageError as exc:
        pytest.fail(f"README: `mrisr {' '.join(args)}` does not parse: {exc.format_message()}")
    assert ctx.command.name == args[0]


def test_readme_tours_every_command():
    used = {args[0] for args in readme_mrisr_commands()}
    missing = sorted(set(visible_commands()) - used)
    assert not missing, f"README has no example of: {', '.join('mrisr ' + m for m in missing)}"


def test_readme_inline_commands_name_real_options():
    group = _group()
    prose = re.sub(r"^```.*?^```", "", _readme(), flags=re.M | re.S)
    spans = re.findall(r"(?<!`)`(mrisr [^`]+)`(?!`)", prose)
    assert spans, "README prose mentions no `mrisr ...` command"
    for span in spans:
        words = shlex.split(re.sub(r"<[^<>\s]+>", "PLACEHOLDER", span))[1:]
        if not words or words[0].startswith("-"):
            continue
        command = group.commands.get(words[0])
        assert command is not None, f"README mentions `{span}`: no command {words[0]!r}"
        known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]} | {"--help"}
        for word in words[1:]:
            if word.startswith("-") and word != "-":
                assert word.split("=", 1)[0] in known, f"README mentions `{span}`: {word} is not an option of {words[0]}"


def test_readme_python_imports_exist():
    blocks = [body for language, body in code_blocks(_readme()) if language == "python"]
    assert blocks
    for body in blocks:
        compile(body, "README.md", "exec")
        for module, names in re.findall(r"^from (mrisr[\w.]*) import ([\w, ]+)$", body, re.M):
            mod = importlib.import_module(module)
            for name in (n.strip() for n in names.split(",")):
                assert hasattr(mod, name), f"README imports {name} from {module}, which has no such name"


def test_readme_links_exist():
    text = _readme()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"^(https?:|mailto:|#)", t)]
    assert "docs/figure.png" in local, "README must show docs/figure.png"
    missing = [t for t in local if t and not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_readme_anchors_resolve():
    text = _readme()
    headings = re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S), re.M)

    def slug(heading: str) -> str:  # GitHub's rule: lower-case, drop punctuation, spaces -> "-"
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    slugs = {slug(h) for h in headings}
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in slugs, f"README links to #{anchor}, but no heading has that anchor"


# --------------------------------------------------------------------------- --help


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in visible_commands():
        assert name in result.output, f"`mrisr --help` does not list {name}"


@pytest.mark.parametrize("name", sorted(visible_commands()))
def test_command_help_mentions_its_options(name):
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    command = visible_commands()[name]
    assert command.help, f"mrisr {name} has no help text"
    assert command.help.split("\n")[0].strip()[:30] in " ".join(result.output.split())
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "option":
            assert param.opts[0] in result.output, f"`mrisr {name} --help` does not show {param.opts[0]}"
            assert param.help, f"mrisr {name} {param.opts[0]}: option has no help text"
        else:
            # rich help prints argument names in either case depending on the typer version
            assert param.name.lower() in result.output.lower(), f"`mrisr {name} --help` does not show {param.name}"


def test_readme_setup_commands_are_makefile_targets():
    text = _readme()
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in text, f"README does not give the set-up command `make {target}`"
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no `{target}` target"

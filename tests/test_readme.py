"""Every command in README.md's shell blocks works as written, as far as can be checked without running it.

- ``python -m vistr_lit.<entry> ...`` and the ``vistr-*`` console scripts: a Hydra entry point composes its
  config with the command's overrides (each value of a sweep, every option of a ``glob``); an argparse entry
  point parses the command's arguments with its own parser (stopped right after parsing).
- ``make TARGET``: the Makefile has the target, and the Hydra commands of its recipe (``make -n``) compose.
- ``python scripts/X.py``: the script exists.
- Anything else must be one of a few plain shell tools (a typo'd program name fails).
"""

import argparse
import importlib
import re
import shlex
import subprocess
import tomllib
from itertools import product
from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIG_DIR = ROOT / "src" / "vistr_lit" / "conf"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PLAIN_TOOLS = {"cd", "export", "git", "mkdir", "ln", "unzip", "zip", "tar", "wget", "curl", "wandb", "ls"}
README_MAX_LINES = 300
README_MAX_HEX = 5


def shell_blocks(text: str) -> list[str]:
    """The bodies of the fenced code blocks whose language is a shell."""
    blocks, body, language = [], None, None
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and body is None:
            body, language = [], fence.group(1)
        elif fence:
            if language in SHELL_LANGUAGES:
                blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def commands(block: str) -> list[list[str]]:
    """One argv per command: continuations joined, comments and ``VAR=value`` / ``time`` prefixes dropped."""
    argvs = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        while argv and (argv[0] == "time" or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0])):
            argv = argv[1:]
        if argv:
            argvs.append(argv)
    return argvs


def readme_commands() -> list[list[str]]:
    return [argv for block in shell_blocks(README.read_text()) for argv in commands(block)]


def console_scripts() -> dict[str, str]:
    """``vistr-train`` -> ``vistr_lit.train`` (the module of each console script in pyproject.toml)."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def hydra_config_name(module: str) -> str | None:
    """The ``config_name`` of the module's ``@hydra.main``, or None for a plain (argparse) entry point."""
    source = Path(importlib.util.find_spec(module).origin).read_text()
    found = re.search(r"@hydra\.main\(.{0,200}?config_name=\"(\w+)\"", source, flags=re.S)
    return found.group(1) if found else None


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Every combination of a multirun's sweep values (a glob over a group: the matching options)."""
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        prefix = override.input_line.split("=", 1)[0]
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif isinstance(override.value(), Glob):
            group = CONFIG_DIR / override.key_or_group
            options = sorted(p.stem for p in group.glob("*.yaml"))
            matched = override.value().filter(options)
            assert matched, f"{override.input_line}: no option of {group} matches"
            choices.append([f"{prefix}={name}" for name in matched])
        else:
            choices.append([f"{prefix}={value}" for value in override.sweep_string_iterator()])
    return [list(combination) for combination in product(*choices)]


def compose_entry(config_name: str, args: list[str]) -> None:
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    flags = [a for a in overrides if a.startswith("-")]
    assert not flags, f"Hydra flags the README should not need: {flags}"
    GlobalHydra.instance().clear()
    for combination in expand_sweeps(overrides):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=combination, return_hydra_config=True)


class _Parsed(Exception):
    pass


def parse_with_entry(module: str, args: list[str]) -> None:
    """Runs the module's ``main(args)`` up to its ``parse_args`` (argparse errors exit with status 2)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, argv=None, namespace=None):
        original(parser, argv, namespace)
        raise _Parsed

    entry = importlib.import_module(module)
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), pytest.raises(_Parsed):
        entry.main(args)


def check_python_module(module: str, args: list[str]) -> None:
    assert module.startswith("vistr_lit."), f"python -m {module}: not a vistr_lit entry point"
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    config_name = hydra_config_name(module)
    if config_name:
        compose_entry(config_name, args)
    else:
        parse_with_entry(module, args)


def make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), flags=re.M))


def check_make(args: list[str]) -> None:
    targets = [a for a in args if not a.startswith("-") and "=" not in a] or ["help"]
    missing = set(targets) - make_targets()
    assert not missing, f"make: no target {sorted(missing)} in the Makefile"
    for target in targets:
        # the recipe as make would run it (-n: print only; -o: as if installed, so no venv steps)
        dry = subprocess.run(
            ["make", "-n", "-o", ".venv/.installed", target], cwd=ROOT, capture_output=True, text=True
        )
        assert dry.returncode == 0, dry.stderr
        for argv in (shlex.split(line, comments=True) for line in dry.stdout.splitlines()):
            if len(argv) > 2 and argv[1] == "-m" and argv[2].startswith("vistr_lit."):
                check_python_module(argv[2], argv[3:])


def check_command(argv: list[str]) -> None:
    program, args = argv[0], argv[1:]
    scripts = console_scripts()
    if program == "make":
        check_make(args)
    elif program in scripts:
        check_python_module(scripts[program], args)
    elif Path(program).name.startswith("python"):
        if args[:1] == ["-m"]:
            if args[1] != "pip":
                check_python_module(args[1], args[2:])
        else:
            script = ROOT / args[0]
            assert script.is_file(), f"{args[0]}: no such script"
    else:
        assert program in PLAIN_TOOLS, f"{program}: not a vistr-lit command nor a known shell tool"


ALL_COMMANDS = readme_commands()


@pytest.mark.parametrize("argv", ALL_COMMANDS, ids=[" ".join(a)[:90] for a in ALL_COMMANDS])
def test_readme_command_works_as_written(argv):
    check_command(argv)


def test_readme_states_the_two_commands_and_stays_short():
    text = README.read_text()
    argvs = readme_commands()
    assert ["make", "train"] in argvs and ["make", "test"] in argvs
    assert len(text.splitlines()) <= README_MAX_LINES
    hashes = re.findall(r"\b[0-9a-f]{7,40}\b", text)
    assert len(hashes) <= README_MAX_HEX, f"commit-like strings in README.md: {hashes}"


def test_a_typo_in_a_key_fails():
    with pytest.raises(Exception, match="trainer.max_epoch"):
        check_command(["python", "-m", "vistr_lit.train", "+experiment=quickstart", "trainer.max_epoch=3"])


def test_a_wrong_option_or_target_fails():
    with pytest.raises(AssertionError):
        check_command(["make", "trian"])
    with pytest.raises(AssertionError):
        check_command(["python", "scripts/no_such_script.py"])
    with pytest.raises(AssertionError):
        check_command(["pyhton", "-m", "vistr_lit.train"])
    with pytest.raises(SystemExit):  # argparse exits with status 2 on an unknown flag
        check_command(["python", "-m", "vistr_lit.evaluate", "--gt", "a.json", "--resluts", "b.json"])


def markdown_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # links inside code blocks are code
    return [link for link in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", link)]


def heading_anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#+\s+(.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


DOC_PAGES = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("page", DOC_PAGES, ids=[str(p.relative_to(ROOT)) for p in DOC_PAGES])
def test_docs_links_resolve(page):
    broken = []
    for link in markdown_links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target) if target else page
        if not path.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            broken.append(f"{link} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"

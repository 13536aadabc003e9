"""``gradbench`` (the console script) and ``python -m bench``: one run or a sweep, or one of the commands.

    gradbench task=vae estimator=gumbel                 one run (as python -m bench task=vae estimator=gumbel)
    gradbench -m task=toy estimator=rloo,st seed=0,1    a sweep
    gradbench report results/                           python -m bench.report results/
    gradbench check|tune|perf|publish|recommend|export ...   python -m bench.<command> ...
    gradbench completion bash                           shell completion: eval "$(gradbench completion bash)"

A first argument that names a command hands the rest of the command line to ``python -m bench.<command>``
(the entry modules ``bench/<command>.py`` and ``bench/report``); anything else goes to Hydra as overrides.

Shell completion: ``eval "$(gradbench completion bash)"`` (in ``~/.bashrc``; zsh: after ``autoload -U
bashcompinit && bashcompinit``) completes the commands, and Hydra's config groups, options and keys after
both ``gradbench`` and ``python -m bench``; a command's own arguments complete as file names.
"""

from __future__ import annotations

import difflib
import os
import re
import runpy
import shlex
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # bench/
PROGRAM = re.compile(r"^\s*(?:\S*python[0-9.]*\s+-m\s+bench|\S*gradbench)(?=\s|$)")
"""What a completed command line starts with: ``python -m bench`` (any python) or ``gradbench``."""


def commands() -> dict[str, str]:
    """The commands, by name: the module ``python -m`` runs for each (``report``: ``bench.report``)."""
    found = {
        path.stem: f"bench.{path.stem}"
        for path in PACKAGE.glob("*.py")
        if path.stem not in ("__init__", "__main__")
    }
    found.update({path.parent.name: f"bench.{path.parent.name}" for path in PACKAGE.glob("*/__main__.py")})
    return dict(sorted(found.items()))


def is_word(argument: str) -> bool:
    """A bare word (a command's name), not an override (``key=value``, ``+key=...``) or an option."""
    return bool(re.fullmatch(r"[A-Za-z_][\w-]*", argument))


def run_command(name: str, arguments: list[str]) -> None:
    """``python -m bench.<name> arguments``, in this process; exits with its exit code."""
    sys.argv = [f"gradbench {name}", *arguments]
    runpy.run_module(commands()[name], run_name="__main__", alter_sys=True)
    sys.exit(0)


def usage() -> str:
    names = ", ".join(commands())
    return (
        "gradbench [KEY=VALUE ...]          one run (gradbench -m ...: a sweep); the settings are below\n"
        f"gradbench COMMAND [ARGUMENTS ...]  one of: {names} (gradbench COMMAND --help)\n"
        'gradbench completion bash          shell completion: eval "$(gradbench completion bash)"\n'
    )


def main(argv: list[str] | None = None) -> None:
    """The console script: a command, the shell completion, or a run through Hydra."""
    from bench.cli.main import entry, fail

    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] == "completion":
        sys.exit(completion(arguments[1:]))
    if arguments and arguments[0] == "--version":
        from bench.formats.version import code_version, describe_version

        print(f"gradbench {describe_version(code_version())}")
        sys.exit(0)
    if arguments and arguments[0] in commands():
        run_command(arguments[0], arguments[1:])
    if arguments and is_word(arguments[0]):
        close = difflib.get_close_matches(arguments[0], [*commands(), "completion"], 1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        fail(
            f"'{arguments[0]}' is neither a command{hint} nor an override (KEY=VALUE, e.g. task=toy). "
            f"Commands: {', '.join(commands())}, completion."
        )
    if arguments and arguments[0] in ("-h", "--help"):
        print(usage())
    entry(arguments)


# ---- Shell completion ----------------------------------------------------------------------------------

BASH = r"""# gradbench's bash completion: eval "$(gradbench completion bash)" (e.g. in ~/.bashrc).
# Completes after `gradbench` and `python -m bench`; another python command keeps the completion it had.
_gradbench_query() {  # $1: the python that has the package
    local line="${COMP_LINE:0:COMP_POINT}" word=""
    [[ "$line" =~ [^[:space:]]+$ ]] && word="${BASH_REMATCH[0]}"
    local choices
    choices=$(COMP_LINE="$line" "$1" -m bench completion query 2>/dev/null)
    COMPREPLY=($(compgen -W "$choices" -- "$word"))
}
_gradbench_complete() {
    _gradbench_query __PYTHON__
}
_GRADBENCH_PYTHON_BEFORE=$(complete -p python 2>/dev/null | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
_gradbench_python() {
    local ours='^[[:space:]]*[^[:space:]]*python[0-9.]*[[:space:]]+-m[[:space:]]+bench[[:space:]]'
    if [[ "$COMP_LINE" =~ $ours ]]; then
        _gradbench_query "${COMP_WORDS[0]}"
    elif [[ -n "$_GRADBENCH_PYTHON_BEFORE" ]]; then
        "$_GRADBENCH_PYTHON_BEFORE" "$@"
    fi
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
COMP_WORDBREAKS=${COMP_WORDBREAKS//:}
complete -o nospace -o default -F _gradbench_complete gradbench
complete -o nospace -o default -F _gradbench_python python python3
"""


def completion(arguments: list[str]) -> int:
    """``completion bash``: the script; ``completion query``: the choices for ``$COMP_LINE``."""
    if arguments == ["bash"]:
        print(BASH.replace("__PYTHON__", shlex.quote(sys.executable)), end="")
        return 0
    if arguments == ["query"]:
        print("\n".join(choices(os.environ.get("COMP_LINE", ""))))
        return 0
    print('usage: gradbench completion bash   (then: eval "$(gradbench completion bash)")', file=sys.stderr)
    return 2


def choices(line: str) -> list[str]:
    """What may come next on a command line that starts with ``gradbench`` or ``python -m bench``: the
    commands (as the first word), else Hydra's completion of config groups, options and keys; nothing after
    a command (the shell then completes file names)."""
    match = PROGRAM.match(line)
    if match is None:
        return []
    rest = line[match.end() :]
    words = rest.split()
    current = "" if not words or rest[-1:].isspace() else words[-1]
    before = words[: len(words) - (1 if current else 0)]
    if before and before[0] in commands():
        return []
    found = [name for name in commands() if name.startswith(current)] if not before else []
    return found + hydra_choices("gradbench " + rest)


def hydra_choices(line: str) -> list[str]:
    """Hydra's own bash completion (``--shell-completion query=bash``) of ``line``."""
    import contextlib
    import io

    from hydra.core.global_hydra import GlobalHydra

    from bench.cli.main import main as hydra_main

    saved_argv, saved_line = sys.argv, os.environ.get("COMP_LINE")
    sys.argv, os.environ["COMP_LINE"] = ["gradbench", "--shell-completion", "query=bash"], line
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.suppress(SystemExit):
            hydra_main()
    finally:
        sys.argv = saved_argv
        if saved_line is None:
            os.environ.pop("COMP_LINE", None)
        else:
            os.environ["COMP_LINE"] = saved_line
        GlobalHydra.instance().clear()
    return output.getvalue().split()

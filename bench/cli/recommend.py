"""``python -m bench.recommend [OVERRIDES] [recommend.KEY=VALUE ...]``: which estimator, learning rate and
optimizer to use for a task (``bench.campaigns.recommend``)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from bench.campaigns.recommend import RecommendFailed, Settings, parse, run_protocol, split_overrides, write
from bench.formats.errors import ConfigError
from bench.run.preflight import check_names
from bench.run.preflight import parse as parse_overrides

USAGE = """usage: python -m bench.recommend [OVERRIDES] [recommend.KEY=VALUE ...]

Which estimator (and learning rate; optimizer when recommend.optimizers lists several) to use for the task
the overrides describe, e.g.

  python -m bench.recommend task=toy task.p0=0.3 recommend.budget_minutes=2
  python -m bench.recommend task=vae
  python -m bench.recommend task=custom task.factory=my_task:make_task recommend.estimators=[rloo,st,reinmax]

Settings (defaults): """


def usage() -> str:
    defaults = Settings()
    listed = ", ".join(f"recommend.{key}={value}" for key, value in defaults.__dict__.items())
    return USAGE + textwrap.fill(listed, 110) + "\n"


def fail(message: str, code: int) -> int:
    print(
        textwrap.fill(f"error: {message}", 100, break_long_words=False, break_on_hyphens=False),
        file=sys.stderr,
    )
    return code


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if any(item in ("-h", "--help") for item in arguments):
        print(usage())
        return 0
    own, overrides = split_overrides(arguments)
    try:
        settings = parse(own)
        check_names(parse_overrides(overrides), multirun=False)
        document = run_protocol(overrides, settings, lambda line: print(line, file=sys.stderr))
    except ConfigError as error:
        return fail(str(error), 2)
    except RecommendFailed as error:
        print(f"error: no recommendation: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - Hydra's refusals of the overrides, as one paragraph
        if type(error).__module__.startswith(("hydra", "omegaconf")):
            return fail(" ".join(str(error).split()), 2)
        raise
    json_path, md_path = write(document, Path(document["folder"]))
    print(document["answer"])
    if document["caveats"]:
        print("Caveats:")
        print(
            "\n".join(
                textwrap.fill(caveat, 110, initial_indent="  - ", subsequent_indent="    ")
                for caveat in document["caveats"]
            )
        )
    print(f"Written: {md_path} and {json_path}")
    return 0

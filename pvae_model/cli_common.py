"""What every ``pvae-model`` command shares: one error wrapper, the option conventions."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)  # a run, bundle or shard directory


@contextmanager
def _command_errors(prefix: str = ""):
    """Bad input, missing or unreadable files and failed runs become one-line messages (exit 1),
    never a traceback: every command runs inside this, as every ``pvae-data`` stage runs inside
    ``_run_stage``."""
    from .checkpoints import RunIOError
    from .train import NonFiniteLoss

    try:
        yield
    except (ValueError, TypeError, KeyError, OSError, RunIOError, NonFiniteLoss) as e:
        raise click.ClickException(f"{prefix}{e}") from None


def _refuse_given(names, why: str) -> None:
    """A one-line error for any of these options given on the command line (not left at its default)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = [n for n in names if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    if given:
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in given)} {why}")


def _parse_set(items: tuple[str, ...]) -> dict:
    from pvae_data.config import parse_set

    try:
        return parse_set(items)
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--set: "), param_hint="--set") from None


def run_options(what: str, config_class: str, set_example: str):
    """The options every command that trains a run directory shares (``--out``, ``--config``,
    ``--epochs``, ``--resume``, ``--set``, ``-q``), as one decorator."""

    options = [
        click.option("--out", "out", required=True, type=click.Path(path_type=Path), help=f"{what} directory."),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help=f"YAML {config_class}."),
        click.option("--epochs", type=click.IntRange(1), default=None, help="Train exactly this many epochs."),
        click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."),
        click.option("--set", "sets", multiple=True, help=f"Any config field, e.g. --set {set_example}"),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


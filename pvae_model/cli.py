"""``pvae-model``: training, evaluation and reports (commands arrive with their issues)."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="pvae-model")
def main() -> None:
    """The Partitioned VAE of Hsu & Glass (2018) on spoken + written digits.

    Model commands (train, evaluate, report) are not implemented yet; this
    group exists so the package and its entry point are in place.
    """


if __name__ == "__main__":
    main()

"""Entry point of the ``landscape`` command. Commands are thin; the work lives in the library.

Every user mistake becomes one line ``Error: ...`` on stderr with a non-zero exit status
(1 for problems found while running, 2 for command-line usage) and no traceback.
"""

from __future__ import annotations

import os
import sys

import click

from landscape import distributed
from landscape.errors import LandscapeError

from .analyze import analyze
from .info import info
from .plot import plot
from .study import study
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog="""\b
Quick start:
  landscape train --model conv1d --optimizer adam --lr 1e-2 --batch-size 100 --steps 3000 --out runs/cnn
  landscape analyze runs/cnn
  landscape plot runs/cnn
  landscape info runs/cnn
""")
@click.version_option(package_name="landscape-toolkit")
def cli():
    """Link optimizer choice to loss geometry and generalization.

    Train PyTorch models with a large optimizer suite, checkpoint them to HDF5, and analyse the
    checkpoints.
    """


cli.add_command(train)
cli.add_command(analyze)
cli.add_command(plot)
cli.add_command(study)
cli.add_command(info)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the status code.

    Under torchrun (WORLD_SIZE > 1) the process joins the group; ``train`` runs DistributedDataParallel
    (each rank a block of every global batch); ``study`` gives each rank its own runs; ``analyze --slice``
    and ``--connect`` split their grid and path points across the ranks; the curvature and sharpness
    analyses and evaluations split the data and all-reduce every sum; ``plot`` and ``info`` run on
    rank 0 only; ``analyze --backend pyhessian`` (the peer's code) is refused. Only rank 0 prints and
    writes."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if distributed.init_from_environment():
            command = next((a for a in args if not a.startswith("-")), "")
            if command in ("plot", "info") and not distributed.is_main():
                distributed.shutdown()  # rank 0 draws; meet it at its shutdown barrier
                return 0
            if not distributed.is_main():
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        cli.main(args=argv, prog_name="landscape", standalone_mode=False)
        code = 0
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        click.echo(f"Error: {' '.join(exc.format_message().split())}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("Error: interrupted; finished checkpoints are intact, continue with --resume", err=True)
        code = 130
    except LandscapeError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = 1
    except MemoryError:
        click.echo("Error: out of memory; use a smaller --batch-size or --samples", err=True)
        code = 1
    if distributed.initialized():
        try:
            distributed.shutdown()
        except RuntimeError:  # another rank failed; torchrun reports it
            code = code or 1
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

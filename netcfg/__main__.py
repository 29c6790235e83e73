"""The ``netcfg`` command's entry point, also ``python -m netcfg`` (``torchrun -m netcfg train SOLVER``).

Free of typer and torch, so that a Ctrl-C or SIGTERM while they and the commands
load (half a second) stops the command as it would later: a message and exit
130 or 143, not an import traceback.
"""

from netcfg.stop import exits_when_stopped, signals_stop


def main(argv: list[str] | None = None) -> None:
    with signals_stop(), exits_when_stopped():
        from netcfg.cli import app

        app.main(argv)


if __name__ == "__main__":
    main()

"""``python -m netcfg``: the ``netcfg`` command, for ``torchrun -m netcfg train SOLVER``."""

from netcfg.cli.app import main

if __name__ == "__main__":
    main()

"""``python -m clinalign ...`` and ``torchrun ... -m clinalign ...``: the same CLI as ``clinalign``."""

from clinalign.cli import main

main()

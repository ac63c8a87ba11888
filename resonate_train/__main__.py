"""``python -m resonate_train`` (and ``torchrun -m resonate_train``): the ``resonate-train`` CLI."""

from resonate_train.cli import main

main()

"""Network definitions the scorers run: our own code of published audio networks, laid out so their
released checkpoints load key for key (PANNs Cnn14, VGGish; PaSST through hear21passt's classes),
and the mini world's clap-mini (its weights ship with the synthetic world, ``ttaeval/synth/weights``).
Written from the papers and the documented preprocessing; the published packages are test
references only (``tests/test_backbones.py``)."""

"""Our own definitions of published audio networks, laid out so their released checkpoints load
key for key (PANNs Cnn14, VGGish). Written from the papers and the documented preprocessing; the
published packages are test references only (``tests/test_backbones.py``)."""

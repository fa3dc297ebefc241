"""Decoders: what picks the next token once the image is encoded (see `base.Decoder`).

A regular package, so setuptools' `find` ships it; the torch decoder is imported only when a local model loads.
"""

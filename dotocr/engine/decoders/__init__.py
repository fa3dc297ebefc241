"""Decoders: what picks the next token once the image is encoded (see `base.Decoder`): PyTorch's `generate()`
or llama.cpp's. A regular package, so setuptools' `find` ships it; each decoder is imported only when a local
model loads.
"""

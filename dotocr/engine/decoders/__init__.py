"""Decoders: what turns a prompt with images into new tokens (PyTorch's or llama.cpp's)."""

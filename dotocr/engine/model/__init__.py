"""The dots.ocr model: its configuration, its architecture, and how its checkpoint spells things.

`spellings` is light (no torch) and read by the prompt, the remote engine and the GGUF writers; the
configuration and modeling modules import transformers and are loaded only with a local model.
"""

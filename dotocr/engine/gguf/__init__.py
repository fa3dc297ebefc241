"""llama.cpp's files from a dots.ocr checkpoint, laid out as llama.cpp's own `conversion/` package.

`base.py` owns what every file shares (the streaming writer, the checkpoint's tensors, the cache's names),
`decoder.py` writes the Qwen2 decoder with its tokenizer, `mmproj.py` the vision tower as a `dots_ocr` mmproj,
and `convert.py` keeps the files in the cache and is `dotocr convert-gguf`.
"""

"""Small random dots.ocr checkpoints for tests, built offline (widths are multiples of 64 so 4-bit runs on CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from dotocr.engine import DotsOCRConfig, DotsOCRForCausalLM
from dotocr.engine.plan import LoadPlan

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "preprocessor_config.json", "generation_config.json")


def tiny_config(**overrides) -> DotsOCRConfig:
    vision = dict(embed_dim=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, rms_norm_eps=1e-5)
    vision.update(overrides.pop("vision", {}))
    params = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                  image_token_id=1000, video_token_id=991, vision_config=vision)
    params.update(overrides)
    return DotsOCRConfig(**params)


def tiny_model(seed: int = 0, **overrides) -> DotsOCRForCausalLM:
    torch.manual_seed(seed)
    return DotsOCRForCausalLM(tiny_config(**overrides)).eval()


def save_tiny_checkpoint(folder: Path, tokenizer_source: Path, seed: int = 0, **overrides) -> Path:
    """A complete checkpoint folder: random weights plus the golden fixture's tokenizer and configs."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_model(seed, **overrides).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, folder / name)
    return folder


DOTS_SPECIAL_TOKENS = ("<|endoftext|>", "<|imgpad|>", "<|img|>", "<|endofimg|>", "<|user|>", "<|endofuser|>",
                       "<|assistant|>", "<|endofassistant|>")


def build_tiny_tokenizer(folder: Path, corpus: list[str]):
    """A byte-level BPE tokenizer trained here, offline, with the dots.ocr special tokens (ids 0..7)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(DOTS_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   additional_special_tokens=list(DOTS_SPECIAL_TOKENS[1:]))
    fast.save_pretrained(folder)
    return fast


def save_own_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A complete checkpoint made entirely here: random weights, our own tokenizer, official processor config."""
    import json

    from dotocr.engine.inputs.preprocessing import DOTS_PREPROCESSOR_CONFIG
    from dotocr.engine.inputs.prompts import PROMPT_GROUNDING_OCR, PROMPT_LAYOUT_ALL_EN, PROMPT_OCR

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(folder, [PROMPT_OCR, PROMPT_LAYOUT_ALL_EN, PROMPT_GROUNDING_OCR,
                                              "Hello world 0123456789 | --- | $$ x^2 $$ ....... ______"])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in DOTS_SPECIAL_TOKENS}
    tiny_model(seed, vocab_size=512, image_token_id=ids["<|imgpad|>"], video_token_id=511).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DOTS_PREPROCESSOR_CONFIG))
    (folder / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [ids["<|endoftext|>"], ids["<|endofassistant|>"]]}))
    return folder


def save_scripted_checkpoint(folder: Path, tokenizer_source: Path, successor: dict[int, int], seed: int = 0,
                             doubt: dict[int, int | tuple[int, ...]] | None = None) -> Path:
    """A tiny checkpoint whose answer is known in advance: after token t it writes successor[t], whatever the image.

    Every layer's attention output and MLP output projections are zero, so the hidden state at a position is
    the embedding of its token and the next token depends on the previous one alone; the lm_head row of each
    successor points along the embedding of the token before it (a logit near 20 * sqrt(width), against a few
    units for any other row). Greedy decoding then follows the chain from `<|assistant|>`: to
    `<|endofassistant|>` for an answer that stops, or round a cycle for one that loops. The vision tower is
    untouched (random), so the image still goes through every real step.

    `doubt` makes the model unsure at chosen steps: after token t it also considers doubt[t], whose lm_head row
    points the same way at 0.9975 of the strength, so successor[t] still wins, with a probability near 0.6 (near
    0.43 against two rivals, doubt[t] a tuple).
    """
    model = tiny_model(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        head = model.lm_head.weight
        rows: dict[int, torch.Tensor] = {}
        for before, after in successor.items():
            direction = embed[before] / embed[before].norm()
            rows[after] = rows.get(after, torch.zeros_like(direction)) + 20.0 * direction
        for before, rivals in (doubt or {}).items():
            direction = embed[before] / embed[before].norm()
            for rival in (rivals,) if isinstance(rivals, int) else rivals:
                rows[rival] = rows.get(rival, torch.zeros_like(direction)) + 19.95 * direction
        for token, row in rows.items():
            head[token] = row
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_source / name, folder / name)
    return folder


FIRST_FREE_TOKEN = 486
"""The golden tokenizer's first <|reserved_N|> token: ordinary (not special) added tokens, free to rename."""


def save_answer_checkpoint(folder: Path, tokenizer_source: Path, pieces: list[str], seed: int = 0) -> Path:
    """A scripted checkpoint whose answer is "".join(pieces), whatever the image, then end of answer.

    A scripted answer cannot repeat a token (the next token depends on the last alone), and a table repeats <td>;
    so each piece becomes a token of its own: the golden tokenizer's reserved added tokens are renamed to the
    pieces (they decode to their content as they are), and the chain runs <|assistant|> -> piece 1 -> ... ->
    <|endofassistant|>.
    """
    import json

    added = json.loads((tokenizer_source / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    ids = {token["content"]: token["id"] for token in added}
    chain = [ids["<|assistant|>"], *range(FIRST_FREE_TOKEN, FIRST_FREE_TOKEN + len(pieces)),
             ids["<|endofassistant|>"]]
    save_scripted_checkpoint(folder, tokenizer_source, dict(zip(chain, chain[1:], strict=False)), seed)
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    for token in tokenizer["added_tokens"]:
        if FIRST_FREE_TOKEN <= token["id"] < FIRST_FREE_TOKEN + len(pieces):
            token["content"] = pieces[token["id"] - FIRST_FREE_TOKEN]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    return folder


PATCH_KERNEL = "vision_tower.patch_embed.patchifier.proj.weight"


def save_bf16_kernel_checkpoint(folder: Path, source: Path) -> Path:
    """`source` (the golden checkpoint) with its patch kernel stored in BF16, as in the real dots.ocr checkpoint:
    llama.cpp's patch embedding then rounds nothing, so its vision matches ours exactly (mmproj_export.py)."""
    from safetensors.torch import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix == ".json":
            shutil.copy(path, folder / path.name)
    weights = load_file(source / "model.safetensors")
    weights[PATCH_KERNEL] = weights[PATCH_KERNEL].to(torch.bfloat16)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def llamacpp_plan(gguf_type: str, precision: str = "fp32", device: str = "cpu") -> LoadPlan:
    """The plan `plan_load` would make for the llama.cpp decoder with this GGUF type (tests pick the type)."""
    return LoadPlan(device, precision, "test", decoder="llamacpp", gguf_type=gguf_type)

"""The GGUF writer: llama.cpp's qwen2 layout and metadata, streamed tensors, the cache and its atomic writes.

What llama.cpp itself makes of the files (logits, tokenizer, quantisation) is in test_llamacpp_decoder.py.
"""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

gguf = pytest.importorskip("gguf", reason="the GGUF writer needs the gguf package (pip install 'dotocr[llamacpp]')")

from dotocr.engine.gguf.convert import GGUFExportError, ensure_gguf, gguf_path  # noqa: E402
from dotocr.engine.gguf.decoder import QWEN2_SPLIT_REGEX, _pre_tokenizer, read_vocab, write_decoder_gguf  # noqa: E402
from tests.tiny_models import save_tiny_checkpoint  # noqa: E402


def fields(reader) -> dict:
    return {name: field.contents() for name, field in reader.fields.items()}


@pytest.fixture(scope="module")
def f32_file(tmp_path_factory, dots_tiny) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    write_decoder_gguf(dots_tiny, out, "f32", progress=False)
    return out


def test_metadata_describes_the_qwen2_decoder(f32_file, dots_tiny):
    meta = fields(gguf.GGUFReader(f32_file))
    config = json.loads((dots_tiny / "config.json").read_text())
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.file_type"] == 0
    assert meta["qwen2.embedding_length"] == config["hidden_size"]
    assert meta["qwen2.block_count"] == config["num_hidden_layers"]
    assert meta["qwen2.feed_forward_length"] == config["intermediate_size"]
    assert meta["qwen2.attention.head_count"] == config["num_attention_heads"]
    assert meta["qwen2.attention.head_count_kv"] == config["num_key_value_heads"]
    assert meta["qwen2.rope.freq_base"] == pytest.approx(config["rope_theta"])
    assert meta["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    assert meta["qwen2.context_length"] == config["max_position_embeddings"]
    assert meta["tokenizer.ggml.model"] == "gpt2"
    # the fixture's tokenizer.json splits like GPT-2, but its class is Qwen2Tokenizer, which transformers 5 builds
    # with Qwen2's split: llama.cpp must split as our engine does (digits one by one)
    assert meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["tokenizer.ggml.eos_token_id"] == 978
    assert meta["tokenizer.ggml.eot_token_id"] == 1008  # <|endofassistant|>: llama.cpp stops there too
    assert meta["tokenizer.ggml.padding_token_id"] == 1015
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.ggml.bos_token_id" not in meta  # the checkpoint has none
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == config["vocab_size"]
    assert tokens[1000] == "<|imgpad|>" and types[1000] == gguf.TokenType.CONTROL
    assert tokens[486] == "<|reserved_0|>" and types[486] == gguf.TokenType.USER_DEFINED  # added, not special
    spec = json.loads((dots_tiny / "tokenizer.json").read_text())
    assert all(tokens[i] == text and types[i] == gguf.TokenType.NORMAL for text, i in spec["model"]["vocab"].items())
    assert meta["tokenizer.ggml.merges"] == [" ".join(pair) for pair in spec["model"]["merges"]]
    assert "<|assistant|>" in meta["tokenizer.chat_template"]


def test_tensors_have_llama_cpp_names_shapes_and_exact_values(f32_file, dots_tiny):
    reader = gguf.GGUFReader(f32_file)
    weights = load_file(dots_tiny / "model.safetensors")
    expected = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                "output.weight": "lm_head.weight"}
    layer = [("attn_norm.weight", "input_layernorm.weight"), ("attn_q.weight", "self_attn.q_proj.weight"),
             ("attn_q.bias", "self_attn.q_proj.bias"), ("attn_k.weight", "self_attn.k_proj.weight"),
             ("attn_k.bias", "self_attn.k_proj.bias"), ("attn_v.weight", "self_attn.v_proj.weight"),
             ("attn_v.bias", "self_attn.v_proj.bias"), ("attn_output.weight", "self_attn.o_proj.weight"),
             ("ffn_norm.weight", "post_attention_layernorm.weight"), ("ffn_gate.weight", "mlp.gate_proj.weight"),
             ("ffn_up.weight", "mlp.up_proj.weight"), ("ffn_down.weight", "mlp.down_proj.weight")]
    for i in range(2):
        for ours, theirs in layer:
            expected[f"blk.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    found = {t.name: t for t in reader.tensors}
    assert set(found) == set(expected)  # no vision tensors, nothing missing
    for name, source in expected.items():
        tensor, want = found[name], weights[source].numpy()
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == list(reversed(want.shape))  # GGUF lists the fastest dimension first
        np.testing.assert_array_equal(np.asarray(tensor.data).reshape(want.shape), want)


def test_f16_keeps_norms_and_biases_in_f32(tmp_path, dots_tiny):
    out = tmp_path / "tiny-f16.gguf"
    write_decoder_gguf(dots_tiny, out, "f16", progress=False)
    reader = gguf.GGUFReader(out)
    assert fields(reader)["general.file_type"] == 1
    for tensor in reader.tensors:
        one_d = len(tensor.shape) == 1
        assert tensor.tensor_type == (gguf.GGMLQuantizationType.F32 if one_d else gguf.GGMLQuantizationType.F16)
    embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
    want = load_file(dots_tiny / "model.safetensors")["model.embed_tokens.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(embed.data).reshape(want.shape), want.astype(np.float16))


def test_tensors_are_streamed_not_held(tmp_path, dots_tiny):
    """Peak Python-side memory while writing stays near one tensor, far below the whole decoder."""
    folder = save_tiny_checkpoint(tmp_path / "wide", dots_tiny, hidden_size=256, intermediate_size=1024,
                                  num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2)
    total = sum(t.numel() * 4 for name, t in load_file(folder / "model.safetensors").items()
                if not name.startswith("vision_tower."))
    tracemalloc.start()
    try:
        write_decoder_gguf(folder, tmp_path / "wide.gguf", "f32", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "wide.gguf").stat().st_size > total
    assert peak < total / 4, f"writing held {peak / 1e6:.1f} MB of {total / 1e6:.1f} MB of tensors"


def test_written_once_then_reused_and_keyed_by_checkpoint(tmp_path, dots_tiny):
    folder = tmp_path / "ckpt"
    shutil.copytree(dots_tiny, folder)
    cache = tmp_path / "cache"
    fractions: list[float] = []
    first = ensure_gguf(folder, "f32", directory=cache, progress=False, on_progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 27  # one per tensor
    stamp = first.stat().st_mtime_ns
    assert ensure_gguf(folder, "f32", directory=cache, progress=False) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in cache.iterdir()] == [first.name]  # no temporary files left behind
    assert gguf_path(folder, "f16", directory=cache) != first  # the type is part of the key
    weights = folder / "model.safetensors"
    data = load_file(weights)
    data["lm_head.weight"] = data["lm_head.weight"] + 1
    from safetensors.torch import save_file

    save_file(data, weights, metadata={"format": "pt"})
    second = ensure_gguf(folder, "f32", directory=cache, progress=False)
    assert second != first  # other weights, another file


def test_a_failed_write_leaves_nothing_in_the_cache(tmp_path, dots_tiny):
    folder = tmp_path / "broken"
    shutil.copytree(dots_tiny, folder)
    data = load_file(folder / "model.safetensors")
    del data["model.layers.1.mlp.down_proj.weight"]
    from safetensors.torch import save_file

    save_file(data, folder / "model.safetensors", metadata={"format": "pt"})
    cache = tmp_path / "cache"
    with pytest.raises(GGUFExportError, match="lacks decoder weights.*down_proj"):
        ensure_gguf(folder, "f16", directory=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_files_are_named_for_the_model(tmp_path, dots_tiny):
    snapshot = tmp_path / "hub" / "models--rednote-hilab--dots.ocr" / "snapshots" / "0123abcd"
    shutil.copytree(dots_tiny, snapshot)
    assert gguf_path(snapshot, "q8_0", directory=tmp_path).name.startswith("dots.ocr-")
    assert gguf_path(dots_tiny, "f16", directory=tmp_path).name.startswith("dots_tiny-")


def test_unwritable_cache_is_one_clear_sentence(tmp_path, dots_tiny):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(GGUFExportError, match="Could not write .* free some disk space"):
        ensure_gguf(dots_tiny, "f16", directory=blocker / "gguf", progress=False)


def test_unknown_type_is_one_clear_sentence(dots_tiny):
    with pytest.raises(GGUFExportError, match="Unknown GGUF type 'q3'; choose one of f32, f16, q8_0, q4_k_m"):
        gguf_path(dots_tiny, "q3")


def test_pre_tokenizer_names(dots_tiny):
    qwen2 = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT_REGEX}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}}
    assert _pre_tokenizer(qwen2, dots_tiny) == "qwen2"
    assert _pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}, dots_tiny) == "gpt-2"
    assert _pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}, dots_tiny,
                          "Qwen2Tokenizer") == "qwen2"
    other = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}{1,3}"}}, {"type": "ByteLevel", "use_regex": False}]}}
    with pytest.raises(GGUFExportError, match="use the torch decoder"):
        _pre_tokenizer(other, dots_tiny)


def test_unused_ids_up_to_the_embedding_size_are_padding(dots_tiny):
    vocab = read_vocab(dots_tiny, 1030)
    assert vocab.tokens[1027] == "[PAD1027]" and vocab.token_types[1027] == gguf.TokenType.UNUSED
    with pytest.raises(GGUFExportError, match="token id 1000, beyond the model's 1000 embeddings"):
        read_vocab(dots_tiny, 1000)


def test_tied_checkpoint_has_no_output_tensor(tmp_path, dots_tiny):
    folder = save_tiny_checkpoint(tmp_path / "tied", dots_tiny, tie_word_embeddings=True)
    write_decoder_gguf(folder, tmp_path / "tied.gguf", "f32", progress=False)
    names = {t.name for t in gguf.GGUFReader(tmp_path / "tied.gguf").tensors}
    assert "output.weight" not in names and "token_embd.weight" in names  # llama.cpp then reuses token_embd


def test_a_damaged_cached_file_is_named_set_aside_and_written_again(tmp_path, dots_tiny):
    from dotocr.engine.gguf.base import gguf_problem
    from dotocr.engine.gguf.convert import cached_gguf_problem

    cache = tmp_path / "cache"
    first = ensure_gguf(dots_tiny, "f16", directory=cache, progress=False)
    whole = first.read_bytes()
    assert gguf_problem(first) is None and cached_gguf_problem(first) is None
    for cut, words in ((10, "not even a GGUF header"), (2000, "header runs past"),
                       (len(whole) - 1, f"{len(whole) - 1:,} of its {len(whole):,} bytes")):
        first.write_bytes(whole[:cut])
        problem = cached_gguf_problem(first)
        assert problem is not None and problem.startswith("is truncated") and words in problem
        assert first.stat().st_size == cut  # doctor's check moves nothing
    first.write_bytes(b"PK\x03\x04" + whole[4:])  # not a GGUF at all
    assert "not a readable GGUF" in gguf_problem(first)
    assert ensure_gguf(dots_tiny, "f16", directory=cache, progress=False) == first
    assert first.read_bytes() == whole and len(list(cache.glob("*.broken-*"))) == 1

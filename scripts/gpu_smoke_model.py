"""Build a tiny, randomly initialised Llama-style model folder that vLLM can serve, offline.

Used by scripts/gpu-smoke.sh (no hub access there): a byte-level BPE tokenizer trained here on
skillmix's own catalog and prompt texts, saved with a chat template, and a 2-layer Llama with
random weights (head size 64, which every vLLM attention backend supports). Its replies are
gibberish; the smoke test is about the serving lifecycle, not the answers.

    python scripts/gpu_smoke_model.py OUT_DIR [--tokenizer-only]
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>"]
VOCAB_SIZE = 4096
# Role markers and an end-of-turn token, in the style of Zephyr-like templates.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def training_texts() -> list[str]:
    """Text like the prompts the model will see: the catalog, topics and prompt files."""
    texts: list[str] = []
    for pattern in ("skillmix/catalog/data/*", "prompts/*/*.json", "README.md"):
        for path in sorted(ROOT.glob(pattern)):
            texts += path.read_text(encoding="utf-8", errors="replace").splitlines()
    texts += ["<|system|>", "<|user|>", "<|assistant|>"]
    return [t for t in texts if t.strip()]


def build_tokenizer(out: Path) -> int:
    """Train and save the tokenizer (tokenizer.json, tokenizer_config.json with the chat
    template, special_tokens_map.json); returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    check_tokenizer(out)
    return len(fast)


def check_tokenizer(out: Path) -> None:
    """Load it back as vLLM does (AutoTokenizer) and render a conversation."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write about Beekeeping using a metaphor."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<s><|system|>\n") and text.endswith("<|assistant|>\n"), text
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text, "the tokenizer does not round-trip"
    print(f"tokenizer: {len(tok)} tokens; a chat prompt is {len(ids)} tokens")


def build_model(out: Path, vocab_size: int) -> None:
    """A 2-layer Llama with random weights, saved as safetensors in bfloat16."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(out))
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id}
    assert None not in ids.values(), ids
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,  # head size 64
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"]
    ).save_pretrained(str(out))
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params:,} parameters in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the model folder to create")
    parser.add_argument(
        "--tokenizer-only", action="store_true", help="only the tokenizer (no torch needed)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    vocab_size = build_tokenizer(args.out)
    if not args.tokenizer_only:
        build_model(args.out, vocab_size)


if __name__ == "__main__":
    main()

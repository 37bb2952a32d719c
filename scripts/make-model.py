#!/usr/bin/env python3
"""Writes a small random-weight llama GGUF model for llmq's end-to-end tests.

No weights can be downloaded here, so this makes a real llama-architecture model with random
weights: llama-server loads it and does real per-token work (real slots, real batching); the
text is gibberish. A byte-fallback SPM vocabulary (the 256 <0xNN> byte tokens plus some hundreds
of word pieces) means every prompt tokenizes. The end-of-sequence token's output row is zero and
the other logits are large, so generation runs to max_tokens instead of stopping at random.

usage: make-model.py OUT.gguf [--dim 512] [--layers 8] [--seed 1]
"""
import argparse
import string

import numpy as np
import gguf


def vocabulary():
    tokens, scores, types = ["<unk>", "<s>", "</s>"], [0.0, 0.0, 0.0], [
        gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    words = ("the of and to a in is it you that he was for on are with as I his they be at one have this "
             "from or had by word but what some we can out other were all there when up use your how said an "
             "each she which do their time if will way about many then them write would like so these her long "
             "make thing see him two has look more day could go come did number sound no most people my over "
             "know water than call first who may down side been now find queue stream worker redis token model "
             "reply request server slot batch haiku parallel fast slow consumer group pending").split()
    pieces = ["\u2581"] + ["\u2581" + w for w in words] + list(string.ascii_letters + string.digits + string.punctuation)
    pieces += ["\u2581" + c for c in string.ascii_lowercase]
    seen = set(tokens)
    for index, piece in enumerate(pieces):
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        scores.append(-float(index) / 10)
        types.append(gguf.TokenType.NORMAL)
    return tokens, scores, types


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--ffn", type=int, default=1376)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    tokens, scores, types = vocabulary()
    vocab, dim, ffn = len(tokens), args.dim, args.ffn

    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name("llmq-tiny-random")
    writer.add_context_length(args.context)
    writer.add_embedding_length(dim)
    writer.add_block_count(args.layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.heads)
    writer.add_rope_dimension_count(dim // args.heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(
        "{% for message in messages %}<s>{{ message['role'] }}\n{{ message['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant\n{% endif %}")

    def weight(rows, cols, scale):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(np.float16)

    ones = np.ones(dim, dtype=np.float32)
    writer.add_tensor("token_embd.weight", weight(vocab, dim, 1.0))
    for layer in range(args.layers):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", ones)
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(prefix + name + ".weight", weight(dim, dim, 0.5 / np.sqrt(dim)))
        writer.add_tensor(prefix + "ffn_norm.weight", ones)
        writer.add_tensor(prefix + "ffn_gate.weight", weight(ffn, dim, 0.5 / np.sqrt(dim)))
        writer.add_tensor(prefix + "ffn_up.weight", weight(ffn, dim, 0.5 / np.sqrt(dim)))
        writer.add_tensor(prefix + "ffn_down.weight", weight(dim, ffn, 0.5 / np.sqrt(ffn)))
    writer.add_tensor("output_norm.weight", ones)
    # Large logits (std ~ 10) with a zero row for </s>: sampling practically never ends early.
    output = weight(vocab, dim, 10.0 / np.sqrt(dim))
    output[2, :] = 0
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.out}: llama, {args.layers} layers, {dim} dims, vocabulary {vocab}")


if __name__ == "__main__":
    main()

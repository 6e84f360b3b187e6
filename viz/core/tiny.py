"""Tiny random models of every tested family, as configs: `tiny-<family>` in the model picker, and what the tests
build. Each is a few hundred kB of random weights (seeded at load), with the bundled MiniLM's WordPiece tokenizer."""

from __future__ import annotations


def tiny_config(family: str):
    """The config of `tiny-<family>`: 2-3 layers, 4 heads, widths 32-64, MiniLM's 30,522-token vocabulary."""
    import transformers as tf

    common = dict(vocab_size=30522, pad_token_id=0)
    enc = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
               max_position_embeddings=128, **common)
    s2s = dict(bos_token_id=101, eos_token_id=102, decoder_start_token_id=101, **common)
    dec = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=128, max_position_embeddings=256, bos_token_id=101, eos_token_id=102, **common)
    bart = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, **s2s)
    return {
        "bert": lambda: tf.BertConfig(**enc),
        "roberta": lambda: tf.RobertaConfig(**{**enc, "max_position_embeddings": 130}),
        "electra": lambda: tf.ElectraConfig(embedding_size=16, **enc),
        "albert": lambda: tf.AlbertConfig(embedding_size=16, **enc),
        "distilbert": lambda: tf.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                                  max_position_embeddings=128, **common),
        "t5": lambda: tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, **s2s),
        "bart": lambda: tf.BartConfig(**bart),
        "marian": lambda: tf.MarianConfig(**bart),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                      bos_token_id=101, eos_token_id=102, **common),
        # decoders of today's layout: RoPE, RMSNorm, gated MLPs, 4 query heads over 2 key/value heads
        "llama": lambda: tf.LlamaConfig(**dec),
        "qwen2": lambda: tf.Qwen2Config(**dec),
        "qwen3": lambda: tf.Qwen3Config(head_dim=16, **dec),
        "mistral": lambda: tf.MistralConfig(sliding_window=8, **dec),
        "gemma2": lambda: tf.Gemma2Config(head_dim=16, sliding_window=8, attn_logit_softcapping=50.0,
                                          final_logit_softcapping=30.0, query_pre_attn_scalar=16, **dec),
        "phi3": lambda: tf.Phi3Config(**dec),
        "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=128, max_position_embeddings=256, rotary_pct=0.25,
                                             bos_token_id=101, eos_token_id=102, **common),
        "opt": lambda: tf.OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                                    word_embed_proj_dim=64, max_position_embeddings=256, bos_token_id=101,
                                    eos_token_id=102, **common),
        "modernbert": lambda: tf.ModernBertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                                  intermediate_size=128, max_position_embeddings=256,
                                                  global_attn_every_n_layers=2, local_attention=8, cls_token_id=101,
                                                  sep_token_id=102, bos_token_id=101, eos_token_id=102, **common),
    }[family]()


DECODER_FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3", "gpt_neox", "opt")
TINY_FAMILIES = ("bert", "roberta", "electra", "albert", "distilbert", "modernbert", "t5", "bart", "marian", "gpt2",
                 *DECODER_FAMILIES)
TINY_MLM = ("bert", "roberta", "electra", "albert", "distilbert", "modernbert")  # `tiny-<family>-mlm`

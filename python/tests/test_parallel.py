"""Layouts the engine refuses before starting (parallel.tp_refusal), each naming the field; the
layouts themselves are tested step for step in test/torch/distributed.test.ts."""

from types import SimpleNamespace

from flm_grow_torch.parallel import tp_refusal


def cfg(**over):
    base = dict(num_heads=8, num_kv_heads=4, intermediate_size=48, vocab_size=256, tie_word_embeddings=False)
    return SimpleNamespace(**{**base, **over})


def test_divisible_layouts_pass():
    assert tp_refusal(cfg(), 1, 1, False) is None
    assert tp_refusal(cfg(), 2, 2, False) is None
    assert tp_refusal(cfg(), 2, 4, True) is None
    assert tp_refusal(cfg(), 4, 4, False) is None


def test_each_field_is_named():
    assert "num_attention_heads 6 is not divisible by 4" in tp_refusal(cfg(num_heads=6, num_kv_heads=2), 4, 4, False)
    assert "num_key_value_heads 3 is not divisible by 2" in tp_refusal(cfg(num_heads=6, num_kv_heads=3), 2, 2, False)
    assert "intermediate_size 50 is not divisible by 4" in tp_refusal(cfg(intermediate_size=50), 4, 4, False)
    assert "vocab_size 255 is not divisible by 2" in tp_refusal(cfg(vocab_size=255), 2, 2, False)
    # tied embeddings share one vocab-sharded Parameter under TP (test/torch/distributed.test.ts)
    assert tp_refusal(cfg(tie_word_embeddings=True), 2, 2, False) is None


def test_process_counts():
    assert "--tp 2 does not divide the number of processes (3)" in tp_refusal(cfg(), 2, 3, False)
    assert "leaves 2 data-parallel groups; add --fsdp" in tp_refusal(cfg(), 2, 4, False)

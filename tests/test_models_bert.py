"""BERT text towers from Hugging Face folders, and WordPiece tokenizers that read real vocabularies."""

from dataclasses import replace

import pytest
import torch
from transformers import BertConfig, BertModel

from personvl import PersonvlError
from personvl.models import PersonEncoder, create_model, load_tokenizer, model_config
from personvl.models.tokenization import tiny_vocab_path

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "woman", "man", "in", "red", "black", "coat",
         "with", "backpack", "wearing", "blue", "jeans", "##s", "shoes", "white"]
TEXTS = ["A woman in a red coat", "a man wearing blue jeans and white shoes"]
# WordPiece by hand from VOCAB: lower-cased, "and" is unknown.
EXPECTED_IDS = [[2, 5, 6, 8, 5, 9, 11, 3], [2, 5, 7, 14, 15, 16, 1, 19, 18, 3]]
# The tiny BERT of personvl's tiny models, written out here independently of the package.
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 max_position_embeddings=128, hidden_act="gelu", type_vocab_size=2, layer_norm_eps=1e-12)


def _bert_folder(path, vocab_size=None, pooler=True, **changes):
    torch.manual_seed(0)
    vocab_size = vocab_size or len(tiny_vocab_path().read_text().splitlines())
    bert = BertModel(BertConfig(vocab_size=vocab_size, **dict(TINY_BERT, **changes)), add_pooling_layer=pooler).eval()
    bert.save_pretrained(path)
    return bert


def _padded(rows, length=64):
    """Token ids and attention mask of ``rows`` padded to ``length``, as the tokenizer pads."""
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def _write_vocab(path):
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")


def test_text_tower_from_a_bert_folder_reproduces_the_pooler_output_with_real_token_ids(tmp_path):
    folder = tmp_path / "bert"
    bert = _bert_folder(folder)
    _write_vocab(folder)
    model = create_model("tiny-plip-rn50", weights=folder)
    assert model.load_report.not_covered == ["image tower"]
    batch = model.tokenize(TEXTS)
    for row, expected in zip(batch.input_ids.tolist(), EXPECTED_IDS):
        assert row[:len(expected)] == expected and set(row[len(expected):]) == {0}
    assert model.tokenizer.vocab_size == len(VOCAB)
    ids, mask = _padded(EXPECTED_IDS)
    with torch.no_grad():
        pooled = bert(input_ids=ids, attention_mask=mask).pooler_output
        ours = model.encode_text(TEXTS)
    assert (ours - torch.nn.functional.normalize(pooled, dim=-1)).abs().max() <= 1e-6


@pytest.mark.parametrize("pooling", ["pooler", "max"])
def test_text_tower_skips_all_padding_columns_with_the_same_states_and_embedding(pooling):
    torch.manual_seed(0)
    tower = create_model("tiny-plip-rn50", text_pooling=pooling).text.eval()
    ids, mask = _padded(EXPECTED_IDS)
    with torch.no_grad():
        full = tower.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        states, pooled = tower.forward_tokens(ids, mask)
    assert states.shape == (2, 64, tower.width)
    longest = len(EXPECTED_IDS[1])
    assert torch.allclose(states[:, :longest], full.last_hidden_state[:, :longest], atol=1e-5)
    assert states[:, longest:].abs().max() == 0
    if pooling == "pooler":
        assert torch.allclose(pooled, full.pooler_output, atol=1e-5)
    else:
        padding = (mask == 0).unsqueeze(-1)
        expected = full.last_hidden_state.masked_fill(padding, float("-inf")).max(dim=1).values
        assert torch.allclose(pooled, expected, atol=1e-5)


def test_bert_folder_of_another_architecture_is_refused_by_field(tmp_path):
    _bert_folder(tmp_path / "bert", num_hidden_layers=3, hidden_act="relu")
    with pytest.raises(PersonvlError, match="num_hidden_layers 3 \\(model: 2\\).*hidden_act 'relu' \\(model: 'gelu'\\)"):
        create_model("tiny-plip-rn50", weights=tmp_path / "bert")


def test_bert_without_pooler_is_missing_weights_for_plip_but_enough_for_max_pooling(tmp_path):
    _bert_folder(tmp_path / "bert", pooler=False)
    with pytest.raises(PersonvlError, match="2 missing \\[text.bert.pooler.dense.bias, text.bert.pooler.dense.weight\\]"):
        create_model("tiny-plip-rn50", weights=tmp_path / "bert")
    model = create_model("tiny-unipt-vitb16", weights=tmp_path / "bert")   # UniPT max-pools the tokens
    assert model.load_report.fits


def test_unused_pooler_of_a_pretrained_bert_is_ignored_not_loaded(tmp_path):
    _bert_folder(tmp_path / "bert")
    model = create_model("tiny-unipt-vitb16", weights=tmp_path / "bert")
    assert model.load_report.ignored == ["text.bert.pooler.dense.bias", "text.bert.pooler.dense.weight"]


def test_packaged_tiny_vocabulary_is_read_not_replaced_by_special_tokens():
    tokenizer = load_tokenizer("bert", "personvl:tiny", 16)
    vocab = tiny_vocab_path().read_text().splitlines()
    ids = tokenizer(["a woman in a red coat with a black backpack"]).input_ids[0].tolist()
    words = ["[CLS]", "a", "woman", "in", "a", "red", "coat", "with", "a", "black", "backpack", "[SEP]"]
    assert ids[:12] == [vocab.index(w) for w in words] and tokenizer.vocab_size == len(vocab) > 100


def test_a_bare_vocab_file_and_a_saved_tokenizer_give_the_same_ids(tmp_path):
    _write_vocab(tmp_path / "tok")
    from_file = load_tokenizer("bert", tmp_path / "tok" / "vocab.txt", 12)
    from_file.save(tmp_path / "saved")
    from_folder = load_tokenizer("bert", tmp_path / "saved", 12)
    assert torch.equal(from_file(TEXTS).input_ids, from_folder(TEXTS).input_ids)
    assert from_file(TEXTS).input_ids[0, :8].tolist() == EXPECTED_IDS[0]


def test_hub_tokenizer_offline_says_which_local_folder_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    model = create_model("tiny-plip-rn50", tokenizer=None)
    with pytest.raises(PersonvlError, match="tokenizer 'some-org/bert-base-uncased' is not on this machine.*"
                                            "pass tokenizer='path/to/bert-base-uncased'"):
        create_model("tiny-plip-rn50", tokenizer="some-org/bert-base-uncased")
    with pytest.raises(PersonvlError, match="tokenizer folder ./missing/ does not exist"):
        create_model("tiny-plip-rn50", tokenizer="./missing/")
    assert model.encode_text(["a man"]).shape == (1, 32)   # tiny models need no download


def test_tokenizer_of_another_model_is_refused():
    with pytest.raises(PersonvlError, match="needs a bert tokenizer, got a clip one"):
        create_model("tiny-plip-rn50", tokenizer=load_tokenizer("clip", "open_clip", 77))
    config = model_config("tiny-clip-rn50")
    small_vocabulary = PersonEncoder(replace(config, text_tower=dict(config.text_tower, vocab_size=100)))
    with pytest.raises(PersonvlError, match="tokenizer has 49408 tokens but the tiny-clip-rn50 text tower embeds only 100"):
        small_vocabulary.encode_text(["a man"])

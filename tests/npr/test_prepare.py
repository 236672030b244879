"""`npr prepare-model`: tags become single special tokens, new rows are the sub-word means (input and
untied output embeddings), the saved model and tokenizer reload unchanged; unusable tokenizers are refused."""

from __future__ import annotations

import json

import pytest
import torch

from npr.cli import main
from npr.errors import TagTokenError
from npr.prepare import prepare_tokenizer_and_model, subword_ids_of_tags
from npr.schema import TAG_STRINGS, TagIds
from npr.tiny import make_tiny_model, make_tiny_tokenizer


def _base(tmp_path, tie: bool = False):
    tok = make_tiny_tokenizer(with_tags=False)
    model = make_tiny_model(tok, tie_word_embeddings=tie)
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    return tok, model


@pytest.mark.parametrize("tie", [False, True])
def test_prepare_model_cli_round_trips(tmp_path, capsys, tie):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_tok, base_model = _base(tmp_path, tie)
    subwords = subword_ids_of_tags(base_tok)
    assert main(["prepare-model", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    tok = AutoTokenizer.from_pretrained(tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    tags = TagIds.from_tokenizer(tok)  # each tag is one token now
    assert report["tag_ids"] == tags.as_dict()
    assert model.get_input_embeddings().weight.shape[0] >= len(tok) == len(base_tok) + 8
    old_in = base_model.get_input_embeddings().weight
    old_out = base_model.get_output_embeddings().weight
    new_in = model.get_input_embeddings().weight
    new_out = model.get_output_embeddings().weight
    for tag in TAG_STRINGS:
        new_id = tags.by_text[tag]
        torch.testing.assert_close(new_in[new_id], old_in[subwords[tag]].mean(0))
        torch.testing.assert_close(new_out[new_id], old_out[subwords[tag]].mean(0))
    # old rows unchanged, ordinary text still tokenizes the same, tags inside text are single ids
    torch.testing.assert_close(new_in[: len(base_tok)], old_in[: len(base_tok)])
    text = "First compute the sum: 1 + 2 = 3."
    assert tok.encode(text, add_special_tokens=False) == base_tok.encode(text, add_special_tokens=False)
    assert tok.encode("<step>", add_special_tokens=False) == [tags.step_open]
    assert model.config.tie_word_embeddings == tie
    # round trip: saving the reloaded pair again and reloading gives the same weights and ids
    model.save_pretrained(tmp_path / "again")
    tok.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    torch.testing.assert_close(again.get_input_embeddings().weight, new_in)
    assert TagIds.from_tokenizer(AutoTokenizer.from_pretrained(tmp_path / "again")) == tags


def test_prepare_refuses_a_prepared_tokenizer_naming_the_tag():
    tok = make_tiny_tokenizer(with_tags=True)
    model = make_tiny_model(tok)
    before = model.get_input_embeddings().weight.clone()
    with pytest.raises(TagTokenError, match="'<guideline>' is already the single token"):
        prepare_tokenizer_and_model(tok, model)
    assert torch.equal(model.get_input_embeddings().weight, before)


def test_prepare_refuses_a_tokenizer_that_cannot_spell_a_tag():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "a": 1, "<": 2, ">": 3}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    with pytest.raises(TagTokenError, match="'<guideline>' encodes to .*unknown token id 0"):
        subword_ids_of_tags(tok)


def test_prepare_model_cli_reports_errors(tmp_path, capsys):
    tok = make_tiny_tokenizer(with_tags=True)
    make_tiny_model(tok).save_pretrained(tmp_path / "prepared")
    tok.save_pretrained(tmp_path / "prepared")
    assert main(["prepare-model", "--base", str(tmp_path / "prepared"), "--out", str(tmp_path / "o")]) == 2
    assert "already the single token" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["prepare-model", "--base", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot load --base" in capsys.readouterr().err

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from pyretro.data.chat import ChatTemplate, Conversation
from pyretro.data.synthetic import generate
from pyretro.data.tokenizer import train_bpe


@pytest.fixture(scope="module")
def tok():
    corpus = generate(num_entities=12, seed=3)
    return train_bpe([d["text"] for d in corpus.documents], vocab_size=500)


def _decode(tok, ids):
    return tok.decode([int(i) for i in ids], skip_special_tokens=False)


def test_qa_record_masks_exactly_answer_and_eod(tok):
    t = ChatTemplate(tok)
    conv = Conversation.from_dict({"question": "Where does Ann live?", "answers": ["Riltan", "x"],
                                   "context": ["Ann lives in Riltan.", "Bob is a baker."]})
    ids, mask = t.encode(conv)
    assert ids.shape == mask.shape and mask.dtype == bool
    assert _decode(tok, ids[mask]) == " Riltan<|eod|>"
    assert _decode(tok, ids) == ("<|user|><|context|>Ann lives in Riltan.\n<|context|>Bob is a baker.\n"
                                 "Where does Ann live?\n<|assistant|> Riltan<|eod|>")
    # the answer is spelt in the passage's own tokens (after a space), not in a word-initial split
    answer = list(ids[mask][:-1])
    passage = tok.encode("Ann lives in Riltan.", add_special_tokens=False).ids
    assert any(passage[i:i + len(answer)] == answer for i in range(len(passage)))
    # the eval prompt is the training sample's prefix, byte for byte
    prompt = t.encode_prompt("Where does Ann live?", ["Ann lives in Riltan.", "Bob is a baker."])
    assert list(ids[: len(prompt)]) == prompt and not mask[: len(prompt)].any()


def test_multi_turn_last_answer_only_or_all(tok):
    t = ChatTemplate(tok)
    conv = Conversation.from_dict({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "teal"}]})
    assert conv.system == "Be brief." and len(conv.turns) == 4
    ids, mask = t.encode(conv)
    assert _decode(tok, ids).startswith("<|system|>Be brief.\n<|user|>Hi\n<|assistant|> Hello<|eod|>\n<|user|>")
    assert _decode(tok, ids[mask]) == " teal<|eod|>"
    _, mask_all = t.encode(conv, all_turns=True)
    assert _decode(tok, ids[mask_all]) == " Hello<|eod|> teal<|eod|>"


def test_plain_markers_for_a_tokenizer_without_chat_specials():
    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1, "User:": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    wl.add_special_tokens(["</s>"])
    t = ChatTemplate(wl)
    assert t.markers["user"] == "User: " and t.eod_id == 1
    assert t.prompt_text("q", ["p"]) == "User: Context: p\nq\nAssistant:"


@pytest.mark.parametrize("bad", [{"messages": []}, {"messages": [{"role": "bot", "content": "x"}]},
                                 {"messages": [{"role": "user", "content": 3}]}, {"text": "x"}])
def test_bad_conversations_raise(bad):
    with pytest.raises(ValueError, match="conversation"):
        Conversation.from_dict(bad)


def test_last_turn_must_be_the_answer(tok):
    conv = Conversation.from_dict({"messages": [{"role": "user", "content": "Hi"}]})
    with pytest.raises(ValueError, match="last turn"):
        ChatTemplate(tok).encode(conv)


def test_stop_ids_end_token_and_turn_markers(tok):
    t = ChatTemplate(tok)
    vocab = tok.get_vocab(with_added_tokens=True)
    want = {t.eod_id, *(vocab[m] for m in ("<|user|>", "<|assistant|>", "<|context|>", "<|system|>"))}
    assert set(t.stop_ids()) == want and None not in want
    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "</s>": 1, "User:": 2}, unk_token="[UNK]"))
    wl.add_special_tokens(["</s>"])
    assert ChatTemplate(wl).stop_ids() == [1]  # plain-text markers are not single tokens: only the end token

"""Special tokens (textual inversion): add them, train only their embedding rows, save and load them.

``superclass_prompt`` turns a target prompt into its superclass twin, as SCS needs
(``method.md`` section 4: "A <toy> rides a <dog>" -> "A toy rides a dog").
"""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .errors import VideoMageInputError, require

TOKEN_PATTERN = re.compile(r"^<[A-Za-z0-9_\-]{1,40}>$")
#: a learned token's form where it stands in a prompt ("a <toy> rides a <ref1_3fa2c1>")
TOKEN_IN_TEXT = re.compile(r"<[A-Za-z0-9_\-]+>")


class TokenEmbeddings(nn.Module):
    """The text encoder's token embedding, frozen, plus one trainable row per added token.

    Only the added rows are parameters, so an optimiser over them can never touch the vocabulary.
    Ids ``>= base_vocab`` look up ``rows[id - base_vocab]``.
    """

    def __init__(self, base: nn.Embedding, tokenizer_size: int | None = None):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        # added tokens get ids from the tokenizer's length on, even where the table has spare rows
        self.base_vocab = min(base.num_embeddings, tokenizer_size or base.num_embeddings)
        self.rows = nn.ParameterList()

    @property
    def weight(self) -> torch.Tensor:  # what transformers reads for dtype/device and resizing
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        emb = self.base(input_ids.clamp(max=self.base_vocab - 1))
        extra = input_ids >= self.base_vocab
        if len(self.rows) == 0 or not bool(extra.any()):
            return emb
        table = torch.stack(list(self.rows)).to(emb.dtype)
        picked = F.embedding((input_ids - self.base_vocab).clamp(min=0), table)
        return torch.where(extra.unsqueeze(-1), picked, emb)


def token_embeddings(model) -> TokenEmbeddings:
    """The model's :class:`TokenEmbeddings` (the text encoder's input embeddings: CLIP's token
    embedding, umT5's shared table), installed on first use."""
    current = model.text_encoder.get_input_embeddings()
    if not isinstance(current, TokenEmbeddings):
        current = TokenEmbeddings(current, len(model.tokenizer))
        model.text_encoder.set_input_embeddings(current)
    return current


def check_new_token(model, token: str, input_name: str = "token") -> None:
    """A special token must not already be a word of the vocabulary and must look like ``<name>``."""
    require(isinstance(token, str) and token.strip() == token and token != "", input_name,
            f"expected a token like '<toy>', got {token!r}")
    if token not in added_tokens(model):
        vocab = model.tokenizer.get_vocab()
        pieces = model.tokenizer.tokenize(token)
        known = token in vocab or (len(pieces) == 1 and pieces[0] in vocab)
        require(not known, input_name, f"'{token}' is already a word of the vocabulary; a special "
                "token must be new, e.g. '<my_toy>'")
    require(TOKEN_PATTERN.match(token) is not None, input_name,
            f"expected a token like '<toy>' (letters, digits, '_' or '-' inside angle brackets), "
            f"got {token!r}")


def added_tokens(model) -> dict[str, int]:
    """Tokens added by customization (not in the base vocabulary) -> their ids."""
    base = token_embeddings(model).base_vocab
    return {tok: idx for tok, idx in model.tokenizer.get_vocab().items() if idx >= base}


def add_token(model, token: str, init_word: str | None = None,
              embedding: torch.Tensor | None = None) -> int:
    """Add ``token`` (or reuse it) and set its row from ``embedding`` or ``init_word``'s mean embedding."""
    emb = token_embeddings(model)
    if token not in added_tokens(model):
        check_new_token(model, token)
        model.tokenizer.add_tokens([token])
    idx = model.tokenizer.convert_tokens_to_ids(token)
    row = idx - emb.base_vocab
    while len(emb.rows) <= row:
        emb.rows.append(nn.Parameter(torch.zeros(emb.base.embedding_dim, device=emb.base.weight.device,
                                                 dtype=torch.float32), requires_grad=False))
    if embedding is not None:
        value = embedding
    elif init_word:
        ids = model.tokenizer(init_word, add_special_tokens=False).input_ids
        require(len(ids) > 0, "superclass", f"'{init_word}' gives no tokens")
        value = emb.base.weight[ids].float().mean(0)
    else:
        value = emb.base.weight.float().mean(0)
    require(value.shape == emb.rows[row].shape, "embedding",
            f"token {token} has an embedding of shape {tuple(value.shape)}, the text encoder expects "
            f"{tuple(emb.rows[row].shape)}")
    with torch.no_grad():
        emb.rows[row].copy_(value.to(emb.rows[row]))
    return idx


def token_parameters(model, tokens: list[str]) -> list[nn.Parameter]:
    """The trainable rows of ``tokens`` (requires_grad switched on for exactly these)."""
    emb = token_embeddings(model)
    params = []
    for token in tokens:
        row = model.tokenizer.convert_tokens_to_ids(token) - emb.base_vocab
        params.append(emb.rows[row])
    for p in emb.rows:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def get_token_embedding(model, token: str) -> torch.Tensor:
    emb = token_embeddings(model)
    return emb.rows[model.tokenizer.convert_tokens_to_ids(token) - emb.base_vocab].detach().clone()


def check_prompt_tokens(prompt: str, tokens: list[str], input_name: str = "prompt") -> None:
    """Every token must appear in the prompt."""
    missing = [t for t in tokens if t not in prompt]
    require(not missing, input_name, f"the prompt {prompt!r} does not contain the tokens {missing}")


def _superclass_twin(prompt: str, superclasses: dict[str, str]) -> tuple[str, list[tuple]]:
    """The twin prompt and each token occurrence ``(token, (start, end) in prompt, (start, end) in twin)``."""
    for token, word in superclasses.items():
        require(bool(word and word.strip()), "superclass", f"token {token} has no superclass word")
    spans, twin, last = [], "", 0
    if superclasses:
        pattern = "|".join(re.escape(t) for t in sorted(superclasses, key=len, reverse=True))
        for m in re.finditer(pattern, prompt):
            twin += prompt[last:m.start()]
            word = superclasses[m.group()].strip()
            spans.append((m.group(), (m.start(), m.end()), (len(twin), len(twin) + len(word))))
            twin, last = twin + word, m.end()
    twin += prompt[last:]
    left = TOKEN_IN_TEXT.findall(twin)
    if left:
        raise VideoMageInputError("prompt", f"tokens {left} have no superclass word (known: "
                                  f"{sorted(superclasses)})")
    return twin, spans


def superclass_prompt(prompt: str, superclasses: dict[str, str]) -> str:
    """Replace each special token by its superclass word: 'A <toy> rides a <dog>' -> 'A toy rides a dog'."""
    return _superclass_twin(prompt, superclasses)[0]


def special_tokens_around(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text: (1, 1) for CLIP's start and
    end tokens, (0, 1) for T5's end token."""
    bare = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    lead = next(i for i in range(len(full)) if full[i:i + len(bare)] == bare)
    return lead, len(full) - len(bare) - lead


def span_columns(tokenizer, text: str, start: int, end: int) -> list[int]:
    """Columns (in the encoder's sequence: CLIP's 77 tokens with the start token at 0, or T5's) of the
    characters ``text[start:end]``.

    Works with any tokenizer (no offset mapping needed): the span's columns are what the whole
    text's ids have beyond the ids of ``text[:start]`` (longest common prefix) and before those of
    ``text[end:]`` (longest common suffix). A span that merges with a neighbouring letter into
    one BPE piece (``<dog>s`` -> ``dogs``) gets that piece.
    """
    full = tokenizer(text, add_special_tokens=False).input_ids
    head = tokenizer(text[:start], add_special_tokens=False).input_ids
    tail = tokenizer(text[end:], add_special_tokens=False).input_ids
    a = 0
    while a < min(len(head), len(full)) and head[a] == full[a]:
        a += 1
    b = 0
    while b < min(len(tail), len(full) - a) and tail[-1 - b] == full[-1 - b]:
        b += 1
    require(a < len(full) - b, "prompt", f"{text[start:end]!r} gives no token in {text!r}")
    lead, trail = special_tokens_around(tokenizer)
    require(len(full) - b <= tokenizer.model_max_length - lead - trail, "prompt", f"{text[start:end]!r} "
            f"stands beyond the text encoder's {tokenizer.model_max_length} tokens in {text!r}")
    return [lead + i for i in range(a, len(full) - b)]  # lead: CLIP's start token


def aligned_subject_columns(tokenizer, prompt: str, superclasses: dict[str, str]
                            ) -> tuple[str, list[str], list[list[int]], list[list[int]]]:
    """SCS's column alignment by position (``method.md`` section 4).

    Returns ``(twin, tokens, columns in prompt, columns in twin)``: for each token present (in
    order of first appearance), the columns of all its occurrences in ``prompt`` and the columns of
    the superclass word that replaced exactly those occurrences in the twin prompt. Words are never
    searched for, so two subjects of one superclass ("<a> and <b>" -> "dog and dog") or a
    superclass word that also stands elsewhere ("a dog watches a <toy> ride a <dog>") align the
    right maps.
    """
    twin, spans = _superclass_twin(prompt, superclasses)
    tokens, cols_prompt, cols_twin = [], {}, {}
    for token, (a, b), (c, d) in spans:
        if token not in tokens:
            tokens.append(token)
        cols_prompt.setdefault(token, []).extend(span_columns(tokenizer, prompt, a, b))
        cols_twin.setdefault(token, []).extend(span_columns(tokenizer, twin, c, d))
    return twin, tokens, [cols_prompt[t] for t in tokens], [cols_twin[t] for t in tokens]


def word_positions(tokenizer, prompt: str, words: list[str]) -> list[list[int]]:
    """Column indices (in the 77-token sequence, start token at 0) of each word/token in ``prompt``.

    A word may be several BPE pieces; repeated words are matched in order of appearance.
    """
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True).input_ids
    out, start_from = [], {}
    for word in words:
        piece = tokenizer(word, add_special_tokens=False).input_ids
        begin = start_from.get(word, special_tokens_around(tokenizer)[0])
        found = None
        for i in range(begin, len(ids) - len(piece) + 1):
            if ids[i:i + len(piece)] == piece:
                found = list(range(i, i + len(piece)))
                break
        require(found is not None, "prompt", f"{word!r} is not in the prompt {prompt!r} "
                "(or the prompt is longer than the text encoder's 77 tokens)")
        start_from[word] = found[-1] + 1
        out.append(found)
    return out

"""umT5's tokenizer without the ``sentencepiece`` package: ComfyUI's umT5 files carry the tokenizer as a
``spiece_model`` tensor (the bytes of a SentencePiece ``ModelProto``); this module reads such bytes into a
``tokenizers`` Unigram tokenizer (what ``transformers``' T5 converter builds from the same model), writes
them (for the tiny single files), and builds the tiny umT5-style tokenizer of the tiny Wan models.

The protobuf wire format is read and written by hand for the few fields a Unigram model needs:
``ModelProto.pieces`` (1: piece, 2: score, 3: type), ``trainer_spec`` (2: model_type 3, byte_fallback 35,
unk_id 40), ``normalizer_spec`` (3: name 1, precompiled_charsmap 2, add_dummy_prefix 3,
remove_extra_whitespaces 4).
"""
from __future__ import annotations

import os
import string
import struct

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM = 1
SPACE = "\u2581"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def parse_model_proto(data: bytes) -> dict:
    """The parts of a SentencePiece model a Unigram tokenizer needs."""
    pieces, trainer, normalizer = [], {}, {}
    for number, _, value in _fields(data):
        if number == 1:
            p = {"piece": "", "score": 0.0, "type": NORMAL}
            for n, _, v in _fields(value):
                if n == 1:
                    p["piece"] = v.decode("utf-8")
                elif n == 2:
                    p["score"] = struct.unpack("<f", v)[0]
                elif n == 3:
                    p["type"] = v
            pieces.append(p)
        elif number == 2:
            trainer = {n: v for n, _, v in _fields(value)}
        elif number == 3:
            normalizer = {n: v for n, _, v in _fields(value)}
    return {"pieces": pieces, "model_type": trainer.get(3, UNIGRAM), "byte_fallback": bool(trainer.get(35, 0)),
            "unk_id": trainer.get(40, 0), "charsmap": normalizer.get(2, b""),
            "add_dummy_prefix": bool(normalizer.get(3, 1)), "remove_extra_whitespaces": bool(normalizer.get(4, 1))}


def _key(number: int, wire: int) -> bytes:
    return _enc_varint(number << 3 | wire)


def _enc_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _bytes_field(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _enc_varint(len(data)) + data


def write_model_proto(pieces: list[tuple[str, float, int]], unk_id: int) -> bytes:
    """A SentencePiece Unigram ``ModelProto`` (identity normaliser, dummy prefix, no byte fallback)."""
    out = b""
    for piece, score, kind in pieces:
        body = _bytes_field(1, piece.encode("utf-8")) + _key(2, 5) + struct.pack("<f", score) + _key(3, 0) \
            + _enc_varint(kind)
        out += _bytes_field(1, body)
    trainer = _key(3, 0) + _enc_varint(UNIGRAM) + _key(4, 0) + _enc_varint(len(pieces)) + _key(40, 0) \
        + _enc_varint(unk_id) + _key(41, 0) + _enc_varint(2 ** 64 - 1)  # bos_id -1 (int32 as 10 bytes)
    trainer += _key(42, 0) + _enc_varint(1) + _key(43, 0) + _enc_varint(0)  # eos 1, pad 0 (umT5's)
    normalizer = _bytes_field(1, b"identity") + _key(3, 0) + _enc_varint(1) + _key(4, 0) + _enc_varint(1)
    return out + _bytes_field(2, trainer) + _bytes_field(3, normalizer)


def tokenizer_from_model_proto(data: bytes):
    """A ``T5TokenizerFast`` (eos ``</s>``, pad ``<pad>``, no start token, 512 tokens) from SentencePiece
    model bytes, built as ``transformers``' T5 converter builds it."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    spec = parse_model_proto(bytes(data))
    if spec["model_type"] != UNIGRAM:
        raise ValueError(f"the tokenizer is a SentencePiece model of type {spec['model_type']}, umT5's is "
                         "Unigram (1)")
    vocab = [(p["piece"], p["score"]) for p in spec["pieces"]]
    tk = Tokenizer(models.Unigram(vocab, unk_id=spec["unk_id"], byte_fallback=spec["byte_fallback"]))
    norms = []
    if spec["charsmap"]:
        norms.append(normalizers.Precompiled(spec["charsmap"]))
    if spec["remove_extra_whitespaces"]:
        norms += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if norms:
        tk.normalizer = normalizers.Sequence(norms)
    scheme = "always" if spec["add_dummy_prefix"] else "never"
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme=scheme)
    decoder = [decoders.Metaspace(replacement=SPACE, prepend_scheme=scheme)]
    if spec["byte_fallback"]:
        decoder = [decoders.ByteFallback(), decoders.Fuse()] + decoder
    tk.decoder = decoders.Sequence(decoder)
    ids = {p["piece"]: i for i, p in enumerate(spec["pieces"])}
    eos = ids.get("</s>", 1)
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", eos)])
    return T5TokenizerFast(tokenizer_object=tk, extra_ids=0, eos_token="</s>", pad_token="<pad>",
                           unk_token=spec["pieces"][spec["unk_id"]]["piece"], model_max_length=512)


_SPECIALS = (("<pad>", CONTROL), ("</s>", CONTROL), ("<unk>", UNKNOWN))


def tiny_pieces() -> list[tuple[str, float, int]]:
    """umT5's special ids (pad 0, eos 1, unk 2), ``TINY_WORDS`` as whole words, single characters."""
    from ..tiny import TINY_WORDS

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [(s, 0.0, kind) for s, kind in _SPECIALS] + [(SPACE + w, -2.0, NORMAL) for w in TINY_WORDS]
    pieces += [(SPACE, -3.0, NORMAL)] + [(c, -8.0, NORMAL) for c in chars] + [(SPACE + c, -8.5, NORMAL) for c in chars]
    seen = set()
    return [p for p in pieces if not (p[0] in seen or seen.add(p[0]))]  # "a" is a word and a letter


def build_tiny_umt5_tokenizer(folder: str | os.PathLike):
    """Write the tiny umT5-style tokenizer to ``folder`` (``tokenizer.json`` + ``spiece_model.bin``, the
    bytes the tiny single files embed); return it loaded with ``AutoTokenizer``."""
    from pathlib import Path

    from transformers import AutoTokenizer

    data = write_model_proto(tiny_pieces(), unk_id=2)
    tokenizer_from_model_proto(data).save_pretrained(folder)
    (Path(folder) / "spiece_model.bin").write_bytes(data)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)

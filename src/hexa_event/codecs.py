"""Payload codecs in an open registry, named on the wire by the ``_payload_encoder`` header.

Built in:

- ``json``: dicts, lists, scalars, dataclasses, msgspec structs and pydantic models (msgspec
  does the work). Decodes into the subscribed type, validating it.
- ``protobuf``: protocol buffers as protojson text, what Go hexa-event calls ``protobuf``.
- ``protobuf-binary``: protocol buffers in the binary wire format.
- ``raw``: bytes as they are.

Register your own with :func:`register_codec`; the receiving side needs it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import msgspec

from .errors import (
    ConfigurationError,
    DecodeError,
    EncodeError,
    PayloadTypeError,
    UnknownCodecError,
)

T = TypeVar("T")


class Codec(Protocol):
    """Turns payloads into bytes and back."""

    name: str
    """The ``_payload_encoder`` header value."""
    content_type: str

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; raise EncodeError if this codec cannot carry it."""

    def decode(self, data: bytes, target: type[Any] | None) -> Any:
        """Decode ``data`` as ``target`` (None: the codec's natural type).

        Raises DecodeError for bytes that do not parse and PayloadTypeError when they parse
        but do not fit ``target``.
        """


def _is_pydantic_model(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate_json")


def _json_enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return dump(mode="json")
    raise NotImplementedError(
        f"JSON codec cannot encode {type(value).__name__}; use a dict, dataclass, msgspec "
        "Struct or pydantic model, or pick another codec (protobuf messages: codec='protobuf')"
    )


_BYTES_LIKE = (bytes, bytearray, memoryview)
_QUOTE = ord('"')


class JsonCodec:
    """JSON via msgspec; decodes into dataclasses, structs, typed containers or pydantic."""

    name = "json"
    content_type = "application/json"

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder(enc_hook=_json_enc_hook)
        self._any = msgspec.json.Decoder()

    def encode(self, value: Any) -> bytes:
        """Encode ``value``; NaN, infinities and a bare ``bytes`` payload are refused (JSON
        would carry them as ``null`` and base64 text, silently changing the payload)."""
        try:
            body = self._encoder.encode(value)
        except (NotImplementedError, TypeError) as exc:
            if _is_protobuf(value):
                raise EncodeError(
                    f"{type(value).__name__} is a protobuf message: emit it with "
                    "codec='protobuf' (protojson, Go compatible) or codec='protobuf-binary'"
                ) from exc
            raise EncodeError(str(exc)) from exc
        # Checked on the result, which is cheaper than on every value: bytes encode as a
        # JSON string (base64), NaN and infinities as null.
        if body[0] == _QUOTE and isinstance(value, _BYTES_LIKE):
            raise EncodeError(
                "the JSON codec would turn a bytes payload into base64 text: emit bytes with "
                "codec='raw' (or 'protobuf-binary' for protobuf messages)"
            )
        # find, not ``in``: ``bytes in bytes`` first tries the needle as an integer and
        # raises and clears a TypeError, which costs twice the search.
        if body.find(b"null") >= 0 and _has_non_finite(value):
            raise EncodeError(
                "the payload holds NaN or an infinity, which JSON cannot carry (it would "
                "arrive as null); send a finite number, a string, or null yourself"
            )
        return body

    def decode(self, data: bytes, target: type[Any] | None) -> Any:
        decoder = _DECODERS.get(target)
        if decoder is not None:
            return _decode_typed(decoder, data, target)
        if target is None or target is Any or target is object:
            try:
                return self._any.decode(data)
            except (msgspec.DecodeError, RecursionError) as exc:  # nested past msgspec's depth
                raise DecodeError(f"body is not valid JSON: {exc}") from exc
        if target is bytes:
            return data
        if _is_pydantic_model(target):
            return _decode_pydantic(target, data)
        return _decode_typed(_typed_decoder(target), data, target)


def _has_non_finite(value: Any) -> bool:
    try:
        plain = msgspec.to_builtins(value, enc_hook=_json_enc_hook)
    except Exception:
        return False
    stack = [plain]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _decode_typed(decoder: msgspec.json.Decoder[Any], data: bytes, target: Any) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise PayloadTypeError(
            f"payload does not match {getattr(target, '__name__', target)}: {exc}"
        ) from exc
    except (msgspec.DecodeError, RecursionError) as exc:  # nested past msgspec's depth
        raise DecodeError(f"body is not valid JSON: {exc}") from exc


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _typed_decoder(target: Any) -> msgspec.json.Decoder[Any]:
    decoder = _DECODERS.get(target)
    if decoder is not None:
        return decoder
    try:
        decoder = _DECODERS[target] = msgspec.json.Decoder(target)
        return decoder
    except TypeError as exc:
        raise ConfigurationError(
            f"cannot decode JSON into {target!r}: use a dataclass, msgspec Struct, TypedDict, "
            "pydantic model, dict or a typed container"
        ) from exc


def _decode_pydantic(target: Any, data: bytes) -> Any:
    import pydantic

    try:
        return target.model_validate_json(data)
    except pydantic.ValidationError as exc:
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            raise DecodeError(f"body is not valid JSON: {exc}") from exc
        raise PayloadTypeError(f"payload does not match {target.__name__}: {exc}") from exc


def _is_protobuf(value: Any) -> bool:
    return hasattr(value, "SerializeToString") and hasattr(value, "DESCRIPTOR")


def _require_proto_type(target: type[Any] | None, codec: str) -> Any:
    if target is None or not (isinstance(target, type) and hasattr(target, "DESCRIPTOR")):
        raise PayloadTypeError(
            f"codec {codec!r} needs the subscription's payload type to be a protobuf message "
            f"class, got {target!r}: subscribe with payload=<YourMessage>"
        )
    return target


class ProtoJsonCodec:
    """Protocol buffers as protojson: Go hexa-event's ``protobuf`` encoder."""

    name = "protobuf"
    content_type = "application/protobuf+json"

    def encode(self, value: Any) -> bytes:
        if not _is_protobuf(value):
            raise EncodeError(f"codec 'protobuf' needs a protobuf message, got {type(value)!r}")
        from google.protobuf import json_format

        return json_format.MessageToJson(value, indent=None).encode()

    def decode(self, data: bytes, target: type[Any] | None) -> Any:
        if target is bytes:
            return data
        proto_type = _require_proto_type(target, self.name)
        from google.protobuf import json_format

        try:
            return json_format.Parse(data, proto_type(), ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
            raise DecodeError(f"body is not protojson of {proto_type.__name__}: {exc}") from exc


class ProtobufBinaryCodec:
    """Protocol buffers in the binary wire format."""

    name = "protobuf-binary"
    content_type = "application/x-protobuf"

    def encode(self, value: Any) -> bytes:
        if not _is_protobuf(value):
            raise EncodeError(
                f"codec 'protobuf-binary' needs a protobuf message, got {type(value)!r}"
            )
        return cast(bytes, value.SerializeToString())

    def decode(self, data: bytes, target: type[Any] | None) -> Any:
        if target is bytes:
            return data
        proto_type = _require_proto_type(target, self.name)
        from google.protobuf.message import DecodeError as ProtoDecodeError

        try:
            return proto_type.FromString(data)
        except ProtoDecodeError as exc:
            raise DecodeError(f"body is not a binary {proto_type.__name__}: {exc}") from exc


class RawCodec:
    """Bytes as they are."""

    name = "raw"
    content_type = "application/octet-stream"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, _BYTES_LIKE):
            return bytes(value)
        raise EncodeError(f"codec 'raw' carries bytes only, got {type(value).__name__}")

    def decode(self, data: bytes, target: type[Any] | None) -> Any:
        if target not in (None, bytes, Any, object):
            raise PayloadTypeError(f"codec 'raw' yields bytes, the subscription wants {target!r}")
        return data


_REGISTRY: dict[str, Codec] = {}

generation = 0
"""Bumped by :func:`register_codec`: a decoder cached from the registry (such as
:func:`json_decoder`'s) is stale once this changed."""


def register_codec(codec: Codec, *, replace: bool = False) -> None:
    """Make ``codec`` available by its name to emitters and receivers of this process."""
    if not replace and codec.name in _REGISTRY:
        raise ConfigurationError(
            f"codec {codec.name!r} is already registered; pass replace=True to override it"
        )
    global generation
    _REGISTRY[codec.name] = codec
    generation += 1


def get_codec(name: str) -> Codec:
    """The codec registered under ``name``; raises UnknownCodecError."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownCodecError(name, list(_REGISTRY)) from None


def json_decoder(target: Any) -> Callable[[bytes], Any] | None:
    """msgspec's own decode function for the built-in JSON codec into ``target``, for a
    receiver's hot path: it raises msgspec's errors, so on any error decode again through
    ``get_codec("json").decode``, which names them. None when ``json`` is not the built-in
    codec (replaced by :func:`register_codec`) or ``target`` takes another path (pydantic,
    bytes) or no typed decoder (then the codec reports why)."""
    codec = _REGISTRY.get("json")
    if type(codec) is not JsonCodec:
        return None
    if target is None or target is Any or target is object:
        return codec._any.decode
    if target is bytes or _is_pydantic_model(target):
        return None
    try:
        return _typed_decoder(target).decode
    except ConfigurationError:
        return None


def resolve_codec(codec: str | Codec) -> Codec:
    """Accept a codec or its registered name."""
    return get_codec(codec) if isinstance(codec, str) else codec


def codec_names() -> list[str]:
    return sorted(_REGISTRY)


for _codec in (JsonCodec(), ProtoJsonCodec(), ProtobufBinaryCodec(), RawCodec()):
    register_codec(_codec)

"""Optional mapping between frame type names and generated protobuf message classes."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from google.protobuf.message import (  # type: ignore[import-untyped, unused-ignore]
    DecodeError,
    Message,
)

from ._framing import MAX_TYPE_NAME_SIZE, FrameError, pack_message

__all__ = ["MessageDecodeError", "MessageRegistry", "ProtobufMessage", "UnknownMessageType"]


class ProtobufMessage(Protocol):
    """The part of a generated protobuf message class the registry relies on."""

    def SerializeToString(self) -> bytes: ...

    def ParseFromString(self, serialized: bytes, /) -> int | None: ...


M = TypeVar("M", bound=ProtobufMessage)
MessageClass = type[ProtobufMessage]


class UnknownMessageType(FrameError, LookupError):
    """A frame names a type that is not registered (strict registries only)."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"no message class is registered for frame type {type_name!r}")
        self.type_name = type_name


class MessageDecodeError(FrameError):
    """A frame's payload is not a valid encoding of the message class registered for its type."""

    def __init__(self, type_name: str, cls: type[Any], reason: str) -> None:
        super().__init__(
            f"payload of frame type {type_name!r} does not parse as "
            f"{cls.__module__}.{cls.__qualname__}: {reason}"
        )
        self.type_name = type_name


class MessageRegistry:
    """Maps frame type names to generated protobuf message classes and back.

    ``strict`` (the default) makes :meth:`parse` raise :class:`UnknownMessageType` for a type
    name nobody registered; a lenient registry returns the raw payload ``bytes`` instead, for
    servers that forward or handle some types by hand.

    A class may be registered under several names (say its full name and a short gev-style
    alias such as ``"msg1"``); all of them parse, and :meth:`pack` uses the first one.
    """

    __slots__ = ("_classes", "_names", "strict")

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict
        self._classes: dict[str, MessageClass] = {}
        self._names: dict[MessageClass, str] = {}

    def register(self, cls: type[M], name: str | None = None) -> type[M]:
        """Register ``cls`` under ``name`` (default: its ``DESCRIPTOR.full_name``).

        Returns ``cls``, so it also works as a class decorator. Registering the same pair
        again is a no-op; giving a name to a second class raises :class:`ValueError`.
        """
        if not (isinstance(cls, type) and issubclass(cls, Message)):
            raise TypeError(f"expected a generated protobuf message class, got {cls!r}")
        if name is None:
            untyped: Any = cls  # DESCRIPTOR is generated, not part of ProtobufMessage
            name = str(untyped.DESCRIPTOR.full_name)
        elif not isinstance(name, str):
            raise TypeError(f"name must be str, not {type(name).__name__}")
        # Fail at registration rather than on the first pack() of this type.
        if len(name.encode("utf-8")) > MAX_TYPE_NAME_SIZE:
            raise ValueError(f"type name {name[:40]!r}... exceeds {MAX_TYPE_NAME_SIZE} bytes")
        existing = self._classes.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"type name {name!r} is already registered to {existing.__qualname__}")
        self._classes[name] = cls
        self._names.setdefault(cls, name)
        return cls

    def parse(self, type_name: str, payload: bytes) -> Any:
        """Decode ``payload`` as the message class registered for ``type_name``.

        Raises :class:`UnknownMessageType` for an unregistered name (strict mode; a lenient
        registry returns ``payload`` unchanged) and :class:`MessageDecodeError`, a
        :class:`FrameError`, if the payload is not a valid encoding of that message.
        """
        cls = self._classes.get(type_name)
        if cls is None:
            if self.strict:
                raise UnknownMessageType(type_name)
            return payload
        message = cls()
        try:
            message.ParseFromString(payload)
        except DecodeError as exc:
            raise MessageDecodeError(type_name, cls, str(exc) or type(exc).__name__) from exc
        return message

    def pack(self, message: ProtobufMessage, max_frame_size: int | None = None) -> bytes:
        """Serialize ``message`` into one frame named after its registered class.

        Raises :class:`TypeError` if the class was never registered, and :class:`FrameError`
        if the frame exceeds ``max_frame_size`` or the format's limits.
        """
        name = self._names.get(type(message))
        if name is None:
            raise TypeError(
                f"{type(message).__qualname__} is not registered; call register() first"
            )
        return pack_message(name, message.SerializeToString(), max_frame_size)

    def name_of(self, cls: type[ProtobufMessage]) -> str:
        """Return the type name :meth:`pack` uses for ``cls`` (raises ``KeyError`` if none)."""
        return self._names[cls]

    def class_for(self, type_name: str) -> type[Any] | None:
        """Return the class registered for ``type_name``, or ``None``."""
        return self._classes.get(type_name)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._classes

    def __len__(self) -> int:
        return len(self._classes)

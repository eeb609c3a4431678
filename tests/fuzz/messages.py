"""Editing protobuf messages by field path: the fuzz cases are valid messages with a few fields replaced."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

FieldPath = tuple[FieldDescriptor, ...]


def leaf_paths(desc: Descriptor, prefix: FieldPath = ()) -> list[FieldPath]:
    """Every scalar field, through nested (and repeated: their first element) messages."""
    out: list[FieldPath] = []
    for f in desc.fields:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            out.extend(leaf_paths(f.message_type, (*prefix, f)))
        else:
            out.append((*prefix, f))
    return out


def set_field(msg: Message, path: FieldPath, value: Any) -> bool:
    """Set ``msg.<path>`` to ``value``; False (nothing changed) when a repeated message on the way is empty."""
    for f in path[:-1]:
        container = getattr(msg, f.name)
        if f.is_repeated:
            if not container:
                return False
            msg = container[0]
        else:
            msg = container
    leaf = path[-1]
    if leaf.is_repeated:
        del getattr(msg, leaf.name)[:]
        getattr(msg, leaf.name).extend(value)
    else:
        setattr(msg, leaf.name, value)
    return True


def edited(template: Message, edits: list[tuple[FieldPath, Any]]) -> Message:
    msg = type(template)()
    msg.CopyFrom(template)
    for path, value in edits:
        set_field(msg, path, value)
    return msg

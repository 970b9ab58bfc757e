"""Sans-IO pgoutput (logical replication protocol version 1) decoding.

``decode_message`` turns one pgoutput message into a typed, immutable message object;
:class:`Decoder` adds the relation cache that row messages need.  Nothing here does I/O
or imports the replication socket: :mod:`cdc.stream` feeds it bytes.
"""

from .decoder import Decoder, decode_message
from .messages import (
    UNCHANGED_TOAST,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Message,
    Origin,
    Relation,
    Truncate,
    TupleData,
    TypeMessage,
    Update,
)

__all__ = [
    "UNCHANGED_TOAST",
    "Begin",
    "Column",
    "Commit",
    "Decoder",
    "Delete",
    "Insert",
    "LogicalMessage",
    "Message",
    "Origin",
    "Relation",
    "Truncate",
    "TupleData",
    "TypeMessage",
    "Update",
    "decode_message",
]

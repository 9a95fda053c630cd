"""Base Structs and constrained scalar types shared by the resource modules."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Weight = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
UInt64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec ints stop at 2**64 - 1 anyway
Int32 = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # proto int32 where negatives are invalid
Percentage = Annotated[float, msgspec.Meta(ge=0, le=100)]
HttpStatus = Annotated[int, msgspec.Meta(ge=200, le=599)]


class IstioStruct(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True, kw_only=True
):
    """Base of the Istio API types."""

    NOT_IMPLEMENTED: ClassVar[frozenset[str]] = frozenset()


class K8sStruct(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """Base of the Kubernetes API types: unknown fields are accepted and ignored."""

    NOT_IMPLEMENTED: ClassVar[frozenset[str]] = frozenset()

"""normalise: pure transforms that make an image a canonical function of its contents.

    from repro.normalise import NormaliseOptions, normalise_layout
    result = normalise_layout("out/raw", "out/hello", NormaliseOptions(epoch=1735689600))

Canonical tar encoding and deterministic compression of every layer the build made
(`repro.normalise._layer` says exactly what canonical means), timestamps in the
config and history set to the epoch, canonical JSON for configs, manifests and
indexes, and optional content rules (drop, truncate, /etc/shadow dates; presets
debian, alpine, python), each change recorded. A layer already in canonical form,
and the base image's layers (`keep_layers`), keep their bytes; given the base's own
layer descriptors (`base_layers`, from the lock: `repro.normalise._bases`), those
blobs replace other bytes a builder exported for them. A whiteout that removes a
path no lower layer has is reported in `NormaliseResult.warnings`.
"""

from repro.normalise._bases import BaseLayers, locked_base_layers
from repro.normalise._image import NormaliseResult, base_layer_count, normalise_layout
from repro.normalise._layer import LayerOutcome, layer_blob, marker, write_entries
from repro.normalise._rules import (
    COMPRESSIONS,
    PRESETS,
    Change,
    ContentRules,
    NormaliseOptions,
    compile_glob,
    rewrite_shadow,
)
from repro.normalise._settings import NormaliseSettings
from repro.normalise._settings import parse_settings as parse_normalise_settings

__all__ = [
    "COMPRESSIONS",
    "BaseLayers",
    "locked_base_layers",
    "PRESETS",
    "Change",
    "NormaliseSettings",
    "base_layer_count",
    "LayerOutcome",
    "NormaliseOptions",
    "NormaliseResult",
    "ContentRules",
    "compile_glob",
    "layer_blob",
    "parse_normalise_settings",
    "write_entries",
    "marker",
    "normalise_layout",
    "rewrite_shadow",
]

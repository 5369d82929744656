"""Where the two images of a diff come from: any source `repro.oci` opens.

`open_source` takes `oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE`,
`docker://REF` / `registry:REF`, or a bare path (see `repro.oci._spec`); the image
model and the sources themselves live in `repro.oci`.
"""

from __future__ import annotations

from repro.oci import Source, open_source

ImageSource = Source

__all__ = ["ImageSource", "open_source"]

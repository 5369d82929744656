"""repro: container images anyone can rebuild bit for bit.

Nothing is re-exported here: import what you use from its package (`repro.oci`,
`repro.build`, `repro.verify`, `repro.diff`, `repro.attest`, …; docs/architecture.md
says which does what). This module stays light: `repro --help` must not import
grpc, httpx or diffoscope.
"""

__version__ = "0.1.0"

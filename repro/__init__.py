"""repro: container images anyone can rebuild bit for bit.

The public API is re-exported here; implementation lives in the submodules.
Keep this module light: `repro --help` must not import grpc or diffoscope.
"""

__version__ = "0.1.0"

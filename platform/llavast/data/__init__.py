"""ST-Align on Ray Data: annotation parsing and validation, manifest indexing, media decoding,
tokenisation, the streaming pipeline and its collate, and a synthetic ST-Align generator.

Import the submodule you need (`llavast.data.pipeline` for training); this package imports nothing
heavy by itself so the CLI starts fast.
"""

"""Bottom-layer helpers that import nothing else from sppdet: distributed (:mod:`.comm`), memory."""

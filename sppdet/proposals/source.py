"""The typed seam between proposal providers and their users.

Training (:class:`~sppdet.engine.data.WindowDataset`), inference and recall read proposals
through this small interface; :class:`~sppdet.proposals.store.ProposalStore` (the native store)
implements it, and so does any object with these methods (a test double, an in-memory dict
adapter, a future on-line generator). Boxes are float ``(x1, y1, x2, y2)`` in image pixels.
"""

from __future__ import annotations

from typing import Optional, Protocol, Tuple, runtime_checkable

import numpy as np

#: One image's proposals: boxes ``(N, 4)`` float32 and scores ``(N,)`` float32, or ``None``.
Proposals = Tuple[np.ndarray, Optional[np.ndarray]]


@runtime_checkable
class ProposalSource(Protocol):
    """Proposals per image id (what the training loader, the detector and recall need)."""

    def __contains__(self, image_id: object) -> bool:
        """Whether the source has an entry (possibly empty) for ``image_id``."""
        ...

    def get(self, image_id: str) -> Proposals:
        """``(boxes (N, 4), scores (N,) or None)`` of one image; an error for an unknown id."""
        ...

    def boxes(self, image_id: str) -> np.ndarray:
        """Boxes ``(N, 4)`` float32 of one image, best first when the source has scores."""
        ...

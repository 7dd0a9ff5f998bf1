"""Export: the detector as one ONNX or TorchScript graph (raw image + proposals -> detections).

See :func:`export_model` and the README's Export section.
"""

from .exporter import FORMATS, build_exportable, export_model
from .graph import ExportableDetector

__all__ = ["FORMATS", "ExportableDetector", "build_exportable", "export_model"]

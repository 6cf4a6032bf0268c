"""ascend-launcher: declarative launcher and supervisor for multi-host Ascend NPU inference."""
__version__ = "0.1.0"

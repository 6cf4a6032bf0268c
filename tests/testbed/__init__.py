"""A multi-host SSH testbed built from network namespaces; see README.md beside this file."""
from ._proc import TestbedError
from .core import BASE_DIR, Host, Testbed, list_testbeds, unavailable_reason

__all__ = ["BASE_DIR", "Host", "Testbed", "TestbedError", "list_testbeds", "unavailable_reason"]

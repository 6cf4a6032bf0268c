"""`launcher export kubernetes`: the compiled topology as Kubernetes objects (LeaderWorkerSet).

Pure, like the rest of the core: Result -> {relative path: bytes}; the CLI writes the directory.
support (what Kubernetes cannot express: errors naming the key), podenv (each pod's env and argv,
from the same expansion `launcher render` runs), objects (the manifests), export (the directory).
"""

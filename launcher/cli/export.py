"""`launcher export kubernetes FILE -o DIR`: the topology as a kustomize directory (docs/KUBERNETES.md)."""
from __future__ import annotations

import argparse
import os

from ..core.errors import EXIT_OK, BadInput, LauncherError
from ..core.defaults import INIT_IMAGE, NPU_RESOURCE


def add_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="the deployment in another engine's terms (kubernetes)")
    ex_sub = ex.add_subparsers(dest="export_target", required=True, metavar="TARGET")
    kp = ex_sub.add_parser("kubernetes", help="LeaderWorkerSets, StatefulSets and Services as a kustomize "
                                              "directory; refuses, naming the key, what Kubernetes cannot express",
                           description="write DIR: one YAML file per object, kustomization.yaml, README.md and "
                                       "init-image/ (docs/KUBERNETES.md)")
    kp.add_argument("file", metavar="FILE", help="topology YAML")
    kp.add_argument("-o", "--output", required=True, metavar="DIR", help="a new or empty directory")
    kp.add_argument("--namespace", metavar="NS", help="the objects' namespace (default: kubectl's)")
    kp.add_argument("--volcano", action="store_true", help="gang-schedule the pods with Volcano")
    kp.add_argument("--npu-resource", default=NPU_RESOURCE, metavar="NAME",
                    help=f"the Ascend device plugin's resource for the NPUs (default {NPU_RESOURCE})")
    kp.add_argument("--init-image", default=INIT_IMAGE, metavar="IMAGE",
                    help="the rendezvous init image, built from DIR/init-image/ (default "
                         f"{INIT_IMAGE})")
    kp.set_defaults(func=cmd_export_kubernetes)


def cmd_export_kubernetes(args: argparse.Namespace) -> int:
    from ..core.kube.export import export_kubernetes  # here: the other commands need none of it
    from ..core.kube.objects import Options
    from ..deploy.files import compile_file
    from ..deploy.kube_dir import init_image_files, write_export
    from .output import warn, write
    result = compile_file(args.file)
    warn(result)
    opts = Options(npu_resource=args.npu_resource, init_image=args.init_image, volcano=args.volcano,
                   namespace=args.namespace)
    files = export_kubernetes(result, opts)  # refusals raise before anything is written
    if os.path.exists(args.output) and (not os.path.isdir(args.output) or os.listdir(args.output)):
        raise BadInput(f"{args.output}: exists and is not an empty directory; choose a new one")
    try:
        count = write_export({**files, **init_image_files()}, args.output)
    except OSError as exc:
        raise LauncherError(f"cannot write into {args.output}: {exc.filename}: {exc.strerror}") from None
    write(f"exported {result.topology.name}: {count} files into {args.output}/; make "
          f"{args.output}/rendezvous.key (README.md), then `kubectl apply -k {args.output}`\n")
    return EXIT_OK

"""The few Kubernetes objects the lab tests write as YAML text (as a user would feed `lab apply -f -`).

Each builder gives one document; :func:`docs` joins several into one stream.
"""

from __future__ import annotations

import json

from elastivol import BLOCK_DRIVER_NAME


def docs(*documents: str) -> str:
    return "---\n".join(documents)


def wffc_class(name: str, parameters: str = "{type: gp3}") -> str:
    """A block StorageClass that binds when a pod first uses the claim."""
    return f"""\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {name}}}
provisioner: {BLOCK_DRIVER_NAME}
volumeBindingMode: WaitForFirstConsumer
parameters: {parameters}
"""


def claim(name: str, class_name: str, *extra: str) -> str:
    """A 1Gi ReadWriteOnce claim of ``class_name``; ``extra`` are more ``key: value`` entries of its spec."""
    spec = ", ".join(("accessModes: [ReadWriteOnce]", *extra, f"storageClassName: {class_name}",
                      "resources: {requests: {storage: 1Gi}}"))
    return f"""\
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec: {{{spec}}}
"""


def _pod(name: str, claim_name: str, script: str, volume: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox, command: ["/bin/sh", "-c", {json.dumps(script)}],
     {volume}}}
  volumes: [{{name: v, persistentVolumeClaim: {{claimName: {claim_name}}}}}]
"""


def mount_pod(name: str, claim_name: str, path: str, script: str = "sleep 600") -> str:
    """A busybox pod running ``script`` with the claim mounted at ``path``."""
    return _pod(name, claim_name, script, f"volumeMounts: [{{name: v, mountPath: {json.dumps(path)}}}]")


def device_pod(name: str, claim_name: str, device: str) -> str:
    """A busybox pod with the (volumeMode Block) claim as the device ``device``."""
    return _pod(name, claim_name, "sleep 600", f"volumeDevices: [{{name: v, devicePath: {json.dumps(device)}}}]")

"""Creates each ModelDeployment's control-key Secret once (see modeldeploy.render.secret).

Create-only: the operator never reads a Secret. A 409 means it exists (created earlier, by this or
a previous operator process); the key inside is never looked at. Each ModelDeployment (by uid) is
tried once per operator process, so an idle operator writes nothing.
"""

from __future__ import annotations

import logging
import threading

from modeldeploy.api.v1alpha1 import ModelDeployment
from modeldeploy.reconcile.kube import Kube, KubeError, Resource
from modeldeploy.render.secret import control_secret_name, new_control_key, render_control_secret

SECRET = Resource("", "v1", "secrets", "Secret")
log = logging.getLogger("modeldeploy.reconcile.control")


class ControlSecrets:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, md: ModelDeployment) -> bool:
        """Create the Secret when missing; True when this call created it."""
        uid = str(md.metadata.get("uid", ""))
        with self._lock:
            if uid and uid in self._known:
                return False
        created = True
        try:
            self.kube.create(SECRET, md.namespace, render_control_secret(md, new_control_key()))
        except KubeError as exc:
            if exc.status != 409:
                raise
            created = False
        if created:
            log.info("%s/%s: created Secret %s", md.namespace, md.name, control_secret_name(md))
        with self._lock:
            self._known.add(uid)
        return created

    def forget(self, uid: str) -> None:
        with self._lock:
            self._known.discard(uid)

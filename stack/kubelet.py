"""What the kubelet does to a container spec before it runs: environment and volumes.

- The environment: ``envFrom`` sources first, then ``env`` in order (a later entry wins),
  ``valueFrom`` references resolved from the rendered ConfigMaps and Secrets, and
  ``$(VAR)`` references expanded in ``env`` values, ``command`` and ``args``.
- ConfigMap and Secret volumes laid out as the kubelet's atomic writer does: the keys'
  files live in a timestamped directory, ``..data`` links to it, and each key is a
  symlink through ``..data``; an update writes a new directory and swaps ``..data`` in
  one rename, so a reader never sees half an update.

https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .render import Container, Manifest, RenderError


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion.

    ``$(NAME)`` becomes the variable's value when it is defined and stays as written when
    it is not; ``$$`` is an escaped ``$`` (so ``$$(NAME)`` yields ``$(NAME)``).
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(variables.get(name, text[i : end + 1]))
            i = end + 1
        else:
            out.append(char)
            i += 1
    return "".join(out)


def resolve_env(
    container: Container, manifest: Manifest, pod_fields: Mapping[str, str]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it.

    ``pod_fields`` answers ``fieldRef`` (``metadata.name``, ``status.podIP`` ...).
    A missing ConfigMap, Secret or key is an error unless the reference is optional,
    which is also what keeps a pod from starting in a cluster.
    """
    env: dict[str, str] = {}
    for source in container.env_from:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref, objects, kind = source["configMapRef"], manifest.config_maps, "ConfigMap"
        elif "secretRef" in source:
            ref, objects, kind = source["secretRef"], manifest.secrets, "Secret"
        else:
            raise RenderError(f"{container.name}: unsupported envFrom {source}")
        if ref["name"] not in objects:
            if ref.get("optional"):
                continue
            raise RenderError(f"{container.name}: envFrom {kind} {ref['name']!r} is not rendered")
        env.update({prefix + key: value for key, value in objects[ref["name"]].items()})

    for var in container.env:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source or "configMapKeyRef" in source:
            secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if secret else "configMapKeyRef"]
            objects = manifest.secrets if secret else manifest.config_maps
            value = objects.get(ref["name"], {}).get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                kind = "Secret" if secret else "ConfigMap"
                raise RenderError(
                    f"{container.name}: env {name} needs {kind} {ref['name']!r} key {ref['key']!r}, "
                    "which is not rendered"
                )
            env[name] = value
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path not in pod_fields:
                raise RenderError(f"{container.name}: env {name}: fieldRef {path} is not supported")
            env[name] = pod_fields[path]
        else:
            raise RenderError(f"{container.name}: env {name}: unsupported valueFrom {source}")
    return env


def expand_all(parts: Sequence[str], env: Mapping[str, str]) -> list[str]:
    return [expand(part, env) for part in parts]


class ProjectedVolume:
    """A ConfigMap or Secret volume on disk, in the kubelet's layout."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, files: Mapping[str, str]) -> None:
        """Publish ``files`` (relative path -> content) atomically, as the kubelet does."""
        self.path.mkdir(parents=True, exist_ok=True)
        data_link = self.path / "..data"
        previous = os.readlink(data_link) if data_link.is_symlink() else None

        stamp = (
            time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.time_ns() % 10**9:09d}"
        )
        target = self.path / stamp
        target.mkdir()
        for relative, content in files.items():
            file = target / relative
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(content)
            file.chmod(0o644)
        target.chmod(0o755)

        staging = self.path / "..data_tmp"
        staging.unlink(missing_ok=True)
        staging.symlink_to(stamp)
        staging.replace(data_link)  # rename(2): readers see the old set or the new one

        tops = {Path(relative).parts[0] for relative in files}
        for top in tops:
            link = self.path / top
            if not link.is_symlink():
                link.symlink_to(Path("..data") / top)
        for entry in self.path.iterdir():
            if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
                entry.unlink()
        if previous is not None:
            shutil.rmtree(self.path / previous, ignore_errors=True)


def volume_files(volume: Mapping[str, object], manifest: Manifest) -> dict[str, str] | None:
    """Files a ConfigMap or Secret volume holds; None for any other kind (an empty dir)."""
    for kind, objects, name_key in (
        ("configMap", manifest.config_maps, "name"),
        ("secret", manifest.secrets, "secretName"),
    ):
        if kind in volume:
            source = volume[kind]
            assert isinstance(source, dict)
            data = objects.get(source[name_key])
            if data is None:
                if source.get("optional"):
                    return {}
                raise RenderError(
                    f"volume {volume['name']}: {kind} {source[name_key]!r} is not rendered"
                )
            items = source.get("items")
            if items:
                return {item["path"]: data[item["key"]] for item in items}
            return dict(data)
    if "emptyDir" in volume:
        return None
    raise RenderError(f"volume {volume['name']}: only configMap, secret and emptyDir are supported")

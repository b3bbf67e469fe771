"""Kubernetes and Envoy documents as YAML as people write it: multi-line strings (the entrypoint script, an
embedded envoy.yaml) as `|` blocks, and shared values written out rather than as &anchors."""

from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def to_yaml(document: dict) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


def to_yaml_documents(documents: list) -> str:
    """Several documents in one file, `---` between them."""
    return "---\n".join(to_yaml(document) for document in documents)

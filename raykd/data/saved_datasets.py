"""Directories written by Hugging Face ``datasets`` (``Dataset.save_to_disk``), found without the
``datasets`` package: ``state.json`` lists the data files, each an Arrow IPC stream
(``raykd.data.datasets`` reads them through Ray Data).

A ``DatasetDict`` directory (``dataset_dict.json``) holds one such directory per split; the user names
the split's directory.
"""

from __future__ import annotations

import json
from pathlib import Path


def saved_dataset_files(spec: str) -> list[str] | None:
    """The Arrow files of a ``save_to_disk`` directory, None if ``spec`` is not one; a ValueError naming
    the splits for a ``DatasetDict`` directory."""
    root = Path(spec)
    if "://" in spec or not root.is_dir():
        return None
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits") or []
        raise ValueError(f"a datasets DatasetDict with the splits {', '.join(splits)}: name one, e.g. "
                         f"{root / (splits[0] if splits else 'train')}")
    if not (root / "state.json").is_file():
        return None
    files = [str(root / f["filename"]) for f in json.loads((root / "state.json").read_text())["_data_files"]]
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise ValueError(f"state.json lists {missing[0]}, which is missing")
    return files
